"""What a resumed run needs to repeat the uninterrupted one (``sefar_encoder.runtime.lifecycle``): every
generator's state in the checkpoint, the CUDA one where there is CUDA, said when it cannot be restored; and
deterministic algorithms, whose CUDA requirement (``CUBLAS_WORKSPACE_CONFIG``) is set before CUDA starts
or refused in one line. This machine has no GPU: CUDA's presence and generator are faked."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from conftest import load_script
from safetensors.torch import load_file

from sefar_encoder.runtime.config import ConfigError
from sefar_encoder.runtime.lifecycle import RunLifecycle, RunState, deterministic_algorithms

CUDA_STATE = torch.arange(16, dtype=torch.uint8)  # a stand-in for torch.cuda.get_rng_state()


def fake_cuda(monkeypatch: pytest.MonkeyPatch, available: bool) -> list[torch.Tensor]:
    """CUDA present or not; returns the states given to ``torch.cuda.set_rng_state``."""
    restored: list[torch.Tensor] = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: available)
    monkeypatch.setattr(torch.cuda, "get_rng_state", lambda device="cuda": CUDA_STATE.clone())
    monkeypatch.setattr(torch.cuda, "set_rng_state", lambda state, device="cuda": restored.append(state))
    return restored


def save_and_draw(run_dir: Path) -> tuple[Path, torch.Tensor]:
    """A checkpoint of the current generators, then what the CPU generator draws next."""
    lifecycle = RunLifecycle(run_dir, None, resume=False, may_differ=frozenset())
    lifecycle.save_checkpoint("step_1", {}, RunState(), keep=1)
    return run_dir / "checkpoints" / "step_1", torch.rand(4)


@pytest.mark.parametrize("cuda", [False, True], ids=["cpu", "cuda"])
def test_checkpoint_holds_the_cuda_generator_only_with_cuda(tmp_path, monkeypatch, cuda):
    fake_cuda(monkeypatch, available=cuda)
    path, _ = save_and_draw(tmp_path)
    tensors = load_file(str(path / "tensors.safetensors"))
    assert set(tensors) == ({"rng.torch.0", "rng.cuda.0"} if cuda else {"rng.torch.0"})
    if cuda:
        assert torch.equal(tensors["rng.cuda.0"], CUDA_STATE)


def test_resume_restores_the_cpu_and_cuda_generators(tmp_path, monkeypatch, capsys):
    restored = fake_cuda(monkeypatch, available=True)
    path, drawn = save_and_draw(tmp_path)
    torch.rand(100)  # the generator moves on
    RunLifecycle(tmp_path, None, resume=True, may_differ=frozenset()).load_checkpoint(path, RunState)
    assert torch.equal(torch.rand(4), drawn)
    assert len(restored) == 1 and torch.equal(restored[0], CUDA_STATE)
    assert "not restored" not in capsys.readouterr().out


@pytest.mark.parametrize("saved_with, resumed_with", [(True, False), (False, True)])
def test_a_cuda_generator_that_cannot_be_restored_is_said(
    tmp_path, monkeypatch, capsys, saved_with, resumed_with
):
    fake_cuda(monkeypatch, available=saved_with)
    path, drawn = save_and_draw(tmp_path)
    restored = fake_cuda(monkeypatch, available=resumed_with)
    RunLifecycle(tmp_path, None, resume=True, may_differ=frozenset()).load_checkpoint(path, RunState)
    assert torch.equal(torch.rand(4), drawn) and restored == []  # the CPU generator still is
    out = capsys.readouterr().out
    assert "CUDA random state is not restored" in out
    assert (
        "written with CUDA, resumed without" if saved_with else "written without CUDA, resumed with"
    ) in out


@pytest.fixture()
def cuda_present(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_initialized", lambda: False)
    return monkeypatch


def test_deterministic_sets_the_cublas_workspace_before_cuda_starts(cuda_present):
    was = torch.are_deterministic_algorithms_enabled()
    environ: dict[str, str] = {}
    with deterministic_algorithms(True, environ):
        assert environ == {"CUBLAS_WORKSPACE_CONFIG": ":4096:8"}
        assert torch.are_deterministic_algorithms_enabled()
    assert torch.are_deterministic_algorithms_enabled() == was  # only for the block (a run in-process)
    environ = {"CUBLAS_WORKSPACE_CONFIG": ":16:8"}  # the user's own accepted value stays
    with deterministic_algorithms(True, environ):
        assert environ == {"CUBLAS_WORKSPACE_CONFIG": ":16:8"}
    environ = {}
    with deterministic_algorithms(False, environ):  # not asked for: nothing to set
        assert environ == {} and torch.are_deterministic_algorithms_enabled() == was


def test_deterministic_without_cuda_needs_no_workspace(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    environ: dict[str, str] = {}
    with deterministic_algorithms(True, environ):
        assert environ == {} and torch.are_deterministic_algorithms_enabled()


def test_deterministic_refuses_what_cublas_would_not_honour(cuda_present):
    with (
        pytest.raises(ConfigError, match="':0:0'"),
        deterministic_algorithms(True, {"CUBLAS_WORKSPACE_CONFIG": ":0:0"}),
    ):
        pass
    cuda_present.setattr(torch.cuda, "is_initialized", lambda: True)  # too late to set it
    too_late = "CUBLAS_WORKSPACE_CONFIG=:4096:8 .* set before CUDA starts"
    with pytest.raises(ConfigError, match=too_late), deterministic_algorithms(True, {}):
        pass


def test_encoder_training_refuses_deterministic_cuda_before_set_up(cuda_present, tmp_path, capsys):
    """train_encoder checks first: CUDA already started without the variable is one line, exit 1."""
    cuda_present.setattr(torch.cuda, "is_initialized", lambda: True)
    cuda_present.delenv("CUBLAS_WORKSPACE_CONFIG", raising=False)
    train_encoder = load_script("train_encoder")
    assert train_encoder.main(["deterministic=true", f"out_dir={tmp_path / 'run'}"]) == 1
    assert "CUBLAS_WORKSPACE_CONFIG" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()  # nothing was set up
