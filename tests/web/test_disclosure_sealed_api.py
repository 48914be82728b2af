"""Consent over footage sealed at rest (issue 6) through the real app, on SQLite and
PostgreSQL: the owner's grant in a signed-in session packages the sealed footage at once with
the session's household keys and the requester downloads a package that verifies; a session
whose keys are locked is refused the grant (401 ``keys-locked``, "sign in again") before
anything changes; a grant left waiting for the owner's keys is made from the request page
(API and form) once the owner signs in again.

Real ``bikes.mp4`` segments are sealed to the household key as the recorder seals them; the
owner, staff and requester sign in as in ``test_disclosure_api``.
"""

from __future__ import annotations

import dataclasses
import io
import shutil
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import av
import pytest

from homewarden.config import Settings
from homewarden.crypto.household_keys import ARGON2ID_FLOOR
from homewarden.domain import disclosure as d
from homewarden.domain.permissions import Role
from homewarden.services.audit import AuditLog
from homewarden.services.household_keys import KeyRing, attach
from homewarden.services.package_verify import load_public_keys, verify_package_path
from homewarden.services.sealed_footage import SegmentSealing, seal_segment_file
from homewarden.store.index import Index
from homewarden.web.deps import CSRF_HEADER
from tests.fixtures_mail import SmtpTestServer
from tests.web.conftest import FOOTAGE, T0, Footage
from tests.web.helpers import Clock, TestClient, add_user, build, make_context
from tests.web.test_disclosure_api import DOMAIN, PHONE, Site, _filed, _staff, problem

OWNER = "olive"


@dataclasses.dataclass
class Sealed:
    site: Site
    ring: KeyRing

    def consent(self) -> tuple[TestClient, str]:
        """A requester and the id of their consent request over the sealed footage."""
        rita = self.site.requester("rita")
        filed = _filed(rita, start=T0, end=T0 + 6)
        assert filed["state"] == "awaiting_owner"
        return rita, str(filed["id"])

    def lock(self, username: str = OWNER) -> None:
        """Drop the keys the owner's sessions unlocked (as a restart of the server does),
        leaving the sessions themselves signed in."""
        user = self.site.ctx.accounts.user_by_name(username)
        self.ring.sessions_ended(user_id=user.id)


@pytest.fixture
def sealed(
    index: Index, database_url: str, footage: Footage, smtp_server: SmtpTestServer, tmp_path: Path
) -> Iterator[Sealed]:
    data_dir = tmp_path / "data"
    shutil.copytree(footage.data_dir, data_dir)
    settings = Settings(
        data_dir=data_dir,
        database_url=database_url,
        mail=smtp_server.settings(),
        storage={"sealed": True},
        cameras={"front": {"url": f"file:{FOOTAGE}"}},
    )
    clock = Clock()
    with AuditLog.open(database_url, settings.keys_dir, clock=clock) as audit:
        ctx = make_context(index, settings, audit, clock=clock)
        ring = attach(
            ctx.accounts, index, audit, settings.keys_dir, clock=clock, params=ARGON2ID_FLOOR
        )
        ctx.accounts.ensure_households()
        ctx = dataclasses.replace(ctx, keys=ring)
        add_user(ctx, OWNER)  # the household's setup completes: the key rotates
        sealing = SegmentSealing("home", ring)
        media = settings.media_dir
        for seg in footage.segments:
            part = media / (seg.path + ".part")
            (media / seg.path).rename(part)  # as the recorder leaves a finished segment
            done = seal_segment_file(part, media, seg.path, seg.camera, seg.start, sealing)
            index.add_segment(
                dataclasses.replace(
                    seg, path=done.path, bytes=done.bytes, sealed=True, key_id=done.key_id
                )
            )
        app = build(ctx)
        totp = {
            "lena": _staff(ctx, clock, "lena", Role.LEGAL_REVIEWER),
        }
        s = Site(ctx, app, clock, audit, smtp_server, {}, totp)
        made = s.session("lena").post(
            "/api/staff/agencies",
            json={
                "name": "Town PD",
                "jurisdiction": "Town County",
                "mail_domains": [DOMAIN],
                "callback_phone": PHONE,
            },
        )
        assert made.status_code == 201, made.text
        s.agency = made.json()
        yield Sealed(s, ring)


def _check_download(s: Sealed, rita: TestClient, rid: str) -> None:
    """The requester's package verifies offline and its clips are the sealed footage."""
    link = rita.post(f"/api/requests/{rid}/links")
    assert link.status_code in (200, 201), link.text
    body: dict[str, Any] = link.json()
    got = rita.get(body["url"])
    assert got.status_code == 200, got.text[:300]
    path = s.site.ctx.settings.data_dir / "downloaded.zip"
    path.write_bytes(got.content)
    trusted = load_public_keys(s.site.ctx.settings.keys_dir / "log_public_keys.json")
    assert verify_package_path(path, trusted).trusted
    with zipfile.ZipFile(path) as z:
        clips = [n for n in z.namelist() if n.endswith(".mp4")]
        assert clips
        with av.open(io.BytesIO(z.read(clips[0]))) as c:
            assert sum(1 for _ in c.decode(video=0)) > 10


def test_the_owners_grant_packages_sealed_footage_at_once_and_it_verifies(
    sealed: Sealed,
) -> None:
    s = sealed
    rita, rid = s.consent()
    owner = s.site.session(OWNER)
    answered = owner.post(f"/api/requests/{rid}/answer", json={"decision": "grant"})
    assert answered.status_code == 200, answered.text
    view = answered.json()
    assert (view["state"], view["package_ready"], view["awaiting_keys"]) == (
        "fulfilled",
        True,
        None,
    )
    assert s.site.scheduler() == 0
    _check_download(s, rita, rid)


def test_a_grant_from_a_session_with_locked_keys_is_refused_and_nothing_changes(
    sealed: Sealed,
) -> None:
    s = sealed
    _rita, rid = s.consent()
    owner = s.site.session(OWNER)
    before = owner.get(f"/api/requests/{rid}").json()
    entries = s.site.audit.size()
    s.lock()
    refused = owner.post(f"/api/requests/{rid}/answer", json={"decision": "grant"})
    assert "sign in again" in problem(refused, 401, "keys-locked")["detail"]
    after = owner.get(f"/api/requests/{rid}").json()
    assert after == before
    assert after["state"] == "awaiting_owner"
    assert s.site.audit.size() == entries
    # The form says the same and changes nothing either.
    token = owner.headers[CSRF_HEADER]
    page = owner.post(f"/requests/{rid}/answer", data={"csrf_token": token, "decision": "grant"})
    assert page.status_code == 401, page.text[:300]
    assert "sign in again" in page.text
    assert owner.get(f"/api/requests/{rid}").json() == before
    # Signed in again, the grant goes through and is packaged.
    again = s.site.session(OWNER, fresh=True)
    done = again.post(f"/api/requests/{rid}/answer", json={"decision": "grant"})
    assert done.status_code == 200, done.text
    assert done.json()["state"] == "fulfilled"


def test_a_grant_waiting_for_the_owners_keys_is_made_from_the_request_page(
    sealed: Sealed,
) -> None:
    s = sealed
    rita, rid = s.consent()
    owner = s.site.session(OWNER)
    # Granted without the keys at hand (the plain step): the scheduler leaves it waiting.
    principal = s.site.ctx.accounts.principal_of(s.site.ctx.accounts.user_by_name(OWNER))
    s.site.service.act(principal, rid, d.OwnerGrant())
    for _ in range(3):
        s.site.scheduler()
    view = owner.get(f"/api/requests/{rid}").json()
    assert (view["state"], view["awaiting_keys"], view["package_ready"]) == (
        "owner_notified",
        "owner",
        False,
    )
    page = owner.get(f"/requests/{rid}")
    assert page.status_code == 200
    assert 'data-testid="awaiting-keys"' in page.text
    assert 'data-testid="fulfil-submit"' in page.text
    # Keys locked: 401, still waiting.
    s.lock()
    problem(owner.post(f"/api/requests/{rid}/fulfil"), 401, "keys-locked")
    assert owner.get(f"/api/requests/{rid}").json()["awaiting_keys"] == "owner"
    # Staff and the requester cannot bring the owner's keys.
    assert s.site.session("lena").post(f"/api/requests/{rid}/fulfil").status_code == 403
    assert rita.post(f"/api/requests/{rid}/fulfil").status_code == 403
    # Signed in again, the form makes the package.
    again = s.site.session(OWNER, fresh=True)
    made = again.post(
        f"/requests/{rid}/fulfil",
        data={"csrf_token": again.headers[CSRF_HEADER]},
        follow_redirects=False,
    )
    assert made.status_code == 303, made.text[:300]
    view = again.get(f"/api/requests/{rid}").json()
    assert (view["state"], view["package_ready"]) == ("fulfilled", True)
    problem(again.post(f"/api/requests/{rid}/fulfil"), 409)
    _check_download(s, rita, rid)
