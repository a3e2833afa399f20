"""Train the SeFAR encoder — or a baseline — from a few labeled and many unlabeled clips.

    python scripts/train_encoder.py --config configs/encoder/synthgym_tiny.yaml [key=value ...]
    python scripts/train_encoder.py --config ... --resume        # continue from the run's last checkpoint
    accelerate launch --config_file configs/accelerate/ddp.yaml --num_processes 8 scripts/train_encoder.py ...
    ACCELERATE_USE_CPU=1 accelerate launch --multi_gpu --num_processes 2 scripts/train_encoder.py ...  # DDP, CPU
    (accelerate 1.15's ``--cpu --num_processes 2`` starts ONE process unless MPI is configured)

Methods (``method.name``): supervised, fixmatch, svformer, ltg, sefar (+ ``method.dual_level``,
``method.mod_perturb``, ``method.ada_reg`` ablation switches); see ``sefar_encoder/methods.py``.

The run directory (``out_dir``) receives: ``config.yaml`` (resolved), ``init_report.json`` (what the
image-ViT initialisation loaded), ``metrics.jsonl`` (one line per epoch; ``steps.jsonl`` one line per
optimizer step with ``log_every_step=true``), ``checkpoints/`` (atomic,
safetensors + JSON, every epoch and on SIGTERM), ``encoder/`` (the best model on val, ``save_pretrained``),
and at the end ``metrics.json``, ``report.md``, ``curves.png`` and ``confusion.png``. Test is evaluated
once, with the model selected on val.

Exit codes: 0 done; 1 bad input or configuration (message names the file / key); 3 stopped after too
many non-finite losses in a row; 143 stopped by SIGTERM after writing a checkpoint (resume with --resume).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import platform
import shutil
import signal
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from accelerate import Accelerator, PartialState
from accelerate.utils import gather_object
from torch.utils.data import Subset
from tqdm import tqdm

from gym_qa.hierarchy import Hierarchy, HierarchyError
from gym_qa.lists import ListFileError, read_list
from sefar_encoder.checkpoint import (
    clean_stale,
    flatten_optimizer,
    latest_checkpoint,
    load_checkpoint,
    prefixed,
    prune_checkpoints,
    save_checkpoint,
    unflatten_optimizer,
    unprefixed,
    write_text_atomic,
)
from sefar_encoder.config import ConfigError, config_help, load_config, save_config
from sefar_encoder.dataset import (
    BadClipsError,
    DataConfig,
    build_datasets,
    build_semi_loader,
    eval_loader,
    split_paths,
)
from sefar_encoder.decoding import DecodeError
from sefar_encoder.ema import EMATeacher, decay_from_horizon
from sefar_encoder.losses import sine_ramp
from sefar_encoder.methods import (
    MethodConfig,
    ResolvedMethod,
    make_order_blind,
    method_views,
    resolve_method,
    ssl_step,
    supervised_step,
    temporal_gradient,
)
from sefar_encoder.metrics import classification_report, confusion_matrix
from sefar_encoder.model.encoder import ModelConfig, SeFAREncoder
from sefar_encoder.model.image_vit import load_image_vit
from sefar_encoder.model.token_mix import TubeMix
from sefar_encoder.report import most_confused_pairs, plot_confusion, plot_curves, write_report


# ----------------------------------------------------------------------------------------- config
@dataclass
class OptimConfig:
    name: Literal["sgd", "adamw"] = field(default="sgd", metadata={"help": "sgd (paper) or adamw (+cosine)"})
    lr: float = field(default=5e-3, metadata={"help": "peak learning rate"})
    momentum: float = field(default=0.9, metadata={"help": "SGD momentum"})
    nesterov: bool = field(default=True, metadata={"help": "SGD Nesterov momentum"})
    weight_decay: float = field(default=1e-3, metadata={"help": "not applied to norms, biases, embeddings"})
    milestones: tuple[float, ...] = field(
        default=(25 / 30, 28 / 30), metadata={"help": "sgd: lr x0.1 at these fractions of training"}
    )
    warmup_fraction: float = field(default=0.0, metadata={"help": "adamw: linear warm-up fraction"})
    grad_clip: float = field(default=0.0, metadata={"help": "max gradient norm; 0 = no clipping"})


@dataclass
class EvalConfig:
    batch_size: int = field(default=32, metadata={"help": "clips per evaluation batch"})
    every: int = field(default=1, metadata={"help": "validate every N epochs (and after the last)"})
    teacher: bool = field(default=True, metadata={"help": "also evaluate the EMA teacher; best of both kept"})


@dataclass
class TrainConfig:
    out_dir: str = field(default="runs/encoder", metadata={"help": "run directory"})
    seed: int = field(default=0, metadata={"help": "model initialisation and step randomness"})
    epochs: int = field(default=30, metadata={"help": "total epochs E (same for every method)"})
    steps_per_epoch: int = field(
        default=0, metadata={"help": "optimizer steps per epoch; 0 = one pass over the unlabeled pool"}
    )
    grad_accum: int = field(default=1, metadata={"help": "micro-batches per optimizer step"})
    num_frames: int = field(default=8, metadata={"help": "frames per clip (all views together)"})
    init_checkpoint: str | None = field(
        default=None, metadata={"help": "image ViT weights (local .safetensors/.pth or timm/hub id)"}
    )
    mixed_precision: Literal["no", "bf16", "fp16"] = field(
        default="no", metadata={"help": "mixed precision on CUDA (CPU runs in fp32)"}
    )
    deterministic: bool = field(default=False, metadata={"help": "torch deterministic algorithms"})
    max_nonfinite_steps: int = field(
        default=5, metadata={"help": "stop after this many non-finite losses in a row"}
    )
    keep_checkpoints: int = field(default=1, metadata={"help": "epoch checkpoints kept on disk"})
    log_every_step: bool = field(
        default=False, metadata={"help": "also write each optimizer step's loss and lr to steps.jsonl"}
    )
    progress: bool = field(default=True, metadata={"help": "progress bars"})
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    method: MethodConfig = field(default_factory=MethodConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)


# ----------------------------------------------------------------------------------------- build
def check_lists(cfg: TrainConfig, splits: Sequence[str]) -> None:
    """Fail first, naming the file, when a list file of the data set folder is missing (a data set that
    was never made, or a wrong ``data.root`` / ``data.label_rate``)."""
    paths = split_paths(cfg.data.root, cfg.data.label_rate)
    for name in splits:
        path = getattr(paths, name)
        if not path.is_file():
            raise ListFileError(
                f"{path}: list file not found (data.root={cfg.data.root!r}, data.label_rate="
                f"{cfg.data.label_rate}); the config's header says how to make the data set folder"
            )


def build_hierarchy(cfg: TrainConfig) -> Hierarchy:
    return Hierarchy.from_dir(cfg.data.root)


def optimizer_steps_per_epoch(cfg: TrainConfig, num_labeled: int, num_unlabeled: int) -> int:
    """``cfg.steps_per_epoch``, else one pass over the unlabeled pool in steps of ``ratio x B_l`` clips —
    counted from the list even for methods that never read it, so every method trains for as many steps
    (with no unlabeled clips at all, e.g. 100 % labels: one pass over the labeled clips)."""
    if cfg.steps_per_epoch:
        return cfg.steps_per_epoch
    if num_unlabeled:
        return max(1, num_unlabeled // (cfg.data.unlabeled_ratio * cfg.data.batch_size))
    return max(1, num_labeled // cfg.data.batch_size)


def build_model(cfg: TrainConfig, hierarchy: Hierarchy, views: tuple[int, ...]) -> tuple[SeFAREncoder, Any]:
    mcfg = dataclasses.replace(
        cfg.model, views=views, num_classes=hierarchy.num_classes, img_size=cfg.data.image_size
    )
    model = SeFAREncoder(mcfg, class_names=hierarchy.names, hierarchy=hierarchy.to_json())
    report = load_image_vit(model, cfg.init_checkpoint) if cfg.init_checkpoint else None
    return model, report


def build_optimizer(
    cfg: OptimConfig, model: torch.nn.Module, extra: list[torch.nn.Module]
) -> torch.optim.Optimizer:
    """Weight decay on weight matrices only (not norms, biases, embeddings: SPEC §2.3)."""
    decay, no_decay = [], []
    for module in [model, *extra]:
        skip = module.no_weight_decay()
        for name, p in module.named_parameters():
            if p.requires_grad:
                (no_decay if name in skip else decay).append(p)
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    if cfg.name == "sgd":
        return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov)
    return torch.optim.AdamW(groups, lr=cfg.lr)


def lr_factor(cfg: OptimConfig, step: int, total: int) -> float:
    """SGD: step decay x0.1 at each milestone fraction; AdamW: linear warm-up then cosine to 0."""
    if cfg.name == "sgd":
        return 0.1 ** sum(step >= m * total for m in cfg.milestones)
    warm = int(cfg.warmup_fraction * total)
    if step < warm:
        return (step + 1) / warm
    return 0.5 * (1 + math.cos(math.pi * (step - warm) / max(1, total - warm)))


def set_lr(optimizer: torch.optim.Optimizer, cfg: OptimConfig, step: int, total: int) -> float:
    lr = cfg.lr * lr_factor(cfg, step, total)
    for group in optimizer.param_groups:
        group["lr"] = lr
    return lr


# ----------------------------------------------------------------------------------------- state
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
    skipped_clips: int = 0  # undecodable clips skipped so far (data.on_bad_sample=skip)
    seconds: float = 0.0
    # running sums of the current epoch's training logs: a mid-epoch checkpoint keeps them, so a resumed
    # epoch reports the same averages as an uninterrupted one
    epoch_sums: dict[str, float] = field(default_factory=dict)
    epoch_count: int = 0
    pseudo_counts: list[int] = field(default_factory=list)  # pseudo-label histogram of the epoch


class StopRequested(Exception):
    pass


def _unwrap(model: torch.nn.Module) -> SeFAREncoder:
    return model.module if hasattr(model, "module") else model


def _entropy_of_histogram(counts: list[int]) -> float:
    """Normalised entropy (0..1) of the pseudo-label histogram: near 0 = collapse onto few classes."""
    c = np.asarray(counts, dtype=np.float64)
    if c.sum() == 0:
        return float("nan")
    p = c[c > 0] / c.sum()
    return float(-(p * np.log(p)).sum() / math.log(len(c)))


# ----------------------------------------------------------------------------------------- train
def train_one_epoch(
    ctx: dict[str, Any], state: RunState, epoch: int, micro_per_epoch: int, stop: dict[str, bool]
) -> dict[str, float]:
    """One epoch from ``state.micro_step`` to the epoch's end; updates ``state`` as it goes."""
    cfg: TrainConfig = ctx["cfg"]
    acc: Accelerator = ctx["accelerator"]
    method: ResolvedMethod = ctx["method"]
    student, optimizer = ctx["student"], ctx["optimizer"]
    second = ctx.get("second")
    ssl_phase = method.uses_unlabeled and epoch >= cfg.method.warm_epochs
    if ssl_phase and method.ema_teacher and ctx["teacher"] is None:
        # the teacher is born from the student after the warm-up (SPEC §2.3)
        ssl_steps = (cfg.epochs - cfg.method.warm_epochs) * ctx["opt_per_epoch"]
        ctx["teacher"] = EMATeacher(_unwrap(student), decay_from_horizon(ssl_steps, cfg.method.ema_horizon))
    teacher: EMATeacher | None = ctx["teacher"]
    ramp = sine_ramp(epoch, cfg.method.warm_epochs, cfg.epochs) if ssl_phase else 0.0
    end = (epoch + 1) * micro_per_epoch
    start = state.micro_step
    loader = ctx["loader"]
    stream = loader.steps(start, end - start) if ssl_phase else loader.labeled_steps(start, end - start)
    student.train()
    if second is not None:
        second.train()
    sums = state.epoch_sums  # empty at an epoch's start; partly filled when resuming mid-epoch
    if not state.pseudo_counts:
        state.pseudo_counts = [0] * ctx["hierarchy"].num_classes
    step_losses = []
    bar = tqdm(
        total=end - start, desc=f"epoch {epoch + 1}/{cfg.epochs}", disable=not ctx["show"], leave=False
    )
    for item in stream:
        labeled, unlabeled = item if ssl_phase else (item, None)
        with acc.accumulate(student):
            if ssl_phase:
                result = ssl_step(
                    method,
                    cfg.method,
                    student,
                    teacher.module if teacher else None,
                    labeled,
                    unlabeled,
                    ramp,
                    ctx["tube_mix"],
                    _unwrap(student).grid_size,
                    second,
                )
            else:
                result = supervised_step(student, labeled)
                if second is not None:  # ltg warm-up: the temporal-gradient stream learns too
                    tg = temporal_gradient(labeled["video"], _unwrap(student).config.views)
                    result.loss = result.loss + supervised_step(second, {**labeled, "video": tg}).loss
            # one collective for both flags, so every process skips the same steps and stops at the same
            # step (SIGTERM may reach the processes at different moments; only the main one saves)
            flags = torch.tensor([float(torch.isfinite(result.loss.detach())), float(stop["requested"])])
            flags = acc.reduce(flags.to(acc.device), "sum")
            finite = flags[0].item() == acc.num_processes
            stop_now = flags[1].item() > 0
            if finite:
                acc.backward(result.loss)
                if acc.sync_gradients and cfg.optim.grad_clip > 0:
                    acc.clip_grad_norm_(ctx["params"], cfg.optim.grad_clip)
                set_lr(optimizer, cfg.optim, state.opt_step, ctx["total_opt_steps"])
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
                state.nonfinite_in_row = 0
            else:
                optimizer.zero_grad(set_to_none=True)
                state.nonfinite_steps += 1
                state.nonfinite_in_row += 1
                if state.nonfinite_in_row >= cfg.max_nonfinite_steps:
                    raise FloatingPointError(
                        f"{state.nonfinite_in_row} non-finite losses in a row at epoch {epoch + 1}, "
                        f"micro-step {state.micro_step}; lower optim.lr or check the data"
                    )
        state.micro_step += 1
        bar.update(1)
        if acc.sync_gradients:
            state.opt_step += 1
            if teacher is not None and finite:
                teacher.update(_unwrap(student), state.opt_step)
        if finite:
            loss = acc.reduce(result.loss.detach(), "mean").item()
            sums["loss"] = sums.get("loss", 0.0) + loss
            for k, v in result.logs.items():
                sums[k] = sums.get(k, 0.0) + v
            state.epoch_count += 1
            step_losses.append(loss)
            if result.pseudo_labels is not None:
                for label in result.pseudo_labels.tolist():
                    state.pseudo_counts[label] += 1
            bar.set_postfix(loss=f"{loss:.3f}")
        if acc.sync_gradients and cfg.log_every_step and acc.is_main_process:
            step_log = {"step": state.opt_step, "epoch": epoch + 1, "lr": optimizer.param_groups[0]["lr"]}
            step_log["loss"] = sum(step_losses) / len(step_losses) if step_losses else None
            with open(ctx["run_dir"] / "steps.jsonl", "a") as f:
                f.write(json.dumps(step_log) + "\n")
        if acc.sync_gradients:
            step_losses = []
        if stop_now and acc.sync_gradients:
            bar.close()
            raise StopRequested
    bar.close()
    logs = {k: v / max(1, state.epoch_count) for k, v in sums.items()}
    logs["ramp"] = ramp
    logs["lr"] = optimizer.param_groups[0]["lr"]
    if sum(state.pseudo_counts):
        logs["pseudo_label_entropy"] = _entropy_of_histogram(state.pseudo_counts)
    state.epoch_sums, state.epoch_count, state.pseudo_counts = {}, 0, []
    return logs


# ----------------------------------------------------------------------------------------- evaluate
@torch.no_grad()
def evaluate(model: SeFAREncoder, dataset, cfg: TrainConfig, acc: Accelerator, desc: str) -> dict[str, Any]:
    """Multi-view test over ``dataset`` (softmax averaged over temporal offsets x crops), sharded over
    processes; returns the predictions ``{"probs": [N, K], "labels": [N]}`` in dataset order (see
    :func:`score`).

    The global RNG is forked: evaluation must not shift the training's random stream (eval-mode
    decoding draws unused per-sample seeds from it in this process when ``num_workers`` is 0, so
    without the fork a run's randomness would depend on the worker count and on ``eval.every``).
    """
    model.eval()
    shard = Subset(dataset, list(range(acc.process_index, len(dataset), acc.num_processes)))
    rows = []
    with torch.random.fork_rng(devices=[]):
        loader = eval_loader(shard, cfg.eval.batch_size, cfg.data.num_workers)
        show = cfg.progress and acc.is_main_process
        for batch in tqdm(loader, desc=desc, disable=not show, leave=False):
            if len(batch["index"]) == 0:
                continue
            video = batch["video"].to(acc.device)  # [B, n, C, S, H, W]
            b, n = video.shape[:2]
            probs = model(video.flatten(0, 1)).logits.float().softmax(-1).view(b, n, -1).mean(1)
            rows += list(zip(batch["index"].tolist(), batch["label"].tolist(), probs.cpu().numpy()))
    rows = sorted(gather_object(rows), key=lambda r: r[0])
    if not rows:
        raise RuntimeError(f"{desc}: no clip could be evaluated")
    probs = np.stack([r[2] for r in rows])
    labels = np.array([r[1] for r in rows])
    return {"probs": probs, "labels": labels}


def score(pred: dict[str, Any], ctx: dict[str, Any]) -> dict[str, Any]:
    h: Hierarchy = ctx["hierarchy"]
    labels = range(h.num_classes)
    return classification_report(
        pred["probs"],
        pred["labels"],
        [h.set_of(c) for c in labels],
        [h.event_of(c) for c in labels],
        ctx["pairs"],
    )


# ----------------------------------------------------------------------------------------- checkpoint
def save_run_checkpoint(ctx: dict[str, Any], state: RunState, name: str) -> None:
    acc: Accelerator = ctx["accelerator"]
    if not acc.is_main_process:
        return
    tensors = prefixed(_unwrap(ctx["student"]).state_dict(), "student")
    extra: dict[str, Any] = {}
    if ctx["teacher"] is not None:
        t_state = ctx["teacher"].state_dict()
        tensors.update(prefixed(t_state["module"], "teacher"))
        extra["ema"] = {"decay": t_state["decay"], "step": t_state["step"]}
    if ctx.get("second") is not None:
        tensors.update(prefixed(_unwrap(ctx["second"]).state_dict(), "second"))
    opt_tensors, opt_meta = flatten_optimizer(ctx["optimizer"].state_dict(), "optim")
    tensors.update(opt_tensors)
    tensors["rng.torch"] = torch.get_rng_state()
    if torch.cuda.is_available():  # dropout and drop path draw from the device's generator on a GPU
        tensors["rng.cuda"] = torch.cuda.get_rng_state()
    state.skipped_clips = ctx["loader"].num_skipped
    payload = {**dataclasses.asdict(state), "optim": opt_meta, **extra}
    save_checkpoint(ctx["run_dir"], name, tensors, payload)
    keep = {f"epoch_{e:04d}" for e in range(state.epoch - ctx["cfg"].keep_checkpoints + 1, state.epoch + 1)}
    prune_checkpoints(ctx["run_dir"], keep)


def restore_run_checkpoint(ctx: dict[str, Any], path: Path) -> RunState:
    tensors, payload = load_checkpoint(path)
    _unwrap(ctx["student"]).load_state_dict(unprefixed(tensors, "student"), strict=True)
    if "ema" in payload:
        ctx["teacher"] = EMATeacher(_unwrap(ctx["student"]), payload["ema"]["decay"])
        ctx["teacher"].load_state_dict({"module": unprefixed(tensors, "teacher"), **payload["ema"]})
    if ctx.get("second") is not None:
        _unwrap(ctx["second"]).load_state_dict(unprefixed(tensors, "second"), strict=True)
    ctx["optimizer"].load_state_dict(unflatten_optimizer(tensors, payload["optim"], "optim"))
    torch.set_rng_state(tensors["rng.torch"])
    if "rng.cuda" in tensors and torch.cuda.is_available():
        torch.cuda.set_rng_state(tensors["rng.cuda"])
    fields = {f.name for f in dataclasses.fields(RunState)}
    state = RunState(**{k: v for k, v in payload.items() if k in fields})
    ctx["loader"].num_skipped = state.skipped_clips
    return state


# ----------------------------------------------------------------------------------------- main
def finish(ctx: dict[str, Any], state: RunState, datasets: dict) -> dict[str, Any]:
    """Test once with the model selected on val; write metrics.json, report.md and the plots."""
    cfg, acc, run_dir = ctx["cfg"], ctx["accelerator"], ctx["run_dir"]
    best = SeFAREncoder.from_pretrained(run_dir / "encoder").to(acc.device)
    val = score(evaluate(best, datasets["val"], cfg, acc, "val (best)"), ctx)
    test_pred = evaluate(best, datasets["test"], cfg, acc, "test")
    test = score(test_pred, ctx)
    h: Hierarchy = ctx["hierarchy"]
    cm = confusion_matrix(test_pred["probs"].argmax(1), test_pred["labels"], h.num_classes)
    metrics = {
        "method": cfg.method.name,
        "resolved_method": dataclasses.asdict(ctx["method"]),
        "label_rate": cfg.data.label_rate,
        "data_root": cfg.data.root,
        "seed": cfg.seed,
        "epochs": cfg.epochs,
        "optimizer_steps": state.opt_step,
        "minutes": state.seconds / 60,
        "machine": f"{platform.machine()} {torch.get_num_threads()} threads, torch {torch.__version__}",
        "best": state.best,
        "val": val,
        "test": test,
        "most_confused": most_confused_pairs(cm, h.names),
        "skipped_clips": ctx["loader"].num_skipped,
        "nonfinite_steps": state.nonfinite_steps,
        "history": state.history,
    }
    if acc.is_main_process:
        (run_dir / "metrics.json").write_text(json.dumps(metrics, indent=1))
        write_report(metrics, run_dir / "report.md")
        plot_curves(state.history, run_dir / "curves.png")
        plot_confusion(cm, h.names, run_dir / "confusion.png")
    return metrics


def run(cfg: TrainConfig, resume: bool = False) -> dict[str, Any]:
    """Train, validate each epoch, keep the best on val, test once. Returns the final metrics."""
    acc = Accelerator(
        gradient_accumulation_steps=cfg.grad_accum,
        mixed_precision=cfg.mixed_precision if torch.cuda.is_available() else "no",
    )
    run_dir = Path(cfg.out_dir)
    if (run_dir / "metrics.json").exists() and resume:
        return json.loads((run_dir / "metrics.json").read_text())
    if acc.is_main_process:
        run_dir.mkdir(parents=True, exist_ok=True)
        save_config(cfg, run_dir / "config.yaml")
    torch.manual_seed(cfg.seed)

    method = resolve_method(cfg.method)
    views = method_views(method, cfg.num_frames)
    splits = ("train", "unlabel", "val", "test") if method.uses_unlabeled else ("train", "val", "test")
    check_lists(cfg, splits)
    hierarchy = build_hierarchy(cfg)
    augment = dataclasses.replace(cfg.data.augment, temporal_perturb=method.perturb)
    data_cfg = dataclasses.replace(cfg.data, views=views, augment=augment)
    datasets = build_datasets(data_cfg, hierarchy.num_classes, splits)
    if method.uses_unlabeled:
        num_unlabeled = len(datasets["unlabel"])
        if num_unlabeled == 0:
            raise ConfigError(
                f"method.name={cfg.method.name} needs unlabeled clips, but the unlabeled list of "
                f"data.label_rate={cfg.data.label_rate} is empty; train method.name=supervised instead"
            )
    else:  # lock-step loader needs an unlabeled stream; supervised never reads it
        unlabel_list = split_paths(cfg.data.root, cfg.data.label_rate).unlabel
        num_unlabeled = len(read_list(unlabel_list)) if unlabel_list.is_file() else 0
        datasets["unlabel"] = datasets["train"]
    micro = cfg.data.batch_size // (cfg.grad_accum * acc.num_processes)
    if micro * cfg.grad_accum * acc.num_processes != cfg.data.batch_size:
        raise ConfigError(
            f"data.batch_size ({cfg.data.batch_size}) must be divisible by grad_accum x processes "
            f"({cfg.grad_accum} x {acc.num_processes})"
        )
    loader = build_semi_loader(
        dataclasses.replace(data_cfg, batch_size=cfg.data.batch_size // cfg.grad_accum),
        datasets,
        device=acc.device,
        shard=(acc.process_index, acc.num_processes),
    )
    opt_per_epoch = optimizer_steps_per_epoch(cfg, len(datasets["train"]), num_unlabeled)

    student, init_report = build_model(cfg, hierarchy, views)
    if method.order_blind:
        make_order_blind(student)
    if init_report is not None and acc.is_main_process:
        (run_dir / "init_report.json").write_text(json.dumps(dataclasses.asdict(init_report), indent=1))
        print(init_report.summary())
    second = None
    if method.second_stream:
        second, _ = build_model(cfg, hierarchy, views)
    optimizer = build_optimizer(cfg.optim, student, [second] if second is not None else [])
    if second is not None:
        student, second, optimizer = acc.prepare(student, second, optimizer)
    else:
        student, optimizer = acc.prepare(student, optimizer)
    params = [p for g in optimizer.param_groups for p in g["params"]]

    meta = run_meta(cfg.data.root)
    ctx: dict[str, Any] = {
        "cfg": cfg,
        "accelerator": acc,
        "method": method,
        "hierarchy": hierarchy,
        "pairs": meta.get("pairs", {}),
        "student": student,
        "second": second,
        "teacher": None,
        "optimizer": optimizer,
        "params": params,
        "loader": loader,
        "tube_mix": TubeMix(cfg.method.mix_alpha, cfg.method.mix_alpha),
        "opt_per_epoch": opt_per_epoch,
        "total_opt_steps": opt_per_epoch * cfg.epochs,
        "run_dir": run_dir,
        "show": cfg.progress and acc.is_main_process,
    }

    state = RunState()
    if resume:
        if acc.is_main_process:
            for p in clean_stale(run_dir) + clean_run_dir(run_dir):
                print(f"removed stale temporary file {p}")
        acc.wait_for_everyone()
        ckpt = latest_checkpoint(run_dir)
        if ckpt is not None:
            state = restore_run_checkpoint(ctx, ckpt)
            print(f"resumed from {ckpt} (epoch {state.epoch}, optimizer step {state.opt_step})")
    if acc.is_main_process:  # what a crash after the last checkpoint wrote is written again
        write_history(run_dir, state)

    # Process-wide settings last only as long as this run (run() may be called in-process, e.g. by tests).
    stop = {"requested": False}
    previous_handler = None
    if threading.current_thread() is threading.main_thread():  # signals can only be set from there
        previous_handler = signal.signal(signal.SIGTERM, lambda *_: stop.update(requested=True))
    was_deterministic = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(cfg.deterministic or was_deterministic)
    try:
        return train_and_finish(ctx, state, datasets, stop)
    finally:
        torch.use_deterministic_algorithms(was_deterministic)
        if previous_handler is not None:
            signal.signal(signal.SIGTERM, previous_handler)


def train_and_finish(
    ctx: dict[str, Any], state: RunState, datasets: dict, stop: dict[str, bool]
) -> dict[str, Any]:
    """The epoch loop: train, validate, keep the best on val, checkpoint; then :func:`finish`."""
    cfg, acc, run_dir = ctx["cfg"], ctx["accelerator"], ctx["run_dir"]
    student, loader = ctx["student"], ctx["loader"]
    micro_per_epoch = ctx["opt_per_epoch"] * cfg.grad_accum
    started = time.time() - state.seconds
    while state.epoch < cfg.epochs:
        epoch = state.epoch
        t0 = time.time()
        try:
            train_logs = train_one_epoch(ctx, state, epoch, micro_per_epoch, stop)
        except StopRequested:
            state.seconds = time.time() - started
            save_run_checkpoint(ctx, state, f"step_{state.micro_step:08d}")
            print(f"SIGTERM: checkpoint written at micro-step {state.micro_step}; resume with --resume")
            raise
        state.epoch += 1
        record: dict[str, Any] = {"epoch": state.epoch, "train": train_logs, "seconds": time.time() - t0}
        if state.epoch % cfg.eval.every == 0 or state.epoch == cfg.epochs:
            record["val"] = {}
            candidates = {"student": _unwrap(student)}
            if ctx["teacher"] is not None and cfg.eval.teacher:
                candidates["teacher"] = ctx["teacher"].module
            for who, model in candidates.items():
                rep = score(evaluate(model, datasets["val"], cfg, acc, f"val {who}"), ctx)
                record["val"][who] = {k: rep[k] for k in ("top1", "top5", "mean_class")}
                if rep["mean_class"] > state.best["val_mean_class"]:
                    state.best = {"val_mean_class": rep["mean_class"], "epoch": state.epoch, "which": who}
                    if acc.is_main_process:
                        model.save_pretrained(run_dir / "encoder")
        record["skipped_clips"] = loader.num_skipped
        state.history.append(record)
        state.seconds = time.time() - started
        if acc.is_main_process:
            write_history(run_dir, state)
        save_run_checkpoint(ctx, state, f"epoch_{state.epoch:04d}")
        acc.wait_for_everyone()
    return finish(ctx, state, datasets)


def clean_run_dir(run_dir: Path) -> list[Path]:
    """Remove what an interrupted atomic write left in the run folder itself (``.tmp-metrics.jsonl``,
    ``.encoder.tmp-*/`` and ``.encoder.old-*/`` of ``save_pretrained``, ``config.yaml.tmp``)."""
    removed = []
    for p in run_dir.iterdir():
        hidden_tmp = p.name.startswith(".") and (".tmp-" in p.name or ".old-" in p.name)
        if hidden_tmp or p.name.endswith(".tmp"):
            shutil.rmtree(p) if p.is_dir() else p.unlink()
            removed.append(p)
    return removed


def write_history(run_dir: Path, state: RunState) -> None:
    """``metrics.jsonl`` from the run's history (rewritten whole: a fresh run into an old folder or a
    resume after a crash never leaves stale or doubled lines); ``steps.jsonl`` cut to the steps taken."""
    write_text_atomic(run_dir / "metrics.jsonl", "".join(json.dumps(r) + "\n" for r in state.history))
    steps = run_dir / "steps.jsonl"
    if steps.is_file():
        kept = [x for x in steps.read_text().splitlines() if x and json.loads(x)["step"] <= state.opt_step]
        write_text_atomic(steps, "".join(x + "\n" for x in kept))


def run_meta(root: str) -> dict[str, Any]:
    """SynthGym's meta.json (class pairs for pair accuracy), or {} for other data sets."""
    path = Path(root) / "meta.json"
    return json.loads(path.read_text()) if path.is_file() else {}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="config keys (override with key=value):\n" + "\n".join(config_help(TrainConfig)),
    )
    parser.add_argument("--config", help="YAML config (see configs/encoder/)")
    parser.add_argument("--resume", action="store_true", help="continue from the run's last checkpoint")
    parser.add_argument("overrides", nargs="*", help="key.sub=value overrides")
    args = parser.parse_args(argv)
    try:
        cfg = load_config(TrainConfig, args.config, args.overrides)
        metrics = run(cfg, resume=args.resume)
    except (ConfigError, ListFileError, HierarchyError, BadClipsError, DecodeError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    except FloatingPointError as err:
        print(f"error: {err}", file=sys.stderr)
        return 3
    except StopRequested:
        return 143
    if PartialState().is_main_process:
        print(
            f"done: test mean class {100 * metrics['test']['mean_class']:.1f} % "
            f"(top-1 {100 * metrics['test']['top1']:.1f} %) -> {cfg.out_dir}/report.md"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
