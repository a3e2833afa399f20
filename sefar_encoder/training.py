"""Encoder training: the configuration, the builders and the epoch loop behind ``scripts/train_encoder.py``.

    run(cfg, resume)
      ├─ build: lists (fail first, naming the file) → hierarchy → datasets (validate every clip) → loader
      │         → model (+ image-ViT init) → optimizer → accelerate
      ├─ resume: clean the run folder, load the latest checkpoint (sefar_encoder.run_state)
      ├─ per epoch: train_one_epoch → validate student (and EMA teacher) → keep the best on val → checkpoint
      └─ finish: test once with the model selected on val → metrics.json, report.md, curves/confusion PNGs

Methods (``method.name``): supervised, framepool, fixmatch, freematch, svformer, ltg, sefar (+ ablation
switches); the per-step objective is :func:`sefar_encoder.methods.ssl_step`.

Reliability (docs/reliability.md): a step whose loss is NaN/inf on any process is skipped on every process
and counted; ``max_nonfinite_steps`` in a row stop the run (:class:`FloatingPointError`). Undecodable clips
follow ``data.on_bad_sample``: ``error`` fails before step 1 with every bad clip listed (``data.validate``)
or at the first bad clip met later; ``skip`` leaves them out, never substitutes another clip, and names
them in ``metrics.json`` and ``report.md``. A step where any process has no decodable clip is skipped on
every process, so processes never wait on each other. SIGTERM finishes the current optimizer step, writes
a checkpoint and raises :class:`StopRequested`.
"""

from __future__ import annotations

import dataclasses
import json
import math
import platform
import shutil
import signal
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from accelerate import Accelerator
from accelerate.utils import gather_object
from tqdm import tqdm

from gym_qa.hierarchy import Hierarchy
from gym_qa.lists import ListFileError, read_list
from sefar_encoder.checkpoint import latest_checkpoint, write_text_atomic
from sefar_encoder.config import ConfigError, check_resume_config, save_config
from sefar_encoder.dataset import (
    DataConfig,
    SemiSupervisedLoader,
    build_datasets,
    build_semi_loader,
    split_paths,
)
from sefar_encoder.ema import EMATeacher, decay_from_horizon
from sefar_encoder.evaluation import evaluate, evaluate_candidates, read_pairs, score
from sefar_encoder.frame_cache import FrameCache
from sefar_encoder.frame_tokens import FrameTokenCache
from sefar_encoder.losses import SelfAdaptiveThreshold, sine_ramp
from sefar_encoder.methods import (
    MethodConfig,
    ResolvedMethod,
    StepResult,
    make_order_blind,
    method_views,
    resolve_method,
    ssl_step,
    supervised_step,
    temporal_gradient,
)
from sefar_encoder.metrics import confusion_matrix
from sefar_encoder.model.encoder import ModelConfig, SeFAREncoder
from sefar_encoder.model.image_vit import load_image_vit
from sefar_encoder.model.token_mix import TubeMix
from sefar_encoder.optim import OptimConfig, build_optimizer, set_lr
from sefar_encoder.report import most_confused_pairs, plot_confusion, plot_curves, write_report
from sefar_encoder.run_state import (
    RunState,
    clean_run_dir,
    data_problems,
    epoch_line,
    read_checkpoint,
    unwrap,
    write_checkpoint,
    write_history,
)
from sefar_encoder.transforms import AugmentConfig, scaled_jitter_range


# ----------------------------------------------------------------------------------------- config
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
    frame_token_cache: str | None = field(
        default=None,
        metadata={
            "help": "freeze the per-frame stem (model.frame_blocks > 0) and cache its tokens in this folder: "
            "many more steps per minute, spatial augmentation reduced to mirroring (sefar_encoder.frame_tokens)"
        },
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


class StopRequested(Exception):
    """SIGTERM was received; a checkpoint has been written (resume with ``--resume``)."""


@dataclass
class TrainContext:
    """What the epoch loop works with (built by :func:`run`)."""

    cfg: TrainConfig
    accelerator: Accelerator
    method: ResolvedMethod
    hierarchy: Hierarchy
    pairs: dict[str, Any]
    datasets: dict[str, Any]
    loader: SemiSupervisedLoader
    student: torch.nn.Module
    second: torch.nn.Module | None
    optimizer: torch.optim.Optimizer
    opt_per_epoch: int
    run_dir: Path
    tube_mix: TubeMix
    teacher: EMATeacher | None = None
    thresholds: SelfAdaptiveThreshold | None = None  # freematch's running thresholds (checkpointed)

    @property
    def total_opt_steps(self) -> int:
        return self.opt_per_epoch * self.cfg.epochs

    @property
    def show(self) -> bool:
        return self.cfg.progress and self.accelerator.is_main_process


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


def frame_token_cache(cfg: TrainConfig, model: SeFAREncoder, augment: AugmentConfig) -> FrameTokenCache:
    """Freeze ``model``'s per-frame stem and return the token cache of it (entries not built yet)."""
    if cfg.model.frame_blocks < 1:
        raise ConfigError(
            "frame_token_cache needs a per-frame stem to cache: set model.frame_blocks (e.g. 2 of 4 blocks)"
        )
    model.freeze_frame_stem()
    frames = None
    if cfg.data.cache_dir:  # the frame cache the datasets use (same short side), so clips are decoded once
        short = cfg.data.cache_short_side or scaled_jitter_range(cfg.data.image_size, augment)[1]
        frames = FrameCache(cfg.data.cache_dir, short)
    return FrameTokenCache(
        cfg.frame_token_cache,
        model,
        cfg.data.image_size,
        augment,
        frame_cache=frames,
        backend=cfg.data.backend,
    )


def entropy_of_histogram(counts: list[int]) -> float:
    """Normalised entropy (0..1) of the pseudo-label histogram: near 0 = collapse onto few classes."""
    c = np.asarray(counts, dtype=np.float64)
    if c.sum() == 0:
        return float("nan")
    p = c[c > 0] / c.sum()
    # 0.0 - x, not -x: a full collapse (one class, p = 1) sums to 0.0, and -0.0 would print as "-0.000".
    return float((0.0 - (p * np.log(p)).sum()) / math.log(len(c)))


# ----------------------------------------------------------------------------------------- train
# StepResult.unlabeled_counts summed over an epoch's steps (kept in RunState.epoch_sums, so a resumed
# epoch continues them): all unlabeled clips, those with a non-zero weight, those correctly pseudo-labeled
UNLABELED_COUNTS = ("clips_unlabeled", "clips_used", "clips_pseudo_correct")


def objective(ctx: TrainContext, item: Any, ssl_phase: bool, ramp: float) -> StepResult:
    """The step's loss (no backward): the method's semi-supervised objective, or supervised only."""
    student, second = ctx.student, ctx.second
    if ssl_phase:
        labeled, unlabeled = item
        teacher = ctx.teacher.module if ctx.teacher is not None else None
        grid = unwrap(student).grid_size
        return ssl_step(
            ctx.method,
            ctx.cfg.method,
            student,
            teacher,
            labeled,
            unlabeled,
            ramp,
            ctx.tube_mix,
            grid,
            second,
            thresholds=ctx.thresholds,
        )
    result = supervised_step(student, item)
    if second is not None:  # ltg warm-up: the temporal-gradient stream learns too
        tg = temporal_gradient(item["video"], unwrap(student).config.views)
        result.loss = result.loss + supervised_step(second, {**item, "video": tg}).loss
    return result


def train_one_epoch(
    ctx: TrainContext, state: RunState, epoch: int, stop: dict[str, bool]
) -> dict[str, float]:
    """One epoch from ``state.micro_step`` to the epoch's end; updates ``state`` as it goes."""
    cfg, acc, method = ctx.cfg, ctx.accelerator, ctx.method
    student, optimizer, second = ctx.student, ctx.optimizer, ctx.second
    ssl_phase = method.uses_unlabeled and epoch >= cfg.method.warm_epochs
    if ssl_phase and method.ema_teacher and ctx.teacher is None:
        # the teacher is born from the student after the warm-up (SPEC §2.3)
        ssl_steps = (cfg.epochs - cfg.method.warm_epochs) * ctx.opt_per_epoch
        ctx.teacher = EMATeacher(unwrap(student), decay_from_horizon(ssl_steps, cfg.method.ema_horizon))
    teacher = ctx.teacher
    ramp = sine_ramp(epoch, cfg.method.warm_epochs, cfg.epochs) if ssl_phase else 0.0
    start, end = state.micro_step, (epoch + 1) * ctx.opt_per_epoch * cfg.grad_accum
    steps = ctx.loader.steps if ssl_phase else ctx.loader.labeled_steps
    student.train()
    if second is not None:
        second.train()
    sums = state.epoch_sums  # empty at an epoch's start; partly filled when resuming mid-epoch
    num_classes = ctx.hierarchy.num_classes
    if not state.pseudo_counts:
        state.pseudo_counts = [0] * num_classes
    step_losses = []
    bar = tqdm(total=end - start, desc=f"epoch {epoch + 1}/{cfg.epochs}", disable=not ctx.show, leave=False)
    # keep_empty: a step whose batch was entirely skipped comes as None, on this process only; every process
    # still runs the step's collectives below, so none waits forever for another
    for item in steps(start, end - start, keep_empty=True):
        with acc.accumulate(student):
            # Collective flags, so every process skips the same steps and stops at the same step: first,
            # before any forward pass, whether every process has clips (a DDP forward pass is itself a
            # collective operation — it broadcasts buffers — so no process may skip it alone); then
            # whether every loss is finite and whether any process received SIGTERM (which may reach the
            # processes at different moments; only the main one saves).
            has_data = acc.reduce(torch.tensor([float(item is not None)], device=acc.device), "sum")
            has_data = has_data.item() == acc.num_processes
            result = objective(ctx, item, ssl_phase, ramp) if has_data else None
            finite_here = result is not None and bool(torch.isfinite(result.loss.detach()))
            flags = acc.reduce(
                torch.tensor([float(finite_here), float(stop["requested"])], device=acc.device), "sum"
            )
            finite = has_data and flags[0].item() == acc.num_processes
            stop_now = flags[1].item() > 0
            if finite:
                acc.backward(result.loss)
                if acc.sync_gradients and cfg.optim.grad_clip > 0:
                    acc.clip_grad_norm_(
                        [p for g in optimizer.param_groups for p in g["params"]], cfg.optim.grad_clip
                    )
                set_lr(optimizer, cfg.optim, state.opt_step, ctx.total_opt_steps)
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
                state.nonfinite_in_row = 0
            elif not has_data:  # some process had no decodable clip (on_bad_sample=skip): skip everywhere
                optimizer.zero_grad(set_to_none=True)
                state.empty_steps += 1
            else:
                optimizer.zero_grad(set_to_none=True)
                state.nonfinite_steps += 1
                state.epoch_nonfinite += 1
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
                teacher.update(unwrap(student), state.opt_step)
        if finite:
            loss = acc.reduce(result.loss.detach(), "mean").item()
            sums["loss"] = sums.get("loss", 0.0) + loss
            for k, v in result.logs.items():
                sums[k] = sums.get(k, 0.0) + v
            state.epoch_count += 1
            step_losses.append(loss)
            if result.unlabeled_counts is not None:  # every process's clips, summed: exact epoch shares
                counts = acc.reduce(result.unlabeled_counts.to(acc.device), "sum").cpu().tolist()
                for key, n in zip(UNLABELED_COUNTS, counts):
                    sums[key] = sums.get(key, 0.0) + n
            if result.pseudo_labels is not None:  # the histogram over every process's clips
                counts = torch.bincount(result.pseudo_labels.flatten().cpu(), minlength=num_classes)
                counts = acc.reduce(counts.to(acc.device), "sum").cpu().tolist()
                state.pseudo_counts = [a + b for a, b in zip(state.pseudo_counts, counts)]
            bar.set_postfix(loss=f"{loss:.3f}")
        if acc.sync_gradients and cfg.log_every_step and acc.is_main_process:
            step_log = {"step": state.opt_step, "epoch": epoch + 1, "lr": optimizer.param_groups[0]["lr"]}
            step_log["loss"] = sum(step_losses) / len(step_losses) if step_losses else None
            with open(ctx.run_dir / "steps.jsonl", "a") as f:
                f.write(json.dumps(step_log) + "\n")
        if acc.sync_gradients:
            step_losses = []
        if stop_now and acc.sync_gradients:
            bar.close()
            raise StopRequested
    bar.close()
    logs = {k: v / max(1, state.epoch_count) for k, v in sums.items() if k not in UNLABELED_COUNTS}
    unlabeled, used, correct = (sums.get(k, 0.0) for k in UNLABELED_COUNTS)
    if unlabeled:  # shares of the epoch's unlabeled clips, not means of per-step shares
        logs["unlabeled_used"] = used / unlabeled
        logs["pseudo_acc"] = correct / unlabeled
    logs["ramp"] = ramp
    logs["lr"] = optimizer.param_groups[0]["lr"]
    if sum(state.pseudo_counts):
        logs["pseudo_label_entropy"] = entropy_of_histogram(state.pseudo_counts)
    if state.epoch_nonfinite:
        logs["nonfinite_steps"] = state.epoch_nonfinite
    state.epoch_sums, state.epoch_count, state.epoch_nonfinite, state.pseudo_counts = {}, 0, 0, []
    return logs


# ----------------------------------------------------------------------------------------- evaluate
def eval_kwargs(ctx: TrainContext) -> dict[str, Any]:
    acc = ctx.accelerator
    return {
        "batch_size": ctx.cfg.eval.batch_size,
        "num_workers": ctx.cfg.data.num_workers,
        "device": acc.device,
        "shard": (acc.process_index, acc.num_processes),
        "progress": ctx.show,
    }


def validate(ctx: TrainContext, state: RunState) -> dict[str, Any]:
    """Val scores of the student (and the EMA teacher); exports a new best on val to ``encoder/``."""
    candidates = {"student": unwrap(ctx.student)}
    if ctx.teacher is not None and ctx.cfg.eval.teacher:
        candidates["teacher"] = ctx.teacher.module
    reports = evaluate_candidates(
        candidates, ctx.datasets["val"], ctx.hierarchy, ctx.pairs, **eval_kwargs(ctx)
    )
    for who, rep in reports.items():
        if rep["mean_class"] > state.best["val_mean_class"]:
            state.best = {"val_mean_class": rep["mean_class"], "epoch": state.epoch, "which": who}
            if ctx.accelerator.is_main_process:
                candidates[who].save_pretrained(ctx.run_dir / "encoder")
    return {who: {k: rep[k] for k in ("top1", "top5", "mean_class")} for who, rep in reports.items()}


# ----------------------------------------------------------------------------------------- checkpoint
def sync_data_problems(ctx: TrainContext, state: RunState) -> None:
    """Copy the training stream's skipped / fallback clips of every process into ``state`` (collective)."""
    loader = ctx.loader
    parts = gather_object([(loader.num_skipped, loader.skipped, loader.fallbacks)])
    state.skipped_clips = sum(p[0] for p in parts)
    for _, skipped, fallbacks in parts:
        state.bad_samples.update(skipped)
        state.decoder_fallbacks.update(fallbacks)


def save_run_checkpoint(ctx: TrainContext, state: RunState, name: str) -> None:
    """Checkpoint ``name`` (every process calls this; the main one writes)."""
    sync_data_problems(ctx, state)
    if ctx.thresholds is not None:  # freematch: a resumed run continues the same running thresholds
        state.method_state = {"freematch": ctx.thresholds.state_dict()}
    if ctx.accelerator.is_main_process:
        write_checkpoint(
            ctx.run_dir,
            name,
            state,
            ctx.student,
            ctx.teacher,
            ctx.second,
            ctx.optimizer,
            ctx.cfg.keep_checkpoints,
        )


def restore_run_checkpoint(ctx: TrainContext, path: Path) -> RunState:
    state, ctx.teacher = read_checkpoint(path, ctx.student, ctx.second, ctx.optimizer)
    if ctx.thresholds is not None:
        ctx.thresholds.load_state_dict(state.method_state["freematch"])
    # the training stream's counts continue from the checkpoint's totals (held by the main process)
    ctx.loader.num_skipped = state.skipped_clips if ctx.accelerator.is_main_process else 0
    return state


# ----------------------------------------------------------------------------------------- run
def run(cfg: TrainConfig, resume: bool = False) -> dict[str, Any]:
    """Train, validate each epoch, keep the best on val, test once. Returns the final metrics.

    SIGTERM (from the start of this call): the current optimizer step finishes, a checkpoint is written
    and :class:`StopRequested` raised; during set-up (e.g. validating every clip) nothing has been trained
    yet, so it stops before the first step without a new checkpoint; during the final test it finishes.
    """
    # Process-wide settings last only as long as this run (run() may be called in-process, e.g. by tests).
    stop = {"requested": False}
    previous_handler = None
    if threading.current_thread() is threading.main_thread():  # signals can only be set from there
        previous_handler = signal.signal(signal.SIGTERM, lambda *_: stop.update(requested=True))
    was_deterministic = torch.are_deterministic_algorithms_enabled()
    try:
        ctx, state = setup(cfg, resume)
        if ctx is None:  # --resume of a finished run: its metrics
            return json.loads((Path(cfg.out_dir) / "metrics.json").read_text())
        acc = ctx.accelerator
        if acc.reduce(torch.tensor([float(stop["requested"])], device=acc.device), "sum").item() > 0:
            print("SIGTERM during set-up: stopped before the first step (nothing new to save)")
            raise StopRequested
        torch.use_deterministic_algorithms(cfg.deterministic or was_deterministic)
        return train_and_finish(ctx, state, stop)
    finally:
        torch.use_deterministic_algorithms(was_deterministic)
        if previous_handler is not None:
            signal.signal(signal.SIGTERM, previous_handler)


# Settings a resumed run may change: they do not alter what is computed. (Not data.cache_dir: cached
# frames are resized to data.cache_short_side, so clips larger than that give other pixels.)
RESUME_MAY_DIFFER = frozenset({"progress", "keep_checkpoints", "data.num_workers"})


def setup(cfg: TrainConfig, resume: bool) -> tuple[TrainContext | None, RunState]:
    """Build everything :func:`train_and_finish` needs and restore the latest checkpoint when resuming;
    ``(None, ...)`` when resuming a run that has already finished."""
    acc = Accelerator(
        gradient_accumulation_steps=cfg.grad_accum,
        mixed_precision=cfg.mixed_precision if torch.cuda.is_available() else "no",
    )
    run_dir = Path(cfg.out_dir)
    if (run_dir / "metrics.json").exists() and resume:
        return None, RunState()
    if resume:
        check_resume_config(run_dir / "config.yaml", cfg, RESUME_MAY_DIFFER)
    torch.manual_seed(cfg.seed)

    method = resolve_method(cfg.method)
    views = method_views(method, cfg.num_frames)
    splits = ("train", "unlabel", "val", "test") if method.uses_unlabeled else ("train", "val", "test")
    check_lists(cfg, splits)
    hierarchy = build_hierarchy(cfg)
    augment = dataclasses.replace(cfg.data.augment, temporal_perturb=method.perturb)
    data_cfg = dataclasses.replace(cfg.data, views=views, augment=augment)
    student, init_report = build_model(cfg, hierarchy, views)
    token_cache = frame_token_cache(cfg, student, augment) if cfg.frame_token_cache else None
    datasets = build_datasets(
        data_cfg,
        hierarchy.num_classes,
        splits,
        progress=cfg.progress and acc.is_main_process,
        token_cache=token_cache,
    )
    if token_cache is not None:
        if acc.is_main_process:
            clips = [
                e.path for ds in datasets.values() for i, e in enumerate(ds.entries) if i not in ds.known_bad
            ]
            built = token_cache.build(clips, progress=cfg.progress)
            print(f"frame tokens: {built} clips encoded into {token_cache.cache_dir}")
        acc.wait_for_everyone()
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
    # Only once the input checks above have passed: a run refused for its data or config leaves neither a
    # config.yaml that looks like a started run nor a previous run's checkpoints deleted.
    if acc.is_main_process:
        if not resume:
            forget_previous_run(run_dir)
        run_dir.mkdir(parents=True, exist_ok=True)
        save_config(cfg, run_dir / "config.yaml")
    loader = build_semi_loader(
        dataclasses.replace(data_cfg, batch_size=cfg.data.batch_size // cfg.grad_accum),
        datasets,
        device=acc.device,
        shard=(acc.process_index, acc.num_processes),
    )

    if method.order_blind:
        make_order_blind(student)
    if init_report is not None and acc.is_main_process:
        (run_dir / "init_report.json").write_text(json.dumps(dataclasses.asdict(init_report), indent=1))
        print(init_report.summary())
    second = build_model(cfg, hierarchy, views)[0] if method.second_stream else None
    if token_cache is not None and second is not None:
        second.freeze_frame_stem()  # the same init, so the same stem as the student's: one cache serves both
    optimizer = build_optimizer(cfg.optim, student, [second] if second is not None else [])
    if second is not None:
        student, second, optimizer = acc.prepare(student, second, optimizer)
    else:
        student, optimizer = acc.prepare(student, optimizer)

    thresholds = None
    if method.self_adaptive:  # one state on every process: each update sums the batch statistics of all
        thresholds = SelfAdaptiveThreshold(
            hierarchy.num_classes, cfg.method.freematch.momentum, reduce_sum=lambda t: acc.reduce(t, "sum")
        )
    ctx = TrainContext(
        cfg=cfg,
        accelerator=acc,
        method=method,
        hierarchy=hierarchy,
        pairs=read_pairs(cfg.data.root),
        datasets=datasets,
        loader=loader,
        student=student,
        second=second,
        optimizer=optimizer,
        opt_per_epoch=optimizer_steps_per_epoch(cfg, len(datasets["train"]), num_unlabeled),
        run_dir=run_dir,
        tube_mix=TubeMix(cfg.method.mix_alpha, cfg.method.mix_alpha),
        thresholds=thresholds,
    )
    state = RunState()
    if resume:
        if acc.is_main_process:
            for p in clean_run_dir(run_dir):
                print(f"removed stale temporary file {p}")
        acc.wait_for_everyone()
        ckpt = latest_checkpoint(run_dir)
        if ckpt is not None:
            state = restore_run_checkpoint(ctx, ckpt)
            print(f"resumed from {ckpt} (epoch {state.epoch}, optimizer step {state.opt_step})")
    if acc.is_main_process:  # what a crash after the last checkpoint wrote is written again
        write_history(run_dir, state)
    return ctx, state


def forget_previous_run(run_dir: Path) -> None:
    """A fresh run into a used folder: drop the old run's checkpoints and ``metrics.json`` first, so that
    a kill before this run's first checkpoint is never "resumed" from (or reported as) the old run."""
    old = [p for p in (run_dir / "checkpoints", run_dir / "metrics.json") if p.exists()]
    for p in old:
        if p.is_dir():  # renamed first: a kill mid-delete leaves a temporary that --resume removes
            doomed = p.rename(run_dir / f".tmp-old-{p.name}")
            shutil.rmtree(doomed)
        else:
            p.unlink()
    if old:
        print(f"{run_dir}: removed the previous run's {' and '.join(p.name for p in old)} (a fresh run)")


def train_and_finish(ctx: TrainContext, state: RunState, stop: dict[str, bool]) -> dict[str, Any]:
    """The epoch loop: train, validate, keep the best on val, checkpoint; then :func:`finish`."""
    cfg, acc = ctx.cfg, ctx.accelerator
    started = time.time() - state.seconds
    while state.epoch < cfg.epochs:
        t0 = time.time()
        try:
            train_logs = train_one_epoch(ctx, state, state.epoch, stop)
        except StopRequested:
            state.seconds = time.time() - started
            save_run_checkpoint(ctx, state, f"step_{state.micro_step:08d}")
            print(f"SIGTERM: checkpoint written at micro-step {state.micro_step}; resume with --resume")
            raise
        state.epoch += 1
        record: dict[str, Any] = {"epoch": state.epoch, "train": train_logs, "seconds": time.time() - t0}
        if state.epoch % cfg.eval.every == 0 or state.epoch == cfg.epochs:
            record["val"] = validate(ctx, state)
        sync_data_problems(ctx, state)
        record["skipped_clips"] = state.skipped_clips
        state.history.append(record)
        state.seconds = time.time() - started
        if acc.is_main_process:
            write_history(ctx.run_dir, state)
            print(epoch_line(record), flush=True)
        save_run_checkpoint(ctx, state, f"epoch_{state.epoch:04d}")
        acc.wait_for_everyone()
    return finish(ctx, state)


def finish(ctx: TrainContext, state: RunState) -> dict[str, Any]:
    """Test once with the model selected on val; write report.md, the plots and, last, metrics.json."""
    cfg, acc, run_dir, h = ctx.cfg, ctx.accelerator, ctx.run_dir, ctx.hierarchy
    sync_data_problems(ctx, state)
    best = SeFAREncoder.from_pretrained(run_dir / "encoder").to(acc.device)
    val_pred = evaluate(best, ctx.datasets["val"], desc="val (best)", **eval_kwargs(ctx))
    test_pred = evaluate(best, ctx.datasets["test"], desc="test", **eval_kwargs(ctx))
    cm = confusion_matrix(test_pred.probs.argmax(1), test_pred.labels, h.num_classes)
    entropies = [
        r["train"]["pseudo_label_entropy"] for r in state.history if "pseudo_label_entropy" in r["train"]
    ]
    ssl_epochs = [r["train"] for r in state.history if "unlabeled_used" in r["train"]]
    metrics = {
        "method": cfg.method.name,
        "resolved_method": dataclasses.asdict(ctx.method),
        "label_rate": cfg.data.label_rate,
        "data_root": cfg.data.root,
        "seed": cfg.seed,
        "epochs": cfg.epochs,
        "optimizer_steps": state.opt_step,
        "minutes": state.seconds / 60,
        "machine": f"{platform.machine()} {torch.get_num_threads()} threads, torch {torch.__version__}",
        "best": state.best,
        "val": score(val_pred, h, ctx.pairs),
        "test": score(test_pred, h, ctx.pairs),
        "most_confused": most_confused_pairs(cm, h.names),
        "skipped_clips": state.skipped_clips,
        "empty_steps": state.empty_steps,
        "nonfinite_steps": state.nonfinite_steps,
        "pseudo_label_entropy": entropies[-1] if entropies else None,
        # the last SSL epoch's shares of its unlabeled clips: weighted (used), correctly pseudo-labeled
        "unlabeled_used": ssl_epochs[-1]["unlabeled_used"] if ssl_epochs else None,
        "pseudo_acc": ssl_epochs[-1]["pseudo_acc"] if ssl_epochs else None,
        **data_problems(ctx.datasets, cfg.data.on_bad_sample, state, [val_pred, test_pred]),
        "history": state.history,
    }
    if acc.is_main_process:
        write_report(metrics, run_dir / "report.md")
        plot_curves(state.history, run_dir / "curves.png")
        plot_confusion(cm, h.names, run_dir / "confusion.png")
        # last and atomic: its presence marks a finished run (resume returns it without training)
        write_text_atomic(run_dir / "metrics.json", json.dumps(metrics, indent=1))
    return metrics
