"""The pose vocabulary of SynthGym: pose fields, body-shape labels, key poses and time profiles.

A pose is a dict of joint angles (degrees, :data:`~gym_qa.synthgym.athlete.JOINTS`); the key poses
(standing, crouch, landing, handstand, the flight and turn shapes) are blended by the profiles below.
Each profile is a function of a segment's normalised time ``u`` in [0, 1] with the symmetry that makes
forward and backward elements time-reversals of each other (:mod:`gym_qa.synthgym.pose_tracks`):
:func:`rotation_profile` and :func:`twist_profile` satisfy ``f(1 - u) = 1 - f(u)``, :func:`shape_amount`
is symmetric in ``u``.

Units: metres, degrees, frames at :data:`FPS`.
"""

from __future__ import annotations

import numpy as np

from gym_qa.synthgym.athlete import JOINTS

FPS = 25.0

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


def joint_pose(**kw: float) -> Pose:
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


STAND = joint_pose()
ARMS_UP = joint_pose(sh=172, el=0)
CROUCH = joint_pose(hip=65, knee=105, sh=-35, el=10)
LAND = joint_pose(hip=55, knee=85, sh=85, el=0)
PLIE = joint_pose(hip=22, knee=40, sh=80, el=25)
HANDSTAND = joint_pose(sh=180, el=0)
SUPPORT = joint_pose(sh=0, el=0, hip=12)

FLIGHT_SHAPES: dict[str, Pose] = {
    "tucked": joint_pose(hip=125, knee=140, sh=45, el=85),
    "piked": joint_pose(hip=120, sh=100, el=0),
    "stretched": joint_pose(hip=-8, sh=25, el=10),
    "stretched_twist": joint_pose(sh=15, el=125),  # arms folded on the chest while twisting
    "split": joint_pose(hip_l=100, hip_r=-80, sh=125, el=0),
    "straddle": joint_pose(hip=95, abd=70, sh=95, el=0),
    "stag": joint_pose(hip_l=95, knee_l=110, hip_r=-70, sh=150, el=0),
    "wolf": joint_pose(hip_l=95, hip_r=95, knee_r=135, sh=110, el=0),
    "tuck": joint_pose(hip=115, knee=130, sh=80, el=20),
}
TURN_SHAPES: dict[str, Pose] = {
    "passe": joint_pose(hip_l=50, knee_l=115, sh=172, el=20),
    "horizontal": joint_pose(hip_l=90, sh=95, el=0),
    "split": joint_pose(hip_l=165, sh_l=172, sh_r=95, el=0),
    "tuck_stand": joint_pose(hip_r=95, knee_r=110, hip_l=85, sh=90, el=10),
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
