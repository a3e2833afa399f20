"""A PNG contact sheet: a few frames of a few classes, so a person sees what was generated.

Rows show the val clips of the first direction pair, the first twist pair and one class of every
other event; frames are spread evenly over each clip and the flight/turn window is outlined.
matplotlib is imported here only (the rest of the package needs numpy and PyAV).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from gym_qa.atomic_files import atomic_replace
from gym_qa.synthgym.elements import BY_GLABEL, direction_pairs, twist_pairs


def _pick_classes(glabels: tuple[int, ...], max_rows: int) -> list[int]:
    elements = [BY_GLABEL[g] for g in glabels]
    chosen: list[int] = []
    for pairs in (direction_pairs(elements), twist_pairs(elements)):
        if pairs:
            chosen += [g for g in pairs[0] if g not in chosen]
    for event in ("VT", "FX", "BB", "UB"):
        if not any(BY_GLABEL[g].event == event for g in chosen):
            chosen += [g for g in glabels if BY_GLABEL[g].event == event][:1]
    return chosen[:max_rows]


def write_contact_sheet(
    path: str | Path,
    preset,
    seed: int,
    difficulty: float,
    width: int = 64,
    height: int = 64,
    camera: str = "scene",
    style: str = "cluttered",
    max_rows: int = 8,
    columns: int = 10,
) -> None:
    """Render the chosen classes' first val clips again (same frames as the files, before compression),
    trimmed by the preset's ``min_element_share``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from gym_qa.synthgym.dataset import plan_dataset, render_clip

    specs = [s for s in plan_dataset(preset, seed) if s.split == "val"]
    rows = [next(s for s in specs if s.glabel == g) for g in _pick_classes(preset.glabels, max_rows)]
    fig, axes = plt.subplots(
        len(rows), columns, figsize=(columns * 1.0, len(rows) * 1.22 + 0.4), squeeze=False
    )
    fig.subplots_adjust(
        left=0.01, right=0.99, top=1 - 0.45 / (len(rows) * 1.22 + 0.4), bottom=0.01, wspace=0.05, hspace=0.32
    )
    for r, spec in enumerate(rows):
        track, clip, _ = render_clip(spec, difficulty, width, height, camera, style, preset.min_element_share)
        window = track.core_window()
        for c, i in enumerate(np.linspace(0, track.num_frames - 1, columns).round().astype(int)):
            ax = axes[r][c]
            ax.imshow(clip.frames[i], interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            inside = window[0] <= i < window[1]
            for side in ax.spines.values():
                side.set_color("red" if inside else "black")
                side.set_linewidth(1.5 if inside else 0.5)
            ax.text(1, 1, str(i), color="white", fontsize=5, va="top", ha="left")
        e = track.element
        axes[r][0].set_title(f"[{spec.label}] ({e.event}) {e.name}", loc="left", fontsize=7, pad=2)
    fig.suptitle(
        f"SynthGym {preset.name}, seed {seed}, difficulty {difficulty:g}, {camera} camera, {style} style — "
        "frame numbers top left, red border: element window",
        fontsize=7,
    )
    with atomic_replace(path) as tmp:
        fig.savefig(tmp, dpi=100, format="png")  # the temporary name has no extension to infer it from
    plt.close(fig)
