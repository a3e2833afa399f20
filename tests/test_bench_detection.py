"""scripts/bench_detection.py on planted routine features: every (job, seed) trains once, the table is the
runs' own test mAP, finished runs are skipped, and the committed JSON is written only when named."""

from __future__ import annotations

import json
import shutil
import statistics
from pathlib import Path

import pytest
import yaml
from conftest import load_script
from test_detection_train import planted_routines

bench = load_script("bench_detection")

TINY = {
    "epochs": 4,
    "batch_size": 4,
    "lr": 0.003,
    "model": {"hidden_dim": 32, "embed_dim": 16, "num_clusters": 6},
    "recluster_every": 2,
}


@pytest.fixture(scope="module")
def setup(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("bench_detection")
    routines, features = planted_routines(root)
    for name in ("sefar", "framepool"):  # the bench's folder layout; planted features stand in for both
        shutil.copytree(features, root / f"features-{name}")
    config = root / "tiny.yaml"
    config.write_text(yaml.safe_dump(TINY))
    return {"routines": routines, "config": config, "runs": root / "runs"}


def test_jobs_train_once_and_the_table_is_their_test_map(setup, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)  # a default output under docs/ would land here
    argv = [
        "--routines",
        str(setup["routines"]),
        "--config",
        str(setup["config"]),
        "--runs",
        str(setup["runs"]),
    ]
    assert bench.main([*argv, "--seeds", "0", "1"]) == 0
    metrics = {p: p.stat().st_mtime_ns for p in setup["runs"].glob("*/seed*/metrics.json")}
    assert len(metrics) == 3 * 2
    mil = yaml.safe_load((setup["runs"] / "mil@sefar" / "seed1" / "config.yaml").read_text())
    assert mil["model"]["clustering"] is False and mil["model"]["hierarchy"] is False and mil["seed"] == 1
    haan = yaml.safe_load((setup["runs"] / "haan@framepool" / "seed0" / "config.yaml").read_text())
    assert haan["model"]["clustering"] is True and haan["features"].endswith("features-framepool")

    table = json.loads((setup["runs"] / "detection_bench.json").read_text())
    assert set(table) == {*bench.JOBS, "machine", "command"}
    for job in bench.JOBS:
        runs = [json.loads((setup["runs"] / job / f"seed{s}" / "metrics.json").read_text()) for s in (0, 1)]
        entry = table[job]
        assert entry["seeds"] == [0, 1]
        averages = [100 * r["test"]["average_map"] for r in runs]
        assert entry["map_avg"]["runs"] == averages
        assert entry["map_avg"]["mean"] == pytest.approx(statistics.mean(averages))
        assert entry["map_avg"]["std"] == pytest.approx(statistics.stdev(averages))
        at_half = [100 * r["test"]["map_per_threshold"][r["test"]["thresholds"].index(0.5)] for r in runs]
        assert entry["map@0.5"]["runs"] == at_half
    assert "| haan@sefar |" in capsys.readouterr().out
    assert not (tmp_path / "docs").exists()

    # a second call finds every run finished and trains nothing; --json-out writes elsewhere
    out = tmp_path / "docs" / "results" / "detection_bench.json"
    assert bench.main([*argv, "--seeds", "0", "1", "--json-out", str(out)]) == 0
    assert {p: p.stat().st_mtime_ns for p in metrics} == metrics
    assert json.loads(out.read_text())["haan@sefar"] == table["haan@sefar"]


def test_missing_routines_is_a_clear_error(tmp_path, capsys):
    assert bench.main(["--routines", str(tmp_path / "none.json"), "--runs", str(tmp_path / "runs")]) == 1
    assert f"{tmp_path / 'none.json'} not found" in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()
