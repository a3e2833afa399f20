"""The Gym-QA answer types and how their questions are worded: stems, yes/no options, option texts.

Answer types::

    what       "What gymnastics move is this athlete performing? A.x B.y C.z D.w"   (official type)
    event      "Which apparatus is this element performed on?"          options: vault, floor exercise, …
    set        "Which group of elements does this move belong to?"      options: "floor exercise: turns", …
    attribute  Qtree yes/no question, always laid out "A.yes B.no"      (FineGym BTcode / SynthGym table)
    count      "How many twists does the athlete perform in this element?"   (SynthGym numeric attributes)

Attribute types (SynthGym class attributes, one answer type each so each gets its own accuracy; what
they apply to and their options: :mod:`gym_qa.attribute_questions`)::

    direction  "In which direction does the athlete rotate in this element?"   forward, backward
    twists     the "twists" count stem                                          0, 0.5, 1, 2, ...
    shape      "Which body shape does the athlete hold in the salto?"          tucked, piked, stretched
    turns      the "turns" count stem                                           0.5, 1, 2, ...

The generator (:mod:`gym_qa.question_generator`) writes these texts and the reference answerers
(:mod:`gym_qa.reference_answerers`) read them back.
"""

from __future__ import annotations

ANSWER_TYPES: tuple[str, ...] = (
    "what",
    "event",
    "set",
    "attribute",
    "count",
    "direction",
    "twists",
    "shape",
    "turns",
)

WHAT_STEM = "What gymnastics move is this athlete performing?"
EVENT_STEM = "Which apparatus is this element performed on?"
SET_STEM = "Which group of elements does this move belong to?"
ATTRIBUTE_STEM = "About the move this athlete is performing, answer yes or no: {question}"
YES_NO_OPTIONS = ("yes", "no")
# Stems of "how many" questions per numeric attribute; attributes without a stem get no count question.
COUNT_STEMS: dict[str, str] = {
    "twists": "How many twists does the athlete perform in this element?",
    "saltos": "How many saltos does the athlete perform in this element?",
    "turns": "How many turns does the athlete perform in this element?",
}
DIRECTION_STEM = "In which direction does the athlete rotate in this element?"
SHAPE_STEM = "Which body shape does the athlete hold in the salto?"


def tidy_attribute_question(text: str) -> str:
    """Normalise a Qtree question: single spaces, no space before "?", a final "?"."""
    text = " ".join(text.split()).replace(" ?", "?")
    return text if text.endswith("?") else text + "?"


def format_count(value: float) -> str:
    """``1.0`` → "1", ``0.5`` → "0.5" (option text of count questions)."""
    return str(int(value)) if float(value).is_integer() else f"{value:g}"
