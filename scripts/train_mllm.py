"""Train the video MLLM in two stages on cached encoder features: align (stage A), then instruct (stage B).

    python scripts/train_mllm.py --config configs/mllm/synthgym_tiny.yaml --stage align [key=value ...]
    python scripts/train_mllm.py --config configs/mllm/synthgym_tiny.yaml --stage instruct
    python scripts/train_mllm.py --config ... --stage instruct --resume   # continue from the last checkpoint
    ACCELERATE_USE_CPU=1 accelerate launch --multi_gpu --num_processes 2 scripts/train_mllm.py ...  # CPU DDP
    accelerate launch --config_file configs/accelerate/ddp.yaml scripts/train_mllm.py \\
        --config configs/mllm/vicuna7b_qlora.yaml --stage instruct                      # GPUs, QLoRA

On a CPU, DDP needs torchrun's launcher (``--multi_gpu``) with ``ACCELERATE_USE_CPU=1`` (gloo): accelerate
1.15's ``accelerate launch --cpu --num_processes 2`` starts ONE process unless MPI is set up.

A recipe over the run lifecycle (``sefar_encoder.runtime.lifecycle``), read top to bottom; the
configuration is ``mllm.training_config`` (``--stage`` picks the YAML's ``align:`` or ``instruct:``
section), the data ``mllm.stage_data``:

    setup    feature cache up to date → tokenizer, prompt builder → model (+ init_from) → samples (input
             checks) → run folder → optimizer, accelerate → the latest checkpoint when resuming
    train    per epoch: optimizer steps (train_one_epoch) → val loss → save_run_checkpoint
    cleanup  the MLLM (mllm/) → loss.png, report.md → metrics.json

Stage A (``align``): LLM frozen, projector trained on clip -> "The athlete performs <element>.".
Stage B (``instruct``): projector + LoRA trained on Gym-QA questions, answer "C. <option text>"; it starts
from stage A's projector (``instruct.init_from``). Both stages use only the labeled clips of
``data.label_rate``.

Optimizer step ``s`` consumes global batch ``s`` of a permutation seeded by (seed, epoch); each process
takes its slice, cut into micro-batches. The loss of a step is the summed token NLL of the global batch
over its number of loss tokens, whatever the split into processes and micro-batches, so 1 and N processes
train alike.

The stage directory (``<stage>.out_dir``) receives the lifecycle's ``config.yaml``, ``metrics.jsonl`` (one
line per optimizer step, plus validation lines), ``checkpoints/`` (trainable weights, optimizer state,
per-process RNG, step; every epoch, every ``checkpoint_every`` steps and on SIGTERM) and, last,
``metrics.json``; and ``mllm/`` (``MultimodalModel.save_pretrained``), ``report.md``, ``loss.png``, the
generated questions. A non-finite loss skips its step (the batch is consumed, the update not applied).
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from accelerate import Accelerator
from accelerate.utils import DistributedType
from tqdm import tqdm

from gym_qa.hierarchy import load_hierarchy
from gym_qa.hierarchy_files import HierarchyError
from gym_qa.lists import ListFileError
from gym_qa.question_generator import GeneratorError
from gym_qa.questions import QuestionFormatError, write_questions
from mllm import feature_cache_ranks, sharding
from mllm.feature_cache import EncodingError, FeatureCache, StaleCacheError
from mllm.instruction_data import (
    ANSWER_FORMAT,
    CAPTION_FORMAT,
    CAPTION_QUESTION,
    InstructionData,
    epoch_order,
    process_micro_batches,
)
from mllm.language_model import check_4bit_supported
from mllm.multimodal_model import CheckpointMismatchError, MultimodalConfig, MultimodalModel
from mllm.prompting import IGNORE_INDEX, PromptBuilder, TemplateMismatchError
from mllm.stage_data import OnTheFlyFeatures, build_features, build_samples
from mllm.stage_report import plot_losses, write_stage_report
from mllm.tokenizer import TokenizerLoadError, load_tokenizer
from mllm.training_config import RESUME_MAY_DIFFER, STAGES, MLLMTrainConfig, StageConfig, lr_at
from sefar_encoder.clip_checks import BadClipsError
from sefar_encoder.decoding import DecodeError
from sefar_encoder.runtime.checkpoint import flatten_optimizer, prefixed, unflatten_optimizer, unprefixed
from sefar_encoder.runtime.config import ConfigError, config_epilog, load_config
from sefar_encoder.runtime.lifecycle import (
    EXIT_CODES,
    EXIT_OK,
    HISTORY,
    RunLifecycle,
    RunState,
    append_history,
    count_loss,
    exit_code,
    rewind_history,
)
from sefar_encoder.runtime.machine import machine_summary

BAD_INPUT_ERRORS = (
    ConfigError,
    ListFileError,
    HierarchyError,
    QuestionFormatError,
    GeneratorError,
    StaleCacheError,
    TemplateMismatchError,
    TokenizerLoadError,
    BadClipsError,
    DecodeError,
    EncodingError,
    CheckpointMismatchError,
    feature_cache_ranks.RankError,  # another rank stopped the feature cache build: rank 0 says why
    OSError,
)


@dataclass
class StageState(RunState):
    step: int = 0  # optimizer steps taken (= global batches consumed)
    epoch_closed: bool = True  # False: stopped on an epoch's last step before its evaluation (SIGTERM)


@dataclass
class StageContext:
    """What the loop works with (built by :func:`setup`)."""

    cfg: MLLMTrainConfig
    lifecycle: RunLifecycle
    accelerator: Accelerator
    model: torch.nn.Module  # the MultimodalModel, prepared by accelerate
    optimizer: torch.optim.Optimizer
    params: list[torch.nn.Parameter]  # the trainable ones
    trainable_names: list[str]
    data: InstructionData
    val: InstructionData | None
    cache: FeatureCache
    sample_counts: dict[str, int]
    grad_accum: int  # micro-batches per process and optimizer step
    steps_per_epoch: int
    total_steps: int
    records: list[dict[str, Any]] = field(default_factory=list)  # the history (metrics.jsonl)

    @property
    def stage(self) -> StageConfig:
        return self.cfg.section

    @property
    def show(self) -> bool:
        return self.cfg.progress and self.accelerator.is_main_process


# ----------------------------------------------------------------------------------------- setup
def setup(cfg: MLLMTrainConfig, lifecycle: RunLifecycle) -> tuple[StageContext, StageState]:
    """Build everything the loop needs; the run folder is started once the samples (the input) are built."""
    stage = cfg.section
    check_4bit_supported(cfg.llm)  # before the feature cache is built: the one thing a CPU cannot do
    acc = Accelerator(mixed_precision=cfg.mixed_precision if torch.cuda.is_available() else "no")
    if stage.batch_size % (stage.micro_batch_size * acc.num_processes):
        raise ConfigError(
            f"{cfg.stage}.batch_size ({stage.batch_size}) must be a multiple of micro_batch_size x "
            f"processes ({stage.micro_batch_size} x {acc.num_processes})"
        )
    grad_accum = stage.batch_size // (stage.micro_batch_size * acc.num_processes)
    acc.gradient_accumulation_steps = grad_accum  # known only now: it depends on the number of processes
    root = Path(cfg.data.root)
    hierarchy = load_hierarchy(cfg.data.categories or root)
    train_list = root / "splits" / str(cfg.data.label_rate) / "train.csv"
    val_list = root / cfg.eval.list_file if cfg.eval.list_file else None
    lists = [train_list] + ([val_list] if val_list else [])
    cache = build_features(cfg, acc, lists)
    tokenizer = load_tokenizer(cfg.llm.name_or_path, trust_remote_code=cfg.llm.trust_remote_code)
    builder = PromptBuilder.from_config(tokenizer, cfg.prompt, num_video_tokens=cache.token_shape[0])
    torch.manual_seed(cfg.seed)  # here: building the cache may draw from the RNG (DataLoader seeds), or not
    model = build_model(cfg, cache, builder.video_token_id)
    max_length = getattr(model.llm.config, "max_position_embeddings", None)
    samples, counts, generated = build_samples(cfg, hierarchy, train_list, cfg.data.questions, cache)
    features = OnTheFlyFeatures(cfg.features, cache, lists, acc.device) if cfg.features.on_the_fly else cache
    generated_val, val = [], None
    try:
        data = InstructionData(samples, builder, features, max_length)
        if val_list:
            val_samples, _, generated_val = build_samples(cfg, hierarchy, val_list, cfg.eval.questions, cache)
            val = InstructionData(val_samples, builder, features, max_length) if val_samples else None
    except (ValueError, KeyError) as err:
        raise ConfigError(f"{cfg.stage} data: {err}") from None
    steps_per_epoch = len(data) // stage.batch_size
    if steps_per_epoch == 0:
        raise ConfigError(
            f"{cfg.stage}.batch_size ({stage.batch_size}) exceeds the {len(data)} training samples"
        )
    lifecycle.start()
    if acc.is_main_process:  # the questions the stage trains and validates on, when generated
        for list_file, questions in ((train_list, generated), (val_list, generated_val)):
            if questions:
                write_questions(lifecycle.dir / f"questions_{list_file.stem}.json", questions)

    params = [p for p in model.parameters() if p.requires_grad]
    trainable_names = [n for n, p in model.named_parameters() if p.requires_grad]
    groups = model.param_groups(stage.lr, stage.projector_lr)  # the projector at its own rate
    optimizer = torch.optim.AdamW(groups, weight_decay=stage.weight_decay)
    sharding.set_wrap_policy(acc, model)  # FSDP: units of one dtype each
    if acc.distributed_type == DistributedType.DEEPSPEED:  # no DataLoader is prepared to infer it from
        acc.state.deepspeed_plugin.deepspeed_config["train_micro_batch_size_per_gpu"] = stage.micro_batch_size
    model, optimizer = acc.prepare(model, optimizer)
    ctx = StageContext(
        cfg=cfg,
        lifecycle=lifecycle,
        accelerator=acc,
        model=model,
        optimizer=optimizer,
        params=params,
        trainable_names=trainable_names,
        data=data,
        val=val,
        cache=cache,
        sample_counts=counts,
        grad_accum=grad_accum,
        steps_per_epoch=steps_per_epoch,
        total_steps=stage.max_steps or stage.epochs * steps_per_epoch,
    )
    state = StageState()
    ckpt = lifecycle.restore_point()
    if ckpt is not None:
        state = restore_run_checkpoint(ctx, ckpt)
        print(f"resumed from {ckpt} (step {state.step} of {ctx.total_steps})")
    # records past the checkpoint were not part of the resumed history
    ctx.records = rewind_history(lifecycle.dir / HISTORY, state.step, write=acc.is_main_process)
    if acc.is_main_process:
        print(
            f"{cfg.stage}: {len(data)} samples, {ctx.total_steps} steps of {stage.batch_size} "
            f"({acc.num_processes} process(es) x {grad_accum} micro-batches of {stage.micro_batch_size}), "
            f"{sum(p.numel() for p in params)} trainable parameters"
        )
    return ctx, state


def build_model(cfg: MLLMTrainConfig, cache: FeatureCache, video_token_id: int) -> MultimodalModel:
    """The stage's model: LoRA in stage B only, the trainable parts of the section, ``init_from``'s weights."""
    stage = cfg.section
    lora = dataclasses.replace(cfg.lora, enabled=cfg.lora.enabled and cfg.stage == "instruct")
    mcfg = MultimodalConfig(
        llm=cfg.llm,
        projector=dataclasses.replace(cfg.projector),
        lora=lora,
        projector_trainable=stage.train_projector,
        llm_trainable=stage.train_llm,
    )
    model = MultimodalModel.build(
        mcfg,
        video_token_id=video_token_id,
        encoder_dim=cache.token_shape[1],
        encoder_fingerprint=cache.fingerprint,
    )
    if stage.init_from:
        model.init_from(stage.init_from)
    model.instruction = {  # how this stage's prompts are built, saved with the model
        "caption_question": CAPTION_QUESTION,
        "caption_format": CAPTION_FORMAT,
        "answer_format": ANSWER_FORMAT,
        "stage": cfg.stage,
        "template": cfg.prompt.template,
        "encoder": cache.index["encoder"],
        "num_video_tokens": cache.token_shape[0],
        "score_target": "answer" if cfg.stage == "instruct" else "caption",
    }
    return model


# ----------------------------------------------------------------------------------------- train
def batch_nll(model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Summed next-token NLL over the tokens that carry loss (a float32 scalar)."""
    out = model(
        input_ids=batch["input_ids"],
        attention_mask=batch["attention_mask"],
        video_features=batch["video_features"],
        use_cache=False,
    )
    logits = out.logits[:, :-1].float()  # [B, L-1, V]: position t predicts token t+1
    labels = batch["labels"][:, 1:].flatten()
    return F.cross_entropy(logits.flatten(0, 1), labels, ignore_index=IGNORE_INDEX, reduction="sum")


def train_one_epoch(ctx: StageContext, state: StageState, epoch: int) -> None:
    """Optimizer steps from ``state.step`` to the end of ``epoch`` (or of training)."""
    cfg, stage, acc, lifecycle = ctx.cfg, ctx.stage, ctx.accelerator, ctx.lifecycle
    model, optimizer, data = ctx.model, ctx.optimizer, ctx.data
    per_epoch, total, size = ctx.steps_per_epoch, ctx.total_steps, stage.batch_size
    order = epoch_order(len(data), cfg.seed, epoch)
    end = min((epoch + 1) * per_epoch, total)
    model.train()
    bar = tqdm(
        total=end - state.step, desc=f"{cfg.stage} epoch {epoch + 1}", disable=not ctx.show, leave=False
    )
    while state.step < end:
        started = time.perf_counter()
        k = state.step - epoch * per_epoch
        global_batch = order[k * size : (k + 1) * size].tolist()
        tokens = data.num_loss_tokens(global_batch)
        # Each process' gradient is averaged over processes and divided by grad_accum in backward:
        # undo both, so the step's gradient is that of (summed NLL of the global batch) / tokens.
        scale = acc.num_processes * ctx.grad_accum / max(1, tokens)
        lr = lr_at(stage, state.step, total)
        for group in optimizer.param_groups:  # before backward: DeepSpeed steps inside it
            group["lr"] = lr_at(stage, state.step, total, peak=group["peak_lr"])
        local = torch.zeros((), dtype=torch.float64, device=acc.device)
        micro_batches = process_micro_batches(
            global_batch, acc.process_index, acc.num_processes, ctx.grad_accum
        )
        for micro in micro_batches:
            batch = {key: value.to(acc.device) for key, value in data.batch(micro).items()}
            with acc.accumulate(model), acc.autocast():
                nll = batch_nll(model, batch)
                acc.backward(nll * scale)
            local += nll.detach().double()
        votes = torch.stack([local, local.new_tensor(float(lifecycle.stop_requested))])
        votes = acc.reduce(votes, "sum")  # one collective: the step's loss and whether any process stops
        loss, stop_now = votes[0].item() / max(1, tokens), votes[1].item() > 0
        finite = math.isfinite(loss)
        if finite:  # else the batch is consumed, the update skipped
            if stage.max_grad_norm > 0:
                acc.clip_grad_norm_(ctx.params, stage.max_grad_norm)
            optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        state.step += 1
        seconds = round(time.perf_counter() - started, 4)
        loss_or_none = loss if finite else None
        record = {"step": state.step, "epoch": epoch + 1, "loss": loss_or_none, "lr": lr, "tokens": tokens}
        log_record(ctx, {**record, "seconds": seconds})
        bar.update(1)
        bar.set_postfix(loss=f"{loss:.4f}")
        where = f"step {state.step}; lower {cfg.stage}.lr or check the features"
        count_loss(state, finite, cfg.max_nonfinite_steps, where)
        if stop_now:
            bar.close()
            # on an epoch's last step the epoch's evaluation is still due: the resumed run does it first
            state.epoch_closed = not (state.step % per_epoch == 0 or state.step == total)
            lifecycle.stop(state, lambda: save_run_checkpoint(ctx, state), f"step {state.step}")
        if stage.checkpoint_every and state.step % stage.checkpoint_every == 0 and state.step < end:
            save_run_checkpoint(ctx, state)
    bar.close()


def log_record(ctx: StageContext, record: dict[str, Any]) -> None:
    ctx.records.append(record)
    if ctx.accelerator.is_main_process:
        append_history(ctx.lifecycle.dir / HISTORY, record)


@torch.no_grad()
def evaluate(ctx: StageContext) -> float | None:
    """Token-level mean NLL over the val samples (sharded over processes)."""
    val = ctx.val
    if val is None:
        return None
    acc, micro = ctx.accelerator, ctx.stage.micro_batch_size
    # The unwrapped model: a DDP forward could broadcast buffers, a collective the shards would not match;
    # under FSDP the wrapped one (the unwrapped module holds shards), as often on every process.
    model = ctx.model if sharding.is_sharded(acc) else acc.unwrap_model(ctx.model)
    model.eval()
    totals = torch.zeros(2, dtype=torch.float64, device=acc.device)
    for chunk in sharding.forward_chunks(acc, len(val), micro):
        with acc.autocast():
            nll = batch_nll(model, {k: v.to(acc.device) for k, v in val.batch(chunk or [0]).items()})
        totals[0] += nll.double() if chunk else 0.0
        totals[1] += val.num_loss_tokens(chunk)
    totals = acc.reduce(totals, "sum")
    ctx.model.train()
    return totals[0].item() / max(1.0, totals[1].item())


def close_epoch(ctx: StageContext, state: StageState, epoch: int) -> None:
    """After an epoch's last step: its validation line, then a checkpoint."""
    val_loss = evaluate(ctx)
    if val_loss is not None:
        log_record(ctx, {"step": state.step, "epoch": epoch + 1, "val_loss": val_loss})
    ctx.lifecycle.tick(state)
    state.epoch_closed = True
    save_run_checkpoint(ctx, state)


def train(ctx: StageContext, state: StageState) -> None:
    """The epochs from the checkpoint's step to ``total_steps``."""
    ctx.lifecycle.start_clock(state)
    if not state.epoch_closed:  # SIGTERM came on an epoch's last step: its evaluation is still due
        close_epoch(ctx, state, (state.step - 1) // ctx.steps_per_epoch)
    while state.step < ctx.total_steps:
        epoch = state.step // ctx.steps_per_epoch
        train_one_epoch(ctx, state, epoch)
        close_epoch(ctx, state, epoch)


# ----------------------------------------------------------------------------------------- checkpoint
def save_run_checkpoint(ctx: StageContext, state: StageState) -> None:
    """Trainable weights, optimizer state, every process' RNG and the step; atomic (all processes call)."""
    acc = ctx.accelerator
    tensors = prefixed(sharding.trainable_state(acc, ctx.model, ctx.trainable_names), "trainable")
    payload: dict[str, Any] = {
        "trainable_names": ctx.trainable_names,
        "processes": acc.num_processes,
        "optim": None,
    }
    if acc.distributed_type in (DistributedType.NO, DistributedType.MULTI_CPU, DistributedType.MULTI_GPU):
        opt_tensors, payload["optim"] = flatten_optimizer(ctx.optimizer.state_dict(), "optim")
        tensors.update(opt_tensors)
    name = f"step_{state.step:08d}"
    ctx.lifecycle.save_checkpoint(name, tensors, state, ctx.cfg.keep_checkpoints, payload)


def restore_run_checkpoint(ctx: StageContext, path: Path) -> StageState:
    tensors, state, payload = ctx.lifecycle.load_checkpoint(path, StageState)
    if payload["trainable_names"] != ctx.trainable_names:
        raise ConfigError(f"{path} holds other trainable weights than this configuration trains")
    sharding.load_weights(ctx.accelerator, ctx.model, unprefixed(tensors, "trainable"))
    if payload["optim"] is not None:
        ctx.optimizer.load_state_dict(unflatten_optimizer(tensors, payload["optim"], "optim"))
    else:
        print(f"{path}: no optimizer state ({ctx.accelerator.distributed_type}); the optimizer restarts")
    return state


# ----------------------------------------------------------------------------------------- cleanup
def cleanup(ctx: StageContext, state: StageState) -> dict[str, Any]:
    """Save the MLLM, write loss.png, report.md and, last, metrics.json."""
    cfg, stage, acc, run_dir = ctx.cfg, ctx.stage, ctx.accelerator, ctx.lifecycle.dir
    val_losses = [r["val_loss"] for r in ctx.records if "val_loss" in r]
    val_loss = val_losses[-1] if val_losses else evaluate(ctx)
    steps = [r for r in ctx.records if "loss" in r]
    losses = [r["loss"] for r in steps if r["loss"] is not None]
    metrics = {
        "stage": cfg.stage,
        "steps": state.step,
        "epochs": math.ceil(state.step / ctx.steps_per_epoch),
        "processes": acc.num_processes,
        "global_batch": stage.batch_size,
        "micro_batch": stage.micro_batch_size,
        "grad_accum": ctx.grad_accum,
        **ctx.sample_counts,
        "first_loss": losses[0] if losses else None,
        "final_loss": statistics.fmean(losses[-5:]) if losses else None,
        "val_loss": val_loss,
        "nonfinite_steps": state.nonfinite_steps,
        "trainable_parameters": sum(p.numel() for p in ctx.params),
        "median_step_seconds": statistics.median(r["seconds"] for r in steps[1:]) if len(steps) > 1 else None,
        "minutes": state.seconds / 60,
        "machine": machine_summary(),
        "feature_cache": str(ctx.cache.directory),
        "encoder_fingerprint": ctx.cache.fingerprint,
    }
    state_dict = sharding.full_state_dict(acc, ctx.model)  # collective under FSDP: the shards gathered
    if acc.is_main_process:
        acc.unwrap_model(ctx.model).save_pretrained(run_dir / "mllm", state_dict=state_dict)
        plot_losses(ctx.records, cfg.stage, run_dir / "loss.png")
        write_stage_report(metrics, run_dir / "report.md")
    return ctx.lifecycle.finish(metrics)


# ----------------------------------------------------------------------------------------- run
def run(cfg: MLLMTrainConfig, resume: bool = False) -> dict[str, Any]:
    """Train the stage ``cfg.stage``; returns its metrics (a finished run's, without training, on resume)."""
    with RunLifecycle(cfg.section.out_dir, cfg, resume=resume, may_differ=RESUME_MAY_DIFFER) as lifecycle:
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
        epilog=EXIT_CODES + "\n" + config_epilog(MLLMTrainConfig, argv),
    )
    parser.add_argument("--config", help="YAML config (see configs/mllm/)")
    parser.add_argument("--stage", choices=STAGES, help="stage to run (overrides the config's 'stage')")
    parser.add_argument("--resume", action="store_true", help="continue from the run's last checkpoint")
    parser.add_argument(
        "--trust-remote-code",
        action="store_true",
        help="run modelling/tokenizer code shipped with a hub LLM (= llm.trust_remote_code=true; off by "
        "default: only for checkpoints you trust)",
    )
    parser.add_argument("overrides", nargs="*", help="key.sub=value overrides")
    args = parser.parse_args(argv)
    overrides = args.overrides + ([f"stage={args.stage}"] if args.stage else [])
    overrides += ["llm.trust_remote_code=true"] if args.trust_remote_code else []
    cfg = None
    try:
        cfg = load_config(MLLMTrainConfig, args.config, overrides)
        metrics = run(cfg, resume=args.resume)
    except (Exception, KeyboardInterrupt) as err:  # noqa: BLE001 - exit_code gives each its exit code
        return exit_code(err, BAD_INPUT_ERRORS, lambda: cfg.section.out_dir)
    print(
        f"done: stage {cfg.stage}, {metrics['steps']} steps, loss {metrics['first_loss']} -> "
        f"{metrics['final_loss']} -> {cfg.section.out_dir}/mllm"
    )
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
