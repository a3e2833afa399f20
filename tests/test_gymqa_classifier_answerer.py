"""classifier4: a classifier's probabilities restricted to a question's element options, scored by the
Gym-QA evaluator (golden values by hand)."""

from __future__ import annotations

import math

import pytest

from gym_qa.classifier_answerer import (
    answerable_questions,
    classifier_prediction,
    classifier_predictions,
    name_index,
)
from gym_qa.questions import Question
from gym_qa.scoring import score

# Classes 1 and 4 share a name (as Gym99's "switch leap with 0.5 turn" on FX and BB).
NAMES = [
    "salto forward tucked",
    "salto backward tucked",
    "split jump",
    "giant circle",
    "salto backward tucked",
]


def question(qid: str, video: str, options: list[str], answer: int, answer_type: str = "what") -> Question:
    stem = "What gymnastics move is this athlete performing?"
    return Question.from_parts(stem, options, answer, answer_type, qid, "test", video, 0)


def test_option_scores_are_the_restricted_distribution():
    q = question(
        "0000000", "clip", ["split jump", "salto backward tucked", "salto forward tucked", "giant circle"], 1
    )
    probs = [0.1, 0.2, 0.05, 0.45, 0.2]  # the answer's mass is 0.2 + 0.2 (two classes carry its name)
    pred = classifier_prediction(q, probs, name_index(NAMES))
    mass = [0.05, 0.4, 0.1, 0.45]
    assert pred.option_scores == pytest.approx([-math.log(m / sum(mass)) for m in mass])
    assert pred.option_token_counts is None and pred.text is None
    assert min(range(4), key=pred.option_scores.__getitem__) == 3  # giant circle: argmax of the logits
    # a zero probability stays finite (the evaluator rejects infinities)
    assert all(
        math.isfinite(s) for s in classifier_prediction(q, [0, 0, 0, 1, 0], name_index(NAMES)).option_scores
    )


def test_only_element_questions_are_answered_and_missing_clips_count_wrong():
    what = question(
        "0000000", "a", ["salto forward tucked", "split jump", "giant circle", "salto backward tucked"], 0
    )
    other = question("0000001", "b", ["vault", "floor exercise", "balance beam", "uneven bars"], 2, "event")
    no_probs = question(
        "0000002", "c", ["split jump", "giant circle", "salto forward tucked", "salto backward tucked"], 2
    )
    assert answerable_questions([what, other, no_probs], NAMES) == [what, no_probs]
    probs = {"a": [0.7, 0.1, 0.1, 0.05, 0.05], "b": [0.2] * 5}
    predictions, answerable = classifier_predictions([what, other, no_probs], probs, NAMES)
    assert [p.question_id for p in predictions] == ["0000000"] and answerable == [what, no_probs]
    report = score(answerable, predictions)
    overall = report["modes"]["nll_sum"]["overall"]
    assert (overall["correct"], overall["total"]) == (1, 2) and report["missing"] == 1


def test_probabilities_too_short_for_the_options_fail():
    q = question(
        "0000000", "a", ["salto forward tucked", "split jump", "giant circle", "salto backward tucked"], 0
    )
    with pytest.raises(ValueError, match="outside the 3 probabilities"):
        classifier_prediction(q, [0.5, 0.3, 0.2], name_index(NAMES))
