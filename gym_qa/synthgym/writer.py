"""Writing clips as H.264 ``.mp4`` files with PyAV (libx264 inside the wheel; no external binary).

Encoding is single-threaded so the bytes are a deterministic function of the frames and settings,
and parallelism comes from encoding many clips at once (see :mod:`gym_qa.synthgym.dataset`).
"""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from gym_qa.atomic_files import atomic_replace


def write_mp4(path: str | Path, frames: np.ndarray, fps: float = 25.0, crf: int = 18) -> None:
    """Encode ``frames`` (T, H, W, 3) uint8 RGB as H.264 yuv420p at ``fps``.

    ``crf`` is x264's constant rate factor (18 ≈ visually lossless, 28 = visible artefacts). H and W must
    be even (4:2:0 chroma subsampling). Written to a temporary name and renamed, so an interrupted run
    never leaves a truncated clip under the final name.
    """
    frames = np.ascontiguousarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise ValueError(f"expected (T, H, W, 3) uint8 frames, got {frames.shape} {frames.dtype}")
    t, h, w, _ = frames.shape
    if t == 0 or h % 2 or w % 2:
        raise ValueError(f"need at least one frame and even H, W; got T={t}, {w}x{h}")
    with atomic_replace(path) as tmp, av.open(str(tmp), mode="w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=round(fps))
        stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
        # mbtree off: with it, this libx264 build gives a different bitstream from run to run for the
        # same frames (measured: 7 variants in 20 encodes); without it the output is reproducible.
        stream.options = {"crf": str(int(crf)), "preset": "veryfast", "x264-params": "threads=1:mbtree=0"}
        stream.codec_context.thread_count = 1
        stream.codec_context.time_base = Fraction(1, round(fps))
        for i, frame in enumerate(frames):
            vf = av.VideoFrame.from_ndarray(frame, format="rgb24")
            # Explicit timestamps, so the rate control sees a constant frame rate.
            vf.pts = i
            vf.time_base = Fraction(1, round(fps))
            for packet in stream.encode(vf):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
