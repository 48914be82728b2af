"""Fragmented-MP4 box parsing on segments the project's own writer made from real footage."""

from __future__ import annotations

import io
import itertools
import struct
from pathlib import Path

import av
import cv2
import numpy as np
import pytest

from homewarden.media import fmp4
from homewarden.media.segment_writer import SegmentWriter
from tests.fixtures_media import GOP_SECONDS
from tests.media.recorded import cut_segments, with_aac_tone

#: H.264 profile_idc by the name FFmpeg gives it (ITU-T H.264 Annex A).
PROFILE_IDC = {"Baseline": 66, "Constrained Baseline": 66, "Main": 77, "High": 100}


@pytest.fixture(scope="module")
def segment(vtest_h264: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The first ~10 s segment of vtest_h264 (GOP 2 s), as the recorder cuts it."""
    out = tmp_path_factory.mktemp("fmp4")
    parts = cut_segments(vtest_h264, out, 10.0, 1_700_000_000.0)
    return parts[0][0]


def _fragments(data: bytes) -> list[tuple[fmp4.Box, fmp4.Box]]:
    boxes, _ = fmp4.complete_boxes(data)
    return [(a, b) for a, b in itertools.pairwise(boxes) if a.type == "moof"]


def test_top_level_layout_is_init_then_one_fragment_per_gop(
    segment: Path, vtest_h264: Path
) -> None:
    data = segment.read_bytes()
    boxes, used = fmp4.complete_boxes(data)
    assert used == len(data)
    kinds = [b.type for b in boxes]
    assert kinds[:2] == ["ftyp", "moov"]
    body = kinds[2:]
    if body[-1] == "mfra":  # written when the file is finished
        body = body[:-1]
    assert body == ["moof", "mdat"] * (len(body) // 2)
    with av.open(str(segment)) as c:
        keyframes = sum(1 for p in c.demux(video=0) if p.is_keyframe)
    assert len(body) // 2 == keyframes == round(10.0 / GOP_SECONDS)


def test_codec_string_comes_from_avcc(segment: Path) -> None:
    data = segment.read_bytes()
    with av.open(str(segment)) as c:
        ctx = c.streams.video[0].codec_context
        assert ctx.profile is not None
        expected = f"avc1.{PROFILE_IDC[ctx.profile]:02x}00{ctx.level:02x}"
    (track,) = fmp4.tracks(data)
    assert track.handler == "vide"
    assert track.sample_entry == "avc1"
    assert track.codec == expected
    assert fmp4.codecs(data) == expected == "avc1.64001f"  # High profile, level 3.1


def test_fragment_timing_and_sync_flags(segment: Path) -> None:
    data = segment.read_bytes()
    (track,) = fmp4.tracks(data)
    trex = fmp4.trex_defaults(data)
    expected_start = 0
    frags = _fragments(data)
    assert len(frags) == 5
    for moof, mdat in frags:
        assert mdat.type == "mdat"
        info = fmp4.fragment_info(data[moof.offset : moof.end], trex)
        tid = track.track_id
        assert info.decode_time[tid] == expected_start
        assert info.samples[tid] == 20  # 2 s at 10 fps
        assert info.duration[tid] == pytest.approx(GOP_SECONDS * track.timescale)
        assert info.starts_with_sync[tid] is True
        expected_start += info.duration[tid]


def test_init_plus_any_fragment_decodes_alone(segment: Path) -> None:
    data = segment.read_bytes()
    boxes, _ = fmp4.complete_boxes(data)
    init = data[: boxes[1].end]
    moof, mdat = _fragments(data)[2]  # the third GOP, without the two before it
    with av.open(io.BytesIO(init + data[moof.offset : mdat.end]), mode="r") as c:
        frames = list(c.decode(video=0))
    assert len(frames) == 20
    assert frames[0].key_frame
    assert (frames[0].width, frames[0].height) == (768, 576)
    jpeg = fmp4.keyframe_jpeg(init, data[moof.offset : mdat.end])
    image = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)
    assert image is not None
    assert image.shape == (576, 768, 3)
    # the JPEG is that keyframe, not another frame
    ref = frames[0].to_ndarray(format="bgr24").astype(np.int16)
    assert np.abs(image.astype(np.int16) - ref).mean() < 4.0


def test_a_cut_short_box_is_not_complete(segment: Path) -> None:
    data = segment.read_bytes()
    moof, mdat = _fragments(data)[1]
    for cut in (moof.offset + 3, moof.end + 4, mdat.offset + mdat.size // 2, mdat.end - 1):
        boxes, used = fmp4.complete_boxes(data[:cut])
        assert boxes[-1].end <= moof.offset + (moof.size if cut >= moof.end else 0)
        assert used == boxes[-1].end
    boxes, used = fmp4.complete_boxes(data[: mdat.end])
    assert boxes[-1] == mdat
    assert used == mdat.end


def test_box_headers() -> None:
    large = struct.pack(">I4sQ", 1, b"mdat", 24) + b"x" * 8
    boxes, used = fmp4.complete_boxes(large + struct.pack(">I4s", 8, b"free"), base=100)
    assert boxes == [fmp4.Box("mdat", 100, 24, 16), fmp4.Box("free", 124, 8, 8)]
    assert used == 32
    assert fmp4.box_header(large[:12]) is None  # largesize not there yet
    with pytest.raises(fmp4.Fmp4Error):
        fmp4.complete_boxes(struct.pack(">I4s", 4, b"moof"))
    with pytest.raises(fmp4.Fmp4Error):
        fmp4.complete_boxes(struct.pack(">I4s", 0, b"mdat"))
    with pytest.raises(fmp4.Fmp4Error):
        fmp4.tracks(struct.pack(">I4s", 8, b"ftyp"))


def test_hevc_codec_string() -> None:
    # hvcC of HEVC Main, level 3.1, progressive source flag: "hvc1.1.6.L93.B0" (the example
    # of Apple's HLS authoring spec and of ISO/IEC 14496-15 E.3).
    hvcc = bytes([1, 0x01]) + (0x60000000).to_bytes(4, "big") + bytes([0xB0, 0, 0, 0, 0, 0, 93])
    assert fmp4._hvc_codec(hvcc) == "1.6.L93.B0"
    high_tier = bytes([1, 0x22]) + (0x20000000).to_bytes(4, "big") + bytes(6) + bytes([120])
    assert fmp4._hvc_codec(high_tier) == "2.4.H120"


def test_audio_track_codec(vtest_h264: Path, tmp_path: Path) -> None:
    src = with_aac_tone(vtest_h264, tmp_path / "tone.mp4")
    (path, _), *_ = cut_segments(src, tmp_path / "out", 10.0, 1_700_000_000.0)
    data = path.read_bytes()
    kinds = {t.handler: t for t in fmp4.tracks(data)}
    assert kinds["soun"].sample_entry == "mp4a"
    assert fmp4.codecs(data) == "avc1.64001f,mp4a.40.2"  # AAC LC


def test_writer_puts_each_fragment_on_disk_when_the_next_keyframe_is_muxed(
    vtest_h264: Path, tmp_path: Path
) -> None:
    # The live view tails .part files: a fragment must not wait in FFmpeg's I/O buffer.
    with av.open(str(vtest_h264)) as inp:
        vs = inp.streams.video[0]
        writer = SegmentWriter(tmp_path / "seg.mp4", vs)
        keys = 0
        for pkt in inp.demux(vs):
            if pkt.dts is None:
                continue
            if pkt.is_keyframe:
                keys += 1
            writer.write(pkt)
            data = writer.part_path.read_bytes()
            moofs = [b for b in fmp4.complete_boxes(data)[0] if b.type == "mdat"]
            assert len(moofs) == keys - 1  # every GOP before the current one is complete
            if keys == 4:
                break
        writer.abort()
