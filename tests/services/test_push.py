"""Web Push against a real push service on loopback (``push_endpoint``): pywebpush POSTs,
the endpoint checks the VAPID JWT (ES256 signature, ``aud``) and decrypts the RFC 8291
payload with the subscription's own keys. Events come from a real migrated index (SQLite and
PostgreSQL); users, grants and preferences from the real account service."""

from __future__ import annotations

import stat
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from homewarden.config import Settings
from homewarden.domain.audit import Actor
from homewarden.domain.permissions import Role
from homewarden.errors import InvalidRequestError
from homewarden.services.accounts import AccountService
from homewarden.services.audit import AuditLog
from homewarden.services.push import (
    EVENT_TTL,
    MAX_FAILURES,
    STALE_AFTER,
    VAPID_KEY_FILE,
    Delivery,
    PushNotifier,
    PushService,
)
from homewarden.services.runtime import Runtime
from homewarden.store.accounts_store import UserRecord
from homewarden.store.index import Index
from homewarden.store.records import EventRecord
from homewarden.web.app import create_app
from tests.services.push_endpoint import PushEndpoint, push_endpoint

#: 2023-11-14T22:30:00Z: 07:30 the next morning in Tokyo (UTC+9, no DST).
NOW = 1_700_001_000.0
PASSWORD = "correct horse battery staple"
FULL = [[0.0, 0.0], [1.0, 0.0], [1.0, 1.0], [0.0, 1.0]]
FOOTAGE = Path(__file__).resolve().parents[3] / "shared" / "footage" / "bikes.mp4"


@dataclass
class Clock:
    now: float = NOW

    def __call__(self) -> float:
        return self.now


@dataclass
class World:
    index: Index
    settings: Settings
    accounts: AccountService
    push: PushService
    endpoint: PushEndpoint
    clock: Clock
    owner: UserRecord

    def user(self, name: str, role: Role = Role.MEMBER, cameras: tuple[str, ...] = ()) -> int:
        user = self.accounts.add_user(name, role, "home", actor=None, password=PASSWORD).user
        owner = self.accounts.principal_of(self.owner)
        for camera in cameras:
            self.accounts.grant_camera(owner, user.id, camera, Actor.of_principal(owner))
        return user.id

    def subscribe(self, user_id: int, name: str) -> None:
        self.push.subscribe(user_id, self.endpoint.new_subscription(name).to_json())

    def event(
        self, camera: str, label: str = "motion", zones: tuple[str, ...] = (), close: bool = True
    ) -> int:
        start = self.clock.now - 4.0
        event_id = self.index.open_event(camera, start, label, 0.5, list(zones))
        if close:
            self.index.update_event(event_id, end=start + 3.0)
        return event_id

    def notifier(self) -> PushNotifier:
        return PushNotifier(self.push, self.index, interval=0.05)


def _settings(tmp_path: Path, database_url: str) -> Settings:
    return Settings(
        data_dir=tmp_path,
        database_url=database_url,
        cameras={
            "front": {"url": "file:/dev/null", "zones": {"steps": FULL, "path": FULL}},
            "garage": {"url": "file:/dev/null"},
        },
    )


@pytest.fixture
def world(index: Index, database_url: str, tmp_path: Path) -> Iterator[World]:
    settings = _settings(tmp_path, database_url)
    clock = Clock()
    with AuditLog.open(database_url, settings.keys_dir) as audit, push_endpoint() as endpoint:
        accounts = AccountService(index, audit, settings, clock=clock)
        accounts.ensure_households()
        owner = accounts.add_user("owner", Role.OWNER, "home", actor=None, password=PASSWORD).user
        push = PushService(accounts, settings, clock, allow_http_endpoints=True)
        yield World(index, settings, accounts, push, endpoint, clock, owner)


def test_event_push_is_signed_encrypted_and_links_the_footage(world: World) -> None:
    world.subscribe(world.owner.id, "phone")
    event_id = world.event("front", "person", ("steps",))

    assert world.notifier().poll() == 1

    (got,) = world.endpoint.to("phone")
    assert got.status == 201, got.vapid_error
    # VAPID (RFC 8292): verified by the endpoint with the key in the header, which is the
    # server's published key; aud is the push service's origin
    assert got.vapid_key == world.push.public_key()
    assert got.vapid_claims is not None
    assert got.vapid_claims["aud"] == world.endpoint.origin
    assert got.vapid_claims["sub"].startswith("mailto:")
    # RFC 8030 headers and RFC 8188 content coding
    assert got.headers["content-encoding"] == "aes128gcm"
    assert got.headers["ttl"] == str(EVENT_TTL)
    assert got.headers["urgency"] == "high"
    # the decrypted payload names the event and links it; no footage bytes
    assert got.payload is not None
    assert got.payload["event_id"] == event_id
    assert got.payload["camera"] == "front"
    assert got.payload["label"] == "person"
    assert got.payload["zones"] == ["steps"]
    assert got.payload["title"] == "Person at front"
    assert got.payload["url"] == f"/events/{event_id}"
    assert got.payload["clip"] == f"/api/events/{event_id}/clip.mp4"
    assert got.payload["snapshot"] == f"/api/events/{event_id}/snapshot.jpg"
    assert len(got.body) < 1024
    assert world.index.event(event_id).id == event_id
    assert world.push.store.notify_cursor() == event_id


def test_the_ciphertext_is_not_readable_without_the_subscription_keys(world: World) -> None:
    world.subscribe(world.owner.id, "phone")
    world.event("front")
    world.notifier().poll()
    (got,) = world.endpoint.to("phone")
    assert b"front" not in got.body
    assert b"/api/events" not in got.body


def test_filters_quiet_hours_switch_and_grants_decide_who_is_told(world: World) -> None:
    told = {
        "owner": world.owner.id,
        "granted": world.user("granted", cameras=("front",)),
        "late-quiet": world.user("late", cameras=("front", "garage")),
    }
    silent = {
        "ungranted": world.user("ungranted", cameras=("garage",)),
        "garage-only": world.user("garageonly", Role.OWNER),
        "quiet": world.user("sleeper", Role.OWNER),
        "off": world.user("off", Role.OWNER),
        "people-only": world.user("people", Role.OWNER),
        "other-zone": world.user("zoned", Role.OWNER),
    }
    for name, uid in {**told, **silent}.items():
        world.subscribe(uid, name)

    def prefs(uid: int, **kw: object) -> None:
        values: dict[str, object] = {
            "enabled": True,
            "cameras": None,
            "labels": None,
            "zones": None,
            "quiet_start": "00:00",
            "quiet_end": "00:00",
            "timezone": "UTC",
        }
        values.update(kw)
        world.push.set_preferences(uid, **values)  # type: ignore[arg-type]

    prefs(silent["garage-only"], cameras=["garage"])
    # 07:30 in Tokyo: inside 07:00-08:00 there...
    prefs(silent["quiet"], quiet_start="07:00", quiet_end="08:00", timezone="Asia/Tokyo")
    # ...and 22:00-23:00 Tokyo time is not now, though it is 22:30 UTC
    prefs(told["late-quiet"], quiet_start="22:00", quiet_end="23:00", timezone="Asia/Tokyo")
    prefs(silent["off"], enabled=False)
    prefs(silent["people-only"], labels=["person"])
    prefs(silent["other-zone"], zones=["path"])

    event_id = world.event("front", "motion", ("steps",))
    assert world.notifier().poll() == len(told)

    for name in told:
        (got,) = world.endpoint.to(name)
        assert got.payload is not None, name
        assert got.payload["event_id"] == event_id, name
    for name in silent:
        assert world.endpoint.to(name) == [], name

    # a garage event reaches the member granted only the garage, and the garage-only owner
    garage = world.event("garage")
    world.notifier().poll()
    for name in ("ungranted", "garage-only", "late-quiet", "owner"):
        assert [r.payload["event_id"] for r in world.endpoint.to(name) if r.payload][-1] == garage
    assert world.endpoint.to("granted")[-1].payload["event_id"] == event_id  # type: ignore[index]


def test_a_revoked_grant_stops_notifications(world: World) -> None:
    member = world.user("member", cameras=("front",))
    world.subscribe(member, "member")
    world.event("front")
    assert world.notifier().poll() == 1
    owner = world.accounts.principal_of(world.owner)
    world.accounts.revoke_camera(owner, member, "front", Actor.of_principal(owner))
    world.event("front")
    assert world.notifier().poll() == 0
    assert len(world.endpoint.to("member")) == 1


def test_gone_subscriptions_are_deleted_and_failures_counted(world: World) -> None:
    world.subscribe(world.owner.id, "gone")
    world.subscribe(world.owner.id, "broken")
    world.subscribe(world.owner.id, "fine")
    world.endpoint.statuses.update(gone=410, broken=500)

    world.event("front")
    assert world.notifier().poll() == 1

    subs = {s.endpoint.rsplit("/", 1)[1]: s for s in world.push.subscriptions(world.owner.id)}
    assert set(subs) == {"broken", "fine"}
    assert subs["broken"].failures == 1
    assert subs["fine"].failures == 0
    assert [r.status for r in world.endpoint.to("gone")] == [410]

    # a success resets the count; MAX_FAILURES in a row drops the subscription
    world.endpoint.statuses["broken"] = 201
    assert world.push.send(subs["broken"], {"title": "t"}) is Delivery.DELIVERED
    (broken,) = [s for s in world.push.subscriptions(world.owner.id) if s.id == subs["broken"].id]
    assert broken.failures == 0
    world.endpoint.statuses["broken"] = 503
    for n in range(1, MAX_FAILURES + 1):
        (broken,) = [s for s in world.push.subscriptions(world.owner.id) if s.id == broken.id]
        assert broken.failures == n - 1
        assert world.push.send(broken, {"title": "t"}) is Delivery.FAILED
    assert [s.id for s in world.push.subscriptions(world.owner.id)] == [subs["fine"].id]


def test_an_unreachable_push_service_is_a_counted_failure(world: World) -> None:
    sub = world.push.subscribe(
        world.owner.id,
        {**world.endpoint.new_subscription("x").to_json(), "endpoint": "http://127.0.0.1:9/x"},
    )
    assert world.push.send(sub, {"title": "t"}) is Delivery.FAILED
    (after,) = world.push.subscriptions(world.owner.id)
    assert after.failures == 1


def test_cursor_survives_a_restart_without_duplicates(world: World) -> None:
    world.subscribe(world.owner.id, "phone")
    first = world.event("front")
    assert world.notifier().poll() == 1

    # a new service and notifier over the same database: a restart
    push = PushService(world.accounts, world.settings, world.clock, allow_http_endpoints=True)
    restarted = PushNotifier(push, world.index)
    assert restarted.poll() == 0
    assert len(world.endpoint.to("phone")) == 1

    second = world.event("garage")
    assert restarted.poll() == 1
    assert [r.payload["event_id"] for r in world.endpoint.to("phone") if r.payload] == [
        first,
        second,
    ]
    assert push.store.notify_cursor() == second


def test_an_open_event_that_becomes_a_person_is_pushed_once(world: World) -> None:
    people = world.user("people", Role.OWNER)
    world.subscribe(world.owner.id, "all")
    world.subscribe(people, "people")
    world.push.set_preferences(
        people,
        enabled=True,
        cameras=None,
        labels=["person"],
        zones=None,
        quiet_start="00:00",
        quiet_end="00:00",
        timezone="UTC",
    )
    notifier = world.notifier()
    event_id = world.event("front", "motion", close=False)
    assert notifier.poll() == 1  # the owner, at once
    assert notifier.poll() == 0
    world.index.update_event(event_id, label="person")
    assert notifier.poll() == 1  # now the person-only user
    world.index.update_event(event_id, end=world.clock.now)
    assert notifier.poll() == 0
    assert notifier.poll() == 0
    assert len(world.endpoint.to("all")) == 1
    (got,) = world.endpoint.to("people")
    assert got.payload is not None
    assert got.payload["label"] == "person"


def test_stale_events_are_passed_over(world: World) -> None:
    world.subscribe(world.owner.id, "phone")
    old = world.index.open_event("front", NOW - STALE_AFTER - 60, "motion", 0.5, [])
    world.index.update_event(old, end=NOW - STALE_AFTER - 50)
    assert world.notifier().poll() == 0
    assert world.endpoint.received == []
    assert world.push.store.notify_cursor() == old


def test_disabled_users_and_staff_get_nothing(world: World) -> None:
    member = world.user("member", cameras=("front",))
    world.subscribe(member, "member")
    world.accounts.set_disabled(
        member, True, actor=Actor.of_principal(world.accounts.principal_of(world.owner))
    )
    world.event("front")
    assert world.notifier().poll() == 0
    assert world.endpoint.received == []


def test_the_notifier_thread_pushes_and_stops(world: World) -> None:
    world.subscribe(world.owner.id, "phone")
    notifier = world.notifier()
    notifier.start()
    try:
        event_id = world.event("front")
        (got,) = world.endpoint.wait_for(1)
        assert got.payload is not None
        assert got.payload["event_id"] == event_id
    finally:
        notifier.stop()
    world.event("front")
    time.sleep(0.3)
    assert len(world.endpoint.received) == 1


def test_test_notification(world: World) -> None:
    world.subscribe(world.owner.id, "phone")
    assert world.push.send_test(world.owner.id) == {"delivered": 1, "gone": 0, "failed": 0}
    (got,) = world.endpoint.to("phone")
    assert got.payload is not None
    assert got.payload["test"] is True
    assert got.headers["urgency"] == "normal"


def test_vapid_key_is_made_once_with_mode_0600(world: World) -> None:
    path = world.settings.keys_dir / VAPID_KEY_FILE
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    again = PushService(world.accounts, world.settings, world.clock)
    assert again.public_key() == world.push.public_key()
    assert len(world.push.public_key()) == 87  # 65 bytes, unpadded base64url


def test_subscriptions_are_checked(world: World) -> None:
    good = world.endpoint.new_subscription("x").to_json()
    strict = PushService(world.accounts, world.settings, world.clock)
    with pytest.raises(InvalidRequestError, match="https"):
        strict.subscribe(world.owner.id, good)
    https = {**good, "endpoint": "https://push.example.net/abc"}
    assert strict.subscribe(world.owner.id, https).endpoint == https["endpoint"]
    bad_keys = [
        {"p256dh": good["keys"]["p256dh"][:-4], "auth": good["keys"]["auth"]},
        {"p256dh": "A" * 87, "auth": good["keys"]["auth"]},
        {"p256dh": good["keys"]["p256dh"], "auth": "AAAA"},
        {"p256dh": good["keys"]["p256dh"]},
        {"p256dh": good["keys"]["p256dh"], "auth": "not base64!"},
    ]
    for keys in bad_keys:
        with pytest.raises(InvalidRequestError):
            world.push.subscribe(world.owner.id, {**good, "keys": keys})
    for endpoint in ("", "ftp://x/y", "https://user@push.example.net/x", "x" * 3000):
        with pytest.raises(InvalidRequestError):
            strict.subscribe(world.owner.id, {**good, "endpoint": endpoint})


def test_preferences_round_trip_and_are_checked(world: World) -> None:
    got = world.push.set_preferences(
        world.owner.id,
        enabled=False,
        cameras=["front", " garage "],
        labels=["person"],
        zones=None,
        quiet_start="22:15",
        quiet_end="6:30",
        timezone="Europe/Paris",
    )
    assert got == world.push.preferences(world.owner.id)
    assert got.cameras == ["front", "garage"]
    assert (got.quiet_start, got.quiet_end, got.timezone) == ("22:15", "06:30", "Europe/Paris")
    assert got.enabled is False
    for bad in (
        {"timezone": "Mars/Olympus"},
        {"timezone": "../etc/passwd"},
        {"quiet_end": "25:00"},
    ):
        values = {
            "enabled": True,
            "cameras": None,
            "labels": None,
            "zones": None,
            "quiet_start": "00:00",
            "quiet_end": "00:00",
            "timezone": "UTC",
            **bad,
        }
        with pytest.raises(InvalidRequestError):
            world.push.set_preferences(world.owner.id, **values)  # type: ignore[arg-type]
    assert world.push.preferences(world.owner.id) == got


def test_the_runtime_pushes_events_recorded_from_real_footage(tmp_path: Path) -> None:
    """End to end: ``homewarden run``'s runtime records real footage, its motion events go
    through the notifier to a subscribed owner, and the push service decrypts them."""
    settings = Settings(
        data_dir=tmp_path / "data",
        api={"host": "127.0.0.1", "port": 0},
        cameras={"bikes": {"url": f"file:{FOOTAGE}", "loop": True, "segment_seconds": 2}},
    )
    runtime = Runtime(settings, app_factory=create_app)
    with push_endpoint() as endpoint:
        runtime.start()
        try:
            ctx = runtime.app_context()
            assert ctx.push is not None
            assert any(t.name == "push-notifier" for t in threading.enumerate())
            owner = runtime.accounts.add_user(
                "alice", Role.OWNER, settings.household, actor=None, password=PASSWORD
            ).user
            # the runtime accepts https endpoints only; the loopback service is http, so the
            # subscription is stored directly (delivery does not care about the scheme)
            sub = endpoint.new_subscription("phone").to_json()
            ctx.push.store.add_push_subscription(
                owner.id, sub["endpoint"], sub["keys"]["p256dh"], sub["keys"]["auth"], time.time()
            )
            received = endpoint.wait_for(1, timeout=60)
        finally:
            runtime.stop()
    assert received, "no push within 60 s of recording"
    got = received[0]
    assert got.status == 201, got.vapid_error
    assert got.payload is not None
    assert got.payload["camera"] == "bikes"
    event = runtime_index_event(settings, got.payload["event_id"])
    assert event.camera == "bikes"
    assert got.payload["url"] == f"/events/{event.id}"
    assert not any(t.name == "push-notifier" for t in threading.enumerate())


def runtime_index_event(settings: Settings, event_id: int) -> EventRecord:
    index = Index(settings.db_url)
    try:
        return index.event(event_id)
    finally:
        index.close()
