"""What an encoder training run keeps on disk to survive a crash, and how its run directory is repaired.

    <out_dir>/
      config.yaml            resolved config (written at every start)
      metrics.jsonl          one line per finished epoch, rewritten whole from the checkpointed history
      steps.jsonl            one line per optimizer step (log_every_step), cut back to the checkpoint
      checkpoints/           epoch_NNNN/ and step_NNNNNNNN/ (SIGTERM), latest.json (sefar_encoder.checkpoint)
      encoder/               best model on val (save_pretrained)
      metrics.json           LAST file of a finished run: its presence means "done"

A checkpoint holds the student, the EMA teacher, the LTG second stream, the optimizer, torch's RNG state and
a :class:`RunState` (epoch, stream position, best-on-val, history, running sums of a partial epoch, bad
clips seen): with the seeded data order (``sefar_encoder.dataset``) a resumed run repeats exactly the steps
an uninterrupted one takes. Everything is written atomically (temp + fsync + rename); after a kill at any
moment :func:`clean_run_dir` removes the temporaries and restores an export caught between its renames.
:func:`epoch_line` and :func:`data_problems` turn the recorded state into the log line of an epoch and
the bad-clip section of ``metrics.json``.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from sefar_encoder.checkpoint import (
    clean_stale,
    flatten_optimizer,
    load_checkpoint,
    prefixed,
    prune_checkpoints,
    remove_temporaries,
    save_checkpoint,
    unflatten_optimizer,
    unprefixed,
    write_text_atomic,
)
from sefar_encoder.dataset import VideoClipDataset
from sefar_encoder.ema import EMATeacher
from sefar_encoder.evaluation import Predictions
from sefar_encoder.model.encoder import SeFAREncoder


@dataclass
class RunState:
    """Everything besides tensors that a resumed run needs (saved as JSON)."""

    epoch: int = 0  # epochs completed
    micro_step: int = 0  # global micro-step position of the data stream
    opt_step: int = 0  # optimizer steps taken
    best: dict[str, Any] = field(default_factory=lambda: {"val_mean_class": -1.0})
    history: list[dict[str, Any]] = field(default_factory=list)
    nonfinite_steps: int = 0
    nonfinite_in_row: int = 0  # across epoch boundaries and resumes
    empty_steps: int = 0  # steps skipped because a batch had no decodable clip (on_bad_sample=skip)
    skipped_clips: int = 0  # undecodable clips drawn by the training stream so far (counted per draw)
    bad_samples: dict[str, str] = field(default_factory=dict)  # training stream: path -> reason
    decoder_fallbacks: dict[str, str] = field(default_factory=dict)  # path -> decord's reason
    seconds: float = 0.0
    # running sums of the current epoch's training logs: a mid-epoch checkpoint keeps them, so a resumed
    # epoch reports the same averages as an uninterrupted one
    epoch_sums: dict[str, float] = field(default_factory=dict)
    epoch_count: int = 0
    epoch_nonfinite: int = 0
    pseudo_counts: list[int] = field(default_factory=list)  # pseudo-label histogram of the epoch
    method_state: dict[str, Any] = field(default_factory=dict)  # the SSL method's running state (FreeMatch)


def unwrap(model: torch.nn.Module) -> SeFAREncoder:
    """The encoder inside a DDP wrapper (or the model itself)."""
    return model.module if hasattr(model, "module") else model


def write_checkpoint(
    run_dir: Path,
    name: str,
    state: RunState,
    student: torch.nn.Module,
    teacher: EMATeacher | None,
    second: torch.nn.Module | None,
    optimizer: torch.optim.Optimizer,
    keep_epochs: int,
) -> None:
    """Write checkpoint ``name`` atomically and keep only the last ``keep_epochs`` epoch checkpoints."""
    tensors = prefixed(unwrap(student).state_dict(), "student")
    extra: dict[str, Any] = {}
    if teacher is not None:
        t_state = teacher.state_dict()
        tensors.update(prefixed(t_state["module"], "teacher"))
        extra["ema"] = {"decay": t_state["decay"], "step": t_state["step"]}
    if second is not None:
        tensors.update(prefixed(unwrap(second).state_dict(), "second"))
    opt_tensors, opt_meta = flatten_optimizer(optimizer.state_dict(), "optim")
    tensors.update(opt_tensors)
    tensors["rng.torch"] = torch.get_rng_state()
    if torch.cuda.is_available():  # dropout and drop path draw from the device's generator on a GPU
        tensors["rng.cuda"] = torch.cuda.get_rng_state()
    save_checkpoint(run_dir, name, tensors, {**dataclasses.asdict(state), "optim": opt_meta, **extra})
    keep = {f"epoch_{e:04d}" for e in range(state.epoch - keep_epochs + 1, state.epoch + 1)}
    prune_checkpoints(run_dir, keep)


def read_checkpoint(
    path: Path, student: torch.nn.Module, second: torch.nn.Module | None, optimizer: torch.optim.Optimizer
) -> tuple[RunState, EMATeacher | None]:
    """Load a checkpoint into the models, optimizer and torch's RNG; returns the state and the teacher."""
    tensors, payload = load_checkpoint(path)
    unwrap(student).load_state_dict(unprefixed(tensors, "student"), strict=True)
    teacher = None
    if "ema" in payload:
        teacher = EMATeacher(unwrap(student), payload["ema"]["decay"])
        teacher.load_state_dict({"module": unprefixed(tensors, "teacher"), **payload["ema"]})
    if second is not None:
        unwrap(second).load_state_dict(unprefixed(tensors, "second"), strict=True)
    optimizer.load_state_dict(unflatten_optimizer(tensors, payload["optim"], "optim"))
    torch.set_rng_state(tensors["rng.torch"])
    if "rng.cuda" in tensors and torch.cuda.is_available():
        torch.cuda.set_rng_state(tensors["rng.cuda"])
    fields = {f.name for f in dataclasses.fields(RunState)}
    return RunState(**{k: v for k, v in payload.items() if k in fields}), teacher


def clean_run_dir(run_dir: Path) -> list[Path]:
    """Repair a run folder after a kill; returns what was removed.

    Removes the temporaries of interrupted atomic writes (``checkpoints/.tmp-*``, ``.tmp-metrics.jsonl``,
    ``config.yaml.tmp``, ``.encoder.tmp-*/``). ``save_pretrained`` replaces ``encoder/`` by renaming it to
    ``.encoder.old-*/`` and then the new folder into place: a kill between the two renames leaves no
    ``encoder/``, so the complete old export is renamed back instead of deleted.
    """
    removed = clean_stale(run_dir)
    if not run_dir.is_dir():
        return removed
    old_exports = sorted(p for p in run_dir.iterdir() if p.is_dir() and p.name.startswith(".encoder.old-"))
    if old_exports and not (run_dir / "encoder").exists():
        old_exports.pop(0).rename(run_dir / "encoder")  # the one complete folder of its kind
    return removed + remove_temporaries(run_dir)


def write_history(run_dir: Path, state: RunState) -> None:
    """``metrics.jsonl`` from the run's history (rewritten whole: a fresh run into an old folder or a
    resume after a crash never leaves stale or doubled lines); ``steps.jsonl`` cut to the steps taken
    (a kill in the middle of an append leaves a partial last line, which is dropped too)."""
    write_text_atomic(run_dir / "metrics.jsonl", "".join(json.dumps(r) + "\n" for r in state.history))
    steps = run_dir / "steps.jsonl"
    if steps.is_file():
        kept = []
        for line in steps.read_text().splitlines():
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue
            if record["step"] <= state.opt_step:
                kept.append(line)
        write_text_atomic(steps, "".join(x + "\n" for x in kept))


def epoch_line(record: dict[str, Any]) -> str:
    """One log line per epoch: loss, val mean class accuracy, pseudo-label entropy (collapse monitor)."""
    train = record["train"]
    parts = [f"epoch {record['epoch']}"]
    if "loss" in train:
        parts.append(f"loss {train['loss']:.4f}")
    for who, rep in record.get("val", {}).items():
        parts.append(f"val {who} mean class {100 * rep['mean_class']:.1f} %")
    if "pseudo_label_entropy" in train:
        parts.append(f"pseudo-label entropy {train['pseudo_label_entropy']:.3f}")
    if train.get("nonfinite_steps"):
        parts.append(f"{train['nonfinite_steps']} non-finite steps skipped")
    return ", ".join(parts)


def data_problems(
    datasets: dict[str, VideoClipDataset], policy: str, state: RunState, preds: Sequence[Predictions]
) -> dict[str, Any]:
    """Bad clips (found by validation, drawn by the training stream, skipped in val/test) and decoder
    fallbacks, by path, for metrics.json."""
    split_of: dict[str, str] = {}
    for name, ds in datasets.items():  # the first list naming a clip (train, unlabel, val, test)
        for e in ds.entries:
            split_of.setdefault(str(e.path), name)
    bad = dict(state.bad_samples)
    fallbacks = dict(state.decoder_fallbacks)
    for ds in datasets.values():
        bad.update({str(ds.entries[i].path): reason for i, reason in ds.known_bad.items()})
        fallbacks.update(ds.fallbacks)
    for pred in preds:
        bad.update(pred.skipped)
        fallbacks.update(pred.fallbacks)

    def records(by_path: dict[str, str]) -> list[dict[str, str]]:
        return [{"path": p, "split": split_of.get(p, "?"), "reason": r} for p, r in sorted(by_path.items())]

    return {
        "bad_samples": {"policy": policy, "count": len(bad), "clips": records(bad)},
        "decoder_fallbacks": {"count": len(fallbacks), "clips": records(fallbacks)},
    }
