"""The uint8 data path (``normalize=False``: clips cross the worker boundary as pixels, normalised after
collation by ``finish_batch``) against the float path on a fixed clip, for the evaluation pipeline (one
sample at a time and in batches, 1 and 3 crops, 2 temporal offsets) and the training pipelines; and the
time reordering done on the resized frames against reordering the decoded frames first (the order the
pipeline used before: gather, then crop and resize)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from video_fixtures import write_clip

from gym_qa.lists import ListEntry
from sefar_encoder.collate import collate_clips, finish_batch
from sefar_encoder.dataset import VideoClipDataset
from sefar_encoder.transforms import AugmentConfig, AugParams, ClipTransform, CropBox

VIEWS = (2, 2, 4)


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fixed 40 x 64 clip of 30 frames (not square: the eval crops move along the long side)."""
    return write_clip(tmp_path_factory.mktemp("uint8") / "clip.mp4", num_frames=30, height=40, width=64)


def dataset(clip: Path, mode: str, normalize: bool, augment: AugmentConfig) -> VideoClipDataset:
    entries = [ListEntry(path=clip, label=1, line=1, raw_path=str(clip))] * 2
    return VideoClipDataset(
        entries, 3, mode, views=VIEWS, image_size=32, augment=augment, normalize=normalize
    )


@pytest.mark.parametrize("crops", [1, 3])
def test_eval_uint8_path_equals_the_float_path(clip, crops):
    augment = AugmentConfig(test_crops=crops, test_offsets=2, eval_short_side=36)
    floats, pixels = dataset(clip, "eval", True, augment), dataset(clip, "eval", False, augment)
    reference = floats[0]["video"]  # [n_test, C, S, h, w] float32, normalised in the dataset
    assert reference.dtype == torch.float32 and reference.shape == (2 * crops, 3, 8, 32, 32)
    one = pixels[0]["video"]  # one sample: uint8 pixels
    assert one.dtype == torch.uint8 and one.shape == reference.shape
    for batch in (collate_clips([pixels[0]]), collate_clips(pixels.__getitems__([0, 1]))):
        video = finish_batch(batch, pixels.augment)["video"]  # normalised after collation
        assert video.dtype == torch.float32
        for row in video:
            torch.testing.assert_close(row, reference, atol=1e-6, rtol=0)
    float_batch = finish_batch(collate_clips(floats.__getitems__([0, 1])), floats.augment)["video"]
    torch.testing.assert_close(
        finish_batch(collate_clips([pixels[1]]), pixels.augment)["video"][0], float_batch[1]
    )


@pytest.mark.parametrize("mode", ["labeled", "unlabeled"])
def test_training_uint8_path_equals_the_float_path(clip, mode):
    augment = AugmentConfig(channel_dropout=1.0)  # every strong view drops a channel
    floats, pixels = dataset(clip, mode, True, augment), dataset(clip, mode, False, augment)
    key = (0, (3, 4))  # sampler seed: same frames and same augmentation in both
    reference, batch = floats[key], finish_batch(collate_clips([pixels[key]]), pixels.augment)
    for name in ("video",) if mode == "labeled" else ("weak", "strong"):
        torch.testing.assert_close(batch[name][0], reference[name], atol=1e-6, rtol=0)


@pytest.mark.parametrize("perturb", ["mod_reverse", "all_reverse", "warp"])
def test_reordering_resized_frames_equals_resizing_reordered_frames(perturb):
    """Each view's frames share a crop and resizing is per frame: gather after resize == before."""
    frames = np.random.default_rng(0).integers(0, 256, size=(8, 50, 70, 3), dtype=np.uint8)
    t = ClipTransform(VIEWS, 32, AugmentConfig(temporal_perturb=perturb), normalize=False)
    params = t.sample_params("strong", np.random.default_rng(7), 50, 70)
    assert params.time_order is not None and len(set(params.boxes)) > 1
    boxes = (CropBox(3, 5, 40, True), CropBox(0, 20, 50), CropBox(10, 0, 33, True))
    for chosen in (params.boxes, boxes):
        got = t.apply(frames, AugParams(chosen, params.time_order))  # [C, S, h, w]
        before = t.apply(frames[params.time_order], AugParams(chosen))  # the old order of operations
        assert torch.equal(got, before)
