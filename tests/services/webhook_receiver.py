"""A webhook receiver on loopback, for tests: a real HTTP server in a thread that records each
POST (path, headers, exact body bytes) and answers with a status chosen per path (200 unless
told otherwise, optionally with a ``Retry-After``). It can be stopped (its port then refuses
connections) and started again on the same port, as a Home Assistant that restarts.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass(frozen=True)
class Call:
    """One POST as the receiver saw it."""

    path: str
    headers: dict[str, str]  # names in lower case
    body: bytes
    status: int


class Receiver:
    """The receiver; :meth:`url` names a path on it."""

    def __init__(self) -> None:
        self.calls: list[Call] = []
        self.status: dict[str, int] = {}
        self.retry_after: dict[str, str] = {}
        self._lock = threading.Condition()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self.port = 0

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length)
                status = receiver.status.get(self.path, 200)
                headers = {k.lower(): v for k, v in self.headers.items()}
                with receiver._lock:
                    receiver.calls.append(Call(self.path, headers, body, status))
                    receiver._lock.notify_all()
                self.send_response(status)
                wait = receiver.retry_after.get(self.path)
                if wait is not None:
                    self.send_header("Retry-After", wait)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, format: str, *args: object) -> None:
                pass

        return Handler

    def start(self) -> None:
        """Listen on 127.0.0.1 (the same port as before, after a :meth:`stop`)."""
        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), self._handler())
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop listening: connections to the port are refused from now on."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(5)
            self._thread = None

    def url(self, path: str = "/hook") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def wait_for(self, count: int, timeout: float = 10.0) -> list[Call]:
        """The calls once there are at least ``count`` (or fail after ``timeout`` s)."""
        deadline = time.monotonic() + timeout
        with self._lock:
            while len(self.calls) < count:
                left = deadline - time.monotonic()
                assert left > 0, f"{len(self.calls)} calls, waited for {count}"
                self._lock.wait(left)
            return list(self.calls)


@contextmanager
def receiving() -> Iterator[Receiver]:
    """A started receiver, stopped afterwards."""
    r = Receiver()
    r.start()
    try:
        yield r
    finally:
        r.stop()
