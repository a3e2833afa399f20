"""Non-gymnastics clips in the SynthGym look: what an out-of-domain check must flag (issue 18, point 11).

An encoder trained on SynthGym names one of its elements for every clip, so the toolkit measures how well
its uncertainty scores tell SynthGym clips from clips of something else
(:mod:`sefar_encoder.out_of_domain`, ``scripts/eval_out_of_domain.py``). These clips share everything with
a data set but the gymnastics: the same nuisance factors (:func:`~gym_qa.synthgym.nuisance.sample_nuisance`:
wall, clutter, floor, apparatus tint, pixel noise, contrast, zoom and pan, compression), apparatus,
render style, camera, frame size and frame rate. Four kinds (:data:`KINDS`)::

    empty     the arena with its apparatus and no one in it (the camera pans and zooms as usual)
    ball      that scene with a ball bouncing across it
    shapes    that scene with 2-4 discs and boxes sliding across it
    standing  a SynthGym athlete standing still (a slight sway, arms hanging), drawn by render.render

``standing`` goes through the data set's own drawing (:func:`~gym_qa.synthgym.render.render` of a pose
track that stands); the other kinds draw the same layers (wall with gradient, clutter with parallax, floor,
apparatus: :func:`~gym_qa.synthgym.render.draw_scene`, the layers ``render`` draws behind its athlete),
then their moving shapes with the same primitives, then noise, contrast and brightness. The camera of those kinds is the one
``render`` would choose for someone standing at the clip's position (``render.choose_camera``), so an empty
scene is framed as the standing clip of the same seed. Nothing here changes how data sets are generated.

Clip seeds come from (seed, index) through ``numpy.random.SeedSequence`` with a tag of their own, so they
never reproduce a data set clip's nuisance by accident. Units as in :mod:`~gym_qa.synthgym.render`:
metres, frames at :data:`~gym_qa.synthgym.poses.FPS`. Shape notation: T frames, H×W pixels.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from gym_qa.synthgym.apparatus import Apparatus, apparatus_for
from gym_qa.synthgym.athlete import JOINTS, forward_kinematics
from gym_qa.synthgym.elements import CATALOGUE, EVENTS
from gym_qa.synthgym.nuisance import Nuisance, sample_nuisance
from gym_qa.synthgym.pose_tracks import MAX_FRAMES, MIN_FRAMES, PoseTrack, standing_hip_height
from gym_qa.synthgym.poses import FPS, GROUND, STAND
from gym_qa.synthgym.render import Camera, box_coverage, capsule_coverage, choose_camera, draw_scene, render
from gym_qa.synthgym.writer import write_mp4

KINDS: tuple[str, ...] = ("empty", "ball", "shapes", "standing")
_SEED_TAG = 0x0D0D  # keeps these seeds apart from the data sets' (split codes 1-4)
BALL_RADIUS = 0.12  # metres: a football
STAND_BOX = (0.6, 1.75)  # width and height (metres) of the standing person the camera frames


@dataclass(frozen=True)
class NonGymSpec:
    """One clip to draw: its ``kind`` (:data:`KINDS`), the apparatus of ``event`` in the background, and
    the seed of its nuisance and motion."""

    kind: str
    index: int
    event: str
    seed: int

    @property
    def stem(self) -> str:
        return f"nongym_{self.kind}_{self.index:04d}"


@dataclass
class NonGymClip:
    """frames: (T, H, W, 3) uint8 RGB; athlete_px: (T,) pixels the athlete covers (0 unless standing);
    moving: (T, M, 3) centre x, y (pixels) and radius (pixels) of every moving shape (M = 0 without)."""

    frames: np.ndarray
    athlete_box_px: np.ndarray
    moving: np.ndarray
    nuisance: Nuisance


def plan_non_gymnastics(count: int, seed: int = 0) -> list[NonGymSpec]:
    """``count`` clips, the kinds in turn (empty, ball, shapes, standing, empty, ...), each in front of a
    seeded apparatus."""
    if count < 1:
        raise ValueError(f"count must be >= 1, got {count}")
    events = sorted(EVENTS)
    specs = []
    for i in range(count):
        clip_seed = int(np.random.SeedSequence([int(seed), _SEED_TAG, i]).generate_state(1)[0])
        event = events[int(np.random.default_rng(clip_seed).integers(len(events)))]
        specs.append(NonGymSpec(KINDS[i % len(KINDS)], i, event, clip_seed))
    return specs


def _num_frames(rng: np.random.Generator) -> int:
    return int(rng.integers(MIN_FRAMES, MAX_FRAMES + 1))  # the data sets' clip lengths


def standing_track(event: str, nz: Nuisance, num_frames: int, rng: np.random.Generator) -> PoseTrack:
    """An athlete standing on the floor for ``num_frames`` frames: arms hanging, a sway of about 1 cm and
    a few degrees, facing the camera's side or turned toward it. The track's element is any element of
    ``event`` (it only picks the apparatus drawn behind)."""
    t = np.arange(num_frames) / FPS
    phase = rng.uniform(0, 2 * np.pi, size=3)
    sway = np.sin(2 * np.pi * 0.4 * t + phase[0])  # a slow sway, 0.4 Hz
    joints = np.tile([STAND[k] for k in JOINTS], (num_frames, 1)).astype(float)
    for side in ("sh_l", "sh_r"):
        joints[:, JOINTS.index(side)] += 3.0 * np.sin(2 * np.pi * 0.3 * t + phase[1])
    joints[:, JOINTS.index("hip_l")] += 2.0 * sway
    joints[:, JOINTS.index("hip_r")] += 2.0 * sway
    twist = np.full(num_frames, float(rng.choice([0.0, 270.0, 300.0])))  # profile, or chest to the camera
    rot = 1.5 * np.sin(2 * np.pi * 0.4 * t + phase[2])  # leaning a little forward and back
    fk = forward_kinematics(rot, twist, joints, nz.body)
    position = 0.8 * nz.position  # where on the floor (metres), as the elements' position
    element = next(e for e in CATALOGUE if e.event == event)
    return PoseTrack(
        element=element,
        x=position + 0.01 * sway,
        y=np.full(num_frames, standing_hip_height(nz.body)),
        rot=rot,
        twist=twist,
        joints=joints,
        support=np.full(num_frames, GROUND),
        shape=["stand"] * num_frames,
        windows={"stand": (0, num_frames)},
        speed=1.0,
        span=(0, num_frames),
        full_frames=num_frames,
        fk=fk,
    )


def scene_camera(
    app: Apparatus, nz: Nuisance, num_frames: int, width: int, height: int, camera: str
) -> Camera:
    """The camera ``render`` would use for a person of :data:`STAND_BOX` standing at the clip's position."""
    x = 0.8 * nz.position * nz.facing
    lo = np.tile([x - STAND_BOX[0] / 2, 0.0], (num_frames, 1))
    hi = np.tile([x + STAND_BOX[0] / 2, STAND_BOX[1]], (num_frames, 1))
    return choose_camera(lo, hi, app, nz, nz.facing, width, height, camera)


def draw_discs(img: np.ndarray, centres: np.ndarray, radius: np.ndarray, colour) -> None:
    """Paint discs, centres (T, 2) and radius (T,) in pixels, onto float frames (T, H, W, 3) in place."""
    _, height, width, _ = img.shape
    gx = np.arange(width, dtype=np.float32)[None, None, :] + 0.5
    gy = np.arange(height, dtype=np.float32)[None, :, None] + 0.5
    a = capsule_coverage(centres, centres, radius, gx, gy)  # (T, H, W)
    img += a[..., None] * (np.asarray(colour, np.float32) - img)


def finish(img: np.ndarray, nz: Nuisance) -> np.ndarray:
    """Pixel noise, contrast and brightness of the clip's nuisance, as ``render`` applies them -> uint8."""
    rng = np.random.default_rng(np.random.SeedSequence([nz.seed, 0xA0]))
    if nz.noise_sigma > 0:
        img = img + rng.standard_normal(img.shape, dtype=np.float32) * np.float32(nz.noise_sigma)
    img = img * np.float32(nz.contrast) + np.float32(nz.brightness)
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)


def _bright(rng: np.random.Generator) -> tuple[float, float, float]:
    """A saturated colour: one channel high, one low, one anywhere."""
    c = rng.permutation([rng.uniform(190, 255), rng.uniform(0, 60), rng.uniform(0, 255)])
    return tuple(float(v) for v in c)


def _ball_path(rng: np.random.Generator, t: int, cam: Camera) -> np.ndarray:
    """World (T, 2) centre of a ball bouncing across the view: |sin| hops of 0.5-1.4 m, 1-3 hops."""
    view_w = cam.width / float(cam.s.mean())
    x0 = float(cam.cx[0]) + rng.uniform(-0.45, -0.15) * view_w
    x = x0 + rng.uniform(0.35, 0.8) * view_w * np.linspace(0, 1, t)
    if rng.random() < 0.5:  # right to left
        x = 2 * float(cam.cx[0]) - x
    hops = rng.uniform(1.0, 3.0)
    y = BALL_RADIUS + rng.uniform(0.5, 1.4) * np.abs(
        np.sin(np.pi * hops * np.linspace(0, 1, t) + rng.uniform(0, 1))
    )
    return np.stack([x, y], -1)


def render_non_gymnastics(
    spec: NonGymSpec,
    width: int = 64,
    height: int = 64,
    camera: str = "scene",
    style: str = "cluttered",
    difficulty: float = 1.0,
) -> NonGymClip:
    """Draw one clip (no file written). Deterministic given the spec and the settings."""
    if spec.kind not in KINDS:
        raise ValueError(f"unknown kind {spec.kind!r}; choose one of {KINDS}")
    nz = sample_nuisance(spec.seed, difficulty, style)
    rng = np.random.default_rng(np.random.SeedSequence([spec.seed, _SEED_TAG]))
    t = _num_frames(rng)
    if spec.kind == "standing":
        clip = render(standing_track(spec.event, nz, t, rng), nz, width, height, camera)
        box_area = (clip.boxes[:, 2] - clip.boxes[:, 0]) * (clip.boxes[:, 3] - clip.boxes[:, 1])
        return NonGymClip(clip.frames, box_area.astype(np.int64), np.zeros((t, 0, 3), np.float32), nz)
    if width % 2 or height % 2:
        raise ValueError(f"H.264 (yuv420p) needs even frame sizes, got {width}x{height}")
    app = apparatus_for(spec.event)
    cam = scene_camera(app, nz, t, width, height, camera)
    img, _ = draw_scene(app, nz, cam, t, cam.height, cam.width)
    moving = []
    if spec.kind == "ball":
        centre = _ball_path(rng, t, cam)
        moving.append((centre, np.full(t, BALL_RADIUS)))
    elif spec.kind == "shapes":
        for _ in range(int(rng.integers(2, 5))):
            start = np.array([cam.cx[0], cam.cy[0]]) + rng.uniform(-0.5, 0.5, 2) * cam.width / cam.s[0]
            velocity = rng.uniform(-1.2, 1.2, 2)  # m/s
            centre = start + velocity * (np.arange(t) / FPS)[:, None]
            moving.append((centre, np.full(t, rng.uniform(0.08, 0.3))))
    for i, (centre, r) in enumerate(moving):
        px = np.stack(cam.to_px(centre[:, 0], centre[:, 1]), -1)  # (T, 2) pixels
        r_px = r * cam.s
        if spec.kind == "shapes" and i % 2:  # every other shape a box
            lo, hi = px - r_px[:, None], px + r_px[:, None]
            gx = np.arange(width, dtype=np.float32) + 0.5
            gy = np.arange(height, dtype=np.float32) + 0.5
            a = box_coverage(lo[:, 0], lo[:, 1], hi[:, 0], hi[:, 1], gx, gy)
            img += a[..., None] * (np.asarray(_bright(rng), np.float32) - img)
        else:
            draw_discs(img, px, r_px, _bright(rng))
        moving[i] = np.concatenate([px, r_px[:, None]], -1)
    tracks = np.stack(moving, 1).astype(np.float32) if moving else np.zeros((t, 0, 3), np.float32)
    return NonGymClip(finish(img, nz), np.zeros(t, np.int64), tracks, nz)


def write_non_gymnastics(
    out: str | Path,
    count: int,
    seed: int = 0,
    width: int = 64,
    height: int = 64,
    camera: str = "scene",
    style: str = "cluttered",
    difficulty: float = 1.0,
) -> list[dict]:
    """Write ``count`` clips to ``out/videos/<stem>.mp4``; returns one record per clip (path, kind, event,
    seed, frames). The list file and the summary are the caller's (``scripts/make_non_gymnastics.py``)."""
    videos = Path(out) / "videos"
    videos.mkdir(parents=True, exist_ok=True)
    records = []
    for spec in plan_non_gymnastics(count, seed):
        clip = render_non_gymnastics(spec, width, height, camera, style, difficulty)
        path = videos / f"{spec.stem}.mp4"
        write_mp4(path, clip.frames, fps=FPS, crf=clip.nuisance.crf)
        records.append(
            {
                "path": str(path),
                "kind": spec.kind,
                "event": spec.event,
                "seed": spec.seed,
                "num_frames": int(clip.frames.shape[0]),
            }
        )
    return records


def kind_of(path: str | Path) -> str | None:
    """The kind of a clip written here, read from its file name (None for any other file)."""
    parts = Path(path).stem.split("_")
    return parts[1] if len(parts) == 3 and parts[0] == "nongym" and parts[1] in KINDS else None
