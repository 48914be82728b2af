"""Fragmented MP4 (ISO/IEC 14496-12, "ISO BMFF") box parsing for the live view. Pure (bytes in,
facts out, no I/O), except :func:`keyframe_jpeg`, which decodes a fragment with PyAV.

A segment file of the recorder (``movflags frag_keyframe+empty_moov+default_base_moof``, see
:mod:`homewarden.media.segment_writer`) is, at top level: ``ftyp`` and ``moov`` (the
*initialization segment*, ISO/IEC 23009-1 section 6.3.3 / the MSE "ISO BMFF Byte Stream
Format" spec), then one ``moof`` + ``mdat`` pair (a *media segment*) per fragment, and an
``mfra`` index once the file is finished. A browser's Media Source Extensions take the init
segment once and then media segments in order.

Box header (ISO/IEC 14496-12 section 4.2): a 32-bit big-endian ``size`` (of the whole box,
header included) and a four-character ``type``; ``size == 1`` means a 64-bit ``largesize``
follows the type; ``size == 0`` means "to the end of the file" (only the last box may do
that). Full boxes add a version byte and 24 bits of flags.

The RFC 6381 ``codecs`` parameter (for ``video/mp4; codecs="..."``) is built from the sample
entry: ``avc1.PPCCLL`` from ``avcC`` (ISO/IEC 14496-15 section 5.3.3.1: profile, constraint
flags, level as hex), ``hvc1.…`` from ``hvcC`` (ISO/IEC 14496-15 Annex E.3), and
``mp4a.40.<audio object type>`` from ``esds`` (RFC 6381 section 3.3).
"""

from __future__ import annotations

import io
import struct
from collections.abc import Iterator
from dataclasses import dataclass

import av
import av.error

from homewarden.errors import MediaError
from homewarden.media.frames import to_jpeg

#: Boxes that may hold other boxes on the way to a sample entry, a ``tfdt`` or a ``trun``.
_CONTAINERS = frozenset(
    {b"moov", b"trak", b"mdia", b"minf", b"stbl", b"mvex", b"moof", b"traf", b"edts", b"dinf"}
)
#: ``sample_is_non_sync_sample`` bit of ISO/IEC 14496-12 section 8.8.3.1 sample flags.
NON_SYNC_SAMPLE = 0x00010000


class Fmp4Error(ValueError):
    """Bytes that are not the fragmented MP4 expected (a malformed box, a missing ``moov``)."""


@dataclass(frozen=True, slots=True)
class Box:
    """One box: ``type`` (four ASCII characters), ``offset`` of its first header byte (in the
    buffer scanned, plus the ``base`` given), ``size`` in bytes (header included) and
    ``header`` length (8, or 16 with a ``largesize``)."""

    type: str
    offset: int
    size: int
    header: int

    @property
    def end(self) -> int:
        """Offset just past the box."""
        return self.offset + self.size

    @property
    def body(self) -> int:
        """Offset of the payload (after the header)."""
        return self.offset + self.header


def box_header(data: bytes | memoryview, pos: int = 0) -> tuple[str, int, int] | None:
    """``(type, size, header_length)`` of the box starting at ``data[pos]``, or None when fewer
    than the header's bytes are there yet. ``size == 0`` (to the end of the file) is returned
    as 0; the caller decides.

    Raises:
        Fmp4Error: a size smaller than the header (not a box).
    """
    if len(data) - pos < 8:
        return None
    size, kind = struct.unpack_from(">I4s", data, pos)
    header = 8
    if size == 1:
        if len(data) - pos < 16:
            return None
        (size,) = struct.unpack_from(">Q", data, pos + 8)
        header = 16
    if size != 0 and size < header:
        raise Fmp4Error(f"box at byte {pos} has size {size}, less than its header")
    return kind.decode("latin-1"), size, header


def complete_boxes(data: bytes | memoryview, base: int = 0) -> tuple[list[Box], int]:
    """The complete top-level boxes at the start of ``data`` and the number of bytes they
    take. A box cut short (a file being written) ends the list; its bytes are not counted.
    ``base`` is added to every offset (``data``'s position in the file).

    Raises:
        Fmp4Error: a malformed header, or a box of size 0 (unbounded) that cannot be split.
    """
    boxes: list[Box] = []
    pos = 0
    while True:
        found = box_header(data, pos)
        if found is None:
            break
        kind, size, header = found
        if size == 0:
            raise Fmp4Error(f"unbounded {kind!r} box at byte {base + pos}")
        if pos + size > len(data):
            break
        boxes.append(Box(kind, base + pos, size, header))
        pos += size
    return boxes, pos


def child_boxes(data: bytes | memoryview, start: int, end: int) -> Iterator[Box]:
    """The boxes inside ``data[start:end]`` (a box's payload), offsets relative to ``data``.

    Raises:
        Fmp4Error: a child that runs past ``end``.
    """
    pos = start
    while end - pos >= 8:
        found = box_header(data[:end], pos)
        if found is None:
            break
        kind, size, header = found
        size = size or end - pos
        if pos + size > end:
            raise Fmp4Error(f"{kind!r} box at byte {pos} runs past its parent")
        yield Box(kind, pos, size, header)
        pos += size


def _walk(data: bytes | memoryview, start: int, end: int) -> Iterator[Box]:
    """Every box under ``data[start:end]``, depth first, descending into known containers."""
    for box in child_boxes(data, start, end):
        yield box
        if box.type.encode("latin-1") in _CONTAINERS:
            yield from _walk(data, box.body, box.end)


def find_boxes(data: bytes | memoryview, kind: str) -> list[Box]:
    """Every box of type ``kind`` in ``data`` (top level and inside containers)."""
    return [box for box in _walk(data, 0, len(data)) if box.type == kind]


@dataclass(frozen=True, slots=True)
class Track:
    """One ``trak`` of an init segment: its id, handler (``vide``, ``soun``), media timescale
    (ticks per second, ``mdhd``), sample entry type (``avc1``, ``hvc1``, ``mp4a``, …) and RFC
    6381 codec string."""

    track_id: int
    handler: str
    timescale: int
    sample_entry: str
    codec: str


def _full_box(data: bytes | memoryview, box: Box) -> tuple[int, int]:
    """(version, flags) of a full box."""
    word = struct.unpack_from(">I", data, box.body)[0]
    return word >> 24, word & 0xFFFFFF


def tracks(init: bytes | memoryview) -> list[Track]:
    """The tracks of an init segment (``ftyp`` + ``moov``), in file order.

    Raises:
        Fmp4Error: no ``moov``, or a track without ``tkhd``, ``mdhd``, ``hdlr`` or ``stsd``.
    """
    moovs = [b for b in complete_boxes(init)[0] if b.type == "moov"]
    if not moovs:
        raise Fmp4Error("no moov box: not an MP4 initialization segment")
    found: list[Track] = []
    for trak in child_boxes(init, moovs[0].body, moovs[0].end):
        if trak.type != "trak":
            continue
        boxes = {b.type: b for b in _walk(init, trak.body, trak.end)}
        try:
            tkhd, mdhd, hdlr, stsd = boxes["tkhd"], boxes["mdhd"], boxes["hdlr"], boxes["stsd"]
        except KeyError as exc:
            raise Fmp4Error(f"a track has no {exc.args[0]} box") from None
        version, _ = _full_box(init, tkhd)
        # tkhd v1: creation/modification times are 64-bit (section 8.3.2)
        track_id = struct.unpack_from(">I", init, tkhd.body + (20 if version == 1 else 12))[0]
        version, _ = _full_box(init, mdhd)
        timescale = struct.unpack_from(">I", init, mdhd.body + (20 if version == 1 else 12))[0]
        handler = bytes(init[hdlr.body + 8 : hdlr.body + 12]).decode("latin-1")
        # stsd: full box header (4) + entry_count (4), then the first sample entry
        entries = list(child_boxes(init, stsd.body + 8, stsd.end))
        if not entries:
            raise Fmp4Error(f"track {track_id} has no sample entry")
        entry = entries[0]
        found.append(
            Track(track_id, handler, timescale, entry.type, _codec_of_entry(init, entry, handler))
        )
    return found


def _codec_of_entry(data: bytes | memoryview, entry: Box, handler: str) -> str:
    # A visual sample entry has 78 bytes of fields after its header, an audio one 28 (section
    # 12.1.3 / 12.2.3); their configuration boxes follow.
    skip = 78 if handler == "vide" else 28 if handler == "soun" else None
    if skip is None:
        return entry.type
    configs = {b.type: b for b in child_boxes(data, entry.body + skip, entry.end)}
    if "avcC" in configs:
        c = configs["avcC"]
        profile, compat, level = data[c.body + 1], data[c.body + 2], data[c.body + 3]
        return f"{entry.type}.{profile:02x}{compat:02x}{level:02x}"
    if "hvcC" in configs:
        return f"{entry.type}.{_hvc_codec(bytes(data[configs['hvcC'].body : configs['hvcC'].end]))}"
    if "esds" in configs:
        aot = _esds_object_type(bytes(data[configs["esds"].body + 4 : configs["esds"].end]))
        if aot is not None:
            return f"{entry.type}.40.{aot}"  # 0x40: MPEG-4 audio (RFC 6381 section 3.3)
    return entry.type


def _hvc_codec(c: bytes) -> str:
    """``profile.compat.tier+level.constraints`` of an ``hvcC`` (ISO/IEC 14496-15 E.3)."""
    if len(c) < 13:
        raise Fmp4Error("hvcC box too short")
    space = "ABC"[(c[1] >> 6) - 1] if c[1] >> 6 else ""
    tier = "H" if c[1] & 0x20 else "L"
    profile = c[1] & 0x1F
    compat = int.from_bytes(c[2:6], "big")
    compat = int(f"{compat:032b}"[::-1], 2)  # written in reverse bit order
    constraints = list(c[6:12])
    while constraints and constraints[-1] == 0:
        constraints.pop()
    parts = [f"{space}{profile}", f"{compat:X}", f"{tier}{c[12]}"]
    parts += [f"{b:X}" for b in constraints]
    return ".".join(parts)


def _esds_object_type(es: bytes) -> int | None:
    """MPEG-4 audio object type from an ES descriptor (ISO/IEC 14496-1 7.2.6), or None."""

    def descriptor(pos: int) -> tuple[int, int, int]:
        tag = es[pos]
        pos += 1
        length = 0
        for _ in range(4):
            b = es[pos]
            pos += 1
            length = (length << 7) | (b & 0x7F)
            if not b & 0x80:
                break
        return tag, pos, length

    try:
        tag, pos, _ = descriptor(0)
        if tag != 0x03:
            return None
        flags = es[pos + 2]
        pos += 3
        if flags & 0x80:
            pos += 2
        if flags & 0x40:
            pos += 1 + es[pos]
        if flags & 0x20:
            pos += 2
        tag, pos, _ = descriptor(pos)
        if tag != 0x04 or es[pos] != 0x40:  # DecoderConfigDescriptor of MPEG-4 audio
            return None
        tag, pos, _ = descriptor(pos + 13)
        if tag != 0x05:
            return 2  # no AudioSpecificConfig: assume AAC LC
        aot = es[pos] >> 3
        if aot == 31:
            aot = 32 + (((es[pos] & 0x07) << 3) | (es[pos + 1] >> 5))
        return aot
    except IndexError:
        return None


def codecs(init: bytes | memoryview) -> str:
    """The RFC 6381 ``codecs`` value of an init segment: its tracks' codec strings, video
    first, comma-separated (e.g. ``avc1.64001f`` or ``avc1.64001f,mp4a.40.2``).

    Raises:
        Fmp4Error: as :func:`tracks`.
    """
    found = sorted(tracks(init), key=lambda t: t.handler != "vide")
    return ",".join(t.codec for t in found)


@dataclass(frozen=True, slots=True)
class FragmentInfo:
    """Facts of one ``moof``: per track id, the ``tfdt`` base media decode time (ticks of the
    track's timescale), the number of samples, their total duration when known, and
    whether the first sample is a sync sample (a keyframe)."""

    decode_time: dict[int, int]
    samples: dict[int, int]
    duration: dict[int, int]
    starts_with_sync: dict[int, bool]


def fragment_info(
    moof: bytes | memoryview, trex_flags: dict[int, int] | None = None
) -> FragmentInfo:
    """Parse a ``moof`` box (the whole box, header included).

    ``trex_flags``: the default sample flags per track id from the init segment's ``trex``
    boxes (:func:`trex_defaults`), used when neither ``trun`` nor ``tfhd`` states them.

    Raises:
        Fmp4Error: not a ``moof``, or a ``traf`` without ``tfhd``.
    """
    found = box_header(moof)
    if found is None or found[0] != "moof":
        raise Fmp4Error("not a moof box")
    decode_time: dict[int, int] = {}
    samples: dict[int, int] = {}
    duration: dict[int, int] = {}
    sync: dict[int, bool] = {}
    defaults = trex_flags or {}
    for traf in child_boxes(moof, found[2], len(moof)):
        if traf.type != "traf":
            continue
        kids = list(child_boxes(moof, traf.body, traf.end))
        tfhd = next((b for b in kids if b.type == "tfhd"), None)
        if tfhd is None:
            raise Fmp4Error("traf without tfhd")
        _, flags = _full_box(moof, tfhd)
        track_id = struct.unpack_from(">I", moof, tfhd.body + 4)[0]
        pos = tfhd.body + 8
        if flags & 0x01:  # base-data-offset
            pos += 8
        if flags & 0x02:  # sample-description-index
            pos += 4
        default_duration = None
        if flags & 0x08:
            default_duration = struct.unpack_from(">I", moof, pos)[0]
            pos += 4
        if flags & 0x10:  # default-sample-size
            pos += 4
        default_flags = defaults.get(track_id, 0)
        if flags & 0x20:
            default_flags = struct.unpack_from(">I", moof, pos)[0]
        first_sync: bool | None = None
        count = 0
        total = 0
        for box in kids:
            if box.type == "tfdt":
                version, _ = _full_box(moof, box)
                fmt = ">Q" if version == 1 else ">I"
                decode_time[track_id] = struct.unpack_from(fmt, moof, box.body + 4)[0]
            elif box.type == "trun":
                _, tflags = _full_box(moof, box)
                n = struct.unpack_from(">I", moof, box.body + 4)[0]
                p = box.body + 8
                if tflags & 0x001:  # data-offset
                    p += 4
                first_flags = None
                if tflags & 0x004:
                    first_flags = struct.unpack_from(">I", moof, p)[0]
                    p += 4
                for i in range(n):
                    d = default_duration or 0
                    if tflags & 0x100:
                        d = struct.unpack_from(">I", moof, p)[0]
                        p += 4
                    if tflags & 0x200:
                        p += 4
                    f = default_flags
                    if tflags & 0x400:
                        f = struct.unpack_from(">I", moof, p)[0]
                        p += 4
                    if tflags & 0x800:
                        p += 4
                    if i == 0 and first_flags is not None:
                        f = first_flags
                    if first_sync is None and count + i == 0:
                        first_sync = not f & NON_SYNC_SAMPLE
                    total += d
                count += n
        samples[track_id] = count
        duration[track_id] = total
        sync[track_id] = bool(first_sync)
    return FragmentInfo(decode_time, samples, duration, sync)


def trex_defaults(init: bytes | memoryview) -> dict[int, int]:
    """``default_sample_flags`` per track id from the ``trex`` boxes of an init segment."""
    found: dict[int, int] = {}
    for trex in find_boxes(init, "trex"):
        track_id = struct.unpack_from(">I", init, trex.body + 4)[0]
        found[track_id] = struct.unpack_from(">I", init, trex.body + 20)[0]
    return found


def keyframe_jpeg(init: bytes, fragment: bytes) -> bytes:
    """A JPEG (:func:`homewarden.media.frames.to_jpeg`) of the first video frame of
    ``fragment`` (a ``moof`` + ``mdat`` that starts on a keyframe) decoded after ``init``.

    Raises:
        MediaError: nothing decodes.
    """
    try:
        with av.open(io.BytesIO(init + fragment), mode="r", format="mp4") as container:
            for frame in container.decode(video=0):
                return to_jpeg(frame)
    except (av.error.FFmpegError, ValueError, IndexError) as exc:
        raise MediaError(f"the fragment does not decode: {exc}") from exc
    raise MediaError("the fragment holds no video frame")
