"""Temporal detection mAP (gym_qa/detection_eval.py) on cases worked out by hand in the comments."""

from __future__ import annotations

import numpy as np
import pytest

from gym_qa.detection_eval import (
    DEFAULT_THRESHOLDS,
    Detection,
    evaluate_detection,
    interpolated_average_precision,
    match_predictions,
    temporal_iou,
)


def gt(video: str, start: float, end: float, label: int = 0) -> Detection:
    return Detection(video, start, end, label)


def pred(video: str, start: float, end: float, score: float, label: int = 0) -> Detection:
    return Detection(video, start, end, label, score)


def test_default_thresholds_are_haan_s():
    assert DEFAULT_THRESHOLDS == (0.1, 0.15, 0.2, 0.25, 0.3, 0.35, 0.4, 0.45, 0.5)


def test_temporal_iou_by_hand():
    segments = np.array([[5, 15], [10, 20], [0, 10], [2, 4], [30, 40]])
    # overlap 5 / union 15; touching at 10 -> 0; identical -> 1; inside: 2 / 10; disjoint -> 0
    np.testing.assert_allclose(temporal_iou((0, 10), segments), [1 / 3, 0.0, 1.0, 0.2, 0.0])
    # a zero-length segment has no overlap with anything, and the empty union with itself counts as 0
    np.testing.assert_array_equal(temporal_iou((3, 3), [[3, 3], [0, 10]]), [0.0, 0.0])


def test_interpolated_ap_by_hand():
    # ranks TP, FP, TP with 2 GT: precision 1, 1/2, 2/3 at recall 1/2, 1/2, 1; the interpolated precision
    # at recall 1/2 is 1, at recall 1 it is 2/3 -> AP = 0.5 * 1 + 0.5 * 2/3
    assert interpolated_average_precision([1, 0.5, 2 / 3], [0.5, 0.5, 1]) == pytest.approx(5 / 6)
    # FP first, then TP of 1 GT: precision 0, 1/2 at recall 0, 1; the step to recall 1 has precision 1/2
    assert interpolated_average_precision([0, 0.5], [0, 1]) == pytest.approx(0.5)
    # recall never reaches 1: only the reached part counts
    assert interpolated_average_precision([1.0], [0.25]) == pytest.approx(0.25)


def test_duplicate_is_a_false_positive_and_threshold_matters():
    truth = [gt("v", 0, 10), gt("v", 20, 30)]
    preds = [pred("v", 0, 10, 0.9), pred("v", 0, 10, 0.8), pred("v", 22, 30, 0.7)]  # IoUs 1, 1 (dup), 0.8
    tp = match_predictions(truth, preds, (0.5, 0.9))
    np.testing.assert_array_equal(tp, [[True, False, True], [True, False, False]])
    report = evaluate_detection(truth, preds, thresholds=(0.5, 0.9))
    # θ 0.5: TP FP TP -> 5/6 (see test_interpolated_ap_by_hand); θ 0.9: TP FP FP -> recall 1/2 at p 1 -> 1/2
    assert report.ap_per_class[0] == pytest.approx([5 / 6, 0.5])
    assert report.average_map == pytest.approx((5 / 6 + 0.5) / 2)


def test_duplicate_takes_the_next_unmatched_ground_truth_above_threshold():
    truth = [gt("v", 0, 10), gt("v", 5, 15)]  # the second has tIoU 1/3 with [0, 10]
    preds = [pred("v", 0, 10, 0.9), pred("v", 0, 10, 0.8)]
    # θ 0.3: the duplicate skips the matched GT and takes [5, 15] (1/3 >= 0.3); θ 0.5: it cannot
    np.testing.assert_array_equal(match_predictions(truth, preds, (0.3, 0.5)), [[True, True], [True, False]])


def test_predictions_match_only_ground_truth_of_their_own_video():
    truth = [gt("a", 0, 10)]
    preds = [pred("b", 0, 10, 0.9), pred("a", 0, 10, 0.5)]
    # ranked: FP (other video), TP -> precision 0, 1/2 at recall 0, 1 -> AP 1/2
    report = evaluate_detection(truth, preds, thresholds=(0.5,))
    assert report.ap_per_class[0] == pytest.approx([0.5])


def test_ties_keep_input_order():
    truth = [gt("v", 0, 10)]
    first_wrong = [pred("v", 50, 60, 0.5), pred("v", 0, 10, 0.5)]
    first_right = list(reversed(first_wrong))
    assert evaluate_detection(truth, first_wrong, (0.5,)).average_map == pytest.approx(0.5)
    assert evaluate_detection(truth, first_right, (0.5,)).average_map == pytest.approx(1.0)


def test_mean_over_classes_with_ground_truth_only():
    truth = [gt("v", 0, 10, label=0), gt("v", 20, 30, label=1)]
    preds = [
        pred("v", 0, 10, 0.9, label=0),  # class 0: AP 1
        pred("v", 40, 50, 0.9, label=1),  # class 1: FP then TP -> AP 1/2
        pred("v", 20, 30, 0.8, label=1),
        pred("v", 0, 10, 0.9, label=7),  # class 7 has no ground truth: ignored, reported
        pred("w", 0, 10, 0.9, label=7),
    ]
    report = evaluate_detection(truth, preds, thresholds=(0.5, 0.7))
    assert report.map_per_threshold == pytest.approx([0.75, 0.75])
    assert report.classes_without_ground_truth == [7]
    assert report.predictions_ignored == 2
    assert report.num_ground_truth == {0: 1, 1: 1}
    assert report.to_json()["classes_evaluated"] == 2


def test_class_without_predictions_scores_zero():
    report = evaluate_detection([gt("v", 0, 10, 0), gt("v", 0, 10, 1)], [pred("v", 0, 10, 1.0, 0)], (0.5,))
    assert report.ap_per_class == {0: [1.0], 1: [0.0]}
    assert report.average_map == pytest.approx(0.5)


def test_bad_input_is_refused():
    with pytest.raises(ValueError, match="ends before it starts"):
        evaluate_detection([gt("v", 5, 1)], [])
    with pytest.raises(ValueError, match="no ground-truth"):
        evaluate_detection([], [pred("v", 0, 1, 1.0)])
    with pytest.raises(ValueError, match="thresholds"):
        evaluate_detection([gt("v", 0, 1)], [], thresholds=(0.0,))
