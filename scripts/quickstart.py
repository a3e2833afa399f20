"""The whole toolkit on SynthGym in one command: data → SeFAR encoder → video MLLM → Gym-QA → report.

    make quickstart                              # creates .venv, then runs this script
    python scripts/quickstart.py [--out runs/quickstart] [--data data/synthgym-quickstart] [--force]
    python scripts/quickstart.py --from encoder  # redo the encoder stage and everything after it

Stages (each skipped when its output exists — re-running continues where a run stopped — unless
--force, or --from names it or an earlier stage):

  data            SynthGym "quickstart" preset: 12 elements incl. forward/backward and twist pairs,
                  H.264 clips, label-rate splits, a frame-annotated pretraining split   <data>/meta.json
  backbone        frame-pretrain the image ViT on single frames (configs/pretrain/quickstart.yaml);
                  cached under <data>/backbones/<fingerprint>/                           config.json
  encoder         SeFAR semi-supervised training from that backbone (configs/encoder/quickstart.yaml),
                  exported to <out>/encoder (the default of scripts/demo.py and predict.py)
                                                                       <out>/encoder_run/metrics.json
  tiny_llm        the CPU stand-in for Vicuna: tokenizer + small Llama on the task's text  <out>/tiny_llm/
  questions       Gym-QA questions about the test clips (types from configs/mllm/quickstart.yaml)
                                                                               <out>/gymqa/test.json
  mllm_sefar      feature cache, stage A (align), stage B (instruct), Gym-QA evaluation (generate,
                  likelihood, classifier4) on the SeFAR encoder; the MLLM exported to <out>/mllm
                                                                        <out>/mllm_sefar/result.json
  mllm_framepool  the same on the order-blind baseline: the frame-pretrained backbone the encoder
                  started from, mean-pooled over time (SPEC §4.1)   <out>/mllm_framepool/result.json
  report          <out>/summary.json (every number, read from the stages' metrics files) and
                  <out>/report.md (rendered from summary.json only) with the plots         report.md

The report shows: the encoder's semi-supervised training curves and test accuracy (mean class, the
forward/backward and twist pairs), its most confused element pairs and confusion matrix, and the Gym-QA
accuracy of the MLLM on SeFAR features vs on frame-pool features, overall and per answer type.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import os
import platform
import resource
import shlex
import shutil
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # run from a checkout without installing

import matplotlib

matplotlib.use("Agg")  # no display on servers and CI
import matplotlib.pyplot as plt
import torch
import yaml
from tqdm import tqdm

from gym_qa.synthgym.dataset import GENERATOR_VERSION
from mllm.gymqa_experiment import (
    MODES,
    ExperimentError,
    GymQAJob,
    build_task_tiny_llm,
    call_main,
    load_script,
    make_test_questions,
    read_json,
    run_job,
    stage_config,
    write_json,
)
from mllm.language_model import MICRO_TINY_LLM, TinyLLMConfig
from sefar_encoder.config import to_dict

STAGES: tuple[str, ...] = (
    "data",
    "backbone",
    "encoder",
    "tiny_llm",
    "questions",
    "mllm_sefar",
    "mllm_framepool",
    "report",
)
ENCODERS = ("sefar", "framepool")
CONFIGS = {
    "pretrain": REPO / "configs" / "pretrain" / "quickstart.yaml",
    "encoder": REPO / "configs" / "encoder" / "quickstart.yaml",
    "mllm": REPO / "configs" / "mllm" / "quickstart.yaml",
}
PRESET = "quickstart"
# Half the benchmarks' nuisance (athlete, camera, clutter, noise ranges): the tiny encoder learns the
# elements within the quickstart's few CPU minutes, and the pairs still differ only in time.
DIFFICULTY = 0.5
MODE_TITLES = {
    "generate": "generate (answer text)",
    "likelihood": "likelihood (option NLL)",
    "classifier4": "classifier4 (encoder head, no LLM)",
}


# ----------------------------------------------------------------------------------------- layout
class Layout:
    """Where every artifact of a quickstart run lives."""

    def __init__(self, out: Path, data: Path, cache_root: Path):
        self.out, self.data, self.cache_root = out, data, cache_root
        self.encoder_run = out / "encoder_run"
        self.encoder = out / "encoder"
        self.tiny_llm = out / "tiny_llm"
        self.questions = out / "gymqa" / "test.json"
        self.mllm = out / "mllm"
        self.summary = out / "summary.json"
        self.report = out / "report.md"
        self.stages = out / "stages.json"
        self.timing = out / "timing.json"  # minutes and peak RSS of a run that did every stage (make bench)

    def job_dir(self, encoder: str) -> Path:
        return self.out / f"mllm_{encoder}"


# ----------------------------------------------------------------------------------------- stages
def stage_data(lay: Layout, args: argparse.Namespace, force: bool) -> bool:
    meta = lay.data / "meta.json"
    if not force and meta.is_file():
        m = read_json(meta)
        wanted = (args.preset, args.seed, args.difficulty, GENERATOR_VERSION)
        if (m.get("preset"), m.get("seed"), m.get("difficulty"), m.get("generator_version")) == wanted:
            return False
    argv = ["--out", str(lay.data), "--preset", args.preset, "--seed", str(args.seed)]
    argv += ["--difficulty", str(args.difficulty)]
    call_main("make_synthgym", argv + ([] if args.progress else ["--quiet"]))
    return True


def backbone_config(lay: Layout, args: argparse.Namespace) -> Any:
    pretrain = load_script("pretrain_image_backbone")
    overrides = [f"data_root={lay.data}", f"progress={str(args.progress).lower()}"]
    return pretrain.load_config(pretrain.PretrainConfig, args.pretrain_config, overrides)


def backbone_dir(lay: Layout, args: argparse.Namespace) -> Path:
    """The folder the backbone stage writes (a function of the settings and the pretraining data)."""
    pretrain = load_script("pretrain_image_backbone")
    return lay.data / "backbones" / pretrain.fingerprint(backbone_config(lay, args))


def stage_backbone(lay: Layout, args: argparse.Namespace, force: bool) -> bool:
    if not force and (backbone_dir(lay, args) / "config.json").is_file():
        return False
    load_script("pretrain_image_backbone").pretrain(backbone_config(lay, args), force=force)
    return True


def stage_encoder(lay: Layout, args: argparse.Namespace, force: bool) -> bool:
    overrides = [
        f"out_dir={lay.encoder_run}", f"data.root={lay.data}", f"seed={args.seed}",
        f"init_checkpoint={backbone_dir(lay, args) / 'model.safetensors'}",
        f"progress={str(args.progress).lower()}",
    ]  # fmt: skip
    train = load_script("train_encoder")
    wanted = to_dict(train.load_config(train.TrainConfig, args.encoder_config, overrides))
    saved = lay.encoder_run / "config.yaml"
    stale = saved.is_file() and strip_progress(yaml.safe_load(saved.read_text())) != strip_progress(wanted)
    done = (lay.encoder_run / "metrics.json").is_file() and (lay.encoder / "config.json").is_file()
    if not force and done and not stale:
        return False
    if force or stale:
        if stale:
            tqdm.write(
                f"   {lay.encoder_run} was trained with other settings (config, backbone or data): again"
            )
        shutil.rmtree(lay.encoder_run, ignore_errors=True)
    call_main("train_encoder", ["--config", str(args.encoder_config), "--resume", *overrides])
    copy_dir(lay.encoder_run / "encoder", lay.encoder)  # the model selected on val
    return True


def stage_tiny_llm(lay: Layout, args: argparse.Namespace, force: bool) -> bool:
    cfg = MICRO_TINY_LLM if args.micro_llm else TinyLLMConfig()
    built = lay.tiny_llm / "build.json"
    if not force and built.is_file() and read_json(built)["config"] == dataclasses.asdict(cfg):
        return False
    shutil.rmtree(lay.tiny_llm, ignore_errors=True)
    build_task_tiny_llm(lay.data, lay.tiny_llm, cfg)
    return True


def stage_questions(lay: Layout, args: argparse.Namespace, force: bool) -> bool:
    """Test questions with the stage config's types and distractors (kept while those do not change)."""
    if force:
        lay.questions.unlink(missing_ok=True)
    before = lay.questions.stat().st_mtime_ns if lay.questions.is_file() else None
    cfg = stage_config(make_job(lay, args, "sefar"))
    make_test_questions(lay.data, lay.questions, list(args.question_types), cfg.data.distractors)
    return lay.questions.stat().st_mtime_ns != before


def make_job(lay: Layout, args: argparse.Namespace, encoder: str) -> GymQAJob:
    rate = read_label_rate(args)
    weights = lay.encoder if encoder == "sefar" else backbone_dir(lay, args)
    return GymQAJob(
        encoder=encoder,
        weights=str(weights),
        data_root=str(lay.data),
        llm=str(lay.tiny_llm),
        questions=str(lay.questions),
        config=str(args.mllm_config),
        out_dir=str(lay.job_dir(encoder)),
        seed=args.seed,
        cache_root=str(lay.cache_root),
        overrides=[f"data.label_rate={rate}"],  # stage A/B see the labeled clips of the encoder's rate
        progress=args.progress,
    )


def read_label_rate(args: argparse.Namespace) -> int:
    train = load_script("train_encoder")
    return train.load_config(train.TrainConfig, args.encoder_config).data.label_rate


def stage_mllm(encoder: str) -> Callable[[Layout, argparse.Namespace, bool], bool]:
    def stage(lay: Layout, args: argparse.Namespace, force: bool) -> bool:
        job = make_job(lay, args, encoder)
        result = run_job(job, force=force, log=tqdm.write)
        if encoder == "sefar":  # the demo's default MLLM (scripts/demo.py)
            copy_dir(Path(result["mllm"]), lay.mllm)
        return any(s is not None for s in result["seconds"].values())

    return stage


def stage_report(lay: Layout, args: argparse.Namespace, force: bool) -> bool:
    summary = build_summary(lay, args)
    write_json(lay.summary, summary)
    plot_gymqa(summary, lay.out / "gymqa_accuracy.png")
    write_report(summary, lay.report)
    return True


STAGE_FUNCTIONS: dict[str, Callable[[Layout, argparse.Namespace, bool], bool]] = {
    "data": stage_data,
    "backbone": stage_backbone,
    "encoder": stage_encoder,
    "tiny_llm": stage_tiny_llm,
    "questions": stage_questions,
    "mllm_sefar": stage_mllm("sefar"),
    "mllm_framepool": stage_mllm("framepool"),
    "report": stage_report,
}


def strip_progress(cfg: dict[str, Any]) -> dict[str, Any]:
    """A resolved config without the keys that do not change the result."""
    return {k: v for k, v in cfg.items() if k != "progress"}


def copy_dir(src: Path, dst: Path) -> None:
    """Replace ``dst`` by a copy of ``src`` (copied next to it, then renamed: never half a checkpoint)."""
    tmp = dst.with_name(f".{dst.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(src, tmp)
    shutil.rmtree(dst, ignore_errors=True)
    tmp.rename(dst)


# ----------------------------------------------------------------------------------------- summary
def build_summary(lay: Layout, args: argparse.Namespace) -> dict[str, Any]:
    """Every number of the report, read from the stages' metrics files."""
    meta = read_json(lay.data / "meta.json")
    enc = read_json(lay.encoder_run / "metrics.json")
    backbone = read_json(backbone_dir(lay, args) / "config.json")
    questions = read_json(lay.questions.with_suffix(".summary.json"))
    stages = read_json(lay.stages) if lay.stages.is_file() else {}
    pair_keys = sorted(k for k in enc["test"] if k.startswith("pairs_"))
    return {
        "command": "python scripts/quickstart.py " + shlex.join(sys.argv[1:]),
        "machine": machine(),
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
            "dir": str(backbone_dir(lay, args)),
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
        "gymqa": {
            "questions_file": str(lay.questions),
            "questions": questions["questions"],
            "per_type": {t: b["questions"] for t, b in questions["by_type"].items()},
            "distractors": questions["distractors"],
            "types": list(args.question_types),
            "train_types": stage_config(make_job(lay, args, "sefar")).data.question_types,
            "results": {e: read_json(lay.job_dir(e) / "result.json") for e in ENCODERS},
        },
    }


def machine() -> dict[str, Any]:
    return {
        "cpu": platform.processor() or platform.machine(),
        "cores": os.cpu_count(),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
    }


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
    if enc["pairs"]:
        lines += ["", "Pair accuracy on test (which member of a fine-grained pair; 50 % = cannot tell):", ""]
        for name, p in enc["pairs"].items():
            acc = None if p["accuracy"] is None else 100 * p["accuracy"]
            lines.append(f"- {name.replace('_', ' ')}: {pct(acc)} % over {p['count']} clips")
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
        f"{qa['questions']} test questions ({counts}; {qa['distractors']} distractors). `framepool` is the "
        "frame-pretrained image backbone SeFAR started from, averaged over time (order-blind); "
        "`classifier4` answers the element-name questions with SeFAR's own classifier restricted to the "
        "4 options (no LLM)."
    )
    lines += ["## 2. Video MLLM on Gym-QA: SeFAR features vs frame-pool features", "", setup, ""]
    lines += ["| mode | sefar % | framepool % | difference (points) |", "|---|---|---|---|"]
    for mode in MODES:
        s = results["sefar"]["accuracy"].get(mode)
        f = results["framepool"]["accuracy"].get(mode)
        diff = "–" if s is None or f is None else f"{s - f:+.1f}"
        lines.append(f"| {MODE_TITLES[mode]} | {pct(s)} | {pct(f)} | {diff} |")
    lines += [
        "",
        "Accuracy per answer type (likelihood mode):",
        "",
        "| answer type | sefar % | framepool % |",
    ]
    lines.append("|---|---|---|")
    sefar_types = results["sefar"]["per_answer_type"]["likelihood"]
    pool_types = results["framepool"]["per_answer_type"]["likelihood"]
    for t in sefar_types:
        lines.append(f"| {t} | {pct(sefar_types[t])} | {pct(pool_types.get(t))} |")
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
    path.write_text("\n".join(lines) + "\n")


def plot_gymqa(summary: dict[str, Any], path: Path) -> None:
    """Grouped bars: Gym-QA accuracy per answer type and overall, SeFAR vs frame pool, per MLLM mode."""
    results = summary["gymqa"]["results"]
    modes = [m for m in ("likelihood", "generate") if m in results["sefar"]["accuracy"]]
    fig, axes = plt.subplots(1, len(modes), figsize=(5.5 * len(modes), 3.8), squeeze=False)
    for ax, mode in zip(axes[0], modes):
        types = list(results["sefar"]["per_answer_type"][mode])
        groups = ["overall", *types]
        for k, encoder in enumerate(ENCODERS):
            r = results[encoder]
            values = [r["accuracy"][mode]] + [r["per_answer_type"][mode].get(t) for t in types]
            xs = [i + (k - 0.5) * 0.38 for i in range(len(groups))]
            ax.bar(xs, [v if v is not None else 0 for v in values], width=0.38, label=encoder)
        ax.set_xticks(range(len(groups)), groups)
        ax.set_ylim(0, 100)
        ax.set_ylabel("test accuracy (%)")
        ax.set_title(f"Gym-QA, {MODE_TITLES[mode]}")
        ax.axhline(25, color="grey", lw=0.8, ls=":")  # chance with 4 options
        ax.legend(loc="upper right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# ----------------------------------------------------------------------------------------- main
def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=Path("runs/quickstart"), help="run folder")
    p.add_argument("--data", type=Path, default=Path("data/synthgym-quickstart"), help="SynthGym folder")
    p.add_argument("--cache-root", type=Path, default=Path("data/features"), help="feature cache root")
    p.add_argument("--seed", type=int, default=0, help="data set, encoder and MLLM seed")
    p.add_argument("--preset", default=PRESET, help="SynthGym preset (see scripts/make_synthgym.py --help)")
    p.add_argument(
        "--difficulty",
        type=float,
        default=DIFFICULTY,
        help="SynthGym nuisance strength (0 clean, 1 the benchmarks' default)",
    )
    p.add_argument("--pretrain-config", type=Path, default=CONFIGS["pretrain"], help="backbone config")
    p.add_argument("--encoder-config", type=Path, default=CONFIGS["encoder"], help="SeFAR encoder config")
    p.add_argument("--mllm-config", type=Path, default=CONFIGS["mllm"], help="MLLM stage A/B config")
    p.add_argument(
        "--question-types",
        nargs="+",
        default=["what"],
        help="answer types of the test questions (stage B trains on the config's data.question_types)",
    )
    p.add_argument("--micro-llm", action="store_true", help="the tests' micro LLM instead of the tiny LLM")
    p.add_argument("--force", action="store_true", help="redo every stage")
    p.add_argument(
        "--from", dest="start", choices=STAGES, default=None, help="redo this stage and the later ones"
    )
    p.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bars")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    lay = Layout(args.out, args.data, args.cache_root)
    lay.out.mkdir(parents=True, exist_ok=True)
    save_run_config(lay, args)
    started = time.perf_counter()
    stages: dict[str, dict[str, Any]] = read_json(lay.stages) if lay.stages.is_file() else {}
    first_forced = 0 if args.force else STAGES.index(args.start) if args.start else len(STAGES)
    bar = tqdm(STAGES, desc="quickstart", unit="stage", disable=not args.progress)
    try:
        for index, name in enumerate(bar):
            bar.set_postfix_str(name)
            tqdm.write(f"== quickstart stage {index + 1}/{len(STAGES)}: {name}")
            t0 = time.perf_counter()
            ran = STAGE_FUNCTIONS[name](lay, args, index >= first_forced)
            if ran:
                stages[name] = {"seconds": round(time.perf_counter() - t0, 1), "skipped": False}
            else:  # keep the time it took when it ran
                tqdm.write(f"   {name}: done before, skipped")
                stages.setdefault(name, {"seconds": None})["skipped"] = True
            stages[name]["peak_rss_mb"] = peak_rss_mb()
            write_json(lay.stages, stages)
    except ExperimentError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    finally:
        bar.close()
    minutes = (time.perf_counter() - started) / 60
    if not any(stages[name].get("skipped") for name in STAGES):  # a whole pipeline ran in this call
        peak_gb = max(stages[name]["peak_rss_mb"] for name in STAGES) * 2**20 / 1e9
        write_json(lay.timing, {"minutes": round(minutes, 2), "peak_rss_gb": round(peak_gb, 2)})
    acc = read_json(lay.summary)["gymqa"]["results"]
    print(
        f"quickstart done in {minutes:.1f} min: report {lay.report}, encoder {lay.encoder}, MLLM {lay.mllm} "
        f"(Gym-QA likelihood: sefar {pct(acc['sefar']['accuracy']['likelihood'])} % vs framepool "
        f"{pct(acc['framepool']['accuracy']['likelihood'])} %)"
    )
    return 0


def save_run_config(lay: Layout, args: argparse.Namespace) -> None:
    """``<out>/config.yaml``: the run's settings (``data.root`` also tells scripts/demo.py where the
    example clips are)."""
    config = {
        "data": {
            "root": str(lay.data),
            "preset": args.preset,
            "seed": args.seed,
            "difficulty": args.difficulty,
        },
        "configs": {
            "pretrain": str(args.pretrain_config),
            "encoder": str(args.encoder_config),
            "mllm": str(args.mllm_config),
        },
        "cache_root": str(lay.cache_root),
        "micro_llm": args.micro_llm,
    }
    (lay.out / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))


def peak_rss_mb() -> float:
    """Largest resident set so far of this process and of its finished children (DataLoader workers), in
    MiB."""
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return round(max(own, children) / 1024, 1)  # ru_maxrss is in KiB on Linux


if __name__ == "__main__":
    sys.exit(main())
