"""A real RTSP camera on loopback, for tests and ``homewarden demo``.

:class:`RtspTestServer` runs ``gst_rtsp_serve.py`` (beside this module) with the *system*
Python, which has PyGObject and Debian's GStreamer RTSP server (DESIGN.md, "test camera"); the
project's virtual environment has neither. The served stream is live and loops the file with
ever-increasing timestamps; see that script's docstring.

    with RtspTestServer(Path("vtest.mp4")) as cam:
        av.open(cam.url, options={"rtsp_transport": "tcp"})
        cam.kill()        # like a camera losing power
        cam.restart()     # back on the same URL

The interpreter is ``$HOMEWARDEN_GST_PYTHON`` if set, else ``/usr/bin/python3``, else the first
``python3`` on ``PATH``.
"""

from __future__ import annotations

import contextlib
import functools
import os
import queue
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from types import TracebackType
from typing import IO

from homewarden.errors import MediaError

__all__ = ["SERVE_SCRIPT", "RtspTestServer", "gst_python", "gst_rtsp_available"]

#: The standalone server script, run by the system interpreter.
SERVE_SCRIPT = Path(__file__).with_name("gst_rtsp_serve.py")
#: Reading a clip into memory is quick; 30 s allows for a cold disk cache and a busy CI box.
DEFAULT_READY_TIMEOUT = 30.0
_ENV_PYTHON = "HOMEWARDEN_GST_PYTHON"


def gst_python() -> str:
    """Path of the interpreter that runs the server script (see the module docstring)."""
    configured = os.environ.get(_ENV_PYTHON)
    if configured:
        return configured
    if Path("/usr/bin/python3").exists():
        return "/usr/bin/python3"
    return shutil.which("python3") or "python3"


def _child_env() -> dict[str, str]:
    # The system interpreter must not see the virtual environment's paths.
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    env.pop("VIRTUAL_ENV", None)
    return env


@functools.cache
def _check(python: str) -> tuple[bool, str]:
    try:
        done = subprocess.run(
            [python, str(SERVE_SCRIPT), "--check"],
            capture_output=True,
            text=True,
            timeout=60,
            env=_child_env(),
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return False, f"{python}: cannot run: {exc}"
    out = (done.stdout.strip() or done.stderr.strip()).splitlines()
    reason = out[-1] if out else f"exit status {done.returncode}"
    if done.returncode == 0:
        return True, f"{python}: {reason}"
    return False, f"{python}: {reason}"


def gst_rtsp_available() -> tuple[bool, str]:
    """Whether the GStreamer RTSP server can run here, and why (not).

    Returns:
        ``(True, "<python>: OK GStreamer x.y.z")`` or ``(False, reason)``; the reason names
        the missing Debian package. The answer is cached per interpreter for the process.
    """
    return _check(gst_python())


class RtspTestServer:
    """A looping RTSP camera serving ``media`` at ``rtsp://127.0.0.1:<port>/<mount>``.

    Args:
        media: an H.264 or H.265 file (MP4, MKV, ...), e.g. from
            :func:`homewarden.media.transcode.transcode_to_h264`; an AAC track is served too.
        mount: the URL path, without slashes.
        port: TCP port; 0 lets the server pick a free one, kept for :meth:`restart`.
        host: listening address; loopback only by default.
        ready_timeout: seconds to wait for the server to say it is listening.

    The process is started by :meth:`start` (or ``with``), and always stopped by
    :meth:`stop` / the ``with`` block's end. Not thread-safe: one owner drives it.
    """

    def __init__(
        self,
        media: Path,
        *,
        mount: str = "cam",
        port: int = 0,
        host: str = "127.0.0.1",
        ready_timeout: float = DEFAULT_READY_TIMEOUT,
    ) -> None:
        self.media = Path(media)
        self.mount = mount.strip("/")
        self.host = host
        self.ready_timeout = ready_timeout
        self._port = port
        self._proc: subprocess.Popen[str] | None = None
        self._stderr: IO[str] | None = None
        self._url: str | None = None

    # -- state -------------------------------------------------------------------------------

    @property
    def url(self) -> str:
        """``rtsp://host:port/mount``; stays the same across :meth:`restart`.

        Raises:
            MediaError: the server was never started.
        """
        if self._url is None:
            raise MediaError("RTSP test server not started")
        return self._url

    @property
    def port(self) -> int:
        """The TCP port (0 until the first start when it was asked to pick one)."""
        return self._port

    @property
    def running(self) -> bool:
        """True while the server process is alive."""
        return self._proc is not None and self._proc.poll() is None

    @property
    def pid(self) -> int | None:
        """The server's process id, or None when not running."""
        return self._proc.pid if self.running and self._proc is not None else None

    def stderr_text(self) -> str:
        """What the server process wrote on stderr so far (its log)."""
        if self._stderr is None:
            return ""
        self._stderr.flush()
        self._stderr.seek(0)
        return self._stderr.read()

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> RtspTestServer:
        """Start the server and wait until it listens.

        Returns:
            self, for chaining.

        Raises:
            MediaError: the media file is missing, GStreamer's RTSP server is unavailable, or
                the server did not print READY within ``ready_timeout`` (the message carries
                its stderr).
        """
        if self.running:
            return self
        if not self.media.is_file():
            raise MediaError(f"{self.media}: no such file to serve")
        ok, reason = gst_rtsp_available()
        if not ok:
            raise MediaError(f"GStreamer RTSP server unavailable: {reason}")
        self._close_stderr()
        # Lives as long as this object: the server log, read on errors.
        self._stderr = tempfile.TemporaryFile(  # noqa: SIM115
            "w+", prefix="homewarden-rtsp-", suffix=".log"
        )
        cmd = [
            gst_python(),
            str(SERVE_SCRIPT),
            str(self.media),
            "--host",
            self.host,
            "--port",
            str(self._port),
            "--mount",
            self.mount,
            "--lifeline",
        ]
        try:
            proc = subprocess.Popen(
                cmd,
                stdin=subprocess.PIPE,  # the lifeline: closed when we go, however we go
                stdout=subprocess.PIPE,
                stderr=self._stderr,
                text=True,
                env=_child_env(),
                start_new_session=True,  # a Ctrl-C in the terminal is ours to forward
            )
        except OSError as exc:
            raise MediaError(f"cannot start the RTSP test server: {exc}") from exc
        self._proc = proc
        url = self._wait_ready(proc)
        if url is None:
            exited = proc.poll()
            self._terminate(proc, timeout=2.0)
            what = (
                f"exited with status {exited} before it was ready"
                if exited is not None
                else f"was not ready within {self.ready_timeout:g} s"
            )
            raise MediaError(
                f"RTSP test server for {self.media} {what}; its log:\n{self.stderr_text().strip()}"
            )
        self._url = url
        self._port = int(url.split("//", 1)[1].split("/", 1)[0].rsplit(":", 1)[1])
        return self

    def _wait_ready(self, proc: subprocess.Popen[str]) -> str | None:
        assert proc.stdout is not None
        lines: queue.Queue[str | None] = queue.Queue()
        stdout = proc.stdout

        def pump() -> None:
            # Drains stdout for the process's life so it never blocks on a full pipe.
            with stdout:
                for line in stdout:
                    lines.put(line)
            lines.put(None)

        threading.Thread(target=pump, name="rtsp-server-stdout", daemon=True).start()
        deadline = time.monotonic() + self.ready_timeout
        while (left := deadline - time.monotonic()) > 0:
            try:
                line = lines.get(timeout=left)
            except queue.Empty:
                break
            if line is None:
                proc.wait()
                return None
            if line.startswith("READY "):
                return line.split(None, 1)[1].strip()
        return None

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the server: SIGTERM, wait up to ``timeout`` s, then SIGKILL. Idempotent."""
        if self._proc is not None:
            self._terminate(self._proc, timeout)

    def kill(self) -> None:
        """Kill the server at once (SIGKILL), like a camera losing power; wait for it."""
        if self._proc is not None:
            if self._proc.poll() is None:
                self._proc.kill()
            self._reap(self._proc)

    def restart(self) -> RtspTestServer:
        """Stop if running, then start again on the same port and URL.

        Raises:
            MediaError: as :meth:`start`.
        """
        self.stop()
        return self.start()

    @property
    def returncode(self) -> int | None:
        """The last server process's exit status, None while it runs or before a start."""
        return None if self._proc is None else self._proc.poll()

    def _terminate(self, proc: subprocess.Popen[str], timeout: float) -> None:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
        self._reap(proc)

    @staticmethod
    def _reap(proc: subprocess.Popen[str]) -> None:
        proc.wait()
        if proc.stdin is not None and not proc.stdin.closed:
            with contextlib.suppress(OSError):
                proc.stdin.close()

    def _close_stderr(self) -> None:
        if self._stderr is not None:
            self._stderr.close()
            self._stderr = None

    def close(self) -> None:
        """Stop the server and drop its log."""
        self.stop()
        self._close_stderr()

    def __enter__(self) -> RtspTestServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "running" if self.running else "stopped"
        return f"RtspTestServer({str(self.media)!r}, url={self._url!r}, {state})"
