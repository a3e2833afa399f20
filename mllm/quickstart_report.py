"""The quickstart's run folder and report (``scripts/quickstart.py``, which orchestrates the stages): where
every artifact of a run lives (:class:`Layout`), ``summary.json`` (every number of the report, read from
the stages' metrics files), ``report.md`` rendered from the summary alone (so the two cannot disagree) and
the Gym-QA plot. The quickstart covers the encoder and the MLLM, and ``mllm`` may read both.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mllm.gymqa_experiment import MODES, read_json
from mllm.gymqa_plot import plot_accuracy_per_type
from sefar_encoder.runtime.atomic import write_text_atomic
from sefar_encoder.runtime.machine import machine_info

# The MLLM's video encoders, SeFAR first: its two baselines are the frame backbone it started from, fed as
# video-LLMs feed CLIP frames (frameseq: per-frame tokens in time order) and averaged over time (framepool).
ENCODERS = ("sefar", "frameseq", "framepool")
MODE_TITLES = {
    "generate": "generate (answer text)",
    "generate_form": "generate, read as the trained form",
    "generate_text": "generate, read by the option text it states",
    "letter": "letter (decoding over the option letters)",
    "likelihood": "likelihood (option NLL)",
    "classifier4": "classifier4 (encoder head, no LLM)",
}


class Layout:
    """Where every artifact of a quickstart run lives."""

    def __init__(self, out: Path, data: Path, cache_root: Path):
        self.out, self.data, self.cache_root = out, data, cache_root
        self.encoder_run = out / "encoder_run"
        self.encoder = out / "encoder"
        self.control_run = out / "control_run"  # the order-blind control encoder (method framepool)
        self.tiny_llm = out / "tiny_llm"
        self.questions = out / "gymqa" / "test.json"
        self.mllm = out / "mllm"
        self.summary = out / "summary.json"
        self.report = out / "report.md"
        self.stages = out / "stages.json"
        self.timing = out / "timing.json"  # minutes and peak RSS of a run that did every stage (make bench)

    def job_dir(self, encoder: str) -> Path:
        return self.out / f"mllm_{encoder}"


# ----------------------------------------------------------------------------------------- summary
def build_summary(
    lay: Layout, backbone_dir: Path, question_types: list[str], train_types: list[str], command: str
) -> dict[str, Any]:
    """Every number of the report, read from the stages' metrics files: the run ``lay``, the backbone the
    encoder started from, the test and the stage B question types, the command that ran it."""
    meta = read_json(lay.data / "meta.json")
    enc = read_json(lay.encoder_run / "metrics.json")
    control = read_json(lay.control_run / "metrics.json")
    backbone = read_json(backbone_dir / "config.json")
    questions = read_json(lay.questions.with_suffix(".summary.json"))
    stages = read_json(lay.stages) if lay.stages.is_file() else {}
    pair_keys = sorted(k for k in enc["test"] if k.startswith("pairs_"))
    return {
        "command": command,
        "machine": machine_info(),
        "stages": stages,
        "paths": {
            "report": str(lay.report),
            "encoder": str(lay.encoder),
            "mllm": str(lay.mllm),
            "data": str(lay.data),
            "encoder_run": str(lay.encoder_run),
        },
        "data": {
            "preset": meta["preset"],
            "difficulty": meta["difficulty"],
            "classes": meta["num_classes"],
            "sizes": meta["sizes"],
        },
        "backbone": {
            "dir": str(backbone_dir),
            "heldout": backbone["heldout"],
            "minutes": backbone["minutes"],
        },
        "encoder": {
            "method": enc["method"],
            "label_rate": enc["label_rate"],
            "optimizer_steps": enc["optimizer_steps"],
            "minutes": enc["minutes"],
            "best": enc["best"],
            "test": {k: enc["test"][k] for k in ("count", "top1", "top5", "mean_class")},
            "val": {k: enc["val"][k] for k in ("count", "top1", "top5", "mean_class")},
            "pairs": {k[6:]: enc["test"][k] for k in pair_keys},
            "most_confused": enc["most_confused"],
        },
        "control": {
            "method": control["method"],
            "label_rate": control["label_rate"],
            "optimizer_steps": control["optimizer_steps"],
            "minutes": control["minutes"],
            "test": {k: control["test"][k] for k in ("count", "top1", "top5", "mean_class")},
            "pairs": {k[6:]: control["test"][k] for k in pair_keys},
        },
        "gymqa": {
            "questions_file": str(lay.questions),
            "questions": questions["questions"],
            "per_type": {t: b["questions"] for t, b in questions["by_type"].items()},
            "distractors": questions["distractors"],
            "types": question_types,
            "train_types": train_types,
            "results": {e: read_json(lay.job_dir(e) / "result.json") for e in ENCODERS},
        },
    }


# ----------------------------------------------------------------------------------------- report
def pct(x: float | None) -> str:
    return "–" if x is None else f"{x:.1f}"


def write_report(summary: dict[str, Any], path: Path) -> None:
    """``report.md`` from ``summary.json`` alone (so the two cannot disagree)."""
    enc, qa, data, mach = summary["encoder"], summary["gymqa"], summary["data"], summary["machine"]
    results = qa["results"]
    run = Path(summary["paths"]["encoder_run"]).name
    total = sum(s["seconds"] for s in summary["stages"].values() if s.get("seconds") is not None)
    labeled = data["sizes"][f"labeled_{enc['label_rate']}"]
    intro = (
        f"SynthGym `{data['preset']}` (difficulty {data['difficulty']}): {data['classes']} elements, "
        f"{data['sizes']['train']} train-pool clips "
        f"({labeled} labeled at {enc['label_rate']} %), {data['sizes']['val']} val and "
        f"{data['sizes']['test']} test clips. The stages took {total / 60:.1f} min when they ran, on "
        f"{mach['cores']} CPU cores (torch {mach['torch']}); last command `{summary['command']}`."
    )
    best = enc["best"]
    training = (
        f"- {enc['method']} at {enc['label_rate']} % labels, {enc['optimizer_steps']} optimizer steps, "
        f"{enc['minutes']:.1f} min; model selected on val: {best['which']} of epoch {best['epoch']}"
    )
    lines = [
        "# SeFAR quickstart report",
        "",
        intro,
        "",
        "## 1. SeFAR encoder (semi-supervised)",
        "",
        training,
    ]
    lines += ["", "| split | clips | top-1 % | top-5 % | mean class % |", "|---|---|---|---|---|"]
    for split in ("val", "test"):
        m = enc[split]
        row = [str(m["count"]), pct(100 * m["top1"]), pct(100 * m["top5"]), pct(100 * m["mean_class"])]
        lines.append(f"| {split} | {' | '.join(row)} |")
    lines += pair_table(enc, summary["control"])
    lines += ["", f"![SSL training curves]({run}/curves.png)", ""]
    if enc["most_confused"]:
        lines += [
            "Most confused element pairs on test:",
            "",
            "| true | predicted as | clips | share of true |",
        ]
        lines.append("|---|---|---|---|")
        for r in enc["most_confused"]:
            lines.append(f"| {r['true']} | {r['predicted']} | {r['count']} | {pct(100 * r['share'])} % |")
        lines.append("")
    lines += [f"![confusion matrix]({run}/confusion.png)", ""]

    counts = ", ".join(f"{n} {t}" for t, n in qa["per_type"].items())
    setup = (
        f"Tiny LLM + projector (stage A) + LoRA (stage B), trained on the labeled clips only (stage B "
        f"questions: {', '.join(qa['train_types'])}); evaluated on "
        f"{qa['questions']} test questions ({counts}; {qa['distractors']} distractors). The baselines are "
        "the frame-pretrained image backbone SeFAR started from, fed as video-LLMs feed CLIP frames: "
        "`frameseq` (each frame's tokens pooled, in time order with a frame-index code: the LLM can see "
        "order) and `framepool` (averaged over time: order-blind); `classifier4` answers the element-name "
        "questions with SeFAR's own classifier restricted to the 4 options (no LLM)."
    )
    lines += ["## 2. Video MLLM on Gym-QA: SeFAR features vs the frame backbone's", "", setup, ""]
    baselines = ENCODERS[1:]
    lines += [
        "| mode | "
        + " | ".join(f"{e} %" for e in ENCODERS)
        + " | "
        + " | ".join(f"sefar − {b} (points)" for b in baselines)
        + " |",
        "|---|" + "---|" * (len(ENCODERS) + len(baselines)),
    ]
    for mode in MODES:
        acc = {e: results[e]["accuracy"].get(mode) for e in ENCODERS}
        if all(a is None for a in acc.values()):  # a mode this run did not evaluate
            continue
        s = acc["sefar"]
        diffs = ["–" if s is None or acc[b] is None else f"{s - acc[b]:+.1f}" for b in baselines]
        cells = [pct(acc[e]) for e in ENCODERS] + diffs
        lines.append(f"| {MODE_TITLES[mode]} | {' | '.join(cells)} |")
    lines += [
        "",
        "Accuracy per answer type (likelihood mode):",
        "",
        "| answer type | " + " | ".join(f"{e} %" for e in ENCODERS) + " |",
        "|---|" + "---|" * len(ENCODERS),
    ]
    by_type = {e: results[e]["per_answer_type"]["likelihood"] for e in ENCODERS}
    for t in by_type["sefar"]:
        lines.append(f"| {t} | " + " | ".join(pct(by_type[e].get(t)) for e in ENCODERS) + " |")
    lines += ["", "![Gym-QA accuracy per answer type](gymqa_accuracy.png)", ""]

    paths = summary["paths"]
    lines += [
        "## 3. Where things are",
        "",
        f"- encoder: `{paths['encoder']}` (`python scripts/predict.py --encoder {paths['encoder']} ...`)",
        f"- MLLM: `{paths['mllm']}` — `python scripts/demo.py` loads both",
        f"- every number above: `summary.json`; stage reports: `{run}/report.md`, `mllm_*/eval/report.md`",
        "",
        "| stage | seconds (when it ran) | last run |",
        "|---|---|---|",
    ]
    for name, st in summary["stages"].items():
        lines.append(
            f"| {name} | {pct(st.get('seconds'))} | {'skipped: done before' if st['skipped'] else 'ran'} |"
        )
    write_text_atomic(path, "\n".join(lines) + "\n")


def pair_table(enc: dict[str, Any], control: dict[str, Any]) -> list[str]:
    """The encoder's and the order-blind control's test accuracy, overall and on each kind of pair."""
    names = list(enc["pairs"])
    lines = [
        "",
        (
            "Test accuracy beside the order-blind control (the same recipe, supervised at "
            f"{control['label_rate']} % labels, {control['optimizer_steps']} steps, frames pooled in time). "
            "A pair column is the accuracy on the clips of a fine-grained pair at telling which member it is "
            "(50 % = cannot tell; the order-blind control cannot tell a forward from a backward salto):"
        ),
        "",
        "| encoder | mean class % | " + " | ".join(f"{n.replace('_', ' ')} pairs %" for n in names) + " |",
        "|---|---|" + "---|" * len(names),
    ]
    for label, run in ((f"{enc['method']} @ {enc['label_rate']} %", enc), ("order-blind control", control)):
        accs = [run["pairs"][n]["accuracy"] for n in names]
        cells = [pct(None if a is None else 100 * a) for a in accs]
        lines.append(f"| {label} | {pct(100 * run['test']['mean_class'])} | {' | '.join(cells)} |")
    counts = ", ".join(f"{n.replace('_', ' ')} {enc['pairs'][n]['count']}" for n in names)
    return lines + ["", f"Clips per pair kind on test: {counts}."]


def plot_gymqa(summary: dict[str, Any], path: Path) -> None:
    """Gym-QA accuracy per answer type and overall, one bar per encoder, per MLLM mode."""
    results = summary["gymqa"]["results"]
    modes = [m for m in ("likelihood", "generate") if m in results["sefar"]["accuracy"]]
    panels = [
        (
            f"Gym-QA, {MODE_TITLES[mode]}",
            {
                e: (results[e]["accuracy"].get(mode), results[e]["per_answer_type"].get(mode, {}), None)
                for e in ENCODERS
            },
        )
        for mode in modes
    ]
    plot_accuracy_per_type(panels, path, chance=25)  # the quickstart asks 4-option questions


# ----------------------------------------------------------------------------------------- README
README_START = "<!-- quickstart figures: scripts/readme_figures.py writes this block from docs/results/quickstart.json -->"
README_END = "<!-- end of quickstart figures -->"


def readme_figures(summary: dict[str, Any], fresh_clone_runs: list[dict[str, float]]) -> dict[str, Any]:
    """The README's quickstart figures (``docs/results/quickstart.json``): from a run's ``summary.json`` and
    the wall time and peak RSS of fresh-clone ``make quickstart`` runs (GNU time; install included)."""
    enc, control, mach = summary["encoder"], summary["control"], summary["machine"]
    results = summary["gymqa"]["results"]

    def pairs(run: dict[str, Any]) -> dict[str, float | None]:
        return {
            name: None if p["accuracy"] is None else 100 * p["accuracy"] for name, p in run["pairs"].items()
        }

    return {
        "date": mach.get("date"),
        "machine": {k: mach.get(k) for k in ("cpu", "cores", "memory_gb", "torch", "python")},
        "data": {k: summary["data"][k] for k in ("preset", "difficulty", "classes")},
        "encoder": {
            "method": enc["method"],
            "label_rate": enc["label_rate"],
            "test_mean_class": 100 * enc["test"]["mean_class"],
            "pairs": pairs(enc),
        },
        "control": {
            "method": control["method"],
            "test_mean_class": 100 * control["test"]["mean_class"],
            "pairs": pairs(control),
        },
        "gymqa": {e: dict(results[e]["accuracy"]) for e in ENCODERS},
        "fresh_clone": fresh_clone_runs,
    }


def readme_block(fig: dict[str, Any]) -> str:
    """The README's quickstart paragraph and table, from :func:`readme_figures`' output alone."""
    enc, control, data, mach = fig["encoder"], fig["control"], fig["data"], fig["machine"]
    names = list(enc["pairs"])
    walls = [r["wall_minutes"] for r in fig["fresh_clone"]]
    if walls:
        low, high = min(walls), max(walls)
        span = f"{low:.1f} min" if len(walls) == 1 else f"{low:.1f}–{high:.1f} min over {len(walls)} runs"
        peak = max(r["peak_rss_gb"] for r in fig["fresh_clone"])
        timing = (
            f"A fresh clone's `make quickstart`, the venv install included, took {span} wall (GNU time; peak "
            f"RSS {peak:.2f} GB)"
        )
    else:
        timing = "Not timed on a fresh clone"
    intro = (
        f"Measured {str(fig['date'])[:10]} on {mach['cores']} CPU cores ({mach['cpu']}, torch {mach['torch']}). "
        f"{timing}. What the quickstart model knows: {data['classes']} synthetic SynthGym elements "
        f"(`{data['preset']}`, 64-px frames), learned from {enc['label_rate']} % labels, and a tiny stand-in "
        "LLM trained on the task's own text: not gymnastics in general, not language in general."
    )
    header = " | ".join(f"{n.replace('_', ' ')} pairs %" for n in names)
    lines = [
        README_START,
        intro,
        "",
        f"| encoder | test mean class % | {header} | Gym-QA likelihood % | Gym-QA generate % |",
        "|---|---|" + "---|" * len(names) + "---|---|",
    ]
    rows = [
        (f"{enc['method']} @ {enc['label_rate']} %", enc, fig["gymqa"]["sefar"]),
        ("order-blind control (frame pool)", control, fig["gymqa"]["framepool"]),
    ]
    if "frameseq" in fig["gymqa"]:  # an MLLM-only baseline: no encoder of its own was trained
        no_encoder = {"test_mean_class": None, "pairs": dict.fromkeys(names)}
        rows.insert(
            1, ("frame sequence (backbone frames in order, MLLM only)", no_encoder, fig["gymqa"]["frameseq"])
        )
    for label, run, qa in rows:
        cells = " | ".join(pct(run["pairs"][n]) for n in names)
        qa_cells = f"{pct(qa.get('likelihood'))} | {pct(qa.get('generate'))}"
        lines.append(f"| {label} | {pct(run['test_mean_class'])} | {cells} | {qa_cells} |")
    note = (
        "A pair column is the accuracy at telling the two members of a fine-grained pair apart (50 % = cannot "
        "tell). The Gym-QA columns are the same MLLM on each encoder's features (the control row: the frame "
        "backbone's features averaged over time, the `mllm_framepool` stage"
        + (
            "; the frame sequence row: its per-frame tokens in time order, `mllm_frameseq`"
            if len(rows) > 2
            else ""
        )
        + ")."
    )
    lines += ["", note, README_END]
    return "\n".join(lines)


def replace_readme_block(readme: str, block: str) -> str:
    """``readme`` with the text from :data:`README_START` to :data:`README_END` replaced by ``block``."""
    start, end = readme.find(README_START), readme.find(README_END)
    if start < 0 or end < start:
        raise ValueError(f"README: no quickstart figures block ({README_START!r} ... {README_END!r})")
    return readme[:start] + block + readme[end + len(README_END) :]
