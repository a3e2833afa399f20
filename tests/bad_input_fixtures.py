"""A corpus of odd-but-valid and bad inputs for every place data enters the encoder path
(docs/DESIGN.md §Dataset and loader).

    from bad_input_fixtures import write_corpus, write_corpus_dataset, BAD_LIST_LINES

:func:`write_corpus` writes, into one folder, clips that MUST be accepted and converted (``corpus.odd``):

    one_frame        H.264, 1 frame                      short_3f      H.264, 3 frames (< S = 8 segments)
    large_1280x720   H.264, 1280x720                     narrow_48w    H.264 48x32 (decord fails: PyAV fallback)
    odd_mpeg4        MPEG-4 part 2, 63x47, .avi          odd_mjpeg     MJPEG yuvj444p, 63x47, .avi
    odd_yuv444       H.264 yuv444p, 63x47                gray_ffv1     FFV1 gray, .mkv
    gray_png         PNG gray, .mov                      rgb24_qtrle   QuickTime RLE rgb24, .mov
    vfr              H.264 variable frame rate, .mkv     vp9           VP9, .webm

and files that MUST be rejected (``corpus.bad``, by kind): ``zero_byte``, ``text`` (text named .mp4),
``truncated`` (index cut off), ``truncated_data`` (index intact, frames cut off), ``random_bytes``
(undecodable bytes named .mp4), ``missing`` (listed, never written). ``corpus.good`` are plain H.264
clips to mix with them. :data:`BAD_LIST_LINES` are malformed list lines with the error each must give.

Every generated clip carries its frame index in a band of blocks (``video_fixtures.make_frames``), so a
test can check which frames an odd clip gave back.
"""

from __future__ import annotations

import fractions
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np
from video_fixtures import make_frames, write_bad_clips, write_clip

# name -> (file name, write_clip keyword arguments); the VFR clip is written by write_vfr_clip
ODD_VALID: dict[str, tuple[str, dict]] = {
    "one_frame": ("one_frame.mp4", {"num_frames": 1}),
    "short_3f": ("short_3f.mp4", {"num_frames": 3}),
    "large_1280x720": ("large_1280x720.mp4", {"num_frames": 3, "height": 720, "width": 1280}),
    "narrow_48w": ("narrow_48w.mp4", {"num_frames": 12, "height": 32, "width": 48}),
    "odd_mpeg4": ("odd_mpeg4.avi", {"num_frames": 10, "height": 47, "width": 63, "codec": "mpeg4"}),
    "odd_mjpeg": (
        "odd_mjpeg.avi",
        {"num_frames": 10, "height": 47, "width": 63, "codec": "mjpeg", "pix_fmt": "yuvj444p"},
    ),
    "odd_yuv444": ("odd_yuv444.mp4", {"num_frames": 10, "height": 47, "width": 63, "pix_fmt": "yuv444p"}),
    "gray_ffv1": ("gray_ffv1.mkv", {"num_frames": 10, "codec": "ffv1", "pix_fmt": "gray"}),
    "gray_png": ("gray_png.mov", {"num_frames": 10, "codec": "png", "pix_fmt": "gray"}),
    "rgb24_qtrle": ("rgb24_qtrle.mov", {"num_frames": 10, "codec": "qtrle", "pix_fmt": "rgb24"}),
    "vp9": ("vp9.webm", {"num_frames": 10, "codec": "libvpx-vp9"}),
}
VFR_FRAMES = 20
FRAME_COUNTS = {name: kw["num_frames"] for name, (_, kw) in ODD_VALID.items()} | {"vfr": VFR_FRAMES}
SHAPES = {  # (height, width) of each odd clip
    name: (kw.get("height", 64), kw.get("width", 64)) for name, (_, kw) in ODD_VALID.items()
} | {"vfr": (64, 64)}
NEEDS_FALLBACK = {"narrow_48w"}  # decord 0.6 cannot copy these frames out ("The size must exactly match")
BAD_KINDS = ("zero_byte", "text", "truncated", "truncated_data", "random_bytes", "missing")

# malformed list lines (second field, the line as written) -> text the error must contain
BAD_LIST_LINES = {
    "no_label": ("videos/a.mp4", "expected '<path> <label>'"),
    "label_not_int": ("videos/a.mp4 three", "is not an integer"),
    "label_negative": ("videos/a.mp4 -1", "out of range"),
    "label_too_large": ("videos/a.mp4 999", "out of range"),
}


@dataclass(frozen=True)
class Corpus:
    good: dict[str, Path]  # plain H.264 clips
    odd: dict[str, Path]  # odd but valid: must be accepted
    bad: dict[str, Path]  # must be rejected, by kind


def write_vfr_clip(path: Path, num_frames: int = VFR_FRAMES, codec: str = "libx264") -> Path:
    """Variable frame rate: frame gaps of 10, 33, 100 and 250 ms in a seeded order (ms time base)."""
    base = fractions.Fraction(1, 1000)
    rng = np.random.default_rng(0)
    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=30)
        stream.width = stream.height = 64
        stream.pix_fmt = "yuv420p"
        stream.codec_context.time_base = base
        stream.time_base = base
        pts = 0
        for img in make_frames(num_frames):
            frame = av.VideoFrame.from_ndarray(img, format="rgb24")
            frame.pts, frame.time_base = pts, base
            pts += int(rng.choice([10, 33, 100, 250]))
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def write_corpus(directory: str | Path, num_good: int = 3) -> Corpus:
    """Write the whole corpus into ``directory`` (about a second)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    good = {
        f"good_{i}": write_clip(directory / f"good_{i}.mp4", num_frames=16 + 8 * i) for i in range(num_good)
    }
    odd = {name: write_clip(directory / fname, **kw) for name, (fname, kw) in ODD_VALID.items()}
    odd["vfr"] = write_vfr_clip(directory / "vfr.mkv")
    bad = write_bad_clips(directory)
    bad["random_bytes"] = directory / "random_bytes.mp4"
    bad["random_bytes"].write_bytes(
        np.random.default_rng(1).integers(0, 256, 40_000, dtype=np.uint8).tobytes()
    )
    assert set(bad) == set(BAD_KINDS)
    return Corpus(good=good, odd=odd, bad=bad)


def write_list(path: Path, clips: list[tuple[Path, int]]) -> Path:
    """A list file with absolute clip paths."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(f"{p} {label}\n" for p, label in clips))
    return path


def write_corpus_dataset(root: Path, synthgym: Path, corpus: Corpus, label_rate: int = 10) -> Path:
    """A data set folder with SynthGym tiny's hierarchy whose lists mix the corpus into SynthGym clips.

    ``train`` = SynthGym's labeled clips + every other odd clip; ``unlabel`` = the other odd clips and
    every bad clip (12 clips: one global unlabeled batch of 12 reads them all); ``val`` / ``test`` = 6 of
    SynthGym's + all odd clips + one bad clip each. Labels of corpus clips are ``i % num_classes``.
    """
    root.mkdir(parents=True, exist_ok=True)
    for name in ("categories.txt", "set_categories.txt", "attributes_qtree.json", "meta.json"):
        if (synthgym / name).is_file():
            (root / name).write_bytes((synthgym / name).read_bytes())
    from gym_qa.hierarchy import Hierarchy
    from gym_qa.lists import read_list

    k = Hierarchy.from_dir(synthgym).num_classes
    odd = [(p, i % k) for i, p in enumerate(corpus.odd.values())]
    bad = [(p, i % k) for i, p in enumerate(corpus.bad.values())]

    def synth(rel: str) -> list[tuple[Path, int]]:
        return [(e.path, e.label) for e in read_list(synthgym / rel)]

    split = root / "splits" / str(label_rate)
    write_list(split / "train.csv", synth(f"splits/{label_rate}/train.csv") + odd[::2])
    write_list(split / "unlabel.csv", odd[1::2] + bad)
    write_list(root / "val.csv", synth("val.csv")[:6] + odd + bad[:1])
    write_list(root / "test.csv", synth("test.csv")[:6] + odd + bad[1:2])
    return root
