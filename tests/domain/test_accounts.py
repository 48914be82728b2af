"""Account rules: usernames, passwords (SP 800-63B 5.1.1.2), lockout (5.2.2), lifetimes."""

from __future__ import annotations

import pytest

from homewarden.domain import accounts as rules
from homewarden.domain.permissions import Role
from homewarden.errors import InvalidRequestError


@pytest.mark.parametrize(
    ("failures", "seconds"),
    [(0, 0.0), (4, 0.0), (5, 30.0), (6, 60.0), (7, 120.0), (9, 480.0), (10, 900.0), (99, 900.0)],
)
def test_lock_seconds_double_from_30_s_and_stop_at_15_min(failures: int, seconds: float) -> None:
    assert rules.lock_seconds(failures) == seconds


def test_a_lock_is_never_permanent() -> None:
    assert max(rules.lock_seconds(n) for n in range(10_000)) == rules.LOCK_MAX
    assert rules.LOCK_MAX <= 15 * 60


@pytest.mark.parametrize(
    ("given", "normal"),
    [
        ("Owner", "owner"),
        ("  kid.two ", "kid.two"),
        ("a@example.org", "a@example.org"),
        ("x" * 64, "x" * 64),
        ("0day_-", "0day_-"),
    ],
)
def test_usernames_are_normalised(given: str, normal: str) -> None:
    assert rules.normalise_username(given) == normal


@pytest.mark.parametrize(
    "bad", ["", " ", "x" * 65, ".dot", "-dash", "has space", "semi;colon", "ünï", "a/b", "../x"]
)
def test_bad_usernames_are_refused(bad: str) -> None:
    with pytest.raises(InvalidRequestError, match="username"):
        rules.normalise_username(bad)


def test_password_rules() -> None:
    rules.check_new_password("correct horse battery staple", "owner")
    rules.check_new_password("x" * rules.PASSWORD_MAX, "owner")
    rules.check_new_password("ten chars!", "owner")  # no composition rules
    with pytest.raises(InvalidRequestError, match="at least 10"):
        rules.check_new_password("short", "owner")
    with pytest.raises(InvalidRequestError, match="at most"):
        rules.check_new_password("x" * (rules.PASSWORD_MAX + 1), "owner")
    for common in ("Password123", "1234567890", "homewarden1"):
        with pytest.raises(InvalidRequestError, match="easy to guess"):
            rules.check_new_password(common, "owner")
    with pytest.raises(InvalidRequestError, match="easy to guess"):
        rules.check_new_password("longusername", "LongUserName")


def test_staff_sessions_are_short() -> None:
    staff = rules.session_lifetime(Role.SUPPORT)
    owner = rules.session_lifetime(Role.OWNER)
    assert (staff.idle, staff.absolute) == (30 * 60, 12 * 3600)
    assert (owner.idle, owner.absolute) == (7 * 86400, 30 * 86400)
    for role in Role:
        life = rules.session_lifetime(role)
        assert life.idle < life.absolute
