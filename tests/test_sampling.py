"""Dual-level temporal sampling: segment assignment, per-part coverage, train/eval frame choice."""

import numpy as np
import pytest

from sefar_encoder.sampling import DualLevelSampler, assign_segments, fine_views, segment_bounds

VIEW_TUPLES = [
    (2, 2, 4),
    (8,),
    (4, 4),
    (2, 2, 2, 2),
    (1, 1, 2),
    (4, 2, 2),
    (2, 3),
    (3, 5),
    (1, 4),
    (2, 2, 3),
    (1, 2, 4, 8),
]
CLIP_LENGTHS = [1, 2, 3, 7, 8, 9, 16, 23, 24, 37, 48, 100, 301]


def test_default_assignment_matches_spec():
    assert assign_segments((2, 2, 4)) == ((3, 7), (1, 5), (0, 2, 4, 6))


@pytest.mark.parametrize("views", VIEW_TUPLES)
def test_views_are_disjoint_and_cover_all_segments(views):
    segs = assign_segments(views)
    flat = [j for s in segs for j in s]
    assert sorted(flat) == list(range(sum(views)))
    assert [len(s) for s in segs] == list(views)


@pytest.mark.parametrize("views", VIEW_TUPLES)
def test_one_segment_in_each_of_n_equal_parts(views):
    """A view of n frames owns exactly one segment (by its centre) in each of n equal parts of the clip."""
    total = sum(views)
    for n, segs in zip(views, assign_segments(views)):
        parts = sorted(int((j + 0.5) / total * n) for j in segs)
        assert parts == list(range(n)), (views, n, segs)


@pytest.mark.parametrize("views", [(2, 2, 4), (4, 4), (1, 1, 2), (2, 2, 2, 2)])
@pytest.mark.parametrize("multiple", [1, 3, 10])
def test_frames_one_per_part_when_clip_divides(views, multiple):
    """Frame-level check: when S divides F, each view's k-th frame lies in the k-th n-th of the clip."""
    sampler = DualLevelSampler(views)
    num_frames = sum(views) * multiple
    rng = np.random.default_rng(0)
    for sample in [sampler.train(num_frames, rng) for _ in range(20)] + sampler.eval(num_frames, 3):
        for n, frames in zip(views, sample.per_view):
            assert [int(f * n // num_frames) for f in frames] == list(range(n))


@pytest.mark.parametrize("views", VIEW_TUPLES)
@pytest.mark.parametrize("num_frames", CLIP_LENGTHS)
def test_train_frames_lie_inside_their_segment(views, num_frames):
    sampler = DualLevelSampler(views)
    starts, ends = segment_bounds(num_frames, sum(views))
    rng = np.random.default_rng(num_frames)
    segs = np.concatenate([np.asarray(s) for s in assign_segments(views)])
    for _ in range(10):
        sample = sampler.train(num_frames, rng)
        flat = sample.flat
        assert flat.dtype == np.int64 and flat.shape == (sum(views),)
        assert np.all((flat >= starts[segs]) & (flat < ends[segs]))
        assert np.all((flat >= 0) & (flat < num_frames))
        for frames in sample.per_view:  # each view in temporal order
            assert np.all(np.diff(frames) >= 0)


def test_train_draws_cover_the_segment():
    sampler = DualLevelSampler((2, 2, 4))
    rng = np.random.default_rng(1)
    seen = {int(sampler.train(80, rng).per_view[2][0]) for _ in range(300)}  # view2's first = segment 0
    assert seen == set(range(10))


def test_eval_is_deterministic_centres_and_offsets():
    sampler = DualLevelSampler((2, 2, 4))
    (centre,) = sampler.eval(80)
    assert [f.tolist() for f in centre.per_view] == [[35, 75], [15, 55], [5, 25, 45, 65]]
    assert all(np.array_equal(a.flat, b.flat) for a, b in zip(sampler.eval(80, 3), sampler.eval(80, 3)))
    offsets = sampler.eval(80, 3)
    assert len({tuple(s.flat) for s in offsets}) == 3
    starts, _ = segment_bounds(80, 8)
    segs = np.concatenate([np.asarray(s) for s in assign_segments((2, 2, 4))])
    for s in offsets:
        assert np.all((s.flat >= starts[segs]) & (s.flat < starts[segs] + 10))


@pytest.mark.parametrize("num_frames", [1, 3])
def test_short_clips_repeat_frames(num_frames):
    sampler = DualLevelSampler((2, 2, 4))
    rng = np.random.default_rng(0)
    for sample in [sampler.train(num_frames, rng), *sampler.eval(num_frames, 2)]:
        assert sample.flat.shape == (8,)
        assert set(sample.flat.tolist()) <= set(range(num_frames))
    if num_frames == 1:
        assert sampler.train(1, rng).flat.tolist() == [0] * 8


def test_flat_order_is_view0_then_view1_then_view2():
    sample = DualLevelSampler((2, 2, 4)).eval(8)[0]
    assert sample.flat.tolist() == [3, 7, 1, 5, 0, 2, 4, 6]
    assert sample.views == (2, 2, 4)


def test_fine_views():
    assert fine_views((2, 2, 4)) == (0, 1)
    assert fine_views((4, 2, 2)) == (1, 2)
    assert fine_views((1, 1, 2)) == (0, 1)
    assert fine_views((8,)) == ()
    assert fine_views((4, 4)) == ()


@pytest.mark.parametrize("views", [(), (0, 2), (-1,)])
def test_invalid_views_raise(views):
    with pytest.raises(ValueError):
        DualLevelSampler(views)


def test_zero_frame_clip_raises():
    with pytest.raises(ValueError):
        DualLevelSampler().train(0, np.random.default_rng(0))
