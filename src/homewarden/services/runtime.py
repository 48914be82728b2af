"""The recorder process: index, one recorder per camera, retention loop and the JSON API.

:class:`Runtime` is what ``homewarden run`` (and ``demo``) start. In order, :meth:`Runtime.start`

1. binds the API socket; on a non-loopback address without a trusted TLS proxy it warns
   that passwords and cookies would cross the network in the clear, and says how to put TLS
   in front;
2. takes the data dir's lock (:class:`~homewarden.store.lockfile.DataDirLock`, held until
   :meth:`Runtime.stop`): a second recorder on the same data dir is refused here, before its
   reconciliation could take the first one's segment in progress for a crash leftover;
3. opens the index at ``settings.db_url``, migrates it and reconciles it with the media dir;
4. opens the audit log (:class:`~homewarden.services.audit.AuditLog`; its signing key is
   generated at first run) and starts the tree-head loop (a signed tree head at once, then
   every ``audit.sth_interval`` s when the log grew, and a last one at stop); opens the
   accounts (:class:`~homewarden.services.accounts.AccountService`): at first run the owner
   account is created and a one-time setup link logged (:attr:`Runtime.setup_link`); loads
   the cameras saved in the app (:class:`~homewarden.services.cameras.CameraAdmin`) over the
   config file's, so the recorders start with the effective cameras;
5. starts the cameras' recorders: a :class:`~homewarden.services.recorder_group.RecorderGroup`
   built by ``recorder_pool_factory`` (the CLI passes recorder worker processes,
   :func:`homewarden.workers.camera_worker.recorder_pool`), or by default one
   :class:`CameraRecorder` thread per enabled camera;
6. opens the job queue (:class:`~homewarden.services.jobs.JobQueue`: SQLite ``jobs.db``, or
   Redis with ``jobs.redis_url``) and, unless ``jobs.workers`` is 0, a consumer of that many
   threads running jobs over this runtime's own index, audit log and disclosure service; the
   retention loop and the disclosure scheduler queue their passes as jobs (a retention pass
   at once, then every ``storage.retention_interval`` s; a disclosure pass every
   :data:`DISCLOSURE_INTERVAL` s), which any worker of the queue may run;
7. with ``mqtt.host`` set, on the roles ``all`` and ``web``: starts the MQTT bridge
   (:class:`~homewarden.services.mqtt_bridge.MqttBridge`; stopped after the recorders,
   publishing ``offline``);
8. with the API: starts the Web Push notifier
   (:class:`~homewarden.services.push.PushNotifier`; its VAPID key is made at first run) and
   serves the API with uvicorn on the bound socket in a thread.

Cameras changed in the app while running take effect at once (:meth:`Runtime.apply_cameras`):
the runtime's current settings live in a :class:`~homewarden.config.SettingsHolder` that the
queries, accounts, live view, push and retention read on each use, and the recorder group is
updated (only the cameras whose settings changed are restarted).

**Roles** (``homewarden run --role``; issue 7, many recorder nodes): ``all`` (the default) is
all of the above in one process tree. ``recorder`` takes a recorder node's lock
(:meth:`~homewarden.store.lockfile.DataDirLock.acquire_node`: nodes share the data dir, as on
a NAS), needs PostgreSQL, and runs only the recorders of the cameras it leases
(:class:`~homewarden.services.leases.LeaseManager`: heartbeat, fair share, takeover of a dead
node's cameras; each camera is reconciled when its lease is taken, never at start) - no API,
no scheduler loops, no audit key or tree heads, no owner account. ``web`` runs the API and
the scheduler loops (retention, disclosure, tree heads, push) and no recorder: no lock, no
reconciliation (recorder nodes may be writing), no leases.

Webhooks (:mod:`homewarden.services.webhooks`) are made with the disclosure service: owner
notices are handed to them as they are made, a follower of the index queues new events, and a
deliverer thread sends due calls every ``DELIVER_INTERVAL`` s; both threads are stopped before
the index is closed.

The web and workers layers sit above services, so the API app and the recorder pool are handed
in as factories (``app_factory``: the CLI passes :func:`homewarden.web.app.create_app`, which
gets an :class:`AppContext`; without one, no API is served).

:meth:`Runtime.stop` undoes it in reverse order of importance: recorders first (each finishes
its segment in progress), then the API, then the retention loop, then the job consumer (its
running jobs finish, up to :data:`JOBS_STOP_TIMEOUT` s), then the tree-head loop (signing a
last head), then the audit log and the index, and last the data dir's lock.
:meth:`Runtime.run` wraps start, wait and stop, stopping on SIGINT/SIGTERM or after a duration.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import signal
import socket
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from types import FrameType

import uvicorn
from starlette.types import ASGIApp

from homewarden.config import Settings, SettingsHolder
from homewarden.errors import ConfigError, HomeWardenError, JobQueueError, StorageError
from homewarden.notify.mail import Mailer
from homewarden.services.accounts import AccountService
from homewarden.services.audit import AuditLog
from homewarden.services.cameras import CameraAdmin
from homewarden.services.disclosure import DisclosureService
from homewarden.services.event_follow import EventFollower
from homewarden.services.household_keys import KeyRing, attach
from homewarden.services.jobs import JobConsumer, JobQueue, JobServices
from homewarden.services.leases import LeaseManager
from homewarden.services.mqtt_bridge import MqttBridge
from homewarden.services.notices import NoticeService
from homewarden.services.push import PushNotifier, PushService
from homewarden.services.queries import CameraStatusLike, Queries
from homewarden.services.reconcile import reconcile
from homewarden.services.recorder_group import (
    RecorderGroup,
    RecorderGroupFactory,
    ThreadRecorderGroup,
    enabled_cameras,
)
from homewarden.services.webhooks import WebhookDeliverer, WebhookService
from homewarden.store.accounts_store import UserRecord
from homewarden.store.disclosure_store import DisclosureStore
from homewarden.store.index import Index, normalise_url
from homewarden.store.lease_store import LeaseStore
from homewarden.store.lockfile import DataDirLock

log = logging.getLogger(__name__)

#: Seconds the recorders (stopping together) get to finish their segments at shutdown.
RECORDER_STOP_TIMEOUT = 15.0
#: Seconds the API gets to finish in-flight requests at shutdown.
API_STOP_TIMEOUT = 5.0
#: Seconds to wait for uvicorn to start serving.
API_START_TIMEOUT = 10.0
#: What ``homewarden run --role`` may run (see the module docstring).
ROLES = ("all", "recorder", "web")
#: Seconds between runs of the disclosure scheduler (due notices, expiries, fulfilment).
DISCLOSURE_INTERVAL = 5.0
#: Seconds the in-process job consumer gets to finish its running jobs at shutdown.
JOBS_STOP_TIMEOUT = 30.0


@dataclass(frozen=True, slots=True)
class ApiAddress:
    """Where the API really listens (after port 0 was resolved)."""

    host: str
    port: int

    @property
    def url(self) -> str:
        """Base URL, e.g. ``http://127.0.0.1:8765`` or ``http://[::1]:8765``."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"


def bind_api_socket(host: str, port: int) -> socket.socket:
    """A listening TCP socket on ``host:port`` (port 0: any free port).

    ``host`` may be an IP literal or a name (the first address it resolves to is bound).
    Every route needs an account, so any address may be bound; the runtime warns about plain
    HTTP on a non-loopback one.

    Raises:
        ConfigError: ``host`` does not resolve, or the port cannot be bound (in use, not
            permitted, not a local address).
    """
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP)
    except socket.gaierror as exc:
        raise ConfigError(f"api.host {host!r} does not resolve: {exc}") from exc
    addresses = [info for info in infos if info[0] in (socket.AF_INET, socket.AF_INET6)]
    if not addresses:
        raise ConfigError(f"api.host {host!r} has no IPv4 or IPv6 address")
    family, type_, proto, _, sockaddr = addresses[0]
    sock = socket.socket(family, type_, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(sockaddr)
        sock.listen(128)
    except OSError as exc:
        sock.close()
        raise ConfigError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from exc
    return sock


@dataclass(frozen=True)
class AppContext:
    """What the web app is built over: the runtime's open services.

    ``public_url``: where users reach the app (``api.public_url``, else the bound address).
    ``settings`` are those at start; cameras change while running, so read them through
    :meth:`current_settings`. ``cameras``: camera management (None: the web app makes one
    whose changes take effect at the next start). ``jobs``: the background job queue (its
    depth in ``/metrics``; None: no queue). ``keys``: household key management (None: the
    web app serves no key routes' actions, they answer 404).
    """

    settings: Settings
    index: Index
    audit: AuditLog
    queries: Queries
    accounts: AccountService
    clock: Callable[[], float]
    public_url: str
    push: PushService | None = None
    cameras: CameraAdmin | None = None
    disclosure: DisclosureService | None = None
    webhooks: WebhookService | None = None
    jobs: JobQueue | None = None
    keys: KeyRing | None = None

    def current_settings(self) -> Settings:
        """The settings now, with the cameras as last changed in the app."""
        return self.settings if self.cameras is None else self.cameras.current()


class Runtime:
    """Everything ``homewarden run`` runs, for one :class:`Settings`.

    Args:
        settings: validated settings.
        clock: now as UTC epoch seconds (recorders, retention, queries).
        app_factory: builds the ASGI app of the API over an :class:`AppContext`; None runs
            the recorders and retention without an API.
        recorder_pool_factory: builds the cameras' recorder group over the open index; None
            records every enabled camera on a thread of this process
            (:class:`~homewarden.services.recorder_group.ThreadRecorderGroup`).
        role: ``all``, ``recorder`` or ``web`` (see the module docstring); a recorder serves
            no API, whatever ``app_factory``.
        node: a recorder node's name (its lock file, its row in ``recorder_nodes``); default
            the host name. Two processes never run as one node on one data dir. Also in the
            MQTT bridge's default client id.

    Raises:
        ConfigError: an unknown role, or the role ``recorder`` on SQLite (leasing cameras
            needs PostgreSQL).
    """

    def __init__(
        self,
        settings: Settings,
        *,
        app_factory: Callable[[AppContext], ASGIApp] | None = None,
        recorder_pool_factory: RecorderGroupFactory | None = None,
        clock: Callable[[], float] = time.time,
        role: str = "all",
        node: str | None = None,
    ) -> None:
        if role not in ROLES:
            raise ConfigError(f"role {role!r}: one of {', '.join(ROLES)}")
        if role == "recorder" and normalise_url(settings.db_url).get_backend_name() != "postgresql":
            raise ConfigError(
                "--role recorder leases cameras from PostgreSQL: set database_url = "
                "'postgresql://...' (HOMEWARDEN_DATABASE_URL); on SQLite run --role all"
            )
        self._role = role
        self._node = node or socket.gethostname()
        self._leases: LeaseManager | None = None
        self._recording: frozenset[str] = frozenset()  # a recorder node's leased cameras
        self._recording_lock = threading.RLock()
        if role == "recorder":
            app_factory = None
        self._base = settings  # the config file's; the app's cameras are overlaid at start
        self._holder = SettingsHolder(settings)
        self._clock = clock
        self._app_factory = app_factory
        self._recorder_pool_factory: RecorderGroupFactory = (
            recorder_pool_factory or ThreadRecorderGroup
        )
        self._lock: DataDirLock | None = None
        self._stop_requested = threading.Event()
        self._retention_stop = threading.Event()
        self._sth_stop = threading.Event()
        self._disclosure_stop = threading.Event()
        self._disclosure: DisclosureService | None = None
        self._disclosure_thread: threading.Thread | None = None
        self._webhooks: WebhookService | None = None
        self._webhook_threads: list[WebhookDeliverer | EventFollower] = []
        self._sth_thread: threading.Thread | None = None
        self._audit: AuditLog | None = None
        self._accounts: AccountService | None = None
        self._keys: KeyRing | None = None
        self._cameras: CameraAdmin | None = None
        self._setup_link: str | None = None
        self._push: PushService | None = None
        self._notifier: PushNotifier | None = None
        self._mqtt: MqttBridge | None = None
        self._jobs: JobQueue | None = None
        self._consumer: JobConsumer | None = None
        self._index: Index | None = None
        self._recorders: RecorderGroup | None = None
        self._retention_thread: threading.Thread | None = None
        self._server: uvicorn.Server | None = None
        self._server_thread: threading.Thread | None = None
        self._sock: socket.socket | None = None
        self._address: ApiAddress | None = None
        self._started = False

    # public surface

    @property
    def settings(self) -> Settings:
        """The current settings: the config file's, with the cameras saved in the app once
        started (see :meth:`apply_cameras`)."""
        return self._holder()

    @property
    def cameras(self) -> CameraAdmin:
        """Camera management (its changes are applied to this runtime).

        Raises:
            RuntimeError: not started.
        """
        if self._cameras is None:
            raise RuntimeError("runtime not started")
        return self._cameras

    def apply_cameras(self, settings: Settings) -> None:
        """Make ``settings`` (the same deployment, with other cameras) current: every service
        reading the runtime's settings sees them at once, and the recorders of cameras whose
        settings changed are restarted, those removed or disabled stopped, new ones started
        (:meth:`RecorderGroup.update`). Called by :class:`CameraAdmin` after each change."""
        self._holder.replace(settings)
        with self._recording_lock:  # a lease change and a camera change, one at a time
            recorders = self._recorders
            if recorders is not None:
                recorders.update(self._recorded(settings))

    @property
    def address(self) -> ApiAddress | None:
        """The bound API address once started (None before, or without the API)."""
        return self._address

    @property
    def index(self) -> Index:
        """The open index.

        Raises:
            RuntimeError: not started.
        """
        if self._index is None:
            raise RuntimeError("runtime not started")
        return self._index

    @property
    def audit(self) -> AuditLog:
        """The open audit log.

        Raises:
            RuntimeError: not started.
        """
        if self._audit is None:
            raise RuntimeError("runtime not started")
        return self._audit

    @property
    def accounts(self) -> AccountService:
        """The open account service.

        Raises:
            RuntimeError: not started.
        """
        if self._accounts is None:
            raise RuntimeError("runtime not started")
        return self._accounts

    @property
    def setup_link(self) -> str | None:
        """At first run (the owner has no password yet), the one-time setup link to print;
        None once the owner can log in, or without an API."""
        return self._setup_link

    def public_url(self) -> str:
        """Where users reach the app: ``api.public_url``, else the bound address."""
        if self.settings.api.public_url:
            return self.settings.api.public_url
        return self._address.url if self._address is not None else ""

    def statuses(self) -> Mapping[str, CameraStatusLike]:
        """Live status of every running recorder, by camera name."""
        recorders = self._recorders
        return {} if recorders is None else recorders.statuses()

    def queries(self) -> Queries:
        """Read use-cases over this runtime's index and recorders."""
        return Queries(self.index, self._holder, self.statuses, self._clock, audit=self.audit)

    def start(self) -> ApiAddress | None:
        """Start everything (see the module docstring); returns the API address.

        Raises:
            ConfigError: the API address is not loopback or cannot be bound.
            DatabaseError: the index cannot be opened or migrated.
            StorageError: the data dir cannot be created, or another recorder holds its lock
                (the message names that process's pid).
        """
        if self._started:
            raise RuntimeError("runtime already started")
        self._started = True
        try:
            self._start()
        except BaseException:
            self.stop()
            raise
        return self._address

    def request_stop(self) -> None:
        """Ask :meth:`wait` to return (thread- and signal-safe)."""
        self._stop_requested.set()

    def wait(self, duration: float | None = None) -> bool:
        """Block until :meth:`request_stop` or ``duration`` seconds; True if stop was asked."""
        return self._stop_requested.wait(duration)

    def stop(self) -> None:
        """Stop recorders (finishing segments), the API, the retention loop; close the index;
        release the data dir's lock.

        Safe to call more than once and after a failed start.
        """
        if self._leases is not None:
            self._leases.stop()  # no camera comes or goes while the recorders stop
        if self._recorders is not None:
            self._recorders.stop(RECORDER_STOP_TIMEOUT)
        if self._leases is not None:
            self._leases.close()  # segments finished: the other nodes may take the cameras
        self._leases = None
        if self._server is not None:
            self._server.should_exit = True
        if self._server_thread is not None:
            self._server_thread.join(API_STOP_TIMEOUT)
            if self._server_thread.is_alive():
                assert self._server is not None
                self._server.force_exit = True
                self._server_thread.join(API_STOP_TIMEOUT)
        if self._sock is not None:
            self._sock.close()
        if self._notifier is not None:
            self._notifier.stop()
        if self._mqtt is not None:  # after the recorders: their last events end first
            self._mqtt.stop()
        self._mqtt = None
        self._notifier = self._push = None
        self._retention_stop.set()
        if self._retention_thread is not None:
            self._retention_thread.join()
        if self._consumer is not None:  # before the last tree head and the services it uses
            self._consumer.stop(JOBS_STOP_TIMEOUT)
        if self._jobs is not None:
            self._jobs.close()
        self._consumer = self._jobs = None
        self._sth_stop.set()
        if self._sth_thread is not None:
            self._sth_thread.join()
        self._disclosure_stop.set()
        if self._disclosure_thread is not None:
            self._disclosure_thread.join()
        self._disclosure_thread = self._disclosure = None
        for thread in self._webhook_threads:
            thread.stop()
        self._webhook_threads = []
        self._webhooks = None
        if self._audit is not None:
            self._audit.close()
        if self._index is not None:
            self._index.close()
        if self._lock is not None:
            self._lock.release()
        self._recorders = None
        self._lock = None
        self._server = self._server_thread = self._retention_thread = self._sth_thread = None
        self._sock = None
        self._audit = None
        self._accounts = None
        self._keys = None
        self._cameras = None
        self._index = None

    def run(
        self,
        duration: float | None = None,
        on_ready: Callable[[ApiAddress | None], None] | None = None,
    ) -> None:
        """Start, call ``on_ready(address)``, wait for SIGINT/SIGTERM or ``duration`` seconds,
        then stop. Signal handlers are installed only when called on the main thread.

        Raises:
            as :meth:`start`.
        """
        with self._signals():
            self.start()
            try:
                if on_ready is not None:
                    on_ready(self._address)
                self.wait(duration)
            finally:
                self.stop()

    def __enter__(self) -> Runtime:
        self.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stop()

    # internals

    def _start(self) -> None:
        s = self.settings
        if self._app_factory is not None:
            self._sock = bind_api_socket(s.api.host, s.api.port)
            host, port = self._sock.getsockname()[:2]
            self._address = ApiAddress(str(host), int(port))
        for d in (s.data_dir, s.media_dir, s.snapshot_dir, s.cache_dir):
            try:
                d.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise StorageError(f"cannot create {d}: {exc}") from exc
        serves = self._role != "recorder"  # the web app's loops and keys
        if self._role == "all":
            self._lock = DataDirLock.acquire(s.data_dir)
        elif self._role == "recorder":
            self._lock = DataDirLock.acquire_node(s.data_dir, self._node)
        self._index = Index(s.db_url)
        self._index.migrate()
        if self._role == "all":  # a recorder node reconciles each camera as it leases it
            report = reconcile(self._index, s.media_dir, sealed=s.storage.sealed)
            if any(dataclasses.astuple(report)):
                log.info("index reconciled with %s: %s", s.media_dir, report)
        self._audit = AuditLog.open(s.db_url, s.keys_dir, household=s.household, clock=self._clock)
        if serves:
            self._audit.ensure_key()
        self._cameras = CameraAdmin(
            self._index, self._audit, self._base, apply=self.apply_cameras, clock=self._clock
        )
        self._accounts = AccountService(self._index, self._audit, self._holder, clock=self._clock)
        # Household keys: logins unlock them; each household gets its first key at once, on
        # a recorder node too: sealed footage (the default) needs its household's public key
        # before a segment can be closed, whichever node starts first.
        self._keys = attach(self._accounts, self._index, self._audit, s.keys_dir, clock=self._clock)
        secret = self._accounts.bootstrap_owner() if serves else None
        if not serves:
            self._accounts.ensure_households()
        if serves:
            self._start_disclosure()
        s = self._cameras.load()  # the effective cameras, before any recorder starts
        if serves:
            self._sth_thread = threading.Thread(
                target=self._sth_loop, name="audit-sth", daemon=True
            )
            self._sth_thread.start()
        self._start_recorders(s)
        if s.mqtt.host is not None and serves:  # MQTT bridge (services/mqtt_bridge.py)
            # Not on recorder nodes: the web node publishes the events they write.
            self._mqtt = MqttBridge(
                self._holder, self._index, self._audit, cameras=self._cameras, node=self._node
            )
            self._mqtt.start()
        if serves:
            self._retention_thread = threading.Thread(
                target=self._retention_loop, name="retention", daemon=True
            )
            self._retention_thread.start()
        if self._app_factory is not None:
            self._warn_if_plain_http()
            if secret is not None:
                self._setup_link = f"{self.public_url()}/setup?token={secret}"
                log.warning("first run: set the owner's password at %s", self._setup_link)
            self._push = PushService(self._accounts, self._holder, clock=self._clock)
            self._notifier = PushNotifier(self._push, self._index)
            self._notifier.start()
            self._start_api(self._app_factory)

    def _start_recorders(self, s: Settings) -> None:
        """Role ``all``: every enabled camera of ``s``; ``recorder``: register the node, start
        an empty group fenced by its id, then the lease manager, whose first round takes the
        node's share (reconciled, then started); ``web``: none."""
        assert self._index is not None
        if self._role == "web":
            return
        if self._role == "all":
            self._recorders = self._recorder_pool_factory(
                s, self._index, self._clock, lock=self._lock
            )
            self._recorders.start()
            return
        leases = LeaseManager(
            LeaseStore(self._index),
            self._node,
            cameras=self._leasable_cameras,
            on_change=self._leases_changed,
            reclaim=True,  # we hold the node's lock file: no other process runs as this node
        )
        node_id = leases.register()
        self._leases = leases
        self._recorders = self._recorder_pool_factory(
            self._recorded(s), self._index, self._clock, lock=self._lock, fence_node=node_id
        )
        self._recorders.start()
        leases.start()

    def _recorded(self, settings: Settings) -> Settings:
        """``settings`` with only the cameras this runtime records: all of them, or on a
        recorder node those it leases."""
        if self._leases is None:
            return settings
        cameras = {n: c for n, c in settings.cameras.items() if n in self._recording}
        return settings.model_copy(update={"cameras": cameras})

    def _leasable_cameras(self) -> list[str]:
        """The enabled cameras, reloaded with those saved in the app (by a web node: each
        lease round brings its changes here, and restarts a changed camera's recorder)."""
        assert self._cameras is not None
        return list(enabled_cameras(self._cameras.load()))

    def _leases_changed(self, held: frozenset[str], acquired: frozenset[str]) -> None:
        """The lease manager's callback: reconcile the cameras just ``acquired`` (the
        previous holder's ``.part`` files and open gaps; nobody else writes them now), then
        record exactly ``held``.

        Raises:
            DatabaseError: the acquired cameras cannot be reconciled (none is started).
        """
        assert self._index is not None
        if acquired:
            reconcile(
                self._index,
                self.settings.media_dir,
                cameras=sorted(acquired),
                sealed=self.settings.storage.sealed,
            )
        with self._recording_lock:
            self._recording = held
            recorders = self._recorders
            if recorders is not None:
                recorders.update(self._recorded(self.settings))

    def _warn_if_plain_http(self) -> None:
        api = self.settings.api
        if api.is_loopback or api.trusted_proxies or (api.public_url or "").startswith("https:"):
            return
        log.warning(
            "serving plain HTTP on %s, a non-loopback address: passwords and session cookies "
            "cross the network in the clear. Put a TLS reverse proxy in front (Caddy: "
            "'reverse_proxy %s:%d'; nginx: proxy_pass with X-Forwarded-Proto), list it in "
            '[api] trusted_proxies and set [api] public_url = "https://..."',
            api.host,
            api.host,
            api.port,
        )

    def app_context(self) -> AppContext:
        """The services the web app is built over.

        Raises:
            RuntimeError: not started.
        """
        return AppContext(
            settings=self.settings,
            index=self.index,
            audit=self.audit,
            queries=self.queries(),
            accounts=self.accounts,
            clock=self._clock,
            public_url=self.public_url(),
            push=self._push,
            cameras=self._cameras,
            disclosure=self._disclosure,
            webhooks=self._webhooks,
            jobs=self._jobs,
            keys=self._keys,
        )

    def _start_api(self, app_factory: Callable[[AppContext], ASGIApp]) -> None:
        assert self._sock is not None
        assert self._address is not None
        app = app_factory(self.app_context())
        proxies = self.settings.api.trusted_proxies
        config = uvicorn.Config(
            app,
            log_config=None,
            access_log=False,
            lifespan="off",
            log_level="warning",
            proxy_headers=bool(proxies),
            forwarded_allow_ips=",".join(proxies) if proxies else None,
        )
        server = uvicorn.Server(config)
        self._server = server
        sock = self._sock
        self._server_thread = threading.Thread(
            target=server.run, kwargs={"sockets": [sock]}, name="api", daemon=True
        )
        self._server_thread.start()
        deadline = time.monotonic() + API_START_TIMEOUT
        while not server.started:
            if not self._server_thread.is_alive() or time.monotonic() > deadline:
                raise ConfigError(f"the API did not start on {self._address.url}")
            time.sleep(0.02)
        log.info("API listening on %s", self._address.url)

    def _start_disclosure(self) -> None:
        assert self._index is not None
        assert self._audit is not None
        assert self._accounts is not None
        notices = NoticeService(
            DisclosureStore(self._index), Mailer(self.settings.mail), clock=self._clock
        )
        self._disclosure = DisclosureService(
            self._index,
            self._holder,
            self._audit,
            self._accounts,
            notices,
            public_url=self.public_url() or "http://127.0.0.1",
            clock=self._clock,
        )

        def locked(user: UserRecord) -> None:
            notices.alert_staff(
                f"Requester {user.username} locked after too many wrong TOTP codes",
                f"Requester account {user.username} (id {user.id}) entered wrong TOTP codes "
                "too many times in a row and was disabled. Check with the agency before "
                "re-enabling it.",
            )

        self._accounts.on_requester_locked = locked
        # Webhooks hear of a request when, and as, the owner does (the notice listener).
        self._webhooks = WebhookService(
            self._index,
            self._audit,
            self._holder,
            public_url=self.public_url() or "http://127.0.0.1",
            clock=self._clock,
        )
        notices.add_owner_listener(self._webhooks.on_owner_notice)
        self._webhook_threads = [WebhookDeliverer(self._webhooks), self._webhooks.follower()]
        for thread in self._webhook_threads:
            thread.start()
        self._start_jobs()
        self._disclosure_thread = threading.Thread(
            target=self._disclosure_loop, name="disclosure-scheduler", daemon=True
        )
        self._disclosure_thread.start()

    def _start_jobs(self) -> None:
        """The job queue (:mod:`homewarden.services.jobs`), its jobs running over this
        runtime's services, and unless ``jobs.workers`` is 0 a consumer of that many
        threads."""
        assert self._index is not None
        assert self._audit is not None
        services = JobServices(
            self._index, self._audit, self._holder, disclosure=self._disclosure, clock=self._clock
        )
        self._jobs = JobQueue(self.settings, services=services)
        self._jobs.probe()  # unreachable: one warning; recording goes on, passes wait
        workers = self.settings.jobs.workers
        if workers == 0:
            log.warning(
                "jobs.workers = 0: retention, disclosure notices and exports wait for a "
                "`homewarden worker` on %s",
                self._jobs.where,
            )
            return
        self._consumer = self._jobs.consumer(workers)
        self._consumer.start()

    def _disclosure_loop(self) -> None:
        """Queue a disclosure pass (expiries, delayed notices, holds ending, fulfilment) every
        :data:`DISCLOSURE_INTERVAL` seconds, dropped if no worker took it by the next; due
        times live in the database, so a restart loses none."""
        assert self._jobs is not None
        while True:
            try:
                self._jobs.enqueue_pass("disclosure", expires=DISCLOSURE_INTERVAL)
            except JobQueueError as exc:  # logged once until the queue answers again
                self._jobs.note_error("disclosure pass not queued", exc)
            except HomeWardenError as exc:
                log.error("disclosure scheduler: %s", exc)
            else:
                self._jobs.note_ok()
            if self._disclosure_stop.wait(DISCLOSURE_INTERVAL):
                return

    def _retention_loop(self) -> None:
        """Queue a retention pass at once, then every ``storage.retention_interval`` s."""
        assert self._jobs is not None
        interval = self.settings.storage.retention_interval
        while True:
            try:
                self._jobs.enqueue_pass("retention", expires=interval)
            except JobQueueError as exc:
                self._jobs.note_error("retention pass not queued", exc)
            except HomeWardenError as exc:
                log.error("retention pass not queued: %s", exc)
            else:
                self._jobs.note_ok()
            if self._retention_stop.wait(interval):
                return

    def _sth_loop(self) -> None:
        assert self._audit is not None
        while True:
            self._sign_tree_head(self._audit)
            if self._sth_stop.wait(self.settings.audit.sth_interval):
                break
        self._sign_tree_head(self._audit)  # a last head covers everything up to the stop

    @staticmethod
    def _sign_tree_head(audit: AuditLog) -> None:
        try:
            sth = audit.sign_if_grown()
        except HomeWardenError as exc:
            log.error("cannot sign an audit tree head: %s", exc)
            return
        if sth is not None:
            log.info("signed the audit tree head of size %d", sth.tree_size)

    @contextlib.contextmanager
    def _signals(self) -> Iterator[None]:
        if threading.current_thread() is not threading.main_thread():
            yield
            return

        def handle(signum: int, _frame: FrameType | None) -> None:
            log.info("received %s, stopping", signal.Signals(signum).name)
            self.request_stop()

        previous = {sig: signal.signal(sig, handle) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield
        finally:
            for sig, old in previous.items():
                signal.signal(sig, old)
