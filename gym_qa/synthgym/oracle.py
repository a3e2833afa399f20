"""The perception oracle: what a model that reads every sampled frame perfectly could know about a clip.

For one planned clip (:func:`gym_qa.synthgym.dataset.plan_dataset`) :func:`clip_truth` gathers the
per-frame ground truth a frame reader could at best extract, and :func:`oracle_features` turns it into
a feature vector at given frame indices (the caller chooses them, e.g. with the encoder's evaluation
sampler). Per frame (in this order):

- ``image_rot``: the body's long axis in the image, as cos/sin of its angle clockwise from image-up — the
  salto rotation mirrored by the clip's facing (what one frame shows, without the take-off facing);
- ``box``: the athlete box x0, y0, x1, y1 divided by the frame's width/height;
- ``shape``: the body-shape label (:data:`~gym_qa.synthgym.poses.SHAPES`), one-hot;
- ``chest``: the chest normal in image axes (x right, y down, z toward the camera); its x sign is the
  facing the frame shows;
- ``apparatus``: the event's apparatus (:data:`~gym_qa.synthgym.elements.EVENTS`), one-hot, in the
  frames that show some of it (all zeros in the others: the close-up often loses the floor in flight).

Without the apparatus the oracle cannot tell an element from its twin on another apparatus (salto
backward tucked on floor and on beam, the turns on one leg), which a frame reader sees at a glance.
Feature sets (:data:`FEATURE_SETS`): ``full`` (all), ``image_plane`` (the chest normal's x, y only: no
depth, so a chest turned toward or away from the camera look alike), ``no_facing`` (no chest normal),
``no_apparatus`` (the body alone).

Per clip, :func:`motion_figures` gives the element window's share of the clip and the largest motion
(salto rotation plus twist/turn angle change, degrees) between consecutive sampled frames: above about
180° the direction of a rotation is ambiguous between two samples.

Rotation, shape and windows come from the pose track; box, chest and apparatus visibility from the
renderer, the only exact source of the box and the visibility (both depend on the camera, fitted to the
whole clip). Shape notation: T frames of a clip, n sampled frames, D features per frame.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from gym_qa.synthgym.dataset import ClipSpec, clip_id, render_clip
from gym_qa.synthgym.elements import BY_GLABEL, EVENTS
from gym_qa.synthgym.poses import SHAPES

FEATURE_SETS: dict[str, tuple[str, ...]] = {
    "full": ("image_rot", "box", "shape", "chest", "apparatus"),
    "image_plane": ("image_rot", "box", "shape", "chest_xy", "apparatus"),
    "no_facing": ("image_rot", "box", "shape", "apparatus"),
    "no_apparatus": ("image_rot", "box", "shape", "chest"),
}


@dataclass(frozen=True)
class ClipTruth:
    """Ground truth of one clip: per-frame arrays of length T and the element window."""

    clip_id: str  # the video's file stem in a generated data set
    label: int
    rot: np.ndarray  # (T,) salto rotation, degrees, continuous (never wrapped), forward positive
    twist: np.ndarray  # (T,) long-axis angle (twists and turns), degrees, continuous
    image_rot: np.ndarray  # (T, 2) cos, sin of the long axis' image angle, clockwise from image-up
    box: np.ndarray  # (T, 4) x0, y0, x1, y1 over width, height, width, height (exclusive end)
    shape_id: np.ndarray  # (T,) index into SHAPES
    chest: np.ndarray  # (T, 3) chest normal in image axes
    apparatus: np.ndarray  # (T, len(EVENTS)) the event one-hot where the apparatus shows, else zeros
    window: tuple[int, int]  # [start, end) frames of the element's motion (all its windows)

    @property
    def num_frames(self) -> int:
        return int(self.rot.shape[0])

    def mirrored(self) -> ClipTruth:
        """The truth of the horizontally flipped frames, a label-preserving augmentation: the image angle
        and the chest's x change sign, the box is mirrored; the pose track, in the facing frame, stays."""
        x0, y0, x1, y1 = self.box.T
        return replace(
            self,
            image_rot=self.image_rot * np.array([1.0, -1.0]),
            box=np.column_stack([1.0 - x1, y0, 1.0 - x0, y1]),
            chest=self.chest * np.array([-1.0, 1.0, 1.0]),
        )


def clip_truth(
    spec: ClipSpec,
    difficulty: float,
    width: int = 64,
    height: int = 64,
    camera: str = "scene",
    style: str = "cluttered",
    min_element_share: float = 0.0,
) -> ClipTruth:
    """Ground truth of a planned clip, rendered (and trimmed) exactly as the data set generator does it;
    the arguments are :func:`~gym_qa.synthgym.dataset.render_clip`'s."""
    track, clip, nz = render_clip(spec, difficulty, width, height, camera, style, min_element_share)
    angle = np.radians(track.rot)
    event = np.eye(len(EVENTS))[list(EVENTS).index(BY_GLABEL[spec.glabel].event)]
    return ClipTruth(
        clip_id=clip_id(spec, track.full_frames, track.span),
        label=spec.label,
        rot=np.asarray(track.rot, float),
        twist=np.asarray(track.twist, float),
        # Image up is (0, -1) with y down; the renderer mirrors x by the facing, so the long axis
        # (f sin rot, -cos rot) lies at the angle f * rot clockwise from up.
        image_rot=np.column_stack([np.cos(angle), nz.facing * np.sin(angle)]),
        box=clip.boxes / np.array([width, height, width, height], float),
        shape_id=np.array([SHAPES.index(s) for s in track.shape]),
        chest=np.asarray(clip.chest, float),
        apparatus=(clip.apparatus_px > 0)[:, None] * event,
        window=track.core_window(),
    )


def oracle_features(truth: ClipTruth, frames: np.ndarray, feature_set: str = "full") -> np.ndarray:
    """Feature vector (n * D,) of the frames ``frames`` (n indices, in the order given) of a clip."""
    if feature_set not in FEATURE_SETS:
        raise ValueError(f"unknown feature set {feature_set!r}; choose one of {sorted(FEATURE_SETS)}")
    frames = np.asarray(frames, dtype=np.int64)
    columns = {
        "image_rot": truth.image_rot[frames],
        "box": truth.box[frames],
        "shape": np.eye(len(SHAPES))[truth.shape_id[frames]],
        "chest": truth.chest[frames],
        "chest_xy": truth.chest[frames, :2],
        "apparatus": truth.apparatus[frames],
    }
    return np.concatenate([columns[k] for k in FEATURE_SETS[feature_set]], axis=1).ravel()


def motion_figures(truth: ClipTruth, frames: np.ndarray) -> dict[str, float]:
    """``window_share``: the element window's length over the clip's; ``max_step_deg``: the largest
    salto rotation plus twist/turn angle change between consecutive ``frames`` (sorted in time)."""
    frames = np.sort(np.asarray(frames, dtype=np.int64))
    step = np.abs(np.diff(truth.rot[frames])) + np.abs(np.diff(truth.twist[frames]))
    start, end = truth.window
    return {
        "window_share": (end - start) / truth.num_frames,
        "max_step_deg": float(step.max()) if step.size else 0.0,
    }
