"""Out-of-domain scores, threshold and AUROC (sefar_encoder/out_of_domain.py) on values worked out by hand;
the calibration file; the predictor's K-sample scores against a direct computation."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from sefar_encoder.model.presets import build_encoder
from sefar_encoder.out_of_domain import (
    CALIBRATION_FILE,
    FEATURE_FILE,
    SCORES,
    FeatureGaussian,
    OutOfDomainCalibration,
    Uncertainty,
    auroc,
    calibrate,
    dropout_masks,
    threshold_keeping,
    uncertainty_scores,
)
from sefar_encoder.prediction import Predictor
from sefar_encoder.regulation import k_sample_stats
from sefar_encoder.runtime.config import ConfigError

LN3 = math.log(3.0)


def test_scores_on_fixed_logits():
    # clip 0: logits (0, 0) -> p = (1/2, 1/2); clip 1: (ln 3, 0) -> p = (3/4, 1/4)
    logits = torch.tensor([[[0.0, 0.0]], [[LN3, 0.0]]])  # [B=2, n_test=1, C=2]
    # K = 2 dropout samples: clip 0 sees (ln 3, 0) then (0, 0); clip 1 sees (ln 3, 0) twice
    samples = torch.tensor([[[[LN3, 0.0]], [[LN3, 0.0]]], [[[0.0, 0.0]], [[LN3, 0.0]]]])  # [K, B, 1, C]
    s = uncertainty_scores(logits, samples)
    assert set(s) == set(SCORES) - {"feature_distance"}  # no Gaussian given
    assert s["max_softmax"].tolist() == pytest.approx([0.5, 0.25])  # 1 - max p
    assert s["energy"].tolist() == pytest.approx([-math.log(2), -math.log(4)])  # -ln(e^0 + e^0), -ln(3 + 1)
    # clip 0: p_k[ŷ=0] = (3/4, 1/2), unbiased std |3/4 - 1/2| / sqrt(2); clip 1: no spread
    assert s["dropout_std"].tolist() == pytest.approx([0.25 / math.sqrt(2), 0.0], abs=1e-7)
    # 1 - w, w = 2σ(e^p̄ - e) · 2(σ(1/(20 s)) - 1/2): clip 0 p̄ = 0.625, s = 0.176777:
    # 2σ(1.868246 - 2.718282) = 0.598864, 2(σ(0.282843) - 0.5) = 0.140486 -> w = 0.084132
    # clip 1 p̄ = 0.75, s = 0: 2σ(2.117000 - 2.718282) = 0.708105, second factor 1 -> w = 0.708105
    assert s["regulation_weight"].tolist() == pytest.approx([1 - 0.084132, 1 - 0.708105], abs=1e-5)


def test_scores_average_over_test_views():
    # one clip, two views with mirrored logits: the averaged softmax is (1/2, 1/2), the energy -ln 4 in both
    logits = torch.tensor([[[LN3, 0.0], [0.0, LN3]]])  # [1, 2, 2]
    s = uncertainty_scores(logits, logits[None].repeat(3, 1, 1, 1))
    assert s["max_softmax"].item() == pytest.approx(0.5)
    assert s["energy"].item() == pytest.approx(-math.log(4))
    assert s["dropout_std"].item() == pytest.approx(0.0)  # identical samples
    with pytest.raises(ValueError, match="sample logits"):
        uncertainty_scores(logits, logits)


def test_dropout_masks_are_fixed_inverted_dropout():
    masks = dropout_masks(64, 0.5, 4, seed=3)
    assert masks.shape == (4, 64) and set(masks.unique().tolist()) == {
        0.0,
        2.0,
    }  # kept entries scaled 1/(1-p)
    assert torch.equal(masks, dropout_masks(64, 0.5, 4, seed=3))
    assert not torch.equal(masks, dropout_masks(64, 0.5, 4, seed=4))
    assert 0.3 < (masks > 0).float().mean() < 0.7
    assert torch.equal(dropout_masks(8, 0.0, 2), torch.ones(2, 8))
    with pytest.raises(ValueError):
        dropout_masks(8, 1.0, 2)


def test_feature_gaussian_by_hand(tmp_path):
    # four points: mean (0, 0), biased covariance diag(0.5, 2); shrinkage 0.5 toward mean(diag) = 1.25:
    # Σ = diag(0.5·0.5 + 0.625, 0.5·2 + 0.625) = diag(0.875, 1.625)
    points = torch.tensor([[1.0, 0.0], [-1.0, 0.0], [0.0, 2.0], [0.0, -2.0]])
    g = FeatureGaussian.fit(points, shrinkage=0.5)
    assert g.num_clips == 4 and g.mean.tolist() == [0.0, 0.0]
    assert torch.allclose(g.precision, torch.diag(torch.tensor([1 / 0.875, 1 / 1.625])))
    # (1, 1): sqrt(1/0.875 + 1/1.625) = sqrt(1.142857 + 0.615385) = sqrt(1.758242) = 1.325987
    assert g.distance(torch.tensor([[1.0, 1.0], [0.0, 0.0]])).tolist() == pytest.approx(
        [1.325987, 0.0], abs=1e-5
    )
    full = FeatureGaussian.fit(points, shrinkage=1.0)  # Σ = 1.25 I: sqrt(2 / 1.25)
    assert full.distance(torch.tensor([1.0, 1.0])).item() == pytest.approx(math.sqrt(1.6), abs=1e-6)
    # in uncertainty_scores: averaged over the test views, (1.325987 + 0) / 2
    logits = torch.zeros(1, 2, 3)
    s = uncertainty_scores(
        logits, logits[None], view_features=torch.tensor([[[1.0, 1.0], [0.0, 0.0]]]), gaussian=g
    )
    assert s["feature_distance"].item() == pytest.approx(0.662994, abs=1e-5)
    assert FeatureGaussian.load(tmp_path) is None
    g.save(tmp_path)
    loaded = FeatureGaussian.load(tmp_path)
    assert loaded.num_clips == 4 and torch.equal(loaded.precision, g.precision)
    (tmp_path / FEATURE_FILE).write_bytes(b"garbage")
    with pytest.raises(ConfigError, match=FEATURE_FILE):
        FeatureGaussian.load(tmp_path)
    with pytest.raises(ValueError):
        FeatureGaussian.fit(points[:1])


def test_threshold_keeps_the_asked_fraction():
    values = np.random.default_rng(0).permutation(np.arange(1.0, 21.0))  # 1 .. 20, shuffled
    assert threshold_keeping(values, 0.95) == 19.0  # ceil(0.95 * 20) = 19th smallest: 20 alone is above
    assert threshold_keeping(values, 1.0) == 20.0
    assert threshold_keeping(values, 0.5) == 10.0
    assert threshold_keeping(values, 0.51) == 11.0  # ceil(10.2) = 11
    assert threshold_keeping([1.0, 1.0, 1.0, 5.0], 0.5) == 1.0  # ties: 3 of 4 at or below
    for bad, keep in (([], 0.9), ([1.0, float("nan")], 0.9), ([1.0], 0.0)):
        with pytest.raises(ValueError):
            threshold_keeping(bad, keep)


def test_auroc_by_hand():
    assert auroc([1, 2, 3], [4, 5]) == 1.0
    assert auroc([1, 2, 3], [0]) == 0.0
    assert auroc([1, 2], [2]) == 0.75  # (1 win + 1/2 tie) / 2 pairs
    assert auroc([1, 3], [2, 4]) == 0.75  # pairs (2>1), (2<3), (4>1), (4>3): 3 of 4
    with pytest.raises(ValueError):
        auroc([], [1])


def test_calibration_file_round_trip_and_errors(tmp_path):
    cal = calibrate(
        {"energy": [1.0, 2.0, 3.0, 4.0], "max_softmax": [0.1, 0.2, 0.3, 0.4]},
        keep=0.75,
        score="energy",
        inputs="val.csv",
    )
    assert cal.thresholds == {"energy": 3.0, "max_softmax": 0.3} and cal.num_clips == 4
    assert cal.threshold == 3.0 and cal.with_score("max_softmax").threshold == 0.3
    assert OutOfDomainCalibration.load(tmp_path) is None  # no file: uncalibrated, not an error
    cal.save(tmp_path)
    assert OutOfDomainCalibration.load(tmp_path) == cal
    assert cal.mismatch(1, 1, 10) is None
    assert "test_offsets=1" in cal.mismatch(2, 1, 10)
    (tmp_path / CALIBRATION_FILE).write_text('{"score": "energy",\n "thresholds": {"energy": 1.0,}}')
    with pytest.raises(ConfigError, match=rf"{CALIBRATION_FILE}:2"):
        OutOfDomainCalibration.load(tmp_path)
    (tmp_path / CALIBRATION_FILE).write_text(json.dumps({"score": "vibes", "thresholds": {"vibes": 1.0}}))
    with pytest.raises(ConfigError, match=CALIBRATION_FILE):
        OutOfDomainCalibration.load(tmp_path)
    with pytest.raises(ValueError, match="one value per clip"):
        calibrate({"energy": [1.0, 2.0], "max_softmax": [0.1]})


def test_uncertainty_flag():
    scores = {"energy": -2.0, "max_softmax": 0.4}
    assert Uncertainty(scores, "energy", -3.0).out_of_domain is True
    assert Uncertainty(scores, "energy", -2.0).out_of_domain is False  # at the threshold: kept
    u = Uncertainty(scores, "energy", None, "uncalibrated: no file")
    assert u.out_of_domain is None and u.to_record()["note"] == "uncalibrated: no file"


def test_predictor_scores_match_a_direct_computation(tmp_path):
    torch.manual_seed(0)
    encoder = build_encoder("timesformer_tiny_p16_64", num_classes=5, views=(2, 2, 4)).eval()
    predictor = Predictor(encoder, dropout_samples=6)
    assert predictor.calibration is None and "uncalibrated" in predictor.calibration_status
    video = torch.randn(3, 1, 3, 8, 64, 64)  # [B, n_test, C, S, h, w]
    probs, scores = predictor.forward(video)
    with torch.no_grad():
        out = encoder(video[:, 0])
        masks = dropout_masks(encoder.config.resolved_fusion_dim, encoder.config.head_dropout, 6)
        q = torch.stack([encoder.fusion_head.classifier(out.h * m).softmax(-1) for m in masks])  # [K, B, C]
    stats = k_sample_stats(q)
    assert torch.allclose(probs, out.logits.softmax(-1), atol=1e-6)
    assert torch.allclose(scores["dropout_std"], stats.p_std, atol=1e-6)
    assert torch.allclose(scores["regulation_weight"], 1 - stats.weight, atol=1e-6)
    assert torch.allclose(scores["energy"], -torch.logsumexp(out.logits, -1), atol=1e-5)
    assert (scores["dropout_std"] > 0).all()  # head dropout 0.5: the samples differ
    # a clip's scores do not depend on its batch
    _, alone = predictor.forward(video[1:2])
    assert all(torch.allclose(alone[k][0], scores[k][1], atol=1e-5) for k in scores)
    # with a feature Gaussian: the Mahalanobis distance of the concatenated view features
    gaussian = FeatureGaussian.fit(torch.randn(20, 3 * encoder.config.embed_dim))
    predictor.features = gaussian
    _, scores = predictor.forward(video)
    expected = gaussian.distance(out.view_features.flatten(1))
    assert set(scores) == set(SCORES) and torch.allclose(scores["feature_distance"], expected, rtol=1e-4)
