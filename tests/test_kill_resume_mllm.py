"""MLLM stage B survives being killed at any moment (docs/reliability.md, "Stage A/B training survives any
kill").

``scripts/train_mllm.py --stage instruct`` on the 16-clip test data with the micro LLM (LoRA dropout on,
so the RNG must be restored too), a checkpoint after every step. A subprocess is SIGKILLed at a seeded
random moment (while it starts, trains, checkpoints or writes its results); at every kill the run folder
must hold no checkpoint or the last complete one, and no other half-written file; ``--resume`` must
remove the temporary leftovers and end on exactly the losses, metrics and weights of an uninterrupted
run. The default (fast) trial kills a forked copy of this process running ``main`` (no 20-second
interpreter start-up: transformers + peft imports); the slow trials kill the CLI as a subprocess, twice
in a row, and resume it as a subprocess. SIGTERM writes a final checkpoint (exit 143), also on an
epoch's last step, where the epoch's evaluation is still due.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from conftest import SCRIPTS, load_script
from mllm_run_fixtures import write_config
from safetensors.torch import load_file

from sefar_encoder.runtime.atomic import TMP_PREFIX
from sefar_encoder.runtime.checkpoint import LATEST, latest_checkpoint, load_checkpoint

pytest_plugins = ["mllm_run_fixtures", "tiny_llm_fixtures"]  # mllm_data, tiny_llm_dir
train = load_script("train_mllm")
# The same intra-op thread count in this process and in the subprocesses (equal float sums); 1 keeps a
# shared 2-core machine from thrashing.
THREADS = 1
MAX_STEPS = 4  # 8 samples / batch 4 = 2 steps per epoch: 2 epochs, each ending with a val loss
VOLATILE = {"seconds", "minutes", "median_step_seconds"}  # wall clock: the only fields allowed to differ
PNG_END = b"IEND\xaeB`\x82"


@pytest.fixture(scope="module", autouse=True)
def pinned_threads():
    before = torch.get_num_threads()
    torch.set_num_threads(THREADS)
    yield
    torch.set_num_threads(before)


def stage_b_config(path: Path, data: dict, llm_dir: Path, out: Path) -> Path:
    return write_config(
        path,
        data,
        llm_dir,
        out,
        keep_checkpoints=2,
        instruct={
            "init_from": "",
            "max_steps": MAX_STEPS,
            "micro_batch_size": 4,
            "checkpoint_every": 1,
            "out_dir": str(out),
        },
    )


@pytest.fixture(scope="module")
def reference(mllm_data, tiny_llm_dir, tmp_path_factory) -> Path:
    """The uninterrupted run (also builds the shared feature cache, so subprocesses only read it)."""
    root = tmp_path_factory.mktemp("kill_reference")
    config = stage_b_config(root / "c.yaml", mllm_data, tiny_llm_dir, root / "run")
    assert train.main(["--config", str(config), "--stage", "instruct"]) == 0
    return root / "run"


# ---------------------------------------------------------------------------------------- checks
def is_temporary(path: Path) -> bool:
    """Names the atomic writers use for files that are not complete yet."""
    return path.name.endswith(".tmp") or (path.name.startswith(".") and ".tmp-" in path.name)


def temporaries(run_dir: Path) -> list[Path]:
    return [p for p in run_dir.rglob("*") if is_temporary(p)] if run_dir.exists() else []


def check_complete(path: Path) -> None:
    """A file a reader may open is whole: it parses (JSON, YAML, safetensors, PNG end marker)."""
    if path.suffix == ".safetensors":
        load_file(str(path))
    elif path.suffix == ".json":
        json.loads(path.read_text())
    elif path.suffix == ".jsonl":
        for number, line in enumerate(path.read_text().splitlines(), start=1):
            assert line.endswith("}"), f"{path}:{number}: half a line"
            json.loads(line)
    elif path.suffix == ".yaml":
        assert isinstance(yaml.safe_load(path.read_text()), dict), path
    elif path.suffix == ".png":
        assert path.read_bytes().endswith(PNG_END), f"{path}: truncated PNG"


def assert_consistent(run_dir: Path) -> str:
    """Everything outside temporary names is complete; returns the latest checkpoint's name or ''."""
    if not run_dir.exists():
        return ""
    for path in run_dir.rglob("*"):
        if path.is_file() and not any(is_temporary(p) for p in (path, *path.parents)):
            check_complete(path)
    pointer = run_dir / "checkpoints" / LATEST
    if pointer.is_file():  # a kill between the two renames of a re-save: clean_stale moves the old one back
        name = json.loads(pointer.read_text())["name"]
        old = run_dir / "checkpoints" / f"{TMP_PREFIX}old-{name}"
        if not (run_dir / "checkpoints" / name).exists() and old.is_dir():
            load_checkpoint(old)
            return name
    ckpt = latest_checkpoint(run_dir)  # raises when latest.json names an incomplete checkpoint
    if ckpt is not None:
        tensors, state = load_checkpoint(ckpt)
        assert ckpt.name == f"step_{state['step']:08d}" and tensors
    if (run_dir / "metrics.json").is_file():  # the finished marker: everything else is there
        for name in ("report.md", "loss.png", "mllm/mllm_config.json", "mllm/instruction.json"):
            assert (run_dir / name).is_file(), name
    return ckpt.name if ckpt else ""


def comparable(record: dict) -> dict:
    return {k: v for k, v in record.items() if k not in VOLATILE}


def assert_same_run(run_dir: Path, ref_dir: Path) -> None:
    got = [comparable(json.loads(x)) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    want = [comparable(json.loads(x)) for x in (ref_dir / "metrics.jsonl").read_text().splitlines()]
    assert got == want
    metrics, ref = (json.loads((d / "metrics.json").read_text()) for d in (run_dir, ref_dir))
    assert comparable(metrics) == comparable(ref) and metrics["steps"] == MAX_STEPS
    for name in ("projector.safetensors", "adapter/adapter_model.safetensors"):
        a, b = load_file(str(run_dir / "mllm" / name)), load_file(str(ref_dir / "mllm" / name))
        assert a.keys() == b.keys() and all(a[k].equal(b[k]) for k in a), name
    assert not temporaries(run_dir)


def test_checker_flags_half_written_files(tmp_path: Path):
    """The consistency check can fail: a truncated checkpoint file, log line or PNG is caught."""
    run_dir = tmp_path / "run"
    (run_dir / "checkpoints" / "step_00000001").mkdir(parents=True)
    (run_dir / "checkpoints" / "step_00000001" / "tensors.safetensors").write_bytes(b"\x08\x00\x00")
    (run_dir / "checkpoints" / "step_00000001" / "state.json").write_text('{"step": 1}')
    with pytest.raises(Exception, match="(?i)header|safetensor|deserializ"):
        assert_consistent(run_dir)
    (run_dir / "checkpoints" / "step_00000001").rename(run_dir / "checkpoints" / f"{TMP_PREFIX}step_00000001")
    assert assert_consistent(run_dir) == ""  # under a temporary name it is a leftover, not a checkpoint
    (run_dir / "checkpoints" / LATEST).write_text('{"name": "step_00000001"}')
    with pytest.raises(FileNotFoundError, match="incomplete or missing"):
        assert_consistent(run_dir)
    (run_dir / "checkpoints" / LATEST).unlink()
    (run_dir / "metrics.jsonl").write_text('{"step": 1, "loss": 2.0}\n{"step": 2, "lo')
    with pytest.raises(AssertionError, match="half a line"):
        assert_consistent(run_dir)
    (run_dir / "metrics.jsonl").unlink()
    (run_dir / "loss.png").write_bytes(b"\x89PNG\r\n\x1a\n partial")
    with pytest.raises(AssertionError, match="truncated PNG"):
        assert_consistent(run_dir)


# ---------------------------------------------------------------------------------------- killing
def launch(config: Path, log: Path, *extra: str) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": str(THREADS)}
    cmd = [
        sys.executable,
        str(SCRIPTS / "train_mllm.py"),
        "--config",
        str(config),
        "--stage",
        "instruct",
        *extra,
    ]
    with open(log, "a") as out:
        return subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env)


def _forked_main(argv: list[str]) -> None:
    torch.set_num_threads(THREADS)
    sys.exit(train.main(argv))


def fork_main(config: Path, *extra: str) -> multiprocessing.Process:
    """``train.main`` in a forked child (modules already imported), killable like the CLI."""
    argv = ["--config", str(config), "--stage", "instruct", *extra]
    proc = multiprocessing.get_context("fork").Process(target=_forked_main, args=(argv,))
    proc.start()
    return proc


def logged_steps(run_dir: Path) -> int:
    path = run_dir / "metrics.jsonl"
    if not path.is_file():
        return 0
    return sum('"loss"' in line for line in path.read_text().splitlines())


def step_seconds(run_dir: Path) -> float:
    """A step's compute time as this run logs it (the kill window after a step: its checkpoint, the
    next step, an evaluation or the final writes)."""
    path = run_dir / "metrics.jsonl"
    lines = path.read_text().splitlines() if path.is_file() else []
    seconds = sorted(json.loads(x)["seconds"] for x in lines if '"seconds"' in x)
    return seconds[len(seconds) // 2] if seconds else 0.2


def kill_at_random(
    proc: subprocess.Popen, launched: float, run_dir: Path, rng: random.Random, log: Path
) -> tuple[int, int]:
    """SIGKILL ``proc`` (launched at time ``launched``) at a random moment after its interpreter start-up:
    ``target`` = 0 kills it 0-2 s after it wrote config.yaml (while it checks the cache, restores the
    checkpoint, builds the model); ``target`` = k > 0 kills it up to 1.5 steps after it logged its k-th
    step (in a step, a checkpoint write, an evaluation or the final writes). Returns (target, exit code)."""
    ckpt = latest_checkpoint(run_dir) if run_dir.exists() else None
    start = load_checkpoint(ckpt)[1]["step"] if ckpt else 0  # a resumed run goes on from there
    target = rng.randint(0, MAX_STEPS - start)
    fraction = rng.uniform(0.0, 1.5)
    config = run_dir / "config.yaml"

    def waiting() -> bool:
        set_up = config.is_file() and config.stat().st_mtime >= launched  # this process wrote it
        return not set_up or (target > 0 and logged_steps(run_dir) < start + target)

    deadline = time.time() + 300
    while waiting() and proc.poll() is None:
        assert time.time() < deadline, log.read_text()[-2000:]
        time.sleep(0.002)
    time.sleep(rng.uniform(0.0, 2.0) if target == 0 else fraction * step_seconds(run_dir))
    proc.kill()  # SIGKILL: no handler runs, nothing is flushed
    code = proc.wait(timeout=60)
    assert code in (0, -signal.SIGKILL), log.read_text()[-2000:]  # 0: it finished before the kill
    return target, code


def kill_and_resume(config: Path, run_dir: Path, seed: int, kills: int, log: Path) -> list[str]:
    """``kills`` SIGKILLs (the first during a fresh run, the others during resumes), consistency checked
    after each; returns the latest checkpoint name seen after each kill."""
    rng = random.Random(seed)
    seen = []
    for k in range(kills):
        launched = time.time()
        proc = launch(config, log, *(["--resume"] if k else []))
        kill_at_random(proc, launched, run_dir, rng, log)
        seen.append(assert_consistent(run_dir))
    return seen


def test_sigkill_at_a_random_moment_then_resume(mllm_data, tiny_llm_dir, reference, tmp_path):
    run_dir = tmp_path / "run"
    config = stage_b_config(tmp_path / "c.yaml", mllm_data, tiny_llm_dir, run_dir)
    rng = random.Random(1)
    target, fraction = rng.randint(1, MAX_STEPS), rng.uniform(0.0, 1.5)
    proc = fork_main(config)
    deadline = time.time() + 120
    while logged_steps(run_dir) < target and proc.is_alive():
        assert time.time() < deadline, "no progress"
        time.sleep(0.002)
    delay = fraction * step_seconds(run_dir)
    time.sleep(delay)
    proc.kill()  # SIGKILL
    proc.join(timeout=60)
    assert proc.exitcode in (0, -signal.SIGKILL)
    seen = assert_consistent(run_dir)
    print(f"killed {delay:.3f} s after step {target}: latest checkpoint {seen or 'none'}")
    # leftovers of writes the kill could have cut (planted, so the clean-up is always exercised)
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "checkpoints").mkdir(exist_ok=True)
    planted = [
        run_dir / "checkpoints" / f"{TMP_PREFIX}step_00000009",
        run_dir / "config.yaml.tmp",
        run_dir / ".tmp-metrics.jsonl",
        run_dir / ".tmp-loss.png",
    ]
    planted[0].mkdir()
    (planted[0] / "tensors.safetensors").write_bytes(b"half")
    for path in planted[1:]:
        path.write_text("{half")
    assert train.main(["--config", str(config), "--stage", "instruct", "--resume"]) == 0
    assert not any(p.exists() for p in planted)
    assert_same_run(run_dir, reference)


@pytest.mark.slow
@pytest.mark.parametrize("seed", [2, 9, 5])  # first kill: in set-up, after step 3, after step 4
def test_sigkill_chain_then_resume(mllm_data, tiny_llm_dir, reference, tmp_path, seed):
    """Two kills per trial (the run, then its first resume); the last resume runs as a subprocess too."""
    run_dir = tmp_path / "run"
    config = stage_b_config(tmp_path / "c.yaml", mllm_data, tiny_llm_dir, run_dir)
    log = tmp_path / "log.txt"
    seen = kill_and_resume(config, run_dir, seed=seed, kills=2, log=log)
    print(f"seed {seed}: latest checkpoint after each kill: {[s or 'none' for s in seen]}")
    assert launch(config, log, "--resume").wait(timeout=600) == 0, log.read_text()[-3000:]
    assert_same_run(run_dir, reference)


# ---------------------------------------------------------------------------------------- SIGTERM
def test_sigterm_on_an_epoch_end_step_then_resume(mllm_data, tiny_llm_dir, reference, tmp_path, monkeypatch):
    """SIGTERM during step 4 (the last of epoch 2, and of the run): the checkpoint is written before that
    epoch's evaluation, and the resumed run still logs it, on the uninterrupted trajectory."""
    run_dir = tmp_path / "run"
    config = stage_b_config(tmp_path / "c.yaml", mllm_data, tiny_llm_dir, run_dir)
    original, calls = train.batch_nll, {"n": 0}

    def nll_with_sigterm(model, batch):
        if torch.is_grad_enabled():
            calls["n"] += 1
            if calls["n"] == 4:  # one micro-batch a step: step 4, the last of epoch 2
                signal.raise_signal(signal.SIGTERM)
        return original(model, batch)

    monkeypatch.setattr(train, "batch_nll", nll_with_sigterm)
    assert train.main(["--config", str(config), "--stage", "instruct"]) == 143
    monkeypatch.setattr(train, "batch_nll", original)
    _, state = load_checkpoint(latest_checkpoint(run_dir))
    assert state["step"] == 4 and state["epoch_closed"] is False
    records = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if "val_loss" in r] == [2]  # epoch 2's evaluation is still due
    assert train.main(["--config", str(config), "--stage", "instruct", "--resume"]) == 0
    assert_same_run(run_dir, reference)


@pytest.mark.slow
def test_sigterm_to_a_subprocess_writes_a_final_checkpoint(mllm_data, tiny_llm_dir, reference, tmp_path):
    run_dir = tmp_path / "run"
    config = stage_b_config(tmp_path / "c.yaml", mllm_data, tiny_llm_dir, run_dir)
    log = tmp_path / "log.txt"
    proc = launch(config, log)
    deadline = time.time() + 300
    while logged_steps(run_dir) < 3 and proc.poll() is None:
        assert time.time() < deadline
        time.sleep(0.002)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=120) == 143, log.read_text()[-3000:]
    assert "SIGTERM: checkpoint written" in log.read_text()
    name = assert_consistent(run_dir)
    assert name and int(name.split("_")[1]) == logged_steps(run_dir) >= 3
    assert launch(config, log, "--resume").wait(timeout=600) == 0, log.read_text()[-3000:]
    assert_same_run(run_dir, reference)
