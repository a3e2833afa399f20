"""Generating a SynthGym data set directory: presets, the clip plan, parallel rendering, list files.

::

    plan_dataset(preset, seed)  ──►  ClipSpec per clip (split, class, nuisance seed, id)
            │   (workers, any order: each clip depends on its own spec only)
            ▼
    render_clip(spec) → videos/<clip_id>.mp4 (+ per-frame annotations for pretrain clips)
            │
            ▼
    lists (val/test/splits), elements.txt, categories/Qtree/meta/README, contact sheet

Every clip's nuisance seed is derived from (seed, split, index) with ``numpy.random.SeedSequence``,
so results do not depend on the number of workers or the order they finish in. The pretraining split
has its own derived seeds and never shares a clip with the train pool, val or test.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from gym_qa.atomic_files import atomic_replace
from gym_qa.lists import read_list, write_list
from gym_qa.synthgym.apparatus import apparatus_for
from gym_qa.synthgym.elements import BY_GLABEL, CATALOGUE, ElementSpec
from gym_qa.synthgym.nuisance import STYLES, Nuisance, sample_nuisance
from gym_qa.synthgym.parallel import run_jobs
from gym_qa.synthgym.pose_tracks import PoseTrack, pose_track
from gym_qa.synthgym.poses import FPS, SHAPES
from gym_qa.synthgym.render import RenderedClip, render
from gym_qa.synthgym.splits import RATES, label_rate_splits
from gym_qa.synthgym.writer import write_mp4

# 1.1: the athlete close-up camera; 1.2: body parts and chest normal in the pretraining annotations;
# 1.3: render styles (legible: a colour per body part, plain background) and FineGym-style trimming
GENERATOR_VERSION = "1.3"
SPLIT_CODES: dict[str, int] = {"train": 1, "val": 2, "test": 3, "pretrain": 4}
SPLIT_LETTERS: dict[str, str] = {"train": "t", "val": "v", "test": "e", "pretrain": "r"}


@dataclass(frozen=True)
class Preset:
    """Sizes of a data set. Pool counts per class vary linearly from ``pool_per_class * (1 + imbalance/2)``
    down to ``* (1 - imbalance/2)`` in a seeded class order (a mild long tail, as in FineGym)."""

    name: str
    glabels: tuple[int, ...]  # SynthGym elements used, in class-label order
    pool_per_class: int
    val_per_class: int
    test_per_class: int
    pretrain_clips: int
    imbalance: float = 0.0
    camera: str = "scene"  # render.CAMERAS: "scene" keeps the apparatus in view, "athlete" is a close-up
    style: str = "cluttered"  # nuisance.STYLES: random colours and clutter, or a fixed colour per body part
    # > 0: trim run-up and landing so the element window is at least this share of every clip
    min_element_share: float = 0.0


def _g(event: str, *names: str) -> tuple[int, ...]:
    out = []
    for n in names:
        out.append(next(e.glabel for e in CATALOGUE if e.event == event and e.name == n))
    return tuple(out)


_TINY = (
    _g(
        "FX",
        "salto forward tucked",
        "salto backward tucked",
        "salto backward stretched",
        "salto backward stretched with 1 twist",
    )
    + _g(
        "VT",
        "round-off, flic-flac on, stretched salto backward off",
        "handspring forward on, salto forward tucked off",
    )
    + _g(
        "BB",
        "1 turn on one leg, free leg optional below horizontal",
        "2 turn on one leg, free leg optional below horizontal",
        "salto backward tucked",
    )
    + _g(
        "UB",
        "giant circle backward",
        "giant circle forward",
        "giant circle backward with 0.5 turn to handstand",
    )
)
_SMALL = (
    _g(
        "VT",
        "round-off, flic-flac on, stretched salto backward off",
        "round-off, flic-flac on, stretched salto backward with 1 turn off",
        "handspring forward on, salto forward tucked off",
        "handspring forward on, salto forward stretched off",
        "handspring forward on, salto forward stretched with 1 turn off",
    )
    + _g(
        "FX",
        "split jump (leg separation 180 degree parallel to the floor)",
        "split jump with 1 turn",
        "1 turn on one leg, free leg optional below horizontal",
        "2 turn on one leg, free leg optional below horizontal",
        "salto forward tucked",
        "salto forward piked",
        "salto forward stretched, feet land together",
        "salto forward stretched with 1 twist",
        "salto backward tucked",
        "salto backward piked",
        "salto backward stretched",
        "salto backward stretched with 1 twist",
    )
    + _g(
        "BB",
        "1 turn on one leg, free leg optional below horizontal",
        "2 turn on one leg, free leg optional below horizontal",
        "salto backward tucked",
        "salto forward tucked",
        "flic-flac to land on both feet",
    )
    + _g(
        "UB",
        "giant circle backward",
        "giant circle forward",
        "giant circle backward with 0.5 turn to handstand",
        "clear hip circle backward to handstand",
        "(swing forward) salto backward tucked dismount",
    )
)

PRESETS: dict[str, Preset] = {
    "tiny": Preset("tiny", _TINY, pool_per_class=6, val_per_class=1, test_per_class=1, pretrain_clips=12),
    "small": Preset(
        "small",
        _SMALL,
        pool_per_class=30,
        val_per_class=4,
        test_per_class=6,
        pretrain_clips=120,
        imbalance=0.4,
    ),
    # scripts/quickstart.py: the tiny preset's 12 elements (forward/backward, twist and turn pairs) with
    # enough clips for the semi-supervised encoder and the MLLM stages to learn in a few CPU minutes; the
    # legible style, so that a frame shows facing and left/right, trimmed around the element like FineGym
    "quickstart": Preset(
        "quickstart",
        _TINY,
        pool_per_class=30,
        val_per_class=4,
        test_per_class=8,
        pretrain_clips=480,
        camera="athlete",
        style="legible",
        min_element_share=0.6,
    ),
    # scripts/bench_ssl.py: 40 elements (the small preset's and 13 more: direction, shape, twist and turn
    # pairs on all four apparatus) seen by the close-up camera; 10 % labels = 8 clips per class
    "bench": Preset(
        "bench",
        tuple(
            sorted(
                _SMALL
                + _g(
                    "VT",
                    "round-off, flic-flac on, tucked salto backward off",
                    "handspring forward on, salto forward piked off",
                )
                + _g(
                    "FX",
                    "tuck jump",
                    "stag jump",
                    "double salto forward tucked",
                    "double salto backward tucked",
                )
                + _g(
                    "BB",
                    "split jump",
                    "wolf hop or jump (hip angle at 45, knees together)",
                    "handspring forward to land on both feet",
                    "salto backward tucked dismount",
                )
                + _g(
                    "UB",
                    "giant circle forward with 0.5 turn to handstand",
                    "transition flight from high bar to low bar",
                    "(swing forward) salto backward stretched dismount",
                )
            )
        ),
        pool_per_class=80,
        val_per_class=13,
        test_per_class=25,
        pretrain_clips=2400,  # many clips: varied bodies, timings and camera framings for the frame ViT
        imbalance=0.5,
        camera="athlete",
        style="legible",
        min_element_share=0.6,
    ),
    # the whole catalogue (67 elements) with the scene camera: the athlete is 4-6 px wide at 64 px, which
    # the tiny CPU model cannot resolve (docs/RESULTS.md); meant for larger frames and models
    "full": Preset(
        "full",
        tuple(e.glabel for e in CATALOGUE),
        pool_per_class=48,
        val_per_class=8,
        test_per_class=16,
        pretrain_clips=800,
        imbalance=0.5,
    ),
}


@dataclass(frozen=True)
class ClipSpec:
    """One clip to generate. ``label`` is the class index in the preset, ``nuisance_seed`` drives
    everything but the element."""

    split: str
    index: int
    glabel: int
    label: int
    nuisance_seed: int

    @property
    def stem(self) -> str:
        """FineGym-like YouTube-id stand-in: 11 characters, no underscore."""
        return f"SG{SPLIT_LETTERS[self.split]}{self.index:08d}"


def clip_id(spec: ClipSpec, full_frames: int, span: tuple[int, int]) -> str:
    """FineGym's ``<ytid>_E_<start>_<end>_A_<start>_<end>``, in frames: the event is the whole performance
    (``full_frames``), the action the ``span`` of it the clip holds (all of it when untrimmed)."""
    return f"{spec.stem}_E_{0:06d}_{full_frames:06d}_A_{span[0]:04d}_{span[1]:04d}"


def nuisance_seed(seed: int, split: str, index: int) -> int:
    """The seed of one clip: a function of (data-set seed, split, index) only."""
    return int(np.random.SeedSequence([int(seed), SPLIT_CODES[split], int(index)]).generate_state(1)[0])


def _class_counts(preset: Preset, seed: int) -> list[int]:
    n = len(preset.glabels)
    if preset.imbalance <= 0 or n == 1:
        return [preset.pool_per_class] * n
    rank = np.random.default_rng(np.random.SeedSequence([int(seed), 0x1B])).permutation(n)
    w = 1 + preset.imbalance / 2 - preset.imbalance * rank / (n - 1)
    return [max(2, round(preset.pool_per_class * x)) for x in w]


def plan_dataset(preset: Preset, seed: int) -> list[ClipSpec]:
    """Every clip of the data set, in (split, index) order. Class order inside a split is shuffled."""
    specs: list[ClipSpec] = []
    counts = {
        "train": _class_counts(preset, seed),
        "val": [preset.val_per_class] * len(preset.glabels),
        "test": [preset.test_per_class] * len(preset.glabels),
    }
    n_pre = preset.pretrain_clips
    counts["pretrain"] = [
        n_pre // len(preset.glabels) + (1 if c < n_pre % len(preset.glabels) else 0)
        for c in range(len(preset.glabels))
    ]
    for split, per_class in counts.items():
        labels = np.repeat(np.arange(len(per_class)), per_class)
        rng = np.random.default_rng(np.random.SeedSequence([int(seed), SPLIT_CODES[split], 0xC1]))
        labels = labels[rng.permutation(len(labels))]
        specs += [
            ClipSpec(
                split=split,
                index=i,
                glabel=preset.glabels[int(c)],
                label=int(c),
                nuisance_seed=nuisance_seed(seed, split, i),
            )
            for i, c in enumerate(labels)
        ]
    return specs


def _wrap180(a: np.ndarray) -> np.ndarray:
    return (np.asarray(a) + 180.0) % 360.0 - 180.0


def render_clip(
    spec: ClipSpec,
    difficulty: float,
    width: int = 64,
    height: int = 64,
    camera: str = "scene",
    style: str = "cluttered",
    min_element_share: float = 0.0,
) -> tuple[PoseTrack, RenderedClip, Nuisance]:
    """Pose track (trimmed by ``min_element_share``) and rendered frames of one planned clip (no file
    written)."""
    element = BY_GLABEL[spec.glabel]
    nz = sample_nuisance(spec.nuisance_seed, difficulty, style)
    track = pose_track(element, nz, min_element_share)
    return track, render(track, nz, width, height, camera), nz


def generate_clip(
    spec: ClipSpec,
    video_dir: str,
    difficulty: float,
    width: int,
    height: int,
    camera: str = "scene",
    style: str = "cluttered",
    min_element_share: float = 0.0,
) -> dict:
    """Render and write one clip; returns its record (and per-frame annotations for pretrain clips)."""
    track, clip, nz = render_clip(spec, difficulty, width, height, camera, style, min_element_share)
    cid = clip_id(spec, track.full_frames, track.span)
    write_mp4(Path(video_dir) / f"{cid}.mp4", clip.frames, fps=FPS, crf=nz.crf)
    rec = {
        "split": spec.split,
        "index": spec.index,
        "clip_id": cid,
        "label": spec.label,
        "glabel": spec.glabel,
        "num_frames": track.num_frames,
        "element_share": track.element_share(),
    }
    if spec.split == "pretrain":
        e = track.element
        rec["annotation"] = {
            "clip_id": cid,
            "video": f"videos/{cid}.mp4",
            "label": spec.label,
            "glabel": spec.glabel,
            "event": e.event,
            "apparatus": apparatus_for(e.event).event,
            "apparatus_rgb": list(clip.apparatus_rgb),
            "num_frames": track.num_frames,
            "fps": FPS,
            "facing": nz.facing,
            "width": width,
            "height": height,
            "frames": {
                "rot": [round(float(v), 2) for v in _wrap180(track.rot)],
                "twist": [round(float(v), 2) for v in np.mod(track.twist, 360.0)],
                "shape": list(track.shape),
                "shape_id": [SHAPES.index(s) for s in track.shape],
                "box": clip.boxes.tolist(),
                "apparatus_px": clip.apparatus_px.tolist(),
                "parts": np.round(clip.parts_px, 1).tolist(),
                "chest": np.round(clip.chest, 3).tolist(),
            },
        }
    return rec


def write_rate_split(out: Path, pool: list[tuple[Path, int]], rate: int, labeled: list[int]) -> None:
    """``splits/<rate>/train.csv`` (the pool clips at the indices ``labeled``) and ``unlabel.csv`` (the rest)."""
    chosen = set(labeled)
    write_list(out / "splits" / str(rate) / "train.csv", [pool[i] for i in labeled])
    write_list(out / "splits" / str(rate) / "unlabel.csv", [c for i, c in enumerate(pool) if i not in chosen])


def add_label_rates(out: str | Path, rates: tuple[int, ...]) -> dict[int, int]:
    """Label-rate splits a data set was not generated with, e.g. 1 and 2 % on the bench (one and two labeled
    clips per class), nested with its own: the same seeded per-class order (``meta.json``'s seed) over the
    pool (``splits/100/train.csv``). The existing splits must be what that order gives (else an error names
    the file: the data set was edited). ``meta.json`` is left as generated. Returns {rate: labeled clips}."""
    out = Path(out)
    meta = json.loads((out / "meta.json").read_text(encoding="utf-8"))
    pool = [(e.path, e.label) for e in read_list(out / "splits" / "100" / "train.csv")]
    existing = sorted(int(d.name) for d in (out / "splits").iterdir() if d.name.isdigit() and d.name != "100")
    wanted = tuple(int(r) for r in rates)
    if any(not 0 < r < 100 for r in wanted):
        raise ValueError(f"label rates must be in (0, 100), got {list(wanted)}")
    splits = label_rate_splits(
        [label for _, label in pool], meta["seed"], tuple(sorted({*existing, *wanted}))
    )
    for rate in existing:
        path = out / "splits" / str(rate) / "train.csv"
        if [e.path for e in read_list(path)] != [pool[i][0] for i in splits[rate]]:
            raise ValueError(f"{path}: not the split the generator's order gives; the data set was edited")
    for rate in wanted:
        write_rate_split(out, pool, rate, splits[rate])
    return {rate: len(splits[rate]) for rate in wanted}


def _work(args: tuple) -> dict:
    return generate_clip(*args)


def generate_dataset(
    out: str | Path,
    preset: str | Preset = "tiny",
    seed: int = 0,
    difficulty: float = 1.0,
    workers: int | None = None,
    width: int = 64,
    height: int = 64,
    progress: bool = True,
    camera: str | None = None,
    style: str | None = None,
) -> dict:
    """Write a complete SynthGym data set to ``out`` (see docs/synthgym.md for the layout).

    Returns the summary also written to ``meta.json``. ``workers`` defaults to the CPU count; 1 runs in
    this process; ``camera`` and ``style`` default to the preset's; the trimming is the preset's.
    """
    from gym_qa.synthgym.contact_sheet import write_contact_sheet
    from gym_qa.synthgym.metadata import write_metadata

    preset = PRESETS[preset] if isinstance(preset, str) else preset
    camera = camera or preset.camera
    style = style or preset.style
    if style not in STYLES:  # before any clip is rendered
        raise ValueError(f"unknown style {style!r}; choose one of {STYLES}")
    out = Path(out)
    (out / "videos").mkdir(parents=True, exist_ok=True)
    (out / "pretrain" / "videos").mkdir(parents=True, exist_ok=True)
    specs = plan_dataset(preset, seed)
    jobs = [
        (
            s,
            str(out / ("pretrain/videos" if s.split == "pretrain" else "videos")),
            difficulty,
            width,
            height,
            camera,
            style,
            preset.min_element_share,
        )
        for s in specs
    ]
    workers = max(1, int(workers or os.cpu_count() or 1))
    bar = tqdm(total=len(jobs), desc=f"SynthGym {preset.name}", unit="clip", disable=not progress)
    records = run_jobs(_work, jobs, workers, bar, chunksize=4)
    bar.close()
    records.sort(key=lambda r: (SPLIT_CODES[r["split"]], r["index"]))
    by_split = {s: [r for r in records if r["split"] == s] for s in SPLIT_CODES}

    video = lambda r: out / "videos" / f"{r['clip_id']}.mp4"
    write_list(out / "val.csv", [(video(r), r["label"]) for r in by_split["val"]])
    write_list(out / "test.csv", [(video(r), r["label"]) for r in by_split["test"]])
    pool_recs = by_split["train"]
    labeled = label_rate_splits([r["label"] for r in pool_recs], seed)
    for pct, idx in labeled.items():
        write_rate_split(out, [(video(r), r["label"]) for r in pool_recs], pct, idx)
    with atomic_replace(out / "pretrain" / "frames.jsonl") as tmp, open(tmp, "w", encoding="utf-8") as fh:
        fh.writelines(json.dumps(r["annotation"], separators=(",", ":")) + "\n" for r in by_split["pretrain"])
    write_list(
        out / "pretrain" / "train.csv",
        [(out / "pretrain" / "videos" / f"{r['clip_id']}.mp4", r["label"]) for r in by_split["pretrain"]],
    )

    elements: list[ElementSpec] = [BY_GLABEL[g] for g in preset.glabels]
    sizes = {s: len(v) for s, v in by_split.items()}
    sizes.update({f"labeled_{p}": len(v) for p, v in labeled.items()})
    meta = write_metadata(
        out,
        elements,
        records=[r for r in records if r["split"] != "pretrain"],
        preset=preset,
        seed=seed,
        difficulty=difficulty,
        camera=camera,
        style=style,
        sizes=sizes,
        width=width,
        height=height,
        version=GENERATOR_VERSION,
        rates=RATES,
    )
    write_contact_sheet(out / "contact_sheet.png", preset, seed, difficulty, width, height, camera, style)
    return meta
