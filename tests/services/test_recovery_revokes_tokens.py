"""A forgotten owner password reset with the household's recovery code revokes every API
token of the owner and ends every session of theirs (issue 6), on SQLite and PostgreSQL.

Whoever held the account before the reset (the reason for one) may have made a token; before
this fix it outlived the new password and kept working. Each revocation is an audit entry.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from homewarden.config import Settings
from homewarden.crypto.household_keys import ARGON2ID_FLOOR
from homewarden.domain.audit import AuditEntry, AuditTag
from homewarden.domain.permissions import Role
from homewarden.errors import InvalidRequestError
from homewarden.services.accounts import AccountService
from homewarden.services.audit import AuditLog
from homewarden.services.household_keys import KeyRing, attach
from homewarden.store.index import Index
from tests.web.helpers import PASSWORD, Clock

HOST = "192.0.2.10"
NEW_PASSWORD = "a new and long passphrase"


@dataclass
class Env:
    accounts: AccountService
    keys: KeyRing
    audit: AuditLog

    def entries(self, since: int) -> list[AuditEntry]:
        return [self.audit.entry(i) for i in range(since, self.audit.size())]


@pytest.fixture
def env(index: Index, database_url: str, tmp_path: Path) -> Iterator[Env]:
    """Household ``home`` (camera ``front``) with its first-run owner set up (a recovery
    code waits) and member ``mia`` granted ``front``."""
    settings = Settings(
        data_dir=tmp_path, database_url=database_url, cameras={"front": {"url": "file:/dev/null"}}
    )
    clock = Clock(1_764_403_200.0)
    with AuditLog.open(database_url, settings.keys_dir, clock=clock) as audit:
        accounts = AccountService(index, audit, settings, clock=clock)
        keys = attach(accounts, index, audit, settings.keys_dir, clock=clock, params=ARGON2ID_FLOOR)
        accounts.ensure_households()
        secret = accounts.bootstrap_owner()
        assert secret is not None
        accounts.complete_setup(secret, PASSWORD)
        yield Env(accounts, keys, audit)


def test_recovery_revokes_every_token_and_session_of_the_owner(env: Env) -> None:
    accounts = env.accounts
    owner = accounts.user_by_name("owner")
    code = env.keys.take_setup_recovery_code(owner.id)
    assert code is not None
    accounts.add_user("mia", Role.MEMBER, "home", actor=None, password=PASSWORD)
    mia = accounts.user_by_name("mia")
    taken, first = accounts.create_token(owner.id, "made by whoever took the account")
    script, second = accounts.create_token(owner.id, "home assistant")
    old, third = accounts.create_token(owner.id, "old")
    accounts.revoke_token(owner.id, third.id)  # already revoked: left as it is
    mias, _ = accounts.create_token(mia.id, "mia's script")
    sessions = [accounts.login("owner", PASSWORD, HOST).session_secret for _ in range(2)]
    mia_session = accounts.login("mia", PASSWORD, HOST).session_secret
    assert accounts.principal_for_token(taken, HOST) is not None
    revoked_at = {t.id: t.revoked_at for t in accounts.tokens(owner.id)}

    with pytest.raises(InvalidRequestError):  # a weak password changes nothing
        env.keys.recover("owner", code, "short", HOST)
    assert accounts.principal_for_token(taken, HOST) is not None

    mark = env.audit.size()
    env.keys.recover("owner", code, NEW_PASSWORD, HOST)

    # every token of the owner is dead, and every session of theirs ended
    assert accounts.principal_for_token(taken, HOST) is None
    assert accounts.principal_for_token(script, HOST) is None
    assert all(accounts.principal_for_session(s, HOST) is None for s in sessions)
    tokens = {t.id: t for t in accounts.tokens(owner.id)}
    assert tokens[first.id].revoked_at is not None
    assert tokens[second.id].revoked_at is not None
    assert tokens[third.id].revoked_at == revoked_at[third.id]  # not revoked twice
    # another person's credentials are not the owner's: they stay
    assert accounts.principal_for_token(mias, HOST) is not None
    assert accounts.principal_for_session(mia_session, HOST) is not None
    assert accounts.principal_for_token(old, HOST) is None

    # one audit entry per token revoked, naming it, before the password changed
    entries = env.entries(mark)
    revocations = [e for e in entries if e.action is AuditTag.ACCOUNT_TOKEN_REVOKE]
    assert sorted(r.reason.split(" ")[1] for r in revocations) == sorted(
        [str(first.id), str(second.id)]
    )
    assert all("password reset (recovery code)" in r.reason for r in revocations)
    assert all(r.actor.id == str(owner.id) for r in revocations)
    assert all(r.subject.household == "home" for r in revocations)
    (change,) = [e for e in entries if e.action is AuditTag.ACCOUNT_CREDENTIAL_CHANGE]
    assert "2 API tokens revoked" in change.reason
    assert max(r.index for r in revocations) < change.index
    # the new password signs in and makes tokens that work
    accounts.login("owner", NEW_PASSWORD, HOST)
    fresh, _ = accounts.create_token(owner.id, "after recovery")
    assert accounts.principal_for_token(fresh, HOST) is not None
