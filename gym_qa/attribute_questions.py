"""Attribute questions of SynthGym elements, one answer type per attribute (direction, twists, shape,
turns): which elements each applies to, its option texts, and how near two values are.

Questions that need time: on SynthGym, salto forward and backward differ only in temporal direction, a
twist is a rotation over several frames, a body shape is held through the flight. Each type is a
multiple-choice question whose options are the attribute's values among the hierarchy's classes it
applies to (so a tiny preset without piked saltos asks "tucked or stretched"), answered from the class
attributes of SynthGym's ``meta.json`` (:attr:`gym_qa.hierarchy.Hierarchy.class_attributes`), the same
rows the choreography is rendered from (:mod:`gym_qa.synthgym.elements`)::

    type       applies to                                  options (value → text)
    direction  direction +1 / -1 (saltos, vaults, circles) forward, backward
    twists     flight elements (kind not turn/circle)      0, 0.5, 1, 2 ... (format_count)
    shape      saltos (saltos >= 1) held tucked/piked/     tucked, piked, stretched
               stretched
    turns      supported turns (kind turn/circle)          0.5, 1, 2 ...

A record without ``kind`` (a hand-written meta.json) counts as applicable whenever the attribute is.
"Hard" distractors are the nearest values first (random among equally near): counts by difference,
shapes by their order tucked < piked < stretched (the hip angle), directions trivially. FineGym has no
class attributes, so these types give no question there (the clips count as skipped).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from gym_qa.answer_types import COUNT_STEMS, DIRECTION_STEM, SHAPE_STEM, format_count

SALTO_SHAPES: tuple[str, ...] = ("tucked", "piked", "stretched")  # ordinal: hip angle opens
DIRECTIONS: dict[int, str] = {-1: "backward", 1: "forward"}
SUPPORTED_KINDS: frozenset[str] = frozenset({"turn", "circle"})  # long-axis rotation while supported


def _number(attrs: Mapping[str, Any], key: str) -> float | None:
    value = attrs.get(key)
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def _direction(attrs: Mapping[str, Any]) -> float | None:
    value = _number(attrs, "direction")
    return value if value in (-1.0, 1.0) else None


def _twists(attrs: Mapping[str, Any]) -> float | None:
    return None if attrs.get("kind") in SUPPORTED_KINDS else _number(attrs, "twists")


def _shape(attrs: Mapping[str, Any]) -> float | None:
    shape, saltos = attrs.get("shape"), _number(attrs, "saltos")
    if shape not in SALTO_SHAPES or (saltos is not None and saltos < 1):
        return None
    return float(SALTO_SHAPES.index(shape))


def _turns(attrs: Mapping[str, Any]) -> float | None:
    kind = attrs.get("kind")
    return _number(attrs, "turns") if kind is None or kind in SUPPORTED_KINDS else None


@dataclass(frozen=True)
class AttributeQuestion:
    """One attribute answer type: its stem, the class's value (None: the question does not apply) as a
    number on which nearness is measured, and that number's option text."""

    answer_type: str
    stem: str
    value_of: Callable[[Mapping[str, Any]], float | None]
    text_of: Callable[[float], str]


ATTRIBUTE_QUESTIONS: dict[str, AttributeQuestion] = {
    "direction": AttributeQuestion("direction", DIRECTION_STEM, _direction, lambda v: DIRECTIONS[int(v)]),
    "twists": AttributeQuestion("twists", COUNT_STEMS["twists"], _twists, format_count),
    "shape": AttributeQuestion("shape", SHAPE_STEM, _shape, lambda v: SALTO_SHAPES[int(v)]),
    "turns": AttributeQuestion("turns", COUNT_STEMS["turns"], _turns, format_count),
}
# The class attribute each type reads: the "count" type leaves it to the per-attribute type when both
# are asked, so no question is asked twice.
COUNTED_ATTRIBUTE: dict[str, str] = {"twists": "twists", "turns": "turns"}


def attribute_answer(answer_type: str, attrs: Mapping[str, Any]) -> str | None:
    """The option text that answers ``answer_type`` for a class with attributes ``attrs`` (None: the
    question does not apply to it)."""
    spec = ATTRIBUTE_QUESTIONS[answer_type]
    value = spec.value_of(attrs)
    return None if value is None else spec.text_of(value)
