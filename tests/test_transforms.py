"""Augmentation pipelines on synthetic frames (no decoding): shapes, jitter, Mod-Perturb reversal on the
time axis only, coarse view untouched, per-view crops, channel dropout, normalisation, eval crops."""

import dataclasses

import numpy as np
import pytest
import torch
from video_fixtures import make_frames, read_frame_index

from sefar_encoder.transforms import (
    AugmentConfig,
    AugParams,
    ClipTransform,
    normalize_video,
    scaled_jitter_range,
)

VIEWS = (2, 2, 4)
SLICES = {0: slice(0, 2), 1: slice(2, 4), 2: slice(4, 8)}


@pytest.fixture(scope="module")
def frames() -> np.ndarray:
    """8 distinct frames (indices 0..7 in their top band), 64×80 so crops and the long side matter."""
    return make_frames(8, height=64, width=80)


def transform(**cfg) -> ClipTransform:
    return ClipTransform(VIEWS, 64, AugmentConfig(**cfg))


def test_jitter_range_scales_with_output_size():
    assert scaled_jitter_range(224, AugmentConfig()) == (256, 320)
    assert scaled_jitter_range(64, AugmentConfig()) == (73, 91)
    assert scaled_jitter_range(112, AugmentConfig()) == (128, 160)


def test_shapes_and_dtypes(frames):
    t = transform()
    rng = np.random.default_rng(0)
    video, _ = t.labeled(frames, rng)
    weak, strong, _ = t.weak_strong(frames, rng)
    for x in (video, weak, strong):
        assert x.shape == (3, 8, 64, 64) and x.dtype == torch.float32
    ev = ClipTransform(VIEWS, 64, AugmentConfig(test_crops=3)).eval([frames, frames])
    assert ev.shape == (6, 3, 8, 64, 64)


def test_crop_size_follows_the_jitter_range(frames):
    t = transform()
    rng = np.random.default_rng(0)
    sizes = [t.sample_params("labeled", rng, 64, 80).boxes[0].size for _ in range(200)]
    # crop of 64 px after resizing the short side (64) to U[73, 91] == 64 * 64 / U[73, 91] source px
    assert min(sizes) >= round(64 * 64 / 91) and max(sizes) <= round(64 * 64 / 73)
    assert len(set(sizes)) > 5


def strong_params(t: ClipTransform, seed: int) -> AugParams:
    return t.sample_params("strong", np.random.default_rng(seed), 64, 80)


def test_mod_perturb_reverses_fine_views_along_time_only(frames):
    t = transform(channel_dropout=0.0)
    params = strong_params(t, 3)
    assert params.reversed_views == (0, 1)
    unreversed = dataclasses.replace(params, time_order=None, reversed_views=())
    rev, ref = t.apply(frames, params), t.apply(frames, unreversed)  # same spatial params
    for v in (0, 1):  # fine views: time reversed, pixel values unchanged
        assert torch.equal(rev[:, SLICES[v]], ref[:, SLICES[v]].flip(1))
        assert not torch.equal(rev[:, SLICES[v]], ref[:, SLICES[v]])  # the frames do differ
        assert not torch.equal(rev[:, SLICES[v]], ref[:, SLICES[v]].flip(0))  # not the colour axis
    assert torch.equal(rev[:, SLICES[2]], ref[:, SLICES[2]])  # the coarse view keeps its order


def test_coarse_view_is_never_reversed():
    t = transform()
    for seed in range(50):
        params = strong_params(t, seed)
        assert 2 not in params.reversed_views
        assert params.time_order[4:].tolist() == [4, 5, 6, 7]
        assert params.time_order[:4].tolist() == [1, 0, 3, 2]


def test_weak_view_is_not_perturbed(frames):
    t = transform()
    _, _, (pw, _) = t.weak_strong(frames, np.random.default_rng(0))
    assert pw.time_order is None and pw.dropped_channel is None and pw.reversed_views == ()


def test_all_reverse_warp_and_none_modes():
    params = strong_params(transform(temporal_perturb="all_reverse"), 0)
    assert params.reversed_views == (0, 1, 2)
    assert params.time_order.tolist() == [1, 0, 3, 2, 7, 6, 5, 4]
    assert strong_params(transform(temporal_perturb="none"), 0).time_order is None
    warp = transform(temporal_perturb="warp")
    changed = False
    for seed in range(20):
        order = strong_params(warp, seed).time_order
        for sl in SLICES.values():
            part = order[sl]
            assert np.all(np.diff(part) >= 0)  # direction kept
            assert part.min() >= sl.start and part.max() < sl.stop  # stays inside its view
        changed |= order.tolist() != list(range(8))
    assert changed


def test_explicit_reverse_views():
    params = strong_params(transform(reverse_views=(2,)), 0)
    assert params.reversed_views == (2,)
    with pytest.raises(ValueError):
        transform(reverse_views=(3,))


def test_strong_crops_are_independent_per_view():
    t = transform()
    assert any(len(set(strong_params(t, s).boxes)) > 1 for s in range(10))
    shared = transform(independent_view_crops=False)
    assert all(len(set(strong_params(shared, s).boxes)) == 1 for s in range(10))
    labeled = t.sample_params("labeled", np.random.default_rng(0), 64, 80)
    assert len(set(labeled.boxes)) == 1


def test_flip_respects_config():
    rng = np.random.default_rng(0)
    off = transform(flip=False)
    assert not any(b.flip for _ in range(50) for b in off.sample_params("strong", rng, 64, 80).boxes)
    on = transform(flip=True)
    assert any(on.sample_params("labeled", rng, 64, 80).boxes[0].flip for _ in range(50))


def test_flip_mirrors_the_crop(frames):
    t = transform(channel_dropout=0.0)
    params = t.sample_params("labeled", np.random.default_rng(0), 64, 80)
    boxes = [dataclasses.replace(b, flip=False) for b in params.boxes]
    plain = t.apply(frames, AugParams(tuple(boxes)))
    mirrored = t.apply(frames, AugParams(tuple(dataclasses.replace(b, flip=True) for b in boxes)))
    assert torch.equal(mirrored, plain.flip(-1))


def test_channel_dropout_zeroes_one_channel(frames):
    t = transform(channel_dropout=1.0)
    params = strong_params(t, 0)
    assert params.dropped_channel in (0, 1, 2)
    out = t.apply(frames, params)
    c = params.dropped_channel
    zero_value = (0.0 - t.cfg.mean[c]) / t.cfg.std[c]  # pixel value 0, normalised
    assert torch.allclose(out[c], torch.full_like(out[c], zero_value))
    others = [k for k in range(3) if k != c]
    assert all(out[k].std() > 0.1 for k in others)
    assert all(strong_params(transform(channel_dropout=0.0), s).dropped_channel is None for s in range(20))
    rate = np.mean([strong_params(transform(), s).dropped_channel is not None for s in range(400)])
    assert 0.12 < rate < 0.28


def test_normalisation_uses_mean_and_std():
    flat = np.full((8, 64, 80, 3), (51, 102, 204), dtype=np.uint8)
    mean, std = (0.1, 0.2, 0.3), (0.5, 0.25, 0.125)
    t = ClipTransform(VIEWS, 64, AugmentConfig(mean=mean, std=std, channel_dropout=0.0))
    out = t.labeled(flat, np.random.default_rng(0))[0]
    for c, value in enumerate((51, 102, 204)):
        assert torch.allclose(out[c], torch.tensor((value / 255 - mean[c]) / std[c]), atol=1e-5)


def test_uint8_mode_then_normalize_equals_float_mode(frames):
    cfg = AugmentConfig()
    raw_t, float_t = ClipTransform(VIEWS, 64, cfg, normalize=False), ClipTransform(VIEWS, 64, cfg)
    params = strong_params(float_t, 5)
    raw = raw_t.apply(frames, params)
    assert raw.dtype == torch.uint8 and raw.shape == (3, 8, 64, 64)
    assert torch.allclose(normalize_video(raw, cfg.mean, cfg.std), float_t.apply(frames, params), atol=1e-6)


def test_eval_centre_crop_keeps_frames_and_order():
    """Short side already at image_size: the centre crop is the frame itself, in sampler order."""
    square = make_frames(8, 64, 64)
    order = np.array([3, 7, 1, 5, 0, 2, 4, 6])
    cfg = AugmentConfig()
    out = ClipTransform(VIEWS, 64, cfg, normalize=False).eval([square[order]])
    assert out.shape == (1, 3, 8, 64, 64)
    pixels = out[0].permute(1, 2, 3, 0).numpy()  # [S, H, W, C]
    assert [read_frame_index(f) for f in pixels] == order.tolist()
    assert np.array_equal(pixels, square[order])


def test_eval_three_crops_span_the_long_side(frames):
    boxes = ClipTransform(VIEWS, 64, AugmentConfig(test_crops=3)).eval_boxes(64, 80)
    assert [(b.top, b.left, b.size) for b in boxes] == [(0, 0, 64), (0, 8, 64), (0, 16, 64)]
    tall = ClipTransform(VIEWS, 64, AugmentConfig(test_crops=3)).eval_boxes(100, 64)
    assert [(b.top, b.left) for b in tall] == [(0, 0), (18, 0), (36, 0)]


def test_wrong_frame_count_raises(frames):
    with pytest.raises(ValueError, match="expected 8 frames"):
        transform().labeled(frames[:5], np.random.default_rng(0))
