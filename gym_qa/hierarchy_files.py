"""The files a hierarchy is read from, their parsers, and the records they yield.

Files read (docs/DESIGN.md §FineGym metadata and hierarchy; FineGym's public metadata, packaged in
``gym_qa/data/finegym``)::

    gymNN_categories.txt    Clabel: i; set: s; Glabel: g; (EV) description
    gym530_categories.txt   Glabel: g; set: s; (EV) description        (class id = Glabel)
    set_categories.txt      set: s; name
    *_Qtree.json            {"<Glabel>": {"questions": [...], "BTcode": "0110...", "code": "..."}}
    meta.json (SynthGym)    numeric/categorical attributes per class (see :func:`read_class_attributes`)

The parsers return plain records (:class:`Element` per class, :class:`AttributeAnswer` per Qtree
question, set names, per-class attributes), which :class:`gym_qa.hierarchy.Hierarchy` assembles; the
event codes of the "(EV)" prefix and their full names are :data:`EVENT_NAMES`. Parse errors raise
:class:`HierarchyError` naming the file and line.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

# Event codes as written in the "(EV)" prefix of FineGym descriptions, and their full names.
EVENT_NAMES: dict[str, str] = {
    "VT": "vault",
    "FX": "floor exercise",
    "BB": "balance beam",
    "UB": "uneven bars",
}
# FineGym convention: the first digit of a set id is the event. Only used when a description has no
# "(EV)" prefix; otherwise the prefix wins and the two are merely checked against each other.
EVENT_OF_SET_DIGIT: dict[str, str] = {"1": "VT", "2": "FX", "3": "BB", "4": "UB"}

_CLABEL_RE = re.compile(r"Clabel:\s*(\d+)\s*;\s*set:\s*(\d+)\s*;\s*Glabel:\s*(\d+)\s*;\s*(.*)")
_GLABEL_RE = re.compile(r"Glabel:\s*(\d+)\s*;\s*set:\s*(\d+)\s*;\s*(.*)")
_SET_RE = re.compile(r"set:\s*(\d+)\s*;\s*(.*)")
_EVENT_PREFIX_RE = re.compile(r"\(([A-Z]{2})\)\s*(.*)")
# Keys of a meta.json class record that describe the class rather than its attributes.
_META_RESERVED_KEYS = {
    "label",
    "clabel",
    "glabel",
    "name",
    "description",
    "set",
    "set_id",
    "set_name",
    "event",
}


class HierarchyError(ValueError):
    """A metadata file is missing or malformed; the message names the file (and line when known)."""


@dataclass(frozen=True)
class Element:
    """One class of a classification task (a FineGym element)."""

    label: int  # class id in this task (FineGym Clabel; equals the Glabel for gym530)
    glabel: int  # FineGym global element id, the key of the Qtree
    set_id: int
    event: str  # event code: VT, FX, BB or UB
    name: str  # description without the "(EV) " prefix


class AttributeAnswer(NamedTuple):
    """One yes/no attribute question of the Qtree and its answer for one element."""

    question: str
    answer: bool


def _read_text(path: Path, what: str) -> str:
    if not path.is_file():
        raise HierarchyError(f"{path}: {what} not found")
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise HierarchyError(f"{path}: not a UTF-8 text file ({err})") from None


def read_json(path: Path) -> Any:
    """The JSON value in ``path``; :class:`HierarchyError` names the file (and line) when it is missing
    or invalid."""
    text = _read_text(path, "JSON file")
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        raise HierarchyError(f"{path}:{err.lineno}: invalid JSON ({err.msg})") from None


def _content_lines(text: str) -> Iterable[tuple[int, str]]:
    """(line number, stripped line) for non-blank, non-comment lines; CRLF tolerated."""
    for lineno, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if line and not line.startswith("#"):
            yield lineno, line


def _split_event(description: str, set_id: int, where: str) -> tuple[str, str]:
    """Split "(EV) name" into (event code, name); without a prefix the set id's first digit decides."""
    match = _EVENT_PREFIX_RE.fullmatch(description)
    digit_event = EVENT_OF_SET_DIGIT.get(str(set_id)[0])
    if match:
        event, name = match.group(1), match.group(2).strip()
        if event not in EVENT_NAMES:
            raise HierarchyError(
                f"{where}: unknown event code ({event}); expected one of {', '.join(EVENT_NAMES)}"
            )
    elif digit_event is not None:
        event, name = digit_event, description.strip()
    else:
        raise HierarchyError(
            f"{where}: description has no '(EV)' event prefix and set {set_id} does not encode an event"
        )
    if not name:
        raise HierarchyError(f"{where}: empty element description")
    return event, name


def read_categories(path: str | Path) -> list[Element]:
    """Parse a ``gymNN_categories.txt`` (Clabel lines) or ``gym530_categories.txt`` (Glabel lines).

    Labels must be unique and cover 0..N-1 (they index classifier outputs); all elements of one set
    must share an event.
    """
    path = Path(path)
    text = _read_text(path, "categories file")
    elements: dict[int, Element] = {}
    lines_of: dict[int, int] = {}
    set_event: dict[int, tuple[str, int]] = {}
    style: str | None = None
    for lineno, line in _content_lines(text):
        where = f"{path}:{lineno}"
        if (m := _CLABEL_RE.fullmatch(line)) and style in (None, "clabel"):
            style = "clabel"
            label, set_id, glabel, rest = int(m.group(1)), int(m.group(2)), int(m.group(3)), m.group(4)
        elif (m := _GLABEL_RE.fullmatch(line)) and style in (None, "glabel"):
            style = "glabel"
            glabel, set_id, rest = int(m.group(1)), int(m.group(2)), m.group(3)
            label = glabel
        else:
            expected = {
                None: "'Clabel: i; set: s; Glabel: g; (EV) description' or "
                "'Glabel: g; set: s; (EV) description'",
                "clabel": "'Clabel: i; set: s; Glabel: g; (EV) description'",
                "glabel": "'Glabel: g; set: s; (EV) description'",
            }[style]
            raise HierarchyError(f"{where}: expected {expected}, got {line!r}")
        event, name = _split_event(rest.strip(), set_id, where)
        if label in elements:
            raise HierarchyError(f"{where}: label {label} already defined at line {lines_of[label]}")
        if set_id in set_event and set_event[set_id][0] != event:
            first_event, first_line = set_event[set_id]
            raise HierarchyError(
                f"{where}: set {set_id} is {event} here but {first_event} at line {first_line}"
            )
        set_event.setdefault(set_id, (event, lineno))
        elements[label] = Element(label=label, glabel=glabel, set_id=set_id, event=event, name=name)
        lines_of[label] = lineno
    if not elements:
        raise HierarchyError(f"{path}: no categories found")
    missing = sorted(set(range(len(elements))) - set(elements))
    if missing:
        raise HierarchyError(
            f"{path}: labels must cover 0..{len(elements) - 1} without gaps; missing "
            f"{', '.join(map(str, missing[:10]))}"
        )
    return [elements[label] for label in range(len(elements))]


def read_set_categories(path: str | Path) -> dict[int, str]:
    """Parse ``set_categories.txt`` lines ``set: s; name`` into ``{set id: name}``."""
    path = Path(path)
    text = _read_text(path, "set categories file")
    sets: dict[int, str] = {}
    for lineno, line in _content_lines(text):
        m = _SET_RE.fullmatch(line)
        if not m or not m.group(2).strip():
            raise HierarchyError(f"{path}:{lineno}: expected 'set: s; name', got {line!r}")
        set_id = int(m.group(1))
        if set_id in sets:
            raise HierarchyError(f"{path}:{lineno}: set {set_id} defined twice")
        sets[set_id] = m.group(2).strip()
    if not sets:
        raise HierarchyError(f"{path}: no sets found")
    return sets


def read_qtree(path: str | Path) -> tuple[dict[int, tuple[AttributeAnswer, ...]], dict[int, str]]:
    """Parse a FineGym Qtree JSON: bit ``i`` of ``BTcode`` ('1' = yes) answers ``questions[i]``.

    Returns ``({glabel: answers}, {glabel: issue})``. An entry whose BTcode length differs from its number of
    questions, or holds characters other than 0/1, is skipped and reported in ``issues`` (there is no
    safe way to tell which bit belongs to which question). A file that is not a JSON object of entries
    raises :class:`HierarchyError`.
    """
    path = Path(path)
    data = read_json(path)
    if not isinstance(data, dict):
        raise HierarchyError(f"{path}: expected a JSON object keyed by Glabel")
    attributes: dict[int, tuple[AttributeAnswer, ...]] = {}
    issues: dict[int, str] = {}
    for key, entry in data.items():
        try:
            glabel = int(key)
        except ValueError:
            raise HierarchyError(f"{path}: key {key!r} is not an integer Glabel") from None
        if not isinstance(entry, dict) or "questions" not in entry or "BTcode" not in entry:
            issues[glabel] = f"{path}: Glabel {glabel}: entry lacks 'questions'/'BTcode'; skipped"
            continue
        questions, code = entry["questions"], str(entry["BTcode"])
        if not isinstance(questions, list) or not all(isinstance(q, str) for q in questions):
            issues[glabel] = f"{path}: Glabel {glabel}: 'questions' is not a list of strings; skipped"
            continue
        if len(code) != len(questions):
            issues[glabel] = (
                f"{path}: Glabel {glabel}: BTcode has {len(code)} bits for "
                f"{len(questions)} questions; skipped"
            )
            continue
        if set(code) - {"0", "1"}:
            issues[glabel] = f"{path}: Glabel {glabel}: BTcode {code!r} is not binary; skipped"
            continue
        # Collapse runs of spaces ("Body keep stretched  during salto") so the text renders cleanly.
        attributes[glabel] = tuple(
            AttributeAnswer(" ".join(q.split()), bit == "1") for q, bit in zip(questions, code, strict=True)
        )
    return attributes, issues


def read_class_attributes(
    path: str | Path, num_classes: int, glabel_to_label: dict[int, int] | None = None
) -> dict[int, dict[str, float | str]]:
    """Read per-class attributes from a SynthGym ``meta.json``.

    Accepted layouts (the first of the keys "classes", "elements", "class_attributes", "attributes"
    present holds the records)::

        {"classes": [{"label": 0, "twists": 1, "saltos": 1, "direction": -1, "shape": "tucked"}, ...]}
        {"classes": [{"label": 0, "name": "...", "attributes": {"twists": 1, ...}}, ...]}   (SynthGym)
        {"elements": [{"glabel": 7, "twists": 1, ...}, ...]}     (Glabels mapped via ``glabel_to_label``)
        {"classes": {"0": {"twists": 1, ...}, ...}}               (keys are class labels)
        [{"label": 0, ...}, ...]

    Other top-level keys (seed, preset…) are ignored. Keys describing the class itself (label, glabel,
    name, set, event…) are dropped from the attributes; numbers (not booleans) are kept as numbers,
    strings as categorical values, anything else is ignored. Records of Glabels outside the hierarchy
    are skipped (a preset uses a subset of the catalogue); labels must lie in ``[0, num_classes)``.
    """
    path = Path(path)
    data = read_json(path)
    if isinstance(data, dict):
        key = next((k for k in ("classes", "elements", "class_attributes", "attributes") if k in data), None)
        if key is None:
            raise HierarchyError(f"{path}: expected a 'classes' list or object of per-class attributes")
        container = data[key]
    else:
        container = data
    records: list[tuple[int, Any]] = []
    if isinstance(container, dict):
        for key, record in container.items():
            try:
                records.append((int(key), record))
            except ValueError:
                raise HierarchyError(f"{path}: class key {key!r} is not an integer label") from None
    elif isinstance(container, list):
        for index, record in enumerate(container):
            if not isinstance(record, dict):
                raise HierarchyError(f"{path}: class record #{index} is not an object")
            label = record.get("label", record.get("clabel"))
            if label is None and "glabel" in record and glabel_to_label is not None:
                if int(record["glabel"]) not in glabel_to_label:
                    continue
                label = glabel_to_label[int(record["glabel"])]
            if not isinstance(label, int) or isinstance(label, bool):
                raise HierarchyError(f"{path}: class record #{index} has no integer 'label'")
            records.append((label, record))
    else:
        raise HierarchyError(f"{path}: expected a list or object of per-class attributes")
    out: dict[int, dict[str, float | str]] = {}
    for label, record in records:
        if not 0 <= label < num_classes:
            raise HierarchyError(f"{path}: class label {label} out of range [0, {num_classes})")
        if not isinstance(record, dict):
            raise HierarchyError(f"{path}: attributes of class {label} are not an object")
        # SynthGym nests the attributes ({"label": 0, "name": …, "attributes": {"twists": 1, …}}).
        nested = record.get("attributes")
        fields = {**record, **nested} if isinstance(nested, dict) else record
        out[label] = {
            name: value
            for name, value in fields.items()
            if name not in _META_RESERVED_KEYS
            and not isinstance(value, bool)
            and isinstance(value, int | float | str)
        }
    return out
