"""Keyframes-only decoding and the small frame conversions used for motion and snapshots."""

from __future__ import annotations

from pathlib import Path

import av
import cv2
import numpy as np

from homewarden.media.frames import Decoder, scaled_size, to_jpeg, to_small_gray


def test_keyframes_only_decodes_just_keyframes(vtest_h264: Path) -> None:
    with av.open(str(vtest_h264)) as c:
        vs = c.streams.video[0]
        dec = Decoder(vs.codec_context)
        dec.set_keyframes_only(True)
        keys = frames = 0
        for pkt in c.demux(vs):
            if pkt.dts is None:
                continue
            if pkt.is_keyframe:
                keys += 1
                got = dec.decode(pkt)
                assert len(got) == 1  # out at once: no frame threading delay
                frames += 1
    assert keys == frames == 40  # 79.5 s, a keyframe every 2 s


def test_switch_to_full_after_a_keyframe_decodes_following_frames(vtest_h264: Path) -> None:
    with av.open(str(vtest_h264)) as c:
        vs = c.streams.video[0]
        dec = Decoder(vs.codec_context)
        dec.set_keyframes_only(True)
        pkts = [p for _, p in zip(range(20), c.demux(vs), strict=False)]
    assert pkts[0].is_keyframe
    assert len(dec.decode(pkts[0])) == 1
    dec.set_keyframes_only(False)
    decoded = sum(len(dec.decode(p)) for p in pkts[1:])
    assert decoded == 19


def test_small_gray_keeps_aspect_and_is_uint8(bikes_mp4: Path) -> None:
    with av.open(str(bikes_mp4)) as c:
        frame = next(c.decode(video=0))
    gray = to_small_gray(frame, 240)
    assert gray.dtype == np.uint8
    assert gray.shape == (102, 240)  # 640x272 scaled to 240 wide, even height
    assert scaled_size(640, 272, 240) == (240, 102)
    assert scaled_size(320, 240, 640) == (320, 240)  # never upscaled
    assert 20 < float(gray.mean()) < 235


def test_jpeg_round_trip(bikes_mp4: Path) -> None:
    with av.open(str(bikes_mp4)) as c:
        frame = next(c.decode(video=0))
    data = to_jpeg(frame)
    assert data[:2] == b"\xff\xd8"
    img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    assert img.shape == (272, 640, 3)
    ref = frame.to_ndarray(format="bgr24").astype(np.int16)
    assert float(np.abs(img.astype(np.int16) - ref).mean()) < 6
