"""The run lifecycle (``sefar_encoder.runtime.lifecycle``) is the same under every trainer: one test,
parametrised over the encoder, the MLLM stage, the backbone pretraining and the element detector, each on a
tiny config.

SIGTERM during training writes a checkpoint and exits 143 (no metrics.json); ``--resume`` with a changed
setting is refused (exit 1) and leaves the checkpoint alone; ``--resume`` with the same settings finishes
and writes ``metrics.json`` last, and a second ``--resume`` returns the finished run untouched; non-finite
losses in a row stop a run (exit 3) before it finishes; a bug exits 4 with its traceback in ``error.log``.
"""

from __future__ import annotations

import signal
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import torch
from conftest import load_script
from mllm_run_fixtures import write_config
from synthgym_fixtures import TINY_PRETRAIN_YAML, tiny_cli_args
from test_detection_train import args as detector_args
from test_detection_train import planted_routines

from sefar_encoder.runtime.checkpoint import latest_checkpoint

pytest_plugins = ["mllm_run_fixtures", "synthgym_fixtures", "tiny_llm_fixtures"]


def nan_step_result(result: Any) -> Any:
    result.loss = result.loss * float("nan")
    return result


@dataclass(frozen=True)
class Trainer:
    script: str
    loss: str  # the recipe's function whose training-time result carries the step's loss
    poison: Callable[[Any], Any]  # that result with a NaN loss
    argv: Callable[[pytest.FixtureRequest, Path], list[str]]  # tiny config writing to the run folder


def encoder_argv(request: pytest.FixtureRequest, run_dir: Path) -> list[str]:
    data = request.getfixturevalue("synthgym_tiny")
    return tiny_cli_args(data, run_dir, "method.name=supervised", "epochs=1")


def mllm_argv(request: pytest.FixtureRequest, run_dir: Path) -> list[str]:
    data, llm = request.getfixturevalue("mllm_data"), request.getfixturevalue("tiny_llm_dir")
    config = write_config(
        run_dir.with_suffix(".yaml"), data, llm, run_dir, align={"out_dir": str(run_dir), "max_steps": 2}
    )
    return ["--config", str(config), "--stage", "align"]


def pretrain_argv(request: pytest.FixtureRequest, run_dir: Path) -> list[str]:
    root = request.getfixturevalue("synthgym_tiny").root
    overrides = [f"data_root={root}", f"out_dir={run_dir}", "steps=4", "batch_size=16", "progress=false"]
    return ["--config", str(TINY_PRETRAIN_YAML), *overrides]


def detector_argv(request: pytest.FixtureRequest, run_dir: Path) -> list[str]:
    routines, features = planted_routines(run_dir.with_name(f"{run_dir.name}_data"))
    return detector_args(routines, features, run_dir, "epochs=2")


TRAINERS = {
    "encoder": Trainer("train_encoder", "supervised_step", nan_step_result, encoder_argv),
    "mllm": Trainer("train_mllm", "batch_nll", lambda loss: loss * float("nan"), mllm_argv),
    "pretrain": Trainer(
        "pretrain_image_backbone",
        "losses",
        lambda terms: {k: v * float("nan") for k, v in terms.items()},
        pretrain_argv,
    ),
    "detector": Trainer(
        "train_detector",
        "haan_losses",
        lambda terms: {k: v * float("nan") for k, v in terms.items()},
        detector_argv,
    ),
}


def patch_loss(monkeypatch: pytest.MonkeyPatch, module: Any, trainer: Trainer, action: str) -> None:
    """In training steps (gradients on; not in evaluation), ``action``: ``sigterm`` this process, ``nan``
    the loss, or raise a ``bug``."""
    real = getattr(module, trainer.loss)

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        out = real(*args, **kwargs)
        if not torch.is_grad_enabled():
            return out
        if action == "sigterm":
            signal.raise_signal(signal.SIGTERM)
        elif action == "bug":
            raise RuntimeError("a bug in a step")
        return trainer.poison(out) if action == "nan" else out

    monkeypatch.setattr(module, trainer.loss, wrapper)


def run_files(run_dir: Path) -> list[Path]:
    return [p for p in run_dir.rglob("*") if p.is_file()]


@pytest.mark.parametrize("name", list(TRAINERS))
def test_every_trainer_has_the_same_lifecycle(name, request, tmp_path, monkeypatch, capsys):
    trainer = TRAINERS[name]
    module = load_script(trainer.script)
    run_dir = tmp_path / "run"
    argv = trainer.argv(request, run_dir)
    previous = signal.getsignal(signal.SIGTERM)

    # SIGTERM in a training step: the step finishes, a checkpoint is written, exit 143, not finished
    with monkeypatch.context() as m:
        patch_loss(m, module, trainer, "sigterm")
        assert module.main(argv) == 143
    assert "SIGTERM: checkpoint written" in capsys.readouterr().out
    assert signal.getsignal(signal.SIGTERM) is previous  # the run's handler does not outlive it
    checkpoint = latest_checkpoint(run_dir)
    assert checkpoint is not None and not (run_dir / "metrics.json").exists()

    # --resume with another setting is refused, naming it, before anything is touched
    assert module.main([*argv, "seed=5", "--resume"]) == 1
    err = capsys.readouterr().err
    assert "config.yaml: --resume with settings" in err and "seed: 0 -> 5" in err
    assert latest_checkpoint(run_dir) == checkpoint and not (run_dir / "metrics.json").exists()

    # --resume with the same settings finishes; metrics.json is the last file written
    assert module.main([*argv, "--resume"]) == 0
    metrics = run_dir / "metrics.json"
    assert metrics.stat().st_mtime_ns == max(p.stat().st_mtime_ns for p in run_files(run_dir))
    finished = metrics.read_text()
    assert module.main([*argv, "--resume"]) == 0 and metrics.read_text() == finished  # not trained again

    # non-finite losses in a row stop a fresh run: exit 3, not finished
    nan_dir = tmp_path / "nan"
    with monkeypatch.context() as m:
        patch_loss(m, module, trainer, "nan")
        assert module.main([*trainer.argv(request, nan_dir), "max_nonfinite_steps=2"]) == 3
    assert "2 non-finite losses in a row" in capsys.readouterr().err
    assert not (nan_dir / "metrics.json").exists()

    # a bug: exit 4, one line on stderr, the traceback in the run folder's error.log
    bug_dir = tmp_path / "bug"
    with monkeypatch.context() as m:
        patch_loss(m, module, trainer, "bug")
        assert module.main(trainer.argv(request, bug_dir)) == 4
    assert "internal error RuntimeError: a bug in a step" in capsys.readouterr().err
    assert (bug_dir / "error.log").read_text().startswith("Traceback")
