"""Choreography: what the athlete does in every frame of a clip, as pose parameters (no pixels).

A clip is a timeline of segments (run-up, take-off, flight, landing, ...). Each segment samples its
own normalised time at ``u_k = (k + 0.5) / n`` for ``k = 0..n-1``, so a segment's frames are
symmetric in time (``u_{n-1-k} = 1 - u_k``). That, together with profiles chosen so that

- height ``y(u) = y(1 - u)`` (vertical flight, no travel),
- rotation ``rot(u) = ±360 · saltos · f(u)`` with ``f(1 - u) = 1 - f(u)``,
- body shape (tuck/pike amount, arms) symmetric in ``u``,
- twist ``twist(u) = ∓ sense · 360 · n · g(u)`` with ``g(1 - u) = 1 - g(u)`` and whole ``n``,

makes the forward element's poses inside the flight window the *reversed* poses of the backward
element (angles equal modulo 360°), while take-off and landing are the same segments for both.
Durations never depend on direction or twist count, so pairs rendered with the same nuisance seed
have identical frame counts and windows. :func:`pose_track` exposes all of it without rendering.

A performance is laid out with MIN_FRAMES..MAX_FRAMES frames. Like FineGym's action spans inside an
event, ``pose_track(..., min_element_share=s)`` then keeps only the element window plus as much run-up
and landing as leaves the window at least a fraction ``s`` of the clip (``PoseTrack.span`` says which
frames of the whole performance were kept); pairs stay aligned, since the cut depends on the windows
and the nuisance only.

Units: metres, degrees, frames at :data:`FPS`. Shape notation: T frames, D pose-vector width.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace

import numpy as np

from gym_qa.synthgym.apparatus import BEAM_HALF, BEAM_TOP, BOARD_TOP, BOARD_X, HIGH_BAR, LOW_BAR, TABLE_TOP
from gym_qa.synthgym.athlete import JOINTS, forward_kinematics, hand_offset, lowest_point
from gym_qa.synthgym.elements import ElementSpec
from gym_qa.synthgym.nuisance import Body, Nuisance

FPS = 25.0
MIN_FRAMES, MAX_FRAMES = 24, 48

# How a frame is supported; the hip position is solved from it after all segments are laid out.
AIR, GROUND, HANG, BRIDGE = 0, 1, 2, 3  # BRIDGE: ballistic arc between the neighbouring frames

# Per-frame body-shape labels (the pretraining annotation), with stable integer ids.
SHAPES: tuple[str, ...] = (
    "stand",
    "run",
    "crouch",
    "stretched",
    "tucked",
    "piked",
    "split",
    "straddle",
    "stag",
    "wolf",
    "tuck",
    "passe",
    "horizontal",
    "tuck_stand",
    "handstand",
    "hang",
    "support",
    "arched",
    "sole",
    "clear_hip",
    "walkover",
    "landing",
)

POSE_FIELDS: tuple[str, ...] = ("x", "y", "cos_rot", "sin_rot", "cos_twist", "sin_twist", *JOINTS)

Pose = dict[str, float]


def _pose(**kw: float) -> Pose:
    """A full joint dict (degrees) from a standing default; ``hip=``/``knee=``/``sh=``/``el=`` set both
    sides."""
    p: Pose = {
        "hip_l": 0.0,
        "hip_r": 0.0,
        "knee_l": 0.0,
        "knee_r": 0.0,
        "sh_l": 8.0,
        "sh_r": 8.0,
        "el_l": 10.0,
        "el_r": 10.0,
        "abd": 0.0,
    }
    for k, v in kw.items():
        if k in ("hip", "knee", "sh", "el"):
            p[f"{k}_l"] = p[f"{k}_r"] = float(v)
        else:
            p[k] = float(v)
    return p


STAND = _pose()
ARMS_UP = _pose(sh=172, el=0)
CROUCH = _pose(hip=65, knee=105, sh=-35, el=10)
LAND = _pose(hip=55, knee=85, sh=85, el=0)
PLIE = _pose(hip=22, knee=40, sh=80, el=25)
HANDSTAND = _pose(sh=180, el=0)
SUPPORT = _pose(sh=0, el=0, hip=12)

FLIGHT_SHAPES: dict[str, Pose] = {
    "tucked": _pose(hip=125, knee=140, sh=45, el=85),
    "piked": _pose(hip=120, sh=100, el=0),
    "stretched": _pose(hip=-8, sh=25, el=10),
    "stretched_twist": _pose(sh=15, el=125),  # arms folded on the chest while twisting
    "split": _pose(hip_l=100, hip_r=-80, sh=125, el=0),
    "straddle": _pose(hip=95, abd=70, sh=95, el=0),
    "stag": _pose(hip_l=95, knee_l=110, hip_r=-70, sh=150, el=0),
    "wolf": _pose(hip_l=95, hip_r=95, knee_r=135, sh=110, el=0),
    "tuck": _pose(hip=115, knee=130, sh=80, el=20),
}
TURN_SHAPES: dict[str, Pose] = {
    "passe": _pose(hip_l=50, knee_l=115, sh=172, el=20),
    "horizontal": _pose(hip_l=90, sh=95, el=0),
    "split": _pose(hip_l=165, sh_l=172, sh_r=95, el=0),
    "tuck_stand": _pose(hip_r=95, knee_r=110, hip_l=85, sh=90, el=10),
}


def blend(a: Pose, b: Pose, w: np.ndarray | float) -> dict[str, np.ndarray]:
    """Joint-wise ``a + (b - a) * w`` (w broadcasts over frames)."""
    return {k: a[k] + (b[k] - a[k]) * np.asarray(w, float) for k in JOINTS}


def smoothstep(u: np.ndarray, lo: float = 0.0, hi: float = 1.0) -> np.ndarray:
    v = np.clip((np.asarray(u, float) - lo) / (hi - lo), 0.0, 1.0)
    return v * v * (3 - 2 * v)


def rotation_profile(u: np.ndarray, a: float = 0.6) -> np.ndarray:
    """Fraction of the salto done at u: ``f(1 - u) = 1 - f(u)``, slow at take-off and landing."""
    return u - a * np.sin(2 * np.pi * u) / (2 * np.pi)


def twist_profile(u: np.ndarray, lo: float = 0.12, a: float = 0.5) -> np.ndarray:
    """Fraction of the twist done at u, inside [lo, 1-lo]; ``g(1 - u) = 1 - g(u)``."""
    v = np.clip((u - lo) / (1 - 2 * lo), 0.0, 1.0)
    return v - a * np.sin(2 * np.pi * v) / (2 * np.pi)


def shape_amount(u: np.ndarray, edge: float = 0.22) -> np.ndarray:
    """How far into the flight shape (tuck, pike, split) the body is at u; symmetric in time."""
    return smoothstep(u, 0.0, edge) * smoothstep(1 - u, 0.0, edge)


@dataclass
class PoseTrack:
    """Pose parameters of one clip, supports solved.

    x, y: (T,) hip centre in the facing frame (metres); rot, twist: (T,) degrees; joints: (T, 9)
    degrees in :data:`JOINTS` order; support: (T,) AIR/GROUND/HANG/BRIDGE; shape: T labels from
    :data:`SHAPES`; windows: name → [start, end) frames ("flight": the rotation/flight window of the
    element, "turn": turns on one leg or in handstand); span: the frames [start, end) of the whole
    performance (``full_frames`` long) this track holds; fk: joints relative to the hip (T, 3) each.
    """

    element: ElementSpec
    x: np.ndarray
    y: np.ndarray
    rot: np.ndarray
    twist: np.ndarray
    joints: np.ndarray
    support: np.ndarray
    shape: list[str]
    windows: dict[str, tuple[int, int]]
    speed: float
    span: tuple[int, int]
    full_frames: int
    fk: dict[str, np.ndarray] = field(repr=False, default_factory=dict)

    @property
    def num_frames(self) -> int:
        return int(self.x.shape[0])

    def core_window(self) -> tuple[int, int]:
        """The span of all element windows: outside it, the element's own motion does not show."""
        starts, ends = zip(*self.windows.values())
        return min(starts), max(ends)

    def element_share(self) -> float:
        """Fraction of the clip's frames inside :meth:`core_window`."""
        a, b = self.core_window()
        return (b - a) / self.num_frames

    def crop(self, start: int, end: int) -> PoseTrack:
        """Frames [start, end) of this track, which must contain every element window."""
        a, b = self.core_window()
        if not 0 <= start <= a or not b <= end <= self.num_frames:
            raise ValueError(f"crop [{start}, {end}) must contain the element window [{a}, {b})")
        keep = slice(start, end)
        return replace(
            self,
            x=self.x[keep],
            y=self.y[keep],
            rot=self.rot[keep],
            twist=self.twist[keep],
            joints=self.joints[keep],
            support=self.support[keep],
            shape=self.shape[keep],
            windows={k: (w0 - start, w1 - start) for k, (w0, w1) in self.windows.items()},
            span=(self.span[0] + start, self.span[0] + end),
            fk={k: v[keep] for k, v in self.fk.items()},
        )

    def pose_vectors(self) -> np.ndarray:
        """(T, D) per-frame pose vectors in :data:`POSE_FIELDS` order; angles as cos/sin so that a
        difference of 360° vanishes, joints in radians."""
        th, ph = np.radians(self.rot), np.radians(self.twist)
        return np.column_stack(
            [self.x, self.y, np.cos(th), np.sin(th), np.cos(ph), np.sin(ph), np.radians(self.joints)]
        )


Value = float | Callable[[np.ndarray], np.ndarray]


class _Timeline:
    """Collects segments; every field may be a constant or a function of the segment's u."""

    def __init__(self, speed: float) -> None:
        self.speed = speed
        self.cols: dict[str, list[np.ndarray]] = {
            k: [] for k in ("x", "y", "rot", "twist", "support", "ax", "ay", "lift", *JOINTS)
        }
        self.shape: list[str] = []
        self.windows: dict[str, tuple[int, int]] = {}
        self.n = 0

    def frames(self, seconds: float) -> int:
        return max(2, round(seconds * FPS / self.speed))

    def add(
        self,
        n: int,
        *,
        pose: Pose | Callable[[np.ndarray], dict],
        rot: Value = 0.0,
        twist: Value = 0.0,
        x: Value = 0.0,
        y: Value = 0.0,
        support: int = GROUND,
        anchor: tuple[float, float] = (0.0, 0.0),
        lift: Value = 0.0,
        shape: str | Callable[[np.ndarray], list[str]] = "stand",
        window: str | None = None,
    ) -> np.ndarray:
        u = (np.arange(n) + 0.5) / n

        def ev(v: Value) -> np.ndarray:
            return np.broadcast_to(np.asarray(v(u) if callable(v) else v, float), (n,)).astype(float)

        joints = pose(u) if callable(pose) else pose
        for k in JOINTS:
            self.cols[k].append(ev(lambda _u, k=k: joints[k]))
        for k, v in (
            ("x", x),
            ("y", y),
            ("rot", rot),
            ("twist", twist),
            ("lift", lift),
            ("ax", anchor[0]),
            ("ay", anchor[1]),
            ("support", float(support)),
        ):
            self.cols[k].append(ev(v))
        self.shape += list(shape(u)) if callable(shape) else [shape] * n
        if window is not None:
            self.windows[window] = (self.n, self.n + n)
        self.n += n
        return u

    def array(self, k: str) -> np.ndarray:
        return np.concatenate(self.cols[k])


@dataclass(frozen=True)
class _Context:
    element: ElementSpec
    body: Body
    sense: int  # twist sense (+1/-1)
    position: float  # [-1, 1]
    stand_h: float  # hip height above the feet when standing straight


def _label(shape_name: str, amount_edge: float = 0.22, base: str = "stretched") -> Callable:
    return lambda u: np.where(shape_amount(u, amount_edge) > 0.5, shape_name, base).tolist()


def _gait(n: int, speed: float, x_end: float, v: float, stride_hz: float, amp: float) -> tuple:
    """Running/walking: hip x ending at ``x_end`` after ``n`` frames at ``v`` m/s; joint functions."""
    t = (np.arange(n) + 0.5) * speed / FPS  # motion time of each frame (s)
    x = x_end - v * (t[-1] - t) - v * 0.5 * speed / FPS
    ph = 2 * np.pi * stride_hz * t
    s = np.sin(ph)
    pose = {
        "hip_l": 10 + amp * s,
        "hip_r": 10 - amp * s,
        "knee_l": 20 + 1.6 * amp * np.clip(-s, 0, 1),
        "knee_r": 20 + 1.6 * amp * np.clip(s, 0, 1),
        "sh_l": 15 - amp * s,
        "sh_r": 15 + amp * s,
        "el_l": np.full(n, 70.0),
        "el_r": np.full(n, 70.0),
        "abd": np.zeros(n),
    }
    return x, pose


def _lead_in_moving(
    tl: _Timeline, n: int, x_end: float, v: float, ground: float, backwards: bool = False
) -> None:
    hz = 3.2 if v > 2 else 1.6
    amp = 38.0 if v > 2 else 18.0
    x, pose = _gait(n, tl.speed, x_end, -v if backwards else v, hz, amp)
    tl.add(
        n,
        pose=lambda u: pose,
        x=lambda u: x,
        support=GROUND,
        anchor=(0.0, ground),
        shape="run" if v > 2 else "stand",
    )


def _flight_on_the_spot(tl: _Timeline, c: _Context, n_in: int, n_out: int) -> None:
    """FX/BB saltos and jumps: approach, take-off, vertical flight, landing on the same spot."""
    e = c.element
    beam = e.event == "BB"
    ground = BEAM_TOP if beam else 0.0
    x0 = c.position * (1.0 if beam else 1.5)
    _lead_in_moving(
        tl, n_in, x0 - 0.35, v=0.7 if beam else (4.0 if e.kind == "salto" else 2.5), ground=ground
    )
    tl.add(
        tl.frames(0.24),
        pose=lambda u: blend(CROUCH, ARMS_UP, smoothstep(u, 0.45, 1.0)),
        x=lambda u: x0 - 0.35 * (1 - smoothstep(u)),
        anchor=(0.0, ground),
        shape=lambda u: np.where(u < 0.6, "crouch", "stretched").tolist(),
    )

    if e.kind == "salto":
        dur = {1: 0.56, 2: 0.72}[e.saltos] * (0.85 if beam else 1.0)
        height = {1: 1.0, 2: 1.3}[e.saltos] * (0.6 if beam else 1.0)
        twisting = e.twists > 0 and e.shape == "stretched"
        shape_pose = FLIGHT_SHAPES["stretched_twist" if twisting else e.shape]
        rot = lambda u: e.direction * 360.0 * e.saltos * rotation_profile(u)
        # Forward twists run the other way round so that forward(u) == backward(1 - u) modulo 360.
        twist = lambda u: -e.direction * c.sense * 360.0 * e.twists * twist_profile(u)
        label = _label(e.shape)
    else:  # jump
        dur, height = (0.4, 0.42) if beam else (0.44, 0.55)
        shape_pose = FLIGHT_SHAPES[e.shape]
        rot = 0.0
        twist = lambda u: c.sense * 360.0 * e.twists * twist_profile(u, lo=0.05, a=0.3)
        label = _label(e.shape, base="stretched")
    y_stand = ground + c.stand_h
    tl.add(
        tl.frames(dur),
        pose=lambda u: blend(ARMS_UP, shape_pose, shape_amount(u)),
        rot=rot,
        twist=twist,
        x=x0,
        y=lambda u: y_stand + height * 4 * u * (1 - u),
        support=AIR,
        shape=label,
        window="flight",
    )
    salto = e.kind == "salto"
    _land_and_stand(
        tl,
        n_out,
        x0,
        ground,
        rot_end=360.0 * e.direction * e.saltos if salto else 0.0,
        twist_end=(-e.direction if salto else 1) * c.sense * 360.0 * e.twists,
    )


def _land_and_stand(
    tl: _Timeline, n_out: int, x: float, ground: float, rot_end: float, twist_end: float
) -> None:
    tl.add(
        tl.frames(0.24),
        pose=lambda u: blend(LAND, ARMS_UP, smoothstep(u, 0.35, 1.0)),
        rot=rot_end,
        twist=twist_end,
        x=x,
        anchor=(0.0, ground),
        shape=lambda u: np.where(u < 0.6, "landing", "stand").tolist(),
    )
    tl.add(
        n_out,
        pose=lambda u: blend(ARMS_UP, STAND, smoothstep(u, 0.2, 1.0)),
        rot=rot_end,
        twist=twist_end,
        x=x,
        anchor=(0.0, ground),
        shape="stand",
    )


def _turn(tl: _Timeline, c: _Context, n_in: int, n_out: int) -> None:
    """Turns on one leg: the same preparation and finish for every count; the turn window has a fixed
    length, so 1 and 2 turns differ only in how fast the long-axis angle advances inside it."""
    e = c.element
    beam = e.event == "BB"
    ground = BEAM_TOP if beam else 0.0
    x0 = c.position * (1.0 if beam else 1.5)
    _lead_in_moving(tl, n_in, x0, v=0.6 if beam else 1.2, ground=ground)
    shape_pose = TURN_SHAPES[e.shape]
    tl.add(
        tl.frames(0.2),
        pose=lambda u: blend(STAND, PLIE, smoothstep(u)),
        x=x0,
        anchor=(0.0, ground),
        shape="crouch",
    )
    tl.add(
        tl.frames(0.16),
        pose=lambda u: blend(PLIE, shape_pose, smoothstep(u)),
        x=x0,
        anchor=(0.0, ground),
        shape=e.shape,
    )
    total = c.sense * 360.0 * e.turns
    tl.add(
        tl.frames(0.64),
        pose=shape_pose,
        x=x0,
        anchor=(0.0, ground),
        shape=e.shape,
        window="turn",
        twist=lambda u: total * twist_profile(u, lo=0.0, a=0.35),
    )
    tl.add(
        tl.frames(0.2),
        pose=lambda u: blend(shape_pose, STAND, smoothstep(u)),
        x=x0,
        anchor=(0.0, ground),
        twist=total,
        shape="stand",
    )
    tl.add(n_out, pose=STAND, x=x0, anchor=(0.0, ground), twist=total, shape="stand")


def _handspring(tl: _Timeline, c: _Context, n_in: int, n_out: int) -> None:
    """Beam flic-flac / front handspring: the body rolls over the hands, travelling 1.4 m."""
    e = c.element
    x0 = c.position * 0.5
    x1 = x0 + e.direction * 1.4
    _lead_in_moving(tl, n_in, x0, v=0.5, ground=BEAM_TOP)
    tl.add(
        tl.frames(0.2),
        pose=lambda u: blend(STAND, _pose(hip=25, knee=45, sh=172, el=0), smoothstep(u)),
        x=x0,
        anchor=(0.0, BEAM_TOP),
        shape="crouch",
    )
    rot = lambda u: 360.0 * e.direction * rotation_profile(u, 0.3)
    # Arms follow the rotation so they point at the beam while the body passes over the hands.
    walk = lambda u: {
        **_pose(el=0),
        "sh_l": rot(u),
        "sh_r": rot(u),
        "hip_l": 45 * np.sin(np.pi * u) - 15,
        "hip_r": -45 * np.sin(np.pi * u) - 15,
    }
    tl.add(
        tl.frames(0.6),
        pose=walk,
        rot=rot,
        x=lambda u: x0 + (x1 - x0) * smoothstep(u),
        anchor=(0.0, BEAM_TOP),
        lift=lambda u: 0.25 * np.sin(np.pi * u) ** 2,
        shape="walkover",
        window="flight",
    )
    tl.add(
        tl.frames(0.2),
        pose=lambda u: blend(ARMS_UP, STAND, smoothstep(u)),
        x=x1,
        rot=360.0 * e.direction,
        anchor=(0.0, BEAM_TOP),
        shape="stand",
    )
    tl.add(n_out, pose=STAND, x=x1, rot=360.0 * e.direction, anchor=(0.0, BEAM_TOP), shape="stand")


def _salto_flight(
    tl: _Timeline,
    c: _Context,
    dur: float,
    rot0: float,
    rot1: float,
    twist0: float,
    height: float,
    window: str = "flight",
) -> None:
    """A flight between two supports (BRIDGE): rotation rot0→rot1, twists added, shape profile."""
    e = c.element
    twisting = e.twists > 0 and e.shape == "stretched"
    shape_pose = FLIGHT_SHAPES["stretched_twist" if twisting else e.shape]
    tl.add(
        tl.frames(dur),
        pose=lambda u: blend(ARMS_UP, shape_pose, shape_amount(u)),
        rot=lambda u: rot0 + (rot1 - rot0) * rotation_profile(u, 0.4),
        twist=lambda u: twist0 + c.sense * 360.0 * e.twists * twist_profile(u),
        support=BRIDGE,
        lift=height,
        shape=_label(e.shape),
        window=window,
    )


def _beam_dismount(tl: _Timeline, c: _Context, n_in: int, n_out: int) -> None:
    e = c.element
    x0 = -BEAM_HALF + 0.3  # take off near the end, flying off it backwards (toward -x)
    _lead_in_moving(tl, n_in, x0, v=0.6, ground=BEAM_TOP, backwards=True)
    tl.add(
        tl.frames(0.24),
        pose=lambda u: blend(CROUCH, ARMS_UP, smoothstep(u, 0.45, 1.0)),
        x=x0,
        anchor=(0.0, BEAM_TOP),
        shape=lambda u: np.where(u < 0.6, "crouch", "stretched").tolist(),
    )
    _salto_flight(tl, c, {1: 0.64, 2: 0.8}[e.saltos], 0.0, -360.0 * e.saltos, 0.0, height=0.5)
    _land_and_stand(tl, n_out, x0 - 1.4, 0.0, rot_end=-360.0 * e.saltos, twist_end=c.sense * 360.0 * e.twists)


def _vault(tl: _Timeline, c: _Context, n_in: int, n_out: int) -> None:
    """Run, (round-off,) springboard, first flight to a handstand on the table, second flight (the
    window), landing on the mat."""
    e = c.element
    x_land = 2.7
    if e.entry == "handspring":
        _lead_in_moving(tl, n_in, BOARD_X - 1.1, v=6.0, ground=0.0)
        tl.add(tl.frames(0.12), pose=_pose(hip=20, sh=-20), support=BRIDGE, lift=0.12, shape="stretched")
        tl.add(
            tl.frames(0.1),
            pose=_pose(hip=35, knee=50, sh=120, el=0),
            x=lambda u: BOARD_X - 0.05 + 0.1 * u,
            anchor=(0.0, BOARD_TOP),
            shape="crouch",
        )
        rot_table, twist_table = 180.0, 0.0
        tl.add(
            tl.frames(0.2),
            pose=HANDSTAND,
            rot=lambda u: 20 + 140 * u,
            support=BRIDGE,
            lift=0.25,
            shape="stretched",
        )
    else:
        _lead_in_moving(tl, n_in, BOARD_X - 2.9, v=6.0, ground=0.0)
        # Round-off: over the hands with a half turn, landing facing back toward the table.
        half = 180.0 * c.sense
        tl.add(
            tl.frames(0.32),
            pose=lambda u: {
                **HANDSTAND,
                "sh_l": 360.0 * smoothstep(u),
                "sh_r": 360.0 * smoothstep(u),
                "hip_l": 40 * np.sin(np.pi * u),
                "hip_r": -40 * np.sin(np.pi * u),
            },
            rot=lambda u: 360.0 * smoothstep(u),
            twist=lambda u: half * smoothstep(u, 0.2, 0.8),
            x=lambda u: BOARD_X - 2.9 + 1.3 * u,
            lift=lambda u: 0.1 * np.sin(np.pi * u),
            shape="walkover",
        )
        tl.add(
            tl.frames(0.1),
            pose=_pose(hip=15, sh=150),
            rot=360.0,
            twist=half,
            support=BRIDGE,
            lift=0.1,
            shape="stretched",
        )
        tl.add(
            tl.frames(0.1),
            pose=_pose(hip=35, knee=50, sh=160, el=0),
            rot=360.0,
            twist=half,
            x=lambda u: BOARD_X - 0.05 + 0.1 * u,
            anchor=(0.0, BOARD_TOP),
            shape="crouch",
        )
        second = half + (180.0 * c.sense if e.entry == "roundoff_half" else 0.0)
        rot_table, twist_table = 540.0, second
        tl.add(
            tl.frames(0.2),
            pose=HANDSTAND,
            rot=lambda u: 380 + 140 * u,
            twist=lambda u: half + (second - half) * smoothstep(u),
            support=BRIDGE,
            lift=0.2,
            shape="stretched",
        )
    tl.add(
        tl.frames(0.1),
        pose=HANDSTAND,
        rot=lambda u: rot_table - 10 + 20 * u,
        twist=twist_table,
        x=lambda u: -0.1 + 0.2 * u,
        anchor=(0.0, TABLE_TOP),
        shape="handstand",
    )
    rot_off = rot_table + 10
    rot_end = rot_table + 180.0 + 360.0 * e.saltos
    _salto_flight(tl, c, 0.64, rot_off, rot_end, twist_table, height=0.55)
    twist_end = twist_table + c.sense * 360.0 * e.twists
    _land_and_stand(tl, n_out, x_land, 0.0, rot_end=rot_end, twist_end=twist_end)


def _bar_start(tl: _Timeline, n_in: int) -> None:
    """Front support on the high bar, cast to handstand, short hold: shared by every bar element."""
    bar = HIGH_BAR
    tl.add(
        n_in,
        pose=SUPPORT,
        rot=lambda u: -6 * np.sin(2 * np.pi * u),
        support=HANG,
        anchor=bar,
        shape="support",
    )
    tl.add(
        tl.frames(0.4),
        pose=lambda u: blend(SUPPORT, HANDSTAND, smoothstep(u)),
        rot=lambda u: 180.0 * smoothstep(u),
        support=HANG,
        anchor=bar,
        shape=lambda u: np.where(u < 0.7, "support", "handstand").tolist(),
    )
    tl.add(tl.frames(0.12), pose=HANDSTAND, rot=180.0, support=HANG, anchor=bar, shape="handstand")


def _circle(tl: _Timeline, c: _Context, n_in: int, n_out: int) -> None:
    """Circles around the high bar, handstand to handstand; optional turn in handstand afterwards."""
    e = c.element
    _bar_start(tl, n_in)

    def pose(u: np.ndarray) -> dict:
        a = shape_amount(u, 0.3)
        if e.shape == "sole":
            return blend(HANDSTAND, _pose(hip=150, sh=180, el=0), a)
        if e.shape == "clear_hip":
            return blend(HANDSTAND, _pose(hip=35, sh=55, el=0), a)
        return blend(HANDSTAND, _pose(hip=-18, sh=185, el=0), np.sin(np.pi * u) ** 2)

    tl.add(
        tl.frames(0.8),
        pose=pose,
        rot=lambda u: 180.0 + e.direction * 360.0 * rotation_profile(u, 0.3),
        support=HANG,
        anchor=HIGH_BAR,
        shape=_label(e.shape if e.shape != "giant" else "hang", 0.3, "handstand"),
        window="flight",
    )
    total = c.sense * 360.0 * e.turns
    rot_end = 180.0 + e.direction * 360.0
    tl.add(
        tl.frames(0.4),
        pose=HANDSTAND,
        rot=rot_end,
        twist=lambda u: total * smoothstep(u),
        support=HANG,
        anchor=HIGH_BAR,
        shape="handstand",
        window="turn",
    )
    tl.add(
        n_out,
        pose=HANDSTAND,
        rot=lambda u: rot_end + 5 * np.sin(np.pi * u),
        twist=total,
        support=HANG,
        anchor=HIGH_BAR,
        shape="handstand",
    )


def _bar_dismount(tl: _Timeline, c: _Context, n_in: int, n_out: int) -> None:
    e = c.element
    _bar_start(tl, n_in)
    tl.add(
        tl.frames(0.6),
        pose=lambda u: blend(HANDSTAND, _pose(hip=-15, sh=185, el=0), np.sin(np.pi * u)),
        rot=lambda u: 180.0 - 250.0 * smoothstep(u),
        support=HANG,
        anchor=HIGH_BAR,
        shape="hang",
    )
    _salto_flight(tl, c, {1: 0.64, 2: 0.8}[e.saltos], -70.0, -360.0 * e.saltos, 0.0, height=0.6)
    _land_and_stand(tl, n_out, 2.9, 0.0, rot_end=-360.0 * e.saltos, twist_end=c.sense * 360.0 * e.twists)


def _transition(tl: _Timeline, c: _Context, n_in: int, n_out: int) -> None:
    _bar_start(tl, n_in)
    tl.add(
        tl.frames(0.6),
        pose=lambda u: blend(HANDSTAND, _pose(hip=-15, sh=185, el=0), np.sin(np.pi * u)),
        rot=lambda u: 180.0 + 250.0 * smoothstep(u),
        support=HANG,
        anchor=HIGH_BAR,
        shape="hang",
    )
    tl.add(
        tl.frames(0.36),
        pose=lambda u: blend(HANDSTAND, _pose(hip=30, sh=175, el=0), smoothstep(u)),
        rot=lambda u: 430 - 10 * u,
        support=BRIDGE,
        lift=0.3,
        shape="stretched",
        window="flight",
    )
    swing = _pose(hip=70, sh=175, el=0)
    tl.add(
        tl.frames(0.4),
        pose=lambda u: blend(_pose(hip=30, sh=175, el=0), swing, smoothstep(u)),
        rot=lambda u: 420 - 50 * smoothstep(u),
        support=HANG,
        anchor=LOW_BAR,
        shape="piked",
    )
    tl.add(
        n_out,
        pose=swing,
        rot=lambda u: 370 + 20 * np.sin(np.pi * u),
        support=HANG,
        anchor=LOW_BAR,
        shape="piked",
    )


_CHOREOGRAPHY: dict[str, Callable[[_Timeline, _Context, int, int], None]] = {
    "salto": _flight_on_the_spot,
    "jump": _flight_on_the_spot,
    "turn": _turn,
    "handspring": _handspring,
    "dismount": _beam_dismount,
    "vault": _vault,
    "circle": _circle,
    "bar_dismount": _bar_dismount,
    "transition": _transition,
}


def standing_hip_height(body: Body) -> float:
    """Hip height above the floor when standing straight (metres)."""
    fk = forward_kinematics(np.zeros(1), np.zeros(1), np.array([[STAND[k] for k in JOINTS]]), body)
    return float(-lowest_point(fk, body)[0])


def _lead_frames(nz: Nuisance, speed: float, core: int) -> tuple[int, int]:
    """Context before/after the element, fitted so the clip has MIN..MAX frames."""
    n_in = max(2, round(nz.lead_in * FPS / speed))
    n_out = max(2, round(nz.lead_out * FPS / speed))
    while core + n_in + n_out > MAX_FRAMES:  # trim the longer context first
        if n_in >= n_out and n_in > 2:
            n_in -= 1
        elif n_out > 2:
            n_out -= 1
        else:
            break
    short = MIN_FRAMES - (core + n_in + n_out)
    if short > 0:
        n_in += short - short // 2
        n_out += short // 2
    return n_in, n_out


def _solve_supports(tl: _Timeline, body: Body, joints: np.ndarray) -> tuple:
    rot, twist = tl.array("rot"), tl.array("twist")
    sup = tl.array("support").astype(int)
    x, y, lift = tl.array("x"), tl.array("y"), tl.array("lift")
    ax, ay = tl.array("ax"), tl.array("ay")
    fk = forward_kinematics(rot, twist, joints, body)
    low = lowest_point(fk, body)
    hand = hand_offset(fk)
    x, y = x.copy(), y.copy()
    g = sup == GROUND
    y[g] = ay[g] - low[g] + lift[g]
    h = sup == HANG
    x[h] = ax[h] - hand[h, 0]
    y[h] = ay[h] - hand[h, 1]
    # Bridges: a parabola-free ballistic look is enough: straight line plus a sin arc of height `lift`.
    t = 0
    n = len(sup)
    while t < n:
        if sup[t] != BRIDGE:
            t += 1
            continue
        s = t
        while t < n and sup[t] == BRIDGE:
            t += 1
        a, b = s - 1, t
        if a < 0 or b >= n:
            raise ValueError("a flight bridge needs a supported frame on both sides")
        w = (np.arange(s, t) - a) / (b - a)
        x[s:t] = x[a] + (x[b] - x[a]) * w
        y[s:t] = y[a] + (y[b] - y[a]) * w + lift[s:t] * np.sin(np.pi * w)
    return x, y, fk


def _build(element: ElementSpec, nz: Nuisance, speed: float, n_in: int, n_out: int) -> _Timeline:
    tl = _Timeline(speed)
    ctx = _Context(
        element=element,
        body=nz.body,
        sense=nz.twist_sense,
        position=nz.position,
        stand_h=standing_hip_height(nz.body),
    )
    _CHOREOGRAPHY[element.kind](tl, ctx, n_in, n_out)
    return tl


def _context_span(n: int, core: tuple[int, int], min_share: float, nz: Nuisance) -> tuple[int, int]:
    """The frames [start, end) of an ``n``-frame performance that keep the element window ``core`` and as
    much context as leaves the window at least ``min_share`` of them. The context is split before/after
    in the proportion of the nuisance's lead-in and lead-out, so where the element sits in the clip
    still varies from clip to clip; a side with too few frames gives the rest to the other."""
    a, b = core
    budget = int(np.floor((b - a) * (1.0 - min_share) / min_share + 1e-9))
    before = min(a, round(budget * nz.lead_in / (nz.lead_in + nz.lead_out)))
    after = min(n - b, budget - before)
    before = min(a, budget - after)
    return a - before, b + after


def pose_track(element: ElementSpec, nuisance: Nuisance, min_element_share: float = 0.0) -> PoseTrack:
    """Lay out the element's timeline for this clip's nuisance and solve where the body is; with
    ``min_element_share`` in (0, 1], trim the run-up and landing so that the element window is at
    least that fraction of the clip (0: keep the whole performance).

    Deterministic; depends on the element only through its attributes, and on the nuisance only
    through speed, context lengths, body, twist sense, lead leg and position.
    """
    if not 0.0 <= min_element_share <= 1.0:
        raise ValueError(f"min_element_share must be in [0, 1], got {min_element_share}")
    speed = nuisance.speed
    for _ in range(20):
        probe = _build(element, nuisance, speed, 2, 2)
        core = probe.n - 4
        if core + 4 <= MAX_FRAMES:
            break
        speed *= (core + 4) / MAX_FRAMES * 1.001  # too long even with minimal context: play faster
    n_in, n_out = _lead_frames(nuisance, speed, core)
    tl = _build(element, nuisance, speed, n_in, n_out)
    joints = np.column_stack([tl.array(k) for k in JOINTS])
    if nuisance.lead_leg < 0:  # mirror the choreography's left/right
        perm = [JOINTS.index(k.replace("_l", "_R").replace("_r", "_l").replace("_R", "_r")) for k in JOINTS]
        joints = joints[:, perm]
    x, y, fk = _solve_supports(tl, nuisance.body, joints)
    track = PoseTrack(
        element=element,
        x=x,
        y=y,
        rot=tl.array("rot"),
        twist=tl.array("twist"),
        joints=joints,
        support=tl.array("support").astype(int),
        shape=tl.shape,
        windows=dict(tl.windows),
        speed=speed,
        span=(0, tl.n),
        full_frames=tl.n,
        fk=fk,
    )
    if min_element_share > 0:
        track = track.crop(*_context_span(tl.n, track.core_window(), min_element_share, nuisance))
    return track


def element_poses(
    element: ElementSpec | int, nuisance_seed: int, difficulty: float = 1.0, min_element_share: float = 0.0
) -> tuple[np.ndarray, dict[str, tuple[int, int]]]:
    """Per-frame pose vectors (T, D) in :data:`POSE_FIELDS` order and the element windows of an element
    (or its glabel) rendered with a nuisance seed — what the clip would show, without drawing it. Pass
    the preset's ``min_element_share`` to get the trimmed clip's frames."""
    from gym_qa.synthgym.elements import BY_GLABEL
    from gym_qa.synthgym.nuisance import sample_nuisance

    e = BY_GLABEL[element] if isinstance(element, int) else element
    track = pose_track(e, sample_nuisance(nuisance_seed, difficulty), min_element_share)
    return track.pose_vectors(), dict(track.windows)
