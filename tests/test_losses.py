"""Semi-supervised losses, the sine ramp and threshold masks, against hand computations."""

import json
import math

import pytest
import torch
import torch.nn.functional as F

from sefar_encoder.losses import (
    FreeMatchConfig,
    LossConfig,
    SelfAdaptiveThreshold,
    fairness_loss,
    mix_loss,
    sine_ramp,
    supervised_loss,
    threshold_mask,
    total_loss,
    unlabeled_loss,
)
from sefar_encoder.model import MixSpec


@pytest.mark.parametrize(
    ("epoch", "expected"),
    [
        (0, 0.0),
        (4, 0.0),  # still warming up (W = 5)
        (5, math.sin(math.pi / 2 / 25)),  # first SSL epoch: small but positive
        (17, math.sin(math.pi / 2 * 13 / 25)),
        (29, 1.0),  # last epoch
        (40, 1.0),  # clipped
    ],
)
def test_sine_ramp(epoch, expected):
    assert sine_ramp(epoch, warm_epochs=5, total_epochs=30) == pytest.approx(expected, abs=1e-12)


def test_sine_ramp_golden_numbers_and_bad_schedule():
    assert sine_ramp(5, 5, 30) == pytest.approx(0.06279, abs=1e-5)
    assert sine_ramp(17, 5, 30) == pytest.approx(0.72897, abs=1e-5)
    with pytest.raises(ValueError):
        sine_ramp(5, 5, 5)


def test_supervised_and_unlabeled_losses():
    torch.manual_seed(0)
    logits, labels = torch.randn(4, 3), torch.tensor([0, 2, 1, 1])
    assert supervised_loss(logits, labels).item() == pytest.approx(F.cross_entropy(logits, labels).item())
    w = torch.tensor([1.0, 0.0, 0.5, 0.25])
    ce = [F.cross_entropy(logits[i : i + 1], labels[i : i + 1]).item() for i in range(4)]
    expected = sum(wi * ci for wi, ci in zip(w.tolist(), ce)) / 4  # mean over the batch, not over Σw
    assert unlabeled_loss(logits, labels, w).item() == pytest.approx(expected, rel=1e-6)


def test_unlabeled_loss_does_not_backprop_into_weights():
    w = torch.rand(3, requires_grad=True)
    logits = torch.randn(3, 4, requires_grad=True)
    unlabeled_loss(logits, torch.tensor([0, 1, 2]), w).backward()
    assert w.grad is None and logits.grad is not None


def test_mix_loss_by_hand():
    torch.manual_seed(0)
    z = torch.randn(3, 4)
    q = torch.softmax(torch.randn(3, 4), -1)
    w = torch.tensor([0.2, 0.9, 0.5])
    spec = MixSpec(mask=torch.tensor([True, True, False, False]), perm=torch.tensor([1, 2, 0]), lam_eff=0.5)
    lam = 0.5
    total = 0.0
    for b in range(3):
        y = lam * q[b] + (1 - lam) * q[spec.perm[b]]
        w_b = lam * w[b] + (1 - lam) * w[spec.perm[b]]
        total += w_b * ((z[b].softmax(-1) - y) ** 2).mean()
    assert mix_loss(z, q, w, spec).item() == pytest.approx((total / 3).item(), rel=1e-6)
    # official behaviour: raw logits regressed onto the probabilities
    total_logits = sum(
        (lam * w[b] + (1 - lam) * w[spec.perm[b]])
        * ((z[b] - (lam * q[b] + (1 - lam) * q[spec.perm[b]])) ** 2).mean()
        for b in range(3)
    )
    assert mix_loss(z, q, w, spec, on_logits=True).item() == pytest.approx(
        (total_logits / 3).item(), rel=1e-6
    )


def test_threshold_mask():
    probs = torch.tensor([[0.96, 0.04], [0.5, 0.5], [0.02, 0.98], [0.95, 0.05]])
    pseudo, mask = threshold_mask(probs, 0.95)
    assert pseudo.tolist() == [0, 0, 1, 0]
    assert mask.tolist() == [1.0, 0.0, 1.0, 1.0]


def test_total_loss():
    cfg = LossConfig()
    assert (cfg.gamma_un, cfg.gamma_mix, cfg.mix_on_logits, cfg.threshold) == (2.0, 2.0, False, 0.95)
    loss = total_loss(torch.tensor(1.0), torch.tensor(0.5), torch.tensor(0.25), ramp=0.5, config=cfg)
    assert loss.item() == pytest.approx(1.0 + 0.5 * (2 * 0.5 + 2 * 0.25))


# ----------------------------------------------------------------------------- FreeMatch
# C = 3 classes. Batch 1 (4 weak-view softmaxes), argmax classes 0, 0, 2, 1:
BATCH_1 = [[0.8, 0.1, 0.1], [0.4, 0.35, 0.25], [0.2, 0.2, 0.6], [0.3, 0.4, 0.3]]
# Batch 2, argmax classes 1, 0, 1, 0 (class 2 never wins):
BATCH_2 = [[0.1, 0.85, 0.05], [0.5, 0.3, 0.2], [0.3, 0.36, 0.34], [0.6, 0.25, 0.15]]


def probs_of(rows: list[list[float]]) -> torch.Tensor:
    return torch.tensor(rows, dtype=torch.float64)  # float64: the hand values hold to 1e-12


def test_freematch_defaults():
    cfg = FreeMatchConfig()
    assert (cfg.momentum, cfg.fairness, cfg.fairness_weight) == (0.999, True, 0.001)
    sat = SelfAdaptiveThreshold(3)
    assert float(sat.tau) == pytest.approx(1 / 3) and sat.p_model.tolist() == pytest.approx([1 / 3] * 3)
    assert sat.label_hist.tolist() == pytest.approx([1 / 3] * 3)


def test_self_adaptive_thresholds_by_hand():
    # λ = 0.5 so that two updates move the state visibly (the default 0.999 is checked below)
    sat = SelfAdaptiveThreshold(3, momentum=0.5)
    sat.update(probs_of(BATCH_1))
    # τ1 = ½·⅓ + ½·mean(.8, .4, .6, .4) = 1/6 + ½·0.55                         = 53/120
    assert float(sat.tau) == pytest.approx(53 / 120, abs=1e-12)
    # p̃1 = ½·⅓ + ½·mean_b q_b = 1/6 + ½·(1.7, 1.05, 1.25)/4 = (182, 143, 155)/480
    assert sat.p_model.tolist() == pytest.approx([182 / 480, 143 / 480, 155 / 480], abs=1e-12)
    # h̃1 = ½·⅓ + ½·(2, 1, 1)/4 = (5/12, 7/24, 7/24)
    assert sat.label_hist.tolist() == pytest.approx([5 / 12, 7 / 24, 7 / 24], abs=1e-12)
    # τ1(c) = p̃1(c)/p̃1(0) · τ1 = 53/120 · (1, 143/182, 155/182) = (0.44167, 0.34702, 0.37614)
    thresholds = [53 / 120, 53 / 120 * 143 / 182, 53 / 120 * 155 / 182]
    assert sat.class_thresholds().tolist() == pytest.approx(thresholds, abs=1e-12)
    # clip 1: 0.4 < τ1(0) = 0.44167 fails; 0.8 ≥ τ1(0), 0.6 ≥ τ1(2), 0.4 ≥ τ1(1) pass
    pseudo, mask = sat.mask(probs_of(BATCH_1))
    assert pseudo.tolist() == [0, 0, 2, 1] and mask.tolist() == [1.0, 0.0, 1.0, 1.0]

    sat.update(probs_of(BATCH_2))
    # τ2 = ½·53/120 + ½·mean(.85, .5, .36, .6) = 53/240 + ½·0.5775               = 1223/2400
    assert float(sat.tau) == pytest.approx(1223 / 2400, abs=1e-12)
    # p̃2 = ½·p̃1 + ½·(1.5, 1.76, 0.74)/4 = (1810, 1771, 1219)/4800
    p2 = [1810 / 4800, 1771 / 4800, 1219 / 4800]
    assert sat.p_model.tolist() == pytest.approx(p2, abs=1e-12)
    # h̃2 = ½·h̃1 + ½·(2, 2, 0)/4 = (11/24, 19/48, 7/48)
    assert sat.label_hist.tolist() == pytest.approx([11 / 24, 19 / 48, 7 / 48], abs=1e-12)
    # τ2(c) = τ2 · (1, 1771/1810, 1219/1810) = (0.50958, 0.49860, 0.34319)
    thresholds = [1223 / 2400, 1223 / 2400 * 1771 / 1810, 1223 / 2400 * 1219 / 1810]
    assert sat.class_thresholds().tolist() == pytest.approx(thresholds, abs=1e-12)
    # 0.85 ≥ τ2(1), 0.5 < τ2(0) = 0.50958, 0.36 < τ2(1) = 0.49860, 0.6 ≥ τ2(0)
    pseudo, mask = sat.mask(probs_of(BATCH_2))
    assert pseudo.tolist() == [1, 0, 1, 0] and mask.tolist() == [1.0, 0.0, 0.0, 1.0]


def test_self_adaptive_threshold_default_momentum_and_state_round_trip():
    sat = SelfAdaptiveThreshold(3)  # λ = 0.999
    sat.update(probs_of(BATCH_1))
    assert float(sat.tau) == pytest.approx(0.999 / 3 + 0.001 * 0.55, abs=1e-12)  # 0.33355
    # right after the start τ(c) ≤ τ ≈ 1/C: every clip whose max reaches ~1/3 counts
    assert sat.mask(probs_of(BATCH_1))[1].tolist() == [1.0, 1.0, 1.0, 1.0]
    sat.update(probs_of(BATCH_2))
    state = json.loads(json.dumps(sat.state_dict()))  # checkpoints keep it as JSON
    again = SelfAdaptiveThreshold(3)
    again.load_state_dict(state)
    for name in ("tau", "p_model", "label_hist"):
        assert torch.equal(getattr(again, name), getattr(sat, name)), name
    with pytest.raises(ValueError, match="3 classes"):
        SelfAdaptiveThreshold(4).load_state_dict(state)


def test_self_adaptive_threshold_sums_over_processes_and_skips_non_finite_batches():
    # two processes holding two clips each update like one process holding all four
    halves = [probs_of(BATCH_1[:2]), probs_of(BATCH_1[2:])]
    seen: list[torch.Tensor] = []

    def reduce_sum(stats: torch.Tensor) -> torch.Tensor:  # what the other process contributes
        seen.append(stats)
        other = halves[1]
        p_max, pred = other.max(dim=-1)
        return stats + torch.cat([torch.tensor([2.0], dtype=torch.float64), p_max.sum().view(1), other.sum(0),
                                  torch.bincount(pred, minlength=3).double()])  # fmt: skip

    two = SelfAdaptiveThreshold(3, momentum=0.5, reduce_sum=reduce_sum)
    one = SelfAdaptiveThreshold(3, momentum=0.5)
    assert two.update(halves[0]) and one.update(probs_of(BATCH_1)) and len(seen) == 1
    for name in ("tau", "p_model", "label_hist"):
        torch.testing.assert_close(getattr(two, name), getattr(one, name), rtol=0, atol=1e-15)
    before = one.state_dict()
    assert not one.update(torch.tensor([[float("nan"), 0.5, 0.5]]))
    assert one.state_dict() == before


def test_fairness_loss_by_hand():
    # strong-view softmaxes (logits = log p); clip 1 is masked out; kept clips predict classes 0, 2, 1
    probs = torch.tensor([[0.6, 0.3, 0.1], [0.5, 0.25, 0.25], [0.2, 0.2, 0.6], [0.2, 0.7, 0.1]])
    mask = torch.tensor([1.0, 0.0, 1.0, 1.0])
    p_model = torch.tensor([0.4, 0.35, 0.25], dtype=torch.float64)
    label_hist = torch.tensor([0.5, 0.25, 0.25], dtype=torch.float64)
    # h̄ = (1, 1, 1)/3, p̄ = (1.0, 1.2, 0.8)/3  ->  SumNorm(p̄/h̄) = (1.0, 1.2, 0.8)/3
    # SumNorm(p̃/h̃) = (0.8, 1.4, 1.0)/3.2 = (0.25, 0.4375, 0.3125)
    # L_f = −H(target, q) = Σ target log q
    expected = 0.25 * math.log(1 / 3) + 0.4375 * math.log(0.4) + 0.3125 * math.log(0.8 / 3)  # -1.08858
    logits = probs.log().requires_grad_(True)
    loss = fairness_loss(logits, mask, p_model, label_hist)
    assert loss.item() == pytest.approx(expected, abs=1e-6)
    loss.backward()
    assert logits.grad[1].abs().sum() == 0 and logits.grad[[0, 2, 3]].abs().sum() > 0  # kept clips only
    assert fairness_loss(logits, torch.zeros(4), p_model, label_hist).item() == 0.0  # nothing kept
    # a class no kept clip predicts drops out of q (1/h = 0) instead of dividing by zero
    only_0 = fairness_loss(logits, torch.tensor([1.0, 1.0, 0.0, 0.0]), p_model, label_hist)
    assert torch.isfinite(only_0)
