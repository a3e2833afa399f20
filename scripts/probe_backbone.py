"""Linear probe of a frozen frame backbone, or (--oracle) the perception oracle: how much of the element
classes a backbone's features carry, and how much a perfect reader of the sampled frames could know.

    python scripts/probe_backbone.py --backbone data/synthgym-bench/backbones/<fp>/model.safetensors \\
        --data-root data/synthgym-bench --out runs/probe/bench.json
    python scripts/probe_backbone.py --oracle --preset bench --seed 0 --workers 2 \\
        --out docs/results/oracle_bench.json

The backbone (a ``scripts/pretrain_image_backbone.py`` checkpoint: ``model.safetensors`` with the
``config.json`` beside it) encodes ``--frames`` frames per clip, one from the middle of each of as many
equal segments; nothing is trained but a linear classifier (full-batch Adam, L2 ``--l2``) on the train
list's features, scored on the test list (and, when the data root has a SynthGym ``meta.json``, on its
class pairs: which member of each forward/backward or twist pair the probe prefers). Two readouts:

- ``ordered``: the per-frame features concatenated in time order — a linear model can use the order;
- ``mean``: their mean over time — order-blind, the frame-pool baseline's view of the clip;
- ``views``: the frames of the encoder's dual-level evaluation views (2, 2, 4 of the 8), each view's mean,
  views concatenated in order — what the SeFAR encoder's fusion head reads at initialisation, before
  its temporal attention and time embeddings have learned anything.

The gap between these and a fine-tuned encoder's accuracy tells whether a run is limited by what the
backbone sees or by the training budget. --out gets ``{"ordered": {...}, "mean": {...}, "views": {...}}`` with
``train_top1``, ``test_mean_class``, ``test_top1`` and ``pairs_<kind>`` (fractions), plus the settings; the figures are also
printed.

The oracle (--oracle) needs no backbone and decodes no video. It re-plans the clips of a SynthGym data
set (--data-root: preset, seed, difficulty, camera, style and trimming from its meta.json; every clip id
is checked against the data set's files) or of --preset/--seed, reads each clip's ground truth from the
generator (gym_qa.synthgym.oracle: image-plane body rotation, athlete box, body shape, chest normal,
apparatus) at the encoder's evaluation frames (the centres of --frames equal segments,
sefar_encoder.sampling), and scores a small MLP on it by stratified --folds-fold cross-validation over the
train pool, val and test clips (or the pretraining split, --clips pretrain), for the feature sets
``full``, ``image_plane`` (chest normal without depth), ``no_facing`` (no chest normal) and
``no_apparatus`` (the body alone). The same with the frames spread over the element window only tells
what the evaluation sampling costs. Per class it reports the element window's share of the clip and the
largest motion (salto rotation + twist/turn angle, degrees) between consecutive sampled frames: beyond
about 180° a rotation's direction aliases. --out gets ``{"sampling": {"eval"|"window": {<feature set>:
{"top1", "mean_class", "per_class"}}}, "classes": [...]}`` plus the settings; a table is printed.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import sys
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from gym_qa.lists import read_list
from gym_qa.synthgym.dataset import GENERATOR_VERSION, PRESETS, ClipSpec, Preset, plan_dataset
from gym_qa.synthgym.elements import BY_GLABEL
from gym_qa.synthgym.oracle import FEATURE_SETS, ClipTruth, clip_truth, motion_figures, oracle_features
from mllm.encoders.framepool import load_frame_backbone
from sefar_encoder.decoding import DecodeError, open_video
from sefar_encoder.frame_pretraining import normalise  # the backbone's own input normalisation
from sefar_encoder.metrics import pair_accuracy
from sefar_encoder.sampling import DualLevelSampler
from sefar_encoder.transforms import resize_frames

# The plan's splits each --clips choice reads.
ORACLE_CLIPS: dict[str, tuple[str, ...]] = {"labelled": ("train", "val", "test"), "pretrain": ("pretrain",)}
SAMPLINGS = ("eval", "window")  # the encoder's evaluation frames; the same over the element window only


@torch.no_grad()
def clip_features(
    vit: torch.nn.Module, list_path: Path, views: tuple[int, ...], size: int, progress: bool = True
) -> tuple[torch.Tensor, torch.Tensor]:
    """Features [N, S, D] of every clip in a list at the evaluation frames of ``views`` (segment centres,
    views in order, each view's frames in time order: ``(8,)`` = 8 frames spread over the clip), and
    labels [N]."""
    feats, labels = [], []
    bar = tqdm(read_list(list_path), desc=f"encode {list_path.name}", leave=False, disable=not progress)
    for entry in bar:
        with open_video(entry.path) as clip:
            idx = DualLevelSampler(views).eval(clip.num_frames)[0].flat
            frames = torch.from_numpy(clip.get(idx)).permute(0, 3, 1, 2)
        feats.append(vit(normalise(resize_frames(frames, (size, size)))))
        labels.append(entry.label)
    return torch.stack(feats), torch.tensor(labels)


def view_means(features: torch.Tensor, views: tuple[int, ...]) -> torch.Tensor:
    """``[N, S, D]`` frame features -> ``[N, V * D]``: each view's frame mean, views concatenated in order
    (what the encoder's fusion head reads at initialisation, where every frame is encoded alone)."""
    return torch.cat([chunk.mean(1) for chunk in features.split(list(views), dim=1)], dim=1)


def fit_probe(
    train_x: torch.Tensor,
    train_y: torch.Tensor,
    test_x: torch.Tensor,
    test_y: torch.Tensor,
    l2: float,
    pairs: dict[str, list[list[int]]] | None = None,
) -> dict[str, float]:
    """Standardise on train, fit a linear softmax classifier, score train top-1 and test accuracy, and
    for each kind of class ``pairs`` which member of the pair the probe prefers (``pairs_<kind>``)."""
    mu, sd = train_x.mean(0), train_x.std(0) + 1e-6
    a, b = (train_x - mu) / sd, (test_x - mu) / sd
    classes = int(max(train_y.max(), test_y.max())) + 1
    linear = torch.nn.Linear(a.shape[1], classes)
    opt = torch.optim.Adam(linear.parameters(), lr=1e-2)
    for _ in range(500):
        loss = F.cross_entropy(linear(a), train_y) + l2 * linear.weight.square().sum()
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        hit = (linear(b).argmax(1) == test_y).float()
        per_class = [float(hit[test_y == c].mean()) for c in range(classes) if (test_y == c).any()]
        out = {
            "train_top1": float((linear(a).argmax(1) == train_y).float().mean()),
            "test_top1": float(hit.mean()),
            "test_mean_class": float(np.mean(per_class)),
        }
        probs = linear(b).softmax(1).numpy()
        for kind, pair_list in (pairs or {}).items():
            out[f"pairs_{kind}"] = pair_accuracy(probs, test_y.numpy(), pair_list)["accuracy"]
        return out


# ----------------------------------------------------------------------------------------- oracle
@dataclass(frozen=True)
class OracleSource:
    """The SynthGym clips the oracle reads: a preset's plan and the settings they are rendered with."""

    preset: Preset
    seed: int
    difficulty: float
    camera: str
    style: str
    min_element_share: float
    width: int = 64
    height: int = 64
    data_root: Path | None = None  # set: every clip id is checked against this data set's lists


def oracle_source(data_root: str | None, preset: str, seed: int, difficulty: float) -> OracleSource:
    """The settings of a generated data set (its meta.json), or of a preset and seed."""
    if data_root is None:
        p = PRESETS[preset]
        return OracleSource(p, seed, difficulty, p.camera, p.style, p.min_element_share)
    root = Path(data_root)
    meta_path = root / "meta.json"
    if not meta_path.is_file():
        raise FileNotFoundError(f"{meta_path}: not found (the oracle needs a SynthGym data set)")
    meta = json.loads(meta_path.read_text())
    if meta.get("generator_version") != GENERATOR_VERSION:
        raise ValueError(
            f"{root} was generated by SynthGym {meta.get('generator_version')}, this is {GENERATOR_VERSION}: "
            "its clips cannot be re-planned; regenerate it or pass --preset"
        )
    width, height = meta["resolution"]
    return OracleSource(
        PRESETS[meta["preset"]],
        meta["seed"],
        meta["difficulty"],
        meta["camera"],
        meta["style"],
        meta["min_element_share"],
        width,
        height,
        root,
    )


def _clip_truth(job: tuple[ClipSpec, OracleSource]) -> ClipTruth:
    spec, src = job
    return clip_truth(
        spec, src.difficulty, src.width, src.height, src.camera, src.style, src.min_element_share
    )


def oracle_truths(src: OracleSource, clips: str, workers: int = 1, progress: bool = True) -> list[ClipTruth]:
    """Ground truth of every clip of the ``clips`` splits (:data:`ORACLE_CLIPS`), in plan order; with a
    data root, each clip's id and label must be in its list (the first that is not stops the run)."""
    jobs = [(s, src) for s in plan_dataset(src.preset, src.seed) if s.split in ORACLE_CLIPS[clips]]
    on_disk, listed = None, None
    if src.data_root is not None:
        listed = src.data_root / ("pretrain/train.csv" if clips == "pretrain" else "elements.txt")
        on_disk = {e.path.name.removesuffix(".mp4"): e.label for e in read_list(listed)}
    bar = {"total": len(jobs), "desc": f"oracle {src.preset.name}", "unit": "clip", "disable": not progress}
    truths = []
    # fork: the workers only run numpy, and each clip depends on its own job only
    ctx = mp.get_context("fork") if "fork" in mp.get_all_start_methods() else mp.get_context()
    with ctx.Pool(workers) if workers > 1 else nullcontext() as pool:
        for t in tqdm(pool.imap(_clip_truth, jobs, chunksize=8) if pool else map(_clip_truth, jobs), **bar):
            if on_disk is not None and on_disk.get(t.clip_id) != t.label:
                raise ValueError(
                    f"{listed} has no clip {t.clip_id} of class {t.label}: the data set was not generated "
                    "with the settings of its meta.json by this generator"
                )
            truths.append(t)
    return truths


def sampled_frames(truth: ClipTruth, sampling: str, frames: int) -> np.ndarray:
    """Frame indices in time order. ``eval``: the encoder's evaluation frames, the centres of ``frames``
    equal segments of the clip (its views only reorder them); ``window``: the same over the element
    window only — what the clip shows at best."""
    if sampling not in SAMPLINGS:
        raise ValueError(f"unknown sampling {sampling!r}; choose one of {SAMPLINGS}")
    start, end = truth.window if sampling == "window" else (0, truth.num_frames)
    return start + DualLevelSampler((frames,)).eval(end - start)[0].flat


def stratified_folds(labels: np.ndarray, folds: int, seed: int) -> np.ndarray:
    """Fold id of every clip: each class's clips in a seeded order, dealt round-robin."""
    rng = np.random.default_rng(seed)
    fold = np.zeros(len(labels), np.int64)
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        fold[idx[rng.permutation(len(idx))]] = np.arange(len(idx)) % folds
    return fold


def fit_mlp(
    train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray, classes: int, frames: int, seed: int = 0
) -> np.ndarray:
    """Fit a small MLP on ``[N, frames * D]`` per-frame features (full-batch AdamW) and return the test
    class probabilities ``[N_test, classes]``: a layer of 16 units shared by the frames, then 128 hidden
    units over their concatenation. Sharing the frame layer, and the flipped clips in the training set,
    let a few dozen clips per class suffice. Features are left unscaled: they are already in [-1, 1],
    and scaling a rarely set one-hot column to unit variance would make it dominate."""
    torch.manual_seed(seed)
    a = torch.as_tensor(train_x, dtype=torch.float32)
    b = torch.as_tensor(test_x, dtype=torch.float32)
    y = torch.as_tensor(train_y, dtype=torch.int64)
    width = a.shape[1] // frames
    net = torch.nn.Sequential(
        torch.nn.Unflatten(1, (frames, width)),
        torch.nn.Linear(width, 16),
        torch.nn.ReLU(),
        torch.nn.Flatten(),
        torch.nn.Linear(frames * 16, 128),
        torch.nn.ReLU(),
        torch.nn.Linear(128, classes),
    )
    opt = torch.optim.AdamW(net.parameters(), lr=1e-2, weight_decay=1e-4)
    for _ in range(300):
        loss = F.cross_entropy(net(a), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        return net(b).softmax(1).numpy()


def cross_validated_probs(
    x: np.ndarray, flipped: np.ndarray, y: np.ndarray, classes: int, frames: int, folds: int, seed: int
) -> np.ndarray:
    """Out-of-fold class probabilities [N, classes] of every clip (stratified ``folds``-fold CV); each
    training fold also holds its clips' horizontally flipped features ``flipped`` (a flip keeps the label)."""
    fold = stratified_folds(y, folds, seed)
    probs = np.zeros((len(y), classes))
    for k in range(folds):
        test = fold == k
        train_x = np.concatenate([x[~test], flipped[~test]])
        train_y = np.concatenate([y[~test], y[~test]])
        probs[test] = fit_mlp(train_x, train_y, x[test], classes, frames, seed)
    return probs


def accuracy_summary(probs: np.ndarray, y: np.ndarray, classes: int) -> dict:
    """Top-1 over clips, mean over classes, and per class (None for a class without clips)."""
    hit = probs.argmax(1) == y
    per_class = [float(hit[y == c].mean()) if (y == c).any() else None for c in range(classes)]
    return {
        "top1": float(hit.mean()),
        "mean_class": float(np.mean([v for v in per_class if v is not None])),
        "per_class": per_class,
    }


def oracle_accuracy(
    truths: list[ClipTruth],
    classes: int,
    feature_set: str = "full",
    sampling: str = "eval",
    frames: int = 8,
    folds: int = 5,
    seed: int = 0,
) -> dict:
    """Cross-validated accuracy (:func:`accuracy_summary`) of the oracle features of ``truths``."""
    y = np.array([t.label for t in truths])
    idx = [sampled_frames(t, sampling, frames) for t in truths]
    x = np.stack([oracle_features(t, f, feature_set) for t, f in zip(truths, idx)])
    flipped = np.stack([oracle_features(t.mirrored(), f, feature_set) for t, f in zip(truths, idx)])
    return accuracy_summary(cross_validated_probs(x, flipped, y, classes, frames, folds, seed), y, classes)


def motion_by_class(truths: list[ClipTruth], classes: int, frames: int = 8) -> list[dict]:
    """Per class with clips: their number, mean element window share, and the largest motion between
    consecutive sampled frames (mean and max over the clips; mean with the window sampling)."""
    rows = []
    for c in range(classes):
        mine = [t for t in truths if t.label == c]
        if not mine:
            continue
        ev = [motion_figures(t, sampled_frames(t, "eval", frames)) for t in mine]
        win = [motion_figures(t, sampled_frames(t, "window", frames)) for t in mine]
        steps = np.array([m["max_step_deg"] for m in ev])
        rows.append(
            {
                "label": c,
                "clips": len(mine),
                "window_share": float(np.mean([m["window_share"] for m in ev])),
                "max_step_deg": float(steps.mean()),
                "max_step_deg_max": float(steps.max()),
                "window_max_step_deg": float(np.mean([m["max_step_deg"] for m in win])),
            }
        )
    return rows


def oracle_table(result: dict) -> str:
    """The readable form of an oracle result: a row per class, then the totals."""
    acc = result["sampling"]
    sets = list(FEATURE_SETS)
    head = (
        f"{'class':58s} {'clips':>5s} {'window':>6s} {'step°':>9s} "
        + " ".join(f"{s:>11s}" for s in sets)
        + f" {'full@window':>11s} {'sampling':>8s}"
    )
    lines = [head, "-" * len(head)]
    for row in result["classes"]:
        c = row["label"]
        full, win = acc["eval"]["full"]["per_class"][c], acc["window"]["full"]["per_class"][c]
        lines.append(
            f"{row['name'][:58]:58s} {row['clips']:5d} {row['window_share']:6.2f} "
            f"{row['max_step_deg']:4.0f}/{row['max_step_deg_max']:<4.0f} "
            + " ".join(f"{100 * acc['eval'][s]['per_class'][c]:11.1f}" for s in sets)
            + f" {100 * win:11.1f} {100 * (win - full):+8.1f}"
        )
    lines.append("-" * len(head))
    for key, name in (("top1", "all clips (top-1)"), ("mean_class", "mean over classes")):
        full, win = acc["eval"]["full"][key], acc["window"]["full"][key]
        lines.append(
            f"{name:58s} {result['num_clips']:5d} {'':6s} {'':9s} "
            + " ".join(f"{100 * acc['eval'][s][key]:11.1f}" for s in sets)
            + f" {100 * win:11.1f} {100 * (win - full):+8.1f}"
        )
    lines.append(
        "window: element window / clip; step°: largest salto + twist/turn change between consecutive "
        "sampled frames, mean/max over the class; sampling: full@window - full (what the sampling costs)"
    )
    return "\n".join(lines)


def run_oracle(args: argparse.Namespace) -> int:
    """--oracle: ground truth at the sampled frames, cross-validated accuracy, table and JSON."""
    try:
        src = oracle_source(args.data_root, args.preset, args.seed, args.difficulty)
        truths = oracle_truths(src, args.clips, args.workers, progress=not args.quiet)
    except (FileNotFoundError, ValueError) as err:  # ValueError: version, clip ids, bad list line
        print(f"error: {err}", file=sys.stderr)
        return 1
    classes = len(src.preset.glabels)
    sampling = {
        name: {
            fs: oracle_accuracy(truths, classes, fs, name, args.frames, args.folds, args.seed)
            for fs in FEATURE_SETS
        }
        for name in SAMPLINGS
    }
    per_class = motion_by_class(truths, classes, args.frames)
    for row in per_class:
        e = BY_GLABEL[src.preset.glabels[row["label"]]]
        row.update(glabel=e.glabel, name=f"({e.event}) {e.name}")
    result = {
        "oracle": True,
        "data_root": str(src.data_root) if src.data_root else None,
        "preset": src.preset.name,
        "seed": src.seed,
        "difficulty": src.difficulty,
        "camera": src.camera,
        "style": src.style,
        "min_element_share": src.min_element_share,
        "generator_version": GENERATOR_VERSION,
        "clips": args.clips,
        "frames": args.frames,
        "folds": args.folds,
        "classifier": "MLP (16 units per frame, shared; 128 hidden), 300 full-batch AdamW steps, flipped "
        "training clips added, out-of-fold predictions",
        "feature_sets": {k: list(v) for k, v in FEATURE_SETS.items()},
        "num_clips": len(truths),
        "sampling": sampling,
        "classes": per_class,
    }
    print(oracle_table(result))
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    return 0


# ----------------------------------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        epilog=__doc__.split("\n\n", 1)[1],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--backbone", help="a pretrained frame backbone: its folder or its model.safetensors")
    parser.add_argument("--data-root", help="data set folder (SynthGym layout)")
    parser.add_argument("--train-list", default="splits/100/train.csv", help="relative to --data-root")
    parser.add_argument("--test-list", default="test.csv", help="relative to --data-root")
    parser.add_argument("--frames", type=int, default=8, help="frames per clip (default 8, as the encoder)")
    parser.add_argument("--l2", type=float, default=1e-3, help="L2 penalty on the probe's weights")
    parser.add_argument("--out", help="write the figures here as JSON")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    oracle_args = parser.add_argument_group("perception oracle (--oracle)")
    oracle_args.add_argument("--oracle", action="store_true", help="score the ground truth, not a backbone")
    oracle_args.add_argument(
        "--preset", choices=sorted(PRESETS), help="without --data-root: plan this SynthGym preset"
    )
    oracle_args.add_argument("--seed", type=int, default=0, help="the preset's data set seed; also the CV's")
    oracle_args.add_argument(
        "--difficulty", type=float, default=1.0, help="the preset's nuisance strength (quickstart uses 0.5)"
    )
    oracle_args.add_argument(
        "--clips",
        choices=sorted(ORACLE_CLIPS),
        default="labelled",
        help="train pool + val + test, or pretrain",
    )
    oracle_args.add_argument("--folds", type=int, default=5, help="cross-validation folds")
    oracle_args.add_argument("--workers", type=int, default=1, help="processes rendering the clips")
    args = parser.parse_args(argv)
    if args.oracle:
        if (args.data_root is None) == (args.preset is None):
            parser.error("--oracle needs exactly one of --data-root and --preset")
        return run_oracle(args)
    if args.backbone is None or args.data_root is None:
        parser.error("the backbone probe needs --backbone and --data-root")
    torch.manual_seed(0)
    root = Path(args.data_root)
    try:
        backbone = Path(args.backbone)
        vit, config = load_frame_backbone(backbone.parent if backbone.is_file() else backbone)
        vit.eval()
        progress = not args.quiet
        if args.frames % 4:
            parser.error(f"--frames must be divisible by 4 (the dual-level views), got {args.frames}")
        single, dual = (args.frames,), (args.frames // 4, args.frames // 4, args.frames // 2)
        train = clip_features(vit, root / args.train_list, single, config.img_size, progress)
        test = clip_features(vit, root / args.test_list, single, config.img_size, progress)
        train_dual = clip_features(vit, root / args.train_list, dual, config.img_size, progress)
        test_dual = clip_features(vit, root / args.test_list, dual, config.img_size, progress)
    except (FileNotFoundError, ValueError, DecodeError) as err:  # ValueError: bad list line, config
        print(f"error: {err}", file=sys.stderr)
        return 1
    meta = root / "meta.json"
    pairs = json.loads(meta.read_text()).get("pairs") if meta.is_file() else None
    result = {
        "backbone": args.backbone,
        "data_root": args.data_root,
        "frames": args.frames,
        "train_clips": len(train[1]),
        "test_clips": len(test[1]),
        "ordered": fit_probe(train[0].flatten(1), train[1], test[0].flatten(1), test[1], args.l2, pairs),
        "mean": fit_probe(train[0].mean(1), train[1], test[0].mean(1), test[1], args.l2, pairs),
        "views": fit_probe(
            view_means(train_dual[0], dual), train[1], view_means(test_dual[0], dual), test[1], args.l2, pairs
        ),
    }
    for name in ("ordered", "mean", "views"):
        r = result[name]
        pair_text = "".join(
            f", {k} {100 * v:.1f} %" for k, v in r.items() if k.startswith("pairs_") and v is not None
        )
        print(
            f"{name:8s} train top-1 {100 * r['train_top1']:.1f} %, test mean class "
            f"{100 * r['test_mean_class']:.1f} %, test top-1 {100 * r['test_top1']:.1f} %{pair_text}"
        )
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
