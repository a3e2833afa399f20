"""HAAN's pieces (sefar_encoder/detection/{kmeans,haan,inference}.py) on values worked out by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from sefar_encoder.detection.haan import (
    HAAN,
    HAANConfig,
    aggregate_scores,
    class_representations,
    coarse_representations,
    concept_loss,
    haan_losses,
    mil_loss,
    visual_concepts,
)
from sefar_encoder.detection.inference import (
    InferenceConfig,
    clip_spans,
    detect,
    routine_class_scores,
    runs_above,
)
from sefar_encoder.detection.kmeans import kmeans


# ----------------------------------------------------------------------------------------- k-means
def test_kmeans_finds_two_blobs_and_is_reproducible():
    g = torch.Generator().manual_seed(0)
    a = torch.randn(50, 3, generator=g) * 0.1
    b = torch.randn(50, 3, generator=g) * 0.1 + 5.0
    points = torch.cat([a, b])
    centres, labels = kmeans(points, 2, torch.Generator().manual_seed(1))
    assert len(set(labels[:50].tolist())) == 1 and len(set(labels[50:].tolist())) == 1
    assert labels[0] != labels[50]
    torch.testing.assert_close(centres[labels[0]], a.mean(0))
    torch.testing.assert_close(centres[labels[50]], b.mean(0))
    again = kmeans(points, 2, torch.Generator().manual_seed(1))
    assert torch.equal(again[1], labels)


def test_kmeans_gives_every_point_its_own_cluster_when_k_equals_n():
    points = torch.tensor([[0.0], [1.0], [5.0], [9.0]])
    _, labels = kmeans(points, 4, torch.Generator().manual_seed(0))
    assert sorted(labels.tolist()) == [0, 1, 2, 3]
    with pytest.raises(ValueError, match="at least k=5"):
        kmeans(points, 5, torch.Generator())


# ----------------------------------------------------------------------------------------- losses
def test_aggregate_scores_and_mil_by_hand():
    logits = torch.tensor([[[1.0, 0.0], [2.0, 0.0], [3.0, 0.0], [6.0, 0.0]]])  # [1, 4, 2]
    full = torch.ones(1, 4, dtype=torch.bool)
    # class 0: mean 3, clips >= 3 are 3 and 6 -> 4.5; class 1: all equal the mean -> 0
    torch.testing.assert_close(aggregate_scores(logits, full), torch.tensor([[4.5, 0.0]]))
    # the padded last clip is ignored: mean 2, clips 2 and 3 -> 2.5
    padded = torch.tensor([[True, True, True, False]])
    torch.testing.assert_close(aggregate_scores(logits, padded), torch.tensor([[2.5, 0.0]]))
    expected = (math.log1p(math.exp(-4.5)) + math.log(2.0)) / 2  # BCE(4.5, 1), BCE(0, 0)
    assert mil_loss(logits, full, torch.tensor([[1.0, 0.0]])).item() == pytest.approx(expected)


def test_concepts_representations_and_losses_by_hand():
    hidden = torch.tensor([[1.0, 0.0], [3.0, 0.0], [0.0, 2.0]])
    concepts, present = visual_concepts(hidden, torch.tensor([0, 0, 2]), 3)
    torch.testing.assert_close(concepts, torch.tensor([[2.0, 0.0], [0.0, 0.0], [0.0, 2.0]]))
    assert present.tolist() == [True, False, True]
    weights = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    closest = class_representations(weights, concepts, present, top_k=1)
    torch.testing.assert_close(closest, torch.tensor([[2.0, 0.0], [0.0, 2.0]]))
    # top 5 of 2 present concepts: both, whatever the weight (the absent zero concept is never picked)
    both = class_representations(weights, concepts, present, top_k=5)
    torch.testing.assert_close(both, torch.tensor([[1.0, 1.0], [1.0, 1.0]]))
    # class 0 aligned (distance 0), class 1 at 45 degrees (1 - 1/sqrt 2); only present classes count
    reps = torch.tensor([[2.0, 0.0], [1.0, 1.0]])
    assert concept_loss(weights, reps, torch.tensor([1.0, 1.0])).item() == pytest.approx((1 - 2**-0.5) / 2)
    assert concept_loss(weights, reps, torch.tensor([1.0, 0.0])).item() == pytest.approx(0.0)
    class_reps = torch.tensor([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]])
    coarse = torch.tensor([0, 0, 1])
    torch.testing.assert_close(
        coarse_representations(class_reps, coarse, 2, "mean"), torch.tensor([[2.0, 3.0], [5.0, 6.0]])
    )
    torch.testing.assert_close(
        coarse_representations(class_reps, coarse, 2, "max"), torch.tensor([[3.0, 4.0], [5.0, 6.0]])
    )


@pytest.mark.parametrize("clustering,hierarchy", [(True, True), (True, False), (False, False)])
def test_haan_losses_train_every_enabled_part(clustering: bool, hierarchy: bool):
    torch.manual_seed(0)
    cfg = HAANConfig(hidden_dim=16, embed_dim=8, num_clusters=4, clustering=clustering, hierarchy=hierarchy)
    model = HAAN(feature_dim=6, coarse_of_class=[0, 0, 1], cfg=cfg)
    features = torch.randn(2, 5, 6)
    mask = torch.tensor([[True] * 5, [True] * 3 + [False] * 2])
    labels = torch.tensor([[1.0, 0.0, 1.0], [0.0, 1.0, 0.0]])
    coarse = torch.tensor([[1.0, 1.0], [1.0, 0.0]])
    clusters = torch.randint(0, 4, (2, 5)) if clustering else None
    losses = haan_losses(model, model(features), mask, labels, coarse, clusters)
    expected = (
        {"mil", "total"}
        | ({"pseudo"} if clustering else set())
        | ({"concept", "coarse"} if hierarchy else set())
    )
    assert set(losses) == expected
    losses["total"].backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
    assert (model.atomic is not None) == clustering and (model.coarse is not None) == hierarchy


def test_hierarchy_needs_clustering_and_eval_is_deterministic():
    with pytest.raises(ValueError, match="needs model.clustering"):
        HAAN(4, [0], HAANConfig(clustering=False, hierarchy=True))
    model = HAAN(4, [0, 1], HAANConfig(hidden_dim=8, embed_dim=8, num_clusters=2, dropout=0.9)).eval()
    x = torch.randn(1, 3, 4)
    assert torch.equal(model(x).logits, model(x).logits)  # dropout off in eval mode
    assert not torch.equal(model.train()(x).logits, model(x).logits)


# ----------------------------------------------------------------------------------------- inference
def test_routine_scores_runs_and_spans_by_hand():
    logits = np.array([[0.0, -1], [3, -1], [4, -1], [0, -1], [2, -1], [0, -1]])
    # top ceil(6 / 2) = 3 of class 0: 4, 3, 2 -> 3; class 1: -1
    np.testing.assert_allclose(routine_class_scores(logits), [3.0, -1.0])
    assert runs_above(np.array([0, 3, 4, 0, 2, 0]), 1.9) == [(1, 3), (4, 5)]
    # windows of 16 frames every 8 frames at 8 fps: clip i stands for frames [4 + 8 i, 12 + 8 i)
    spans = clip_spans(np.arange(6) * 8, window=16, stride=8, fps=8.0, num_frames=50)
    np.testing.assert_allclose(spans[:2], [[0.0, 1.5], [1.5, 2.5]])  # the first clip reaches back to 0
    np.testing.assert_allclose(spans[-1], [5.5, 50 / 8])  # clipped to the routine's end
    found = detect("r", logits, spans, InferenceConfig())
    # class 0: threshold 9/6 + 0.1 (4 - 0) = 1.9 -> clips [1, 3) and [4, 5); scores 4 + 1.5, 2 + 1.5
    assert [(d.label, d.start, d.end, d.score) for d in found] == [(0, 1.5, 3.5, 5.5), (0, 4.5, 5.5, 3.5)]
    # class 1 (routine score -1) is searched only when the bar is lowered
    lowered = detect("r", logits, spans, InferenceConfig(min_class_score=-2.0))
    assert {d.label for d in lowered} == {0}  # constant logits: nothing above mean + 0
