"""What the feature cache saves: one stage-B (instruct) epoch with the clips' features encoded on the fly vs
read from the cache. Prints JSON.

    python scripts/bench_cache.py [--data data/synthgym-bench] [--label-rate 5] [--repeats 2] [--json-out F]
    python scripts/bench_cache.py --data DIR --encoder runs/encoder-bench/encoder --llm data/tiny_llm

Both arms are ``scripts/train_mllm.py``'s own ``main`` (stage ``instruct``, one epoch over the generated
Gym-QA questions about the labeled clips of ``splits/<label-rate>``): arm A with ``features.on_the_fly=true``
(each micro-batch's clips are decoded, preprocessed and encoded again, through ``encode_entries``, the code
that fills the cache), arm B reading the tokens from the cache (``mllm/feature_cache.py``), built once
before the arms and timed apart (``cache_build_s``). An arm's time is the sum of the per-step ``seconds``
that train_mllm logs in ``metrics.jsonl`` (forward, backward, optimizer step; no validation, checkpoint or
start-up). The arms alternate, ``--repeats`` epochs each; the median epoch of each arm is reported.

``cache_speedup.ratio`` = A / B (target >= 10). Without ``--encoder`` / ``--llm`` the models are built
with random weights in the work folder (weights do not change the timing): the SeFAR encoder of the
SynthGym bench config (``--encoder-preset``, default ``timesformer_tiny_p16_64``, views 2+2+4) and the
tiny LLM's default size. The ratio depends on the encoder's cost next to the LLM step's: with the CPU
presets the encoder is cheap; ``--encoder-preset timesformer_base_p16_224`` (SeFAR's ViT-B) shows the
other end. ``encode_vs_read`` isolates the features themselves: the tokens of the first 16 cached clips
produced on the fly (decode + preprocess + encode, batches of 8) vs read from the cache, per clip, and the
largest difference between the two (``benchmark_feature_cache``). Without ``--data`` the bench data set is
used if present, else a tiny SynthGym is generated (``--data`` names the folder to create). train_mllm's
own output goes to stderr; stdout holds only the JSON.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
import train_mllm  # a sibling entry point (scripts/ is on sys.path when a script runs)
import yaml

from gym_qa.clips import clip_id_of
from gym_qa.hierarchy import load_hierarchy
from gym_qa.lists import read_list, write_list
from mllm.encoders import VideoEncoder, build_video_encoder
from mllm.feature_cache import FeatureCache, build_feature_cache, encode_entries
from mllm.language_model import TinyLLMConfig, build_tiny_llm, tiny_llm_corpus
from sefar_encoder.benchmarking import emit
from sefar_encoder.decoding import Backend
from sefar_encoder.model.presets import PRESETS as ENCODER_PRESETS
from sefar_encoder.model.presets import build_encoder
from sefar_encoder.runtime.machine import machine_info

BENCH_DATA = Path("data/synthgym-bench")
FALLBACK_DATA = Path("data/synthgym-benchcache")
ENCODER_PRESET = "timesformer_tiny_p16_64"  # configs/encoder/synthgym_bench.yaml's model
VIEWS = (2, 2, 4)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--data",
        type=Path,
        default=None,
        help=f"SynthGym-layout data set (default: {BENCH_DATA} if present, else a tiny SynthGym generated "
        f"into {FALLBACK_DATA})",
    )
    p.add_argument("--label-rate", type=int, default=5, help="labeled clips: splits/<rate>/train.csv")
    p.add_argument("--question-types", nargs="+", default=["what"], help="Gym-QA question types generated")
    p.add_argument("--batch-size", type=int, default=4, help="samples per optimizer step (one micro-batch)")
    p.add_argument(
        "--max-clips", type=int, default=0, help="use only the first N labeled clips (0 = all of the split)"
    )
    p.add_argument("--repeats", type=int, default=2, help="epochs per arm (arms alternate; median reported)")
    p.add_argument("--encoder", type=Path, default=None, help="SeFAR encoder checkpoint (default: random)")
    p.add_argument(
        "--encoder-preset",
        default=ENCODER_PRESET,
        choices=sorted(ENCODER_PRESETS),
        help="architecture of the random encoder built without --encoder",
    )
    p.add_argument("--llm", type=Path, default=None, help="LLM directory (default: random tiny LLM)")
    p.add_argument("--work-dir", type=Path, default=None, help="runs and feature cache (default: a temp dir)")
    p.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch intra-op threads (default 1: on a shared machine more threads than free cores make "
        "every step many times slower; 0 = torch's default)",
    )
    p.add_argument("--json-out", type=Path, default=None, help="also write the JSON here")
    return p.parse_args(argv)


def resolve_data(data: Path | None) -> tuple[Path, str]:
    """The data folder, and how it was obtained (a tiny SynthGym is generated when none is given)."""
    if data is None and BENCH_DATA.is_dir():
        return BENCH_DATA, "existing"
    data = data or FALLBACK_DATA
    if (data / "categories.txt").is_file():
        return data, "existing"
    from gym_qa.synthgym.dataset import generate_dataset

    print(f"bench_cache: generating a tiny SynthGym into {data}", file=sys.stderr)
    generate_dataset(data, preset="tiny", seed=0, progress=False)
    return data, "generated (preset tiny)"


def build_models(
    work: Path, data: Path, encoder: Path | None, llm: Path | None, preset: str = ENCODER_PRESET
) -> tuple[Path, Path]:
    """The encoder and LLM directories: the given ones, or random ones built under ``work``."""
    hierarchy = load_hierarchy(data)
    if encoder is None:
        encoder = work / f"encoder-{preset}"
        if not (encoder / "config.json").is_file():
            torch.manual_seed(0)
            model = build_encoder(
                preset, class_names=hierarchy.names, num_classes=hierarchy.num_classes, views=VIEWS
            )
            model.eval().save_pretrained(encoder)
    if llm is None:
        llm = work / "tiny_llm"
        if not (llm / "config.json").is_file():
            with contextlib.redirect_stdout(sys.stderr):
                build_tiny_llm(tiny_llm_corpus(hierarchy.names), llm, TinyLLMConfig(steps=0))
    return encoder, llm


def subset(data: Path, label_rate: int, max_clips: int, work: Path) -> Path:
    """The data root train_mllm reads: ``data``, or with ``max_clips`` a folder under ``work`` whose
    ``splits/<rate>/train.csv`` lists the first ``max_clips`` labeled clips (absolute paths)."""
    if max_clips <= 0:
        return data
    entries = read_list(data / "splits" / str(label_rate) / "train.csv")[:max_clips]
    root = work / "data"
    write_list(root / "splits" / str(label_rate) / "train.csv", [(e.path, e.label) for e in entries], False)
    return root


def write_config(
    path: Path, args: argparse.Namespace, data: Path, root: Path, encoder: Path, llm: Path, work: Path
) -> Path:
    """A train_mllm config: stage B only, from a random projector (no stage A), no validation."""
    cfg = {
        "stage": "instruct",
        "seed": 0,
        "progress": False,
        "llm": {"name_or_path": str(llm)},
        "lora": {"enabled": True, "r": 8, "alpha": 16, "dropout": 0.05},
        "features": {"encoder": "sefar", "weights": str(encoder), "cache_root": str(work / "features")},
        "data": {
            "root": str(root),
            "categories": str(data),
            "label_rate": args.label_rate,
            "question_types": args.question_types,
        },
        "eval": {"list_file": ""},
        "instruct": {
            "out_dir": str(work / "runs" / "instruct"),
            "init_from": "",
            "epochs": 1,
            "max_steps": 0,
            "batch_size": args.batch_size,
            "micro_batch_size": args.batch_size,
            "lr": 1e-4,
            "warmup_fraction": 0.0,
            "train_llm": True,
        },
    }
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


def run_epoch(config: Path, out_dir: Path, overrides: list[str]) -> dict[str, Any]:
    """One train_mllm stage-B run; its summed step seconds and its step count."""
    argv = ["--config", str(config), f"instruct.out_dir={out_dir}", *overrides]
    with contextlib.redirect_stdout(sys.stderr):
        code = train_mllm.main(argv)
    if code != 0:
        raise SystemExit(f"bench_cache: train_mllm {' '.join(argv)} exited with {code}")
    records = [json.loads(line) for line in (out_dir / "metrics.jsonl").read_text().splitlines() if line]
    steps = [r for r in records if "loss" in r]
    return {"seconds": sum(r["seconds"] for r in steps), "steps": len(steps)}


def benchmark_feature_cache(
    encoder: VideoEncoder,
    cache: FeatureCache,
    list_file: str | os.PathLike,
    num_clips: int = 16,
    batch_size: int = 8,
    num_workers: int = 0,
    backend: Backend = "decord",
) -> dict[str, Any]:
    """Seconds to produce the tokens of the first ``num_clips`` cached clips of ``list_file`` on the fly
    (decode + preprocess + encode) vs reading them from ``cache``; also checks they agree."""
    entries = [e for e in read_list(list_file) if clip_id_of(e.path) in cache][:num_clips]
    if not entries:
        raise ValueError(f"none of the clips of {list_file} are in {cache.directory}")
    ids = [clip_id_of(e.path) for e in entries]
    start = time.perf_counter()
    fresh = [
        b.tokens for b in encode_entries(encoder, entries, batch_size, num_workers, backend, progress=False)
    ]
    on_the_fly = time.perf_counter() - start
    start = time.perf_counter()
    cached = [cache.get(ids[i : i + batch_size]) for i in range(0, len(ids), batch_size)]
    from_cache = time.perf_counter() - start
    diff = (torch.cat(fresh).float() - torch.cat(cached).float()).abs().max().item()
    return {
        "encoder": encoder.name,
        "clips": len(ids),
        "on_the_fly_s": on_the_fly,
        "cache_s": from_cache,
        "on_the_fly_ms_per_clip": 1e3 * on_the_fly / len(ids),
        "cache_ms_per_clip": 1e3 * from_cache / len(ids),
        "speedup": on_the_fly / max(from_cache, 1e-9),
        "max_abs_diff": diff,
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    info = machine_info()
    data, origin = resolve_data(args.data)
    train_list = data / "splits" / str(args.label_rate) / "train.csv"
    if not train_list.is_file():
        raise SystemExit(f"bench_cache: {train_list} not found (is {data} a SynthGym data set?)")
    with contextlib.ExitStack() as stack:
        work = args.work_dir or Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-cache-")))
        work.mkdir(parents=True, exist_ok=True)
        encoder, llm = build_models(work, data, args.encoder, args.llm, args.encoder_preset)
        root = subset(data, args.label_rate, args.max_clips, work)
        train_list = root / "splits" / str(args.label_rate) / "train.csv"
        config = write_config(work / "config.yaml", args, data, root, encoder, llm, work)

        # The cache is built once, before the arms (as train_mllm's build_features would), and timed.
        start = time.perf_counter()
        video_encoder = build_video_encoder("sefar", encoder)
        report = build_feature_cache(video_encoder, [train_list], work / "features", progress=False)
        cache_build_s = time.perf_counter() - start
        encode_vs_read = benchmark_feature_cache(video_encoder, FeatureCache(report.directory), train_list)

        arms = {"on_the_fly": ["features.on_the_fly=true"], "cache": ["features.on_the_fly=false"]}
        epochs: dict[str, list[dict[str, Any]]] = {name: [] for name in arms}
        for r in range(args.repeats):
            for name in list(arms) if r % 2 == 0 else list(arms)[::-1]:
                out = work / "runs" / f"{name}_{r}"
                epochs[name].append(run_epoch(config, out, arms[name]))
        seconds = {name: statistics.median(e["seconds"] for e in runs) for name, runs in epochs.items()}
        steps = epochs["cache"][0]["steps"]
        clips = len(read_list(train_list))

    result = {
        "cache_speedup": {
            "ratio": round(seconds["on_the_fly"] / seconds["cache"], 3),
            "a": round(seconds["on_the_fly"], 4),
            "b": round(seconds["cache"], 4),
            "unit": "s/epoch",
            "how": (
                f"a = stage-B epoch with features encoded on the fly (train_mllm features.on_the_fly=true: "
                f"decode + preprocess + {args.encoder or f'random {args.encoder_preset}'} encoder per "
                f"micro-batch), b = the same epoch reading the feature cache; {steps} steps of "
                f"{args.batch_size} samples ({'/'.join(args.question_types)} questions about {clips} labeled "
                f"clips{' (the first)' if args.max_clips else ''} of {data}/splits/{args.label_rate}), "
                f"LoRA r 8 on "
                f"{'a random tiny LLM' if args.llm is None else args.llm}; time = sum of the logged step "
                f"seconds; median of {args.repeats} epochs per arm, arms alternating; "
                f"{torch.get_num_threads()} torch thread(s)"
            ),
        },
        "cache_build": {
            "seconds": round(cache_build_s, 2),
            "clips": report.encoded,
            "how": "build_feature_cache over the labeled list (each clip decoded and encoded once)",
        },
        "encode_vs_read": {
            key: float(f"{value:.4g}") if isinstance(value, float) else value
            for key, value in encode_vs_read.items()
        },
        "runs_s_per_epoch": {name: [round(e["seconds"], 3) for e in runs] for name, runs in epochs.items()},
        "data": {"folder": str(data), "origin": origin, "labeled_clips": clips},
        "machine": info,
    }
    return emit(result, args.json_out)


if __name__ == "__main__":
    main()
