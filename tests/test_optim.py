"""The encoder optimizer: weight decay on matrices only, layer-wise lr decay, the schedule."""

from __future__ import annotations

import json
import math

import pytest
import torch

from sefar_encoder.model.presets import build_encoder
from sefar_encoder.optim import OptimConfig, build_optimizer, lr_factor, set_lr


@pytest.fixture(scope="module")
def model():
    return build_encoder("timesformer_tiny_p16_64", num_classes=5)


def _scale_of(optimizer, model) -> dict[str, float]:
    ids = {id(p): g["lr_scale"] for g in optimizer.param_groups for p in g["params"]}
    return {n: ids[id(p)] for n, p in model.named_parameters()}


def test_layer_decay_scales_each_depth(model) -> None:
    cfg = OptimConfig(name="adamw", lr=1e-3, layer_decay=0.5)
    opt = build_optimizer(cfg, model, [])
    scale = _scale_of(opt, model)
    depth = model.num_layers  # L blocks: embeddings at depth 0, head at L + 1
    assert scale["backbone.patch_embed.proj.weight"] == 0.5 ** (depth + 1)
    assert scale["backbone.cls_token"] == 0.5 ** (depth + 1)
    assert scale["backbone.blocks.0.attn.qkv.weight"] == 0.5**depth
    assert scale[f"backbone.blocks.{depth - 1}.mlp.fc2.weight"] == 0.5
    assert scale["fusion_head.classifier.weight"] == 1.0
    assert sum(len(g["params"]) for g in opt.param_groups) == len(list(model.parameters()))
    set_lr(opt, cfg, step=10**6, total=10**6 + 1)  # past warm-up: cosine almost at the end
    lrs = {g["lr_scale"]: g["lr"] for g in opt.param_groups}
    for s, lr in lrs.items():
        assert lr == pytest.approx(cfg.lr * lr_factor(cfg, 10**6, 10**6 + 1) * s)
    # weight decay stays off for norms, biases and embeddings inside every depth's groups
    skip = model.no_weight_decay()
    for g in opt.param_groups:
        names = [n for n, p in model.named_parameters() if any(p is q for q in g["params"])]
        assert all((n in skip) == (g["weight_decay"] == 0.0) for n in names)


def test_no_layer_decay_is_one_scale(model) -> None:
    opt = build_optimizer(OptimConfig(name="sgd", lr=0.1), model, [])
    assert {g["lr_scale"] for g in opt.param_groups} == {1.0}
    assert len(opt.param_groups) == 2


def test_layer_decay_out_of_range_is_an_error(model) -> None:
    with pytest.raises(ValueError, match="layer_decay"):
        build_optimizer(OptimConfig(layer_decay=1.5), model, [])


def test_warmup_then_cosine() -> None:
    cfg = OptimConfig(name="adamw", warmup_fraction=0.1)
    assert lr_factor(cfg, 0, 100) == pytest.approx(0.1)
    assert lr_factor(cfg, 9, 100) == pytest.approx(1.0)
    assert lr_factor(cfg, 55, 100) == pytest.approx(0.5 * (1 + math.cos(math.pi * 45 / 90)))
    sgd = OptimConfig(name="sgd")
    assert lr_factor(sgd, 83, 100) == 1.0 and lr_factor(sgd, 84, 100) == pytest.approx(0.1)
    assert lr_factor(sgd, 94, 100) == pytest.approx(0.01)


def test_grouped_optimizer_state_survives_a_checkpoint(model) -> None:
    from sefar_encoder.runtime.checkpoint import flatten_optimizer, unflatten_optimizer

    cfg = OptimConfig(name="adamw", lr=1e-3, layer_decay=0.7)
    opt = build_optimizer(cfg, model, [])
    for p in model.parameters():
        p.grad = torch.ones_like(p)
    set_lr(opt, cfg, 0, 10)
    opt.step()
    opt.zero_grad(set_to_none=True)
    tensors, meta = flatten_optimizer(opt.state_dict(), "optim")
    meta = json.loads(json.dumps(meta))  # the state file is JSON
    again = build_optimizer(cfg, model, [])
    again.load_state_dict(unflatten_optimizer(tensors, meta, "optim"))
    assert [g["lr_scale"] for g in again.param_groups] == [g["lr_scale"] for g in opt.param_groups]
    assert [g["lr"] for g in again.param_groups] == [g["lr"] for g in opt.param_groups]
    a, b = opt.state_dict()["state"], again.state_dict()["state"]
    assert a.keys() == b.keys() and all(torch.equal(a[k]["exp_avg"], b[k]["exp_avg"]) for k in a)


def test_temporal_parameters_learn_at_the_heads_rate(model) -> None:
    # zero-initialised and absent from image checkpoints: no layer-wise decay, or the model stays
    # (nearly) blind to frame order while the pretrained blocks adapt
    cfg = OptimConfig(name="adamw", lr=1e-3, layer_decay=0.75)
    opt = build_optimizer(cfg, model, [])
    set_lr(opt, cfg, step=0, total=10)
    lr_of = {id(p): g["lr"] for g in opt.param_groups for p in g["params"]}
    lr = {n: lr_of[id(p)] for n, p in model.named_parameters()}
    head = lr["fusion_head.classifier.weight"]
    depth = model.num_layers
    for name in (
        "backbone.blocks.0.proj_t.weight",
        "backbone.blocks.0.proj_t.bias",
        "backbone.blocks.0.attn_t.qkv.weight",
        "backbone.blocks.0.norm_t.weight",
        f"backbone.blocks.{depth - 1}.attn_t.proj.weight",
        "backbone.time_embeds.0",
    ):
        assert lr[name] == head, name
    # the spatial weights of a block keep their decayed rate, the embeddings theirs
    assert lr["backbone.blocks.0.attn.qkv.weight"] == pytest.approx(head * 0.75**depth)
    assert lr["backbone.blocks.0.mlp.fc1.weight"] == pytest.approx(head * 0.75**depth)
    assert lr["backbone.pos_embed"] == pytest.approx(head * 0.75 ** (depth + 1))
