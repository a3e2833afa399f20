"""What an encoder training run (``scripts/train_encoder.py``) records: its state, the tensors of its
checkpoints, the statistics of an epoch, and the lines and sections it writes.

The run folder is the lifecycle's (``sefar_encoder.runtime.lifecycle``: ``config.yaml``, ``metrics.jsonl``
one line per finished epoch, ``checkpoints/``, ``metrics.json`` last), plus::

    init_report.json     what the image-ViT initialisation loaded (record_init)
    steps.jsonl          one line per optimizer step (log_every_step), cut back to the checkpoint on resume
    checkpoints/         epoch_NNNN/ every epoch, step_NNNNNNNN/ on SIGTERM
    encoder/             the best model on val (save_pretrained)
    report.md, curves.png, confusion.png

A checkpoint holds the student, the EMA teacher, the LTG second stream, the optimizer, every process' RNG
state and an :class:`EncoderState` (epoch, stream position, best-on-val, history, running sums of a
partial epoch, bad clips seen): with the seeded data order (``sefar_encoder.dataset``) a resumed run
repeats exactly the steps an uninterrupted one takes.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from accelerate import Accelerator
from accelerate.utils import gather_object

from sefar_encoder.dataset import VideoClipDataset
from sefar_encoder.ema import EMATeacher
from sefar_encoder.evaluation import Predictions
from sefar_encoder.loader import SemiSupervisedLoader
from sefar_encoder.methods import StepResult
from sefar_encoder.model.encoder import SeFAREncoder
from sefar_encoder.model.image_vit import LoadReport
from sefar_encoder.runtime.checkpoint import flatten_optimizer, prefixed, unflatten_optimizer, unprefixed
from sefar_encoder.runtime.lifecycle import RunState


@dataclass
class EncoderState(RunState):
    """Everything besides tensors that a resumed encoder run needs (saved as JSON)."""

    epoch: int = 0  # epochs completed
    micro_step: int = 0  # global micro-step position of the data stream
    opt_step: int = 0  # optimizer steps taken
    best: dict[str, Any] = field(default_factory=lambda: {"val_mean_class": -1.0})
    history: list[dict[str, Any]] = field(default_factory=list)
    empty_steps: int = 0  # steps skipped because a batch had no decodable clip (on_bad_sample=skip)
    skipped_clips: int = 0  # undecodable clips drawn by the training stream so far (counted per draw)
    bad_samples: dict[str, str] = field(default_factory=dict)  # training stream: path -> reason
    decoder_fallbacks: dict[str, str] = field(default_factory=dict)  # path -> decord's reason
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


# ----------------------------------------------------------------------------------------- checkpoint
def checkpoint_tensors(
    student: torch.nn.Module,
    teacher: EMATeacher | None,
    second: torch.nn.Module | None,
    optimizer: torch.optim.Optimizer,
) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """The models' and the optimizer's tensors, and the JSON rest (optimizer layout, EMA decay and step)."""
    tensors = prefixed(unwrap(student).state_dict(), "student")
    payload: dict[str, Any] = {}
    if teacher is not None:
        t_state = teacher.state_dict()
        tensors.update(prefixed(t_state["module"], "teacher"))
        payload["ema"] = {"decay": t_state["decay"], "step": t_state["step"]}
    if second is not None:
        tensors.update(prefixed(unwrap(second).state_dict(), "second"))
    opt_tensors, payload["optim"] = flatten_optimizer(optimizer.state_dict(), "optim")
    tensors.update(opt_tensors)
    return tensors, payload


def load_checkpoint_tensors(
    tensors: dict[str, torch.Tensor],
    payload: dict[str, Any],
    student: torch.nn.Module,
    second: torch.nn.Module | None,
    optimizer: torch.optim.Optimizer,
) -> EMATeacher | None:
    """Load :func:`checkpoint_tensors` back into the models and the optimizer; returns the teacher."""
    unwrap(student).load_state_dict(unprefixed(tensors, "student"), strict=True)
    teacher = None
    if "ema" in payload:
        teacher = EMATeacher(unwrap(student), payload["ema"]["decay"])
        teacher.load_state_dict({"module": unprefixed(tensors, "teacher"), **payload["ema"]})
    if second is not None:
        unwrap(second).load_state_dict(unprefixed(tensors, "second"), strict=True)
    optimizer.load_state_dict(unflatten_optimizer(tensors, payload["optim"], "optim"))
    return teacher


def sync_data_problems(loader: SemiSupervisedLoader, state: EncoderState) -> None:
    """Copy the training stream's skipped / fallback clips of every process into ``state`` (collective)."""
    parts = gather_object([(loader.num_skipped, loader.skipped, loader.fallbacks)])
    state.skipped_clips = sum(p[0] for p in parts)
    for _, skipped, fallbacks in parts:
        state.bad_samples.update(skipped)
        state.decoder_fallbacks.update(fallbacks)


def kept_checkpoints(state: EncoderState, keep_epochs: int) -> set[str]:
    """The epoch checkpoints to keep on disk: the last ``keep_epochs`` (SIGTERM step checkpoints go)."""
    return {f"epoch_{e:04d}" for e in range(state.epoch - keep_epochs + 1, state.epoch + 1)}


# ----------------------------------------------------------------------------------------- epoch
# StepResult.unlabeled_counts summed over an epoch's steps (kept in EncoderState.epoch_sums, so a resumed
# epoch continues them): all unlabeled clips, those with a non-zero weight, those correctly pseudo-labeled
UNLABELED_COUNTS = ("clips_unlabeled", "clips_used", "clips_pseudo_correct")


def entropy_of_histogram(counts: list[int]) -> float:
    """Normalised entropy (0..1) of the pseudo-label histogram: near 0 = collapse onto few classes."""
    c = np.asarray(counts, dtype=np.float64)
    if c.sum() == 0:
        return float("nan")
    p = c[c > 0] / c.sum()
    # 0.0 - x, not -x: a full collapse (one class, p = 1) sums to 0.0, and -0.0 would print as "-0.000".
    return float((0.0 - (p * np.log(p)).sum()) / math.log(len(c)))


def add_step(state: EncoderState, result: StepResult, acc: Accelerator, num_classes: int) -> float:
    """Add a finite step to the epoch's running sums (over every process); returns its mean loss."""
    sums = state.epoch_sums
    if not state.pseudo_counts:
        state.pseudo_counts = [0] * num_classes
    loss = acc.reduce(result.loss.detach(), "mean").item()
    sums["loss"] = sums.get("loss", 0.0) + loss
    for k, v in result.logs.items():
        sums[k] = sums.get(k, 0.0) + v
    state.epoch_count += 1
    if result.unlabeled_counts is not None:  # every process's clips, summed: exact epoch shares
        counts = acc.reduce(result.unlabeled_counts.to(acc.device), "sum").cpu().tolist()
        for key, n in zip(UNLABELED_COUNTS, counts):
            sums[key] = sums.get(key, 0.0) + n
    if result.pseudo_labels is not None:  # the histogram over every process's clips
        counts = torch.bincount(result.pseudo_labels.flatten().cpu(), minlength=num_classes)
        counts = acc.reduce(counts.to(acc.device), "sum").cpu().tolist()
        state.pseudo_counts = [a + b for a, b in zip(state.pseudo_counts, counts)]
    return loss


def close_epoch(state: EncoderState, ramp: float, lr: float) -> dict[str, float]:
    """The finished epoch's training logs from the running sums, which start again empty."""
    sums = state.epoch_sums
    logs = {k: v / max(1, state.epoch_count) for k, v in sums.items() if k not in UNLABELED_COUNTS}
    unlabeled, used, correct = (sums.get(k, 0.0) for k in UNLABELED_COUNTS)
    if unlabeled:  # shares of the epoch's unlabeled clips, not means of per-step shares
        logs["unlabeled_used"] = used / unlabeled
        logs["pseudo_acc"] = correct / unlabeled
    logs["ramp"] = ramp
    logs["lr"] = lr
    if sum(state.pseudo_counts):
        logs["pseudo_label_entropy"] = entropy_of_histogram(state.pseudo_counts)
    if state.epoch_nonfinite:
        logs["nonfinite_steps"] = state.epoch_nonfinite
    state.epoch_sums, state.epoch_count, state.epoch_nonfinite, state.pseudo_counts = {}, 0, 0, []
    return logs


# ----------------------------------------------------------------------------------------- reports
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


def ssl_summary(history: list[dict[str, Any]]) -> dict[str, float | None]:
    """``metrics.json``'s pseudo-label figures: the last SSL epoch's entropy and its shares of the
    unlabeled clips that were weighted (used) and correctly pseudo-labeled."""
    entropies = [r["train"]["pseudo_label_entropy"] for r in history if "pseudo_label_entropy" in r["train"]]
    ssl_epochs = [r["train"] for r in history if "unlabeled_used" in r["train"]]
    return {
        "pseudo_label_entropy": entropies[-1] if entropies else None,
        "unlabeled_used": ssl_epochs[-1]["unlabeled_used"] if ssl_epochs else None,
        "pseudo_acc": ssl_epochs[-1]["pseudo_acc"] if ssl_epochs else None,
    }


def data_problems(
    datasets: dict[str, VideoClipDataset], policy: str, state: EncoderState, preds: Sequence[Predictions]
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


def record_init(run_dir: Path, model: SeFAREncoder, report: LoadReport | None) -> None:
    """Write ``init_report.json`` (what the image-ViT initialisation loaded; none without image weights)
    and print its summary and the input normalisation that goes with the weights (main process only)."""
    if report is not None:
        (Path(run_dir) / "init_report.json").write_text(json.dumps(dataclasses.asdict(report), indent=1))
        print(report.summary())
    pre = model.preprocessing
    print(f"input normalisation: mean {pre.mean}, std {pre.std} from {pre.normalisation}")
