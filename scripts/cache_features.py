"""Encode every clip of one or more list files once and store the tokens (the MLLM stages' feature cache).

    python scripts/cache_features.py --encoder sefar --weights runs/sefar/encoder \\
        --list data/synthgym-tiny/splits/5/train.csv data/synthgym-tiny/test.csv --out data/features \\
        [--batch-size 8] [--workers 2] [--option token_layout=frame_mean ...]

Features go to ``<out>/<fingerprint[:16]>/`` (see :mod:`mllm.feature_cache`): run again with the same
encoder and only new or changed clips are encoded; other weights, options or preprocessing make another
folder. ``--option key=value`` passes a builder option of the encoder (values parsed as YAML, dotted keys
nest: ``--option grid=2 model_kwargs.depth=2``); an unknown key fails and lists the encoder's options.
Prints a JSON summary (folder, fingerprint, clips encoded / reused / skipped, seconds).

On several processes every rank encodes a share of the clips and rank 0 merges them into the cache one
process would have written, bit for bit (``mllm/feature_cache_ranks.py``); rank 0 prints the summary:

    torchrun --nproc_per_node 2 scripts/cache_features.py ... --device cpu     # gloo, 2 CPU processes
    accelerate launch --num_processes 2 scripts/cache_features.py ... --device cuda   # one GPU per process

Bad clips follow --on-bad-sample: ``error`` (default) stops at the first clip that cannot be decoded or
gives non-finite features, keeping what was encoded before it; ``skip`` records it in the index and goes on.
A killed build keeps every finished shard; run it again to continue.

Exit codes: 0 done; 2 bad input, one line naming the file (options, weights, list file and line, a clip
that cannot be decoded or encoded under --on-bad-sample error, a cache made with another dtype).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from accelerate import PartialState

from gym_qa.lists import ListFileError
from mllm.encoders import ENCODERS, build_video_encoder
from mllm.feature_cache import DTYPES, EncodingError, StaleCacheError, build_feature_cache
from mllm.feature_cache_ranks import RankError
from sefar_encoder.decoding import DecodeError
from sefar_encoder.runtime.config import ConfigError, parse_overrides


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--encoder", required=True, choices=sorted(ENCODERS), help="video encoder name")
    p.add_argument("--weights", required=True, help="checkpoint directory / file, or hub id")
    p.add_argument("--list", required=True, nargs="+", type=Path, help="list file(s) '<path> <label>'")
    p.add_argument("--out", required=True, type=Path, help="cache root (a folder per encoder fingerprint)")
    p.add_argument("--batch-size", type=int, default=8, help="clips per encoder call")
    p.add_argument("--workers", type=int, default=0, help="DataLoader worker processes decoding clips")
    p.add_argument("--backend", default="decord", choices=["decord", "pyav"], help="video decoder")
    p.add_argument(
        "--on-bad-sample", default="error", choices=["error", "skip"], help="undecodable clip: raise or skip"
    )
    p.add_argument("--shard-size", type=int, default=1000, help="clips per safetensors shard")
    p.add_argument("--dtype", default="float32", choices=sorted(DTYPES), help="stored feature dtype")
    p.add_argument(
        "--device",
        default="cpu",
        help="where the encoder runs (cpu, cuda, cuda:1...; on several processes 'cuda' is each one's GPU)",
    )
    p.add_argument("--option", nargs="*", default=[], metavar="KEY=VALUE", help="encoder builder option")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        options = parse_overrides(args.option)
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    # Launched on several processes (torchrun / accelerate launch set WORLD_SIZE): join their group. A
    # single process leaves accelerate's process-wide state alone (callers may build an Accelerator later).
    state = PartialState(cpu=args.device == "cpu") if int(os.environ.get("WORLD_SIZE", "1")) > 1 else None
    rank, world_size = (state.process_index, state.num_processes) if state else (0, 1)
    device = state.device if state and args.device == "cuda" else args.device
    try:
        encoder = build_video_encoder(args.encoder, args.weights, **options).to(device)
    except (ValueError, FileNotFoundError, ImportError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    try:
        report = build_feature_cache(
            encoder,
            args.list,
            args.out,
            batch_size=args.batch_size,
            num_workers=args.workers,
            backend=args.backend,
            on_bad_sample=args.on_bad_sample,
            shard_size=args.shard_size,
            dtype=DTYPES[args.dtype],
            progress=not args.no_progress and rank == 0,
            rank=rank,
            world_size=world_size,
        )
    except (ListFileError, StaleCacheError, RankError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except (DecodeError, EncodingError) as err:
        print(
            f"error: {err} (clips encoded before it are kept; --on-bad-sample skip goes on)", file=sys.stderr
        )
        return 2
    if rank == 0:
        summary = {
            **report.to_dict(),
            "encoder": encoder.describe(),
            "device": str(device),
            "processes": world_size,
        }
        print(json.dumps(summary, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
