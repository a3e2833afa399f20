"""Non-gymnastics clips (gym_qa/synthgym/non_gymnastics.py) make what they say: an empty scene has no
athlete and, without nuisance, does not change; the ball bounces and moves across; the standing athlete
barely moves; the script writes a list scripts/predict.py reads."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import load_script

from gym_qa.synthgym.athlete import JOINTS
from gym_qa.synthgym.dataset import nuisance_seed
from gym_qa.synthgym.non_gymnastics import (
    KINDS,
    NonGymSpec,
    kind_of,
    plan_non_gymnastics,
    render_non_gymnastics,
    standing_track,
)
from gym_qa.synthgym.nuisance import LEGIBLE_PALETTE, sample_nuisance
from sefar_encoder.clip_inputs import read_inputs

make_cli = load_script("make_non_gymnastics")

# the legible athlete's own colours (background grey, apparatus and face marker excluded)
ATHLETE_COLOURS = np.array(
    [
        LEGIBLE_PALETTE.skin,
        LEGIBLE_PALETTE.leotard,
        LEGIBLE_PALETTE.front,
        LEGIBLE_PALETTE.sleeve_l,
        LEGIBLE_PALETTE.sleeve_r,
        LEGIBLE_PALETTE.leg_l,
        LEGIBLE_PALETTE.leg_r,
    ]
)


def athlete_pixels(frames: np.ndarray) -> int:
    """Pixels within 40 grey levels (every channel) of one of the legible athlete's colours."""
    diff = np.abs(frames[..., None, :].astype(float) - ATHLETE_COLOURS).max(axis=-1)  # (T, H, W, colours)
    return int((diff < 40).any(axis=-1).sum())


def spec(kind: str, seed: int = 7, event: str = "FX") -> NonGymSpec:
    return NonGymSpec(kind, 0, event, seed)


def test_plan_takes_kinds_in_turn_and_is_deterministic():
    plan = plan_non_gymnastics(8, seed=1)
    assert [s.kind for s in plan] == list(KINDS) * 2
    assert plan == plan_non_gymnastics(8, seed=1) and plan != plan_non_gymnastics(8, seed=2)
    assert len({s.seed for s in plan}) == 8
    data_seeds = {
        nuisance_seed(1, split, i) for split in ("train", "val", "test", "pretrain") for i in range(8)
    }
    assert not data_seeds & {s.seed for s in plan}
    assert kind_of(f"/x/{plan[1].stem}.mp4") == "ball" and kind_of("/x/SGe00000001_E_0.mp4") is None


def test_empty_scene_has_no_athlete_and_without_nuisance_stands_still():
    empty = render_non_gymnastics(spec("empty"), style="legible", camera="athlete", difficulty=0.0)
    standing = render_non_gymnastics(spec("standing"), style="legible", camera="athlete", difficulty=0.0)
    assert athlete_pixels(empty.frames) == 0 and (empty.athlete_box_px == 0).all()
    assert athlete_pixels(standing.frames) > 50 * len(standing.frames)  # the check finds an athlete
    assert (standing.athlete_box_px > 0).all()
    assert (empty.frames == empty.frames[0]).all()  # difficulty 0: no pan, zoom drift or noise
    assert empty.frames.std() > 5  # not a blank frame: wall, floor and apparatus are drawn


def test_ball_bounces_across_the_view():
    clip = render_non_gymnastics(spec("ball", seed=11), style="legible", camera="athlete", difficulty=0.0)
    (track,) = clip.moving.transpose(1, 0, 2)  # one moving shape: (T, 3) x, y, radius in pixels
    x, y, r = track.T
    assert abs(x[-1] - x[0]) > 10  # travels across a 64 px frame
    vy = np.diff(y)
    assert ((vy[:-1] > 0) & (vy[1:] <= 0)).any()  # image y goes down then up: it bounced off the floor
    inside = np.nonzero((x > r) & (x < 64 - r) & (y > r) & (y < 64 - r))[0]
    assert len(inside) > len(x) // 3 and (r > 1.5).all()  # in view most of the time, wider than 3 px
    t = int(inside[0])
    scene = render_non_gymnastics(spec("empty", seed=11), style="legible", camera="athlete", difficulty=0.0)
    ix, iy = int(x[t]), int(y[t])
    assert np.abs(clip.frames[t, iy, ix].astype(int) - scene.frames[t, iy, ix]).max() > 30  # drawn there


def test_standing_athlete_barely_moves():
    nz = sample_nuisance(5, 1.0, "legible")
    track = standing_track("BB", nz, 40, np.random.default_rng(0))
    assert np.ptp(track.x) < 0.03 and np.ptp(track.y) == 0.0  # metres
    assert np.ptp(track.joints, axis=0).max() < 7.0 and np.ptp(track.rot) < 4.0  # degrees
    assert set(track.shape) == {"stand"} and len(JOINTS) == track.joints.shape[1]
    clip = render_non_gymnastics(spec("standing", seed=5), style="legible", camera="athlete", difficulty=0.0)
    assert np.ptp(clip.athlete_box_px) <= 0.15 * clip.athlete_box_px.mean()  # its box hardly changes


def test_script_writes_a_list_predict_reads(tmp_path):
    out = tmp_path / "nongym"
    assert make_cli.main(["--out", str(out), "--count", "5", "--seed", "3", "--style", "legible"]) == 0
    clips = read_inputs(out / "clips.csv")
    assert len(clips) == 5 and all(c.path.is_file() and c.label is None for c in clips)
    meta = json.loads((out / "meta.json").read_text())
    assert meta["kinds"] == {"empty": 2, "ball": 1, "shapes": 1, "standing": 1} and meta["style"] == "legible"
    assert [kind_of(c.path) for c in clips] == [c["kind"] for c in meta["clips"]]


def test_script_takes_the_look_of_a_data_set(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    (data / "meta.json").write_text(
        json.dumps({"camera": "athlete", "style": "legible", "difficulty": 0.5, "resolution": [48, 32]})
    )
    out = tmp_path / "nongym"
    assert make_cli.main(["--out", str(out), "--count", "1", "--like", str(data)]) == 0
    meta = json.loads((out / "meta.json").read_text())
    assert (meta["size"], meta["camera"], meta["difficulty"]) == ([48, 32], "athlete", 0.5)
    (data / "meta.json").write_text("{}")
    with pytest.raises(SystemExit):
        make_cli.main(["--out", str(out), "--count", "1", "--like", str(data)])
