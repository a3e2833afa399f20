"""Gym-QA benchmark: the MLLM on SeFAR features vs on the order-blind frame-pool baseline, several seeds.

    python scripts/bench_gymqa.py                                   # SynthGym bench, seeds 0 1 2
    python scripts/bench_gymqa.py --sefar runs/ssl_bench/sefar@10/seed0/encoder --seeds 0
    python scripts/bench_gymqa.py --aggregate-only                  # only rebuild the table

For each encoder (``sefar``: a trained SeFAR encoder; ``framepool``: the frame-pretrained image ViT that
encoder started from, mean-pooled over time — SPEC §4.1) and each seed, one Gym-QA job
(``mllm.gymqa_experiment``): feature cache, stage A (align), stage B (instruct), evaluation of the test
questions in ``generate`` and ``likelihood`` mode, and for SeFAR also ``classifier4`` (its own classifier
restricted to the options, on the element-name questions). The seed changes stage A/B training only; the
encoders, the tiny LLM and the questions are the same for every job. ``--extra clip=<weights>`` (or eva)
adds encoders to the comparison.

Every job is resumable in ``<runs>/<encoder>/seed<k>/`` (finished steps are skipped; ``--force`` redoes
them), so the table can be built across sessions. Aggregation reads the finished jobs only and writes
``--json-out`` (default ``docs/results/gymqa_bench.json``): an object keyed ``"<encoder>@<mode>"`` with
``mean``, ``std`` and ``runs`` (per-seed test accuracy, %), ``seeds``, ``questions``, and per answer type
the mean accuracy; plus ``machine`` (cpu, threads, torch version, date) and ``command``. A Markdown table
is printed (``--markdown-out`` also writes it).

Defaults follow the SSL benchmark (``scripts/bench_ssl.py``): the SeFAR encoder of ``sefar@10`` seed 0,
whose run ``config.yaml`` gives the label rate (stage A/B use the same labeled clips) and the backbone
(the framepool weights). The tiny LLM is built under ``--llm`` if missing, the test questions under
``<runs>/questions/test.json`` (``--question-types``, default Gym-QA's "what"; distractors from the stage
config, whose ``data.question_types`` are the stage B training questions).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shlex
import statistics
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # run from a checkout without installing

import torch

from mllm.encoders import ENCODERS as ALL_ENCODERS
from mllm.gymqa_experiment import (
    MODES,
    RESULT_FILE,
    ExperimentError,
    GymQAJob,
    build_task_tiny_llm,
    encoder_run_settings,
    make_test_questions,
    run_job,
    stage_config,
)

ENCODERS = ("sefar", "framepool")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default="data/synthgym-bench", help="SynthGym data set folder")
    p.add_argument(
        "--sefar", default="runs/ssl_bench/sefar@10/seed0/encoder", help="SeFAR encoder checkpoint directory"
    )
    p.add_argument(
        "--framepool",
        default=None,
        help="frame-pretrained backbone folder (default: the one the SeFAR run started from)",
    )
    p.add_argument("--label-rate", type=int, default=None, help="default: the SeFAR run's data.label_rate")
    p.add_argument("--llm", default="data/tiny_llm-synthgym-bench", help="tiny LLM folder (built if missing)")
    p.add_argument("--config", default="configs/mllm/gymqa_bench.yaml", help="stage A/B config")
    p.add_argument("--encoders", nargs="+", default=list(ENCODERS), choices=ENCODERS, help="encoders")
    p.add_argument(
        "--extra",
        nargs="*",
        default=[],
        metavar="NAME=WEIGHTS",
        help="more encoders to compare, e.g. clip=openai/clip-vit-large-patch14 eva=<timm EVA-CLIP dir>",
    )
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2], help="stage A/B seeds")
    p.add_argument("--runs", default="runs/gymqa_bench", help="job folders <runs>/<encoder>/seed<k>/")
    p.add_argument("--cache-root", default="data/features", help="feature cache root")
    p.add_argument("--max-new-tokens", type=int, default=48, help="generate mode: answer length bound")
    p.add_argument(
        "--question-types",
        nargs="+",
        default=["what"],
        help="answer types of the test questions (stage B trains on the config's data.question_types)",
    )
    p.add_argument("--force", action="store_true", help="redo every step of the selected jobs")
    p.add_argument("--aggregate-only", action="store_true", help="run nothing; tabulate the finished jobs")
    p.add_argument("--json-out", default="docs/results/gymqa_bench.json", help="aggregated JSON")
    p.add_argument("--markdown-out", default=None, help="also write the Markdown table here")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    return p.parse_args(argv)


def extra_encoders(args: argparse.Namespace) -> dict[str, str]:
    """``--extra NAME=WEIGHTS`` as {name: weights}; names from mllm.encoders.ENCODERS."""
    extra = {}
    for item in args.extra:
        name, sep, weights = item.partition("=")
        if not sep or not weights or name not in ALL_ENCODERS or name in ENCODERS:
            raise ExperimentError(
                f"--extra {item!r}: expected NAME=WEIGHTS with NAME one of "
                f"{sorted(set(ALL_ENCODERS) - set(ENCODERS))}"
            )
        extra[name] = weights
    return extra


def encoder_weights(args: argparse.Namespace) -> tuple[dict[str, str], int]:
    """Weights per encoder and the label rate, from the arguments and the SeFAR run's config."""
    settings = encoder_run_settings(args.sefar)
    framepool = args.framepool or settings.get("backbone")
    rate = args.label_rate or settings.get("label_rate")
    if "framepool" in args.encoders and not framepool:
        raise ExperimentError(
            f"{args.sefar}: no run config.yaml naming its init_checkpoint; give --framepool (backbone folder)"
        )
    if rate is None:
        raise ExperimentError(f"{args.sefar}: no run config.yaml giving data.label_rate; give --label-rate")
    return {"sefar": args.sefar, "framepool": framepool, **extra_encoders(args)}, int(rate)


def make_jobs(args: argparse.Namespace) -> list[GymQAJob]:
    weights, rate = encoder_weights(args)
    jobs = []
    for seed in args.seeds:  # seed-major: a partial table has every encoder at seed 0 first
        for encoder in [*args.encoders, *extra_encoders(args)]:
            jobs.append(
                GymQAJob(
                    encoder=encoder,
                    weights=weights[encoder],
                    data_root=args.data,
                    llm=args.llm,
                    questions=str(Path(args.runs) / "questions" / "test.json"),
                    config=args.config,
                    out_dir=str(Path(args.runs) / encoder / f"seed{seed}"),
                    seed=seed,
                    cache_root=args.cache_root,
                    overrides=[f"data.label_rate={rate}"],
                    max_new_tokens=args.max_new_tokens,
                    progress=not args.no_progress,
                )
            )
    return jobs


def prepare(args: argparse.Namespace, job: GymQAJob) -> None:
    """The tiny LLM and the test questions every job shares."""
    if not (Path(args.llm) / "config.json").is_file():
        print(f"[bench_gymqa] building the tiny LLM in {args.llm}", flush=True)
        build_task_tiny_llm(args.data, args.llm)
    cfg = stage_config(job)
    make_test_questions(args.data, job.questions, list(args.question_types), cfg.data.distractors)


def aggregate(args: argparse.Namespace, argv: list[str]) -> dict:
    """Summarise every finished job under ``args.runs``."""
    table: dict = {}
    for encoder in encoders_run(args):
        results = {}
        for path in sorted(Path(args.runs, encoder).glob(f"seed*/{RESULT_FILE}")):
            results[int(path.parent.name[4:])] = json.loads(path.read_text())
        for mode in MODES:
            per_seed = {s: r for s, r in results.items() if r["accuracy"].get(mode) is not None}
            if not per_seed:
                continue
            seeds = sorted(per_seed)
            accs = [per_seed[s]["accuracy"][mode] for s in seeds]
            types = sorted({t for r in per_seed.values() for t in r["per_answer_type"][mode]})
            table[f"{encoder}@{mode}"] = {
                "mean": statistics.mean(accs),
                "std": statistics.stdev(accs) if len(accs) > 1 else 0.0,
                "runs": accs,
                "seeds": seeds,
                "questions": per_seed[seeds[0]]["correct_total"][mode][1],
                "per_answer_type": {
                    t: statistics.mean(
                        r["per_answer_type"][mode][t]
                        for r in per_seed.values()
                        if r["per_answer_type"][mode].get(t) is not None
                    )
                    for t in types
                },
            }
    table["machine"] = {
        "cpu": platform.processor() or platform.machine(),
        "cores": os.cpu_count(),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
    }
    table["command"] = shlex.join(["python", "scripts/bench_gymqa.py", *argv])
    table["settings"] = {"data": args.data, "config": args.config, "sefar": args.sefar, "llm": args.llm}
    return table


def encoders_run(args: argparse.Namespace) -> list[str]:
    """sefar, framepool, then any other encoder with a job folder under ``args.runs``."""
    found = sorted(p.name for p in Path(args.runs).glob("*") if p.is_dir() and p.name in ALL_ENCODERS)
    return [*ENCODERS, *(e for e in found if e not in ENCODERS)]


def markdown(table: dict) -> str:
    lines = [
        "| encoder @ mode | Gym-QA test accuracy (%) | seeds | questions | runs |",
        "|---|---|---|---|---|",
    ]
    for encoder in dict.fromkeys(key.split("@")[0] for key in table if "@" in key):
        for mode in MODES:
            e = table.get(f"{encoder}@{mode}")
            if e is None:
                continue
            runs = ", ".join(f"{a:.1f}" for a in e["runs"])
            lines.append(
                f"| {encoder} @ {mode} | {e['mean']:.1f} ± {e['std']:.1f} | {len(e['runs'])} | "
                f"{e['questions']} | {runs} |"
            )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parse_args(argv)
    try:
        if not args.aggregate_only:
            jobs = make_jobs(args)
            prepare(args, jobs[0])
            for job in jobs:
                result = run_job(job, force=args.force, log=lambda m: print(f"[bench_gymqa] {m}", flush=True))
                accs = ", ".join(f"{m} {a:.1f} %" for m, a in result["accuracy"].items())
                print(f"[bench_gymqa] {job.encoder} seed {job.seed}: {accs}", flush=True)
        table = aggregate(args, argv)
    except ExperimentError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    Path(args.json_out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json_out).write_text(json.dumps(table, indent=1) + "\n")
    md = markdown(table)
    if args.markdown_out:
        Path(args.markdown_out).write_text(md + "\n")
    print(md)
    print(f"-> {args.json_out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
