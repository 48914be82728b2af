"""In-process hand-over of sealed event snapshots from the recorders to the MQTT bridge.

With footage sealed (``storage.sealed``, DESIGN.md flow 8, issue 6) an event snapshot is
sealed from memory to the household's public key (``<camera>/<event>.jpg.hwseal``) and
never written in the clear. The MQTT bridge holds no household key, so it cannot open the
file; yet an owner who set ``mqtt.snapshots = true`` chose to send event JPEGs to their own
broker. The recorder has the JPEG in memory at the moment it seals it, so it offers the bytes
here (:meth:`SnapshotTap.offer`) and the bridge takes them (:meth:`SnapshotTap.take`) when it
sees the event's snapshot path in the index. Each image the bridge sends is still audited as
a ``footage:snapshot:view`` (:mod:`homewarden.services.mqtt_bridge`).

Only within one process: the tap is memory, not a transport. On the role ``all`` with
recorder threads (the default) the recorders and the bridge share :data:`PROCESS_TAP`; a
recorder in a worker process (``recorder.processes > 1``) or on a recorder node (``--role
recorder``) offers to its own process's tap, where nobody listens, and the bridge (on the
web node) finds no image and does not send that snapshot (logged once by the bridge).

Bounds: nothing is kept unless a bridge listens (:meth:`SnapshotTap.listen`); then only the
newest snapshot of each camera (one JPEG, well under
:data:`~homewarden.services.mqtt_bridge.MAX_SNAPSHOT_BYTES`), dropped when the last listener
goes. The plaintext stays in this process's memory, where the recorder had it anyway.

Why a process-wide default rather than wiring through the runtime: the recorders are made by
recorder groups (threads here, or worker processes) that the runtime gets from a factory,
and the bridge by the runtime; both take a ``snapshot_tap`` argument (tests pass their own),
and default to :data:`PROCESS_TAP`.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class TappedSnapshot:
    """A sealed snapshot's JPEG as its recorder had it: camera, event id, the sealed file's
    path relative to the snapshot dir (the index's ``snapshot_path``) and the bytes."""

    camera: str
    event_id: int
    relpath: str
    jpeg: bytes


class SnapshotTap:
    """The newest sealed snapshot JPEG of each camera, kept while a listener wants them.
    Thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._listeners = 0
        self._latest: dict[str, TappedSnapshot] = {}

    @property
    def listening(self) -> bool:
        """Whether anyone takes snapshots from this tap (else :meth:`offer` keeps nothing)."""
        with self._lock:
            return self._listeners > 0

    def listen(self) -> None:
        """Start keeping offered snapshots (the MQTT bridge, at its start with snapshots on)."""
        with self._lock:
            self._listeners += 1

    def unlisten(self) -> None:
        """Undo one :meth:`listen`; the last one drops every kept image."""
        with self._lock:
            self._listeners = max(0, self._listeners - 1)
            if self._listeners == 0:
                self._latest.clear()

    def offer(self, camera: str, event_id: int, relpath: str, jpeg: bytes) -> None:
        """The recorder of ``camera`` sealed ``jpeg`` (bytes) as event ``event_id``'s snapshot
        ``relpath``: keep it as the camera's newest while anyone listens (call it before the
        index names the file, so a listener that sees the path finds the image)."""
        with self._lock:
            if self._listeners > 0:
                self._latest[camera] = TappedSnapshot(camera, event_id, relpath, jpeg)

    def take(self, camera: str, event_id: int, relpath: str) -> bytes | None:
        """The JPEG of event ``event_id``'s sealed snapshot ``relpath`` if it is the newest
        offered for ``camera`` (kept for a later take: an event's snapshot may be sent
        again), else None (recorded in another process, or replaced by a newer event's)."""
        with self._lock:
            found = self._latest.get(camera)
        if found is None or found.event_id != event_id or found.relpath != relpath:
            return None
        return found.jpeg


#: The tap shared by the recorder threads and the MQTT bridge of this process.
PROCESS_TAP = SnapshotTap()
