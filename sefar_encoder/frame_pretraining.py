"""Frame pretraining of an image ViT on single SynthGym frames — SynthGym's stand-in for ImageNet weights
(``scripts/pretrain_image_backbone.py`` is its recipe): the configuration, the frames and their
annotations, the augmentation that moves the labels with the pixels, the targets, the heads, the losses
and the held-out figures.

A tiny video transformer trained from scratch barely learns in a CPU budget; started from an image
backbone that already sees bodies, it learns in minutes (docs/DESIGN.md §SynthGym). Every SynthGym run,
whatever the method, starts from this backbone through the same loading path as ImageNet weights for
FineGym.

Data: the data set's separate ``pretrain/`` split (its own seed: never frames of the train pool, val or
test) with the generator's per-frame annotations from ``pretrain/frames.jsonl``. Every target is
something the frame shows (not the clip's take-off facing, which a frame after a turn contradicts): per
frame, the body axis and the chest normal in image axes, the athlete box, body shape, apparatus and the
visible facing; per patch token, a body-part map of its pixels (head, trunk, chest panel, upper arms,
forearms, thighs, shins and feet in 4-px cells), so the tokens the video model attends over already
encode the pose. Only the backbone is kept.

Shape notation: B frames in a batch, N patch tokens, D width, P body parts.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from gym_qa.synthgym.athlete import PARTS
from gym_qa.synthgym.render import capsule_coverage
from sefar_encoder.decoding import DecodeError, read_frames
from sefar_encoder.model.encoder import ModelConfig
from sefar_encoder.runtime.config import ConfigError, to_dict
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
        default=True, metadata={"help": "random horizontal mirror; the geometric labels follow it"}
    )
    permute_channels: bool = field(
        default=True, metadata={"help": "random RGB channel order per frame (SynthGym's colours are random)"}
    )
    parts_weight: float = field(default=5.0, metadata={"help": "weight of the per-patch part-map loss"})
    eval_every: int = field(
        default=0, metadata={"help": "print held-out figures every N steps (0 = only at the end)"}
    )
    seed: int = field(default=0, metadata={"help": "random seed"})
    progress: bool = field(default=True, metadata={"help": "progress bar"})
    checkpoint_every: int = field(default=500, metadata={"help": "checkpoint every N steps (and on SIGTERM)"})
    keep_checkpoints: int = field(default=1, metadata={"help": "checkpoints kept on disk"})
    max_nonfinite_steps: int = field(default=5, metadata={"help": "stop after N non-finite losses in a row"})


# Settings a resumed run may change: they do not alter the trained weights.
RESUME_MAY_DIFFER = frozenset({"progress", "checkpoint_every", "keep_checkpoints"})
# Settings the fingerprint leaves out: where the backbone goes, and those that do not alter the weights.
# (eval_every does not either, but leaving it out now would rename every existing backbone folder.)
NOT_FINGERPRINTED = ("out_dir", "progress", "checkpoint_every", "keep_checkpoints", "max_nonfinite_steps")


# Body parts grouped for the dense part map; left and right share a group, so a mirror keeps the map's
# meaning (the mirrored image of a left arm is drawn like a right arm).
PART_GROUPS: dict[str, tuple[str, ...]] = {
    "head": ("head", "hair", "face"),
    "trunk": ("torso",),
    "chest": ("chest",),
    "upper_arms": ("upper_arm_l", "upper_arm_r"),
    "forearms": ("forearm_l", "forearm_r"),
    "thighs": ("thigh_l", "thigh_r"),
    "shins_feet": ("shin_l", "shin_r", "foot_l", "foot_r"),
}
PART_NAMES = [name for name, _ in PARTS]
GROUP_PARTS = [[PART_NAMES.index(n) for n in names] for names in PART_GROUPS.values()]  # part indices
TORSO = PART_NAMES.index("torso")
BATCH_KEYS = ("parts", "box", "chest", "shape", "apparatus")
CELL_PX = 4  # the part map's cell: a patch of p pixels predicts (p / 4)^2 cells per group
FACING_MIN = 0.5  # |chest x| above this: the chest visibly points left or right (else no facing label)


class FrameHeads(nn.Module):
    """Per-frame prediction heads (discarded after pretraining): on the pooled feature, the body axis
    (unit torso vector hip -> neck in image axes), the chest normal (x, y, z in image axes), the athlete
    box, body shape, apparatus and visible facing; on every patch token, the body-part map of its
    pixels (``len(PART_GROUPS)`` groups × (patch / 4)² cells of 4 px)."""

    def __init__(self, dim: int, num_shapes: int, num_apparatus: int, patch_size: int):
        super().__init__()
        self.cells = patch_size // CELL_PX
        self.regress = nn.Linear(dim, 2 + 3 + 4)
        self.shape = nn.Linear(dim, num_shapes)
        self.apparatus = nn.Linear(dim, num_apparatus)
        self.facing = nn.Linear(dim, 2)
        self.parts = nn.Linear(dim, len(PART_GROUPS) * self.cells**2)

    def forward(self, pooled: torch.Tensor, patches: torch.Tensor) -> dict[str, torch.Tensor]:
        """pooled: [B, D]; patches: [B, N, D] on a square grid. ``parts``: [B, groups, G, G] logits,
        G = grid × cells."""
        b, n, _ = patches.shape
        grid, c = math.isqrt(n), self.cells
        maps = self.parts(patches).view(b, grid, grid, len(PART_GROUPS), c, c)
        return {
            "regress": self.regress(pooled),
            "shape": self.shape(pooled),
            "apparatus": self.apparatus(pooled),
            "facing": self.facing(pooled),
            "parts": maps.permute(0, 3, 1, 4, 2, 5).reshape(b, len(PART_GROUPS), grid * c, grid * c),
        }


def run_vit(vit: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The timm ViT's pooled feature and its patch tokens (after the final norm)."""
    tokens = vit.forward_features(x)
    return vit.forward_head(tokens, pre_logits=True), tokens[:, vit.num_prefix_tokens :]


class AnnotationError(ValueError):
    """A line of ``pretrain/frames.jsonl`` is not what this version reads."""


def load_frames(cfg: PretrainConfig) -> dict[str, torch.Tensor]:
    """Decode the pretrain clips into memory: uint8 frames [F, 3, S, S] (S = the model's input size)
    and per-frame annotations in that frame's pixels: ``parts`` [F, P, 5] capsules, ``box`` [F, 4],
    ``chest`` [F, 3], and ``shape``, ``apparatus``, ``clip`` ids."""
    root = Path(cfg.data_root)
    ann_path = root / "pretrain" / "frames.jsonl"
    if not ann_path.is_file():
        raise FileNotFoundError(
            f"{ann_path}: no pretraining split (generate it with scripts/make_synthgym.py)"
        )
    records = []
    for line_no, line in enumerate(ann_path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as err:
            raise AnnotationError(f"{ann_path}:{line_no}: not a JSON object ({err.msg})") from None
        if "parts" not in rec.get("frames", {}):
            raise AnnotationError(
                f"{ann_path}:{line_no}: no per-frame body parts (written by SynthGym >= 1.2); "
                "regenerate the data set with scripts/make_synthgym.py"
            )
        records.append(rec)
    apparatus = sorted({r["apparatus"] for r in records})
    size = cfg.model.img_size
    frames, clip_ids = [], []
    ann: dict[str, list] = {k: [] for k in BATCH_KEYS}
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
        px = np.array([size / w, size / h, size / w, size / h], np.float32)
        parts = np.asarray(fr["parts"], np.float32)[idx]  # [T, P, 5]
        parts[..., :4] *= px
        parts[..., 4] *= size / max(h, w)
        ann["parts"].append(parts)
        ann["box"].append(np.asarray(fr["box"], np.float32)[idx] * px)
        ann["chest"].append(np.asarray(fr["chest"], np.float32)[idx])
        ann["shape"].append(np.asarray(fr["shape_id"])[idx])
        ann["apparatus"].append(np.full(len(idx), apparatus.index(rec["apparatus"])))
        clip_ids.append(np.full(len(idx), ci))
    out = {"frames": torch.cat(frames), "clip": torch.from_numpy(np.concatenate(clip_ids))}
    for k in BATCH_KEYS:
        out[k] = torch.from_numpy(np.concatenate(ann[k]))
    out["num_apparatus"] = len(apparatus)
    return out


def fingerprint(cfg: PretrainConfig) -> str:
    """Hash of the settings and of the pretrain annotations: same hash = same recipe and data. Two trainings
    of one recipe are close but not bit-identical (held-out figures within ~1 point: docs/RESULTS.md)."""
    settings = {k: v for k, v in to_dict(cfg).items() if k not in NOT_FINGERPRINTED}
    ann = (Path(cfg.data_root) / "pretrain" / "frames.jsonl").read_bytes()
    return hashlib.sha256(json.dumps(settings, sort_keys=True).encode() + ann).hexdigest()[:16]


def backbone_dir(cfg: PretrainConfig) -> Path:
    """The run folder: ``out_dir``, or by default ``<data_root>/backbones/<fingerprint>``."""
    if not cfg.data_root:
        raise ConfigError("data_root is required")
    return Path(cfg.out_dir) if cfg.out_dir else Path(cfg.data_root) / "backbones" / fingerprint(cfg)


def lr_factor(step: int, steps: int) -> float:
    """The learning rate at ``step`` over the peak: linear warm-up over 5 % of the steps, cosine decay."""
    warm = max(1, steps // 20)
    return min(1.0, (step + 1) / warm) * 0.5 * (1 + math.cos(math.pi * min(1.0, step / steps)))


def normalise(frames: torch.Tensor) -> torch.Tensor:
    return (frames.float() / 255.0 - MEAN) / STD


def augment(
    frames: torch.Tensor, batch: dict[str, torch.Tensor], gen: torch.Generator, cfg: PretrainConfig
) -> torch.Tensor:
    """Random resized crop (scale jitter as the video pipeline); with ``cfg.mirror`` a random horizontal
    mirror of half the frames; with ``cfg.permute_channels`` a random RGB order per frame. The geometric
    annotations of ``batch`` (``parts``, ``box`` in pixels, ``chest``) follow the crop and the mirror.
    Without the mirror and the channel order, a small ViT learns each pretraining clip's colours instead
    of the body: every frame of a clip shares its apparatus and palette."""
    n, _, h, w = frames.shape
    scale = float(torch.empty(()).uniform_(1.0, 1.3, generator=gen))
    big = F.interpolate(frames.float(), scale_factor=scale, mode="bilinear", align_corners=False)
    top = int(torch.randint(0, big.shape[2] - h + 1, (), generator=gen))
    left = int(torch.randint(0, big.shape[3] - w + 1, (), generator=gen))
    out = big[:, :, top : top + h, left : left + w]
    shift = torch.tensor([left, top], dtype=torch.float32)
    parts, box = batch["parts"].clone(), batch["box"].clone()
    parts[..., 0:2] = parts[..., 0:2] * scale - shift
    parts[..., 2:4] = parts[..., 2:4] * scale - shift
    parts[..., 4] *= scale
    box = (box.view(n, 2, 2) * scale - shift).view(n, 4)
    if cfg.mirror:
        flip = torch.rand(n, generator=gen) < 0.5
        out = torch.where(flip.view(n, 1, 1, 1), out.flip(3), out)
        f = flip.view(n, 1)
        parts[..., 0] = torch.where(f, w - parts[..., 0], parts[..., 0])
        parts[..., 2] = torch.where(f, w - parts[..., 2], parts[..., 2])
        box = torch.where(f, torch.stack([w - box[:, 2], box[:, 1], w - box[:, 0], box[:, 3]], 1), box)
        chest = batch["chest"].clone()
        chest[:, 0] = torch.where(flip, -chest[:, 0], chest[:, 0])
        batch["chest"] = chest
    batch["parts"], batch["box"] = parts, box.clamp(0, w)
    if cfg.permute_channels:
        order = torch.argsort(torch.rand(n, 3, generator=gen), dim=1)  # a random permutation per frame
        out = torch.gather(out, 1, order.view(n, 3, 1, 1).expand_as(out))
    return out


def part_maps(parts: torch.Tensor, size: int, supersample: int = 2) -> torch.Tensor:
    """Binary body-part maps [B, groups, size / 4, size / 4]: a 4-px cell is on for a group when any of
    its ``supersample``² sample points lies on one of the group's capsules (within the one-pixel
    anti-aliasing ramp of the drawn edge, so a limb thinner than the point spacing still marks the
    cells it crosses). parts: [B, P, 5] in pixels."""
    step = CELL_PX / supersample
    centres = (np.arange(size // CELL_PX * supersample, dtype=np.float32) + 0.5) * step
    p = parts.numpy()
    cover = capsule_coverage(
        p[..., 0:2],
        p[..., 2:4],
        np.maximum(p[..., 4], 0.5) + 0.5 * step,
        centres[None, None, None, :],
        centres[None, None, :, None],
    )  # [B, P, S, S]
    groups = np.stack([cover[:, idx].max(1) for idx in GROUP_PARTS], 1)
    return (F.max_pool2d(torch.from_numpy(groups), supersample) > 0).float()


def targets(batch: dict[str, torch.Tensor], size: int) -> dict[str, torch.Tensor]:
    """Training targets from an (augmented) batch of annotations; see :class:`FrameHeads`."""
    torso = batch["parts"][:, TORSO]
    axis = F.normalize(torso[:, 2:4] - torso[:, 0:2], dim=1)  # hip end -> neck end
    cx = batch["chest"][:, 0]
    facing = torch.full_like(batch["shape"], -100)  # ignore_index: chest seen face-on or edge-on
    facing[cx > FACING_MIN], facing[cx < -FACING_MIN] = 1, 0
    return {
        "regress": torch.cat([axis, batch["chest"], batch["box"] / size], 1),
        "shape": batch["shape"],
        "apparatus": batch["apparatus"],
        "facing": facing,
        "parts": part_maps(batch["parts"], size),
    }


def losses(
    pred: dict[str, torch.Tensor], target: dict[str, torch.Tensor], parts_weight: float
) -> dict[str, torch.Tensor]:
    return {
        "regress": F.smooth_l1_loss(pred["regress"], target["regress"], beta=0.1),
        "shape": F.cross_entropy(pred["shape"], target["shape"]),
        "apparatus": F.cross_entropy(pred["apparatus"], target["apparatus"]),
        "facing": F.cross_entropy(pred["facing"], target["facing"], ignore_index=-100),
        "parts": parts_weight * F.binary_cross_entropy_with_logits(pred["parts"], target["parts"]),
    }


@torch.no_grad()
def evaluate(vit: nn.Module, heads: FrameHeads, data: dict, idx: torch.Tensor, size: int) -> dict[str, float]:
    """Held-out frames, unaugmented: class accuracies, visible-facing accuracy (frames with a clear
    facing), body-axis and chest-direction errors in degrees, part-map IoU."""
    vit.eval()
    sums = {
        "shape": 0.0,
        "apparatus": 0.0,
        "facing": 0.0,
        "facing_n": 0,
        "axis": [],
        "chest": [],
        "inter": 0,
        "union": 0,
    }
    for chunk in idx.split(512):
        batch = {k: data[k][chunk] for k in BATCH_KEYS}
        target = targets(batch, size)
        pred = heads(*run_vit(vit, normalise(data["frames"][chunk])))
        for k in ("shape", "apparatus"):
            sums[k] += float((pred[k].argmax(1) == target[k]).sum())
        seen = target["facing"] >= 0
        sums["facing"] += float((pred["facing"].argmax(1)[seen] == target["facing"][seen]).sum())
        sums["facing_n"] += int(seen.sum())
        for name, sl in (("axis", slice(0, 2)), ("chest", slice(2, 5))):
            cos = F.cosine_similarity(pred["regress"][:, sl], target["regress"][:, sl], dim=1)
            sums[name].append(torch.rad2deg(torch.acos(cos.clamp(-1, 1))))
        on, truth = pred["parts"] > 0, target["parts"] > 0
        sums["inter"] += int((on & truth).sum())
        sums["union"] += int((on | truth).sum())
    vit.train()
    return {
        "shape_acc": sums["shape"] / len(idx),
        "apparatus_acc": sums["apparatus"] / len(idx),
        "facing_acc": sums["facing"] / max(1, sums["facing_n"]),
        "axis_err_deg": float(torch.cat(sums["axis"]).mean()),
        "chest_err_deg": float(torch.cat(sums["chest"]).mean()),
        "parts_iou": sums["inter"] / max(1, sums["union"]),
    }
