"""Train the video MLLM in two stages on cached encoder features: align (stage A), then instruct (stage B).

    python scripts/train_mllm.py --config configs/mllm/synthgym_tiny.yaml --stage align [key=value ...]
    python scripts/train_mllm.py --config configs/mllm/synthgym_tiny.yaml --stage instruct
    python scripts/train_mllm.py --config ... --stage instruct --resume   # continue from the last checkpoint
    ACCELERATE_USE_CPU=1 accelerate launch --multi_gpu --num_processes 2 scripts/train_mllm.py ...  # CPU DDP
    accelerate launch --config_file configs/accelerate/ddp.yaml scripts/train_mllm.py \\
        --config configs/mllm/vicuna7b_qlora.yaml --stage instruct                      # GPUs, QLoRA

On a CPU, DDP needs torchrun's launcher (``--multi_gpu``) with ``ACCELERATE_USE_CPU=1`` (gloo): accelerate
1.15's ``accelerate launch --cpu --num_processes 2`` starts ONE process unless MPI is set up.

Stage A (``align``): LLM frozen, projector trained on clip -> "The athlete performs <element>.".
Stage B (``instruct``): projector + LoRA trained on Gym-QA questions, answer "C. <option text>"; it starts
from stage A's projector (``instruct.init_from``). Both stages use only the labeled clips of
``data.label_rate`` (see ``mllm/instruction_data.py``). The YAML holds the shared groups and one section
per stage (``align:``, ``instruct:``); ``--stage`` picks the section.

Features come from the feature cache of ``features.encoder`` / ``features.weights`` under
``features.cache_root``; clips not cached yet are encoded first (main process). Optimizer step ``s``
consumes global batch ``s`` of a permutation seeded by (seed, epoch); each process takes its slice, cut
into micro-batches. The loss of a step is the summed token NLL of the global batch over its number of
loss tokens, whatever the split into processes and micro-batches, so 1 and N processes train alike.

The stage directory (``<stage>.out_dir``) receives ``config.yaml`` (resolved), ``metrics.jsonl`` (one line
per optimizer step, plus validation lines), ``checkpoints/`` (atomic safetensors + JSON: trainable
weights, optimizer state, per-process RNG, step; every epoch, every ``checkpoint_every`` steps and on
SIGTERM), ``mllm/`` (``MultimodalModel.save_pretrained`` + ``instruction.json``), ``report.md``,
``loss.png`` and, last and atomically, ``metrics.json`` (its presence marks a finished run).

Crash safety: killed at any moment (even SIGKILL), the run folder holds the previous complete checkpoint
or none, never half a file; ``--resume`` removes the temporary files of interrupted writes, drops the
log lines past the checkpoint (and a truncated last line) and continues on the uninterrupted trajectory.
A non-finite loss skips its step (the batch is consumed, the update not applied) and is counted;
``max_nonfinite_steps`` of them in a row stop the run.

Exit codes: 0 done; 1 bad input or configuration (one line naming the file / key: config, list, question
file and record, clip that cannot be decoded or encoded under ``features.on_bad_sample=error``, stale
cache); 3 stopped after ``max_nonfinite_steps`` non-finite losses in a row; 143 stopped by SIGTERM after
writing a checkpoint (resume with --resume).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import signal
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F
from accelerate import Accelerator
from accelerate.utils import DistributedType, broadcast_object_list, gather_object
from safetensors.torch import load_file
from tqdm import tqdm

from gym_qa.clips import clip_id_of
from gym_qa.hierarchy import Hierarchy, HierarchyError, load_hierarchy
from gym_qa.lists import ListFileError, read_list
from gym_qa.question_generator import GeneratorConfig, GeneratorError
from gym_qa.questions import QuestionFormatError, load_questions, write_questions
from mllm.encoders import build_video_encoder
from mllm.feature_cache import (
    EncodingError,
    FeatureCache,
    StaleCacheError,
    build_feature_cache,
    encode_entries,
)
from mllm.instruction_data import (
    InstructionData,
    caption_samples,
    epoch_order,
    generate_questions,
    process_micro_batches,
    question_samples,
    write_instruction_meta,
)
from mllm.language_model import LLMConfig, LoraOptions, load_adapter_weights
from mllm.multimodal_model import (
    ADAPTER_DIR,
    PROJECTOR_FILE,
    MultimodalConfig,
    MultimodalModel,
    read_checkpoint_config,
)
from mllm.projector import ProjectorConfig
from mllm.prompting import IGNORE_INDEX, PromptBuilder, PromptConfig, TemplateMismatchError
from mllm.tokenizer import TokenizerLoadError, load_tokenizer
from sefar_encoder.checkpoint import (
    clean_stale,
    flatten_optimizer,
    latest_checkpoint,
    load_checkpoint,
    prefixed,
    prune_checkpoints,
    remove_temporaries,
    save_checkpoint,
    unflatten_optimizer,
    unprefixed,
    write_text_atomic,
)
from sefar_encoder.config import ConfigError, check_resume_config, config_epilog, load_config, save_config
from sefar_encoder.dataset import BadClipsError
from sefar_encoder.decoding import DecodeError

STAGES = ("align", "instruct")


# ----------------------------------------------------------------------------------------- config
@dataclass
class FeatureConfig:
    encoder: str = field(default="sefar", metadata={"help": "video encoder name (mllm.encoders.ENCODERS)"})
    weights: str = field(default="", metadata={"help": "encoder checkpoint directory / file, or hub id"})
    options: dict[str, Any] = field(default_factory=dict, metadata={"help": "encoder builder options"})
    cache_root: str = field(default="data/features", metadata={"help": "feature cache root"})
    batch_size: int = field(default=8, metadata={"help": "clips per encoder call when caching"})
    num_workers: int = field(default=0, metadata={"help": "decoding workers when caching"})
    on_bad_sample: Literal["error", "skip"] = field(
        default="error", metadata={"help": "undecodable clip: fail, or skip it (its samples are dropped)"}
    )
    on_the_fly: bool = field(
        default=False,
        metadata={"help": "encode each batch's clips at every step instead of reading the cache (slow; "
                          "scripts/bench_cache.py measures what the cache saves)"},
    )


@dataclass
class DataConfig:
    root: str = field(default="data/synthgym-tiny", metadata={"help": "data set dir (splits/, val.csv)"})
    categories: str = field(default="", metadata={"help": "hierarchy source; empty = the data root"})
    label_rate: int = field(default=5, metadata={"help": "labeled subset splits/<rate>/train.csv"})
    questions: list[str] = field(
        default_factory=list,
        metadata={"help": "Gym-QA JSON file(s) for stage B (labeled clips only); empty = generate"},
    )
    question_types: list[str] = field(default_factory=lambda: ["what"], metadata={"help": "generated types"})
    distractors: str = field(default="uniform", metadata={"help": "uniform, hard or frequency"})
    question_seed: int = field(default=0, metadata={"help": "seed of generated questions"})


@dataclass
class EvalConfig:
    list_file: str = field(default="val.csv", metadata={"help": "val-loss clips (under data.root); '' = none"})
    questions: list[str] = field(
        default_factory=list, metadata={"help": "stage B val questions; empty = generated from eval.list_file"}
    )


@dataclass
class StageConfig:
    out_dir: str = field(default="runs/mllm", metadata={"help": "run directory of this stage"})
    init_from: str = field(default="", metadata={"help": "MLLM checkpoint whose projector/adapter start"})
    epochs: int = field(default=1, metadata={"help": "passes over the samples"})
    max_steps: int = field(default=0, metadata={"help": "optimizer steps; > 0 overrides epochs"})
    batch_size: int = field(default=8, metadata={"help": "global batch: samples per optimizer step"})
    micro_batch_size: int = field(default=8, metadata={"help": "samples per forward and process"})
    lr: float = field(default=1e-3, metadata={"help": "peak learning rate (AdamW)"})
    weight_decay: float = field(default=0.0, metadata={"help": "AdamW weight decay"})
    warmup_fraction: float = field(default=0.03, metadata={"help": "linear warm-up, then cosine to 0"})
    max_grad_norm: float = field(default=1.0, metadata={"help": "gradient clipping; 0 = off"})
    train_projector: bool = field(default=True, metadata={"help": "train the projector"})
    train_llm: bool = field(default=False, metadata={"help": "train the LLM (LoRA when lora.enabled)"})
    checkpoint_every: int = field(default=0, metadata={"help": "also checkpoint every N steps; 0 = epochs"})


@dataclass
class AlignConfig(StageConfig):
    out_dir: str = field(default="runs/mllm/align", metadata={"help": "run directory of stage A"})


@dataclass
class InstructConfig(StageConfig):
    out_dir: str = field(default="runs/mllm/instruct", metadata={"help": "run directory of stage B"})
    init_from: str = field(default="runs/mllm/align/mllm", metadata={"help": "stage A's MLLM (its projector)"})
    lr: float = field(default=2e-4, metadata={"help": "peak learning rate (AdamW)"})
    train_llm: bool = field(default=True, metadata={"help": "train the LLM (LoRA when lora.enabled)"})


@dataclass
class TrainConfig:
    stage: Literal["align", "instruct"] = field(default="align", metadata={"help": "section to run"})
    seed: int = field(default=0, metadata={"help": "initialisation, data order, dropout"})
    mixed_precision: Literal["no", "bf16", "fp16"] = field(default="no", metadata={"help": "CUDA only"})
    max_nonfinite_steps: int = field(default=5, metadata={"help": "stop after N non-finite losses in a row"})
    keep_checkpoints: int = field(default=1, metadata={"help": "checkpoints kept on disk"})
    progress: bool = field(default=True, metadata={"help": "progress bars"})
    llm: LLMConfig = field(default_factory=LLMConfig)
    projector: ProjectorConfig = field(default_factory=ProjectorConfig)
    lora: LoraOptions = field(default_factory=LoraOptions)  # applied in stage B only
    prompt: PromptConfig = field(default_factory=PromptConfig)
    features: FeatureConfig = field(default_factory=FeatureConfig)
    data: DataConfig = field(default_factory=DataConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    align: AlignConfig = field(default_factory=AlignConfig)
    instruct: InstructConfig = field(default_factory=InstructConfig)


# ----------------------------------------------------------------------------------------- build
def build_features(cfg: TrainConfig, acc: Accelerator, lists: list[Path]) -> FeatureCache:
    """The encoder's feature cache, brought up to date for ``lists`` by the main process."""
    f = cfg.features
    directory = None
    if acc.is_main_process:
        try:
            encoder = build_video_encoder(f.encoder, f.weights, **f.options).to(acc.device)
        except (ValueError, TypeError) as err:
            raise ConfigError(f"features: {err}") from None
        report = build_feature_cache(
            encoder, lists, f.cache_root, batch_size=f.batch_size, num_workers=f.num_workers,
            on_bad_sample=f.on_bad_sample, progress=cfg.progress,
        )
        print(f"feature cache {report.directory}: {report.encoded} encoded, {report.reused} reused, "
              f"{len(report.skipped)} skipped")
        directory = str(report.directory)
    directory = broadcast_object_list([directory])[0]
    return FeatureCache(directory)


class OnTheFlyFeatures:
    """``features.on_the_fly``: the cache's read side (``get``, ``in``), but each call decodes and encodes
    the clips again with the encoder that made the cache (same code path: ``encode_entries``)."""

    def __init__(self, cfg: FeatureConfig, cache: FeatureCache, lists: list[Path], device: torch.device):
        self.encoder = build_video_encoder(cfg.encoder, cfg.weights, **cfg.options).to(device)
        if self.encoder.fingerprint() != cache.fingerprint:
            raise ConfigError(f"features.on_the_fly: the encoder does not match the cache {cache.directory}")
        self.cache, self.directory, self.num_workers = cache, cache.directory, cfg.num_workers
        self.entries = {clip_id_of(e.raw_path): e for path in lists for e in read_list(path)}

    def __contains__(self, cid: object) -> bool:
        return cid in self.cache

    def get(self, clip_ids: list[str]) -> torch.Tensor:
        """``tokens [B, N, D]`` in the cache's dtype, encoded now."""
        batches = encode_entries(self.encoder, [self.entries[c] for c in clip_ids], batch_size=len(clip_ids),
                                 num_workers=self.num_workers, progress=False)
        return torch.cat([b.tokens for b in batches]).to(self.cache.dtype)


def build_samples(cfg: TrainConfig, hierarchy: Hierarchy, list_file: Path, question_files: list[str],
                  run_dir: Path | None, cache: FeatureCache) -> tuple[list, dict[str, int]]:
    """The stage's samples about the clips of ``list_file`` whose features exist."""
    entries = read_list(list_file, hierarchy.num_classes)
    if cfg.stage == "align":
        samples, dropped = caption_samples(entries, hierarchy), 0
    elif question_files:
        questions = [q for path in question_files for q in load_questions(path)]
        samples, dropped = question_samples(questions, {clip_id_of(e.raw_path) for e in entries})
        if questions and not samples:
            raise ConfigError(f"{', '.join(question_files)}: none of the {len(questions)} questions is "
                              f"about a clip of {list_file} (e.g. video {questions[0].video!r})")
    else:
        generator = GeneratorConfig(types=tuple(cfg.data.question_types), distractors=cfg.data.distractors,
                                    seed=cfg.data.question_seed, dataset=Path(cfg.data.root).name)
        questions, _ = generate_questions(entries, hierarchy, generator)
        if run_dir is not None:
            write_questions(run_dir / f"questions_{list_file.stem}.json", questions)
        samples, dropped = question_samples(questions)
    kept = [s for s in samples if s.clip_id in cache]
    if samples and not kept:
        raise ConfigError(f"{list_file}: no clip of the {len(samples)} samples has features in "
                          f"{cache.directory} (skipped while caching: {sorted(cache.skipped)[:3]})")
    return kept, {"samples": len(kept), "dropped_other_clips": dropped, "dropped_no_features": len(samples) - len(kept)}


def build_model(cfg: TrainConfig, stage: StageConfig, cache: FeatureCache, video_token_id: int) -> MultimodalModel:
    lora = dataclasses.replace(cfg.lora, enabled=cfg.lora.enabled and cfg.stage == "instruct")
    mcfg = MultimodalConfig(llm=cfg.llm, projector=dataclasses.replace(cfg.projector), lora=lora,
                            projector_trainable=stage.train_projector, llm_trainable=stage.train_llm)
    model = MultimodalModel.build(mcfg, video_token_id=video_token_id, encoder_dim=cache.token_shape[1],
                                  encoder_fingerprint=cache.fingerprint)
    if stage.init_from:
        load_init(model, Path(stage.init_from), cache.fingerprint)
    return model


def load_init(model: MultimodalModel, directory: Path, fingerprint: str) -> None:
    """Start from a saved MLLM: its projector, and its adapter when both have LoRA."""
    meta = read_checkpoint_config(directory)
    if meta["encoder_fingerprint"] and meta["encoder_fingerprint"] != fingerprint:
        raise ConfigError(f"init_from {directory} was trained on features of another encoder "
                          f"({meta['encoder_fingerprint'][:16]}, now {fingerprint[:16]})")
    try:
        model.projector.load_state_dict(load_file(str(directory / PROJECTOR_FILE)))
    except RuntimeError as err:
        raise ConfigError(f"init_from {directory}: projector does not match ({err})") from None
    if meta["adapter"]:
        unexpected = load_adapter_weights(model.llm, directory / ADAPTER_DIR / "adapter_model.safetensors")
        if unexpected:
            raise ConfigError(f"init_from {directory}: adapter keys {unexpected[:3]} do not fit")


# Settings a resumed run may change: they do not alter what is computed.
RESUME_MAY_DIFFER = frozenset({"progress", "keep_checkpoints", "features.num_workers"})


def lr_at(stage: StageConfig, step: int, total: int) -> float:
    """Linear warm-up over ``warmup_fraction`` of the steps, then cosine to 0 (LLaVA's schedule)."""
    warm = int(stage.warmup_fraction * total)
    if step < warm:
        return stage.lr * (step + 1) / warm
    return stage.lr * 0.5 * (1 + math.cos(math.pi * (step - warm) / max(1, total - warm)))


def batch_nll(model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Summed next-token NLL over the tokens that carry loss (a float32 scalar)."""
    out = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                video_features=batch["video_features"], use_cache=False)
    logits = out.logits[:, :-1].float()  # [B, L-1, V]: position t predicts token t+1
    return F.cross_entropy(logits.flatten(0, 1), batch["labels"][:, 1:].flatten(),
                           ignore_index=IGNORE_INDEX, reduction="sum")


# ----------------------------------------------------------------------------------------- state
@dataclass
class RunState:
    step: int = 0  # optimizer steps taken (= global batches consumed)
    nonfinite_steps: int = 0
    nonfinite_in_row: int = 0
    seconds: float = 0.0
    epoch_closed: bool = True  # False: stopped on an epoch's last step before its evaluation (SIGTERM)


class StopRequested(Exception):
    pass


# ----------------------------------------------------------------------------------------- train
def train_one_epoch(ctx: dict[str, Any], state: RunState, epoch: int, stop: dict[str, bool]) -> None:
    """Optimizer steps from ``state.step`` to the end of ``epoch`` (or of training)."""
    cfg, stage, acc = ctx["cfg"], ctx["stage"], ctx["accelerator"]
    model, optimizer, data = ctx["model"], ctx["optimizer"], ctx["data"]
    per_epoch, total, size = ctx["steps_per_epoch"], ctx["total_steps"], stage.batch_size
    order = epoch_order(len(data), cfg.seed, epoch)
    end = min((epoch + 1) * per_epoch, total)
    model.train()
    bar = tqdm(total=end - state.step, desc=f"{cfg.stage} epoch {epoch + 1}", disable=not ctx["show"], leave=False)
    while state.step < end:
        started = time.perf_counter()
        k = state.step - epoch * per_epoch
        global_batch = order[k * size : (k + 1) * size].tolist()
        tokens = data.num_loss_tokens(global_batch)
        # Each process' gradient is averaged over processes and divided by grad_accum in backward:
        # undo both, so the step's gradient is that of (summed NLL of the global batch) / tokens.
        scale = acc.num_processes * ctx["grad_accum"] / max(1, tokens)
        lr = lr_at(stage, state.step, total)
        for group in optimizer.param_groups:  # before backward: DeepSpeed steps inside it
            group["lr"] = lr
        local = torch.zeros((), dtype=torch.float64, device=acc.device)
        for micro in process_micro_batches(global_batch, acc.process_index, acc.num_processes, ctx["grad_accum"]):
            batch = {key: value.to(acc.device) for key, value in data.batch(micro).items()}
            with acc.accumulate(model), acc.autocast():
                nll = batch_nll(model, batch)
                acc.backward(nll * scale)
            local += nll.detach().double()
        votes = acc.reduce(torch.stack([local, local.new_tensor(float(stop["requested"]))]), "sum")
        loss, stop_votes = votes[0].item() / max(1, tokens), votes[1].item()
        if math.isfinite(loss):
            if stage.max_grad_norm > 0:
                acc.clip_grad_norm_(ctx["params"], stage.max_grad_norm)
            optimizer.step()
            state.nonfinite_in_row = 0
        else:  # the batch is consumed, the update skipped
            state.nonfinite_steps += 1
            state.nonfinite_in_row += 1
        optimizer.zero_grad(set_to_none=True)
        state.step += 1
        record = {"step": state.step, "epoch": epoch + 1, "loss": loss if math.isfinite(loss) else None,
                  "lr": lr, "tokens": tokens, "seconds": round(time.perf_counter() - started, 4)}
        log_record(ctx, record)
        bar.update(1)
        bar.set_postfix(loss=f"{loss:.4f}")
        if state.nonfinite_in_row >= cfg.max_nonfinite_steps:
            raise FloatingPointError(f"{state.nonfinite_in_row} non-finite losses in a row at step "
                                     f"{state.step}; lower {cfg.stage}.lr or check the features")
        if stop_votes > 0:
            raise StopRequested
        if stage.checkpoint_every and state.step % stage.checkpoint_every == 0 and state.step < end:
            save_run_checkpoint(ctx, state)
    bar.close()


def log_record(ctx: dict[str, Any], record: dict[str, Any]) -> None:
    ctx["records"].append(record)
    if ctx["accelerator"].is_main_process:
        with open(ctx["run_dir"] / "metrics.jsonl", "a") as f:
            f.write(json.dumps(record) + "\n")


# ----------------------------------------------------------------------------------------- evaluate
@torch.no_grad()
def evaluate(ctx: dict[str, Any]) -> float | None:
    """Token-level mean NLL over the val samples (sharded over processes)."""
    val: InstructionData | None = ctx["val"]
    if val is None:
        return None
    acc = ctx["accelerator"]
    # The unwrapped model: a DDP forward could broadcast buffers, a collective the shards would not match.
    model = acc.unwrap_model(ctx["model"])
    model.eval()
    mine = list(range(acc.process_index, len(val), acc.num_processes))
    micro = ctx["stage"].micro_batch_size
    totals = torch.zeros(2, dtype=torch.float64, device=acc.device)
    for i in range(0, len(mine), micro):
        chunk = mine[i : i + micro]
        with acc.autocast():
            totals[0] += batch_nll(model, {k: v.to(acc.device) for k, v in val.batch(chunk).items()}).double()
        totals[1] += val.num_loss_tokens(chunk)
    totals = acc.reduce(totals, "sum")
    ctx["model"].train()
    return totals[0].item() / max(1.0, totals[1].item())


# ----------------------------------------------------------------------------------------- checkpoint
def save_run_checkpoint(ctx: dict[str, Any], state: RunState) -> None:
    """Trainable weights, optimizer state, every process' RNG and the step; atomic (all processes call)."""
    acc = ctx["accelerator"]
    rng = gather_object([(acc.process_index, torch.get_rng_state())])
    names = set(ctx["trainable_names"])
    if acc.distributed_type == DistributedType.FSDP:  # parameters are sharded: gather a full state dict
        weights = {n: v for n, v in acc.get_state_dict(ctx["model"]).items() if n in names}
    else:
        weights = {n: p.detach() for n, p in acc.unwrap_model(ctx["model"]).named_parameters() if n in names}
    if not acc.is_main_process:
        return
    tensors = prefixed(weights, "trainable")
    tensors.update({f"rng.torch.{rank}": r for rank, r in rng})
    payload: dict[str, Any] = {**dataclasses.asdict(state), "trainable_names": ctx["trainable_names"],
                               "processes": acc.num_processes, "optim": None}
    if acc.distributed_type in (DistributedType.NO, DistributedType.MULTI_CPU, DistributedType.MULTI_GPU):
        opt_tensors, payload["optim"] = flatten_optimizer(ctx["optimizer"].state_dict(), "optim")
        tensors.update(opt_tensors)
    save_checkpoint(ctx["run_dir"], f"step_{state.step:08d}", tensors, payload)
    names = sorted(p.name for p in (ctx["run_dir"] / "checkpoints").glob("step_*"))
    prune_checkpoints(ctx["run_dir"], set(names[-max(1, ctx["cfg"].keep_checkpoints) :]))


def restore_run_checkpoint(ctx: dict[str, Any], path: Path) -> RunState:
    acc = ctx["accelerator"]
    tensors, payload = load_checkpoint(path)
    if payload["trainable_names"] != ctx["trainable_names"]:
        raise ConfigError(f"{path} holds other trainable weights than this configuration trains")
    acc.unwrap_model(ctx["model"]).load_state_dict(unprefixed(tensors, "trainable"), strict=False)
    if payload["optim"] is not None:
        ctx["optimizer"].load_state_dict(unflatten_optimizer(tensors, payload["optim"], "optim"))
    else:
        print(f"{path}: no optimizer state ({acc.distributed_type}); the optimizer restarts")
    rng_key = f"rng.torch.{acc.process_index}"
    torch.set_rng_state(tensors[rng_key] if rng_key in tensors else tensors["rng.torch.0"])
    return RunState(**{f.name: payload.get(f.name, f.default) for f in dataclasses.fields(RunState)})


def read_history(metrics_file: Path) -> list[dict[str, Any]]:
    """The lines of ``metrics.jsonl``; a truncated last line (a kill mid-write) is dropped, any other bad
    line is an error naming it."""
    lines = metrics_file.read_text().splitlines()
    records = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            if number < len(lines):
                raise ConfigError(f"{metrics_file}:{number}: not a JSON line") from None
            print(f"{metrics_file}:{number}: dropped a truncated last line")
    return records


# ----------------------------------------------------------------------------------------- main
def finish(ctx: dict[str, Any], state: RunState, val_loss: float | None) -> dict[str, Any]:
    """Save the MLLM, write metrics.json, report.md and loss.png."""
    cfg, stage, acc, run_dir = ctx["cfg"], ctx["stage"], ctx["accelerator"], ctx["run_dir"]
    steps = [r for r in ctx["records"] if "loss" in r]
    losses = [r["loss"] for r in steps if r["loss"] is not None]
    metrics = {
        "stage": cfg.stage, "steps": state.step, "epochs": math.ceil(state.step / ctx["steps_per_epoch"]),
        "processes": acc.num_processes, "global_batch": stage.batch_size,
        "micro_batch": stage.micro_batch_size, "grad_accum": ctx["grad_accum"], **ctx["sample_counts"],
        "first_loss": losses[0] if losses else None,
        "final_loss": statistics.fmean(losses[-5:]) if losses else None, "val_loss": val_loss,
        "nonfinite_steps": state.nonfinite_steps, "trainable_parameters": ctx["num_trainable"],
        "median_step_seconds": statistics.median(r["seconds"] for r in steps[1:]) if len(steps) > 1 else None,
        "minutes": state.seconds / 60, "feature_cache": str(ctx["cache"].directory),
        "encoder_fingerprint": ctx["cache"].fingerprint,
    }
    model = acc.unwrap_model(ctx["model"])
    if acc.is_main_process:
        import matplotlib

        matplotlib.use("Agg")  # no display on servers
        import matplotlib.pyplot as plt

        model.save_pretrained(run_dir / "mllm")  # metrics.json comes last: it marks the run finished
        write_instruction_meta(run_dir / "mllm", {
            "stage": cfg.stage, "template": cfg.prompt.template, "encoder": ctx["cache"].index["encoder"],
            "num_video_tokens": ctx["cache"].token_shape[0],
            "score_target": "answer" if cfg.stage == "instruct" else "caption"})
        fig, ax = plt.subplots(figsize=(6, 3.5))
        ax.plot([r["step"] for r in steps], [r["loss"] for r in steps], label="train")
        evals = [r for r in ctx["records"] if "val_loss" in r]
        ax.plot([r["step"] for r in evals], [r["val_loss"] for r in evals], "o-", label="val")
        ax.set(xlabel="optimizer step", ylabel="token NLL", title=f"stage {cfg.stage}")
        ax.legend()
        fig.tight_layout()
        tmp = run_dir / ".tmp-loss.png"  # every file of the run is written whole or not at all
        fig.savefig(tmp, dpi=100, format="png")
        tmp.replace(run_dir / "loss.png")
        plt.close(fig)
        fmt = lambda x: "–" if x is None else f"{x:.4f}"
        write_text_atomic(run_dir / "report.md", "\n".join([
            f"# MLLM stage {cfg.stage}", "",
            f"- {metrics['samples']} samples, {state.step} steps of {stage.batch_size} on {acc.num_processes} "
            + f"process(es), {metrics['minutes']:.1f} min",
            f"- loss {fmt(metrics['first_loss'])} -> {fmt(metrics['final_loss'])}; val {fmt(val_loss)}",
            f"- non-finite steps skipped: {state.nonfinite_steps}; model: `mllm/`", "", "![loss](loss.png)", ""]))
        write_text_atomic(run_dir / "metrics.json", json.dumps(metrics, indent=1))
    acc.wait_for_everyone()
    return metrics


def run(cfg: TrainConfig, resume: bool = False) -> dict[str, Any]:
    stage: StageConfig = getattr(cfg, cfg.stage)
    acc = Accelerator(mixed_precision=cfg.mixed_precision if torch.cuda.is_available() else "no")
    if stage.batch_size % (stage.micro_batch_size * acc.num_processes):
        raise ConfigError(f"{cfg.stage}.batch_size ({stage.batch_size}) must be a multiple of micro_batch_size x "
                          f"processes ({stage.micro_batch_size} x {acc.num_processes})")
    grad_accum = stage.batch_size // (stage.micro_batch_size * acc.num_processes)
    acc.gradient_accumulation_steps = grad_accum  # known only now: it depends on the number of processes
    run_dir = Path(stage.out_dir)
    if resume and (run_dir / "metrics.json").is_file():
        return json.loads((run_dir / "metrics.json").read_text())
    if resume:
        check_resume_config(run_dir / "config.yaml", cfg, RESUME_MAY_DIFFER)
    if acc.is_main_process:
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "metrics.json").unlink(missing_ok=True)  # a finished run's summary, now outdated
        save_config(cfg, run_dir / "config.yaml")

    root = Path(cfg.data.root)
    hierarchy = load_hierarchy(cfg.data.categories or root)
    train_list = root / "splits" / str(cfg.data.label_rate) / "train.csv"
    val_list = root / cfg.eval.list_file if cfg.eval.list_file else None
    lists = [train_list] + ([val_list] if val_list else [])
    cache = build_features(cfg, acc, lists)
    tokenizer = load_tokenizer(cfg.llm.name_or_path, trust_remote_code=cfg.llm.trust_remote_code)
    builder = PromptBuilder.from_config(tokenizer, cfg.prompt, num_video_tokens=cache.token_shape[0])
    torch.manual_seed(cfg.seed)  # here: building the cache may draw from the RNG (DataLoader seeds), or not
    model = build_model(cfg, stage, cache, builder.video_token_id)
    max_length = getattr(model.llm.config, "max_position_embeddings", None)
    writer_dir = run_dir if acc.is_main_process else None
    samples, counts = build_samples(cfg, hierarchy, train_list, cfg.data.questions, writer_dir, cache)
    features = OnTheFlyFeatures(cfg.features, cache, lists, acc.device) if cfg.features.on_the_fly else cache
    try:
        data = InstructionData(samples, builder, features, max_length)
        val = None
        if val_list:
            val_samples, _ = build_samples(cfg, hierarchy, val_list, cfg.eval.questions, writer_dir, cache)
            val = InstructionData(val_samples, builder, features, max_length) if val_samples else None
    except (ValueError, KeyError) as err:
        raise ConfigError(f"{cfg.stage} data: {err}") from None
    steps_per_epoch = len(data) // stage.batch_size
    if steps_per_epoch == 0:
        raise ConfigError(f"{cfg.stage}.batch_size ({stage.batch_size}) exceeds the {len(data)} training samples")
    total_steps = stage.max_steps or stage.epochs * steps_per_epoch

    params = [p for p in model.parameters() if p.requires_grad]
    trainable_names = [n for n, p in model.named_parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=stage.lr, weight_decay=stage.weight_decay)
    if acc.distributed_type == DistributedType.DEEPSPEED:  # no DataLoader is prepared to infer it from
        acc.state.deepspeed_plugin.deepspeed_config["train_micro_batch_size_per_gpu"] = stage.micro_batch_size
    model, optimizer = acc.prepare(model, optimizer)
    ctx: dict[str, Any] = {
        "cfg": cfg, "stage": stage, "accelerator": acc, "model": model, "optimizer": optimizer,
        "params": params, "trainable_names": trainable_names, "num_trainable": sum(p.numel() for p in params),
        "data": data, "val": val, "cache": cache, "grad_accum": grad_accum, "sample_counts": counts,
        "steps_per_epoch": steps_per_epoch, "total_steps": total_steps, "run_dir": run_dir, "records": [],
        "show": cfg.progress and acc.is_main_process,
    }
    state = RunState()
    if resume:
        if acc.is_main_process:
            for p in clean_stale(run_dir) + remove_temporaries(run_dir):
                print(f"removed stale temporary file {p}")
        acc.wait_for_everyone()
        ckpt = latest_checkpoint(run_dir)
        if ckpt is not None:
            state = restore_run_checkpoint(ctx, ckpt)
            print(f"resumed from {ckpt} (step {state.step} of {total_steps})")
    metrics_file = run_dir / "metrics.jsonl"
    if metrics_file.is_file():  # records past the checkpoint were not part of the resumed history
        ctx["records"] = [r for r in read_history(metrics_file) if r["step"] <= state.step]
        acc.wait_for_everyone()
        if acc.is_main_process:
            write_text_atomic(metrics_file, "".join(json.dumps(r) + "\n" for r in ctx["records"]))
    if acc.is_main_process:
        print(f"{cfg.stage}: {len(data)} samples, {total_steps} steps of {stage.batch_size} "
              f"({acc.num_processes} process(es) x {grad_accum} micro-batches of {stage.micro_batch_size}), "
              f"{ctx['num_trainable']} trainable parameters")

    stop = {"requested": False}
    previous = signal.signal(signal.SIGTERM, lambda *_: stop.update(requested=True))
    started = time.time() - state.seconds

    def close_epoch(epoch: int) -> None:  # after an epoch's last step: validation line, then checkpoint
        val_loss = evaluate(ctx)
        if val_loss is not None:
            log_record(ctx, {"step": state.step, "epoch": epoch + 1, "val_loss": val_loss})
        state.seconds, state.epoch_closed = time.time() - started, True
        save_run_checkpoint(ctx, state)

    try:
        if not state.epoch_closed:  # SIGTERM came on an epoch's last step: its evaluation is still due
            close_epoch((state.step - 1) // steps_per_epoch)
        while state.step < total_steps:
            epoch = state.step // steps_per_epoch
            try:
                train_one_epoch(ctx, state, epoch, stop)
            except StopRequested:
                at_end = state.step % steps_per_epoch == 0 or state.step == total_steps
                state.seconds, state.epoch_closed = time.time() - started, not at_end
                save_run_checkpoint(ctx, state)
                print(f"SIGTERM: checkpoint written at step {state.step}; resume with --resume")
                raise
            close_epoch(epoch)
    finally:
        signal.signal(signal.SIGTERM, previous)
    val_losses = [r["val_loss"] for r in ctx["records"] if "val_loss" in r]
    return finish(ctx, state, val_losses[-1] if val_losses else evaluate(ctx))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=config_epilog(TrainConfig, argv),
    )
    parser.add_argument("--config", help="YAML config (see configs/mllm/)")
    parser.add_argument("--stage", choices=STAGES, help="stage to run (overrides the config's 'stage')")
    parser.add_argument("--resume", action="store_true", help="continue from the run's last checkpoint")
    parser.add_argument("--trust-remote-code", action="store_true",
                        help="run modelling/tokenizer code shipped with a hub LLM (= llm.trust_remote_code="
                             "true; off by default: only for checkpoints you trust)")
    parser.add_argument("overrides", nargs="*", help="key.sub=value overrides")
    args = parser.parse_args(argv)
    try:
        overrides = args.overrides + ([f"stage={args.stage}"] if args.stage else [])
        overrides += ["llm.trust_remote_code=true"] if args.trust_remote_code else []
        cfg = load_config(TrainConfig, args.config, overrides)
        metrics = run(cfg, resume=args.resume)
    except (ConfigError, ListFileError, HierarchyError, QuestionFormatError, GeneratorError, StaleCacheError,
            TemplateMismatchError, TokenizerLoadError, BadClipsError, DecodeError, EncodingError,
            FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    except FloatingPointError as err:
        print(f"error: {err}", file=sys.stderr)
        return 3
    except StopRequested:
        return 143
    print(f"done: stage {cfg.stage}, {metrics['steps']} steps, loss {metrics['first_loss']} -> "
          f"{metrics['final_loss']} -> {getattr(cfg, cfg.stage).out_dir}/mllm")
    return 0


if __name__ == "__main__":
    sys.exit(main())
