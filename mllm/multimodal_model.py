"""Video MLLM by composition: a projector in front of a causal LM (no mixins into HF classes).

Shape notation: B batch, N video tokens per clip, L text length, D_enc encoder width, D LLM width.

::

    video_features [B, N, D_enc] ──projector──► [B, N, D] ─┐
    input_ids [B, L] ──LLM embeddings──► [B, L, D] ──masked_scatter at the N placeholder ids──►
        inputs_embeds [B, L, D] ──LLM (+LoRA)──► logits [B, L, V], loss

The prompt builder (:mod:`mllm.prompting`) writes exactly N placeholder ids per sample; the counts are
checked here before anything is overwritten, so a prompt/encoder mismatch fails loudly.

Checkpoint directory (:meth:`MultimodalModel.save_pretrained`) holds the trainable parts only, and is
read and written only here (:meth:`~MultimodalModel.from_pretrained`, :meth:`~MultimodalModel.init_from`)::

    mllm_config.json       options (LLM path or hub id, projector, LoRA), video placeholder id, encoder fingerprint
    projector.safetensors  projector weights
    adapter/               peft adapter (adapter_config.json + adapter_model.safetensors), when LoRA is on
    instruction.json       how the prompts were built (:attr:`MultimodalModel.instruction`), when recorded

Saving again over a checkpoint swaps ``adapter/`` by renames (new one written to ``.adapter.tmp-*/``, old
one renamed aside to ``.adapter.old-*/``, new one renamed in, aside deleted), before the projector, the
instruction record and the config are replaced: a kill at any point leaves a complete adapter; one between
the two renames leaves it only as the aside copy (``adapter/`` missing), which loading reads where it is
(the projector and config are then still the old ones too, so the old checkpoint loads whole). Loading
never renames files: the next save, or a resumed run's repair of its folder, puts the adapter back.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from peft import PeftModel, prepare_model_for_kbit_training
from safetensors.torch import load_file, save_file
from torch import nn
from transformers import PreTrainedModel
from transformers.modeling_outputs import CausalLMOutputWithPast

from mllm.language_model import (
    LLMConfig,
    LoraOptions,
    apply_lora,
    load_adapter,
    load_adapter_weights,
    load_language_model,
    save_adapter,
)
from mllm.projector import ProjectorConfig, build_projector
from mllm.prompting import IGNORE_INDEX
from sefar_encoder.runtime.atomic import write_atomic, write_text_atomic
from sefar_encoder.runtime.checkpoint import unprefixed

CHECKPOINT_FORMAT = "sefar-mllm"
CHECKPOINT_VERSION = 1
CONFIG_FILE = "mllm_config.json"
PROJECTOR_FILE = "projector.safetensors"
ADAPTER_DIR = "adapter"
INSTRUCTION_FILE = "instruction.json"

log = logging.getLogger(__name__)


class VideoTokenMismatchError(ValueError):
    """The number of placeholder ids in a sample differs from the number of video tokens given."""


class CheckpointMismatchError(ValueError):
    """A checkpoint to start from does not fit this model (other encoder features, other weight shapes)."""


@dataclass
class MultimodalConfig:
    """Option group of the video MLLM (stage A: projector only; stage B: projector + LoRA)."""

    llm: LLMConfig = field(default_factory=LLMConfig)
    projector: ProjectorConfig = field(default_factory=ProjectorConfig)
    lora: LoraOptions = field(default_factory=LoraOptions)
    projector_trainable: bool = field(default=True, metadata={"help": "train the projector"})
    llm_trainable: bool = field(
        default=False,
        metadata={"help": "train the LLM: its LoRA adapter when lora.enabled, else all weights"},
    )


class MultimodalModel(nn.Module):
    """Holds ``projector`` and ``llm``; fills video placeholder positions with projected tokens."""

    def __init__(
        self,
        llm: PreTrainedModel | PeftModel,
        projector: nn.Module,
        *,
        video_token_id: int,
        config: MultimodalConfig,
        encoder_fingerprint: str = "",
        instruction: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        self.llm = llm
        self.projector = projector
        self.video_token_id = video_token_id
        self.config = config
        self.encoder_fingerprint = encoder_fingerprint
        # How the training prompts were built (template, caption and answer formats, encoder description,
        # video tokens per clip), saved as instruction.json: what a chat needs to prompt like training did.
        self.instruction = dict(instruction or {})

    # -- construction ------------------------------------------------------------------------------

    @classmethod
    def build(
        cls,
        cfg: MultimodalConfig,
        *,
        video_token_id: int,
        encoder_dim: int = 0,
        encoder_fingerprint: str = "",
        device_map: str | dict[str, Any] | None = None,
    ) -> MultimodalModel:
        """Load the LLM, add LoRA when enabled, build a fresh projector, set the trainable flags.

        ``encoder_dim`` (D_enc) is used when ``cfg.projector.in_dim`` is 0; the LLM width when
        ``cfg.projector.out_dim`` is 0.
        """
        llm = load_language_model(cfg.llm, device_map=device_map)
        if cfg.lora.enabled:
            llm = apply_lora(llm, cfg.lora, gradient_checkpointing=cfg.llm.gradient_checkpointing)
        in_dim = cfg.projector.in_dim or encoder_dim
        out_dim = cfg.projector.out_dim or llm.get_input_embeddings().embedding_dim
        projector = build_projector(cfg.projector.type, in_dim, out_dim)
        resolved = MultimodalConfig(
            llm=cfg.llm,
            projector=ProjectorConfig(type=cfg.projector.type, in_dim=in_dim, out_dim=out_dim),
            lora=cfg.lora,
            projector_trainable=cfg.projector_trainable,
            llm_trainable=cfg.llm_trainable,
        )
        model = cls(
            llm,
            projector,
            video_token_id=video_token_id,
            config=resolved,
            encoder_fingerprint=encoder_fingerprint,
        )
        model.projector.to(model.device)  # kept in float32: small, trained in full
        model.set_trainable(projector=cfg.projector_trainable, llm=cfg.llm_trainable)
        return model

    def set_trainable(self, *, projector: bool, llm: bool) -> None:
        """``requires_grad`` per part. With LoRA only the adapter weights of the LLM can train."""
        for p in self.projector.parameters():
            p.requires_grad_(projector)
        if isinstance(self.llm, PeftModel):
            for name, p in self.llm.named_parameters():
                p.requires_grad_(llm and "lora_" in name)
        else:
            if llm and getattr(self.llm, "is_loaded_in_4bit", False):
                raise ValueError("a 4-bit LLM cannot be trained in full: enable LoRA (QLoRA)")
            for p in self.llm.parameters():
                p.requires_grad_(llm)
        self.config.projector_trainable, self.config.llm_trainable = projector, llm

    def param_groups(self, lr: float, projector_lr: float | None = None) -> list[dict[str, Any]]:
        """AdamW parameter groups of the trainable parameters: the projector's at ``projector_lr`` (``lr``
        when None), the LLM's (LoRA or all) at ``lr``; empty groups are left out. Each group's ``peak_lr``
        is what the learning-rate schedule scales."""
        projector = [p for p in self.projector.parameters() if p.requires_grad]
        llm = [p for p in self.llm.parameters() if p.requires_grad]
        peaks = (lr if projector_lr is None else projector_lr, lr)
        return [
            {"params": params, "lr": peak, "peak_lr": peak, "name": name}
            for name, params, peak in (("projector", projector, peaks[0]), ("llm", llm, peaks[1]))
            if params
        ]

    @property
    def device(self) -> torch.device:
        return self.llm.get_input_embeddings().weight.device

    # -- forward -----------------------------------------------------------------------------------

    def embed(
        self,
        input_ids: torch.Tensor,
        video_features: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Input embeddings [B, L, D] with placeholder positions replaced by projected video tokens.

        Padding (``attention_mask == 0``) never counts as a placeholder, so pad may share its id.
        """
        embeds = self.llm.get_input_embeddings()(input_ids)  # [B, L, D]
        is_video = self.video_positions(input_ids, attention_mask)  # [B, L]
        counts = is_video.sum(dim=1)  # [B]
        if video_features is None:
            if counts.any():
                raise VideoTokenMismatchError(
                    f"input_ids hold {counts.tolist()} video placeholder ids (id {self.video_token_id}) per "
                    "sample but no video_features were given"
                )
            return embeds
        if video_features.dim() != 3 or video_features.shape[0] != input_ids.shape[0]:
            raise VideoTokenMismatchError(
                f"video_features must be [B, N, D_enc] with B={input_ids.shape[0]}, got {tuple(video_features.shape)}"
            )
        num_video = video_features.shape[1]  # N
        for b, count in enumerate(counts.tolist()):
            if count != num_video:
                raise VideoTokenMismatchError(
                    f"sample {b} has {count} video placeholder ids (id {self.video_token_id}) but video_features "
                    f"has N={num_video} tokens per clip; build prompts with num_video_tokens={num_video}"
                )
        projector_dtype = next(self.projector.parameters()).dtype
        video = self.projector(video_features.to(self.device, projector_dtype))  # [B, N, D]
        # masked_scatter fills masked positions in row-major order: sample by sample, token by token,
        # which is the order of video[b, n] — hence the per-sample count check above.
        return embeds.masked_scatter(is_video.unsqueeze(-1).expand_as(embeds), video.to(embeds.dtype))

    def video_positions(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Boolean [B, L]: where the placeholder id sits in the attended part of each sample."""
        is_video = input_ids == self.video_token_id
        if attention_mask is not None:
            is_video &= attention_mask.bool()
        return is_video

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        video_features: torch.Tensor | None = None,
        **kwargs: Any,
    ) -> CausalLMOutputWithPast:
        """LLM forward on the merged embeddings; ``labels`` [B, L] with IGNORE_INDEX where no loss."""
        if labels is not None:
            leaked = labels[self.video_positions(input_ids, attention_mask)] != IGNORE_INDEX
            if leaked.any():
                raise ValueError("labels must be IGNORE_INDEX at video placeholder positions")
        inputs_embeds = self.embed(input_ids, video_features, attention_mask)
        return self.llm(inputs_embeds=inputs_embeds, attention_mask=attention_mask, labels=labels, **kwargs)

    # -- checkpoint --------------------------------------------------------------------------------

    def save_pretrained(
        self, directory: str | Path, state_dict: dict[str, torch.Tensor] | None = None
    ) -> Path:
        """Write the trainable parts (adapter, projector), the instruction record and then a JSON config;
        each one atomically (the adapter folder by the rename-aside swap of :func:`_swap_in_adapter`).
        ``state_dict``: this model's full state dict, saved from instead of the parameters (which are
        shards under FSDP: ``mllm.sharding.full_state_dict``)."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        has_adapter = isinstance(self.llm, PeftModel)
        if has_adapter:
            _swap_in_adapter(
                self.llm, directory, None if state_dict is None else unprefixed(state_dict, "llm")
            )
        projector = self.projector.state_dict() if state_dict is None else unprefixed(state_dict, "projector")
        state = {k: v.detach().contiguous().cpu() for k, v in projector.items()}
        metadata = {"format": CHECKPOINT_FORMAT, "projector": self.config.projector.type}
        write_atomic(directory / PROJECTOR_FILE, lambda tmp: save_file(state, str(tmp), metadata=metadata))
        if self.instruction:
            write_text_atomic(directory / INSTRUCTION_FILE, json.dumps(self.instruction, indent=2) + "\n")
        cfg = asdict(self.config)
        llm_path = Path(cfg["llm"]["name_or_path"])
        if llm_path.is_dir():  # a local base model: absolute, so the checkpoint loads from any cwd
            cfg["llm"]["name_or_path"] = str(llm_path.resolve())
        meta = {
            "format": CHECKPOINT_FORMAT,
            "version": CHECKPOINT_VERSION,
            "config": cfg,
            "video_token_id": self.video_token_id,
            "encoder_fingerprint": self.encoder_fingerprint,
            "adapter": ADAPTER_DIR if has_adapter else None,
        }
        write_text_atomic(directory / CONFIG_FILE, json.dumps(meta, indent=2) + "\n")
        return directory

    @classmethod
    def from_pretrained(
        cls,
        directory: str | Path,
        *,
        llm_name_or_path: str | None = None,
        load_in_4bit: bool | None = None,
        projector_trainable: bool = False,
        llm_trainable: bool = False,
        device_map: str | dict[str, Any] | None = None,
        trust_remote_code: bool = False,
    ) -> MultimodalModel:
        """Rebuild from :meth:`save_pretrained`: base LLM (from the config, or ``llm_name_or_path``),
        adapter, projector. Frozen by default (evaluation); pass the flags to resume training.
        ``trust_remote_code`` is the caller's decision, never the checkpoint file's."""
        directory = Path(directory)
        meta = read_checkpoint_config(directory)
        saved = meta["config"]
        llm_cfg = LLMConfig(**{**saved["llm"], "trust_remote_code": trust_remote_code})
        if llm_name_or_path is not None:
            llm_cfg.name_or_path = llm_name_or_path
        if load_in_4bit is not None:
            llm_cfg.load_in_4bit = load_in_4bit
        if not llm_trainable:  # checkpointing would switch the KV cache off, which generation needs
            llm_cfg.gradient_checkpointing = False
        cfg = MultimodalConfig(
            llm=llm_cfg,
            projector=ProjectorConfig(**saved["projector"]),
            lora=LoraOptions(**saved["lora"]),
            projector_trainable=projector_trainable,
            llm_trainable=llm_trainable,
        )
        llm = load_language_model(cfg.llm, device_map=device_map)
        if meta["adapter"] is not None:
            if llm_trainable and getattr(llm, "is_loaded_in_4bit", False):
                llm = prepare_model_for_kbit_training(
                    llm,
                    use_gradient_checkpointing=cfg.llm.gradient_checkpointing,
                    gradient_checkpointing_kwargs={"use_reentrant": False},
                )
            llm = load_adapter(llm, _adapter_dir(directory, meta["adapter"]), trainable=llm_trainable)
        projector = build_projector(cfg.projector.type, cfg.projector.in_dim, cfg.projector.out_dim)
        projector.load_state_dict(load_file(str(directory / PROJECTOR_FILE)))  # strict: keys must match
        model = cls(
            llm,
            projector,
            video_token_id=int(meta["video_token_id"]),
            config=cfg,
            encoder_fingerprint=meta["encoder_fingerprint"],
            instruction=cls.read_instruction(directory),
        )
        model.projector.to(model.device)
        model.set_trainable(projector=projector_trainable, llm=llm_trainable)
        return model

    @staticmethod
    def read_instruction(directory: str | Path) -> dict[str, Any]:
        """A checkpoint's instruction record without loading the model (``{}`` when none was saved):
        e.g. which encoder its features came from, to build that encoder before the LLM."""
        path = Path(directory) / INSTRUCTION_FILE
        return json.loads(path.read_text()) if path.is_file() else {}

    def init_from(self, directory: str | Path) -> None:
        """Start training from a saved MLLM's weights: its projector, and its adapter when both have LoRA
        (the base LLM, the trainable flags and the instruction record stay this model's). Raises
        :class:`CheckpointMismatchError` when it was trained on another encoder's features or its weights do
        not fit."""
        directory = Path(directory)
        meta = read_checkpoint_config(directory)
        saved = meta["encoder_fingerprint"]
        if saved and saved != self.encoder_fingerprint:
            raise CheckpointMismatchError(
                f"init_from {directory} was trained on features of another encoder "
                f"({saved[:16]}, now {self.encoder_fingerprint[:16]})"
            )
        try:
            self.projector.load_state_dict(load_file(str(directory / PROJECTOR_FILE)))
        except RuntimeError as err:
            raise CheckpointMismatchError(
                f"init_from {directory}: projector does not match ({err})"
            ) from None
        if meta["adapter"]:
            adapter = _adapter_dir(directory, meta["adapter"]) / "adapter_model.safetensors"
            unexpected = load_adapter_weights(self.llm, adapter)
            if unexpected:
                raise CheckpointMismatchError(
                    f"init_from {directory}: adapter keys {unexpected[:3]} do not fit"
                )


def _swap_in_adapter(
    llm: PeftModel, directory: Path, state_dict: dict[str, torch.Tensor] | None = None
) -> None:
    """Replace ``directory/adapter`` by ``llm``'s adapter: write the new one to a temporary folder, rename
    the old one aside, rename the new one in, delete the aside (the pattern of
    ``SeFAREncoder.save_pretrained``). A kill never loses the old adapter: between the two renames it
    waits aside, where :func:`_adapter_dir` reads it until the next save puts the new one in place.
    ``state_dict``: ``llm``'s full state dict to take the adapter weights from (default: its own)."""
    final = directory / ADAPTER_DIR
    for leftover in _hidden_siblings(directory, "tmp"):  # a killed save's partial writes
        shutil.rmtree(leftover, ignore_errors=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{ADAPTER_DIR}.tmp-", dir=directory))
    try:
        save_adapter(llm, tmp, state_dict)
        if final.exists():
            # Asides next to a complete adapter are stale (a save killed after its rename-in): drop them,
            # so that a missing adapter/ never has more than one aside to be recovered from.
            for stale in _hidden_siblings(directory, "old"):
                shutil.rmtree(stale)
            aside = Path(tempfile.mkdtemp(prefix=f".{ADAPTER_DIR}.old-", dir=directory))
            aside.rmdir()  # a free unique name: rename() takes a path that does not exist
            os.replace(final, aside)
        # else a save killed between its two renames left the complete old adapter aside: it stays there
        # (recoverable) until the new one is in place.
        os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    for old in _hidden_siblings(directory, "old"):
        shutil.rmtree(old)


def _adapter_dir(directory: Path, name: str) -> Path:
    """``directory/name``; when a save was killed between its two renames, only the aside copy (the old
    checkpoint's complete adapter) exists: it is read where it is."""
    final = directory / name
    if final.is_dir():
        return final
    asides = _hidden_siblings(directory, "old", name)
    if not asides:
        raise FileNotFoundError(
            f"{directory / CONFIG_FILE} names the adapter folder {name!r}, missing in {directory}"
        )
    if len(asides) > 1:
        raise FileNotFoundError(
            f"{final} is missing and several aside copies exist ({[a.name for a in asides]}); keep the right "
            f"one, rename it to {name!r}"
        )
    log.warning("%s: a save was interrupted; reading the adapter from %s", directory, asides[0].name)
    return asides[0]


def _hidden_siblings(directory: Path, kind: str, name: str = ADAPTER_DIR) -> list[Path]:
    """The ``.<name>.<kind>-*`` folders (kind ``tmp``: partial writes, ``old``: renamed-aside copies)."""
    return sorted(p for p in directory.glob(f".{name}.{kind}-*") if p.is_dir())


def read_checkpoint_config(directory: str | Path) -> dict[str, Any]:
    """The ``mllm_config.json`` of a checkpoint directory, format-checked."""
    path = Path(directory) / CONFIG_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{directory}: not an MLLM checkpoint (no {CONFIG_FILE})")
    meta = json.loads(path.read_text())
    if meta.get("format") != CHECKPOINT_FORMAT or meta.get("version") != CHECKPOINT_VERSION:
        raise ValueError(
            f"{path}: format {meta.get('format')!r} version {meta.get('version')!r}, "
            f"expected {CHECKPOINT_FORMAT!r} version {CHECKPOINT_VERSION}"
        )
    return meta
