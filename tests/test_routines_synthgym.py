"""SynthGym routines (gym_qa/synthgym/routines.py, routine_tracks.py): ground truth consistent with the
rendered video and with the element clips, determinism, and the ``--routines`` mode of make_synthgym."""

from __future__ import annotations

import json
from pathlib import Path

import av
import numpy as np
import pytest

from gym_qa.detection_eval import evaluate_detection
from gym_qa.hierarchy import Hierarchy
from gym_qa.routine_annotations import ground_truth_detections, read_routines_json
from gym_qa.synthgym.elements import BY_GLABEL
from gym_qa.synthgym.nuisance import sample_nuisance
from gym_qa.synthgym.pose_tracks import pose_track
from gym_qa.synthgym.poses import FPS
from gym_qa.synthgym.routine_tracks import MAX_LINK_SPEED, element_nuisance, routine_track
from gym_qa.synthgym.routines import ROUTINE_PRESETS, frame_labels, plan_routines, render_routine

PRESET = ROUTINE_PRESETS["tiny"]
pytest_plugins = ["synthgym_fixtures"]


@pytest.fixture(scope="module")
def routines_dir(synthgym_tiny_routines) -> Path:
    return synthgym_tiny_routines


def test_writes_every_file_and_the_counts(routines_dir: Path):
    for name in ("routines.json", "categories.txt", "set_categories.txt", "meta.json"):
        assert (routines_dir / name).is_file(), name
    routines, classes = read_routines_json(routines_dir / "routines.json")
    assert len(classes) == 12 and Hierarchy.from_dir(routines_dir).num_classes == 12
    assert [r.subset for r in routines] == ["training"] * 3 + ["validation", "testing"]
    meta = json.loads((routines_dir / "meta.json").read_text())
    assert meta["routines"] == {"train": 3, "val": 1, "test": 1}
    assert 0.1 < meta["element_frame_share"] < 0.9


def test_ground_truth_is_inside_ordered_and_matches_the_video(routines_dir: Path):
    routines, _ = read_routines_json(routines_dir / "routines.json")
    for r in routines:
        lo, hi = PRESET.elements
        assert lo <= len(r.segments) <= hi
        assert r.duration >= PRESET.seconds[0] - 1 / FPS
        with av.open(str(routines_dir / r.extra["video"])) as container:
            decoded = sum(1 for _ in container.decode(video=0))
        assert decoded == r.extra["num_frames"] == round(r.duration * FPS)
        previous_end = 0
        for (start, end, label), seg in zip(r.extra["frame_segments"], r.segments):
            assert previous_end <= start < end <= r.extra["num_frames"], r.routine_id  # inside, no overlap
            assert (seg.start, seg.end, seg.label) == (start / FPS, end / FPS, label)
            assert seg.event == r.event
            previous_end = end
        labels = frame_labels(r)
        assert labels.shape == (decoded,)
        assert sorted(set(labels.tolist()) - {-1}) == r.labels()
        assert (labels == -1).sum() > 0  # linking motion between the elements


def test_segments_hold_exactly_the_trimmed_element_clips():
    """What the ground truth calls element i is, frame for frame, the pose track of the trimmed clip of
    that element (the training data of the element classifier); the frames outside are linking motion."""
    for spec in plan_routines(PRESET, seed=3)[:3]:
        rt, clip, routine_nz = render_routine(spec, PRESET, 1.0)
        assert clip.frames.shape[0] == rt.track.num_frames
        inside = np.zeros(rt.track.num_frames, bool)
        for (start, end, i), g, seed in zip(rt.segments, spec.glabels, spec.element_seeds):
            nz = element_nuisance(routine_nz, sample_nuisance(seed, 1.0, PRESET.style))
            clip_track = pose_track(BY_GLABEL[g], nz, PRESET.min_element_share)
            assert end - start == clip_track.num_frames
            np.testing.assert_allclose(rt.track.x[start:end], clip_track.x)
            np.testing.assert_allclose(rt.track.y[start:end], clip_track.y)
            np.testing.assert_allclose(rt.track.joints[start:end], clip_track.joints)
            turns = (rt.track.rot[start:end] - clip_track.rot) / 360.0  # whole turns only
            np.testing.assert_allclose(turns, np.round(turns[0]), atol=1e-9)
            inside[start:end] = True
        assert (rt.frame_elements() >= 0).sum() == inside.sum()


def test_links_are_continuous_and_not_too_fast():
    """Into and through every link the hip travels at most MAX_LINK_SPEED (links are lengthened where
    needed, e.g. walking back 8 m from the vault table), and the links fill the gaps. Horizontal travel:
    the gait's bounce moves the hip up and down on top of it."""
    for spec in plan_routines(PRESET, seed=1):
        rt, _, _ = render_routine(spec, PRESET, 1.0, width=32, height=32)
        step = np.abs(np.diff(rt.track.x))  # step[t]: frame t -> t + 1
        for (start, end), planned in zip(rt.link_spans, spec.link_frames):
            assert end - start >= planned
            into_and_through = step[max(start - 1, 0) : end]
            assert into_and_through.max() <= MAX_LINK_SPEED / FPS + 1e-6, (spec.routine_id, start, end)
        assert rt.link_spans[-1][1] == rt.track.num_frames


def test_plan_is_deterministic_and_events_are_pure():
    a, b = plan_routines(PRESET, seed=0), plan_routines(PRESET, seed=0)
    assert a == b and a != plan_routines(PRESET, seed=1)
    for spec in a:
        assert {BY_GLABEL[g].event for g in spec.glabels} == {spec.event}
        assert len(spec.link_frames) == len(spec.glabels) + 1


def test_closing_elements_only_close():
    dismount = next(g for g, e in BY_GLABEL.items() if e.kind == "dismount")
    salto = next(g for g, e in BY_GLABEL.items() if e.kind == "salto" and e.event == "BB")
    nz = sample_nuisance(0)
    with pytest.raises(ValueError, match="close a routine"):
        routine_track(
            [BY_GLABEL[dismount], BY_GLABEL[salto]], [nz, nz], nz, [8] * 3, ["steps"] * 3, ["salute"] * 3, 0.6
        )


def test_ground_truth_scores_full_map_against_itself(routines_dir: Path):
    routines, _ = read_routines_json(routines_dir / "routines.json")
    truth = ground_truth_detections(routines)
    assert evaluate_detection(truth, truth).average_map == pytest.approx(1.0)
