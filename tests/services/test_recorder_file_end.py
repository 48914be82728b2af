"""A ``file:`` camera without ``loop`` says so when its file ends (real footage, SQLite and
PostgreSQL)."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import pytest

from homewarden.config import CameraSettings
from homewarden.services.recorder import CameraRecorder
from homewarden.store.index import Index

LOGGER = "homewarden.services.recorder"
END = "camera bikes: end of file, recording stopped; set loop = true to replay"


def test_a_file_camera_without_loop_logs_the_end_of_its_file(
    tmp_path: Path, index: Index, bikes_mp4: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # Regression: the recorder stopped at the end of the file without a log line, so a
    # `file:` camera looked broken.
    caplog.set_level(logging.INFO, logger=LOGGER)
    rec = CameraRecorder(
        "bikes",
        CameraSettings(url=f"file:{bikes_mp4}", segment_seconds=2, motion={"enabled": False}),
        tmp_path / "media",
        tmp_path / "snapshots",
        index,
    )
    rec.start()
    deadline = time.monotonic() + 25
    while rec.status().state != "stopped" and time.monotonic() < deadline:
        time.sleep(0.1)
    assert rec.stop(5)
    assert rec.status().state == "stopped"
    ends = [r for r in caplog.records if r.name == LOGGER and r.getMessage() == END]
    assert len(ends) == 1
    assert ends[0].levelno == logging.INFO
