"""The event → set → element hierarchy of FineGym (and of SynthGym, which writes the same files).

Files read (docs/DESIGN.md §FineGym metadata and hierarchy; FineGym's public metadata, packaged in
``gym_qa/data/finegym``)::

    gymNN_categories.txt    Clabel: i; set: s; Glabel: g; (EV) description
    gym530_categories.txt   Glabel: g; set: s; (EV) description        (class id = Glabel)
    set_categories.txt      set: s; name
    *_Qtree.json            {"<Glabel>": {"questions": [...], "BTcode": "0110...", "code": "..."}}
    meta.json (SynthGym)    numeric/categorical attributes per class (see :func:`read_class_attributes`)

All of it ends up in one :class:`Hierarchy`, which can be saved as JSON next to a model
(:meth:`Hierarchy.save`) so a checkpoint knows its class names, sets and events without the metadata
folder. Parse errors raise :class:`HierarchyError` naming the file and line.

Quirks handled on purpose: Gym99 has 10 pairs of classes sharing one description (sometimes across
events: "switch leap with 0.5 turn" is a floor and a beam element), so a name does not identify a class
(:meth:`Hierarchy.labels_with_name`); Gym99 uses 14 of the 15 sets (:attr:`Hierarchy.used_sets`).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

from gym_qa.atomic_files import write_text_atomic

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

HIERARCHY_FORMAT_VERSION = 1
# A typo in FineGym's set_categories.txt ("UB_fligh_same_bar"), fixed in rendered set names only.
_SET_WORD_FIXES = {"fligh": "flight"}

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


@dataclass
class Hierarchy:
    """Classes with their set and event, set names, and per-element attribute answers.

    ``attributes`` is keyed by Glabel (the Qtree is defined on global element ids), while
    ``class_attributes`` (SynthGym's ``meta.json``: twists, saltos, direction…) is keyed by class label.
    ``issues`` lists non-fatal problems found while loading (e.g. a Qtree entry whose BTcode length
    differs from its question count, which is skipped rather than guessed).
    """

    elements: tuple[Element, ...]
    sets: dict[int, str]
    attributes: dict[int, tuple[AttributeAnswer, ...]] = field(default_factory=dict)
    class_attributes: dict[int, dict[str, float | str]] = field(default_factory=dict)
    issues: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        for index, element in enumerate(self.elements):
            if element.label != index:
                raise HierarchyError(
                    f"elements must be ordered by label 0..N-1; position {index} holds label {element.label}"
                )
        groups: dict[str, list[int]] = {}
        for element in self.elements:
            groups.setdefault(element.name, []).append(element.label)
        self._name_groups = {name: tuple(labels) for name, labels in groups.items()}

    # ----------------------------------------------------------------------------------- lookups
    @property
    def num_classes(self) -> int:
        return len(self.elements)

    @property
    def names(self) -> list[str]:
        """Element names indexed by label (may contain duplicates; see :meth:`labels_with_name`)."""
        return [element.name for element in self.elements]

    @property
    def used_sets(self) -> list[int]:
        """Set ids that at least one class belongs to (Gym99: 14 of the 15 sets)."""
        return sorted({element.set_id for element in self.elements})

    @property
    def events(self) -> list[str]:
        """Event codes used by the classes, in the canonical order VT, FX, BB, UB."""
        used = {element.event for element in self.elements}
        return [code for code in EVENT_NAMES if code in used]

    @property
    def name_groups(self) -> dict[str, tuple[int, ...]]:
        """Distinct names → the labels carrying that name, in order of first appearance."""
        return dict(self._name_groups)

    def element(self, label: int) -> Element:
        if not 0 <= label < len(self.elements):
            raise HierarchyError(f"label {label} out of range [0, {len(self.elements)})")
        return self.elements[label]

    def name_of(self, label: int) -> str:
        return self.element(label).name

    def set_of(self, label: int) -> int:
        return self.element(label).set_id

    def event_of(self, label: int) -> str:
        return self.element(label).event

    def set_name(self, set_id: int) -> str:
        return self.sets.get(set_id, f"set {set_id}")

    def set_display_name(self, set_id: int) -> str:
        """Readable set name for questions: ``FX_leap_jump_hop`` → "floor exercise: leap jump hop".

        The event comes from the set's classes (FineGym prefixes set names with the event code); a set
        without classes falls back to the set id's first digit.
        """
        raw = self.set_name(set_id)
        labels = self.labels_in_set(set_id)
        event = self.event_of(labels[0]) if labels else EVENT_OF_SET_DIGIT.get(str(set_id)[0], "")
        event_name = EVENT_NAMES.get(event, "")
        words = raw.split("_")
        if words and words[0].upper() == event:
            words = words[1:]
        text = " ".join(_SET_WORD_FIXES.get(word, word) for word in words).strip()
        if not event_name:
            return text or raw
        if not text or text.lower() == event_name:
            return event_name
        return f"{event_name}: {text}"

    @staticmethod
    def event_name(code: str) -> str:
        return EVENT_NAMES[code]

    def labels_with_name(self, name: str) -> tuple[int, ...]:
        return self._name_groups.get(name, ())

    def labels_in_set(self, set_id: int) -> list[int]:
        return [element.label for element in self.elements if element.set_id == set_id]

    def attributes_of(self, label: int) -> tuple[AttributeAnswer, ...]:
        """Qtree yes/no attributes of a class (empty when its Glabel has no valid Qtree entry)."""
        return self.attributes.get(self.element(label).glabel, ())

    def numeric_attribute_names(self) -> list[str]:
        """Names of numeric class attributes present for at least one class, sorted."""
        names = {
            key
            for attrs in self.class_attributes.values()
            for key, value in attrs.items()
            if isinstance(value, int | float)
        }
        return sorted(names)

    # ----------------------------------------------------------------------------- persistence
    def to_json(self) -> dict[str, Any]:
        """A JSON-serialisable dict; :meth:`from_json` inverts it exactly."""
        return {
            "format_version": HIERARCHY_FORMAT_VERSION,
            "elements": [
                {"label": e.label, "glabel": e.glabel, "set": e.set_id, "event": e.event, "name": e.name}
                for e in self.elements
            ],
            "sets": {str(set_id): name for set_id, name in sorted(self.sets.items())},
            "attributes": {
                str(glabel): {
                    "questions": [a.question for a in answers],
                    "BTcode": "".join("1" if a.answer else "0" for a in answers),
                }
                for glabel, answers in sorted(self.attributes.items())
            },
            "class_attributes": {str(label): attrs for label, attrs in sorted(self.class_attributes.items())},
            "issues": list(self.issues),
        }

    @classmethod
    def from_json(cls, data: dict[str, Any], source: str = "<hierarchy json>") -> Hierarchy:
        try:
            if data.get("format_version") != HIERARCHY_FORMAT_VERSION:
                raise HierarchyError(
                    f"{source}: unsupported hierarchy format_version "
                    f"{data.get('format_version')!r} (expected {HIERARCHY_FORMAT_VERSION})"
                )
            elements = tuple(
                Element(
                    label=int(e["label"]),
                    glabel=int(e["glabel"]),
                    set_id=int(e["set"]),
                    event=str(e["event"]),
                    name=str(e["name"]),
                )
                for e in data["elements"]
            )
            sets = {int(k): str(v) for k, v in data["sets"].items()}
            attributes = {
                int(glabel): tuple(
                    AttributeAnswer(q, bit == "1")
                    for q, bit in zip(entry["questions"], entry["BTcode"], strict=True)
                )
                for glabel, entry in data.get("attributes", {}).items()
            }
            class_attributes = {int(k): dict(v) for k, v in data.get("class_attributes", {}).items()}
            issues = tuple(str(i) for i in data.get("issues", []))
        except (KeyError, TypeError, ValueError) as err:
            if isinstance(err, HierarchyError):
                raise
            raise HierarchyError(
                f"{source}: malformed hierarchy JSON ({type(err).__name__}: {err})"
            ) from None
        return cls(
            elements=elements,
            sets=sets,
            attributes=attributes,
            class_attributes=class_attributes,
            issues=issues,
        )

    def save(self, path: str | Path) -> None:
        """Write ``to_json()`` to ``path`` (atomically, so readers never see half a file)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        write_text_atomic(path, json.dumps(self.to_json(), indent=2, ensure_ascii=False) + "\n")

    @classmethod
    def load(cls, path: str | Path) -> Hierarchy:
        path = Path(path)
        return cls.from_json(_read_json(path), source=str(path))

    # ------------------------------------------------------------------------------- builders
    @classmethod
    def from_finegym(
        cls,
        categories: str | Path,
        set_categories: str | Path | None = None,
        qtree: str | Path | None = None,
    ) -> Hierarchy:
        """Build from FineGym files: a ``gymNN``/``gym530`` categories file, set names, optional Qtree."""
        elements = read_categories(categories)
        sets = read_set_categories(set_categories) if set_categories is not None else {}
        issues: list[str] = []
        if set_categories is not None:
            _check_sets_known(elements, sets, Path(categories), Path(set_categories))
        attributes: dict[int, tuple[AttributeAnswer, ...]] = {}
        if qtree is not None:
            all_attributes, qtree_issues = read_qtree(qtree)
            glabels = {e.glabel for e in elements}
            attributes = {g: a for g, a in all_attributes.items() if g in glabels}
            issues += [message for glabel, message in sorted(qtree_issues.items()) if glabel in glabels]
            missing = sorted(glabels - set(attributes))
            if missing:
                issues.append(
                    f"{qtree}: no valid Qtree entry for {len(missing)} Glabel(s): "
                    f"{', '.join(map(str, missing[:20]))}{' …' if len(missing) > 20 else ''}"
                )
        return cls(elements=tuple(elements), sets=sets, attributes=attributes, issues=tuple(issues))

    @classmethod
    def from_dir(cls, directory: str | Path) -> Hierarchy:
        """Load a SynthGym-style folder: ``categories.txt``, ``set_categories.txt``, optional
        ``attributes_qtree.json`` (FineGym Qtree format) and optional ``meta.json`` (class attributes)."""
        directory = Path(directory)
        if not directory.is_dir():
            raise HierarchyError(f"{directory}: hierarchy folder not found")
        qtree = directory / "attributes_qtree.json"
        hierarchy = cls.from_finegym(
            directory / "categories.txt", directory / "set_categories.txt", qtree if qtree.is_file() else None
        )
        meta = directory / "meta.json"
        if meta.is_file():
            glabels = {e.glabel: e.label for e in hierarchy.elements}
            hierarchy.class_attributes = read_class_attributes(meta, hierarchy.num_classes, glabels)
        return hierarchy

    @classmethod
    def from_elements(cls, elements: Iterable[Element], sets: dict[int, str]) -> Hierarchy:
        """Build from in-memory elements (the SynthGym generator's path before it writes files)."""
        return cls(elements=tuple(sorted(elements, key=lambda e: e.label)), sets=dict(sets))


# ------------------------------------------------------------------------------------ file parsers
def _read_text(path: Path, what: str) -> str:
    if not path.is_file():
        raise HierarchyError(f"{path}: {what} not found")
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise HierarchyError(f"{path}: not a UTF-8 text file ({err})") from None


def _read_json(path: Path) -> Any:
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


def _check_sets_known(
    elements: list[Element], sets: dict[int, str], categories: Path, set_file: Path
) -> None:
    unknown = sorted({e.set_id for e in elements} - set(sets))
    if unknown:
        first = next(e for e in elements if e.set_id == unknown[0])
        raise HierarchyError(
            f"{categories}: class {first.label} uses set {unknown[0]}, which {set_file} does not define"
        )


def read_qtree(path: str | Path) -> tuple[dict[int, tuple[AttributeAnswer, ...]], dict[int, str]]:
    """Parse a FineGym Qtree JSON: bit ``i`` of ``BTcode`` ('1' = yes) answers ``questions[i]``.

    Returns ``({glabel: answers}, {glabel: issue})``. An entry whose BTcode length differs from its number of
    questions, or holds characters other than 0/1, is skipped and reported in ``issues`` (there is no
    safe way to tell which bit belongs to which question). A file that is not a JSON object of entries
    raises :class:`HierarchyError`.
    """
    path = Path(path)
    data = _read_json(path)
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
    data = _read_json(path)
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


def load_hierarchy(
    source: str | Path,
    set_categories: str | Path | None = None,
    qtree: str | Path | None = None,
    meta: str | Path | None = None,
) -> Hierarchy:
    """One entry point for scripts: a SynthGym folder, a saved hierarchy ``.json`` or a categories file.

    For a categories file, ``set_categories`` defaults to ``set_categories.txt`` beside it when that
    exists (FineGym ships them together); ``qtree`` and ``meta`` add attributes. For a folder or a
    saved hierarchy those extra files are part of the source and must not be given again.
    """
    source = Path(source)
    if source.is_dir() or source.suffix == ".json":
        if set_categories or qtree or meta:
            raise HierarchyError(
                f"{source}: set categories, Qtree and meta come from the hierarchy itself "
                "when it is a folder or a saved .json"
            )
        return Hierarchy.from_dir(source) if source.is_dir() else Hierarchy.load(source)
    if set_categories is None and (source.parent / "set_categories.txt").is_file():
        set_categories = source.parent / "set_categories.txt"
    hierarchy = Hierarchy.from_finegym(source, set_categories, qtree)
    if meta is not None:
        glabels = {e.glabel: e.label for e in hierarchy.elements}
        hierarchy.class_attributes = read_class_attributes(meta, hierarchy.num_classes, glabels)
    return hierarchy
