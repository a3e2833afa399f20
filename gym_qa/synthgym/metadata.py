"""The FineGym-style metadata of a generated data set, and its README.

Files (formats as in gym_qa/data/finegym/): ``categories.txt`` (gymNN_categories), ``set_categories.txt``,
``elements.txt`` (element list, ``<clip_id> <Clabel>``), ``attributes_qtree.json``
(finegym_glabel_to_Qtree), plus ``meta.json`` (machine-readable summary) and ``README.md``.
"""

from __future__ import annotations

import json
from pathlib import Path

from gym_qa.atomic_files import write_text_atomic
from gym_qa.synthgym.athlete import PARTS
from gym_qa.synthgym.elements import (
    EVENTS,
    SETS,
    ElementSpec,
    direction_pairs,
    qtree_entry,
    short_window_pairs,
    twist_pairs,
)
from gym_qa.synthgym.nuisance import LEGIBLE_PALETTE
from gym_qa.synthgym.poses import FPS, SHAPES

UNSAFE_AUGMENTATIONS = [
    (
        "temporal reversal of the whole clip: turns a forward salto / giant circle into the backward one "
        "(direction pairs differ only in time order)"
    ),
    "frame shuffling or order-blind pooling used as if it were label-preserving (same reason)",
    "vertical flip or 180-degree rotation: upright and inverted phases swap, take-off and landing change",
    "temporal crops that cut out the element window (the flight / turn window decides twist and turn counts)",
]
COLOUR_AUGMENTATIONS = {
    "cluttered": (
        "colour jitter, blur, noise, compression (colours are random nuisances; the chest panel keeps a "
        "large colour difference from the leotard; grayscale can weaken that facing cue)"
    ),
    "legible": (
        "brightness/contrast jitter, blur, noise, compression. Hue jitter, RGB channel permutation and "
        "grayscale keep the label but destroy what the fixed part colours tell: which limb is left or right "
        "(grayscale keeps facing: chest vs back and face vs hair differ by >= 150 grey levels)"
    ),
}


def augmentations(style: str) -> dict[str, list[str]]:
    """Label-preserving ("safe") and label-destroying ("unsafe") augmentations for clips of a style."""
    return {
        "safe": [
            (
                "horizontal flip: facing is visible (chest panel, face marker, hair, toes) and forward/backward "
                "is defined relative to it, so a flip mirrors facing and rotation sense together and keeps the "
                "label (a flipped frame is the frame rendered with the other facing, part colours included)"
            ),
            "spatial crops / scale jitter that keep the athlete in view (the camera already pans and zooms)",
            COLOUR_AUGMENTATIONS[style],
            "temporal jitter of frame positions and playback speed within about 0.8-1.25x (a nuisance already)",
        ],
        "unsafe": UNSAFE_AUGMENTATIONS,
    }


def category_line(label: int, e: ElementSpec) -> str:
    """One line of FineGym's gymNN_categories.txt."""
    return f"Clabel: {label:3d}; set: {e.set_id:2d}; Glabel: {e.glabel:3d}; ({e.event}) {e.name}"


def _label_pairs(pairs: list[tuple[int, int]], label_of: dict[int, int]) -> list[list[int]]:
    return [[label_of[a], label_of[b]] for a, b in pairs if a in label_of and b in label_of]


def class_table(elements: list[ElementSpec]) -> list[dict]:
    rows = []
    for label, e in enumerate(elements):
        rows.append(
            {
                "label": label,
                "glabel": e.glabel,
                "set": e.set_id,
                "set_name": SETS[e.set_id],
                "event": e.event,
                "name": e.name,
                "attributes": e.attributes(),
            }
        )
    return rows


def write_metadata(
    out: Path,
    elements: list[ElementSpec],
    records: list[dict],
    preset,
    seed: int,
    difficulty: float,
    camera: str,
    style: str,
    sizes: dict,
    width: int,
    height: int,
    version: str,
    rates: tuple[int, ...],
) -> dict:
    """Write every metadata file; returns the ``meta.json`` content.

    ``records``: one dict per train/val/test clip with ``clip_id``, ``label``, ``num_frames`` and
    ``element_share``.
    """
    out = Path(out)
    frames = [r["num_frames"] for r in records]
    shares = [r["element_share"] for r in records]
    label_of = {e.glabel: i for i, e in enumerate(elements)}
    write_text_atomic(
        out / "categories.txt", "".join(category_line(i, e) + "\n" for i, e in enumerate(elements))
    )
    write_text_atomic(out / "set_categories.txt", "".join(f"set: {s}; {name}\n" for s, name in SETS.items()))
    write_text_atomic(out / "elements.txt", "".join(f"{r['clip_id']} {r['label']}\n" for r in records))
    qtree = {str(e.glabel): qtree_entry(e) for e in elements}
    write_text_atomic(out / "attributes_qtree.json", json.dumps(qtree, indent=1) + "\n")
    pairs = {
        "direction": _label_pairs(direction_pairs(elements), label_of),
        "twists": _label_pairs(twist_pairs(elements), label_of),
        "short_window": _label_pairs(short_window_pairs(elements), label_of),
    }
    meta = {
        "dataset": "synthgym",
        "generator_version": version,
        "preset": preset.name,
        "seed": seed,
        "difficulty": difficulty,
        "camera": camera,
        "style": style,
        "min_element_share": preset.min_element_share,
        "fps": FPS,
        "resolution": [width, height],
        "frames_per_clip": [min(frames), max(frames)],
        "element_share": {
            "min": round(min(shares), 3),
            "mean": round(sum(shares) / len(shares), 3),
            "max": round(max(shares), 3),
        },
        "num_classes": len(elements),
        "events": {k: v for k, v in EVENTS.items() if any(e.event == k for e in elements)},
        "sizes": sizes,
        "label_rates": list(rates),
        "classes": class_table(elements),
        "pairs": pairs,
        "pair_notes": {
            "direction": "[forward, backward] class labels: identical except rotation sense; in the flight "
            "window the forward poses are the backward poses in reverse order",
            "twists": "[fewer, more] class labels: differ only by whole twists/turns inside the element window",
            "short_window": "[without, with] class labels: a half turn/twist in a short window; afterwards "
            "the athlete faces the other way",
        },
        "shapes": list(SHAPES),
        "augmentations": augmentations(style),
        "pretrain": "pretrain/frames.jsonl: one JSON object per clip with per-frame rot (deg, forward "
        "positive, relative to take-off facing, wrapped to [-180, 180)), twist (deg, [0, 360)), "
        "shape / shape_id, box [x0, y0, x1, y1] pixels (exclusive end), apparatus_px, parts (one "
        "[x0, y0, x1, y1, radius] capsule in pixels per body part, in the order of part_names), chest "
        "(the chest normal in image axes: x right, y down, z toward the camera)",
        "part_names": [name for name, _ in PARTS],
        # the legible style's fixed RGB colour of every body part; the cluttered style draws them per clip
        "part_colours": (
            {name: [round(v) for v in getattr(LEGIBLE_PALETTE, key)] for name, key in PARTS}
            if style == "legible"
            else None
        ),
    }
    write_text_atomic(out / "meta.json", json.dumps(meta, indent=1) + "\n")
    write_text_atomic(out / "README.md", _readme(meta))
    return meta


def _readme(meta: dict) -> str:
    sizes = meta["sizes"]
    lines = [
        f"# SynthGym ({meta['preset']}, seed {meta['seed']}, difficulty {meta['difficulty']})",
        "",
        "Procedurally rendered gymnastics-like clips with a FineGym-style hierarchy (event → set → element),",
        (
            "generated by the SeFAR toolkit's SynthGym generator (`scripts/make_synthgym.py`, version "
            f"{meta['generator_version']}). License-free; no real footage. See the toolkit's docs/synthgym.md."
        ),
        "",
        (
            f"- {meta['num_classes']} element classes over events {', '.join(meta['events'])};"
            f" {meta['resolution'][0]}x{meta['resolution'][1]} px, {meta['fps']:g} fps,"
            f" {meta['frames_per_clip'][0]}-{meta['frames_per_clip'][1]} frames per clip, H.264 yuv420p."
        ),
        (
            f"- {meta['camera']} camera, {meta['style']} style ("
            + (
                "each body part in its own fixed colour, `part_colours` in meta.json, on a plain background"
                if meta["part_colours"]
                else "random athlete, wall, floor and clutter colours"
            )
            + ")."
        ),
        (
            f"- trimmed like FineGym: the element window is at least {meta['min_element_share']:g} of every clip "
            f"(measured: min {meta['element_share']['min']:g}, mean {meta['element_share']['mean']:g})."
            if meta["min_element_share"] > 0
            else f"- untrimmed: element window mean {meta['element_share']['mean']:g} of a clip."
        ),
        f"- train pool {sizes['train']} clips (labeled: "
        + ", ".join(f"{p} % → {sizes[f'labeled_{p}']}" for p in meta["label_rates"])
        + f"), val {sizes['val']}, test {sizes['test']}, pretraining split {sizes['pretrain']} clips.",
        "",
        "## Files",
        "",
        "| path | content |",
        "|---|---|",
        "| `videos/<clip_id>.mp4` | train pool, val and test clips |",
        "| `val.csv`, `test.csv` | `<path> <label>` lists (paths relative to the list) |",
        (
            "| `splits/<pct>/train.csv`, `splits/<pct>/unlabel.csv` | labeled / unlabeled train pool at 5, 10, 20, 100 %; "
            "stratified per class, nested (5 % ⊂ 10 % ⊂ 20 %) |"
        ),
        "| `elements.txt` | FineGym element list `<clip_id> <Clabel>` for every train/val/test clip |",
        "| `categories.txt`, `set_categories.txt` | FineGym category formats |",
        "| `attributes_qtree.json` | FineGym Qtree format: yes/no attribute questions and answer bits per Glabel |",
        "| `meta.json` | classes with numeric attributes, direction/twist pairs, sizes, settings |",
        (
            "| `pretrain/` | a separately seeded split for frame-level pretraining: `videos/`, `train.csv`, "
            "`frames.jsonl` (per-frame rotation, twist, shape, athlete box, apparatus) |"
        ),
        "| `contact_sheet.png` | a few frames of a few classes |",
        "",
        "Clip ids imitate FineGym's `<ytid>_E_<start>_<end>_A_<start>_<end>`, in frames: E spans the whole",
        "performance the clip was cut from, A the frames the clip holds (A = E when untrimmed).",
        "",
        "## Fine-grained pairs",
        "",
        "- direction (forward vs backward, same everything else): "
        + (", ".join(f"{a}/{b}" for a, b in meta["pairs"]["direction"]) or "none"),
        "- twist/turn count: " + (", ".join(f"{a}/{b}" for a, b in meta["pairs"]["twists"]) or "none"),
        "- half turn in a short window: "
        + (", ".join(f"{a}/{b}" for a, b in meta["pairs"]["short_window"]) or "none"),
        "",
        "Forward/backward is relative to the athlete's facing at take-off, which is always visible (chest panel,",
        "face marker, hair, toes). A single frame, or an order-blind pool of frames, cannot separate a direction",
        "pair: the forward clip's flight is the backward clip's flight played in reverse.",
        "",
        "## Augmentations",
        "",
        "Label-preserving:",
        "",
        *[f"- {a}" for a in meta["augmentations"]["safe"]],
        "",
        "NOT label-preserving:",
        "",
        *[f"- {a}" for a in meta["augmentations"]["unsafe"]],
        "",
        "## Classes",
        "",
        "| Clabel | Glabel | set | event | element | dir | shape | saltos | twists | turns |",
        "|---:|---:|---:|---|---|---|---|---:|---:|---:|",
    ]
    for c in meta["classes"]:
        a = c["attributes"]
        lines.append(
            f"| {c['label']} | {c['glabel']} | {c['set']} | {c['event']} | {c['name']} | "
            f"{a['direction_name']} | {a['shape']} | {a['saltos']} | {a['twists']:g} | {a['turns']:g} |"
        )
    return "\n".join(lines) + "\n"
