"""Following the index's new events: a named cursor in the database, a handler, a thread.

For services that send events out of the process (webhooks; an MQTT publisher can use the
same): :class:`EventFollower` reads the events opened since its cursor
(:meth:`~homewarden.store.index.Index.events_after`, by id, which is the order they were
opened in), hands each to a handler, and moves its cursor past it once the handler returned.
The cursor lives in the ``event_cursors`` table under the follower's own name
(:class:`~homewarden.store.webhook_store.EventCursors`), so a restart neither repeats an
event nor skips one, and followers do not move each other's position. (The Web Push notifier
keeps its older single-row cursor in ``notify_cursor``.)

Delivery is at least once: a process that dies between a handler's return and the cursor's
move hands that event over again after the restart, so handlers make their effect idempotent
(the webhook service keys its messages by event id).

An event that started more than ``stale_after`` seconds before it is first seen is passed over
(the cursor moves past it, the handler is not called): a follower that was not running while
the recorder was (an outage, a first start on an old database) does not replay old news.

A handler that raises a :class:`~homewarden.errors.HomeWardenError` (its database is down)
stops the pass at that event without moving the cursor; the next pass tries it again.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from homewarden.errors import HomeWardenError
from homewarden.store.index import Index
from homewarden.store.records import EventRecord
from homewarden.store.webhook_store import EventCursors

log = logging.getLogger(__name__)

#: Events that started longer ago than this when first seen are passed over (seconds; the
#: Web Push notifier's rule, :data:`homewarden.services.push.STALE_AFTER`).
STALE_AFTER = 15 * 60.0
#: Seconds between polls of the index.
POLL_INTERVAL = 1.0
#: Events read per poll.
BATCH = 100


class EventFollower:
    """Hands each new event of ``index`` to ``handler`` once (see the module docstring).

    Args:
        index: the index whose events are followed.
        name: the cursor's name (1-64 characters), one per kind of follower.
        handler: called with each new event, in id order.
        clock: now as UTC epoch seconds (for ``stale_after`` and the cursor's ``updated_at``).
        interval: seconds between polls on the thread.
        stale_after: seconds; older events are passed over. None: hand over every event.
    """

    def __init__(
        self,
        index: Index,
        name: str,
        handler: Callable[[EventRecord], object],
        *,
        clock: Callable[[], float] = time.time,
        interval: float = POLL_INTERVAL,
        stale_after: float | None = STALE_AFTER,
    ) -> None:
        if not 0 < len(name) <= 64:
            raise ValueError(f"a cursor name is 1-64 characters, got {name!r}")
        self._index = index
        self._cursors = EventCursors(index)
        self._name = name
        self._handler = handler
        self._clock = clock
        self._interval = interval
        self._stale_after = stale_after
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    @property
    def name(self) -> str:
        """The cursor's name."""
        return self._name

    def position(self) -> int:
        """The newest event id handled or passed over (0 before the first)."""
        return self._cursors.get(self._name) or 0

    def poll(self) -> int:
        """One pass over the events after the cursor (at most :data:`BATCH`); returns how
        many were handed to the handler.

        Raises:
            DatabaseError: the index does not answer.
        """
        with self._lock:
            after = self.position()
            handled = 0
            for event in self._index.events_after(after, BATCH):
                now = self._clock()
                fresh = self._stale_after is None or event.start >= now - self._stale_after
                if fresh:
                    try:
                        self._handler(event)
                    except HomeWardenError as exc:
                        log.error("%s: event %d not handled yet: %s", self._name, event.id, exc)
                        break
                    handled += 1
                self._cursors.set(self._name, event.id, now)
            return handled

    def start(self) -> None:
        """Poll every ``interval`` seconds on a daemon thread.

        Raises:
            RuntimeError: already started.
        """
        if self._thread is not None:
            raise RuntimeError(f"event follower {self._name} already started")
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name=f"events-{self._name}", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 30.0) -> None:
        """Stop polling (a handler call in flight finishes first). Safe to call twice."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                while self.poll() and not self._stop.is_set():
                    pass  # a full batch may have more behind it
            except HomeWardenError as exc:
                log.error("%s: %s", self._name, exc)
            except Exception:
                log.exception("%s: unexpected error", self._name)
            self._stop.wait(self._interval)
