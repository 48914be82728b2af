"""Clips remuxed from segments: exact span through an edit list, seekable, gaps reported."""

from __future__ import annotations

import os
import re
import resource
import signal
import stat
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import av
import pytest

from homewarden.errors import InvalidRequestError, NotFoundError, StorageError
from homewarden.media.clip import compose_clip
from tests.media.recorded import cut_segments, with_aac_tone

BASE = 1_700_000_000.0


@pytest.fixture
def segments(vtest_h264: Path, tmp_path: Path) -> list[tuple[Path, float]]:
    return cut_segments(vtest_h264, tmp_path / "segs", 10.0, BASE)


def decoded_times(path: Path) -> list[float]:
    with av.open(str(path)) as c:
        return [float(f.pts * f.time_base) for f in c.decode(video=0)]


def test_acceptance_7_thirty_seconds_over_four_segments(segments, tmp_path: Path) -> None:
    start, end = BASE + 5.05, BASE + 35.05  # inside segments 0, 1, 2 and 3
    assert sum(1 for _, s in segments if s < end and s + 10 > start) == 4
    out = tmp_path / "clip.mp4"
    info = compose_clip(segments, start, end, out)
    assert info.duration == pytest.approx(30.0, abs=0.2)
    assert info.gaps == ()
    assert info.skipped == ()
    with av.open(str(out)) as c:
        assert c.duration / 1e6 == pytest.approx(30.0, abs=0.2)
    times = decoded_times(out)
    # Start to end: every 10 fps frame of the span decodes, none of the pre-roll is shown.
    assert len(times) == pytest.approx(300, abs=2)
    assert times[0] == pytest.approx(0.0, abs=0.1)
    assert times[-1] == pytest.approx(29.9, abs=0.15)
    head = out.read_bytes()[: 64 * 1024]
    assert 0 <= head.find(b"moov") < head.find(b"mdat")  # faststart: seekable while loading


def test_clip_cut_at_keyframe_needs_no_preroll(segments, tmp_path: Path) -> None:
    info = compose_clip(segments, BASE + 10.0, BASE + 12.0, tmp_path / "c.mp4")
    assert info.duration == pytest.approx(2.0, abs=0.01)
    assert len(decoded_times(tmp_path / "c.mp4")) == 20


def test_span_past_the_footage_is_clamped(segments, tmp_path: Path) -> None:
    info = compose_clip(segments, BASE + 75.0, BASE + 90.0, tmp_path / "c.mp4")
    assert info.end == pytest.approx(BASE + 79.5, abs=0.01)
    assert info.duration == pytest.approx(4.5, abs=0.01)


def test_no_footage_in_span(segments, tmp_path: Path) -> None:
    with pytest.raises(NotFoundError, match="no footage"):
        compose_clip(segments, BASE + 100, BASE + 110, tmp_path / "c.mp4")
    assert not (tmp_path / "c.mp4").exists()
    assert not (tmp_path / "c.mp4.part").exists()


def test_backwards_span_is_refused(segments, tmp_path: Path) -> None:
    with pytest.raises(InvalidRequestError):
        compose_clip(segments, BASE + 20, BASE + 10, tmp_path / "c.mp4")


def test_corrupt_segment_is_skipped_and_reported(segments, tmp_path: Path) -> None:
    broken, broken_start = segments[1]
    broken.write_bytes(b"\x00" * 1000)
    info = compose_clip(segments, BASE + 5.0, BASE + 25.0, tmp_path / "c.mp4")
    assert info.skipped == (broken,)
    assert info.gaps[0] == pytest.approx((broken_start, segments[2][1]))
    # The footage of segments 0 and 2 is there; the hole is held on the last frame before it.
    assert info.duration == pytest.approx(20.0, abs=0.2)
    assert len(decoded_times(tmp_path / "c.mp4")) == pytest.approx(100, abs=3)


def test_outage_between_segments_is_a_gap(segments, tmp_path: Path) -> None:
    shifted = segments[:2] + [(p, s + 15.0) for p, s in segments[2:]]  # 15 s outage at 20 s
    info = compose_clip(shifted, BASE + 15.0, BASE + 45.0, tmp_path / "c.mp4")
    assert len(info.gaps) == 1
    gap_start, gap_end = info.gaps[0]
    assert gap_start == pytest.approx(BASE + 20.0, abs=0.11)
    assert gap_end == pytest.approx(BASE + 35.0, abs=0.01)
    assert info.duration == pytest.approx(30.0, abs=0.2)


def test_clip_keeps_audio(bikes_mp4: Path, tmp_path: Path) -> None:
    src = with_aac_tone(bikes_mp4, tmp_path / "tone.mp4")
    parts = cut_segments(src, tmp_path / "segs", 2.0, BASE)
    info = compose_clip(parts, BASE + 1.5, BASE + 8.5, tmp_path / "c.mp4")
    assert info.duration == pytest.approx(7.0, abs=0.05)
    with av.open(str(tmp_path / "c.mp4")) as c:
        samples = sum(f.samples for f in c.decode(audio=0))
    assert samples / 48000 == pytest.approx(7.0, abs=0.1)


# -- the output file: never replace what is not ours, name the output when it fails ----------


def test_clip_refuses_to_replace_a_device_file(segments, tmp_path: Path) -> None:
    # Regression: `-o /dev/full` replaced the device node with a regular file. A FIFO stands
    # in for the device: it is not a regular file either, and is safe to try in a test.
    fifo = tmp_path / "pipe.mp4"
    os.mkfifo(fifo)
    for overwrite in (False, True):
        with pytest.raises(StorageError, match="not a regular file"):
            compose_clip(segments, BASE + 10.0, BASE + 12.0, fifo, overwrite=overwrite)
        assert stat.S_ISFIFO(os.lstat(fifo).st_mode)
    assert not (tmp_path / "pipe.mp4.part").exists()


def test_clip_refuses_to_replace_a_symlink(segments, tmp_path: Path) -> None:
    target = tmp_path / "elsewhere.mp4"
    target.write_bytes(b"keep me")
    link = tmp_path / "link.mp4"
    link.symlink_to(target)
    with pytest.raises(StorageError, match="not a regular file"):
        compose_clip(segments, BASE + 10.0, BASE + 12.0, link, overwrite=True)
    assert link.is_symlink()
    assert target.read_bytes() == b"keep me"


def test_clip_refuses_to_overwrite_an_existing_file_unless_asked(segments, tmp_path: Path) -> None:
    out = tmp_path / "c.mp4"
    out.write_bytes(b"an earlier clip")
    with pytest.raises(StorageError, match="already exists"):
        compose_clip(segments, BASE + 10.0, BASE + 12.0, out)
    assert out.read_bytes() == b"an earlier clip"
    assert not (tmp_path / "c.mp4.part").exists()
    info = compose_clip(segments, BASE + 10.0, BASE + 12.0, out, overwrite=True)
    assert out.stat().st_size == info.bytes > len(b"an earlier clip")
    assert len(decoded_times(out)) == 20


def test_clip_never_creates_a_missing_parent_directory(segments, tmp_path: Path) -> None:
    out = tmp_path / "no" / "such" / "dir" / "c.mp4"
    with pytest.raises(StorageError, match="does not exist"):
        compose_clip(segments, BASE + 10.0, BASE + 12.0, out)
    assert not (tmp_path / "no").exists()


def test_clip_part_file_is_created_exclusively(segments, tmp_path: Path) -> None:
    # A leftover (or planted) <out>.part is never written through or replaced.
    victim = tmp_path / "victim"
    victim.write_bytes(b"not a clip")
    (tmp_path / "c.mp4.part").symlink_to(victim)
    with pytest.raises(StorageError, match=r"c\.mp4\.part"):
        compose_clip(segments, BASE + 10.0, BASE + 12.0, tmp_path / "c.mp4")
    assert victim.read_bytes() == b"not a clip"
    assert (tmp_path / "c.mp4.part").is_symlink()
    assert not (tmp_path / "c.mp4").exists()


def test_unwritable_output_is_a_storage_error_not_missing_footage(segments) -> None:
    # Regression: the output's open failure was taken for a broken input segment, and the
    # user read "no footage between ...".
    out = Path("/proc/x.mp4")
    with pytest.raises(StorageError) as err:
        compose_clip(segments, BASE + 10.0, BASE + 12.0, out)
    message = str(err.value)
    assert str(out) in message
    assert "No such file or directory" in message
    assert "no footage" not in message


@pytest.fixture
def file_size_limit() -> Iterator[Callable[[int], None]]:
    """Set RLIMIT_FSIZE for this process (writes past it fail with EFBIG), restored after."""
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    old_handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # EFBIG, not a kill

    def limit(size: int) -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (size, hard))

    try:
        yield limit
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        signal.signal(signal.SIGXFSZ, old_handler)


def test_output_write_failure_names_the_output_and_removes_the_part(
    segments, tmp_path: Path, file_size_limit: Callable[[int], None]
) -> None:
    # A clip of 20 s is ~0.5 MB; the disk "fills" at 64 KiB, mid-clip.
    out = tmp_path / "c.mp4"
    file_size_limit(64 * 1024)
    with pytest.raises(StorageError) as err:
        compose_clip(segments, BASE + 5.0, BASE + 25.0, out)
    file_size_limit(resource.RLIM_INFINITY)
    message = str(err.value)
    assert str(out) in message
    assert "File too large" in message
    assert "no footage" not in message
    assert not out.exists()
    assert not (tmp_path / "c.mp4.part").exists()


def test_read_only_output_is_a_storage_error_and_cleanup_never_raises(
    segments, tmp_path: Path
) -> None:
    # Regression: on a read-only file system the cleanup's unlink raised EROFS (a traceback).
    ro = tmp_path / "ro"
    ro.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(ro)],
        capture_output=True,
        check=False,
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a read-only tmpfs here: {mounted.stderr.decode().strip()}")
    try:
        with pytest.raises(StorageError) as err:
            compose_clip(segments, BASE + 10.0, BASE + 12.0, ro / "x.mp4")
    finally:
        subprocess.run(["umount", str(ro)], check=True)
    assert str(ro / "x.mp4") in str(err.value)
    assert "Read-only file system" in str(err.value)


def test_no_footage_message_survives_absurd_times(segments, tmp_path: Path) -> None:
    # Regression: formatting 1e12 ("year 33658 is out of range") or 1e17 (EOVERFLOW) as a
    # date crashed while the "no footage between ..." message was being built.
    for start in (1e12, 1e17, -1e17):
        with pytest.raises(NotFoundError, match=re.escape(f"no footage between {start!r} and")):
            compose_clip(segments, start, start + 10.0, tmp_path / "c.mp4")


def test_no_footage_message_gives_readable_utc_times(segments, tmp_path: Path) -> None:
    with pytest.raises(NotFoundError) as err:
        compose_clip(segments, BASE + 100, BASE + 110, tmp_path / "c.mp4")
    assert "2023-11-14T22:15:00.000Z" in str(err.value)
