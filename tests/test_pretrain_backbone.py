"""Frame pretraining's augmentation: the labels follow a mirror, colours are permuted per frame."""

from __future__ import annotations

import dataclasses

import torch
from synthgym_fixtures import load_script

pretrain = load_script("pretrain_image_backbone")


def _batch(n: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    box = torch.tensor([[0.1, 0.2, 0.4, 0.9]]).repeat(n, 1)
    return {
        "regress": torch.cat([torch.rand(n, 4, generator=g), box], 1),
        "facing": torch.randint(0, 2, (n,), generator=g),
    }


def test_mirror_flips_facing_and_box_only_for_mirrored_frames() -> None:
    n = 64
    frames = torch.rand(n, 3, 16, 16, generator=torch.Generator().manual_seed(0)) * 255
    frames[:, :, :, :8] += 1000  # a bright left half: tells a mirrored frame apart
    batch, before = _batch(n), _batch(n)
    cfg = dataclasses.replace(pretrain.PretrainConfig(), permute_channels=False)
    # scale 1.0..1.3 crops move the image a little; the bright half still says which side it is on
    out = pretrain.augment(frames, batch, torch.Generator().manual_seed(3), cfg)
    mirrored = out[:, :, :, 8:].mean((1, 2, 3)) > out[:, :, :, :8].mean((1, 2, 3))
    assert 0 < int(mirrored.sum()) < n  # some of each
    assert torch.equal(batch["facing"], torch.where(mirrored, 1 - before["facing"], before["facing"]))
    box = batch["regress"][:, 4:]
    assert torch.allclose(box[mirrored], torch.tensor([0.6, 0.2, 0.9, 0.9]).expand(int(mirrored.sum()), 4))
    assert torch.allclose(box[~mirrored], before["regress"][~mirrored, 4:])
    assert torch.equal(
        batch["regress"][:, :4], before["regress"][:, :4]
    )  # rotation, twist: the athlete's own


def test_channel_permutation_keeps_each_pixels_values() -> None:
    frames = torch.rand(32, 3, 8, 8, generator=torch.Generator().manual_seed(0)) * 255
    cfg = dataclasses.replace(pretrain.PretrainConfig(), mirror=False)
    gen = torch.Generator().manual_seed(0)
    permuted = pretrain.augment(frames, _batch(32), gen, cfg)
    # the crop is the same for the whole batch: compare per-pixel sorted channel values with an
    # unpermuted augmentation drawn from the same generator state
    plain_cfg = dataclasses.replace(cfg, permute_channels=False)
    plain = pretrain.augment(frames, _batch(32), torch.Generator().manual_seed(0), plain_cfg)
    assert torch.allclose(permuted.sort(1).values, plain.sort(1).values)
    assert not torch.allclose(permuted, plain)
