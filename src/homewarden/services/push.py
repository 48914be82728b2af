"""Web Push notifications of new events (issue 3, "Notifications").

Protocols:
- Web Push (RFC 8030): the browser's push service gives each subscription an ``endpoint``
  URL; we POST one encrypted message to it with a ``TTL`` (seconds the service keeps it for an
  offline device, section 5.2) and an ``Urgency`` (section 5.3).
- Message encryption (RFC 8291 over RFC 8188 ``aes128gcm``): the payload is encrypted to the
  browser's P-256 key (``p256dh``) and 16-byte ``auth`` secret; the push service cannot read
  it. Done by pywebpush (http_ece). Payloads stay under :data:`MAX_PAYLOAD_BYTES` (RFC 8291
  section 4: push services need accept no more than 4096 bytes of ciphertext).
- VAPID (RFC 8292): each request carries ``Authorization: vapid t=<JWT>,k=<public key>``, an
  ES256 JWT whose ``aud`` is the endpoint's origin, ``exp`` at most 24 h ahead (section 2) and
  ``sub`` a contact (``mailto:`` or ``https:``). The P-256 key pair is made at first run and
  kept in ``settings.keys_dir`` as :data:`VAPID_KEY_FILE` (PKCS#8 PEM, mode 0600); browsers
  subscribe with its public key (``applicationServerKey``), so it must not change.

What a notification carries: the camera, label, zones and time of the event, and *links*:
``/events/ID``, ``/api/events/ID/clip.mp4`` and ``/api/events/ID/snapshot.jpg``. Never the
snapshot's or the clip's bytes. Push services are third parties (Google, Mozilla, Apple) that
hold each message until it is delivered or its TTL ends; footage leaves the household only
with the owner's consent (DESIGN.md), and a picture of the porch is footage even encrypted.
The service worker fetches the snapshot from this server with the user's own session when
the notification arrives, so the fetch is checked against the user's access at that moment
(a revoked grant shows no picture) and is an entry of the audit log like any snapshot view.
Sending a notification is not a view of footage and writes no audit entry.

Who gets what: :class:`PushNotifier` follows the index's events by id (a cursor kept in the
database, so a restart neither repeats nor, within :data:`STALE_AFTER`, skips one) and, for
each user with a subscription, applies :func:`homewarden.domain.notify.decide`: the user's
switch, whether the user may see the camera now
(:func:`homewarden.domain.permissions.camera_access`), camera/label/zone filters, quiet hours
in the user's time zone. An event still open keeps being watched for
:data:`WATCH_SECONDS`: when it becomes a ``person`` or enters a zone later, the users it now
concerns are told (each user at most once per event).

Errors: :class:`~homewarden.errors.InvalidRequestError` for a malformed subscription or
preference; :class:`~homewarden.errors.StorageError` when the key cannot be read or written.
Delivery failures are not raised: :meth:`PushService.send` returns a :class:`Delivery`.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import threading
import time
import zoneinfo
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from functools import cache
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import requests
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from py_vapid import Vapid
from pywebpush import WebPushException, webpush

from homewarden.config import Settings, SettingsSource, settings_reader
from homewarden.domain import notify as rules
from homewarden.domain.permissions import Permission, Principal, camera_access, is_allowed
from homewarden.errors import (
    HomeWardenError,
    InvalidRequestError,
    NotFoundError,
    PermissionDeniedError,
    StorageError,
)
from homewarden.services.accounts import AccountService
from homewarden.store import keyfiles
from homewarden.store.accounts_store import (
    AccountStore,
    NotifyPrefsRecord,
    PushSubscriptionRecord,
    UserRecord,
)
from homewarden.store.index import Index
from homewarden.store.records import EventRecord

log = logging.getLogger(__name__)

#: The VAPID private key's file in ``settings.keys_dir`` (PKCS#8 PEM, 0600).
VAPID_KEY_FILE = "push_vapid_key.pem"
#: Seconds a push service keeps an event notification for an offline device (RFC 8030 5.2):
#: an hour-old alert is still worth seeing; a day-old one is not.
EVENT_TTL = 3600
#: TTL of a test notification: it is only useful while the user is looking.
TEST_TTL = 60
#: Seconds a VAPID JWT is valid (RFC 8292 section 2 allows at most 24 h).
VAPID_LIFETIME = 12 * 3600
#: Seconds to wait for a push service.
SEND_TIMEOUT = 10.0
#: Largest JSON payload we send (RFC 8291 section 4: 4096 bytes of ciphertext, less the
#: 86-byte aes128gcm header and 17 bytes of padding delimiter and tag).
MAX_PAYLOAD_BYTES = 3993
#: Consecutive failed deliveries after which a subscription is dropped (the user subscribes
#: again from the settings page); 404 and 410 drop it at once (RFC 8030 section 7.3).
MAX_FAILURES = 10
#: Events that started longer ago than this when first seen are passed over without a push
#: (a recorder that ran without the notifier, or a long outage: old news is noise).
STALE_AFTER = 15 * 60
#: Seconds an open event is watched for a later label or zone that concerns more users.
WATCH_SECONDS = 10 * 60
#: Seconds between polls of the index.
POLL_INTERVAL = 1.0
#: Events read per poll.
BATCH = 100
#: Contact sent as the VAPID ``sub`` claim when ``api.public_url`` is not an https origin.
DEFAULT_SUBJECT = "mailto:homewarden@localhost"
_ENDPOINT_MAX = 2048


class Urgency(StrEnum):
    """RFC 8030 section 5.3 ``Urgency`` values."""

    VERY_LOW = "very-low"
    LOW = "low"
    NORMAL = "normal"
    HIGH = "high"


class Delivery(StrEnum):
    """What became of one push: accepted by the push service, the subscription is gone
    (404/410: it was deleted), or it failed (counted; see :data:`MAX_FAILURES`)."""

    DELIVERED = "delivered"
    GONE = "gone"
    FAILED = "failed"


def b64url(data: bytes) -> str:
    """Unpadded base64url (RFC 4648 section 5), as the Push API spells keys."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64url_decode(text: str) -> bytes:
    """Bytes of (un)padded base64url ``text``.

    Raises:
        InvalidRequestError: not base64url.
    """
    try:
        return base64.b64decode(text + "=" * (-len(text) % 4), altchars=b"-_", validate=True)
    except (binascii.Error, ValueError) as exc:
        raise InvalidRequestError("not base64url") from exc


def load_or_create_vapid_key(keys_dir: Path) -> ec.EllipticCurvePrivateKey:
    """The deployment's VAPID P-256 private key from ``keys_dir``, made at first run
    (atomically, mode 0600; two processes starting at once end up with the same key).

    Raises:
        StorageError: the file cannot be read or written, or is not a P-256 private key.
    """
    path = keys_dir / VAPID_KEY_FILE
    with keyfiles.locked(keys_dir):
        data = keyfiles.read_secret(path)
        if data is None:
            key = ec.generate_private_key(ec.SECP256R1())
            pem = key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
            keyfiles.create_secret(path, pem)
            log.info("made the Web Push (VAPID) key %s", path)
            data = keyfiles.read_secret(path)
            assert data is not None
    try:
        loaded = serialization.load_pem_private_key(data, password=None)
    except ValueError as exc:
        raise StorageError(f"{path} is not a PEM private key: {exc}") from exc
    if not isinstance(loaded, ec.EllipticCurvePrivateKey) or loaded.curve.name != "secp256r1":
        raise StorageError(f"{path} is not a P-256 private key")
    return loaded


def endpoint_origin(endpoint: str) -> str:
    """``scheme://host[:port]`` of a push endpoint: the VAPID ``aud`` (RFC 8292 section 2)."""
    parts = urlsplit(endpoint)
    return f"{parts.scheme}://{parts.netloc}"


@dataclass(frozen=True, slots=True)
class NewSubscription:
    """A browser's ``PushSubscription.toJSON()``, checked: the endpoint URL, the P-256 public
    key (65-byte uncompressed point) and the 16-byte auth secret, both base64url."""

    endpoint: str
    p256dh: str
    auth: str

    @classmethod
    def parse(cls, data: Mapping[str, Any], *, allow_http: bool = False) -> NewSubscription:
        """Check a subscription as the browser sent it
        (``{"endpoint": ..., "keys": {"p256dh": ..., "auth": ...}}``).

        ``allow_http``: accept ``http://`` endpoints (a push service on loopback in tests);
        otherwise only ``https://``, as every browser's push service uses, which also keeps
        this server from being pointed at plain-HTTP services on its own network.

        Raises:
            InvalidRequestError: a missing or malformed field (the message names it).
        """
        endpoint = data.get("endpoint")
        keys = data.get("keys")
        if not isinstance(endpoint, str) or not endpoint:
            raise InvalidRequestError("the subscription has no endpoint")
        if len(endpoint) > _ENDPOINT_MAX:
            raise InvalidRequestError(f"the endpoint is longer than {_ENDPOINT_MAX} characters")
        parts = urlsplit(endpoint)
        schemes = ("https", "http") if allow_http else ("https",)
        if parts.scheme not in schemes or not parts.hostname or parts.username is not None:
            raise InvalidRequestError(f"the endpoint must be an {' or '.join(schemes)} URL")
        if not isinstance(keys, Mapping):
            raise InvalidRequestError("the subscription has no keys")
        p256dh, auth = keys.get("p256dh"), keys.get("auth")
        if not isinstance(p256dh, str) or not isinstance(auth, str):
            raise InvalidRequestError("the subscription's keys need p256dh and auth")
        try:
            point = b64url_decode(p256dh)
            ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), point)
        except (InvalidRequestError, ValueError) as exc:
            raise InvalidRequestError("p256dh is not a P-256 public key (base64url)") from exc
        if len(point) != 65:
            raise InvalidRequestError("p256dh must be an uncompressed P-256 point (65 bytes)")
        try:
            secret = b64url_decode(auth)
        except InvalidRequestError as exc:
            raise InvalidRequestError("auth is not base64url") from exc
        if len(secret) != 16:
            raise InvalidRequestError("auth must be 16 bytes (RFC 8291 section 3.2)")
        return cls(endpoint, b64url(point), b64url(secret))


@dataclass(frozen=True, slots=True)
class Preferences:
    """A user's notification preferences as the API shows them (lists None: all)."""

    enabled: bool
    cameras: list[str] | None
    labels: list[str] | None
    zones: list[str] | None
    quiet_start: str
    quiet_end: str
    timezone: str


def _to_rules(prefs: NotifyPrefsRecord) -> rules.NotifyRules:
    def names(values: list[str] | None) -> frozenset[str] | None:
        return None if values is None else frozenset(str(v) for v in values)

    return rules.NotifyRules(
        enabled=prefs.enabled,
        cameras=names(prefs.cameras),
        labels=names(prefs.labels),
        zones=names(prefs.zones),
        quiet_start=prefs.quiet_start,
        quiet_end=prefs.quiet_end,
    )


@cache
def time_zones() -> tuple[str, ...]:
    """Every IANA time zone name the system's tz database knows, sorted."""
    return tuple(sorted(zoneinfo.available_timezones()))


def time_zone(name: str) -> zoneinfo.ZoneInfo:
    """The IANA time zone ``name``.

    Raises:
        InvalidRequestError: unknown to the tz database.
    """
    if not name or len(name) > 64 or name.startswith("/") or ".." in name:
        raise InvalidRequestError(f"unknown time zone {name[:80]!r}")
    try:
        return zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError, OSError) as exc:
        raise InvalidRequestError(f"unknown time zone {name[:80]!r}") from exc


def local_minute(when: float, zone: str) -> int:
    """Minute of the day (0..1439) at UTC epoch seconds ``when`` in IANA zone ``zone`` (UTC
    when the zone is unknown)."""
    try:
        tz = time_zone(zone)
    except InvalidRequestError:
        tz = zoneinfo.ZoneInfo("UTC")
    local = datetime.fromtimestamp(when, tz)
    return local.hour * 60 + local.minute


@dataclass(frozen=True, slots=True)
class Recipient:
    """A user with subscriptions, as seen at one poll."""

    user: UserRecord
    principal: Principal
    prefs: NotifyPrefsRecord
    subscriptions: tuple[PushSubscriptionRecord, ...]


class PushService:
    """Subscriptions, preferences and delivery (see the module docstring).

    Args:
        accounts: the account service (its store holds subscriptions and preferences).
        settings: for ``keys_dir``, cameras (households, zones) and ``api.public_url`` (a
            :class:`~homewarden.config.SettingsHolder` when cameras change at run time).
        clock: now as UTC epoch seconds (decisions; the VAPID JWT uses the real clock, since
            push services check it against theirs).
        subject: the VAPID ``sub`` contact; default ``api.public_url`` when it is an https
            origin, else :data:`DEFAULT_SUBJECT`.
        allow_http_endpoints: accept ``http://`` push endpoints (tests with a loopback push
            service); production push services are all https.
        timeout: seconds to wait for a push service.
    """

    def __init__(
        self,
        accounts: AccountService,
        settings: SettingsSource,
        clock: Callable[[], float] = time.time,
        *,
        subject: str | None = None,
        allow_http_endpoints: bool = False,
        timeout: float = SEND_TIMEOUT,
    ) -> None:
        self._accounts = accounts
        self._read_settings = settings_reader(settings)
        self._clock = clock
        self._allow_http = allow_http_endpoints
        self._timeout = timeout
        self._key = load_or_create_vapid_key(self._settings.keys_dir)
        self._vapid = Vapid(private_key=self._key)
        public = self._key.public_key().public_bytes(
            serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
        )
        self._public_key = b64url(public)
        self._subject = subject or self._default_subject()

    def _default_subject(self) -> str:
        url = self._settings.api.public_url or ""
        parts = urlsplit(url)
        # py_vapid accepts an https origin without a port or path as a contact.
        if parts.scheme == "https" and parts.hostname and parts.port is None:
            return f"https://{parts.hostname}"
        return DEFAULT_SUBJECT

    @property
    def store(self) -> AccountStore:
        """The account tables holding subscriptions and preferences."""
        return self._accounts.store

    @property
    def accounts(self) -> AccountService:
        """The account service."""
        return self._accounts

    @property
    def settings(self) -> Settings:
        """The deployment's settings (the current ones)."""
        return self._settings

    @property
    def _settings(self) -> Settings:
        # Read on each use: cameras change at run time (config.SettingsHolder).
        return self._read_settings()

    @property
    def clock(self) -> Callable[[], float]:
        """Now as UTC epoch seconds."""
        return self._clock

    def public_key(self) -> str:
        """The VAPID public key (base64url of the 65-byte uncompressed P-256 point): the
        browser's ``applicationServerKey``."""
        return self._public_key

    # subscriptions

    def subscribe(self, user_id: int, data: Mapping[str, Any]) -> PushSubscriptionRecord:
        """Store the browser subscription ``data`` (``PushSubscription.toJSON()``) for
        ``user_id``. Subscribing an endpoint again refreshes its keys and moves it to the
        caller (a browser profile has one endpoint, whoever is signed in).

        Raises:
            InvalidRequestError: malformed (see :meth:`NewSubscription.parse`).
        """
        sub = NewSubscription.parse(data, allow_http=self._allow_http)
        return self.store.add_push_subscription(
            user_id, sub.endpoint, sub.p256dh, sub.auth, self._clock()
        )

    def unsubscribe(self, user_id: int, endpoint: str) -> bool:
        """Forget the caller's subscription of ``endpoint``; False when the caller has none
        (another user's subscription is never touched)."""
        for sub in self.store.push_subscriptions(user_id):
            if sub.endpoint == endpoint:
                self.store.delete_push_subscription(sub.id)
                return True
        return False

    def subscriptions(self, user_id: int) -> list[PushSubscriptionRecord]:
        """The user's subscriptions, by id."""
        return self.store.push_subscriptions(user_id)

    # preferences

    def preferences(self, user_id: int) -> Preferences:
        """The user's preferences (defaults when never set: on, everything, no quiet hours,
        UTC)."""
        p = self.store.notify_prefs(user_id)
        return Preferences(
            enabled=p.enabled,
            cameras=p.cameras,
            labels=p.labels,
            zones=p.zones,
            quiet_start=rules.format_clock(p.quiet_start),
            quiet_end=rules.format_clock(p.quiet_end),
            timezone=p.timezone,
        )

    def set_preferences(
        self,
        user_id: int,
        *,
        enabled: bool,
        cameras: list[str] | None,
        labels: list[str] | None,
        zones: list[str] | None,
        quiet_start: str,
        quiet_end: str,
        timezone: str,
    ) -> Preferences:
        """Replace the user's preferences. Lists are allow-lists (None: all); quiet hours
        are ``HH:MM`` in ``timezone`` (an IANA name); equal times mean none.

        Raises:
            InvalidRequestError: a bad name, time or time zone (the message says which).
        """
        time_zone(timezone)
        record = NotifyPrefsRecord(
            user_id=user_id,
            enabled=enabled,
            cameras=rules.sorted_or_none(rules.clean_names("cameras", cameras)),
            labels=rules.sorted_or_none(rules.clean_names("labels", labels)),
            zones=rules.sorted_or_none(rules.clean_names("zones", zones)),
            quiet_start=rules.parse_clock(quiet_start),
            quiet_end=rules.parse_clock(quiet_end),
            timezone=timezone,
        )
        self.store.set_notify_prefs(record)
        return self.preferences(user_id)

    # delivery

    def send(
        self,
        subscription: PushSubscriptionRecord,
        payload: Mapping[str, Any],
        *,
        ttl: int = EVENT_TTL,
        urgency: Urgency = Urgency.HIGH,
    ) -> Delivery:
        """Encrypt ``payload`` (as JSON) to ``subscription`` and POST it to its push service
        with ``ttl`` seconds and ``urgency`` (RFC 8030), signed with VAPID (RFC 8292). A 404
        or 410 answer deletes the subscription; other failures are counted and after
        :data:`MAX_FAILURES` in a row the subscription is deleted too; a success resets the
        count.

        Raises:
            InvalidRequestError: the payload is larger than :data:`MAX_PAYLOAD_BYTES`.
        """
        data = json.dumps(payload, separators=(",", ":"), ensure_ascii=False)
        if len(data.encode("utf-8")) > MAX_PAYLOAD_BYTES:
            raise InvalidRequestError(f"a push payload is limited to {MAX_PAYLOAD_BYTES} bytes")
        claims: dict[str, str | int] = {
            "sub": self._subject,
            "aud": endpoint_origin(subscription.endpoint),
            "exp": int(time.time()) + VAPID_LIFETIME,
        }
        status: int | None = None
        reason = ""
        try:
            response = webpush(
                subscription_info={
                    "endpoint": subscription.endpoint,
                    "keys": {"p256dh": subscription.p256dh, "auth": subscription.auth},
                },
                data=data,
                vapid_private_key=self._vapid,
                vapid_claims=claims,
                ttl=ttl,
                headers={"Urgency": str(urgency)},
                timeout=self._timeout,
            )
            status = int(getattr(response, "status_code", 0)) or None
        except WebPushException as exc:
            status = exc.status_code
            reason = str(exc.message)
        except (requests.RequestException, ValueError, TypeError) as exc:
            reason = str(exc) or type(exc).__name__
        if status is not None and 200 <= status <= 202:
            if subscription.failures:
                self.store.set_push_failures(subscription.id, 0)
            return Delivery.DELIVERED
        host = urlsplit(subscription.endpoint).hostname
        if status in (404, 410):
            log.info(
                "push subscription %d at %s is gone (%d): deleted", subscription.id, host, status
            )
            self.store.delete_push_subscription(subscription.id)
            return Delivery.GONE
        failures = subscription.failures + 1
        log.warning(
            "push to subscription %d at %s failed (%s): %s",
            subscription.id,
            host,
            status or "no answer",
            reason[:200],
        )
        if failures >= MAX_FAILURES:
            log.warning("push subscription %d failed %d times: deleted", subscription.id, failures)
            self.store.delete_push_subscription(subscription.id)
        else:
            self.store.set_push_failures(subscription.id, failures)
        return Delivery.FAILED

    def send_test(self, user_id: int) -> dict[str, int]:
        """Send a test notification to every subscription of ``user_id``; returns how many
        deliveries had each outcome (``{"delivered": n, "gone": n, "failed": n}``)."""
        counts = {d.value: 0 for d in Delivery}
        payload = {
            "title": "HomeWarden",
            "body": "Notifications work on this device.",
            "url": "/settings/notifications",
            "test": True,
        }
        for sub in self.store.push_subscriptions(user_id):
            counts[self.send(sub, payload, ttl=TEST_TTL, urgency=Urgency.NORMAL).value] += 1
        return counts

    # deciding

    def recipients(self) -> list[Recipient]:
        """Every enabled user with a subscription who may manage push notifications, with
        their principal and preferences as of now."""
        by_user: dict[int, list[PushSubscriptionRecord]] = {}
        for sub in self.store.push_subscriptions():
            by_user.setdefault(sub.user_id, []).append(sub)
        found: list[Recipient] = []
        for user_id, subs in by_user.items():
            try:
                user = self.store.user(user_id)
            except NotFoundError:
                continue
            if user.disabled:
                continue
            principal = self._accounts.principal_of(user)
            if not is_allowed(principal, Permission.NOTIFY_PUSH_MANAGE):
                continue
            found.append(Recipient(user, principal, self.store.notify_prefs(user_id), tuple(subs)))
        return found

    def verdict(self, recipient: Recipient, event: EventRecord, now: float) -> rules.Verdict:
        """Whether ``event`` should be pushed to ``recipient`` at ``now``
        (:func:`homewarden.domain.notify.decide`)."""
        household = self._settings.camera_household(event.camera)
        try:
            camera_access(recipient.principal, household, event.camera, now)
            may_see = True
        except (NotFoundError, PermissionDeniedError):
            may_see = False
        cam = self._settings.cameras.get(event.camera)
        facts = rules.EventFacts(
            camera=event.camera,
            label=event.label,
            zones=frozenset(event.zones),
            camera_zones=frozenset(cam.zones) if cam is not None else frozenset(),
        )
        minute = local_minute(now, recipient.prefs.timezone)
        return rules.decide(_to_rules(recipient.prefs), facts, minute, may_see)

    def event_payload(self, event: EventRecord, zone: str) -> dict[str, Any]:
        """The JSON message of ``event`` for a user in IANA zone ``zone``: what happened,
        where and when, and links (never footage bytes; see the module docstring)."""
        try:
            tz = time_zone(zone)
        except InvalidRequestError:
            tz = zoneinfo.ZoneInfo("UTC")
        local = datetime.fromtimestamp(event.start, tz)
        what = "Person" if event.label == "person" else event.label.capitalize() or "Event"
        zones = list(event.zones)
        body = f"{local:%H:%M:%S}" + (f" in {', '.join(zones)}" if zones else "")
        return {
            "title": f"{what} at {event.camera}"[:120],
            "body": body[:240],
            "camera": event.camera,
            "label": event.label,
            "zones": zones[:32],
            "event_id": event.id,
            "start": event.start,
            "url": f"/events/{event.id}",
            "clip": f"/api/events/{event.id}/clip.mp4",
            "snapshot": f"/api/events/{event.id}/snapshot.jpg",
        }

    def notify(
        self,
        event: EventRecord,
        recipients: list[Recipient],
        skip: set[int],
        now: float,
    ) -> int:
        """Push ``event`` to each recipient not in ``skip`` whose verdict is SEND, adding
        them to ``skip``; returns the number of deliveries accepted."""
        delivered = 0
        for r in recipients:
            if r.user.id in skip or self.verdict(r, event, now) is not rules.Verdict.SEND:
                continue
            skip.add(r.user.id)
            payload = self.event_payload(event, r.prefs.timezone)
            for sub in r.subscriptions:
                if self.send(sub, payload) is Delivery.DELIVERED:
                    delivered += 1
        return delivered


@dataclass
class _Watch:
    first_seen: float
    told: set[int] = field(default_factory=set)


class PushNotifier:
    """A thread that pushes new events (see the module docstring).

    Args:
        push: the push service.
        index: the index whose events are followed.
        interval: seconds between polls.
    """

    def __init__(self, push: PushService, index: Index, interval: float = POLL_INTERVAL) -> None:
        self._push = push
        self._index = index
        self._interval = interval
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._watch: dict[int, _Watch] = {}
        self._lock = threading.Lock()

    def start(self) -> None:
        """Start polling on a daemon thread."""
        if self._thread is not None:
            raise RuntimeError("push notifier already started")
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="push-notifier", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = SEND_TIMEOUT + 5.0) -> None:
        """Stop polling (a push in flight finishes first). Safe to call more than once."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.poll()
            except HomeWardenError as exc:
                log.error("push notifier: %s", exc)
            except Exception:
                log.exception("push notifier: unexpected error")
            self._stop.wait(self._interval)

    def poll(self) -> int:
        """One pass: push events newer than the cursor and re-check watched open events.
        Returns the deliveries accepted. The cursor is advanced after each event's pushes.

        Raises:
            DatabaseError: the index does not answer.
        """
        with self._lock:
            return self._poll()

    def _poll(self) -> int:
        store = self._push.store
        cursor = store.notify_cursor()
        fresh = self._index.events_after(cursor, BATCH)
        if not fresh and not self._watch:
            return 0
        now = self._push.clock()
        recipients = self._push.recipients()
        delivered = 0
        for event in fresh:
            if event.start >= now - STALE_AFTER:
                told: set[int] = set()
                delivered += self._push.notify(event, recipients, told, now)
                if event.end is None:
                    self._watch[event.id] = _Watch(now, told)
            store.set_notify_cursor(event.id)
        seen = {e.id for e in fresh}
        for event_id, watch in list(self._watch.items()):
            if event_id in seen:
                continue
            try:
                event = self._index.event(event_id)
            except NotFoundError:
                del self._watch[event_id]
                continue
            delivered += self._push.notify(event, recipients, watch.told, now)
            if event.end is not None or now - watch.first_seen > WATCH_SECONDS:
                del self._watch[event_id]
        return delivered
