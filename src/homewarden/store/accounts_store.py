"""Account tables (migration 0003): households, users, sessions, API tokens, grants, setup
links, login throttling, Web Push subscriptions and notification preferences.

Rows in, plain records out; every decision (who may log in, what a grant allows) is made by
``homewarden.services.accounts`` and ``homewarden.domain``. Shares the :class:`Index`'s
engine. Times are UTC epoch seconds.

Errors: :class:`~homewarden.errors.DatabaseError` when the database fails;
:class:`~homewarden.errors.NotFoundError` for a missing id;
:class:`~homewarden.errors.InvalidRequestError` for a duplicate (username, token, endpoint).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import delete, select, update

from homewarden.errors import NotFoundError
from homewarden.store.index import Index, rowcount
from homewarden.store.models import (
    ApiTokenRow,
    CameraGrantRow,
    HouseholdRow,
    LoginThrottleRow,
    NotifyCursorRow,
    NotifyPrefsRow,
    PushSubscriptionRow,
    SessionRow,
    SetupLinkRow,
    SupportGrantRow,
    UserRow,
)


@dataclass(frozen=True, slots=True)
class UserRecord:
    """An account as stored (see :class:`~homewarden.store.models.UserRow`)."""

    id: int
    username: str
    display_name: str
    role: str
    household_id: str | None
    password_hash: str | None
    totp_secret: str | None
    totp_last_step: int | None
    disabled: bool
    failed_logins: int
    created_at: float


@dataclass(frozen=True, slots=True)
class SessionRecord:
    """A session as stored (``id`` is the hash of the cookie's secret)."""

    id: str
    user_id: int
    stage: str
    csrf_token: str
    created_at: float
    last_seen: float
    expires_at: float
    client_host: str


@dataclass(frozen=True, slots=True)
class TokenRecord:
    """An API token as stored (hash only)."""

    id: int
    user_id: int
    name: str
    prefix: str
    created_at: float
    last_used_at: float | None
    revoked_at: float | None


@dataclass(frozen=True, slots=True)
class SupportGrantRecord:
    """A support grant as stored."""

    id: int
    household_id: str
    granted_by: int
    reason: str
    created_at: float
    expires_at: float
    revoked_at: float | None


@dataclass(frozen=True, slots=True)
class PushSubscriptionRecord:
    """A Web Push subscription (RFC 8291 keys, base64url)."""

    id: int
    user_id: int
    endpoint: str
    p256dh: str
    auth: str
    created_at: float
    failures: int


@dataclass(frozen=True, slots=True)
class NotifyPrefsRecord:
    """A user's notification preferences (None lists mean all)."""

    user_id: int
    enabled: bool
    cameras: list[str] | None
    labels: list[str] | None
    zones: list[str] | None
    quiet_start: int
    quiet_end: int
    timezone: str


def _user(row: UserRow) -> UserRecord:
    return UserRecord(
        row.id,
        row.username,
        row.display_name,
        row.role,
        row.household_id,
        row.password_hash,
        row.totp_secret,
        row.totp_last_step,
        bool(row.disabled),
        row.failed_logins,
        row.created_at,
    )


def _session_rec(row: SessionRow) -> SessionRecord:
    return SessionRecord(
        row.id,
        row.user_id,
        row.stage,
        row.csrf_token,
        row.created_at,
        row.last_seen,
        row.expires_at,
        row.client_host,
    )


def _token(row: ApiTokenRow) -> TokenRecord:
    return TokenRecord(
        row.id, row.user_id, row.name, row.prefix, row.created_at, row.last_used_at, row.revoked_at
    )


def _grant(row: SupportGrantRow) -> SupportGrantRecord:
    return SupportGrantRecord(
        row.id,
        row.household_id,
        row.granted_by,
        row.reason,
        row.created_at,
        row.expires_at,
        row.revoked_at,
    )


def _push(row: PushSubscriptionRow) -> PushSubscriptionRecord:
    return PushSubscriptionRecord(
        row.id, row.user_id, row.endpoint, row.p256dh, row.auth, row.created_at, row.failures
    )


def _prefs(row: NotifyPrefsRow) -> NotifyPrefsRecord:
    return NotifyPrefsRecord(
        row.user_id,
        bool(row.enabled),
        row.cameras,
        row.labels,
        row.zones,
        row.quiet_start,
        row.quiet_end,
        row.timezone,
    )


class AccountStore:
    """The account tables of ``index``'s database (which must be migrated)."""

    def __init__(self, index: Index) -> None:
        self._index = index

    # households

    def ensure_household(self, household_id: str, name: str, now: float) -> None:
        """Create household ``household_id`` unless it exists."""
        with self._index.transaction(f"create household {household_id}") as s:
            if s.get(HouseholdRow, household_id) is None:
                s.add(HouseholdRow(id=household_id, name=name, created_at=now))

    def households(self) -> list[tuple[str, str]]:
        """Every household as ``(id, name)``, by id."""
        with self._index.transaction("list households") as s:
            rows = s.scalars(select(HouseholdRow).order_by(HouseholdRow.id))
            return [(r.id, r.name) for r in rows]

    # users

    def add_user(
        self,
        username: str,
        role: str,
        household_id: str | None,
        now: float,
        display_name: str = "",
        password_hash: str | None = None,
    ) -> UserRecord:
        """Create an account.

        Raises:
            InvalidRequestError: the username is taken.
        """
        with self._index.transaction(f"add user {username!r}") as s:
            row = UserRow(
                username=username,
                display_name=display_name,
                role=role,
                household_id=household_id,
                password_hash=password_hash,
                disabled=False,
                failed_logins=0,
                created_at=now,
            )
            s.add(row)
            s.flush()
            return _user(row)

    def user(self, user_id: int) -> UserRecord:
        """Raises NotFoundError for an unknown id."""
        with self._index.transaction(f"read user {user_id}") as s:
            row = s.get(UserRow, user_id)
            if row is None:
                raise NotFoundError(f"no user {user_id}")
            return _user(row)

    def user_by_name(self, username: str) -> UserRecord | None:
        """The account called ``username`` (already normalised), or None."""
        with self._index.transaction("look up user") as s:
            row = s.scalars(select(UserRow).where(UserRow.username == username)).first()
            return None if row is None else _user(row)

    def users(self, household_id: str | None = None) -> list[UserRecord]:
        """Accounts of ``household_id`` (None: all), by id."""
        with self._index.transaction("list users") as s:
            q = select(UserRow).order_by(UserRow.id)
            if household_id is not None:
                q = q.where(UserRow.household_id == household_id)
            return [_user(r) for r in s.scalars(q)]

    def update_user(self, user_id: int, **values: Any) -> UserRecord:
        """Set columns of one account (names as in :class:`UserRow`).

        Raises:
            NotFoundError: unknown id.
        """
        with self._index.transaction(f"update user {user_id}") as s:
            row = s.get(UserRow, user_id)
            if row is None:
                raise NotFoundError(f"no user {user_id}")
            for key, value in values.items():
                setattr(row, key, value)
            s.flush()
            return _user(row)

    def count_failure(self, user_id: int, reset: bool = False) -> None:
        """Add one to (or, with ``reset``, zero) a user's failed-login count, atomically."""
        with self._index.transaction(f"count failed login of user {user_id}") as s:
            value = 0 if reset else UserRow.failed_logins + 1
            s.execute(update(UserRow).where(UserRow.id == user_id).values(failed_logins=value))

    # sessions

    def add_session(self, rec: SessionRecord) -> None:
        """Store a new session."""
        with self._index.transaction("add session") as s:
            s.add(
                SessionRow(
                    id=rec.id,
                    user_id=rec.user_id,
                    stage=rec.stage,
                    csrf_token=rec.csrf_token,
                    created_at=rec.created_at,
                    last_seen=rec.last_seen,
                    expires_at=rec.expires_at,
                    client_host=rec.client_host,
                )
            )

    def session(self, session_id: str) -> SessionRecord | None:
        """The session with hashed id ``session_id``, or None."""
        with self._index.transaction("read session") as s:
            row = s.get(SessionRow, session_id)
            return None if row is None else _session_rec(row)

    def touch_session(self, session_id: str, last_seen: float, expires_at: float) -> None:
        """Slide a session's idle expiry."""
        with self._index.transaction("touch session") as s:
            s.execute(
                update(SessionRow)
                .where(SessionRow.id == session_id)
                .values(last_seen=last_seen, expires_at=expires_at)
            )

    def delete_session(self, session_id: str) -> None:
        """End one session (no error when it is gone already)."""
        with self._index.transaction("end session") as s:
            s.execute(delete(SessionRow).where(SessionRow.id == session_id))

    def delete_sessions_of(self, user_id: int) -> int:
        """End every session of a user; returns how many."""
        with self._index.transaction(f"end sessions of user {user_id}") as s:
            return rowcount(s.execute(delete(SessionRow).where(SessionRow.user_id == user_id)))

    def delete_expired_sessions(self, now: float) -> int:
        """Remove sessions past their expiry; returns how many."""
        with self._index.transaction("remove expired sessions") as s:
            return rowcount(s.execute(delete(SessionRow).where(SessionRow.expires_at <= now)))

    # API tokens

    def add_token(
        self, user_id: int, name: str, prefix: str, token_hash: str, now: float
    ) -> TokenRecord:
        """Store a token's hash."""
        with self._index.transaction("add API token") as s:
            row = ApiTokenRow(
                user_id=user_id, name=name, prefix=prefix, token_hash=token_hash, created_at=now
            )
            s.add(row)
            s.flush()
            return _token(row)

    def token_by_hash(self, token_hash: str) -> TokenRecord | None:
        """The token whose SHA-256 hex is ``token_hash`` (revoked ones too), or None."""
        with self._index.transaction("look up API token") as s:
            row = s.scalars(select(ApiTokenRow).where(ApiTokenRow.token_hash == token_hash)).first()
            return None if row is None else _token(row)

    def tokens(self, user_id: int) -> list[TokenRecord]:
        """A user's tokens, newest first."""
        with self._index.transaction("list API tokens") as s:
            q = select(ApiTokenRow).where(ApiTokenRow.user_id == user_id)
            return [_token(r) for r in s.scalars(q.order_by(ApiTokenRow.id.desc()))]

    def update_token(self, token_id: int, **values: Any) -> TokenRecord:
        """Set columns of a token (``last_used_at``, ``revoked_at``).

        Raises:
            NotFoundError: unknown id.
        """
        with self._index.transaction(f"update API token {token_id}") as s:
            row = s.get(ApiTokenRow, token_id)
            if row is None:
                raise NotFoundError(f"no API token {token_id}")
            for key, value in values.items():
                setattr(row, key, value)
            s.flush()
            return _token(row)

    # camera grants

    def camera_grants(self, user_id: int) -> frozenset[str]:
        """Cameras granted to a member."""
        with self._index.transaction("list camera grants") as s:
            q = select(CameraGrantRow.camera).where(CameraGrantRow.user_id == user_id)
            return frozenset(s.scalars(q))

    def grant_camera(self, user_id: int, camera: str, granted_by: int, now: float) -> bool:
        """Grant a camera; False when it was granted already."""
        with self._index.transaction("grant camera") as s:
            if s.get(CameraGrantRow, (user_id, camera)) is not None:
                return False
            s.add(
                CameraGrantRow(
                    user_id=user_id, camera=camera, granted_by=granted_by, granted_at=now
                )
            )
            return True

    def revoke_camera(self, user_id: int, camera: str) -> bool:
        """Withdraw a camera grant; False when there was none."""
        with self._index.transaction("revoke camera grant") as s:
            q = delete(CameraGrantRow).where(
                CameraGrantRow.user_id == user_id, CameraGrantRow.camera == camera
            )
            return bool(rowcount(s.execute(q)))

    # support grants

    def add_support_grant(
        self, household_id: str, granted_by: int, reason: str, now: float, expires_at: float
    ) -> SupportGrantRecord:
        """Store a support grant."""
        with self._index.transaction("add support grant") as s:
            row = SupportGrantRow(
                household_id=household_id,
                granted_by=granted_by,
                reason=reason,
                created_at=now,
                expires_at=expires_at,
            )
            s.add(row)
            s.flush()
            return _grant(row)

    def support_grants(
        self, household_id: str | None = None, active_at: float | None = None
    ) -> list[SupportGrantRecord]:
        """Support grants (of one household; in force at ``active_at``), newest first."""
        with self._index.transaction("list support grants") as s:
            q = select(SupportGrantRow).order_by(SupportGrantRow.id.desc())
            if household_id is not None:
                q = q.where(SupportGrantRow.household_id == household_id)
            if active_at is not None:
                q = q.where(
                    SupportGrantRow.revoked_at.is_(None), SupportGrantRow.expires_at > active_at
                )
            return [_grant(r) for r in s.scalars(q)]

    def revoke_support_grant(self, grant_id: int, now: float) -> SupportGrantRecord:
        """End a support grant now.

        Raises:
            NotFoundError: unknown id.
        """
        with self._index.transaction(f"revoke support grant {grant_id}") as s:
            row = s.get(SupportGrantRow, grant_id)
            if row is None:
                raise NotFoundError(f"no support grant {grant_id}")
            if row.revoked_at is None:
                row.revoked_at = now
            s.flush()
            return _grant(row)

    # setup links

    def add_setup_link(self, token_hash: str, user_id: int, now: float, expires_at: float) -> None:
        """Store a one-time setup link's hash."""
        with self._index.transaction("add setup link") as s:
            s.add(
                SetupLinkRow(
                    token_hash=token_hash, user_id=user_id, created_at=now, expires_at=expires_at
                )
            )

    def use_setup_link(self, token_hash: str, now: float) -> int | None:
        """Mark the link used and return its user id, or None when unknown, used or expired.
        Atomic: of two concurrent uses only one gets the user id."""
        with self._index.transaction("use setup link") as s:
            q = (
                update(SetupLinkRow)
                .where(
                    SetupLinkRow.token_hash == token_hash,
                    SetupLinkRow.used_at.is_(None),
                    SetupLinkRow.expires_at > now,
                )
                .values(used_at=now)
            )
            if not rowcount(s.execute(q)):
                return None
            row = s.get(SetupLinkRow, token_hash)
            return None if row is None else row.user_id

    def setup_link_user(self, token_hash: str, now: float) -> int | None:
        """The user id of an unused, unexpired link, without using it."""
        with self._index.transaction("read setup link") as s:
            row = s.get(SetupLinkRow, token_hash)
            if row is None or row.used_at is not None or row.expires_at <= now:
                return None
            return row.user_id

    # login throttling per client address

    def throttle(self, key: str) -> tuple[int, float] | None:
        """``(failures, since)`` for ``key``, or None."""
        with self._index.transaction("read login throttle") as s:
            row = s.get(LoginThrottleRow, key)
            return None if row is None else (row.failures, row.window_start)

    def throttle_keys(self, prefix: str) -> list[str]:
        """Throttle keys starting with ``prefix``."""
        with self._index.transaction("list login throttles") as s:
            q = select(LoginThrottleRow.key).where(LoginThrottleRow.key.startswith(prefix))
            return list(s.scalars(q))

    def set_throttle(self, key: str, failures: int, window_start: float) -> None:
        """Store the failure count of ``key`` (``failures`` 0 removes the row)."""
        with self._index.transaction("write login throttle") as s:
            row = s.get(LoginThrottleRow, key)
            if failures == 0:
                if row is not None:
                    s.delete(row)
            elif row is None:
                s.add(LoginThrottleRow(key=key, failures=failures, window_start=window_start))
            else:
                row.failures = failures
                row.window_start = window_start

    # push subscriptions and preferences

    def add_push_subscription(
        self, user_id: int, endpoint: str, p256dh: str, auth: str, now: float
    ) -> PushSubscriptionRecord:
        """Store (or move to ``user_id`` and refresh) the subscription of ``endpoint``."""
        with self._index.transaction("add push subscription") as s:
            row = s.scalars(
                select(PushSubscriptionRow).where(PushSubscriptionRow.endpoint == endpoint)
            ).first()
            if row is None:
                row = PushSubscriptionRow(
                    user_id=user_id,
                    endpoint=endpoint,
                    p256dh=p256dh,
                    auth=auth,
                    created_at=now,
                    failures=0,
                )
                s.add(row)
            else:
                row.user_id, row.p256dh, row.auth, row.failures = user_id, p256dh, auth, 0
            s.flush()
            return _push(row)

    def push_subscriptions(self, user_id: int | None = None) -> list[PushSubscriptionRecord]:
        """Subscriptions (of one user), by id."""
        with self._index.transaction("list push subscriptions") as s:
            q = select(PushSubscriptionRow).order_by(PushSubscriptionRow.id)
            if user_id is not None:
                q = q.where(PushSubscriptionRow.user_id == user_id)
            return [_push(r) for r in s.scalars(q)]

    def delete_push_subscription(self, subscription_id: int) -> None:
        """Forget a subscription (gone at the push service, or removed by the user)."""
        with self._index.transaction("delete push subscription") as s:
            s.execute(delete(PushSubscriptionRow).where(PushSubscriptionRow.id == subscription_id))

    def set_push_failures(self, subscription_id: int, failures: int) -> None:
        """Record consecutive delivery failures of a subscription."""
        with self._index.transaction("count push failures") as s:
            s.execute(
                update(PushSubscriptionRow)
                .where(PushSubscriptionRow.id == subscription_id)
                .values(failures=failures)
            )

    def notify_prefs(self, user_id: int) -> NotifyPrefsRecord:
        """A user's preferences (defaults when never set: on, everything, no quiet hours)."""
        with self._index.transaction("read notification preferences") as s:
            row = s.get(NotifyPrefsRow, user_id)
            if row is None:
                return NotifyPrefsRecord(user_id, True, None, None, None, 0, 0, "UTC")
            return _prefs(row)

    def set_notify_prefs(self, prefs: NotifyPrefsRecord) -> None:
        """Store a user's preferences."""
        with self._index.transaction("write notification preferences") as s:
            row = s.get(NotifyPrefsRow, prefs.user_id)
            if row is None:
                row = NotifyPrefsRow(user_id=prefs.user_id)
                s.add(row)
            row.enabled = prefs.enabled
            row.cameras = prefs.cameras
            row.labels = prefs.labels
            row.zones = prefs.zones
            row.quiet_start = prefs.quiet_start
            row.quiet_end = prefs.quiet_end
            row.timezone = prefs.timezone

    def notify_cursor(self) -> int:
        """The newest event id the push notifier has handled."""
        with self._index.transaction("read notify cursor") as s:
            row = s.get(NotifyCursorRow, 1)
            return 0 if row is None else int(row.last_event_id)

    def set_notify_cursor(self, last_event_id: int) -> None:
        """Advance the push notifier's cursor."""
        with self._index.transaction("write notify cursor") as s:
            s.execute(
                update(NotifyCursorRow)
                .where(NotifyCursorRow.id == 1)
                .values(last_event_id=last_event_id)
            )
