"""FineGym routines rebuilt from the public element lists: the ground truth of temporal element detection.

FineGym's clip ids read ``<YouTubeID>_E_<s>_<e>_A_<a>_<b>``: the event (one routine on one apparatus) spans
seconds ``s``..``e`` of the YouTube video, and the element spans seconds ``a``..``b`` *from the event's
start*. Evidence, measured on the packaged Gym99/Gym288 lists (docs/detection.md): ``b`` never exceeds
``e - s`` while the ``E`` values run into the thousands, and the elements of one event never overlap once
sorted. So every distinct ``(YouTubeID, s, e)`` is a routine of ``e - s`` seconds and each of its clips a
segment ``[a, b]`` in it.

What the lists cannot give:

- Only the elements of the list's classes are there (Gym99: 99 of 530 elements): a routine's other
  elements are unannotated, so the routines are *partially* labeled; a detector evaluated on them is
  charged false positives for elements it finds outside those classes only if it predicts those classes.
- Times are whole seconds. Elements shorter than that come out with ``a == b`` (7 % of Gym99 train). Such
  a segment is widened to the second around it, ``[a - 0.5, a + 0.5]``, clipped to the routine and to its
  neighbours' original bounds so nothing starts to overlap; the number widened is reported, and a segment
  squeezed between two neighbours that touch it stays zero-length (counted).
- FineGym split its elements, not its routines: some routines have elements in both the train and the val
  list. They are kept once, with all their elements, in the subset ``training+validation``, and counted,
  so a user can drop them rather than train and test on one routine.
"""

from __future__ import annotations

import statistics
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from gym_qa.finegym import ElementClip, read_element_list
from gym_qa.hierarchy_files import Element, read_categories
from gym_qa.routine_annotations import Routine, RoutineSegment

MIXED_SUBSET = "training+validation"


@dataclass
class RoutineCounts:
    """What :func:`build_finegym_routines` found, for the report and docs/detection.md."""

    routines: dict[str, int]  # subset -> routines
    segments: int
    segments_per_routine: dict[str, float]  # mean, median, min, max
    duration_seconds: dict[str, float]  # mean, median, min, max
    widened_zero_length: int  # a == b segments widened to the second around them
    left_zero_length: int  # a == b segments squeezed between touching neighbours
    events: dict[str, int]  # event code -> routines

    def to_json(self) -> dict:
        return dict(self.__dict__)


def _summary(values: list[float]) -> dict[str, float]:
    return {
        "mean": round(statistics.fmean(values), 3),
        "median": float(statistics.median(values)),
        "min": float(min(values)),
        "max": float(max(values)),
    }


def _segments(clips: list[ElementClip], duration: float, elements: list[Element]) -> tuple[list, int, int]:
    """Sorted segments of one routine, zero-length ones widened (see the module docstring)."""
    spans = sorted((c.action_span, c.label) for c in clips)
    segments, widened, left_zero = [], 0, 0
    for i, ((a, b), label) in enumerate(spans):
        start, end = float(a), float(b)
        if a == b:
            previous_end = float(spans[i - 1][0][1]) if i > 0 else 0.0
            next_start = float(spans[i + 1][0][0]) if i + 1 < len(spans) else duration
            start, end = max(a - 0.5, previous_end, 0.0), min(a + 0.5, next_start, duration)
            widened += end > start
            left_zero += end == start
        element = elements[label]
        segments.append(RoutineSegment(start, end, label, element.set_id, element.event))
    return segments, widened, left_zero


def build_finegym_routines(
    element_lists: dict[str, str | Path], categories: str | Path
) -> tuple[list[Routine], RoutineCounts]:
    """Routines of the element lists (``{subset: path}``, e.g. ``{"training": gym99_train…, "validation":
    gym99_val…}``) with the classes of ``categories`` (the list's ``gymNN_categories.txt``).

    A clip id that is not FineGym's, a label outside the categories, or a routine whose elements belong to
    two events raises ``ValueError`` naming the list and line.
    """
    elements = read_categories(categories)
    clips_of: dict[tuple[str, int, int], list[ElementClip]] = defaultdict(list)
    subsets_of: dict[tuple[str, int, int], set[str]] = defaultdict(set)
    first_line: dict[tuple[str, int, int], str] = {}
    for subset, path in element_lists.items():
        for clip in read_element_list(path, num_classes=len(elements)):
            if clip.video_id is None or clip.event_span is None or clip.action_span is None:
                raise ValueError(f"{path}:{clip.line}: {clip.clip_id} is not a FineGym clip id")
            key = (clip.video_id, *clip.event_span)
            duration = clip.event_span[1] - clip.event_span[0]
            if not 0 <= clip.action_span[0] <= clip.action_span[1] <= duration:
                raise ValueError(
                    f"{path}:{clip.line}: element span {clip.action_span} is not inside its event of "
                    f"{duration} s"
                )
            clips_of[key].append(clip)
            subsets_of[key].add(subset)
            first_line.setdefault(key, f"{path}:{clip.line}")
    routines: list[Routine] = []
    widened = left_zero = 0
    for key in sorted(clips_of):
        video_id, event_start, event_end = key
        duration = float(event_end - event_start)
        segments, n_widened, n_zero = _segments(clips_of[key], duration, elements)
        widened, left_zero = widened + n_widened, left_zero + n_zero
        events = {s.event for s in segments}
        if len(events) > 1:
            raise ValueError(f"{first_line[key]}: routine {key} has elements of events {sorted(events)}")
        subsets = subsets_of[key]
        subset = next(iter(subsets)) if len(subsets) == 1 else MIXED_SUBSET
        routine_id = f"{video_id}_E_{event_start:06d}_{event_end:06d}"
        extra = {"video_id": video_id, "event_span": [event_start, event_end]}
        routines.append(Routine(routine_id, subset, duration, events.pop(), segments, extra))
    per_subset: dict[str, int] = defaultdict(int)
    per_event: dict[str, int] = defaultdict(int)
    for r in routines:
        per_subset[r.subset] += 1
        per_event[r.event] += 1
    counts = RoutineCounts(
        routines=dict(sorted(per_subset.items())),
        segments=sum(len(r.segments) for r in routines),
        segments_per_routine=_summary([len(r.segments) for r in routines]),
        duration_seconds=_summary([r.duration for r in routines]),
        widened_zero_length=widened,
        left_zero_length=left_zero,
        events=dict(sorted(per_event.items())),
    )
    return routines, counts


def class_names(categories: str | Path) -> dict[int, tuple[str, int, str]]:
    """label -> (name, set id, event) of a categories file, for the routines JSON."""
    return {e.label: (e.name, e.set_id, e.event) for e in read_categories(categories)}
