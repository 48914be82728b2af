"""Webhook tables (migration 0006): webhooks, their deliveries, and event followers' cursors.

Rows in, plain records out; what they mean (who may change a webhook, when a delivery is
tried again, what a message says) is decided by :mod:`homewarden.services.webhooks`. Shares
the :class:`~homewarden.store.index.Index`'s engine. Times are UTC epoch seconds.

A delivery moves ``pending`` -> ``delivered`` or ``pending`` -> ``dead`` (a dead letter), and
back ``dead`` -> ``pending`` when its owner asks for it again. Several deliverers may share one
database (many boxes): a deliverer first :meth:`WebhookStore.claim` s a due delivery, which
succeeds for one of them only.

:class:`EventCursors` is not webhook-specific: any follower of the index's events keeps its
position there under its own name (``event_cursors`` table).

Errors: :class:`~homewarden.errors.DatabaseError` when the database fails;
:class:`~homewarden.errors.NotFoundError` for an unknown id;
:class:`~homewarden.errors.InvalidRequestError` for a household that does not exist;
:class:`~homewarden.errors.InvalidTransitionError` for a delivery that is not a dead letter.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum

from sqlalchemy import delete, func, select, update

from homewarden.errors import InvalidTransitionError, NotFoundError
from homewarden.store.index import Index, rowcount
from homewarden.store.models import EventCursorRow, WebhookDeliveryRow, WebhookRow


class DeliveryState(StrEnum):
    """Where a delivery stands."""

    PENDING = "pending"
    DELIVERED = "delivered"
    DEAD = "dead"


@dataclass(frozen=True, slots=True)
class WebhookRecord:
    """A webhook row. ``secret`` is its ``whsec_...`` text; ``kinds`` sorted."""

    id: int
    household: str
    url: str
    secret: str
    kinds: tuple[str, ...]
    created_by: int | None
    created_at: float
    disabled: bool


@dataclass(frozen=True, slots=True)
class NewDelivery:
    """A message to queue for one webhook: ``body`` is the exact JSON text to sign and send."""

    webhook_id: int
    kind: str
    message_id: str
    body: str


@dataclass(frozen=True, slots=True)
class DeliveryRecord:
    """A delivery row (see ``WebhookDeliveryRow``)."""

    id: int
    webhook_id: int
    kind: str
    message_id: str
    body: str
    created_at: float
    attempts: int
    next_attempt_at: float | None
    state: DeliveryState
    last_status: int | None
    last_error: str | None
    delivered_at: float | None


def _webhook(r: WebhookRow) -> WebhookRecord:
    return WebhookRecord(
        r.id, r.household_id, r.url, r.secret, tuple(sorted(str(k) for k in r.kinds)),
        r.created_by, r.created_at, bool(r.disabled),
    )  # fmt: skip


def _delivery(r: WebhookDeliveryRow) -> DeliveryRecord:
    return DeliveryRecord(
        r.id, r.webhook_id, r.kind, r.message_id, r.body, r.created_at, r.attempts,
        r.next_attempt_at, DeliveryState(r.state), r.last_status, r.last_error, r.delivered_at,
    )  # fmt: skip


class WebhookStore:
    """The ``webhooks`` and ``webhook_deliveries`` tables of ``index``'s (migrated) database."""

    def __init__(self, index: Index) -> None:
        self._index = index

    # webhooks

    def add_webhook(
        self,
        household: str,
        url: str,
        secret: str,
        kinds: Sequence[str],
        *,
        now: float,
        by: int | None,
    ) -> WebhookRecord:
        """Store a new, enabled webhook.

        Raises:
            InvalidRequestError: ``household`` does not exist.
            DatabaseError: the database failed.
        """
        row = WebhookRow(
            household_id=household, url=url, secret=secret, kinds=sorted(kinds),
            created_by=by, created_at=now, disabled=False,
        )  # fmt: skip
        with self._index.transaction("add webhook") as s:
            s.add(row)
            s.flush()
            return _webhook(row)

    def webhook(self, webhook_id: int) -> WebhookRecord:
        """One webhook.

        Raises:
            NotFoundError: no such webhook.
        """
        with self._index.transaction(f"read webhook {webhook_id}") as s:
            row = s.get(WebhookRow, webhook_id)
            if row is None:
                raise NotFoundError(f"no webhook {webhook_id}")
            return _webhook(row)

    def webhooks(self, household: str | None = None) -> list[WebhookRecord]:
        """Webhooks (of ``household``, or all), by id."""
        q = select(WebhookRow).order_by(WebhookRow.id)
        if household is not None:
            q = q.where(WebhookRow.household_id == household)
        with self._index.transaction("list webhooks") as s:
            return [_webhook(r) for r in s.scalars(q)]

    def set_secret(self, webhook_id: int, secret: str) -> WebhookRecord:
        """Replace a webhook's secret. Raises NotFoundError."""
        with self._index.transaction(f"change webhook {webhook_id}") as s:
            row = s.get(WebhookRow, webhook_id)
            if row is None:
                raise NotFoundError(f"no webhook {webhook_id}")
            row.secret = secret
            s.flush()
            return _webhook(row)

    def set_disabled(
        self, webhook_id: int, disabled: bool, *, reason: str = ""
    ) -> tuple[WebhookRecord, int]:
        """Disable or enable a webhook; disabling turns its pending deliveries into dead
        letters with ``reason`` as their error, in the same transaction. Returns the webhook
        and how many deliveries died.

        Raises:
            NotFoundError: no such webhook.
        """
        with self._index.transaction(f"change webhook {webhook_id}") as s:
            row = s.get(WebhookRow, webhook_id)
            if row is None:
                raise NotFoundError(f"no webhook {webhook_id}")
            row.disabled = disabled
            killed = 0
            if disabled:
                killed = rowcount(
                    s.execute(
                        update(WebhookDeliveryRow)
                        .where(WebhookDeliveryRow.webhook_id == webhook_id)
                        .where(WebhookDeliveryRow.state == DeliveryState.PENDING.value)
                        .values(
                            state=DeliveryState.DEAD.value,
                            next_attempt_at=None,
                            last_error=reason,
                        )
                    )
                )
            s.flush()
            return _webhook(row), killed

    def delete_webhook(self, webhook_id: int) -> bool:
        """Delete a webhook and its deliveries; True if there was one."""
        with self._index.transaction(f"delete webhook {webhook_id}") as s:
            s.execute(delete(WebhookDeliveryRow).where(WebhookDeliveryRow.webhook_id == webhook_id))
            return rowcount(s.execute(delete(WebhookRow).where(WebhookRow.id == webhook_id))) > 0

    # deliveries

    def enqueue(self, items: Sequence[NewDelivery], *, now: float) -> list[DeliveryRecord]:
        """Queue each message, due at once, in one transaction; a message already queued for
        that webhook (same ``message_id``) is left as it is. Returns the new deliveries."""
        if not items:
            return []
        made: list[WebhookDeliveryRow] = []
        with self._index.transaction("queue webhook deliveries") as s:
            for item in items:
                seen = s.scalar(
                    select(WebhookDeliveryRow.id)
                    .where(WebhookDeliveryRow.webhook_id == item.webhook_id)
                    .where(WebhookDeliveryRow.message_id == item.message_id)
                )
                if seen is not None:
                    continue
                row = WebhookDeliveryRow(
                    webhook_id=item.webhook_id, kind=item.kind, message_id=item.message_id,
                    body=item.body, created_at=now, attempts=0, next_attempt_at=now,
                    state=DeliveryState.PENDING.value, last_status=None, last_error=None,
                    delivered_at=None,
                )  # fmt: skip
                s.add(row)
                made.append(row)
            s.flush()
            return [_delivery(r) for r in made]

    def delivery(self, delivery_id: int) -> DeliveryRecord:
        """One delivery. Raises NotFoundError."""
        with self._index.transaction(f"read delivery {delivery_id}") as s:
            row = s.get(WebhookDeliveryRow, delivery_id)
            if row is None:
                raise NotFoundError(f"no delivery {delivery_id}")
            return _delivery(row)

    def deliveries(
        self,
        webhook_ids: Sequence[int],
        *,
        state: DeliveryState | None = None,
        limit: int = 100,
    ) -> list[DeliveryRecord]:
        """Deliveries of the given webhooks, newest first, optionally in one state."""
        if not webhook_ids:
            return []
        q = select(WebhookDeliveryRow).where(WebhookDeliveryRow.webhook_id.in_(list(webhook_ids)))
        if state is not None:
            q = q.where(WebhookDeliveryRow.state == state.value)
        q = q.order_by(WebhookDeliveryRow.id.desc()).limit(limit)
        with self._index.transaction("list deliveries") as s:
            return [_delivery(r) for r in s.scalars(q)]

    def counts(self, webhook_ids: Sequence[int]) -> dict[int, dict[DeliveryState, int]]:
        """How many deliveries each webhook has in each state (states with none left out)."""
        if not webhook_ids:
            return {}
        q = (
            select(WebhookDeliveryRow.webhook_id, WebhookDeliveryRow.state, func.count())
            .where(WebhookDeliveryRow.webhook_id.in_(list(webhook_ids)))
            .group_by(WebhookDeliveryRow.webhook_id, WebhookDeliveryRow.state)
        )
        found: dict[int, dict[DeliveryState, int]] = {}
        with self._index.transaction("count deliveries") as s:
            for webhook_id, state, n in s.execute(q):
                found.setdefault(int(webhook_id), {})[DeliveryState(state)] = int(n)
        return found

    def due(self, now: float, limit: int = 50) -> list[DeliveryRecord]:
        """Pending deliveries whose next attempt is due at ``now``, earliest first."""
        q = (
            select(WebhookDeliveryRow)
            .where(WebhookDeliveryRow.state == DeliveryState.PENDING.value)
            .where(WebhookDeliveryRow.next_attempt_at <= now)
            .order_by(WebhookDeliveryRow.next_attempt_at, WebhookDeliveryRow.id)
            .limit(limit)
        )
        with self._index.transaction("list due deliveries") as s:
            return [_delivery(r) for r in s.scalars(q)]

    def claim(self, delivery: DeliveryRecord, lease_until: float) -> bool:
        """Take a due delivery for one attempt: move its next attempt to ``lease_until`` if
        it is still pending and still due when it was read. True for exactly one of several
        deliverers racing for it; if this one then dies, the delivery is due again at
        ``lease_until``."""
        stmt = (
            update(WebhookDeliveryRow)
            .where(WebhookDeliveryRow.id == delivery.id)
            .where(WebhookDeliveryRow.state == DeliveryState.PENDING.value)
            .where(WebhookDeliveryRow.next_attempt_at == delivery.next_attempt_at)
            .where(WebhookDeliveryRow.attempts == delivery.attempts)
            .values(next_attempt_at=lease_until)
        )
        with self._index.transaction(f"claim delivery {delivery.id}") as s:
            return rowcount(s.execute(stmt)) == 1

    def record_attempt(
        self,
        delivery_id: int,
        *,
        state: DeliveryState,
        attempts: int,
        next_attempt_at: float | None,
        last_status: int | None,
        last_error: str | None,
        delivered_at: float | None = None,
    ) -> DeliveryRecord:
        """Store the outcome of an attempt. Raises NotFoundError (the webhook was deleted
        meanwhile)."""
        with self._index.transaction(f"update delivery {delivery_id}") as s:
            row = s.get(WebhookDeliveryRow, delivery_id)
            if row is None:
                raise NotFoundError(f"no delivery {delivery_id}")
            row.state = state.value
            row.attempts = attempts
            row.next_attempt_at = next_attempt_at
            row.last_status = last_status
            row.last_error = last_error
            row.delivered_at = delivered_at
            s.flush()
            return _delivery(row)

    def requeue(self, delivery_id: int, now: float) -> DeliveryRecord:
        """A dead letter pending again, due at ``now``, its attempts counted from zero.

        Raises:
            NotFoundError: no such delivery.
            InvalidTransitionError: it is not a dead letter (pending or delivered).
        """
        stmt = (
            update(WebhookDeliveryRow)
            .where(WebhookDeliveryRow.id == delivery_id)
            .where(WebhookDeliveryRow.state == DeliveryState.DEAD.value)
            .values(state=DeliveryState.PENDING.value, attempts=0, next_attempt_at=now)
        )
        with self._index.transaction(f"requeue delivery {delivery_id}") as s:
            if rowcount(s.execute(stmt)) != 1:
                row = s.get(WebhookDeliveryRow, delivery_id)
                if row is None:
                    raise NotFoundError(f"no delivery {delivery_id}")
                raise InvalidTransitionError(
                    f"delivery {delivery_id} is {row.state}: only a dead letter is redelivered"
                )
            row = s.get(WebhookDeliveryRow, delivery_id)
            assert row is not None
            s.refresh(row)
            return _delivery(row)

    def purge(self, *, delivered_before: float, dead_before: float) -> int:
        """Delete deliveries delivered before ``delivered_before`` and dead letters made
        before ``dead_before``; returns how many."""
        with self._index.transaction("purge deliveries") as s:
            done = rowcount(
                s.execute(
                    delete(WebhookDeliveryRow)
                    .where(WebhookDeliveryRow.state == DeliveryState.DELIVERED.value)
                    .where(WebhookDeliveryRow.delivered_at < delivered_before)
                )
            )
            dead = rowcount(
                s.execute(
                    delete(WebhookDeliveryRow)
                    .where(WebhookDeliveryRow.state == DeliveryState.DEAD.value)
                    .where(WebhookDeliveryRow.created_at < dead_before)
                )
            )
            return done + dead


class EventCursors:
    """Named positions of followers of the index's events (table ``event_cursors``)."""

    def __init__(self, index: Index) -> None:
        self._index = index

    def get(self, name: str) -> int | None:
        """The newest event id follower ``name`` has handled, or None (never ran)."""
        with self._index.transaction(f"read cursor {name}") as s:
            row = s.get(EventCursorRow, name)
            return None if row is None else int(row.last_event_id)

    def set(self, name: str, last_event_id: int, now: float) -> None:
        """Record that follower ``name`` has handled every event up to ``last_event_id``."""
        with self._index.transaction(f"move cursor {name}") as s:
            row = s.get(EventCursorRow, name)
            if row is None:
                row = EventCursorRow(name=name)
                s.add(row)
            row.last_event_id = last_event_id
            row.updated_at = now
