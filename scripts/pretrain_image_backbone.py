"""Pretrain an image ViT on single SynthGym frames — SynthGym's stand-in for ImageNet weights.

    python scripts/pretrain_image_backbone.py --config configs/pretrain/synthgym_bench.yaml [key=value ...]

A tiny video transformer trained from scratch barely learns in a CPU budget; started from an image
backbone that already sees bodies, it learns in minutes (SPEC §1.3). Every SynthGym run, whatever the
method, starts from this checkpoint through the same loading path as ImageNet weights for FineGym.

Data: the data set's separate ``pretrain/`` split (its own seed: never frames of the train pool, val or
test) with the generator's per-frame labels from ``pretrain/frames.jsonl``. The heads predict, per
frame: body rotation (cos, sin), twist phase (cos, sin), body shape (class), apparatus (class), facing
(left/right) and the athlete box. Only the backbone is kept.

Output (``out_dir``): ``model.safetensors`` (a timm ``VisionTransformer`` state dict, classifier-free,
the key layout ``sefar_encoder.model.image_vit.load_image_vit`` reads), ``config.json`` (architecture,
data fingerprint, held-out head accuracies). If the folder already holds a checkpoint made with the same
settings and data, nothing is done (``--force`` retrains).
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import math
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from torch import nn
from tqdm import tqdm

from gym_qa.synthgym.choreography import SHAPES
from sefar_encoder.config import ConfigError, config_help, load_config, to_dict
from sefar_encoder.decoding import DecodeError, read_frames
from sefar_encoder.model.encoder import ModelConfig
from sefar_encoder.model.image_vit import build_image_vit
from sefar_encoder.transforms import resize_frames

MEAN = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
STD = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)


@dataclass
class PretrainConfig:
    data_root: str = field(default="", metadata={"help": "SynthGym folder with pretrain/frames.jsonl"})
    out_dir: str = field(
        default="", metadata={"help": "where the backbone goes; '' = <data_root>/backbones/<hash>"}
    )
    model: ModelConfig = field(default_factory=ModelConfig)
    steps: int = field(default=1500, metadata={"help": "optimizer steps"})
    batch_size: int = field(default=128, metadata={"help": "frames per step"})
    lr: float = field(default=1e-3, metadata={"help": "AdamW peak lr (cosine decay)"})
    weight_decay: float = field(default=0.05, metadata={"help": "AdamW weight decay"})
    frame_stride: int = field(default=2, metadata={"help": "use every N-th frame of each pretrain clip"})
    holdout: float = field(
        default=0.1, metadata={"help": "fraction of pretrain clips held out for the report"}
    )
    mirror: bool = field(
        default=True, metadata={"help": "random horizontal mirror; the facing label and box follow it"}
    )
    permute_channels: bool = field(
        default=True, metadata={"help": "random RGB channel order per frame (SynthGym's colours are random)"}
    )
    seed: int = field(default=0, metadata={"help": "random seed"})
    progress: bool = field(default=True, metadata={"help": "progress bar"})


class FrameHeads(nn.Module):
    """Per-frame prediction heads on the ViT's pooled feature (discarded after pretraining)."""

    def __init__(self, dim: int, num_shapes: int, num_apparatus: int):
        super().__init__()
        self.regress = nn.Linear(dim, 4 + 4)  # rot cos/sin, twist cos/sin, box (4, normalised)
        self.shape = nn.Linear(dim, num_shapes)
        self.apparatus = nn.Linear(dim, num_apparatus)
        self.facing = nn.Linear(dim, 2)

    def forward(self, feat: torch.Tensor) -> dict[str, torch.Tensor]:
        return {
            "regress": self.regress(feat),
            "shape": self.shape(feat),
            "apparatus": self.apparatus(feat),
            "facing": self.facing(feat),
        }


def load_frames(cfg: PretrainConfig) -> dict[str, torch.Tensor]:
    """Decode the pretrain clips into memory: uint8 frames [F, 3, H, W] and per-frame targets."""
    root = Path(cfg.data_root)
    ann_path = root / "pretrain" / "frames.jsonl"
    if not ann_path.is_file():
        raise FileNotFoundError(
            f"{ann_path}: no pretraining split (generate it with scripts/make_synthgym.py)"
        )
    records = [json.loads(line) for line in ann_path.read_text().splitlines() if line.strip()]
    apparatus = sorted({r["apparatus"] for r in records})
    size = cfg.model.img_size
    frames, targets = [], {k: [] for k in ("regress", "shape", "apparatus", "facing", "clip")}
    for ci, rec in enumerate(
        tqdm(records, desc="decode pretrain clips", disable=not cfg.progress, leave=False)
    ):
        idx = np.arange(0, rec["num_frames"], cfg.frame_stride)
        try:
            clip, _ = read_frames(root / "pretrain" / rec["video"], idx)  # [T, H, W, 3]
        except DecodeError as err:
            raise DecodeError(err.path, f"pretrain clip: {err.reason}") from None
        h, w = clip.shape[1:3]
        video = torch.from_numpy(clip).permute(0, 3, 1, 2)  # [T, 3, H, W]
        frames.append(resize_frames(video, (size, size)))
        fr = rec["frames"]
        for t in idx:
            rot, tw = math.radians(fr["rot"][t]), math.radians(fr["twist"][t])
            x0, y0, x1, y1 = fr["box"][t]
            targets["regress"].append(
                [math.cos(rot), math.sin(rot), math.cos(tw), math.sin(tw), x0 / w, y0 / h, x1 / w, y1 / h]
            )
            targets["shape"].append(fr["shape_id"][t])
            targets["apparatus"].append(apparatus.index(rec["apparatus"]))
            targets["facing"].append(int(rec["facing"] > 0))
            targets["clip"].append(ci)
    out = {"frames": torch.cat(frames)}
    out["regress"] = torch.tensor(targets["regress"], dtype=torch.float32)
    for k in ("shape", "apparatus", "facing", "clip"):
        out[k] = torch.tensor(targets[k], dtype=torch.long)
    out["num_apparatus"] = len(apparatus)
    return out


def fingerprint(cfg: PretrainConfig) -> str:
    """Hash of the settings and of the pretrain annotations: same hash = same backbone."""
    settings = {k: v for k, v in to_dict(cfg).items() if k not in ("out_dir", "progress")}
    ann = (Path(cfg.data_root) / "pretrain" / "frames.jsonl").read_bytes()
    return hashlib.sha256(json.dumps(settings, sort_keys=True).encode() + ann).hexdigest()[:16]


def normalise(frames: torch.Tensor) -> torch.Tensor:
    return (frames.float() / 255.0 - MEAN) / STD


def augment(
    frames: torch.Tensor, batch: dict[str, torch.Tensor], gen: torch.Generator, cfg: PretrainConfig
) -> torch.Tensor:
    """Random resized crop (scale jitter as the video pipeline); with ``cfg.mirror`` a random horizontal
    mirror of half the frames, whose ``batch`` labels follow (facing flips, the box mirrors; rotation,
    twist and shape are the athlete's own and stay); with ``cfg.permute_channels`` a random RGB order per
    frame. Without the last two, a small ViT learns each pretraining clip's colours instead of the body:
    every frame of a clip shares its facing and apparatus."""
    n, _, h, w = frames.shape
    scale = float(torch.empty(()).uniform_(1.0, 1.3, generator=gen))
    big = F.interpolate(frames.float(), scale_factor=scale, mode="bilinear", align_corners=False)
    top = int(torch.randint(0, big.shape[2] - h + 1, (), generator=gen))
    left = int(torch.randint(0, big.shape[3] - w + 1, (), generator=gen))
    out = big[:, :, top : top + h, left : left + w]
    if cfg.mirror:
        flip = torch.rand(n, generator=gen) < 0.5
        out = torch.where(flip.view(n, 1, 1, 1), out.flip(3), out)
        batch["facing"] = torch.where(flip, 1 - batch["facing"], batch["facing"])
        box = batch["regress"][:, 4:].clone()  # x0, y0, x1, y1 as fractions of the frame
        mirrored = torch.stack([1 - box[:, 2], box[:, 1], 1 - box[:, 0], box[:, 3]], 1)
        batch["regress"] = torch.cat([batch["regress"][:, :4], torch.where(flip[:, None], mirrored, box)], 1)
    if cfg.permute_channels:
        order = torch.argsort(torch.rand(n, 3, generator=gen), dim=1)  # a random permutation per frame
        out = torch.gather(out, 1, order.view(n, 3, 1, 1).expand_as(out))
    return out


def losses(pred: dict[str, torch.Tensor], batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {
        "regress": F.smooth_l1_loss(pred["regress"], batch["regress"], beta=0.1),
        "shape": F.cross_entropy(pred["shape"], batch["shape"]),
        "apparatus": F.cross_entropy(pred["apparatus"], batch["apparatus"]),
        "facing": F.cross_entropy(pred["facing"], batch["facing"]),
    }


@torch.no_grad()
def evaluate(vit: nn.Module, heads: FrameHeads, data: dict, idx: torch.Tensor) -> dict[str, float]:
    vit.eval()
    correct = {"shape": 0, "apparatus": 0, "facing": 0}
    rot_err = []
    for chunk in idx.split(512):
        pred = heads(vit(normalise(data["frames"][chunk])))
        for k in correct:
            correct[k] += int((pred[k].argmax(1) == data[k][chunk]).sum())
        p = pred["regress"][:, :2]
        t = data["regress"][chunk, :2]
        err = torch.rad2deg(torch.atan2(p[:, 1], p[:, 0]) - torch.atan2(t[:, 1], t[:, 0]))
        rot_err.append(((err + 180) % 360 - 180).abs())
    vit.train()
    out = {f"{k}_acc": v / len(idx) for k, v in correct.items()}
    out["rot_abs_err_deg"] = float(torch.cat(rot_err).mean())
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="config keys (override with key=value):\n" + "\n".join(config_help(PretrainConfig)),
    )
    parser.add_argument("--config", help="YAML config (see configs/pretrain/)")
    parser.add_argument("--force", action="store_true", help="retrain even if a matching checkpoint exists")
    parser.add_argument("overrides", nargs="*", help="key.sub=value overrides")
    args = parser.parse_args(argv)
    try:
        cfg = load_config(PretrainConfig, args.config, args.overrides)
        out = pretrain(cfg, force=args.force)
    except (ConfigError, FileNotFoundError, DecodeError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(f"backbone: {out / 'model.safetensors'}")
    return 0


def pretrain(cfg: PretrainConfig, force: bool = False) -> Path:
    """Train (or reuse) the frame-pretrained backbone; returns its folder."""
    if not cfg.data_root:
        raise ConfigError("data_root is required")
    fp = fingerprint(cfg)
    out = Path(cfg.out_dir) if cfg.out_dir else Path(cfg.data_root) / "backbones" / fp
    meta_path = out / "config.json"
    if not force and meta_path.is_file() and json.loads(meta_path.read_text()).get("fingerprint") == fp:
        print(f"reusing pretrained backbone {out} (same settings and data)")
        return out
    torch.manual_seed(cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed)
    t0 = time.time()
    data = load_frames(cfg)
    clips = int(data["clip"].max()) + 1
    held = torch.randperm(clips, generator=gen)[: max(1, int(cfg.holdout * clips))]
    is_held = torch.isin(data["clip"], held)
    train_idx, held_idx = torch.nonzero(~is_held).squeeze(1), torch.nonzero(is_held).squeeze(1)

    vit = build_image_vit(cfg.model, num_classes=0)
    heads = FrameHeads(cfg.model.embed_dim, len(SHAPES), data["num_apparatus"])
    params = list(vit.parameters()) + list(heads.parameters())
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    warm = max(1, cfg.steps // 20)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / warm) * 0.5 * (1 + math.cos(math.pi * min(1.0, s / cfg.steps)))
    )
    bar = tqdm(range(cfg.steps), desc="pretrain backbone", disable=not cfg.progress)
    for _ in bar:
        pick = train_idx[torch.randint(0, len(train_idx), (cfg.batch_size,), generator=gen)]
        batch = {k: data[k][pick] for k in ("regress", "shape", "apparatus", "facing")}
        x = normalise(augment(data["frames"][pick], batch, gen, cfg))
        parts = losses(heads(vit(x)), batch)
        loss = sum(parts.values())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        bar.set_postfix(loss=f"{loss.item():.3f}")
    held_metrics = evaluate(vit, heads, data, held_idx)
    out.mkdir(parents=True, exist_ok=True)
    tmp = out / "model.safetensors.tmp"
    save_file({k: v.contiguous() for k, v in vit.state_dict().items()}, str(tmp))
    tmp.replace(out / "model.safetensors")
    meta = {
        "fingerprint": fp,
        "config": to_dict(cfg),
        "architecture": dataclasses.asdict(cfg.model),
        "train_frames": len(train_idx),
        "heldout_frames": len(held_idx),
        "heldout": held_metrics,
        "minutes": (time.time() - t0) / 60,
    }
    (out / "config.json.tmp").write_text(json.dumps(meta, indent=1))
    (out / "config.json.tmp").replace(meta_path)
    print(f"held-out frames: {json.dumps(held_metrics)}")
    return out


if __name__ == "__main__":
    sys.exit(main())
