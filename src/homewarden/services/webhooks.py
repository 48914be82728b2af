"""Webhooks per household (issue 7): signed calls for new events and for request notices,
retried with back-off, then kept as dead letters the owner can see and send again.

What is sent. One JSON message per new event (``event.created``: camera, label, zones,
score, times and *links* to the event page, clip and snapshot, never footage bytes, as the
Web Push notifications) and one per owner notice about a disclosure request
(``request.notice``: the notice's subject and text, the request id and its page). Request
messages are made by a listener on :class:`~homewarden.services.notices.NoticeService`
(:meth:`WebhookService.on_owner_notice`), so a webhook gets exactly what the owner is told,
when the owner is told: a request under a non-disclosure order reaches no webhook before
its owner notice is sent. Messages follow the Standard Webhooks payload shape
(``{"type", "timestamp", "data"}``) and are signed the Standard Webhooks way
(:mod:`homewarden.crypto.webhook_signature`: ``webhook-id``, ``webhook-timestamp``,
``webhook-signature: v1,<base64 HMAC-SHA256>``). The ``webhook-id`` is the same on every
attempt (``msg_event_<id>``, ``msg_notice_<id>``), a receiver's idempotency key.

Where it goes. A webhook is an ``http://`` or ``https://`` URL without credentials in it
(:func:`check_url`). Targets on the home network and loopback are allowed on purpose: the
usual receiver is Home Assistant (``http://homeassistant.local:8123/api/webhook/<id>``) or
Node-RED on the same LAN, often without TLS. What keeps that from being a way into other
machines (server-side request forgery, the specification's "SSRF" section): only a
household's owner may add a webhook; calls are POSTs of our own JSON, never of the owner's
bytes; redirects are not followed (a 3xx is a failure); the receiver's answer body is never
read nor shown, only its status; and link-local, multicast, unspecified and reserved
addresses (cloud metadata services live on link-local 169.254.169.254) are never called. That
rule is applied twice: to an IP address in the URL when the webhook is added (:func:`check_url`;
the address in any form the C resolver reads as one, ``inet_aton``'s decimal, hex, octal and
short forms too: ``http://2852039166/`` is 169.254.169.254), and to every address the host
resolves to when a message is sent (:func:`resolve_target`, ``socket.getaddrinfo``; a name
such as ``169.254.169.254.nip.io``). A delivery whose host resolves to any forbidden address
is refused before any connection is made and dead at once (the owner changes the URL or the
name's DNS record, then sends it again). The connection then goes to an address so checked
(:class:`PinnedAdapter`), never to a second lookup, so DNS rebinding between the check and the
connection is closed; the URL's host stays the ``Host`` header, the TLS server name and the
name the certificate must match. Legacy numeric forms of an allowed address are allowed and
behave as it (``http://2130706433:8123/`` calls 127.0.0.1). Behind a proxy
(``HTTPS_PROXY``/``HTTP_PROXY``/``NO_PROXY`` are honoured, as requests does) names are
resolved by the proxy, not checked here: the proxy is then the guard. A provider hosting many
households should put the deliverer behind such an egress proxy anyway.

When. The deliverer (:class:`WebhookDeliverer`, every :data:`DELIVER_INTERVAL` s and at once
when a message is queued) sends due deliveries with ``requests`` (:data:`SEND_TIMEOUT` s).
A 2xx answer is delivered (Standard Webhooks "Delivery success and failure"); a ``410 Gone``
disables the webhook (the receiver wants no more calls: its pending messages become dead
letters); anything else - another status, a timeout, a refused connection - is retried after
:data:`BACKOFF` (10 s, 30 s, 2 min, 10 min, 1 h), each delay with +/- :data:`JITTER` random
jitter so retries after an outage do not arrive together (the specification's
"Deliverability and reliability" asks for exponential back-off with jitter; its example
schedule spans days for internet services, ours spans about an hour and a quarter, enough
for a Home Assistant restart or update), or later when the answer carries ``Retry-After``
(RFC 9110 section 10.2.3). After :data:`MAX_ATTEMPTS` failures the delivery is dead: listed
in the app and the API, and sent again on the owner's word (:meth:`WebhookService.redeliver`).

Who. Owners manage their household's webhooks; a webhook of another household is "not
found". Each change (add, remove, rotate the secret, enable, disable, redeliver) is an audit
entry ``setting:value:change`` naming the household, with the receiver's origin only (a URL
path can hold the receiver's own secret, as Home Assistant's webhook ids do). The secret is
shown once, when made (at creation and at rotation); it is kept in the database because every
call is signed with it.
"""

from __future__ import annotations

import email.utils
import ipaddress
import json
import logging
import math
import random
import re
import secrets
import socket
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import requests
from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.exceptions import ConnectTimeoutError, NewConnectionError

from homewarden import __version__
from homewarden.config import SettingsSource, settings_reader
from homewarden.crypto.webhook_signature import (
    SECRET_SIZE,
    format_secret,
    parse_secret,
    signed_headers,
)
from homewarden.domain.audit import Actor, ActorKind, AuditTag
from homewarden.domain.permissions import Principal, Role
from homewarden.errors import (
    HomeWardenError,
    InvalidRequestError,
    InvalidTransitionError,
    NotFoundError,
    PermissionDeniedError,
)
from homewarden.services.audit import AuditLog
from homewarden.services.event_follow import EventFollower
from homewarden.store.disclosure_store import NoticeRecord
from homewarden.store.index import Index
from homewarden.store.records import EventRecord
from homewarden.store.webhook_store import (
    DeliveryRecord,
    DeliveryState,
    NewDelivery,
    WebhookRecord,
    WebhookStore,
)
from homewarden.timefmt import utc_text

log = logging.getLogger(__name__)

#: Kinds of message a webhook may ask for.
EVENT = "event"
REQUEST = "request"
KINDS = (EVENT, REQUEST)
#: Message types (Standard Webhooks "Event types": full-stop delimited).
EVENT_CREATED = "event.created"
REQUEST_NOTICE = "request.notice"
#: Seconds to wait for a receiver (connect, then the answer's status line).
SEND_TIMEOUT = 10.0
#: Seconds before the 2nd, 3rd, ... attempt (see the module docstring).
BACKOFF = (10.0, 30.0, 120.0, 600.0, 3600.0)
#: Each delay is multiplied by a uniform factor in ``[1 - JITTER, 1 + JITTER]``.
JITTER = 0.2
#: Attempts before a delivery is dead: the first and one per back-off delay.
MAX_ATTEMPTS = len(BACKOFF) + 1
#: Longest ``Retry-After`` honoured, seconds (a longer one is capped).
MAX_RETRY_AFTER = 3600.0
#: Seconds between the deliverer's passes.
DELIVER_INTERVAL = 2.0
#: A claimed delivery is due again after this many seconds if its deliverer died mid-send.
LEASE = 3 * SEND_TIMEOUT
#: Deliveries handled per pass.
DUE_BATCH = 50
#: Webhooks per household (each message goes to each).
MAX_WEBHOOKS = 10
#: Longest URL (the ``webhooks.url`` column).
MAX_URL = 2048
#: Delivered messages are kept this long, dead letters this long, seconds.
DELIVERED_KEEP = 7 * 86400.0
DEAD_KEEP = 30 * 86400.0
#: Seconds between purges of old deliveries by the deliverer.
PURGE_INTERVAL = 3600.0
#: The event follower's cursor name (``event_cursors``).
EVENT_CURSOR = "webhooks"
#: Longest error text kept with a delivery.
_MAX_ERROR = 300
#: "This network" (RFC 791, RFC 1122 3.2.1.3): never a receiver's address.
_THIS_NETWORK = ipaddress.ip_network("0.0.0.0/8")
_ERRNO = re.compile(r"\[Errno -?\d+\] [^'\")\]]+")
_FORBIDDEN = "link-local, multicast, unspecified and reserved addresses are refused"

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


def forbidden(address: IPAddress) -> str | None:
    """Why a webhook may not call ``address`` (``"link-local"``, ``"multicast"``,
    ``"unspecified"``, ``"reserved"``), or None when it may: loopback and private (home
    network) addresses may be called, as any public one. An IPv4-mapped IPv6 address is
    judged as its IPv4 address; ``0.0.0.0/8`` is "this network" (RFC 1122 3.2.1.3), never a
    receiver. Classes are :mod:`ipaddress`'s (IANA special-purpose registries)."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    if address.is_loopback:
        return None
    if address.is_link_local:
        return "link-local"
    if address.is_multicast:
        return "multicast"
    if address.is_unspecified or address in _THIS_NETWORK:
        return "unspecified"
    if address.is_reserved:
        return "reserved"
    return None


def _numeric_host(host: str) -> IPAddress | None:
    """The address ``host`` (a URL's host, brackets removed) is, when the C resolver reads it
    as one: an IP literal, or an IPv4 address in a legacy ``inet_aton`` form (``2852039166``,
    ``0xa9fea9fe``, ``0251.0376.0251.0376``, ``169.254.43518``); None for a name."""
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        pass
    try:
        return ipaddress.IPv4Address(socket.inet_aton(host))
    except (OSError, ValueError):
        return None


def check_url(url: str) -> str:
    """``url`` if it may be a webhook's target (see the module docstring): ``http`` or
    ``https``, a host, no user name or password, no fragment, at most :data:`MAX_URL`
    characters of printable ASCII (a name with other characters is given in its IDNA
    ``xn--`` form), a valid port; an IP address (in any form the C resolver reads as one,
    ``inet_aton``'s legacy forms too) that is not link-local, multicast, unspecified or
    reserved (:func:`forbidden`). Loopback and private addresses and names are allowed;
    names are checked when a message is sent (:func:`resolve_target`).

    Raises:
        InvalidRequestError: why the URL is refused.
    """
    if not url or len(url) > MAX_URL:
        raise InvalidRequestError(f"a webhook URL is 1-{MAX_URL} characters")
    if not all("!" <= c <= "~" for c in url):
        raise InvalidRequestError("a webhook URL is printable ASCII without spaces")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise InvalidRequestError(f"the webhook URL is malformed: {exc}") from None
    if parts.scheme not in ("http", "https"):
        raise InvalidRequestError("a webhook URL starts with http:// or https://")
    if not parts.hostname:
        raise InvalidRequestError("the webhook URL has no host")
    if parts.username is not None or parts.password is not None or "@" in parts.netloc:
        raise InvalidRequestError(
            "put no user name or password in a webhook URL: calls are signed instead"
        )
    if parts.fragment or url.endswith("#"):
        raise InvalidRequestError("a webhook URL has no #fragment (it is never sent)")
    if port == 0:
        raise InvalidRequestError("the webhook URL's port must be 1-65535")
    address = _numeric_host(parts.hostname)
    if address is None:
        return url  # a name; its addresses are checked when a message is sent
    why = forbidden(address)
    if why is not None:
        shown = str(address) if parts.hostname == str(address) else f"{parts.hostname} ({address})"
        raise InvalidRequestError(f"a webhook cannot call {shown}, {why}: {_FORBIDDEN}")
    return url


def resolve_target(url: str) -> tuple[str, ...]:
    """The addresses the host of ``url`` (a webhook's URL) resolves to now, as
    ``socket.getaddrinfo`` (the C resolver) reads it, in its order and without repeats, if
    :func:`forbidden` allows every one of them.

    Raises:
        InvalidRequestError: one of the addresses is forbidden (names the host, the address
            and why): the call must not be made.
        OSError: the host does not resolve (``socket.gaierror``) or the URL has no host.
    """
    parts = urlsplit(url)
    host = parts.hostname
    if not host:
        raise OSError(f"no host in {origin(url)}")
    port = parts.port or (443 if parts.scheme == "https" else 80)
    found: list[str] = []
    for *_, sockaddr in socket.getaddrinfo(host, port, type=socket.SOCK_STREAM):
        text = str(sockaddr[0])
        address = ipaddress.ip_address(text)
        why = forbidden(address)
        if why is not None:
            raise InvalidRequestError(f"{host} resolves to {address} ({why}): {_FORBIDDEN}")
        if text not in found:
            found.append(text)
    if not found:
        raise OSError(f"{host} resolves to no address")
    return tuple(found)


def _proxied(url: str) -> bool:
    """Whether requests would send a call to ``url`` through a proxy of the environment
    (``HTTP_PROXY``, ``HTTPS_PROXY``, ``ALL_PROXY``, minus ``NO_PROXY``)."""
    proxies = requests.utils.get_environ_proxies(url)
    return requests.utils.select_proxy(url, proxies) is not None


class _PinnedConnection(HTTPConnection):
    """A urllib3 connection to the addresses in :attr:`addresses` (checked already, tried in
    order), never to what its host name resolves to at connect time. Its host name stays
    what ``Host``, TLS SNI and the certificate check use (urllib3 reads ``host`` after
    ``_new_conn``; only the address connected to is swapped for the call)."""

    addresses: tuple[str, ...] = ()

    def _new_conn(self) -> socket.socket:
        name = self._dns_host
        failure: ConnectTimeoutError | None = None
        for address in self.addresses:
            self._dns_host = address
            try:
                return super()._new_conn()
            except ConnectTimeoutError as exc:  # NewConnectionError too
                failure = exc
            finally:
                self._dns_host = name
        raise failure or NewConnectionError(self, "no checked address to connect to")


class _PinnedTLSConnection(_PinnedConnection, HTTPSConnection):
    """:class:`_PinnedConnection` with TLS (the server name and certificate are the host
    name's)."""


class PinnedAdapter(HTTPAdapter):
    """A requests transport adapter whose direct (not proxied) connections go only to
    ``addresses``, as checked by :func:`resolve_target`; mount it for ``http://`` and
    ``https://`` on a session made for one call (its pools are bound to those addresses).

    Args:
        addresses: IP addresses as text, tried in order.
    """

    def __init__(self, addresses: Sequence[str]) -> None:
        pinned = {"addresses": tuple(addresses)}
        plain = type("PinnedConnection", (_PinnedConnection,), pinned)
        tls = type("PinnedTLSConnection", (_PinnedTLSConnection,), pinned)
        self._pools: dict[str, type[HTTPConnectionPool]] = {
            "http": type("PinnedPool", (HTTPConnectionPool,), {"ConnectionCls": plain}),
            "https": type("PinnedTLSPool", (HTTPSConnectionPool,), {"ConnectionCls": tls}),
        }
        super().__init__(max_retries=0)

    def init_poolmanager(
        self, connections: int, maxsize: int, block: bool = False, **pool_kwargs: Any
    ) -> None:
        """requests' pool manager, its pools swapped for pinned ones."""
        super().init_poolmanager(connections, maxsize, block, **pool_kwargs)
        self.poolmanager.pool_classes_by_scheme = self._pools


def check_kinds(kinds: Sequence[str]) -> tuple[str, ...]:
    """``kinds`` sorted and without repeats, if each is one of :data:`KINDS` and there is
    at least one.

    Raises:
        InvalidRequestError: empty, or an unknown kind.
    """
    found = sorted(set(kinds))
    if not found:
        raise InvalidRequestError(f"choose what the webhook gets: {', '.join(KINDS)}")
    unknown = [k for k in found if k not in KINDS]
    if unknown:
        raise InvalidRequestError(
            f"unknown webhook kind {unknown[0]!r}: choose from {', '.join(KINDS)}"
        )
    return tuple(found)


def backoff_delay(attempts: int, rng: Callable[[], float] = random.random) -> float | None:
    """Seconds to wait after the ``attempts``-th failed attempt (1-based), jittered by
    ``rng()`` (uniform in ``[0, 1)``), or None when that was the last attempt
    (:data:`MAX_ATTEMPTS`)."""
    if attempts < 1:
        raise ValueError("attempts start at 1")
    if attempts >= MAX_ATTEMPTS:
        return None
    base = BACKOFF[attempts - 1]
    return base * (1.0 - JITTER + 2.0 * JITTER * rng())


def retry_after(value: str | None, now: float) -> float | None:
    """Seconds a ``Retry-After`` header value asks to wait (RFC 9110 section 10.2.3: a
    number of seconds, or an HTTP-date), capped at :data:`MAX_RETRY_AFTER`; None when
    absent or unreadable."""
    if not value:
        return None
    text = value.strip()
    if text.isdigit():
        return min(float(text), MAX_RETRY_AFTER)
    try:
        when = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        return None
    return max(0.0, min(when.timestamp() - now, MAX_RETRY_AFTER))


def origin(url: str) -> str:
    """``scheme://host[:port]`` of ``url``: what audit entries and logs name (a path may
    hold the receiver's own secret)."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


def _short_error(exc: requests.RequestException, timeout: float) -> str:
    if isinstance(exc, requests.Timeout):
        return f"no answer within {timeout:g} s"
    text = str(exc)
    errno = _ERRNO.search(text)
    if isinstance(exc, requests.exceptions.SSLError):
        return f"TLS failed: {text[:200]}"
    if isinstance(exc, requests.ConnectionError):
        return "cannot connect: " + (errno.group(0) if errno else text[:200])
    return f"{type(exc).__name__}: {text[:200]}"


@dataclass(frozen=True, slots=True)
class WebhookView:
    """A webhook as its owner sees it (never its secret).

    Attributes:
        id: webhook id.
        url: where calls go.
        kinds: what it gets (``event``, ``request``).
        created_at: UTC epoch seconds.
        created_by: account id of the owner who added it.
        disabled: no calls go out (the owner disabled it, or the receiver answered 410).
        pending, dead: its deliveries waiting for an attempt, and its dead letters.
    """

    id: int
    url: str
    kinds: list[str]
    created_at: float
    created_by: int | None
    disabled: bool
    pending: int
    dead: int


@dataclass(frozen=True, slots=True)
class CreatedWebhook:
    """A webhook and its signing secret (``whsec_...``), shown this once."""

    webhook: WebhookView
    secret: str


@dataclass(frozen=True, slots=True)
class DeliveryView:
    """One message to one webhook and how its attempts went.

    Attributes:
        id: delivery id.
        webhook_id: the webhook.
        kind: ``event`` or ``request``.
        message_id: the ``webhook-id`` header (the same on every attempt).
        type: the message type (``event.created``, ``request.notice``).
        state: ``pending``, ``delivered`` or ``dead``.
        attempts: attempts made (since the last redelivery).
        created_at, next_attempt_at, delivered_at: UTC epoch seconds (None: not applicable).
        last_status: the receiver's last HTTP status (None: no answer).
        last_error: why the last attempt failed (None: it did not).
        body: the JSON text sent.
    """

    id: int
    webhook_id: int
    kind: str
    message_id: str
    type: str
    state: str
    attempts: int
    created_at: float
    next_attempt_at: float | None
    delivered_at: float | None
    last_status: int | None
    last_error: str | None
    body: str


@dataclass(frozen=True, slots=True)
class PassReport:
    """What one pass of the deliverer did."""

    delivered: int = 0
    retried: int = 0
    dead: int = 0


def _delivery_view(d: DeliveryRecord) -> DeliveryView:
    try:
        kind = str(json.loads(d.body).get("type", ""))
    except (ValueError, AttributeError):
        kind = ""
    return DeliveryView(
        id=d.id, webhook_id=d.webhook_id, kind=d.kind, message_id=d.message_id, type=kind,
        state=d.state.value, attempts=d.attempts, created_at=d.created_at,
        next_attempt_at=d.next_attempt_at, delivered_at=d.delivered_at,
        last_status=d.last_status, last_error=d.last_error, body=d.body,
    )  # fmt: skip


def _body(payload: dict[str, Any]) -> str:
    return json.dumps(payload, separators=(",", ":"), ensure_ascii=False)


class WebhookService:
    """Webhooks over the index's database (see the module docstring).

    Args:
        index: the migrated index (webhook tables, events).
        audit: where changes are written.
        settings: the settings now (cameras and their households change at run time).
        public_url: where users reach the app (links in messages).
        clock: now as UTC epoch seconds (scheduling, and each call's ``webhook-timestamp``).
        timeout: seconds to wait for a receiver.
        rng: uniform ``[0, 1)`` numbers for the back-off jitter.
    """

    def __init__(
        self,
        index: Index,
        audit: AuditLog,
        settings: SettingsSource,
        *,
        public_url: str,
        clock: Callable[[], float] = time.time,
        timeout: float = SEND_TIMEOUT,
        rng: Callable[[], float] = random.random,
    ) -> None:
        self._index = index
        self._store = WebhookStore(index)
        self._audit = audit
        self._settings = settings_reader(settings)
        self._public_url = public_url.rstrip("/")
        self._clock = clock
        self._timeout = timeout
        self._rng = rng
        self._lock = threading.Lock()
        self._queued = threading.Event()

    @property
    def queued(self) -> threading.Event:
        """Set when a message is queued (the deliverer wakes up for it)."""
        return self._queued

    @property
    def store(self) -> WebhookStore:
        """The webhook tables."""
        return self._store

    @property
    def clock(self) -> Callable[[], float]:
        """Now as UTC epoch seconds."""
        return self._clock

    # --- owners ----------------------------------------------------------------------------

    @staticmethod
    def _household(owner: Principal) -> str:
        if owner.role is not Role.OWNER or owner.household is None:
            raise PermissionDeniedError("only a household's owner manages its webhooks")
        return owner.household

    def _own(self, owner: Principal, webhook_id: int) -> WebhookRecord:
        household = self._household(owner)
        try:
            hook = self._store.webhook(webhook_id)
        except NotFoundError:
            hook = None
        if hook is None or hook.household != household:
            raise NotFoundError(f"no webhook {webhook_id}")
        return hook

    def _view(self, hook: WebhookRecord) -> WebhookView:
        counts = self._store.counts([hook.id]).get(hook.id, {})
        return WebhookView(
            id=hook.id, url=hook.url, kinds=list(hook.kinds), created_at=hook.created_at,
            created_by=hook.created_by, disabled=hook.disabled,
            pending=counts.get(DeliveryState.PENDING, 0), dead=counts.get(DeliveryState.DEAD, 0),
        )  # fmt: skip

    def _audit_change(self, owner: Principal, hook: WebhookRecord, what: str) -> None:
        self._audit.append(
            AuditTag.SETTING_CHANGE,
            Actor.of_principal(owner),
            f"webhook {hook.id} to {origin(hook.url)}: {what}",
            household=hook.household,
        )

    def webhooks(self, owner: Principal) -> list[WebhookView]:
        """The webhooks of the owner's household, by id.

        Raises:
            PermissionDeniedError: the caller is not a household's owner.
        """
        return [self._view(h) for h in self._store.webhooks(self._household(owner))]

    def webhook(self, owner: Principal, webhook_id: int) -> WebhookView:
        """One webhook of the owner's household.

        Raises:
            NotFoundError: no such webhook in the owner's household.
            PermissionDeniedError: the caller is not a household's owner.
        """
        return self._view(self._own(owner, webhook_id))

    def add(self, owner: Principal, url: str, kinds: Sequence[str]) -> CreatedWebhook:
        """Add a webhook to the owner's household; its secret is made here and returned
        this once.

        Raises:
            InvalidRequestError: a refused URL (:func:`check_url`), bad kinds, or the
                household has :data:`MAX_WEBHOOKS` already.
            PermissionDeniedError: the caller is not a household's owner.
        """
        household = self._household(owner)
        url = check_url(url.strip())
        wanted = check_kinds(kinds)
        secret = format_secret(secrets.token_bytes(SECRET_SIZE))
        with self._lock:
            if len(self._store.webhooks(household)) >= MAX_WEBHOOKS:
                raise InvalidRequestError(f"a household has at most {MAX_WEBHOOKS} webhooks")
            hook = self._store.add_webhook(
                household, url, secret, wanted, now=self._clock(), by=owner.user_id
            )
        self._audit_change(owner, hook, f"added ({', '.join(wanted)})")
        return CreatedWebhook(self._view(hook), secret)

    def remove(self, owner: Principal, webhook_id: int) -> None:
        """Delete a webhook of the owner's household and its deliveries.

        Raises:
            NotFoundError: no such webhook in the owner's household.
            PermissionDeniedError: the caller is not a household's owner.
        """
        hook = self._own(owner, webhook_id)
        if not self._store.delete_webhook(hook.id):
            raise NotFoundError(f"no webhook {webhook_id}")
        self._audit_change(owner, hook, "deleted")

    def rotate_secret(self, owner: Principal, webhook_id: int) -> CreatedWebhook:
        """Give a webhook a new secret, returned this once. Every call from now on, retries
        of older messages too, is signed with it alone.

        Raises:
            NotFoundError: no such webhook in the owner's household.
            PermissionDeniedError: the caller is not a household's owner.
        """
        hook = self._own(owner, webhook_id)
        secret = format_secret(secrets.token_bytes(SECRET_SIZE))
        hook = self._store.set_secret(hook.id, secret)
        self._audit_change(owner, hook, "secret rotated")
        return CreatedWebhook(self._view(hook), secret)

    def set_disabled(self, owner: Principal, webhook_id: int, disabled: bool) -> WebhookView:
        """Disable a webhook (its pending messages become dead letters) or enable it again.

        Raises:
            NotFoundError: no such webhook in the owner's household.
            PermissionDeniedError: the caller is not a household's owner.
        """
        hook = self._own(owner, webhook_id)
        if hook.disabled == disabled:
            return self._view(hook)
        hook, _ = self._store.set_disabled(
            hook.id, disabled, reason="the webhook was disabled by its owner"
        )
        self._audit_change(owner, hook, "disabled" if disabled else "enabled")
        return self._view(hook)

    def deliveries(
        self,
        owner: Principal,
        *,
        webhook_id: int | None = None,
        state: str | None = None,
        limit: int = 100,
    ) -> list[DeliveryView]:
        """Deliveries of the owner's webhooks (or of one), newest first; ``state`` filters
        (``pending``, ``delivered``, ``dead``).

        Raises:
            InvalidRequestError: an unknown state.
            NotFoundError: ``webhook_id`` is not a webhook of the owner's household.
            PermissionDeniedError: the caller is not a household's owner.
        """
        wanted: DeliveryState | None = None
        if state is not None:
            try:
                wanted = DeliveryState(state)
            except ValueError:
                raise InvalidRequestError(
                    f"state is one of {', '.join(s.value for s in DeliveryState)}"
                ) from None
        if webhook_id is not None:
            ids = [self._own(owner, webhook_id).id]
        else:
            ids = [h.id for h in self._store.webhooks(self._household(owner))]
        return [_delivery_view(d) for d in self._store.deliveries(ids, state=wanted, limit=limit)]

    def redeliver(self, owner: Principal, delivery_id: int) -> DeliveryView:
        """Send a dead letter again: pending at once, with the whole back-off schedule
        ahead of it, the same message id and body (signed anew when sent).

        Raises:
            NotFoundError: no such delivery to a webhook of the owner's household.
            InvalidTransitionError: it is not a dead letter, or its webhook is disabled.
            PermissionDeniedError: the caller is not a household's owner.
        """
        self._household(owner)
        try:
            delivery = self._store.delivery(delivery_id)
            hook = self._own(owner, delivery.webhook_id)
        except NotFoundError:
            raise NotFoundError(f"no delivery {delivery_id}") from None
        if hook.disabled:
            raise InvalidTransitionError(
                f"webhook {hook.id} is disabled: enable it before sending its messages again"
            )
        requeued = self._store.requeue(delivery.id, self._clock())
        self._audit_change(owner, hook, f"dead letter {delivery.id} sent again")
        self._queued.set()
        return _delivery_view(requeued)

    # --- messages --------------------------------------------------------------------------

    def event_payload(self, event: EventRecord) -> dict[str, Any]:
        """The ``event.created`` message of ``event``: facts and links, no footage bytes."""
        base = self._public_url
        return {
            "type": EVENT_CREATED,
            "timestamp": utc_text(event.start),
            "data": {
                "event_id": event.id,
                "camera": event.camera,
                "label": event.label,
                "score": event.peak_score,
                "zones": list(event.zones),
                "start": event.start,
                "end": event.end,
                "url": f"{base}/events/{event.id}",
                "clip": f"{base}/api/events/{event.id}/clip.mp4",
                "snapshot": f"{base}/api/events/{event.id}/snapshot.jpg",
            },
        }

    def notice_payload(self, notice: NoticeRecord) -> dict[str, Any]:
        """The ``request.notice`` message of an owner notice: what the owner was told."""
        return {
            "type": REQUEST_NOTICE,
            "timestamp": utc_text(notice.created_at),
            "data": {
                "notice_id": notice.id,
                "request_id": notice.request_id,
                "subject": notice.subject,
                "body": notice.body,
                "url": f"{self._public_url}/requests/{notice.request_id}",
            },
        }

    def _queue(self, household: str, kind: str, message_id: str, body: str) -> int:
        hooks = [h for h in self._store.webhooks(household) if kind in h.kinds and not h.disabled]
        made = self._store.enqueue(
            [NewDelivery(h.id, kind, message_id, body) for h in hooks], now=self._clock()
        )
        if made:
            self._queued.set()
        return len(made)

    def on_event(self, event: EventRecord) -> int:
        """Queue ``event`` for the webhooks of its camera's household that want events;
        returns how many deliveries were queued (none twice for one event and webhook).

        Raises:
            DatabaseError: the database failed (the follower tries the event again).
        """
        household = self._settings().camera_household(event.camera)
        body = _body(self.event_payload(event))
        return self._queue(household, EVENT, f"msg_event_{event.id}", body)

    def on_owner_notice(self, notice: NoticeRecord) -> None:
        """A :class:`~homewarden.services.notices.NoticeService` owner listener: queue the
        notice for the household's webhooks that want request messages (notices about no
        request are not sent).

        Raises:
            DatabaseError: the database failed.
        """
        if notice.household is None or notice.request_id is None:
            return
        body = _body(self.notice_payload(notice))
        self._queue(notice.household, REQUEST, f"msg_notice_{notice.id}", body)

    def follower(self, interval: float = 1.0) -> EventFollower:
        """A follower of the index's events that queues each for the webhooks (cursor
        :data:`EVENT_CURSOR`)."""
        return EventFollower(
            self._index,
            EVENT_CURSOR,
            self.on_event,
            clock=self._clock,
            interval=interval,
        )

    # --- delivering ------------------------------------------------------------------------

    def deliver_due(self, limit: int = DUE_BATCH) -> PassReport:
        """Attempt every delivery due now (at most ``limit``), one after another; returns
        the counts. A delivery another deliverer claimed first is left to it.

        Raises:
            DatabaseError: the database failed.
        """
        delivered = retried = dead = 0
        for delivery in self._store.due(self._clock(), limit):
            if not self._store.claim(delivery, self._clock() + LEASE):
                continue
            try:
                state = self._attempt(delivery)
            except NotFoundError:
                continue  # its webhook was deleted meanwhile
            if state is DeliveryState.DELIVERED:
                delivered += 1
            elif state is DeliveryState.DEAD:
                dead += 1
            else:
                retried += 1
        return PassReport(delivered, retried, dead)

    def _attempt(self, delivery: DeliveryRecord) -> DeliveryState:
        hook = self._store.webhook(delivery.webhook_id)
        attempts = delivery.attempts + 1
        if hook.disabled:
            self._store.record_attempt(
                delivery.id, state=DeliveryState.DEAD, attempts=delivery.attempts,
                next_attempt_at=None, last_status=delivery.last_status,
                last_error="the webhook is disabled",
            )  # fmt: skip
            return DeliveryState.DEAD
        now = self._clock()
        body = delivery.body.encode("utf-8")
        headers = signed_headers(parse_secret(hook.secret), delivery.message_id, int(now), body)
        headers.update(
            {"Content-Type": "application/json", "User-Agent": f"HomeWarden/{__version__}"}
        )
        status: int | None = None
        error: str | None = None
        wait: float | None = None
        addresses: tuple[str, ...] | None = None
        try:
            if not _proxied(hook.url):
                addresses = resolve_target(hook.url)
        except InvalidRequestError as exc:
            self._refuse(hook, delivery, attempts, str(exc))
            return DeliveryState.DEAD
        except OSError as exc:
            error = f"cannot resolve {urlsplit(hook.url).hostname}: {exc}"
        if error is None:
            try:
                with requests.Session() as session:
                    if addresses is not None:
                        adapter = PinnedAdapter(addresses)
                        session.mount("http://", adapter)
                        session.mount("https://", adapter)
                    # No redirects (a 3xx is a failure: the owner fixes the URL); the
                    # answer's body is never read (stream, then close).
                    with session.post(
                        hook.url,
                        data=body,
                        headers=headers,
                        timeout=self._timeout,
                        allow_redirects=False,
                        stream=True,
                    ) as response:
                        status = response.status_code
                        wait = retry_after(response.headers.get("Retry-After"), now)
            except requests.RequestException as exc:
                error = _short_error(exc, self._timeout)
        if status is not None and 200 <= status <= 299:
            self._store.record_attempt(
                delivery.id, state=DeliveryState.DELIVERED, attempts=attempts,
                next_attempt_at=None, last_status=status, last_error=None, delivered_at=now,
            )  # fmt: skip
            return DeliveryState.DELIVERED
        if status == 410:
            self._gone(hook, delivery, attempts)
            return DeliveryState.DEAD
        if status is not None:
            error = f"the receiver answered {status}"
            if 300 <= status <= 399:
                error += " (a redirect, not followed: set the webhook to the final URL)"
        assert error is not None
        delay = backoff_delay(attempts, self._rng)
        if delay is None:
            log.warning(
                "webhook %d at %s: message %s is dead after %d attempts: %s",
                hook.id, origin(hook.url), delivery.message_id, attempts, error,
            )  # fmt: skip
            self._store.record_attempt(
                delivery.id, state=DeliveryState.DEAD, attempts=attempts, next_attempt_at=None,
                last_status=status, last_error=f"gave up after {attempts} attempts: {error}",
            )  # fmt: skip
            return DeliveryState.DEAD
        if wait is not None:
            delay = max(delay, wait)
        self._store.record_attempt(
            delivery.id, state=DeliveryState.PENDING, attempts=attempts,
            next_attempt_at=now + delay, last_status=status, last_error=error[:_MAX_ERROR],
        )  # fmt: skip
        return DeliveryState.PENDING

    def _refuse(
        self, hook: WebhookRecord, delivery: DeliveryRecord, attempts: int, why: str
    ) -> None:
        """The host resolves to an address no webhook may call (:func:`resolve_target`): no
        connection is made, and the delivery is dead at once (a later attempt would meet
        the same rule; the owner fixes the URL or its DNS record, then sends it again)."""
        log.warning(
            "webhook %d at %s: message %s refused: %s",
            hook.id, origin(hook.url), delivery.message_id, why,
        )  # fmt: skip
        self._store.record_attempt(
            delivery.id, state=DeliveryState.DEAD, attempts=attempts, next_attempt_at=None,
            last_status=None, last_error=f"refused, not sent: {why}"[:_MAX_ERROR],
        )  # fmt: skip

    def _gone(self, hook: WebhookRecord, delivery: DeliveryRecord, attempts: int) -> None:
        """A ``410 Gone``: the receiver wants no more calls (Standard Webhooks: disable the
        endpoint). The delivery and the webhook's other pending ones become dead letters."""
        why = "the receiver answered 410 Gone: the webhook was disabled"
        self._store.record_attempt(
            delivery.id, state=DeliveryState.DEAD, attempts=attempts, next_attempt_at=None,
            last_status=410, last_error=why,
        )  # fmt: skip
        hook, killed = self._store.set_disabled(hook.id, True, reason=why)
        log.warning(
            "webhook %d at %s answered 410 Gone: disabled (%d more messages dead)",
            hook.id, origin(hook.url), killed,
        )  # fmt: skip
        self._audit.append(
            AuditTag.SETTING_CHANGE,
            Actor(ActorKind.SYSTEM, "webhooks"),
            f"webhook {hook.id} to {origin(hook.url)}: disabled (the receiver answered 410 Gone)",
            household=hook.household,
        )

    def purge(self) -> int:
        """Forget deliveries delivered more than :data:`DELIVERED_KEEP` ago and dead letters
        older than :data:`DEAD_KEEP`; returns how many."""
        now = self._clock()
        return self._store.purge(delivered_before=now - DELIVERED_KEEP, dead_before=now - DEAD_KEEP)


class WebhookDeliverer:
    """A thread that runs :meth:`WebhookService.deliver_due` every ``interval`` seconds, at
    once when a message is queued, and purges old deliveries every
    :data:`PURGE_INTERVAL` seconds.

    Args:
        service: the webhook service.
        interval: seconds between passes.
    """

    def __init__(self, service: WebhookService, interval: float = DELIVER_INTERVAL) -> None:
        self._service = service
        self._interval = interval
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._purged_at = -math.inf

    def start(self) -> None:
        """Start the thread.

        Raises:
            RuntimeError: already started.
        """
        if self._thread is not None:
            raise RuntimeError("webhook deliverer already started")
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="webhooks", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = SEND_TIMEOUT + 5.0) -> None:
        """Stop (an attempt in flight finishes first, at most ``SEND_TIMEOUT`` s). Safe to
        call twice."""
        self._stop.set()
        self._service.queued.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def run_once(self) -> PassReport:
        """One pass (and a purge when one is due).

        Raises:
            DatabaseError: the database failed.
        """
        now = time.monotonic()
        if now - self._purged_at >= PURGE_INTERVAL:
            self._purged_at = now
            self._service.purge()
        return self._service.deliver_due()

    def _run(self) -> None:
        queued = self._service.queued
        while not self._stop.is_set():
            queued.clear()
            try:
                report = self.run_once()
                if report.delivered or report.dead:
                    log.info("webhooks: %s", report)
            except HomeWardenError as exc:
                log.error("webhook deliverer: %s", exc)
            except Exception:
                log.exception("webhook deliverer: unexpected error")
            queued.wait(self._interval)
