"""The live view WebSocket and the latest-snapshot route, on the real app with accounts.

The camera's segment in progress is a ``.part`` file holding the first fragments of a real
recorded segment (written just now, so it counts as live).
"""

from __future__ import annotations

import io
import itertools
import json
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import av
import cv2
import numpy as np
import pytest
from fastapi import FastAPI
from fastapi.routing import APIWebSocketRoute
from starlette.websockets import WebSocketDisconnect

from homewarden.config import Settings
from homewarden.domain.audit import AuditEntry, AuditTag
from homewarden.domain.permissions import Permission, Role
from homewarden.media import fmp4
from homewarden.services.audit import AuditLog
from homewarden.services.recorder import segment_relpath
from homewarden.services.runtime import AppContext
from homewarden.store.accounts_store import UserRecord
from homewarden.store.index import Index
from homewarden.web.deps import SESSION_COOKIE, declared_permissions, undeclared_routes
from homewarden.web.live import (
    CLOSE_FORBIDDEN,
    CLOSE_NOT_FOUND,
    CLOSE_UNAUTHENTICATED,
    LIVE_PATH,
)
from tests.media.recorded import cut_segments
from tests.web.helpers import PASSWORD, add_user, build, client, make_context

with warnings.catch_warnings():
    warnings.filterwarnings("ignore", message=".*httpx2.*")
    from fastapi.testclient import TestClient

SAME_ORIGIN = "http://testserver"


@dataclass
class Live:
    app: FastAPI
    ctx: AppContext
    audit: AuditLog
    owner: UserRecord
    init: bytes
    fragment: bytes

    def session(self, username: str) -> str:
        return self.ctx.accounts.login(username, PASSWORD, "127.0.0.1").session_secret

    def audited(self, tag: AuditTag) -> list[AuditEntry]:
        entries = [self.audit.entry(i) for i in range(self.audit.size())]
        return [e for e in entries if e.action == tag]


@pytest.fixture(scope="module")
def segment(vtest_h264: Path, tmp_path_factory: pytest.TempPathFactory) -> bytes:
    parts = cut_segments(vtest_h264, tmp_path_factory.mktemp("seg"), 10.0, 1_700_000_000.0)
    return parts[0][0].read_bytes()


@pytest.fixture
def live(index: Index, database_url: str, tmp_path: Path, segment: bytes) -> Iterator[Live]:
    settings = Settings(
        data_dir=tmp_path / "data",
        database_url=database_url,
        cameras={
            "front": {"url": "rtsp://127.0.0.1:9/front"},
            "barn": {"url": "rtsp://127.0.0.1:9/barn", "household": "farm"},
        },
        # plaintext storage: these tests are about the live socket and its refusals
        # (sealed: tests/web/test_live_sealed.py)
        storage={"sealed": False},
    )
    boxes, _ = fmp4.complete_boxes(segment)
    pairs = [(a, b) for a, b in itertools.pairwise(boxes) if a.type == "moof"]
    init = segment[: boxes[1].end]
    moof, mdat = pairs[1]
    start = time.time() - 4.0
    part = settings.media_dir / (segment_relpath("front", start) + ".part")
    part.parent.mkdir(parents=True)
    part.write_bytes(segment[: mdat.end])  # two complete fragments so far
    with AuditLog.open(database_url, settings.keys_dir) as audit:
        ctx = make_context(index, settings, audit)
        owner = add_user(ctx, "owner")
        add_user(ctx, "guest", Role.MEMBER)
        add_user(ctx, "granted", Role.MEMBER, cameras=("front",))
        yield Live(build(ctx), ctx, audit, owner, init, segment[moof.offset : mdat.end])


def _path(camera: str = "front") -> str:
    return LIVE_PATH.replace("{name}", camera)


def _refused(
    c: TestClient, headers: dict[str, str], camera: str = "front", *, accepted: bool = True
) -> int:
    """The close code of a refused socket; ``accepted``: whether the refusal came after the
    handshake (so that a real server passes the code on) or before it (cross-site)."""
    opened = False
    with (  # noqa: PT012
        pytest.raises(WebSocketDisconnect) as err,
        c.websocket_connect(_path(camera), headers=headers) as ws,
    ):
        opened = True
        ws.receive_text()
    assert opened is accepted, headers
    return err.value.code


def _watch(c: TestClient, headers: dict[str, str]) -> tuple[dict[str, Any], bytes, bytes]:
    with c.websocket_connect(_path(), headers=headers) as ws:
        first = json.loads(ws.receive_text())
        init = ws.receive_bytes()
        fragment = ws.receive_bytes()
    return first, init, fragment


def test_the_websocket_route_declares_its_permission(live: Live) -> None:
    assert undeclared_routes(live.app) == []
    (route,) = [r for r in live.app.routes if isinstance(r, APIWebSocketRoute)]
    assert route.path == LIVE_PATH
    assert declared_permissions(route) == {Permission.FOOTAGE_LIVE_VIEW}


def test_owner_watches_codec_init_and_newest_fragment(live: Live) -> None:
    c = client(live.app)
    cookie = {"cookie": f"{SESSION_COOKIE}={live.session('owner')}", "origin": SAME_ORIGIN}
    first, init, fragment = _watch(c, cookie)
    assert first == {"type": "init", "codec": "avc1.64001f", "camera": "front"}
    assert init == live.init
    assert fragment == live.fragment  # the newest complete fragment, not the first
    with av.open(io.BytesIO(init + fragment), mode="r") as media:
        frames = list(media.decode(video=0))
    assert len(frames) == 20
    assert frames[0].key_frame
    (entry,) = live.audited(AuditTag.FOOTAGE_LIVE_VIEW)
    assert entry.actor.id == str(live.owner.id)
    assert entry.subject.camera == "front"
    assert entry.subject.household == live.ctx.settings.household
    assert entry.reason == "live view; owner"
    # an API token needs no Origin (it is no ambient credential)
    secret, _ = live.ctx.accounts.create_token(live.owner.id, "script")
    assert _watch(c, {"authorization": f"Bearer {secret}"})[1] == live.init
    assert len(live.audited(AuditTag.FOOTAGE_LIVE_VIEW)) == 2


def test_refused_sockets(live: Live) -> None:
    c = client(live.app)
    owner = f"{SESSION_COOKIE}={live.session('owner')}"
    assert _refused(c, {"origin": SAME_ORIGIN}) == CLOSE_UNAUTHENTICATED
    assert _refused(c, {"cookie": f"{SESSION_COOKIE}=forged", "origin": SAME_ORIGIN}) == 4401
    # Cross-Site WebSocket Hijacking: the browser sends the cookie; the Origin gives it away
    # (refused before the handshake completes: another site's page learns nothing more)
    evil = "https://evil.example"
    assert _refused(c, {"cookie": owner, "origin": evil}, accepted=False) == CLOSE_FORBIDDEN
    foreign = {"cookie": owner, "origin": "http://testserver.evil"}
    assert _refused(c, foreign, accepted=False) == CLOSE_FORBIDDEN
    assert _refused(c, {"cookie": owner}, accepted=False) == CLOSE_FORBIDDEN
    assert _refused(c, {"origin": evil}, accepted=False) == CLOSE_FORBIDDEN  # no cookie either
    # camera access: a member without a grant; another household's camera; no such camera
    guest = {"cookie": f"{SESSION_COOKIE}={live.session('guest')}", "origin": SAME_ORIGIN}
    assert _refused(c, guest) == CLOSE_FORBIDDEN
    same = {"cookie": owner, "origin": SAME_ORIGIN}
    assert _refused(c, same, "barn") == CLOSE_NOT_FOUND
    assert _refused(c, same, "nope") == CLOSE_NOT_FOUND
    # a revoked token
    secret, token = live.ctx.accounts.create_token(live.owner.id, "script")
    live.ctx.accounts.revoke_token(live.owner.id, token.id)
    assert _refused(c, {"authorization": f"Bearer {secret}"}) == CLOSE_UNAUTHENTICATED
    assert live.audited(AuditTag.FOOTAGE_LIVE_VIEW) == []  # nothing was watched
    # a member the owner granted the camera may watch
    granted = {"cookie": f"{SESSION_COOKIE}={live.session('granted')}", "origin": SAME_ORIGIN}
    assert _watch(c, granted)[2] == live.fragment
    (entry,) = live.audited(AuditTag.FOOTAGE_LIVE_VIEW)
    assert entry.reason == "live view; member_grant"


def test_latest_snapshot(live: Live) -> None:
    c = client(live.app)
    c.cookies.set(SESSION_COOKIE, live.session("owner"))
    resp = c.get("/api/cameras/front/latest.jpg")
    assert resp.status_code == 200, resp.text
    assert resp.headers["content-type"] == "image/jpeg"
    assert resp.headers["cache-control"] == "no-store"
    image = cv2.imdecode(np.frombuffer(resp.content, np.uint8), cv2.IMREAD_COLOR)
    assert image is not None
    assert image.shape == (576, 768, 3)
    frame_time = float(resp.headers["x-frame-time"])
    assert c.get("/api/cameras/front/latest.jpg").status_code == 200
    (entry,) = live.audited(AuditTag.FOOTAGE_SNAPSHOT_VIEW)  # once a minute per viewer
    assert entry.reason == "live fallback; owner"
    assert entry.subject.start_ms == int(frame_time * 1000)

    anonymous = client(live.app)
    assert anonymous.get("/api/cameras/front/latest.jpg").status_code == 401
    guest = client(live.app)
    guest.cookies.set(SESSION_COOKIE, live.session("guest"))
    assert guest.get("/api/cameras/front/latest.jpg").status_code == 403
    assert c.get("/api/cameras/barn/latest.jpg").status_code == 404
    assert len(live.audited(AuditTag.FOOTAGE_SNAPSHOT_VIEW)) == 1
