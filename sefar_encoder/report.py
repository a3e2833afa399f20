"""What a training run shows a person: curves and confusion PNGs, and a short ``report.md``.

Every number in ``report.md`` is read from the same dict that is written to ``metrics.json``, so the two
cannot disagree.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # no display on servers and CI
import matplotlib.pyplot as plt
import numpy as np


def plot_curves(history: list[dict[str, Any]], path: str | Path) -> None:
    """Training loss and validation mean class accuracy (student, teacher) per epoch."""
    epochs = [h["epoch"] for h in history]
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(10, 3.6))
    # an epoch whose every step was non-finite (and skipped) has no loss: a gap in the curve
    ax_loss.plot(epochs, [h["train"].get("loss", np.nan) for h in history], marker="o", label="total")
    if any("l_un" in h["train"] for h in history):
        ax_loss.plot(epochs, [h["train"].get("l_un", np.nan) for h in history], marker=".", label="L_un")
    ax_loss.set_xlabel("epoch")
    ax_loss.set_ylabel("training loss")
    ax_loss.legend()
    for who in ("student", "teacher"):
        pts = [(h["epoch"], 100 * h["val"][who]["mean_class"]) for h in history if who in h.get("val", {})]
        if pts:
            ax_acc.plot(*zip(*pts), marker="o", label=who)
    ax_acc.set_xlabel("epoch")
    ax_acc.set_ylabel("val mean class accuracy (%)")
    ax_acc.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def most_confused_pairs(cm: np.ndarray, names: list[str], top: int = 10) -> list[dict[str, Any]]:
    """The off-diagonal cells with the most clips: (true, predicted, count, share of the true class)."""
    off = cm.copy()
    np.fill_diagonal(off, 0)
    order = np.argsort(-off, axis=None)[:top]
    rows = []
    for flat in order:
        t, p = np.unravel_index(flat, cm.shape)
        if off[t, p] == 0:
            break
        rows.append(
            {
                "true": names[t],
                "predicted": names[p],
                "count": int(off[t, p]),
                "share": float(off[t, p] / max(1, cm[t].sum())),
            }
        )
    return rows


def plot_confusion(cm: np.ndarray, names: list[str], path: str | Path) -> None:
    """Row-normalised confusion matrix; class names on the axes when there are few enough to read."""
    rates = cm / np.maximum(1, cm.sum(axis=1, keepdims=True))
    k = len(names)
    size = min(14, 3 + 0.22 * k)
    fig, ax = plt.subplots(figsize=(size, size))
    im = ax.imshow(rates, cmap="viridis", vmin=0, vmax=1)
    if k <= 60:
        short = [n if len(n) <= 38 else n[:36] + "…" for n in names]
        ax.set_xticks(range(k), short, rotation=90, fontsize=6)
        ax.set_yticks(range(k), short, fontsize=6)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    fig.colorbar(im, ax=ax, fraction=0.046)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _pct(x: float | None) -> str:
    return "–" if x is None else f"{100 * x:.1f}"


def write_report(metrics: dict[str, Any], path: str | Path) -> None:
    """``report.md`` from the final ``metrics.json`` dict."""
    best = metrics["best"]
    lines = [
        f"# Encoder run: {metrics['method']} @ {metrics['label_rate']} % labels",
        "",
        (
            f"- data: `{metrics['data_root']}`; {metrics['epochs']} epochs, {metrics['optimizer_steps']}"
            f" optimizer steps, {metrics['minutes']:.1f} min on {metrics['machine']}"
        ),
        (
            f"- model selected on **val**: {best['which']} of epoch {best['epoch']}"
            f" (val mean class {_pct(best['val_mean_class'])} %)"
        ),
        f"- skipped clips: {metrics['skipped_clips']}; non-finite loss steps skipped: {metrics['nonfinite_steps']}",
    ]
    if metrics.get("pseudo_label_entropy") is not None:  # the pseudo-label collapse monitor
        lines.append(
            f"- pseudo-label entropy, last epoch: {metrics['pseudo_label_entropy']:.3f}"
            " (1 = uniform over classes, near 0 = collapse onto few classes)"
        )
    lines += [
        "",
        "| split | clips | top-1 | top-5 | mean class | set mean class | event mean class |",
        "|---|---|---|---|---|---|---|",
    ]
    for split in ("val", "test"):
        m = metrics[split]
        lines.append(
            f"| {split} | {m['count']} | {_pct(m['top1'])} | {_pct(m['top5'])} | {_pct(m['mean_class'])} | "
            f"{_pct(m.get('set', {}).get('mean_class'))} | {_pct(m.get('event', {}).get('mean_class'))} |"
        )
    pair_keys = [k for k in metrics["test"] if k.startswith("pairs_")]
    if pair_keys:
        lines += ["", "Pair accuracy on test (which member of a pair; 50 % = order-blind):", ""]
        for key in pair_keys:
            p = metrics["test"][key]
            lines.append(f"- {key[6:]}: {_pct(p['accuracy'])} % over {p['count']} clips")
    if metrics.get("most_confused"):
        lines += ["", "Most confused element pairs on test:", "", "| true | predicted | clips | share |"]
        lines.append("|---|---|---|---|")
        for row in metrics["most_confused"]:
            lines.append(f"| {row['true']} | {row['predicted']} | {row['count']} | {_pct(row['share'])} % |")
    for key, title in (
        ("bad_samples", "Undecodable clips left out (data.on_bad_sample=skip)"),
        ("decoder_fallbacks", "Clips decord could not read, decoded with PyAV"),
    ):
        clips = metrics.get(key, {}).get("clips", [])
        if clips:
            lines += ["", f"{title}: {len(clips)}", "", "| clip | split | reason |", "|---|---|---|"]
            lines += [f"| `{c['path']}` | {c['split']} | {c['reason']} |" for c in clips]
    lines += ["", "![curves](curves.png)", "", "![confusion](confusion.png)", ""]
    Path(path).write_text("\n".join(lines))
