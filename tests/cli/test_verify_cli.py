"""``homewarden export`` and ``homewarden verify`` at the shell, on real recorded footage."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from homewarden.cli import EXIT_VERIFY_FAILED, app
from homewarden.domain import package as pkg
from homewarden.services.audit import PUBLIC_KEYS_FILE
from homewarden.store.index import Index
from tests.package_footage import CAMERA, T0, deploy

_SETTINGS_ENV = tuple(
    f"HOMEWARDEN_{k}"
    for k in ("DATA_DIR", "DATABASE_URL", "API", "STORAGE", "CAMERAS", "HOUSEHOLD", "AUDIT")
)


@pytest.fixture(autouse=True)
def _no_homewarden_env() -> Iterator[None]:
    with pytest.MonkeyPatch.context() as mp:
        for key in [k for k in os.environ if k.startswith(_SETTINGS_ENV)]:
            mp.delenv(key)
        yield


def _deployed(data: Path) -> Path:
    """``data`` (made if missing) as a deployed data dir with recorded footage (SQLite)."""
    data.mkdir(exist_ok=True)
    index = Index(f"sqlite:///{data / 'homewarden.db'}")
    index.migrate()
    deploy(data, index)
    index.close()
    return data


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    data = _deployed(tmp_path_factory.mktemp("data"))
    out = tmp_path_factory.mktemp("out")
    result = CliRunner().invoke(
        app,
        [
            "export", "--camera", CAMERA, "--start", str(T0 + 1), "--end", str(T0 + 6),
            "--out", str(out), "--reason", "porch theft", "--data-dir", str(data), "--json",
        ],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    info: dict[str, str] = json.loads(result.stdout)
    info["keys"] = str(data / "keys" / PUBLIC_KEYS_FILE)
    return info


def test_export_creates_a_missing_out_folder_and_its_parents(tmp_path: Path) -> None:
    # Regression: the README's `--out /tmp/pkg` failed "is not a directory" unless the
    # folder existed already.
    data = _deployed(tmp_path / "data")
    out = tmp_path / "new" / "pkg"
    result = CliRunner().invoke(
        app,
        [
            "export", "--camera", CAMERA, "--start", str(T0 + 1), "--end", str(T0 + 3),
            "--out", str(out), "--data-dir", str(data), "--json",
        ],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    info = json.loads(result.stdout)
    assert Path(info["package"]).parent == out
    assert Path(info["zip"]).is_file()
    # A file where the folder should be is still refused.
    blocked = tmp_path / "file"
    blocked.write_text("x")
    result = CliRunner().invoke(
        app,
        [
            "export", "--camera", CAMERA, "--start", str(T0 + 1), "--end", str(T0 + 3),
            "--out", str(blocked / "pkg"), "--data-dir", str(data),
        ],
    )  # fmt: skip
    assert result.exit_code != 0


def test_export_thorough_without_redact_is_refused_before_anything_is_written(
    tmp_path: Path,
) -> None:
    data = _deployed(tmp_path / "data")
    out = tmp_path / "pkg"
    result = CliRunner().invoke(
        app,
        [
            "export", "--camera", CAMERA, "--start", str(T0 + 1), "--end", str(T0 + 3),
            "--out", str(out), "--data-dir", str(data), "--thorough",
        ],
    )  # fmt: skip
    assert result.exit_code != 0
    assert "--redact" in result.output
    assert not out.exists()


def test_export_prints_the_package_and_zip(exported: dict[str, str]) -> None:
    assert Path(exported["package"]).is_dir()
    assert Path(exported["zip"]).is_file()
    assert exported["zip"] == exported["package"] + ".zip"


def test_verify_with_the_deployment_key(exported: dict[str, str]) -> None:
    result = CliRunner().invoke(app, ["verify", exported["zip"], "--public-key", exported["keys"]])
    assert result.exit_code == 0, result.output
    assert "verifies" in result.stdout
    assert "Signed by the key you gave" in result.stdout


def test_verify_without_a_key_says_self_asserted(exported: dict[str, str]) -> None:
    result = CliRunner().invoke(app, ["verify", exported["package"], "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["signature"].startswith("self-asserted")


def test_verify_a_hex_key_of_another_deployment_fails(
    exported: dict[str, str], tmp_path: Path
) -> None:
    other = tmp_path / "other.hex"
    other.write_text("not a key\n")
    result = CliRunner().invoke(app, ["verify", exported["zip"], "--public-key", str(other)])
    assert result.exit_code == 2
    from homewarden.crypto.signing import generate_log_key, log_public_key

    other.write_text(bytes(log_public_key(generate_log_key())).hex())
    result = CliRunner().invoke(app, ["verify", exported["zip"], "--public-key", str(other)])
    assert result.exit_code == EXIT_VERIFY_FAILED
    assert "not the public key you trust" in result.stderr


def test_verify_a_tampered_clip_exits_1_naming_it(exported: dict[str, str], tmp_path: Path) -> None:
    folder = tmp_path / "p"
    shutil.copytree(exported["package"], folder)
    clip = next((folder / "clips").glob("*.mp4"))
    data = bytearray(clip.read_bytes())
    data[-100] ^= 0x10
    clip.write_bytes(bytes(data))
    result = CliRunner().invoke(app, ["verify", str(folder), "--json"])
    assert result.exit_code == EXIT_VERIFY_FAILED
    failure = json.loads(result.stdout)
    assert failure["ok"] is False
    assert failure["error"] == "package-tampered"
    assert f"clips/{clip.name} does not match its SHA-256" in failure["reason"]


def test_verify_an_edited_manifest_exits_1(exported: dict[str, str], tmp_path: Path) -> None:
    folder = tmp_path / "p"
    shutil.copytree(exported["package"], folder)
    manifest = folder / pkg.MANIFEST
    manifest.write_bytes(manifest.read_bytes().replace(b"porch theft", b"porch thief"))
    result = CliRunner().invoke(app, ["verify", str(folder)])
    assert result.exit_code == EXIT_VERIFY_FAILED
    assert "manifest.sig does not verify over manifest.json" in result.stderr


def test_verify_nothing_there_is_an_error(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["verify", str(tmp_path / "nope.zip")])
    assert result.exit_code == 2
    assert "no package" in result.stderr
