"""The live view and the latest frame under sealed footage (``storage.sealed``, issue 6), on
the real app with household keys, on SQLite and PostgreSQL.

The segment being recorded is a plaintext ``.part`` (the recorder seals it when it closes),
so reading it needs no key: before this fix any caller with ``footage:live:view`` watched it
with no keys at all (an API token, a session whose keys are locked). Now the viewer's session
must hold the household's current key version unlocked: no session keys is 4423 / 401
``keys-locked``, a person without the current version 4403 / 403 ``key-unavailable``; an
open view whose keys go away is ended at its next recheck. With sealing off nothing changes
(``tests/web/test_live.py``: a token watches there).
"""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import json
import socket
import threading
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import uvicorn
from fastapi import FastAPI
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import connect

from homewarden.config import Settings
from homewarden.crypto.household_keys import ARGON2ID_FLOOR
from homewarden.domain.audit import AuditTag
from homewarden.domain.permissions import Role
from homewarden.media import fmp4
from homewarden.services.audit import AuditLog
from homewarden.services.household_keys import KeyRing, attach
from homewarden.services.recorder import segment_relpath
from homewarden.services.runtime import AppContext
from homewarden.store.index import Index
from homewarden.web import live as web_live
from homewarden.web.app import create_app
from homewarden.web.deps import SESSION_COOKIE
from homewarden.web.live import (
    CLOSE_FORBIDDEN,
    CLOSE_KEYS_LOCKED,
    CLOSE_NOT_FOUND,
    CLOSE_UNAUTHENTICATED,
    LIVE_PATH,
)
from tests.media.recorded import cut_segments
from tests.web.helpers import PASSWORD, add_user, client, make_context

with warnings.catch_warnings():
    warnings.filterwarnings("ignore", message=".*httpx2.*")
    from fastapi.testclient import TestClient
    from starlette.websockets import WebSocketDisconnect

SAME_ORIGIN = "http://testserver"
PATH = LIVE_PATH.replace("{name}", "front")
SNAPSHOT = "/api/cameras/front/latest.jpg"


@dataclass
class Site:
    app: FastAPI
    ctx: AppContext
    keys: KeyRing
    part: Path
    init: bytes
    newest: bytes  # the newest complete fragment in the .part
    later: bytes  # a further fragment, appended by a test

    def login(self, username: str) -> str:
        return self.ctx.accounts.login(username, PASSWORD, "127.0.0.1").session_secret

    def cookie(self, secret: str) -> dict[str, str]:
        return {"cookie": f"{SESSION_COOKIE}={secret}", "origin": SAME_ORIGIN}

    def token(self, username: str) -> dict[str, str]:
        user = self.ctx.accounts.user_by_name(username)
        secret, _ = self.ctx.accounts.create_token(user.id, "script")
        return {"authorization": f"Bearer {secret}"}

    def views(self) -> int:
        audit = self.ctx.audit
        tags = [audit.entry(i).action for i in range(audit.size())]
        return tags.count(AuditTag.FOOTAGE_LIVE_VIEW)


@pytest.fixture(scope="module")
def segment(vtest_h264: Path, tmp_path_factory: pytest.TempPathFactory) -> bytes:
    parts = cut_segments(vtest_h264, tmp_path_factory.mktemp("seg"), 10.0, 1_700_000_000.0)
    return parts[0][0].read_bytes()


@pytest.fixture
def site(index: Index, database_url: str, tmp_path: Path, segment: bytes) -> Iterator[Site]:
    """Household ``home`` with footage sealed, camera ``front`` recording (a fresh ``.part``
    with two complete fragments), owner ``owner`` and member ``mia`` granted ``front``."""
    settings = Settings(
        data_dir=tmp_path / "data",
        database_url=database_url,
        storage={"sealed": True},
        cameras={"front": {"url": "rtsp://127.0.0.1:9/front"}},
    )
    boxes, _ = fmp4.complete_boxes(segment)
    pairs = [(a, b) for a, b in itertools.pairwise(boxes) if a.type == "moof"]
    assert len(pairs) >= 3
    part = settings.media_dir / (segment_relpath("front", time.time() - 4.0) + ".part")
    part.parent.mkdir(parents=True)
    part.write_bytes(segment[: pairs[1][1].end])
    with AuditLog.open(database_url, settings.keys_dir) as audit:
        ctx = make_context(index, settings, audit)
        keys = attach(ctx.accounts, index, audit, settings.keys_dir, params=ARGON2ID_FLOOR)
        ctx.accounts.ensure_households()
        ctx = dataclasses.replace(ctx, keys=keys)
        add_user(ctx, "owner")
        add_user(ctx, "mia", Role.MEMBER, cameras=("front",))
        yield Site(
            create_app(ctx),
            ctx,
            keys,
            part,
            segment[: boxes[1].end],
            segment[pairs[1][0].offset : pairs[1][1].end],
            segment[pairs[2][0].offset : pairs[2][1].end],
        )


def _refused(c: TestClient, headers: dict[str, str]) -> tuple[int, str]:
    with (
        pytest.raises(WebSocketDisconnect) as err,
        c.websocket_connect(PATH, headers=headers) as ws,
    ):
        ws.receive_text()  # accepted, then closed with the code
    return err.value.code, str(err.value.reason)


def _problem(resp: httpx.Response, status: int, code: str) -> str:
    assert resp.status_code == status, (resp.status_code, resp.text[:300])
    body = resp.json()
    assert body["type"].endswith(f"/api/problems/{code}"), body
    return str(body["detail"])


def test_an_unlocked_owner_watches_and_sees_the_latest_frame(site: Site) -> None:
    c = client(site.app)
    secret = site.login("owner")
    with c.websocket_connect(PATH, headers=site.cookie(secret)) as ws:
        assert json.loads(ws.receive_text())["type"] == "init"
        assert ws.receive_bytes() == site.init
        assert ws.receive_bytes() == site.newest
    assert site.views() == 1
    c.cookies.set(SESSION_COOKIE, secret)
    latest = c.get(SNAPSHOT)
    assert latest.status_code == 200, latest.text[:300]
    assert latest.content.startswith(b"\xff\xd8\xff")


def test_a_token_no_longer_watches_sealed_footage_live(site: Site) -> None:
    c = client(site.app)
    code, reason = _refused(c, site.token("owner"))
    assert code == CLOSE_KEYS_LOCKED
    assert "sign in again to unlock the household keys" in reason
    bearer = client(site.app, headers=site.token("owner"))
    detail = _problem(bearer.get(SNAPSHOT), 401, "keys-locked")
    assert "sign in again to unlock the household keys" in detail
    assert site.views() == 0  # refused before anything was accounted or sent


def test_a_session_whose_keys_are_locked_is_refused(site: Site) -> None:
    secret = site.login("owner")
    site.keys.sessions_ended(user_id=site.ctx.accounts.user_by_name("owner").id)  # a restart
    c = client(site.app)
    assert _refused(c, site.cookie(secret))[0] == CLOSE_KEYS_LOCKED
    c.cookies.set(SESSION_COOKIE, secret)
    _problem(c.get(SNAPSHOT), 401, "keys-locked")
    assert site.views() == 0


def test_a_member_without_the_current_key_version_is_refused(site: Site) -> None:
    # Mia is granted the camera but holds no seal of the current key version (her key grant
    # waits for an owner's unlock): before the fix she watched the plaintext .part anyway.
    secret = site.login("mia")
    c = client(site.app)
    code, reason = _refused(c, site.cookie(secret))
    assert code == CLOSE_FORBIDDEN, reason
    c.cookies.set(SESSION_COOKIE, secret)
    _problem(c.get(SNAPSHOT), 403, "key-unavailable")
    assert site.views() == 0
    site.login("owner")  # the owner's unlock completes her grant: now she may watch
    with c.websocket_connect(PATH, headers=site.cookie(secret)) as ws:
        assert json.loads(ws.receive_text())["type"] == "init"
    assert c.get(SNAPSHOT).status_code == 200


def test_an_open_view_ends_when_its_keys_go_away(
    site: Site, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(web_live, "RECHECK_SECONDS", 0.0)  # recheck at each fragment sent
    secret = site.login("owner")
    c = client(site.app)
    with c.websocket_connect(PATH, headers=site.cookie(secret)) as ws:
        ws.receive_text()
        ws.receive_bytes()
        assert ws.receive_bytes() == site.newest
        site.keys.sessions_ended(user_id=site.ctx.accounts.user_by_name("owner").id)
        with site.part.open("ab") as fh:  # the recorder writes the next fragment
            fh.write(site.later)
        message = ws.receive()  # the fragment sent before the recheck, if any
        if "bytes" in message:
            assert message["bytes"] == site.later
            message = ws.receive()
        error = json.loads(message["text"])
        assert error["type"] == "error"
        assert "sign in again" in error["detail"]
        with pytest.raises(WebSocketDisconnect) as err:
            ws.receive_text()
    assert err.value.code == CLOSE_KEYS_LOCKED


@contextlib.contextmanager
def _served(app: FastAPI) -> Iterator[str]:
    """``app`` under a real uvicorn server on loopback; yields its ``ws://host:port``."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 10
        while not server.started:
            assert time.monotonic() < deadline, "uvicorn did not start"
            time.sleep(0.02)
        yield f"ws://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()


def _close_of(url: str, headers: dict[str, str]) -> tuple[int, str]:
    with (
        connect(url, additional_headers=headers, open_timeout=5) as ws,
        pytest.raises(ConnectionClosed) as closed,
    ):
        ws.recv(timeout=5)
    assert closed.value.rcvd is not None, "closed without a close frame"
    return closed.value.rcvd.code, closed.value.rcvd.reason


def test_refusal_close_codes_reach_a_client_of_a_real_server(site: Site) -> None:
    # The fault: refused before the handshake, uvicorn answered a bare HTTP 403 and the
    # client never saw 4401 / 4404 (Starlette's TestClient showed them anyway).
    token = site.token("owner")
    with _served(site.app) as base:
        code, reason = _close_of(base + PATH, token)  # a token, sealed footage: keys locked
        assert code == CLOSE_KEYS_LOCKED
        assert "sign in again to unlock the household keys" in reason
        unknown = base + LIVE_PATH.replace("{name}", "nope")
        assert _close_of(unknown, token)[0] == CLOSE_NOT_FOUND
        assert _close_of(base + PATH, {})[0] == CLOSE_UNAUTHENTICATED  # not signed in
        # a cross-site socket stays refused before the handshake completes
        evil = {**site.cookie(site.login("owner")), "origin": "https://evil.example"}
        with pytest.raises(InvalidStatus) as refused:
            connect(base + PATH, additional_headers=evil, open_timeout=5)
        assert refused.value.response.status_code == 403
    assert site.views() == 0  # nothing was watched
