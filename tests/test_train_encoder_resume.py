"""Interrupted encoder runs resume to exactly the metrics and weights of an uninterrupted run.

Reference: sefar on SynthGym tiny, 3 epochs x 2 steps (1 warm-up epoch; the EMA teacher is born at the
start of epoch 2), deterministic CPU settings. Interruptions: SIGTERM in the middle of an SSL epoch (in
this process, and to a subprocess: exit code 143), and a crash between the metrics line and the
checkpoint of an epoch (with stale temporary files left behind).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import REPO, SCRIPTS, load_script
from synthgym_fixtures import (
    RESUME_COMMON,
    RESUME_THREADS,
    resume_reference,
    tiny_cli_args,
    tiny_train_config,
)

from sefar_encoder.runtime.atomic import TMP_PREFIX
from sefar_encoder.runtime.checkpoint import latest_checkpoint, load_checkpoint
from sefar_encoder.runtime.config import ConfigError
from sefar_encoder.runtime.lifecycle import StopRequested

COMMON = RESUME_COMMON
VOLATILE = {"seconds", "minutes"}  # wall-clock fields: the only ones allowed to differ

pytest_plugins = ["synthgym_fixtures"]  # synthgym_tiny


THREADS = RESUME_THREADS  # bitwise-equal results need the same intra-op thread count in every run


@pytest.fixture(scope="module", autouse=True)
def pinned_threads():
    """Another test may have left torch at another thread count (e.g. a benchmark's main)."""
    before = torch.get_num_threads()
    torch.set_num_threads(THREADS)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def train():
    return load_script("train_encoder")


def comparable(obj):
    """``obj`` without wall-clock fields, recursively."""
    if isinstance(obj, dict):
        return {k: comparable(v) for k, v in obj.items() if k not in VOLATILE}
    if isinstance(obj, list):
        return [comparable(v) for v in obj]
    return obj


def final_weights(run_dir: Path) -> dict:
    tensors, _ = load_checkpoint(latest_checkpoint(run_dir))
    return {k: v for k, v in tensors.items() if k.startswith(("student.", "teacher."))}


def assert_same_run(run_dir: Path, ref_dir: Path) -> None:
    got = json.loads((run_dir / "metrics.json").read_text())
    ref = json.loads((ref_dir / "metrics.json").read_text())
    assert comparable(got) == comparable(ref)
    lines = [comparable(json.loads(x)) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert lines == [comparable(json.loads(x)) for x in (ref_dir / "metrics.jsonl").read_text().splitlines()]
    a, b = final_weights(run_dir), final_weights(ref_dir)
    assert a.keys() == b.keys() and any(k.startswith("teacher.") for k in a)
    assert all(a[k].equal(b[k]) for k in a), [k for k in a if not a[k].equal(b[k])][:5]


@pytest.fixture(scope="module")
def reference(synthgym_tiny, tmp_path_factory) -> Path:
    return resume_reference(synthgym_tiny, tmp_path_factory.mktemp("resume"))


def sigterm_at_call(monkeypatch, train, name: str, call: int) -> None:
    """Send SIGTERM to this process from inside the ``call``-th call of ``train.<name>`` (1-based)."""
    real, calls = getattr(train, name), []

    def wrapper(*args, **kwargs):
        calls.append(1)
        if len(calls) == call:
            os.kill(os.getpid(), signal.SIGTERM)
        return real(*args, **kwargs)

    monkeypatch.setattr(train, name, wrapper)


def test_sigterm_mid_epoch_then_resume_matches_uninterrupted(
    synthgym_tiny, train, reference, tmp_path, monkeypatch
):
    run_dir = tmp_path / "run"
    cfg = tiny_train_config(synthgym_tiny, run_dir, *COMMON)
    previous = signal.getsignal(signal.SIGTERM)
    sigterm_at_call(monkeypatch, train, "ssl_step", 1)  # the first SSL step: epoch 2, micro-step 3
    with pytest.raises(StopRequested):
        train.run(cfg)
    assert signal.getsignal(signal.SIGTERM) is previous  # the run's handler does not outlive it
    ckpt = latest_checkpoint(run_dir)
    assert ckpt.name == "step_00000003"
    _, state = load_checkpoint(ckpt)
    assert (state["epoch"], state["micro_step"], state["opt_step"]) == (1, 3, 3)
    assert state["epoch_count"] == 1 and "ema" in state  # a partial epoch, teacher included
    assert not (run_dir / "metrics.json").exists()
    monkeypatch.undo()

    train.run(cfg, resume=True)
    assert_same_run(run_dir, reference)
    assert [p.name for p in (run_dir / "checkpoints").iterdir() if p.is_dir()] == ["epoch_0003"]


def test_crash_between_epochs_and_stale_temp_files(synthgym_tiny, train, reference, tmp_path, monkeypatch):
    run_dir = tmp_path / "run"
    cfg = tiny_train_config(synthgym_tiny, run_dir, *COMMON)
    real_save = train.save_run_checkpoint

    def crash_at_epoch_2(ctx, state, name):  # after epoch 2's metrics line, before its checkpoint
        if name == "epoch_0002":
            raise RuntimeError("power cut")
        real_save(ctx, state, name)

    monkeypatch.setattr(train, "save_run_checkpoint", crash_at_epoch_2)
    with pytest.raises(RuntimeError, match="power cut"):
        train.run(cfg)
    monkeypatch.undo()
    assert latest_checkpoint(run_dir).name == "epoch_0001"
    # A resume with other settings is refused before anything is touched; progress bars may differ.
    changed = tiny_train_config(synthgym_tiny, run_dir, *COMMON, "optim.weight_decay=0.5", "progress=true")
    with pytest.raises(
        ConfigError, match=r"config\.yaml: --resume with settings .*optim\.weight_decay: .* -> 0\.5"
    ) as err:
        train.run(changed, resume=True)
    assert "progress" not in str(err.value)
    assert len((run_dir / "metrics.jsonl").read_text().splitlines()) == 2  # epoch 2 was logged already
    # leftovers of a write interrupted by the crash
    stale_dir = run_dir / "checkpoints" / f"{TMP_PREFIX}epoch_0002"
    stale_dir.mkdir()
    (stale_dir / "tensors.safetensors").write_bytes(b"half a file")
    stale_file = run_dir / "checkpoints" / f"{TMP_PREFIX}latest.json"
    stale_file.write_text('{"name": "epo')
    stale_export = run_dir / ".encoder.tmp-x1y2"  # save_pretrained's temporary folder
    stale_export.mkdir()
    (stale_export / "model.safetensors").write_bytes(b"half")
    stale_log = run_dir / ".tmp-metrics.jsonl"
    stale_log.write_text("{")

    train.run(cfg, resume=True)
    assert not any(p.exists() for p in (stale_dir, stale_file, stale_export, stale_log))
    assert_same_run(run_dir, reference)  # includes metrics.jsonl: epoch 2 is not logged twice


def test_sigterm_to_subprocess_exits_143_and_resumes(synthgym_tiny, train, reference, tmp_path):
    run_dir = tmp_path / "run"
    args = tiny_cli_args(synthgym_tiny, run_dir, *COMMON)
    env = {**os.environ, "OMP_NUM_THREADS": str(THREADS)}
    proc = subprocess.Popen(
        [sys.executable, str(SCRIPTS / "train_encoder.py"), *args],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.time() + 120
        # SIGTERM as soon as epoch 1 is logged: two SSL epochs (4 steps) are still ahead
        while not (run_dir / "metrics.jsonl").is_file() or not (run_dir / "metrics.jsonl").read_text():
            assert proc.poll() is None, proc.communicate()
            assert time.time() < deadline, "epoch 1 never finished"
            time.sleep(0.02)
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 143, (out, err)
    assert "SIGTERM: checkpoint written" in out
    ckpt = latest_checkpoint(run_dir)
    _, state = load_checkpoint(ckpt)
    assert 2 <= state["micro_step"] < 6 and not (run_dir / "metrics.json").exists()

    assert load_script("train_encoder").main([*args, "--resume"]) == 0
    assert_same_run(run_dir, reference)


@pytest.mark.slow
def test_resume_with_loader_workers_matches_in_process_loading(
    synthgym_tiny, train, reference, tmp_path, monkeypatch
):
    # num_workers=2: the uninterrupted run equals the num_workers=0 reference (data order and
    # augmentation depend only on the seed), and so does an interrupted + resumed one
    workers = [*COMMON, "data.num_workers=2"]
    train.run(tiny_train_config(synthgym_tiny, tmp_path / "uninterrupted", *workers))
    assert_same_run(tmp_path / "uninterrupted", reference)
    cfg = tiny_train_config(synthgym_tiny, tmp_path / "interrupted", *workers)
    sigterm_at_call(monkeypatch, train, "ssl_step", 2)
    with pytest.raises(StopRequested):
        train.run(cfg)
    monkeypatch.undo()
    train.run(cfg, resume=True)
    assert_same_run(tmp_path / "interrupted", reference)


def test_evaluation_does_not_shift_the_training_randomness(synthgym_tiny, train, reference, tmp_path):
    # evaluating the teacher or not (or every epoch or not) must leave the trained weights unchanged
    run_dir = tmp_path / "run"
    train.run(tiny_train_config(synthgym_tiny, run_dir, *COMMON, "eval.teacher=false", "eval.every=2"))
    ref = [json.loads(x)["train"] for x in (reference / "metrics.jsonl").read_text().splitlines()]
    got = [json.loads(x)["train"] for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert got == ref
    a, b = final_weights(run_dir), final_weights(reference)
    assert all(a[k].equal(b[k]) for k in a)


def test_freematch_thresholds_survive_a_mid_epoch_resume(synthgym_tiny, train, tmp_path, monkeypatch):
    # λ = 0.5: the running thresholds move visibly each step, so a resume that restarted them at 1/C (or
    # lost the partial epoch's clip counts) would change the masks, the losses and the statistics
    common = ["epochs=3", "method.name=freematch", "method.freematch.momentum=0.5", "deterministic=true"]
    train.run(tiny_train_config(synthgym_tiny, tmp_path / "reference", *common))
    run_dir = tmp_path / "run"
    cfg = tiny_train_config(synthgym_tiny, run_dir, *common)
    sigterm_at_call(monkeypatch, train, "ssl_step", 1)  # the first SSL step: epoch 2, micro-step 3
    with pytest.raises(StopRequested):
        train.run(cfg)
    monkeypatch.undo()
    _, state = load_checkpoint(latest_checkpoint(run_dir))
    assert state["micro_step"] == 3 and state["epoch_sums"]["clips_unlabeled"] == 4
    assert state["method_state"]["freematch"]["tau"] != pytest.approx(1 / 12)  # updated once (12 classes)

    train.run(cfg, resume=True)
    got, ref = (
        comparable(json.loads((d / "metrics.json").read_text())) for d in (run_dir, tmp_path / "reference")
    )
    assert got == ref and got["unlabeled_used"] is not None  # history, SSL statistics and test scores
    (a, a_state), (b, b_state) = (
        load_checkpoint(latest_checkpoint(d)) for d in (run_dir, tmp_path / "reference")
    )
    assert a_state["method_state"] == b_state["method_state"]
    assert all(a[k].equal(b[k]) for k in a if k.startswith("student."))
