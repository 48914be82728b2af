"""Camera management in the web app (JSON API and pages) over real services on SQLite and
PostgreSQL: owners only, no crossing households, CSRF, validation answered as 422 problems
(pages: 400 with the reason), the canvas editor page under the CSP, and a camera's password
never sent back."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from fastapi import FastAPI

from homewarden.config import Settings
from homewarden.domain.permissions import Role
from homewarden.services.accounts import AccountService
from homewarden.services.audit import AuditLog
from homewarden.services.cameras import CameraAdmin
from homewarden.services.queries import Queries
from homewarden.services.runtime import AppContext
from homewarden.store.index import Index
from homewarden.web.deps import CSRF_HEADER
from homewarden.web.pages import CONTENT_SECURITY_POLICY
from tests.web.helpers import Clock, TestClient, add_user, build, client, login, token_client
from tests.web.test_pages import Html

SECRET = "s3cret-pw"
PORCH_URL = f"rtsp://admin:{SECRET}@192.0.2.10:554/stream1"


@dataclass
class Site:
    ctx: AppContext
    app: FastAPI
    admin: CameraAdmin
    owner: TestClient  # olive, owner of "home", API token
    member: TestClient  # mia, member of "home" granted "front", API token
    stranger: TestClient  # bob, owner of "other", API token
    footage: Path


@pytest.fixture
def site(index: Index, database_url: str, tmp_path: Path, vtest_h264: Path) -> Iterator[Site]:
    settings = Settings(
        data_dir=tmp_path,
        database_url=database_url,
        cameras={
            "front": {"url": f"file:{vtest_h264}"},
            "porch": {"url": PORCH_URL},
            "shed": {"url": "rtsp://192.0.2.11/s", "household": "other"},
        },
    )
    clock = Clock()
    with AuditLog.open(database_url, settings.keys_dir, clock=clock) as audit:
        admin = CameraAdmin(index, audit, settings, clock=clock)
        admin.load()
        accounts = AccountService(index, audit, admin.current, clock=clock)
        accounts.ensure_households()
        queries = Queries(index, admin.current, clock=clock, audit=audit)
        ctx = AppContext(
            settings=settings,
            index=index,
            audit=audit,
            queries=queries,
            accounts=accounts,
            clock=clock,
            public_url="http://testserver",
            cameras=admin,
        )
        app = build(ctx)
        olive = add_user(ctx, "olive")
        mia = add_user(ctx, "mia", Role.MEMBER, cameras=("front",))
        bob = add_user(ctx, "bob", household="other")
        yield Site(
            ctx,
            app,
            admin,
            token_client(app, ctx, olive),
            token_client(app, ctx, mia),
            token_client(app, ctx, bob),
            vtest_h264,
        )


def test_owner_reads_adds_edits_and_deletes_cameras(site: Site) -> None:
    got = site.owner.get("/api/cameras/porch/settings")
    assert got.status_code == 200
    body = got.json()
    assert body["settings"]["url"] == "rtsp://admin:***@192.0.2.10:554/stream1"
    assert (body["origin"], body["household"], body["deletable"]) == ("config", "home", False)
    put = site.owner.put(
        "/api/cameras/yard/settings",
        json={"url": f"file:{site.footage}", "zones": {"gate": [[0, 0], [0.5, 0], [0.5, 0.5]]}},
    )
    assert put.status_code == 200, put.text
    assert put.json()["origin"] == "app"
    # Every reader sees it at once: the camera list, and a member grant can name it.
    names = [c["name"] for c in site.owner.get("/api/cameras").json()]
    assert "yard" in names
    off = site.owner.put("/api/cameras/yard/settings", json={"enabled": False})
    assert off.json()["settings"]["enabled"] is False
    assert off.json()["settings"]["zones"] == {"gate": [[0, 0], [0.5, 0], [0.5, 0.5]]}
    assert site.owner.get("/api/cameras/yard").json()["state"] == "disabled"
    assert site.owner.delete("/api/cameras/yard/settings").status_code == 204
    assert site.owner.get("/api/cameras/yard/settings").status_code == 404
    refused = site.owner.delete("/api/cameras/front/settings")
    assert refused.status_code == 422
    assert "config file" in refused.json()["detail"]


def test_members_are_forbidden_and_other_households_see_nothing(site: Site) -> None:
    for method, path, kwargs in (
        ("GET", "/api/cameras/front/settings", {}),
        ("PUT", "/api/cameras/front/settings", {"json": {"enabled": False}}),
        ("DELETE", "/api/cameras/front/settings", {}),
        ("POST", "/api/cameras/test-connection", {"json": {"url": "file:/x.mp4"}}),
    ):
        assert site.member.request(method, path, **kwargs).status_code == 403, path
    for method, path, kwargs in (
        ("GET", "/api/cameras/front/settings", {}),
        ("PUT", "/api/cameras/front/settings", {"json": {"enabled": False}}),
        ("DELETE", "/api/cameras/front/settings", {}),
        (
            "POST",
            "/api/cameras/test-connection",
            {"json": {"url": "rtsp://admin:***@192.0.2.10:554/stream1", "camera": "porch"}},
        ),
    ):
        resp = site.stranger.request(method, path, **kwargs)
        assert resp.status_code == 404, (path, resp.text)
        assert resp.headers["content-type"].startswith("application/problem+json")
    assert site.admin.current().cameras["front"].enabled
    assert [c["name"] for c in site.stranger.get("/api/cameras").json()] == ["shed"]
    assert site.stranger.get("/settings/cameras/front").status_code == 404
    assert site.member.get("/settings/cameras/front").status_code == 403
    page = site.member.get("/settings/cameras")  # members see the list, read-only
    assert page.status_code == 200
    assert "camera-add" not in page.text
    assert "camera-switch" not in page.text


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        (
            {"url": "http://192.0.2.10/video"},
            "camera url must start with rtsp://, rtsps:// or file:",
        ),
        (
            {"url": "file:/x", "motion": {"masks": [[[0.1, 0.1], [0.9, 0.9]]]}},
            "motion.masks.0: a polygon needs at least 3 points",
        ),
        (
            {"url": "file:/x", "zones": {"door": [[0, 0], [1, 0], [1, 1.2]]}},
            "zones.door: polygon point (1.0, 1.2) is outside normalised 0..1",
        ),
        ({"url": "file:/x", "zones": {"door": [[0, 0], [0.5, 0.5], [1, 1]]}}, "zero area"),
        ({"url": 5}, "url: must be a string"),
    ],
)
def test_invalid_settings_are_422_with_the_field_and_reason(
    site: Site, body: dict[str, object], needle: str
) -> None:
    resp = site.owner.put("/api/cameras/new/settings", json=body)
    assert resp.status_code == 422, resp.text
    assert needle in resp.json()["detail"]
    assert "new" not in site.admin.current().cameras


def test_test_connection_api_opens_real_footage(site: Site) -> None:
    ok = site.owner.post("/api/cameras/test-connection", json={"url": f"file:{site.footage}"})
    assert ok.status_code == 200, ok.text
    assert ok.json() | {"seconds": 0} == ok.json() | {
        "ok": True,
        "problem": None,
        "codec": "h264",
        "width": 768,
        "height": 576,
        "seconds": 0,
    }
    missing = site.owner.post("/api/cameras/test-connection", json={"url": "file:/no/such.mp4"})
    assert missing.json()["ok"] is False
    assert missing.json()["problem"] == "unreachable"
    bad = site.owner.post("/api/cameras/test-connection", json={"url": "ftp://192.0.2.1/"})
    assert bad.status_code == 422
    assert "camera url must start with" in bad.json()["detail"]
    # The stored password of one's own camera is used, and never shown.
    masked = site.owner.post(
        "/api/cameras/test-connection",
        json={"url": "rtsp://admin:***@127.0.0.1:9/stream1", "camera": "porch"},
    )
    assert masked.status_code == 422  # another host: the stored password is not sent there
    assert SECRET not in masked.text


def test_csrf_is_required_from_a_browser_session(site: Site) -> None:
    c = client(site.app)
    token = login(c, "olive")["csrf_token"]
    assert c.put("/api/cameras/porch/settings", json={"enabled": False}).status_code == 403
    assert c.delete("/api/cameras/porch/settings").status_code == 403
    assert c.post("/api/cameras/test-connection", json={"url": "file:/x"}).status_code == 403
    assert site.admin.current().cameras["porch"].enabled
    ok = c.put("/api/cameras/porch/settings", json={"enabled": False}, headers={CSRF_HEADER: token})
    assert ok.status_code == 200
    assert not site.admin.current().cameras["porch"].enabled
    # Forms too: without the csrf_token field the page refuses.
    refused = c.post("/settings/cameras", data={"name": "x1", "url": "file:/x"})
    assert refused.status_code == 403
    assert "x1" not in site.admin.current().cameras
    added = c.post(
        "/settings/cameras",
        data={"name": "x1", "url": f"file:{site.footage}", "csrf_token": token},
        follow_redirects=False,
    )
    assert added.status_code == 303
    assert "x1" in site.admin.current().cameras


def test_password_is_never_echoed(site: Site) -> None:
    c = client(site.app)
    token = login(c, "olive")["csrf_token"]
    texts = [
        site.owner.get("/api/cameras/porch/settings").text,
        site.owner.put("/api/cameras/porch/settings", json={"enabled": True}).text,
        site.owner.get("/api/cameras/porch").text,
        c.get("/settings/cameras").text,
        c.get("/settings/cameras/porch").text,
    ]
    assert all(SECRET not in t for t in texts)
    editor = Html.of(texts[-1])
    (url_input,) = editor.all("input", data_testid="camera-url-input")
    assert url_input["value"] == "rtsp://admin:***@192.0.2.10:554/stream1"
    # Saving the form with the masked URL keeps the stored password.
    saved = c.post(
        "/settings/cameras/porch",
        data={
            "url": url_input["value"],
            "transport": "udp",
            "continuous_days": "2",
            "event_days": "14",
            "csrf_token": token,
        },
        follow_redirects=False,
    )
    assert saved.status_code == 303, saved.text
    porch = site.admin.current().cameras["porch"]
    assert porch.url == PORCH_URL
    assert (porch.rtsp_transport, porch.retention.continuous_days, porch.retention.event_days) == (
        "udp",
        2,
        14,
    )
    assert SECRET not in c.get(saved.headers["location"]).text


def test_settings_pages_switch_test_and_draw(site: Site) -> None:
    c = client(site.app)
    token = login(c, "olive")["csrf_token"]
    page = c.get("/settings/cameras")
    assert page.status_code == 200
    assert page.headers["content-security-policy"] == CONTENT_SECURITY_POLICY
    html = Html.of(page.text)
    assert [r["data-camera"] for r in html.all("tr", data_testid="camera-row")] == [
        "front",
        "porch",
    ]
    # The switch turns a camera off and on.
    off = c.post(
        "/settings/cameras/front/enabled",
        data={"enabled": "0", "csrf_token": token},
        follow_redirects=False,
    )
    assert off.status_code == 303
    assert not site.admin.current().cameras["front"].enabled
    c.post("/settings/cameras/front/enabled", data={"enabled": "1", "csrf_token": token})
    assert site.admin.current().cameras["front"].enabled
    # Test connection from the page: the result is shown.
    tested = c.post(
        "/settings/connection-test", data={"url": f"file:{site.footage}", "csrf_token": token}
    )
    assert tested.status_code == 200
    (result,) = Html.of(tested.text).all("p", data_testid="test-result")
    assert result["data-ok"] == "true"
    assert "h264 768x576" in tested.text
    bad = c.post("/settings/connection-test", data={"url": "nonsense", "csrf_token": token})
    assert bad.status_code == 400
    assert "camera url must start with" in bad.text
    # The editor: snapshot, canvas, the static script, no inline script.
    editor = c.get("/settings/cameras/front")
    assert editor.status_code == 200
    assert '<script src="/static/camera_editor.js" defer></script>' in editor.text
    assert "<script>" not in editor.text
    assert " style=" not in editor.text
    assert 'src="/api/cameras/front/latest.jpg"' in editor.text
    Html.of(editor.text).all("canvas", data_testid="area-canvas")[0]
    js = c.get("/static/camera_editor.js")
    assert js.status_code == 200
    assert js.headers["content-type"].startswith("text/javascript")
    # Masks and zones drawn on the canvas are posted as JSON fields.
    masks = [[[0.7, 0.0], [1.0, 0.0], [1.0, 0.2], [0.7, 0.2]]]
    zones = {"porch": [[0.0, 0.6], [0.4, 0.6], [0.4, 1.0], [0.0, 1.0]]}
    saved = c.post(
        "/settings/cameras/front/areas",
        data={"masks": json.dumps(masks), "zones": json.dumps(zones), "csrf_token": token},
        follow_redirects=False,
    )
    assert saved.status_code == 303
    front = site.admin.current().cameras["front"]
    assert front.motion.masks == [[tuple(p) for p in masks[0]]]
    assert {k: [tuple(p) for p in v] for k, v in front.zones.items()} == {
        "porch": [tuple(p) for p in zones["porch"]]
    }
    for bad_masks, bad_zones, needle in (
        ("[[[0.1, 0.1], [0.2, 0.2]]]", "{}", "a polygon needs at least 3 points"),
        ("[]", '{"a b": [[0,0],[1,0],[1,1]]}', "zone name"),
        ("[]", '{"z": [[0,0],[2,0],[1,1]]}', "outside normalised 0..1"),
        ("not json", "{}", "must be JSON"),
    ):
        refused = c.post(
            "/settings/cameras/front/areas",
            data={"masks": bad_masks, "zones": bad_zones, "csrf_token": token},
        )
        assert refused.status_code == 400, bad_masks
        assert needle in refused.text
    assert site.admin.current().cameras["front"] == front
