"""``homewarden run`` refuses a data dir another recorder holds; read commands do not lock."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from homewarden.cli import EXIT_ERROR, app
from homewarden.config import Settings
from homewarden.services.runtime import Runtime

FOOTAGE = Path(__file__).resolve().parents[3] / "shared" / "footage" / "bikes.mp4"


@pytest.fixture(autouse=True)
def _no_homewarden_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Settings come from the test's arguments only."""
    for key in list(os.environ):
        if key.upper().startswith("HOMEWARDEN_"):
            monkeypatch.delenv(key)
    monkeypatch.setenv("HOMEWARDEN_API__PORT", "0")  # no live API on a developer's port


@pytest.fixture
def held_data_dir(tmp_path: Path) -> Iterator[Path]:
    """A data dir a running recorder (this process) holds."""
    data = tmp_path / "data"
    with Runtime(Settings(data_dir=data)):
        yield data


def test_run_on_a_data_dir_in_use_exits_2_naming_the_holder(held_data_dir: Path) -> None:
    result = CliRunner().invoke(
        app,
        [
            "run",
            "--data-dir", str(held_data_dir),
            "--camera", f"bikes=file:{FOOTAGE}",
            "--duration", "1",
            "--api", "127.0.0.1:0",
        ],
    )  # fmt: skip
    assert result.exit_code == EXIT_ERROR, result.output
    assert "in use by another HomeWarden recorder" in result.output
    assert f"process {os.getpid()} holds" in result.output
    assert "Traceback" not in result.output
    assert not (held_data_dir / "media" / "bikes").exists()  # nothing was recorded


@pytest.mark.parametrize(
    "command", [["cameras"], ["recordings"], ["events"], ["audit", "verify"]], ids=" ".join
)
def test_read_commands_work_while_a_recorder_holds_the_data_dir(
    held_data_dir: Path, command: list[str]
) -> None:
    args = [*command, "--data-dir", str(held_data_dir)]
    if command[0] != "audit":
        args.append("--json")
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    if command[0] != "audit":
        json.loads(result.stdout)
