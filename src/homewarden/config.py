"""Typed settings, read once: a TOML file plus ``HOMEWARDEN_*`` environment variables.

Precedence, highest first: explicit overrides passed by the CLI (``--data-dir``, ``--camera``,
``--api``), environment (``HOMEWARDEN_DATA_DIR``, ``HOMEWARDEN_DATABASE_URL``, nested keys with
``__``, e.g. ``HOMEWARDEN_API__PORT``), the TOML file, then defaults. Unknown keys anywhere are
rejected with their dotted path (``cameras.front.motion.treshold``). Every path derives from
``data_dir``.

Example file::

    data_dir = "/var/lib/homewarden"

    [api]
    host = "127.0.0.1"
    port = 8765

    [recorder]
    processes = 2          # recorder worker processes (default: one per CPU core)

    [jobs]
    redis_url = "redis://127.0.0.1:6379/0"   # default: SQLite at <data_dir>/jobs.db
    workers = 1            # job worker threads inside `homewarden run` (0: none)

    [cameras.front]
    url = "rtsp://192.0.2.10:554/stream1"
    zones = { porch = [[0.0, 0.5], [0.5, 0.5], [0.5, 1.0], [0.0, 1.0]] }

    [cameras.front.motion]
    detect_fps = 5
"""

from __future__ import annotations

import ipaddress
import os
import re
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, field_validator
from pydantic_core import PydanticCustomError
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    SettingsError,
)

from homewarden.errors import ConfigError

Point = tuple[float, float]


def _invalid(reason: str) -> PydanticCustomError:
    """A validation error whose message is ``reason`` alone (no "Value error, " prefix; the
    reason travels in the context, so braces in it are never taken for a template)."""
    return PydanticCustomError("value_error", "{reason}", {"reason": reason})


def _spans_an_area(poly: list[Point]) -> bool:
    """False when every point of ``poly`` lies on one line (or is one point): zero area.

    Collinearity, not the shoelace sum, because a self-crossing polygon (a bow tie) has a
    signed area of zero yet covers pixels.
    """
    x0, y0 = poly[0]
    fx, fy = max(poly, key=lambda p: (p[0] - x0) ** 2 + (p[1] - y0) ** 2)
    dx, dy = fx - x0, fy - y0
    # |cross| over |d| is a point's distance from the line; 1e-9 of the frame is rounding.
    limit = 1e-9 * (dx * dx + dy * dy) ** 0.5
    return any(abs(dx * (y - y0) - dy * (x - x0)) > limit for x, y in poly)


def _check_polygon(poly: list[Point]) -> list[Point]:
    """A mask or zone polygon: at least 3 points, each in normalised 0..1 frame coordinates
    (x right, y down), enclosing a non-zero area.

    Validated per polygon, so an error carries the polygon's own place as its location
    (``cameras.front.zones.porch``, ``cameras.front.motion.masks.1``).
    """
    if len(poly) < 3:
        raise _invalid("a polygon needs at least 3 points")
    for x, y in poly:
        if not (0.0 <= x <= 1.0 and 0.0 <= y <= 1.0):
            raise _invalid(f"polygon point ({x}, {y}) is outside normalised 0..1 coordinates")
    if not _spans_an_area(poly):
        raise _invalid("a polygon of zero area (all its points on one line) covers nothing")
    return poly


Polygon = Annotated[list[Point], AfterValidator(_check_polygon)]


def _is_name(name: str) -> bool:
    """The naming rule of cameras and zones: non-empty; letters, digits, ``-`` and ``_``."""
    return bool(name) and all(c.isalnum() or c in "-_" for c in name)


class _Strict(BaseModel):
    # allow_inf_nan=False: every float is finite (retention of inf days, a NaN threshold).
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class MotionSettings(_Strict):
    """Motion sensing thresholds for one camera.

    Defaults follow Frigate's documented motion defaults (docs "Motion detection tuning":
    ``threshold`` 30 on 0-255 luma, ``contour_area`` 10 px at 100 px height, ``frame_alpha``
    0.01) scaled to our analysis width, and OpenCV's background-subtraction tutorial for the
    running average.
    """

    enabled: bool = True
    analysis_width: int = Field(default=240, ge=64, le=640)
    threshold: int = Field(default=30, ge=1, le=255, description="per-pixel luma change, 0-255")
    min_area: float = Field(
        default=0.002, gt=0, lt=1, description="fraction of unmasked pixels that must change"
    )
    alpha: float = Field(
        default=0.05, gt=0, le=1, description="background learning rate per sample"
    )
    detect_fps: float = Field(default=5.0, gt=0, le=60)
    post_capture: float = Field(
        default=5.0, ge=0, le=600, description="quiet seconds that end an event"
    )
    masks: list[Polygon] = Field(default_factory=list)


class RetentionSettings(_Strict):
    """How long footage is kept; ``None`` size caps mean no cap."""

    continuous_days: float = Field(default=3, ge=0)
    event_days: float = Field(default=30, ge=0)
    max_bytes: int | None = Field(default=None, gt=0)


class CameraSettings(_Strict):
    """One camera: an ``rtsp://`` URL or a ``file:`` path played at real time."""

    url: str
    enabled: bool = True
    rtsp_transport: Literal["tcp", "udp"] = "tcp"
    loop: bool = Field(default=False, description="file: sources restart at the end")
    stall_timeout: float = Field(default=10.0, gt=0, le=300, description="seconds without a packet")
    segment_seconds: float = Field(default=10.0, ge=1, le=300)
    motion: MotionSettings = Field(default_factory=MotionSettings)
    zones: dict[str, Polygon] = Field(default_factory=dict)
    retention: RetentionSettings = Field(default_factory=RetentionSettings)
    person_detector: bool = False
    household: str | None = Field(
        default=None,
        description="household the camera belongs to (default: the deployment's household)",
    )

    @field_validator("household")
    @classmethod
    def _household_id(cls, v: str | None) -> str | None:
        if v is not None and not _is_name(v):
            raise _invalid(f"household {v!r} may hold only letters, digits, - and _")
        return v

    @field_validator("url")
    @classmethod
    def _known_scheme(cls, v: str) -> str:
        if not (v.startswith(("rtsp://", "rtsps://", "file:"))):
            raise ValueError("camera url must start with rtsp://, rtsps:// or file:")
        return v

    @field_validator("zones")
    @classmethod
    def _zone_names(cls, v: dict[str, Polygon]) -> dict[str, Polygon]:
        # Zone names travel in URLs, filters and comma-separated lists: the camera-name rule.
        for name in v:
            if not _is_name(name):
                raise _invalid(f"zone name {name!r} may hold only letters, digits, - and _")
        return v


class ApiSettings(_Strict):
    """Where the web app and JSON API listen.

    ``host`` may be any local address: every route needs an account. On a non-loopback
    address without TLS in front, ``homewarden run`` warns (cookies and passwords would cross
    the network in the clear). ``trusted_proxies``: addresses of a TLS-terminating reverse
    proxy whose ``X-Forwarded-For``/``X-Forwarded-Proto`` headers are believed (then cookies
    are ``Secure``). ``public_url``: the address users type (for setup links and push
    notifications); default ``http://<host>:<port>``.
    """

    host: str = "127.0.0.1"
    port: int = Field(default=8765, ge=0, le=65535)
    trusted_proxies: list[str] = Field(default_factory=list)
    public_url: str | None = None

    @field_validator("host")
    @classmethod
    def _ip_or_localhost(cls, v: str) -> str:
        if v != "localhost":
            try:
                ipaddress.ip_address(v)
            except ValueError as exc:
                raise ValueError(f"api host must be an IP address or localhost, not {v!r}") from exc
        return v

    @field_validator("trusted_proxies")
    @classmethod
    def _proxy_addresses(cls, v: list[str]) -> list[str]:
        for item in v:
            try:
                ipaddress.ip_network(item, strict=False)
            except ValueError as exc:
                raise ValueError(f"trusted proxy {item!r} is not an IP address or network") from exc
        return v

    @field_validator("public_url")
    @classmethod
    def _http_url(cls, v: str | None) -> str | None:
        if v is not None and not v.startswith(("http://", "https://")):
            raise ValueError("public_url must start with http:// or https://")
        return None if v is None else v.rstrip("/")

    @property
    def is_loopback(self) -> bool:
        """Whether the API binds only to a loopback address."""
        return self.host == "localhost" or ipaddress.ip_address(self.host).is_loopback


class StorageSettings(_Strict):
    """Limits across all cameras, and whether footage is sealed at rest (``sealed``, on by
    default: issue 6, "any process or person with the disk can watch every camera. Make that
    impossible")."""

    max_total_bytes: int | None = Field(default=None, gt=0)
    min_free_bytes: int = Field(
        default=5 * 1024**3,
        ge=0,
        description="emergency guard floor: max(this, 1 h of recording), at most 20 % of the disk",
    )
    retention_interval: float = Field(default=60.0, gt=0, description="seconds between passes")
    sealed: bool = Field(
        default=True,
        description=(
            "new segments and event snapshots are sealed at rest to the household key "
            "(DESIGN.md flow 8; homewarden.services.sealed_footage): they open only with keys "
            "unlocked by a person's password (a web login, clip/export --user), the recovery "
            "code or, where the owner allows emergency access, the escrow custodians' shares; "
            "never with an API token or in an export job. false stores new footage as plain "
            "files that anyone who can read the disk can watch (footage sealed before stays "
            "sealed)"
        ),
    )


class RecorderSettings(_Strict):
    """How the cameras' recorders are run (issue 2, "Speed": 64 cameras on a 2-core machine).

    ``processes``: recorder worker processes, each running its share of the cameras as
    threads; ``None`` means one per CPU core (``os.cpu_count()``). With 1, or a single camera,
    the recorders run as threads of the main process. Processes exist because the Python part
    of each camera's work holds the interpreter lock, and one process of many camera threads
    cannot keep more than about one and a half cores busy (see
    ``homewarden.workers.camera_worker``); Frigate likewise runs each camera in a process.
    """

    processes: int | None = Field(default=None, ge=1, le=256)


class AuditSettings(_Strict):
    """The audit log's signed tree heads."""

    sth_interval: float = Field(
        default=60.0, gt=0, le=86400, description="seconds between signed tree heads (if grown)"
    )


class MailSettings(_Strict):
    """Outgoing mail (owner notices, requesters' address checks, staff alerts), sent through
    apprise to an SMTP server. Without ``smtp_host`` notices stay in the app only."""

    smtp_host: str | None = None
    smtp_port: int = Field(default=25, ge=1, le=65535)
    mail_from: str = "homewarden@localhost"
    starttls: bool = Field(default=False, description="STARTTLS before authenticating")
    username: str | None = None
    password: str | None = None


def _check_topic_prefix(v: str) -> str:
    # MQTT 3.1.1 section 4.7: wildcards (+ #) may not appear in a topic published to, and
    # topics starting with $ are the broker's (4.7.2); NUL is forbidden in any UTF-8 string
    # (1.5.3); an empty level or leading/trailing "/" would make topics other clients spell
    # differently.
    bad_edge = v.startswith(("/", "$")) or v.endswith("/")
    if not v or any(c in v for c in "+#\0") or "//" in v or bad_edge:
        raise _invalid(
            f"MQTT topic prefix {v!r} must be non-empty levels without + # or NUL, "
            "not starting with $"
        )
    return v


class MqttSettings(_Strict):
    """The MQTT bridge (``homewarden.services.mqtt_bridge``): state and events to a broker,
    with Home Assistant discovery. ``host`` None: no bridge.

    ``snapshots``: publish each event's snapshot JPEG to the broker (footage leaving the
    process: off unless the owner opts in). ``commands``: honour the command topics that
    switch recording and motion sensing per camera (anyone who may publish on the broker
    could otherwise stop recording: off unless the owner opts in). ``client_id`` default:
    ``homewarden-<topic_prefix>-<node>`` (``mqtt_bridge.default_client_id``; unique per
    process). ``keepalive``: seconds (MQTT 3.1.1 section 3.1.2.10).
    """

    host: str | None = None
    port: int = Field(default=1883, ge=1, le=65535)
    username: str | None = None
    password: str | None = None
    client_id: str | None = Field(default=None, min_length=1, max_length=128)
    topic_prefix: Annotated[str, AfterValidator(_check_topic_prefix)] = "homewarden"
    discovery_prefix: Annotated[str, AfterValidator(_check_topic_prefix)] = "homeassistant"
    snapshots: bool = False
    commands: bool = False
    keepalive: int = Field(default=60, ge=5, le=3600)


_QUEUE_NAME = re.compile(r"^[A-Za-z0-9_]{1,64}$")


class JobSettings(_Strict):
    """Background jobs (``homewarden.services.jobs``: exports, redaction, retention and
    disclosure scheduler passes), run by huey.

    ``redis_url`` None: the queue is SQLite at ``<data_dir>/jobs.db`` (one machine); else a
    ``redis://``, ``rediss://`` or ``unix://`` URL of the Redis holding it (many machines:
    every ``homewarden run`` and ``homewarden worker`` naming the same URL and ``name`` share
    one queue). ``name``: the queue's name (letters, digits, ``_``), so several deployments
    can share one Redis. ``workers``: worker threads of the consumer inside ``homewarden
    run`` (0: none, jobs wait for ``homewarden worker`` processes).
    """

    redis_url: str | None = None
    name: str = "homewarden"
    workers: int = Field(default=1, ge=0, le=64)

    @field_validator("redis_url")
    @classmethod
    def _redis_scheme(cls, v: str | None) -> str | None:
        if v is not None and not v.startswith(("redis://", "rediss://", "unix://")):
            raise _invalid("jobs.redis_url must start with redis://, rediss:// or unix://")
        return v

    @field_validator("name")
    @classmethod
    def _queue_name(cls, v: str) -> str:
        # huey's Redis storage drops every other character from the name: two names differing
        # only in those would share one queue.
        if not _QUEUE_NAME.match(v):
            raise _invalid(f"job queue name {v!r} may hold only letters, digits and _")
        return v


class Settings(BaseSettings):
    """Everything HomeWarden reads from configuration. Build with :func:`load_settings`."""

    model_config = SettingsConfigDict(
        env_prefix="HOMEWARDEN_", env_nested_delimiter="__", extra="forbid", frozen=True
    )

    data_dir: Path = Path("./homewarden-data")
    database_url: str | None = None
    household: str = Field(
        default="home",
        min_length=1,
        max_length=64,
        description="id of the household this recorder serves, written into audit entries",
    )
    audit: AuditSettings = Field(default_factory=AuditSettings)
    api: ApiSettings = Field(default_factory=ApiSettings)
    storage: StorageSettings = Field(default_factory=StorageSettings)
    recorder: RecorderSettings = Field(default_factory=RecorderSettings)
    mail: MailSettings = Field(default_factory=MailSettings)
    jobs: JobSettings = Field(default_factory=JobSettings)
    mqtt: MqttSettings = Field(default_factory=MqttSettings)
    cameras: dict[str, CameraSettings] = Field(default_factory=dict)

    @field_validator("household")
    @classmethod
    def _household_name(cls, v: str) -> str:
        if not all(c.isalnum() or c in "-_" for c in v):
            raise ValueError(f"household {v!r} may hold only letters, digits, - and _")
        return v

    @field_validator("cameras")
    @classmethod
    def _camera_names(cls, v: dict[str, CameraSettings]) -> dict[str, CameraSettings]:
        for name in v:
            if not name or not all(c.isalnum() or c in "-_" for c in name):
                raise ValueError(f"camera name {name!r} may hold only letters, digits, - and _")
        return v

    def camera_household(self, camera: str) -> str:
        """The household of configured ``camera`` (its own setting, else :attr:`household`);
        a camera known only from the index belongs to the deployment's household."""
        cam = self.cameras.get(camera)
        return self.household if cam is None or cam.household is None else cam.household

    @property
    def media_dir(self) -> Path:
        """Root of recorded segments: ``media/<camera>/<YYYY-MM-DD>/<HH>/<start>.mp4``."""
        return self.data_dir / "media"

    @property
    def snapshot_dir(self) -> Path:
        """Event snapshots (JPEG)."""
        return self.data_dir / "snapshots"

    @property
    def keys_dir(self) -> Path:
        """Deployment keys: ``log_signing_key`` (0600) and ``log_public_keys.json``."""
        return self.data_dir / "keys"

    @property
    def cache_dir(self) -> Path:
        """Fetched footage and models."""
        return self.data_dir / "cache"

    @property
    def db_url(self) -> str:
        """SQLAlchemy URL: ``database_url`` or SQLite at ``<data_dir>/homewarden.db``."""
        return self.database_url or f"sqlite:///{(self.data_dir / 'homewarden.db').resolve()}"


class SettingsHolder:
    """The deployment's current :class:`Settings`, replaced whole while running.

    :class:`Settings` is frozen; cameras added, edited or disabled in the app
    (``homewarden.services.cameras``) make a new one (``model_copy``), and the runtime swaps
    it in here. Services that read cameras take a :data:`SettingsSource` and read the holder
    on each use, so the change reaches them at once. Reading and replacing are single
    reference operations (atomic under the interpreter lock): a reader sees the old settings
    or the new ones, never a mix.
    """

    def __init__(self, settings: Settings) -> None:
        self._settings = settings

    def __call__(self) -> Settings:
        """The current settings."""
        return self._settings

    def replace(self, settings: Settings) -> None:
        """Make ``settings`` the current settings."""
        self._settings = settings


#: Settings fixed for the object's life, or a callable returning the current ones (a
#: :class:`SettingsHolder`), for services built before cameras change at run time.
SettingsSource = Settings | Callable[[], Settings]


def settings_reader(source: SettingsSource) -> Callable[[], Settings]:
    """A callable returning the current settings of ``source``."""
    if isinstance(source, Settings):
        fixed = source
        return lambda: fixed
    return source


class _TomlDictSource(PydanticBaseSettingsSource):
    """The parsed TOML file as the lowest-precedence settings source."""

    def __init__(self, settings_cls: type[BaseSettings], data: dict[str, Any]) -> None:
        super().__init__(settings_cls)
        self._data = data

    def get_field_value(self, field: Any, field_name: str) -> tuple[Any, str, bool]:
        return self._data.get(field_name), field_name, False

    def __call__(self) -> dict[str, Any]:
        return dict(self._data)


def _settings_class(file_data: dict[str, Any]) -> type[Settings]:
    class _Loaded(Settings):
        @classmethod
        def settings_customise_sources(
            cls,
            settings_cls: type[BaseSettings],
            init_settings: PydanticBaseSettingsSource,
            env_settings: PydanticBaseSettingsSource,
            dotenv_settings: PydanticBaseSettingsSource,
            file_secret_settings: PydanticBaseSettingsSource,
        ) -> tuple[PydanticBaseSettingsSource, ...]:
            # CLI overrides (init) > environment > TOML file > defaults.
            return (init_settings, env_settings, _TomlDictSource(settings_cls, file_data))

    return _Loaded


def _dotted(loc: tuple[int | str, ...]) -> str:
    return ".".join(str(p) for p in loc) or "(root)"


_ENV_PREFIX = "HOMEWARDEN_"


def _env_problem(exc: SettingsError) -> str:
    """Name the ``HOMEWARDEN_*`` variable behind a pydantic-settings parse error.

    pydantic-settings reports only the top-level field ("error parsing value for field
    "cameras" from source "EnvSettingsSource"") with the ``JSONDecodeError`` as the cause,
    whose ``doc`` is the text that failed; the variable is the one of that field holding it.
    """
    found = re.search(r'field "([^"]+)"', str(exc))
    field = found.group(1).upper() if found else ""
    ours = [k for k in os.environ if k.upper().startswith(_ENV_PREFIX)]
    if field:
        own = _ENV_PREFIX + field
        ours = [k for k in ours if k.upper() == own or k.upper().startswith(own + "__")]
    cause = exc.__cause__
    doc = getattr(cause, "doc", None)
    named = [k for k in ours if os.environ[k] == doc] or ours
    if not named:
        return f"a {_ENV_PREFIX}* environment variable cannot be parsed: {exc}"
    which = ", ".join(sorted(named))
    if isinstance(doc, str):
        return (
            f"environment variable {which} is not valid JSON ({cause}); a nested setting "
            f"takes a JSON value, or set its keys one by one as {sorted(named)[0]}__<KEY>"
        )
    return f"environment variable {which} cannot be parsed: {cause or exc}"


def read_toml(path: Path) -> dict[str, Any]:
    """Parse a TOML config file.

    Raises:
        ConfigError: the file is missing, unreadable, not UTF-8 text or not valid TOML.
    """
    try:
        with path.open("rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError as exc:
        raise ConfigError(f"config file {path} does not exist") from exc
    except UnicodeDecodeError as exc:  # TOML is UTF-8 (TOML 1.0, "Spec")
        raise ConfigError(
            f"config file {path} is not UTF-8 text, as TOML must be: byte "
            f"0x{exc.object[exc.start]:02x} at offset {exc.start}"
        ) from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path} is not valid TOML: {exc}") from exc
    except OSError as exc:
        raise ConfigError(f"config file {path} cannot be read: {exc}") from exc


def parse_camera_arg(arg: str) -> tuple[str, str]:
    """Split a ``NAME=URL`` command-line camera.

    Raises:
        ConfigError: no ``=`` or an empty name.
    """
    name, sep, url = arg.partition("=")
    if not sep or not name or not url:
        raise ConfigError(f"--camera takes NAME=URL, got {arg!r}")
    return name, url


def load_settings(
    config_file: Path | None = None,
    *,
    data_dir: Path | None = None,
    cameras: list[str] | None = None,
    api: str | None = None,
) -> Settings:
    """Build :class:`Settings` from file, environment and CLI overrides.

    Args:
        config_file: TOML file, or None for none.
        data_dir: ``--data-dir`` override.
        cameras: ``--camera NAME=URL`` values; added to (or replacing same-named) cameras.
        api: ``--api HOST:PORT`` override.

    Raises:
        ConfigError: unknown key (message holds its dotted path), bad value, unreadable file.
    """
    data: dict[str, Any] = read_toml(config_file) if config_file is not None else {}
    over: dict[str, Any] = {}
    if data_dir is not None:
        over["data_dir"] = str(data_dir)
    if cameras:
        cams: dict[str, Any] = dict(data.get("cameras", {}))
        for arg in cameras:
            name, url = parse_camera_arg(arg)
            cams[name] = {"url": url}
        over["cameras"] = cams
    if api is not None:
        host, sep, port = api.rpartition(":")
        if not sep or not port.isdigit():
            raise ConfigError(f"--api takes HOST:PORT, got {api!r}")
        over["api"] = {"host": host.strip("[]"), "port": int(port)}
    try:
        settings: Settings = _settings_class(data)(**over)
    except SettingsError as exc:
        raise ConfigError(f"invalid configuration: {_env_problem(exc)}") from exc
    except ValidationError as exc:
        problems = "; ".join(f"{_dotted(e['loc'])}: {e['msg']}" for e in exc.errors())
        where = f" in {config_file}" if config_file else ""
        raise ConfigError(f"invalid configuration{where}: {problems}") from exc
    return settings
