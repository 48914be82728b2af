"""Readers of sealed footage through the real app (issue 6, step 3), on SQLite and
PostgreSQL: real segments of ``bikes.mp4`` and a real JPEG snapshot, sealed to the household
key as the recorder seals them, then played back, downloaded, shown as an event snapshot and
as the live view's latest frame by the owner's password session; an API token gets 401
``keys-locked`` and no footage; a flipped byte is a 500 ``sealed-tampered`` naming the file."""

from __future__ import annotations

import dataclasses
import hashlib
import io
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import av
import httpx
import pytest
from fastapi import FastAPI

from homewarden.config import Settings
from homewarden.crypto.household_keys import ARGON2ID_FLOOR
from homewarden.domain.audit import Actor
from homewarden.errors import KeysLockedError
from homewarden.media.clip import compose_clip
from homewarden.services.audit import AuditLog
from homewarden.services.evidence import EvidenceService
from homewarden.services.household_keys import KeyRing, attach
from homewarden.services.queries import Queries
from homewarden.services.runtime import AppContext
from homewarden.services.sealed_footage import (
    SEALED_SUFFIX,
    SegmentSealing,
    SessionKeys,
    seal_segment_file,
    seal_snapshot,
)
from homewarden.store.index import Index
from homewarden.web.app import create_app
from homewarden.web.deps import CSRF_HEADER, SESSION_COOKIE
from tests.web.conftest import FOOTAGE, T0, Footage
from tests.web.helpers import TestClient, add_user, client, login, make_context, token_client


@dataclass
class Site:
    app: FastAPI
    ctx: AppContext
    keys: KeyRing
    media: Path
    paths: list[str]
    event: int

    def owner(self) -> TestClient:
        c = client(self.app)
        c.headers[CSRF_HEADER] = login(c, "owner")["csrf_token"]
        return c


@pytest.fixture
def site(index: Index, database_url: str, footage: Footage, tmp_path: Path) -> Iterator[Site]:
    data_dir = tmp_path / "data"
    shutil.copytree(footage.data_dir, data_dir)
    settings = Settings(
        data_dir=data_dir,
        database_url=database_url,
        storage={"sealed": True},
        cameras={"front": {"url": f"file:{FOOTAGE}"}},
    )
    with AuditLog.open(database_url, settings.keys_dir) as audit:
        ctx = make_context(index, settings, audit)
        keys = attach(ctx.accounts, index, audit, settings.keys_dir, params=ARGON2ID_FLOOR)
        ctx.accounts.ensure_households()
        ctx = dataclasses.replace(ctx, keys=keys)
        add_user(ctx, "owner")  # the household's setup completes: the key rotates
        sealing = SegmentSealing("home", keys)
        media = settings.media_dir
        paths = []
        for seg in footage.segments:
            part = media / (seg.path + ".part")
            (media / seg.path).rename(part)  # as the recorder leaves a finished segment
            done = seal_segment_file(part, media, seg.path, seg.camera, seg.start, sealing)
            index.add_segment(
                dataclasses.replace(
                    seg, path=done.path, bytes=done.bytes, sealed=True, key_id=done.key_id
                )
            )
            paths.append(done.path)
        jpeg = settings.snapshot_dir / footage.snapshot_rel
        rel = seal_snapshot(
            jpeg.read_bytes(), settings.snapshot_dir, footage.snapshot_rel, "front", sealing
        )
        jpeg.unlink()
        event = index.open_event("front", T0 + 1.0, "motion", 0.2, [])
        index.update_event(event, end=T0 + 3.0, snapshot_path=rel)
        yield Site(create_app(ctx), ctx, keys, media, paths, event)


def _frames(data: bytes) -> int:
    with av.open(io.BytesIO(data)) as container:
        return sum(1 for _ in container.decode(video=0))


def _problem(resp: httpx.Response, status: int, code: str) -> str:
    assert resp.status_code == status, (resp.status_code, resp.text[:300])
    assert resp.headers["content-type"].startswith("application/problem+json")
    body = resp.json()
    assert body["type"].endswith(f"/api/problems/{code}"), body
    return str(body["detail"])


SPAN = {"start": T0, "end": T0 + 9.0}


def test_nothing_plain_is_left_at_rest(site: Site) -> None:
    data_dir = site.ctx.settings.data_dir
    assert all(p.endswith(SEALED_SUFFIX) for p in site.paths)
    assert not list(data_dir.rglob("*.mp4*"))
    assert not list(data_dir.rglob("*.jpg"))


def test_the_owners_session_plays_downloads_and_sees_snapshots(site: Site) -> None:
    owner = site.owner()
    played = owner.get("/api/cameras/front/clip.mp4", params=SPAN, headers={"Range": "bytes=0-"})
    assert played.status_code == 206, played.text[:300]
    assert _frames(played.content) > 100
    got = owner.get("/api/cameras/front/clip.mp4", params=SPAN)
    assert got.status_code == 200
    assert _frames(got.content) > 100
    event = owner.get(f"/api/events/{site.event}/clip.mp4")
    assert event.status_code == 200
    assert _frames(event.content) > 25
    snap = owner.get(f"/api/events/{site.event}/snapshot.jpg")
    assert snap.status_code == 200
    assert snap.content.startswith(b"\xff\xd8\xff")
    latest = owner.get("/api/cameras/front/latest.jpg")
    assert latest.status_code == 200, latest.text[:300]
    assert latest.content.startswith(b"\xff\xd8\xff")
    # clips of sealed footage are cached in the process's memory only: nothing on disk
    clips = site.ctx.settings.cache_dir / "clips"
    assert not [p for p in clips.rglob("*") if p.is_file()]
    assert site.ctx.queries.sealed_clip_cache_usage()[0] >= 2
    data_dir = site.ctx.settings.data_dir
    assert not [p for p in data_dir.rglob("*") if p.is_file() and b"ftyp" in p.read_bytes()]


def test_sealed_clips_answer_byte_ranges(site: Site) -> None:
    owner = site.owner()
    whole = owner.get("/api/cameras/front/clip.mp4", params=SPAN)
    assert whole.status_code == 200
    assert whole.headers["accept-ranges"] == "bytes"
    size = len(whole.content)
    assert int(whole.headers["content-length"]) == size
    for asked, (lo, hi) in [
        ("bytes=0-99", (0, 100)),
        (f"bytes={size - 10}-", (size - 10, size)),
        ("bytes=-300000", (max(0, size - 300000), size)),
        (f"bytes=100-{size + 50}", (100, size)),
    ]:
        part = owner.get("/api/cameras/front/clip.mp4", params=SPAN, headers={"Range": asked})
        assert part.status_code == 206, (asked, part.text[:200])
        assert part.headers["content-range"] == f"bytes {lo}-{hi - 1}/{size}"
        assert part.content == whole.content[lo:hi]
    past = owner.get(
        "/api/cameras/front/clip.mp4", params=SPAN, headers={"Range": f"bytes={size}-"}
    )
    assert past.status_code == 416
    assert past.headers["content-range"] == f"bytes */{size}"
    for ignored in ("bytes=5-1", "items=0-1", "bytes=0-1,5-6"):
        resp = owner.get("/api/cameras/front/clip.mp4", params=SPAN, headers={"Range": ignored})
        assert resp.status_code == 200, ignored
        assert resp.content == whole.content
    # a cached clip is handed out only to a caller whose keys open its segments
    owner_user = site.ctx.accounts.user_by_name("owner")
    bearer = token_client(site.app, site.ctx, owner_user)
    _problem(bearer.get("/api/cameras/front/clip.mp4", params=SPAN), 401, "keys-locked")


def test_a_token_gets_401_and_no_footage(site: Site) -> None:
    owner = site.ctx.accounts.user_by_name("owner")
    bearer = token_client(site.app, site.ctx, owner)
    for path, params in [
        ("/api/cameras/front/clip.mp4", SPAN),
        (f"/api/events/{site.event}/clip.mp4", {}),
        (f"/api/events/{site.event}/snapshot.jpg", {}),
        ("/api/cameras/front/latest.jpg", {}),
    ]:
        detail = _problem(bearer.get(path, params=params), 401, "keys-locked")
        assert "sign in again to unlock the household keys" in detail


def test_one_flipped_byte_is_an_error_not_video(site: Site) -> None:
    target = site.media / site.paths[0]
    data = bytearray(target.read_bytes())
    data[-100] ^= 0x80
    target.write_bytes(bytes(data))
    owner = site.owner()
    detail = _problem(owner.get("/api/cameras/front/clip.mp4", params=SPAN), 500, "sealed-tampered")
    assert site.paths[0] in detail
    # a span that does not need the changed segment still plays
    later = {"start": T0 + 5.0, "end": T0 + 9.0}
    assert owner.get("/api/cameras/front/clip.mp4", params=later).status_code == 200


def test_an_owners_export_opens_sealed_footage_with_her_keys(site: Site, tmp_path: Path) -> None:
    owner = site.owner()
    secret = owner.cookies.get(SESSION_COOKIE)
    assert secret
    keys = SessionKeys(site.keys, hashlib.sha256(secret.encode()).hexdigest())
    evidence = EvidenceService(site.ctx.index, site.ctx.settings, site.ctx.audit)
    out = tmp_path / "exports"
    out.mkdir()
    actor = Actor.of_principal(
        site.ctx.accounts.principal_of(site.ctx.accounts.user_by_name("owner"))
    )
    with pytest.raises(KeysLockedError):
        evidence.export(["front"], T0, T0 + 9.0, out, actor=actor, reason="test")
    assert list(out.iterdir()) == []  # nothing left behind
    result = evidence.export(["front"], T0, T0 + 9.0, out, actor=actor, reason="test", keys=keys)
    (clip,) = result.released
    assert _frames((result.folder / clip).read_bytes()) > 100


def _owner_keys(site: Site, owner: TestClient) -> SessionKeys:
    secret = owner.cookies.get(SESSION_COOKIE)
    assert secret
    return SessionKeys(site.keys, hashlib.sha256(secret.encode()).hexdigest())


def test_the_sealed_clip_cache_evicts_past_its_byte_cap(site: Site) -> None:
    keys = _owner_keys(site, site.owner())
    actor = Actor.of_principal(
        site.ctx.accounts.principal_of(site.ctx.accounts.user_by_name("owner"))
    )
    spans = [(T0, T0 + 9.0), (T0 + 1.0, T0 + 9.0), (T0 + 2.0, T0 + 9.0)]
    roomy = Queries(site.ctx.index, site.ctx.settings, audit=site.ctx.audit)
    sizes = [
        roomy.range_clip("front", a, b, actor=actor, reason="test", keys=keys).bytes
        for a, b in spans
    ]
    assert roomy.sealed_clip_cache_usage() == (3, sum(sizes))
    cap = sizes[1] + sizes[2]  # room for the last two, not for all three
    small = Queries(
        site.ctx.index, site.ctx.settings, audit=site.ctx.audit, sealed_clip_cache_bytes=cap
    )
    first = small.range_clip("front", *spans[0], actor=actor, reason="test", keys=keys)
    for a, b in spans[1:]:
        small.range_clip("front", a, b, actor=actor, reason="test", keys=keys)
    count, used = small.sealed_clip_cache_usage()
    assert (count, used) == (2, sizes[1] + sizes[2])
    assert used <= cap
    # the evicted clip is still served whole from the memory it was handed out with
    whole = b"".join(small.clip_chunks(first, 0, first.bytes))
    assert len(whole) == first.bytes
    assert _frames(whole) > 100
    # a clip larger than the whole cap is served but not kept
    tiny = Queries(
        site.ctx.index, site.ctx.settings, audit=site.ctx.audit, sealed_clip_cache_bytes=1000
    )
    big = tiny.range_clip("front", *spans[0], actor=actor, reason="test", keys=keys)
    assert tiny.sealed_clip_cache_usage() == (0, 0)
    assert b"".join(tiny.clip_chunks(big, 100, 200)) == whole[100:200]


def test_serving_a_sealed_clip_writes_no_plaintext_under_data_or_tmp(
    site: Site, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(tmp))
    monkeypatch.setenv("TMPDIR", str(tmp))
    written: list[Path] = []

    def spy(*args: Any, **kwargs: Any) -> Any:
        out = Path(args[3])
        info = compose_clip(*args, **kwargs)
        written.append(out)
        assert out.is_file()  # the composed clip, plaintext: where is it?
        return info

    monkeypatch.setattr("homewarden.services.queries.compose_clip", spy)
    owner = site.owner()
    whole = owner.get("/api/cameras/front/clip.mp4", params=SPAN)
    assert whole.status_code == 200
    part = owner.get("/api/cameras/front/clip.mp4", params=SPAN, headers={"Range": "bytes=0-99"})
    assert part.status_code == 206
    assert part.content == whole.content[:100]
    assert len(written) == 1  # composed once, the range served from memory
    data_dir = site.ctx.settings.data_dir.resolve()
    for out in written:
        where = out.resolve()
        assert not where.is_relative_to(data_dir), where
        assert not where.is_relative_to(tmp.resolve()), where
        assert not where.is_relative_to(Path("/tmp").resolve()), where
        assert not where.exists()  # removed at once
    for root in (data_dir, tmp):
        assert not [p for p in root.rglob("*") if p.is_file() and b"ftyp" in p.read_bytes()]
