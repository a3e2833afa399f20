"""Gym-QA accuracy as grouped bars: one panel per answer mode, a group per question type (and overall), a
bar per encoder — the quickstart report's plot and ``scripts/bench_gymqa.py --plot-out``."""

from __future__ import annotations

import math
from pathlib import Path

from sefar_encoder.runtime.atomic import write_atomic

# bar label -> (overall accuracy %, accuracy % per question type, spread of the overall accuracy or None)
Series = dict[str, tuple[float | None, dict[str, float | None], float | None]]


def plot_accuracy_per_type(panels: list[tuple[str, Series]], path: Path, chance: float | None = None) -> None:
    """``panels``: (title, series) side by side; a missing value is drawn as 0. ``chance``: a dotted line
    at that accuracy (e.g. 25 when every question has 4 options)."""
    import matplotlib

    matplotlib.use("Agg")  # no display on servers and CI
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(panels), figsize=(6 * len(panels), 3.8), squeeze=False)
    for ax, (title, series) in zip(axes[0], panels):
        types = list(dict.fromkeys(t for _, per_type, _ in series.values() for t in per_type))
        groups = ["overall", *types]
        width = 0.8 / len(series)
        for k, (label, (overall, per_type, spread)) in enumerate(series.items()):
            values = [overall, *(per_type.get(t) for t in types)]
            xs = [i + (k - (len(series) - 1) / 2) * width for i in range(len(groups))]
            errors = None if spread is None else [spread] + [math.nan] * len(types)  # overall only
            heights = [0.0 if v is None else v for v in values]
            ax.bar(xs, heights, width=width, yerr=errors, capsize=2, label=label)
        ax.set_xticks(range(len(groups)), groups)
        ax.set_ylim(0, 118)  # room for the legend above the bars
        ax.set_yticks(range(0, 101, 20))
        ax.set_ylabel("test accuracy (%)")
        ax.set_title(title)
        if chance is not None:
            ax.axhline(chance, color="grey", lw=0.8, ls=":")
        ax.legend(loc="upper center", ncol=len(series), fontsize=8)
    fig.tight_layout()
    write_atomic(path, lambda tmp: fig.savefig(tmp, dpi=110, format="png"))
    plt.close(fig)
