"""Cut real footage into segments with SegmentWriter, unpaced, the way the recorder cuts them."""

from __future__ import annotations

from pathlib import Path

import av

from homewarden.media.segment_writer import SegmentWriter


def cut_segments(src: Path, out_dir: Path, seconds: float, base: float) -> list[tuple[Path, float]]:
    """Split ``src`` at the first keyframe after every ``seconds`` s; return (file, UTC start).

    ``base`` is the UTC time given to the first frame (times follow the packets' pts).
    """
    parts: list[tuple[Path, float]] = []
    with av.open(str(src)) as inp:
        vs = inp.streams.video[0]
        aus = inp.streams.audio[0] if inp.streams.audio else None
        streams = [vs] if aus is None else [vs, aus]
        writer: SegmentWriter | None = None
        seg_start = 0.0
        zero: float | None = None
        for pkt in inp.demux(streams):
            if pkt.dts is None or pkt.pts is None:
                continue
            if pkt.stream_index == vs.index:
                t = float(pkt.pts * pkt.time_base)
                zero = t if zero is None else zero
                if pkt.is_keyframe and (writer is None or t - seg_start >= seconds):
                    if writer is not None:
                        writer.close()
                    seg_start = t
                    utc = base + t - zero
                    writer = SegmentWriter(out_dir / f"{utc:.3f}.mp4", vs, aus)
                    parts.append((writer.final_path, utc))
            if writer is not None:
                writer.write(pkt)
        if writer is not None:
            writer.close()
    return parts


def with_aac_tone(video_src: Path, dst: Path) -> Path:
    """``video_src``'s video copied as is, plus a 440 Hz AAC track (48 kHz mono) as long.

    Real camera audio is not in the shared footage; the tone exercises the same paths (AAC in
    MP4, its own time base, packets interleaved with video).
    """
    import numpy as np

    with av.open(str(video_src)) as inp, av.open(str(dst), "w") as out:
        vin = inp.streams.video[0]
        vout = out.add_stream_from_template(vin)
        aout = out.add_stream("aac", rate=48000, layout="mono")
        seconds = float(inp.duration or 0) / 1e6
        rate, size = 48000, 1024
        pts = 0
        phase = np.arange(size, dtype=np.float32)
        for pkt in inp.demux(vin):
            if pkt.dts is None:
                continue
            t = float(pkt.dts * pkt.time_base)
            while pts / rate <= min(t + 0.5, seconds):
                tone = 0.2 * np.sin(2 * np.pi * 440 * (pts + phase) / rate).astype(np.float32)
                frame = av.AudioFrame.from_ndarray(
                    tone.reshape(1, -1), format="fltp", layout="mono"
                )
                frame.sample_rate = rate
                frame.pts = pts
                pts += size
                for apkt in aout.encode(frame):
                    out.mux(apkt)
            pkt.stream = vout
            out.mux(pkt)
        for apkt in aout.encode(None):
            out.mux(apkt)
    return dst
