"""The MLLM stages' training configuration (``scripts/train_mllm.py``): shared groups and one section per
stage (``align:`` = stage A, ``instruct:`` = stage B); ``stage`` picks the section a run trains.

    cfg = load_config(MLLMTrainConfig, "configs/mllm/synthgym_tiny.yaml", ["stage=instruct"])
    stage = cfg.section                                  # the InstructConfig
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Literal

from mllm.language_model import LLMConfig, LoraOptions
from mllm.projector import ProjectorConfig
from mllm.prompting import PromptConfig

STAGES = ("align", "instruct")


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
        metadata={
            "help": "encode each batch's clips at every step instead of reading the cache (slow; "
            "scripts/bench_cache.py measures what the cache saves)"
        },
    )


@dataclass
class InstructionDataConfig:
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
class ValidationConfig:
    list_file: str = field(
        default="val.csv", metadata={"help": "val-loss clips (under data.root); '' = none"}
    )
    questions: list[str] = field(
        default_factory=list,
        metadata={"help": "stage B val questions; empty = generated from eval.list_file"},
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
    projector_lr: float | None = field(
        default=None,
        metadata={
            "help": "peak learning rate of the projector, an AdamW group of its own (LLaVA-1.5's stage B: "
            "2e-5, LoRA at 2e-4); null = lr"
        },
    )
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
    init_from: str = field(
        default="runs/mllm/align/mllm", metadata={"help": "stage A's MLLM (its projector)"}
    )
    lr: float = field(default=2e-4, metadata={"help": "peak learning rate (AdamW)"})
    train_llm: bool = field(default=True, metadata={"help": "train the LLM (LoRA when lora.enabled)"})


@dataclass
class MLLMTrainConfig:
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
    data: InstructionDataConfig = field(default_factory=InstructionDataConfig)
    eval: ValidationConfig = field(default_factory=ValidationConfig)
    align: AlignConfig = field(default_factory=AlignConfig)
    instruct: InstructConfig = field(default_factory=InstructConfig)

    @property
    def section(self) -> StageConfig:
        """The section of the stage this run trains."""
        return getattr(self, self.stage)


# Settings a resumed run may change: they do not alter what is computed.
RESUME_MAY_DIFFER = frozenset({"progress", "keep_checkpoints", "features.num_workers"})


def lr_at(stage: StageConfig, step: int, total: int, peak: float | None = None) -> float:
    """Linear warm-up over ``warmup_fraction`` of the steps, then cosine to 0 (LLaVA's schedule), from the
    peak ``peak`` (an optimizer group's; default ``stage.lr``)."""
    peak = stage.lr if peak is None else peak
    warm = int(stage.warmup_fraction * total)
    if step < warm:
        return peak * (step + 1) / warm
    return peak * 0.5 * (1 + math.cos(math.pi * (step - warm) / max(1, total - warm)))
