"""The summary of a Gym-QA generation run: per answer type counts, letter balance, distractor shares.

:func:`generation_summary` is what :meth:`gym_qa.question_generator.QuestionGenerator.generate` returns
next to its questions (``make_gymqa.py`` prints it and, with ``--summary-json``, writes it);
:func:`predicted_same_event_share` is the closed form the measured share of same-event ``what``
distractors is checked against under ``uniform`` sampling.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from gym_qa.clips import Clip
from gym_qa.hierarchy import Hierarchy
from gym_qa.questions import OPTION_LETTERS, Question
from gym_qa.statistics import chi_square_uniform

if TYPE_CHECKING:  # the generator imports this module
    from gym_qa.question_generator import GeneratorConfig


@dataclass
class TypeStats:
    """What the generator counts per answer type while it writes questions."""

    questions: int = 0
    letters: Counter = field(default_factory=Counter)
    option_counts: Counter = field(default_factory=Counter)
    skipped_clips: int = 0


def predicted_same_event_share(hierarchy: Hierarchy, labels: Sequence[int]) -> float:
    """Expected share of same-event distractors under ``uniform`` sampling, in closed form.

    Each distractor slot is marginally uniform over the distinct names other than the answer's, so
    for a question about class c the expected share is E_c / (U − 1): U distinct names, E_c of them
    (other than c's name) carried by at least one class of c's event. Averaged over the questions.
    """
    groups = hierarchy.name_groups
    name_events = {name: {hierarchy.event_of(label) for label in ls} for name, ls in groups.items()}
    per_label_share: dict[int, float] = {}
    for label in set(labels):
        own, event = hierarchy.name_of(label), hierarchy.event_of(label)
        same = sum(1 for name, events in name_events.items() if name != own and event in events)
        per_label_share[label] = same / (len(groups) - 1)
    return sum(per_label_share[label] for label in labels) / len(labels) if labels else 0.0


def generation_summary(
    hierarchy: Hierarchy,
    config: GeneratorConfig,
    clips: Sequence[Clip],
    questions: list[Question],
    labels: list[int],
    stats: dict[str, TypeStats],
    name_sets: dict[str, set[int]],
    name_events: dict[str, set[str]],
) -> dict[str, Any]:
    """The summary :meth:`~gym_qa.question_generator.QuestionGenerator.generate` returns with its
    questions: per answer type the counts of questions, skipped clips, option counts and answer letters
    (with a χ² test on the letters); for ``what`` questions the distractors' set and event shares; for
    ``attribute`` questions which classes have attributes. ``labels`` is the class of each question,
    ``name_sets``/``name_events`` the sets and events that carry each distinct element name."""
    h = hierarchy
    by_type: dict[str, Any] = {}
    for answer_type, s in stats.items():
        entry: dict[str, Any] = {
            "questions": s.questions,
            "skipped_clips": s.skipped_clips,
            "options": {str(k): v for k, v in sorted(s.option_counts.items())},
            "letters": dict(sorted(s.letters.items())),
        }
        if len(s.option_counts) == 1:  # a χ² on letters is only meaningful for one option count
            n = next(iter(s.option_counts))
            chi2, p = chi_square_uniform([s.letters.get(OPTION_LETTERS[i], 0) for i in range(n)])
            entry["letters_chi2"], entry["letters_p_value"] = round(chi2, 4), p
        by_type[answer_type] = entry
    duplicates = sum(1 for q in questions if len(set(q.options)) != len(q.options))
    summary: dict[str, Any] = {
        "questions": len(questions),
        "clips": len(clips),
        "seed": config.seed,
        "distractors": config.distractors,
        "by_type": by_type,
        "questions_with_duplicate_options": duplicates,
    }
    if "what" in stats:
        summary["what_distractors"] = _distractor_stats(h, questions, labels, name_sets, name_events)
    if "attribute" in stats:
        classes = {clip.label for clip in clips}
        with_qtree = {label for label in classes if h.attributes_of(label)}
        attribute_questions = [q for q in questions if q.answer_type == "attribute"]
        summary["attribute_coverage"] = {
            "classes_in_list": len(classes),
            "classes_with_attributes": len(with_qtree),
            "classes_without_attributes": sorted(classes - with_qtree),
            "yes_share": (
                sum(q.answer == "A" for q in attribute_questions) / len(attribute_questions)
                if attribute_questions
                else None
            ),
        }
    return summary


def _distractor_stats(
    hierarchy: Hierarchy,
    questions: list[Question],
    labels: list[int],
    name_sets: dict[str, set[int]],
    name_events: dict[str, set[str]],
) -> dict[str, Any]:
    h = hierarchy
    same_set = same_event = total = 0
    what_labels = []
    for q, label in zip(questions, labels, strict=True):
        if q.answer_type != "what":
            continue
        what_labels.append(label)
        for i, option in enumerate(q.options):
            if i == q.answer_index:
                continue
            total += 1
            same_set += h.set_of(label) in name_sets[option]
            same_event += h.event_of(label) in name_events[option]
    return {
        "distractors": total,
        "same_set_share": same_set / total if total else None,
        "same_event_share": same_event / total if total else None,
        "predicted_same_event_share_uniform": predicted_same_event_share(h, what_labels),
    }
