"""The household key service on SQLite and PostgreSQL (DESIGN.md flow 8, issue 6): first-run
keys and the owner's setup, unlock at login into session memory, grants and revocations with
rotation, the recovery code, escrow under the owner's switch, the audit of every key use, and
an attacker holding the database and the data dir.

Password wraps here use libsodium's minimum Argon2id cost (``ARGON2ID_FLOOR``, passed
explicitly): the production default (``WRAP_ARGON2ID``, ~80 ms a derivation) is what
``attach`` uses unless told otherwise, and is checked below.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pyotp
import pytest
from sqlalchemy import create_engine, select

from homewarden.config import Settings
from homewarden.crypto.household_keys import (
    ARGON2ID_FLOOR,
    WRAP_ARGON2ID,
    HouseholdKeyPair,
    KeyId,
    combine_escrow_shares,
    new_recovery_code,
    unwrap_holder_with_passphrase,
    unwrap_holder_with_recovery_code,
)
from homewarden.domain import accounts as rules
from homewarden.domain.audit import Actor, ActorKind, AuditTag
from homewarden.domain.disclosure import Policy
from homewarden.domain.permissions import Principal, Role
from homewarden.errors import (
    AuthenticationError,
    InvalidRequestError,
    KeyShareError,
    KeysLockedError,
    KeyUnavailableError,
    PermissionDeniedError,
    WrongKeyError,
)
from homewarden.services.accounts import AccountService, LoginStep
from homewarden.services.audit import AuditLog
from homewarden.services.disclosure import policy_to_json
from homewarden.services.household_keys import KeyRing, attach
from homewarden.store import household_key_store as hks
from homewarden.store.disclosure_store import DisclosureStore
from homewarden.store.index import Index
from homewarden.store.models import Base, HouseholdKeySealRow
from tests.web.helpers import PASSWORD, Clock

HOST = "192.0.2.10"
OPERATOR = Actor(ActorKind.LOCAL_OPERATOR, "cli:test")
CUSTODIANS = Actor(ActorKind.STAFF, "custodians")
NEW_PASSWORD = "a new and long passphrase"


@dataclass
class Env:
    accounts: AccountService
    keys: KeyRing
    audit: AuditLog
    clock: Clock
    index: Index
    settings: Settings
    database_url: str

    def login(self, username: str, password: str = PASSWORD) -> LoginStep:
        step = self.accounts.login(username, password, HOST)
        assert not step.needs_totp
        return step

    def owner_principal(self, username: str = "owner") -> tuple[Principal, Actor]:
        user = self.accounts.user_by_name(username)
        principal = self.accounts.principal_of(user)
        return principal, Actor.of_principal(principal)

    def grant(self, member: str, camera: str = "front", owner: str = "owner") -> None:
        principal = self.accounts.principal_of(self.accounts.user_by_name(owner))
        user = self.accounts.user_by_name(member)
        self.accounts.grant_camera(principal, user.id, camera, Actor.of_principal(principal))

    def revoke(self, member: str, camera: str = "front", owner: str = "owner") -> None:
        principal = self.accounts.principal_of(self.accounts.user_by_name(owner))
        user = self.accounts.user_by_name(member)
        self.accounts.revoke_camera(principal, user.id, camera, Actor.of_principal(principal))

    def member(self, name: str, *cameras: str) -> None:
        self.accounts.add_user(name, Role.MEMBER, "home", actor=OPERATOR, password=PASSWORD)
        for camera in cameras:
            self.grant(name, camera)

    def current(self, household: str = "home") -> KeyId:
        return self.keys.recording_key(household)[0]

    def tags(self, since: int = 0) -> list[AuditTag]:
        return [self.audit.entry(i).action for i in range(since, self.audit.size())]


@pytest.fixture
def env(index: Index, database_url: str, tmp_path: Path) -> Iterator[Env]:
    """Households ``home`` (cameras ``front``, ``back``) and ``farm`` (``barn``), their
    first keys made; no owner yet."""
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
        keys = attach(accounts, index, audit, settings.keys_dir, clock=clock, params=ARGON2ID_FLOOR)
        accounts.ensure_households()
        yield Env(accounts, keys, audit, clock, index, settings, database_url)


def _setup_owner(env: Env) -> str:
    """The first run's owner sets a password through the setup link; returns the recovery
    code the setup yielded."""
    secret = env.accounts.bootstrap_owner()
    assert secret is not None
    owner = env.accounts.complete_setup(secret, PASSWORD)
    code = env.keys.take_setup_recovery_code(owner.id)
    assert code is not None
    return code


def _setup_files(env: Env) -> list[Path]:
    return sorted(env.settings.keys_dir.glob("household_setup_*"))


def test_the_production_argon2id_default_is_rfc_9106s_second_option(env: Env) -> None:
    ring = KeyRing(env.index, env.audit, env.accounts, env.settings.keys_dir)
    assert ring._params == WRAP_ARGON2ID  # the default nobody may lower
    assert (WRAP_ARGON2ID.opslimit, WRAP_ARGON2ID.memlimit) == (3, 64 * 1024 * 1024)


def test_first_run_key_then_owner_setup_yields_a_recovery_code_and_a_public_key(
    env: Env,
) -> None:
    # Before anyone has a password the recorder already has a public key to seal to.
    kid1, public1 = env.keys.recording_key("home")
    assert len(kid1) == 16
    assert len(bytes(public1)) == 32
    assert env.keys.recording_key("farm")[0] != kid1
    assert len(_setup_files(env)) == 2  # one placeholder per household, 0600
    assert all(os.stat(p).st_mode & 0o077 == 0 for p in _setup_files(env))
    assert env.keys.status("home").setup_pending
    env.accounts.ensure_households()  # idempotent: no second key
    assert env.current() == kid1

    code = _setup_owner(env)
    assert len(code) == 39
    assert code.count("-") == 7
    owner = env.accounts.user_by_name("owner")
    assert env.keys.take_setup_recovery_code(owner.id) is None  # shown once
    # setup rotated: new footage goes to a key that never sat on disk
    kid2, public2 = env.keys.recording_key("home")
    assert kid2 != kid1
    assert public2 != public1
    status = env.keys.status("home")
    assert not status.setup_pending
    assert status.recovery_code
    assert [v.version for v in status.versions] == [1, 2]
    assert status.versions[0].retired_at is not None
    assert status.versions[1].retired_at is None
    assert sorted(status.versions[1].holders) == ["person:owner", "recovery"]
    assert len(_setup_files(env)) == 1  # farm has no owner yet: its placeholder stays

    step = env.login("owner")
    new = env.keys.private_key(step.session, "home", kid2)
    old = env.keys.private_key(step.session.id, "home", kid1.hex())
    assert new.public == public2
    assert old.public == public1
    tags = env.tags()
    for tag in (
        AuditTag.KEY_HOUSEHOLD_CREATE,
        AuditTag.KEY_PERSONAL_CREATE,
        AuditTag.KEY_HOUSEHOLD_GRANT,
        AuditTag.KEY_RECOVERY_ROTATE,
        AuditTag.KEY_HOUSEHOLD_ROTATE,
        AuditTag.KEY_HOUSEHOLD_UNLOCK,
    ):
        assert tag in tags, tag


def test_login_unlocks_for_that_session_only_and_logout_and_expiry_drop_it(env: Env) -> None:
    _setup_owner(env)
    kid = env.current()
    first = env.login("owner")
    second = env.login("owner")
    assert env.keys.private_key(first.session, "home", kid).key_id == kid
    assert env.keys.is_unlocked(second.session)
    env.accounts.logout(first.session_secret)
    with pytest.raises(KeysLockedError):
        env.keys.private_key(first.session, "home", kid)
    assert env.keys.private_key(second.session, "home", kid).key_id == kid  # the other lives
    with pytest.raises(KeyUnavailableError, match="farm"):
        env.keys.private_key(second.session, "farm", env.current("farm"))
    with pytest.raises(KeyUnavailableError, match="no household key"):
        env.keys.private_key(second.session, "home", bytes(16))
    with pytest.raises(KeysLockedError):
        env.keys.private_key("not-a-session", "home", kid)

    # idle expiry: the session row says so, and the keys go with it
    env.clock.advance(rules.SESSION_IDLE + 1)
    with pytest.raises(KeysLockedError, match="ended or expired"):
        env.keys.private_key(second.session, "home", kid)
    assert not env.keys.is_unlocked(second.session)
    third = env.login("owner")
    assert env.keys.is_unlocked(third.session)
    env.clock.advance(rules.SESSION_IDLE + 1)
    assert env.accounts.session(third.session_secret) is None  # expiry seen by accounts
    assert env.keys.sweep() == 0  # already dropped by the expiry
    assert not env.keys.is_unlocked(third.session)


def test_totp_login_unlocks_only_once_the_code_is_right(env: Env) -> None:
    _setup_owner(env)
    owner = env.accounts.user_by_name("owner")
    enrolment = env.accounts.begin_totp(owner.id)
    totp = pyotp.TOTP(enrolment.secret)
    env.accounts.confirm_totp(owner.id, enrolment.secret, totp.at(env.clock()))
    env.clock.advance(60)
    step = env.accounts.login("owner", PASSWORD, HOST)
    assert step.needs_totp
    with pytest.raises(KeysLockedError):
        env.keys.private_key(step.session, "home", env.current())
    with pytest.raises(AuthenticationError):
        env.accounts.verify_totp(step.session_secret, "000000", HOST)
    done = env.accounts.verify_totp(step.session_secret, totp.at(env.clock()), HOST)
    assert env.keys.private_key(done.session, "home", env.current()).key_id == env.current()
    # a login left waiting longer than the TOTP window keeps nothing
    env.clock.advance(60)
    late = env.accounts.login("owner", PASSWORD, HOST)
    env.clock.advance(rules.MFA_PENDING + 1)
    assert env.keys.sweep() >= 1
    with pytest.raises(AuthenticationError):
        env.accounts.verify_totp(late.session_secret, totp.at(env.clock()), HOST)


def test_password_change_rewraps_the_persons_key(env: Env) -> None:
    _setup_owner(env)
    owner = env.accounts.user_by_name("owner")
    before = env.keys.store.person(owner.id)
    assert before is not None
    assert before.wrap is not None
    step = env.login("owner")
    env.accounts.change_password(owner.id, PASSWORD, NEW_PASSWORD)
    with pytest.raises(KeysLockedError):  # every session ended with the change
        env.keys.private_key(step.session, "home", env.current())
    after = env.keys.store.person(owner.id)
    assert after is not None
    assert after.wrap is not None
    assert after.key_id == before.key_id
    assert after.wrap != before.wrap
    with pytest.raises(WrongKeyError):
        unwrap_holder_with_passphrase(after.wrap, PASSWORD)
    again = env.login("owner", NEW_PASSWORD)
    assert env.keys.private_key(again.session, "home", env.current()).key_id == env.current()
    assert AuditTag.KEY_PERSONAL_REWRAP in env.tags()


def test_member_grant_then_member_unlocks(env: Env) -> None:
    _setup_owner(env)
    owner_step = env.login("owner")  # the granting owner is unlocked
    env.member("mia", "front")  # made with a password: no key pair until her login
    mia = env.accounts.user_by_name("mia")
    assert env.keys.store.person(mia.id) is None
    step = env.login("mia")  # her key pair is made; the unlocked owner's grant completes
    kid = env.current()
    assert env.keys.private_key(step.session, "home", kid).key_id == kid
    people = {p.username: p for p in env.keys.status("home").people}
    assert people["mia"].entitled
    assert not people["mia"].pending
    assert people["mia"].versions == [1, 2]

    # a member granted while no owner is unlocked waits for an owner's next unlock
    env.accounts.logout(owner_step.session_secret)
    env.member("max", "back")
    max_step = env.login("max")
    with pytest.raises(KeyUnavailableError):
        env.keys.private_key(max_step.session, "home", kid)
    assert {p.username: p for p in env.keys.status("home").people}["max"].pending
    env.login("owner")  # the owner's unlock completes pending grants
    assert env.keys.private_key(max_step.session, "home", kid).key_id == kid
    # a member without a camera grant is never sealed anything
    env.member("noa")
    noa = env.login("noa")
    with pytest.raises(KeyUnavailableError):
        env.keys.private_key(noa.session, "home", kid)
    assert AuditTag.KEY_HOUSEHOLD_GRANT in env.tags()


def test_revoking_a_member_rotates_and_leaves_them_no_seal_of_the_new_key(env: Env) -> None:
    _setup_owner(env)
    owner = env.login("owner")
    env.member("mia", "front", "back")
    env.member("max", "front")
    mia, mx = env.login("mia"), env.login("max")
    old = env.current()
    assert env.keys.private_key(mia.session, "home", old).key_id == old

    env.revoke("mia", "front")  # she keeps "back": nothing changes
    assert env.current() == old
    mark = env.audit.size()
    env.revoke("mia", "back")  # her last camera: revoked and rotated
    new = env.current()
    assert new != old
    assert env.tags(mark)[-2:] == [AuditTag.KEY_HOUSEHOLD_REVOKE, AuditTag.KEY_HOUSEHOLD_ROTATE]
    for kid in (old, new):
        with pytest.raises(KeyUnavailableError):
            env.keys.private_key(mia.session, "home", kid)
    mia_holder = env.keys.store.person(env.accounts.user_by_name("mia").id)
    assert mia_holder is not None
    assert env.keys.store.holder_seals(mia_holder.id) == []
    # the remaining people hold the new version and still the old one
    for step in (owner, mx):
        assert env.keys.private_key(step.session, "home", new).key_id == new
        assert env.keys.private_key(step.session, "home", old).key_id == old
    again = env.login("mia")
    with pytest.raises(KeyUnavailableError):
        env.keys.private_key(again.session, "home", new)

    # disabling a member revokes too; re-enabling waits for an owner's grant
    mark = env.audit.size()
    max_user = env.accounts.user_by_name("max")
    env.accounts.set_disabled(max_user.id, True, actor=OPERATOR)
    assert AuditTag.KEY_HOUSEHOLD_ROTATE in env.tags(mark)
    newest = env.current()
    env.accounts.set_disabled(max_user.id, False, actor=OPERATOR)
    max_again = env.login("max")
    env.login("owner")
    assert env.keys.private_key(max_again.session, "home", newest).key_id == newest

    # the owner's route-level revoke withdraws the camera grants with the keys
    env.grant("mia", "front")
    owner_principal, actor = env.owner_principal()
    before = env.current()
    env.keys.revoke(owner_principal, env.accounts.user_by_name("mia").id, actor)
    assert env.accounts.camera_grants(env.accounts.user_by_name("mia").id) == frozenset()
    assert env.current() != before


def test_recovery_code_unlocks_and_resets_a_forgotten_password(env: Env) -> None:
    code = _setup_owner(env)
    env.member("mia", "front")
    env.login("owner")
    env.login("mia")
    versions = [bytes.fromhex(v.key_id) for v in env.keys.status("home").versions]
    step = env.login("owner")
    mark = env.audit.size()
    with pytest.raises(AuthenticationError, match="wrong username or recovery code"):
        env.keys.recover("owner", new_recovery_code().text, NEW_PASSWORD, HOST)
    with pytest.raises(AuthenticationError, match="mistyped"):
        env.keys.recover("owner", code[:-1] + ("0" if code[-1] != "0" else "1"), NEW_PASSWORD, HOST)
    with pytest.raises(AuthenticationError, match="wrong username or recovery code"):
        env.keys.recover("mia", code, NEW_PASSWORD, HOST)  # a member has no recovery code
    with pytest.raises(InvalidRequestError):
        env.keys.recover("owner", code, "short", HOST)  # checked before anything changes
    assert env.tags(mark).count(AuditTag.KEY_RECOVERY_USE) == 2  # the two refusals

    replacement = env.keys.recover("owner", code, NEW_PASSWORD, HOST)
    assert replacement != code
    with pytest.raises(KeysLockedError):  # the owner's sessions ended
        env.keys.private_key(step.session, "home", versions[-1])
    with pytest.raises(AuthenticationError):
        env.accounts.login("owner", PASSWORD, HOST)
    back = env.login("owner", NEW_PASSWORD)
    for kid in versions:
        assert env.keys.private_key(back.session, "home", kid).key_id == kid
    with pytest.raises(AuthenticationError):  # a used code is replaced
        env.keys.recover("owner", code, "yet another passphrase", HOST)
    assert env.keys.recover("owner", replacement, "yet another passphrase", HOST)
    assert AuditTag.KEY_RECOVERY_USE in env.tags(mark)


def test_rotating_the_recovery_code_invalidates_the_old_one(env: Env) -> None:
    old_code = _setup_owner(env)
    step = env.login("owner")
    holder = env.keys.store.holders("home", hks.RECOVERY)[0]
    mark = env.audit.size()
    new_code = env.keys.rotate_recovery(step.session, Actor(ActorKind.USER, "1"))
    assert env.tags(mark) == [AuditTag.KEY_RECOVERY_ROTATE]
    assert new_code != old_code
    [fresh] = env.keys.store.holders("home", hks.RECOVERY)
    assert fresh.id != holder.id
    assert fresh.wrap is not None
    with pytest.raises(WrongKeyError):
        unwrap_holder_with_recovery_code(fresh.wrap, old_code)
    with pytest.raises(AuthenticationError):
        env.keys.recover("owner", old_code, NEW_PASSWORD, HOST)
    env.keys.recover("owner", new_code, NEW_PASSWORD, HOST)
    with pytest.raises(KeysLockedError):
        env.keys.rotate_recovery("no-such-session", Actor(ActorKind.USER, "1"))


def test_escrow_is_off_by_default_and_an_emergency_needs_two_different_custodians(
    env: Env,
) -> None:
    _setup_owner(env)
    owner = env.login("owner")
    principal, actor = env.owner_principal()
    engine = create_engine(env.database_url)

    def escrow_seals() -> int:
        with engine.connect() as conn:
            q = select(HouseholdKeySealRow.id).where(HouseholdKeySealRow.escrow_key_id.is_not(None))
            return len(conn.execute(q).all())

    try:
        assert escrow_seals() == 0
        assert not env.keys.status("home").escrow_enabled
        with pytest.raises(PermissionDeniedError, match="provider cannot produce"):
            env.keys.open_for_emergency("home", [], CUSTODIANS, request="R-1")
        with pytest.raises(InvalidRequestError, match="escrow init"):
            env.keys.enable_escrow(owner.session, actor)
        shares = env.keys.init_escrow(OPERATOR)
        assert len(shares) == 3
        assert len(set(shares)) == 3
        with pytest.raises(InvalidRequestError, match="already"):
            env.keys.init_escrow(OPERATOR)
        stored = env.keys.store.escrow_key()
        assert stored is not None
        assert (stored.threshold, stored.shares) == (2, 3)
        assert combine_escrow_shares(shares[:2]).key_id == stored.key_id

        assert env.keys.enable_escrow(owner.session, actor) == 2
        assert escrow_seals() == 2
        assert env.keys.status("home").escrow_enabled
        mark = env.audit.size()
        with pytest.raises(KeyShareError, match="needs 2 different"):
            env.keys.open_for_emergency("home", shares[:1], CUSTODIANS, request="R-1")
        with pytest.raises(KeyShareError, match="same share"):
            env.keys.open_for_emergency("home", [shares[0], shares[0]], CUSTODIANS)
        assert env.tags(mark) == [AuditTag.KEY_ESCROW_USE, AuditTag.KEY_ESCROW_USE]
        opened = env.keys.open_for_emergency("home", shares[1:], CUSTODIANS, request="R-1")
        assert env.audit.entry(env.audit.size() - 1).subject.request == "R-1"
        for kid_hex, pair in opened.items():
            mine = env.keys.private_key(owner.session, "home", kid_hex)
            assert bytes(pair.private) == bytes(mine.private)
        assert len(opened) == 2

        # while on, a rotation seals the new version to escrow too
        env.member("mia", "front")
        env.login("mia")
        env.revoke("mia")
        assert escrow_seals() == 3
        # a policy refusing emergencies refuses the escrow too
        DisclosureStore(env.index).put_policy(
            "home",
            policy_to_json(Policy(emergency_allowed=False)),
            None,
            None,
            now=env.clock(),
            by=None,
        )
        with pytest.raises(PermissionDeniedError, match="policy refuses"):
            env.keys.open_for_emergency("home", shares[:2], CUSTODIANS)

        before = env.current()
        env.keys.disable_escrow(principal, actor)
        assert escrow_seals() == 0
        assert env.current() != before  # rotated beyond escrow's reach
        assert not env.keys.status("home").escrow_enabled
        with pytest.raises(PermissionDeniedError, match="not opted into"):
            env.keys.open_for_emergency("home", shares[:2], CUSTODIANS)
        for tag in (
            AuditTag.KEY_ESCROW_CREATE,
            AuditTag.KEY_ESCROW_ENABLE,
            AuditTag.KEY_ESCROW_USE,
            AuditTag.KEY_ESCROW_DISABLE,
        ):
            assert tag in env.tags(), tag
    finally:
        engine.dispose()


def _database_bytes(env: Env) -> bytes:
    """Everything the database holds, as an attacker with a copy would read it: the SQLite
    files (main and WAL) whole, or every value of every PostgreSQL table."""
    if env.database_url.startswith("sqlite"):
        db = Path(env.database_url.removeprefix("sqlite:///"))
        return b"".join(p.read_bytes() for p in db.parent.glob(db.name + "*"))
    engine = create_engine(env.database_url)
    out = bytearray()
    try:
        with engine.connect() as conn:
            for table in Base.metadata.sorted_tables:
                for row in conn.execute(table.select()):
                    for value in row:
                        if isinstance(value, bytes | bytearray | memoryview):
                            out += bytes(value)
                        elif value is not None:
                            out += str(value).encode()
    finally:
        engine.dispose()
    return bytes(out)


def _data_dir_bytes(env: Env) -> bytes:
    return b"".join(p.read_bytes() for p in env.settings.data_dir.rglob("*") if p.is_file())


def test_attacker_with_the_database_and_data_dir_recovers_no_household_key(env: Env) -> None:
    code = _setup_owner(env)
    owner = env.login("owner")
    env.member("mia", "front")
    env.login("mia")
    env.revoke("mia")
    env.keys.init_escrow(OPERATOR)
    principal, actor = env.owner_principal()
    env.keys.enable_escrow(owner.session, actor)
    env.keys.rotate_recovery(owner.session, actor)
    env.keys.disable_escrow(principal, actor)
    secrets: list[HouseholdKeyPair] = [
        env.keys.private_key(owner.session, "home", v.key_id)
        for v in env.keys.status("home").versions
    ]
    assert len(secrets) >= 4

    # (1) no household private key is anywhere in the database or the data dir, raw or hex
    # (farm's placeholder file holds farm's placeholder key only: its owner has no password)
    blob = _database_bytes(env) + _data_dir_bytes(env)
    for pair in secrets:
        raw = bytes(pair.private)
        assert raw not in blob
        assert raw.hex().encode() not in blob
    assert code.encode() not in blob

    # (2) every wrap refuses guesses: passwords near the real one, usernames, a fresh code
    holders = env.keys.store.holders("home")
    assert {h.kind for h in holders} == {hks.PERSON, hks.RECOVERY}
    guesses = ["owner", "mia", "correct horse battery stapler", PASSWORD.upper(), "password123"]
    for holder in holders:
        assert holder.wrap is not None
        for guess in guesses:
            if holder.kind == hks.PERSON:
                with pytest.raises(WrongKeyError):
                    unwrap_holder_with_passphrase(holder.wrap, guess)
            else:
                with pytest.raises(WrongKeyError):
                    unwrap_holder_with_recovery_code(holder.wrap, new_recovery_code())
    # (3) escrow seals are gone (switched off); the custodians' shares were never stored
    assert not [s for s in env.keys.store.household_seals("home") if s.escrow_key_id]
    # (4) the only placeholder key file left is farm's, whose owner has not set up yet
    farm = env.keys.store.holders("farm", hks.SETUP)
    assert env.keys.store.holders("home", hks.SETUP) == []
    assert _setup_files(env) == [hks.setup_key_path(env.settings.keys_dir, farm[0].key_id)]


def test_every_key_use_is_audited_with_the_key_id(env: Env) -> None:
    _setup_owner(env)
    owner = env.login("owner")
    env.member("mia", "front")
    env.login("mia")
    env.keys.unlock_with_password("owner", PASSWORD, OPERATOR)  # at the shell
    env.revoke("mia")
    shares = env.keys.init_escrow(OPERATOR)
    principal, actor = env.owner_principal()
    env.keys.enable_escrow(owner.session, actor)
    env.keys.open_for_emergency("home", shares[:2], CUSTODIANS)
    env.keys.rotate_recovery(owner.session, actor)
    code = env.keys.rotate_recovery(owner.session, actor)
    env.keys.recover("owner", code, NEW_PASSWORD, HOST)
    env.accounts.change_password(env.accounts.user_by_name("owner").id, NEW_PASSWORD, PASSWORD)
    env.keys.disable_escrow(principal, actor)
    entries = [env.audit.entry(i) for i in range(env.audit.size())]
    seen = {e.action for e in entries if e.action.value.startswith("key:")}
    # key:escrow:share is the share collector's (tests/services/test_emergency_escrow.py)
    assert seen | {AuditTag.KEY_ESCROW_SHARE} == {t for t in AuditTag if t.value.startswith("key:")}
    keyed = {
        AuditTag.KEY_HOUSEHOLD_CREATE,
        AuditTag.KEY_HOUSEHOLD_ROTATE,
        AuditTag.KEY_HOUSEHOLD_UNLOCK,
        AuditTag.KEY_HOUSEHOLD_GRANT,
        AuditTag.KEY_PERSONAL_CREATE,
        AuditTag.KEY_PERSONAL_REWRAP,
        AuditTag.KEY_ESCROW_CREATE,
        AuditTag.KEY_ESCROW_ENABLE,
    }
    for entry in entries:
        if entry.action in keyed:
            assert entry.subject.key is not None, entry
            assert len(entry.subject.key) == 32, entry
    assert not [s for s in env.keys.store.household_seals("home") if s.escrow_key_id]
