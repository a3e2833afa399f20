"""Gym-QA benchmark: the MLLM on SeFAR features vs on the frame backbone's features, several seeds.

    python scripts/bench_gymqa.py                                   # SynthGym bench, seeds 0 1 2
    python scripts/bench_gymqa.py --sefar runs/ssl_bench/sefar@10/seed0/encoder --seeds 0
    python scripts/bench_gymqa.py --aggregate-only                  # only rebuild the table

For each encoder (``sefar``: a trained SeFAR encoder; ``framepool``: the frame-pretrained image ViT that
encoder started from, mean-pooled over time — docs/DESIGN.md §Video encoders; ``frameseq``: the same ViT's
per-frame tokens in time order with a frame-index code, as video-LLMs feed CLIP frames) and each seed, one
Gym-QA job (``mllm.gymqa_experiment``), run here by :func:`run_job`: feature cache, stage A (align), stage
B (instruct), evaluation of the test questions in ``generate`` and ``likelihood`` mode, the trained answer
form's modes (``generate_form``: the generated answers read as "C. <text>"; ``letter``: constrained
decoding over the option letters; ``--no-letter`` skips both), and for SeFAR also ``classifier4`` (its own
classifier restricted to the options, on the element-name questions); each step is an entry point of
``scripts/`` called in this process, skipped when its output exists. The seed changes stage A/B training
only; the encoders, the tiny LLM and the questions are the same for every job. ``--extra clip=<weights>``
(or eva) adds encoders to the comparison; ``--encoder-option NAME.KEY=VALUE`` sets an encoder's builder
options, e.g. CLIP in ``frameseq``'s frame sequence layout::

    python scripts/bench_gymqa.py --extra clip=openai/clip-vit-large-patch14 \\
        --encoder-option clip.grid=2 clip.frame_position=sinusoidal

Every job is resumable in ``<runs>/<encoder>/seed<k>/`` (finished steps are skipped; ``--force`` redoes
them), so the table can be built across sessions. Aggregation reads the finished jobs only and writes
``--json-out`` (default ``<runs>/gymqa_bench.json``, beside the jobs; the committed figures,
``docs/results/gymqa_bench.json``, are written only when named there): an object keyed
``"<encoder>@<mode>"`` (modes: generate, generate_form, likelihood, letter, classifier4) with ``mean``, ``std`` and ``runs`` (per-seed test accuracy, %), ``seeds``,
``questions``, and per answer type the mean accuracy; plus ``machine``
(``sefar_encoder.runtime.machine.machine_info``: cpu, cores, threads, torch version, date, ...) and
``command``. A Markdown table is printed (``--markdown-out`` also writes it).

Defaults follow the SSL benchmark (``scripts/bench_ssl.py``): the SeFAR encoder of ``sefar@10`` seed 0,
whose run ``config.yaml`` gives the label rate (stage A/B use the same labeled clips) and the backbone
(the framepool weights). The tiny LLM is built under ``--llm`` if missing, the test questions under
``<runs>/questions/test.json`` (``--question-types``, default Gym-QA's "what" and the attribute types
direction, twists, shape and turns, each with its own accuracy column; distractors from the stage config,
whose ``data.question_types`` are the stage B training questions).
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import io
import json
import shlex
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from mllm.encoders import ENCODERS as ALL_ENCODERS
from mllm.encoders import build_video_encoder
from mllm.feature_cache import build_feature_cache
from mllm.gymqa_experiment import (
    MODES,
    RESULT_FILE,
    STEPS,
    ExperimentError,
    GymQAJob,
    build_task_tiny_llm,
    collect_result,
    encoder_run_settings,
    job_inputs,
    job_steps,
    prepare_job_dir,
    read_json,
    rescore_eval,
    split_lists,
    stage_config,
    step_output,
    train_overrides,
    write_json,
)
from mllm.gymqa_plot import plot_accuracy_per_type
from mllm.training_config import MLLMTrainConfig
from sefar_encoder.runtime.atomic import write_text_atomic
from sefar_encoder.runtime.config import ConfigError, parse_overrides
from sefar_encoder.runtime.machine import machine_info

ENCODERS = ("sefar", "framepool", "frameseq")
BACKBONE_ENCODERS = ("framepool", "frameseq")  # the frame-pretrained backbone's two baselines


# ----------------------------------------------------------------------------------------- entry points
def call_main(script: str, argv: list[str]) -> None:
    """Run the sibling entry point ``scripts/<script>.py``'s ``main(argv)`` in this process (imported by its
    module name: Python puts scripts/ on sys.path when it runs a script); a non-zero exit code raises (a
    ``main`` that returns its summary instead of a code, as make_synthgym's, raises on errors itself)."""
    code = importlib.import_module(script).main(argv)
    if isinstance(code, int) and code != 0:
        raise ExperimentError(f"scripts/{script}.py {' '.join(argv)} exited with code {code}")


# ----------------------------------------------------------------------------------------- one job
def eval_args(job: GymQAJob, mode: str, folder: Path) -> list[str]:
    args = [
        "--weights", job.weights, "--encoder", job.encoder, "--questions", job.questions,
        "--list", str(Path(job.data_root) / "test.csv"), "--categories", job.data_root,
        "--cache-root", job.cache_root, "--mode", mode,
        "--out-predictions", str(folder / "predictions.jsonl"),
        "--out-json", str(folder / "report.json"), "--out-md", str(folder / "report.md"),
    ]  # fmt: skip
    if mode != "classifier4":
        # The job's own builder options, always (also when there are none), so evaluation builds the
        # encoder the job was configured with rather than one rebuilt from the checkpoint's description;
        # the fingerprint check guards the match either way.
        options = [f"{k}={json.dumps(v)}" for k, v in job.encoder_options.items()]
        args += ["--mllm", str(job.path / "instruct" / "mllm"), "--max-new-tokens", str(job.max_new_tokens)]
        args += ["--encoder-option", *options]
    if not job.progress:
        args.append("--no-progress")
    return args


def run_step(job: GymQAJob, step: str, cfg: MLLMTrainConfig, encoder: Any) -> None:
    """Run one step (its output does not exist yet)."""
    if step == "features":
        lists = split_lists(job.data_root, cfg.data.label_rate)
        report = build_feature_cache(
            encoder, list(lists.values()), job.cache_root, batch_size=cfg.features.batch_size,
            num_workers=cfg.features.num_workers, on_bad_sample=cfg.features.on_bad_sample,
            progress=job.progress,
        )  # fmt: skip
        write_json(
            step_output(job, step), {**report.to_dict(), "lists": {k: str(v) for k, v in lists.items()}}
        )
    elif step in ("align", "instruct"):
        argv = ["--config", job.config, "--stage", step, "--resume", *train_overrides(job)]
        call_main("train_mllm", argv)
    elif step == "eval":
        call_main("eval_mllm_gymqa", eval_args(job, "both", job.path / "eval"))
    elif step == "letter":
        call_main("eval_mllm_gymqa", eval_args(job, "letter", job.path / "letter"))
    elif step == "classifier4":
        call_main("eval_mllm_gymqa", eval_args(job, "classifier4", job.path / "classifier4"))
    else:
        raise ValueError(f"unknown step {step!r}; steps: {STEPS}")
    if not step_output(job, step).is_file():
        raise ExperimentError(f"step {step} finished without writing {step_output(job, step)}")


def run_job(job: GymQAJob, force: bool = False, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Run the missing steps of ``job`` (all of them when ``force``) and return its result dict
    (also written to ``<job>/result.json``)."""
    cfg = stage_config(job)
    try:
        encoder = build_video_encoder(job.encoder, job.weights, **job.encoder_options)
    except (ValueError, TypeError, FileNotFoundError) as err:
        raise ExperimentError(f"encoder {job.encoder} from {job.weights}: {err}") from None
    prepare_job_dir(job, job_inputs(job, encoder.fingerprint()), force, log)
    seconds: dict[str, float | None] = {}
    for step in job_steps(job):
        if step_output(job, step).is_file():
            log(f"[{job.encoder} seed {job.seed}] {step}: done before, skipped ({step_output(job, step)})")
            seconds[step] = None
            continue
        log(f"[{job.encoder} seed {job.seed}] {step} ...")
        started = time.perf_counter()
        run_step(job, step, cfg, encoder)
        seconds[step] = round(time.perf_counter() - started, 2)
    if rescore_eval(job):
        log(
            f"[{job.encoder} seed {job.seed}] eval: report re-scored from its predictions (a new reading mode)"
        )
    result = collect_result(job)
    result["seconds"] = seconds
    write_json(job.path / RESULT_FILE, result)
    return result


def make_test_questions(
    data_root: str | Path, out: str | Path, types: list[str], distractors: str, seed: int = 0
) -> Path:
    """The Gym-QA questions about the test clips (``scripts/make_gymqa.py``). Kept when ``out`` was made
    with the same settings (recorded in ``<out stem>.settings.json``), else written again."""
    out = Path(out)
    root = Path(data_root)
    settings = {
        "data_root": str(root.resolve()),
        "types": list(types),
        "distractors": distractors,
        "seed": seed,
    }
    record = out.with_suffix(".settings.json")
    if out.is_file() and record.is_file() and read_json(record) == settings:
        return out
    argv = [
        "--list", str(root / "test.csv"), "--categories", str(root), "--out", str(out),
        "--types", ",".join(types), "--distractors", distractors, "--seed", str(seed),
        "--dataset", root.name, "--summary-json", str(out.with_suffix(".summary.json")),
    ]  # fmt: skip
    with contextlib.redirect_stdout(io.StringIO()):  # the summary goes to --summary-json
        call_main("make_gymqa", argv)
    write_json(record, settings)
    return out


# ----------------------------------------------------------------------------------------- the bench


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default="data/synthgym-bench", help="SynthGym data set folder")
    p.add_argument(
        "--sefar", default="runs/ssl_bench/sefar@10/seed0/encoder", help="SeFAR encoder checkpoint directory"
    )
    p.add_argument(
        "--framepool",
        default=None,
        help="frame-pretrained backbone folder, the weights of framepool and frameseq (default: the one "
        "the SeFAR run started from)",
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
    p.add_argument(
        "--encoder-option",
        nargs="*",
        default=[],
        metavar="NAME.KEY=VALUE",
        help="builder option of one encoder, e.g. clip.grid=2 clip.frame_position=sinusoidal frameseq.grid=1",
    )
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2], help="stage A/B seeds")
    p.add_argument("--runs", default="runs/gymqa_bench", help="job folders <runs>/<encoder>/seed<k>/")
    p.add_argument("--cache-root", default="data/features", help="feature cache root")
    p.add_argument("--max-new-tokens", type=int, default=48, help="generate mode: answer length bound")
    p.add_argument(
        "--question-types",
        nargs="+",
        default=["what", "direction", "twists", "shape", "turns"],
        help="answer types of the test questions: the element, and the attributes that need time "
        "(gym_qa.attribute_questions); stage B trains on the config's data.question_types",
    )
    p.add_argument(
        "--no-letter",
        action="store_true",
        help="skip the trained-form modes: the letter-mode evaluation step and generate_form",
    )
    p.add_argument("--force", action="store_true", help="redo every step of the selected jobs")
    p.add_argument("--aggregate-only", action="store_true", help="run nothing; tabulate the finished jobs")
    p.add_argument(
        "--json-out",
        default=None,
        help="aggregated JSON (default: <runs>/gymqa_bench.json; the committed figures are "
        "docs/results/gymqa_bench.json, written only when named here)",
    )
    p.add_argument("--markdown-out", default=None, help="also write the Markdown tables here")
    p.add_argument(
        "--plot-out",
        default=None,
        help="also plot accuracy per question type per encoder (likelihood, generate_text and letter modes) "
        "to this PNG",
    )
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
    if not Path(args.sefar).is_dir():
        raise ExperimentError(
            f"encoder not found: {args.sefar} (a SeFAR encoder folder, as scripts/train_encoder.py exports "
            "to <run>/encoder; give it with --sefar)"
        )
    settings = encoder_run_settings(args.sefar)
    framepool = args.framepool or settings.get("backbone")
    rate = args.label_rate or settings.get("label_rate")
    if set(BACKBONE_ENCODERS) & set(args.encoders) and not framepool:
        raise ExperimentError(
            f"{args.sefar}: no run config.yaml naming its init_checkpoint; give --framepool (backbone folder)"
        )
    if rate is None:
        raise ExperimentError(f"{args.sefar}: no run config.yaml giving data.label_rate; give --label-rate")
    weights = {"sefar": args.sefar, **{name: framepool for name in BACKBONE_ENCODERS}}
    return {**weights, **extra_encoders(args)}, int(rate)


def encoder_options(args: argparse.Namespace, encoders: list[str]) -> dict[str, dict[str, Any]]:
    """``--encoder-option NAME.KEY=VALUE`` as {name: {key: value}} (values parsed as YAML)."""
    try:
        options = parse_overrides(args.encoder_option)
    except ConfigError as err:
        raise ExperimentError(f"--encoder-option: {err}") from None
    for name, value in options.items():
        if name not in encoders or not isinstance(value, dict):
            raise ExperimentError(
                f"--encoder-option {name}...: expected NAME.KEY=VALUE with NAME one of the encoders run {encoders}"
            )
    return options


def make_jobs(args: argparse.Namespace) -> list[GymQAJob]:
    weights, rate = encoder_weights(args)
    options = encoder_options(args, [*args.encoders, *extra_encoders(args)])
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
                    encoder_options=options.get(encoder, {}),
                    overrides=[f"data.label_rate={rate}"],
                    max_new_tokens=args.max_new_tokens,
                    trained_form=not args.no_letter,
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
    table["machine"] = machine_info()
    table["command"] = shlex.join(["python", "scripts/bench_gymqa.py", *argv])
    table["settings"] = {"data": args.data, "config": args.config, "sefar": args.sefar, "llm": args.llm}
    return table


def encoders_run(args: argparse.Namespace) -> list[str]:
    """sefar, framepool, frameseq, then any other encoder with a job folder under ``args.runs``."""
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


def per_type_markdown(table: dict) -> str:
    """Accuracy per answer type (mean over seeds), a row per encoder @ mode: where temporal features matter."""
    entries = {k: e for k, e in table.items() if "@" in k and e.get("per_answer_type")}
    types = list(dict.fromkeys(t for e in entries.values() for t in e["per_answer_type"]))
    lines = [
        "| encoder @ mode | " + " | ".join(f"{t} %" for t in types) + " |",
        "|---|" + "---|" * len(types),
    ]
    for key, e in entries.items():
        cells = [f"{e['per_answer_type'][t]:.1f}" if t in e["per_answer_type"] else "–" for t in types]
        lines.append(f"| {key.replace('@', ' @ ')} | {' | '.join(cells)} |")
    return "\n".join(lines)


def plot_per_type(
    table: dict, path: Path, modes: tuple[str, ...] = ("likelihood", "generate_text", "letter")
) -> None:
    """One panel per mode: accuracy per question type (and overall) for each encoder, with the seeds'
    spread of the overall accuracy as an error bar."""
    encoders = list(dict.fromkeys(key.split("@")[0] for key in table if "@" in key))
    panels = []
    for mode in modes:
        entries = {e: table[f"{e}@{mode}"] for e in encoders if f"{e}@{mode}" in table}
        series = {
            f"{e} ({len(r['runs'])} seeds)": (r["mean"], r["per_answer_type"], r["std"])
            for e, r in entries.items()
        }
        if series:
            panels.append((f"Gym-QA on SynthGym bench, {mode} mode", series))
    if not panels:
        raise ExperimentError(f"no finished job has a {' or '.join(modes)} result to plot")
    plot_accuracy_per_type(panels, path)


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
    json_out = Path(args.json_out or Path(args.runs) / "gymqa_bench.json")
    write_json(json_out, table)
    md = markdown(table) + "\n\nAccuracy per answer type (mean over seeds):\n\n" + per_type_markdown(table)
    if args.markdown_out:
        write_text_atomic(Path(args.markdown_out), md + "\n")
    if args.plot_out:
        plot_per_type(table, Path(args.plot_out))
    print(md)
    print(f"-> {json_out}" + (f", {args.plot_out}" if args.plot_out else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
