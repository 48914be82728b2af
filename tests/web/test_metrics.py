"""``GET /metrics`` against the real app over a real index (SQLite and PostgreSQL), real
segments cut from ``bikes.mp4``, and a real recorder playing that footage.

Live statuses come from a statuses callable that changes between scrapes (as a recorder's
do); index facts come from indexed segments, gaps and events; disclosure requests are real
rows of the disclosure tables. Every answer is parsed with ``prometheus_client``'s own text
parser, the one Prometheus' format is specified by.
"""

from __future__ import annotations

import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import pytest
from fastapi import FastAPI
from prometheus_client.parser import text_string_to_metric_families

from homewarden.config import Settings
from homewarden.domain.permissions import GRANTS, LOCAL_OPERATOR_GRANTS, Permission, Role
from homewarden.services.audit import AuditLog
from homewarden.services.recorder import CameraStatus
from homewarden.services.runtime import AppContext, Runtime
from homewarden.store.accounts_store import UserRecord
from homewarden.store.disclosure_store import DisclosureStore, StoredRequest
from homewarden.store.index import Index
from homewarden.web.app import create_app
from tests.web.conftest import FOOTAGE, T0, Footage
from tests.web.helpers import (
    PASSWORD,
    Clock,
    TestClient,
    add_user,
    client,
    login,
    make_context,
    token_client,
)

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def parse(text: str) -> Samples:
    """Every sample of a text exposition: (name, labels) -> value."""
    out: Samples = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            key = (s.name, frozenset(s.labels.items()))
            assert key not in out, key
            out[key] = s.value
    return out


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples[(name, frozenset(labels.items()))]


def cameras_in(samples: Samples) -> set[str]:
    return {dict(labels)["camera"] for _, labels in samples if "camera" in dict(labels)}


@dataclass
class Statuses:
    """What the recorders report, changed by the test between scrapes."""

    now: dict[str, CameraStatus]

    def __call__(self) -> dict[str, CameraStatus]:
        return dict(self.now)


def _status(name: str, at: float, **changes: object) -> CameraStatus:
    status = CameraStatus(
        name=name,
        state="connected",
        connected_since=at - 60,
        last_packet_at=at - 0.5,
        fps_in=25.0,
        bitrate=1_000_000.0,
        decode_mode="keyframes",
        segments_written=6,
        gaps_open=0,
        last_error=None,
        next_retry_at=None,
        fps_recorded=24.0,
        cpu_seconds=3.5,
    )
    return replace(status, **changes)  # type: ignore[arg-type]


@dataclass
class Site:
    app: FastAPI
    ctx: AppContext
    clock: Clock
    statuses: Statuses
    owner: UserRecord
    farmer: UserRecord
    index: Index
    footage: Footage

    def scrape(self, c: TestClient) -> Samples:
        resp = c.get("/metrics")
        assert resp.status_code == 200, resp.text
        assert resp.headers["content-type"].startswith("text/plain; version=")
        assert resp.headers["cache-control"] == "no-store"
        return parse(resp.text)


@pytest.fixture
def site(index: Index, database_url: str, footage: Footage) -> Iterator[Site]:
    """Households ``home`` (cameras front: recorded and running, porch: disabled, side:
    running, nothing indexed) and ``farm`` (camera barn: running, one event and gap)."""
    for seg in footage.segments:
        index.add_segment(seg)
    closed = index.open_gap("front", T0 - 30.0, "unreachable", "connection refused")
    index.close_gap(closed, T0)
    index.open_gap("front", T0 + 10.0, "stalled")
    for start, label in ((1.0, "motion"), (4.0, "person"), (6.5, "motion")):
        ev = index.open_event("front", T0 + start, label, 0.3, [])
        index.update_event(ev, end=T0 + start + 1.0)
    index.open_event("barn", T0 + 2.0, "motion", 0.3, [])
    index.add_gap("barn", T0 - 5.0, T0 - 1.0, "unreachable")
    settings = Settings(
        data_dir=footage.data_dir,
        database_url=database_url,
        cameras={
            "front": {"url": f"file:{FOOTAGE}"},
            "porch": {"url": f"file:{FOOTAGE}", "enabled": False},
            "side": {"url": f"file:{FOOTAGE}"},
            "barn": {"url": f"file:{FOOTAGE}", "household": "farm"},
        },
    )
    clock = Clock(T0 + 3600)
    statuses = Statuses(
        {
            "front": _status("front", clock.now),
            "side": _status("side", clock.now, decode_mode="full", fps_in=12.5),
            "barn": _status("barn", clock.now, segments_written=99),
        }
    )
    with AuditLog.open(database_url, settings.keys_dir, clock=clock) as audit:
        ctx = make_context(index, settings, audit, statuses=statuses, clock=clock)
        owner = add_user(ctx, "owner")
        farmer = add_user(ctx, "farmer", household="farm")
        app = create_app(ctx)
        yield Site(app, ctx, clock, statuses, owner, farmer, index, footage)


def test_metrics_permission_is_the_owners_and_tokens_keep_it() -> None:
    assert Permission.SYSTEM_METRICS_READ in GRANTS[Role.OWNER]
    assert Permission.SYSTEM_METRICS_READ in LOCAL_OPERATOR_GRANTS
    others = [r for r in Role if r is not Role.OWNER]
    assert all(Permission.SYSTEM_METRICS_READ not in GRANTS[r] for r in others)


def test_owner_token_scrapes_parseable_camera_index_and_storage_metrics(site: Site) -> None:
    samples = site.scrape(token_client(site.app, site.ctx, site.owner))
    assert cameras_in(samples) == {"front", "porch", "side"}  # barn is the farm's
    # live status
    assert value(samples, "homewarden_camera_connected", camera="front") == 1
    assert value(samples, "homewarden_camera_connected", camera="porch") == 0
    assert value(samples, "homewarden_camera_fps_in", camera="side") == 12.5
    assert value(samples, "homewarden_camera_fps_recorded", camera="front") == 24.0
    assert value(samples, "homewarden_camera_cpu_seconds_total", camera="front") == 3.5
    assert value(samples, "homewarden_camera_bitrate_bits_per_second", camera="front") == 1e6
    assert value(samples, "homewarden_camera_segments_written_total", camera="front") == 6
    assert value(samples, "homewarden_camera_last_packet_age_seconds", camera="front") == 0.5
    for cam, current in (("front", "keyframes"), ("side", "full")):
        for mode in ("off", "keyframes", "full"):
            expected = 1.0 if mode == current else 0.0
            assert value(samples, "homewarden_camera_decode_mode", camera=cam, mode=mode) == (
                expected
            )
    # a camera without a recorder has no live samples (unknown is not zero)
    for name in (
        "homewarden_camera_fps_in",
        "homewarden_camera_fps_recorded",
        "homewarden_camera_cpu_seconds_total",
        "homewarden_camera_segments_written_total",
    ):
        assert (name, frozenset({("camera", "porch")})) not in samples
    # index facts
    segs = site.footage.segments
    recorded = sum(s.end - s.start for s in segs)
    assert value(samples, "homewarden_camera_recorded_seconds", camera="front") == (
        pytest.approx(recorded)
    )
    assert value(samples, "homewarden_camera_recorded_bytes", camera="front") == sum(
        s.bytes for s in segs
    )
    assert value(samples, "homewarden_camera_segments", camera="front") == len(segs)
    assert value(samples, "homewarden_camera_recorded_seconds", camera="side") == 0
    assert value(samples, "homewarden_camera_gaps_open", camera="front") == 1
    assert value(samples, "homewarden_camera_gaps_total", camera="front") == 2
    assert value(samples, "homewarden_camera_events_total", camera="front", label="motion") == 2
    assert value(samples, "homewarden_camera_events_total", camera="front", label="person") == 1
    # storage: the shown cameras' footage, the media filesystem's free and total bytes
    assert value(samples, "homewarden_storage_used_bytes") == sum(s.bytes for s in segs)
    free = value(samples, "homewarden_storage_free_bytes")
    assert 0 < free <= value(samples, "homewarden_storage_size_bytes")
    # this process' CPU
    assert value(samples, "process_cpu_seconds_total") > 0


def test_values_move_between_scrapes(site: Site) -> None:
    c = token_client(site.app, site.ctx, site.owner)
    first = site.scrape(c)
    site.clock.advance(10)
    site.statuses.now["front"] = _status(
        "front",
        site.clock.now - 4,
        segments_written=7,
        decode_mode="full",
        fps_in=24.0,
    )
    site.statuses.now.pop("side")  # its recorder stopped
    seg = site.footage.segments[-1]
    site.index.add_segment(
        replace(seg, start=seg.end + 20, end=seg.end + 22, path="front/extra.mp4")
    )
    second = site.scrape(c)
    front = {"camera": "front"}
    assert value(first, "homewarden_camera_segments_written_total", **front) == 6
    assert value(second, "homewarden_camera_segments_written_total", **front) == 7
    assert value(second, "homewarden_camera_fps_in", **front) == 24.0
    assert value(second, "homewarden_camera_decode_mode", camera="front", mode="full") == 1
    assert value(second, "homewarden_camera_last_packet_age_seconds", **front) == 4.5
    assert value(second, "homewarden_camera_recorded_seconds", **front) == pytest.approx(
        value(first, "homewarden_camera_recorded_seconds", **front) + 2
    )
    assert value(second, "homewarden_camera_segments", **front) == len(site.footage.segments) + 1
    assert value(first, "homewarden_camera_connected", camera="side") == 1
    assert value(second, "homewarden_camera_connected", camera="side") == 0
    assert ("homewarden_camera_fps_in", frozenset({("camera", "side")})) not in second


def test_anonymous_is_401_and_members_and_staff_are_403(site: Site) -> None:
    anonymous = client(site.app).get("/metrics")
    assert anonymous.status_code == 401
    assert anonymous.headers["content-type"].startswith("application/problem+json")
    mia = add_user(site.ctx, "mia", Role.MEMBER, cameras=("front",))
    sam = add_user(site.ctx, "sam", Role.SUPPORT, household=None)
    for user in (mia, sam):
        resp = token_client(site.app, site.ctx, user).get("/metrics")
        assert resp.status_code == 403, (user.username, resp.text)
        assert "system:metrics:read" in resp.json()["detail"]


def test_a_session_owner_can_scrape_too(site: Site) -> None:
    c = client(site.app)
    login(c, "owner", PASSWORD)
    assert "front" in cameras_in(site.scrape(c))


def test_another_household_sees_only_its_own_cameras(site: Site) -> None:
    samples = site.scrape(token_client(site.app, site.ctx, site.farmer))
    assert cameras_in(samples) == {"barn"}
    assert value(samples, "homewarden_camera_segments_written_total", camera="barn") == 99
    assert value(samples, "homewarden_camera_events_total", camera="barn", label="motion") == 1
    assert value(samples, "homewarden_camera_gaps_total", camera="barn") == 1
    assert value(samples, "homewarden_camera_recorded_bytes", camera="barn") == 0
    # the farm's footage is none of home's bytes, and the other way round
    assert value(samples, "homewarden_storage_used_bytes") == 0


def test_the_collector_scopes_a_member_to_granted_cameras(site: Site) -> None:
    # Members do not hold system:metrics:read; the collector still scopes by viewer, so a
    # wider grant later could not show more than the member's cameras.
    from homewarden.services.metrics import Metrics

    mia = add_user(site.ctx, "mia", Role.MEMBER, cameras=("side",))
    metrics = Metrics(
        site.ctx.queries,
        site.index,
        DisclosureStore(site.index),
        lambda household: frozenset(),
        site.ctx.current_settings,
        site.clock,
    )
    samples = parse(metrics.exposition(site.ctx.accounts.principal_of(mia)).decode())
    assert cameras_in(samples) == {"side"}
    assert not any(name == "homewarden_disclosure_requests" for name, _ in samples)


def _request(
    store: DisclosureStore,
    rid: str,
    household: str,
    kind: str,
    state: str,
    notice: str,
    *,
    requester: int,
    agency: int,
) -> None:
    store.add_request(
        StoredRequest(
            id=rid,
            household=household,
            type=kind,
            state=state,
            requester_id=requester,
            agency_id=agency,
            filed_at=T0,
            updated_at=T0,
            next_due=None,
            package=None,
            data={"id": rid, "notice": notice},
            version=1,
        ),
        [],
    )


def test_request_counts_by_type_and_state_without_ids_or_unnoticed_requests(site: Site) -> None:
    store = DisclosureStore(site.index)
    agency = store.add_agency(
        "Metro PD", "US-XX", ["pd.example.gov"], "+1 555 0100", now=T0, by=None
    )
    officer = site.ctx.accounts.add_user(
        "officer", Role.REQUESTER, None, actor=None, password=PASSWORD
    ).user
    store.add_requester(officer.id, agency.id, "officer@pd.example.gov", T0)
    ids = {
        "req-consent-1": ("home", "consent", "awaiting_owner", "none"),
        "req-consent-2": ("home", "consent", "awaiting_owner", "none"),
        "req-consent-3": ("home", "consent", "declined", "none"),
        "req-warrant": ("home", "legal_order", "fulfilled", "sent"),
        # a warrant under a non-disclosure order: the owner has not been told, so it must not
        # show in the owner's counts (18 U.S.C. 2705(b))
        "req-gagged": ("home", "legal_order", "approved", "scheduled"),
        "req-farm": ("farm", "consent", "awaiting_owner", "none"),
    }
    for rid, (household, kind, state, notice) in ids.items():
        _request(store, rid, household, kind, state, notice, requester=officer.id, agency=agency.id)
    resp = token_client(site.app, site.ctx, site.owner).get("/metrics")
    samples = parse(resp.text)
    counts = {
        (dict(labels)["type"], dict(labels)["state"]): v
        for (name, labels), v in samples.items()
        if name == "homewarden_disclosure_requests"
    }
    assert counts == {
        ("consent", "awaiting_owner"): 2,
        ("consent", "declined"): 1,
        ("legal_order", "fulfilled"): 1,
    }
    assert all(rid not in resp.text for rid in ids)
    farm = parse(token_client(site.app, site.ctx, site.farmer).get("/metrics").text)
    farm_counts = {
        dict(labels)["state"]: v
        for (name, labels), v in farm.items()
        if name == "homewarden_disclosure_requests"
    }
    assert farm_counts == {"awaiting_owner": 1}


def test_metrics_are_not_in_the_openapi_document(site: Site) -> None:
    doc = token_client(site.app, site.ctx, site.owner).get("/api/openapi.json").json()
    assert "/metrics" not in doc["paths"]


def _scrape_url(url: str, token: str) -> Samples:
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"})
    with urllib.request.urlopen(request, timeout=5) as resp:
        return parse(resp.read().decode())


def test_metrics_move_while_a_real_recorder_records(tmp_path: Path) -> None:
    settings = Settings(
        data_dir=tmp_path / "data",
        api={"host": "127.0.0.1", "port": 0},
        cameras={"bikes": {"url": f"file:{FOOTAGE}", "loop": True, "segment_seconds": 2}},
    )
    runtime = Runtime(settings, app_factory=create_app)
    address = runtime.start()
    try:
        assert address is not None
        (owner,) = runtime.accounts.users()
        token, _ = runtime.accounts.create_token(owner.id, "prometheus")
        url = f"{address.url}/metrics"
        bikes = {"camera": "bikes"}
        deadline = time.monotonic() + 20
        first: Samples = {}
        while time.monotonic() < deadline:
            first = _scrape_url(url, token)
            if value(first, "homewarden_camera_segments", **bikes) >= 1:
                break
            time.sleep(0.25)
        assert value(first, "homewarden_camera_connected", **bikes) == 1
        assert value(first, "homewarden_camera_fps_in", **bikes) == pytest.approx(25, rel=0.3)
        assert value(first, "homewarden_camera_bitrate_bits_per_second", **bikes) > 0
        # every frame in goes into a segment once the first keyframe opened one
        assert value(first, "homewarden_camera_fps_recorded", **bikes) == pytest.approx(
            value(first, "homewarden_camera_fps_in", **bikes), rel=0.15
        )
        cpu = value(first, "homewarden_camera_cpu_seconds_total", **bikes)
        assert cpu > 0
        written = value(first, "homewarden_camera_segments_written_total", **bikes)
        recorded = value(first, "homewarden_camera_recorded_seconds", **bikes)
        assert recorded > 0
        second = first
        # Regression (flaky under load): this loop shared the first one's deadline and
        # stopped once the index showed a new segment, before the recorder's status (polled
        # on its own interval) had counted it. It now waits, on its own deadline, for both.
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            time.sleep(0.5)
            second = _scrape_url(url, token)
            if (
                value(second, "homewarden_camera_recorded_seconds", **bikes) > recorded + 1
                and value(second, "homewarden_camera_segments_written_total", **bikes) > written
                and value(second, "homewarden_camera_cpu_seconds_total", **bikes) > cpu
            ):
                break
        assert value(second, "homewarden_camera_segments_written_total", **bikes) > written
        assert value(second, "homewarden_camera_cpu_seconds_total", **bikes) > cpu
        assert value(second, "homewarden_camera_recorded_seconds", **bikes) > recorded + 1
        assert value(second, "homewarden_camera_recorded_bytes", **bikes) > value(
            first, "homewarden_camera_recorded_bytes", **bikes
        )
        assert value(second, "homewarden_storage_used_bytes") == value(
            second, "homewarden_camera_recorded_bytes", **bikes
        )
    finally:
        runtime.stop()
