"""The benchmarks' core functions on a tiny configuration, and their pure bookkeeping.

Real footage (vtest.avi) is made into a 4 s 320x180 clip; each benchmark child really runs
(fresh interpreters, real recorders, a real SQLite index) for 2 s. Only the shape and the
internal consistency of the numbers are checked, never how fast anything was.
"""

from __future__ import annotations

import math
from pathlib import Path

import av
import numpy as np
import pytest

from bench import _common, cameras, idle_cost, redaction_faces
from homewarden.media.clip import compose_clip

TINY = _common.MotionLayout(seconds=4.0, period=4.0, burst=1.0, offset=1.0)
TINY_GOP = 1.0
TINY_FPS = 30


@pytest.fixture(scope="module")
def tiny_clips(tmp_path_factory: pytest.TempPathFactory, vtest_avi: Path) -> list[Path]:
    """A 4 s 320x180 30 fps clip (GOP 1 s) with 1 s of real motion, and a rotation of it."""
    where = tmp_path_factory.mktemp("bench-clips")
    base = _common.make_motion_clip(
        where / "tiny.mp4", vtest_avi, TINY, size=(320, 180), fps=TINY_FPS, gop_seconds=TINY_GOP
    )
    return [base, _common.rotate_clip(base, where / "tiny-rot1.mp4", 1)]


def _gray_frames(path: Path) -> list[np.ndarray]:
    """Luma planes of every frame (the top rows of a yuv420p array; no scaler needed)."""
    with av.open(str(path)) as container:
        return [f.to_ndarray()[: f.height] for f in container.decode(video=0)]


def test_motion_clip_is_camera_like_and_rotation_is_the_same_footage(
    tiny_clips: list[Path],
) -> None:
    base, rotated = tiny_clips
    with av.open(str(base)) as container:
        keys = [i for i, p in enumerate(container.demux(video=0)) if p.size and p.is_keyframe]
    assert keys == [0, 30, 60, 90]  # a keyframe every GOP, nowhere else
    a, b = _gray_frames(base), _gray_frames(rotated)
    assert len(a) == len(b) == 120
    assert all(np.array_equal(b[i], a[(i + 30) % 120]) for i in range(120))
    # The burst [1 s, 2 s) moves more than sensor noise does between quiet frames.
    diff = [float(np.abs(a[i].astype(int) - a[i - 1].astype(int)).mean()) for i in range(1, 120)]
    assert max(diff[30:60]) > 1.5 * max(diff[70:119])


def test_motion_layout_bursts() -> None:
    layout = _common.MotionLayout()
    assert layout.bursts() == [(12.0, 15.0), (42.0, 45.0)]
    assert layout.motion_share == pytest.approx(0.1)


def test_idle_cost_measures_every_child(tiny_clips: list[Path], tmp_path: Path) -> None:
    result = idle_cost.measure(tiny_clips[0], 2.0, workdir=tmp_path)
    assert set(result.runs) == {"baseline", "homewarden", "remux", "sealed"}
    for run in result.runs.values():
        assert run.cpu == pytest.approx(run.user + run.sys)
        assert 0 < run.cpu <= run.whole_cpu  # the measured work is part of the child's life
        assert run.wall > 0
    base = result.runs["baseline"]
    frames = base.details["frames_decoded"]
    assert frames > 0
    # 5 detector frames per second out of 30 decoded: one in six (first frame included).
    assert abs(base.details["detector_frames"] - frames / 6) <= 1.5
    assert result.runs["homewarden"].details["segments"] >= 1
    assert result.runs["homewarden"].details["last_error"] is None
    sealed = result.runs["sealed"].details
    assert sealed["last_error"] is None
    assert sealed["segments"] >= 1
    assert sealed["sealed_segments"] == sealed["segments"]
    assert result.runs["homewarden"].details["sealed_segments"] == 0
    assert result.sealed_ratio == pytest.approx(
        result.runs["sealed"].cpu / result.runs["homewarden"].cpu
    )
    assert result.ratio == pytest.approx(result.runs["homewarden"].cpu / base.cpu)
    assert result.passed == (result.ratio <= idle_cost.TARGET_RATIO)
    text = idle_cost.report(result, tiny_clips[0])
    assert "ratio HomeWarden / baseline" in text
    assert "sealing: sealed recorder / plaintext recorder" in text
    # Each verdict line (the idle ratio, then sealing's) says PASS or FAIL, not both.
    verdicts = [line for line in text.splitlines() if "PASS" in line or "FAIL" in line]
    assert [line.split(":")[0] for line in verdicts] == [
        "ratio HomeWarden / baseline",
        "sealing",
    ]
    for line in verdicts:
        assert ("PASS" in line) != ("FAIL" in line), line


def test_cameras_run_reports_each_camera(tiny_clips: list[Path], tmp_path: Path) -> None:
    results = cameras.sweep(
        tiny_clips, [2], 2.0, workdir=tmp_path, segment_seconds=1.0, gop_seconds=TINY_GOP
    )
    assert len(results) == 1
    run = results[0]
    assert run.n == 2
    assert len(run.cameras) == 2
    assert math.isfinite(run.cpu_per_camera_minute)
    assert run.cpu_per_camera_minute > 0
    assert run.load == pytest.approx(run.cpu / run.wall / _common.cores())
    assert run.threads >= 2
    assert run.fds > 0
    for cam in run.cameras:
        assert cam.contiguous
        assert cam.gaps == 0
        assert cam.written >= 1
        assert cam.required <= cam.expected
        assert cam.lost == max(0, cam.required - cam.written)
        assert cam.state == "connected"
        assert cam.last_error is None
    assert run.written == sum(c.written for c in run.cameras)
    assert len(cameras.fields(run, run)) == len(cameras.COLUMNS)
    titles = [title for title, _ in cameras.COLUMNS]
    assert cameras.fields(run, run)[titles.index("vs first")] == "1.00"  # the ratio to itself
    assert cameras.fields(run, run)[titles.index("procs")] == str(run.processes)
    assert cameras.markdown([run]).count("\n") == 2


def test_camera_counts_and_phases() -> None:
    assert cameras.camera_counts(64) == [1, 2, 4, 8, 16, 32, 64]
    assert cameras.camera_counts(6) == [1, 2, 4, 6]
    assert cameras.camera_counts(1) == [1]
    assert [cameras.clip_for(i, 3, 15) for i in range(3)] == [0, 5, 10]
    assert [cameras.clip_for(i, 32, 15) for i in (0, 14, 15, 31)] == [0, 14, 0, 1]
    assert cameras.segment_length(10.0, 2.0) == 10.0
    assert cameras.segment_length(9.0, 2.0) == 10.0
    assert cameras.segment_length(1.0, 2.0) == 2.0


def _camera(segments: list[list[float]], **over: object) -> dict[str, object]:
    data: dict[str, object] = {
        "segments": segments,
        "gaps": 0,
        "events": 0,
        "state": "connected",
        "last_error": None,
        "started_at": 1000.0,
    }
    data.update(over)
    return data


def _assess(data: dict[str, object], t_stop: float) -> cameras.CameraOutcome:
    return cameras.assess("c", data, t_stop=t_stop, length=10.0, max_lag=2.0, index_lag=None)


def test_assess_counts_complete_segments_and_judges_contiguity_and_lag() -> None:
    good = _assess(_camera([[1000, 1010], [1010, 1020], [1020, 1030], [1030, 1031.5]]), 1031.6)
    assert (good.expected, good.required, good.written) == (3, 3, 3)
    assert good.lost == 0
    assert good.contiguous
    # Half a second behind at the stop: the cut due at 1020 is within max_lag, not expected.
    assert _assess(_camera([[1000, 1010], [1010, 1019.97]]), 1020.5).lost == 0
    # A missing middle segment: lost and not contiguous.
    hole = _assess(_camera([[1000, 1010], [1020, 1030], [1030, 1040], [1040, 1041]]), 1041.0)
    assert hole.lost == 1
    assert not hole.contiguous
    # Footage ending 5 s before the stop: behind.
    late = _assess(_camera([[1000, 1010], [1010, 1016]]), 1021.0)
    assert late.final_lag == pytest.approx(5.0)
    assert (late.expected, late.required, late.written, late.lost) == (2, 1, 1, 0)
    # A camera that never wrote anything lost everything it should have written.
    none = _assess(_camera([]), 1031.0)
    assert (none.expected, none.written, none.lost) == (3, 0, 2)
    assert math.isinf(none.final_lag)


def test_run_result_ok_needs_every_camera_on_time() -> None:
    def run(lag: float) -> cameras.RunResult:
        cam = _assess(_camera([[1000, 1010], [1010, 1020], [1020, 1030 - lag]]), 1030.0)
        return cameras.RunResult(
            n=1,
            seconds=30.0,
            cpu=1.0,
            wall=30.0,
            startup=1.0,
            cameras=[cam],
            fds=10,
            threads=3,
            max_rss_mb=100.0,
            machine="",
        )

    assert run(0.1).ok
    assert not run(3.0).ok
    assert run(3.0).behind
    assert run(0.1).cpu_per_camera_minute == pytest.approx(2.0)


def test_export_bench_runs_and_reports_both_ratios() -> None:
    """bench/export.py end to end on a few seconds of footage: it runs and prints both
    figures with their baselines (the figures themselves are for the README, not asserted)."""
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[2]
    done = subprocess.run(
        [
            sys.executable,
            str(root / "bench" / "export.py"),
            "--hours",
            "0.003",
            "--redact-seconds",
            "2",
        ],
        capture_output=True,
        text=True,
        timeout=240,
        cwd=root,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "remux export:" in done.stdout
    assert "x real time" in done.stdout
    assert "redacted export:" in done.stdout
    assert "the baseline" in done.stdout


def test_redaction_faces_checks_a_real_clip(tmp_path: Path, bikes_mp4: Path) -> None:
    """bench/redaction_faces.py on 0.8 s of bikes.mp4 with a cyclist's face (frames
    105-124): the checker finds faces in the original, none is left in the redacted copy,
    and the clip's length is read back from its frames."""
    clip = tmp_path / "clip.mp4"
    compose_clip([(bikes_mp4, 1000.0)], 1004.2, 1005.0, clip)
    cascades = redaction_faces.checker()
    frames = redaction_faces.lumas(clip)
    original = {k: f for k, y in enumerate(frames) if (f := redaction_faces.faces(y, cascades))}
    assert original, "the stretch should show a detectable face"
    result = redaction_faces.run("default", clip, tmp_path / "out.mp4", original)
    assert result.left == []
    assert result.clip_seconds == pytest.approx(len(frames) / 25, abs=0.05)
    # The check itself finds what it should: the original against itself leaves every face.
    assert len(redaction_faces.faces_left(original, clip, cascades)) == len(original)
