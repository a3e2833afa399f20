"""Drawing: camera, background, apparatus and athlete into uint8 frames, all in numpy.

Every primitive is a thick segment ("capsule") or an axis-aligned box whose coverage of a pixel is an
anti-aliased ramp of its signed distance (``clip(r - d + 0.5, 0, 1)``), evaluated for all T frames of a
clip at once; the athlete's parts are composited back to front in a per-frame depth order, so limbs
and the chest panel hide behind the trunk as the body twists.

Two cameras (``CAMERAS``). ``scene`` follows the athlete horizontally (smoothed, plus a nuisance pan),
keeps a fixed height per clip and keeps the apparatus' vertical extent in view. ``athlete`` is the
broadcast close-up: it also follows the athlete vertically and frames only the athlete's own box, so
the athlete is about twice as large and the apparatus may leave the frame. In both, the scale is
constant per clip up to the nuisance zoom drift and chosen so that the athlete's box stays inside the
frame in every frame (the pretraining annotations rely on it).

The look — body-part colours, background, clutter, tint, noise — is all in the nuisance, so the render
styles of :data:`~gym_qa.synthgym.nuisance.STYLES` go through the same drawing code.

Shape notation: T frames, P parts, H×W pixels. Pixel (i, j) covers [j, j+1) × [i, i+1); its centre is
at (j + 0.5, i + 0.5).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from gym_qa.synthgym.apparatus import Apparatus, apparatus_for
from gym_qa.synthgym.athlete import PARTS, capsules
from gym_qa.synthgym.nuisance import Nuisance
from gym_qa.synthgym.pose_tracks import PoseTrack
from gym_qa.synthgym.poses import FPS

METRES_PER_FRAME_HEIGHT = 3.7  # nominal vertical field of view at zoom 1 (scene camera)
ATHLETE_METRES_PER_FRAME_HEIGHT = 2.2  # the close-up's nominal vertical field of view
CAMERAS = ("scene", "athlete")


@dataclass
class RenderedClip:
    """frames: (T, H, W, 3) uint8 RGB; boxes: (T, 4) athlete box x0, y0, x1, y1 in pixels (exclusive
    end); apparatus_px: (T,) visible apparatus pixels; apparatus_rgb: the apparatus' main colour as
    drawn; scale: (T,) pixels per metre; parts_px: (T, P, 5) every drawn body part of
    :data:`~gym_qa.synthgym.athlete.PARTS` as a capsule x0, y0, x1, y1, radius in pixels (image axes: x
    right, y down); chest: (T, 3) the chest normal in image axes (x right, y down, z toward the camera)."""

    frames: np.ndarray
    boxes: np.ndarray
    apparatus_px: np.ndarray
    apparatus_rgb: tuple[int, int, int]
    scale: np.ndarray
    parts_px: np.ndarray
    chest: np.ndarray


def capsule_coverage(
    p0: np.ndarray, p1: np.ndarray, r: np.ndarray, gx: np.ndarray, gy: np.ndarray
) -> np.ndarray:
    """Anti-aliased coverage in [0, 1] of thick segments.

    p0, p1: (..., 2) pixel coordinates (x, y); r: (...) radius in pixels; gx: pixel-centre x
    coordinates broadcastable to (..., 1, w), gy to (..., h, 1). Returns (..., h, w) float32.
    """
    p0 = p0.astype(np.float32)
    a = (p1 - p0).astype(np.float32)
    ax, ay = a[..., 0, None, None], a[..., 1, None, None]
    dx = gx - p0[..., 0, None, None]
    dy = gy - p0[..., 1, None, None]
    t = np.clip((dx * ax + dy * ay) / (ax * ax + ay * ay + 1e-6), 0.0, 1.0)
    dx = dx - t * ax
    dy = dy - t * ay
    dist = np.sqrt(dx * dx + dy * dy)
    return np.clip(r.astype(np.float32)[..., None, None] - dist + 0.5, 0.0, 1.0)


def box_coverage(
    x0: np.ndarray, y0: np.ndarray, x1: np.ndarray, y1: np.ndarray, gx: np.ndarray, gy: np.ndarray
) -> np.ndarray:
    """Coverage of axis-aligned boxes given per frame in pixels ((T,) each, corners in any order) on the
    pixel-centre grid gx (w,), gy (h,) → (T, h, w)."""
    lo_x, hi_x = np.minimum(x0, x1)[:, None], np.maximum(x0, x1)[:, None]
    lo_y, hi_y = np.minimum(y0, y1)[:, None], np.maximum(y0, y1)[:, None]
    cx = np.clip(np.minimum(gx - lo_x, hi_x - gx) + 0.5, 0.0, 1.0)  # (T, w)
    cy = np.clip(np.minimum(gy - lo_y, hi_y - gy) + 0.5, 0.0, 1.0)  # (T, h)
    return (cy[:, :, None] * cx[:, None, :]).astype(np.float32)


def _window(
    lo_x: np.ndarray, lo_y: np.ndarray, hi_x: np.ndarray, hi_y: np.ndarray, height: int, width: int
) -> tuple[slice, slice] | None:
    """Pixel rows/columns a primitive can touch in any frame (its pixel bounds padded by one pixel)."""
    c0 = int(np.clip(np.floor(np.min(lo_x)) - 1, 0, width))
    c1 = int(np.clip(np.ceil(np.max(hi_x)) + 1, 0, width))
    r0 = int(np.clip(np.floor(np.min(lo_y)) - 1, 0, height))
    r1 = int(np.clip(np.ceil(np.max(hi_y)) + 1, 0, height))
    if c1 <= c0 or r1 <= r0:
        return None
    return slice(r0, r1), slice(c0, c1)


def _smooth(v: np.ndarray, k: int = 9) -> np.ndarray:
    pad = k // 2
    padded = np.concatenate([np.full(pad, v[0]), v, np.full(pad, v[-1])])
    return np.convolve(padded, np.ones(k) / k, mode="valid")


@dataclass
class Camera:
    """Per-frame camera: world (x, y) → pixel ((x - cx) * s + W/2, H/2 - (y - cy) * s)."""

    cx: np.ndarray  # (T,) metres
    cy: np.ndarray  # (T,) metres
    s: np.ndarray  # (T,) pixels per metre
    width: int
    height: int

    def to_px(self, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """x, y: (T, ...) world metres → pixel coordinates, same shape."""
        extra = (None,) * (np.ndim(x) - 1)
        s = self.s[(slice(None), *extra)]
        cx = self.cx[(slice(None), *extra)]
        cy = self.cy[(slice(None), *extra)]
        return (x - cx) * s + self.width / 2, self.height / 2 - (y - cy) * s


def choose_camera(
    lo: np.ndarray,
    hi: np.ndarray,
    app: Apparatus,
    nz: Nuisance,
    facing: int,
    width: int,
    height: int,
    mode: str = "scene",
) -> Camera:
    """lo, hi: (T, 2) athlete box corners in world metres."""
    t = lo.shape[0]
    margin_px = 1.5
    drift = 1.0 + abs(nz.zoom_rate) / 2
    span_x = float((hi[:, 0] - lo[:, 0]).max())
    if mode == "athlete":
        span_y = float((hi[:, 1] - lo[:, 1]).max())
        s_nom = height / ATHLETE_METRES_PER_FRAME_HEIGHT * nz.zoom
    else:
        ext_y = (min(lo[:, 1].min(), app.y_range[0]), max(hi[:, 1].max(), app.y_range[1]))
        span_y = ext_y[1] - ext_y[0]
        s_nom = height / METRES_PER_FRAME_HEIGHT * nz.zoom
    s_fit = min((height - 2 * margin_px - 2) / span_y, (width - 2 * margin_px - 2) / span_x) / drift
    s0 = min(s_nom, s_fit)
    tau = np.linspace(0.0, 1.0, t) if t > 1 else np.zeros(1)
    s = s0 * (1.0 + nz.zoom_rate * (tau - 0.5))
    if mode == "athlete":
        half_y = (height / 2 - margin_px) / s  # (T,)
        free_y = np.maximum(0.0, half_y - 0.5 * (hi[:, 1] - lo[:, 1]))
        target_y = _smooth(0.5 * (lo[:, 1] + hi[:, 1])) + 0.8 * nz.cam_offset[1] * free_y
        cy = np.clip(target_y, hi[:, 1] - half_y, lo[:, 1] + half_y)
    else:
        s_max = s0 * drift
        free = max(0.0, (height - 2 * margin_px) / s_max - span_y) / 2
        cy = np.full(t, 0.5 * (ext_y[0] + ext_y[1]) + 0.8 * nz.cam_offset[1] * free)
    centre = 0.5 * (lo[:, 0] + hi[:, 0])
    target = nz.follow * _smooth(centre) + (1 - nz.follow) * facing * app.anchor_x
    half = (width / 2 - margin_px) / s
    free_x = np.maximum(0.0, half - 0.5 * (hi[:, 0] - lo[:, 0]))
    target = target + nz.pan * (np.arange(t) / FPS) + 0.6 * nz.cam_offset[0] * free_x
    cx = np.clip(target, hi[:, 0] - half, lo[:, 0] + half)
    return Camera(cx=cx, cy=cy, s=s, width=width, height=height)


def draw_scene(
    app: Apparatus, nz: Nuisance, cam: Camera, t: int, height: int, width: int
) -> tuple[np.ndarray, np.ndarray]:
    """The layers behind the athlete as float32 frames ``(T, H, W, 3)`` and the apparatus' coverage
    ``(T, H, W)``: wall with a vertical gradient, clutter with parallax, arena floor, apparatus (tinted)."""
    f = nz.facing
    # Background: wall with a vertical gradient, clutter with parallax, arena floor below the mats.
    # Each layer is composited only inside the rows/columns it can touch (the costly part is the
    # per-pixel blend, not the coverage).
    rows = np.linspace(-1.0, 1.0, height, dtype=np.float32)[:, None, None]
    wall = np.asarray(nz.background, np.float32) * (1.0 + nz.gradient * rows)
    img = np.broadcast_to(wall, (height, width, 3)).astype(np.float32)[None].repeat(t, 0)
    gx_full = np.arange(width, dtype=np.float32) + 0.5
    gy_full = np.arange(height, dtype=np.float32) + 0.5

    def draw_box(
        x0: np.ndarray,
        y0: np.ndarray,
        x1: np.ndarray,
        y1: np.ndarray,
        colour: np.ndarray,
        alpha_out: np.ndarray | None = None,
    ) -> None:
        win = _window(
            np.minimum(x0, x1), np.minimum(y0, y1), np.maximum(x0, x1), np.maximum(y0, y1), height, width
        )
        if win is None:
            return
        rs, cs = win
        a = box_coverage(x0, y0, x1, y1, gx_full[cs], gy_full[rs])
        img[:, rs, cs] += a[..., None] * (colour - img[:, rs, cs])
        if alpha_out is not None:
            np.maximum(alpha_out[:, rs, cs], a, out=alpha_out[:, rs, cs])

    for c in nz.clutter:
        wx = c.x + 0.4 * cam.cx  # the wall is far: it moves 60 % less than the scene
        x0, y0 = cam.to_px(wx, np.full(t, c.y))
        x1, y1 = cam.to_px(wx + c.w, np.full(t, c.y + c.h))
        draw_box(x0, y0, x1, y1, np.asarray(c.colour, np.float32))
    fx0, fy0 = cam.to_px(cam.cx - 100, np.full(t, -0.3))
    fx1, fy1 = cam.to_px(cam.cx + 100, np.full(t, -50.0))
    draw_box(fx0, fy0, fx1, fy1, np.asarray(nz.floor_colour, np.float32))

    # Apparatus.
    tint = np.asarray(nz.apparatus_tint, np.float32)
    app_alpha = np.zeros((t, height, width), np.float32)
    for b in app.boxes:
        x0, y0 = cam.to_px(np.full(t, f * b.x0), np.full(t, b.y0))
        x1, y1 = cam.to_px(np.full(t, f * b.x1), np.full(t, b.y1))
        draw_box(x0, y0, x1, y1, np.clip(np.asarray(b.colour, np.float32) * tint, 0, 255), app_alpha)
    for seg in app.segments:
        a0 = np.stack(cam.to_px(np.full(t, f * seg.x0), np.full(t, seg.y0)), -1)
        a1 = np.stack(cam.to_px(np.full(t, f * seg.x1), np.full(t, seg.y1)), -1)
        rad = np.maximum(seg.r * cam.s, 0.45)
        win = _window(
            np.minimum(a0[:, 0], a1[:, 0]) - rad,
            np.minimum(a0[:, 1], a1[:, 1]) - rad,
            np.maximum(a0[:, 0], a1[:, 0]) + rad,
            np.maximum(a0[:, 1], a1[:, 1]) + rad,
            height,
            width,
        )
        if win is None:
            continue
        rs, cs = win
        a = capsule_coverage(a0, a1, rad, gx_full[cs][None, None, :], gy_full[rs][None, :, None])  # (T, h, w)
        colour = np.clip(np.asarray(seg.colour, np.float32) * tint, 0, 255)
        img[:, rs, cs] += a[..., None] * (colour - img[:, rs, cs])
        np.maximum(app_alpha[:, rs, cs], a, out=app_alpha[:, rs, cs])

    return img, app_alpha


def render(
    track: PoseTrack, nz: Nuisance, width: int = 64, height: int = 64, camera: str = "scene"
) -> RenderedClip:
    """Draw one clip with the ``camera`` of :data:`CAMERAS`. Deterministic given the track and the
    nuisance (pixel noise is seeded by it)."""
    if width % 2 or height % 2:
        raise ValueError(f"H.264 (yuv420p) needs even frame sizes, got {width}x{height}")
    if camera not in CAMERAS:
        raise ValueError(f"unknown camera {camera!r}; choose one of {CAMERAS}")
    t = track.num_frames
    f = nz.facing
    app = apparatus_for(track.element.event)
    caps = capsules(track.fk, np.column_stack([track.x, track.y]), track.twist, nz.body)
    front = track.fk["front"]  # (T, 3) chest normal in the facing frame
    p0 = caps.p0[..., :2] * np.array([f, 1.0])
    p1 = caps.p1[..., :2] * np.array([f, 1.0])
    lo = np.minimum(p0, p1) - caps.radius[..., None]
    hi = np.maximum(p0, p1) + caps.radius[..., None]
    cam = choose_camera(lo.min(1), hi.max(1), app, nz, f, width, height, camera)

    img, app_alpha = draw_scene(app, nz, cam, t, height, width)

    # Athlete, back to front in per-frame depth order, inside a per-frame crop around its box.
    q0 = np.stack(cam.to_px(p0[..., 0], p0[..., 1]), -1)  # (T, P, 2)
    q1 = np.stack(cam.to_px(p1[..., 0], p1[..., 1]), -1)
    rad = caps.radius * cam.s[:, None]
    blo = np.minimum(q0, q1) - rad[..., None]
    bhi = np.maximum(q0, q1) + rad[..., None]
    lo_px, hi_px = blo.min(1), bhi.max(1)  # (T, 2)
    ch = min(height, int(np.ceil((hi_px[:, 1] - lo_px[:, 1]).max())) + 3)
    cw = min(width, int(np.ceil((hi_px[:, 0] - lo_px[:, 0]).max())) + 3)
    r0 = np.clip(np.floor(lo_px[:, 1]).astype(int) - 1, 0, height - ch)  # (T,)
    c0 = np.clip(np.floor(lo_px[:, 0]).astype(int) - 1, 0, width - cw)
    rr = r0[:, None] + np.arange(ch)[None, :]  # (T, ch)
    cc = c0[:, None] + np.arange(cw)[None, :]  # (T, cw)
    ti = np.arange(t)
    crop = img[ti[:, None, None], rr[:, :, None], cc[:, None, :]]  # (T, ch, cw, 3)
    gx = (cc.astype(np.float32) + 0.5)[:, None, None, :]  # (T, 1, 1, cw)
    gy = (rr.astype(np.float32) + 0.5)[:, None, :, None]  # (T, 1, ch, 1)
    cov = capsule_coverage(q0, q1, rad, gx, gy)  # (T, P, ch, cw)
    palette = {k: np.asarray(getattr(nz.palette, k), np.float32) for k in set(caps.colour_key)}
    colours = np.stack([np.broadcast_to(palette[k], (t, 3)) for k in caps.colour_key], 1)  # (T, P, 3)
    limb = np.array([name.endswith(("_l", "_r")) for name, _ in PARTS], bool)
    rel = caps.depth - caps.depth[:, :1]  # relative to the trunk
    # Far-side limbs are darker (Palette.far_shade), so left and right stay apart in profile.
    dark = nz.palette.far_shade
    near = np.clip(0.5 + rel / (2 * nz.body.shoulder_half), 0, 1)
    shade = np.where(limb[None, :], (1.0 - dark) + dark * near, 1.0)
    colours = (colours * shade[..., None]).astype(np.float32)
    order = np.argsort(caps.depth, axis=1, kind="stable")
    body_crop = np.zeros((t, ch, cw), np.float32)
    for k in range(order.shape[1]):
        idx = order[:, k]
        a = cov[ti, idx]  # (T, ch, cw)
        crop += a[..., None] * (colours[ti, idx][:, None, None, :] - crop)
        np.maximum(body_crop, a, out=body_crop)
    img[ti[:, None, None], rr[:, :, None], cc[:, None, :]] = crop
    body_alpha = np.zeros((t, height, width), np.float32)
    body_alpha[ti[:, None, None], rr[:, :, None], cc[:, None, :]] = body_crop

    boxes = np.zeros((t, 4), np.int32)
    for i in range(t):
        ys, xs = np.nonzero(body_crop[i] > 0.5)
        if len(xs):
            boxes[i] = (xs.min() + c0[i], ys.min() + r0[i], xs.max() + 1 + c0[i], ys.max() + 1 + r0[i])
    apparatus_px = ((app_alpha * (1.0 - body_alpha)) > 0.5).sum(axis=(1, 2)).astype(np.int64)

    rng = np.random.default_rng(np.random.SeedSequence([nz.seed, 0xA0]))
    if nz.noise_sigma > 0:
        img += rng.standard_normal(img.shape, dtype=np.float32) * np.float32(nz.noise_sigma)
    img = img * np.float32(nz.contrast) + np.float32(nz.brightness)
    frames = np.clip(np.rint(img), 0, 255).astype(np.uint8)
    tint = np.asarray(nz.apparatus_tint, np.float32)
    main = np.clip(np.asarray(app.main_colour) * tint * nz.contrast + nz.brightness, 0, 255)
    return RenderedClip(
        frames=frames,
        boxes=boxes,
        apparatus_px=apparatus_px,
        apparatus_rgb=tuple(round(float(v)) for v in main),
        scale=cam.s,
        parts_px=np.concatenate([q0, q1, rad[..., None]], -1).astype(np.float32),
        chest=np.stack([f * front[:, 0], -front[:, 1], front[:, 2]], 1).astype(np.float32),
    )
