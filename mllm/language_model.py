"""The LLM side: loading (local directory or hub id, optional 4-bit), LoRA, checkpointing, merging,
and the tiny CPU stand-in for Vicuna.

    LLMConfig ──load_language_model──► PreTrainedModel ──apply_lora(LoraOptions)──► PeftModel
                                                                   └─ save_adapter / load_adapter / merge_lora

Every LLM goes through the same path: Vicuna-7B on a GPU (``load_in_4bit=true``: bitsandbytes nf4 with
double quantisation, QLoRA) and the tiny Llama built by :func:`build_tiny_llm` on CPU.
``trust_remote_code`` is never on unless a config says so.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from peft import (
    LoraConfig,
    PeftModel,
    get_peft_model,
    prepare_model_for_kbit_training,
    set_peft_model_state_dict,
)
from safetensors.torch import load_file, save_file
from torch import nn
from tqdm.auto import tqdm
from transformers import (
    AutoModelForCausalLM,
    BitsAndBytesConfig,
    LlamaConfig,
    LlamaForCausalLM,
    PreTrainedModel,
)

from mllm.tokenizer import encode_fragment, load_tokenizer, save_tokenizer, train_sentencepiece_tokenizer
from sefar_encoder.runtime.config import ConfigError

DTYPES: dict[str, torch.dtype] = {
    "float32": torch.float32,
    "bfloat16": torch.bfloat16,
    "float16": torch.float16,
}


@dataclass
class LLMConfig:
    """Which causal LM to load and how."""

    name_or_path: str = field(
        default="",
        metadata={"help": "local directory or hub id of the causal LM (e.g. lmsys/vicuna-7b-v1.5)"},
    )
    dtype: str = field(default="float32", metadata={"help": f"weight dtype, one of {list(DTYPES)} or 'auto'"})
    load_in_4bit: bool = field(
        default=False, metadata={"help": "bitsandbytes nf4 + double quantisation (QLoRA); needs a CUDA GPU"}
    )
    bnb_4bit_compute_dtype: str = field(
        default="bfloat16", metadata={"help": f"compute dtype of the 4-bit layers, one of {list(DTYPES)}"}
    )
    gradient_checkpointing: bool = field(
        default=False, metadata={"help": "recompute activations in backward (memory for time)"}
    )
    attn_implementation: str | None = field(
        default=None, metadata={"help": "'sdpa', 'eager', 'flash_attention_2'; null = transformers' default"}
    )
    trust_remote_code: bool = field(
        default=False,
        metadata={"help": "run modelling code shipped with the checkpoint (off: never by default)"},
    )


@dataclass
class LoraOptions:
    """LoRA on the LLM's linear layers (the projector is always trained in full)."""

    enabled: bool = field(default=False, metadata={"help": "wrap the LLM with LoRA adapters (stage B)"})
    r: int = field(default=128, metadata={"help": "LoRA rank"})
    alpha: int = field(default=256, metadata={"help": "LoRA scaling numerator (scale = alpha / r)"})
    dropout: float = field(default=0.05, metadata={"help": "dropout on the LoRA input"})
    target_modules: list[str] = field(
        default_factory=list,
        metadata={"help": "module name suffixes to adapt; empty = every nn.Linear except lm_head"},
    )


def _dtype(name: str, what: str) -> torch.dtype:
    if name not in DTYPES:
        raise ValueError(f"{what} must be one of {list(DTYPES)}, got {name!r}")
    return DTYPES[name]


def build_quantization_config(cfg: LLMConfig) -> BitsAndBytesConfig | None:
    """The bitsandbytes config for ``cfg`` (nf4, double quantisation), or None without 4-bit. Pure."""
    if not cfg.load_in_4bit:
        return None
    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_use_double_quant=True,
        bnb_4bit_compute_dtype=_dtype(cfg.bnb_4bit_compute_dtype, "bnb_4bit_compute_dtype"),
    )


def check_4bit_supported(cfg: LLMConfig) -> None:
    """Fail at once, with the requirement named, when 4-bit is asked for without CUDA: a
    :class:`ConfigError` (bad configuration for this machine), which every entry point reports in one line.
    Training calls it before anything else (the feature cache is not built for a run that cannot load)."""
    if cfg.load_in_4bit and not torch.cuda.is_available():
        raise ConfigError(
            "4-bit loading (llm.load_in_4bit=true, --load-in-4bit) needs a CUDA GPU (bitsandbytes nf4 "
            "weights), but torch.cuda.is_available() is False; set llm.load_in_4bit=false (or drop "
            f"--load-in-4bit) to load the LLM in {cfg.dtype} on this machine"
        )


def load_language_model(cfg: LLMConfig, *, device_map: str | dict[str, Any] | None = None) -> PreTrainedModel:
    """``AutoModelForCausalLM.from_pretrained`` of a local directory or hub id, as ``cfg`` says.

    With 4-bit the model is placed on the GPU (``device_map`` defaults to ``{"": 0}``) and prepared
    for k-bit training when LoRA is applied (:func:`apply_lora`). Gradient checkpointing is switched
    on here when asked (see :func:`enable_gradient_checkpointing`).
    """
    if not cfg.name_or_path:
        raise ValueError("llm.name_or_path is empty: give a local model directory or a hub id")
    check_4bit_supported(cfg)
    kwargs: dict[str, Any] = {"trust_remote_code": cfg.trust_remote_code}
    kwargs["dtype"] = "auto" if cfg.dtype == "auto" else _dtype(cfg.dtype, "llm.dtype")
    if cfg.attn_implementation is not None:
        kwargs["attn_implementation"] = cfg.attn_implementation
    quantization = build_quantization_config(cfg)
    if quantization is not None:
        kwargs["quantization_config"] = quantization
        device_map = {"": torch.cuda.current_device()} if device_map is None else device_map
    if device_map is not None:
        kwargs["device_map"] = device_map
    model = AutoModelForCausalLM.from_pretrained(cfg.name_or_path, **kwargs)
    if cfg.gradient_checkpointing:
        enable_gradient_checkpointing(model)
    return model


def enable_gradient_checkpointing(model: PreTrainedModel) -> None:
    """Recompute activations in backward; inputs of the checkpointed blocks must require grad.

    ``enable_input_require_grads`` matters when only adapters train (the embedding output would not
    require grad); with the projector in front the video tokens already do, the text tokens not.
    """
    model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    model.enable_input_require_grads()
    model.config.use_cache = False  # a KV cache is useless in training and conflicts with recomputation


def lora_target_modules(model: nn.Module, configured: Sequence[str] = ()) -> list[str]:
    """Names (last path component) of the linear layers LoRA adapts: ``configured`` when given, else
    every ``nn.Linear`` except the output head (4-bit ``Linear4bit`` layers are ``nn.Linear`` too)."""
    if configured:
        return list(configured)
    output = model.get_output_embeddings()
    names = {
        name.rsplit(".", 1)[-1]
        for name, module in model.named_modules()
        if isinstance(module, nn.Linear) and module is not output
    }
    names.discard("lm_head")
    return sorted(names)


def apply_lora(
    model: PreTrainedModel, lora: LoraOptions, *, gradient_checkpointing: bool = False
) -> PeftModel:
    """Wrap ``model`` with trainable LoRA adapters; base weights frozen.

    On a 4-bit model ``prepare_model_for_kbit_training`` first (norms in fp32, input grads for
    checkpointing), as QLoRA does.
    """
    if getattr(model, "is_loaded_in_4bit", False):
        model = prepare_model_for_kbit_training(
            model,
            use_gradient_checkpointing=gradient_checkpointing,
            gradient_checkpointing_kwargs={"use_reentrant": False},
        )
    peft_config = LoraConfig(
        r=lora.r,
        lora_alpha=lora.alpha,
        lora_dropout=lora.dropout,
        target_modules=lora_target_modules(model, lora.target_modules),
        bias="none",
        task_type="CAUSAL_LM",
    )
    return get_peft_model(model, peft_config)


def save_adapter(
    model: PeftModel, directory: str | Path, state_dict: dict[str, torch.Tensor] | None = None
) -> None:
    """peft ``save_pretrained``: ``adapter_config.json`` + ``adapter_model.safetensors``.

    With ``state_dict`` (the PeftModel's full state dict, gathered from FSDP shards) the weights are its LoRA
    entries, keyed as peft keys them (the adapter name dropped). peft 0.21 would pick them by the model's
    module names, which FSDP's nested units interrupt with ``_fsdp_wrapped_module``: it saved nothing."""
    if state_dict is None:
        model.save_pretrained(str(directory), safe_serialization=True)
        return
    name = model.active_adapter
    weights = {
        k.replace(f".{name}.", "."): v.contiguous()
        for k, v in state_dict.items()
        if ".lora_" in k and f".{name}." in k
    }
    if not weights:
        raise ValueError(f"the state dict holds no weights of adapter {name!r}")
    Path(directory).mkdir(parents=True, exist_ok=True)
    save_file(weights, str(Path(directory) / "adapter_model.safetensors"), metadata={"format": "pt"})
    model.peft_config[name].save_pretrained(str(directory))


def load_adapter(model: PreTrainedModel, directory: str | Path, *, trainable: bool = False) -> PeftModel:
    """Attach a saved adapter to ``model`` (trainable to resume stage B, frozen for evaluation)."""
    return PeftModel.from_pretrained(model, str(directory), is_trainable=trainable)


def load_adapter_weights(model: PreTrainedModel | PeftModel, file: str | Path) -> list[str] | None:
    """Copy a saved ``adapter_model.safetensors`` into ``model``'s adapter (same LoRA settings). Returns the
    file's keys the adapter has no place for, or ``None`` when ``model`` has no adapter."""
    if not isinstance(model, PeftModel):
        return None
    return list(set_peft_model_state_dict(model, load_file(str(file))).unexpected_keys)


def merge_lora(base: str | Path, adapter: str | Path, out: str | Path, *, dtype: str = "float32") -> Path:
    """Write a standalone model: base weights with the adapter merged in (safetensors) + tokenizer.

    The base is loaded unquantised (merging into 4-bit weights would round the adapter away).
    """
    model = load_language_model(LLMConfig(name_or_path=str(base), dtype=dtype))
    merged = load_adapter(model, adapter).merge_and_unload()
    out = Path(out)
    merged.save_pretrained(out)
    save_tokenizer(load_tokenizer(base), out)
    return out


# -- the tiny LLM: Vicuna's stand-in on CPU ---------------------------------------------------------


@dataclass
class TinyLLMConfig:
    """Size and pre-training budget of the tiny LLM (tokenizer + Llama) built by scripts/make_tiny_llm.py."""

    vocab_size: int = field(
        default=1000, metadata={"help": "sentencepiece BPE vocabulary (>= 259: 256 bytes + 3)"}
    )
    hidden_size: int = field(default=256, metadata={"help": "model width D"})
    num_layers: int = field(default=4, metadata={"help": "decoder layers"})
    num_heads: int = field(default=4, metadata={"help": "attention heads"})
    intermediate_size: int = field(default=688, metadata={"help": "MLP width (LLaMA's 8/3 x D, rounded)"})
    max_position_embeddings: int = field(default=512, metadata={"help": "longest sequence the model handles"})
    steps: int = field(default=200, metadata={"help": "pre-training optimiser steps (0 = random weights)"})
    batch_size: int = field(default=8, metadata={"help": "sequences per step"})
    block_size: int = field(default=128, metadata={"help": "tokens per training sequence"})
    lr: float = field(default=3e-3, metadata={"help": "peak AdamW learning rate (warmup then cosine)"})
    seed: int = field(default=0, metadata={"help": "seed of tokenizer training, init and batches"})


# For tests: builds in about a second.
MICRO_TINY_LLM = TinyLLMConfig(
    vocab_size=400,
    hidden_size=64,
    num_layers=2,
    num_heads=2,
    intermediate_size=128,
    steps=4,
    batch_size=4,
    block_size=64,
)


def build_tiny_llm(
    texts: Sequence[str], out_dir: str | Path, cfg: TinyLLMConfig | None = None
) -> dict[str, Any]:
    """Train a tokenizer on ``texts``, build a small Llama, pre-train it briefly, save both.

    The directory is then loaded exactly like Vicuna (``load_tokenizer`` / ``load_language_model``).
    Data preparation, not a stage: this is the one loop in library code, so tests can build a micro
    LLM in-process. Returns a summary (sizes, losses, seconds).
    """
    start = time.perf_counter()
    cfg = cfg or TinyLLMConfig()
    out_dir = Path(out_dir)
    texts = [t for t in texts if t.strip()]
    if not texts:
        raise ValueError("the tiny-LLM corpus is empty")
    tokenizer = train_sentencepiece_tokenizer(
        list(texts),
        out_dir,
        vocab_size=cfg.vocab_size,
        seed=cfg.seed,
        model_max_length=cfg.max_position_embeddings,
    )
    torch.manual_seed(cfg.seed)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=cfg.hidden_size,
        intermediate_size=cfg.intermediate_size,
        num_hidden_layers=cfg.num_layers,
        num_attention_heads=cfg.num_heads,
        num_key_value_heads=cfg.num_heads,
        max_position_embeddings=cfg.max_position_embeddings,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.unk_token_id,  # as Vicuna's config; padding is masked anyway
        tie_word_embeddings=False,  # as Llama-2/Vicuna
    )
    model = LlamaForCausalLM(config)
    # One token stream, each line framed by BOS ... EOS, as in LLaMA-style pre-training.
    stream = []
    for text in texts:
        # encode_fragment: the sentencepiece ids, without transformers' max-length warning on long lines
        stream += [tokenizer.bos_token_id] + encode_fragment(tokenizer, text, at_start=True)
        stream.append(tokenizer.eos_token_id)
    tokens = torch.tensor(stream, dtype=torch.long)
    block = min(cfg.block_size, len(tokens) - 1, cfg.max_position_embeddings)
    losses = _pretrain(model, tokens, cfg, block) if cfg.steps > 0 else []
    model.eval()
    model.generation_config.pad_token_id = tokenizer.unk_token_id
    model.save_pretrained(out_dir)
    return {
        "out_dir": str(out_dir),
        "vocab_size": len(tokenizer),
        "parameters": sum(p.numel() for p in model.parameters()),
        "corpus_lines": len(texts),
        "corpus_tokens": len(stream),
        "steps": cfg.steps,
        "first_loss": losses[0] if losses else None,
        "final_loss": sum(losses[-10:]) / len(losses[-10:]) if losses else None,
        "seconds": round(time.perf_counter() - start, 2),
        "config": asdict(cfg),
    }


def _pretrain(model: LlamaForCausalLM, tokens: torch.Tensor, cfg: TinyLLMConfig, block: int) -> list[float]:
    """Causal-LM training on random windows of the token stream; AdamW, warmup then cosine."""
    rng = random.Random(cfg.seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=0.01, betas=(0.9, 0.95))
    warmup = max(1, cfg.steps // 10)
    model.train()
    losses = []
    for step in (bar := tqdm(range(cfg.steps), desc="tiny LLM pre-training", leave=False)):
        progress = (step - warmup) / max(1, cfg.steps - warmup)
        lr_scale = (step + 1) / warmup if step < warmup else 0.5 * (1 + math.cos(math.pi * progress))
        for group in optimizer.param_groups:
            group["lr"] = cfg.lr * lr_scale
        starts = [rng.randrange(0, len(tokens) - block) for _ in range(cfg.batch_size)]
        batch = torch.stack([tokens[s : s + block] for s in starts])  # [B, L]
        loss = model(input_ids=batch, labels=batch).loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        losses.append(loss.item())
        bar.set_postfix(loss=f"{loss.item():.3f}")
    return losses


def tiny_llm_corpus(element_names: Sequence[str], *, seed: int = 0) -> list[str]:
    """Default text for the tiny LLM: captions and vicuna_v1-style Q/A about gymnastics elements.

    Lines use the prompt builder's template, so the tokenizer gets pieces for ``USER``/``ASSISTANT``
    and the model has seen the conversation shape before stage A.
    """
    from mllm.prompting import VICUNA_V1

    names = sorted(set(element_names))
    if len(names) < 4:
        raise ValueError(
            f"need at least 4 distinct element names for multiple-choice lines, got {len(names)}"
        )
    rng = random.Random(seed)
    t = VICUNA_V1
    lines = []
    for name in names:
        options = [name] + rng.sample([n for n in names if n != name], 3)
        rng.shuffle(options)
        letter = "ABCD"[options.index(name)]
        question = "What gymnastics move is this athlete performing? " + " ".join(
            f"{'ABCD'[i]}.{o}" for i, o in enumerate(options)
        )
        lines.append(f"The athlete performs {name}.")
        lines.append(
            f"{t.system}{t.system_sep}{t.user_prefix}{question}{t.assistant_prefix}{t.answer_lead}{letter}.{name}"
        )
        lines.append(
            f"{t.user_prefix}Describe the move.{t.assistant_prefix}{t.answer_lead}The athlete performs {name}."
        )
    rng.shuffle(lines)
    return lines
