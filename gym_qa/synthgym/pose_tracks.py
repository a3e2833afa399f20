"""A clip's pose track: what the athlete does in every frame, as pose parameters (no pixels).

A clip is a timeline of segments (:mod:`gym_qa.synthgym.timeline`), each sampling its own normalised
time symmetrically (``u_{n-1-k} = 1 - u_k``). That, together with profiles chosen so that

- height ``y(u) = y(1 - u)`` (vertical flight, no travel),
- rotation ``rot(u) = ±360 · saltos · f(u)`` with ``f(1 - u) = 1 - f(u)``,
- body shape (tuck/pike amount, arms) symmetric in ``u``,
- twist ``twist(u) = ∓ sense · 360 · n · g(u)`` with ``g(1 - u) = 1 - g(u)`` and whole ``n``,

makes the forward element's poses inside the flight window the *reversed* poses of the backward
element (angles equal modulo 360°), while take-off and landing are the same segments for both.
Durations never depend on direction or twist count, so pairs rendered with the same nuisance seed
have identical frame counts and windows. :func:`pose_track` exposes all of it without rendering: it
lays out the element's move, chosen by its kind (:mod:`~gym_qa.synthgym.moves_floor_beam`,
:mod:`~gym_qa.synthgym.moves_vault_bars`), and solves where the body is.

A performance is laid out with MIN_FRAMES..MAX_FRAMES frames. Like FineGym's action spans inside an
event, ``pose_track(..., min_element_share=s)`` then keeps only the element window plus as much run-up
and landing as leaves the window at least a fraction ``s`` of the clip (``PoseTrack.span`` says which
frames of the whole performance were kept); pairs stay aligned, since the cut depends on the windows
and the nuisance only.

Units: metres, degrees, frames at :data:`~gym_qa.synthgym.poses.FPS`. Shape notation: T frames, D
pose-vector width.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace

import numpy as np

from gym_qa.synthgym.athlete import JOINTS, forward_kinematics, hand_offset, lowest_point
from gym_qa.synthgym.elements import ElementSpec
from gym_qa.synthgym.moves_floor_beam import beam_dismount, flight_on_the_spot, handspring, turn
from gym_qa.synthgym.moves_vault_bars import bar_dismount, circle, transition, vault
from gym_qa.synthgym.nuisance import Body, Nuisance
from gym_qa.synthgym.poses import BRIDGE, FPS, GROUND, HANG, STAND
from gym_qa.synthgym.timeline import Context, Timeline

MIN_FRAMES, MAX_FRAMES = 24, 48


@dataclass
class PoseTrack:
    """Pose parameters of one clip, supports solved.

    x, y: (T,) hip centre in the facing frame (metres); rot, twist: (T,) degrees; joints: (T, 9)
    degrees in :data:`JOINTS` order; support: (T,) AIR/GROUND/HANG/BRIDGE; shape: T labels from
    :data:`~gym_qa.synthgym.poses.SHAPES`; windows: name → [start, end) frames ("flight": the
    rotation/flight window of the element, "turn": turns on one leg or in handstand); span: the frames
    [start, end) of the whole performance (``full_frames`` long) this track holds; fk: joints relative
    to the hip (T, 3) each.
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


_CHOREOGRAPHY: dict[str, Callable[[Timeline, Context, int, int], None]] = {
    "salto": flight_on_the_spot,
    "jump": flight_on_the_spot,
    "turn": turn,
    "handspring": handspring,
    "dismount": beam_dismount,
    "vault": vault,
    "circle": circle,
    "bar_dismount": bar_dismount,
    "transition": transition,
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


def _solve_supports(tl: Timeline, body: Body, joints: np.ndarray) -> tuple:
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


def _build(element: ElementSpec, nz: Nuisance, speed: float, n_in: int, n_out: int) -> Timeline:
    tl = Timeline(speed)
    ctx = Context(
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
