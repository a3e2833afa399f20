"""Vault and bar moves: the vault's two flights, circles around the high bar, bar dismounts and transitions.

Same contract as the floor and beam moves (:mod:`gym_qa.synthgym.moves_floor_beam`); here ``n_in`` frames
are the run-up or the support on the bar before the element, ``n_out`` the finish after it.
"""

from __future__ import annotations

import numpy as np

from gym_qa.synthgym.apparatus import BOARD_TOP, BOARD_X, HIGH_BAR, LOW_BAR, TABLE_TOP
from gym_qa.synthgym.poses import (
    BRIDGE,
    HANDSTAND,
    HANG,
    SUPPORT,
    blend,
    joint_pose,
    rotation_profile,
    shape_amount,
    smoothstep,
)
from gym_qa.synthgym.segments import land_and_stand, lead_in_moving, salto_flight, shape_labels
from gym_qa.synthgym.timeline import Context, Timeline


def vault(tl: Timeline, c: Context, n_in: int, n_out: int) -> None:
    """Run, (round-off,) springboard, first flight to a handstand on the table, second flight (the
    window), landing on the mat."""
    e = c.element
    x_land = 2.7
    if e.entry == "handspring":
        lead_in_moving(tl, n_in, BOARD_X - 1.1, v=6.0, ground=0.0)
        tl.add(tl.frames(0.12), pose=joint_pose(hip=20, sh=-20), support=BRIDGE, lift=0.12, shape="stretched")
        tl.add(
            tl.frames(0.1),
            pose=joint_pose(hip=35, knee=50, sh=120, el=0),
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
        lead_in_moving(tl, n_in, BOARD_X - 2.9, v=6.0, ground=0.0)
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
            pose=joint_pose(hip=15, sh=150),
            rot=360.0,
            twist=half,
            support=BRIDGE,
            lift=0.1,
            shape="stretched",
        )
        tl.add(
            tl.frames(0.1),
            pose=joint_pose(hip=35, knee=50, sh=160, el=0),
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
    salto_flight(tl, c, 0.64, rot_off, rot_end, twist_table, height=0.55)
    twist_end = twist_table + c.sense * 360.0 * e.twists
    land_and_stand(tl, n_out, x_land, 0.0, rot_end=rot_end, twist_end=twist_end)


def _bar_start(tl: Timeline, n_in: int) -> None:
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


def circle(tl: Timeline, c: Context, n_in: int, n_out: int) -> None:
    """Circles around the high bar, handstand to handstand; optional turn in handstand afterwards."""
    e = c.element
    _bar_start(tl, n_in)

    def pose(u: np.ndarray) -> dict:
        a = shape_amount(u, 0.3)
        if e.shape == "sole":
            return blend(HANDSTAND, joint_pose(hip=150, sh=180, el=0), a)
        if e.shape == "clear_hip":
            return blend(HANDSTAND, joint_pose(hip=35, sh=55, el=0), a)
        return blend(HANDSTAND, joint_pose(hip=-18, sh=185, el=0), np.sin(np.pi * u) ** 2)

    tl.add(
        tl.frames(0.8),
        pose=pose,
        rot=lambda u: 180.0 + e.direction * 360.0 * rotation_profile(u, 0.3),
        support=HANG,
        anchor=HIGH_BAR,
        shape=shape_labels(e.shape if e.shape != "giant" else "hang", 0.3, "handstand"),
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


def bar_dismount(tl: Timeline, c: Context, n_in: int, n_out: int) -> None:
    e = c.element
    _bar_start(tl, n_in)
    tl.add(
        tl.frames(0.6),
        pose=lambda u: blend(HANDSTAND, joint_pose(hip=-15, sh=185, el=0), np.sin(np.pi * u)),
        rot=lambda u: 180.0 - 250.0 * smoothstep(u),
        support=HANG,
        anchor=HIGH_BAR,
        shape="hang",
    )
    salto_flight(tl, c, {1: 0.64, 2: 0.8}[e.saltos], -70.0, -360.0 * e.saltos, 0.0, height=0.6)
    land_and_stand(tl, n_out, 2.9, 0.0, rot_end=-360.0 * e.saltos, twist_end=c.sense * 360.0 * e.twists)


def transition(tl: Timeline, c: Context, n_in: int, n_out: int) -> None:
    _bar_start(tl, n_in)
    tl.add(
        tl.frames(0.6),
        pose=lambda u: blend(HANDSTAND, joint_pose(hip=-15, sh=185, el=0), np.sin(np.pi * u)),
        rot=lambda u: 180.0 + 250.0 * smoothstep(u),
        support=HANG,
        anchor=HIGH_BAR,
        shape="hang",
    )
    tl.add(
        tl.frames(0.36),
        pose=lambda u: blend(HANDSTAND, joint_pose(hip=30, sh=175, el=0), smoothstep(u)),
        rot=lambda u: 430 - 10 * u,
        support=BRIDGE,
        lift=0.3,
        shape="stretched",
        window="flight",
    )
    swing = joint_pose(hip=70, sh=175, el=0)
    tl.add(
        tl.frames(0.4),
        pose=lambda u: blend(joint_pose(hip=30, sh=175, el=0), swing, smoothstep(u)),
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
