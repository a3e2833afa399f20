"""The semi-supervised benchmark on SynthGym bench: every method and ablation row, several seeds.

    python scripts/bench_ssl.py                          # run what is missing, then aggregate
    python scripts/bench_ssl.py --jobs sefar@10 supervised@10 --seeds 0
    python scripts/bench_ssl.py --aggregate-only         # only rebuild the tables from finished runs

Each (job, seed) is its own resumable run in ``<runs>/<job>/seed<k>/`` (``train_encoder.py --resume`` in a
subprocess): finished runs are skipped, an interrupted one continues from its last checkpoint, so the
table — hours of CPU — can be built in the background across sessions. Aggregation reads only finished
runs and writes ``docs/results/ssl_bench.json``: an object keyed ``"<job>"`` (e.g. ``"sefar@10"``) with
``mean``, ``std`` (mean class accuracy on test, %), ``runs`` (per seed), ``minutes`` (mean wall time per
run), pair accuracies, for SSL methods ``unlabeled_used`` (share of the last epoch's unlabeled clips with a
non-zero pseudo-label weight, %) and ``pseudo_acc`` (accuracy of that epoch's pseudo-labels, %), both means
over seeds, and a ``machine`` entry; plus a Markdown table on stdout (``--markdown-out``).
A job with no finished run under ``--runs`` keeps its entry from the existing JSON (marked ``"kept"``; use
``--fresh`` to drop them), so a table survives its run folders. With ``--add-seeds``, a job's new seeds are
added to its entry in the existing JSON instead of replacing it (for runs of the same code, data and backbone
as that entry's, e.g. a table continued on another machine after regenerating the data: check that a repeated
seed reproduces its figure first); the seeds taken over are listed in ``"seeds_from_previous"``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

from sefar_encoder.frame_pretraining import PretrainConfig, backbone_dir
from sefar_encoder.runtime.config import load_config
from sefar_encoder.runtime.machine import machine_info

REPO = Path(__file__).resolve().parent.parent

# job -> (label rate, overrides). Every method trains the same encoder, SeFAR's dual-level views (2, 2, 4)
# (``DUAL``), so that a row's gain over supervised is its use of the unlabeled clips; the two exceptions are
# the order-blind control (framepool: one 8-frame view, frames pooled) and the first ablation row, where
# SeFAR runs on one 8-frame view. The cumulative ablation rows switch SeFAR's three parts on one by one.
DUAL = "method.dual_level=true"
JOBS: dict[str, tuple[int, list[str]]] = {
    "supervised@100": (100, ["method.name=supervised", DUAL]),
    "supervised@10": (10, ["method.name=supervised", DUAL]),
    "framepool@100": (100, ["method.name=framepool"]),  # the order-blind control of the calibration
    "framepool@10": (10, ["method.name=framepool"]),
    "fixmatch@10": (10, ["method.name=fixmatch", DUAL]),
    "freematch@10": (10, ["method.name=freematch", DUAL]),
    "svformer@10": (10, ["method.name=svformer", DUAL]),
    "ltg@10": (10, ["method.name=ltg", DUAL]),
    "ablation-none@10": (10, ["method.dual_level=false", "method.mod_perturb=false", "method.ada_reg=false"]),
    "ablation-dual@10": (10, [DUAL, "method.mod_perturb=false", "method.ada_reg=false"]),
    "ablation-dual+perturb@10": (10, [DUAL, "method.mod_perturb=true", "method.ada_reg=false"]),
    "sefar@10": (10, ["method.name=sefar"]),
    "sefar-mixlogits@10": (10, ["method.name=sefar", "method.loss.mix_on_logits=true"]),  # L_mix on logits
    "sefar-allreverse@10": (10, ["method.name=sefar", "method.all_reverse=true"]),
    "supervised@5": (5, ["method.name=supervised", DUAL]),
    "fixmatch@5": (5, ["method.name=fixmatch", DUAL]),
    "svformer@5": (5, ["method.name=svformer", DUAL]),
    "freematch@5": (5, ["method.name=freematch", DUAL]),
    "sefar@5": (5, ["method.name=sefar"]),
    # One and two labeled clips per class (splits made by make_synthgym.py --add-rates 1 2): the rates at
    # which labels matter on this bench (RESULTS, "Where labels matter")
    "supervised@2": (2, ["method.name=supervised", DUAL]),
    "sefar@2": (2, ["method.name=sefar"]),
    "supervised@1": (1, ["method.name=supervised", DUAL]),
    "sefar@1": (1, ["method.name=sefar"]),
}
# SSL figures of a run's last epoch in metrics.json (shares of 1), tabulated in %
SSL_STATS = ("unlabeled_used", "pseudo_acc")
PAIR_KEYS = ("pairs_direction", "pairs_twists", "pairs_short_window")
ABLATION_STEPS = [
    ("ablation-none@10", "ablation-dual@10"),
    ("ablation-dual@10", "ablation-dual+perturb@10"),
    ("ablation-dual+perturb@10", "sefar@10"),
]


def pretrained_backbone(args: argparse.Namespace) -> Path:
    """The frame-pretrained backbone of ``args.data``, made by its own script in a subprocess (like every
    run here), which reuses a finished one of the same recipe and data; its folder is named by them."""
    overrides = [f"data_root={args.data}", "progress=false"]
    script = REPO / "scripts" / "pretrain_image_backbone.py"
    subprocess.run([sys.executable, str(script), "--config", args.pretrain_config, *overrides], check=True)
    return backbone_dir(load_config(PretrainConfig, args.pretrain_config, overrides)) / "model.safetensors"


def run_job(job: str, seed: int, args: argparse.Namespace, backbone: Path) -> Path:
    """Run (or resume) one (job, seed) in a subprocess; returns its run directory."""
    rate, overrides = JOBS[job]
    run_dir = Path(args.runs) / job / f"seed{seed}"
    if (run_dir / "metrics.json").is_file():
        return run_dir
    cmd = [
        sys.executable,
        str(REPO / "scripts" / "train_encoder.py"),
        "--config",
        args.config,
        "--resume",
        f"out_dir={run_dir}",
        f"seed={seed}",
        f"data.seed={seed}",
        f"data.root={args.data}",
        f"data.label_rate={rate}",
        f"init_checkpoint={backbone}",
        "progress=false",
        *overrides,
    ]
    print(f"[bench_ssl] {job} seed {seed}: {' '.join(cmd[2:])}", flush=True)
    t0 = time.time()
    subprocess.run(cmd, check=True)
    print(f"[bench_ssl] {job} seed {seed} finished in {(time.time() - t0) / 60:.1f} min", flush=True)
    return run_dir


def previous_table(path: Path) -> dict:
    """The JSON an earlier aggregation wrote (``{}`` when there is none); a broken file is an error."""
    if not path.is_file():
        return {}
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise SystemExit(f"{path}: line {e.lineno}: not valid JSON ({e.msg}); fix or move it, or use --fresh")


FIGURES = ("minutes", "top1", *PAIR_KEYS, *SSL_STATS)  # seed means beside the mean class accuracy


def seed_group(seed: int, metrics: dict) -> dict:
    """One finished run as a group of one seed: its accuracy and its other figures (in %)."""
    test = metrics["test"]
    figures = {"minutes": metrics["minutes"], "top1": 100 * test["top1"]}
    for key in PAIR_KEYS:
        if test.get(key, {}).get("accuracy") is not None:
            figures[key] = 100 * test[key]["accuracy"]
    for key in SSL_STATS:  # None for supervised runs, absent in runs from before the figure existed
        if metrics.get(key) is not None:
            figures[key] = 100 * metrics[key]
    return {"seeds": [seed], "runs": [100 * test["mean_class"]], "figures": figures}


def entry_from_groups(groups: list[dict]) -> dict:
    """A job's entry from groups of seeds (``seeds``, per-seed ``runs``, ``figures``: means over the group's
    seeds): mean and std over every seed, each figure the seed-weighted mean where every group has it. The
    groups are kept in the entry, so that seeds can be added to it later, exactly (:func:`add_seeds`)."""
    accs = {seed: acc for g in groups for seed, acc in zip(g["seeds"], g["runs"], strict=True)}
    entry = {
        "mean": statistics.mean(accs.values()),
        "std": statistics.stdev(accs.values()) if len(accs) > 1 else 0.0,
        "runs": [accs[s] for s in sorted(accs)],
        "seeds": sorted(accs),
    }
    for key in FIGURES:
        if all(key in g["figures"] for g in groups):
            entry[key] = sum(len(g["seeds"]) * g["figures"][key] for g in groups) / len(accs)
    entry["groups"] = sorted(groups, key=lambda g: min(g["seeds"]))
    return entry


def run_entry(runs: dict[int, dict]) -> dict:
    """A job's entry from its finished runs' metrics.json, keyed by seed."""
    return entry_from_groups([seed_group(seed, metrics) for seed, metrics in sorted(runs.items())])


def groups_of(entry: dict) -> list[dict]:
    """An entry's groups; an entry written before they were kept is one group of all its seeds."""
    if "groups" in entry:
        return entry["groups"]
    figures = {key: entry[key] for key in FIGURES if key in entry}
    return [{"seeds": entry["seeds"], "runs": entry["runs"], "figures": figures}]


def add_seeds(job: str, previous: dict, new: dict) -> dict:
    """``new`` (an entry of runs under ``--runs``) with the seeds of ``previous`` (the existing JSON's entry)
    that it does not have. Per-seed accuracies are kept, so mean and std are exact; the other figures are
    seed-weighted means of the groups. A seed in both comes from ``new``; a group of several seeds of which
    only some are new cannot be split (its figures are means over all of them) and is an error."""
    new_seeds, kept = set(new["seeds"]), []
    for group in groups_of(previous):
        overlap = new_seeds & set(group["seeds"])
        if overlap and overlap != set(group["seeds"]):
            raise SystemExit(
                f"{job}: --add-seeds cannot split the existing entry's seeds {sorted(group['seeds'])} (one group "
                f"of means) around the new runs' seeds {sorted(new_seeds)}; run the missing seeds only, or "
                "use --fresh"
            )
        if not overlap:
            kept.append(group)
    if not kept:
        return new
    entry = entry_from_groups(kept + groups_of(new))
    entry["seeds_from_previous"] = sorted(seed for g in kept for seed in g["seeds"])
    return entry


def aggregate(args: argparse.Namespace, previous: dict | None = None) -> dict:
    """Summarise every finished run under ``args.runs``.

    A job with no finished run there keeps its entry from ``previous`` (an earlier aggregation, possibly
    made from run folders that are gone, e.g. on another machine), marked ``"kept": true``; a job with
    finished runs is recomputed from them alone, so seeds of one row never mix sources, unless
    ``args.add_seeds`` (:func:`add_seeds`).
    """
    previous = previous or {}
    table: dict = {}
    per_seed: dict[str, dict[int, float]] = {}
    for job in JOBS:
        runs = {}
        for metrics_path in sorted((Path(args.runs) / job).glob("seed*/metrics.json")):
            runs[int(metrics_path.parent.name[4:])] = json.loads(metrics_path.read_text())
        if runs:
            entry = run_entry(runs)
            if args.add_seeds and job in previous:
                entry = add_seeds(job, previous[job], entry)
            elif set(previous.get(job, {}).get("seeds", [])) - set(runs):
                dropped = sorted(set(previous[job]["seeds"]) - set(runs))
                print(f"[bench_ssl] {job}: seeds {dropped} of the existing entry have no run here and are "
                      "dropped (--add-seeds keeps them)", file=sys.stderr)  # fmt: skip
        elif job in previous:
            entry = {**previous[job], "kept": True}
        else:
            continue
        table[job] = entry
        per_seed[job] = dict(zip(entry["seeds"], entry["runs"], strict=True))
    steps = {}
    for a, b in ABLATION_STEPS:
        if a in per_seed and b in per_seed:
            common = sorted(set(per_seed[a]) & set(per_seed[b]))
            diffs = [per_seed[b][s] - per_seed[a][s] for s in common]
            if diffs:
                steps[f"{b} - {a}"] = {
                    "mean": statistics.mean(diffs),
                    "std": statistics.stdev(diffs) if len(diffs) > 1 else 0.0,
                    "seeds": common,
                }
    table["ablation_steps"] = steps
    table["machine"] = machine_info(config=args.config, data=args.data)
    return table


def markdown(table: dict) -> str:
    columns = ["method", "test mean class acc. (%)", "seeds", "top-1 (%)", "fwd/bwd pairs (%)", "twist pairs (%)",
               "unlabeled used (%)", "pseudo-label acc. (%)", "min/run"]  # fmt: skip
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for job in JOBS:
        if job not in table:
            continue
        e = table[job]
        pairs, twists, used, pseudo = (
            f"{e[k]:.1f}" if k in e else "–" for k in ("pairs_direction", "pairs_twists", *SSL_STATS)
        )
        name = f"{job} †" if e.get("kept") else f"{job} ‡" if e.get("seeds_from_previous") else job
        lines.append(
            f"| {name} | {e['mean']:.1f} ± {e['std']:.1f} | {len(e['runs'])} | {e['top1']:.1f} | {pairs} | "
            f"{twists} | {used} | {pseudo} | {e['minutes']:.1f} |"
        )
    if any(e.get("kept") for job, e in table.items() if job in JOBS):
        lines += ["", "† kept from the previous aggregation: no finished run of this job under --runs."]
    if any(e.get("seeds_from_previous") for job, e in table.items() if job in JOBS):
        lines += [
            "",
            "‡ seeds added to the previous aggregation's (--add-seeds): seeds_from_previous in the JSON.",
        ]
    if table.get("ablation_steps"):
        lines += ["", "| ablation step (paired per seed) | Δ mean class (points) |", "|---|---|"]
        for name, d in table["ablation_steps"].items():
            lines.append(f"| {name} | {d['mean']:+.1f} ± {d['std']:.1f} (seeds {d['seeds']}) |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--config", default="configs/encoder/synthgym_bench.yaml", help="encoder config for all jobs"
    )
    parser.add_argument(
        "--pretrain-config", default="configs/pretrain/synthgym_bench.yaml", help="backbone config"
    )
    parser.add_argument("--data", default="data/synthgym-bench", help="SynthGym bench folder")
    parser.add_argument("--runs", default="runs/ssl_bench", help="where the per-(job, seed) runs go")
    parser.add_argument("--jobs", nargs="*", default=list(JOBS), choices=list(JOBS), help="jobs to run")
    parser.add_argument("--seeds", nargs="*", type=int, default=[0, 1, 2], help="seeds")
    parser.add_argument("--aggregate-only", action="store_true", help="do not train; tabulate finished runs")
    parser.add_argument("--json-out", default="docs/results/ssl_bench.json", help="aggregated JSON")
    parser.add_argument("--markdown-out", default=None, help="also write the Markdown table here")
    parser.add_argument(
        "--fresh",
        action="store_true",
        help="tabulate only the runs under --runs; by default a job with no finished run there keeps its "
        'entry from the existing --json-out (marked "kept")',
    )
    parser.add_argument(
        "--add-seeds",
        action="store_true",
        help="add a job's new seeds to its entry in the existing --json-out instead of replacing it (same code, "
        "data and backbone only: check that a repeated seed reproduces its figure first)",
    )
    args = parser.parse_args(argv)
    if args.add_seeds and args.fresh:
        parser.error("--add-seeds adds to the existing --json-out, which --fresh ignores: give one of them")
    previous = {} if args.fresh else previous_table(Path(args.json_out))
    if not args.aggregate_only:
        backbone = pretrained_backbone(args)
        for seed in args.seeds:  # seed-major: a partial table has every method at seed 0 first
            for job in args.jobs:
                run_job(job, seed, args, backbone)
    table = aggregate(args, previous)
    Path(args.json_out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json_out).write_text(json.dumps(table, indent=1) + "\n")
    md = markdown(table)
    if args.markdown_out:
        Path(args.markdown_out).write_text(md + "\n")
    print(json.dumps(table, indent=1))
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
