"""Nuisance factors of one clip: everything that varies between clips of the same element.

A :class:`Nuisance` is drawn from a seed and the ``difficulty`` knob alone, never from the element, so
two elements rendered with the same nuisance seed share athlete, camera, timing, background, noise and
compression: this is what makes the forward/backward and twist pairs differ *only* in the element.
``difficulty`` scales every range linearly; 0 gives a clean, canonical clip (fixed athlete, no clutter,
no noise, static framing), 1 is the default, larger values widen ranges further (clamped where a range
would become meaningless, e.g. playback speed).

Two render styles (:data:`STYLES`) share the geometric and timing factors and differ in appearance:
``cluttered`` randomises every colour and adds clutter, a wall gradient, contrast/brightness jitter;
``legible`` draws each body part in a fixed colour of :data:`LEGIBLE_PALETTE` in front of a plain
background, with milder noise and compression, so that a single frame shows facing and left/right.

Units: lengths in metres, times in seconds, angles in degrees, colours RGB in [0, 255].
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np


@dataclass(frozen=True)
class Body:
    """Segment lengths and thicknesses of the athlete (metres). Defaults: a canonical 1.6 m gymnast,
    drawn with thick limbs so they stay visible at 64 px."""

    torso: float = 0.52  # hip centre to neck
    neck: float = 0.05
    head_r: float = 0.13
    upper_arm: float = 0.27
    forearm: float = 0.27
    thigh: float = 0.41
    shin: float = 0.41
    foot: float = 0.13
    shoulder_half: float = 0.16  # half shoulder width (left/right offset of the arm roots)
    hip_half: float = 0.08
    torso_depth: float = 0.24  # front-back thickness, seen in profile
    torso_width: float = 0.38  # left-right width, seen when the chest or back faces the camera
    r_arm: float = 0.06
    r_thigh: float = 0.09
    r_shin: float = 0.07
    r_foot: float = 0.045


RGB = tuple[float, float, float]
STYLES = ("cluttered", "legible")


@dataclass(frozen=True)
class Palette:
    """Colour of every body part; the field names are the colour keys of :data:`athlete.PARTS`. The
    defaults are the canonical cluttered athlete: sleeves in the leotard's colour, bare skin limbs."""

    skin: RGB = (224.0, 180.0, 150.0)  # head
    leotard: RGB = (150.0, 30.0, 60.0)  # torso (the back)
    front: RGB = (250.0, 220.0, 40.0)  # chest panel: marks the front / facing
    hair: RGB = (60.0, 35.0, 20.0)
    face: RGB = (20.0, 20.0, 30.0)  # eye/nose marker on the front of the head
    sleeve_l: RGB = (150.0, 30.0, 60.0)  # upper arms
    sleeve_r: RGB = (150.0, 30.0, 60.0)
    arm_l: RGB = (224.0, 180.0, 150.0)  # forearms
    arm_r: RGB = (224.0, 180.0, 150.0)
    leg_l: RGB = (224.0, 180.0, 150.0)  # thigh, shin and foot
    leg_r: RGB = (224.0, 180.0, 150.0)
    # Far-side limbs are drawn up to this fraction darker, so that same-coloured left and right limbs stay
    # apart where they overlap in profile; limbs that differ in colour do not need it.
    far_shade: float = 0.28


def _cluttered_palette(skin: RGB, leotard: RGB, front: RGB, hair: RGB, face: RGB) -> Palette:
    return Palette(
        skin=skin,
        leotard=leotard,
        front=front,
        hair=hair,
        face=face,
        sleeve_l=leotard,
        sleeve_r=leotard,
        arm_l=skin,
        arm_r=skin,
        leg_l=skin,
        leg_r=skin,
    )


# Saturated, pairwise distinct colours (max channel difference >= 95 between any two parts), >= 75 from every
# apparatus colour (apparatus.py) except for the white face marker, which is small and sits on the head.
# Facing survives grayscale (chest vs back and face vs hair differ by >= 150 in luminance); left and right
# limbs are told apart by hue (left limbs are also 50-70 grey levels lighter than right ones).
LEGIBLE_PALETTE = Palette(
    skin=(255.0, 160.0, 200.0),  # head: pink
    leotard=(110.0, 0.0, 180.0),  # back: purple
    front=(255.0, 230.0, 0.0),  # chest: yellow
    hair=(0.0, 0.0, 0.0),
    face=(255.0, 255.0, 255.0),
    sleeve_l=(255.0, 110.0, 0.0),  # left arm: orange
    arm_l=(255.0, 110.0, 0.0),
    sleeve_r=(0.0, 150.0, 0.0),  # right arm: green
    arm_r=(0.0, 150.0, 0.0),
    leg_l=(0.0, 220.0, 255.0),  # left leg: cyan
    leg_r=(230.0, 0.0, 160.0),  # right leg: magenta
    far_shade=0.0,
)
LEGIBLE_BACKGROUND: RGB = (150.0, 150.0, 150.0)  # mid grey: dark and light parts both contrast with it


@dataclass(frozen=True)
class Clutter:
    """A rectangle on the back wall, in wall coordinates (metres), drawn with parallax."""

    x: float
    y: float
    w: float
    h: float
    colour: RGB


@dataclass(frozen=True)
class Nuisance:
    seed: int
    difficulty: float
    facing: int = 1  # +1: athlete faces image-right at take-off; -1 mirrors the whole scene
    twist_sense: int = 1  # left or right twister
    lead_leg: int = 1  # +1: left leg leads in splits/turns, -1: right (swaps left/right joints)
    body: Body = field(default_factory=Body)
    palette: Palette = field(default_factory=Palette)
    speed: float = 1.0  # playback speed: >1 fewer frames for the same motion
    lead_in: float = 0.4  # seconds of context before the element
    lead_out: float = 0.2  # seconds after it
    position: float = 0.0  # in [-1, 1]: where on the apparatus the element happens (scaled per event)
    zoom: float = 1.0
    zoom_rate: float = 0.0  # relative zoom change over the clip
    pan: float = 0.0  # camera pan speed (m/s) on top of following the athlete
    cam_offset: tuple[float, float] = (0.0, 0.0)  # in [-1, 1], fraction of the free margin
    follow: float = 0.7  # how much the camera follows the athlete (vs. the apparatus centre)
    background: RGB = (200.0, 205.0, 215.0)
    gradient: float = 0.0  # top-bottom brightness change of the wall
    floor_colour: RGB = (90.0, 90.0, 100.0)
    clutter: tuple[Clutter, ...] = ()
    apparatus_tint: tuple[float, float, float] = (1.0, 1.0, 1.0)  # multiplies apparatus colours
    noise_sigma: float = 0.0  # Gaussian pixel noise (grey levels)
    contrast: float = 1.0
    brightness: float = 0.0
    crf: int = 18  # H.264 constant rate factor (higher = worse quality)


def _rgb(rng: np.random.Generator, lo: float = 30, hi: float = 230) -> RGB:
    return tuple(float(v) for v in rng.uniform(lo, hi, size=3))


def _mix(a: tuple[float, ...], b: tuple[float, ...], w: float) -> RGB:
    w = min(max(w, 0.0), 1.0)
    return tuple(float(x + (y - x) * w) for x, y in zip(a, b))


def sample_nuisance(seed: int, difficulty: float = 1.0, style: str = "cluttered") -> Nuisance:
    """Draw the nuisance factors of one clip in a render ``style`` of :data:`STYLES`.

    The same number of random values is drawn whatever the difficulty and the style, so a seed picks
    "the same clip" (athlete, timing, camera) at every difficulty and in every style, only with wider or
    narrower variation and a different look.
    """
    if style not in STYLES:
        raise ValueError(f"unknown style {style!r}; choose one of {STYLES}")
    d = max(0.0, float(difficulty))
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), 0x5C]))
    u = lambda n=None: rng.uniform(-1.0, 1.0, size=n)

    facing = 1 if rng.random() < 0.5 else -1
    twist_sense = 1 if rng.random() < 0.5 else -1
    lead_leg = 1 if rng.random() < 0.5 else -1

    base = Body()
    scale = float(np.exp(0.08 * d * u()))
    props = 1.0 + 0.07 * d * u(6)  # torso, arms, legs, head, widths, limb thickness
    body = Body(
        torso=base.torso * scale * props[0],
        neck=base.neck * scale,
        head_r=base.head_r * scale * props[3],
        upper_arm=base.upper_arm * scale * props[1],
        forearm=base.forearm * scale * props[1],
        thigh=base.thigh * scale * props[2],
        shin=base.shin * scale * props[2],
        foot=base.foot * scale,
        shoulder_half=base.shoulder_half * scale * props[4],
        hip_half=base.hip_half * scale * props[4],
        torso_depth=base.torso_depth * scale * props[5],
        torso_width=base.torso_width * scale * props[4],
        r_arm=base.r_arm * scale * props[5],
        r_thigh=base.r_thigh * scale * props[5],
        r_shin=base.r_shin * scale * props[5],
        r_foot=base.r_foot * scale,
    )

    canon = Palette()
    w = min(d, 1.0)
    skin_tone = rng.uniform(0, 1)
    skin = _mix(canon.skin, _mix((250.0, 205.0, 175.0), (120.0, 80.0, 55.0), skin_tone), w)
    leotard = _mix(canon.leotard, _rgb(rng, 20, 200), w)
    front = _mix(canon.front, _rgb(rng, 60, 255), w)
    # The chest panel is the facing cue: keep it clearly different from the leotard.
    if np.abs(np.subtract(front, leotard)).max() < 90:
        front = tuple(float((c + 128) % 256) for c in front)
    hair = _mix(canon.hair, _rgb(rng, 10, 120), w)
    palette = _cluttered_palette(skin, leotard, front, hair, canon.face)

    speed = float(np.exp(np.clip(0.22 * d, 0.0, 0.45) * u()))
    lead_in = float(0.4 + min(d, 1.5) * 0.2 * u())
    lead_out = float(0.2 + min(d, 1.5) * 0.12 * u())
    position = float(min(d, 1.0) * u())
    zoom = float(np.exp(0.15 * d * u()))
    zoom_rate = float(0.12 * d * u())
    pan = float(0.3 * d * u())
    cam_offset = (float(min(d, 1.0) * u()), float(min(d, 1.0) * u()))
    follow = float(np.clip(0.7 + 0.25 * d * u(), 0.2, 1.0))

    background = _mix((200.0, 205.0, 215.0), _rgb(rng, 40, 230), w)
    gradient = float(0.25 * d * u())
    floor_colour = _mix((90.0, 90.0, 100.0), _rgb(rng, 30, 140), w)
    n_clutter = round(min(d, 2.0) * rng.uniform(3, 9))
    boxes = rng.uniform(0, 1, size=(12, 7))  # always draw 12 rows so the stream stays aligned
    clutter = tuple(
        Clutter(
            x=float(-8 + 16 * b[0]),
            y=float(0.3 + 3.2 * b[1]),
            w=float(0.3 + 1.5 * b[2]),
            h=float(0.2 + 0.9 * b[3]),
            colour=(float(40 + 200 * b[4]), float(40 + 200 * b[5]), float(40 + 200 * b[6])),
        )
        for b in boxes[:n_clutter]
    )
    apparatus_tint = tuple(float(v) for v in 1.0 + 0.08 * min(d, 1.5) * u(3))
    noise_sigma = float(max(0.0, 3.0 * d * (1 + 0.5 * u())))
    contrast = float(1.0 + 0.12 * d * u())
    brightness = float(12.0 * d * u())
    crf = round(18 + min(d, 2.0) * rng.uniform(0, 10))

    nz = Nuisance(
        seed=int(seed),
        difficulty=d,
        facing=facing,
        twist_sense=twist_sense,
        lead_leg=lead_leg,
        body=body,
        palette=palette,
        speed=speed,
        lead_in=lead_in,
        lead_out=lead_out,
        position=position,
        zoom=zoom,
        zoom_rate=zoom_rate,
        pan=pan,
        cam_offset=cam_offset,
        follow=follow,
        background=background,
        gradient=gradient,
        floor_colour=floor_colour,
        clutter=clutter,
        apparatus_tint=apparatus_tint,
        noise_sigma=noise_sigma,
        contrast=contrast,
        brightness=brightness,
        crf=crf,
    )
    return _legible(nz) if style == "legible" else nz


def _legible(nz: Nuisance) -> Nuisance:
    """The legible look of a cluttered clip: fixed part colours, plain background, untinted apparatus, no
    contrast/brightness jitter; pixel noise at a third and CRF 18-23 instead of 18-28 (at difficulty 1)."""
    return replace(
        nz,
        palette=LEGIBLE_PALETTE,
        background=LEGIBLE_BACKGROUND,
        gradient=0.0,
        floor_colour=LEGIBLE_BACKGROUND,
        clutter=(),
        apparatus_tint=(1.0, 1.0, 1.0),
        noise_sigma=nz.noise_sigma / 3,
        contrast=1.0,
        brightness=0.0,
        crf=18 + round((nz.crf - 18) / 2),
    )
