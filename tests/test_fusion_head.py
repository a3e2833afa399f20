"""Fusion head (docs/DESIGN.md §Fusion head): shapes, exact parameter counts, concatenation order,
K-sample dropout."""

import itertools

import pytest
import torch
import torch.nn.functional as F

from sefar_encoder.model import FusionHead

D, DH, K = 12, 10, 7


def expected_params(d: int, dh: int, v: int, k: int) -> int:
    pairs = v * (v - 1) // 2
    stage = lambda fan_in: fan_in * dh + dh + 2 * dh  # Linear (W, b) + LayerNorm (γ, β)
    unary = stage(d)
    pair = stage(2 * d) if pairs else 0
    glob = stage((pairs + v) * dh)
    classifier = dh * k + k
    return unary + pair + glob + classifier


@pytest.mark.parametrize("num_views", [1, 2, 3])
def test_shapes_and_exact_parameter_count(num_views):
    head = FusionHead(D, DH, num_views, K)
    f = torch.randn(4, num_views, D)
    assert head.fuse(f).shape == (4, DH)
    assert head(f).shape == (4, K)
    assert sum(p.numel() for p in head.parameters()) == expected_params(D, DH, num_views, K)
    assert (head.pair is None) == (num_views == 1)


def _stage(module, x):
    return F.layer_norm(
        F.gelu(x @ module.fc.weight.T + module.fc.bias), (DH,), module.norm.weight, module.norm.bias
    )


@pytest.mark.parametrize("num_views", [1, 3, 4])
def test_fuse_matches_the_formula_pairs_then_views(num_views):
    torch.manual_seed(0)
    head = FusionHead(D, DH, num_views, K)
    with torch.no_grad():  # non-trivial LayerNorm affine so a wrong order cannot hide
        for p in head.parameters():
            p.add_(0.3 * torch.randn_like(p))
    f = torch.randn(3, num_views, D)
    us = [_stage(head.unary, f[:, v]) for v in range(num_views)]
    gs = [
        _stage(head.pair, torch.cat([f[:, i], f[:, j]], dim=-1))
        for i, j in itertools.combinations(range(num_views), 2)
    ]
    h_ref = _stage(head.fuse_all, torch.cat(gs + us, dim=-1))  # g_01, g_02, g_12, ..., u_0, u_1, ...
    torch.testing.assert_close(head.fuse(f), h_ref)


def test_eval_has_no_dropout_and_train_has():
    torch.manual_seed(0)
    head = FusionHead(D, DH, 3, K).eval()
    f = torch.randn(5, 3, D)
    torch.testing.assert_close(head(f), head(f))
    head.train()
    assert not torch.allclose(head(f), head(f))


def test_sample_logits_independent_masks_and_unbiased():
    torch.manual_seed(0)
    head = FusionHead(D, DH, 3, K).eval()
    h = head.fuse(torch.randn(2, 3, D)).detach()
    samples = head.sample_logits(h, 5)
    assert samples.shape == (5, 2, K)
    assert not torch.allclose(samples[0], samples[1])  # a different mask per sample
    # inverted dropout and a linear classifier: the sample mean converges to the eval logits
    many = head.sample_logits(h, 20000).mean(0)
    torch.testing.assert_close(many, head.classify(h), atol=0.02, rtol=0)
    # p = 0: every sample equals the deterministic prediction
    head.dropout.p = 0.0
    torch.testing.assert_close(head.sample_logits(h, 3), head.classify(h).expand(3, -1, -1))


def test_wrong_number_of_views_is_rejected():
    head = FusionHead(D, DH, 3, K)
    with pytest.raises(ValueError, match="view features"):
        head.fuse(torch.randn(2, 2, D))
