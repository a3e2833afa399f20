"""Routine annotations and detections in ActivityNet-style JSON: the format every detection step shares.

A *routine* is one untrimmed performance (a FineGym event, a SynthGym routine clip) holding several
elements. The ground-truth file reads::

    {"version": "gym-routines-1", "source": "...", "classes": {"0": {"name": ..., "set": 1, "event": "VT"}},
     "database": {"<routine id>": {"subset": "training", "duration": 41.0, "event": "FX",
                                   "annotations": [{"segment": [3.0, 5.0], "label": "<name>",
                                                    "label_id": 12, "set": 22, "event": "FX"}, ...],
                                   ...extra fields of the source (video id, event span, fps, ...)}}}

as ActivityNet's ``database`` (segments in seconds from the routine's start, ``subset`` among
``training``/``validation``/``testing``), plus ``label_id`` because element names do not identify classes
(Gym99 shares 10 names). Detections read ``{"results": {"<routine id>": [{"segment": [s, e],
"label_id": 12, "score": 0.9}, ...]}}``, ActivityNet's submission format with ``label_id``.

The coarse levels of the hierarchy (set, event) ride along on every segment, and the routine-level labels a
weakly-supervised detector trains from are derived, never stored: :meth:`Routine.labels`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gym_qa.atomic_files import write_text_atomic
from gym_qa.detection_eval import Detection

FORMAT_VERSION = "gym-routines-1"
SUBSETS = ("training", "validation", "testing")


class RoutineFileError(ValueError):
    """A routine or detection file is missing or malformed; the message names the file and the entry."""


@dataclass(frozen=True)
class RoutineSegment:
    """One element inside a routine, in seconds from the routine's start."""

    start: float
    end: float
    label: int
    set_id: int
    event: str


@dataclass
class Routine:
    """One untrimmed routine with its element segments (sorted by start)."""

    routine_id: str
    subset: str
    duration: float  # seconds
    event: str  # event code of its elements (VT, FX, BB, UB)
    segments: list[RoutineSegment]
    extra: dict[str, Any] = field(default_factory=dict)  # source-specific fields, written as they are

    def labels(self) -> list[int]:
        """The routine-level (weak) labels: the element classes present, sorted."""
        return sorted({s.label for s in self.segments})

    def sets(self) -> list[int]:
        """The coarse labels (sets) present, sorted."""
        return sorted({s.set_id for s in self.segments})


def routines_to_json(
    routines: list[Routine], class_names: dict[int, tuple[str, int, str]], source: str
) -> dict[str, Any]:
    """The JSON document of ``routines``; ``class_names`` maps label -> (name, set id, event)."""
    database: dict[str, Any] = {}
    for routine in routines:
        if routine.routine_id in database:
            raise ValueError(f"routine {routine.routine_id} listed twice")
        entry: dict[str, Any] = {"subset": routine.subset, "duration": routine.duration}
        entry["event"] = routine.event
        entry.update(routine.extra)
        entry["annotations"] = [
            {
                "segment": [s.start, s.end],
                "label": class_names[s.label][0],
                "label_id": s.label,
                "set": s.set_id,
                "event": s.event,
            }
            for s in routine.segments
        ]
        database[routine.routine_id] = entry
    classes = {
        str(label): {"name": name, "set": set_id, "event": event}
        for label, (name, set_id, event) in sorted(class_names.items())
    }
    return {"version": FORMAT_VERSION, "source": source, "classes": classes, "database": database}


def write_routines_json(
    path: str | Path, routines: list[Routine], class_names: dict[int, tuple[str, int, str]], source: str
) -> None:
    """Write the routines file atomically (indented, so a diff of two versions reads)."""
    document = routines_to_json(routines, class_names, source)
    write_text_atomic(path, json.dumps(document, indent=1) + "\n")


def _load(path: Path, what: str) -> Any:
    if not path.is_file():
        raise RoutineFileError(f"{path}: {what} not found")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        line = getattr(err, "lineno", None)
        raise RoutineFileError(f"{path}{f':{line}' if line else ''}: not valid JSON ({err})") from None


def read_routines_json(path: str | Path) -> tuple[list[Routine], dict[int, tuple[str, int, str]]]:
    """Routines and classes of a routines file; every malformed entry raises naming file and routine."""
    path = Path(path)
    data = _load(path, "routines file")
    if not isinstance(data, dict) or data.get("version") != FORMAT_VERSION:
        raise RoutineFileError(f"{path}: expected a routines file with version {FORMAT_VERSION!r}")
    try:
        classes = {
            int(k): (str(v["name"]), int(v["set"]), str(v["event"])) for k, v in data["classes"].items()
        }
    except (KeyError, TypeError, ValueError, AttributeError) as err:
        raise RoutineFileError(f"{path}: malformed 'classes' ({err!r})") from None
    routines = []
    for routine_id, entry in data.get("database", {}).items():
        where = f"{path}: routine {routine_id}"
        try:
            extra = {
                k: v for k, v in entry.items() if k not in ("subset", "duration", "event", "annotations")
            }
            segments = [
                RoutineSegment(
                    float(a["segment"][0]),
                    float(a["segment"][1]),
                    int(a["label_id"]),
                    int(a["set"]),
                    a["event"],
                )
                for a in entry["annotations"]
            ]
            routine = Routine(
                routine_id,
                str(entry["subset"]),
                float(entry["duration"]),
                str(entry["event"]),
                segments,
                extra,
            )
        except (KeyError, TypeError, ValueError, IndexError) as err:
            raise RoutineFileError(f"{where}: malformed entry ({err!r})") from None
        for s in segments:
            if not 0.0 <= s.start <= s.end <= routine.duration:
                raise RoutineFileError(
                    f"{where}: segment [{s.start}, {s.end}] outside the routine [0, {routine.duration}]"
                )
            if s.label not in classes:
                raise RoutineFileError(f"{where}: label_id {s.label} is not among the file's classes")
        routines.append(routine)
    return routines, classes


def ground_truth_detections(routines: list[Routine], subset: str | None = None) -> list[Detection]:
    """The segments of the routines (of one subset, or all) as :class:`Detection` for the evaluation."""
    return [
        Detection(r.routine_id, s.start, s.end, s.label)
        for r in routines
        if subset is None or r.subset == subset
        for s in r.segments
    ]


def detections_to_json(detections: list[Detection]) -> dict[str, Any]:
    """ActivityNet's submission format (``results`` per routine) with ``label_id``."""
    results: dict[str, list[dict[str, Any]]] = {}
    for d in detections:
        results.setdefault(d.video, []).append(
            {"segment": [d.start, d.end], "label_id": d.label, "score": d.score}
        )
    return {"version": FORMAT_VERSION, "results": results}


def read_detections_json(path: str | Path) -> list[Detection]:
    """The detections of a results file; a malformed one raises naming file and routine."""
    path = Path(path)
    data = _load(path, "detections file")
    if not isinstance(data, dict) or not isinstance(data.get("results"), dict):
        raise RoutineFileError(f"{path}: expected an object with a 'results' object")
    detections = []
    for routine_id, items in data["results"].items():
        try:
            detections += [
                Detection(
                    routine_id,
                    float(i["segment"][0]),
                    float(i["segment"][1]),
                    int(i["label_id"]),
                    float(i["score"]),
                )
                for i in items
            ]
        except (KeyError, TypeError, ValueError, IndexError) as err:
            raise RoutineFileError(f"{path}: routine {routine_id}: malformed detection ({err!r})") from None
    return detections
