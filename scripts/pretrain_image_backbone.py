"""Pretrain an image ViT on single SynthGym frames — SynthGym's stand-in for ImageNet weights.

    python scripts/pretrain_image_backbone.py --config configs/pretrain/synthgym_bench.yaml [key=value ...]
    python scripts/pretrain_image_backbone.py --config ... --resume   # continue an interrupted run
    python scripts/pretrain_image_backbone.py --config ... --force    # retrain a backbone that exists

A recipe over the run lifecycle (``sefar_encoder.runtime.lifecycle``), read top to bottom; the data,
augmentation, targets, heads and losses are ``sefar_encoder.frame_pretraining``:

    setup    pretrain frames and annotations in memory → held-out clips → ViT + heads → AdamW (warm-up,
             cosine) → run folder → the latest checkpoint when resuming
    train    per step: sample frames → augment (labels follow) → the heads' losses → update; a checkpoint
             every ``checkpoint_every`` steps, on SIGTERM and after the last step
    cleanup  held-out figures → model.safetensors, config.json → metrics.json

The run folder (``out_dir``, by default ``<data_root>/backbones/<fingerprint>``) receives the lifecycle's
``config.yaml``, ``metrics.jsonl`` (one line per step), ``checkpoints/`` and, last, ``metrics.json``, and the
backbone: ``model.safetensors`` (a timm ``VisionTransformer`` state dict, classifier-free, the key layout
``sefar_encoder.model.image_vit.load_image_vit`` reads) and ``config.json`` (architecture, data
fingerprint, held-out head accuracies). A folder whose backbone was made with the same settings and data
is reused: nothing is trained (``--force`` retrains).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file
from torch import nn
from tqdm import tqdm

from gym_qa.synthgym.poses import SHAPES
from sefar_encoder.decoding import DecodeError
from sefar_encoder.frame_pretraining import (
    BATCH_KEYS,
    CELL_PX,
    RESUME_MAY_DIFFER,
    AnnotationError,
    FrameHeads,
    PretrainConfig,
    augment,
    backbone_dir,
    evaluate,
    fingerprint,
    load_frames,
    losses,
    lr_factor,
    normalise,
    run_vit,
    targets,
)
from sefar_encoder.model.image_vit import build_image_vit
from sefar_encoder.runtime.atomic import write_atomic, write_json_atomic
from sefar_encoder.runtime.checkpoint import flatten_optimizer, prefixed, unflatten_optimizer, unprefixed
from sefar_encoder.runtime.config import ConfigError, config_epilog, load_config, to_dict
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

BAD_INPUT_ERRORS = (ConfigError, AnnotationError, DecodeError, OSError)


@dataclass
class PretrainState(RunState):
    step: int = 0  # optimizer steps taken


@dataclass
class PretrainContext:
    """What the loop works with (built by :func:`setup`)."""

    cfg: PretrainConfig
    lifecycle: RunLifecycle
    fingerprint: str
    data: dict[str, Any]  # load_frames: frames and annotations in memory
    train_idx: torch.Tensor  # frame indices of the training clips
    held_idx: torch.Tensor  # frame indices of the held-out clips
    vit: nn.Module
    heads: FrameHeads
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR
    generator: torch.Generator  # frame sampling and augmentation
    checkpointed: int = -1  # the step of the last checkpoint written or restored


# ----------------------------------------------------------------------------------------- setup
def setup(cfg: PretrainConfig, lifecycle: RunLifecycle, fp: str) -> tuple[PretrainContext, PretrainState]:
    if cfg.model.patch_size % CELL_PX:
        raise ConfigError(f"model.patch_size must be a multiple of {CELL_PX} (the part map's cell)")
    torch.manual_seed(cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed)
    data = load_frames(cfg)
    clips = int(data["clip"].max()) + 1
    held = torch.randperm(clips, generator=gen)[: max(1, int(cfg.holdout * clips))]
    is_held = torch.isin(data["clip"], held)
    vit = build_image_vit(cfg.model, num_classes=0)
    heads = FrameHeads(cfg.model.embed_dim, len(SHAPES), data["num_apparatus"], cfg.model.patch_size)
    params = list(vit.parameters()) + list(heads.parameters())
    optimizer = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: lr_factor(step, cfg.steps))
    lifecycle.start()
    ctx = PretrainContext(
        cfg=cfg,
        lifecycle=lifecycle,
        fingerprint=fp,
        data=data,
        train_idx=torch.nonzero(~is_held).squeeze(1),
        held_idx=torch.nonzero(is_held).squeeze(1),
        vit=vit,
        heads=heads,
        optimizer=optimizer,
        scheduler=scheduler,
        generator=gen,
    )
    state = PretrainState()
    ckpt = lifecycle.restore_point()
    if ckpt is not None:
        state = restore_run_checkpoint(ctx, ckpt)
        print(f"resumed from {ckpt} (step {state.step} of {cfg.steps})")
    rewind_history(lifecycle.dir / HISTORY, state.step, write=lifecycle.is_main)
    return ctx, state


# ----------------------------------------------------------------------------------------- train
def train(ctx: PretrainContext, state: PretrainState) -> None:
    """Optimizer steps from ``state.step`` to ``cfg.steps``; the last one is checkpointed too, so that a
    kill during the final evaluation resumes without training again."""
    cfg, lifecycle, data, gen = ctx.cfg, ctx.lifecycle, ctx.data, ctx.generator
    size = cfg.model.img_size
    lifecycle.start_clock(state)
    bar = tqdm(total=cfg.steps, initial=state.step, desc="pretrain backbone", disable=not cfg.progress)
    while state.step < cfg.steps:
        pick = ctx.train_idx[torch.randint(0, len(ctx.train_idx), (cfg.batch_size,), generator=gen)]
        batch = {k: data[k][pick] for k in BATCH_KEYS}
        x = normalise(augment(data["frames"][pick], batch, gen, cfg))
        loss = sum(losses(ctx.heads(*run_vit(ctx.vit, x)), targets(batch, size), cfg.parts_weight).values())
        ctx.optimizer.zero_grad(set_to_none=True)
        finite = bool(torch.isfinite(loss.detach()))
        if finite:  # a non-finite loss skips its update
            loss.backward()
            ctx.optimizer.step()
        lr = ctx.optimizer.param_groups[0]["lr"]
        ctx.scheduler.step()
        state.step += 1
        if lifecycle.is_main:
            append_history(
                lifecycle.dir / HISTORY,
                {"step": state.step, "loss": loss.item() if finite else None, "lr": lr},
            )
        count_loss(state, finite, cfg.max_nonfinite_steps, f"step {state.step}; lower lr or check the data")
        bar.update(1)
        bar.set_postfix(loss=f"{loss.item():.3f}")
        if cfg.eval_every and state.step % cfg.eval_every == 0 and state.step < cfg.steps:
            figures = evaluate(ctx.vit, ctx.heads, data, ctx.held_idx[:2048], size)
            tqdm.write(f"step {state.step}: " + ", ".join(f"{k} {v:.3f}" for k, v in figures.items()))
        if lifecycle.stop_requested:
            bar.close()
            lifecycle.stop(state, lambda: save_run_checkpoint(ctx, state), f"step {state.step}")
        if cfg.checkpoint_every and state.step % cfg.checkpoint_every == 0:
            save_run_checkpoint(ctx, state)
    bar.close()
    if ctx.checkpointed != state.step:
        save_run_checkpoint(ctx, state)


# ----------------------------------------------------------------------------------------- checkpoint
def save_run_checkpoint(ctx: PretrainContext, state: PretrainState) -> None:
    """ViT, heads, optimizer and scheduler, the sampling generator's state and the step; atomic."""
    ctx.lifecycle.tick(state)
    tensors = prefixed(ctx.vit.state_dict(), "vit") | prefixed(ctx.heads.state_dict(), "heads")
    opt_tensors, opt_meta = flatten_optimizer(ctx.optimizer.state_dict(), "optim")
    tensors |= opt_tensors | {"generator": ctx.generator.get_state()}
    payload = {"optim": opt_meta, "scheduler": ctx.scheduler.state_dict()}
    ctx.lifecycle.save_checkpoint(f"step_{state.step:08d}", tensors, state, ctx.cfg.keep_checkpoints, payload)
    ctx.checkpointed = state.step


def restore_run_checkpoint(ctx: PretrainContext, path: Path) -> PretrainState:
    tensors, state, payload = ctx.lifecycle.load_checkpoint(path, PretrainState)
    ctx.vit.load_state_dict(unprefixed(tensors, "vit"), strict=True)
    ctx.heads.load_state_dict(unprefixed(tensors, "heads"), strict=True)
    ctx.optimizer.load_state_dict(unflatten_optimizer(tensors, payload["optim"], "optim"))
    ctx.scheduler.load_state_dict(payload["scheduler"])
    ctx.generator.set_state(tensors["generator"])
    ctx.checkpointed = state.step
    return state


# ----------------------------------------------------------------------------------------- cleanup
def cleanup(ctx: PretrainContext, state: PretrainState) -> dict[str, Any]:
    """Held-out figures; the backbone (model.safetensors, then config.json) and, last, metrics.json."""
    cfg, out = ctx.cfg, ctx.lifecycle.dir
    held_metrics = evaluate(ctx.vit, ctx.heads, ctx.data, ctx.held_idx, cfg.model.img_size)
    ctx.lifecycle.tick(state)
    meta = {
        "fingerprint": ctx.fingerprint,
        "config": to_dict(cfg),
        "architecture": dataclasses.asdict(cfg.model),
        "train_frames": len(ctx.train_idx),
        "heldout_frames": len(ctx.held_idx),
        "heldout": held_metrics,
        "minutes": state.seconds / 60,
    }
    if ctx.lifecycle.is_main:
        weights = {k: v.contiguous() for k, v in ctx.vit.state_dict().items()}
        write_atomic(out / "model.safetensors", lambda tmp: save_file(weights, str(tmp)))
        write_json_atomic(out / "config.json", meta)
    print(f"held-out frames: {json.dumps(held_metrics)}")
    metrics = {k: v for k, v in meta.items() if k != "config"}
    metrics |= {"steps": state.step, "nonfinite_steps": state.nonfinite_steps, "machine": machine_summary()}
    return ctx.lifecycle.finish(metrics)


# ----------------------------------------------------------------------------------------- run
def pretrain(cfg: PretrainConfig, force: bool = False, resume: bool = False) -> Path:
    """Train (or reuse) the frame-pretrained backbone; returns its folder."""
    out, fp = backbone_dir(cfg), fingerprint(cfg)
    meta_path = out / "config.json"
    if not force and meta_path.is_file() and json.loads(meta_path.read_text()).get("fingerprint") == fp:
        print(f"reusing pretrained backbone {out} (same settings and data)")
        return out
    with RunLifecycle(out, cfg, resume=resume, may_differ=RESUME_MAY_DIFFER) as lifecycle:
        if lifecycle.finished() is None:
            lifecycle.check_resume()
            ctx, state = setup(cfg, lifecycle, fp)
            lifecycle.check_stop()
            train(ctx, state)
            cleanup(ctx, state)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=EXIT_CODES + "\n" + config_epilog(PretrainConfig, argv),
    )
    parser.add_argument("--config", help="YAML config (see configs/pretrain/)")
    again = parser.add_mutually_exclusive_group()
    again.add_argument("--resume", action="store_true", help="continue from the run's last checkpoint")
    again.add_argument("--force", action="store_true", help="retrain even if a matching backbone exists")
    parser.add_argument("overrides", nargs="*", help="key.sub=value overrides")
    args = parser.parse_args(argv)
    cfg = None
    try:
        cfg = load_config(PretrainConfig, args.config, args.overrides)
        out = pretrain(cfg, force=args.force, resume=args.resume)
    except (Exception, KeyboardInterrupt) as err:  # noqa: BLE001 - exit_code gives each its exit code
        return exit_code(err, BAD_INPUT_ERRORS, lambda: backbone_dir(cfg))
    print(f"backbone: {out / 'model.safetensors'}")
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
