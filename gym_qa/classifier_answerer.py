"""Answer element-name questions with a video classifier's class probabilities ("classifier4").

An encoder trained to classify elements (the SeFAR encoder's own head) can answer a multiple-choice
question whose options are element names without any language model: restricted to the classes the
options name, it picks the option holding the most probability mass. This is the reference an MLLM
built on the same encoder is measured against (the paper's point: the LLM should not lose what the
encoder knows)::

    class probabilities p [K] of the question's clip       (softmax of the classifier, K classes)
    option o ──names──► classes C_o (one, or several when classes share a name: Gym99 has 10 such names)
    mass_o = Σ_{c ∈ C_o} p_c ;  option_scores_o = −log(mass_o / Σ_o' mass_o')     (NLL, lower is better)

The option scores are a Gym-QA likelihood-mode prediction (``option_scores``), so
:func:`gym_qa.scoring.score` reports them as mode ``nll_sum`` (the argmin is the argmax of the restricted
probabilities; an exact tie chooses nothing). Only questions whose every option is an element name of the
classifier are answerable; the others (event, set, yes/no, count questions) are left out and counted.
No torch here: the probabilities come from the caller (``scripts/eval_mllm_gymqa.py --mode classifier4``).
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Mapping, Sequence

from gym_qa.questions import Question
from gym_qa.scoring import Prediction

# Floor of an option's probability mass before the log: a softmax can underflow to 0 in float32.
MIN_MASS = 1e-30


def name_index(class_names: Sequence[str]) -> dict[str, tuple[int, ...]]:
    """Element name → class labels carrying it (several when classes share a name)."""
    index: dict[str, list[int]] = defaultdict(list)
    for label, name in enumerate(class_names):
        index[name].append(label)
    return {name: tuple(labels) for name, labels in index.items()}


def option_classes(question: Question, names: Mapping[str, tuple[int, ...]]) -> list[tuple[int, ...]] | None:
    """The classes of each option, or None when some option is not an element name."""
    classes = [names.get(option) for option in question.options]
    return None if any(c is None for c in classes) else classes


def answerable_questions(questions: Sequence[Question], class_names: Sequence[str]) -> list[Question]:
    """The questions whose every option is one of ``class_names``."""
    names = name_index(class_names)
    return [q for q in questions if option_classes(q, names) is not None]


def classifier_prediction(
    question: Question, probabilities: Sequence[float], names: Mapping[str, tuple[int, ...]]
) -> Prediction:
    """The likelihood-mode prediction of one answerable question from its clip's class probabilities."""
    classes = option_classes(question, names)
    if classes is None:
        raise ValueError(f"question {question.question_id}: not every option is an element name")
    num_classes = len(probabilities)
    if any(c >= num_classes for labels in classes for c in labels):
        raise ValueError(
            f"question {question.question_id}: an option's class is outside the {num_classes} probabilities"
        )
    mass = [max(MIN_MASS, float(sum(probabilities[c] for c in labels))) for labels in classes]
    total = sum(mass)
    return Prediction(question.question_id, option_scores=tuple(-math.log(m / total) for m in mass))


def classifier_predictions(
    questions: Sequence[Question],
    clip_probabilities: Mapping[str, Sequence[float]],
    class_names: Sequence[str],
) -> tuple[list[Prediction], list[Question]]:
    """Predictions for the answerable questions whose clip (``question.video``) has probabilities, and
    the answerable questions (score against these: a clip without probabilities counts as missing)."""
    names = name_index(class_names)
    answerable = [q for q in questions if option_classes(q, names) is not None]
    predictions = [
        classifier_prediction(q, clip_probabilities[q.video], names)
        for q in answerable
        if q.video in clip_probabilities
    ]
    return predictions, answerable
