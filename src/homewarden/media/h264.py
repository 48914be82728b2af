"""Just enough H.264 bitstream reading to count the pictures in one packet.

Why: FFmpeg's RTSP/RTP H.264 depacketiser can hand over the first access unit of a stream
merged with the next one (an IDR picture and the following P picture in one packet, one
timestamp). Browsers' decoders refuse such a packet ("Failed to send video packet"), so a
segment starting with it does not play; the recorder starts segments only at a keyframe
packet that holds a single picture (:func:`picture_count` == 1).

A new primary coded picture starts at a slice NAL unit (types 1 and 5, ITU-T H.264 section
7.4.1.2.4) whose ``first_mb_in_slice`` is 0 (section 7.4.3); ``first_mb_in_slice`` is the first
field of the slice header, coded ue(v), so it is 0 exactly when the first bit after the one-byte
NAL header is 1 (section 9.1, Exp-Golomb: codeNum 0 is the single bit ``1``).
"""

from __future__ import annotations

from collections.abc import Iterator

#: NAL unit types of coded slices: non-IDR (1) and IDR (5) (H.264 Table 7-1).
_SLICE_TYPES = frozenset({1, 5})


def _annexb_units(data: bytes) -> Iterator[bytes]:
    """NAL units of an Annex B byte stream (start codes ``00 00 01`` / ``00 00 00 01``)."""
    starts: list[int] = []
    i = data.find(b"\x00\x00\x01")
    while i != -1:
        starts.append(i + 3)
        i = data.find(b"\x00\x00\x01", i + 3)
    for k, s in enumerate(starts):
        end = starts[k + 1] - 3 if k + 1 < len(starts) else len(data)
        yield data[s:end].rstrip(b"\x00") if k + 1 < len(starts) else data[s:end]


def _length_prefixed_units(data: bytes, size: int) -> Iterator[bytes]:
    """NAL units of an AVCC (MP4) sample: each unit preceded by its ``size``-byte length."""
    i = 0
    while i + size <= len(data):
        n = int.from_bytes(data[i : i + size], "big")
        i += size
        if n == 0 or i + n > len(data):
            return
        yield data[i : i + n]
        i += n


def nal_units(data: bytes, length_size: int = 4) -> list[bytes]:
    """The NAL units of one H.264 packet, Annex B (start codes) or length-prefixed (AVCC with
    ``length_size``-byte lengths); empty for anything else."""
    if data.startswith((b"\x00\x00\x01", b"\x00\x00\x00\x01")):
        return list(_annexb_units(data))
    return list(_length_prefixed_units(data, length_size))


def picture_count(data: bytes, length_size: int = 4) -> int:
    """How many primary coded pictures one H.264 packet holds (see the module docstring):
    slice NAL units with ``first_mb_in_slice`` 0. A well-formed packet holds exactly 1."""
    count = 0
    for unit in nal_units(data, length_size):
        if len(unit) >= 2 and unit[0] & 0x1F in _SLICE_TYPES and unit[1] & 0x80:
            count += 1
    return count
