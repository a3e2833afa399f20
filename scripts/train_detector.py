"""Train HAAN, the weakly-supervised temporal element detector, on routine features and routine-level labels.

    python scripts/make_synthgym.py --out data/synthgym-routines-tiny --routines tiny
    python scripts/extract_routine_features.py --routines data/synthgym-routines-tiny/routines.json \\
        --encoder runs/quickstart/encoder --out data/synthgym-routines-tiny/features
    python scripts/train_detector.py routines=data/synthgym-routines-tiny/routines.json \\
        features=data/synthgym-routines-tiny/features out_dir=runs/detector-tiny model.num_clusters=20
    python scripts/train_detector.py --config my.yaml --resume     # continue an interrupted run
    python scripts/train_detector.py ... model.clustering=false model.hierarchy=false   # plain MIL

A recipe over the run lifecycle (``sefar_encoder.runtime.lifecycle``), read top to bottom; the model, losses,
k-means and the detection rule are ``sefar_encoder.detection``:

    setup    training / validation routines with their features → HAAN → Adam → run folder → the latest
             checkpoint when resuming
    train    per epoch: k-means on the embeddings every ``recluster_every`` epochs (atomic actions) → one
             pass over the training routines (MIL + pseudo-label + concept + coarse losses) → validation mAP
             every ``eval_every`` epochs; the best epoch on VALIDATION is kept (never on test); a checkpoint
             every epoch and on SIGTERM
    cleanup  the best epoch's detector → ``<out_dir>/detector/`` (scripts/detect.py reads it) → its mAP on
             the test subset, once → metrics.json

Only routine-level labels (the element classes present, and their sets) reach the losses; the segments are
used by the evaluation alone.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from gym_qa.detection_eval import Detection, DetectionReport, evaluate_detection
from gym_qa.routine_annotations import RoutineFileError
from sefar_encoder.detection.detector_export import detector_logits, save_detector
from sefar_encoder.detection.features import FeatureFolderError
from sefar_encoder.detection.haan import HAAN, haan_losses
from sefar_encoder.detection.inference import InferenceConfig, detect
from sefar_encoder.detection.kmeans import assign, kmeans
from sefar_encoder.detection.routine_data import RoutineSet, collate, epoch_batches, load_routine_set
from sefar_encoder.detection.training_config import RESUME_MAY_DIFFER, DetectorTrainConfig
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

BAD_INPUT_ERRORS = (ConfigError, FeatureFolderError, RoutineFileError, OSError)


@dataclass
class DetectorState(RunState):
    epoch: int = 0  # epochs finished
    best_epoch: int = 0  # the epoch of the best validation mAP (0: none evaluated yet)
    best_map: float = -1.0


@dataclass
class DetectorContext:
    """What the loop works with (built by :func:`setup`)."""

    cfg: DetectorTrainConfig
    lifecycle: RunLifecycle
    train: RoutineSet
    val: RoutineSet
    model: HAAN
    optimizer: torch.optim.Optimizer
    clusters: list[torch.Tensor] | None = None  # per training routine [T] k-means ids
    best: dict[str, torch.Tensor] = field(default_factory=dict)  # the best epoch's weights


# ----------------------------------------------------------------------------------------- setup
def setup(cfg: DetectorTrainConfig, lifecycle: RunLifecycle) -> tuple[DetectorContext, DetectorState]:
    if not cfg.routines or not cfg.features:
        raise ConfigError("routines= and features= are required (a routines JSON and its feature folder)")
    torch.manual_seed(cfg.seed)
    train = load_routine_set(cfg.routines, cfg.features, cfg.train_subset)
    val = load_routine_set(cfg.routines, cfg.features, cfg.val_subset)
    for name, data in ((cfg.train_subset, train), (cfg.val_subset, val)):
        if len(data) == 0:
            raise ConfigError(f"{cfg.routines}: no routines in subset {name!r}")
    if cfg.model.clustering:
        windows = sum(len(f) for f in train.features)
        if int(cfg.cluster_sample * windows) < cfg.model.num_clusters:
            raise ConfigError(
                f"model.num_clusters={cfg.model.num_clusters} but k-means sees only "
                f"{int(cfg.cluster_sample * windows)} of the {windows} training windows: lower "
                "model.num_clusters or raise cluster_sample"
            )
    model = HAAN(train.features[0].shape[1], train.coarse_of_class, cfg.model)
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    lifecycle.start()
    ctx = DetectorContext(cfg, lifecycle, train, val, model, optimizer)
    state = DetectorState()
    ckpt = lifecycle.restore_point()
    if ckpt is not None:
        state = restore_run_checkpoint(ctx, ckpt)
        print(f"resumed from {ckpt} (epoch {state.epoch} of {cfg.epochs})")
    rewind_history(lifecycle.dir / HISTORY, state.epoch, write=lifecycle.is_main, key="epoch")
    return ctx, state


# ----------------------------------------------------------------------------------------- train
def recluster(ctx: DetectorContext, epoch: int) -> None:
    """k-means on a sample of the training windows' embeddings (eval mode: no dropout), then every window
    gets its nearest cluster. The sample and the seeding depend on (seed, epoch) only."""
    model, data = ctx.model, ctx.train
    model.eval()
    with torch.no_grad():
        embeddings = [model(f[None]).embedding[0] for f in data.features]
    points = torch.cat(embeddings)
    generator = torch.Generator().manual_seed(ctx.cfg.seed * 100_003 + epoch)
    sample = torch.randperm(len(points), generator=generator)[: int(ctx.cfg.cluster_sample * len(points))]
    centres, _ = kmeans(points[sample], ctx.cfg.model.num_clusters, generator, ctx.cfg.kmeans_iterations)
    ctx.clusters = [assign(e, centres) for e in embeddings]


def train_one_epoch(ctx: DetectorContext, state: DetectorState) -> dict[str, float]:
    """One pass over the training routines; the epoch's mean of each loss."""
    cfg, model = ctx.cfg, ctx.model
    model.train()
    sums: dict[str, float] = {}
    batches = epoch_batches(len(ctx.train), cfg.batch_size, cfg.seed, state.epoch)
    for indices in tqdm(batches, desc=f"epoch {state.epoch + 1}", leave=False, disable=not cfg.progress):
        batch = collate(ctx.train, indices, ctx.clusters)
        out = model(batch.features)
        losses = haan_losses(model, out, batch.mask, batch.labels, batch.coarse_labels, batch.clusters)
        ctx.optimizer.zero_grad(set_to_none=True)
        finite = bool(torch.isfinite(losses["total"].detach()))
        if finite:  # a non-finite loss skips its update
            losses["total"].backward()
            ctx.optimizer.step()
        count_loss(
            state, finite, cfg.max_nonfinite_steps, f"epoch {state.epoch + 1}; lower lr or check features"
        )
        for k, v in losses.items():
            sums[k] = sums.get(k, 0.0) + float(v.detach()) / len(batches)
    return sums


# ----------------------------------------------------------------------------------------- evaluate
def predict(model: HAAN, data: RoutineSet, rule: InferenceConfig) -> list[Detection]:
    """The detections of every routine of ``data``."""
    found: list[Detection] = []
    for routine, features, spans in zip(data.routines, data.features, data.spans):
        found += detect(routine.routine_id, detector_logits(model, features).numpy(), spans, rule)
    return found


def evaluate(model: HAAN, data: RoutineSet, rule: InferenceConfig) -> DetectionReport:
    return evaluate_detection(data.ground_truth(), predict(model, data, rule))


# ----------------------------------------------------------------------------------------- checkpoint
def save_run_checkpoint(ctx: DetectorContext, state: DetectorState) -> None:
    """Model, optimizer, the best epoch's weights and the current clusters; atomic."""
    ctx.lifecycle.tick(state)
    tensors = prefixed(ctx.model.state_dict(), "model") | prefixed(ctx.best, "best")
    opt_tensors, opt_meta = flatten_optimizer(ctx.optimizer.state_dict(), "optim")
    tensors |= opt_tensors
    if ctx.clusters is not None:
        tensors["clusters"] = torch.cat(ctx.clusters)
    ctx.lifecycle.save_checkpoint(
        f"epoch_{state.epoch:05d}", tensors, state, ctx.cfg.keep_checkpoints, {"optim": opt_meta}
    )


def restore_run_checkpoint(ctx: DetectorContext, path: Path) -> DetectorState:
    tensors, state, payload = ctx.lifecycle.load_checkpoint(path, DetectorState)
    ctx.model.load_state_dict(unprefixed(tensors, "model"), strict=True)
    ctx.optimizer.load_state_dict(unflatten_optimizer(tensors, payload["optim"], "optim"))
    ctx.best = unprefixed(tensors, "best")
    if "clusters" in tensors:
        ctx.clusters = list(torch.split(tensors["clusters"], [len(f) for f in ctx.train.features]))
    return state


def train(ctx: DetectorContext, state: DetectorState) -> None:
    """Epochs from ``state.epoch`` to ``cfg.epochs``, each checkpointed; the last one is evaluated."""
    cfg, lifecycle = ctx.cfg, ctx.lifecycle
    lifecycle.start_clock(state)
    while state.epoch < cfg.epochs:
        if cfg.model.clustering and (state.epoch % cfg.recluster_every == 0 or ctx.clusters is None):
            recluster(ctx, state.epoch)
        record: dict[str, Any] = {"epoch": state.epoch + 1, **train_one_epoch(ctx, state)}
        state.epoch += 1
        if state.epoch % cfg.eval_every == 0 or state.epoch == cfg.epochs:
            report = evaluate(ctx.model, ctx.val, cfg.inference)
            record["val_map"] = report.average_map
            if report.average_map > state.best_map:
                state.best_map, state.best_epoch = report.average_map, state.epoch
                ctx.best = {k: v.detach().clone() for k, v in ctx.model.state_dict().items()}
        if lifecycle.is_main:
            append_history(lifecycle.dir / HISTORY, record)
        if cfg.progress:
            tqdm.write(
                ", ".join(f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}" for k, v in record.items())
            )
        if lifecycle.stop_requested:
            lifecycle.stop(state, lambda: save_run_checkpoint(ctx, state), f"epoch {state.epoch}")
        save_run_checkpoint(ctx, state)


# ----------------------------------------------------------------------------------------- cleanup
def cleanup(ctx: DetectorContext, state: DetectorState) -> dict[str, Any]:
    """The best validation epoch's detector → ``detector/``; its test mAP, once; metrics.json last."""
    cfg, out = ctx.cfg, ctx.lifecycle.dir
    ctx.model.load_state_dict(ctx.best, strict=True)
    metrics: dict[str, Any] = {
        "best_epoch": state.best_epoch,
        "val": evaluate(ctx.model, ctx.val, cfg.inference).to_json(),
        "train_routines": len(ctx.train),
        "val_routines": len(ctx.val),
    }
    if cfg.test_subset:
        test = load_routine_set(cfg.routines, cfg.features, cfg.test_subset)
        if len(test):
            metrics["test"] = evaluate(ctx.model, test, cfg.inference).to_json()
            metrics["test_routines"] = len(test)
    ctx.lifecycle.tick(state)
    if ctx.lifecycle.is_main:
        meta = {
            "class_names": {str(k): list(v) for k, v in sorted(ctx.train.class_names.items())},
            "set_ids": ctx.train.set_ids,
            "features": ctx.train.feature_meta,
            "trained_on": {
                "routines": cfg.routines,
                "features": cfg.features,
                "best_epoch": state.best_epoch,
            },
            "val_average_map": metrics["val"]["average_map"],
        }
        save_detector(out / "detector", ctx.model, cfg.inference, meta)
    metrics |= {
        "epochs": state.epoch,
        "minutes": state.seconds / 60,
        "nonfinite_steps": state.nonfinite_steps,
        "config": to_dict(cfg),
        "machine": machine_summary(),
    }
    print(
        f"best epoch {state.best_epoch}: val mAP {metrics['val']['average_map']:.4f}"
        + (f", test mAP {metrics['test']['average_map']:.4f}" if "test" in metrics else "")
    )
    return ctx.lifecycle.finish(metrics)


# ----------------------------------------------------------------------------------------- run
def run(cfg: DetectorTrainConfig, resume: bool = False) -> dict[str, Any]:
    with RunLifecycle(cfg.out_dir, cfg, resume=resume, may_differ=RESUME_MAY_DIFFER) as lifecycle:
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
        epilog=EXIT_CODES + "\n" + config_epilog(DetectorTrainConfig, argv),
    )
    parser.add_argument("--config", help="YAML config (keys below)")
    parser.add_argument("--resume", action="store_true", help="continue from the run's last checkpoint")
    parser.add_argument("overrides", nargs="*", help="key.sub=value overrides")
    args = parser.parse_args(argv)
    cfg = None
    try:
        cfg = load_config(DetectorTrainConfig, args.config, args.overrides)
        run(cfg, resume=args.resume)
    except (Exception, KeyboardInterrupt) as err:  # noqa: BLE001 - exit_code gives each its exit code
        return exit_code(err, BAD_INPUT_ERRORS, lambda: cfg.out_dir if cfg else None)
    print(f"detector: {Path(cfg.out_dir) / 'detector'}")
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
