"""Augmentation of one decoded sample into the labeled / weak / strong / eval views
(docs/DESIGN.md §Augmentation).

Input: the frames of ONE decode, ``[S, H, W, 3]`` uint8 in the sampler's flat order (view0's frames,
then view1's, ...). Output: ``[C, S, h, w]`` float, normalised (eval: ``[n_test, C, S, h, w]``)::

    frames [S,H,W,3] uint8 ──► per view: crop box in source pixels ──► resize crop to h×w (uint8,
        antialiased) ──► h-flip ──► planar [C,S,h,w] uint8 ──► time order (gather of the resized frames:
        reversal / warping, strong only) ──► channel dropout (strong only) ──► one float conversion +
        normalisation (here, or after collation with ``normalize=False``)

Pipelines:
- ``labeled``: scale jitter (short side ~ U[256, 320] for a 224 output, scaled for other sizes: 64 ->
  U[73, 91]), random crop, horizontal flip if ``flip``; one crop/flip for every view of the clip.
- ``weak`` (teacher input): the labeled pipeline, as in SVFormer/SeFAR.
- ``strong`` (student input): crop and flip drawn independently per view, then the temporal
  perturbation: ``mod_reverse`` (Mod-Perturb: reverse the frame order of the fine-level views only; the
  coarse view keeps its order so a direction cue survives), ``all_reverse`` (every view; the ablation),
  ``warp`` (SVFormer-style temporal warping: monotone resampling with repetition inside each view) or
  ``none``; then channel dropout (one random colour channel zeroed with probability p).
  The official SeFAR code flips the colour axis where it means time; here reversal is on the time axis.
- ``eval``: short side resized to ``eval_short_side``, centre crop (or three crops along the long
  side), for each temporal offset the sampler produced.

Cost matters (the loader must keep up with decoding, see ``scripts/bench_loader.py``): the crop box
is computed in source pixels and only the crop is resized ("crop before resize"), resizing runs on
uint8 channels-last tensors (torch's vectorised path), time reordering is a numpy gather of the resized
uint8 frames (each view's frames share a crop, so it commutes with the per-frame resize), the
flip rides on the layout copy, and there is exactly one float conversion per output. No per-frame
Python loops. TubeTokenMix is not here:
it mixes tokens across the batch and belongs to the model.

Shape notation: S = sum(views) frames, V views, C = 3 channels, H/W source pixels, h/w output pixels.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F

from sefar_encoder.sampling import fine_views

TemporalPerturb = Literal["mod_reverse", "all_reverse", "warp", "none"]


@dataclass
class AugmentConfig:
    """Augmentation options (nested in the data config as ``data.augment``)."""

    jitter_short_side: tuple[int, int] = field(
        default=(256, 320),
        metadata={"help": "short-side range of scale jitter for a `jitter_reference`-pixel crop"},
    )
    jitter_reference: int = field(
        default=224, metadata={"help": "output size the jitter range refers to; scaled to image_size"}
    )
    flip: bool = field(
        default=True,
        metadata={"help": "horizontal flip; only if label-preserving (SynthGym: see its notes)"},
    )
    temporal_perturb: TemporalPerturb = field(
        default="mod_reverse",
        metadata={"help": "strong view: mod_reverse (fine views) | all_reverse | warp (SVFormer) | none"},
    )
    reverse_views: tuple[int, ...] | None = field(
        default=None, metadata={"help": "views mod_reverse reverses; null = the fine views (fewest frames)"}
    )
    independent_view_crops: bool = field(
        default=True, metadata={"help": "strong view: draw crop and flip independently for each view"}
    )
    channel_dropout: float = field(
        default=0.2,
        metadata={"help": "strong view: probability of zeroing (pixel value 0) one random colour channel"},
    )
    mean: tuple[float, float, float] = field(
        default=(0.485, 0.456, 0.406), metadata={"help": "per-channel mean (RGB, in [0, 1])"}
    )
    std: tuple[float, float, float] = field(
        default=(0.229, 0.224, 0.225), metadata={"help": "per-channel std (RGB, in [0, 1])"}
    )
    eval_short_side: int = field(
        default=0, metadata={"help": "eval: short side before the crop; 0 = image_size"}
    )
    test_offsets: int = field(default=1, metadata={"help": "eval: temporal offsets (clips) per video"})
    test_crops: Literal[1, 3] = field(default=1, metadata={"help": "eval: 1 centre crop or 3 crops"})


@dataclass(frozen=True)
class CropBox:
    """A square crop in source pixels, resized to the output size, optionally mirrored."""

    top: int
    left: int
    size: int
    flip: bool = False


@dataclass(frozen=True)
class AugParams:
    """Everything random about one augmented sample; ``apply`` is deterministic given these.

    ``boxes[v]`` is view v's crop; ``time_order`` ``[S]`` gathers the decoded frames into output order
    (identity unless perturbed); ``reversed_views`` / ``warped_views`` and ``dropped_channel`` say what
    the strong pipeline did (for tests and analysis).
    """

    boxes: tuple[CropBox, ...]
    time_order: np.ndarray | None = None
    reversed_views: tuple[int, ...] = ()
    warped_views: tuple[int, ...] = ()
    dropped_channel: int | None = None


def scaled_jitter_range(image_size: int, cfg: AugmentConfig) -> tuple[int, int]:
    """Short-side jitter range for ``image_size`` output: (256, 320) @ 224 -> (73, 91) @ 64."""
    lo, hi = cfg.jitter_short_side
    ratio = image_size / cfg.jitter_reference
    return max(image_size, round(lo * ratio)), max(image_size, round(hi * ratio))


def resize_frames(frames: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """``[T, 3, H, W]`` uint8 -> ``[T, 3, *size]`` uint8, bilinear with antialiasing.

    Channels-last uint8 input takes torch's vectorised uint8 path (no float round trip).
    """
    if tuple(frames.shape[-2:]) == tuple(size):
        return frames
    return F.interpolate(frames, size=size, mode="bilinear", antialias=True, align_corners=False)


@contextlib.contextmanager
def one_thread() -> Iterator[None]:
    """Run torch ops single-threaded (restoring the count after).

    Per-sample tensors are small (~10^5 elements): splitting them over intra-op threads costs more in
    synchronisation than it gains, and on a busy machine it made augmentation 2-10x slower in the main
    process (DataLoader workers already run with one thread). Setting the count is ~0.2 us.
    """
    threads = torch.get_num_threads()
    if threads == 1:
        yield
        return
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def normalize_video(
    video: torch.Tensor,
    mean: tuple[float, float, float],
    std: tuple[float, float, float],
    out: torch.Tensor | None = None,
) -> torch.Tensor:
    """uint8 pixels ``[..., C, S, H, W]`` (C at dim -4) -> float32 ``(x / 255 - mean) / std``.

    Runs wherever ``video`` lives (CPU or GPU); ``out`` (float32, same shape) receives the result.
    """
    scale, shift = _norm_constants(tuple(mean), tuple(std), str(video.device))
    result = video.float() if out is None else out.copy_(video)
    return result.mul_(scale).sub_(shift)


@functools.lru_cache(maxsize=16)
def _norm_constants(mean: tuple, std: tuple, device: str) -> tuple[torch.Tensor, torch.Tensor]:
    """``(x / 255 - mean) / std == x * scale - shift``: two in-place ops after one conversion."""
    std_t = torch.tensor(std, dtype=torch.float32, device=device)
    scale = (1.0 / (255.0 * std_t)).view(3, 1, 1, 1)
    shift = (torch.tensor(mean, dtype=torch.float32, device=device) / std_t).view(3, 1, 1, 1)
    return scale, shift


def _as_tensor(frames: np.ndarray | torch.Tensor) -> torch.Tensor:
    """``[S, H, W, 3]`` uint8 (numpy or torch) -> ``[S, 3, H, W]`` view with channels-last strides."""
    if isinstance(frames, np.ndarray):
        frames = torch.from_numpy(np.ascontiguousarray(frames))
    if frames.dtype != torch.uint8 or frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"expected [S, H, W, 3] uint8 frames, got {tuple(frames.shape)} {frames.dtype}")
    return frames.permute(0, 3, 1, 2)


class ClipTransform:
    """Labeled / weak / strong / eval pipelines for one view layout and output size.

    ``t = ClipTransform((2, 2, 4), 224, AugmentConfig())``; ``video, params = t.labeled(frames, rng)``;
    ``weak, strong, (pw, ps) = t.weak_strong(frames, rng)``; ``t.eval(frames_per_offset)``.
    Lower level: ``params = t.sample_params(kind, rng, H, W)`` then ``t.apply(frames, params)``.
    """

    def __init__(
        self,
        views: tuple[int, ...],
        image_size: int,
        cfg: AugmentConfig | None = None,
        normalize: bool = True,
    ):
        self.cfg = cfg or AugmentConfig()
        self.normalize = normalize  # False: outputs stay uint8 pixels, see normalize_video
        self.views = tuple(views)
        self.image_size = int(image_size)
        self.num_frames = sum(self.views)
        self.starts = np.concatenate([[0], np.cumsum(self.views)[:-1]]).astype(np.int64)
        self.jitter = scaled_jitter_range(self.image_size, self.cfg)
        if self.cfg.temporal_perturb == "mod_reverse":
            rv = self.cfg.reverse_views
            self.mod_views = tuple(rv) if rv is not None else fine_views(self.views)
        else:
            self.mod_views = ()
        if any(not 0 <= v < len(self.views) for v in self.mod_views):
            raise ValueError(f"reverse_views {self.mod_views} out of range for views {self.views}")
        if not 0.0 <= self.cfg.channel_dropout <= 1.0:
            raise ValueError(f"channel_dropout must be in [0, 1], got {self.cfg.channel_dropout}")

    # ---- random parameters -------------------------------------------------------------------
    def _random_box(self, rng: np.random.Generator, height: int, width: int) -> CropBox:
        short = min(height, width)
        target_short = rng.uniform(self.jitter[0], self.jitter[1])
        # Cropping image_size px after resizing the short side to target_short == cropping this many
        # source px and resizing the crop (same field of view, far fewer pixels resized).
        size = min(short, max(1, round(self.image_size * short / target_short)))
        top = int(rng.integers(0, height - size + 1))
        left = int(rng.integers(0, width - size + 1))
        flip = bool(self.cfg.flip and rng.random() < 0.5)
        return CropBox(top, left, size, flip)

    def _perturb_order(self, rng: np.random.Generator) -> tuple[np.ndarray | None, tuple, tuple]:
        mode = self.cfg.temporal_perturb
        if mode == "none":
            return None, (), ()
        order = np.arange(self.num_frames)
        if mode in ("mod_reverse", "all_reverse"):
            chosen = self.mod_views if mode == "mod_reverse" else tuple(range(len(self.views)))
            for v in chosen:
                s, n = self.starts[v], self.views[v]
                order[s : s + n] = order[s : s + n][::-1]
            return (order if chosen else None), tuple(chosen), ()
        # warp: per view a sorted draw with replacement = a random local speed change that keeps the
        # direction (SVFormer's temporal warping, restricted to the frames already decoded).
        for v, n in enumerate(self.views):
            s = self.starts[v]
            order[s : s + n] = s + np.sort(rng.integers(0, n, size=n))
        return order, (), tuple(range(len(self.views)))

    def sample_params(
        self, kind: Literal["labeled", "weak", "strong"], rng: np.random.Generator, height: int, width: int
    ) -> AugParams:
        """Draw the random parameters of one pipeline for frames of ``height`` × ``width`` pixels."""
        if kind in ("labeled", "weak"):
            return AugParams(boxes=(self._random_box(rng, height, width),) * len(self.views))
        if kind != "strong":
            raise ValueError(f"unknown pipeline {kind!r}")
        if self.cfg.independent_view_crops:
            boxes = tuple(self._random_box(rng, height, width) for _ in self.views)
        else:
            boxes = (self._random_box(rng, height, width),) * len(self.views)
        order, reversed_views, warped_views = self._perturb_order(rng)
        dropped = int(rng.integers(0, 3)) if rng.random() < self.cfg.channel_dropout else None
        return AugParams(boxes, order, reversed_views, warped_views, dropped)

    # ---- deterministic application ----------------------------------------------------------
    def _crop_resize(self, frames: torch.Tensor, box: CropBox) -> np.ndarray:
        """``[n, 3, H, W]`` uint8 (channels-last) -> ``[n, h, w, 3]`` uint8 numpy view, flipped if asked."""
        crop = frames[:, :, box.top : box.top + box.size, box.left : box.left + box.size]
        out = resize_frames(crop, (self.image_size, self.image_size)).permute(0, 2, 3, 1).numpy()
        # The flip is a negative-stride view: it costs nothing until the planar copy in _apply.
        return out[:, :, ::-1] if box.flip else out

    def output_shape(self) -> tuple[int, int, int, int]:
        """``(C, S, h, w)`` of one pipeline output."""
        return (3, self.num_frames, self.image_size, self.image_size)

    def apply(
        self, frames: np.ndarray | torch.Tensor, params: AugParams, out: torch.Tensor | None = None
    ) -> torch.Tensor:
        """``frames [S, H, W, 3]`` uint8 -> ``[C, S, h, w]`` float using ``params``.

        ``out`` (float32 ``[C, S, h, w]``, e.g. a row of a batch buffer) receives the result, which saves
        the copy a later ``torch.stack`` would make.
        """
        with one_thread():
            return self._apply(frames, params, out)

    def _apply(
        self, frames: np.ndarray | torch.Tensor, params: AugParams, out: torch.Tensor | None
    ) -> torch.Tensor:
        x = _as_tensor(frames)  # [S, 3, H, W] channels-last view of [S, H, W, 3]
        if x.shape[0] != self.num_frames:
            raise ValueError(f"expected {self.num_frames} frames for views {self.views}, got {x.shape[0]}")
        # Interleaved RGB -> planar [C, S, h, w] in uint8 (a quarter of the bytes of float), then one
        # contiguous float conversion: cheaper than converting and transposing at once.
        planar = np.empty(self.output_shape(), dtype=np.uint8)
        if all(b == params.boxes[0] for b in params.boxes):
            planar[:] = self._crop_resize(x, params.boxes[0]).transpose(3, 0, 1, 2)
        else:
            for s, n, box in zip(self.starts.tolist(), self.views, params.boxes):
                planar[:, s : s + n] = self._crop_resize(x[s : s + n], box).transpose(3, 0, 1, 2)
        if params.time_order is not None:
            # Time reordering stays inside each view (whose frames share one box) and resizing is per
            # frame, so gathering the small resized frames equals resizing the gathered source frames.
            planar = planar[:, params.time_order]
        if params.dropped_channel is not None:
            planar[params.dropped_channel] = 0  # channel dropout in pixel space (same in uint8 mode)
        if not self.normalize:
            return torch.from_numpy(planar) if out is None else out.copy_(torch.from_numpy(planar))
        return normalize_video(torch.from_numpy(planar), self.cfg.mean, self.cfg.std, out)  # [C, S, h, w]

    # ---- pipelines --------------------------------------------------------------------------
    def labeled(
        self, frames: np.ndarray, rng: np.random.Generator, out: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, AugParams]:
        """Scale jitter + random crop + flip, shared by all views: ``[C, S, h, w]``."""
        params = self.sample_params("labeled", rng, frames.shape[1], frames.shape[2])
        return self.apply(frames, params, out), params

    def weak_strong(
        self,
        frames: np.ndarray,
        rng: np.random.Generator,
        out_weak: torch.Tensor | None = None,
        out_strong: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, tuple[AugParams, AugParams]]:
        """Teacher (weak) and student (strong) views of the SAME decoded frames: two ``[C, S, h, w]``."""
        height, width = frames.shape[1], frames.shape[2]
        weak_params = self.sample_params("weak", rng, height, width)
        strong_params = self.sample_params("strong", rng, height, width)
        return (
            self.apply(frames, weak_params, out_weak),
            self.apply(frames, strong_params, out_strong),
            (weak_params, strong_params),
        )

    def eval_boxes(self, height: int, width: int) -> list[CropBox]:
        """Centre crop, or 3 crops (start, centre, end of the long side) after the short-side resize."""
        short = min(height, width)
        target_short = self.cfg.eval_short_side or self.image_size
        size = min(short, max(1, round(self.image_size * short / target_short)))
        top, left = (height - size) // 2, (width - size) // 2
        if self.cfg.test_crops == 1:
            return [CropBox(top, left, size)]
        if width >= height:
            return [CropBox(top, x, size) for x in (0, left, width - size)]
        return [CropBox(y, left, size) for y in (0, top, height - size)]

    def num_test_views(self) -> int:
        """``n_test`` = temporal offsets × spatial crops."""
        return self.cfg.test_offsets * self.cfg.test_crops

    def eval(self, frames_per_offset: list[np.ndarray], out: torch.Tensor | None = None) -> torch.Tensor:
        """One ``[S, H, W, 3]`` array per temporal offset -> ``[n_offsets * n_crops, C, S, h, w]``
        (offset-major: all crops of offset 0 first)."""
        height, width = frames_per_offset[0].shape[1:3]
        boxes = self.eval_boxes(height, width)
        n_test = len(frames_per_offset) * len(boxes)
        if out is None:  # float32, or uint8 pixels when normalisation comes later (normalize=False)
            dtype = torch.float32 if self.normalize else torch.uint8
            out = torch.empty((n_test, *self.output_shape()), dtype=dtype)
        for i, (frames, box) in enumerate((f, b) for f in frames_per_offset for b in boxes):
            self.apply(frames, AugParams((box,) * len(self.views)), out[i])
        return out
