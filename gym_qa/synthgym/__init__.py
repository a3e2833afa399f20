"""SynthGym: procedurally rendered gymnastics-like clips with a FineGym-style hierarchy.

The package reads in data-flow order: ``elements`` (catalogue, attributes, pairs, Qtree questions) →
``nuisance`` (per-clip variation from a seed) → the choreography: ``poses`` (pose fields, shapes, key
poses, time profiles), ``timeline`` (a clip as segments), ``segments`` (the ones several moves share),
``moves_floor_beam`` / ``moves_vault_bars`` (each element kind's segments), ``pose_tracks`` (pose
parameters per frame, no pixels) → ``athlete`` (forward kinematics, body parts) → ``apparatus`` →
``render`` (numpy drawing) → ``writer`` (H.264 via PyAV) → ``splits`` / ``metadata`` /
``contact_sheet`` → ``dataset`` (presets, plan, parallel generation). ``scripts/make_synthgym.py`` is
the command line; docs/synthgym.md the guide. Generation lives in :mod:`gym_qa.synthgym.dataset`
(imported lazily here, it needs PyAV). Untrimmed routines of several elements, for temporal element
detection, are ``routine_tracks`` (the chained pose track) → ``routines`` (presets, plan, files;
``make_synthgym.py --routines``, docs/detection.md); clips that show no gymnastics (empty arena, moving
shapes, an athlete standing still), for the out-of-domain check, are ``non_gymnastics``
(``scripts/make_non_gymnastics.py``); ``parallel`` fans the render jobs out over processes.
"""

from gym_qa.synthgym.elements import (
    BY_GLABEL,
    CATALOGUE,
    EVENTS,
    SETS,
    ElementSpec,
    direction_pairs,
    qtree_entry,
    short_window_pairs,
    twist_pairs,
)
from gym_qa.synthgym.nuisance import Nuisance, sample_nuisance
from gym_qa.synthgym.pose_tracks import PoseTrack, element_poses, pose_track
from gym_qa.synthgym.poses import POSE_FIELDS, SHAPES

__all__ = [
    "BY_GLABEL",
    "CATALOGUE",
    "EVENTS",
    "POSE_FIELDS",
    "SETS",
    "SHAPES",
    "ElementSpec",
    "Nuisance",
    "PoseTrack",
    "direction_pairs",
    "element_poses",
    "generate_dataset",
    "pose_track",
    "qtree_entry",
    "sample_nuisance",
    "short_window_pairs",
    "twist_pairs",
]


def __getattr__(name: str):
    if name == "generate_dataset":
        from gym_qa.synthgym.dataset import generate_dataset

        return generate_dataset
    raise AttributeError(name)
