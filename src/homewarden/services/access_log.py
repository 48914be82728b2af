"""The owner's access log: who viewed what of a household's footage, and who changed its
accounts. A read-only view of the audit log (DESIGN.md flow 7: "The owner's access log is a
view of it"), newest first, one page at a time.

Entries are read from the end of the log backwards and kept when they concern the household
(``subject.household``) and carry one of the shown tags (:data:`ACCESS_LOG_TAGS`: every
``footage:*``, ``account:*`` and ``key:*`` action). A page reads at most ``scan_limit``
entries, so a household with few entries in a large shared log costs a bounded amount per
page; a page may then hold fewer than ``limit`` entries and still have a ``next_before`` to
continue from.

Entries made for a disclosure request whose owner notice is not sent yet (a search warrant
under a non-disclosure order, 18 U.S.C. 2705(b)) are left out until it is: the access log must
not tell the owner before the law lets the deployment do so. ``hidden`` names those requests.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from dataclasses import dataclass

from homewarden.domain.audit import AuditEntry, AuditTag
from homewarden.errors import InvalidRequestError
from homewarden.services.audit import AuditLog

#: Footage views: live, playback, snapshots, clip downloads.
FOOTAGE_TAGS = frozenset(t for t in AuditTag if t.value.startswith("footage:"))
#: Account changes: users, credentials, tokens, camera and support grants.
ACCOUNT_TAGS = frozenset(t for t in AuditTag if t.value.startswith("account:"))
#: Uses of household keys: unlocks, grants, revocations, rotations, recovery, escrow.
KEY_TAGS = frozenset(t for t in AuditTag if t.value.startswith("key:"))
#: What the owner's access log shows.
ACCESS_LOG_TAGS = FOOTAGE_TAGS | ACCOUNT_TAGS | KEY_TAGS
#: Most entries one page reads from the log (see the module docstring).
SCAN_LIMIT = 2000
#: Largest page.
MAX_PAGE = 200


@dataclass(frozen=True, slots=True)
class AccessPage:
    """One page of the access log, newest first. ``next_before``: pass it as ``before`` for
    the following (older) page; None when the start of the log was reached."""

    entries: list[AuditEntry]
    next_before: int | None


class AccessLog:
    """The access log of households over one :class:`AuditLog` (see the module docstring).

    Args:
        audit: the open audit log.
        scan_limit: most entries one page reads (at least 1).
        hidden: household -> ids of requests whose entries stay out of its access log for
            now (see the module docstring); None hides nothing.
    """

    def __init__(
        self,
        audit: AuditLog,
        *,
        scan_limit: int = SCAN_LIMIT,
        hidden: Callable[[str], Collection[str]] | None = None,
    ) -> None:
        if scan_limit < 1:
            raise ValueError("scan_limit must be at least 1")
        self._audit = audit
        self._scan_limit = scan_limit
        self._hidden = hidden

    def page(
        self,
        household: str,
        *,
        before: int | None = None,
        limit: int = 50,
        tags: Collection[AuditTag] = ACCESS_LOG_TAGS,
    ) -> AccessPage:
        """Entries of ``household`` with one of ``tags`` whose index is below ``before``
        (default: the whole log), newest first, at most ``limit``.

        Raises:
            InvalidRequestError: ``limit`` outside ``1..MAX_PAGE`` or a negative ``before``.
            LogTamperedError: a stored entry is not canonical (the log was altered).
            DatabaseError: the log cannot be read.
        """
        if not 1 <= limit <= MAX_PAGE:
            raise InvalidRequestError(f"limit must be between 1 and {MAX_PAGE}")
        if before is not None and before < 0:
            raise InvalidRequestError("before must not be negative")
        size = self._audit.size()
        index = size if before is None else min(before, size)
        wanted = frozenset(tags)
        hidden = frozenset(self._hidden(household)) if self._hidden is not None else frozenset()
        found: list[AuditEntry] = []
        scanned = 0
        while index > 0 and len(found) < limit and scanned < self._scan_limit:
            index -= 1
            scanned += 1
            entry = self._audit.entry(index)
            if (
                entry.subject.household == household
                and entry.action in wanted
                and entry.subject.request not in hidden
            ):
                found.append(entry)
        return AccessPage(found, index if index > 0 else None)
