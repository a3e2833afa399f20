"""Floor and beam moves: saltos and jumps on the spot, turns on one leg, beam handsprings and dismounts.

Each move lays out one element's segments on a :class:`~gym_qa.synthgym.timeline.Timeline`, given the
clip's context and the frames of run-up (``n_in``) and of standing after the landing (``n_out``);
:func:`gym_qa.synthgym.pose_tracks.pose_track` picks the move by the element's kind. Durations never
depend on direction or twist count, which keeps pairs aligned (:mod:`gym_qa.synthgym.pose_tracks`).
"""

from __future__ import annotations

import numpy as np

from gym_qa.synthgym.apparatus import BEAM_HALF, BEAM_TOP
from gym_qa.synthgym.poses import (
    AIR,
    ARMS_UP,
    CROUCH,
    FLIGHT_SHAPES,
    PLIE,
    STAND,
    TURN_SHAPES,
    blend,
    joint_pose,
    rotation_profile,
    shape_amount,
    smoothstep,
    twist_profile,
)
from gym_qa.synthgym.segments import land_and_stand, lead_in_moving, salto_flight, shape_labels
from gym_qa.synthgym.timeline import Context, Timeline


def flight_on_the_spot(tl: Timeline, c: Context, n_in: int, n_out: int) -> None:
    """FX/BB saltos and jumps: approach, take-off, vertical flight, landing on the same spot."""
    e = c.element
    beam = e.event == "BB"
    ground = BEAM_TOP if beam else 0.0
    x0 = c.position * (1.0 if beam else 1.5)
    lead_in_moving(tl, n_in, x0 - 0.35, v=0.7 if beam else (4.0 if e.kind == "salto" else 2.5), ground=ground)
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
        label = shape_labels(e.shape)
    else:  # jump
        dur, height = (0.4, 0.42) if beam else (0.44, 0.55)
        shape_pose = FLIGHT_SHAPES[e.shape]
        rot = 0.0
        twist = lambda u: c.sense * 360.0 * e.twists * twist_profile(u, lo=0.05, a=0.3)
        label = shape_labels(e.shape, base="stretched")
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
    land_and_stand(
        tl,
        n_out,
        x0,
        ground,
        rot_end=360.0 * e.direction * e.saltos if salto else 0.0,
        twist_end=(-e.direction if salto else 1) * c.sense * 360.0 * e.twists,
    )


def turn(tl: Timeline, c: Context, n_in: int, n_out: int) -> None:
    """Turns on one leg: the same preparation and finish for every count; the turn window has a fixed
    length, so 1 and 2 turns differ only in how fast the long-axis angle advances inside it."""
    e = c.element
    beam = e.event == "BB"
    ground = BEAM_TOP if beam else 0.0
    x0 = c.position * (1.0 if beam else 1.5)
    lead_in_moving(tl, n_in, x0, v=0.6 if beam else 1.2, ground=ground)
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


def handspring(tl: Timeline, c: Context, n_in: int, n_out: int) -> None:
    """Beam flic-flac / front handspring: the body rolls over the hands, travelling 1.4 m."""
    e = c.element
    x0 = c.position * 0.5
    x1 = x0 + e.direction * 1.4
    lead_in_moving(tl, n_in, x0, v=0.5, ground=BEAM_TOP)
    tl.add(
        tl.frames(0.2),
        pose=lambda u: blend(STAND, joint_pose(hip=25, knee=45, sh=172, el=0), smoothstep(u)),
        x=x0,
        anchor=(0.0, BEAM_TOP),
        shape="crouch",
    )
    rot = lambda u: 360.0 * e.direction * rotation_profile(u, 0.3)
    # Arms follow the rotation so they point at the beam while the body passes over the hands.
    walk = lambda u: {
        **joint_pose(el=0),
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


def beam_dismount(tl: Timeline, c: Context, n_in: int, n_out: int) -> None:
    e = c.element
    x0 = -BEAM_HALF + 0.3  # take off near the end, flying off it backwards (toward -x)
    lead_in_moving(tl, n_in, x0, v=0.6, ground=BEAM_TOP, backwards=True)
    tl.add(
        tl.frames(0.24),
        pose=lambda u: blend(CROUCH, ARMS_UP, smoothstep(u, 0.45, 1.0)),
        x=x0,
        anchor=(0.0, BEAM_TOP),
        shape=lambda u: np.where(u < 0.6, "crouch", "stretched").tolist(),
    )
    salto_flight(tl, c, {1: 0.64, 2: 0.8}[e.saltos], 0.0, -360.0 * e.saltos, 0.0, height=0.5)
    land_and_stand(tl, n_out, x0 - 1.4, 0.0, rot_end=-360.0 * e.saltos, twist_end=c.sense * 360.0 * e.twists)
