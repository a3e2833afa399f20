"""Adaptive Regulation: golden weights, K-sample statistics, one-pass sampling == K full teacher passes."""

import math

import pytest
import torch

from sefar_encoder.model import ModelConfig, SeFAREncoder
from sefar_encoder.regulation import (
    RegulationConfig,
    adaptive_weight,
    k_sample_stats,
    teacher_k_full_passes,
    teacher_k_samples,
)


@pytest.mark.parametrize(("p_mean", "p_std", "golden"), [(0.5, 0.0, 0.511), (1.0, 0.05, 0.462)])
def test_golden_points(p_mean, p_std, golden):
    w = adaptive_weight(torch.tensor([p_mean]), torch.tensor([p_std]))
    assert abs(w.item() - golden) < 0.002


def test_weight_is_monotone_in_confidence_and_agreement():
    p = torch.linspace(0.05, 1.0, 20)
    w = adaptive_weight(p, torch.zeros(20))
    assert torch.all(w[1:] > w[:-1]) and abs(w[-1].item() - 1.0) < 1e-6
    s = torch.linspace(0.0, 0.3, 20)
    w = adaptive_weight(torch.full((20,), 0.8), s)
    assert torch.all(w[1:] < w[:-1])


def test_constants_are_configurable():
    cfg = RegulationConfig(std_scale=10.0)
    q = torch.tensor([[[0.9, 0.1]], [[0.8, 0.2]]])  # K=2, B=1
    s = torch.tensor([0.9, 0.8]).std().item()
    expected = (
        2 * (1 / (1 + math.exp(-(math.exp(0.85) - math.e)))) * 2 * (1 / (1 + math.exp(-1 / (10 * s))) - 0.5)
    )
    assert abs(k_sample_stats(q, cfg).weight.item() - expected) < 1e-6


def test_k_sample_statistics_by_hand():
    # K=3, B=2, C=3; sample 1's argmax of the mean (class 2) differs from the first sample's argmax
    q = torch.tensor(
        [
            [[0.7, 0.2, 0.1], [0.5, 0.1, 0.4]],
            [[0.6, 0.3, 0.1], [0.1, 0.2, 0.7]],
            [[0.8, 0.1, 0.1], [0.2, 0.1, 0.7]],
        ]
    )
    stats = k_sample_stats(q)
    assert stats.pseudo_label.tolist() == [0, 2]
    torch.testing.assert_close(stats.p_mean, torch.tensor([0.7, 0.6]))
    torch.testing.assert_close(stats.p_std, torch.tensor([0.1, math.sqrt(0.03)]))  # unbiased (K-1)
    torch.testing.assert_close(stats.weight, adaptive_weight(stats.p_mean, stats.p_std))
    torch.testing.assert_close(stats.q_mean, q.mean(0))
    assert k_sample_stats(q[:1]).p_std.tolist() == [0.0, 0.0]  # K=1: no spread


def teacher() -> SeFAREncoder:
    torch.manual_seed(0)
    cfg = ModelConfig(
        img_size=16, patch_size=8, embed_dim=16, depth=1, num_heads=2, num_classes=6, views=(2, 2)
    )
    model = SeFAREncoder(cfg).eval()
    with torch.no_grad():  # a confident class 0 whose probability the head dropout visibly moves
        model.fusion_head.classifier.weight.mul_(5)
        model.fusion_head.classifier.bias[0] = 3.0
    return model


@pytest.fixture
def one_thread():
    """~2000 tiny passes: with 2 threads on a busy 2-core machine, thread hand-offs dominate (10x slower)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_one_pass_k_samples_match_k_full_passes_in_distribution(one_thread):
    model = teacher()
    video = torch.randn(8, 3, 4, 16, 16)
    torch.manual_seed(123)
    reps, k = 80, 10
    one = torch.stack([k_sample_stats(teacher_k_samples(model, video, k)).weight for _ in range(reps)])
    full = torch.stack([k_sample_stats(teacher_k_full_passes(model, video, k)).weight for _ in range(reps)])
    assert not model.fusion_head.dropout.training  # the reference restored eval mode

    def z(a: torch.Tensor, b: torch.Tensor) -> float:
        """z-score of the difference of the mean weights over the fixed batch and all repetitions."""
        a, b = a.mean(1), b.mean(1)  # per repetition: mean weight of the batch
        return abs(a.mean() - b.mean()).item() / math.sqrt(a.var().item() / reps + b.var().item() / reps)

    assert 0.2 < full.mean().item() < 0.6 and full.std().item() > 0.02  # the check has something to compare
    assert z(one, full) < 4.0
    # per clip too, with a looser bound for the many comparisons
    per_clip = (one.mean(0) - full.mean(0)).abs() / ((one.var(0) + full.var(0)) / reps).sqrt().clamp_min(1e-6)
    assert per_clip.max().item() < 5.0

    # negative control: one dropout mask shared by the K samples has no spread -> clearly different weights
    h = model.forward_head(model.forward_features(video), pre_logits=True).detach()
    shared = []
    for _ in range(reps):
        logits = model.fusion_head.sample_logits(h, 1).expand(k, -1, -1)
        shared.append(k_sample_stats(logits.softmax(-1)).weight)
    assert z(torch.stack(shared), full) > 8.0


def test_k_samples_shapes_and_no_grad():
    model = teacher()
    q = teacher_k_samples(model, torch.randn(3, 3, 4, 16, 16), 5)
    assert q.shape == (5, 3, 6) and not q.requires_grad
    torch.testing.assert_close(q.sum(-1), torch.ones(5, 3))
