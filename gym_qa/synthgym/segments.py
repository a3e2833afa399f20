"""The segments several moves share: the approach to the take-off, a salto flight between two supports,
the landing, and the per-frame shape labels of a flight.

Each adds its frames to a :class:`~gym_qa.synthgym.timeline.Timeline`; the moves that use them are in
:mod:`gym_qa.synthgym.moves_floor_beam` and :mod:`gym_qa.synthgym.moves_vault_bars`.

Units: metres, degrees, frames at :data:`~gym_qa.synthgym.poses.FPS`.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from gym_qa.synthgym.poses import (
    ARMS_UP,
    BRIDGE,
    FLIGHT_SHAPES,
    FPS,
    GROUND,
    LAND,
    STAND,
    blend,
    rotation_profile,
    shape_amount,
    smoothstep,
    twist_profile,
)
from gym_qa.synthgym.timeline import Context, Timeline


def shape_labels(shape_name: str, amount_edge: float = 0.22, base: str = "stretched") -> Callable:
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


def lead_in_moving(
    tl: Timeline, n: int, x_end: float, v: float, ground: float, backwards: bool = False
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


def land_and_stand(
    tl: Timeline, n_out: int, x: float, ground: float, rot_end: float, twist_end: float
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


def salto_flight(
    tl: Timeline,
    c: Context,
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
        shape=shape_labels(e.shape),
        window=window,
    )
