"""The element-detection benchmark on SynthGym bench routines: HAAN vs plain MIL, SeFAR vs frame-pool
features, several seeds.

    python scripts/make_synthgym.py --out data/synthgym-routines --routines bench --workers 2
    python scripts/bench_detection.py                                  # features, then every job, 3 seeds
    python scripts/bench_detection.py --jobs haan@sefar --seeds 0      # one job
    python scripts/bench_detection.py --aggregate-only                 # only rebuild the table

Jobs (``<model>@<features>``): ``haan@sefar`` (HAAN, configs/detection/synthgym_routines_bench.yaml, on
the SeFAR encoder's sliding-window features), ``mil@sefar`` (the same recipe with the atomic-action
clustering and the hierarchy off: the plain MIL / W-TALC-style baseline) and ``haan@framepool`` (HAAN on
the frame backbone's features averaged over each window: order-blind). The feature folders are
``<routines folder>/features-<features>``, extracted first when they do not hold every routine
(scripts/extract_routine_features.py, in a subprocess; ``--sefar`` is the encoder, ``--framepool`` the
backbone — by default the one the SeFAR run started from). Each (job, seed) is its own resumable run in ``<runs>/<job>/seed<k>/``
(``train_detector.py --resume`` in a subprocess): finished runs are skipped, so the table can be built
across sessions; the seed changes the detector's initialisation, batches and k-means only.

Aggregation reads the finished runs (their ``metrics.json``: the test mAP of the epoch chosen on val) and
writes ``--json-out`` (default ``<runs>/detection_bench.json``; the committed figures are
``docs/results/detection_bench.json``, written only when named there): an object keyed ``"<job>"`` with,
per metric (``map@0.1``, ``map@0.3``, ``map@0.5``, ``map_avg`` = mean over tIoU 0.1:0.05:0.5; percent),
``mean``, ``std`` and ``runs`` (per seed), plus ``seeds``, ``minutes`` (mean training wall time),
``best_epoch`` per seed and ``test_routines``; and ``machine`` and ``command``. A Markdown table is
printed (``--markdown-out`` also writes it).
"""

from __future__ import annotations

import argparse
import json
import shlex
import statistics
import subprocess
import sys
from pathlib import Path

from gym_qa.atomic_files import write_text_atomic
from gym_qa.routine_annotations import read_routines_json
from mllm.gymqa_experiment import encoder_run_settings
from sefar_encoder.detection.features import FEATURES_META
from sefar_encoder.runtime.machine import machine_info

REPO = Path(__file__).resolve().parent.parent
MIL = ["model.clustering=false", "model.hierarchy=false"]
# job -> (feature folder name, train_detector overrides)
JOBS: dict[str, tuple[str, list[str]]] = {
    "haan@sefar": ("sefar", []),
    "mil@sefar": ("sefar", MIL),
    "haan@framepool": ("framepool", []),
}
REPORTED = {"map@0.1": 0.1, "map@0.3": 0.3, "map@0.5": 0.5}  # plus the average over the thresholds


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--routines", type=Path, default=Path("data/synthgym-routines/routines.json"))
    p.add_argument("--sefar", type=Path, default=Path("runs/ssl_bench/sefar@10/seed0/encoder"))
    p.add_argument(
        "--framepool", type=Path, default=None, help="image backbone folder (default: the SeFAR run's init)"
    )
    p.add_argument("--config", type=Path, default=REPO / "configs/detection/synthgym_routines_bench.yaml")
    p.add_argument("--jobs", nargs="+", default=list(JOBS), choices=list(JOBS), help="jobs to run")
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2], help="detector seeds")
    p.add_argument(
        "--runs", type=Path, default=Path("runs/detection"), help="run folders <runs>/<job>/seed<k>"
    )
    p.add_argument("--aggregate-only", action="store_true", help="run nothing; tabulate the finished runs")
    p.add_argument("--json-out", type=Path, default=None, help="default: <runs>/detection_bench.json")
    p.add_argument("--markdown-out", type=Path, default=None, help="also write the Markdown table here")
    return p.parse_args(argv)


def framepool_weights(args: argparse.Namespace) -> Path:
    """``--framepool``, or the backbone the SeFAR run started from (its run ``config.yaml``)."""
    backbone = args.framepool or encoder_run_settings(args.sefar).get("backbone")
    if not backbone:
        sys.exit(f"error: {args.sefar}: no run config.yaml naming its init_checkpoint: give --framepool")
    return Path(backbone)


def feature_folder(args: argparse.Namespace, features: str) -> Path:
    """The features of ``args.routines`` from one encoder, extracted in a subprocess unless the folder
    already holds every routine (the extraction skips the routines it has, so an interrupted one
    continues)."""
    folder = args.routines.parent / f"features-{features}"
    routines, _ = read_routines_json(args.routines)
    if (folder / FEATURES_META).is_file() and all(
        (folder / f"{r.routine_id}.npz").is_file() for r in routines
    ):
        return folder
    source = (
        ["--encoder", str(args.sefar)]
        if features == "sefar"
        else ["--framepool", str(framepool_weights(args))]
    )
    cmd = [
        sys.executable,
        str(REPO / "scripts/extract_routine_features.py"),
        "--routines",
        str(args.routines),
    ]
    print(f"[bench_detection] features {features} -> {folder}", flush=True)
    subprocess.run([*cmd, *source, "--out", str(folder), "--quiet"], check=True)
    return folder


def run_job(job: str, seed: int, args: argparse.Namespace) -> None:
    """Train (or resume) one (job, seed) in a subprocess unless its run has finished."""
    out = args.runs / job / f"seed{seed}"
    if (out / "metrics.json").is_file():
        return
    features, overrides = JOBS[job]
    folder = feature_folder(args, features)
    cmd = [sys.executable, str(REPO / "scripts/train_detector.py"), "--config", str(args.config), "--resume"]
    cmd += [f"routines={args.routines}", f"features={folder}", f"out_dir={out}", f"seed={seed}", *overrides]
    print(f"[bench_detection] {job} seed {seed}: {shlex.join(cmd[2:])}", flush=True)
    subprocess.run([*cmd, "progress=false"], check=True)


def test_maps(metrics: dict) -> dict[str, float]:
    """A run's test mAP (%) at the reported thresholds and averaged over all of them."""
    test = metrics["test"]
    by_threshold = dict(zip(test["thresholds"], test["map_per_threshold"]))
    row = {name: 100 * by_threshold[t] for name, t in REPORTED.items()}
    return row | {"map_avg": 100 * test["average_map"]}


def aggregate(args: argparse.Namespace, argv: list[str]) -> dict:
    """One entry per job with finished runs under ``args.runs``."""
    table: dict = {}
    for job in JOBS:
        runs = {}
        for path in sorted((args.runs / job).glob("seed*/metrics.json")):
            metrics = json.loads(path.read_text())
            if "test" in metrics:
                runs[int(path.parent.name[4:])] = metrics
        if not runs:
            continue
        seeds = sorted(runs)
        maps = [test_maps(runs[s]) for s in seeds]
        entry: dict = {}
        for name in [*REPORTED, "map_avg"]:
            values = [m[name] for m in maps]
            std = statistics.stdev(values) if len(values) > 1 else 0.0
            entry[name] = {"mean": statistics.mean(values), "std": std, "runs": values}
        entry |= {
            "seeds": seeds,
            "minutes": statistics.mean(runs[s]["minutes"] for s in seeds),
            "best_epoch": [runs[s]["best_epoch"] for s in seeds],
            "test_routines": runs[seeds[0]]["test_routines"],
        }
        table[job] = entry
    table["machine"] = machine_info()
    table["command"] = shlex.join(["python", "scripts/bench_detection.py", *argv])
    return table


def markdown(table: dict) -> str:
    names = [*REPORTED, "map_avg"]
    lines = [
        "| model @ features | " + " | ".join(f"{n} %" for n in names) + " | seeds | minutes / run |",
        "|---|" + "---|" * (len(names) + 2),
    ]
    for job, e in table.items():
        if job in ("machine", "command"):
            continue
        cells = [f"{e[n]['mean']:.2f} ± {e[n]['std']:.2f}" for n in names]
        lines.append(f"| {job} | {' | '.join(cells)} | {len(e['seeds'])} | {e['minutes']:.1f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parse_args(argv)
    if not args.aggregate_only:
        if not args.routines.is_file():
            print(f"error: {args.routines} not found (make_synthgym.py --routines bench)", file=sys.stderr)
            return 1
        try:
            for seed in args.seeds:
                for job in args.jobs:
                    run_job(job, seed, args)
        except subprocess.CalledProcessError as err:
            print(f"error: {shlex.join(map(str, err.cmd))} exited with {err.returncode}", file=sys.stderr)
            return 1
    table = aggregate(args, argv)
    json_out = args.json_out or args.runs / "detection_bench.json"
    json_out.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(json_out, json.dumps(table, indent=1) + "\n")
    md = markdown(table)
    if args.markdown_out:
        write_text_atomic(args.markdown_out, md + "\n")
    print(md)
    print(f"-> {json_out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
