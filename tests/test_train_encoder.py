"""Encoder training end to end on SynthGym tiny (``scripts/train_encoder.py``): every method trains,
checkpoints, exports, evaluates and reports; the command line's (scripts/train_encoder.py) exit codes and
error messages."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import REPO, SCRIPTS, load_script
from synthgym_fixtures import tiny_cli_args, tiny_train_config

from gym_qa.hierarchy import Hierarchy
from sefar_encoder.model import SeFAREncoder
from sefar_encoder.run_state import entropy_of_histogram, epoch_line
from sefar_encoder.runtime.checkpoint import latest_checkpoint, load_checkpoint
from sefar_encoder.training_config import EncoderTrainConfig, optimizer_steps_per_epoch

ALLOWED_SUFFIXES = {".safetensors", ".json", ".jsonl", ".yaml", ".png", ".md"}

# case: (overrides, expected views, expected strong-view time perturbation, EMA teacher, second stream)
METHODS = {
    "supervised": (["method.name=supervised"], (8,), "none", False, False),
    "fixmatch": (["method.name=fixmatch"], (8,), "none", False, False),
    "freematch": (["method.name=freematch"], (8,), "none", False, False),
    "svformer": (["method.name=svformer"], (8,), "warp", True, False),
    "ltg": (["method.name=ltg"], (8,), "none", False, True),
    "sefar": (["method.name=sefar"], (2, 2, 4), "mod_reverse", True, False),
    "sefar_all_reverse": (
        ["method.name=sefar", "method.all_reverse=true"],
        (2, 2, 4),
        "all_reverse",
        True,
        False,
    ),
}

pytest_plugins = ["synthgym_fixtures"]  # synthgym_tiny


@pytest.fixture
def train():
    return load_script("train_encoder")


@pytest.fixture
def cli():
    return load_script("train_encoder")


def files_of(run_dir: Path) -> list[Path]:
    return sorted(p for p in run_dir.rglob("*") if p.is_file())


@pytest.mark.parametrize("case", list(METHODS))
def test_every_method_trains_exports_and_reports(case, synthgym_tiny, tmp_path, train, monkeypatch):
    overrides, views, perturb, ema, second = METHODS[case]
    seen = {}
    real_loader = train.build_semi_loader

    def spy_loader(cfg, datasets, **kwargs):  # what the method turned into on the data side
        seen["views"], seen["perturb"] = cfg.views, cfg.augment.temporal_perturb
        seen["splits"] = sorted(datasets)
        return real_loader(cfg, datasets, **kwargs)

    monkeypatch.setattr(train, "build_semi_loader", spy_loader)
    run_dir = tmp_path / case
    cfg = tiny_train_config(synthgym_tiny, run_dir, *overrides)
    metrics = train.run(cfg)

    # the method's switches reached the data path
    assert seen["views"] == views and seen["perturb"] == perturb
    assert "unlabel" in seen["splits"]

    # run directory: only plain, pickle-free formats; every promised artifact present
    names = {p.relative_to(run_dir).as_posix() for p in files_of(run_dir)}
    assert {p.suffix for p in files_of(run_dir)} <= ALLOWED_SUFFIXES, names
    for required in ("config.yaml", "init_report.json", "metrics.jsonl", "metrics.json", "report.md"):
        assert required in names
    for png in ("curves.png", "confusion.png"):
        assert (run_dir / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not [n for n in names if "/.tmp-" in n or n.startswith(".")], names

    # checkpoints: the last epoch's, complete, with teacher / second stream as the method has them
    ckpt = latest_checkpoint(run_dir)
    assert ckpt is not None and ckpt.name == "epoch_0002"
    tensors, state = load_checkpoint(ckpt)
    assert state["epoch"] == 2 and state["opt_step"] == 4 and state["micro_step"] == 4
    assert any(k.startswith("student.") for k in tensors) and any(k.startswith("optim.") for k in tensors)
    assert any(k.startswith("teacher.") for k in tensors) == ema
    assert any(k.startswith("second.") for k in tensors) == second

    # the exported encoder loads and predicts the data set's classes
    hierarchy = Hierarchy.from_dir(synthgym_tiny.root)
    encoder = SeFAREncoder.from_pretrained(run_dir / "encoder").eval()
    assert encoder.config.views == views and encoder.config.num_classes == hierarchy.num_classes
    assert encoder.class_names == hierarchy.names
    with torch.no_grad():
        out = encoder(torch.zeros(1, 3, sum(views), 64, 64))
    assert out.logits.shape == (1, hierarchy.num_classes) and torch.isfinite(out.logits).all()

    # metrics: per-epoch history, warm-up then SSL, val of the selected model, test once, pairs
    lines = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in lines] == [1, 2]
    assert lines[0]["train"]["ramp"] == 0.0
    if case != "supervised":
        assert lines[1]["train"]["ramp"] == pytest.approx(1.0) and "l_un" in lines[1]["train"]
        assert 0.0 <= lines[1]["train"]["pseudo_label_entropy"] <= 1.0
        # shares of the SSL epoch's 2 steps x 4 unlabeled clips (none in the warm-up epoch)
        for key in ("unlabeled_used", "pseudo_acc"):
            share = lines[1]["train"][key]
            assert 0.0 <= share <= 1.0 and 8 * share == pytest.approx(round(8 * share)), key
            assert key not in lines[0]["train"]
    assert ("teacher" in lines[1]["val"]) == ema
    assert all(torch.isfinite(torch.tensor(r["train"]["loss"])) for r in lines)
    saved = json.loads((run_dir / "metrics.json").read_text())
    assert saved == json.loads(json.dumps(metrics))
    assert saved["optimizer_steps"] == 4 and saved["epochs"] == 2 and saved["method"] == cfg.method.name
    for key in ("unlabeled_used", "pseudo_acc"):  # the last epoch's
        assert saved[key] == (None if case == "supervised" else lines[1]["train"][key])
    assert saved["best"]["which"] in (("student", "teacher") if ema else ("student",))
    for split in ("val", "test"):
        assert saved[split]["count"] == 12
        for key in ("top1", "top5", "mean_class"):
            assert 0.0 <= saved[split][key] <= 1.0
        assert {"set", "event", "pairs_direction", "pairs_twists"} <= set(saved[split])
    report = (run_dir / "report.md").read_text()
    assert f"{100 * saved['test']['mean_class']:.1f}" in report and "direction" in report


def test_ssl_statistics_are_clip_weighted_epoch_shares(synthgym_tiny, tmp_path, train, monkeypatch):
    # steps of different sizes (as with skipped clips): step 1 has 4 unlabeled clips, 1 used, 0 correct;
    # step 2 has 2 clips, both used and correct -> 3/6 used, 2/6 correct (per-step means: 0.625, 0.5)
    real, fake = train.ssl_step, iter([[4, 1, 0], [2, 2, 2]])

    def step(*args, **kwargs):
        result = real(*args, **kwargs)
        result.unlabeled_counts = torch.tensor(next(fake))
        return result

    monkeypatch.setattr(train, "ssl_step", step)
    metrics = train.run(tiny_train_config(synthgym_tiny, tmp_path / "r", "method.name=fixmatch"))
    ssl_epoch = metrics["history"][1]["train"]
    assert ssl_epoch["unlabeled_used"] == pytest.approx(3 / 6)
    assert ssl_epoch["pseudo_acc"] == pytest.approx(2 / 6)
    assert metrics["unlabeled_used"] == ssl_epoch["unlabeled_used"]
    assert metrics["pseudo_acc"] == ssl_epoch["pseudo_acc"]
    assert not any(k.startswith("clips_") for k in ssl_epoch)  # the raw counts stay internal


def test_command_line_run_and_resume_of_a_finished_run(synthgym_tiny, tmp_path, capsys, cli):
    run_dir = tmp_path / "cli"
    args = tiny_cli_args(synthgym_tiny, run_dir, "method.name=supervised", "epochs=1", "data.validate=true")
    assert cli.main(args) == 0
    out = capsys.readouterr().out
    assert "done: test mean class" in out and str(run_dir) in out
    first = (run_dir / "metrics.json").read_text()
    assert cli.main([*args, "--resume"]) == 0  # a finished run is not trained again
    assert (run_dir / "metrics.json").read_text() == first


def test_missing_data_is_a_clear_error(tmp_path, capsys, cli):
    missing = tmp_path / "no-such-data"
    args = [
        "--config",
        "configs/encoder/synthgym_tiny.yaml",
        f"data.root={missing}",
        f"out_dir={tmp_path / 'r'}",
    ]
    assert cli.main(args) == 1
    err = capsys.readouterr().err
    assert "list file not found" in err and str(missing / "splits" / "10" / "train.csv") in err
    assert not (tmp_path / "r").exists()  # a run refused for its input writes nothing, not even config.yaml


def test_a_run_refused_for_its_input_leaves_the_previous_run_alone(tmp_path, capsys, cli):
    run_dir = tmp_path / "r"
    (run_dir / "checkpoints").mkdir(parents=True)
    previous = {"config.yaml": "seed: 5\n", "metrics.json": "{}\n"}
    for name, text in previous.items():
        (run_dir / name).write_text(text)
    args = [
        "--config",
        "configs/encoder/synthgym_tiny.yaml",
        f"data.root={tmp_path / 'none'}",
        f"out_dir={run_dir}",
    ]
    assert cli.main(args) == 1 and "list file not found" in capsys.readouterr().err
    assert {name: (run_dir / name).read_text() for name in previous} == previous
    assert (run_dir / "checkpoints").is_dir()


def test_pseudo_label_entropy_of_a_collapse_is_a_positive_zero():
    entropy = entropy_of_histogram([0, 7, 0])  # every pseudo-label on one class
    assert entropy == 0.0 and math.copysign(1.0, entropy) == 1.0
    line = epoch_line({"epoch": 1, "train": {"pseudo_label_entropy": entropy}})
    assert "pseudo-label entropy 0.000" in line
    assert entropy_of_histogram([3, 3, 3]) == pytest.approx(1.0)


def nan_steps(monkeypatch, train, bad_calls: set[int]) -> None:
    """Make the listed calls (1-based) of ``train.supervised_step`` return a NaN loss."""
    real, calls = train.supervised_step, []

    def step(model, labeled):
        calls.append(1)
        result = real(model, labeled)
        if len(calls) in bad_calls:
            result.loss = result.loss * float("nan")
        return result

    monkeypatch.setattr(train, "supervised_step", step)


def test_non_finite_steps_are_skipped(synthgym_tiny, tmp_path, train, monkeypatch):
    # the whole first epoch is non-finite (2 steps < max_nonfinite_steps): skipped, counted, reported
    nan_steps(monkeypatch, train, {1, 2})
    metrics = train.run(tiny_train_config(synthgym_tiny, tmp_path / "r", "method.name=supervised"))
    assert metrics["nonfinite_steps"] == 2 and metrics["optimizer_steps"] == 4
    assert "loss" not in metrics["history"][0]["train"] and metrics["history"][1]["train"]["loss"] > 0
    assert (tmp_path / "r" / "curves.png").is_file()
    weights, _ = load_checkpoint(latest_checkpoint(tmp_path / "r"))
    assert all(torch.isfinite(v).all() for k, v in weights.items() if k.startswith("student."))


def test_too_many_non_finite_steps_stop_with_exit_code_3(
    synthgym_tiny, tmp_path, train, monkeypatch, capsys, cli
):
    nan_steps(monkeypatch, train, {2, 3})
    args = tiny_cli_args(synthgym_tiny, tmp_path / "r", "method.name=supervised", "max_nonfinite_steps=2")
    assert cli.main(args) == 3
    assert "2 non-finite losses in a row at epoch 2" in capsys.readouterr().err


def test_ssl_method_without_unlabeled_clips_is_a_clear_error(synthgym_tiny, tmp_path, capsys, cli):
    args = tiny_cli_args(synthgym_tiny, tmp_path / "r", "method.name=sefar", "data.label_rate=100")
    assert cli.main(args) == 1
    assert "needs unlabeled clips" in capsys.readouterr().err


def test_every_method_trains_as_many_steps_per_epoch():
    # steps_per_epoch=0: one pass over the unlabeled pool, counted even for methods that never read it
    cfg = EncoderTrainConfig()  # B_l = 8, ratio 3
    assert optimizer_steps_per_epoch(cfg, num_labeled=100, num_unlabeled=2400) == 100
    assert optimizer_steps_per_epoch(cfg, num_labeled=100, num_unlabeled=0) == 12  # 100 % labels
    assert optimizer_steps_per_epoch(cfg, num_labeled=3, num_unlabeled=5) == 1
    cfg.steps_per_epoch = 7
    assert optimizer_steps_per_epoch(cfg, num_labeled=100, num_unlabeled=2400) == 7


def test_bad_override_is_a_clear_error(tmp_path, capsys, cli):
    args = [
        "--config",
        "configs/encoder/synthgym_tiny.yaml",
        "method.name=meanteacher",
        f"out_dir={tmp_path}",
    ]
    assert cli.main(args) == 1
    assert "method.name" in capsys.readouterr().err
    assert cli.main(["--config", "configs/encoder/synthgym_tiny.yaml", "optim.lr=fast"]) == 1
    assert "optim.lr" in capsys.readouterr().err


def test_batch_not_divisible_by_accumulation_is_a_clear_error(synthgym_tiny, tmp_path, capsys, cli):
    args = tiny_cli_args(synthgym_tiny, tmp_path / "r", "data.batch_size=3", "grad_accum=2")
    assert cli.main(args) == 1
    assert "data.batch_size (3) must be divisible by grad_accum" in capsys.readouterr().err


def test_gradient_accumulation_matches_the_full_batch(synthgym_tiny, tmp_path, train):
    # same global batch, 2 micro-batches: the same optimizer steps (supervised, no dropout randomness)
    common = [
        "method.name=supervised",
        "epochs=1",
        "model.head_dropout=0.0",
        "optim.name=sgd",
        "optim.lr=0.05",
    ]
    a = train.run(tiny_train_config(synthgym_tiny, tmp_path / "a", *common))
    b = train.run(
        tiny_train_config(synthgym_tiny, tmp_path / "b", *common, "grad_accum=2", "log_every_step=true")
    )
    assert a["optimizer_steps"] == b["optimizer_steps"] == 2
    la, lb = (json.loads((tmp_path / r / "metrics.jsonl").read_text())["train"]["loss"] for r in "ab")
    assert la == pytest.approx(lb, abs=1e-4)
    steps = [json.loads(x) for x in (tmp_path / "b" / "steps.jsonl").read_text().splitlines()]
    assert [r["step"] for r in steps] == [1, 2] and not (tmp_path / "a" / "steps.jsonl").exists()
    assert sum(r["loss"] for r in steps) / 2 == pytest.approx(lb, abs=1e-6)
    wa = load_checkpoint(latest_checkpoint(tmp_path / "a"))[0]
    wb = load_checkpoint(latest_checkpoint(tmp_path / "b"))[0]
    for key in [k for k in wa if k.startswith("student.")]:
        torch.testing.assert_close(wa[key], wb[key], rtol=1e-4, atol=1e-5)


@pytest.mark.slow
def test_two_processes_train_like_one(synthgym_tiny, tmp_path):
    """DDP on CPU (gloo): 2 processes x 2 clips train like 1 process x 4 clips, step by step."""
    common = [
        "method.name=supervised",  # no unlabeled stream; no dropout or drop path: no per-process randomness
        "model.head_dropout=0.0",
        "model.drop_path_rate=0.0",
        "epochs=2",
        "steps_per_epoch=10",
        "data.batch_size=4",
        "log_every_step=true",
        "deterministic=true",
    ]
    script = str(SCRIPTS / "train_encoder.py")
    accelerate = str(Path(sys.executable).parent / "accelerate")
    runs = {
        "one": ([sys.executable, script], {}),
        # accelerate 1.15: `--cpu --num_processes 2` would start a single process
        "two": (
            [accelerate, "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1"]
            + ["--mixed_precision", "no", "--dynamo_backend", "no", script],
            {"ACCELERATE_USE_CPU": "1", "OMP_NUM_THREADS": "1"},
        ),
    }
    for name, (cmd, env) in runs.items():
        args = tiny_cli_args(synthgym_tiny, tmp_path / name, *common)
        proc = subprocess.run(  # noqa: PLW1510 - the return code is asserted below
            [*cmd, *args],
            cwd=REPO,
            env={**os.environ, **env},
            capture_output=True,
            text=True,
        )
        assert proc.returncode == 0, proc.stderr[-3000:]
    steps = {
        n: [json.loads(x) for x in (tmp_path / n / "steps.jsonl").read_text().splitlines()] for n in runs
    }
    assert [s["step"] for s in steps["one"]] == [s["step"] for s in steps["two"]] == list(range(1, 21))
    diffs = [abs(a["loss"] - b["loss"]) for a, b in zip(steps["one"], steps["two"])]
    print(f"max per-step loss difference, 1 vs 2 processes: {max(diffs):.2e}")
    assert max(diffs) <= 1e-3, diffs
    assert steps["one"][-1]["loss"] < 0.8 * steps["one"][0]["loss"]  # it learns (the labeled clips)
    metrics = {n: json.loads((tmp_path / n / "metrics.json").read_text()) for n in runs}
    assert abs(metrics["one"]["test"]["top1"] - metrics["two"]["test"]["top1"]) <= 0.01
    assert metrics["two"]["val"]["count"] == metrics["one"]["val"]["count"] == 12  # every clip evaluated once


def test_internal_error_and_interrupt_exit_codes(tmp_path, cli, monkeypatch, capsys):
    args = ["--config", "configs/encoder/synthgym_tiny.yaml", f"out_dir={tmp_path / 'r'}"]

    def bug(cfg, resume=False):
        raise ValueError("a bug\nwith a second line")

    monkeypatch.setattr(cli, "run", bug)
    assert cli.main(args) == 4
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "internal error ValueError: a bug" in err
    log = (tmp_path / "r" / "error.log").read_text()
    assert log.startswith("Traceback") and "with a second line" in log

    def interrupted(cfg, resume=False):
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "run", interrupted)
    assert cli.main(args) == 130 and capsys.readouterr().err == "error: interrupted\n"


def test_sigterm_during_set_up_stops_before_the_first_step(
    synthgym_tiny, tmp_path, train, cli, monkeypatch, capsys
):
    real = train.build_datasets

    def terminated_while_validating(*args, **kwargs):
        os.kill(os.getpid(), signal.SIGTERM)
        return real(*args, **kwargs)

    monkeypatch.setattr(train, "build_datasets", terminated_while_validating)
    assert cli.main(tiny_cli_args(synthgym_tiny, tmp_path / "r", "method.name=supervised")) == 143
    assert "SIGTERM during set-up" in capsys.readouterr().out
    assert latest_checkpoint(tmp_path / "r") is None and not (tmp_path / "r" / "metrics.json").exists()
