"""Gym-QA question generator: clips with labels + a hierarchy → multiple-choice questions
(docs/DESIGN.md §Question generator).

The answer types and their wording are in :mod:`gym_qa.answer_types`, the per-attribute types
(direction, twists, shape, turns) in :mod:`gym_qa.attribute_questions`; the summary returned with the
questions is built by :mod:`gym_qa.question_summary`.

Design decisions, and why:
- Options are element *names*, and classes sharing a name (Gym99 has 10 such pairs) count as one
  option, so no question ever shows two identical option texts (the official files have ~0.5 %).
- Distractors ``uniform``: drawn uniformly from the distinct names other than the answer's (the
  official behaviour, minus its duplicates). ``hard``: same set first, then same event, then any other,
  uniformly within each tier. A name shared by classes of two sets/events belongs to both.
  ``frequency`` ("prior-matched"): drawn with probability proportional to how often each answer is
  correct among the clips being asked about. Under ``uniform``, a long-tailed class distribution
  leaks: the frequent class among the options is usually the answer (Gym99 val: a video-blind
  class-prior answerer scores ~50 % instead of 25 %). When distractors follow the answers' own
  distribution, P(answer = o | options) is the same for every option o (up to the correction for
  drawing without replacement), so the prior no longer points at the answer.
- Answer letters come from a per-(type, option count) *shuffled balanced cycle*: each block of n
  questions uses every letter once in a random order, so counts differ by at most one and position
  carries no information. Yes/no questions keep the natural "A.yes B.no" order; their letters (and
  the per-question-text yes rate) are balanced by choosing which of the element's questions to ask
  (see ``_attribute``). With ``attributes_per_clip=0`` (every question) they follow the data instead.
- The per-attribute types (direction, twists, shape, turns) are multiple-choice over the attribute's
  values, letters and distractors as for ``count`` (hard: nearest values first). When ``count`` and
  ``twists`` / ``turns`` are asked together, ``count`` leaves that attribute to its own type.
- Every type draws from its own random stream (seeded by ``seed`` and the type name), so switching a
  type on or off does not change the other types' questions — only the ids, which are sequential in
  clip order (clip-major: all questions about one clip are adjacent).
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any

from gym_qa.answer_types import (
    ANSWER_TYPES,
    ATTRIBUTE_STEM,
    COUNT_STEMS,
    EVENT_STEM,
    SET_STEM,
    WHAT_STEM,
    YES_NO_OPTIONS,
    format_count,
    tidy_attribute_question,
)
from gym_qa.attribute_questions import ATTRIBUTE_QUESTIONS, COUNTED_ATTRIBUTE
from gym_qa.clips import Clip
from gym_qa.hierarchy import Hierarchy
from gym_qa.hierarchy_files import EVENT_NAMES, AttributeAnswer
from gym_qa.question_summary import TypeStats, generation_summary
from gym_qa.questions import OPTION_LETTERS, Question, QuestionFormatError, format_question_id, join_options

DISTRACTOR_MODES: tuple[str, ...] = ("uniform", "hard", "frequency")


class GeneratorError(ValueError):
    """The inputs cannot produce the requested questions (unknown type, too few classes…)."""


@dataclass
class GeneratorConfig:
    """Knobs of :class:`QuestionGenerator`."""

    types: tuple[str, ...] = ("what",)  # answer types to generate, in per-clip order
    distractors: str = "uniform"  # "uniform" (official), "hard" (same set, then event) or "frequency"
    num_options: int = 4  # options of multiple-choice types (fewer if fewer distinct answers exist)
    seed: int = 0
    dataset: str = "finegym"  # the records' ``dataset`` field
    attributes_per_clip: int = 1  # yes/no Qtree questions per clip; 0 = every question of the element
    count_attributes: tuple[str, ...] = tuple(COUNT_STEMS)  # numeric attributes asked as "how many"
    start_id: int = 0  # first question id (7 digits)

    def __post_init__(self) -> None:
        unknown = [t for t in self.types if t not in ANSWER_TYPES]
        if unknown or not self.types:
            raise GeneratorError(
                f"unknown answer type(s) {unknown or self.types}; choose from {', '.join(ANSWER_TYPES)}"
            )
        if self.distractors not in DISTRACTOR_MODES:
            raise GeneratorError(
                f"distractors must be one of {', '.join(DISTRACTOR_MODES)}, got {self.distractors!r}"
            )
        if not 2 <= self.num_options <= len(OPTION_LETTERS):
            raise GeneratorError(f"num_options must be in 2..{len(OPTION_LETTERS)}, got {self.num_options}")
        if self.attributes_per_clip < 0:
            raise GeneratorError("attributes_per_clip must be >= 0")


# -------------------------------------------------------------------------------------- helpers
class LetterCycle:
    """Shuffled balanced cycle: every block of ``n`` draws holds each of the ``n`` indices once."""

    def __init__(self, n: int, rng: random.Random) -> None:
        self.n, self.rng, self._bag = n, rng, []

    def next(self) -> int:
        if not self._bag:
            self._bag = list(range(self.n))
            self.rng.shuffle(self._bag)
        return self._bag.pop()


# ------------------------------------------------------------------------------------ generator
class QuestionGenerator:
    """Builds Gym-QA questions for clips of one hierarchy. ``generate`` returns questions + a summary."""

    def __init__(self, hierarchy: Hierarchy, config: GeneratorConfig | None = None) -> None:
        self.hierarchy = hierarchy
        self.config = config or GeneratorConfig()
        h = hierarchy
        self._names = list(h.name_groups)  # distinct names in first-appearance order
        self._name_sets = {name: {h.set_of(label) for label in ls} for name, ls in h.name_groups.items()}
        self._name_events = {name: {h.event_of(label) for label in ls} for name, ls in h.name_groups.items()}
        self._set_names = {s: h.set_display_name(s) for s in h.used_sets}
        if len(set(self._set_names.values())) != len(self._set_names):
            raise GeneratorError("two sets render to the same option text; set names must be distinct")
        self._candidates: dict[int, list[list[str]]] = {}  # label -> distractor tiers (cache)
        self._answer_counts: dict[str, Counter] = {}  # answer type -> answer-text counts ("frequency" mode)
        self._values: dict[str, list[float]] = {}  # numeric attribute (or "type:<t>") -> values (cache)

    # ----------------------------------------------------------------------------- distractors
    def _what_tiers(self, label: int) -> list[list[str]]:
        if label not in self._candidates:
            own = self.hierarchy.name_of(label)
            set_id, event = self.hierarchy.set_of(label), self.hierarchy.event_of(label)
            others = [n for n in self._names if n != own]
            if self.config.distractors != "hard":
                tiers = [others]
            else:
                same_set = [n for n in others if set_id in self._name_sets[n]]
                same_event = [
                    n for n in others if event in self._name_events[n] and set_id not in self._name_sets[n]
                ]
                rest = [n for n in others if event not in self._name_events[n]]
                tiers = [same_set, same_event, rest]
            self._candidates[label] = tiers
        return self._candidates[label]

    @staticmethod
    def _draw(
        tiers: list[list[str]], k: int, rng: random.Random, weights: Counter | None = None
    ) -> list[str]:
        """``k`` distinct items, exhausting earlier tiers first.

        Uniform within a tier, or, with ``weights``, drawn one at a time with probability proportional
        to the weight among the items left (weight-0 items only once the weighted ones run out).
        """
        out: list[str] = []
        for tier in tiers:
            need = k - len(out)
            if need <= 0:
                break
            if weights is None:
                out += rng.sample(tier, min(need, len(tier)))
                continue
            left = [item for item in tier if weights.get(item, 0) > 0]
            while need > 0 and left:
                pick = rng.choices(left, weights=[weights[item] for item in left])[0]
                left.remove(pick)
                out.append(pick)
                need -= 1
            unweighted = [item for item in tier if weights.get(item, 0) <= 0]
            out += rng.sample(unweighted, min(need, len(unweighted)))
        rng.shuffle(out)  # tier order must not leak into option positions
        return out

    def _multiple_choice(
        self,
        stem: str,
        answer: str,
        tiers: list[list[str]],
        rng: random.Random,
        cycle: Callable[[int], int],
        answer_type: str,
    ) -> tuple[str, int] | None:
        total = 1 + sum(len(t) for t in tiers)
        n = min(self.config.num_options, total)
        if n < 2:
            return None
        weights = self._answer_counts.get(answer_type) if self.config.distractors == "frequency" else None
        distractors = self._draw(tiers, n - 1, rng, weights)
        position = cycle(n)
        options = distractors[:position] + [answer] + distractors[position:]
        return join_options(stem, options), position

    # ------------------------------------------------------------------------------- per type
    def _what(self, clip: Clip, rng: random.Random, cycle: Callable[[int], int]) -> list[tuple[str, int]]:
        made = self._multiple_choice(
            WHAT_STEM, self.hierarchy.name_of(clip.label), self._what_tiers(clip.label), rng, cycle, "what"
        )
        return [made] if made else []

    def _event(self, clip: Clip, rng: random.Random, cycle: Callable[[int], int]) -> list[tuple[str, int]]:
        event = self.hierarchy.event_of(clip.label)
        others = [EVENT_NAMES[e] for e in self.hierarchy.events if e != event]
        made = self._multiple_choice(EVENT_STEM, EVENT_NAMES[event], [others], rng, cycle, "event")
        return [made] if made else []

    def _set(self, clip: Clip, rng: random.Random, cycle: Callable[[int], int]) -> list[tuple[str, int]]:
        own = self.hierarchy.set_of(clip.label)
        event = self.hierarchy.event_of(clip.label)
        others = [s for s in self._set_names if s != own]
        if self.config.distractors != "hard":
            tiers = [[self._set_names[s] for s in others]]
        else:
            event_of_set = {s: self.hierarchy.event_of(self.hierarchy.labels_in_set(s)[0]) for s in others}
            tiers = [
                [self._set_names[s] for s in others if event_of_set[s] == event],
                [self._set_names[s] for s in others if event_of_set[s] != event],
            ]
        made = self._multiple_choice(SET_STEM, self._set_names[own], tiers, rng, cycle, "set")
        return [made] if made else []

    def _attribute(self, clip: Clip, rng: random.Random, balance: Counter) -> list[tuple[str, int]]:
        answers = list(self.hierarchy.attributes_of(clip.label))
        if not answers:
            return []
        if self.config.attributes_per_clip == 0:
            chosen = answers
        else:
            chosen = []
            pool = list(answers)
            for _ in range(min(self.config.attributes_per_clip, len(pool))):
                # Greedy balancing. First per question text: Qtree answers are skewed per question
                # ("round-off onto the springboard?" is mostly yes), so asking every question equally
                # often lets a video-blind P(yes | question) prior score ~75 %. Prefer the question whose
                # answer for this element is the one that question has been given less often so far;
                # then the globally rarer answer (A = yes), which keeps the letters balanced.
                def need(a: AttributeAnswer) -> tuple[int, int, float]:
                    text = a.question
                    return (
                        balance[text, not a.answer] - balance[text, a.answer],
                        balance[None, not a.answer] - balance[None, a.answer],
                        rng.random(),
                    )

                pick = max(pool, key=need)
                pool.remove(pick)
                chosen.append(pick)
                balance[pick.question, pick.answer] += 1
                balance[None, pick.answer] += 1
        made = []
        for attribute in chosen:
            stem = ATTRIBUTE_STEM.format(question=tidy_attribute_question(attribute.question))
            made.append((join_options(stem, list(YES_NO_OPTIONS)), 0 if attribute.answer else 1))
        return made

    def _count(self, clip: Clip, rng: random.Random, cycle: Callable[[int], int]) -> list[tuple[str, int]]:
        attrs = self.hierarchy.class_attributes.get(clip.label, {})
        made = []
        own_type = {COUNTED_ATTRIBUTE[t] for t in self.config.types if t in COUNTED_ATTRIBUTE}
        for name in self.config.count_attributes:
            value = attrs.get(name)
            if name not in COUNT_STEMS or not isinstance(value, int | float) or name in own_type:
                continue
            others = [v for v in self._attribute_values(name) if v != value]
            if self.config.distractors == "hard":
                # Nearest counts first (random among equally near), the plausible confusions.
                rng.shuffle(others)
                others.sort(key=lambda v: abs(v - value))
                tiers = [
                    [format_count(v) for v in others[: self.config.num_options - 1]],
                    [format_count(v) for v in others[self.config.num_options - 1 :]],
                ]
            else:
                tiers = [[format_count(v) for v in others]]
            result = self._multiple_choice(
                COUNT_STEMS[name], format_count(value), tiers, rng, cycle, f"count:{name}"
            )
            if result:
                made.append(result)
        return made

    def _attribute_question(
        self, answer_type: str, clip: Clip, rng: random.Random, cycle: Callable[[int], int]
    ) -> list[tuple[str, int]]:
        """A direction / twists / shape / turns question (:mod:`gym_qa.attribute_questions`)."""
        spec = ATTRIBUTE_QUESTIONS[answer_type]
        value = spec.value_of(self.hierarchy.class_attributes.get(clip.label, {}))
        if value is None:
            return []
        key = f"type:{answer_type}"  # not the count type's key: only the classes the type applies to
        if key not in self._values:
            found = (spec.value_of(a) for a in self.hierarchy.class_attributes.values())
            self._values[key] = sorted({v for v in found if v is not None})
        others = [v for v in self._values[key] if v != value]
        if self.config.distractors == "hard":
            rng.shuffle(others)  # nearest values first, random among equally near
            others.sort(key=lambda v: abs(v - value))
            k = self.config.num_options - 1
            tiers = [[spec.text_of(v) for v in others[:k]], [spec.text_of(v) for v in others[k:]]]
        else:
            tiers = [[spec.text_of(v) for v in others]]
        made = self._multiple_choice(spec.stem, spec.text_of(value), tiers, rng, cycle, answer_type)
        return [made] if made else []

    def _attribute_values(self, name: str) -> list[float]:
        """Distinct values of a numeric class attribute over all classes (cached): the count options."""
        if name not in self._values:
            attrs = self.hierarchy.class_attributes.values()
            self._values[name] = sorted({v for a in attrs if isinstance(v := a.get(name), int | float)})
        return self._values[name]

    # ---------------------------------------------------------------------------------- driver
    def generate(self, clips: Sequence[Clip]) -> tuple[list[Question], dict[str, Any]]:
        """Questions for ``clips`` (clip-major, ids from ``start_id``) and a summary dict."""
        config = self.config
        for index, clip in enumerate(clips):
            if not 0 <= clip.label < self.hierarchy.num_classes:
                raise GeneratorError(
                    f"clip #{index} ({clip.video}) has label {clip.label}, outside "
                    f"[0, {self.hierarchy.num_classes})"
                )
        self._answer_counts = self._count_answers(clips)
        makers = {
            "what": self._what,
            "event": self._event,
            "set": self._set,
            "attribute": self._attribute,
            "count": self._count,
            **{t: partial(self._attribute_question, t) for t in ATTRIBUTE_QUESTIONS},
        }
        rngs = {t: random.Random(f"gymqa:{config.seed}:{t}") for t in config.types}
        cycles: dict[tuple[str, int], LetterCycle] = {}
        stats = {t: TypeStats() for t in config.types}

        def cycle_for(answer_type: str) -> Callable[[int], int]:
            def draw(n: int) -> int:
                key = (answer_type, n)
                if key not in cycles:
                    cycles[key] = LetterCycle(
                        n, random.Random(f"gymqa-letters:{config.seed}:{answer_type}:{n}")
                    )
                return cycles[key].next()

            return draw

        yes_no_balance: Counter = Counter()
        questions: list[Question] = []
        labels: list[int] = []  # class of each question, for the distractor statistics
        next_id = config.start_id
        for clip in clips:
            for answer_type in config.types:
                cycle: Any = yes_no_balance if answer_type == "attribute" else cycle_for(answer_type)
                try:
                    made = makers[answer_type](clip, rngs[answer_type], cycle)
                except QuestionFormatError as err:
                    raise GeneratorError(f"clip {clip.video}: {err}") from None
                if not made:
                    stats[answer_type].skipped_clips += 1
                for text, position in made:
                    question = Question(
                        answer=OPTION_LETTERS[position],
                        question=text,
                        answer_type=answer_type,
                        question_id=format_question_id(next_id),
                        dataset=config.dataset,
                        video=clip.video,
                        frame_length=clip.frame_length,
                    )
                    next_id += 1
                    questions.append(question)
                    labels.append(clip.label)
                    stats[answer_type].questions += 1
                    stats[answer_type].letters[question.answer] += 1
                    stats[answer_type].option_counts[len(question.options)] += 1
        return questions, generation_summary(
            self.hierarchy, config, clips, questions, labels, stats, self._name_sets, self._name_events
        )

    def _count_answers(self, clips: Sequence[Clip]) -> dict[str, Counter]:
        """How often each option text is the correct answer among ``clips``, per answer type."""
        h = self.hierarchy
        counts: dict[str, Counter] = {"what": Counter(), "event": Counter(), "set": Counter()}
        for clip in clips:
            counts["what"][h.name_of(clip.label)] += 1
            counts["event"][EVENT_NAMES[h.event_of(clip.label)]] += 1
            counts["set"][self._set_names[h.set_of(clip.label)]] += 1
            attrs = h.class_attributes.get(clip.label, {})
            for name, value in attrs.items():
                if isinstance(value, int | float):
                    counts.setdefault(f"count:{name}", Counter())[format_count(value)] += 1
            for answer_type, spec in ATTRIBUTE_QUESTIONS.items():
                if (value := spec.value_of(attrs)) is not None:
                    counts.setdefault(answer_type, Counter())[spec.text_of(value)] += 1
        return counts


def parse_answer_types(text: str) -> tuple[str, ...]:
    """Parse a comma-separated ``--types`` value (``all`` = every type); unknown names raise."""
    parts = tuple(p.strip() for p in text.split(",") if p.strip())
    types = ANSWER_TYPES if parts == ("all",) else parts
    unknown = [t for t in types if t not in ANSWER_TYPES]
    if unknown or not types:
        raise GeneratorError(
            f"unknown answer type(s) {', '.join(unknown) or text!r}; choose from "
            f"{', '.join(ANSWER_TYPES)} or all"
        )
    return types
