"""Train the SeFAR encoder — or a baseline — from a few labeled and many unlabeled clips.

    python scripts/train_encoder.py --config configs/encoder/synthgym_tiny.yaml [key=value ...]
    python scripts/train_encoder.py --config ... --resume        # continue from the run's last checkpoint
    python scripts/train_encoder.py --config ... --on-bad-sample skip   # = data.on_bad_sample=skip
    accelerate launch --config_file configs/accelerate/ddp.yaml --num_processes 8 scripts/train_encoder.py ...
    ACCELERATE_USE_CPU=1 accelerate launch --multi_gpu --num_processes 2 scripts/train_encoder.py ...  # DDP, CPU
    (accelerate 1.15's ``--cpu --num_processes 2`` starts ONE process unless MPI is configured)

A recipe over the run lifecycle (``sefar_encoder.runtime.lifecycle``), read top to bottom:

    setup    lists (fail first, naming the file) → hierarchy → model (+ image-ViT init, frame-token cache)
             → datasets (validate every clip) → input checks → run folder → loader → optimizer → accelerate
             → the latest checkpoint when resuming
    train    per epoch: train_one_epoch → validate student (and EMA teacher) → keep the best on val
             → save_run_checkpoint
    cleanup  test once with the model selected on val → report.md, curves/confusion PNGs, metrics.json

Methods (``method.name``): supervised, framepool, fixmatch, freematch, svformer, ltg, sefar (+ ablation
switches); the per-step objective is :func:`sefar_encoder.methods.ssl_step`. The configuration is
``sefar_encoder.training_config``; the run folder and checkpoint content ``sefar_encoder.run_state``.

Reliability (docs/reliability.md): a step whose loss is NaN/inf on any process is skipped on every process
and counted; ``max_nonfinite_steps`` in a row stop the run. Undecodable clips follow
``data.on_bad_sample``: ``error`` fails before step 1 with every bad clip listed (``data.validate``) or at
the first bad clip met later; ``skip`` leaves them out, never substitutes another clip, and names them in
``metrics.json`` and ``report.md``. A step where any process has no decodable clip is skipped on every
process, so processes never wait on each other. SIGTERM finishes the current optimizer step and writes a
checkpoint; during set-up it stops before the first step; during the final test the run finishes.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator, PartialState
from tqdm import tqdm

from gym_qa.hierarchy import Hierarchy
from gym_qa.hierarchy_files import HierarchyError
from gym_qa.lists import ListFileError
from sefar_encoder.clip_checks import BadClipsError
from sefar_encoder.decoding import DecodeError
from sefar_encoder.ema import EMATeacher, decay_from_horizon
from sefar_encoder.evaluation import NoClipsError, evaluate, evaluate_candidates, read_pairs, score
from sefar_encoder.loader import SemiSupervisedLoader, build_datasets, build_semi_loader
from sefar_encoder.losses import SelfAdaptiveThreshold, sine_ramp
from sefar_encoder.methods import (
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
from sefar_encoder.model.encoder import SeFAREncoder
from sefar_encoder.model.token_mix import TubeMix
from sefar_encoder.optim import build_optimizer, set_lr
from sefar_encoder.report import most_confused_pairs, plot_confusion, plot_curves, write_report
from sefar_encoder.run_state import (
    EncoderState,
    add_step,
    checkpoint_tensors,
    close_epoch,
    data_problems,
    epoch_line,
    kept_checkpoints,
    load_checkpoint_tensors,
    record_init,
    ssl_summary,
    sync_data_problems,
    unwrap,
)
from sefar_encoder.runtime.config import ConfigError, config_epilog, load_config
from sefar_encoder.runtime.lifecycle import (
    EXIT_CODES,
    EXIT_OK,
    HISTORY,
    RunLifecycle,
    append_history,
    count_loss,
    deterministic_algorithms,
    exit_code,
    rewind_history,
    write_history,
)
from sefar_encoder.runtime.machine import machine_summary
from sefar_encoder.training_config import (
    RESUME_MAY_DIFFER,
    EncoderTrainConfig,
    build_model,
    check_batch_split,
    check_lists,
    frame_token_cache,
    model_data_config,
    optimizer_steps_per_epoch,
    unlabeled_pool,
)

STEPS_LOG = "steps.jsonl"
BAD_INPUT_ERRORS = (
    ConfigError,
    ListFileError,
    HierarchyError,
    BadClipsError,
    DecodeError,
    NoClipsError,
    OSError,
)


@dataclass
class TrainContext:
    """What the epoch loop works with (built by :func:`setup`)."""

    cfg: EncoderTrainConfig
    lifecycle: RunLifecycle
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
    tube_mix: TubeMix
    teacher: EMATeacher | None = None
    thresholds: SelfAdaptiveThreshold | None = None  # freematch's running thresholds (checkpointed)

    @property
    def run_dir(self) -> Path:
        return self.lifecycle.dir

    @property
    def total_opt_steps(self) -> int:
        return self.opt_per_epoch * self.cfg.epochs

    @property
    def show(self) -> bool:
        return self.cfg.progress and self.accelerator.is_main_process


# ----------------------------------------------------------------------------------------- setup
def setup(cfg: EncoderTrainConfig, lifecycle: RunLifecycle) -> tuple[TrainContext, EncoderState]:
    """Build everything the loop needs (the model before the datasets: a frame-token cache encodes the
    clips with it); the run folder is started only once the input checks have passed."""
    acc = Accelerator(
        gradient_accumulation_steps=cfg.grad_accum,
        mixed_precision=cfg.mixed_precision if torch.cuda.is_available() else "no",
    )
    torch.manual_seed(cfg.seed)
    method = resolve_method(cfg.method)
    views = method_views(method, cfg.num_frames)
    splits = ("train", "unlabel", "val", "test") if method.uses_unlabeled else ("train", "val", "test")
    check_lists(cfg, splits)
    hierarchy = Hierarchy.from_dir(cfg.data.root)
    student, init_report = build_model(cfg, hierarchy, views)
    data_cfg = model_data_config(cfg, student, method.perturb)  # normalised as the image weights expect
    token_cache = frame_token_cache(cfg, student, data_cfg.augment) if cfg.frame_token_cache else None
    show = cfg.progress and acc.is_main_process
    datasets = build_datasets(data_cfg, hierarchy.num_classes, splits, progress=show, token_cache=token_cache)
    if token_cache is not None:
        if acc.is_main_process:
            clips = [
                e.path for ds in datasets.values() for i, e in enumerate(ds.entries) if i not in ds.known_bad
            ]
            built = token_cache.build(clips, progress=cfg.progress)
            print(f"frame tokens: {built} clips encoded into {token_cache.cache_dir}")
        acc.wait_for_everyone()
    num_unlabeled = unlabeled_pool(cfg, method, datasets)
    check_batch_split(cfg, acc.num_processes)
    lifecycle.start()

    micro_cfg = dataclasses.replace(data_cfg, batch_size=cfg.data.batch_size // cfg.grad_accum)
    shard = (acc.process_index, acc.num_processes)
    loader = build_semi_loader(micro_cfg, datasets, device=acc.device, shard=shard)
    if method.order_blind:
        make_order_blind(student)
    if acc.is_main_process:
        record_init(lifecycle.dir, student, init_report)
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
        lifecycle=lifecycle,
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
        tube_mix=TubeMix(cfg.method.mix_alpha, cfg.method.mix_alpha),
        thresholds=thresholds,
    )
    state = EncoderState()
    ckpt = lifecycle.restore_point()
    if ckpt is not None:
        state = restore_run_checkpoint(ctx, ckpt)
        print(f"resumed from {ckpt} (epoch {state.epoch}, optimizer step {state.opt_step})")
    # what a crash after the last checkpoint wrote is written again; steps past it are dropped
    if acc.is_main_process:
        write_history(lifecycle.dir / HISTORY, state.history)
    rewind_history(lifecycle.dir / STEPS_LOG, state.opt_step, write=acc.is_main_process)
    return ctx, state


# ----------------------------------------------------------------------------------------- train
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


def train_one_epoch(ctx: TrainContext, state: EncoderState, epoch: int) -> dict[str, float]:
    """One epoch from ``state.micro_step`` to the epoch's end; updates ``state`` as it goes."""
    cfg, acc, method, lifecycle = ctx.cfg, ctx.accelerator, ctx.method, ctx.lifecycle
    student, optimizer, second = ctx.student, ctx.optimizer, ctx.second
    ssl_phase = method.uses_unlabeled and epoch >= cfg.method.warm_epochs
    if ssl_phase and method.ema_teacher and ctx.teacher is None:
        # the teacher is born from the student after the warm-up (docs/DESIGN.md §EMA teacher)
        ssl_steps = (cfg.epochs - cfg.method.warm_epochs) * ctx.opt_per_epoch
        ctx.teacher = EMATeacher(unwrap(student), decay_from_horizon(ssl_steps, cfg.method.ema_horizon))
    teacher = ctx.teacher
    ramp = sine_ramp(epoch, cfg.method.warm_epochs, cfg.epochs) if ssl_phase else 0.0
    start, end = state.micro_step, (epoch + 1) * ctx.opt_per_epoch * cfg.grad_accum
    steps = ctx.loader.steps if ssl_phase else ctx.loader.labeled_steps
    student.train()
    if second is not None:
        second.train()
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
            flags = torch.tensor([float(finite_here), float(lifecycle.stop_requested)], device=acc.device)
            flags = acc.reduce(flags, "sum")
            finite = has_data and flags[0].item() == acc.num_processes
            stop_now = flags[1].item() > 0
            if finite:
                acc.backward(result.loss)
                if acc.sync_gradients and cfg.optim.grad_clip > 0:
                    params = [p for g in optimizer.param_groups for p in g["params"]]
                    acc.clip_grad_norm_(params, cfg.optim.grad_clip)
                set_lr(optimizer, cfg.optim, state.opt_step, ctx.total_opt_steps)
                optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            if not has_data:  # some process had no decodable clip (on_bad_sample=skip): skipped everywhere
                state.empty_steps += 1
            else:
                state.epoch_nonfinite += not finite
                where = f"epoch {epoch + 1}, micro-step {state.micro_step}; lower optim.lr or check the data"
                count_loss(state, finite, cfg.max_nonfinite_steps, where)
        state.micro_step += 1
        bar.update(1)
        if acc.sync_gradients:
            state.opt_step += 1
            if teacher is not None and finite:
                teacher.update(unwrap(student), state.opt_step)
        if finite:
            loss = add_step(state, result, acc, ctx.hierarchy.num_classes)
            step_losses.append(loss)
            bar.set_postfix(loss=f"{loss:.3f}")
        if acc.sync_gradients and cfg.log_every_step and acc.is_main_process:
            step_log = {"step": state.opt_step, "epoch": epoch + 1, "lr": optimizer.param_groups[0]["lr"]}
            step_log["loss"] = sum(step_losses) / len(step_losses) if step_losses else None
            append_history(ctx.run_dir / STEPS_LOG, step_log)
        if acc.sync_gradients:
            step_losses = []
        if stop_now and acc.sync_gradients:
            bar.close()
            save = functools.partial(save_run_checkpoint, ctx, state, f"step_{state.micro_step:08d}")
            lifecycle.stop(state, save, f"micro-step {state.micro_step}")
    bar.close()
    return close_epoch(state, ramp, optimizer.param_groups[0]["lr"])


def eval_kwargs(ctx: TrainContext) -> dict[str, Any]:
    acc = ctx.accelerator
    return {
        "batch_size": ctx.cfg.eval.batch_size,
        "num_workers": ctx.cfg.data.num_workers,
        "device": acc.device,
        "shard": (acc.process_index, acc.num_processes),
        "progress": ctx.show,
    }


def validate(ctx: TrainContext, state: EncoderState) -> dict[str, Any]:
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


def train(ctx: TrainContext, state: EncoderState) -> None:
    """The epoch loop: train, validate, keep the best on val, checkpoint."""
    cfg, acc, lifecycle = ctx.cfg, ctx.accelerator, ctx.lifecycle
    lifecycle.start_clock(state)
    while state.epoch < cfg.epochs:
        t0 = time.time()
        train_logs = train_one_epoch(ctx, state, state.epoch)
        state.epoch += 1
        record: dict[str, Any] = {"epoch": state.epoch, "train": train_logs, "seconds": time.time() - t0}
        if state.epoch % cfg.eval.every == 0 or state.epoch == cfg.epochs:
            record["val"] = validate(ctx, state)
        sync_data_problems(ctx.loader, state)
        record["skipped_clips"] = state.skipped_clips
        state.history.append(record)
        lifecycle.tick(state)
        if acc.is_main_process:
            write_history(ctx.run_dir / HISTORY, state.history)
            print(epoch_line(record), flush=True)
        save_run_checkpoint(ctx, state, f"epoch_{state.epoch:04d}")
        acc.wait_for_everyone()


# ----------------------------------------------------------------------------------------- checkpoint
def save_run_checkpoint(ctx: TrainContext, state: EncoderState, name: str) -> None:
    """Checkpoint ``name`` (every process calls this; the main one writes)."""
    sync_data_problems(ctx.loader, state)
    if ctx.thresholds is not None:  # freematch: a resumed run continues the same running thresholds
        state.method_state = {"freematch": ctx.thresholds.state_dict()}
    tensors, payload = checkpoint_tensors(ctx.student, ctx.teacher, ctx.second, ctx.optimizer)
    keep = kept_checkpoints(state, ctx.cfg.keep_checkpoints)
    ctx.lifecycle.save_checkpoint(name, tensors, state, keep, payload)


def restore_run_checkpoint(ctx: TrainContext, path: Path) -> EncoderState:
    tensors, state, payload = ctx.lifecycle.load_checkpoint(path, EncoderState)
    ctx.teacher = load_checkpoint_tensors(tensors, payload, ctx.student, ctx.second, ctx.optimizer)
    if ctx.thresholds is not None:
        ctx.thresholds.load_state_dict(state.method_state["freematch"])
    # the training stream's counts continue from the checkpoint's totals (held by the main process)
    ctx.loader.num_skipped = state.skipped_clips if ctx.accelerator.is_main_process else 0
    return state


# ----------------------------------------------------------------------------------------- cleanup
def cleanup(ctx: TrainContext, state: EncoderState) -> dict[str, Any]:
    """Test once with the model selected on val; write report.md, the plots and, last, metrics.json."""
    cfg, acc, run_dir, h = ctx.cfg, ctx.accelerator, ctx.run_dir, ctx.hierarchy
    sync_data_problems(ctx.loader, state)
    best = SeFAREncoder.from_pretrained(run_dir / "encoder").to(acc.device)
    val_pred = evaluate(best, ctx.datasets["val"], desc="val (best)", **eval_kwargs(ctx))
    test_pred = evaluate(best, ctx.datasets["test"], desc="test", **eval_kwargs(ctx))
    cm = confusion_matrix(test_pred.probs.argmax(1), test_pred.labels, h.num_classes)
    metrics = {
        "method": cfg.method.name,
        "resolved_method": dataclasses.asdict(ctx.method),
        "label_rate": cfg.data.label_rate,
        "data_root": cfg.data.root,
        "seed": cfg.seed,
        "epochs": cfg.epochs,
        "optimizer_steps": state.opt_step,
        "minutes": state.seconds / 60,
        "machine": machine_summary(),
        "best": state.best,
        "val": score(val_pred, h, ctx.pairs),
        "test": score(test_pred, h, ctx.pairs),
        "most_confused": most_confused_pairs(cm, h.names),
        "skipped_clips": state.skipped_clips,
        "empty_steps": state.empty_steps,
        "nonfinite_steps": state.nonfinite_steps,
        **ssl_summary(state.history),
        **data_problems(ctx.datasets, cfg.data.on_bad_sample, state, [val_pred, test_pred]),
        "history": state.history,
    }
    if acc.is_main_process:
        write_report(metrics, run_dir / "report.md")
        plot_curves(state.history, run_dir / "curves.png")
        plot_confusion(cm, h.names, run_dir / "confusion.png")
    return ctx.lifecycle.finish(metrics)


# ----------------------------------------------------------------------------------------- run
def run(cfg: EncoderTrainConfig, resume: bool = False) -> dict[str, Any]:
    """Train, validate each epoch, keep the best on val, test once; returns the final metrics (a finished
    run's, without training, when resuming it). SIGTERM: see the module docstring."""
    # deterministic: before anything starts CUDA (CUBLAS_WORKSPACE_CONFIG), for as long as this run
    with (
        deterministic_algorithms(cfg.deterministic),
        RunLifecycle(cfg.out_dir, cfg, resume=resume, may_differ=RESUME_MAY_DIFFER) as lifecycle,
    ):
        if (done := lifecycle.finished()) is not None:
            return done
        lifecycle.check_resume()
        ctx, state = setup(cfg, lifecycle)
        lifecycle.check_stop()
        train(ctx, state)
        return cleanup(ctx, state)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=EXIT_CODES + "\n" + config_epilog(EncoderTrainConfig, argv),
    )
    parser.add_argument("--config", help="YAML config (see configs/encoder/)")
    parser.add_argument("--resume", action="store_true", help="continue from the run's last checkpoint")
    parser.add_argument(
        "--on-bad-sample",
        choices=("error", "skip"),
        help="undecodable clips: error = stop before step 1 listing them all; skip = leave them out and "
        "report them (= data.on_bad_sample)",
    )
    parser.add_argument("overrides", nargs="*", help="key.sub=value overrides")
    args = parser.parse_args(argv)
    overrides = args.overrides + ([f"data.on_bad_sample={args.on_bad_sample}"] if args.on_bad_sample else [])
    cfg = None
    try:
        cfg = load_config(EncoderTrainConfig, args.config, overrides)
        metrics = run(cfg, resume=args.resume)
    except (Exception, KeyboardInterrupt) as err:  # noqa: BLE001 - exit_code gives each its exit code
        return exit_code(err, BAD_INPUT_ERRORS, lambda: cfg.out_dir)
    if PartialState().is_main_process:
        bad = metrics.get("bad_samples", {}).get("count", 0)
        print(
            f"done: test mean class {100 * metrics['test']['mean_class']:.1f} % "
            f"(top-1 {100 * metrics['test']['top1']:.1f} %)"
            + (f"; {bad} bad clip(s) skipped, listed in metrics.json" if bad else "")
            + f" -> {cfg.out_dir}/report.md"
        )
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
