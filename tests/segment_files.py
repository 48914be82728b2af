"""Real segment files for store/service tests: GOPs of bikes.mp4 remuxed (no re-encode) into
fragmented MP4, the layout the recorder writes (issue 2, "Recording")."""

from __future__ import annotations

from pathlib import Path

import av
import pytest

from tests.fixtures_db import in_ci

FOOTAGE = Path(__file__).resolve().parents[2] / "shared" / "footage"
BIKES = FOOTAGE / "bikes.mp4"  # 640x272 25 fps H.264, keyframes at 0, 1.2, 3.04, 5.48, 7.48, 9.68 s
FRAGMENTED = {"movflags": "frag_keyframe+empty_moov+default_base_moof"}


def require_bikes() -> Path:
    """bikes.mp4, or skip (fail under CI=true) when the shared footage is absent."""
    if not BIKES.is_file():
        msg = f"real footage {BIKES} is absent"
        if in_ci():
            pytest.fail(msg)
        pytest.skip(msg)
    return BIKES


def make_segment(dst: Path, first_gop: int = 0, gops: int = 1) -> Path:
    """Write GOPs ``first_gop .. first_gop + gops - 1`` of bikes.mp4 to ``dst`` (fMP4)."""
    src = require_bikes()
    dst.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(src)) as inp, av.open(str(dst), "w", format="mp4", options=FRAGMENTED) as out:
        vin = inp.streams.video[0]
        vout = out.add_stream_from_template(vin)
        gop = -1
        for packet in inp.demux(vin):
            if packet.dts is None:
                continue
            if packet.is_keyframe:
                gop += 1
            if gop >= first_gop + gops:
                break
            if gop >= first_gop:
                packet.stream = vout
                out.mux(packet)
    return dst
