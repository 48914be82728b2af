"""The owner's access log over a real audit log (SQLite and PostgreSQL): newest first, only
the household's footage and account entries, paged, with a bounded scan per page."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from homewarden.domain.audit import Actor, ActorKind, AuditTag
from homewarden.errors import InvalidRequestError
from homewarden.services.access_log import ACCESS_LOG_TAGS, AccessLog
from homewarden.services.audit import AuditLog
from homewarden.store.index import Index

MIA = Actor(ActorKind.USER, "2")
T = 1_700_000_000.0


@pytest.fixture
def audit(index: Index, database_url: str, tmp_path: Path) -> Iterator[AuditLog]:
    with AuditLog.open(database_url, tmp_path / "keys", household="home") as log:
        yield log


def _fill(audit: AuditLog) -> list[int]:
    """Entries of two households and of tags the access log does not show; returns the
    indexes of the ones it shows for ``home``, oldest first."""
    shown = []
    for i in range(6):
        shown.append(
            audit.append(
                AuditTag.FOOTAGE_CLIP_DOWNLOAD,
                MIA,
                f"api {i}",
                camera="front",
                start=T + i,
                end=T + i + 10,
                household="home",
            ).index
        )
        audit.append(AuditTag.FOOTAGE_SNAPSHOT_VIEW, MIA, "api", camera="x", household="other")
        audit.append(AuditTag.AUTH_LOGIN_SUCCEED, MIA, "from 127.0.0.1", household="home")
    shown.append(
        audit.append(AuditTag.ACCOUNT_CAMERA_GRANT, MIA, "front to mia", household="home").index
    )
    return shown


def test_newest_first_household_and_tags_only(audit: AuditLog) -> None:
    shown = _fill(audit)
    page = AccessLog(audit).page("home", limit=50)
    assert [e.index for e in page.entries] == shown[::-1]
    assert page.next_before is None
    assert all(e.subject.household == "home" for e in page.entries)
    assert all(e.action in ACCESS_LOG_TAGS for e in page.entries)
    first = page.entries[-1]
    assert first.action is AuditTag.FOOTAGE_CLIP_DOWNLOAD
    assert first.actor == MIA
    assert (first.subject.camera, first.subject.start_ms) == ("front", int(T * 1000))
    assert [e.index for e in AccessLog(audit).page("other").entries] == [i + 1 for i in shown[:-1]][
        ::-1
    ]
    assert AccessLog(audit).page("nobody").entries == []


def test_pages_follow_on_without_overlap(audit: AuditLog) -> None:
    shown = _fill(audit)
    log = AccessLog(audit)
    seen: list[int] = []
    before = None
    while True:
        page = log.page("home", before=before, limit=3)
        assert len(page.entries) <= 3
        seen += [e.index for e in page.entries]
        if page.next_before is None:
            break
        before = page.next_before
    assert seen == shown[::-1]
    only_grants = log.page("home", tags={AuditTag.ACCOUNT_CAMERA_GRANT})
    assert [e.index for e in only_grants.entries] == [shown[-1]]


def test_scan_limit_bounds_a_page_and_still_continues(audit: AuditLog) -> None:
    shown = _fill(audit)
    log = AccessLog(audit, scan_limit=4)
    page = log.page("home", limit=50)
    # Four entries read from the end: the grant, then login, snapshot (other), download.
    assert [e.index for e in page.entries] == [shown[-1], shown[-2]]
    assert page.next_before == audit.size() - 4
    collected = [e.index for e in page.entries]
    while page.next_before is not None:
        page = log.page("home", before=page.next_before, limit=50)
        collected += [e.index for e in page.entries]
    assert collected == shown[::-1]


def test_bad_arguments(audit: AuditLog) -> None:
    log = AccessLog(audit)
    with pytest.raises(InvalidRequestError):
        log.page("home", limit=0)
    with pytest.raises(InvalidRequestError):
        log.page("home", before=-1)
    with pytest.raises(ValueError, match="scan_limit"):
        AccessLog(audit, scan_limit=0)
    assert log.page("home", before=0).entries == []
