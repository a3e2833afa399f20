"""The articulated athlete: forward kinematics from pose parameters to 3-D joints, and the body parts
(thick segments, "capsules") the renderer draws.

Shape notation: T frames, P body parts. Coordinates are the *facing frame*: x points the way the
athlete faces at take-off, y up, z toward the camera (metres). The renderer mirrors x by the clip's
facing sign, which mirrors the whole scene: a horizontal flip of a clip is the same clip rendered with
the other facing, so it keeps every label.

Pose parameters (degrees):
- ``rot``: salto rotation in the sagittal plane; positive = forward, i.e. the head moves toward +x
  (the facing direction at take-off). ``rot = 180`` is upside down.
- ``twist``: rotation about the body's long axis. 0: profile facing +x; the chest panel turns toward
  the camera for twist in (180, 360).
- joints: hip flexion (thigh forward of the trunk), knee flexion (shin folds back), shoulder flexion
  (0 arms down along the trunk, 180 overhead), elbow flexion, hip abduction (both legs, straddle).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from gym_qa.synthgym.nuisance import Body

JOINTS: tuple[str, ...] = ("hip_l", "hip_r", "knee_l", "knee_r", "sh_l", "sh_r", "el_l", "el_r", "abd")
J = {name: i for i, name in enumerate(JOINTS)}

# Body parts in drawing-list order; colour keys are fields of nuisance.Palette (the cluttered palette gives
# sleeves the leotard's colour and bare limbs the skin's, the legible one each limb its own colour).
PARTS: tuple[tuple[str, str], ...] = (
    ("torso", "leotard"),
    ("chest", "front"),
    ("head", "skin"),
    ("hair", "hair"),
    ("face", "face"),
    ("upper_arm_l", "sleeve_l"),
    ("forearm_l", "arm_l"),
    ("upper_arm_r", "sleeve_r"),
    ("forearm_r", "arm_r"),
    ("thigh_l", "leg_l"),
    ("shin_l", "leg_l"),
    ("foot_l", "leg_l"),
    ("thigh_r", "leg_r"),
    ("shin_r", "leg_r"),
    ("foot_r", "leg_r"),
)


def _unit(v: np.ndarray) -> np.ndarray:
    return v / np.maximum(np.linalg.norm(v, axis=-1, keepdims=True), 1e-9)


def body_axes(rot: np.ndarray, twist: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Unit vectors (T, 3) of the trunk: up (hip → head), front (chest normal), left.

    The twist turns front/left about the long axis; the salto rotation then turns all three about z.
    """
    th, ph = np.radians(rot), np.radians(twist)
    c, s, cp, sp = np.cos(th), np.sin(th), np.cos(ph), np.sin(ph)
    zero = np.zeros_like(th)
    up = np.stack([s, c, zero], -1)
    front = np.stack([cp * c, -cp * s, -sp], -1)
    left = np.stack([-sp * c, sp * s, -cp], -1)
    return up, front, left


def forward_kinematics(
    rot: np.ndarray, twist: np.ndarray, joints: np.ndarray, body: Body
) -> dict[str, np.ndarray]:
    """Joint positions (T, 3) relative to the hip centre, plus the trunk axes.

    ``joints``: (T, len(JOINTS)) degrees. Returns keys hip, neck, head, shoulder_l/r, elbow_l/r,
    wrist_l/r, hip_l/r, knee_l/r, ankle_l/r, toe_l/r, up, front, left.
    """
    up, front, left = body_axes(rot, twist)
    q = np.radians(joints)
    col = lambda a: a[:, None]
    hip = np.zeros_like(up)
    neck = up * body.torso
    out = {
        "hip": hip,
        "neck": neck,
        "head": up * (body.torso + body.neck + body.head_r),
        "up": up,
        "front": front,
        "left": left,
    }
    for side, sign in (("l", 1.0), ("r", -1.0)):
        sh, el = q[:, J[f"sh_{side}"]], q[:, J[f"el_{side}"]]
        shoulder = neck + sign * body.shoulder_half * left
        arm = -up * col(np.cos(sh)) + front * col(np.sin(sh))
        elbow = shoulder + arm * body.upper_arm
        fore = -up * col(np.cos(sh + el)) + front * col(np.sin(sh + el))
        wrist = elbow + fore * body.forearm
        hp, kn, ab = q[:, J[f"hip_{side}"]], q[:, J[f"knee_{side}"]], q[:, J["abd"]]
        root = sign * body.hip_half * left
        thigh = -up * col(np.cos(hp)) + front * col(np.sin(hp))
        thigh = thigh * col(np.cos(ab)) + sign * left * col(np.sin(ab))
        knee = root + thigh * body.thigh
        shin = -up * col(np.cos(hp - kn)) + front * col(np.sin(hp - kn))
        shin = shin * col(np.cos(ab)) + sign * left * col(np.sin(ab))
        ankle = knee + shin * body.shin
        # Foot: perpendicular to the shin toward the front, tilted along it (half-pointed toes).
        perp = front * col(np.cos(hp - kn)) + up * col(np.sin(hp - kn))
        toe = ankle + _unit(perp + 0.6 * shin) * body.foot
        out.update(
            {
                f"shoulder_{side}": shoulder,
                f"elbow_{side}": elbow,
                f"wrist_{side}": wrist,
                f"hip_{side}": root,
                f"knee_{side}": knee,
                f"ankle_{side}": ankle,
                f"toe_{side}": toe,
            }
        )
    return out


def lowest_point(fk: dict[str, np.ndarray], body: Body) -> np.ndarray:
    """Lowest y (T,) of the body surface relative to the hip: what touches the floor when supported."""
    cands = [fk["head"][:, 1] - body.head_r]
    for side in "lr":
        cands += [
            fk[f"toe_{side}"][:, 1] - body.r_foot,
            fk[f"ankle_{side}"][:, 1] - body.r_shin,
            fk[f"wrist_{side}"][:, 1] - body.r_arm,
            fk[f"knee_{side}"][:, 1] - body.r_thigh,
        ]
    return np.min(np.stack(cands, 0), axis=0)


def hand_offset(fk: dict[str, np.ndarray]) -> np.ndarray:
    """Mid-point of the wrists relative to the hip (T, 2): pinned to the bar when hanging."""
    return 0.5 * (fk["wrist_l"][:, :2] + fk["wrist_r"][:, :2])


@dataclass
class Capsules:
    """Body parts of T frames as thick segments, in the facing frame (metres).

    p0, p1: (T, P, 3) end points; radius: (T, P); colour_key: P palette keys; depth: (T, P) drawing
    order key (larger = nearer the camera, drawn later).
    """

    p0: np.ndarray
    p1: np.ndarray
    radius: np.ndarray
    colour_key: tuple[str, ...]
    depth: np.ndarray


def capsules(fk: dict[str, np.ndarray], hip_xy: np.ndarray, twist: np.ndarray, body: Body) -> Capsules:
    """Turn joints into the P drawable parts, translated so the hip is at ``hip_xy`` (T, 2)."""
    t = hip_xy.shape[0]
    off = np.concatenate([hip_xy, np.zeros((t, 1))], 1)
    up, front = fk["up"], fk["front"]
    ph = np.radians(twist)
    # Apparent trunk half-width: an ellipse (depth d, width w) turned by the twist, seen side-on.
    r_torso = np.sqrt((0.5 * body.torso_depth * np.cos(ph)) ** 2 + (0.5 * body.torso_width * np.sin(ph)) ** 2)
    facing_cam = np.clip(front[:, 2], 0.0, 1.0)  # >0 when the chest turns toward the camera
    parts: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]] = {}

    def add(name: str, a: np.ndarray, b: np.ndarray, r, bias: float | np.ndarray = 0.0) -> None:
        r = np.broadcast_to(np.asarray(r, float), (t,))
        parts[name] = (a + off, b + off, r, 0.5 * (a[:, 2] + b[:, 2]) + bias)

    hip, neck, head = fk["hip"], fk["neck"], fk["head"]
    inset = np.minimum(r_torso, 0.45 * body.torso)[:, None]
    add("torso", hip + up * inset * 0.5, neck - up * inset * 0.6, r_torso)
    chest_off = front * (0.5 * body.torso_depth * 0.75)
    # The chest panel is a strip on the front of the trunk, broad when the chest faces the camera.
    add(
        "chest",
        hip + up * body.torso * 0.25 + chest_off,
        neck - up * body.torso * 0.1 + chest_off,
        0.035 + 0.55 * 0.5 * body.torso_width * facing_cam,
        bias=0.3 * body.torso_depth,
    )
    add("head", head, head, body.head_r, bias=0.0)
    hair = head - front * body.head_r * 0.85 + up * body.head_r * 0.3
    add("hair", hair, hair, 0.55 * body.head_r)
    face = head + front * body.head_r * 0.7
    add("face", face, face, 0.42 * body.head_r, bias=0.35 * body.head_r)
    for side in "lr":
        add(f"upper_arm_{side}", fk[f"shoulder_{side}"], fk[f"elbow_{side}"], body.r_arm)
        add(f"forearm_{side}", fk[f"elbow_{side}"], fk[f"wrist_{side}"], body.r_arm * 0.9)
        add(f"thigh_{side}", fk[f"hip_{side}"], fk[f"knee_{side}"], body.r_thigh)
        add(f"shin_{side}", fk[f"knee_{side}"], fk[f"ankle_{side}"], body.r_shin)
        add(f"foot_{side}", fk[f"ankle_{side}"], fk[f"toe_{side}"], body.r_foot)
    names = [p for p, _ in PARTS]
    p0 = np.stack([parts[n][0] for n in names], 1)
    p1 = np.stack([parts[n][1] for n in names], 1)
    radius = np.stack([parts[n][2] for n in names], 1)
    depth = np.stack([parts[n][3] for n in names], 1)
    return Capsules(p0=p0, p1=p1, radius=radius, colour_key=tuple(k for _, k in PARTS), depth=depth)
