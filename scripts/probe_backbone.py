"""Linear probe of a frozen frame backbone: how much of the element classes its features already carry.

    python scripts/probe_backbone.py --backbone data/synthgym-bench/backbones/<fp>/model.safetensors \\
        --data-root data/synthgym-bench --out runs/probe/bench.json

The backbone (a ``scripts/pretrain_image_backbone.py`` checkpoint: ``model.safetensors`` with the
``config.json`` beside it) encodes ``--frames`` frames per clip, one from the middle of each of as many
equal segments; nothing is trained but a linear classifier (full-batch Adam, L2 ``--l2``) on the train
list's features, scored on the test list (and, when the data root has a SynthGym ``meta.json``, on its
class pairs: which member of each forward/backward or twist pair the probe prefers). Two readouts:

- ``ordered``: the per-frame features concatenated in time order — a linear model can use the order;
- ``mean``: their mean over time — order-blind, the frame-pool baseline's view of the clip.

The gap between these and a fine-tuned encoder's accuracy tells whether a run is limited by what the
backbone sees or by the training budget. --out gets ``{"ordered": {...}, "mean": {...}}`` with
``train_top1``, ``test_mean_class``, ``test_top1`` and ``pairs_<kind>`` (fractions), plus the settings; the figures are also
printed.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "scripts"))

from pretrain_image_backbone import normalise  # the backbone's own input normalisation

from gym_qa.lists import read_list
from mllm.encoders.framepool import load_frame_backbone
from sefar_encoder.decoding import DecodeError, open_video
from sefar_encoder.metrics import pair_accuracy
from sefar_encoder.transforms import resize_frames


@torch.no_grad()
def clip_features(
    vit: torch.nn.Module, list_path: Path, num_frames: int, size: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Features [N, T, D] of the segment-middle frames of every clip in a list, and labels [N]."""
    feats, labels = [], []
    for entry in tqdm(read_list(list_path), desc=f"encode {list_path.name}", leave=False):
        with open_video(entry.path) as clip:
            idx = ((np.arange(num_frames) + 0.5) * clip.num_frames / num_frames).astype(int)
            frames = torch.from_numpy(clip.get(idx)).permute(0, 3, 1, 2)
        feats.append(vit(normalise(resize_frames(frames, (size, size)))))
        labels.append(entry.label)
    return torch.stack(feats), torch.tensor(labels)


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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        epilog=__doc__.split("\n\n", 1)[1],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--backbone", required=True, help="a pretrained frame backbone: its folder or its model.safetensors"
    )
    parser.add_argument("--data-root", required=True, help="data set folder (SynthGym layout)")
    parser.add_argument("--train-list", default="splits/100/train.csv", help="relative to --data-root")
    parser.add_argument("--test-list", default="test.csv", help="relative to --data-root")
    parser.add_argument("--frames", type=int, default=8, help="frames per clip (default 8, as the encoder)")
    parser.add_argument("--l2", type=float, default=1e-3, help="L2 penalty on the probe's weights")
    parser.add_argument("--out", help="write the figures here as JSON")
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    root = Path(args.data_root)
    try:
        backbone = Path(args.backbone)
        vit, config = load_frame_backbone(backbone.parent if backbone.is_file() else backbone)
        vit.eval()
        train = clip_features(vit, root / args.train_list, args.frames, config.img_size)
        test = clip_features(vit, root / args.test_list, args.frames, config.img_size)
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
    }
    for name in ("ordered", "mean"):
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
