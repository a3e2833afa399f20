"""scripts/bench_gymqa.py on the 16-clip MLLM fixture: SeFAR vs framepool vs frameseq, two seeds, the
aggregated JSON (per mode, letter mode included, and per answer type) against the jobs' own reports, and a
second run that redoes nothing."""

from __future__ import annotations

import dataclasses
import json
import shutil
import statistics
from pathlib import Path

import pytest
from conftest import load_script
from mllm_run_fixtures import ENCODER_CFG, write_config
from safetensors.torch import save_file

from gym_qa.questions import load_questions
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


# SynthGym-style class attributes of the fixture's four classes (kind, direction, shape, saltos, twists,
# turns), so that the test questions include the attribute types.
ATTRIBUTES = [
    ("salto", -1, "tucked", 1, 0, 0),
    ("salto", 1, "piked", 1, 0, 0),
    ("jump", 0, "split", 0, 1, 0),
    ("circle", -1, "giant", 0, 0, 1),
]


def with_attributes(data: dict[str, Path], root: Path) -> dict[str, Path]:
    """A copy of the fixture's data set with a SynthGym ``meta.json`` of class attributes."""
    shutil.copytree(data["root"], root, ignore=shutil.ignore_patterns("features", "*encoder"))
    keys = ("kind", "direction", "shape", "saltos", "twists", "turns")
    classes = [{"label": i, "attributes": dict(zip(keys, a, strict=True))} for i, a in enumerate(ATTRIBUTES)]
    (root / "meta.json").write_text(json.dumps({"classes": classes}))
    return {**data, "root": root}


@pytest.fixture
def bench_args(mllm_data, tiny_llm_dir, tmp_path):
    mllm_data = with_attributes(mllm_data, tmp_path / "data")
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


STEP_AND_KEY = {
    "generate": ("eval", "text"),
    "generate_form": ("eval", "answer_form"),
    "generate_text": ("eval", "option_text"),
    "likelihood": ("eval", "nll_sum"),
    "letter": ("letter", "text"),
    "classifier4": ("classifier4", "nll_sum"),
}


def job_report(runs: Path, encoder: str, seed: int, mode: str) -> dict:
    step, key = STEP_AND_KEY[mode]
    return json.loads((runs / encoder / f"seed{seed}" / step / "report.json").read_text())["modes"][key]


def report_accuracy(runs: Path, encoder: str, seed: int, mode: str) -> float:
    """The accuracy (%) a job's own evaluator report gives for ``mode``."""
    return 100 * job_report(runs, encoder, seed, mode)["overall"]["accuracy"]


def test_table_from_the_jobs_reports_and_resume(bench_args, tmp_path, capsys):
    runs = tmp_path / "runs"
    assert bench.main([*bench_args, "--seeds", "0"]) == 0  # the three encoders, seed 0
    watched = sorted(runs.glob("*/seed0/*/metrics.json")) + sorted(runs.glob("*/seed0/*/report.json"))
    assert len(watched) == 3 * 2 + 3 * 2 + 1  # align + instruct, eval + letter per job; classifier4 for sefar
    before = {p: p.stat().st_mtime_ns for p in watched}

    # seed 1 for sefar: the seed-0 jobs are found done and not run again
    plot = tmp_path / "per_type.png"
    assert bench.main([*bench_args, "--seeds", "0", "1", "--encoders", "sefar", "--plot-out", str(plot)]) == 0
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert {p: p.stat().st_mtime_ns for p in watched} == before
    skipped = json.loads((runs / "sefar" / "seed0" / "result.json").read_text())["seconds"]
    assert list(skipped) == ["features", "align", "instruct", "eval", "letter", "classifier4"]
    assert all(seconds is None for seconds in skipped.values())

    # an eval report written before the option_text reading existed is re-scored from its predictions
    report_path = runs / "sefar" / "seed0" / "eval" / "report.json"
    original = json.loads(report_path.read_text())
    stale = original | {"modes": {k: v for k, v in original["modes"].items() if k != "option_text"}}
    report_path.write_text(json.dumps(stale))
    assert bench.main([*bench_args, "--seeds", "0", "--encoders", "sefar"]) == 0
    rescored = json.loads(report_path.read_text())
    assert rescored["modes"] == original["modes"] and rescored["run"]["rescored"]
    assert (
        bench.main([*bench_args, "--seeds", "0", "1", "--encoders", "sefar"]) == 0
    )  # the table of both seeds

    table = json.loads((tmp_path / "bench.json").read_text())
    both = ("generate", "generate_form", "generate_text", "likelihood", "letter")
    modes = {"sefar": (*both, "classifier4"), "framepool": both, "frameseq": both}
    expected = {f"{e}@{m}" for e, ms in modes.items() for m in ms}
    questions = load_questions(runs / "questions" / "test.json")
    types = {q.answer_type for q in questions}
    assert {"what", "direction"} <= types  # the attribute questions of the tiny set's test clips
    assert set(table) == expected | {"machine", "command", "settings"}
    for encoder, encoder_modes in modes.items():
        seeds = [0, 1] if encoder == "sefar" else [0]
        for mode in encoder_modes:
            entry = table[f"{encoder}@{mode}"]
            assert entry["runs"] == [report_accuracy(runs, encoder, s, mode) for s in seeds]
            expected_questions = len(questions) if mode != "classifier4" else 4  # classifier4: "what" only
            assert entry["seeds"] == seeds and entry["questions"] == expected_questions
            per_type = job_report(runs, encoder, seeds[0], mode)["per_answer_type"]
            assert set(entry["per_answer_type"]) == set(per_type)  # one accuracy column per answer type
            if len(seeds) == 1:
                assert entry["per_answer_type"] == {t: 100 * b["accuracy"] for t, b in per_type.items()}
            assert entry["mean"] == pytest.approx(statistics.mean(entry["runs"]))
            assert entry["std"] == pytest.approx(statistics.stdev(entry["runs"]) if len(seeds) > 1 else 0.0)
    # the encoder's own classifier does not depend on the stage A/B seed
    assert table["sefar@classifier4"]["runs"][0] == table["sefar@classifier4"]["runs"][1]
    assert {"cpu", "threads", "torch", "date"} <= set(table["machine"])
    assert table["command"].startswith("python scripts/bench_gymqa.py") and "--seeds 0 1" in table["command"]
    out = capsys.readouterr().out
    assert "| sefar @ likelihood |" in out
    # the per-type table: one column per answer type, the entry's figures
    lines = out.splitlines()
    headers = [i for i, line in enumerate(lines) if line.startswith("| encoder @ mode |")]
    header = lines[headers[1]]  # after the accuracy table's
    columns = [c.strip().removesuffix(" %") for c in header.strip("|").split("|")[1:]]
    assert set(columns) == {t for k, e in table.items() if "@" in k for t in e["per_answer_type"]}
    row = next(line for line in lines[headers[1] :] if line.startswith("| frameseq @ letter | "))
    cells = [c.strip() for c in row.strip("|").split("|")[1:]]
    shown = dict(zip(columns, cells))
    assert all(shown[t] == f"{a:.1f}" for t, a in table["frameseq@letter"]["per_answer_type"].items())
    letters = [
        json.loads(line)["text"]
        for line in (runs / "frameseq" / "seed0" / "letter" / "predictions.jsonl").open()
    ]
    assert len(letters) == len(questions) and set(letters) <= set("ABCD")  # letter mode: always a letter


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


def test_encoder_options_reach_the_jobs(bench_args, capsys):
    args = bench.parse_args(
        [*bench_args, "--seeds", "0", "--encoder-option", "frameseq.grid=1", "frameseq.frame_position=none"]
    )
    jobs = {job.encoder: job for job in bench.make_jobs(args)}
    assert set(jobs) == {"sefar", "framepool", "frameseq"} and jobs["frameseq"].trained_form
    assert jobs["frameseq"].encoder_options == {"grid": 1, "frame_position": "none"}
    assert jobs["framepool"].encoder_options == {} and jobs["framepool"].weights == jobs["frameseq"].weights
    assert (
        bench.main([*bench_args, "--seeds", "0", "--encoder-option", "clip.grid=2"]) == 1
    )  # clip is not run
    assert "one of the encoders run" in capsys.readouterr().err
