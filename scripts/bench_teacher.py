"""Cost of Adaptive Regulation's K teacher predictions in a SeFAR training step. Prints JSON.

    python scripts/bench_teacher.py [--preset timesformer_tiny_p16_64] [--b-l 8] [--b-u 24] [--k 10]
        [--repeats 9] [--json-out F]

One SSL optimizer step of method ``sefar`` = ``ssl_step`` (teacher on the weak views, student on the
labeled + strong views and on the TubeTokenMix-ed strong views) + backward + AdamW step, on one fixed
random batch (B_l labeled, B_u unlabeled clips, views (2, 2, 4)), timed in three arms:

    k10       Adaptive Regulation as trained here: ONE teacher backbone + fusion pass, K head-dropout
              samples on h (``method.regulation_impl=one_pass``, the default)
    k1        Adaptive Regulation off: one teacher prediction and a fixed threshold (``method.ada_reg=false``)
    k10_full  the official design: K full teacher passes (``method.regulation_impl=full_passes``)

The arms run round-robin (the starting arm rotates every round) so that each sees the same moments of a
shared machine's load; after ``--warmup`` rounds, each arm's step time is the median over ``--repeats``
rounds. ``teacher_k10_vs_k1.ratio`` = k10 / k1 (target <= 1.05: K samples must cost next to nothing) and
``official_k10_full_vs_k1.ratio`` = k10_full / k1. ``teacher_only`` times the teacher part alone.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from sefar_encoder.benchmarking import emit
from sefar_encoder.ema import EMATeacher
from sefar_encoder.methods import MethodConfig, method_views, resolve_method, ssl_step
from sefar_encoder.model import SeFAREncoder, TubeMix, model_config
from sefar_encoder.regulation import teacher_k_full_passes, teacher_k_samples
from sefar_encoder.runtime.machine import machine_info

ARMS = {
    "k10": {},
    "k1": {"ada_reg": False},
    "k10_full": {"regulation_impl": "full_passes"},
}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--preset", default="timesformer_tiny_p16_64", help="encoder preset (sefar_encoder.model)")
    p.add_argument("--classes", type=int, default=67, help="number of classes (SynthGym bench: 67)")
    p.add_argument("--b-l", type=int, default=8, help="labeled clips per step B_l")
    p.add_argument("--b-u", type=int, default=24, help="unlabeled clips per step B_u")
    p.add_argument("--k", type=int, default=10, help="Adaptive Regulation samples K")
    p.add_argument("--warmup", type=int, default=2, help="untimed rounds first")
    p.add_argument("--repeats", type=int, default=9, help="timed rounds (one step per arm each)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json-out", type=Path, default=None, help="also write the JSON here")
    return p.parse_args(argv)


def make_batch(cfg, b_l: int, b_u: int, gen: torch.Generator) -> tuple[dict, dict]:
    """Random normalised clips ``[B, C, S, H, W]`` and labels; the same batch for every arm."""
    shape = (cfg.in_chans, cfg.num_frames, cfg.img_size, cfg.img_size)
    labeled = {
        "video": torch.randn(b_l, *shape, generator=gen),
        "label": torch.randint(0, cfg.num_classes, (b_l,), generator=gen),
    }
    unlabeled = {
        "weak": torch.randn(b_u, *shape, generator=gen),
        "strong": torch.randn(b_u, *shape, generator=gen),
        "label": torch.randint(0, cfg.num_classes, (b_u,), generator=gen),
    }
    return labeled, unlabeled


def timed(fn: Callable[[], Any]) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    info = machine_info()
    torch.manual_seed(args.seed)
    method_cfgs = {name: MethodConfig(name="sefar", **kw) for name, kw in ARMS.items()}
    for cfg in method_cfgs.values():
        cfg.regulation.num_samples = args.k
    methods = {name: resolve_method(cfg) for name, cfg in method_cfgs.items()}
    views = method_views(methods["k10"])
    mcfg = model_config(args.preset, views=views, num_classes=args.classes)
    student = SeFAREncoder(mcfg).train()
    teacher = EMATeacher(student, 0.99).module  # eval mode: only the head dropout is sampled (K arms)
    optimizer = torch.optim.AdamW(student.parameters(), lr=1e-5)  # small: the arms see ~the same weights
    tube_mix = TubeMix()
    labeled, unlabeled = make_batch(mcfg, args.b_l, args.b_u, torch.Generator().manual_seed(args.seed))

    def step(name: str) -> None:
        result = ssl_step(
            methods[name], method_cfgs[name], student, teacher, labeled, unlabeled, 1.0, tube_mix,
            student.grid_size,
        )  # fmt: skip
        result.loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    weak = unlabeled["weak"]
    teacher_parts = {
        "k10": lambda: teacher_k_samples(teacher, weak, args.k),
        "k1": lambda: torch.no_grad()(teacher)(weak),
        "k10_full": lambda: teacher_k_full_passes(teacher, weak, args.k),
    }

    names = list(ARMS)
    times: dict[str, list[float]] = {n: [] for n in names}
    teacher_times: dict[str, list[float]] = {n: [] for n in names}
    for r in range(args.warmup + args.repeats):
        order = names[r % len(names) :] + names[: r % len(names)]
        for name in order:
            t_step = timed(lambda n=name: step(n))
            t_teacher = timed(teacher_parts[name])
            if r >= args.warmup:
                times[name].append(t_step)
                teacher_times[name].append(t_teacher)
    med = {n: statistics.median(v) for n, v in times.items()}
    med_teacher = {n: statistics.median(v) for n, v in teacher_times.items()}

    setup = (
        f"method sefar, {args.preset} (views {list(views)}, {args.classes} classes), B_l={args.b_l}, "
        f"B_u={args.b_u}, one fixed random batch; a step = ssl_step (teacher on weak, student on labeled + "
        f"strong, TubeTokenMix pass) + backward + AdamW step; arms round-robin with rotating start, median "
        f"over {args.repeats} rounds after {args.warmup} warm-up rounds"
    )
    result = {
        "teacher_k10_vs_k1": {
            "ratio": round(med["k10"] / med["k1"], 4),
            "a": round(med["k10"], 4),
            "b": round(med["k1"], 4),
            "unit": "s/step",
            "how": f"a = Ada-Reg K={args.k}: one teacher pass + {args.k} head-dropout samples; "
            f"b = Ada-Reg off: one teacher prediction (fixed threshold). {setup}",
        },
        "official_k10_full_vs_k1": {
            "ratio": round(med["k10_full"] / med["k1"], 4),
            "a": round(med["k10_full"], 4),
            "b": round(med["k1"], 4),
            "unit": "s/step",
            "how": f"a = official Ada-Reg: {args.k} full teacher passes with the head dropout on; "
            f"b = Ada-Reg off: one teacher prediction. {setup}",
        },
        "teacher_only": {
            "unit": "s",
            "median": {n: round(v, 4) for n, v in med_teacher.items()},
            "how": "the teacher part of each arm alone (no student), on the same weak views",
        },
        "runs_s_per_step": {n: [round(x, 4) for x in v] for n, v in times.items()},
        "machine": info,
    }
    return emit(result, args.json_out)


if __name__ == "__main__":
    main()
