"""Idle cost: CPU seconds of HomeWarden recording one quiet camera vs. decoding every frame.

Issue 2 ("Speed"): one 1280x720, 30 fps, GOP 2 s H.264 camera of a quiet scene for 60 s. The
camera is a paced ``file:`` source (real time, looped) of the clip made by
``homewarden.media.transcode.make_quiet_720p_clip`` from a real vtest.avi frame.

Four child processes, each a fresh interpreter, play the same clip at real time for the same
seconds:

* ``baseline`` - what a decode-everything recorder (Frigate) spends before its detector: decode
  every frame (one decoder thread), keep 5 frames per second, scale each to a 320x320 RGB
  detector input (Frigate's detect stream: ``ffmpeg -r 5`` to the detect size; 320x320 is the
  input of its default SSD model);
* ``homewarden`` - a :class:`~homewarden.services.recorder.CameraRecorder` with default
  settings (motion on: keyframes decoded while quiet), segments written and indexed in SQLite;
* ``remux`` - the same with motion off: the pure record-and-index cost (breakdown);
* ``sealed`` - ``homewarden`` with each segment sealed at rest when it closes (issue 6,
  ``storage.sealed``, the default): its CPU over ``homewarden``'s is sealing's cost (issue 6
  target <= 1.05; ``--no-sealed`` skips it).

Each child measures its own CPU time (user + sys, all threads, ``getrusage(RUSAGE_SELF)``) from
just before the camera starts to just after it stopped, so interpreter start-up and imports do
not count; the parent also reads each child's whole-life CPU time from ``os.wait4``. The three
run at the same time by default (``--sequential`` runs them one after another); CPU time is what
is compared, and both ways give the same figures within noise on an unloaded machine.

Run from the repo root: ``.venv/bin/python bench/idle_cost.py [--seconds 60]``.
"""

from __future__ import annotations

if __name__ == "__main__" and not __package__:  # run as a script: make `bench` importable
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import argparse
import json
import math
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench._common import (
    MachineLoad,
    Reaped,
    describe_clip,
    quiet_clip,
    read_result,
    reap,
    self_cpu,
    spawn,
)

#: Issue 2's target: HomeWarden's CPU time at most 15 % of the baseline's.
TARGET_RATIO = 0.15
#: The detector input of the baseline: Frigate's default detect rate and SSD model input size.
DETECT_FPS = 5.0
DETECT_SIZE = (320, 320)
ROLES = ("baseline", "homewarden", "remux", "sealed")
_LABELS = {
    "baseline": "baseline: decode all, 5 fps -> 320x320 RGB",
    "homewarden": "HomeWarden: record + sense motion",
    "remux": "HomeWarden, motion off: record only",
    "sealed": "HomeWarden, footage sealed at rest",
}
#: Issue 6 ("Speed"): sealing may add at most 5 % to the recorder's CPU.
SEALED_TARGET_RATIO = 1.05


@dataclass(frozen=True, slots=True)
class ChildRun:
    """One measured child.

    Attributes:
        role: ``baseline``, ``homewarden``, ``remux`` or ``sealed``.
        cpu: CPU seconds (user + sys, all threads) of the measured work.
        user, sys: its parts.
        wall: wall-clock seconds of the measured work.
        whole_cpu: CPU seconds of the child's whole life (start-up and imports included),
            from ``os.wait4``.
        details: what the child counted (frames decoded, segments written, ...).
    """

    role: str
    cpu: float
    user: float
    sys: float
    wall: float
    whole_cpu: float
    details: dict[str, Any]


@dataclass(frozen=True, slots=True)
class IdleCost:
    """The result of :func:`measure`: each child, the ratio and the machine's load meanwhile."""

    seconds: float
    concurrent: bool
    runs: dict[str, ChildRun]
    machine: str

    @property
    def ratio(self) -> float:
        """HomeWarden's CPU seconds / the baseline's (issue 2 target: <= 0.15)."""
        base = self.runs["baseline"].cpu
        return self.runs["homewarden"].cpu / base if base > 0 else math.inf

    @property
    def passed(self) -> bool:
        """True when :attr:`ratio` meets :data:`TARGET_RATIO`."""
        return self.ratio <= TARGET_RATIO

    @property
    def sealed_ratio(self) -> float | None:
        """The sealed recorder's CPU seconds / the plaintext one's (issue 6 target:
        <= :data:`SEALED_TARGET_RATIO`), or None without the ``sealed`` child."""
        if "sealed" not in self.runs:
            return None
        plain = self.runs["homewarden"].cpu
        return self.runs["sealed"].cpu / plain if plain > 0 else math.inf


def measure(
    clip: Path,
    seconds: float,
    *,
    workdir: Path,
    concurrent: bool = True,
    breakdown: bool = True,
    sealed: bool = True,
) -> IdleCost:
    """Run the baseline and HomeWarden (and, with ``breakdown``, motion off) on ``clip``.

    Args:
        clip: an H.264 MP4 (the quiet 720p camera).
        seconds: wall-clock seconds each child plays the clip at real time (looping).
        workdir: an empty directory for the children's data, logs and results.
        concurrent: run the children at the same time (else one after another).
        breakdown: also run the ``remux`` child (motion off).
        sealed: also run the ``sealed`` child: the same recorder sealing each segment to a
            household public key when it closes (``storage.sealed``, the default).

    Returns:
        The measured :class:`IdleCost`.

    Raises:
        MediaError: a child failed (the message holds the tail of its log).
    """
    roles = [r for r in ROLES if (breakdown or r != "remux") and (sealed or r != "sealed")]
    machine = MachineLoad().start()
    runs: dict[str, ChildRun] = {}
    if concurrent:
        procs = {role: _start(role, clip, seconds, workdir) for role in roles}
        for role, (proc, result, log) in procs.items():
            runs[role] = _finish(role, reap(proc), result, log)
    else:
        for role in roles:
            proc, result, log = _start(role, clip, seconds, workdir)
            runs[role] = _finish(role, reap(proc), result, log)
    machine.stop()
    own = sum(r.whole_cpu for r in runs.values())
    return IdleCost(seconds, concurrent, runs, machine.describe(own))


def _start(role: str, clip: Path, seconds: float, workdir: Path) -> tuple[Any, Path, Path]:
    where = workdir / role
    where.mkdir(parents=True, exist_ok=True)
    result = where / "result.json"
    log = where / "child.log"
    args = ["--child", role, "--clip", str(clip), "--seconds", str(seconds)]
    proc = spawn("bench.idle_cost", [*args, "--workdir", str(where), "--result", str(result)], log)
    return proc, result, log


def _finish(role: str, reaped: Reaped | None, result: Path, log: Path) -> ChildRun:
    assert reaped is not None  # reap() blocks
    data = read_result(result, log, reaped)
    return ChildRun(
        role=role,
        cpu=data["cpu"]["user"] + data["cpu"]["sys"],
        user=data["cpu"]["user"],
        sys=data["cpu"]["sys"],
        wall=data["wall"],
        whole_cpu=reaped.cpu.total,
        details=data["details"],
    )


# --------------------------------------------------------------------------------------------
# children


class _RunKey:
    """The household public key of a key pair made for one run (no key store needed)."""

    def __init__(self, pair: Any) -> None:
        self._pair = pair

    def recording_key(self, household: str) -> tuple[Any, Any]:
        return self._pair.key_id, self._pair.public


def _child_baseline(clip: Path, seconds: float) -> dict[str, Any]:
    """Decode every frame of ``clip`` at real time (looping) and keep 5 fps as 320x320 RGB."""
    import av

    cpu0, wall0 = self_cpu(), time.monotonic()
    container = av.open(str(clip))
    stream = container.streams.video[0]
    # One decoder thread: the fewest CPU seconds per frame (threads only add overhead), so the
    # baseline is the cheapest honest decode-all and the ratio errs in the baseline's favour.
    stream.codec_context.thread_count = 1
    stream.codec_context.thread_type = "SLICE"
    assert stream.time_base is not None  # set by the MP4 demuxer
    tb = float(stream.time_base)
    frames = samples = loops = 0
    offset = 0.0  # seconds added per loop
    first: float | None = None
    last_end = 0.0
    next_sample = 0.0
    deadline = wall0 + seconds
    done = False
    while not done:
        for packet in container.demux(stream):
            if packet.dts is None:
                continue  # end-of-stream flush packet
            due = packet.dts * tb + offset
            first = due if first is None else first
            delay = wall0 + (due - first) - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            if time.monotonic() >= deadline:
                done = True
                break
            last_end = due + (packet.duration or 0) * tb
            for frame in packet.decode():
                frames += 1
                t = (frame.pts or 0) * tb + offset - first
                if t + 1e-6 >= next_sample:
                    next_sample += 1.0 / DETECT_FPS
                    frame.reformat(
                        width=DETECT_SIZE[0], height=DETECT_SIZE[1], format="rgb24"
                    ).to_ndarray()
                    samples += 1
        else:
            container.seek(0)
            offset = last_end
            loops += 1
    container.close()
    cpu = self_cpu() - cpu0
    return {
        "cpu": cpu.as_dict(),
        "wall": time.monotonic() - wall0,
        "details": {"frames_decoded": frames, "detector_frames": samples, "loops": loops},
    }


def _child_homewarden(
    clip: Path, seconds: float, workdir: Path, motion: bool, sealed: bool = False
) -> dict[str, Any]:
    """Record ``clip`` as a looping ``file:`` camera with a CameraRecorder for ``seconds``;
    with ``sealed``, each segment is sealed when it closes to a household key made for the
    run (the recorder holds only its public half, as in a deployment)."""
    from homewarden.config import CameraSettings, MotionSettings
    from homewarden.crypto.household_keys import generate_household_key
    from homewarden.services.recorder import CameraRecorder
    from homewarden.services.sealed_footage import SegmentSealing
    from homewarden.store.index import Index

    index = Index(f"sqlite:///{workdir / 'homewarden.db'}")
    index.migrate()
    cam = CameraSettings(url=f"file:{clip}", loop=True, motion=MotionSettings(enabled=motion))
    sealing = SegmentSealing("home", _RunKey(generate_household_key())) if sealed else None
    rec = CameraRecorder(
        "bench", cam, workdir / "media", workdir / "snapshots", index, sealing=sealing
    )
    cpu0, wall0 = self_cpu(), time.monotonic()
    rec.start()
    time.sleep(max(0.0, wall0 + seconds - time.monotonic()))
    stopped = rec.stop(timeout=30)
    cpu = self_cpu() - cpu0
    wall = time.monotonic() - wall0
    status = rec.status()
    segments = index.segments(camera="bench")
    events, _ = index.events(camera="bench", limit=1000)
    return {
        "cpu": cpu.as_dict(),
        "wall": wall,
        "details": {
            "stopped_cleanly": stopped,
            "segments": len(segments),
            "sealed_segments": sum(1 for s in segments if s.sealed),
            "recorded_seconds": sum(s.duration for s in segments),
            "events": len(events),
            "decode_mode": status.decode_mode,
            "last_error": status.last_error,
        },
    }


def _child_main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="idle_cost --child")
    parser.add_argument("--child", choices=ROLES, required=True)
    parser.add_argument("--clip", type=Path, required=True)
    parser.add_argument("--seconds", type=float, required=True)
    parser.add_argument("--workdir", type=Path, required=True)
    parser.add_argument("--result", type=Path, required=True)
    args = parser.parse_args(argv)
    if args.child == "baseline":
        result = _child_baseline(args.clip, args.seconds)
    else:
        result = _child_homewarden(
            args.clip,
            args.seconds,
            args.workdir,
            motion=args.child != "remux",
            sealed=args.child == "sealed",
        )
    args.result.write_text(json.dumps(result))
    return 0


# --------------------------------------------------------------------------------------------
# report


def report(result: IdleCost, clip: Path) -> str:
    """The printed report: a table of CPU seconds, the ratio and PASS/FAIL against the target."""
    how = "at the same time" if result.concurrent else "one after another"
    lines = [
        f"idle cost: 1 quiet camera, {describe_clip(clip)} ({clip.name}), "
        f"{result.seconds:g} s at real time; children run {how}",
        "",
        f"{'':44} {'CPU s':>7} {'user':>7} {'sys':>6} {'% core':>7} {'whole proc':>10}",
    ]
    for role, run in result.runs.items():
        lines.append(
            f"{_LABELS[role]:44} {run.cpu:7.2f} {run.user:7.2f} {run.sys:6.2f} "
            f"{100 * run.cpu / run.wall:6.1f}% {run.whole_cpu:10.2f}"
        )
    base = result.runs["baseline"]
    hw = result.runs["homewarden"]
    lines.append("")
    lines.append(
        f"ratio HomeWarden / baseline: {result.ratio:.3f}  (target <= {TARGET_RATIO}): "
        + ("PASS" if result.passed else "FAIL")
    )
    if "remux" in result.runs:
        remux = result.runs["remux"].cpu
        lines.append(
            f"breakdown: record+index {remux:.2f} s ({remux / base.cpu:.3f} of baseline), "
            f"motion sensing {hw.cpu - remux:.2f} s ({(hw.cpu - remux) / base.cpu:.3f})"
        )
    sealed_ratio = result.sealed_ratio
    if sealed_ratio is not None:
        lines.append(
            f"sealing: sealed recorder / plaintext recorder {sealed_ratio:.3f}  (issue 6 target "
            f"<= {SEALED_TARGET_RATIO}): "
            + ("PASS" if sealed_ratio <= SEALED_TARGET_RATIO else "FAIL")
            + f"; {result.runs['sealed'].details['sealed_segments']} segments sealed"
        )
    lines.append(
        f"counted: baseline decoded {base.details['frames_decoded']} frames, "
        f"{base.details['detector_frames']} detector frames; HomeWarden wrote "
        f"{hw.details['segments']} segments ({hw.details['recorded_seconds']:.1f} s), "
        f"{hw.details['events']} events"
    )
    lines.append(result.machine)
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Command line: see ``--help``."""
    argv = sys.argv[1:] if argv is None else argv
    if "--child" in argv:
        return _child_main(argv)
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--seconds", type=float, default=60.0, help="seconds played (60)")
    parser.add_argument("--clip", type=Path, help="camera clip (default: the cached quiet clip)")
    parser.add_argument("--sequential", action="store_true", help="one child after another")
    parser.add_argument("--no-breakdown", action="store_true", help="skip the motion-off run")
    parser.add_argument("--no-sealed", action="store_true", help="skip the sealed recorder")
    parser.add_argument("--repeat", type=int, default=1, help="runs; the median ratio counts")
    parser.add_argument("--json", type=Path, help="also write the figures as JSON here")
    args = parser.parse_args(argv)
    if args.repeat < 1:
        parser.error("--repeat must be at least 1")
    clip = args.clip or quiet_clip()
    results: list[IdleCost] = []
    for k in range(args.repeat):
        with tempfile.TemporaryDirectory(prefix="homewarden-idle-") as tmp:
            result = measure(
                clip,
                args.seconds,
                workdir=Path(tmp),
                concurrent=not args.sequential,
                breakdown=not args.no_breakdown,
                sealed=not args.no_sealed,
            )
        results.append(result)
        if args.repeat > 1:
            print(f"--- run {k + 1} of {args.repeat}")
        print(report(result, clip), flush=True)
    if args.repeat > 1:
        ratios = sorted(r.ratio for r in results)
        median = statistics.median(ratios)
        print(
            f"ratios {', '.join(f'{r:.3f}' for r in ratios)}; median {median:.3f} "
            f"(target <= {TARGET_RATIO}): " + ("PASS" if median <= TARGET_RATIO else "FAIL")
        )
    if args.json:
        args.json.write_text(json.dumps([_as_json(r) for r in results], indent=2))
    return 0


def _as_json(result: IdleCost) -> dict[str, Any]:
    return {
        "seconds": result.seconds,
        "concurrent": result.concurrent,
        "ratio": result.ratio,
        "target": TARGET_RATIO,
        "passed": result.passed,
        "sealed_ratio": result.sealed_ratio,
        "sealed_target": SEALED_TARGET_RATIO,
        "runs": {k: vars_of(v) for k, v in result.runs.items()},
        "machine": result.machine,
    }


def vars_of(run: ChildRun) -> dict[str, Any]:
    """A :class:`ChildRun` as a JSON-able dict."""
    return {
        "cpu": run.cpu,
        "user": run.user,
        "sys": run.sys,
        "wall": run.wall,
        "whole_cpu": run.whole_cpu,
        "details": run.details,
    }


if __name__ == "__main__":
    sys.exit(main())
