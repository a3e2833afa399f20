"""The MLLM under FSDP (``configs/accelerate/fsdp.yaml``): how it is cut into units, and how its weights are
read and written while sharded. Without FSDP every function here is the plain unwrapped-module operation.

FSDP1 flattens the parameters of each unit into one tensor, which has one dtype. The LLM is loaded in
``llm.dtype`` (bf16 for Vicuna) while the projector stays float32 (:meth:`MultimodalModel.build`) and peft
keeps LoRA weights in float32 on a 16-bit base. With only the decoder layers as units, the root unit holds
the bf16 embeddings next to the float32 projector and wrapping fails ("Must flatten tensors with uniform
dtype"). :func:`fsdp_wrap_policy` also gives every leaf module whose weights are not in the LLM's dtype a
unit of its own, so that each unit has one dtype.

Outside a forward, the parameters of a sharded model are this process' shards: reading or writing them
(``save_pretrained``, ``load_state_dict``) goes through the full state dict here
(``torch.distributed.checkpoint.state_dict``), and a forward goes through the wrapped model, on every
process alike (each forward gathers shards).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Iterable

import torch
from accelerate import Accelerator
from accelerate.utils import DistributedType
from accelerate.utils.dataclasses import get_module_class_from_name
from torch import nn
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
    set_model_state_dict,
)
from torch.distributed.fsdp.wrap import lambda_auto_wrap_policy

from mllm.multimodal_model import MultimodalModel
from sefar_encoder.runtime.config import ConfigError


def is_sharded(accelerator: Accelerator) -> bool:
    """Whether the model's parameters are sharded over processes (FSDP)."""
    return accelerator.distributed_type == DistributedType.FSDP


def set_wrap_policy(accelerator: Accelerator, model: MultimodalModel) -> None:
    """Under FSDP, before ``accelerator.prepare``: wrap ``model`` by :func:`fsdp_wrap_policy` (the layer
    classes named by the accelerate config). FSDP2 is refused (what is here is written for FSDP1)."""
    if not is_sharded(accelerator):
        return
    if accelerator.is_fsdp2:
        raise ConfigError("fsdp_version 2 is not supported: use configs/accelerate/fsdp.yaml (FSDP1)")
    plugin = accelerator.state.fsdp_plugin
    plugin.auto_wrap_policy = fsdp_wrap_policy(model, plugin.transformer_cls_names_to_wrap)


def fsdp_wrap_policy(model: MultimodalModel, layer_class_names: Iterable[str] | None = None) -> Callable:
    """FSDP1 ``auto_wrap_policy``: a unit per decoder layer (classes named by ``layer_class_names``, default
    the LLM's ``_no_split_modules``) and per leaf module holding weights of another dtype than the LLM's
    input embeddings (the float32 projector's linears, float32 LoRA weights on a bf16 LLM); the rest (the
    embeddings, the final norm, the output head) is the root unit."""
    names = list(layer_class_names or getattr(model.llm, "_no_split_modules", None) or [])
    layer_classes = []
    for name in names:
        found = get_module_class_from_name(model, name)
        if found is None:
            raise ValueError(
                f"FSDP: no module of class {name!r} in the model (fsdp_transformer_layer_cls_to_wrap)"
            )
        layer_classes.append(found)
    if not layer_classes:
        raise ValueError("FSDP: name the decoder layer class (fsdp_transformer_layer_cls_to_wrap)")
    reference = model.llm.get_input_embeddings().weight.dtype

    def own_unit(module: nn.Module) -> bool:
        if isinstance(module, tuple(layer_classes)):
            return True
        leaf = next(module.children(), None) is None
        return leaf and any(p.dtype != reference for p in module.parameters(recurse=False))

    return functools.partial(lambda_auto_wrap_policy, lambda_fn=own_unit)


def forward_chunks(accelerator: Accelerator, n: int, micro: int) -> list[list[int]]:
    """This process' share of samples ``0 .. n-1`` (every ``num_processes``-th) in micro-batches of
    ``micro``. Under FSDP every process gets as many (each forward gathers shards, a collective): the
    shorter shares end with empty ones, whose forward the caller runs on any sample and does not count."""
    rank, size = accelerator.process_index, accelerator.num_processes
    mine = list(range(rank, n, size))
    chunks = [mine[i : i + micro] for i in range(0, len(mine), micro)]
    if is_sharded(accelerator):
        chunks += [[]] * (math.ceil(math.ceil(n / size) / micro) - len(chunks))
    return chunks


def full_state_dict(accelerator: Accelerator, model: nn.Module) -> dict[str, torch.Tensor] | None:
    """Under FSDP the model's full state dict, keyed as the unwrapped module's, gathered on the main
    process in CPU memory (``{}`` on the others; collective), e.g. for
    ``MultimodalModel.save_pretrained(state_dict=...)``; else None: the module's own parameters are whole."""
    if not is_sharded(accelerator):
        return None
    return get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))


def trainable_state(
    accelerator: Accelerator, model: nn.Module, names: Iterable[str]
) -> dict[str, torch.Tensor]:
    """The full tensors of the parameters ``names`` (collective under FSDP, where only the main process
    receives them; the others get ``{}``)."""
    names, full = set(names), full_state_dict(accelerator, model)
    if full is not None:
        return {n: v for n, v in full.items() if n in names}
    return {n: p.detach() for n, p in accelerator.unwrap_model(model).named_parameters() if n in names}


def load_weights(accelerator: Accelerator, model: nn.Module, tensors: dict[str, torch.Tensor]) -> None:
    """Copy ``tensors`` (full parameters, a subset of the model's, the same on every process) into
    ``model``; under FSDP each process keeps its shard of them (collective)."""
    if not is_sharded(accelerator):
        accelerator.unwrap_model(model).load_state_dict(tensors, strict=False)
        return
    set_model_state_dict(model, tensors, options=StateDictOptions(full_state_dict=True, strict=False))
