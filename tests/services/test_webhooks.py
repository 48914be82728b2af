"""Webhooks (issue 7) through WebhookService on SQLite and PostgreSQL, with a real HTTP
receiver on loopback, the real index, audit log, disclosure service and owner notices (mail
through a real SMTP server on loopback) and a settable clock: signed calls for new events
and request notices, back-off, dead letters, redelivery, 410 Gone, a gagged warrant that
reaches no webhook before its owner notice, and the runtime's threads."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from homewarden.config import Settings
from homewarden.crypto.webhook_signature import parse_secret, verify
from homewarden.domain import disclosure as d
from homewarden.errors import (
    InvalidRequestError,
    InvalidTransitionError,
    NotFoundError,
    PermissionDeniedError,
    WebhookMismatchError,
)
from homewarden.services.runtime import Runtime
from homewarden.services.webhooks import (
    BACKOFF,
    MAX_ATTEMPTS,
    MAX_RETRY_AFTER,
    WebhookDeliverer,
    WebhookService,
    backoff_delay,
    check_url,
    retry_after,
)
from tests.fixtures_mail import SmtpTestServer
from tests.package_footage import T0
from tests.services.disclosure_helpers import (
    DAY,
    HOME,
    NOTICE_EMAIL,
    PORCH,
    PUBLIC_URL,
    SHED,
    WARRANT,
    World,
)
from tests.services.webhook_receiver import Call, Receiver, receiving


@dataclass
class Setup:
    w: World
    svc: WebhookService
    rx: Receiver

    def owner(self) -> Any:
        return self.w.p(self.w.owner)


@pytest.fixture
def setup(database_url: str, tmp_path: Path, smtp_server: SmtpTestServer) -> Iterator[Setup]:
    w = World(tmp_path, database_url, smtp_server)
    # rng 0.5: the jitter factor is exactly 1, so the schedule can be checked to the second.
    svc = WebhookService(
        w.index, w.audit, w.settings, public_url=PUBLIC_URL, clock=w.clock, rng=lambda: 0.5
    )
    w.notices.add_owner_listener(svc.on_owner_notice)  # as services/runtime.py wires it
    try:
        with receiving() as rx:
            yield Setup(w, svc, rx)
    finally:
        w.close()


def _check_signed(call: Call, secret: str, now: float) -> dict[str, Any]:
    """The call verifies with the crypto module and with an HMAC recomputed from the
    specification using hmac/hashlib alone; returns the parsed body."""
    verify(parse_secret(secret), call.headers, call.body, now=now)
    raw = base64.b64decode(secret.removeprefix("whsec_"))
    signed = f"{call.headers['webhook-id']}.{call.headers['webhook-timestamp']}.".encode()
    mac = hmac.new(raw, signed + call.body, hashlib.sha256).digest()
    assert call.headers["webhook-signature"] == "v1," + base64.b64encode(mac).decode()
    assert call.headers["content-type"] == "application/json"
    body: dict[str, Any] = json.loads(call.body)
    return body


# --- 1: signed calls for a new event and a request notice ---------------------------------


def test_a_new_event_and_a_request_notice_reach_the_receiver_signed(setup: Setup) -> None:
    s, w = setup, setup.w
    home = s.svc.add(s.owner(), s.rx.url("/ha"), ["event", "request"])
    other = s.svc.add(w.p(w.other_owner), s.rx.url("/other"), ["event"])
    porch = w.index.open_event(PORCH, w.clock() - 2.0, "person", 0.9, ["steps"])
    shed = w.index.open_event(SHED, w.clock() - 1.0, "motion", 0.3, [])
    follower = s.svc.follower()
    assert follower.poll() == 2
    assert follower.poll() == 0  # the cursor moved: nothing twice
    report = s.svc.deliver_due()
    assert (report.delivered, report.retried, report.dead) == (2, 0, 0)
    calls = {c.path: c for c in s.rx.wait_for(2)}
    assert set(calls) == {"/ha", "/other"}  # each household gets its own camera's event

    event = _check_signed(calls["/ha"], home.secret, w.clock())
    assert calls["/ha"].headers["webhook-id"] == f"msg_event_{porch}"
    assert calls["/ha"].headers["webhook-timestamp"] == str(int(w.clock()))
    assert event["type"] == "event.created"
    data = event["data"]
    assert (data["event_id"], data["camera"], data["label"], data["zones"]) == (
        porch,
        PORCH,
        "person",
        ["steps"],
    )
    # Links only, never footage bytes (as the push notifications).
    assert data["url"] == f"{PUBLIC_URL}/events/{porch}"
    assert data["clip"] == f"{PUBLIC_URL}/api/events/{porch}/clip.mp4"
    assert data["snapshot"] == f"{PUBLIC_URL}/api/events/{porch}/snapshot.jpg"
    assert len(calls["/ha"].body) < 1000
    assert _check_signed(calls["/other"], other.secret, w.clock())["data"]["event_id"] == shed
    with pytest.raises(WebhookMismatchError):  # each webhook has its own secret
        _check_signed(calls["/other"], home.secret, w.clock())

    # A consent request: the owner is told at once, and the webhook with the same words.
    rita = w.requester("rita")
    r = w.consent(rita)
    (notice,) = w.owner_notices(r.id)
    assert s.svc.deliver_due().delivered == 1
    calls_now = s.rx.wait_for(3)
    assert [c.path for c in calls_now[2:]] == ["/ha"]  # "/other" wants events only
    message = _check_signed(calls_now[2], home.secret, w.clock())
    assert calls_now[2].headers["webhook-id"] == f"msg_notice_{notice.id}"
    assert message["type"] == "request.notice"
    assert message["data"] == {
        "notice_id": notice.id,
        "request_id": r.id,
        "subject": notice.subject,
        "body": notice.body,
        "url": f"{PUBLIC_URL}/requests/{r.id}",
    }
    assert s.svc.deliver_due().delivered == 0
    # Each change is an audit entry of the household; the receiver's path (its own secret,
    # for Home Assistant) is not in it.
    changes = [e for e in w.entries() if str(e.action) == "setting:value:change"]
    added = [e for e in changes if "webhook" in e.reason]
    where = f"http://127.0.0.1:{s.rx.port}"
    assert [(e.subject.household, e.reason) for e in added] == [
        (HOME, f"webhook {home.webhook.id} to {where}: added (event, request)"),
        ("other", f"webhook {other.webhook.id} to {where}: added (event)"),
    ]
    w.audit.verify()


def test_events_are_queued_once_and_the_follower_resumes_after_a_restart(setup: Setup) -> None:
    s, w = setup, setup.w
    s.svc.add(s.owner(), s.rx.url(), ["event"])
    first = w.index.open_event(PORCH, w.clock(), "motion", 0.2, [])
    assert s.svc.follower().poll() == 1
    event = w.index.event(first)
    assert s.svc.on_event(event) == 0  # handed over again (a crash): not queued twice
    second = w.index.open_event(PORCH, w.clock(), "motion", 0.2, [])
    # A new follower over the same database (a restart) starts after the first event.
    fresh = WebhookService(w.index, w.audit, w.settings, public_url=PUBLIC_URL, clock=w.clock)
    follower = fresh.follower()
    assert follower.position() == first
    assert follower.poll() == 1
    assert follower.position() == second
    # An event that began long before it was first seen is passed over.
    w.index.open_event(PORCH, w.clock() - 3600, "motion", 0.2, [])
    assert follower.poll() == 0
    assert fresh.deliver_due().delivered == 2
    assert [c.headers["webhook-id"] for c in s.rx.wait_for(2)] == [
        f"msg_event_{first}",
        f"msg_event_{second}",
    ]


# --- 2: back-off, dead letters, redelivery -----------------------------------------------


def test_a_500_is_retried_on_the_back_off_schedule_then_dead_then_redelivered(
    setup: Setup,
) -> None:
    s, w = setup, setup.w
    hook = s.svc.add(s.owner(), s.rx.url("/ha"), ["event"])
    s.rx.status["/ha"] = 500
    w.index.open_event(PORCH, w.clock(), "person", 0.9, [])
    s.svc.follower().poll()
    for attempt in range(1, MAX_ATTEMPTS + 1):
        at = w.clock()
        report = s.svc.deliver_due()
        assert len(s.rx.calls) == attempt
        (delivery,) = s.svc.deliveries(s.owner())
        assert (delivery.attempts, delivery.last_status) == (attempt, 500)
        if attempt < MAX_ATTEMPTS:
            assert report.retried == 1
            assert delivery.state == "pending"
            assert delivery.last_error == "the receiver answered 500"
            wait = BACKOFF[attempt - 1]
            assert delivery.next_attempt_at == pytest.approx(at + wait)
            w.clock.advance(wait - 1)
            assert s.svc.deliver_due().retried == 0  # not due yet: nothing sent
            assert len(s.rx.calls) == attempt
            w.clock.advance(1)
        else:
            assert report.dead == 1
    (dead,) = s.svc.deliveries(s.owner(), state="dead")
    assert dead.next_attempt_at is None
    assert dead.last_error == f"gave up after {MAX_ATTEMPTS} attempts: the receiver answered 500"
    assert s.svc.webhook(s.owner(), hook.webhook.id).dead == 1
    # Every attempt carried the same message id, and a fresh timestamp that verified then.
    assert {c.headers["webhook-id"] for c in s.rx.calls} == {dead.message_id}
    stamps = [int(c.headers["webhook-timestamp"]) for c in s.rx.calls]
    assert stamps == sorted(stamps)
    assert len(set(stamps)) == MAX_ATTEMPTS
    for call in s.rx.calls:
        verify(
            parse_secret(hook.secret),
            call.headers,
            call.body,
            now=int(call.headers["webhook-timestamp"]),
        )

    # The receiver is fixed; the owner sends the dead letter again.
    s.rx.status["/ha"] = 200
    again = s.svc.redeliver(s.owner(), dead.id)
    assert (again.state, again.attempts) == ("pending", 0)
    assert s.svc.deliver_due().delivered == 1
    (done,) = s.svc.deliveries(s.owner(), state="delivered")
    assert (done.id, done.attempts, done.delivered_at) == (dead.id, 1, w.clock())
    assert s.rx.calls[-1].headers["webhook-id"] == dead.message_id
    assert s.rx.calls[-1].body == s.rx.calls[0].body
    with pytest.raises(InvalidTransitionError, match="only a dead letter"):
        s.svc.redeliver(s.owner(), dead.id)
    assert any("dead letter" in e.reason for e in w.entries())


def test_retry_after_is_honoured_and_redirects_are_not_followed(setup: Setup) -> None:
    s, w = setup, setup.w
    s.svc.add(s.owner(), s.rx.url("/busy"), ["event"])
    s.svc.add(s.owner(), s.rx.url("/moved"), ["event"])
    s.rx.status.update({"/busy": 503, "/moved": 301})
    s.rx.retry_after["/busy"] = "120"
    w.index.open_event(PORCH, w.clock(), "person", 0.9, [])
    s.svc.follower().poll()
    at = w.clock()
    assert s.svc.deliver_due().retried == 2
    by_path = {c.path for c in s.rx.calls}
    assert by_path == {"/busy", "/moved"}  # the 301's Location was not followed
    views = {v.webhook_id: v for v in s.svc.deliveries(s.owner())}
    hooks = {h.url.rsplit("/", 1)[1]: h.id for h in s.svc.webhooks(s.owner())}
    assert views[hooks["busy"]].next_attempt_at == pytest.approx(at + 120)  # not 10 s
    moved = views[hooks["moved"]]
    assert moved.next_attempt_at == pytest.approx(at + BACKOFF[0])
    assert moved.last_error is not None
    assert "redirect, not followed" in moved.last_error


def test_410_gone_disables_the_webhook_and_its_pending_messages_die(setup: Setup) -> None:
    s, w = setup, setup.w
    hook = s.svc.add(s.owner(), s.rx.url("/gone"), ["event"])
    s.rx.status["/gone"] = 410
    w.index.open_event(PORCH, w.clock(), "person", 0.9, [])
    w.index.open_event(PORCH, w.clock(), "motion", 0.2, [])
    s.svc.follower().poll()
    report = s.svc.deliver_due(limit=1)
    assert report.dead == 1
    assert len(s.rx.calls) == 1  # the second message was never sent
    view = s.svc.webhook(s.owner(), hook.webhook.id)
    assert (view.disabled, view.pending, view.dead) == (True, 0, 2)
    dead = s.svc.deliveries(s.owner(), state="dead")
    assert all("410 Gone" in (x.last_error or "") for x in dead)
    assert any(
        e.actor.kind == "system" and "410 Gone" in e.reason and e.subject.household == HOME
        for e in w.entries()
    )
    # New events are not queued for a disabled webhook; its dead letters wait for it.
    w.index.open_event(PORCH, w.clock(), "motion", 0.2, [])
    s.svc.follower().poll()
    assert s.svc.webhook(s.owner(), hook.webhook.id).pending == 0
    with pytest.raises(InvalidTransitionError, match="disabled"):
        s.svc.redeliver(s.owner(), dead[0].id)
    s.rx.status["/gone"] = 204
    s.svc.set_disabled(s.owner(), hook.webhook.id, False)
    s.svc.redeliver(s.owner(), dead[0].id)
    assert s.svc.deliver_due().delivered == 1


def test_another_household_cannot_see_or_touch_a_webhook(setup: Setup) -> None:
    s, w = setup, setup.w
    hook = s.svc.add(s.owner(), s.rx.url(), ["event"])
    w.index.open_event(PORCH, w.clock(), "person", 0.9, [])
    s.svc.follower().poll()
    (delivery,) = s.svc.deliveries(s.owner())
    otto = w.p(w.other_owner)
    assert s.svc.webhooks(otto) == []
    assert s.svc.deliveries(otto) == []
    for act in (
        lambda: s.svc.webhook(otto, hook.webhook.id),
        lambda: s.svc.remove(otto, hook.webhook.id),
        lambda: s.svc.rotate_secret(otto, hook.webhook.id),
        lambda: s.svc.set_disabled(otto, hook.webhook.id, True),
        lambda: s.svc.deliveries(otto, webhook_id=hook.webhook.id),
        lambda: s.svc.redeliver(otto, delivery.id),
    ):
        with pytest.raises(NotFoundError):
            act()
    # Staff have no household: not an owner.
    with pytest.raises(PermissionDeniedError, match="owner"):
        s.svc.webhooks(w.p(w.legal))
    # Rotation: the old secret no longer verifies, the new one does.
    rotated = s.svc.rotate_secret(s.owner(), hook.webhook.id)
    assert rotated.secret != hook.secret
    s.svc.deliver_due()
    (call,) = s.rx.wait_for(1)
    verify(parse_secret(rotated.secret), call.headers, call.body, now=w.clock())
    with pytest.raises(WebhookMismatchError):
        verify(parse_secret(hook.secret), call.headers, call.body, now=w.clock())


# --- 3: a gagged warrant reaches no webhook before the owner notice -----------------------


def test_a_gagged_warrant_reaches_no_webhook_before_the_owner_notice(setup: Setup) -> None:
    s, w = setup, setup.w
    w.svc.set_policy(s.owner(), d.Policy(), notice_email=NOTICE_EMAIL, address="1 Elm Street")
    hook = s.svc.add(s.owner(), s.rx.url("/ha"), ["event", "request"])
    rita = w.requester("rita")
    filed_at = w.clock()
    r = w.svc.file(
        w.p(rita.user_id),
        type=d.RequestType.LEGAL_ORDER,
        order_kind=d.OrderKind.SEARCH_WARRANT,
        case_number="CR-2023-118",
        court="Town district court",
        start=T0 - 5,
        end=T0 + 15,
        description="footage of the porch on the night of the robbery",
        camera=PORCH,
        nondisclosure_order=True,
        nondisclosure_until=filed_at + 30 * DAY,
        documents=[WARRANT],
    )
    r = w.svc.act(w.p(w.legal), r.id, d.Accept("a valid warrant, particular in scope"))
    assert r.state == "notice_scheduled"
    w.svc.run_due()  # fulfilled at once; the owner is not told yet

    def nothing_sent() -> None:
        assert w.owner_notices(r.id) == []
        assert s.svc.deliveries(s.owner()) == []
        s.svc.deliver_due()
        assert s.rx.calls == []

    nothing_sent()
    w.clock.now = filed_at + 29 * DAY
    w.svc.run_due()
    nothing_sent()
    w.clock.now = filed_at + 30 * DAY
    assert w.svc.run_due() == 1  # the scheduler sends the owner notice
    (notice,) = w.owner_notices(r.id)
    assert notice.created_at == filed_at + 30 * DAY
    assert s.svc.deliver_due().delivered == 1
    (call,) = s.rx.wait_for(1)
    message = _check_signed(call, hook.secret, w.clock())
    assert int(call.headers["webhook-timestamp"]) >= notice.created_at - 1
    assert message["data"]["request_id"] == r.id
    assert message["data"]["body"] == notice.body  # exactly what the owner was told
    assert "footage will be released" in message["data"]["body"]


# --- the runtime runs the follower and the deliverer, and stops them ----------------------


def test_the_runtime_delivers_a_new_event_within_seconds_and_stops_cleanly(
    tmp_path: Path, database_url: str
) -> None:
    settings = Settings(data_dir=tmp_path / "data", database_url=database_url)
    runtime = Runtime(settings)
    with receiving() as rx:
        runtime.start()
        try:
            service = runtime.app_context().webhooks
            assert service is not None
            (owner,) = runtime.accounts.users()
            created = service.add(runtime.accounts.principal_of(owner), rx.url(), ["event"])
            started = time.monotonic()
            event = runtime.index.open_event("porch", time.time(), "person", 0.8, [])
            (call,) = rx.wait_for(1, timeout=15)
            took = time.monotonic() - started
            body = _check_signed(call, created.secret, time.time())
            assert body["data"]["event_id"] == event
            print(f"event to webhook call: {took:.2f} s (follower 1 s, deliverer 2 s polls)")
        finally:
            runtime.stop()
    names = {t.name for t in threading.enumerate()}
    assert not names & {"webhooks", "events-webhooks"}


def test_the_deliverer_thread_stops_while_a_receiver_hangs(setup: Setup) -> None:
    """A receiver that accepts and never answers: stop() returns within the send timeout."""
    import socket

    s, w = setup, setup.w
    hanging = socket.socket()
    hanging.bind(("127.0.0.1", 0))
    hanging.listen(1)
    try:
        svc = WebhookService(
            w.index, w.audit, w.settings, public_url=PUBLIC_URL, clock=w.clock, timeout=1.0
        )
        svc.add(s.owner(), f"http://127.0.0.1:{hanging.getsockname()[1]}/x", ["event"])
        w.index.open_event(PORCH, w.clock(), "person", 0.9, [])
        svc.follower().poll()
        deliverer = WebhookDeliverer(svc, interval=0.1)
        deliverer.start()
        deadline = time.monotonic() + 10
        while not svc.deliveries(s.owner())[0].attempts and time.monotonic() < deadline:
            time.sleep(0.05)
        started = time.monotonic()
        deliverer.stop()
        assert time.monotonic() - started < 5
        (view,) = svc.deliveries(s.owner())
        assert view.last_error == "no answer within 1 s"
    finally:
        hanging.close()


# --- rules -------------------------------------------------------------------------------


def test_backoff_schedule_with_jitter_bounds() -> None:
    for attempt, base in enumerate(BACKOFF, start=1):
        assert backoff_delay(attempt, lambda: 0.5) == pytest.approx(base)
        assert backoff_delay(attempt, lambda: 0.0) == pytest.approx(base * 0.8)
        assert backoff_delay(attempt, lambda: 0.999999) == pytest.approx(base * 1.2, rel=1e-5)
    assert backoff_delay(MAX_ATTEMPTS) is None
    with pytest.raises(ValueError):
        backoff_delay(0)


def test_retry_after_values() -> None:
    now = 1_764_403_200.0
    assert retry_after("120", now) == 120
    assert retry_after("999999", now) == MAX_RETRY_AFTER
    assert retry_after("Sat, 29 Nov 2025 08:01:00 GMT", now) == pytest.approx(60)
    assert retry_after("Sat, 29 Nov 2025 07:00:00 GMT", now) == 0  # in the past
    for bad in (None, "", "soon", "-5", "1.5"):
        assert retry_after(bad, now) is None


@pytest.mark.parametrize(
    "url",
    [
        "http://homeassistant.local:8123/api/webhook/abc-123",
        "https://example.org/hooks?x=1",
        "http://127.0.0.1:9000/hook",
        "http://[::1]:9000/hook",
        "http://192.168.1.20/hook",
        "http://10.0.0.5:1880/node-red",
        "http://xn--bcher-kva.example/",
        # Legacy numeric forms of loopback behave as 127.0.0.1 (the resolver reads them so).
        "http://2130706433:9000/hook",
        "http://0x7f.1:9000/hook",
    ],
)
def test_urls_a_webhook_may_call(url: str) -> None:
    assert check_url(url) == url


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("", "1-2048 characters"),
        ("ftp://example.org/x", "http:// or https://"),
        ("file:///etc/passwd", "http:// or https://"),
        ("javascript:alert(1)", "http:// or https://"),
        ("example.org/hook", "http:// or https://"),
        ("http:///hook", "no host"),
        ("http://user:pw@example.org/hook", "no user name or password"),
        ("http://user@example.org/hook", "no user name or password"),
        ("http://example.org/hook#frag", "fragment"),
        ("http://example.org:99999/", "malformed"),
        ("http://example.org:0/", "port"),
        ("http://exa mple.org/", "printable ASCII"),
        ("http://bücher.example/", "printable ASCII"),
        ("http://[::1/", "malformed"),
        ("http://169.254.169.254/latest/meta-data", "link-local"),
        # Regression: numeric IPv4 forms the C resolver accepts (inet_aton) were taken for
        # names and called.
        ("http://2852039166/", "link-local"),
        ("http://169.254.43518/", "link-local"),
        ("http://0xa9fea9fe/", "link-local"),
        ("http://0251.0376.0251.0376/", "link-local"),
        ("http://0XA9FEA9FE:80/latest", "link-local"),
        ("http://0x0/", "unspecified"),
        ("http://[fe80::1]/", "link-local"),
        ("http://224.0.0.1/", "multicast"),
        ("http://0.0.0.0:8123/", "unspecified"),
        ("http://240.0.0.1/", "reserved"),
        ("http://example.org/" + "a" * 2048, "1-2048 characters"),
    ],
)
def test_urls_a_webhook_may_not_call(url: str, reason: str) -> None:
    with pytest.raises(InvalidRequestError, match=reason):
        check_url(url)


# --- the address rule at send time (regression: the link-local block was bypassed) ---------

METADATA = "169.254.169.254"
NUMERIC_METADATA = (
    "http://2852039166:{port}/meta",
    "http://169.254.43518:{port}/meta",
    "http://0xa9fea9fe:{port}/meta",
    "http://0251.0376.0251.0376:{port}/meta",
)


def _fake_resolver(
    monkeypatch: pytest.MonkeyPatch, names: dict[str, Callable[[], list[str]]]
) -> list[str]:
    """``socket.getaddrinfo`` as the webhook service sees it, answering ``names`` with the
    addresses their function gives at each call and every other host as the real one;
    returns the hosts asked for, in order."""
    real = socket.getaddrinfo
    asked: list[str] = []
    for proxy in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY"):  # names resolve here, not there
        monkeypatch.delenv(proxy, raising=False)
        monkeypatch.delenv(proxy.lower(), raising=False)

    def getaddrinfo(host: Any, port: Any, *args: Any, **kwargs: Any) -> Any:
        if isinstance(host, str) and host in names:
            asked.append(host)
            return [
                (socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", (ip, int(port)))
                for ip in names[host]()
            ]
        return real(host, port, *args, **kwargs)

    monkeypatch.setattr("homewarden.services.webhooks.socket.getaddrinfo", getaddrinfo)
    return asked


def test_numeric_forms_of_the_metadata_address_are_refused_at_creation(setup: Setup) -> None:
    s = setup
    for url in NUMERIC_METADATA:
        with pytest.raises(InvalidRequestError, match=f"{METADATA}.*link-local"):
            s.svc.add(s.owner(), url.format(port=s.rx.port), ["event"])
    assert s.svc.webhooks(s.owner()) == []


def test_a_name_resolving_to_link_local_is_refused_when_sent_and_nothing_is_called(
    setup: Setup, monkeypatch: pytest.MonkeyPatch
) -> None:
    s, w = setup, setup.w
    # The name answers loopback first: were the rule not applied to every address, the
    # receiver on loopback would get the call.
    asked = _fake_resolver(monkeypatch, {"169.254.169.254.nip.io": lambda: ["127.0.0.1", METADATA]})
    hook = s.svc.add(s.owner(), f"http://169.254.169.254.nip.io:{s.rx.port}/meta", ["event"])
    # A numeric URL stored before the creation check existed is refused when sent, too.
    old = s.svc.store.add_webhook(
        HOME, f"http://2852039166:{s.rx.port}/meta", hook.secret, ("event",),
        now=w.clock(), by=None,
    )  # fmt: skip
    w.index.open_event(PORCH, w.clock(), "person", 0.9, [])
    s.svc.follower().poll()
    report = s.svc.deliver_due()
    assert (report.delivered, report.retried, report.dead) == (0, 0, 2)
    time.sleep(0.3)
    assert s.rx.calls == []  # no request reached anything
    assert asked == ["169.254.169.254.nip.io"]
    dead = {x.webhook_id: x for x in s.svc.deliveries(s.owner(), state="dead")}
    for webhook_id, host in ((hook.webhook.id, "169.254.169.254.nip.io"), (old.id, "2852039166")):
        x = dead[webhook_id]
        assert (x.attempts, x.last_status, x.next_attempt_at) == (1, None, None)
        assert x.last_error is not None
        assert host in x.last_error
        assert f"{METADATA} (link-local)" in x.last_error


def test_a_name_is_resolved_once_and_called_at_the_address_checked(
    setup: Setup, monkeypatch: pytest.MonkeyPatch
) -> None:
    s, w = setup, setup.w
    answers = iter([["127.0.0.1"]])
    # DNS rebinding: the first answer passes the check, every later one is the metadata
    # service. The call must go where the checked answer pointed.
    asked = _fake_resolver(monkeypatch, {"hook.test": lambda: next(answers, [METADATA])})
    hook = s.svc.add(s.owner(), f"http://hook.test:{s.rx.port}/ha", ["event"])
    w.index.open_event(PORCH, w.clock(), "person", 0.9, [])
    s.svc.follower().poll()
    assert s.svc.deliver_due().delivered == 1
    (call,) = s.rx.wait_for(1)
    assert asked == ["hook.test"]
    assert call.headers["host"] == f"hook.test:{s.rx.port}"  # the name, not the address
    _check_signed(call, hook.secret, w.clock())


def test_decimal_loopback_is_called_as_127_0_0_1(setup: Setup) -> None:
    s, w = setup, setup.w
    s.svc.add(s.owner(), f"http://2130706433:{s.rx.port}/dec", ["event"])
    w.index.open_event(PORCH, w.clock(), "person", 0.9, [])
    s.svc.follower().poll()
    assert s.svc.deliver_due().delivered == 1
    assert [c.path for c in s.rx.wait_for(1)] == ["/dec"]


def test_a_name_that_does_not_resolve_is_retried(
    setup: Setup, monkeypatch: pytest.MonkeyPatch
) -> None:
    s, w = setup, setup.w

    def no_such_name() -> list[str]:
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    _fake_resolver(monkeypatch, {"gone.test": no_such_name})
    s.svc.add(s.owner(), "http://gone.test/ha", ["event"])
    w.index.open_event(PORCH, w.clock(), "person", 0.9, [])
    s.svc.follower().poll()
    assert s.svc.deliver_due().retried == 1
    (x,) = s.svc.deliveries(s.owner())
    assert (x.state, x.attempts) == ("pending", 1)
    assert x.last_error is not None
    assert "cannot resolve gone.test" in x.last_error


def test_behind_a_proxy_the_proxy_resolves_the_name(
    setup: Setup, monkeypatch: pytest.MonkeyPatch
) -> None:
    s, w = setup, setup.w

    def never() -> list[str]:
        raise AssertionError("a proxied call's host is resolved by the proxy")

    asked = _fake_resolver(monkeypatch, {"behind.test": never})
    monkeypatch.setenv("HTTP_PROXY", f"http://127.0.0.1:{s.rx.port}")  # the receiver proxies
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    s.svc.add(s.owner(), "http://behind.test/ha", ["event"])
    w.index.open_event(PORCH, w.clock(), "person", 0.9, [])
    s.svc.follower().poll()
    assert s.svc.deliver_due().delivered == 1
    (call,) = s.rx.wait_for(1)
    assert call.path == "http://behind.test/ha"  # the absolute form a proxy is sent
    assert asked == []
