"""SynthGym render styles and FineGym-style trimming: the legible style shows every body part in its own
colour (left and right apart), the cluttered style is unchanged, trimmed clips are mostly element."""

from __future__ import annotations

import dataclasses
import itertools
import json
from pathlib import Path

import av
import numpy as np
import pytest
from conftest import load_script

from gym_qa.finegym import parse_clip_id
from gym_qa.synthgym.apparatus import apparatus_for
from gym_qa.synthgym.athlete import PARTS, capsules
from gym_qa.synthgym.dataset import PRESETS, Preset, generate_dataset, plan_dataset, render_clip
from gym_qa.synthgym.elements import BY_GLABEL, CATALOGUE, direction_pairs
from gym_qa.synthgym.nuisance import LEGIBLE_BACKGROUND, LEGIBLE_PALETTE, sample_nuisance
from gym_qa.synthgym.pose_tracks import pose_track
from gym_qa.synthgym.render import capsule_coverage, render

NAMES = [name for name, _ in PARTS]
PART_RGB = np.array([getattr(LEGIBLE_PALETTE, key) for _, key in PARTS])  # (P, 3)
APPEARANCE = (
    "palette",
    "background",
    "gradient",
    "floor_colour",
    "clutter",
    "apparatus_tint",
    "noise_sigma",
    "contrast",
    "brightness",
    "crf",
)


def _element(event: str, name: str):
    return next(e for e in CATALOGUE if e.event == event and e.name == name)


def _owned_pixels(track, nz, clip) -> tuple[np.ndarray, np.ndarray]:
    """(T, H, W) index of the body part drawn on top of each pixel with full coverage, -1 elsewhere (no
    part, an anti-aliased edge, or a nearer part overlapping it); and (T, H, W) where any part touches."""
    caps = capsules(track.fk, np.column_stack([track.x, track.y]), track.twist, nz.body)
    q = clip.parts_px  # (T, P, 5)
    _, h, w, _ = clip.frames.shape
    gx = np.arange(w, dtype=np.float32)[None, None, None, :] + 0.5
    gy = np.arange(h, dtype=np.float32)[None, None, :, None] + 0.5
    cov = capsule_coverage(q[..., 0:2], q[..., 2:4], q[..., 4], gx, gy)  # (T, P, H, W)
    rank = np.argsort(np.argsort(caps.depth, axis=1, kind="stable"), axis=1)  # drawing position of each part
    owner = np.full(cov.shape[:1] + cov.shape[2:], -1)
    for t, p in itertools.product(range(cov.shape[0]), range(cov.shape[1])):
        later = rank[t] > rank[t, p]
        mine = (cov[t, p] >= 1.0) & ~(cov[t, later] > 0).any(0)
        owner[t][mine] = p
    return owner, (cov > 0).any(1)


# ----------------------------------------------------------------------------- legible style


def test_legible_palette_is_distinct_and_avoids_the_apparatus() -> None:
    keys = sorted({key for _, key in PARTS})
    colours = {k: np.array(getattr(LEGIBLE_PALETTE, k)) for k in keys}
    distinct = {tuple(c) for c in colours.values()}
    assert len(distinct) == len(keys) - 2  # only the sleeves share their arm's colour
    for a, b in itertools.combinations(distinct, 2):
        assert np.abs(np.subtract(a, b)).max() >= 95, (a, b)
    app_colours = {
        c.colour
        for e in ("FX", "BB", "VT", "UB")
        for c in (*apparatus_for(e).boxes, *apparatus_for(e).segments)
    }
    for k, c in colours.items():
        assert np.abs(c - LEGIBLE_BACKGROUND).max() >= 90, k
        if k != "face":  # the small white face marker may match the white bars and floor line
            assert min(np.abs(c - np.array(a)).max() for a in app_colours) >= 75, k
    # Luminance (what grayscale and H.264's full-resolution luma keep): facing fully, left/right partly.
    lum = {k: float(c @ [0.299, 0.587, 0.114]) for k, c in colours.items()}
    assert lum["front"] - lum["leotard"] >= 150 and lum["face"] - lum["hair"] >= 150
    assert lum["arm_l"] - lum["arm_r"] >= 50 and lum["leg_l"] - lum["leg_r"] >= 50
    assert LEGIBLE_PALETTE.far_shade == 0.0  # far limbs keep their colour exactly


def test_legible_shares_geometry_and_timing_with_cluttered() -> None:
    """A seed picks the same clip in both styles; only the look differs (and noise/CRF are milder)."""
    for seed in range(20):
        c, g = sample_nuisance(seed, 1.0, "cluttered"), sample_nuisance(seed, 1.0, "legible")
        for f in dataclasses.fields(c):
            if f.name not in APPEARANCE:
                assert getattr(c, f.name) == getattr(g, f.name), f.name
        assert g.palette == LEGIBLE_PALETTE and g.clutter == () and g.gradient == 0.0
        assert g.background == g.floor_colour == LEGIBLE_BACKGROUND and g.apparatus_tint == (1.0, 1.0, 1.0)
        assert g.contrast == 1.0 and g.brightness == 0.0
        assert 18 <= g.crf <= 23 and g.noise_sigma <= c.noise_sigma / 3 + 1e-12
    with pytest.raises(ValueError, match="unknown style 'noir'"):
        sample_nuisance(0, 1.0, "noir")


def test_legible_clip_shows_every_part_in_its_colour_and_left_apart_from_right() -> None:
    """A 2-turn on one leg shows the athlete from every side; wherever a part is on top of a pixel, the
    pixel has that part's colour, every part is seen, and some frames show both arms and both legs."""
    element = _element("FX", "2 turn on one leg, free leg optional below horizontal")
    nz = sample_nuisance(5, 1.0, "legible")
    track = pose_track(element, nz, min_element_share=0.6)
    clip = render(track, nz, 64, 64, "athlete")
    owner, body = _owned_pixels(track, nz, clip)
    frames = clip.frames.astype(int)
    seen = np.zeros((track.num_frames, len(PARTS)), int)  # pixels per frame and part in the part's colour
    for p in range(len(PARTS)):
        pix = frames[owner == p]  # (n, 3)
        match = np.abs(pix - PART_RGB[p]).max(-1) <= 12  # pixel noise is about 1 grey level
        assert len(pix) and match.mean() >= 0.98, (NAMES[p], len(pix), match.mean())
        seen[:, p] = ((owner == p) & (np.abs(frames - PART_RGB[p]).max(-1) <= 12)).sum((1, 2))
    assert (seen.sum(0) > 0).all(), [n for n, s in zip(NAMES, seen.sum(0)) if not s]
    i = {n: NAMES.index(n) for n in NAMES}
    arms = (seen[:, i["upper_arm_l"]] + seen[:, i["forearm_l"]] > 0) & (
        seen[:, i["upper_arm_r"]] + seen[:, i["forearm_r"]] > 0
    )
    legs = (seen[:, i["thigh_l"]] + seen[:, i["shin_l"]] > 0) & (
        seen[:, i["thigh_r"]] + seen[:, i["shin_r"]] > 0
    )
    assert arms.any() and legs.any()
    for left, right in (("forearm_l", "forearm_r"), ("thigh_l", "thigh_r")):
        assert np.abs(PART_RGB[i[left]] - PART_RGB[i[right]]).max() >= 90
    # Plain background: the top rows (above the floor) are background wherever the athlete is not.
    top = np.abs(frames[:, :8] - LEGIBLE_BACKGROUND).max(-1)[~body[:, :8]]
    assert top.size > 1000 and top.max() <= 12


def test_cluttered_tiny_clip_is_unchanged() -> None:
    """The cluttered look of version 1.2: per-channel means of a tiny val clip's frames (before H.264),
    with both cameras. A changed palette, background or clutter moves them by far more than 1e-3."""
    spec = next(s for s in plan_dataset(PRESETS["tiny"], 3) if s.split == "val")
    golden = {"scene": [109.1899, 83.3578, 192.4604], "athlete": [110.0631, 84.3183, 203.1617]}
    for camera, mean in golden.items():
        track, clip, _ = render_clip(spec, 1.0, 64, 64, camera)
        assert spec.glabel == 41 and clip.frames.shape == (45, 64, 64, 3) and track.span == (0, 45)
        np.testing.assert_allclose(clip.frames.reshape(-1, 3).mean(0), mean, atol=1e-3)


# ----------------------------------------------------------------------------- trimming


def test_trimming_keeps_the_element_and_short_context_for_every_bench_class() -> None:
    preset = PRESETS["bench"]
    assert preset.style == "legible" and preset.min_element_share == 0.6
    specs = [s for s in plan_dataset(preset, 0) if s.split == "val"]
    per_class: dict[int, list] = {}
    for s in specs:
        per_class.setdefault(s.glabel, [])
        if len(per_class[s.glabel]) < 3:
            per_class[s.glabel].append(s)
    assert set(per_class) == set(preset.glabels)
    for glabel, chosen in per_class.items():
        for s in chosen:
            nz = sample_nuisance(s.nuisance_seed, 1.0, preset.style)
            full = pose_track(BY_GLABEL[glabel], nz)
            cut = pose_track(BY_GLABEL[glabel], nz, preset.min_element_share)
            a, b = cut.span
            assert cut.element_share() >= 0.6 and cut.num_frames == b - a, (glabel, cut.span)
            assert cut.full_frames == full.num_frames and 0 <= a <= b <= full.num_frames
            # the same frames as the whole performance, with the windows moved along
            np.testing.assert_array_equal(cut.pose_vectors(), full.pose_vectors()[a:b])
            assert cut.shape == full.shape[a:b]
            assert {k: (w0 + a, w1 + a) for k, (w0, w1) in cut.windows.items()} == full.windows
            core = full.core_window()
            if cut.num_frames < full.num_frames:  # as much context as the share allows: one more is too many
                assert (core[1] - core[0]) / (cut.num_frames + 1) < 0.6
            # run-up and landing both stay when the performance has them
            assert (core[0] == 0) or a < core[0]
            assert (core[1] == full.num_frames) or b > core[1]


def test_trimmed_direction_pair_is_still_time_reversal() -> None:
    fwd, bwd = direction_pairs(CATALOGUE)[0]
    for seed in range(3):
        nz = sample_nuisance(seed, 1.0, "legible")
        tf, tb = (pose_track(BY_GLABEL[g], nz, 0.6) for g in (fwd, bwd))
        assert tf.span == tb.span and tf.windows == tb.windows
        a, b = tf.windows["flight"]
        pf, pb = tf.pose_vectors(), tb.pose_vectors()
        np.testing.assert_allclose(pf[a:b], pb[a:b][::-1], atol=1e-6)
        np.testing.assert_allclose(np.delete(pf, np.s_[a:b], 0), np.delete(pb, np.s_[a:b], 0), atol=1e-6)


def test_crop_must_keep_the_element_window() -> None:
    track = pose_track(CATALOGUE[0], sample_nuisance(0, 1.0))
    a, b = track.core_window()
    with pytest.raises(ValueError, match="must contain the element window"):
        track.crop(a + 1, b)
    with pytest.raises(ValueError, match="min_element_share"):
        pose_track(CATALOGUE[0], sample_nuisance(0, 1.0), 1.5)


# ----------------------------------------------------------------------------- a trimmed legible data set


def test_legible_trimmed_dataset_end_to_end(tmp_path: Path) -> None:
    glabels = tuple(PRESETS["quickstart"].glabels[:3])
    preset = Preset(
        "mini",
        glabels,
        pool_per_class=2,
        val_per_class=1,
        test_per_class=1,
        pretrain_clips=2,
        camera="athlete",
        style="legible",
        min_element_share=0.6,
    )
    meta = generate_dataset(tmp_path, preset, seed=1, workers=1, progress=False)
    assert (
        meta["generator_version"] == "1.3" and meta["style"] == "legible" and meta["min_element_share"] == 0.6
    )
    assert meta["element_share"]["min"] >= 0.6
    assert set(meta["part_colours"]) == set(NAMES)
    readme = (tmp_path / "README.md").read_text()
    assert "legible style" in readme and "at least 0.6 of every clip" in readme
    for line in (tmp_path / "elements.txt").read_text().splitlines():
        cid, _ = line.split()
        _, (e0, e1), (a0, a1) = parse_clip_id(cid)
        assert e0 == 0 and 0 <= a0 < a1 <= e1
        with av.open(str(tmp_path / "videos" / f"{cid}.mp4")) as c:
            assert sum(1 for _ in c.decode(video=0)) == a1 - a0, cid
    for rec in map(json.loads, (tmp_path / "pretrain" / "frames.jsonl").read_text().splitlines()):
        _, _, (a0, a1) = parse_clip_id(rec["clip_id"])
        assert rec["num_frames"] == a1 - a0 == len(rec["frames"]["parts"]) == len(rec["frames"]["rot"])


def test_script_style_flag(tmp_path: Path) -> None:
    script = load_script("make_synthgym")
    assert script.parse_args(["--out", str(tmp_path)]).style is None  # the preset's
    assert script.parse_args(["--out", str(tmp_path), "--style", "legible"]).style == "legible"
    with pytest.raises(SystemExit):
        script.parse_args(["--out", str(tmp_path), "--style", "noir"])
