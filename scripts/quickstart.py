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
                  exported to <out>/encoder (the default of scripts/demo.py and predict.py), its
                  out-of-domain check calibrated on val (predict.py --calibrate)
                                                                       <out>/encoder_run/metrics.json
  control         the order-blind control: the same encoder recipe, supervised, frames pooled in time
                  (method framepool); its forward/backward pair accuracy is what no temporal model goes
                  below                                                <out>/control_run/metrics.json
  tiny_llm        the CPU stand-in for Vicuna: tokenizer + small Llama on the task's text  <out>/tiny_llm/
  questions       Gym-QA questions about the test clips (types from configs/mllm/quickstart.yaml)
                                                                               <out>/gymqa/test.json
  mllm_sefar      feature cache, stage A (align), stage B (instruct), Gym-QA evaluation (generate,
                  likelihood, classifier4) on the SeFAR encoder; the MLLM exported to <out>/mllm
                                                                        <out>/mllm_sefar/result.json
  mllm_framepool  the same on the order-blind baseline: the frame-pretrained backbone the encoder
                  started from, mean-pooled over time (docs/DESIGN.md §Video encoders)
                                                                    <out>/mllm_framepool/result.json
  mllm_frameseq   the same on the image-encoder baseline as video-LLMs use CLIP: that backbone's per-frame
                  tokens, pooled per frame, in time order with a frame-index code (the LLM can see order)
                                                                     <out>/mllm_frameseq/result.json
  report          <out>/summary.json (every number, read from the stages' metrics files) and
                  <out>/report.md (rendered from summary.json only) with the plots         report.md

The report shows: the encoder's semi-supervised training curves and test accuracy (mean class, the
forward/backward and twist pairs) beside the order-blind control's, its most confused element pairs and confusion matrix, and the Gym-QA
accuracy of the MLLM on SeFAR features vs on the frame backbone's features (frame sequence and frame pool),
overall and per answer type.
"""

from __future__ import annotations

import argparse
import dataclasses
import resource
import shlex
import shutil
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

# Sibling entry points (Python puts scripts/ on sys.path when it runs this file): the backbone pretraining
# and the Gym-QA job runner.
import pretrain_image_backbone
import yaml
from bench_gymqa import call_main, make_test_questions, run_job
from tqdm import tqdm

from gym_qa.atomic_files import atomic_replace
from gym_qa.synthgym.dataset import GENERATOR_VERSION
from mllm.gymqa_experiment import (
    ExperimentError,
    GymQAJob,
    build_task_tiny_llm,
    read_json,
    stage_config,
    write_json,
)
from mllm.language_model import MICRO_TINY_LLM, TinyLLMConfig
from mllm.quickstart_report import ENCODERS, Layout, build_summary, pct, plot_gymqa, write_report
from sefar_encoder import frame_pretraining
from sefar_encoder.runtime.config import load_config, to_dict
from sefar_encoder.training_config import EncoderTrainConfig

REPO = Path(__file__).resolve().parents[1]

STAGES: tuple[str, ...] = (
    "data",
    "backbone",
    "encoder",
    "control",
    "tiny_llm",
    "questions",
    "mllm_sefar",
    "mllm_framepool",
    "mllm_frameseq",
    "report",
)
CONFIGS = {
    "pretrain": REPO / "configs" / "pretrain" / "quickstart.yaml",
    "encoder": REPO / "configs" / "encoder" / "quickstart.yaml",
    "mllm": REPO / "configs" / "mllm" / "quickstart.yaml",
}
PRESET = "quickstart"
# Half the benchmarks' nuisance (athlete, camera, clutter, noise ranges): the tiny encoder learns the
# elements within the quickstart's few CPU minutes, and the pairs still differ only in time.
DIFFICULTY = 0.5


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


def backbone_config(lay: Layout, args: argparse.Namespace) -> frame_pretraining.PretrainConfig:
    overrides = [f"data_root={lay.data}", f"progress={str(args.progress).lower()}"]
    return load_config(frame_pretraining.PretrainConfig, args.pretrain_config, overrides)


def backbone_dir(lay: Layout, args: argparse.Namespace) -> Path:
    """The folder the backbone stage writes (a function of the settings and the pretraining data)."""
    return frame_pretraining.backbone_dir(backbone_config(lay, args))


def stage_backbone(lay: Layout, args: argparse.Namespace, force: bool) -> bool:
    if not force and (backbone_dir(lay, args) / "config.json").is_file():
        return False
    # --resume unless forced: an interrupted pretraining continues from its last checkpoint
    pretrain_image_backbone.pretrain(backbone_config(lay, args), force=force, resume=not force)
    return True


def encoder_overrides(lay: Layout, args: argparse.Namespace, run_dir: Path) -> list[str]:
    """The encoder config's overrides for a run of this quickstart in ``run_dir``."""
    overrides = [
        f"out_dir={run_dir}", f"data.root={lay.data}", f"seed={args.seed}",
        f"init_checkpoint={backbone_dir(lay, args) / 'model.safetensors'}",
        f"progress={str(args.progress).lower()}",
    ]  # fmt: skip
    if load_config(EncoderTrainConfig, args.encoder_config, overrides).model.frame_blocks:
        overrides.append(f"frame_token_cache={lay.data / 'frame-tokens'}")  # beside the data it encodes
    return overrides


def train_encoder(args: argparse.Namespace, run_dir: Path, overrides: list[str], force: bool) -> bool:
    """Train (or resume) the encoder config with ``overrides`` in ``run_dir`` unless a finished run of the
    same settings is there; a run of other settings (config, backbone or data) is discarded."""
    wanted = to_dict(load_config(EncoderTrainConfig, args.encoder_config, overrides))
    saved = run_dir / "config.yaml"
    stale = saved.is_file() and strip_progress(yaml.safe_load(saved.read_text())) != strip_progress(wanted)
    done = (run_dir / "metrics.json").is_file() and (run_dir / "encoder" / "config.json").is_file()
    if not force and done and not stale:
        return False
    if force or stale:
        if stale:
            tqdm.write(f"   {run_dir} was trained with other settings (config, backbone or data): again")
        shutil.rmtree(run_dir, ignore_errors=True)
    call_main("train_encoder", ["--config", str(args.encoder_config), "--resume", *overrides])
    return True


def stage_encoder(lay: Layout, args: argparse.Namespace, force: bool) -> bool:
    ran = train_encoder(args, lay.encoder_run, encoder_overrides(lay, args, lay.encoder_run), force)
    if ran or not (lay.encoder / "config.json").is_file():
        copy_dir(lay.encoder_run / "encoder", lay.encoder)  # the model selected on val
    if ran or not (lay.encoder / "out_of_domain.json").is_file():  # the demo's and predict's flag
        calibration = ["--calibrate", "--inputs", str(lay.data / "val.csv")]
        reference = ["--reference", str(lay.data / "splits" / "100" / "train.csv")]
        call_main("predict", ["--encoder", str(lay.encoder), *calibration, *reference, "--quiet"])
    return ran


def stage_control(lay: Layout, args: argparse.Namespace, force: bool) -> bool:
    overrides = [*encoder_overrides(lay, args, lay.control_run), "method.name=framepool"]
    return train_encoder(args, lay.control_run, overrides, force)


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
    weights = lay.encoder if encoder == "sefar" else backbone_dir(lay, args)  # frame baselines: the backbone
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
    return load_config(EncoderTrainConfig, args.encoder_config).data.label_rate


def stage_mllm(encoder: str) -> Callable[[Layout, argparse.Namespace, bool], bool]:
    def stage(lay: Layout, args: argparse.Namespace, force: bool) -> bool:
        job = make_job(lay, args, encoder)
        result = run_job(job, force=force, log=tqdm.write)
        if encoder == "sefar":  # the demo's default MLLM (scripts/demo.py)
            copy_dir(Path(result["mllm"]), lay.mllm)
        return any(s is not None for s in result["seconds"].values())

    return stage


def stage_report(lay: Layout, args: argparse.Namespace, force: bool) -> bool:
    train_types = stage_config(make_job(lay, args, "sefar")).data.question_types
    command = "python scripts/quickstart.py " + shlex.join(sys.argv[1:])
    summary = build_summary(lay, backbone_dir(lay, args), list(args.question_types), train_types, command)
    write_json(lay.summary, summary)
    plot_gymqa(summary, lay.out / "gymqa_accuracy.png")
    write_report(summary, lay.report)
    return True


STAGE_FUNCTIONS: dict[str, Callable[[Layout, argparse.Namespace, bool], bool]] = {
    "data": stage_data,
    "backbone": stage_backbone,
    "encoder": stage_encoder,
    "control": stage_control,
    "tiny_llm": stage_tiny_llm,
    "questions": stage_questions,
    "mllm_sefar": stage_mllm("sefar"),
    "mllm_framepool": stage_mllm("framepool"),
    "mllm_frameseq": stage_mllm("frameseq"),
    "report": stage_report,
}


def strip_progress(cfg: dict[str, Any]) -> dict[str, Any]:
    """A resolved config without the keys that do not change the result."""
    return {k: v for k, v in cfg.items() if k != "progress"}


def copy_dir(src: Path, dst: Path) -> None:
    """Replace ``dst`` by a copy of ``src`` (copied next to it, then renamed: never half a checkpoint)."""
    for stale in dst.parent.glob(f"{dst.name}.*.tmp"):  # a killed run's partial copy
        shutil.rmtree(stale)
    with atomic_replace(dst) as tmp:
        shutil.copytree(src, tmp)
        shutil.rmtree(dst, ignore_errors=True)  # a rename replaces no folder that has files


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
        "(Gym-QA likelihood: "
        + ", ".join(f"{e} {pct(acc[e]['accuracy']['likelihood'])} %" for e in ENCODERS)
        + ")"
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
