"""Unlocking household keys at the machine's shell with a person's password
(:meth:`KeyRing.unlock_with_password`, issue 6: ``homewarden clip``/``export --user``), on
SQLite and PostgreSQL, over real footage (bikes.mp4 recorded as segments and sealed to the
household's key as the recorder seals them).

Password wraps use libsodium's minimum Argon2id cost (``ARGON2ID_FLOOR``) to keep the tests
quick; the cost is read from each wrap, so opening them is the production code path.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import pytest

from homewarden.config import Settings
from homewarden.crypto.household_keys import ARGON2ID_FLOOR
from homewarden.domain.audit import Actor, ActorKind, AuditEntry, AuditTag
from homewarden.domain.permissions import Role
from homewarden.errors import (
    AuthenticationError,
    HomeWardenError,
    KeyUnavailableError,
    PermissionDeniedError,
)
from homewarden.services.accounts import AccountService
from homewarden.services.audit import AuditLog
from homewarden.services.household_keys import KeyRing, attach
from homewarden.services.sealed_footage import (
    SegmentSealing,
    open_sealed_segment,
    seal_segment_file,
)
from homewarden.store.index import Index
from homewarden.store.records import SegmentRecord
from tests.package_footage import T0, record_bikes
from tests.web.helpers import PASSWORD, Clock

OPERATOR = Actor(ActorKind.LOCAL_OPERATOR, "cli:test")
HOST = "192.0.2.10"


def record_sealed(
    index: Index, ring: KeyRing, data_dir: Path, camera: str, household: str, t0: float
) -> tuple[list[SegmentRecord], dict[str, bytes]]:
    """Record bikes.mp4 on ``camera`` from ``t0`` and seal each segment to ``household``'s
    current key as the recorder does on close (the plaintext deleted); returns the indexed
    sealed segments and each one's plaintext (by sealed path), read before sealing."""
    media = data_dir / "media"
    plain: dict[str, bytes] = {}
    for seg in record_bikes(data_dir, camera, t0):
        data = (media / seg.path).read_bytes()
        done = seal_segment_file(
            media / seg.path, media, seg.path, camera, seg.start, SegmentSealing(household, ring)
        )
        assert not (media / seg.path).exists()
        index.add_segment(
            replace(seg, path=done.path, bytes=done.bytes, sealed=True, key_id=done.key_id)
        )
        plain[done.path] = data
    segs = [s for s in index.segments(camera, t0, t0 + 3600) if s.sealed]
    assert len(segs) == len(plain) > 1
    return segs, plain


@dataclass
class Env:
    accounts: AccountService
    ring: KeyRing
    audit: AuditLog
    index: Index
    settings: Settings

    def entries(self, since: int) -> list[AuditEntry]:
        return [self.audit.entry(i) for i in range(since, self.audit.size())]

    def owner_revokes(self, member: str, camera: str) -> None:
        principal = self.accounts.principal_of(self.accounts.user_by_name("owner"))
        user = self.accounts.user_by_name(member)
        self.accounts.revoke_camera(principal, user.id, camera, Actor.of_principal(principal))

    def owner_grants(self, member: str, camera: str) -> None:
        principal = self.accounts.principal_of(self.accounts.user_by_name("owner"))
        user = self.accounts.user_by_name(member)
        self.accounts.grant_camera(principal, user.id, camera, Actor.of_principal(principal))


@pytest.fixture
def env(index: Index, database_url: str, tmp_path: Path) -> Iterator[Env]:
    """Household ``home`` (cameras ``front``, ``back``) with its owner set up (password
    :data:`PASSWORD`), and household ``farm`` (``barn``), whose owner never set one."""
    settings = Settings(
        data_dir=tmp_path,
        database_url=database_url,
        cameras={
            "front": {"url": "file:/dev/null"},
            "back": {"url": "file:/dev/null"},
            "barn": {"url": "file:/dev/null", "household": "farm"},
        },
    )
    clock = Clock(1_764_403_200.0)
    with AuditLog.open(database_url, settings.keys_dir, clock=clock) as audit:
        accounts = AccountService(index, audit, settings, clock=clock)
        ring = attach(accounts, index, audit, settings.keys_dir, clock=clock, params=ARGON2ID_FLOOR)
        accounts.ensure_households()
        secret = accounts.bootstrap_owner()
        assert secret is not None
        accounts.complete_setup(secret, PASSWORD)
        yield Env(accounts, ring, audit, index, settings)


def test_the_owners_password_opens_real_sealed_footage_at_the_shell_audited(env: Env) -> None:
    segs, plain = record_sealed(env.index, env.ring, env.settings.data_dir, "front", "home", T0)
    mark = env.audit.size()
    keys = env.ring.unlock_with_password(
        "owner", PASSWORD, OPERATOR, cameras=["front"], purpose="clip of camera front"
    )
    for seg in segs:
        assert open_sealed_segment(env.settings.media_dir, seg, "home", keys) == plain[seg.path]
    (entry,) = env.entries(mark)  # one unlock entry; opening segments writes none
    assert entry.action is AuditTag.KEY_SHELL_UNLOCK
    assert entry.actor == OPERATOR
    assert entry.subject.household == "home"
    assert entry.subject.key == segs[0].key_id.hex()  # type: ignore[union-attr]
    assert "owner's password opened" in entry.reason
    assert "clip of camera front" in entry.reason
    # another household's key is not among them
    with pytest.raises(KeyUnavailableError):
        keys("farm", env.ring.recording_key("farm")[0])


@pytest.mark.parametrize("who", ["owner", "nobody"])
def test_a_wrong_password_or_unknown_user_is_refused_as_at_login_and_audited(
    env: Env, who: str
) -> None:
    mark = env.audit.size()
    with pytest.raises(AuthenticationError, match=r"^wrong username or password$") as caught:
        env.ring.unlock_with_password(who, "not the password", OPERATOR, purpose="clip")
    assert isinstance(caught.value, HomeWardenError)
    (entry,) = env.entries(mark)
    assert entry.action is AuditTag.KEY_SHELL_UNLOCK
    assert entry.reason.startswith(f"refused for {who} (clip): wrong username or password")
    # no login throttle at the shell (said in the docstring): the web login still works
    step = env.accounts.login("owner", PASSWORD, HOST)
    assert not step.needs_totp


def test_a_revoked_member_cannot_open_footage_sealed_after_the_revocation(env: Env) -> None:
    env.accounts.add_user("mia", Role.MEMBER, "home", actor=OPERATOR, password=PASSWORD)
    env.owner_grants("mia", "front")
    with pytest.raises(AuthenticationError, match="no key pair yet"):
        env.ring.unlock_with_password("mia", PASSWORD, OPERATOR)
    env.accounts.login("owner", PASSWORD, HOST)
    env.accounts.login("mia", PASSWORD, HOST)  # her key pair made, the grant completed
    before, plain = record_sealed(env.index, env.ring, env.settings.data_dir, "front", "home", T0)
    held = env.ring.unlock_with_password("mia", PASSWORD, OPERATOR, cameras=["front"])
    assert (
        open_sealed_segment(env.settings.media_dir, before[0], "home", held)
        == plain[before[0].path]
    )
    env.owner_revokes("mia", "front")  # her seals destroyed, the key rotated
    after, _ = record_sealed(env.index, env.ring, env.settings.data_dir, "front", "home", T0 + 3600)
    assert after[0].key_id != before[0].key_id
    mark = env.audit.size()
    keys = env.ring.unlock_with_password("mia", PASSWORD, OPERATOR)
    (entry,) = env.entries(mark)
    assert "opened 0 key versions" in entry.reason
    for seg in (after[0], before[0]):
        with pytest.raises(KeyUnavailableError, match="revoked"):
            open_sealed_segment(env.settings.media_dir, seg, "home", keys)
    # the key source taken before the revocation stops at once too
    with pytest.raises(KeyUnavailableError):
        open_sealed_segment(env.settings.media_dir, before[0], "home", held)
    # the owner still opens both
    owner = env.ring.unlock_with_password("owner", PASSWORD, OPERATOR)
    assert open_sealed_segment(env.settings.media_dir, after[0], "home", owner)
    assert open_sealed_segment(env.settings.media_dir, before[0], "home", owner)
    # and asked for a camera she is not granted, she is refused (audited)
    mark = env.audit.size()
    with pytest.raises(PermissionDeniedError, match="not granted camera"):
        env.ring.unlock_with_password("mia", PASSWORD, OPERATOR, cameras=["front"])
    assert [e.action for e in env.entries(mark)] == [AuditTag.KEY_SHELL_UNLOCK]


def test_people_without_keys_are_refused_with_the_reason(env: Env) -> None:
    env.accounts.add_user("kim", Role.MEMBER, "home", actor=OPERATOR, password=PASSWORD)
    kim = env.accounts.user_by_name("kim")
    env.accounts.set_disabled(kim.id, True, actor=OPERATOR)
    with pytest.raises(AuthenticationError, match="disabled"):
        env.ring.unlock_with_password("kim", PASSWORD, OPERATOR)
    env.accounts.add_user("lena", Role.LEGAL_REVIEWER, None, actor=OPERATOR, password=PASSWORD)
    with pytest.raises(AuthenticationError, match="no household"):
        env.ring.unlock_with_password("lena", PASSWORD, OPERATOR)
