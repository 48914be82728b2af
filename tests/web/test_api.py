"""The JSON API against a real migrated index (SQLite and PostgreSQL) and real segments.

Segments are cut from the real H.264 clip ``bikes.mp4`` at its own keyframes with the
project's segment writer (fragmented MP4, packets copied), laid out under a data dir as the
recorder lays them out, and indexed; clips are composed from them by the real remuxer.
Authorization is on: the client is the household's owner with an API token.
"""

from __future__ import annotations

import io
import re
import shutil
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import av
import cv2
import numpy as np
import pytest
from fastapi import FastAPI
from fastapi.routing import APIRoute, APIWebSocketRoute
from starlette.routing import Route

from homewarden.config import Settings
from homewarden.domain.audit import Actor, ActorKind, AuditEntry, AuditTag
from homewarden.domain.permissions import ANONYMOUS_GRANTS, Permission
from homewarden.errors import HomeWardenError
from homewarden.services.audit import AuditLog
from homewarden.services.queries import MAX_CLIP_SECONDS
from homewarden.services.recorder import CameraStatus
from homewarden.services.runtime import AppContext
from homewarden.store.accounts_store import UserRecord
from homewarden.store.index import Index
from homewarden.web.app import create_app
from homewarden.web.deps import declared_permissions, undeclared_routes
from tests.web.conftest import FOOTAGE, Footage
from tests.web.helpers import LOOPBACK, add_user, client, make_context, token_client

with warnings.catch_warnings():
    # Starlette announces a move from httpx to httpx2 for its test client.
    warnings.filterwarnings("ignore", message=".*httpx2.*")
    from fastapi.testclient import TestClient

#: Five seconds before a UTC hour boundary (1700002800 = 2023-11-14T23:00:00Z), so the
#: footage spans two hours of the per-hour summary.
T0 = 1_700_002_795.0
HOUR = 1_700_002_800.0
REMOTE = ("203.0.113.5", 1234)
OPERATOR = Actor(ActorKind.LOCAL_OPERATOR, "127.0.0.1")


@dataclass
class Api:
    client: TestClient
    app: FastAPI
    index: Index
    events: dict[str, int]
    footage: Footage
    open_gap: int
    audit: AuditLog
    ctx: AppContext
    owner: UserRecord

    def audited(self) -> list[AuditEntry]:
        """Every footage entry of the audit log (not account events), oldest first."""
        entries = [self.audit.entry(i) for i in range(self.audit.size())]
        return [e for e in entries if e.action.startswith("footage:")]


@pytest.fixture
def api(index: Index, database_url: str, footage: Footage) -> Iterator[Api]:
    for seg in footage.segments:
        index.add_segment(seg)
    closed = index.open_gap("front", T0 - 30.0, "unreachable", "connection refused")
    index.close_gap(closed, T0)
    open_gap = index.open_gap("front", T0 + 10.0, "stalled", "no packet for 10 s")
    index.open_gap("attic", T0 - 100.0, "unreachable")  # a camera known only to the index
    events = {
        "walk": index.open_event("front", T0 + 1.0, "motion", 0.2, ["porch"]),
        "person": index.open_event("front", T0 + 4.0, "person", 0.6, ["drive"]),
        "bike": index.open_event("front", T0 + 6.5, "motion", 0.3, []),
        "both": index.open_event("front", T0 + 8.2, "motion", 0.4, ["porch", "drive"]),
        "open": index.open_event("front", T0 + 9.0, "motion", 0.1, []),
    }
    index.update_event(events["walk"], end=T0 + 3.0, snapshot_path=footage.snapshot_rel)
    index.update_event(events["person"], end=T0 + 6.0)
    index.update_event(events["bike"], end=T0 + 8.0)
    index.update_event(events["both"], end=T0 + 9.5)
    settings = Settings(
        data_dir=footage.data_dir,
        database_url=database_url,
        cameras={
            "front": {"url": f"file:{FOOTAGE}"},
            "porch": {"url": "rtsp://admin:s3cret-pw@192.0.2.10:554/stream1", "enabled": False},
        },
    )
    with AuditLog.open(database_url, settings.keys_dir) as audit:
        ctx = make_context(index, settings, audit)
        owner = add_user(ctx, "owner")
        app = create_app(ctx)
        with token_client(app, ctx, owner) as c:
            yield Api(c, app, index, events, footage, open_gap, audit, ctx, owner)


def assert_problem(resp, status: int, code: str | None = None) -> dict:
    """The response is an RFC 9457 problem document with ``status``."""
    assert resp.status_code == status, resp.text
    assert resp.headers["content-type"].startswith("application/problem+json")
    body = resp.json()
    assert {"type", "title", "status", "detail", "instance"} <= set(body)
    assert body["status"] == status
    assert body["instance"] == resp.request.url.path
    assert body["title"]
    assert body["detail"]
    if code is None:
        assert body["type"] == "about:blank"
    else:
        assert body["type"].endswith(f"/api/problems/{code}")
    return body


def _sample_path(route: APIRoute, api: Api) -> str:
    values = {
        "name": "front",
        "camera": "front",
        "event_id": str(api.events["walk"]),
        "code": "not-found",
        "user_id": str(api.owner.id),
        "token_id": "1",
        "grant_id": "1",
    }
    return re.sub(r"{(\w+)(:\w+)?}", lambda m: values.get(m.group(1), "1"), route.path)


def _clip_duration(data: bytes) -> tuple[float, int]:
    """(presented seconds, decoded frames) of an MP4 held in memory; every frame must decode."""
    with av.open(io.BytesIO(data)) as c:
        frames = [f for f in c.decode(video=0)]
        assert c.duration is not None
        return c.duration / 1_000_000, len(frames)


# -- permissions -------------------------------------------------------------------------


def test_every_route_declares_a_permission(api: Api) -> None:
    assert undeclared_routes(api.app) == []
    paths = set()
    for route in api.app.routes:
        assert isinstance(route, APIRoute | APIWebSocketRoute), route
        assert declared_permissions(route), route.path
        paths.add(route.path)
    assert {"/api/openapi.json", "/api/cameras/{name}/clip.mp4"} <= paths


def test_walker_flags_an_ungated_route(api: Api) -> None:
    api.app.add_api_route("/api/leak", lambda: {"leak": True})
    assert undeclared_routes(api.app) == ["GET /api/leak"]
    api.app.router.routes.append(Route("/raw", lambda request: None))
    assert undeclared_routes(api.app)[-1] == "Route /raw"


@pytest.mark.parametrize("host", [REMOTE, LOOPBACK])
def test_anonymous_client_is_refused_on_every_route_that_needs_an_account(
    api: Api, host: tuple[str, int]
) -> None:
    # Loopback grants nothing any more: every caller signs in.
    anonymous = client(api.app, host=host)
    checked = 0
    for route in api.app.routes:
        if not isinstance(route, APIRoute):
            continue
        if declared_permissions(route) <= ANONYMOUS_GRANTS or not route.path.startswith("/api/"):
            continue  # pages send a browser to the login page instead
        for method in route.methods or ():
            resp = anonymous.request(method, _sample_path(route, api))
            body = assert_problem(resp, 401, "authentication")
            assert resp.headers["www-authenticate"].startswith("Bearer")
            assert body["detail"] == "sign in first"
            checked += 1
    assert checked >= 25
    assert api.audited() == []  # nothing was served, so nothing to account for
    # the same routes answer the owner
    assert api.client.get("/api/health").status_code == 200


def test_a_bad_bearer_token_is_401_not_anonymous(api: Api) -> None:
    bad = client(api.app, headers={"Authorization": "Bearer hw_not-a-token"})
    assert_problem(bad.get("/api/csrf"), 401, "authentication")
    basic = client(api.app, headers={"Authorization": "Basic b3duZXI6cHc="})
    assert_problem(basic.get("/api/cameras"), 401, "authentication")


def test_openapi_lists_every_operation_with_its_permissions(api: Api) -> None:
    resp = api.client.get("/api/openapi.json")
    assert resp.status_code == 200
    doc = resp.json()
    assert doc["info"]["title"] == "HomeWarden"
    expected = {
        "/api/cameras": {"cameras:camera:read", "cameras:status:read"},
        "/api/cameras/{name}": {"cameras:camera:read", "cameras:status:read"},
        "/api/cameras/{name}/clip.mp4": {"footage:clip:download"},
        "/api/recordings": {"footage:recording:read"},
        "/api/recordings/summary": {"footage:recording:read"},
        "/api/gaps": {"footage:recording:read"},
        "/api/events": {"events:event:read"},
        "/api/events/{event_id}": {"events:event:read"},
        "/api/events/{event_id}/snapshot.jpg": {"footage:snapshot:read"},
        "/api/events/{event_id}/clip.mp4": {"footage:clip:download"},
        "/api/health": {"system:health:read"},
        "/api/problems/{code}": {"system:openapi:read"},
    }
    assert set(expected) <= set(doc["paths"])  # other modules add theirs
    for path, perms in expected.items():
        op = doc["paths"][path]["get"]
        assert set(op["x-permissions"]) == perms
    for path, ops in doc["paths"].items():
        for op in ops.values():
            assert op["x-permissions"], path
            assert all(p in {x.value for x in Permission} for p in op["x-permissions"])
            problem = op["responses"]["403"]["content"]["application/problem+json"]
            assert problem["schema"]["$ref"].endswith("/Problem")
    login = doc["paths"]["/api/session"]["post"]
    assert login["x-permissions"] == ["accounts:session:create"]
    assert "application/json" in login["requestBody"]["content"]


def test_no_docs_page_that_loads_third_party_scripts(api):
    # Swagger UI pulls its JS from a CDN; a home recorder's API must not make the browser call out.
    docs = api.client.get("/api/docs")
    assert docs.status_code == 404
    assert "cdn" not in docs.text.lower()


# -- cameras -----------------------------------------------------------------------------


def test_cameras_list_config_index_and_redacted_urls(api: Api) -> None:
    resp = api.client.get("/api/cameras")
    assert resp.status_code == 200
    cams = {c["name"]: c for c in resp.json()}
    assert sorted(cams) == ["attic", "front", "porch"]
    front = cams["front"]
    assert front["configured"] is True
    assert front["state"] == "not-running"  # no recorder runs in this process
    assert front["connected"] is False
    assert front["recorded_bytes"] == sum(s.bytes for s in api.footage.segments)
    assert front["last_recorded_at"] == pytest.approx(max(s.end for s in api.footage.segments))
    assert front["gaps_open"] == 1
    for key in ("fps", "bitrate", "last_packet_at", "decode_mode", "connected_since"):
        assert key in front
    porch = cams["porch"]
    assert porch["state"] == "disabled"
    assert porch["url"] == "rtsp://admin:***@192.0.2.10:554/stream1"
    assert "s3cret" not in resp.text
    assert cams["attic"]["configured"] is False
    assert cams["attic"]["gaps_open"] == 1


def test_camera_by_name_and_unknown_camera(api: Api) -> None:
    resp = api.client.get("/api/cameras/front")
    assert resp.status_code == 200
    assert resp.json()["name"] == "front"
    body = assert_problem(api.client.get("/api/cameras/garage"), 404, "not-found")
    assert "garage" in body["detail"]


# -- recordings, summary, gaps -----------------------------------------------------------


def test_recordings_by_camera_and_span(api: Api) -> None:
    segs = api.footage.segments
    everything = api.client.get("/api/recordings").json()
    assert [r["start"] for r in everything] == pytest.approx([s.start for s in segs])
    assert everything[0]["bytes"] == segs[0].bytes
    assert "path" not in everything[0]  # server-side layout is not part of the API
    lo, hi = T0 + 2.0, T0 + 6.0
    expected = [s.start for s in segs if s.end > lo and s.start < hi]
    by_epoch = api.client.get(
        "/api/recordings", params={"camera": "front", "since": lo, "until": hi}
    )
    assert [r["start"] for r in by_epoch.json()] == pytest.approx(expected)
    iso = api.client.get(
        "/api/recordings",
        params={"since": "2023-11-14T22:59:57Z", "until": "2023-11-14T23:00:01+00:00"},
    )
    assert [r["start"] for r in iso.json()] == pytest.approx(expected)
    naive_is_utc = api.client.get(
        "/api/recordings", params={"since": "2023-11-14T22:59:57", "until": "2023-11-14 23:00:01"}
    )
    assert naive_is_utc.json() == iso.json()
    assert api.client.get("/api/recordings", params={"since": T0 + 100}).json() == []


def test_recordings_bad_input_is_a_problem(api: Api) -> None:
    body = assert_problem(
        api.client.get("/api/recordings", params={"since": "yesterday-ish"}), 422, "invalid-request"
    )
    assert "since" in body["detail"]
    assert_problem(
        api.client.get("/api/recordings", params={"since": T0 + 5, "until": T0 + 1}),
        422,
        "invalid-request",
    )
    assert_problem(
        api.client.get("/api/recordings", params={"since": "nan"}), 422, "invalid-request"
    )
    assert_problem(api.client.get("/api/recordings", params={"camera": "garage"}), 404, "not-found")


def test_summary_per_utc_hour(api: Api) -> None:
    resp = api.client.get(
        "/api/recordings/summary",
        params={"camera": "front", "since": HOUR - 3600, "until": HOUR + 3600},
    )
    assert resp.status_code == 200
    hours = resp.json()
    assert [h["hour_start"] for h in hours] == [HOUR - 3600, HOUR]
    assert all(h["hour_end"] == h["hour_start"] + 3600 for h in hours)
    total = sum(s.end - s.start for s in api.footage.segments)
    assert sum(h["recorded_seconds"] for h in hours) == pytest.approx(total, abs=0.01)
    assert hours[0]["recorded_seconds"] == pytest.approx(5.0, abs=0.01)
    assert sum(h["events"] for h in hours) == 5
    everything = api.client.get(
        "/api/recordings/summary", params={"since": HOUR - 3600, "until": HOUR + 3600}
    ).json()
    assert {h["camera"] for h in everything} == {"front"}  # other cameras have no footage


def test_gaps(api: Api) -> None:
    gaps = api.client.get("/api/gaps", params={"camera": "front"}).json()
    assert [g["reason"] for g in gaps] == ["unreachable", "stalled"]
    assert gaps[0]["duration"] == pytest.approx(30.0)
    assert gaps[1]["end"] is None
    assert gaps[1]["duration"] is None
    assert gaps[1]["id"] == api.open_gap
    after = api.client.get("/api/gaps", params={"camera": "front", "since": T0 + 5}).json()
    assert [g["reason"] for g in after] == ["stalled"]
    everyone = api.client.get("/api/gaps", params={"since": T0 + 5}).json()
    assert sorted(g["camera"] for g in everyone) == ["attic", "front"]


# -- events ------------------------------------------------------------------------------


def test_events_cursor_paging_newest_first(api: Api) -> None:
    seen: list[int] = []
    cursor = None
    pages = 0
    while True:
        params: dict[str, str | int] = {"limit": 2}
        if cursor:
            params["cursor"] = cursor
        page = api.client.get("/api/events", params=params).json()
        seen += [e["id"] for e in page["events"]]
        pages += 1
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert pages == 3
    order = ["open", "both", "bike", "person", "walk"]
    assert seen == [api.events[k] for k in order]


def test_events_filters(api: Api) -> None:
    def ids(**params: object) -> list[int]:
        resp = api.client.get("/api/events", params=params)
        assert resp.status_code == 200, resp.text
        return [e["id"] for e in resp.json()["events"]]

    ev = api.events
    assert ids(label="person") == [ev["person"]]
    assert ids(zone="porch") == [ev["both"], ev["walk"]]
    assert ids(camera="front", since=T0 + 7.0, until=T0 + 8.5) == [ev["both"], ev["bike"]]
    assert ids(label="person", zone="porch") == []


def test_events_bad_cursor_and_limit(api: Api) -> None:
    body = assert_problem(
        api.client.get("/api/events", params={"cursor": "not-a-cursor"}), 422, "invalid-request"
    )
    assert "cursor" in body["detail"]
    for limit in (0, 501):
        body = assert_problem(
            api.client.get("/api/events", params={"limit": limit}), 422, "invalid-request"
        )
        assert body["errors"][0]["loc"] == "query.limit"
    assert_problem(api.client.get("/api/events", params={"camera": "garage"}), 404, "not-found")


def test_event_by_id(api: Api) -> None:
    walk = api.client.get(f"/api/events/{api.events['walk']}").json()
    assert walk["label"] == "motion"
    assert walk["zones"] == ["porch"]
    assert walk["start"] == pytest.approx(T0 + 1.0)
    assert walk["end"] == pytest.approx(T0 + 3.0)
    assert walk["has_snapshot"] is True
    assert api.client.get(f"/api/events/{api.events['open']}").json()["end"] is None
    assert_problem(api.client.get("/api/events/999999"), 404, "not-found")
    assert_problem(api.client.get("/api/events/abc"), 422, "invalid-request")


def test_event_snapshot(api: Api) -> None:
    resp = api.client.get(f"/api/events/{api.events['walk']}/snapshot.jpg")
    assert resp.status_code == 200
    assert resp.headers["content-type"] == "image/jpeg"
    image = cv2.imdecode(np.frombuffer(resp.content, np.uint8), cv2.IMREAD_COLOR)
    assert image.shape == (272, 640, 3)
    no_snapshot = api.client.get(f"/api/events/{api.events['bike']}/snapshot.jpg")
    assert "no snapshot" in assert_problem(no_snapshot, 404, "not-found")["detail"]
    # one entry: the snapshot served, not the one that was not found
    (entry,) = api.audited()
    assert entry.action == "footage:snapshot:view"
    assert (entry.actor.kind, entry.actor.id) == ("user", str(api.owner.id))
    assert entry.reason == "api; owner"
    assert entry.subject.household == "home"
    assert entry.subject.camera == "front"
    assert entry.subject.event == api.events["walk"]
    assert (entry.subject.start_ms, entry.subject.end_ms) == (
        round((T0 + 1.0) * 1000),
        round((T0 + 3.0) * 1000),
    )


# -- clips -------------------------------------------------------------------------------


def test_event_clip_covers_the_event(api: Api) -> None:
    resp = api.client.get(f"/api/events/{api.events['person']}/clip.mp4")
    assert resp.status_code == 200, resp.text
    assert resp.headers["content-type"] == "video/mp4"
    duration, frames = _clip_duration(resp.content)
    assert duration == pytest.approx(2.0, abs=0.2)
    assert frames >= 2.0 * 25 - 1
    # an open event runs to the newest footage
    open_clip = api.client.get(f"/api/events/{api.events['open']}/clip.mp4")
    assert open_clip.status_code == 200
    assert _clip_duration(open_clip.content)[0] == pytest.approx(1.0, abs=0.2)
    person, opened = api.audited()
    for entry, key, served in ((person, "person", resp), (opened, "open", open_clip)):
        assert entry.action == "footage:clip:download"
        assert entry.actor.id == str(api.owner.id)
        assert entry.subject.event == api.events[key]
        # the range is what the clip really covers (its headers), widened to whole ms
        assert entry.subject.start_ms == int(float(served.headers["x-clip-start"]) * 1000)
        assert abs(entry.subject.end_ms - float(served.headers["x-clip-end"]) * 1000) <= 1


def test_range_clip_spans_segments_and_serves_ranges(api: Api) -> None:
    start, end = T0 + 2.0, T0 + 8.0
    spanned = [s for s in api.footage.segments if s.end > start and s.start < end]
    assert len(spanned) >= 3
    url = "/api/cameras/front/clip.mp4"
    full = api.client.get(url, params={"start": start, "end": "2023-11-14T23:00:03Z"})
    assert full.status_code == 200, full.text
    assert full.headers["accept-ranges"] == "bytes"
    assert float(full.headers["x-clip-duration"]) == pytest.approx(6.0, abs=0.2)
    duration, frames = _clip_duration(full.content)
    assert duration == pytest.approx(6.0, abs=0.2)
    assert abs(frames - 6.0 * 25) <= 2
    size = len(full.content)
    params = {"start": start, "end": end}
    head = api.client.get(url, params=params, headers={"Range": "bytes=0-1023"})
    assert head.status_code == 206
    assert head.headers["content-range"] == f"bytes 0-1023/{size}"
    assert head.content == full.content[:1024]
    tail = api.client.get(url, params=params, headers={"Range": "bytes=-500"})
    assert tail.status_code == 206
    assert tail.content == full.content[-500:]
    middle = api.client.get(url, params=params, headers={"Range": f"bytes={size // 2}-"})
    assert middle.content == full.content[size // 2 :]
    # the download is an entry; the player's three range requests are one playback view
    # (regression: each range request was logged as a separate download)
    entries = api.audited()
    assert [e.action for e in entries] == ["footage:clip:download", "footage:playback:view"]
    assert {(e.subject.camera, e.subject.event) for e in entries} == {("front", None)}
    lo_ms = int(float(full.headers["x-clip-start"]) * 1000)
    assert {e.subject.start_ms for e in entries} == {lo_ms}
    assert lo_ms >= int(start * 1000) - 1


def test_range_clip_problems(api: Api) -> None:
    url = "/api/cameras/front/clip.mp4"
    too_long = api.client.get(url, params={"start": T0, "end": T0 + MAX_CLIP_SECONDS + 1})
    assert "3600" in assert_problem(too_long, 422, "invalid-request")["detail"]
    assert_problem(
        api.client.get(url, params={"start": T0 + 5, "end": T0 + 2}), 422, "invalid-request"
    )
    assert_problem(api.client.get(url, params={"start": "soon", "end": T0}), 422, "invalid-request")
    assert_problem(api.client.get(url, params={"start": T0}), 422, "invalid-request")
    assert_problem(api.client.get(url, params={"start": T0 + 60, "end": T0 + 90}), 404, "not-found")
    assert_problem(
        api.client.get("/api/cameras/garage/clip.mp4", params={"start": T0, "end": T0 + 5}),
        404,
        "not-found",
    )
    assert api.audited() == []  # refused requests served nothing


# -- system ------------------------------------------------------------------------------


def test_health(api: Api) -> None:
    health = api.client.get("/api/health").json()
    assert health["status"] == "degraded"  # no recorder runs here: see the regressions
    assert health["cameras_configured"] == 2
    assert health["cameras_connected"] == 0
    assert health["media_bytes"] == sum(s.bytes for s in api.footage.segments)
    assert health["disk_free_bytes"] > 0
    assert health["disk_min_free_bytes"] == 5 * 1024**3


def test_problem_types_resolve_and_plain_http_errors(api: Api) -> None:
    body = assert_problem(api.client.get("/api/cameras/garage"), 404, "not-found")
    described = api.client.get(body["type"].replace("http://testserver", ""))
    assert described.status_code == 200
    assert described.json()["status"] == 404
    assert_problem(api.client.get("/api/problems/no-such-type"), 404, "not-found")
    assert_problem(api.client.get("/api/nowhere"), 404)
    wrong_method = api.client.post("/api/cameras")
    assert_problem(wrong_method, 405)
    assert "GET" in wrong_method.headers["allow"]


# -- regressions -------------------------------------------------------------------------


@pytest.mark.parametrize("tail", ["", "/clip.mp4", "/snapshot.jpg"])
def test_event_id_too_large_for_the_database_is_a_problem_not_an_overflow(
    api: Api, tail: str
) -> None:
    # 2**63 does not fit a signed 64-bit SQL integer: SQLite raised OverflowError (a 500).
    body = assert_problem(api.client.get(f"/api/events/{2**63}{tail}"), 422, "invalid-request")
    assert body["errors"][0]["loc"] == "path.event_id"
    for too_small in (0, -1):
        assert_problem(api.client.get(f"/api/events/{too_small}{tail}"), 422, "invalid-request")
    # In range for the API but beyond the events.id column (32-bit INTEGER on PostgreSQL,
    # where it failed as "integer out of range", a 503): no such event.
    for absent in (2**31, 2**63 - 1):
        body = assert_problem(api.client.get(f"/api/events/{absent}{tail}"), 404, "not-found")
        assert str(absent) in body["detail"]
    assert api.audited() == []


@pytest.mark.parametrize("far", ["1e12", "1e17", "253402300800", "1e308"])
def test_clip_times_past_year_9999_are_a_problem_naming_the_parameter(api: Api, far: str) -> None:
    # 1e12 failed formatting "year 33658 is out of range" (a 500); 1e17 an OSError 75.
    end = str(float(far) + 10)
    resp = api.client.get("/api/cameras/front/clip.mp4", params={"start": far, "end": end})
    body = assert_problem(resp, 422, "invalid-request")
    assert "start=" in body["detail"]
    assert "9999" in body["detail"]
    spans = api.client.get("/api/recordings", params={"since": T0, "until": far})
    assert "until=" in assert_problem(spans, 422, "invalid-request")["detail"]
    assert api.audited() == []


def test_unexpected_error_is_logged_once_and_concisely(
    index: Index, database_url: str, footage: Footage, caplog: pytest.LogCaptureFixture
) -> None:
    def broken_statuses() -> dict:
        raise RuntimeError("status source exploded")

    settings = Settings(data_dir=footage.data_dir, database_url=database_url)
    with AuditLog.open(database_url, settings.keys_dir) as audit:
        ctx = make_context(index, settings, audit, statuses=broken_statuses)
        secret, _ = ctx.accounts.create_token(add_user(ctx, "owner").id, "tests")
        app = create_app(ctx)
        # raise_server_exceptions=True: an app that re-raises to the server (which then logs
        # the traceback a second time) makes the client raise here.
        with (
            TestClient(
                app,
                client=LOOPBACK,
                raise_server_exceptions=True,
                headers={"Authorization": f"Bearer {secret}"},
            ) as c,
            caplog.at_level("ERROR"),
        ):
            resp = c.get("/api/cameras")
    body = assert_problem(resp, 500)
    assert "exploded" not in body["detail"]  # internals stay in the log
    errors = [r for r in caplog.records if r.levelname == "ERROR"]
    assert len(errors) == 1, [r.getMessage() for r in errors]
    (record,) = errors
    first_line = record.getMessage().splitlines()
    assert len(first_line) == 1
    assert "GET /api/cameras" in first_line[0]
    assert "RuntimeError: status source exploded" in first_line[0]
    text = caplog.text
    assert text.count("Traceback (most recent call last)") == 1
    assert "broken_statuses" in text  # where it went wrong is kept
    for framework in ("starlette", "anyio", "fastapi"):
        assert f"/{framework}/" not in text, framework
    assert len(text.splitlines()) < 40


def test_health_is_degraded_with_reasons_when_cameras_are_down_or_gaps_open(api: Api) -> None:
    resp = api.client.get("/api/health")
    assert resp.status_code == 200  # degraded still answers 200; a monitor reads `status`
    health = resp.json()
    assert health["status"] == "degraded"
    assert health["cameras_configured"] == 2
    assert health["cameras_enabled"] == 1  # porch is disabled
    assert health["cameras_connected"] == 0
    assert health["gaps_open"] == 2  # front and attic
    reasons = "\n".join(health["reasons"])
    assert "front" in reasons
    assert "not connected" in reasons
    assert "porch" not in reasons  # a disabled camera is not missed
    assert "open gap" in reasons
    assert "disk" not in reasons


def _connected(name: str) -> CameraStatus:
    now = time.time()
    return CameraStatus(
        name=name,
        state="connected",
        connected_since=now - 60,
        last_packet_at=now,
        fps_in=25.0,
        bitrate=1e6,
        decode_mode="keyframes",
        segments_written=6,
        gaps_open=0,
        last_error=None,
        next_retry_at=None,
    )


def _health_app(
    index: Index, settings: Settings, statuses: dict[str, CameraStatus], audit: AuditLog
) -> TestClient:
    ctx = make_context(index, settings, audit, statuses=lambda: statuses)
    users = ctx.accounts.users("home")
    owner = users[0] if users else add_user(ctx, "owner")
    return token_client(create_app(ctx), ctx, owner)


def test_health_is_ok_only_when_every_enabled_camera_is_connected(
    index: Index, database_url: str, tmp_path: Path
) -> None:
    settings = Settings(
        data_dir=tmp_path,
        database_url=database_url,
        cameras={
            "front": {"url": f"file:{FOOTAGE}"},
            "back": {"url": f"file:{FOOTAGE}"},
            "off": {"url": f"file:{FOOTAGE}", "enabled": False},
        },
    )
    with AuditLog.open(database_url, settings.keys_dir) as audit:
        statuses = {n: _connected(n) for n in ("front", "back")}
        both = _health_app(index, settings, statuses, audit)
        health = both.get("/api/health").json()
        assert (health["status"], health["reasons"]) == ("ok", [])
        assert health["cameras_connected"] == 2
        one = _health_app(index, settings, {"front": _connected("front")}, audit)
        health = one.get("/api/health").json()
        assert health["status"] == "degraded"
        assert health["cameras_connected"] == 1
        assert any("back" in r for r in health["reasons"])


def test_health_is_degraded_on_low_disk_and_after_a_recent_gap(
    index: Index, database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cams = {"front": {"url": f"file:{FOOTAGE}"}}
    # a 100 GB disk with 1 GB free: under the default 5 GiB floor (20 % cap: 20 GB)
    gb = 10**9
    monkeypatch.setattr(
        "homewarden.services.queries.shutil.disk_usage",
        lambda _path: shutil._ntuple_diskusage(100 * gb, 99 * gb, 1 * gb),
    )
    low = Settings(data_dir=tmp_path, database_url=database_url, cameras=cams)
    with AuditLog.open(database_url, low.keys_dir) as audit:
        client = _health_app(index, low, {"front": _connected("front")}, audit)
        health = client.get("/api/health").json()
        assert health["status"] == "degraded"
        assert any("disk" in r for r in health["reasons"]), health["reasons"]
        # a disk-full outage that just ended: the footage is lost, say so for a while
        monkeypatch.undo()
        fine = Settings(data_dir=tmp_path, database_url=database_url, cameras=cams)
        gap = index.open_gap("front", time.time() - 40, "storage", "disk full")
        index.close_gap(gap, time.time() - 5)
        client = _health_app(index, fine, {"front": _connected("front")}, audit)
        health = client.get("/api/health").json()
        assert health["status"] == "degraded"
        assert health["gaps_open"] == 0
        assert any("gap" in r and "front" in r for r in health["reasons"]), health["reasons"]


def test_cameras_show_open_and_total_gaps(api: Api) -> None:
    cams = {c["name"]: c for c in api.client.get("/api/cameras").json()}
    assert (cams["front"]["gaps_open"], cams["front"]["gaps_total"]) == (1, 2)
    assert (cams["attic"]["gaps_open"], cams["attic"]["gaps_total"]) == (1, 1)
    assert (cams["porch"]["gaps_open"], cams["porch"]["gaps_total"]) == (0, 0)


@pytest.mark.parametrize("bad_range", ["items=0-5", "bytes=abc", "bytes=5-2", "bytes=", "0-5"])
def test_malformed_range_header_is_ignored_and_the_whole_clip_served(
    api: Api, bad_range: str
) -> None:
    # RFC 9110 section 14.2: a server MAY ignore an invalid Range (and MUST ignore an
    # unknown range unit); Starlette answered a plain-text 400.
    url = "/api/cameras/front/clip.mp4"
    params = {"start": T0 + 2.0, "end": T0 + 4.0}
    full = api.client.get(url, params=params)
    assert full.status_code == 200
    resp = api.client.get(url, params=params, headers={"Range": bad_range})
    assert resp.status_code == 200, resp.text
    assert resp.headers["content-type"] == "video/mp4"
    assert "content-range" not in resp.headers
    assert resp.content == full.content


def test_unsatisfiable_range_is_a_416_problem_with_content_range(api: Api) -> None:
    url = "/api/cameras/front/clip.mp4"
    params = {"start": T0 + 2.0, "end": T0 + 4.0}
    size = len(api.client.get(url, params=params).content)
    resp = api.client.get(url, params=params, headers={"Range": f"bytes={size + 10}-"})
    body = assert_problem(resp, 416)
    assert resp.headers["content-range"] == f"bytes */{size}"
    assert str(size) in body["detail"]
    ok = api.client.get(url, params=params, headers={"Range": "bytes=0-9"})
    assert ok.status_code == 206


def test_tampered_audit_log_is_a_log_tampered_problem_and_serves_nothing(
    api: Api, database_url: str
) -> None:
    from sqlalchemy import create_engine, text

    before = api.audit.size()  # the owner's account and token entries
    with AuditLog.open(database_url, api.footage.data_dir / "other-keys") as other:
        for i in range(3):  # another process appends; its tree nodes are then deleted
            other.append(
                AuditTag.FOOTAGE_CLIP_DOWNLOAD, OPERATOR, "api", camera="front", start=i, end=i + 1
            )
    engine = create_engine(database_url)
    try:
        with engine.begin() as conn:
            conn.execute(text("DELETE FROM audit_nodes"))
    finally:
        engine.dispose()
    resp = api.client.get("/api/cameras/front/clip.mp4", params={"start": T0, "end": T0 + 3})
    body = assert_problem(resp, 500, "log-tampered")
    assert body["title"] == "Audit log tampered"
    assert "audit verify" in body["detail"]
    assert body["bad_range"] == [0, before + 3]
    assert resp.headers["content-type"].startswith("application/problem+json")
    described = api.client.get("/api/problems/log-tampered").json()
    assert (described["status"], described["title"]) == (500, "Audit log tampered")


def test_footage_blocked_by_the_audit_log_says_why(api: Api, database_url: str) -> None:
    from sqlalchemy import create_engine, text

    engine = create_engine(database_url)
    try:
        with engine.begin() as conn:
            conn.execute(text("ALTER TABLE audit_state RENAME TO audit_state_gone"))
    finally:
        engine.dispose()
    resp = api.client.get("/api/cameras/front/clip.mp4", params={"start": T0, "end": T0 + 3})
    body = assert_problem(resp, 503, "audit-unavailable")
    assert "not served" in body["detail"]
    assert "audit" in body["title"].lower()
    snap = api.client.get(f"/api/events/{api.events['walk']}/snapshot.jpg")
    assert_problem(snap, 503, "audit-unavailable")
    described = api.client.get("/api/problems/audit-unavailable").json()
    assert described["status"] == 503


def test_every_error_type_uri_resolves(api: Api) -> None:
    # The type URI of a problem must dereference (RFC 9457 section 3.1.1); subclasses not
    # listed in the status table (source-unreachable, log-tampered, ...) answered 404.
    def subclasses(cls: type[HomeWardenError]) -> list[type[HomeWardenError]]:
        return [cls, *(s for sub in cls.__subclasses__() for s in subclasses(sub))]

    codes = {cls.code for cls in subclasses(HomeWardenError)}
    assert {"log-tampered", "invalid-signature", "source-unreachable"} <= codes
    for code in sorted(codes):
        resp = api.client.get(f"/api/problems/{code}")
        assert resp.status_code == 200, code
        assert resp.json()["code"] == code


def test_small_disk_kept_in_bounds_by_retention_is_not_degraded(
    index: Index, database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Regression: health compared free space with the raw min_free_bytes (5 GiB), so a 4 GB
    # card with 1.5 GB free read "degraded" forever although retention's floor is capped at
    # 20 % of the disk (0.8 GB) and keeps it in bounds.
    gb = 10**9
    monkeypatch.setattr(
        "homewarden.services.queries.shutil.disk_usage",
        lambda _path: shutil._ntuple_diskusage(4 * gb, int(2.5 * gb), int(1.5 * gb)),
    )
    cams = {"front": {"url": f"file:{FOOTAGE}"}}
    settings = Settings(data_dir=tmp_path, database_url=database_url, cameras=cams)
    with AuditLog.open(database_url, settings.keys_dir) as audit:
        client = _health_app(index, settings, {"front": _connected("front")}, audit)
        health = client.get("/api/health").json()
    assert not any("disk" in r for r in health["reasons"]), health["reasons"]
    assert health["disk_min_free_bytes"] == int(4 * gb * 0.2)
