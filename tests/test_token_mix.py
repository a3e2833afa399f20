"""TubeTokenMix: ⌊λN⌋ kept tokens, one spatial mask tiled over time, one permutation for views and targets."""

import math

import torch

from sefar_encoder.model import MixSpec, ModelConfig, SeFAREncoder, TubeMix


def test_mask_counts_and_effective_lambda():
    gen = torch.Generator().manual_seed(0)
    mixer = TubeMix()
    for _ in range(50):
        lam_gen = torch.Generator().manual_seed(int(torch.randint(0, 2**31, (1,), generator=gen)))
        state = lam_gen.get_state()
        lam = mixer.sample_lambda(lam_gen)
        lam_gen.set_state(state)
        spec = mixer.sample(6, (7, 5), generator=lam_gen)
        ones = int(spec.mask.sum())
        assert spec.mask.shape == (35,) and spec.mask.dtype == torch.bool
        assert ones == math.floor(lam * 35)  # same generator state: same λ inside sample()
        assert spec.lam_eff == ones / 35
        assert sorted(spec.perm.tolist()) == list(range(6))


def test_lambda_follows_beta_10_10():
    gen = torch.Generator().manual_seed(0)
    lams = torch.tensor([TubeMix().sample_lambda(gen) for _ in range(4000)])
    assert abs(lams.mean().item() - 0.5) < 0.01
    assert abs(lams.var().item() - 100 / (400 * 21)) < 0.002  # ab / ((a+b)^2 (a+b+1))


def test_sampling_is_reproducible_from_the_generator():
    a = TubeMix().sample(8, (4, 4), generator=torch.Generator().manual_seed(3))
    b = TubeMix().sample(8, (4, 4), generator=torch.Generator().manual_seed(3))
    assert torch.equal(a.mask, b.mask) and torch.equal(a.perm, b.perm) and a.lam_eff == b.lam_eff


def test_apply_tiles_the_mask_over_time_and_mixes_targets_with_the_same_perm():
    spec = TubeMix().sample(5, 9, generator=torch.Generator().manual_seed(1))
    tokens = torch.randn(5, 8, 9, 4)  # [B, S, N, D]
    mixed = spec.apply(tokens)
    keep = spec.mask
    for t in range(8):  # every frame (of every view) uses the same spatial mask
        torch.testing.assert_close(mixed[:, t, keep], tokens[:, t, keep], rtol=0, atol=0)
        torch.testing.assert_close(mixed[:, t, ~keep], tokens[spec.perm][:, t, ~keep], rtol=0, atol=0)
    q = torch.softmax(torch.randn(5, 3), -1)
    lam = spec.lam_eff
    torch.testing.assert_close(spec.mix_targets(q), lam * q + (1 - lam) * q[spec.perm])


def _fixed(mask_value: bool, perm: torch.Tensor) -> MixSpec:
    mask = torch.full((16,), mask_value)
    return MixSpec(mask=mask, perm=perm, lam_eff=float(mask_value))


def test_model_uses_one_permutation_for_every_view():
    """With every token taken from the partner, the mixed clip IS the partner clip, in every view."""
    torch.manual_seed(0)
    cfg = ModelConfig(img_size=32, patch_size=8, embed_dim=32, depth=1, num_heads=2, num_classes=4)
    model = SeFAREncoder(cfg).eval()
    video = torch.randn(4, 3, 8, 32, 32)
    perm = torch.tensor([2, 0, 3, 1])
    with torch.no_grad():
        plain = model(video)
        swapped = model(video, mix=_fixed(False, perm))
        kept = model(video, mix=_fixed(True, perm))
        partner = model(video[perm])
    torch.testing.assert_close(swapped.view_features, partner.view_features, rtol=0, atol=1e-6)
    torch.testing.assert_close(kept.view_features, plain.view_features, rtol=0, atol=0)
    # a real mix differs from both, and the grid matches the model's
    spec = TubeMix().sample(4, model.grid_size, generator=torch.Generator().manual_seed(0))
    assert spec.mask.numel() == 16
    with torch.no_grad():
        mixed = model(video, mix=spec).view_features
    assert not torch.allclose(mixed, plain.view_features) and not torch.allclose(mixed, partner.view_features)
