"""The timeline a move writes a clip into, and the context of the clip a move reads.

A clip is a timeline of segments (run-up, take-off, flight, landing, ...). Each segment samples its
own normalised time at ``u_k = (k + 0.5) / n`` for ``k = 0..n-1``, so a segment's frames are
symmetric in time (``u_{n-1-k} = 1 - u_k``); every field of a segment may be a constant or a function
of ``u``. :meth:`Timeline.frames` turns seconds of motion into frames at the clip's playback speed.

The moves (:mod:`gym_qa.synthgym.moves_floor_beam`, :mod:`gym_qa.synthgym.moves_vault_bars`) and the
segments they share (:mod:`gym_qa.synthgym.segments`) add to a timeline; :mod:`gym_qa.synthgym.pose_tracks`
reads it out.

Units: metres, degrees, frames at :data:`~gym_qa.synthgym.poses.FPS`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from gym_qa.synthgym.athlete import JOINTS
from gym_qa.synthgym.elements import ElementSpec
from gym_qa.synthgym.nuisance import Body
from gym_qa.synthgym.poses import FPS, GROUND, Pose

Value = float | Callable[[np.ndarray], np.ndarray]


class Timeline:
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
class Context:
    element: ElementSpec
    body: Body
    sense: int  # twist sense (+1/-1)
    position: float  # [-1, 1]
    stand_h: float  # hip height above the feet when standing straight
