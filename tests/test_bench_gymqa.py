"""scripts/bench_gymqa.py on the 16-clip MLLM fixture: SeFAR vs framepool, two seeds, the aggregated JSON
against the jobs' own reports, and a second run that redoes nothing."""

from __future__ import annotations

import dataclasses
import json
import statistics
from pathlib import Path

import pytest
from conftest import load_script
from mllm_run_fixtures import ENCODER_CFG, write_config
from safetensors.torch import save_file

from sefar_encoder.model.image_vit import build_image_vit

pytest_plugins = ["mllm_run_fixtures", "tiny_llm_fixtures"]
bench = load_script("bench_gymqa")


def write_backbone(directory: Path) -> Path:
    """A frame-pretrained-backbone folder as scripts/pretrain_image_backbone.py writes it (random weights)."""
    directory.mkdir(parents=True)
    architecture = dataclasses.replace(ENCODER_CFG, views=(8,))
    vit = build_image_vit(architecture, num_classes=0)
    save_file({k: v.contiguous() for k, v in vit.state_dict().items()}, str(directory / "model.safetensors"))
    (directory / "config.json").write_text(json.dumps({"architecture": dataclasses.asdict(architecture)}))
    return directory


@pytest.fixture
def bench_args(mllm_data, tiny_llm_dir, tmp_path):
    config = write_config(
        tmp_path / "stages.yaml",
        mllm_data,
        tiny_llm_dir,
        tmp_path / "unused",
        align={"max_steps": 2},
        instruct={"max_steps": 2},
    )
    return [
        "--data", str(mllm_data["root"]), "--sefar", str(mllm_data["encoder"]),
        "--framepool", str(write_backbone(tmp_path / "backbone")), "--label-rate", "5",
        "--llm", str(tiny_llm_dir), "--config", str(config), "--runs", str(tmp_path / "runs"),
        "--cache-root", str(tmp_path / "features"), "--json-out", str(tmp_path / "bench.json"),
        "--no-progress",
        "--max-new-tokens", "6",
    ]  # fmt: skip


def report_accuracy(runs: Path, encoder: str, seed: int, mode: str) -> float:
    """The accuracy (%) a job's own evaluator report gives for ``mode``."""
    step, key = {"generate": ("eval", "text"), "likelihood": ("eval", "nll_sum")}.get(
        mode, ("classifier4", "nll_sum")
    )
    report = json.loads((runs / encoder / f"seed{seed}" / step / "report.json").read_text())
    return 100 * report["modes"][key]["overall"]["accuracy"]


def test_table_from_the_jobs_reports_and_resume(bench_args, tmp_path, capsys):
    runs = tmp_path / "runs"
    assert bench.main([*bench_args, "--seeds", "0"]) == 0  # both encoders, seed 0
    watched = sorted(runs.glob("*/seed0/*/metrics.json")) + sorted(runs.glob("*/seed0/*/report.json"))
    assert len(watched) == 2 * 2 + 2 + 1  # align + instruct and eval per job; classifier4 for sefar
    before = {p: p.stat().st_mtime_ns for p in watched}

    # seed 1 for sefar: the seed-0 jobs are found done and not run again
    assert bench.main([*bench_args, "--seeds", "0", "1", "--encoders", "sefar"]) == 0
    assert {p: p.stat().st_mtime_ns for p in watched} == before
    skipped = json.loads((runs / "sefar" / "seed0" / "result.json").read_text())["seconds"]
    assert list(skipped) == ["features", "align", "instruct", "eval", "classifier4"]
    assert all(seconds is None for seconds in skipped.values())

    table = json.loads((tmp_path / "bench.json").read_text())
    modes = {"sefar": ("generate", "likelihood", "classifier4"), "framepool": ("generate", "likelihood")}
    expected = {f"{e}@{m}" for e, ms in modes.items() for m in ms}
    assert set(table) == expected | {"machine", "command", "settings"}
    for encoder, encoder_modes in modes.items():
        seeds = [0, 1] if encoder == "sefar" else [0]
        for mode in encoder_modes:
            entry = table[f"{encoder}@{mode}"]
            assert entry["runs"] == [report_accuracy(runs, encoder, s, mode) for s in seeds]
            assert entry["seeds"] == seeds and entry["questions"] == 4
            assert entry["mean"] == pytest.approx(statistics.mean(entry["runs"]))
            assert entry["std"] == pytest.approx(statistics.stdev(entry["runs"]) if len(seeds) > 1 else 0.0)
    # the encoder's own classifier does not depend on the stage A/B seed
    assert table["sefar@classifier4"]["runs"][0] == table["sefar@classifier4"]["runs"][1]
    assert {"cpu", "threads", "torch", "date"} <= set(table["machine"])
    assert table["command"].startswith("python scripts/bench_gymqa.py") and "--seeds 0 1" in table["command"]
    assert "| sefar @ likelihood |" in capsys.readouterr().out


def test_missing_framepool_weights_is_a_clear_error(bench_args, capsys):
    args = list(bench_args)
    del args[args.index("--framepool") : args.index("--framepool") + 2]
    assert bench.main([*args, "--seeds", "0"]) == 1
    assert "give --framepool" in capsys.readouterr().err


def test_missing_encoder_folder_says_encoder_not_found(tmp_path, capsys):
    missing = tmp_path / "no_run" / "encoder"
    assert bench.main(["--sefar", str(missing), "--runs", str(tmp_path / "runs"), "--seeds", "0"]) == 1
    assert f"encoder not found: {missing}" in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()  # nothing was run or written


def test_the_table_goes_to_the_run_folder_unless_json_out_names_a_file(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # a default under docs/ would land here
    assert bench.main(["--aggregate-only", "--runs", "bench_runs"]) == 0
    assert json.loads((tmp_path / "bench_runs" / "gymqa_bench.json").read_text())["command"]
    assert not (tmp_path / "docs").exists()
    assert bench.main(["--aggregate-only", "--runs", "bench_runs", "--json-out", "docs/results/b.json"]) == 0
    assert (tmp_path / "docs" / "results" / "b.json").is_file()
