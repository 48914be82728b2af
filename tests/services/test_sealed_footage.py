"""Footage sealed at rest (issue 6, step 3; ``storage.sealed``), on SQLite and PostgreSQL.

The acceptance test records real footage (``bikes.mp4`` played as a ``file:`` camera) with
a real :class:`Runtime` serving the web app, then: every file under the data dir is scanned
for MP4 boxes and JPEG images (none may be in a segment); the owner signs in with the
password and plays back and downloads clips that PyAV decodes; an API token and a signed-out
session get 401 and no footage; one flipped byte of a sealed segment is an error naming the
segment, not video; a member revoked by the owner cannot open what is recorded afterwards.
Smaller tests pin the recorder's sealing without a runtime, and reconciliation.
"""

from __future__ import annotations

import hashlib
import io
import logging
import re
import time
from collections.abc import Iterator
from pathlib import Path

import av
import httpx
import pytest

from homewarden.config import Settings
from homewarden.crypto.household_keys import generate_household_key
from homewarden.crypto.sealing import MAGIC, SegmentIdentity, seal_segment
from homewarden.domain.audit import Actor
from homewarden.errors import (
    KeysLockedError,
    KeyUnavailableError,
    SealedTamperedError,
    StorageError,
)
from homewarden.services.household_keys import KeyRing
from homewarden.services.reconcile import reconcile
from homewarden.services.runtime import Runtime
from homewarden.services.sealed_footage import (
    SEALED_SUFFIX,
    SegmentSealing,
    SessionKeys,
    open_sealed_segment,
    seal_segment_file,
)
from homewarden.store.index import Index
from homewarden.store.records import NewSegment, SegmentRecord
from homewarden.web.app import create_app
from homewarden.web.deps import CSRF_HEADER, SESSION_COOKIE

FOOTAGE = Path(__file__).resolve().parents[3] / "shared" / "footage" / "bikes.mp4"
PASSWORD = "correct horse battery staple"

#: An MP4 file's first box (``ftyp`` and a known major brand) or a movie fragment's header
#: (``moof`` whose first child is its 16-byte ``mfhd``, ISO/IEC 14496-12 8.8.4-5): 8 and 12
#: fixed bytes, which random ciphertext does not hold by chance.
_MP4 = re.compile(rb"ftyp(?:isom|iso[2-9]|mp4[12]|avc1|dash|M4V )|moof\x00\x00\x00\x10mfhd")
#: A JPEG image: SOI at a file's start, or a JFIF / Exif APP segment anywhere.
_JFIF = re.compile(rb"\xff\xd8\xff[\xe0\xe1]..(?:JFIF|Exif)\x00", re.DOTALL)


def plaintext_markers(data: bytes) -> list[str]:
    """What in ``data`` is an MP4 box or a JPEG image (see the patterns above)."""
    found = [m.group()[:4].decode("latin-1") for m in _MP4.finditer(data)]
    if data.startswith(b"\xff\xd8\xff") or _JFIF.search(data):
        found.append("jpeg")
    return found


def scan(root: Path) -> dict[str, list[str]]:
    """Every file under ``root`` holding MP4 boxes or a JPEG (relative path -> markers)."""
    hits: dict[str, list[str]] = {}
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        found = plaintext_markers(path.read_bytes())
        if found:
            hits[path.relative_to(root).as_posix()] = sorted(set(found))
    return hits


def frames_of(data: bytes) -> int:
    """Video frames PyAV decodes from an MP4 in memory."""
    with av.open(io.BytesIO(data)) as container:
        return sum(1 for _ in container.decode(video=0))


def test_the_scanner_finds_plaintext_footage_and_images() -> None:
    # the scan below can fail: it sees the source footage, a segment and a JPEG
    assert {"ftyp"} <= set(plaintext_markers(FOOTAGE.read_bytes()[:4096]))
    import cv2
    import numpy as np

    ok, jpeg = cv2.imencode(".jpg", np.zeros((8, 8, 3), np.uint8))
    assert ok
    assert plaintext_markers(b"x" * 100 + jpeg.tobytes()) == ["jpeg"]
    pair = generate_household_key()
    sealed = seal_segment(
        pair.public, SegmentIdentity("a/b.hwseal", "a", 1.0), FOOTAGE.read_bytes()
    )
    assert plaintext_markers(sealed) == []


# -- the acceptance test: a real runtime ------------------------------------------------------


def _login(base: str, username: str, password: str = PASSWORD) -> httpx.Client:
    c = httpx.Client(base_url=base, timeout=30)
    token = c.get("/api/csrf").json()["csrf_token"]
    resp = c.post(
        "/api/session",
        json={"username": username, "password": password},
        headers={CSRF_HEADER: token},
    )
    assert resp.status_code == 200, resp.text
    c.headers[CSRF_HEADER] = resp.json()["csrf_token"]
    return c


def _sealed_segments(index: Index, camera: str, *, after: float = 0.0) -> list[SegmentRecord]:
    return [s for s in index.segments(camera) if s.start >= after]


def _wait(predicate: object, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if callable(predicate) and predicate():
            return
        time.sleep(0.2)
    pytest.fail(f"timed out waiting for {what}")


def _problem(resp: httpx.Response, status: int, code: str) -> str:
    assert resp.status_code == status, (resp.status_code, resp.text[:300])
    assert resp.headers["content-type"].startswith("application/problem+json")
    body = resp.json()
    assert body["type"].endswith(f"/api/problems/{code}"), body
    assert not plaintext_markers(resp.content)
    return str(body["detail"])


@pytest.fixture
def runtime(tmp_path: Path, database_url: str) -> Iterator[Runtime]:
    settings = Settings(
        data_dir=tmp_path / "data",
        database_url=database_url,
        api={"host": "127.0.0.1", "port": 0},
        storage={"sealed": True},
        cameras={"bikes": {"url": f"file:{FOOTAGE}", "loop": True, "segment_seconds": 2}},
    )
    rt = Runtime(settings, app_factory=create_app)
    rt.start()
    try:
        yield rt
    finally:
        rt.stop()


def test_sealed_footage_end_to_end(runtime: Runtime, caplog: pytest.LogCaptureFixture) -> None:
    base = runtime.public_url()
    accounts = runtime.accounts
    keys = runtime.app_context().keys
    assert isinstance(keys, KeyRing)
    # the first run's owner sets a password through the setup link, then signs in
    link = runtime.setup_link
    assert link is not None
    accounts.complete_setup(link.rpartition("token=")[2], PASSWORD)
    accounts.add_user("mia", "member", "home", actor=None, password=PASSWORD)
    index = runtime.index
    _wait(lambda: len(_sealed_segments(index, "bikes")) >= 2, 30, "two sealed segments")

    owner = _login(base, "owner")
    mia_id = accounts.user_by_name("mia").id
    principal = accounts.principal_of(accounts.user_by_name("owner"))
    accounts.grant_camera(principal, mia_id, "bikes", Actor.of_principal(principal))
    mia = _login(base, "mia")  # her key pair is made; the unlocked owner completes the grant

    segs = _sealed_segments(index, "bikes")
    assert segs
    assert all(s.sealed and s.key_id and s.path.endswith(SEALED_SUFFIX) for s in segs)
    for seg in segs:
        data = (runtime.settings.media_dir / seg.path).read_bytes()
        assert data.startswith(MAGIC)
        assert seg.bytes == len(data)
    first, last = segs[0], segs[-1]
    span = {"start": first.start, "end": last.end}

    # (1) the owner plays back (a player's Range request) and downloads a clip: it decodes
    played = owner.get("/api/cameras/bikes/clip.mp4", params=span, headers={"Range": "bytes=0-"})
    assert played.status_code == 206, played.text[:300]
    assert frames_of(played.content) > 25
    clip = owner.get("/api/cameras/bikes/clip.mp4", params=span)
    assert clip.status_code == 200, clip.text[:300]
    assert frames_of(clip.content) > 25
    assert "ftyp" in plaintext_markers(clip.content)
    # the member granted the camera plays it too
    assert frames_of(mia.get("/api/cameras/bikes/clip.mp4", params=span).content) > 25

    # an event's snapshot, sealed from memory, shows as a JPEG
    _wait(lambda: _snapshot_event(index) is not None, 30, "an event with a snapshot")
    event = _snapshot_event(index)
    snap = owner.get(f"/api/events/{event}/snapshot.jpg")
    assert snap.status_code == 200
    assert snap.content.startswith(b"\xff\xd8\xff")

    # (2) an API token, and a signed-out session, get 401 and no footage
    token, _ = accounts.create_token(accounts.user_by_name("owner").id, "script")
    bearer = httpx.Client(base_url=base, headers={"Authorization": f"Bearer {token}"})
    detail = _problem(bearer.get("/api/cameras/bikes/clip.mp4", params=span), 401, "keys-locked")
    assert "sign in again to unlock the household keys" in detail
    _problem(bearer.get(f"/api/events/{event}/snapshot.jpg"), 401, "keys-locked")
    gone = _login(base, "owner")
    assert gone.delete("/api/session").status_code == 204
    gone.cookies.delete(SESSION_COOKIE)
    resp = gone.get("/api/cameras/bikes/clip.mp4", params=span)
    assert resp.status_code == 401
    assert not plaintext_markers(resp.content)

    # (3) a member revoked by the owner cannot open what is recorded afterwards
    mia_sid = _session_id(mia)
    old_key = keys.recording_key("home")[0]
    assert owner.delete(f"/api/keys/members/{mia_id}").status_code == 204
    new_key = keys.recording_key("home")[0]
    assert new_key != old_key
    revoked_at = time.time()
    _wait(
        lambda: any(
            s.key_id == new_key for s in _sealed_segments(index, "bikes", after=revoked_at)
        ),
        30,
        "a segment sealed to the rotated key",
    )
    newer = next(s for s in index.segments("bikes") if s.key_id == new_key)
    media = runtime.settings.media_dir
    with pytest.raises(KeyUnavailableError):
        open_sealed_segment(media, newer, "home", SessionKeys(keys, mia_sid))
    resp = mia.get("/api/cameras/bikes/clip.mp4", params={"start": newer.start, "end": newer.end})
    assert resp.status_code == 403
    assert not plaintext_markers(resp.content)
    # the owner opens it (the rotation sealed the new version to her)
    owner_sid = _session_id(owner)
    assert frames_of(open_sealed_segment(media, newer, "home", SessionKeys(keys, owner_sid))) > 0

    # (4) one flipped byte: an error naming the segment, not video; logged
    target = media / first.path
    data = bytearray(target.read_bytes())
    data[len(data) // 2] ^= 0x01
    target.write_bytes(bytes(data))
    one = {"start": first.start, "end": first.end}
    with caplog.at_level(logging.ERROR, logger="homewarden.services.sealed_footage"):
        detail = _problem(
            owner.get("/api/cameras/bikes/clip.mp4", params=one), 500, "sealed-tampered"
        )
    assert first.path in detail
    assert any(first.path in r.getMessage() for r in caplog.records)
    with pytest.raises(SealedTamperedError):
        open_sealed_segment(media, first, "home", SessionKeys(keys, owner_sid))

    # (5) at rest: no MP4 box or JPEG anywhere a segment or a served clip lives
    runtime.stop()
    data_dir = runtime.settings.data_dir
    assert scan(data_dir) == {}
    assert not list((data_dir / "media").rglob("*.mp4*"))  # no plaintext segment, no .part
    assert not list(data_dir.rglob("*.jpg"))  # snapshots are sealed too
    assert list((data_dir / "snapshots").rglob(f"*.jpg{SEALED_SUFFIX}"))


def _snapshot_event(index: Index) -> int | None:
    page, _ = index.events(camera="bikes", limit=50)
    return next((e.id for e in page if e.snapshot_path is not None), None)


def _session_id(c: httpx.Client) -> str:
    secret = c.cookies.get(SESSION_COOKIE)
    assert secret
    return hashlib.sha256(secret.encode()).hexdigest()


# -- without a runtime ------------------------------------------------------------------------


class _Keys:
    def __init__(self) -> None:
        self.pair = generate_household_key()

    def recording_key(self, household: str) -> tuple[bytes, object]:
        return self.pair.key_id, self.pair.public


def test_sealing_a_segment_binds_its_identity_and_removes_the_plaintext(tmp_path: Path) -> None:
    media = tmp_path / "media"
    plain_rel = "cam/2026-11-29/17/1764435600.000.mp4"
    plain = media / (plain_rel + ".part")
    plain.parent.mkdir(parents=True)
    plain.write_bytes(FOOTAGE.read_bytes())
    keys = _Keys()
    sealing = SegmentSealing("home", keys)  # type: ignore[arg-type]
    done = seal_segment_file(plain, media, plain_rel, "cam", 1764435600.0, sealing)
    assert not plain.exists()
    assert done.path == "cam/2026-11-29/17/1764435600.000.hwseal"
    seg = SegmentRecord(1, "cam", 1764435600.0, 1764435610.0, 10.0, done.bytes, 1, 0.0,
                        done.path, sealed=True, key_id=done.key_id)  # fmt: skip
    assert open_sealed_segment(media, seg, "home", lambda h, k: keys.pair) == FOOTAGE.read_bytes()
    with pytest.raises(KeysLockedError, match="sign in again"):
        open_sealed_segment(media, seg, "home", None)
    moved = SegmentRecord(1, "cam", 1764435601.0, 1764435610.0, 9.0, done.bytes, 1, 0.0,
                          done.path, sealed=True, key_id=done.key_id)  # fmt: skip
    with pytest.raises(SealedTamperedError, match=re.escape(done.path)):
        open_sealed_segment(media, moved, "home", lambda h, k: keys.pair)


def test_a_failed_seal_leaves_no_plaintext(tmp_path: Path) -> None:
    media = tmp_path / "media"
    plain_rel = "cam/2026-11-29/17/1764435600.000.mp4"
    plain = media / (plain_rel + ".part")
    plain.parent.mkdir(parents=True)
    plain.write_bytes(b"footage")
    # the sealed file's own .part exists: the write is refused, the plaintext still goes
    (media / "cam/2026-11-29/17/1764435600.000.hwseal.part").write_bytes(b"")
    with pytest.raises(StorageError):
        seal_segment_file(plain, media, plain_rel, "cam", 1764435600.0,
                          SegmentSealing("home", _Keys()))  # type: ignore[arg-type]  # fmt: skip
    assert not plain.exists()


def test_reconcile_deletes_plaintext_parts_when_sealing_is_on(index: Index, tmp_path: Path) -> None:
    media = tmp_path / "media"
    hour = media / "cam" / "2026-11-29" / "17"
    hour.mkdir(parents=True)
    part = hour / "1764435600.000.mp4.part"
    part.write_bytes(FOOTAGE.read_bytes())  # playable: sealing off would adopt it
    cut = hour / "1764435610.000.hwseal.part"
    cut.write_bytes(b"HWSEAL" + bytes(200))
    lone = hour / "1764435620.000.hwseal"
    lone.write_bytes(b"HWSEAL" + bytes(200))
    report = reconcile(index, media, sealed=True)
    assert not part.exists()
    assert not cut.exists()
    assert lone.exists()  # cannot be probed without the key: kept, skipped
    assert report.parts_removed == 2
    assert report.parts_recovered == 0
    assert report.skipped == 1
    assert index.segments("cam") == []
    index.add_segment(
        NewSegment(
            "cam",
            1764435620.0,
            1764435630.0,
            206,
            1,
            0.0,
            "cam/2026-11-29/17/1764435620.000.hwseal",
            sealed=True,
            key_id=bytes(16),
        )
    )
    assert reconcile(index, media, sealed=True).skipped == 0


def test_recorder_processes_seal_too(tmp_path: Path, database_url: str) -> None:
    # two cameras, two worker processes: the workers hold no key ring, only the public key
    settings = Settings(
        data_dir=tmp_path / "data",
        database_url=database_url,
        storage={"sealed": True},
        recorder={"processes": 2},
        cameras={
            name: {"url": f"file:{FOOTAGE}", "loop": True, "segment_seconds": 2}
            for name in ("east", "west")
        },
    )
    rt = Runtime(settings)
    rt.start()
    try:
        index = rt.index
        _wait(
            lambda: all(len(index.segments(c)) >= 2 for c in ("east", "west")),
            40,
            "sealed segments of both cameras",
        )
    finally:
        rt.stop()
    data_dir = settings.data_dir
    index = Index(settings.db_url)
    try:
        segs = index.segments()
    finally:
        index.close()
    assert {s.camera for s in segs} == {"east", "west"}
    assert all(s.sealed for s in segs)
    assert all(s.key_id is not None for s in segs)
    assert scan(data_dir / "media") == {}
    assert not list((data_dir / "media").rglob("*.mp4*"))
