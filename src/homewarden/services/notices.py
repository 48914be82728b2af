"""Notices to owners, staff and requesters: stored in the app, and mailed when mail is set up.

An owner notice is always stored (the owner's inbox in the app) before mail is tried, so a
mail server that is down never loses a notice; how the mail went is recorded on the notice
(``delivery``) and logged. Mail goes through :class:`homewarden.notify.mail.Mailer`
(apprise over SMTP) to the household's notice address (set on the policy page).

Listeners (:meth:`NoticeService.add_owner_listener`) are told of each owner notice once it is
stored and mailed, with exactly the notice the owner got: the household's webhooks
(:mod:`homewarden.services.webhooks`) hear of a request only when, and as, its owner does,
so a request whose notice a non-disclosure order delays reaches no webhook before then.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from homewarden.errors import HomeWardenError
from homewarden.notify.mail import Mailer
from homewarden.store.disclosure_store import DisclosureStore, NoticeRecord

log = logging.getLogger(__name__)

#: Audiences of a notice.
OWNER = "owner"
STAFF = "staff"
USER = "user"


class NoticeService:
    """Stores notices and mails them.

    Args:
        store: the disclosure tables (notices, household policies for the notice address).
        mailer: outgoing mail (may be disabled: notices then stay in the app).
        clock: now, UTC epoch seconds.
    """

    def __init__(
        self, store: DisclosureStore, mailer: Mailer, clock: Callable[[], float] = time.time
    ) -> None:
        self._store = store
        self._mailer = mailer
        self._clock = clock
        self._owner_listeners: list[Callable[[NoticeRecord], None]] = []

    def add_owner_listener(self, listener: Callable[[NoticeRecord], None]) -> None:
        """Call ``listener(notice)`` after each owner notice is stored and mailed (on the
        thread that made it). A listener's :class:`HomeWardenError` is logged, never raised:
        the owner has been told either way."""
        self._owner_listeners.append(listener)

    @property
    def mailer(self) -> Mailer:
        """The outgoing mailer."""
        return self._mailer

    def notify_owner(
        self, household: str, subject: str, body: str, *, request_id: str | None = None
    ) -> NoticeRecord:
        """Tell ``household``'s owner: a notice in the app, and a mail to the household's
        notice address when one is set and mail is configured. Never raises for mail
        trouble (the notice is kept and says how delivery went).

        Raises:
            DatabaseError: the notice cannot be stored.
        """
        notice = self._store.add_notice(
            OWNER, subject, body, now=self._clock(), household=household, request_id=request_id
        )
        policy = self._store.policy(household)
        address = policy.notice_email if policy is not None else None
        self._deliver(notice, address)
        for listener in self._owner_listeners:
            try:
                listener(notice)
            except HomeWardenError as exc:
                log.error("notice %d: a listener failed: %s", notice.id, exc)
        return notice

    def alert_staff(
        self, subject: str, body: str, *, request_id: str | None = None
    ) -> NoticeRecord:
        """Put an alert in the staff queue (shown to legal reviewers and custodians).

        Raises:
            DatabaseError: the alert cannot be stored.
        """
        log.warning("staff alert: %s", subject)
        return self._store.add_notice(
            STAFF, subject, body, now=self._clock(), request_id=request_id
        )

    def notify_user(
        self,
        user_id: int,
        subject: str,
        body: str,
        *,
        request_id: str | None = None,
        email: str | None = None,
    ) -> NoticeRecord:
        """A notice to one account (a requester: their request moved), mailed to ``email``
        when given. Never raises for mail trouble.

        Raises:
            DatabaseError: the notice cannot be stored.
        """
        notice = self._store.add_notice(
            USER, subject, body, now=self._clock(), user_id=user_id, request_id=request_id
        )
        self._deliver(notice, email)
        return notice

    def _deliver(self, notice: NoticeRecord, address: str | None) -> None:
        if address is None:
            self._store.set_delivery(notice.id, "in the app only (no notice address set)")
            return
        if not self._mailer.enabled:
            self._store.set_delivery(notice.id, "in the app only (mail is not configured)")
            return
        try:
            self._mailer.send(address, notice.subject, notice.body)
        except HomeWardenError as exc:
            log.warning("notice %d: mail to %s failed: %s", notice.id, address, exc)
            self._store.set_delivery(notice.id, f"mail to {address} failed: {exc}")
            return
        self._store.set_delivery(notice.id, f"mailed to {address}")

    def owner_notices(self, household: str, limit: int = 200) -> list[NoticeRecord]:
        """The owner's inbox of ``household``, newest first."""
        return self._store.notices(OWNER, household=household, limit=limit)

    def staff_alerts(self, limit: int = 200) -> list[NoticeRecord]:
        """Alerts for staff, newest first."""
        return self._store.notices(STAFF, limit=limit)

    def user_notices(self, user_id: int, limit: int = 200) -> list[NoticeRecord]:
        """Notices to one account, newest first."""
        return self._store.notices(USER, user_id=user_id, limit=limit)
