"""A routine's pose track: several elements of one event chained by linking motion (no pixels).

::

    element 1 track ─┐   link (steps / pose / swing)   ┌─ element 2 track ─ ... ─ closing link
    opening link ────┴─────────────────────────────────┴──► one PoseTrack, rendered like a clip

Each element is laid out exactly as a single SynthGym clip (:func:`~gym_qa.synthgym.pose_tracks.pose_track`,
untrimmed: run-up and landing included) with its own timing nuisance, and the athlete's body, look and
facing are the routine's. Its ground-truth segment is the part a trimmed element clip would hold
(``pose_track(..., min_element_share)``'s span: the element window and a little context), so the element
segments of a routine are what the element classifier was trained on; the element's remaining run-up and
landing count as linking motion, like a FineGym element's surroundings inside its event.

A link goes from the last frame of one part to the first frame of the next: joints, position and angles
are blended with a smoothstep, and

- ``steps``: walks or runs (gait oscillation on hips, knees and shoulders) from one place to the other;
- ``pose``: blends into a held pose (salute with arms up, plié, crouch), then steps to the next place;
- ``swing``: on the bars (either end hanging), a plain blend of the hanging states.

Angles are continued, never unwound: an element's rotation and twist are shifted by whole turns (invisible
in the render) so that the link between two parts turns the short way. On the ground the hip height is
solved so that the lowest body point stays on the floor or beam; on the bars it is blended. The bars'
transition and the dismounts leave the apparatus, so they only close a routine
(:data:`CLOSING_KINDS`).

Units: metres, degrees, frames at :data:`~gym_qa.synthgym.poses.FPS`. Shape notation: T frames, J joints.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from gym_qa.synthgym.athlete import JOINTS, forward_kinematics, lowest_point
from gym_qa.synthgym.elements import ElementSpec
from gym_qa.synthgym.nuisance import Nuisance
from gym_qa.synthgym.pose_tracks import PoseTrack, pose_track
from gym_qa.synthgym.poses import ARMS_UP, CROUCH, FPS, GROUND, HANG, PLIE, STAND, Pose, smoothstep

CLOSING_KINDS = frozenset({"dismount", "bar_dismount", "transition"})
HELD_POSES: dict[str, Pose] = {"salute": ARMS_UP, "plie": PLIE, "crouch": CROUCH}
MIN_LINK_FRAMES = 8
MAX_LINK_SPEED = 6.0  # m/s at the fastest frame of a link's travel (a sprint); longer links where needed
TRAVEL_SHARE = {"steps": 1.0, "swing": 1.0, "pose": 0.35}  # the part of a link that travels


@dataclass
class RoutineTrack:
    """The routine's pose track and its ground truth, in frames of that track."""

    track: PoseTrack  # the whole routine; ``track.element`` is its first element (the event's apparatus)
    segments: list[tuple[int, int, int]]  # (start, end exclusive, element index) per element, in order
    elements: list[ElementSpec]  # in order
    links: list[str]  # the kind of each link: before the first element, between elements, after the last
    link_spans: list[tuple[int, int]]  # frames [start, end) of each link

    def frame_elements(self) -> np.ndarray:
        """(T,) per frame the index of the element whose segment holds it, -1 for linking motion."""
        out = np.full(self.track.num_frames, -1, np.int64)
        for start, end, i in self.segments:
            out[start:end] = i
        return out


def element_nuisance(routine: Nuisance, own: Nuisance) -> Nuisance:
    """The nuisance one element of a routine is laid out with: its own timing, place and sides, the
    routine's athlete (body), look and camera."""
    return replace(
        routine,
        speed=own.speed,
        lead_in=own.lead_in,
        lead_out=own.lead_out,
        position=own.position,
        twist_sense=own.twist_sense,
        lead_leg=own.lead_leg,
    )


def _joints(pose: Pose) -> np.ndarray:
    return np.array([pose[k] for k in JOINTS], float)


@dataclass
class _State:
    """The athlete at one frame: where the next part must start from."""

    x: float
    y: float
    rot: float
    twist: float
    joints: np.ndarray  # (J,)
    support: int
    ground: float  # height of the surface under the feet (ground support only)


def _state(track: PoseTrack, i: int, body) -> _State:
    low = float(lowest_point({k: v[i : i + 1] for k, v in track.fk.items()}, body)[0])
    return _State(
        float(track.x[i]),
        float(track.y[i]),
        float(track.rot[i]),
        float(track.twist[i]),
        track.joints[i].astype(float),
        int(track.support[i]),
        float(track.y[i]) + low,
    )


def _nearest_turn(angle: float, reference: float) -> float:
    """Whole turns (degrees) to add to ``angle`` to bring it within 180 of ``reference``."""
    return 360.0 * round((reference - angle) / 360.0)


def _frames_needed(a: _State, b: _State, kind: str) -> int:
    """Frames a link needs so that its travel stays under :data:`MAX_LINK_SPEED`; a smoothstep's peak
    speed is 1.5 times its mean."""
    distance = float(np.hypot(b.x - a.x, b.y - a.y))
    return int(np.ceil(1.5 * distance * FPS / (TRAVEL_SHARE[kind] * MAX_LINK_SPEED)))


def _link(a: _State, b: _State, n: int, kind: str, held: Pose, body) -> dict[str, np.ndarray | list[str]]:
    """Frames strictly between states ``a`` and ``b`` (``b`` is the next part's first frame)."""
    u = (np.arange(n) + 1.0) / (n + 1.0)  # (T,) excludes both ends, which the neighbours own
    t = np.arange(n) / FPS
    if kind == "pose":  # into the held pose, hold, out of it; travel in the last third
        into, out = smoothstep(u, 0.0, 0.3), smoothstep(u, 0.6, 0.95)
        p = _joints(held)
        joints = a.joints + np.outer(into, p - a.joints) + np.outer(out, b.joints - p)
        move = smoothstep(u, 0.6, 0.95)
    else:
        move = smoothstep(u)
        joints = a.joints + np.outer(move, b.joints - a.joints)
    x = a.x + (b.x - a.x) * move
    rot = a.rot + (b.rot - a.rot) * move
    twist = a.twist + (b.twist - a.twist) * move
    if kind == "swing":
        y = a.y + (b.y - a.y) * move
        return {
            "x": x,
            "y": y,
            "rot": rot,
            "twist": twist,
            "joints": joints,
            "support": np.full(n, HANG),
            "shape": ["hang"] * n,
        }
    travel_seconds = max(float(np.ptp(t[move > 0.02]) if np.any(move > 0.02) else 0.0), 1.0 / FPS)
    v = abs(b.x - a.x) / travel_seconds  # m/s while travelling
    if v > 0.05:  # gait, as in segments._gait, faded in and out with the travel
        hz, amp = (3.2, 38.0) if v > 2 else (1.6, 18.0)
        s = np.sin(2 * np.pi * hz * t) * np.sin(np.pi * move)
        gait = {"hip_l": amp, "hip_r": -amp, "sh_l": -amp, "sh_r": amp}
        joints = joints.copy()
        for k, sign in gait.items():
            joints[:, JOINTS.index(k)] += sign * s
        joints[:, JOINTS.index("knee_l")] += 1.6 * amp * np.clip(-s, 0, None)
        joints[:, JOINTS.index("knee_r")] += 1.6 * amp * np.clip(s, 0, None)
    ground = a.ground + (b.ground - a.ground) * move
    fk = forward_kinematics(rot, twist, joints, body)
    y = ground - lowest_point(fk, body)
    moving = (move > 0.02) & (move < 0.98)
    return {
        "x": x,
        "y": y,
        "rot": rot,
        "twist": twist,
        "joints": joints,
        "support": np.full(n, GROUND),
        "shape": np.where(moving & (v > 2), "run", "stand").tolist(),
    }


def routine_track(
    elements: list[ElementSpec],
    nuisances: list[Nuisance],
    routine: Nuisance,
    link_frames: list[int],
    link_kinds: list[str],
    held_poses: list[str],
    min_element_share: float,
) -> RoutineTrack:
    """Chain the elements (each laid out with its nuisance) with ``len(elements) + 1`` links of the given
    frame counts; ``link_kinds`` ground links are ``steps`` or ``pose`` (with ``held_poses``), a link with
    a hanging end becomes ``swing``. A link too short to travel where the next element starts without
    exceeding :data:`MAX_LINK_SPEED` is lengthened (the routine grows). A closing element
    (:data:`CLOSING_KINDS`) must be the last."""
    n = len(elements)
    if not (len(nuisances) == n and len(link_frames) == len(link_kinds) == len(held_poses) == n + 1):
        raise ValueError("need one nuisance per element and one link (frames, kind, pose) per gap")
    if any(e.kind in CLOSING_KINDS for e in elements[:-1]):
        raise ValueError("a dismount or transition can only close a routine")
    if any(f < MIN_LINK_FRAMES for f in link_frames):
        raise ValueError(f"links need at least {MIN_LINK_FRAMES} frames, got {link_frames}")
    body = routine.body
    parts: list[dict] = []
    segments: list[tuple[int, int, int]] = []
    kinds: list[str] = []
    link_spans: list[tuple[int, int]] = []
    tracks = [pose_track(e, nz, 0.0) for e, nz in zip(elements, nuisances)]
    spans = [pose_track(e, nz, min_element_share).span for e, nz in zip(elements, nuisances)]

    def track_part(tr: PoseTrack, d_rot: float, d_twist: float) -> dict:
        return {
            "x": tr.x,
            "y": tr.y,
            "rot": tr.rot + d_rot,
            "twist": tr.twist + d_twist,
            "joints": tr.joints,
            "support": tr.support,
            "shape": list(tr.shape),
        }

    # Opening: the athlete stands (or hangs) where the first element starts, in a plain pose.
    first = _state(tracks[0], 0, body)
    if first.support == GROUND:
        start = replace(first, joints=_joints(STAND), x=first.x - 0.8)  # walks in
    else:
        start = first
    previous = start
    frame = 0
    for i, (tr, span) in enumerate(zip(tracks, spans)):
        head = _state(tr, 0, body)
        d_rot = _nearest_turn(head.rot, previous.rot)
        d_twist = _nearest_turn(head.twist, previous.twist)
        head = replace(head, rot=head.rot + d_rot, twist=head.twist + d_twist)
        kind = link_kinds[i] if previous.support == head.support == GROUND else "swing"
        n_link = max(link_frames[i], _frames_needed(previous, head, kind) + 1)
        link_start = frame
        if i == 0:  # the opening starts at its first frame: prepend the start state itself
            parts.append(_link(start, start, 1, "steps", STAND, body))
            frame += 1
        parts.append(_link(previous, head, n_link - (i == 0), kind, HELD_POSES[held_poses[i]], body))
        kinds.append(kind)
        frame += n_link - (i == 0)
        link_spans.append((link_start, frame))
        parts.append(track_part(tr, d_rot, d_twist))
        segments.append((frame + span[0], frame + span[1], i))
        frame += tr.num_frames
        end = _state(tr, tr.num_frames - 1, body)
        previous = replace(end, rot=end.rot + d_rot, twist=end.twist + d_twist)
    # Closing: a final pose where the last element ended.
    final = replace(previous, joints=_joints(STAND)) if previous.support == GROUND else previous
    kind = link_kinds[n] if previous.support == GROUND else "swing"
    parts.append(_link(previous, final, link_frames[n], kind, HELD_POSES[held_poses[n]], body))
    kinds.append(kind)
    link_spans.append((frame, frame + link_frames[n]))

    cat = lambda k: np.concatenate([np.asarray(p[k], float) for p in parts])
    rot, twist = cat("rot"), cat("twist")
    joints = np.concatenate([p["joints"] for p in parts])
    track = PoseTrack(
        element=elements[0],
        x=cat("x"),
        y=cat("y"),
        rot=rot,
        twist=twist,
        joints=joints,
        support=cat("support").astype(int),
        shape=[s for p in parts for s in p["shape"]],
        windows={f"element_{i}": (s, e) for s, e, i in segments},
        speed=routine.speed,
        span=(0, len(rot)),
        full_frames=len(rot),
        fk=forward_kinematics(rot, twist, joints, body),
    )
    return RoutineTrack(track, segments, list(elements), kinds, link_spans)
