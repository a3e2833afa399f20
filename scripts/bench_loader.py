"""Loader throughput: the full SeFAR data path vs decoding the same frames alone. Prints JSON.

    python scripts/bench_loader.py --data data/synthgym-bench [--workers 0 2] [--batches 12] [--json-out F]

Arm A (pipeline): the lock-step :class:`~sefar_encoder.loader.SemiSupervisedLoader` — per step B_l
labeled clips (decode + dual-level sampling + jitter/crop/flip) and ratio × B_l unlabeled clips (one
decode, weak and strong views incl. per-view crops, Mod-Perturb reversal, channel dropout), collated
and normalised to float32 (by default after the transfer from the workers, as training does;
``--normalize-in-workers`` measures the alternative).
Arm B (decode only): the same loader structure, lists, frame indices (same seeds) and worker count, but
each sample only opens the clip and decodes its frames (uint8, collated). The frame cache is off in both
arms, so both pay the decoder. Throughput is clips per second (a labeled clip and an unlabeled clip count
one each). Each of ``--repeats`` repeats times both arms over the same ``--batches`` steps after
``--warmup`` steps that absorb worker start-up; with 0 workers the arms alternate step by step (both
see the same moments of a shared machine's load), with workers run by run in alternating order. The
ratio is the median of the per-repeat A/B ratios. ``per_workers`` also gives
clips per CPU second (this process + its workers), which other jobs on a shared machine disturb less.

``loader_vs_decode.ratio`` = A / B at the slowest worker setting (the target is >= 0.9: augmentation
must not slow the loader below the decoder). ``per_workers`` has each setting.
"""

from __future__ import annotations

import argparse
import gc
import resource
import statistics
import time
from pathlib import Path
from typing import Any

import torch

from gym_qa.lists import read_list
from sefar_encoder.benchmarking import emit
from sefar_encoder.dataset import Decoded, SkippedSample, VideoClipDataset
from sefar_encoder.loader import SemiSupervisedLoader, split_paths
from sefar_encoder.runtime.machine import machine_info


class DecodeOnlyDataset(VideoClipDataset):
    """Arm B: the same frame choice as the pipeline (same seed -> same indices), decode, nothing else."""

    def output_shapes(self) -> dict[str, tuple[int, ...]]:
        return {}  # no batch buffers: the uint8 frames are stacked by default_collate

    def augment_decoded(
        self, decoded: Decoded | SkippedSample, out: Any = None
    ) -> dict[str, Any] | SkippedSample:
        if isinstance(decoded, SkippedSample):
            return decoded
        return {"frames": torch.from_numpy(decoded.frames), "index": decoded.index}  # [S, H, W, 3] uint8


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", required=True, help="data set folder (splits/<rate>/train.csv, unlabel.csv)")
    p.add_argument("--label-rate", type=int, default=10, help="which splits/<rate> folder to read")
    p.add_argument("--workers", type=int, nargs="+", default=[0, 2], help="DataLoader worker counts to test")
    p.add_argument("--batches", type=int, default=12, help="timed steps per measurement")
    p.add_argument("--warmup", type=int, default=2, help="untimed steps before each measurement")
    p.add_argument("--repeats", type=int, default=5, help="measurements per arm (median reported)")
    p.add_argument("--batch-size", type=int, default=4, help="labeled clips per step (B_l)")
    p.add_argument("--ratio", type=int, default=3, help="unlabeled clips per labeled clip")
    p.add_argument("--image-size", type=int, default=64, help="output crop size")
    p.add_argument("--views", type=int, nargs="+", default=[2, 2, 4], help="frames per view")
    p.add_argument("--backend", default="decord", choices=["decord", "pyav"], help="video decoder")
    p.add_argument(
        "--normalize-in-workers",
        action="store_true",
        help="workers send float32 clips (default: uint8, normalised in the main process as in training)",
    )
    p.add_argument("--json-out", type=Path, default=None, help="also write the JSON here")
    return p.parse_args(argv)


def cpu_seconds() -> float:
    """CPU time of this process plus its finished children (DataLoader workers, once shut down)."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def measure(loader: SemiSupervisedLoader, warmup: int, batches: int, start_step: int) -> tuple[float, float]:
    """One arm alone: (clips per wall second over ``batches`` steps after ``warmup`` steps, clips per
    CPU second). The wall rate excludes worker start-up (absorbed by the warm-up); the CPU rate counts
    every clip of the run against all CPU used by this process and its workers, start-up included.
    """
    cpu0 = cpu_seconds()
    steps = loader.steps(start_step, warmup + batches)
    clips = 0
    for _ in range(warmup):
        lab, unl = next(steps)
        clips += len(lab["index"]) + len(unl["index"])
    timed, start = 0, time.perf_counter()
    for lab, unl in steps:
        timed += len(lab["index"]) + len(unl["index"])
    wall = time.perf_counter() - start
    del steps
    gc.collect()  # shut the workers down so their CPU time is counted
    return timed / wall, (clips + timed) / (cpu_seconds() - cpu0)


def measure_interleaved(
    loaders: dict[str, SemiSupervisedLoader], warmup: int, batches: int, start_step: int
) -> dict[str, tuple[float, float]]:
    """Both arms in this process (0 workers), alternating step by step, so that both see the same
    moments of a shared machine's load: {arm: (clips per wall second, clips per CPU second)}."""
    gens = {name: loader.steps(start_step, warmup + batches) for name, loader in loaders.items()}
    names = list(gens)
    wall, cpu, clips = dict.fromkeys(names, 0.0), dict.fromkeys(names, 0.0), dict.fromkeys(names, 0)
    for step in range(warmup + batches):
        for name in names if step % 2 == 0 else names[::-1]:
            t0, c0 = time.perf_counter(), time.process_time()
            lab, unl = next(gens[name])
            if step >= warmup:
                wall[name] += time.perf_counter() - t0
                cpu[name] += time.process_time() - c0
                clips[name] += len(lab["index"]) + len(unl["index"])
    return {name: (clips[name] / wall[name], clips[name] / cpu[name]) for name in names}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    import av
    import decord

    info = machine_info(decord=decord.__version__, av=av.__version__)
    paths = split_paths(args.data, args.label_rate)
    lists = {"labeled": read_list(paths.train), "unlabeled": read_list(paths.unlabel)}
    missing = [str(e.path) for entries in lists.values() for e in entries if not e.path.is_file()]
    if missing:
        total = sum(len(v) for v in lists.values())
        raise SystemExit(
            f"{len(missing)} of {total} clips listed in {paths.train} / {paths.unlabel} do not exist, e.g. "
            f"{missing[0]} (relative paths are resolved against the list file's folder, "
            f"docs/DESIGN.md §List files and splits)"
        )
    views, size = tuple(args.views), args.image_size
    common = {"num_classes": None, "views": views, "image_size": size, "backend": args.backend}
    normalize = args.normalize_in_workers
    pipeline = [
        VideoClipDataset(lists[m], mode=m, normalize=normalize, **common) for m in ("labeled", "unlabeled")
    ]
    decode = [DecodeOnlyDataset(lists[m], mode=m, **common) for m in ("labeled", "unlabeled")]

    per_workers: dict[str, Any] = {}
    for workers in args.workers:
        loaders = {
            name: SemiSupervisedLoader(*dsets, args.batch_size, args.ratio, workers, seed=0)
            for name, dsets in (("pipeline", pipeline), ("decode", decode))
        }
        rates: dict[str, list[float]] = {"pipeline": [], "decode": []}
        cpu_rates: dict[str, list[float]] = {"pipeline": [], "decode": []}
        for r in range(args.repeats):
            # Same steps (same clips, same frame indices) for both arms within a repeat.
            step0 = r * (args.warmup + args.batches)
            if workers == 0:
                measured = measure_interleaved(loaders, args.warmup, args.batches, step0)
            else:  # worker pools run ahead asynchronously: one arm at a time, order alternating
                order = ("pipeline", "decode") if r % 2 == 0 else ("decode", "pipeline")
                measured = {name: measure(loaders[name], args.warmup, args.batches, step0) for name in order}
            for name, (wall_rate, cpu_rate) in measured.items():
                rates[name].append(wall_rate)
                cpu_rates[name].append(cpu_rate)
        ratios = [a / b for a, b in zip(rates["pipeline"], rates["decode"])]
        cpu_ratios = [a / b for a, b in zip(cpu_rates["pipeline"], cpu_rates["decode"])]
        per_workers[str(workers)] = {
            "pipeline_clips_per_s": round(statistics.median(rates["pipeline"]), 2),
            "decode_clips_per_s": round(statistics.median(rates["decode"]), 2),
            "ratio": round(statistics.median(ratios), 3),
            "pipeline_clips_per_cpu_s": round(statistics.median(cpu_rates["pipeline"]), 2),
            "decode_clips_per_cpu_s": round(statistics.median(cpu_rates["decode"]), 2),
            "cpu_ratio": round(statistics.median(cpu_ratios), 3),
            "runs_ratio": [round(x, 3) for x in ratios],
            "runs_clips_per_s": {k: [round(x, 2) for x in v] for k, v in rates.items()},
        }
    worst = min(per_workers, key=lambda w: per_workers[w]["ratio"])
    result = {
        "loader_vs_decode": {
            "ratio": per_workers[worst]["ratio"],
            "a": per_workers[worst]["pipeline_clips_per_s"],
            "b": per_workers[worst]["decode_clips_per_s"],
            "unit": "clips/s",
            "how": (
                f"A = full labeled+unlabeled (weak+strong) pipeline, B = decode of the same frames only; "
                f"{worst} DataLoader workers (the worst of {args.workers}); B_l={args.batch_size}, "
                f"B_u={args.ratio * args.batch_size}, views={list(views)}, {size}px, {args.backend}, "
                f"frame cache off; clips normalised {'in workers' if normalize else 'in the main process'}; "
                f"ratio = median over {args.repeats} repeats of A/B, each arm timed over {args.batches} steps "
                f"after {args.warmup} warm-up steps (0 workers: arms alternate step by step; otherwise run "
                f"by run); data {args.data} "
                f"({len(lists['labeled'])} labeled + {len(lists['unlabeled'])} unlabeled clips)"
            ),
        },
        "per_workers": per_workers,
        "machine": info,
    }
    return emit(result, args.json_out)


if __name__ == "__main__":
    main()
