"""Crash safety of encoder training: SIGKILL (and SIGTERM) at random moments, then ``--resume``.

Each trial starts ``scripts/train_encoder.py`` as a subprocess on the resume tests' reference
configuration (sefar, 3 epochs x 2 steps, deterministic; ``synthgym_fixtures.RESUME_COMMON``), kills it
at a moment drawn from a seeded RNG — after a random number of optimizer steps plus a random delay, or
while a checkpoint is being written (a ``.tmp-`` entry appears in ``checkpoints/``) — and checks the run
folder at that instant: every checkpoint directory under a final name is complete and loads, and
``latest.json`` (if any) names one of them. The run is then resumed in-process and must end with exactly
the metrics (``metrics.json`` and ``metrics.jsonl``, wall-clock fields aside) and weights of the
uninterrupted reference, one ``steps.jsonl`` line per optimizer step, and no temporary file left behind.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
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
from sefar_encoder.runtime.checkpoint import (
    LATEST,
    clean_stale,
    latest_checkpoint,
    load_checkpoint,
    prune_checkpoints,
    save_checkpoint,
)
from sefar_encoder.runtime.lifecycle import clean_run_dir, rewind_history

pytest_plugins = ["synthgym_fixtures"]  # synthgym_tiny
training = load_script("train_encoder")

EXTRA = ["log_every_step=true"]  # steps.jsonl: the kill moments are counted in optimizer steps
TOTAL_STEPS = 6
VOLATILE = {"seconds", "minutes"}


@pytest.fixture(scope="module", autouse=True)
def pinned_threads():
    before = torch.get_num_threads()
    torch.set_num_threads(RESUME_THREADS)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def reference(synthgym_tiny, tmp_path_factory) -> Path:
    return resume_reference(synthgym_tiny, tmp_path_factory.mktemp("kill-reference"))


@dataclass(frozen=True)
class Moment:
    """When to signal: ``delay`` s after checkpoint ``checkpoint`` starts being written (its temporary
    folder appears), or, without one, ``delay`` s after ``steps`` optimizer steps were logged."""

    checkpoint: str | None = None
    steps: int = 0
    delay: float = 0.0
    signal: int = signal.SIGKILL


# kill moments of the random trials: after 0-1, 2-3, 4-5 or all 6 steps (the last: in the final
# validation, test or report writing), each plus a random delay
STRATA = [(0, 1), (2, 3), (4, 5), (6, 6)]


def draw_moments(seed: int, count: int) -> list[Moment]:
    """Every third kill inside the write of a random epoch checkpoint; the others spread over the run."""
    rng = random.Random(seed)
    moments, stratum = [], 0
    for i in range(count):
        if i % 3 == 0:
            name = f"epoch_{rng.randint(1, 3):04d}"
            moments.append(Moment(checkpoint=name, delay=rng.uniform(0.0, 0.05)))
        else:
            lo, hi = STRATA[stratum % len(STRATA)]
            moments.append(Moment(steps=rng.randint(lo, hi), delay=rng.uniform(0.0, 3.0)))
            stratum += 1
    return moments


def steps_logged(run_dir: Path) -> int:
    try:
        return (run_dir / "steps.jsonl").read_text().count("\n")
    except FileNotFoundError:
        return 0


def temporaries(run_dir: Path) -> list[str]:
    """Leftovers of interrupted atomic writes, anywhere in the run folder."""
    if not run_dir.is_dir():
        return []
    return sorted(
        str(p.relative_to(run_dir))
        for p in run_dir.rglob("*")
        if p.name.startswith(TMP_PREFIX) or p.name.endswith(".tmp") or p.name.startswith(".encoder.")
    )


def kill_at(moment: Moment, run_dir: Path, data, deadline: float = 900.0) -> tuple[int | None, list[str]]:
    """Start the training subprocess, signal it at ``moment``; (return code, temporaries at the kill)."""
    args = tiny_cli_args(data, run_dir, *RESUME_COMMON, *EXTRA)
    log = run_dir.with_name(run_dir.name + ".stderr")  # a file, not a pipe nobody reads while it runs
    with open(log, "w") as stderr:
        proc = subprocess.Popen(
            [sys.executable, str(SCRIPTS / "train_encoder.py"), *args],
            cwd=REPO,
            env={**os.environ, "OMP_NUM_THREADS": str(RESUME_THREADS)},
            stdout=subprocess.DEVNULL,
            stderr=stderr,
        )
    checkpoints = run_dir / "checkpoints"
    end = time.time() + deadline
    try:
        while proc.poll() is None and time.time() < end:
            if moment.checkpoint is not None:
                try:
                    writing = (TMP_PREFIX + moment.checkpoint) in os.listdir(checkpoints)
                except FileNotFoundError:
                    writing = False
                if writing:
                    time.sleep(moment.delay)
                    break
                time.sleep(0.002)  # a checkpoint write takes tens of milliseconds
            elif steps_logged(run_dir) >= moment.steps:
                time.sleep(moment.delay)
                break
            else:
                time.sleep(0.01)
        if proc.poll() is None:
            proc.send_signal(moment.signal)
        proc.wait(timeout=300)
        left = temporaries(run_dir)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode in (0, -signal.SIGKILL, 143), log.read_text()[-2000:]
    return proc.returncode, left


def assert_consistent_at_kill(run_dir: Path) -> None:
    """Either no checkpoint or complete ones only; ``latest.json`` names a complete checkpoint."""
    root = run_dir / "checkpoints"
    final = (
        [p for p in root.iterdir() if p.is_dir() and not p.name.startswith(TMP_PREFIX)]
        if root.is_dir()
        else []
    )
    for path in final:  # never half a checkpoint under a final name
        tensors, state = load_checkpoint(path)
        assert any(k.startswith("student.") for k in tensors) and "micro_step" in state, path
    if (root / LATEST).is_file():
        latest = latest_checkpoint(run_dir)
        assert latest in final, (latest, final)
    if (run_dir / "metrics.json").is_file():
        json.loads((run_dir / "metrics.json").read_text())  # complete, or absent


def comparable(obj):
    if isinstance(obj, dict):
        return {k: comparable(v) for k, v in obj.items() if k not in VOLATILE}
    if isinstance(obj, list):
        return [comparable(v) for v in obj]
    return obj


def assert_same_as_reference(run_dir: Path, reference: Path) -> None:
    got, ref = (json.loads((d / "metrics.json").read_text()) for d in (run_dir, reference))
    assert comparable(got) == comparable(ref)
    lines = [
        [comparable(json.loads(x)) for x in (d / "metrics.jsonl").read_text().splitlines()]
        for d in (run_dir, reference)
    ]
    assert lines[0] == lines[1]
    a, b = (load_checkpoint(latest_checkpoint(d))[0] for d in (run_dir, reference))
    keys = [k for k in b if k.startswith(("student.", "teacher."))]
    assert keys and all(a[k].equal(b[k]) for k in keys), [k for k in keys if not a[k].equal(b[k])][:5]
    steps = [json.loads(x)["step"] for x in (run_dir / "steps.jsonl").read_text().splitlines()]
    assert steps == list(range(1, TOTAL_STEPS + 1))


def trial(moment: Moment, run_dir: Path, reference: Path, data) -> dict:
    code, left_at_kill = kill_at(moment, run_dir, data)
    assert_consistent_at_kill(run_dir)
    training.run(tiny_train_config(data, run_dir, *RESUME_COMMON, *EXTRA), resume=True)
    assert temporaries(run_dir) == [], "stray temporary files after the resumed run"
    assert_same_as_reference(run_dir, reference)
    return {"moment": moment, "code": code, "temporaries_at_kill": left_at_kill}


def test_sigkill_during_a_checkpoint_write_then_resume(synthgym_tiny, reference, tmp_path):
    # epoch 2's checkpoint: the first with the EMA teacher, and the one that prunes epoch 1's
    outcome = trial(Moment(checkpoint="epoch_0002"), tmp_path / "run", reference, synthgym_tiny)
    # the kill landed inside the write (the run takes minutes; the write is watched continuously)
    assert outcome["code"] == -signal.SIGKILL and outcome["temporaries_at_kill"], outcome


@pytest.mark.slow
def test_sigkill_at_random_moments_then_resume(synthgym_tiny, reference, tmp_path):
    moments = draw_moments(seed=7, count=6)
    outcomes = [trial(m, tmp_path / f"run{i}", reference, synthgym_tiny) for i, m in enumerate(moments)]
    print(
        "\n".join(
            f"{o['moment']} -> exit {o['code']}, temporaries {o['temporaries_at_kill']}" for o in outcomes
        )
    )
    assert sum(o["code"] == -signal.SIGKILL for o in outcomes) >= 4
    assert any(o["temporaries_at_kill"] for o in outcomes)  # at least one kill inside an atomic write


@pytest.mark.slow
def test_sigterm_at_random_moments_writes_a_checkpoint_and_resumes(synthgym_tiny, reference, tmp_path):
    rng = random.Random(11)
    for i in range(2):
        moment = Moment(
            steps=rng.randint(1, TOTAL_STEPS - 1), delay=rng.uniform(0.0, 1.0), signal=signal.SIGTERM
        )
        run_dir = tmp_path / f"run{i}"
        code, _ = kill_at(moment, run_dir, synthgym_tiny)
        if code == 143:  # stopped during training: a checkpoint of the step it stopped at
            _, state = load_checkpoint(latest_checkpoint(run_dir))
            assert 0 < state["micro_step"] <= TOTAL_STEPS and not (run_dir / "metrics.json").exists()
        training.run(tiny_train_config(synthgym_tiny, run_dir, *RESUME_COMMON, *EXTRA), resume=True)
        assert temporaries(run_dir) == []
        assert_same_as_reference(run_dir, reference)


# ----------------------------------------------------------------------------------------- write windows
# Kills rarely land in these few-microsecond windows; each is reproduced here directly.
def small_checkpoint(run_dir: Path, name: str, value: float) -> Path:
    return save_checkpoint(run_dir, name, {"w": torch.full((4,), value)}, {"value": value})


def test_checkpoint_fsyncs_every_file_and_directory(tmp_path, monkeypatch):
    synced, real = [], os.fsync

    def spy(fd):
        synced.append(os.readlink(f"/proc/self/fd/{fd}"))
        real(fd)

    monkeypatch.setattr(os, "fsync", spy)
    small_checkpoint(tmp_path, "epoch_0001", 1.0)
    root = tmp_path / "checkpoints"
    tmp = root / f"{TMP_PREFIX}epoch_0001"
    pointer_tmp = root / f"{LATEST}.{os.getpid()}.tmp"  # gym_qa.atomic_files' temporary name
    for path in (tmp / "tensors.safetensors", tmp / "state.json", tmp, root, pointer_tmp):
        assert str(path) in synced, (path, synced)
    # files before their folder, the folder before it is renamed into place, the pointer last
    order = [synced.index(str(p)) for p in (tmp / "state.json", tmp, root, pointer_tmp)]
    assert order == sorted(order)


def test_kill_between_the_renames_of_a_resaved_checkpoint(tmp_path):
    small_checkpoint(tmp_path, "step_00000003", 1.0)
    root = tmp_path / "checkpoints"
    # the state a kill leaves between "final -> .tmp-old-final" and ".tmp-final -> final"
    (root / "step_00000003").rename(root / f"{TMP_PREFIX}old-step_00000003")
    (root / f"{TMP_PREFIX}step_00000003").mkdir()  # the new one, half written
    assert [p.name for p in clean_stale(tmp_path)] == [f"{TMP_PREFIX}step_00000003"]
    tensors, state = load_checkpoint(latest_checkpoint(tmp_path))
    assert state == {"value": 1.0} and tensors["w"].eq(1.0).all()


def test_kill_while_old_checkpoints_are_deleted(tmp_path, monkeypatch):
    small_checkpoint(tmp_path, "epoch_0001", 1.0)
    small_checkpoint(tmp_path, "epoch_0002", 2.0)
    deleted, real = [], shutil.rmtree
    monkeypatch.setattr(
        shutil, "rmtree", lambda path, *a, **k: deleted.append(Path(path).name) or real(path, *a, **k)
    )
    prune_checkpoints(tmp_path, {"epoch_0002"})
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["epoch_0002", LATEST]
    # renamed to a temporary before deletion: a kill mid-delete never leaves half a checkpoint under its name
    assert deleted == [f"{TMP_PREFIX}del-epoch_0001"]


def test_kill_between_the_renames_of_the_encoder_export(tmp_path):
    export = tmp_path / "encoder"
    export.mkdir()
    (export / "model.safetensors").write_bytes(b"complete")
    export.rename(tmp_path / ".encoder.old-x1y2")  # save_pretrained's first rename; killed before the second
    (tmp_path / ".encoder.tmp-a3b4").mkdir()
    removed = clean_run_dir(tmp_path)
    assert (export / "model.safetensors").read_bytes() == b"complete"
    assert [p.name for p in removed] == [".encoder.tmp-a3b4"]


def test_half_written_step_log_line_is_dropped(tmp_path):
    lines = [json.dumps({"step": s, "loss": 1.0}) for s in (1, 2, 3)]
    (tmp_path / "steps.jsonl").write_text("\n".join(lines) + '\n{"step": 4, "lo')
    rewind_history(tmp_path / "steps.jsonl", 2, write=True)
    assert (tmp_path / "steps.jsonl").read_text() == lines[0] + "\n" + lines[1] + "\n"
