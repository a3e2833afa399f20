"""SynthGym routines: untrimmed clips of 4-8 elements of one event, for temporal element detection.

::

    plan_routines(preset, seed)  ──►  RoutineSpec per routine (split, event, elements, link lengths)
            │   (workers, any order: each routine depends on its own spec only)
            ▼
    render_routine(spec) → videos/<routine_id>.mp4 + its ground truth
            │
            ▼
    routines.json (gym_qa.routine_annotations format), categories.txt, set_categories.txt, meta.json

A routine is a chain of element performances laid out exactly like single SynthGym clips, linked by steps,
held poses and swings (:mod:`gym_qa.synthgym.routine_tracks`), rendered in one piece by the element
generator's renderer with one athlete, look and camera. Its ground truth: per element the frames
``[start, end)`` a trimmed element clip would hold, its class label (the class labels of the element preset
the routine preset names), and the routine-level labels derived from them. Everything is a function of
(seed, split, index); the element data set generator (:mod:`gym_qa.synthgym.dataset`) is not touched, so its
output stays byte-identical.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
from tqdm import tqdm

from gym_qa.atomic_files import write_text_atomic
from gym_qa.routine_annotations import Routine, RoutineSegment, write_routines_json
from gym_qa.synthgym.dataset import PRESETS
from gym_qa.synthgym.elements import BY_GLABEL, SETS
from gym_qa.synthgym.metadata import category_line, class_table
from gym_qa.synthgym.nuisance import Nuisance, sample_nuisance
from gym_qa.synthgym.parallel import run_jobs
from gym_qa.synthgym.pose_tracks import pose_track
from gym_qa.synthgym.poses import FPS
from gym_qa.synthgym.render import RenderedClip, render
from gym_qa.synthgym.routine_tracks import (
    CLOSING_KINDS,
    HELD_POSES,
    MIN_LINK_FRAMES,
    RoutineTrack,
    element_nuisance,
    routine_track,
)
from gym_qa.synthgym.writer import write_mp4

ROUTINE_VERSION = "1.0"
SPLITS: dict[str, tuple[int, str, str]] = {  # split -> (seed code, id letter, ActivityNet subset)
    "train": (11, "t", "training"),
    "val": (12, "v", "validation"),
    "test": (13, "e", "testing"),
}


@dataclass(frozen=True)
class RoutinePreset:
    """Sizes of a routine data set; classes are those of the element preset ``classes``."""

    name: str
    classes: str  # a key of gym_qa.synthgym.dataset.PRESETS
    train: int
    val: int
    test: int
    elements: tuple[int, int] = (4, 8)  # elements per routine, inclusive
    seconds: tuple[float, float] = (15.0, 40.0)  # routine length; more when the elements need it
    min_element_share: float = 0.6  # the ground-truth segment: the trimmed element clip's frames

    @property
    def glabels(self) -> tuple[int, ...]:
        return PRESETS[self.classes].glabels

    @property
    def camera(self) -> str:
        return PRESETS[self.classes].camera

    @property
    def style(self) -> str:
        return PRESETS[self.classes].style


ROUTINE_PRESETS: dict[str, RoutinePreset] = {
    # tests: 5 short routines of the quickstart's 12 classes (a few seconds to generate)
    "tiny": RoutinePreset(
        "tiny", "quickstart", train=3, val=1, test=1, elements=(4, 5), seconds=(15.0, 16.0)
    ),
    # the detection bench: the bench's 40 classes, the full 15-40 s range (~280 routines: minutes on 2 cores)
    "bench": RoutinePreset("bench", "bench", train=160, val=40, test=80),
}


@dataclass(frozen=True)
class RoutineSpec:
    """One routine to generate: its elements (glabels, class labels, nuisance seeds) and links."""

    split: str
    index: int
    event: str
    glabels: tuple[int, ...]
    labels: tuple[int, ...]
    element_seeds: tuple[int, ...]
    routine_seed: int
    link_frames: tuple[int, ...]  # len(glabels) + 1
    link_kinds: tuple[str, ...]  # "steps" or "pose" (ground links; hanging ones become "swing")
    held_poses: tuple[str, ...]  # keys of HELD_POSES

    @property
    def routine_id(self) -> str:
        """11 characters like SynthGym's clip stems: ``SR<split letter><8-digit index>``."""
        return f"SR{SPLITS[self.split][1]}{self.index:08d}"


def _seed(*parts: int) -> int:
    return int(np.random.SeedSequence([int(p) for p in parts]).generate_state(1)[0])


def _choose_elements(rng: np.random.Generator, glabels: list[int], n: int) -> list[int]:
    """``n`` elements of one event: any non-closing ones, then a closing one (dismount, transition) last
    half of the time when the event has one."""
    regular = [g for g in glabels if BY_GLABEL[g].kind not in CLOSING_KINDS] or glabels
    closing = [g for g in glabels if BY_GLABEL[g].kind in CLOSING_KINDS]
    chosen = [int(rng.choice(regular)) for _ in range(n)]
    if closing and rng.random() < 0.5:
        chosen[-1] = int(rng.choice(closing))
    if any(BY_GLABEL[g].kind in CLOSING_KINDS for g in chosen[:-1]):  # only closing elements exist
        chosen = [chosen[-1]]
    return chosen


def plan_routines(preset: RoutinePreset, seed: int, difficulty: float = 1.0) -> list[RoutineSpec]:
    """Every routine of the data set in (split, index) order; events take turns in a seeded order so each
    split has about as many routines of each event."""
    label_of = {g: i for i, g in enumerate(preset.glabels)}
    by_event: dict[str, list[int]] = {}
    for g in preset.glabels:
        by_event.setdefault(BY_GLABEL[g].event, []).append(g)
    events = sorted(by_event)
    specs: list[RoutineSpec] = []
    for split, count in (("train", preset.train), ("val", preset.val), ("test", preset.test)):
        code = SPLITS[split][0]
        order = np.random.default_rng(np.random.SeedSequence([int(seed), code, 0xE7])).permutation(
            len(events)
        )
        for index in range(count):
            rng = np.random.default_rng(np.random.SeedSequence([int(seed), code, index, 0x52]))
            event = events[order[index % len(events)]]
            n = int(rng.integers(preset.elements[0], preset.elements[1] + 1))
            glabels = _choose_elements(rng, by_event[event], n)
            element_seeds = tuple(_seed(seed, code, index, 1 + i) for i in range(len(glabels)))
            routine_seed = _seed(seed, code, index, 0)
            frames = _element_frames(glabels, element_seeds, routine_seed, difficulty)
            target = round(rng.uniform(*preset.seconds) * FPS)
            gaps = len(glabels) + 1
            spare = max(0, target - frames - gaps * MIN_LINK_FRAMES)
            shares = rng.dirichlet(np.full(gaps, 2.0))
            extra = np.floor(shares * spare).astype(int)
            extra[-1] += spare - int(extra.sum())
            specs.append(
                RoutineSpec(
                    split=split,
                    index=index,
                    event=event,
                    glabels=tuple(glabels),
                    labels=tuple(label_of[g] for g in glabels),
                    element_seeds=element_seeds,
                    routine_seed=routine_seed,
                    link_frames=tuple(int(MIN_LINK_FRAMES + e) for e in extra),
                    link_kinds=tuple(str(k) for k in rng.choice(["steps", "pose"], size=gaps)),
                    held_poses=tuple(str(k) for k in rng.choice(sorted(HELD_POSES), size=gaps)),
                )
            )
    return specs


def _nuisances(
    element_seeds: tuple[int, ...], routine_seed: int, difficulty: float, style: str
) -> tuple[Nuisance, list[Nuisance]]:
    """The routine's nuisance (athlete, look, camera) and each element's (its timing, place, sides)."""
    routine = sample_nuisance(routine_seed, difficulty, style)
    # a camera pan accumulates over a routine's 15-40 s and would push the athlete to the frame's edge
    routine = replace(routine, pan=0.0)
    return routine, [element_nuisance(routine, sample_nuisance(s, difficulty, style)) for s in element_seeds]


def _element_frames(glabels: list[int], seeds: tuple[int, ...], routine_seed: int, difficulty: float) -> int:
    """Frames of the untrimmed element performances (timing does not depend on the style)."""
    _, nuisances = _nuisances(seeds, routine_seed, difficulty, "cluttered")
    return sum(pose_track(BY_GLABEL[g], nz, 0.0).num_frames for g, nz in zip(glabels, nuisances))


def render_routine(
    spec: RoutineSpec, preset: RoutinePreset, difficulty: float, width: int = 64, height: int = 64
) -> tuple[RoutineTrack, RenderedClip, Nuisance]:
    """Pose track with ground truth, and frames, of one planned routine (no file written), in the style and
    camera of the preset's element classes."""
    routine, nuisances = _nuisances(spec.element_seeds, spec.routine_seed, difficulty, preset.style)
    track = routine_track(
        [BY_GLABEL[g] for g in spec.glabels],
        nuisances,
        routine,
        list(spec.link_frames),
        list(spec.link_kinds),
        list(spec.held_poses),
        preset.min_element_share,
    )
    return track, render(track.track, routine, width, height, preset.camera), routine


def generate_routine(
    spec: RoutineSpec, preset: RoutinePreset, video_dir: str, difficulty: float, width: int, height: int
) -> dict:
    """Render and write one routine; returns its record (ground truth in frames)."""
    rt, clip, nz = render_routine(spec, preset, difficulty, width, height)
    write_mp4(Path(video_dir) / f"{spec.routine_id}.mp4", clip.frames, fps=FPS, crf=nz.crf)
    return {
        "split": spec.split,
        "index": spec.index,
        "routine_id": spec.routine_id,
        "event": spec.event,
        "num_frames": rt.track.num_frames,
        "frame_segments": [[s, e, spec.labels[i]] for s, e, i in rt.segments],
        "glabels": list(spec.glabels),
        "links": rt.links,
    }


def _work(args: tuple) -> dict:
    return generate_routine(*args)


def routine_from_record(record: dict) -> Routine:
    """The :class:`~gym_qa.routine_annotations.Routine` of a generated routine's record."""
    segments = [
        RoutineSegment(s / FPS, e / FPS, label, BY_GLABEL[g].set_id, BY_GLABEL[g].event)
        for (s, e, label), g in zip(record["frame_segments"], record["glabels"])
    ]
    extra = {
        "video": f"videos/{record['routine_id']}.mp4",
        "num_frames": record["num_frames"],
        "fps": FPS,
        "frame_segments": record["frame_segments"],
        "glabels": record["glabels"],
        "links": record["links"],
    }
    return Routine(
        record["routine_id"],
        SPLITS[record["split"]][2],
        record["num_frames"] / FPS,
        record["event"],
        segments,
        extra,
    )


def frame_labels(routine: Routine) -> np.ndarray:
    """(T,) per frame the class label of the element it belongs to, -1 for linking motion (a generated
    routine's ``frame_segments``)."""
    out = np.full(int(routine.extra["num_frames"]), -1, np.int64)
    for start, end, label in routine.extra["frame_segments"]:
        out[start:end] = label
    return out


def generate_routines(
    out: str | Path,
    preset: str | RoutinePreset = "tiny",
    seed: int = 0,
    difficulty: float = 1.0,
    workers: int | None = None,
    width: int = 64,
    height: int = 64,
    progress: bool = True,
) -> dict:
    """Write a routine data set to ``out``: ``videos/``, ``routines.json``, ``categories.txt``,
    ``set_categories.txt`` and ``meta.json`` (returned). ``workers`` defaults to the CPU count."""
    preset = ROUTINE_PRESETS[preset] if isinstance(preset, str) else preset
    out = Path(out)
    (out / "videos").mkdir(parents=True, exist_ok=True)
    specs = plan_routines(preset, seed, difficulty)
    jobs = [(s, preset, str(out / "videos"), difficulty, width, height) for s in specs]
    workers = max(1, int(workers or os.cpu_count() or 1))
    bar = tqdm(total=len(jobs), desc=f"SynthGym routines {preset.name}", unit="routine", disable=not progress)
    records = run_jobs(_work, jobs, workers, bar)
    bar.close()
    records.sort(key=lambda r: (SPLITS[r["split"]][0], r["index"]))
    routines = [routine_from_record(r) for r in records]
    elements = [BY_GLABEL[g] for g in preset.glabels]
    names = {i: (e.name, e.set_id, e.event) for i, e in enumerate(elements)}
    write_routines_json(
        out / "routines.json", routines, names, f"SynthGym routines {preset.name}, seed {seed}"
    )
    write_text_atomic(
        out / "categories.txt", "".join(category_line(i, e) + "\n" for i, e in enumerate(elements))
    )
    write_text_atomic(out / "set_categories.txt", "".join(f"set: {s}; {name}\n" for s, name in SETS.items()))
    seconds = [r.duration for r in routines]
    per_routine = [len(r.segments) for r in routines]
    element_frames = sum(e - s for r in records for s, e, _ in r["frame_segments"])
    meta = {
        "dataset": "synthgym-routines",
        "generator_version": ROUTINE_VERSION,
        "preset": preset.name,
        "classes_from": preset.classes,
        "seed": seed,
        "difficulty": difficulty,
        "camera": preset.camera,
        "style": preset.style,
        "min_element_share": preset.min_element_share,
        "fps": FPS,
        "resolution": [width, height],
        "num_classes": len(elements),
        "classes": class_table(elements),  # as in an element data set's meta.json (Hierarchy.from_dir)
        "routines": {s: sum(r["split"] == s for r in records) for s in SPLITS},
        "seconds": [round(min(seconds), 2), round(float(np.mean(seconds)), 2), round(max(seconds), 2)],
        "elements_per_routine": [min(per_routine), round(float(np.mean(per_routine)), 2), max(per_routine)],
        "element_frame_share": round(element_frames / sum(r["num_frames"] for r in records), 3),
    }
    write_text_atomic(out / "meta.json", json.dumps(meta, indent=1) + "\n")
    return meta
