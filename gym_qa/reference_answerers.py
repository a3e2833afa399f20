"""Reference answerers that never see the video: chance and text-only priors.

They bound how much a question file leaks through its options alone — a model must beat them to show
it uses the clip. Each is a ``predict_fn`` (question → answer text) for :func:`gym_qa.scoring.evaluate`::

    random            uniform letter, seeded per question id (order-independent)
    first             always "A" (position prior; 1/n with balanced letters)
    longest/shortest  the option with the most/fewest characters
    most_frequent     the option seen most often as a *correct answer* of the same answer type in training
                      data (train questions, or train labels through the hierarchy) — the class prior
    stem_prior        the same, per exact question text: for yes/no attribute questions P(yes | question)
    option_frequency  the option that occurs most often *as an option* in the evaluated file itself
                      (transductive): frequent classes are the answer more often, so with uniform
                      distractors they also appear more often — this measures that leak

Ties are broken uniformly at random (seeded per question), so no answerer inherits a letter bias.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Callable, Iterable, Sequence

from gym_qa.answer_types import (
    ATTRIBUTE_STEM,
    EVENT_STEM,
    SET_STEM,
    WHAT_STEM,
    YES_NO_OPTIONS,
    tidy_attribute_question,
)
from gym_qa.hierarchy import Hierarchy
from gym_qa.hierarchy_files import EVENT_NAMES
from gym_qa.questions import OPTION_LETTERS, Question

PredictFn = Callable[[Question], str]
REFERENCE_ANSWERERS: tuple[str, ...] = (
    "random",
    "first",
    "longest",
    "shortest",
    "most_frequent",
    "stem_prior",
    "option_frequency",
)


class ReferenceAnswererError(ValueError):
    """An answerer cannot be built (unknown name, missing training data)."""


def _pick_best(question: Question, values: Sequence[float], seed: int) -> str:
    """Letter of the highest value; ties broken by a seeded draw among the tied option *texts*.

    The draw is seeded by the base question id and made over sorted texts, so a rotated copy of the
    question gets the same option text: a text-only rule must not depend on option positions.
    """
    best = max(values)
    winners = sorted(question.options[i] for i, v in enumerate(values) if v == best)
    rng = random.Random(f"reference:{seed}:{question.base_id}")
    return OPTION_LETTERS[question.options.index(rng.choice(winners))]


def random_answerer(seed: int = 0) -> PredictFn:
    return lambda q: OPTION_LETTERS[random.Random(f"random:{seed}:{q.question_id}").randrange(len(q.options))]


def first_option_answerer() -> PredictFn:
    return lambda q: "A"


def longest_option_answerer(seed: int = 0) -> PredictFn:
    return lambda q: _pick_best(q, [len(o) for o in q.options], seed)


def shortest_option_answerer(seed: int = 0) -> PredictFn:
    return lambda q: _pick_best(q, [-len(o) for o in q.options], seed)


def answer_counts_from_questions(questions: Iterable[Question]) -> Counter:
    """How often each ``(answer_type, stem, text)`` is the correct answer in (training) questions."""
    return Counter((q.answer_type, q.stem, q.answer_text) for q in questions)


def answer_counts_from_labels(hierarchy: Hierarchy, labels: Iterable[int]) -> Counter:
    """``(answer_type, stem, text)`` counts implied by training labels, as if every training clip had its
    what/event/set question and every yes/no attribute question of its element."""
    counts: Counter = Counter()
    for label in labels:
        counts["what", WHAT_STEM, hierarchy.name_of(label)] += 1
        counts["event", EVENT_STEM, EVENT_NAMES[hierarchy.event_of(label)]] += 1
        counts["set", SET_STEM, hierarchy.set_display_name(hierarchy.set_of(label))] += 1
        for attribute in hierarchy.attributes_of(label):
            stem = ATTRIBUTE_STEM.format(question=tidy_attribute_question(attribute.question))
            counts["attribute", stem, YES_NO_OPTIONS[0] if attribute.answer else YES_NO_OPTIONS[1]] += 1
    return counts


def frequency_answerer(counts: Counter, seed: int = 0, by_stem: bool = False) -> PredictFn:
    """Choose the option counted most often as the answer (unseen texts count 0).

    Counts are keyed by answer type (one text can answer two types: "vault" is an event and a set) or,
    with ``by_stem``, by the exact question stem — for yes/no questions the prior P(yes | question).
    """
    marginal: Counter = Counter()
    for (answer_type, stem, text), n in counts.items():
        marginal[stem if by_stem else answer_type, text] += n
    return lambda q: _pick_best(
        q, [marginal.get((q.stem if by_stem else q.answer_type, o), 0) for o in q.options], seed
    )


def option_frequency_counts(questions: Iterable[Question]) -> Counter:
    """How often each text appears as an option (any position) in a question file, keyed like
    :func:`answer_counts_from_questions` so :func:`frequency_answerer` can use it."""
    return Counter((q.answer_type, q.stem, o) for q in questions for o in q.options)


def build_reference_answerer(
    name: str,
    questions: Sequence[Question],
    seed: int = 0,
    train_counts: Counter | None = None,
) -> PredictFn:
    """Build an answerer by name; ``most_frequent``/``stem_prior`` need ``train_counts``
    (see :func:`answer_counts_from_questions` and :func:`answer_counts_from_labels`)."""
    if name == "random":
        return random_answerer(seed)
    if name == "first":
        return first_option_answerer()
    if name == "longest":
        return longest_option_answerer(seed)
    if name == "shortest":
        return shortest_option_answerer(seed)
    if name in ("most_frequent", "stem_prior"):
        if not train_counts:
            raise ReferenceAnswererError(f"{name} needs training questions or training labels")
        return frequency_answerer(train_counts, seed, by_stem=name == "stem_prior")
    if name == "option_frequency":
        return frequency_answerer(option_frequency_counts(questions), seed)
    raise ReferenceAnswererError(
        f"unknown reference answerer {name!r}; choose from {', '.join(REFERENCE_ANSWERERS)}"
    )
