"""Counting pictures in H.264 packets (homewarden.media.h264)."""

from __future__ import annotations

from pathlib import Path

import av

from homewarden.media.h264 import nal_units, picture_count

SPS = b"\x67\x64\x00\x1f\xac"
PPS = b"\x68\xee\x3c\x80"
SEI = b"\x06\x05\x10"
IDR0 = b"\x65\x88\x84"  # first_mb_in_slice = 0 (first bit 1)
IDR_SLICE2 = b"\x65\x40\x84"  # a second slice of the same IDR picture (first bit 0)
P0 = b"\x41\x9a\x02"  # a non-IDR picture's first slice


def annexb(*units: bytes) -> bytes:
    return b"".join(b"\x00\x00\x00\x01" + u for u in units)


def avcc(*units: bytes) -> bytes:
    return b"".join(len(u).to_bytes(4, "big") + u for u in units)


def test_one_picture_with_parameter_sets_and_several_slices() -> None:
    for pack in (annexb, avcc):
        assert picture_count(pack(SPS, PPS, SEI, IDR0, IDR_SLICE2)) == 1
        assert [u[0] & 0x1F for u in nal_units(pack(SPS, PPS, IDR0))] == [7, 8, 5]


def test_idr_merged_with_the_next_picture_counts_two() -> None:
    # The shape FFmpeg's RTSP depacketiser produced for the first packet of a stream.
    for pack in (annexb, avcc):
        assert picture_count(pack(SPS, PPS, SEI, SPS, PPS, IDR0, P0)) == 2


def test_garbage_counts_no_picture() -> None:
    assert picture_count(b"") == 0
    assert picture_count(b"\xff\xff\xff\xff\x00") == 0


def test_every_packet_of_a_real_clip_holds_one_picture(vtest_h264: Path) -> None:
    with av.open(str(vtest_h264)) as c:
        counts = {picture_count(bytes(p)) for p in c.demux(video=0) if p.size}
    assert counts == {1}
