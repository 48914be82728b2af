"""Camera management (CameraAdmin) on SQLite and PostgreSQL: the overlay of the config
file's cameras by stored ones, owners' rights across households, validation, masked
passwords, audit entries, and connection tests against real sources (footage files, the
GStreamer RTSP server, a loopback RTSP peer that refuses the password, a closed port)."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from homewarden.config import CameraSettings, Settings
from homewarden.domain.audit import Actor, AuditTag
from homewarden.domain.permissions import Principal, Role
from homewarden.errors import InvalidRequestError, NotFoundError, PermissionDeniedError
from homewarden.services.accounts import AccountService
from homewarden.services.audit import AuditLog
from homewarden.services.cameras import CameraAdmin, effective_settings, unmask_url
from homewarden.store.camera_store import CameraStore
from homewarden.store.index import Index
from homewarden.store.records import NewSegment
from tests.fixtures_media import RtspServerFactory
from tests.web.helpers import PASSWORD, Clock

SECRET_URL = "rtsp://admin:s3cret-pw@192.0.2.10:554/stream1"


@dataclass
class Env:
    admin: CameraAdmin
    accounts: AccountService
    audit: AuditLog
    index: Index
    settings: Settings
    applied: list[Settings]
    olive: Principal  # owner of "home"
    mia: Principal  # member of "home"
    bob: Principal  # owner of "other"


@pytest.fixture
def env(index: Index, database_url: str, tmp_path: Path) -> Iterator[Env]:
    settings = Settings(
        data_dir=tmp_path,
        database_url=database_url,
        cameras={
            "front": {"url": "file:/nonexistent/front.mp4"},
            "porch": {"url": SECRET_URL},
            "shed": {"url": "rtsp://192.0.2.11/s", "household": "other"},
        },
    )
    clock = Clock(1_700_000_000.0)
    applied: list[Settings] = []
    with AuditLog.open(database_url, settings.keys_dir, clock=clock) as audit:
        admin = CameraAdmin(index, audit, settings, apply=applied.append, clock=clock)
        accounts = AccountService(index, audit, admin.current, clock=clock)
        accounts.ensure_households()

        def principal(name: str, role: Role, household: str) -> Principal:
            user = accounts.add_user(name, role, household, actor=None, password=PASSWORD).user
            return accounts.principal_of(user)

        yield Env(
            admin,
            accounts,
            audit,
            index,
            settings,
            applied,
            principal("olive", Role.OWNER, "home"),
            principal("mia", Role.MEMBER, "home"),
            principal("bob", Role.OWNER, "other"),
        )


def _entries(audit: AuditLog) -> list[tuple[str, str, str | None, str]]:
    out = []
    for i in range(audit.size()):
        e = audit.entry(i)
        if e.action is AuditTag.SETTING_CHANGE:
            out.append((e.subject.household, e.reason, e.subject.camera, e.actor.id))
    return out


def test_store_round_trips_and_deletes(index: Index, database_url: str, tmp_path: Path) -> None:
    Settings(data_dir=tmp_path, database_url=database_url)
    with AuditLog.open(database_url, tmp_path / "keys") as audit:
        AccountService(index, audit, Settings(data_dir=tmp_path)).ensure_households()
    store = CameraStore(index)
    fields = {"url": "file:a.mp4", "zones": {"door": [[0, 0], [1, 0], [1, 1]]}}
    saved = store.put("cam1", "home", fields, now=5.0, by=7)
    fields["url"] = "changed after saving"  # the store keeps its own copy
    assert store.get("cam1") == saved
    assert saved.settings["url"] == "file:a.mp4"
    assert saved.updated_by == 7
    store.put("cam1", "home", {"url": "file:b.mp4"}, now=6.0, by=None)
    assert [(r.name, r.settings, r.updated_at) for r in store.all()] == [
        ("cam1", {"url": "file:b.mp4"}, 6.0)
    ]
    with pytest.raises(InvalidRequestError):  # no such household (foreign key)
        store.put("cam2", "nowhere", {"url": "file:x"}, now=1.0, by=None)
    assert store.delete("cam1")
    assert not store.delete("cam1")
    assert store.get("cam1") is None


def test_owner_adds_edits_and_deletes_with_one_audit_entry_each(env: Env) -> None:
    actor = Actor.of_principal(env.olive)
    added = env.admin.put(env.olive, "garage", {"url": "file:/srv/garage.mp4"}, actor)
    assert (added.origin, added.household, added.deletable) == ("app", "home", True)
    assert env.admin.current().cameras["garage"] == CameraSettings(url="file:/srv/garage.mp4")
    assert env.applied[-1] is env.admin.current()
    # Unchanged: nothing saved, nothing audited.
    env.admin.put(env.olive, "garage", {"url": "file:/srv/garage.mp4"}, actor)
    env.admin.set_enabled(env.olive, "garage", False, actor)
    assert not env.admin.current().cameras["garage"].enabled
    env.admin.put(env.olive, "garage", {"motion": {"detect_fps": 2}, "enabled": True}, actor)
    cam = env.admin.current().cameras["garage"]
    assert cam.enabled
    assert cam.motion.detect_fps == 2
    assert cam.motion.threshold == 30
    env.admin.delete(env.olive, "garage", actor)
    assert "garage" not in env.admin.current().cameras
    uid = str(env.olive.user_id)
    assert _entries(env.audit) == [
        ("home", "camera garage: added", "garage", uid),
        ("home", "camera garage: disabled", "garage", uid),
        ("home", "camera garage: changed enabled, motion.detect_fps", "garage", uid),
        ("home", "camera garage: deleted", "garage", uid),
    ]
    # The member's view of cameras follows (accounts read the same current settings).
    assert env.accounts.principal_of(env.accounts.user(env.olive.user_id or 0)).household


def test_stored_cameras_overlay_the_config_file_after_a_restart(env: Env) -> None:
    actor = Actor.of_principal(env.olive)
    env.admin.put(
        env.olive,
        "front",
        {"enabled": False, "zones": {"door": [[0, 0], [0.5, 0], [0.5, 1]]}},
        actor,
    )
    env.admin.put(env.bob, "barn", {"url": "rtsp://192.0.2.12/b"}, Actor.of_principal(env.bob))
    again = CameraAdmin(env.index, env.audit, env.settings)
    loaded = again.load()
    assert not loaded.cameras["front"].enabled
    assert loaded.cameras["front"].url == "file:/nonexistent/front.mp4"
    assert list(loaded.cameras["front"].zones) == ["door"]
    assert loaded.camera_household("barn") == "other"
    assert loaded.camera_household("front") == "home"
    assert again.camera(env.olive, "front").origin == "edited"
    assert again.camera(env.olive, "porch").origin == "config"
    with pytest.raises(InvalidRequestError, match="config file"):
        again.delete(env.olive, "front", actor)
    # A stored row that no longer validates is left out; the file's camera stays.
    CameraStore(env.index).put("porch", "home", {"url": "ftp://x"}, now=1.0, by=None)
    assert (
        effective_settings(env.settings, CameraStore(env.index).all()).cameras["porch"]
        == env.settings.cameras["porch"]
    )


def test_households_do_not_cross(env: Env) -> None:
    bob = Actor.of_principal(env.bob)
    for call in (
        lambda: env.admin.camera(env.bob, "front"),
        lambda: env.admin.put(env.bob, "front", {"enabled": False}, bob),
        lambda: env.admin.delete(env.bob, "front", bob),
        lambda: env.admin.test_connection(env.bob, "rtsp://x:***@192.0.2.10/", camera="porch"),
        lambda: env.admin.camera(env.olive, "shed"),
    ):
        with pytest.raises(NotFoundError):
            call()
    assert [c.name for c in env.admin.cameras(env.bob)] == ["shed"]
    assert [c.name for c in env.admin.cameras(env.olive)] == ["front", "porch"]
    # A name with footage of the deployment's household cannot be taken by another one.
    env.index.add_segment(NewSegment("old", 1.0, 2.0, 10, 1, 0.0, "old/1970-01-01/00/1.000.mp4"))
    with pytest.raises(NotFoundError):
        env.admin.put(env.bob, "old", {"url": "file:/x.mp4"}, bob)
    # Another household's camera with footage is disabled, not deleted (its footage would
    # fall to the deployment's household).
    env.admin.put(env.bob, "barn", {"url": "file:/x.mp4"}, bob)
    env.index.add_segment(NewSegment("barn", 1.0, 2.0, 10, 1, 0.0, "barn/1970-01-01/00/1.000.mp4"))
    with pytest.raises(InvalidRequestError, match="disable it instead"):
        env.admin.delete(env.bob, "barn", bob)
    with pytest.raises(PermissionDeniedError):
        env.admin.cameras(env.mia)
    with pytest.raises(PermissionDeniedError):
        env.admin.put(env.mia, "front", {"enabled": False}, Actor.of_principal(env.mia))
    assert _entries(env.audit) == [("other", "camera barn: added", "barn", str(env.bob.user_id))]


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"url": "http://cam/x"}, "url: Value error, camera url must start with"),
        (
            {"url": "file:/x", "motion": {"masks": [[[0, 0], [1, 1]]]}},
            "motion.masks.0: a polygon needs at least 3 points",
        ),
        (
            {"url": "file:/x", "zones": {"door": [[0, 0], [1.5, 0], [1, 1]]}},
            "zones.door: polygon point (1.5, 0.0) is outside",
        ),
        (
            {"url": "file:/x", "zones": {"bad name": [[0, 0], [1, 0], [1, 1]]}},
            "zone name 'bad name'",
        ),
        ({"url": "file:/x", "retention": {"event_days": -1}}, "retention.event_days"),
        ({"url": "file:/x", "colour": "red"}, "colour: Extra inputs are not permitted"),
        ({"enabled": True}, "a new camera needs a url"),
        ({"url": "file:/x", "household": "other"}, "household cannot change"),
    ],
)
def test_invalid_settings_are_refused_by_field(
    env: Env, changes: dict[str, object], message: str
) -> None:
    with pytest.raises(InvalidRequestError) as err:
        env.admin.put(env.olive, "new1", changes, Actor.of_principal(env.olive))
    assert message in str(err.value)
    assert "new1" not in env.admin.current().cameras
    assert _entries(env.audit) == []


def test_bad_camera_names_are_refused(env: Env) -> None:
    for name in ("", "a b", "x" * 65, "../etc", "ü"):
        with pytest.raises(InvalidRequestError, match="camera name"):
            env.admin.put(env.olive, name, {"url": "file:/x"}, Actor.of_principal(env.olive))


def test_passwords_are_masked_and_kept_only_for_the_same_host(env: Env) -> None:
    actor = Actor.of_principal(env.olive)
    view = env.admin.camera(env.olive, "porch")
    assert view.settings["url"] == "rtsp://admin:***@192.0.2.10:554/stream1"
    assert "s3cret" not in repr(env.admin.cameras(env.olive))
    # The masked URL sent back with another path keeps the password.
    env.admin.put(env.olive, "porch", {"url": "rtsp://admin:***@192.0.2.10:554/stream2"}, actor)
    assert (
        env.admin.current().cameras["porch"].url == "rtsp://admin:s3cret-pw@192.0.2.10:554/stream2"
    )
    for other in ("rtsp://admin:***@203.0.113.9:554/stream2", "rtsp://root:***@192.0.2.10:554/s"):
        with pytest.raises(InvalidRequestError, match="type the camera's password"):
            env.admin.put(env.olive, "porch", {"url": other}, actor)
    with pytest.raises(InvalidRequestError, match="type the camera's password"):
        env.admin.put(env.olive, "new2", {"url": "rtsp://a:***@192.0.2.10/"}, actor)
    assert "s3cret" not in " ".join(r for _, r, _, _ in _entries(env.audit))
    assert unmask_url("rtsp://h/x", SECRET_URL) == "rtsp://h/x"


# -- connection tests against real sources ---------------------------------------------------


def test_connection_to_real_footage_reports_codec_size_and_rate(env: Env, vtest_h264: Path) -> None:
    result = env.admin.test_connection(env.olive, f"file:{vtest_h264}")
    assert result.ok
    assert result.problem is None
    assert (result.codec, result.width, result.height) == ("h264", 768, 576)
    assert result.fps is not None
    assert 9 < result.fps < 11
    assert result.seconds < 5


def test_connection_failures_say_what_went_wrong(env: Env, vtest_avi: Path, tmp_path: Path) -> None:
    missing = env.admin.test_connection(env.olive, f"file:{tmp_path / 'none.mp4'}")
    assert (missing.ok, missing.problem) == (False, "unreachable")
    text = tmp_path / "notes.mp4"
    text.write_text("not a video at all\n" * 50)
    garbage = env.admin.test_connection(env.olive, f"file:{text}")
    assert (garbage.ok, garbage.problem) == (False, "not-a-stream")
    codec = env.admin.test_connection(env.olive, f"file:{vtest_avi}")
    assert (codec.ok, codec.problem) == (False, "unsupported")
    assert "H.264" in codec.detail
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    refused = env.admin.test_connection(env.olive, f"rtsp://127.0.0.1:{port}/cam")
    assert (refused.ok, refused.problem) == (False, "unreachable")
    assert refused.seconds < 5
    with pytest.raises(InvalidRequestError, match="camera url must start with"):
        env.admin.test_connection(env.olive, "http://127.0.0.1/")


class _RefusingRtspPeer:
    """An RTSP peer on loopback that answers OPTIONS and refuses every DESCRIBE with
    401 (RFC 2326 section 11.4.2), as a camera does for a wrong password."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.authorizations: list[str] = []
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with conn:
                self._talk(conn)

    def _talk(self, conn: socket.socket) -> None:
        buf = b""
        while True:
            try:
                chunk = conn.recv(4096)
            except OSError:
                return
            if not chunk:
                return
            buf += chunk
            while b"\r\n\r\n" in buf:
                head, buf = buf.split(b"\r\n\r\n", 1)
                lines = head.decode("latin-1").split("\r\n")
                headers = dict(line.split(": ", 1) for line in lines[1:] if ": " in line)
                cseq = headers.get("CSeq", "0")
                if lines[0].startswith("OPTIONS"):
                    reply = (
                        f"RTSP/1.0 200 OK\r\nCSeq: {cseq}\r\nPublic: DESCRIBE, SETUP, PLAY\r\n\r\n"
                    )
                else:
                    self.authorizations.append(headers.get("Authorization", ""))
                    reply = (
                        f"RTSP/1.0 401 Unauthorized\r\nCSeq: {cseq}\r\n"
                        'WWW-Authenticate: Basic realm="camera"\r\n\r\n'
                    )
                conn.sendall(reply.encode())

    def close(self) -> None:
        self.sock.close()


def test_connection_with_a_wrong_password_is_an_auth_failure(env: Env) -> None:
    peer = _RefusingRtspPeer()
    try:
        result = env.admin.test_connection(
            env.olive, f"rtsp://admin:wrong@127.0.0.1:{peer.port}/cam"
        )
    finally:
        peer.close()
    assert (result.ok, result.problem) == (False, "auth")
    assert "wrong" not in result.url
    assert "***" in result.url
    assert any(a.startswith("Basic ") for a in peer.authorizations)  # the password was tried


def test_connection_to_a_real_rtsp_camera(
    env: Env, rtsp_server: RtspServerFactory, vtest_h264: Path
) -> None:
    cam = rtsp_server(vtest_h264)
    result = env.admin.test_connection(env.olive, cam.url)
    assert result.ok, result.detail
    assert (result.codec, result.width, result.height) == ("h264", 768, 576)
