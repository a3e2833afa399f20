"""The Gym-QA question file: the official SeFAR JSON format, read and written byte-compatibly
(docs/DESIGN.md §Question format).

A file is one JSON object keyed by 7-digit question ids, each record holding, in this order::

    answer        option letter of the correct answer ("C")
    question      "<stem> A.<text> B.<text> C.<text> D.<text>" (options follow the stem, one space apart)
    answer_type   "what" in the official files; this toolkit adds "event", "set", "attribute", "count"
    question_id   the record's key again
    dataset       e.g. "finegym"
    video         clip id without extension
    frame_length  number of frames of the clip (0 when unknown)

written with ``json.dumps(indent=4)`` and Python's default ``ensure_ascii=True`` (non-ASCII text is
escaped), with no trailing newline — the official sample is reproduced byte for byte. Questions may have
2 to 26 options: yes/no attribute questions use two (``A.yes B.no``), the layout stays the same.

Rotated copies for circular evaluation (:func:`rotate_options`) carry ids ``<id>#r<k>``.
"""

from __future__ import annotations

import json
import re
import string
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from gym_qa.atomic_files import write_text_atomic

OPTION_LETTERS = string.ascii_uppercase
# Field order of the official records; the writer emits exactly this order (then any extra keys).
RECORD_FIELDS = ("answer", "question", "answer_type", "question_id", "dataset", "video", "frame_length")
ID_DIGITS = 7
ROTATION_SEPARATOR = "#r"
_ID_RE = re.compile(r"\d{7}(?:#r\d+)?")


class QuestionFormatError(ValueError):
    """A question file or record does not follow the Gym-QA format; the message names file and line."""


def join_options(stem: str, options: list[str]) -> str:
    """Render ``"<stem> A.<o1> B.<o2> …"`` and check it parses back to the same stem and options.

    The check matters because options are recovered from the text alone: an option containing
    ``" B."`` (the next letter's marker) would be cut in two by every reader.
    """
    if not 2 <= len(options) <= len(OPTION_LETTERS):
        raise QuestionFormatError(f"a question needs 2..{len(OPTION_LETTERS)} options, got {len(options)}")
    text = " ".join([stem] + [f"{OPTION_LETTERS[i]}.{option}" for i, option in enumerate(options)])
    if split_options(text) != (stem, list(options)):
        raise QuestionFormatError(f"options {options!r} cannot be rendered unambiguously after {stem!r}")
    return text


def split_options(text: str) -> tuple[str, list[str]]:
    """Split a question text into its stem and option texts (``"… A.x B.y"`` → ``("…", ["x", "y"])``).

    The markers are searched in order (" A." first, then " B." after it, …), so option texts may
    themselves contain other capital letters followed by dots only if those are not the next marker.
    """
    start = text.find(" A.")
    if start < 0:
        raise QuestionFormatError(f"no ' A.' option marker in question {text[:80]!r}")
    positions = [start]
    for letter in OPTION_LETTERS[1:]:
        position = text.find(f" {letter}.", positions[-1] + 3)
        if position < 0:
            break
        positions.append(position)
    if len(positions) < 2:
        raise QuestionFormatError(f"fewer than two options in question {text[:80]!r}")
    bounds = positions + [len(text)]
    options = [text[bounds[i] + 3 : bounds[i + 1]] for i in range(len(positions))]
    return text[:start], options


@dataclass(frozen=True)
class Question:
    """One Gym-QA record. ``options``/``stem``/``answer_index`` are parsed from ``question``."""

    answer: str
    question: str
    answer_type: str
    question_id: str
    dataset: str
    video: str
    frame_length: int
    extra: dict[str, Any] = field(default_factory=dict, compare=False)  # unknown keys, kept on rewrite

    def __post_init__(self) -> None:
        stem, options = split_options(self.question)
        object.__setattr__(self, "_stem", stem)
        object.__setattr__(self, "_options", tuple(options))
        if self.answer not in OPTION_LETTERS[: len(options)] or len(self.answer) != 1:
            raise QuestionFormatError(
                f"question {self.question_id}: answer {self.answer!r} is not one of "
                f"{OPTION_LETTERS[: len(options)]}"
            )

    @property
    def stem(self) -> str:
        return self._stem  # type: ignore[attr-defined]

    @property
    def options(self) -> tuple[str, ...]:
        return self._options  # type: ignore[attr-defined]

    @property
    def letters(self) -> str:
        return OPTION_LETTERS[: len(self.options)]

    @property
    def answer_index(self) -> int:
        return OPTION_LETTERS.index(self.answer)

    @property
    def answer_text(self) -> str:
        return self.options[self.answer_index]

    @property
    def base_id(self) -> str:
        """The id without a rotation suffix."""
        return self.question_id.split(ROTATION_SEPARATOR, 1)[0]

    @property
    def rotation(self) -> int:
        """How far the options are rotated from the original question (0 for an original)."""
        _, _, k = self.question_id.partition(ROTATION_SEPARATOR)
        return int(k) if k else 0

    def to_record(self) -> dict[str, Any]:
        record = {name: getattr(self, name) for name in RECORD_FIELDS}
        record.update(self.extra)
        return record

    @classmethod
    def from_parts(
        cls,
        stem: str,
        options: list[str],
        answer_index: int,
        answer_type: str,
        question_id: str,
        dataset: str,
        video: str,
        frame_length: int,
    ) -> Question:
        return cls(
            answer=OPTION_LETTERS[answer_index],
            question=join_options(stem, options),
            answer_type=answer_type,
            question_id=question_id,
            dataset=dataset,
            video=video,
            frame_length=frame_length,
        )


def format_question_id(index: int) -> str:
    if not 0 <= index < 10**ID_DIGITS:
        raise QuestionFormatError(f"question index {index} does not fit {ID_DIGITS} digits")
    return f"{index:0{ID_DIGITS}d}"


# ------------------------------------------------------------------------------------------- I/O
def _line_of(text: str, key: str) -> int:
    """Line number of a top-level record key in the file text (for error messages)."""
    offset = text.find(f'"{key}"')
    return text.count("\n", 0, offset) + 1 if offset >= 0 else 1


def parse_questions(text: str, source: str = "<questions>") -> list[Question]:
    """Parse the JSON text of a question file; records keep the file's order."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError as err:
        raise QuestionFormatError(f"{source}:{err.lineno}: invalid JSON ({err.msg})") from None
    if not isinstance(data, dict):
        raise QuestionFormatError(f"{source}:1: expected a JSON object keyed by question id")
    questions = []
    for key, record in data.items():
        try:
            questions.append(_parse_record(key, record))
        except QuestionFormatError as err:
            # The line is looked up only on error: scanning the text per record would be quadratic.
            raise QuestionFormatError(f"{source}:{_line_of(text, key)}: {err}") from None
    return questions


def _parse_record(key: str, record: Any) -> Question:
    if not isinstance(record, dict):
        raise QuestionFormatError(f"record {key!r} is not an object")
    missing = [name for name in RECORD_FIELDS if name not in record]
    if missing:
        raise QuestionFormatError(f"record {key!r} lacks {', '.join(missing)}")
    if record["question_id"] != key:
        raise QuestionFormatError(f"key {key!r} differs from question_id {record['question_id']!r}")
    if not _ID_RE.fullmatch(key):
        raise QuestionFormatError(f"question id {key!r} is not {ID_DIGITS} digits")
    frame_length = record["frame_length"]
    if not isinstance(frame_length, int) or isinstance(frame_length, bool) or frame_length < 0:
        raise QuestionFormatError(f"frame_length {record['frame_length']!r} is not an integer >= 0")
    for name in ("answer", "question", "answer_type", "dataset", "video"):
        if not isinstance(record[name], str):
            raise QuestionFormatError(f"{name} of record {key!r} is not a string")
    extra = {k: v for k, v in record.items() if k not in RECORD_FIELDS}
    return Question(**{name: record[name] for name in RECORD_FIELDS}, extra=extra)


def load_questions(path: str | Path) -> list[Question]:
    """Read a Gym-QA JSON file (official or generated)."""
    path = Path(path)
    if not path.is_file():
        raise QuestionFormatError(f"{path}: question file not found")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise QuestionFormatError(f"{path}: not a UTF-8 text file ({err})") from None
    return parse_questions(text, str(path))


def dump_questions(questions: Iterable[Question], ensure_ascii: bool = True) -> str:
    """The file text: 4-space indentation, official field order, no trailing newline (as the sample)."""
    data: dict[str, dict[str, Any]] = {}
    for question in questions:
        if question.question_id in data:
            raise QuestionFormatError(f"duplicate question id {question.question_id}")
        data[question.question_id] = question.to_record()
    return json.dumps(data, indent=4, ensure_ascii=ensure_ascii)


def write_questions(path: str | Path, questions: Iterable[Question], ensure_ascii: bool = True) -> None:
    """Write a question file atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(path, dump_questions(questions, ensure_ascii))


# ------------------------------------------------------------------------------ derived questions
def rotate_options(question: Question, k: int) -> Question:
    """The question with its options shifted ``k`` places later (cyclically), for circular evaluation.

    Option ``i`` moves to position ``(i + k) % n``; the answer letter follows its option. The id becomes
    ``<base id>#r<total shift mod n>`` (plain base id for a total shift of 0), so predictions for all
    rotations of a question can sit in one predictions file.
    """
    n = len(question.options)
    k %= n
    options = [question.options[(i - k) % n] for i in range(n)]
    total = (question.rotation + k) % n  # rotating a rotated copy composes: ids name the total shift
    question_id = question.base_id if total == 0 else f"{question.base_id}{ROTATION_SEPARATOR}{total}"
    return replace(
        question,
        answer=OPTION_LETTERS[(question.answer_index + k) % n],
        question=join_options(question.stem, options),
        question_id=question_id,
    )


def circular_questions(questions: Iterable[Question]) -> list[Question]:
    """Every question followed by its ``n - 1`` rotations (ids ``<id>#r1`` … ``<id>#r<n-1>``)."""
    out = []
    for question in questions:
        out.extend(rotate_options(question, k) for k in range(len(question.options)))
    return out


def render_prompt(question: Question, template: str = "{question}") -> str:
    """Fill a prompt template from a question.

    Placeholders: ``{question}`` (the full official text, stem and options), ``{stem}``, ``{options}``
    (one ``"A. text"`` per line), ``{letters}`` (``"A, B, C or D"``). Example:
    ``"{stem}\\n{options}\\nAnswer with the option's letter."``
    """
    letters = list(question.letters)
    values: Mapping[str, str] = {
        "question": question.question,
        "stem": question.stem,
        "options": "\n".join(
            f"{letter}. {text}" for letter, text in zip(letters, question.options, strict=True)
        ),
        "letters": ", ".join(letters[:-1]) + " or " + letters[-1],
    }
    try:
        return template.format_map(values)
    except (KeyError, IndexError, ValueError) as err:
        raise QuestionFormatError(
            f"prompt template {template!r}: unknown or malformed placeholder ({err})"
        ) from None
