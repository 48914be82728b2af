"""Account rules: usernames, passwords, login throttling, session lifetimes. Pure.

Sources:
- Passwords: NIST SP 800-63B section 5.1.1.2 (at least 8 characters, and allow at least 64;
  no composition rules; check against commonly used passwords). We ask for 10.
- Throttling: SP 800-63B section 5.2.2 ("Rate Limiting (Throttling)") — limit consecutive
  failed attempts on an account, and prefer measures that do not let an attacker lock the
  subscriber out. Failures are counted per (username, client address), so an attacker
  elsewhere cannot lock the owner out of their own network; a lock is always temporary
  (doubling from :data:`LOCK_BASE` to :data:`LOCK_MAX`), and per client address there is a
  ceiling on failures across all usernames (:data:`IP_MAX_FAILURES` per :data:`IP_WINDOW`).
- Session lifetimes: OWASP Session Management Cheat Sheet ("Session Expiration": idle and
  absolute timeouts; shorter for high-value accounts) — staff sessions are short.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from homewarden.domain.permissions import Role
from homewarden.errors import InvalidRequestError

#: Usernames: lower-case letters, digits, ``.``, ``_``, ``-`` and ``@`` (a mail address
#: works), 1-64 characters, starting with a letter or digit.
USERNAME_RE = re.compile(r"[a-z0-9][a-z0-9._@-]{0,63}")
PASSWORD_MIN = 10
#: Longest display name, characters.
DISPLAY_NAME_MAX = 100
#: SP 800-63B: allow at least 64; more than this is refused only to bound hashing work.
PASSWORD_MAX = 1024

#: Wrong TOTP codes in a row (from any address) after which a requester account is locked
#: until staff re-enable it, and staff are alerted (issue: "Twenty wrong TOTP codes: locked,
#: and staff alerted"). Only reachable with the right password, so it cannot be used to lock
#: someone out by guessing their username.
REQUESTER_TOTP_LIMIT = 20

#: Consecutive failures on one (username, address) before the first lock.
LOCK_AFTER = 5
#: The first lock, seconds; each further failure doubles it.
LOCK_BASE = 30.0
#: The longest lock, seconds (never permanent).
LOCK_MAX = 15 * 60.0
#: Failures from one address across all usernames allowed per window.
IP_MAX_FAILURES = 50
#: The per-address window, seconds.
IP_WINDOW = 10 * 60.0

#: Session idle timeout and absolute lifetime, seconds, for household users and for staff.
SESSION_IDLE = 7 * 86400.0
SESSION_ABSOLUTE = 30 * 86400.0
STAFF_SESSION_IDLE = 30 * 60.0
STAFF_SESSION_ABSOLUTE = 12 * 3600.0
#: How long a password-accepted login may wait for its TOTP code, seconds.
MFA_PENDING = 5 * 60.0
#: How long a one-time setup link stays valid, seconds.
SETUP_LINK_TTL = 24 * 3600.0
#: Longest reason an owner can give for a support grant, characters (it goes into the audit
#: entry's reason with the grant id and length: see domain.audit.MAX_REASON = 500).
SUPPORT_REASON_MAX = 400
#: Longest support grant an owner can give, seconds.
SUPPORT_GRANT_MAX = 7 * 86400.0

#: A short list of the most common passwords (SP 800-63B asks for a blocklist check).
COMMON_PASSWORDS = frozenset(
    {
        "1234567890",
        "12345678910",
        "qwertyuiop",
        "password12",
        "password123",
        "password1234",
        "1q2w3e4r5t",
        "iloveyou12",
        "0987654321",
        "1111111111",
        "abcdefghij",
        "letmein123",
        "homewarden",
        "homewarden1",
    }
)


def normalise_username(username: str) -> str:
    """``username`` stripped and lower-cased.

    Raises:
        InvalidRequestError: not 1-64 characters of ``[a-z0-9._@-]`` starting with a letter
            or digit.
    """
    name = username.strip().lower()
    if not USERNAME_RE.fullmatch(name):
        raise InvalidRequestError(
            "a username is 1-64 characters of letters, digits, '.', '_', '-' and '@', "
            "starting with a letter or digit"
        )
    return name


def check_new_password(password: str, username: str) -> None:
    """Refuse a weak new password (SP 800-63B 5.1.1.2).

    Raises:
        InvalidRequestError: shorter than :data:`PASSWORD_MIN` or longer than
            :data:`PASSWORD_MAX` characters, a common password, or the username itself.
    """
    if len(password) < PASSWORD_MIN:
        raise InvalidRequestError(f"a password needs at least {PASSWORD_MIN} characters")
    if len(password) > PASSWORD_MAX:
        raise InvalidRequestError(f"a password has at most {PASSWORD_MAX} characters")
    if password.lower() in COMMON_PASSWORDS or password.lower() == username.lower():
        raise InvalidRequestError("that password is too easy to guess; choose another")


def lock_seconds(failures: int) -> float:
    """How long an (username, address) pair is locked after ``failures`` consecutive
    failures: 0 below :data:`LOCK_AFTER`, then 30 s doubling, capped at 15 min."""
    if failures < LOCK_AFTER:
        return 0.0
    # Cap the exponent: 2.0 ** 1024 overflows, and the cap is reached long before.
    doublings = min(failures - LOCK_AFTER, 32)
    return min(LOCK_BASE * 2.0**doublings, LOCK_MAX)


@dataclass(frozen=True, slots=True)
class Lifetime:
    """Session timeouts in seconds."""

    idle: float
    absolute: float


def session_lifetime(role: Role) -> Lifetime:
    """Idle and absolute session timeouts for ``role`` (staff: 30 min / 12 h; household
    users: 7 days / 30 days)."""
    if role.needs_totp:
        return Lifetime(STAFF_SESSION_IDLE, STAFF_SESSION_ABSOLUTE)
    return Lifetime(SESSION_IDLE, SESSION_ABSOLUTE)
