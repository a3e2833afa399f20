"""Tiny synthetic video clips for tests, written with PyAV (no external binary, nothing downloaded).

Every frame carries its own index as 8 black/white blocks in a top band (bit 0 left), so a test can
check which frames came back and in which order (:func:`read_frame_index`); below the band, a coloured
square moves over a background whose red, green and blue channels hold different gradients, so
channel order and spatial transforms are visible too.

    from video_fixtures import write_clip, read_frame_index, write_bad_clips, make_dataset_dir
    pytest_plugins = ["video_fixtures"]      # the fixtures clip_factory, bad_clips, dataset_dir

Import the helpers from a test module (pytest puts ``tests/`` on ``sys.path``); register the module as a
plugin to use its fixtures.
"""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np
import pytest

INDEX_BITS = 8  # frame indices up to 255


def band_height(height: int) -> int:
    """Rows of the top band that holds the frame-index blocks."""
    return max(4, height // 8)


def make_frames(num_frames: int, height: int = 64, width: int = 64) -> np.ndarray:
    """``[T, H, W, 3]`` uint8 frames: index blocks on top, a moving square below, per-channel gradients."""
    if num_frames > 2**INDEX_BITS:
        raise ValueError(f"at most {2**INDEX_BITS} frames can carry their index, got {num_frames}")
    if width < 4 * INDEX_BITS:
        raise ValueError(f"width must be >= {4 * INDEX_BITS} to hold the index blocks, got {width}")
    band = band_height(height)
    ys, xs = np.mgrid[0:height, 0:width]
    frames = np.empty((num_frames, height, width, 3), dtype=np.uint8)
    block = width // INDEX_BITS
    size = max(4, min(height, width) // 4)
    for t in range(num_frames):
        img = frames[t]
        img[..., 0] = 40 + (xs * 150) // max(1, width - 1)  # red: horizontal gradient
        img[..., 1] = 40 + (ys * 150) // max(1, height - 1)  # green: vertical gradient
        img[..., 2] = 90  # blue: constant
        x0 = (t * 3) % max(1, width - size)
        y0 = band + (t * 2) % max(1, height - band - size)
        img[y0 : y0 + size, x0 : x0 + size] = (230, 60, 200)
        img[:band] = 0
        for bit in range(INDEX_BITS):
            if (t >> bit) & 1:
                img[:band, bit * block : (bit + 1) * block] = 255
    return frames


def read_frame_index(frame: np.ndarray) -> int:
    """Frame index from an ``[H, W, 3]`` uint8 frame (or ``[H, W]`` gray) written by :func:`make_frames`."""
    gray = frame.mean(axis=-1) if frame.ndim == 3 else frame
    height, width = gray.shape
    band, block = band_height(height), width // INDEX_BITS
    value = 0
    for bit in range(INDEX_BITS):
        # The inner part of each block only: compression blurs block edges.
        inner = gray[band // 4 : band - band // 4, bit * block + block // 4 : (bit + 1) * block - block // 4]
        if inner.mean() > 128:
            value |= 1 << bit
    return value


def write_clip(
    path: str | Path,
    num_frames: int = 32,
    height: int = 64,
    width: int = 64,
    fps: int = 25,
    codec: str = "libx264",
    pix_fmt: str = "yuv420p",
    crf: int = 12,
    faststart: bool = False,
) -> Path:
    """Write :func:`make_frames` to a video file; H.264 at high quality by default so indices survive.

    ``pix_fmt`` may be e.g. ``yuv444p`` (odd sizes allowed) or ``gray`` with a codec that keeps it (``ffv1``
    in ``.mkv``, ``png`` in ``.mov``); ``faststart`` puts the index at the start of an mp4 (truncation then
    only shows when frames are decoded).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    options = {"movflags": "faststart"} if faststart else {}
    stream_options = {"crf": str(crf)} if codec == "libx264" else {}
    with av.open(str(path), "w", options=options) as container:
        stream = container.add_stream(codec, rate=fps, options=stream_options)
        stream.width, stream.height, stream.pix_fmt = width, height, pix_fmt
        for img in make_frames(num_frames, height, width):
            frame = av.VideoFrame.from_ndarray(img, format="rgb24")
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def write_bad_clips(directory: str | Path) -> dict[str, Path]:
    """Bad inputs by kind: ``zero_byte``, ``text`` (a text file named .mp4), ``truncated`` (index at the
    end cut off), ``truncated_data`` (index intact, frames cut off), ``missing`` (never written)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    bad = {
        "zero_byte": directory / "zero_byte.mp4",
        "text": directory / "text.mp4",
        "truncated": directory / "truncated.mp4",
        "truncated_data": directory / "truncated_data.mp4",
        "missing": directory / "missing.mp4",
    }
    bad["zero_byte"].write_bytes(b"")
    bad["text"].write_text("this is not a video\n" * 20)
    for name, faststart in (("truncated", False), ("truncated_data", True)):
        full = write_clip(directory / f"full_{name}.mp4", num_frames=48, faststart=faststart)
        data = full.read_bytes()
        bad[name].write_bytes(data[: len(data) // 2])
        full.unlink()
    return bad


def make_dataset_dir(
    root: str | Path,
    num_clips: int = 12,
    num_classes: int = 3,
    frames: tuple[int, int] = (24, 48),
    size: int = 64,
    label_rate: int = 10,
    labeled_fraction: float = 0.25,
    seed: int = 0,
) -> Path:
    """A folder in the SynthGym/SeFAR layout: ``videos/*.mp4``, ``splits/<rate>/{train,unlabel}.csv``,
    ``val.csv`` and ``test.csv`` (relative paths). Clip lengths drawn in ``frames``; val/test are the
    first and second sixth of the clips, the rest is the train pool."""
    root = Path(root)
    rng = np.random.default_rng(seed)
    items = []
    for i in range(num_clips):
        length = int(rng.integers(frames[0], frames[1] + 1))
        rel = Path("videos") / f"clip_{i:04d}.mp4"
        write_clip(root / rel, num_frames=length, height=size, width=size)
        items.append((rel, i % num_classes))
    n_eval = max(1, num_clips // 6)
    val, test, pool = items[:n_eval], items[n_eval : 2 * n_eval], items[2 * n_eval :]
    n_labeled = max(1, round(len(pool) * labeled_fraction))

    def write(path: Path, rows: list[tuple[Path, int]], prefix: str = "") -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("".join(f"{prefix}{p.as_posix()} {label}\n" for p, label in rows))

    split = root / "splits" / str(label_rate)
    write(split / "train.csv", pool[:n_labeled], prefix="../../")
    write(split / "unlabel.csv", pool[n_labeled:], prefix="../../")
    write(root / "val.csv", val)
    write(root / "test.csv", test)
    return root


@pytest.fixture(scope="session")
def clip_factory(tmp_path_factory: pytest.TempPathFactory):
    """``clip_factory(num_frames, **kw) -> Path``: memoised clip writer shared by a test session."""
    cache: dict[tuple, Path] = {}
    base = tmp_path_factory.mktemp("clips")

    def make(num_frames: int = 32, **kwargs) -> Path:
        key = (num_frames, tuple(sorted(kwargs.items())))
        if key not in cache:
            suffix = ".mkv" if kwargs.get("codec") == "ffv1" else ".mp4"
            cache[key] = write_clip(base / f"clip_{len(cache):03d}{suffix}", num_frames, **kwargs)
        return cache[key]

    return make


@pytest.fixture(scope="session")
def bad_clips(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Bad inputs of every kind (see :func:`write_bad_clips`)."""
    return write_bad_clips(tmp_path_factory.mktemp("bad_clips"))


@pytest.fixture(scope="session")
def dataset_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 12-clip data set folder in the SynthGym layout (see :func:`make_dataset_dir`)."""
    return make_dataset_dir(tmp_path_factory.mktemp("dataset"))
