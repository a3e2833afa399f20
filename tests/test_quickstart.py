"""The Gym-QA job runner (scripts/bench_gymqa.py's run_job over mllm/gymqa_experiment.py) and
scripts/quickstart.py (its report: mllm/quickstart_report.py).

Fast: one job on the 16-clip MLLM fixture — every step runs once, a second call skips them all, another
encoder in the same folder makes every step run again, and the result's numbers are the reports'.
Slow: the whole quickstart on SynthGym tiny with tiny configs (every stage, a re-run that skips them
all, report.md's numbers against the metrics files), and the real `make quickstart` settings.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
import yaml
from conftest import load_script
from mllm_run_fixtures import write_config
from synthgym_fixtures import TINY_OVERRIDES

from mllm.gymqa_experiment import GymQAJob
from mllm.quickstart_report import ENCODERS, MODE_TITLES

pytest_plugins = ["mllm_run_fixtures", "synthgym_fixtures", "tiny_llm_fixtures"]
bench = load_script("bench_gymqa")
quickstart = load_script("quickstart")


def mtimes(folder: Path) -> dict[Path, int]:
    return {p: p.stat().st_mtime_ns for p in folder.rglob("*") if p.is_file() and p.name != "result.json"}


def test_experiment_runner_skips_done_steps_and_redoes_stale_ones(mllm_data, tiny_llm_dir, tmp_path):
    config = write_config(tmp_path / "stages.yaml", mllm_data, tiny_llm_dir, tmp_path / "unused",
                          align={"max_steps": 2}, instruct={"max_steps": 2})  # fmt: skip
    questions = bench.make_test_questions(mllm_data["root"], tmp_path / "questions.json", ["what"], "uniform")
    job = GymQAJob(encoder="sefar", weights=str(mllm_data["encoder"]), data_root=str(mllm_data["root"]),
                   llm=str(tiny_llm_dir), questions=str(questions), config=str(config),
                   out_dir=str(tmp_path / "job"), cache_root=str(tmp_path / "features"),
                   overrides=["data.label_rate=5"], progress=False, max_new_tokens=4)  # fmt: skip
    logs: list[str] = []
    result = bench.run_job(job, log=logs.append)
    assert all(isinstance(s, float) for s in result["seconds"].values())
    assert list(result["seconds"]) == ["features", "align", "instruct", "eval", "classifier4"]
    # the result's numbers are the evaluator reports', and result.json holds the same
    report = json.loads((tmp_path / "job" / "eval" / "report.json").read_text())
    c4 = json.loads((tmp_path / "job" / "classifier4" / "report.json").read_text())
    assert result["accuracy"] == {
        "generate": 100 * report["modes"]["text"]["overall"]["accuracy"],
        "likelihood": 100 * report["modes"]["nll_sum"]["overall"]["accuracy"],
        "classifier4": 100 * c4["modes"]["nll_sum"]["overall"]["accuracy"],
    }
    assert result["correct_total"]["likelihood"][1] == 4 == c4["run"]["answerable_questions"]
    assert json.loads((tmp_path / "job" / "result.json").read_text()) == result
    instruct = json.loads((tmp_path / "job" / "instruct" / "metrics.json").read_text())
    assert result["instruct"]["steps"] == instruct["steps"] == 2

    before = mtimes(tmp_path / "job")
    again = bench.run_job(job, log=logs.append)
    assert all(s is None for s in again["seconds"].values()) and again["accuracy"] == result["accuracy"]
    assert mtimes(tmp_path / "job") == before
    assert sum("done before, skipped" in line for line in logs) == 5

    # other encoder weights in the same folder: the outputs are stale, every step runs again
    other = GymQAJob(**{**job.__dict__, "weights": str(mllm_data["other_encoder"])})
    redone = bench.run_job(other, log=logs.append)
    assert all(isinstance(s, float) for s in redone["seconds"].values())
    assert any("inputs changed (encoder_fingerprint" in line for line in logs)
    recorded = json.loads((tmp_path / "job" / "job.json").read_text())
    assert recorded["job"]["weights"] == str(mllm_data["other_encoder"])


def tiny_configs(folder: Path) -> dict[str, Path]:
    """The quickstart's configs cut to seconds: a 6-step backbone, 2+2 encoder steps, 2+2 MLLM steps."""
    folder.mkdir(parents=True, exist_ok=True)
    pretrain = yaml.safe_load(quickstart.CONFIGS["pretrain"].read_text())
    pretrain.update(steps=6, batch_size=32, frame_stride=4)
    encoder = yaml.safe_load(quickstart.CONFIGS["encoder"].read_text())
    for item in TINY_OVERRIDES:  # the encoder tests' tiny settings
        key, value = item.split("=")
        node = encoder
        *parents, leaf = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = yaml.safe_load(value)
    encoder["data"]["label_rate"] = 10
    mllm = yaml.safe_load(quickstart.CONFIGS["mllm"].read_text())
    mllm["align"].update(max_steps=2, batch_size=4, micro_batch_size=4)
    mllm["instruct"].update(max_steps=2, batch_size=4, micro_batch_size=4)
    mllm["lora"]["r"] = 4
    paths = {}
    for name, cfg in (("pretrain", pretrain), ("encoder", encoder), ("mllm", mllm)):
        paths[name] = folder / f"{name}.yaml"
        paths[name].write_text(yaml.safe_dump(cfg))
    return paths


def report_numbers(report: str) -> dict[str, float]:
    """The mode rows of report.md's encoder table: {mode: {encoder: %}} in ENCODERS' order (sefar, frameseq,
    framepool); the quickstart evaluates generate, likelihood and classifier4 (no row for a mode it did not
    run)."""
    rows = {}
    cell = r" \| ([\d.–]+)"
    for mode, title in MODE_TITLES.items():
        m = re.search(rf"^\| {re.escape(title)}{cell * len(ENCODERS)} \|", report, re.MULTILINE)
        if m:
            rows[mode] = {e: None if v == "–" else float(v) for e, v in zip(ENCODERS, m.groups())}
    assert set(rows) == {"generate", "likelihood", "classifier4"}, sorted(rows)
    return rows


@pytest.mark.slow
def test_quickstart_on_synthgym_tiny(synthgym_tiny, tmp_path, capsys):
    data = tmp_path / "synthgym-tiny"
    shutil.copytree(synthgym_tiny.root, data, ignore=shutil.ignore_patterns("backbones"))
    cfg = tiny_configs(tmp_path / "configs")
    argv = [
        "--out", str(tmp_path / "run"), "--data", str(data), "--cache-root", str(tmp_path / "features"),
        "--preset", "tiny", "--difficulty", "1.0", "--pretrain-config", str(cfg["pretrain"]),
        "--encoder-config", str(cfg["encoder"]), "--mllm-config", str(cfg["mllm"]), "--micro-llm",
        "--no-progress",
    ]  # fmt: skip
    assert quickstart.main(argv) == 0
    run = tmp_path / "run"
    out = capsys.readouterr().out
    assert f"report {run / 'report.md'}, encoder {run / 'encoder'}, MLLM {run / 'mllm'}" in out
    stages = json.loads((run / "stages.json").read_text())
    assert list(stages) == list(quickstart.STAGES)
    assert stages["data"]["skipped"]  # the fixture's data set: same preset, seed and difficulty
    assert not any(stages[s]["skipped"] for s in quickstart.STAGES[1:])
    assert not (run / "timing.json").exists()  # timing.json times whole pipelines only: data was reused
    for path in ("encoder/config.json", "encoder/out_of_domain.json", "mllm/mllm_config.json", "summary.json",
                 "gymqa_accuracy.png", "encoder_run/curves.png", "encoder_run/confusion.png"):  # fmt: skip
        assert (run / path).is_file(), path

    # every number of the report is the metrics files'
    report = (run / "report.md").read_text()
    summary = json.loads((run / "summary.json").read_text())
    for mode, shown_by_encoder in report_numbers(report).items():
        for encoder, shown in shown_by_encoder.items():
            result = json.loads((run / f"mllm_{encoder}" / "result.json").read_text())
            step, key = {"generate": ("eval", "text"), "likelihood": ("eval", "nll_sum")}.get(
                mode, ("classifier4", "nll_sum")
            )
            if encoder != "sefar" and mode == "classifier4":  # the baselines have no classifier
                assert shown is None
                continue
            evaluator = json.loads((run / f"mllm_{encoder}" / step / "report.json").read_text())
            accuracy = 100 * evaluator["modes"][key]["overall"]["accuracy"]
            assert shown == round(accuracy, 1) and result["accuracy"][mode] == accuracy
    encoder_metrics = json.loads((run / "encoder_run" / "metrics.json").read_text())
    test_row = re.search(r"^\| test \| (\d+) \| ([\d.]+) \| ([\d.]+) \| ([\d.]+) \|", report, re.MULTILINE)
    assert int(test_row[1]) == encoder_metrics["test"]["count"]
    assert float(test_row[4]) == round(100 * encoder_metrics["test"]["mean_class"], 1)
    assert summary["encoder"]["test"]["mean_class"] == encoder_metrics["test"]["mean_class"]
    control = json.loads((run / "control_run" / "metrics.json").read_text())
    assert control["method"] == "framepool" and control["label_rate"] == encoder_metrics["label_rate"]
    control_row = re.search(r"^\| order-blind control \| ([\d.]+) \|", report, re.MULTILINE)
    assert float(control_row[1]) == round(100 * control["test"]["mean_class"], 1)

    # a second run skips every stage (the report is rebuilt from the same files)
    runs = ("encoder_run", "control_run", "mllm_sefar", "mllm_framepool", "mllm_frameseq")
    before = {p: t for name in runs for p, t in mtimes(run / name).items()}
    assert quickstart.main(argv) == 0
    stages = json.loads((run / "stages.json").read_text())
    assert all(stages[s]["skipped"] for s in quickstart.STAGES[:-1])
    after = {p: t for name in runs for p, t in mtimes(run / name).items()}
    assert after == before
    assert report_numbers((run / "report.md").read_text()) == report_numbers(report)


@pytest.mark.slow
@pytest.mark.timeout(3600)
def test_full_quickstart_meets_its_acceptance(tmp_path):
    """`make quickstart`'s settings end to end: the SeFAR encoder tells the forward/backward pairs apart
    (≥ 80 %) where the order-blind control cannot (≤ 60 %), and SeFAR features beat frame-pool features on
    Gym-QA."""
    argv = ["--out", str(tmp_path / "run"), "--data", str(tmp_path / "data"),
            "--cache-root", str(tmp_path / "features"), "--no-progress"]  # fmt: skip
    assert quickstart.main(argv) == 0
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["encoder"]["pairs"]["direction"]["accuracy"] >= 0.8
    assert summary["control"]["pairs"]["direction"]["accuracy"] <= 0.6
    results = summary["gymqa"]["results"]
    assert results["sefar"]["accuracy"]["likelihood"] > results["framepool"]["accuracy"]["likelihood"]
    assert (tmp_path / "run" / "report.md").is_file() and (tmp_path / "run" / "mllm" / "adapter").is_dir()
    timing = json.loads((tmp_path / "run" / "timing.json").read_text())  # read by make bench
    assert 0 < timing["minutes"] < 60 and 0 < timing["peak_rss_gb"] < 24
