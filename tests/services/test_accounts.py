"""The account service on SQLite and PostgreSQL: TOTP (RFC 6238), staff rules, disabled
accounts, API tokens, one-time setup links, login throttling and unlock."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pyotp
import pytest
from sqlalchemy import create_engine, text

from homewarden.config import Settings
from homewarden.domain import accounts as rules
from homewarden.domain.audit import Actor, ActorKind
from homewarden.domain.permissions import PrincipalKind, Role
from homewarden.errors import (
    AuditUnavailableError,
    AuthenticationError,
    DatabaseError,
    InvalidRequestError,
    TooManyAttemptsError,
)
from homewarden.services.accounts import AccountService
from homewarden.services.audit import AuditLog
from homewarden.store.index import Index
from tests.web.helpers import PASSWORD, Clock

OPERATOR = Actor(ActorKind.LOCAL_OPERATOR, "cli:test")
HOST = "192.0.2.10"


@dataclass
class Env:
    accounts: AccountService
    clock: Clock
    audit: AuditLog


@pytest.fixture
def env(index: Index, database_url: str, tmp_path: Path) -> Iterator[Env]:
    settings = Settings(data_dir=tmp_path, database_url=database_url)
    clock = Clock(1_700_000_000.0)
    with AuditLog.open(database_url, settings.keys_dir, clock=clock) as audit:
        accounts = AccountService(index, audit, settings, clock=clock)
        accounts.ensure_households()
        yield Env(accounts, clock, audit)


def _with_totp(env: Env, name: str, role: Role = Role.OWNER) -> tuple[int, pyotp.TOTP]:
    household = None if role.is_staff else "home"
    made = env.accounts.add_user(name, role, household, actor=OPERATOR)
    assert made.setup_secret is not None
    secret = pyotp.random_base32()
    totp = pyotp.TOTP(secret)
    env.accounts.complete_setup(
        made.setup_secret, PASSWORD, totp_secret=secret, totp_code=totp.at(env.clock())
    )
    return made.user.id, totp


def test_totp_login_accepts_one_step_of_skew_and_refuses_replay(env: Env) -> None:
    _, totp = _with_totp(env, "owner")
    env.clock.advance(300)
    step = env.accounts.login("owner", PASSWORD, HOST)
    assert step.needs_totp
    # two steps behind: refused
    with pytest.raises(AuthenticationError):
        env.accounts.verify_totp(step.session_secret, totp.at(env.clock() - 60), HOST)
    # one step behind: accepted (RFC 6238 section 5.2)
    done = env.accounts.verify_totp(step.session_secret, totp.at(env.clock() - 30), HOST)
    assert not done.needs_totp
    assert done.session_secret != step.session_secret
    assert env.accounts.principal_for_session(done.session_secret, HOST) is not None
    assert env.accounts.principal_for_session(step.session_secret, HOST) is None
    # the same code (and any older step) is never accepted again
    again = env.accounts.login("owner", PASSWORD, HOST)
    with pytest.raises(AuthenticationError, match="already used"):
        env.accounts.verify_totp(again.session_secret, totp.at(env.clock() - 30), HOST)
    # one step ahead: accepted
    ahead = env.accounts.verify_totp(again.session_secret, totp.at(env.clock() + 30), HOST)
    assert not ahead.needs_totp


def test_staff_must_enrol_totp(env: Env) -> None:
    made = env.accounts.add_user("helper", Role.SUPPORT, None, actor=OPERATOR)
    assert made.setup_secret is not None
    with pytest.raises(InvalidRequestError, match="TOTP"):
        env.accounts.complete_setup(made.setup_secret, PASSWORD)
    # staff made with a password but no TOTP cannot log in
    env.accounts.add_user("legal", Role.LEGAL_REVIEWER, None, actor=OPERATOR, password=PASSWORD)
    with pytest.raises(AuthenticationError, match="TOTP"):
        env.accounts.login("legal", PASSWORD, HOST)
    with pytest.raises(InvalidRequestError):
        env.accounts.add_user("x", Role.SUPPORT, "home", actor=OPERATOR)
    with pytest.raises(InvalidRequestError):
        env.accounts.add_user("y", Role.MEMBER, None, actor=OPERATOR)
    user_id, _ = _with_totp(env, "staffer", Role.SUPPORT)
    with pytest.raises(Exception, match="keep TOTP"):
        env.accounts.disable_totp(user_id, PASSWORD)


def test_a_disabled_account_cannot_log_in_and_its_sessions_and_tokens_die(env: Env) -> None:
    user = env.accounts.add_user("kid", Role.MEMBER, "home", actor=OPERATOR, password=PASSWORD)
    step = env.accounts.login("kid", PASSWORD, HOST)
    token, _ = env.accounts.create_token(user.user.id, "script")
    assert env.accounts.principal_for_token(token, HOST) is not None
    env.accounts.set_disabled(user.user.id, True, actor=OPERATOR)
    assert env.accounts.principal_for_session(step.session_secret, HOST) is None
    assert env.accounts.principal_for_token(token, HOST) is None
    with pytest.raises(AuthenticationError, match="wrong username or password"):
        env.accounts.login("kid", PASSWORD, HOST)
    env.accounts.set_disabled(user.user.id, False, actor=OPERATOR)
    assert env.accounts.principal_for_token(token, HOST) is not None


def test_tokens_are_stored_hashed_shown_once_and_revocable(env: Env, database_url: str) -> None:
    user = env.accounts.add_user("pat", Role.OWNER, "home", actor=OPERATOR, password=PASSWORD)
    secret, rec = env.accounts.create_token(user.user.id, "backup")
    assert secret.startswith("hw_")
    assert rec.prefix == secret[:10]
    principal = env.accounts.principal_for_token(secret, HOST)
    assert principal is not None
    assert (principal.kind, principal.via_token, principal.role) == (
        PrincipalKind.USER,
        True,
        Role.OWNER,
    )
    engine = create_engine(database_url)
    try:
        with engine.connect() as conn:
            stored = conn.execute(text("SELECT token_hash FROM api_tokens")).scalars().all()
    finally:
        engine.dispose()
    assert stored
    assert secret not in stored
    assert env.accounts.principal_for_token("hw_" + "x" * 43, HOST) is None
    assert env.accounts.principal_for_token("not-a-token", HOST) is None
    env.accounts.revoke_token(user.user.id, rec.id)
    assert env.accounts.principal_for_token(secret, HOST) is None
    other = env.accounts.add_user("sam", Role.MEMBER, "home", actor=OPERATOR, password=PASSWORD)
    with pytest.raises(Exception, match="no token"):
        env.accounts.revoke_token(other.user.id, rec.id)  # not theirs
    with pytest.raises(InvalidRequestError):
        env.accounts.create_token(user.user.id, "  ")


def test_a_setup_link_works_once_even_under_two_concurrent_uses(env: Env) -> None:
    made = env.accounts.add_user("kid", Role.MEMBER, "home", actor=OPERATOR)
    assert made.setup_secret is not None
    results: list[str] = []
    barrier = threading.Barrier(2)

    def use(password: str) -> None:
        barrier.wait()
        try:
            env.accounts.complete_setup(made.setup_secret or "", password)
            results.append(password)
        except AuthenticationError:
            results.append("refused")

    threads = [
        threading.Thread(target=use, args=(p,))
        for p in ("first long password", "second long password")
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results).count("refused") == 1, results
    (winner,) = [r for r in results if r != "refused"]
    assert env.accounts.login("kid", winner, HOST)
    with pytest.raises(AuthenticationError, match="used or expired"):
        env.accounts.complete_setup(made.setup_secret, "third long password")


def test_a_setup_link_expires(env: Env) -> None:
    made = env.accounts.add_user("kid", Role.MEMBER, "home", actor=OPERATOR)
    env.clock.advance(rules.SETUP_LINK_TTL + 1)
    with pytest.raises(AuthenticationError, match="expired"):
        env.accounts.complete_setup(made.setup_secret or "", PASSWORD)


def test_lockout_is_per_username_and_address_and_temporary(env: Env) -> None:
    env.accounts.add_user("owner", Role.OWNER, "home", actor=OPERATOR, password=PASSWORD)
    for _ in range(rules.LOCK_AFTER):
        with pytest.raises(AuthenticationError):
            env.accounts.login("owner", "wrong password!", HOST)
    with pytest.raises(TooManyAttemptsError) as locked:
        env.accounts.login("owner", PASSWORD, HOST)
    assert locked.value.retry_after == pytest.approx(rules.LOCK_BASE)
    assert env.accounts.login("owner", PASSWORD, "198.51.100.1")  # elsewhere: fine
    env.clock.advance(rules.LOCK_BASE)
    # one more failure after the lock doubles it
    with pytest.raises(AuthenticationError):
        env.accounts.login("owner", "wrong password!", HOST)
    with pytest.raises(TooManyAttemptsError) as doubled:
        env.accounts.login("owner", PASSWORD, HOST)
    assert doubled.value.retry_after == pytest.approx(2 * rules.LOCK_BASE)
    env.clock.advance(2 * rules.LOCK_BASE)
    assert env.accounts.login("owner", PASSWORD, HOST)
    # success cleared the count: five more are needed for a new lock
    for _ in range(rules.LOCK_AFTER - 1):
        with pytest.raises(AuthenticationError):
            env.accounts.login("owner", "wrong password!", HOST)
    assert env.accounts.login("owner", PASSWORD, HOST)


def test_unlock_clears_a_lock_at_once(env: Env) -> None:
    user = env.accounts.add_user("owner", Role.OWNER, "home", actor=OPERATOR, password=PASSWORD)
    for _ in range(rules.LOCK_AFTER):
        with pytest.raises(AuthenticationError):
            env.accounts.login("owner", "wrong password!", HOST)
    with pytest.raises(TooManyAttemptsError):
        env.accounts.login("owner", PASSWORD, HOST)
    env.accounts.unlock(user.user.id, actor=OPERATOR)
    assert env.accounts.login("owner", PASSWORD, HOST)


def test_an_address_has_a_ceiling_across_usernames(env: Env) -> None:
    env.accounts.add_user("owner", Role.OWNER, "home", actor=OPERATOR, password=PASSWORD)
    for i in range(rules.IP_MAX_FAILURES):
        with pytest.raises(AuthenticationError):  # never the same name twice: no pair lock
            env.accounts.login(f"guess{i}", "whatever pass", "203.0.113.66")
    with pytest.raises(TooManyAttemptsError, match=r"203\.0\.113\.66"):
        env.accounts.login("owner", PASSWORD, "203.0.113.66")
    assert env.accounts.login("owner", PASSWORD, HOST)  # other addresses are not affected
    env.clock.advance(rules.IP_WINDOW)
    assert env.accounts.login("owner", PASSWORD, "203.0.113.66")


def test_support_grant_with_an_overlong_reason_is_refused_and_not_stored(env: Env) -> None:
    """Regression: a reason too long for the audit entry was refused only after the grant
    was stored, leaving staff support an active grant no audit entry accounts for."""
    owner_id = env.accounts.add_user("o1", Role.OWNER, "home", actor=OPERATOR, password=PASSWORD)
    owner = env.accounts.principal_of(owner_id.user)
    size = env.audit.size()
    with pytest.raises(InvalidRequestError, match="reason to 400 characters"):
        env.accounts.grant_support(owner, 2, "x" * 490, OPERATOR)
    assert env.accounts.support_grants("home") == []
    assert env.audit.size() == size


def test_a_grant_the_audit_log_cannot_record_is_taken_back(
    env: Env, monkeypatch: pytest.MonkeyPatch
) -> None:
    owner = env.accounts.principal_of(
        env.accounts.add_user("o2", Role.OWNER, "home", actor=OPERATOR, password=PASSWORD).user
    )

    def broken(*_: object, **__: object) -> None:
        raise DatabaseError("disk I/O error")

    monkeypatch.setattr(env.audit, "append", broken)
    with pytest.raises(AuditUnavailableError, match="not granted"):
        env.accounts.grant_support(owner, 2, "printer help", OPERATOR)
    (grant,) = env.accounts.support_grants("home")
    assert grant.revoked_at is not None
    assert env.accounts.store.support_grants("home", active_at=env.clock()) == []
