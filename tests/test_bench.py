"""scripts/bench.py's collection and formatting, with fake benchmark scripts run as real subprocesses: a
figure is taken from the script's JSON with its goal, a failing, silent, malformed or hanging benchmark is
reported (not fatal), the quickstart figure comes from its timing file or is marked not measured, and the
JSON and Markdown reports say what was measured, on what machine, under what load."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import load_script

bench = load_script("bench")


def fake_script(folder: Path, name: str, body: str) -> str:
    path = folder / name
    path.write_text("import json, sys, time\n" + body)
    return str(path)


def figure_json(key: str, ratio: float, **extra) -> str:
    entry = {"ratio": ratio, "a": 2.0, "b": 2.0 / ratio, "unit": "s", "how": "a = x, b = y"}
    return json.dumps({key: entry, "machine": {"cpu": "fake"}, **extra}, indent=2)


@pytest.fixture
def scripts(tmp_path) -> dict[str, str]:
    return {
        "ok": fake_script(
            tmp_path,
            "ok.py",
            "print('warming up')\n"  # a line before the JSON is tolerated
            + f"print({figure_json('fast_thing', 3.0, per_run=[1, 2])!r})",
        ),
        "slow": fake_script(tmp_path, "slow.py", f"print('''{figure_json('slow_thing', 0.5)}''')"),
        "crash": fake_script(
            tmp_path, "crash.py", "print('loading', file=sys.stderr)\nraise RuntimeError('out of memory')"
        ),
        "silent": fake_script(tmp_path, "silent.py", "print('done, no json')"),
        "no_key": fake_script(tmp_path, "no_key.py", "print(json.dumps({'other': 1}))"),
        "no_how": fake_script(
            tmp_path, "no_how.py", "print(json.dumps({'x': {'ratio': 1, 'a': 1, 'b': 1, 'unit': 's'}}))"
        ),
        "hang": fake_script(tmp_path, "hang.py", "time.sleep(30)"),
    }


def make(key: str, script: str, goal=(">=", 2.0)):
    return bench.Benchmark(key, script, (), goal, f"what {key} compares")


def test_parse_json_output():
    assert bench.parse_json_output('{"a": 1}') == {"a": 1}
    assert bench.parse_json_output('step 1\n{"a": {"b": 2}}\n') == {"a": {"b": 2}}
    assert bench.parse_json_output('{"x": 0}\nthen\n{\n  "a": 3\n}') == {"a": 3}  # the last object
    for bad in ("", "no json here", "[1, 2]"):
        with pytest.raises(bench.BadOutput):
            bench.parse_json_output(bad)


def test_run_benchmark_takes_the_figure_and_judges_the_goal(scripts):
    record = bench.run_benchmark(make("fast_thing", scripts["ok"]), timeout=60)
    assert record["status"] == "ok" and record["met"] is True
    assert (record["ratio"], record["a"], record["unit"]) == (3.0, 2.0, "s")
    assert record["goal"] == ">= 2" and record["details"] == {"machine": {"cpu": "fake"}, "per_run": [1, 2]}
    assert len(record["load_avg_before"]) == 3 and record["seconds"] >= 0
    low = bench.run_benchmark(make("slow_thing", scripts["slow"], goal=("<=", 0.4)), timeout=60)
    assert low["status"] == "ok" and low["met"] is False  # a missed goal is reported, not an error


@pytest.mark.parametrize(
    ("name", "key", "error"),
    [
        ("crash", "x", "exit code 1; stderr ends with:\nloading\nTraceback"),
        ("silent", "x", "no JSON object on stdout"),
        ("no_key", "x", "the output has no 'x' object (keys: ['other'])"),
        ("no_how", "x", "'x' lacks ['how']"),
        ("hang", "x", "timed out after 1 s"),
    ],
)
def test_failures_are_reported(scripts, name, key, error):
    record = bench.run_benchmark(make(key, scripts[name]), timeout=1)
    assert record["status"] == "failed" and record["error"].startswith(error)
    if name == "crash":
        assert "RuntimeError: out of memory" in record["error"]


def test_quickstart_figure(tmp_path):
    timing = tmp_path / "timing.json"
    absent = bench.quickstart_figure(False, 10, timing)
    assert absent["status"] == "not measured in this run" and "--with-quickstart" in absent["how"]
    timing.write_text(json.dumps({"minutes": 12.345, "peak_rss_gb": 3.21}))
    read = bench.quickstart_figure(False, 10, timing)
    assert read["status"] == "ok" and (read["minutes"], read["peak_rss_gb"]) == (12.35, 3.21)
    assert read["measured"].startswith(f"not measured in this run: read from {timing}, written ")
    timing.write_text(json.dumps({"minutes": 1}))
    broken = bench.quickstart_figure(False, 10, timing)
    assert broken["status"] == "failed" and "KeyError" in broken["error"]


def test_parse_gnu_time():
    text = (
        '\tCommand being timed: "python scripts/quickstart.py"\n'
        "\tElapsed (wall clock) time (h:mm:ss or m:ss): 1:02:30.5\n"
        "\tMaximum resident set size (kbytes): 2500000\n"
    )
    assert bench.parse_gnu_time(text) == {"minutes": 62.51, "peak_rss_gb": 2.56}
    with pytest.raises(ValueError, match="no '/usr/bin/time -v' summary"):
        bench.parse_gnu_time("Killed")


def test_main_writes_both_reports_and_fails_when_a_benchmark_failed(tmp_path, scripts, monkeypatch, capsys):
    fakes = [
        make("fast_thing", scripts["ok"]),
        make("slow_thing", scripts["slow"], goal=("<=", 0.4)),
        make("broken_thing", scripts["crash"]),
    ]
    monkeypatch.setattr(bench, "suite", lambda data: fakes)
    monkeypatch.setattr(bench, "QUICKSTART_TIMING", tmp_path / "missing" / "timing.json")
    out_json, out_md = tmp_path / "results" / "bench.json", tmp_path / "BENCHMARKS.md"
    argv = ["--data", str(tmp_path), "--json-out", str(out_json), "--md-out", str(out_md)]
    assert bench.main(argv) == 1  # one benchmark failed: reported, the others still ran

    report = json.loads(out_json.read_text())
    assert json.loads(capsys.readouterr().out) == report
    figures = report["figures"]
    assert [figures[k]["status"] for k in ("fast_thing", "slow_thing", "broken_thing")] == [
        "ok",
        "ok",
        "failed",
    ]
    assert figures["quickstart"]["status"] == "not measured in this run"
    machine = report["machine"]
    for key in ("cpu", "cores", "torch", "python", "load_avg_before", "load_avg_after", "memory_gb"):
        assert machine[key] not in (None, "", [])
    assert report["date"][:4].isdigit() and report["note"].startswith("The machine was")

    md = out_md.read_text()
    assert md.startswith("# Benchmarks\n") and f"torch {machine['torch']}" in md
    assert "| `fast_thing` | **3** |  | 2 | 0.6667 | s | >= 2 | yes |" in md
    assert "| `slow_thing` | **0.5** |  | 2 | 4 | s | <= 0.4 | **no** |" in md
    assert "| `broken_thing` | failed |" in md and "RuntimeError: out of memory" in md
    assert "not measured in this run" in md and "Load average (1, 5, 15 min) before:" in md

    assert bench.main([*argv, "--only", "fast_thing"]) == 0  # only that figure, and it passed
    assert list(json.loads(out_json.read_text())["figures"]) == ["fast_thing"]
    assert bench.main([*argv, "--only", "nonsense"]) == 2


def test_collect_notes_a_loaded_machine():
    machine = {"cores": 2, "usable_cores": 2}
    now = bench.dt.datetime(2025, 1, 1, 12, 0)
    loaded = bench.collect({}, machine, now, now, [3.5, 2.0, 1.0], [4.0, 3.0, 2.0], None)
    assert loaded["machine"]["loaded_by_other_jobs"] is True
    assert "shared with other jobs (1-min load average 3.5 before, 4.0 after, on 2 cores)" in loaded["note"]
    quiet = bench.collect({}, machine, now, now, [0.1, 0.1, 0.1], [0.3, 0.1, 0.1], None)
    assert quiet["machine"]["loaded_by_other_jobs"] is False and "quiet" in quiet["note"]


def test_the_suite_covers_the_issue_figures():
    keys = {b.key: b for b in bench.suite(Path("data/x"))}
    assert set(keys) == {"loader_vs_decode", "teacher_k10_vs_k1", "cache_speedup", "mc_prefix_speedup"}
    assert keys["loader_vs_decode"].goal == (">=", 0.9) and keys["teacher_k10_vs_k1"].goal == ("<=", 1.05)
    assert keys["cache_speedup"].goal == (">=", 10.0) and keys["mc_prefix_speedup"].goal == (">=", 0.9)
    assert keys["mc_prefix_speedup"].of_ideal and not keys["loader_vs_decode"].of_ideal
    for b in keys.values():
        assert (bench.ROOT / "scripts" / b.script).is_file(), b.script


def test_a_goal_of_ideal_judges_ratio_over_ideal(tmp_path):
    """ratio 2.7 against ideal 3.0 is 0.9 x ideal: met for >= 0.9, missed for >= 0.95; a figure without
    its ideal is malformed."""
    entry = {"ratio": 2.7, "a": 2.7, "b": 1.0, "ideal": 3.0, "unit": "s", "how": "a = x, b = y"}
    script = fake_script(tmp_path, "ideal.py", f"print(json.dumps({{'mc': {entry!r}}}))")
    bench_ideal = bench.Benchmark("mc", script, (), (">=", 0.9), "what", of_ideal=True)
    record = bench.run_benchmark(bench_ideal, timeout=60)
    assert record["status"] == "ok" and record["met"] is True, record
    assert (record["ideal"], record["of_ideal"], record["goal"]) == (3.0, 0.9, ">= 0.9 x ideal")
    strict = bench.run_benchmark(bench.Benchmark("mc", script, (), (">=", 0.95), "what", of_ideal=True), 60)
    assert strict["met"] is False
    no_ideal = fake_script(tmp_path, "no_ideal.py", f"print({figure_json('mc', 2.7)!r})")
    failed = bench.run_benchmark(bench.Benchmark("mc", no_ideal, (), (">=", 0.9), "what", of_ideal=True), 60)
    assert failed["status"] == "failed" and "'mc.ideal' is not a number" in failed["error"]
    now = bench.dt.datetime(2025, 1, 1, 12, 0)
    report = bench.collect({"mc": record}, bench.machine_info(), now, now, [0.1] * 3, [0.1] * 3, None)
    assert "| `mc` | **2.7** | 3 (ratio = 0.9 x ideal) | 2.7 | 1 | s | >= 0.9 x ideal | yes |" in (
        bench.render_markdown(report)
    )
