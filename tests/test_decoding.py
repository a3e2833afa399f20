"""Decoding: decord == PyAV on generated clips, any pixel format to RGB, bad files -> DecodeError naming
the file, decode counting, and the on-disk frame cache."""

import os
import sys

import numpy as np
import pytest
from video_fixtures import read_frame_index

from sefar_encoder.decoding import (
    BACKENDS,
    DECODE_COUNTER,
    DecodeError,
    open_video,
    probe,
    probe_header,
    read_frames,
)
from sefar_encoder.frame_cache import FrameCache

pytest_plugins = ["video_fixtures"]  # clip_factory, bad_clips

CLIPS = {  # name -> write_clip keyword arguments
    "h264_yuv420p": {"num_frames": 48},
    "h264_yuv444p_odd_size": {"num_frames": 30, "height": 37, "width": 51, "pix_fmt": "yuv444p"},
    "ffv1_gray": {"num_frames": 20, "codec": "ffv1", "pix_fmt": "gray"},
    "mpeg4": {"num_frames": 25, "codec": "mpeg4", "height": 48, "width": 64},
    "one_frame": {"num_frames": 1},
}


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float("inf") if mse == 0 else 10 * np.log10(255.0**2 / mse)


@pytest.mark.parametrize("name", CLIPS)
def test_decord_matches_pyav_at_random_indices(clip_factory, name):
    kwargs = CLIPS[name]
    path = clip_factory(**kwargs)
    n = kwargs["num_frames"]
    rng = np.random.default_rng(0)
    indices = rng.integers(0, n, size=12)  # unsorted, with duplicates
    indices[-1] = indices[0]
    by_backend = {b: read_frames(path, indices, backend=b) for b in BACKENDS}
    (dec, n_dec), (ref, n_ref) = by_backend["decord"], by_backend["pyav"]
    assert n_dec == n_ref == n
    assert dec.dtype == np.uint8 and dec.shape == ref.shape == (
        12,
        kwargs.get("height", 64),
        kwargs.get("width", 64),
        3,
    )
    assert np.array_equal(dec, ref) or psnr(dec, ref) >= 40.0
    if kwargs.get("width", 64) >= 32:
        for backend, (frames, _) in by_backend.items():
            assert [read_frame_index(f) for f in frames] == indices.tolist(), backend


@pytest.mark.parametrize("backend", BACKENDS)
def test_grayscale_comes_out_as_rgb(clip_factory, backend):
    frames, _ = read_frames(clip_factory(**CLIPS["ffv1_gray"]), [0, 5], backend)
    assert frames.shape[-1] == 3
    assert np.array_equal(frames[..., 0], frames[..., 1]) and np.array_equal(frames[..., 1], frames[..., 2])


def test_probe_header_reads_size_and_duration_without_decoding(clip_factory, bad_clips):
    path = clip_factory(num_frames=30, height=48, width=64, fps=10)
    DECODE_COUNTER.reset()
    header = probe_header(path)
    assert (header.width, header.height) == (64, 48) and header.duration_s == pytest.approx(3.0, abs=0.15)
    assert DECODE_COUNTER.count == 0
    for kind in ("zero_byte", "text", "missing"):
        with pytest.raises(DecodeError, match=str(bad_clips[kind].name)):
            probe_header(bad_clips[kind])


BAD_KINDS = ["zero_byte", "text", "truncated", "truncated_data", "missing"]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("kind", BAD_KINDS)
def test_bad_files_raise_decode_error_naming_the_file(bad_clips, kind, backend):
    path = bad_clips[kind]
    with pytest.raises(DecodeError) as info:
        probe(path, backend)  # header + last frame: catches truncation that a header read misses
    message = str(info.value)
    assert str(path) in message and info.value.path == str(path)
    assert "\n" not in message and "Traceback" not in message and ".cc:" not in message
    assert info.value.__cause__ is None  # no chained library traceback


@pytest.mark.parametrize("backend", BACKENDS)
def test_truncated_data_fails_when_frames_are_read(bad_clips, backend):
    # The index at the front is intact: PyAV opens it and fails on the frames; decord, which scans
    # every packet when opening, already fails there. Either way: DecodeError naming the file.
    with (
        pytest.raises(DecodeError, match="truncated_data.mp4"),
        open_video(bad_clips["truncated_data"], backend) as clip,
    ):
        clip.get(np.arange(clip.num_frames))


@pytest.mark.parametrize("kind", ["text", "truncated"])
def test_decord_prints_no_copy_of_the_error_on_stderr(bad_clips, kind, capfd):
    # decord's C++ logger writes "... video_reader.cc:83: ERROR opening: ..." straight to fd 2; the
    # DecodeError already says it, once, in the toolkit's words
    path = bad_clips[kind]
    with pytest.raises(DecodeError, match="cannot decode video"):
        open_video(path, "decord", fallback=False)
    print("stderr still works", file=sys.stderr)
    os.write(2, b"and so does fd 2\n")
    err = capfd.readouterr().err
    assert err == "stderr still works\nand so does fd 2\n"


def test_unknown_backend_and_out_of_range_indices(clip_factory):
    path = clip_factory(num_frames=10)
    with pytest.raises(ValueError, match="unknown decoding backend"):
        open_video(path, backend="opencv")
    with open_video(path) as clip, pytest.raises(IndexError):
        clip.get(np.array([10]))


@pytest.mark.parametrize("backend", BACKENDS)
def test_one_decode_call_per_read(clip_factory, backend):
    path = clip_factory(num_frames=16)
    DECODE_COUNTER.reset()
    read_frames(path, [0, 3, 3, 15], backend)
    assert DECODE_COUNTER.count == 1
    with open_video(path, backend) as clip:
        assert clip.num_frames == 16  # opening reads the header only
    assert DECODE_COUNTER.count == 1


def test_frame_cache_decodes_once_and_resizes(clip_factory, tmp_path):
    path = clip_factory(num_frames=24, height=64, width=96)
    cache = FrameCache(tmp_path / "cache", short_side=32)
    DECODE_COUNTER.reset()
    with cache.open(path) as clip:
        first = clip.get(np.array([5, 1, 5]))
    assert DECODE_COUNTER.count == 1
    with cache.open(path) as clip:
        assert clip.num_frames == 24
        again = clip.get(np.array([5, 1, 5]))
    assert DECODE_COUNTER.count == 1  # served from disk
    assert first.shape == (3, 32, 48, 3) and np.array_equal(first, again)
    assert [read_frame_index(f) for f in first] == [5, 1, 5]
    entries = list((tmp_path / "cache").iterdir())
    assert len(entries) == 1 and entries[0].suffix == ".npy"  # no temporary files left behind


def test_frame_cache_never_enlarges_and_matches_decoder(clip_factory, tmp_path):
    path = clip_factory(num_frames=12)
    with FrameCache(tmp_path, short_side=91).open(path) as clip:
        cached = clip.get(np.arange(12))
    assert np.array_equal(cached, read_frames(path, np.arange(12))[0])


def test_frame_cache_key_follows_file_changes(clip_factory, tmp_path):
    path = clip_factory(num_frames=12, fps=30)
    cache = FrameCache(tmp_path, short_side=64)
    before = cache.entry_path(path)
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    try:
        assert cache.entry_path(path) != before
        assert FrameCache(tmp_path, short_side=32).entry_path(path) != cache.entry_path(path)
    finally:
        os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))


def test_frame_cache_reports_bad_files(bad_clips, tmp_path):
    for kind in ("zero_byte", "missing"):
        with pytest.raises(DecodeError, match=kind):
            FrameCache(tmp_path, short_side=32).open(bad_clips[kind])
