#!/usr/bin/python3
"""Serve a video file over RTSP on loopback, looping forever, as a live camera would.

Standalone: run by the *system* interpreter, which has PyGObject and Debian's GStreamer RTSP
server (packages ``python3-gi gir1.2-gst-rtsp-server-1.0 gstreamer1.0-plugins-{base,good,bad}``);
it imports nothing from HomeWarden. ``homewarden.media.rtsp_server.RtspTestServer`` starts it.

    /usr/bin/python3 gst_rtsp_serve.py FILE [--host 127.0.0.1] [--port 0] [--mount cam]
    /usr/bin/python3 gst_rtsp_serve.py --check

How it works. The file is demuxed and parsed once (``parsebin``, no decoding) into memory
(all of it: meant for test clips of up to a few hundred MB).
Each RTSP media is a *live* pipeline ``appsrc ! rtph264pay`` (plus ``appsrc ! rtpmp4gpay`` for
an AAC track) fed by a thread that pushes the stored access units at real time, file after file,
with timestamps ``first_running_time + loop * period + (pts - start)``. So, like an IP camera:

* nothing is re-encoded; SPS/PPS are repeated before every keyframe (``config-interval=-1``);
* timestamps keep increasing across the loop boundary (RTP timestamps follow running time);
* the media is live: no ``a=range`` with an end, PLAY ranges are ignored, and a second client
  joins the same running stream (the media is shared) instead of rewinding it for everyone;
* when the last client leaves, the media is torn down; the next client starts a new one.

With ``--lifeline`` it also stops when its stdin reaches end of file, so a parent that dies
without stopping it (``kill -9``) does not leave it running.

On success it prints ``READY rtsp://HOST:PORT/MOUNT`` on stdout (one line, flushed) and logs to
stderr. SIGTERM or SIGINT quits the GLib main loop and exits with status 0. Port 0 picks a free
port below Linux's ephemeral range (32768+), so the same port can be taken again after a
restart without racing clients' outgoing connections.

Exit status: 0 after a signal; 2 for bad arguments or an unservable file; 3 when the port
cannot be bound; 4 when GStreamer or its RTSP server is missing (``--check`` says which).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import random
import signal
import socket
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Any

# Elements the served pipelines need, and the Debian package that ships each.
_ELEMENTS = {
    "appsrc": "gstreamer1.0-plugins-base",
    "parsebin": "gstreamer1.0-plugins-base",
    "rtph264pay": "gstreamer1.0-plugins-good",
    "rtph265pay": "gstreamer1.0-plugins-good",
    "rtpmp4gpay": "gstreamer1.0-plugins-good",
    "qtdemux": "gstreamer1.0-plugins-good",
    "h264parse": "gstreamer1.0-plugins-bad",
}
# Video codecs served as they are, with their RTP payloader.
_VIDEO_PAY = {"video/x-h264": "rtph264pay", "video/x-h265": "rtph265pay"}
_NONE = 2**64 - 1  # GST_CLOCK_TIME_NONE


def _log(msg: str) -> None:
    print(f"gst_rtsp_serve: {msg}", file=sys.stderr, flush=True)


def _import_gst() -> tuple[Any, Any, Any]:
    """Import and initialise GStreamer; raise ImportError/ValueError with the reason."""
    import gi

    gi.require_version("Gst", "1.0")
    gi.require_version("GstRtspServer", "1.0")
    from gi.repository import GLib, Gst, GstRtspServer

    Gst.init(None)
    return GLib, Gst, GstRtspServer


def check() -> int:
    """Print ``OK GStreamer x.y.z`` and return 0 when everything needed is present."""
    try:
        _glib, gst, _rtsp = _import_gst()
    except (ImportError, ValueError) as exc:
        print(
            f"GStreamer RTSP server not importable: {exc} "
            "(Debian: python3-gi gir1.2-gst-rtsp-server-1.0)"
        )
        return 4
    missing = [f"{e} ({pkg})" for e, pkg in _ELEMENTS.items() if not gst.ElementFactory.find(e)]
    if missing:
        print("GStreamer elements missing: " + ", ".join(missing))
        return 4
    print(f"OK {gst.version_string()}")
    return 0


# ---------------------------------------------------------------------------------------------
# reading the file once


@dataclass
class _Track:
    kind: str  # "video" | "audio"
    caps: Any  # Gst.Caps of the parsed elementary stream
    payloader: str
    # (pts, dts or _NONE, Gst.Buffer) in decoding order
    samples: list[tuple[int, int, Any]] = field(default_factory=list)


@dataclass
class _Clip:
    tracks: list[_Track]
    start: int  # ns, earliest pts
    period: int  # ns, one pass of the file


def _read_clip(gst: Any, path: str) -> _Clip:
    """Demux and parse ``path`` into memory. Raise ValueError when it cannot be served."""
    pipeline = gst.Pipeline.new("reader")
    src = gst.ElementFactory.make("filesrc", None)
    src.set_property("location", path)
    parse = gst.ElementFactory.make("parsebin", None)
    pipeline.add(src)
    pipeline.add(parse)
    src.link(parse)
    tracks: list[_Track] = []
    skipped: list[str] = []
    lock = threading.Lock()

    def on_sample(sink: Any, track: _Track) -> Any:
        sample = sink.emit("pull-sample")
        buf = sample.get_buffer()
        pts = buf.pts if buf.pts != _NONE else buf.dts
        if pts != _NONE:
            with lock:
                track.samples.append((pts, buf.dts, buf))
        return gst.FlowReturn.OK

    def on_pad(_bin: Any, pad: Any) -> None:
        caps = pad.get_current_caps() or pad.query_caps(None)
        name = caps.get_structure(0).get_name()
        track: _Track | None = None
        if name in _VIDEO_PAY and not any(t.kind == "video" for t in tracks):
            track = _Track("video", caps, _VIDEO_PAY[name])
        elif (
            name == "audio/mpeg"
            and caps.get_structure(0).get_value("mpegversion") == 4
            and not any(t.kind == "audio" for t in tracks)
        ):
            track = _Track("audio", caps, "rtpmp4gpay")
        if track is None:
            skipped.append(caps.to_string())
            sink = gst.ElementFactory.make("fakesink", None)
            sink.set_property("sync", False)
        else:
            tracks.append(track)
            sink = gst.ElementFactory.make("appsink", None)
            sink.set_property("sync", False)
            sink.set_property("emit-signals", True)
            sink.connect("new-sample", on_sample, track)
        sink.set_property("async", False)
        pipeline.add(sink)
        sink.sync_state_with_parent()
        pad.link(sink.get_static_pad("sink"))

    parse.connect("pad-added", on_pad)
    pipeline.set_state(gst.State.PLAYING)
    bus = pipeline.get_bus()
    msg = bus.timed_pop_filtered(120 * gst.SECOND, gst.MessageType.EOS | gst.MessageType.ERROR)
    pipeline.set_state(gst.State.NULL)
    if msg is None:
        raise ValueError(f"{path}: timed out reading the file")
    if msg.type == gst.MessageType.ERROR:
        err, _debug = msg.parse_error()
        raise ValueError(f"{path}: {err.message}")
    for s in skipped:
        _log(f"not served (unsupported stream): {s}")
    video = [t for t in tracks if t.kind == "video"]
    if not video or not video[0].samples:
        raise ValueError(
            f"{path}: no H.264/H.265 video stream to serve (found: {skipped or 'nothing'}); "
            "transcode it first (homewarden.media.transcode)"
        )
    tracks = [t for t in tracks if t.samples]
    start = min(t.samples[0][0] for t in tracks)
    end = 0
    for t in tracks:
        for pts, _dts, buf in t.samples:
            end = max(end, pts + (buf.duration if buf.duration != _NONE else 0))
    period = end - start
    frames = len(video[0].samples)
    if frames > 1:  # a last frame without a duration still lasts one frame interval
        last_pts = max(s[0] for s in video[0].samples)
        period = max(period, last_pts - start + (last_pts - start) // (frames - 1))
    if period <= 0:
        raise ValueError(f"{path}: cannot tell the stream's duration")
    return _Clip(tracks, start, period)


# ---------------------------------------------------------------------------------------------
# serving


class _Feeder(threading.Thread):
    """Pushes the clip into one media's appsrc elements at real time, looping."""

    def __init__(self, gst: Any, clip: _Clip, appsrcs: list[Any]) -> None:
        super().__init__(name="feeder", daemon=True)
        self._gst = gst
        self._clip = clip
        self._srcs = appsrcs
        self.stopping = threading.Event()
        # One list of (pace, track index, pts, dts or None, buffer), ns from the clip's start,
        # paced by decoding time (B-frames come before the frames they are shown after).
        merged = []
        for i, t in enumerate(clip.tracks):
            for n, (pts, dts, buf) in enumerate(t.samples):
                rel_dts = dts - clip.start if dts != _NONE else None
                pace = max(0, rel_dts if rel_dts is not None else pts - clip.start)
                merged.append((pace, i, n, pts - clip.start, rel_dts, buf))
        merged.sort(key=lambda m: m[:3])
        self._merged = [(m[0], m[1], m[3], m[4], m[5]) for m in merged]

    def _running_time(self, clock: Any, base: int) -> int:
        return int(clock.get_time()) - base

    def run(self) -> None:
        gst = self._gst
        first = self._srcs[0]
        # The pipeline goes to PLAYING while the media is prepared (live source).
        while not self.stopping.is_set():
            if first.get_state(0)[1] == gst.State.PLAYING and first.get_clock() is not None:
                break
            time.sleep(0.01)
        else:
            return
        clock = first.get_clock()
        base = int(first.get_base_time())
        origin = self._running_time(clock, base)
        loop = 0
        while not self.stopping.is_set():
            offset = origin + loop * self._clip.period
            for pace, index, pts, dts, buf in self._merged:
                wait_ns = offset + pace - self._running_time(clock, base)
                if wait_ns > 0 and self.stopping.wait(wait_ns / 1e9):
                    return
                out = buf.copy()
                out.pts = offset + pts
                out.dts = offset + dts if dts is not None and offset + dts >= 0 else _NONE
                ret = self._srcs[index].emit("push-buffer", out)
                if ret != gst.FlowReturn.OK:  # FLUSHING: the media was torn down
                    self.stopping.set()
                    return
            loop += 1
            _log(f"loop {loop} done")


def _pick_port(host: str) -> int:
    """A free TCP port on ``host`` below the ephemeral range, by a bind test."""
    for _ in range(50):
        port = random.randrange(20000, 32000)
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                s.bind((host, port))
            except OSError:
                continue
            return port
    return 0


def serve(path: str, host: str, port: int, mount: str, lifeline: bool = False) -> int:
    """Serve ``path`` until SIGTERM/SIGINT (or, with ``lifeline``, until stdin closes);
    return the process exit status."""
    try:
        glib, gst, rtsp = _import_gst()
    except (ImportError, ValueError) as exc:
        _log(f"GStreamer RTSP server not importable: {exc}")
        return 4
    try:
        clip = _read_clip(gst, path)
    except ValueError as exc:
        _log(str(exc))
        return 2
    for t in clip.tracks:
        _log(f"{t.kind}: {t.caps.get_structure(0).get_name()}, {len(t.samples)} units")
    _log(f"loop period {clip.period / 1e9:.3f} s")

    parts = []
    for i, t in enumerate(clip.tracks):
        extra = " config-interval=-1" if t.kind == "video" else ""
        parts.append(f"appsrc name=src{i} ! {t.payloader} name=pay{i} pt={96 + i}{extra}")
    launch = "( " + " ".join(parts) + " )"

    feeders: list[_Feeder] = []

    def on_media_configure(_factory: Any, media: Any) -> None:
        element = media.get_element()
        srcs = []
        for i, t in enumerate(clip.tracks):
            src = element.get_by_name(f"src{i}")
            src.set_property("caps", t.caps)
            src.set_property("is-live", True)
            src.set_property("format", gst.Format.TIME)
            src.set_property("do-timestamp", False)
            src.set_property("max-bytes", 64 * 1024 * 1024)
            srcs.append(src)
        feeder = _Feeder(gst, clip, srcs)
        media.connect("unprepared", lambda _m: feeder.stopping.set())
        feeders[:] = [f for f in feeders if f.is_alive()] + [feeder]
        feeder.start()

    factory = rtsp.RTSPMediaFactory()
    factory.set_launch(launch)
    factory.set_shared(True)
    factory.connect("media-configure", on_media_configure)

    server = rtsp.RTSPServer()
    server.set_address(host)
    server.get_mount_points().add_factory("/" + mount, factory)
    source_id = 0
    for _ in range(5 if port == 0 else 1):
        server.set_service(str(port or _pick_port(host)))
        source_id = server.attach(None)
        if source_id:
            break
    if not source_id:
        _log(f"cannot listen on {host}:{port}")
        return 3
    bound = server.get_bound_port()

    loop = glib.MainLoop()

    def on_signal(*_args: Any) -> bool:
        _log("signal received, stopping")
        loop.quit()
        return False

    for sig in (signal.SIGTERM, signal.SIGINT):
        glib.unix_signal_add(glib.PRIORITY_HIGH, sig, on_signal)

    def on_stdin(_fd: Any, _cond: Any) -> bool:
        # The parent holds our stdin open; end of file means it is gone.
        if not os.read(0, 4096):
            _log("stdin closed (parent gone), stopping")
            loop.quit()
            return False
        return True

    if lifeline:
        glib.unix_fd_add_full(
            glib.PRIORITY_DEFAULT, 0, glib.IOCondition.IN | glib.IOCondition.HUP, on_stdin
        )

    print(f"READY rtsp://{host}:{bound}/{mount}", flush=True)
    loop.run()

    for f in feeders:
        f.stopping.set()
    for f in feeders:
        f.join(timeout=2)
    glib.source_remove(source_id)
    return 0


def main(argv: list[str] | None = None) -> int:
    """Command line entry point; see the module docstring."""
    ap = argparse.ArgumentParser(description="Serve a video file as a looping RTSP camera.")
    ap.add_argument("file", nargs="?", help="H.264/H.265 video file (MP4, MKV, ...)")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=0, help="0 picks a free port")
    ap.add_argument("--mount", default="cam", help="path of the stream, without slash")
    ap.add_argument("--check", action="store_true", help="only check GStreamer is usable")
    ap.add_argument("--lifeline", action="store_true", help="exit when stdin reaches end of file")
    args = ap.parse_args(argv)
    if args.check:
        return check()
    if not args.file:
        ap.error("FILE is required")
    with contextlib.suppress(BrokenPipeError):
        return serve(args.file, args.host, args.port, args.mount.strip("/"), args.lifeline)
    return 0


if __name__ == "__main__":
    sys.exit(main())
