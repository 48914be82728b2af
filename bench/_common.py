"""Shared helpers of the benchmarks: footage, cached camera clips, child processes, CPU time.

Every benchmark runs the measured work in a child process of its own and reads that child's
CPU time (user + system, all threads) from the kernel, so the parent's work (making clips,
polling, printing) never counts. Results are printed as ratios against a baseline measured in
the same run, never as absolute pass/fail times: this machine is shared and its speed varies.

Clips are made once with PyAV + libx264 and cached under :func:`cache_dir` (``bench/.cache`` by
default, ``$HOMEWARDEN_BENCH_CACHE`` to move it); a JSON sidecar next to each clip records the
parameters it was made with, and a later call with the same parameters reuses it.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import av.error
import numpy as np
from av.video.frame import PictureType, VideoFrame
from av.video.stream import VideoStream
from numpy.typing import NDArray

from homewarden.errors import FootageUnavailableError, MediaError
from homewarden.media.transcode import is_cached, write_sidecar

REPO_ROOT = Path(__file__).resolve().parents[1]

#: The benchmark camera of issue 2 ("Speed"): 1280x720, 30 fps, a keyframe every 2 s.
CLIP_SIZE = (1280, 720)
CLIP_FPS = 30
GOP_SECONDS = 2.0
#: Sensor noise added to every frame (luma levels, 0-255), the value
#: ``homewarden.media.transcode.make_quiet_720p_clip`` uses: without it a still scene
#: compresses to empty P-frames, far cheaper to decode than a real camera.
NOISE_SIGMA = 3.5
#: x264 settings of a camera-like stream, as in ``homewarden.media.transcode``: preset
#: "veryfast", CRF 23 (x264's default quality), High profile.
_X264_PRESET = "veryfast"
_X264_CRF = 23
#: Bump when a clip recipe here changes, so cached clips are rebuilt.
_RECIPE = 1


# --------------------------------------------------------------------------------------------
# footage and cache


def footage_path(name: str = "vtest.avi") -> Path:
    """A real footage file: ``$HOMEWARDEN_FOOTAGE_DIR/<name>`` or ``<repo>/../shared/footage``.

    Raises:
        FootageUnavailableError: the file is not there.
    """
    configured = os.environ.get("HOMEWARDEN_FOOTAGE_DIR")
    directory = Path(configured) if configured else REPO_ROOT.parent / "shared" / "footage"
    path = directory / name
    if not path.is_file():
        raise FootageUnavailableError(
            f"real footage {path} not found; set HOMEWARDEN_FOOTAGE_DIR to a folder holding "
            f"{name} (OpenCV's sample vtest.avi, Debian package opencv-doc)"
        )
    return path


def cache_dir() -> Path:
    """Where benchmark clips are cached: ``$HOMEWARDEN_BENCH_CACHE`` or ``bench/.cache``."""
    configured = os.environ.get("HOMEWARDEN_BENCH_CACHE")
    directory = Path(configured) if configured else REPO_ROOT / "bench" / ".cache"
    directory.mkdir(parents=True, exist_ok=True)
    return directory


def quiet_clip(seconds: float = 60.0, *, directory: Path | None = None) -> Path:
    """The idle-cost camera (issue 2): a quiet 1280x720, 30 fps, GOP 2 s H.264 MP4.

    Made by ``homewarden.media.transcode.make_quiet_720p_clip`` from the first frame of
    ``vtest.avi`` (held, with fresh sensor noise on every frame) and cached.

    Raises:
        FootageUnavailableError: no vtest.avi. MediaError: the clip cannot be made.
    """
    from homewarden.media.transcode import make_quiet_720p_clip

    where = directory if directory is not None else cache_dir()
    dst = where / f"quiet-720p30-{seconds:g}s.mp4"
    return make_quiet_720p_clip(dst, seconds, footage=footage_path(), gop_seconds=GOP_SECONDS)


def describe_clip(path: Path) -> str:
    """``"1280x720 30 fps GOP 2 s h264"``: a clip's size, rate, keyframe interval and codec.

    Raises:
        MediaError: the clip cannot be read.
    """
    try:
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            ctx = stream.codec_context
            rate = float(stream.average_rate or 0)
            keys: list[int] = []
            for n, packet in enumerate(container.demux(stream)):
                if packet.size and packet.is_keyframe:
                    keys.append(n)
                if len(keys) == 2 or n > 2000:
                    break
    except (av.error.FFmpegError, OSError, IndexError) as exc:
        raise MediaError(f"{path}: cannot read: {exc}") from exc
    gop = f"GOP {(keys[1] - keys[0]) / rate:g} s" if len(keys) == 2 and rate else "one keyframe"
    return f"{ctx.width}x{ctx.height} {rate:g} fps {gop} {ctx.name}"


# --------------------------------------------------------------------------------------------
# the motion clip


@dataclass(frozen=True, slots=True)
class MotionLayout:
    """Where the motion is in a :func:`make_motion_clip` clip.

    The clip is ``seconds`` long and made of periods of ``period`` seconds; each period holds
    one burst of ``burst`` seconds of real moving footage starting ``offset`` seconds into the
    period, and is quiet otherwise. Because the bursts repeat every ``period``, any window of
    ``period`` seconds (or a multiple) holds the same share of motion wherever it starts -
    which lets cameras play the clip from different keyframes and still see the same load.
    """

    seconds: float = 60.0
    period: float = 30.0
    burst: float = 3.0
    offset: float = 12.0

    @property
    def motion_share(self) -> float:
        """Fraction of the time with real motion (0.1 by default: issue 2's "10 %")."""
        return self.burst / self.period

    def bursts(self) -> list[tuple[float, float]]:
        """``(start, end)`` seconds of each burst within the clip."""
        out: list[tuple[float, float]] = []
        k = 0
        while k * self.period + self.offset < self.seconds:
            start = k * self.period + self.offset
            out.append((start, min(start + self.burst, self.seconds)))
            k += 1
        return out


def make_motion_clip(
    dst: Path,
    footage: Path,
    layout: MotionLayout = MotionLayout(),
    *,
    size: tuple[int, int] = CLIP_SIZE,
    fps: int = CLIP_FPS,
    gop_seconds: float = GOP_SECONDS,
    noise_sigma: float = NOISE_SIGMA,
    seed: int = 0,
) -> Path:
    """Make a camera clip that is quiet except for bursts of real motion; cached by parameters.

    Quiet frames are the first frame of ``footage`` (vtest.avi: a CCTV view of a walkway)
    scaled to ``size``; burst ``k`` shows ``footage`` from ``k * layout.burst`` seconds on, as
    it is (pedestrians walking), so the bursts together play the footage's first
    ``len(bursts) * burst`` seconds. Every frame gets fresh zero-mean Gaussian luma noise of
    ``noise_sigma`` levels (a bank of 16 planes from ``numpy.random.default_rng(seed)``), as a
    real sensor would. Encoded with libx264 like a camera: yuv420p, High profile, CRF 23,
    ``keyint = min-keyint = gop_seconds * fps`` with scene cuts off (every keyframe an IDR,
    exactly regular), no B-frames, one slice per frame (frame threads, not slice threads).

    Args:
        dst: output ``.mp4``; written as ``<dst>.<pid>.part`` and renamed into place, with a
            ``<dst>.json`` sidecar of the parameters.
        footage: real footage at least ``len(bursts) * burst`` seconds long.
        layout: where the bursts are.
        size: (width, height) in pixels, even numbers.
        fps: frames per second.

    Returns:
        ``dst``.

    Raises:
        MediaError: ``footage`` cannot be decoded or is too short, or ``dst`` cannot be written.
    """
    params = {
        "kind": "motion_clip",
        "recipe": _RECIPE,
        "footage": str(footage.resolve()),
        "footage_size": footage.stat().st_size,
        "layout": [layout.seconds, layout.period, layout.burst, layout.offset],
        "size": list(size),
        "fps": fps,
        "gop_seconds": gop_seconds,
        "noise_sigma": noise_sigma,
        "seed": seed,
    }
    if is_cached(dst, params):
        return dst
    width, height = size
    bursts = layout.bursts()
    motion = _footage_frames(footage, len(bursts) * layout.burst, width, height)
    quiet = motion[0][1]
    rng = np.random.default_rng(seed)
    bank = [
        np.rint(rng.normal(0.0, noise_sigma, size=(height, width))).astype(np.int16)
        for _ in range(16)
    ]
    total = round(layout.seconds * fps)
    with _H264Writer(dst, width, height, fps, gop_seconds) as writer:
        for n in range(total):
            t = n / fps
            planes = quiet
            for k, (start, end) in enumerate(bursts):
                if start <= t < end:
                    planes = _frame_at(motion, k * layout.burst + (t - start))
                    break
            noisy = planes.copy()
            noise = bank[int(rng.integers(len(bank)))]
            noisy[:height] = np.clip(planes[:height].astype(np.int16) + noise, 0, 255)
            writer.write(VideoFrame.from_ndarray(noisy, format="yuv420p"))
    write_sidecar(dst, params)
    return dst


def rotate_clip(src: Path, dst: Path, keyframes: int) -> Path:
    """Copy ``src`` starting at its ``keyframes``-th keyframe, wrapping around (no re-encode).

    The packets from that keyframe to the end come first, then those before it, re-timed so
    the clip plays continuously. Every GOP of a camera-like clip (closed, starting with an
    IDR frame) decodes on its own, so the result is the same clip seen from a later moment.
    Cached like the other clips.

    Args:
        src: an H.264 MP4 whose first packet is a keyframe.
        dst: output ``.mp4``.
        keyframes: how many keyframes to skip (taken modulo the number of keyframes).

    Returns:
        ``dst``.

    Raises:
        MediaError: ``src`` cannot be read or ``dst`` cannot be written.
    """
    params = {
        "kind": "rotated",
        "recipe": _RECIPE,
        "src": str(src.resolve()),
        "src_size": src.stat().st_size,
        "src_mtime_ns": src.stat().st_mtime_ns,
        "keyframes": keyframes,
    }
    if is_cached(dst, params):
        return dst
    part = dst.with_name(f"{dst.name}.{os.getpid()}.part")
    try:
        with av.open(str(src)) as container:
            stream = container.streams.video[0]
            packets = [p for p in container.demux(stream) if p.size]
            if not packets or not packets[0].is_keyframe:
                raise MediaError(f"{src}: does not start with a keyframe")
            keys = [i for i, p in enumerate(packets) if p.is_keyframe]
            first = keys[keyframes % len(keys)]
            order = packets[first:] + packets[:first]
            step = int(packets[0].duration or 0)  # ticks per frame: the clips are regular
            if step <= 0:
                raise MediaError(f"{src}: packets carry no duration")
            with av.open(str(part), "w", format="mp4", options={"movflags": "+faststart"}) as out:
                ostream = out.add_stream_from_template(stream)
                for n, packet in enumerate(order):
                    packet.pts = packet.dts = n * step
                    packet.duration = step
                    packet.stream = ostream
                    out.mux(packet)
        part.replace(dst)
    except (av.error.FFmpegError, OSError) as exc:
        part.unlink(missing_ok=True)
        raise MediaError(f"cannot rotate {src} into {dst}: {exc}") from exc
    write_sidecar(dst, params)
    return dst


def motion_clip_variants(
    count: int,
    layout: MotionLayout = MotionLayout(),
    *,
    size: tuple[int, int] = CLIP_SIZE,
    fps: int = CLIP_FPS,
    gop_seconds: float = GOP_SECONDS,
    directory: Path | None = None,
) -> list[Path]:
    """The motion clip and ``count - 1`` rotations of it, spread over one motion period.

    Variant ``i`` starts ``i * period / count`` seconds (rounded to a keyframe) into the clip,
    so cameras given different variants see their bursts at different moments, as the cameras
    of one home do, while each still sees the same share of motion.

    Raises:
        FootageUnavailableError: no vtest.avi. MediaError: a clip cannot be made.
    """
    where = directory if directory is not None else cache_dir()
    tag = f"{size[1]}p{fps}-{layout.seconds:g}s-m{layout.burst:g}of{layout.period:g}"
    base = make_motion_clip(
        where / f"motion-{tag}.mp4",
        footage_path(),
        layout,
        size=size,
        fps=fps,
        gop_seconds=gop_seconds,
    )
    gops_per_period = max(1, round(layout.period / gop_seconds))
    out = [base]
    for i in range(1, count):
        shift = i * gops_per_period // count
        if shift == 0:
            out.append(base)
            continue
        out.append(rotate_clip(base, where / f"motion-{tag}-rot{shift}.mp4", shift))
    return out


def _footage_frames(
    footage: Path, seconds: float, width: int, height: int
) -> list[tuple[float, NDArray[np.uint8]]]:
    """(seconds from the first frame, yuv420p planes at width x height) of ``footage``'s first
    ``seconds`` (at least one frame)."""
    frames: list[tuple[float, NDArray[np.uint8]]] = []
    try:
        with av.open(str(footage)) as container:
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            t0: float | None = None
            for frame in container.decode(stream):
                if frame.pts is None or frame.time_base is None:
                    raise MediaError(f"{footage}: frame without a timestamp")
                t = float(frame.pts * frame.time_base)
                t0 = t if t0 is None else t0
                if t - t0 >= seconds and frames:
                    break
                planes = frame.reformat(width=width, height=height, format="yuv420p")
                frames.append((t - t0, np.asarray(planes.to_ndarray(), dtype=np.uint8)))
    except (av.error.FFmpegError, OSError) as exc:
        raise MediaError(f"{footage}: cannot decode: {exc}") from exc
    if not frames or frames[-1][0] + 1.0 < seconds:
        raise MediaError(f"{footage}: shorter than the {seconds:g} s of motion needed")
    return frames


def _frame_at(frames: Sequence[tuple[float, NDArray[np.uint8]]], t: float) -> NDArray[np.uint8]:
    """The frame on screen at ``t`` seconds (the last one starting at or before it)."""
    shown = frames[0][1]
    for start, planes in frames:
        if start > t + 1e-9:
            break
        shown = planes
    return shown


class _H264Writer:
    """A camera-like libx264 encoder writing ``<dst>.<pid>.part``, renamed on a clean close."""

    def __init__(self, dst: Path, width: int, height: int, fps: int, gop_seconds: float) -> None:
        gop = max(1, round(gop_seconds * fps))
        self._dst = dst
        self._part = dst.with_name(f"{dst.name}.{os.getpid()}.part")
        self._count = 0
        try:
            dst.parent.mkdir(parents=True, exist_ok=True)
            self._out = av.open(
                str(self._part), "w", format="mp4", options={"movflags": "+faststart"}
            )
            stream = self._out.add_stream(
                "libx264",
                rate=fps,
                options={
                    "preset": _X264_PRESET,
                    "profile": "high",
                    "crf": str(_X264_CRF),
                    # Regular closed GOPs without B-frames, like an IP camera (x264 --fullhelp).
                    "x264-params": f"keyint={gop}:min-keyint={gop}:scenecut=0:bframes=0:open-gop=0",
                },
            )
        except (av.error.FFmpegError, OSError) as exc:
            self._part.unlink(missing_ok=True)
            raise MediaError(f"{dst}: cannot create: {exc}") from exc
        assert isinstance(stream, VideoStream)
        stream.width, stream.height = width, height
        stream.pix_fmt = "yuv420p"
        self._tb = Fraction(1, fps)
        stream.codec_context.time_base = self._tb
        stream.codec_context.gop_size = gop
        stream.codec_context.max_b_frames = 0
        # Slice threads would cut each frame into one slice per core; cameras send one.
        stream.codec_context.thread_type = "FRAME"
        self._stream = stream

    def __enter__(self) -> _H264Writer:
        return self

    def write(self, frame: VideoFrame) -> None:
        frame.pts = self._count
        frame.time_base = self._tb
        frame.pict_type = PictureType.NONE
        self._mux(self._stream.encode(frame))
        self._count += 1

    def _mux(self, packets: list[Any]) -> None:
        try:
            self._out.mux(packets)
        except (av.error.FFmpegError, OSError) as exc:
            raise MediaError(f"{self._dst}: cannot write: {exc}") from exc

    def __exit__(self, exc_type: type[BaseException] | None, *_: object) -> None:
        try:
            if exc_type is None:
                self._mux(self._stream.encode(None))
            self._out.close()
            if exc_type is None:
                self._part.replace(self._dst)
        except (av.error.FFmpegError, OSError) as exc:
            raise MediaError(f"{self._dst}: cannot finish: {exc}") from exc
        finally:
            self._part.unlink(missing_ok=True)


# --------------------------------------------------------------------------------------------
# CPU time, child processes, machine load


@dataclass(frozen=True, slots=True)
class CpuTimes:
    """CPU seconds of a process (all its threads): ``user`` and ``sys``."""

    user: float
    sys: float

    @property
    def total(self) -> float:
        """user + sys seconds."""
        return self.user + self.sys

    def __sub__(self, other: CpuTimes) -> CpuTimes:
        return CpuTimes(self.user - other.user, self.sys - other.sys)

    def as_dict(self) -> dict[str, float]:
        """``{"user": s, "sys": s}``."""
        return {"user": self.user, "sys": self.sys}


def self_cpu() -> CpuTimes:
    """CPU seconds this process has used so far (``getrusage(RUSAGE_SELF)``, all threads)."""
    r = resource.getrusage(resource.RUSAGE_SELF)
    return CpuTimes(r.ru_utime, r.ru_stime)


def child_env() -> dict[str, str]:
    """The environment for a benchmark child: this one, with the repo root importable."""
    env = dict(os.environ)
    paths = [str(REPO_ROOT), *filter(None, env.get("PYTHONPATH", "").split(os.pathsep))]
    env["PYTHONPATH"] = os.pathsep.join(paths)
    return env


def spawn(module: str, args: Sequence[str], log_path: Path) -> subprocess.Popen[bytes]:
    """Start ``python -m <module> <args>`` as a child; its stdout and stderr go to ``log_path``.

    The child is a fresh interpreter (as ``homewarden run`` is), so nothing the parent imported
    or cached is shared.
    """
    with log_path.open("wb") as log:
        return subprocess.Popen(
            [sys.executable, "-m", module, *args],
            cwd=REPO_ROOT,
            env=child_env(),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
        )


@dataclass(frozen=True, slots=True)
class Reaped:
    """A finished child: exit code and its whole-life CPU time from ``wait4``."""

    returncode: int
    cpu: CpuTimes


def reap(proc: subprocess.Popen[bytes], *, block: bool = True) -> Reaped | None:
    """Wait for ``proc`` with ``os.wait4``, which returns the child's own resource usage.

    Returns:
        The exit code and CPU time of the child alone (from start-up to exit), or None when
        ``block`` is False and the child is still running.
    """
    pid, status, usage = os.wait4(proc.pid, 0 if block else os.WNOHANG)
    if pid == 0:
        return None
    code = os.waitstatus_to_exitcode(status)
    proc.returncode = code  # reaped here, so Popen must not wait for it again
    return Reaped(code, CpuTimes(usage.ru_utime, usage.ru_stime))


def read_result(path: Path, log_path: Path, reaped: Reaped) -> dict[str, Any]:
    """The JSON result a child wrote, or an error naming its log when it wrote none.

    Raises:
        MediaError: the child failed (its exit code and the tail of its log are in the message).
    """
    if reaped.returncode == 0 and path.is_file():
        data: dict[str, Any] = json.loads(path.read_text())
        return data
    tail = log_path.read_text(errors="replace")[-2000:] if log_path.is_file() else ""
    raise MediaError(f"benchmark child failed (exit {reaped.returncode}); log {log_path}:\n{tail}")


def cores() -> int:
    """CPUs this process may run on."""
    return len(os.sched_getaffinity(0))


class MachineLoad:
    """CPU seconds the whole machine spent busy between :meth:`start` and :meth:`stop`.

    Read from ``/proc/stat`` (all CPUs; busy is every state but idle, iowait and steal), so the
    load of other programs running meanwhile can be reported next to the benchmark's own, and
    so can *steal*: time the hypervisor gave this virtual machine's CPUs to someone else, which
    slows everything down without showing as load. None where there is no ``/proc/stat``.
    """

    def __init__(self) -> None:
        self._t0 = 0.0
        self._ticks0: tuple[float, float] | None = None
        self.busy: float | None = None
        self.steal: float | None = None
        self.wall = 0.0
        self.loadavg: tuple[float, float, float] = (0.0, 0.0, 0.0)

    @staticmethod
    def _ticks() -> tuple[float, float] | None:
        """(busy, steal) CPU seconds since boot, summed over CPUs."""
        try:
            with open("/proc/stat") as fh:
                fields = fh.readline().split()
        except OSError:
            return None
        # user nice system idle iowait irq softirq steal [guest guest_nice] (proc(5)); guest
        # time is already inside user, so only the first eight count.
        ticks = [int(x) for x in fields[1:9]] + [0] * (9 - len(fields))
        hz = os.sysconf("SC_CLK_TCK")
        busy = ticks[0] + ticks[1] + ticks[2] + ticks[5] + ticks[6]
        return busy / hz, ticks[7] / hz

    def start(self) -> MachineLoad:
        """Begin the measurement."""
        self._t0 = time.monotonic()
        self._ticks0 = self._ticks()
        return self

    def stop(self) -> MachineLoad:
        """End it: :attr:`busy` and :attr:`steal` CPU seconds, :attr:`wall`, :attr:`loadavg`."""
        self.wall = time.monotonic() - self._t0
        now = self._ticks()
        if now is not None and self._ticks0 is not None:
            self.busy = now[0] - self._ticks0[0]
            self.steal = now[1] - self._ticks0[1]
        self.loadavg = os.getloadavg()
        return self

    def describe(self, own_cpu: float) -> str:
        """One line: machine busy cores, of which ours, the rest other programs; steal."""
        if self.busy is None or self.steal is None or self.wall <= 0:
            return f"load average {self.loadavg[0]:.2f}"
        busy = self.busy / self.wall
        own = own_cpu / self.wall
        return (
            f"machine busy {busy:.2f} of {cores()} cores on average: {own:.2f} this benchmark, "
            f"{max(0.0, busy - own):.2f} other programs; steal {self.steal / self.wall:.2f}; "
            f"load average {self.loadavg[0]:.2f}"
        )
