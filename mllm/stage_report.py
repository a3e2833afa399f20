"""The report of a finished MLLM training stage (``scripts/train_mllm.py``): ``loss.png`` (train loss per
optimizer step, val loss per epoch) and ``report.md``; each file written whole or not at all."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sefar_encoder.runtime.atomic import write_atomic, write_text_atomic


def plot_losses(records: list[dict[str, Any]], stage: str, path: Path) -> None:
    """Train loss of every step and val loss of every evaluation, from the run's history records."""
    import matplotlib

    matplotlib.use("Agg")  # no display on servers
    import matplotlib.pyplot as plt

    steps = [r for r in records if "loss" in r]
    evals = [r for r in records if "val_loss" in r]
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot([r["step"] for r in steps], [r["loss"] for r in steps], label="train")
    ax.plot([r["step"] for r in evals], [r["val_loss"] for r in evals], "o-", label="val")
    ax.set(xlabel="optimizer step", ylabel="token NLL", title=f"stage {stage}")
    ax.legend()
    fig.tight_layout()
    write_atomic(path, lambda tmp: fig.savefig(tmp, dpi=100, format="png"))
    plt.close(fig)


def write_stage_report(metrics: dict[str, Any], path: Path) -> None:
    """``report.md``: samples, steps, processes, time, the loss from first to last and on val."""

    def fmt(x: float | None) -> str:
        return "–" if x is None else f"{x:.4f}"

    lines = [
        f"# MLLM stage {metrics['stage']}",
        "",
        (
            f"- {metrics['samples']} samples, {metrics['steps']} steps of {metrics['global_batch']} on "
            f"{metrics['processes']} process(es), {metrics['minutes']:.1f} min"
        ),
        f"- loss {fmt(metrics['first_loss'])} -> {fmt(metrics['final_loss'])}; val {fmt(metrics['val_loss'])}",
        f"- non-finite steps skipped: {metrics['nonfinite_steps']}; model: `mllm/`",
        "",
        "![loss](loss.png)",
        "",
    ]
    write_text_atomic(path, "\n".join(lines))
