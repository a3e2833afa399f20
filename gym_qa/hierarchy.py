"""The event → set → element hierarchy of FineGym (and of SynthGym, which writes the same files).

:class:`Hierarchy` holds the classes with their set and event, the set names and the per-element
attributes, read from FineGym's metadata files (or a SynthGym folder) by the parsers of
:mod:`gym_qa.hierarchy_files` (docs/DESIGN.md §FineGym metadata and hierarchy); :func:`load_hierarchy`
is the one entry point for scripts. A hierarchy can be saved as JSON next to a model
(:meth:`Hierarchy.save`) so a checkpoint knows its class names, sets and events without the metadata
folder.

Quirks handled on purpose: Gym99 has 10 pairs of classes sharing one description (sometimes across
events: "switch leap with 0.5 turn" is a floor and a beam element), so a name does not identify a class
(:meth:`Hierarchy.labels_with_name`); Gym99 uses 14 of the 15 sets (:attr:`Hierarchy.used_sets`).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gym_qa.atomic_files import write_text_atomic
from gym_qa.hierarchy_files import (
    EVENT_NAMES,
    EVENT_OF_SET_DIGIT,
    AttributeAnswer,
    Element,
    HierarchyError,
    read_categories,
    read_class_attributes,
    read_json,
    read_qtree,
    read_set_categories,
)

HIERARCHY_FORMAT_VERSION = 1
# A typo in FineGym's set_categories.txt ("UB_fligh_same_bar"), fixed in rendered set names only.
_SET_WORD_FIXES = {"fligh": "flight"}


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
        return cls.from_json(read_json(path), source=str(path))

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


def _check_sets_known(
    elements: list[Element], sets: dict[int, str], categories: Path, set_file: Path
) -> None:
    unknown = sorted({e.set_id for e in elements} - set(sets))
    if unknown:
        first = next(e for e in elements if e.set_id == unknown[0])
        raise HierarchyError(
            f"{categories}: class {first.label} uses set {unknown[0]}, which {set_file} does not define"
        )


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
