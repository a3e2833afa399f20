"""Frame pretraining: the geometric labels follow the crop and the mirror, colours are permuted per
frame, and the targets are what a frame shows (body axis, chest, visible facing, part maps)."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch

from gym_qa.synthgym.athlete import PARTS
from sefar_encoder import frame_pretraining as pretrain

PART_NAMES = [name for name, _ in PARTS]


def _batch(n: int) -> dict[str, torch.Tensor]:
    """n frames of 16 px: every part a short capsule at the left, the torso upright, chest to the right."""
    parts = torch.zeros(n, len(PART_NAMES), 5)
    parts[:, :, :4] = torch.tensor([2.0, 6.0, 4.0, 6.0])
    parts[:, :, 4] = 1.0
    parts[:, PART_NAMES.index("torso"), :4] = torch.tensor([3.0, 12.0, 3.0, 4.0])  # hip below the neck
    return {
        "parts": parts,
        "box": torch.tensor([[1.0, 3.0, 6.0, 14.0]]).repeat(n, 1),
        "chest": torch.tensor([[0.9, 0.1, 0.4]]).repeat(n, 1),
        "shape": torch.zeros(n, dtype=torch.long),
        "apparatus": torch.zeros(n, dtype=torch.long),
    }


def test_mirror_and_crop_move_the_geometric_labels_with_the_pixels() -> None:
    n = 64
    frames = torch.zeros(n, 3, 16, 16)
    frames[:, :, 4:12, 2:5] = 255.0  # a bright bar where the box and the parts are
    batch, before = _batch(n), _batch(n)
    cfg = dataclasses.replace(pretrain.PretrainConfig(), permute_channels=False)
    out = pretrain.augment(frames, batch, torch.Generator().manual_seed(3), cfg)
    mirrored = out[:, :, :, 8:].mean((1, 2, 3)) > out[:, :, :, :8].mean((1, 2, 3))
    assert 0 < int(mirrored.sum()) < n  # some of each
    assert torch.equal(batch["chest"][:, 0], torch.where(mirrored, -0.9, 0.9).float())
    assert torch.equal(batch["chest"][:, 1:], before["chest"][:, 1:])
    # the bar's pixel centre of mass and the mirrored/cropped torso's x agree to within a pixel
    cols = torch.arange(16).float() + 0.5
    mass = out.mean(1).sum(1)  # [n, W]
    bar_x = (mass * cols).sum(1) / mass.sum(1)
    torso = batch["parts"][:, PART_NAMES.index("torso")]
    assert torch.allclose(torso[:, 0], bar_x, atol=1.0)
    assert torch.all(batch["box"][:, 0] < batch["box"][:, 2])  # x0 < x1 after a mirror too
    assert torch.all((batch["box"] >= 0) & (batch["box"] <= 16))


def test_channel_permutation_keeps_each_pixels_values() -> None:
    frames = torch.rand(32, 3, 8, 8, generator=torch.Generator().manual_seed(0)) * 255
    cfg = dataclasses.replace(pretrain.PretrainConfig(), mirror=False)
    permuted = pretrain.augment(frames, _batch(32), torch.Generator().manual_seed(0), cfg)
    # the crop is the same for the whole batch: compare per-pixel sorted channel values with an
    # unpermuted augmentation drawn from the same generator state
    plain_cfg = dataclasses.replace(cfg, permute_channels=False)
    plain = pretrain.augment(frames, _batch(32), torch.Generator().manual_seed(0), plain_cfg)
    assert torch.allclose(permuted.sort(1).values, plain.sort(1).values)
    assert not torch.allclose(permuted, plain)


def test_part_map_covers_the_cells_of_a_capsule_only() -> None:
    parts = torch.zeros(1, len(PART_NAMES), 5)
    parts[..., :4] = -50.0  # every part off-frame ...
    parts[0, PART_NAMES.index("thigh_r")] = torch.tensor([4.0, 2.0, 4.0, 14.0, 1.5])  # ... but one thigh
    maps = pretrain.part_maps(parts, 16)  # [1, groups, 4, 4] cells of 4 px
    assert maps.shape == (1, len(pretrain.PART_GROUPS), 4, 4)
    thighs = list(pretrain.PART_GROUPS).index("thighs")
    others = [g for g in range(len(pretrain.PART_GROUPS)) if g != thighs]
    assert float(maps[0, others].max()) == 0.0
    # a vertical bar 3 px wide centred on x = 4: the cells of columns 0 and 1 (x 0-8), rows 0-3
    assert torch.all(maps[0, thighs, :, 2:] == 0)
    assert torch.all(maps[0, thighs, 1:3, :2] > 0.2)


def test_targets_are_what_the_frame_shows() -> None:
    batch = _batch(3)
    batch["chest"] = torch.tensor([[0.9, 0.0, 0.4], [-0.8, 0.0, 0.6], [0.1, 0.0, 1.0]])
    target = pretrain.targets(batch, 16)
    assert torch.allclose(
        target["regress"][:, :2], torch.tensor([[0.0, -1.0]] * 3)
    )  # upright: hip -> neck is up
    assert target["facing"].tolist() == [1, 0, -100]  # right, left, face-on (no label)
    assert torch.allclose(target["regress"][:, 5:], batch["box"] / 16)


def test_frame_heads_part_map_layout_matches_the_patch_grid() -> None:
    heads = pretrain.FrameHeads(dim=8, num_shapes=3, num_apparatus=2, patch_size=8)
    patches = torch.zeros(1, 4, 8)  # a 2 x 2 grid of 8-px patches
    with torch.no_grad():
        heads.parts.weight.zero_()
        heads.parts.bias.zero_()
        patches[0, 1, 0] = 1.0  # the top-right patch
        heads.parts.weight[:, 0] = 1.0
    with torch.no_grad():
        maps = heads(torch.zeros(1, 8), patches)["parts"]  # [1, groups, 4, 4]
    assert maps.shape == (1, len(pretrain.PART_GROUPS), 4, 4)
    assert torch.all(maps[0, :, :2, 2:] == 1) and float(maps.sum()) == len(pretrain.PART_GROUPS) * 4


def test_old_annotations_without_parts_are_refused_with_the_line(tmp_path) -> None:
    (tmp_path / "pretrain").mkdir()
    rec = {"video": "videos/a.mp4", "apparatus": "FX", "num_frames": 2, "frames": {"rot": [0, 0]}}
    (tmp_path / "pretrain" / "frames.jsonl").write_text("\n" + json.dumps(rec) + "\n")
    cfg = dataclasses.replace(pretrain.PretrainConfig(), data_root=str(tmp_path), progress=False)
    with pytest.raises(ValueError, match=r"frames\.jsonl:2: no per-frame body parts"):
        pretrain.load_frames(cfg)


def test_a_broken_annotation_line_is_refused_with_the_line(tmp_path) -> None:
    (tmp_path / "pretrain").mkdir()
    (tmp_path / "pretrain" / "frames.jsonl").write_text('{"frames": {}\n')
    cfg = dataclasses.replace(pretrain.PretrainConfig(), data_root=str(tmp_path), progress=False)
    with pytest.raises(ValueError, match=r"frames\.jsonl:1: not a JSON object"):
        pretrain.load_frames(cfg)
