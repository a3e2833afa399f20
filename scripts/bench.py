"""The benchmark suite: runs every benchmark script as a subprocess and collects what each measured in this
run into ``docs/results/bench.json`` and ``docs/BENCHMARKS.md``.

    make bench                                   # = python scripts/bench.py
    python scripts/bench.py [--data DIR] [--only cache_speedup ...] [--with-quickstart] [--timeout 3600]

Figures (each ``{ratio, a, b, unit, how}`` plus its goal, taken from the script's JSON on stdout):

    loader_vs_decode    scripts/bench_loader.py          pipeline clips/s / decode-only clips/s   >= 0.9
    teacher_k10_vs_k1   scripts/bench_teacher.py         SSL step, Ada-Reg K=10 / Ada-Reg off      <= 1.05
    cache_speedup       scripts/bench_cache.py           stage-B epoch on the fly / from cache     >= 10
    mc_prefix_speedup   scripts/bench_option_scoring.py  K full forwards / prompt + packed options >= 0.9 x ideal
    quickstart          scripts/quickstart.py            minutes and peak RSS of the whole pipeline

A figure may carry ``ideal``: the ratio its token (or work) counts allow; its goal is then on
``ratio / ideal`` (``of_ideal``), and both are reported. A benchmark that fails (exit code, timeout, no
JSON, missing key) is reported as failed with the end of its stderr; the others still run, and the exit
code is then 1. A goal that is missed is reported, not an error. The quickstart is long: it is run (under
``/usr/bin/time -v``) only with ``--with-quickstart``; otherwise ``runs/quickstart/timing.json``
(``{"minutes": .., "peak_rss_gb": ..}``, written by the quickstart) is read and marked as not measured in
this run, or the figure is left out.

Run it from the repository root (paths are relative to it, as for every script). Data: ``--data``
(default ``data/synthgym-bench`` when present, else a small SynthGym is generated into
``data/synthgym-small``). The machine (CPU, cores, memory, torch, date, git commit) and the load average
before and after each benchmark are recorded: on a shared machine absolute times are inflated, so each
benchmark times its arms interleaved and reports their ratio.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sefar_encoder.runtime.atomic import write_text_atomic
from sefar_encoder.runtime.machine import machine_info

ROOT = Path(__file__).resolve().parents[1]
BENCH_DATA = Path("data/synthgym-bench")
FALLBACK_DATA = Path("data/synthgym-small")
QUICKSTART_TIMING = Path("runs/quickstart/timing.json")
FIELDS = ("ratio", "a", "b", "unit", "how")
NOT_MEASURED = "not measured in this run"


class BadOutput(ValueError):
    """A benchmark's output is not what the suite expects (the message says why)."""


@dataclass(frozen=True)
class Benchmark:
    key: str  # the figure's key in the script's JSON and in bench.json
    script: str  # under scripts/
    args: tuple[str, ...]
    goal: tuple[str, float]  # (">=" or "<=", threshold) on the ratio (on ratio / ideal with of_ideal)
    what: str  # a = ..., b = ... in one line, for the report
    of_ideal: bool = False  # the script reports "ideal"; the goal is on ratio / ideal


def suite(data: Path) -> list[Benchmark]:
    """The benchmarks, cheapest first."""
    return [
        Benchmark(
            "mc_prefix_speedup",
            "bench_option_scoring.py",
            (),
            (">=", 0.9),
            "multiple-choice scoring: 4 full forwards / 1 forward of the prompt with the 4 options packed "
            "after it (ideal: the ratio of their token counts)",
            of_ideal=True,
        ),
        Benchmark(
            "teacher_k10_vs_k1",
            "bench_teacher.py",
            (),
            ("<=", 1.05),
            "SSL step time: Ada-Reg with K=10 samples / Ada-Reg off",
        ),
        Benchmark(
            "cache_speedup",
            "bench_cache.py",
            ("--data", str(data)),
            (">=", 10.0),
            "stage-B epoch: features encoded on the fly / read from the feature cache",
        ),
        Benchmark(
            "loader_vs_decode",
            "bench_loader.py",
            ("--data", str(data)),
            (">=", 0.9),
            "data loader: full SeFAR pipeline clips/s / decode-only clips/s",
        ),
    ]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", type=Path, default=None, help=f"data set (default: {BENCH_DATA} if present)")
    p.add_argument("--only", nargs="+", default=None, help="run only these figures (keys)")
    p.add_argument("--with-quickstart", action="store_true", help="also run and time scripts/quickstart.py")
    p.add_argument("--timeout", type=float, default=3600, help="seconds allowed per benchmark")
    p.add_argument("--json-out", type=Path, default=Path("docs/results/bench.json"), help="JSON report")
    p.add_argument("--md-out", type=Path, default=Path("docs/BENCHMARKS.md"), help="Markdown report")
    return p.parse_args(argv)


# ---------------------------------------------------------------------------------------- machine
def load_average() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def _git_commit() -> str | None:
    try:
        head = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True, timeout=10, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return head + (" (with uncommitted changes)" if dirty else "")


# ---------------------------------------------------------------------------------------- running
def parse_json_output(stdout: str) -> dict[str, Any]:
    """The JSON object a benchmark printed: all of stdout, else the last block starting with ``{`` at
    the start of a line (scripts may print a line or two first). ValueError if there is none."""
    text = stdout.strip()
    try:
        data = json.loads(text)
    except json.JSONDecodeError:
        data = None
        starts = [m.start() for m in re.finditer(r"^\{", text, flags=re.MULTILINE)]
        for start in reversed(starts):
            try:
                data = json.loads(text[start:])
                break
            except json.JSONDecodeError:
                continue
    if not isinstance(data, dict):
        raise BadOutput("no JSON object on stdout")
    return data


def goal_met(ratio: float, goal: tuple[str, float]) -> bool:
    op, threshold = goal
    return ratio >= threshold if op == ">=" else ratio <= threshold


def figure_from(data: dict[str, Any], bench: Benchmark) -> dict[str, Any]:
    """The ``{ratio, a, b, unit, how}`` object of ``bench.key`` in a script's JSON, with ``ideal`` and
    ``of_ideal`` for a goal relative to the ideal (ValueError if absent or malformed)."""
    entry = data.get(bench.key)
    if not isinstance(entry, dict):
        raise BadOutput(f"the output has no '{bench.key}' object (keys: {sorted(data)})")
    missing = [f for f in FIELDS if f not in entry]
    if missing:
        raise BadOutput(f"'{bench.key}' lacks {missing}")
    numbers = ("ratio", "a", "b", "ideal") if bench.of_ideal else ("ratio", "a", "b")
    for f in numbers:
        if not isinstance(entry.get(f), (int, float)) or isinstance(entry.get(f), bool):
            raise BadOutput(f"'{bench.key}.{f}' is not a number: {entry.get(f)!r}")
    figure = {f: entry[f] for f in FIELDS}
    if bench.of_ideal:
        figure.update(ideal=entry["ideal"], of_ideal=round(entry["ratio"] / entry["ideal"], 3))
    return figure


def _tail(text: str, lines: int = 12) -> str:
    return "\n".join(text.strip().splitlines()[-lines:])


def run_benchmark(bench: Benchmark, timeout: float, scripts_dir: Path = ROOT / "scripts") -> dict[str, Any]:
    """Run one benchmark script; its figure with the goal, or a failure with the reason."""
    command = [sys.executable, str(scripts_dir / bench.script), *bench.args]
    shown = " ".join(["python", f"scripts/{bench.script}", *bench.args])
    record: dict[str, Any] = {
        "command": shown,
        "goal": f"{bench.goal[0]} {bench.goal[1]:g}" + (" x ideal" if bench.of_ideal else ""),
        "what": bench.what,
    }
    record["load_avg_before"] = load_average()
    start = time.perf_counter()
    try:
        proc = subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        record.update(status="failed", error=f"timed out after {timeout:g} s")
    else:
        try:
            if proc.returncode != 0:
                raise BadOutput(f"exit code {proc.returncode}")
            data = parse_json_output(proc.stdout)
            figure = figure_from(data, bench)
        except BadOutput as err:
            record.update(status="failed", error=f"{err}; stderr ends with:\n{_tail(proc.stderr)}")
        else:
            judged = figure["of_ideal"] if bench.of_ideal else figure["ratio"]
            record.update(status="ok", **figure, met=goal_met(judged, bench.goal))
            record["details"] = {k: v for k, v in data.items() if k != bench.key}
    record["seconds"] = round(time.perf_counter() - start, 1)
    record["load_avg_after"] = load_average()
    return record


# ---------------------------------------------------------------------------------------- quickstart
def parse_gnu_time(stderr: str) -> dict[str, float]:
    """Minutes and peak RSS (GB, 10^9 bytes) from ``/usr/bin/time -v`` output."""
    wall = re.search(r"Elapsed \(wall clock\) time \(h:mm:ss or m:ss\): ([\d:.]+)", stderr)
    rss = re.search(r"Maximum resident set size \(kbytes\): (\d+)", stderr)
    if wall is None or rss is None:
        raise ValueError("no '/usr/bin/time -v' summary in the output")
    seconds = 0.0
    for part in wall.group(1).split(":"):
        seconds = seconds * 60 + float(part)
    return {"minutes": round(seconds / 60, 2), "peak_rss_gb": round(int(rss.group(1)) * 1024 / 1e9, 2)}


def read_quickstart_timing(path: Path) -> dict[str, Any]:
    """``runs/quickstart/timing.json`` as a figure marked with its date (not measured in this run)."""
    try:
        data = json.loads(path.read_text())
        minutes, rss = float(data["minutes"]), float(data["peak_rss_gb"])
    except (OSError, json.JSONDecodeError, KeyError, TypeError, ValueError) as err:
        return {"status": "failed", "error": f"{path}: unreadable ({type(err).__name__}: {err})"}
    written = dt.datetime.fromtimestamp(path.stat().st_mtime).astimezone().isoformat(timespec="minutes")
    return {
        "status": "ok",
        "minutes": round(minutes, 2),
        "peak_rss_gb": round(rss, 2),
        "measured": f"{NOT_MEASURED}: read from {path}, written {written}",
        "how": "the quickstart's own timing file (whole pipeline on SynthGym)",
    }


def quickstart_figure(with_quickstart: bool, timeout: float, timing: Path | None = None) -> dict[str, Any]:
    """Run and time the quickstart when asked; otherwise read its timing file (default
    ``QUICKSTART_TIMING``, looked up at call time), if any."""
    timing = timing or QUICKSTART_TIMING
    if not with_quickstart:
        if timing.is_file():
            return read_quickstart_timing(timing)
        return {
            "status": NOT_MEASURED,
            "how": f"pass --with-quickstart to run it here, or run `make quickstart` (writes {timing})",
        }
    gnu_time = Path("/usr/bin/time")
    command = [sys.executable, str(ROOT / "scripts" / "quickstart.py")]
    record: dict[str, Any] = {"command": "/usr/bin/time -v python scripts/quickstart.py"}
    if not gnu_time.is_file():
        return {**record, "status": "failed", "error": "/usr/bin/time not found (apt-get install time)"}
    record["load_avg_before"] = load_average()
    try:
        proc = subprocess.run(
            [str(gnu_time), "-v", *command], capture_output=True, text=True, timeout=timeout, check=False
        )
    except subprocess.TimeoutExpired:
        return {**record, "status": "failed", "error": f"timed out after {timeout:g} s"}
    record["load_avg_after"] = load_average()
    if proc.returncode != 0:
        return {**record, "status": "failed", "error": f"exit code {proc.returncode}:\n{_tail(proc.stderr)}"}
    try:
        figures = parse_gnu_time(proc.stderr)
    except ValueError as err:
        return {**record, "status": "failed", "error": str(err)}
    how = "wall time and peak resident memory of the largest process, from /usr/bin/time -v"
    return {**record, "status": "ok", **figures, "measured": "in this run", "how": how}


# ---------------------------------------------------------------------------------------- reports
def collect(
    figures: dict[str, dict[str, Any]],
    machine: dict[str, Any],
    started: dt.datetime,
    finished: dt.datetime,
    load_before: Sequence[float],
    load_after: Sequence[float],
    data: Path | None,
) -> dict[str, Any]:
    """The bench.json document."""
    cores = machine.get("usable_cores") or machine.get("cores") or 1
    peak = max(load_before[0], load_after[0])
    loaded = peak > 0.75 * cores
    note = (
        f"The machine was shared with other jobs (1-min load average {load_before[0]} before, "
        f"{load_after[0]} after, on {cores} cores): absolute times are inflated and noisy; each ratio "
        "compares arms measured under the same load, but ratios vary from run to run too."
        if loaded
        else f"The machine was quiet (1-min load average {load_before[0]} before, {load_after[0]} after, "
        f"on {cores} cores)."
    )
    return {
        "command": "make bench (python scripts/bench.py)",
        "date": started.isoformat(timespec="seconds"),
        "duration_minutes": round((finished - started).total_seconds() / 60, 1),
        "data": str(data) if data is not None else None,
        "machine": {
            **machine,
            "load_avg_before": list(load_before),
            "load_avg_after": list(load_after),
            "loaded_by_other_jobs": loaded,
        },
        "note": note,
        "figures": figures,
    }


def _num(x: Any) -> str:
    return f"{x:.4g}" if isinstance(x, float) else str(x)


def render_markdown(report: dict[str, Any]) -> str:
    """docs/BENCHMARKS.md from a bench.json document."""
    m = report["machine"]
    lines = [
        "# Benchmarks",
        "",
        (
            f"Generated by `{report['command']}` on {report['date']} ({report['duration_minutes']} min); "
            "every figure below was measured in that run unless it says otherwise. Raw numbers: "
            "[results/bench.json](results/bench.json)."
        ),
        "",
        (
            f"**Machine**: {m['cpu']}, {m['cores']} cores ({m['usable_cores']} usable), "
            f"{m.get('memory_gb')} GB RAM; Python {m['python']}, torch {m['torch']}; {m['platform']}; "
            f"commit {m.get('git_commit')}. Load average (1, 5, 15 min) before: {m['load_avg_before']}, "
            f"after: {m['load_avg_after']}."
        ),
        "",
        f"> {report['note']}",
        "",
        "| figure | ratio | ideal | a | b | unit | goal | met | load before → after | how |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    failures = []
    for key, f in report["figures"].items():
        if key == "quickstart":
            continue
        if f["status"] != "ok":
            lines.append(
                f"| `{key}` | {f['status']} | | | | | {f.get('goal', '')} | | | {f.get('what', '')} |"
            )
            if "error" in f:
                failures.append((key, f))
            continue
        met = "yes" if f["met"] else "**no**"
        load = f"{f['load_avg_before'][0]} → {f['load_avg_after'][0]}"
        how = f["how"].replace("|", "/").replace("\n", " ")
        ideal = f"{_num(f['ideal'])} (ratio = {_num(f['of_ideal'])} x ideal)" if "ideal" in f else ""
        lines.append(
            f"| `{key}` | **{_num(f['ratio'])}** | {ideal} | {_num(f['a'])} | {_num(f['b'])} | {f['unit']} | "
            f"{f['goal']} | {met} | {load} | {how} |"
        )
    q = report["figures"].get("quickstart")
    if q is not None:
        lines += ["", "## Quickstart", ""]
        if q["status"] == "ok":
            lines.append(
                f"- `make quickstart`: **{q['minutes']} min**, peak RSS **{q['peak_rss_gb']} GB** "
                f"({q['measured']}; {q['how']})."
            )
        else:
            lines.append(f"- {q['status']}: {q.get('error') or q.get('how', '')}")
            if "error" in q:
                failures.append(("quickstart", q))
    if failures:
        lines += ["", "## Failures", ""]
        for key, f in failures:
            lines += [f"- `{key}` (`{f.get('command', '')}`):", "", "```", f["error"], "```", ""]
    lines += ["", "## What each figure measures", ""]
    lines += [f"- `{k}`: {f['what']}; goal {f['goal']}." for k, f in report["figures"].items() if "what" in f]
    lines += [
        "- `quickstart`: wall time and peak memory of `make quickstart` (the whole pipeline on SynthGym).",
        "",
        "Each script prints its JSON and can be run alone (see its docstring); "
        + "`python scripts/bench.py --only KEY` reruns one figure (and rewrites both reports with it alone).",
        "",
    ]
    return "\n".join(lines)


def resolve_data(data: Path | None) -> Path:
    """The data set: the given one, the bench set, or a small SynthGym generated now."""
    if data is not None:
        return data
    if (BENCH_DATA / "splits").is_dir():
        return BENCH_DATA
    if not (FALLBACK_DATA / "splits").is_dir():
        print(
            f"bench: {BENCH_DATA} not found; generating a small SynthGym into {FALLBACK_DATA}",
            file=sys.stderr,
        )
        subprocess.run(
            [sys.executable, str(ROOT / "scripts" / "make_synthgym.py"), "--out", str(FALLBACK_DATA)]
            + ["--preset", "small"],
            check=True,
        )
    return FALLBACK_DATA


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    started = dt.datetime.now().astimezone()
    load_before = load_average()
    machine = machine_info(git_commit=_git_commit())
    data = resolve_data(args.data)
    benches = suite(data)
    known = [b.key for b in benches] + ["quickstart"]
    unknown = sorted(set(args.only or []) - set(known))
    if unknown:
        print(f"bench: unknown figure(s) {unknown}; known: {known}", file=sys.stderr)
        return 2
    figures: dict[str, dict[str, Any]] = {}
    for bench in benches:
        if args.only and bench.key not in args.only:
            continue
        print(f"bench: {bench.key}: python scripts/{bench.script} {' '.join(bench.args)}", file=sys.stderr)
        figures[bench.key] = run_benchmark(bench, args.timeout)
        f = figures[bench.key]
        shown = f"ratio {f['ratio']}" if f["status"] == "ok" else f"FAILED: {f['error'].splitlines()[0]}"
        if "ideal" in f:
            shown += f" (ideal {f['ideal']}, {f['of_ideal']} x ideal)"
        print(f"bench: {bench.key}: {shown} ({f['seconds']} s)", file=sys.stderr)
    if not args.only or "quickstart" in args.only:
        figures["quickstart"] = quickstart_figure(args.with_quickstart, max(args.timeout, 3600))
    report = collect(
        figures, machine, started, dt.datetime.now().astimezone(), load_before, load_average(), data
    )
    text = json.dumps(report, indent=2)
    for path, content in ((args.json_out, text + "\n"), (args.md_out, render_markdown(report))):
        path.parent.mkdir(parents=True, exist_ok=True)
        write_text_atomic(path, content)
    print(text)
    print(f"bench: wrote {args.json_out} and {args.md_out}", file=sys.stderr)
    failed = [k for k, f in figures.items() if f["status"] == "failed"]
    if failed:
        print(f"bench: failed: {failed}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
