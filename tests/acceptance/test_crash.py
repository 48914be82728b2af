"""Acceptance 6: ``kill -9`` while recording, restart — index and disk agree.

A real ``homewarden run`` process records real footage (vtest.avi as H.264, a paced ``file:``
camera) into a data dir on SQLite or PostgreSQL; it is killed with SIGKILL while a segment is
being written; a second run reconciles at start. Only the segment in progress may be lost.
"""

from __future__ import annotations

import itertools
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from homewarden.media.probe import probe_segment
from homewarden.store.index import Index
from homewarden.store.records import GapRecord

pytestmark = pytest.mark.slow


def _homewarden(data_dir: Path, db_url: str, camera: str, *extra: str) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HOMEWARDEN_")}
    env["HOMEWARDEN_DATABASE_URL"] = db_url
    # plaintext storage: this test is about the recorder's files on disk after a kill -9
    env["HOMEWARDEN_STORAGE__SEALED"] = "false"
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "homewarden",
            "run",
            "--data-dir",
            str(data_dir),
            "--camera",
            camera,
            "--api",
            "127.0.0.1:0",
            *extra,
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def _files(media: Path, suffix: str) -> set[str]:
    return {p.relative_to(media).as_posix() for p in media.rglob(f"*{suffix}")}


def test_kill_9_mid_segment_then_restart_index_and_disk_agree(
    tmp_path: Path, database_url: str, vtest_h264: Path
) -> None:
    data = tmp_path / "data"
    media = data / "media"
    camera = f"door=file:{vtest_h264}"
    proc = _homewarden(data, database_url, camera)
    try:
        # (1) wait for two finished segments and a third in progress.
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if len(_files(media, ".mp4")) >= 2 and _files(media, ".mp4.part"):
                break
            assert proc.poll() is None, proc.stdout.read() if proc.stdout else ""
            time.sleep(0.2)
        else:
            pytest.fail("recorder did not write two segments within 60 s")
        time.sleep(2.0)  # well inside the third segment
        finished_before = _files(media, ".mp4")
        parts_before = _files(media, ".mp4.part")
        assert parts_before, "a segment must be in progress when the recorder is killed"
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
        if proc.stdout:
            proc.stdout.close()

    # (2) restart briefly; start-up reconciles, then the run ends cleanly.
    second = _homewarden(data, database_url, camera, "--duration", "4")
    out, _ = second.communicate(timeout=90)
    assert second.returncode == 0, out

    # (3) index and disk agree both ways; no temporary file is left.
    assert not _files(media, ".mp4.part"), "temporary segment files left behind"
    on_disk = _files(media, ".mp4")
    index = Index(database_url)
    try:
        rows = index.segments(camera="door")
        gaps = index.gaps(camera="door")
    finally:
        index.close()
    indexed = {r.path for r in rows}
    assert indexed == on_disk
    # Nothing finished before the kill was lost.
    assert finished_before <= on_disk
    # Every indexed segment is playable and its row matches the file.
    for row in rows:
        probe = probe_segment(media / row.path)
        assert probe.playable, row.path
        assert probe.starts_with_keyframe, row.path
        assert probe.bytes == row.bytes == (media / row.path).stat().st_size
        assert row.end > row.start

    # (4) Every second is answered for: each hole between footage (the time from the last
    # footage before the kill to the restart's first) is covered by gaps, the downtime itself
    # as not_recording, starting where the footage stops and ending where it resumes.
    assert any(g.reason == "not_recording" for g in gaps)
    for a, b in itertools.pairwise(rows):
        if b.start - a.end > 1e-3:
            assert _covered(a.end, b.start, gaps), (a, b, gaps)


def _covered(start: float, end: float, gaps: list[GapRecord]) -> bool:
    """[start, end] lies within the union of closed ``gaps`` (to the millisecond)."""
    reach = start
    for g in sorted(gaps, key=lambda g: g.start):
        if g.end is not None and g.start <= reach + 1e-3:
            reach = max(reach, g.end)
    return reach >= end - 1e-3
