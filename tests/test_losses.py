"""Semi-supervised losses, the sine ramp and threshold masks, against hand computations."""

import math

import pytest
import torch
import torch.nn.functional as F

from sefar_encoder.losses import (
    LossConfig,
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
