"""SynthGym generator: the tiny preset end to end, and the fine-grained pair properties by construction."""

from __future__ import annotations

import dataclasses
import json
import re
import shutil
from pathlib import Path

import av
import numpy as np
import pytest
from conftest import SCRIPTS, load_script

from gym_qa.lists import read_list
from gym_qa.synthgym.athlete import capsules
from gym_qa.synthgym.dataset import PRESETS, add_label_rates, generate_clip, plan_dataset
from gym_qa.synthgym.elements import (
    BY_GLABEL,
    CATALOGUE,
    direction_pairs,
    qtree_entry,
    short_window_pairs,
    twist_pairs,
)
from gym_qa.synthgym.nuisance import sample_nuisance
from gym_qa.synthgym.pose_tracks import MAX_FRAMES, MIN_FRAMES, pose_track
from gym_qa.synthgym.poses import POSE_FIELDS
from gym_qa.synthgym.render import render
from gym_qa.synthgym.splits import label_rate_splits, labeled_count

FINEGYM_CATEGORY = re.compile(r"Clabel:\s*(\d+); set:\s*(\d+); Glabel:\s*(\d+); \((\w\w)\) (.*)")
SEED = 3
EPS = 1e-6  # pose-vector tolerance (metres / cos-sin / radians): the properties hold exactly up to rounding


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    from gym_qa.synthgym.dataset import generate_dataset

    out = tmp_path_factory.mktemp("synthgym") / "tiny"
    generate_dataset(out, preset="tiny", seed=SEED, difficulty=1.0, workers=2, progress=False)
    return out


def _frames_in_id(clip_id: str) -> int:
    """Frames of a clip: its action span ``A_<start>_<end>`` (the whole event ``E`` when untrimmed)."""
    start, end = clip_id.split("_A_")[1].split("_")
    return int(end) - int(start)


def _decode_av(path: Path) -> np.ndarray:
    with av.open(str(path)) as c:
        return np.stack([f.to_ndarray(format="rgb24") for f in c.decode(video=0)])


# ----------------------------------------------------------------------------- the data set on disk


def test_tiny_writes_every_file(tiny: Path) -> None:
    for name in (
        "val.csv",
        "test.csv",
        "elements.txt",
        "categories.txt",
        "set_categories.txt",
        "attributes_qtree.json",
        "meta.json",
        "README.md",
        "contact_sheet.png",
        "pretrain/frames.jsonl",
    ):
        assert (tiny / name).is_file() and (tiny / name).stat().st_size > 0, name
    for pct in (5, 10, 20, 100):
        assert (tiny / "splits" / str(pct) / "train.csv").is_file()
        assert (tiny / "splits" / str(pct) / "unlabel.csv").is_file()
    meta = json.loads((tiny / "meta.json").read_text())
    preset = PRESETS["tiny"]
    assert meta["num_classes"] == len(preset.glabels) and meta["seed"] == SEED and meta["preset"] == "tiny"
    assert set(meta["events"]) == {"VT", "FX", "BB", "UB"}
    assert meta["pairs"]["direction"] and meta["pairs"]["twists"]
    for c in meta["classes"]:
        assert {"direction", "shape", "saltos", "twists", "turns"} <= set(c["attributes"])

    lines = (tiny / "categories.txt").read_text().splitlines()
    assert len(lines) == meta["num_classes"]
    for i, line in enumerate(lines):
        m = FINEGYM_CATEGORY.fullmatch(line)
        assert m, line
        assert int(m.group(1)) == i and int(m.group(3)) == preset.glabels[i]
        assert str(int(m.group(2)))[0] == {"VT": "1", "FX": "2", "BB": "3", "UB": "4"}[m.group(4)]
    for line in (tiny / "set_categories.txt").read_text().splitlines():
        assert re.fullmatch(r"set: \d+; \w+", line), line
    qtree = json.loads((tiny / "attributes_qtree.json").read_text())
    assert set(qtree) == {str(g) for g in preset.glabels}
    for rec in qtree.values():
        assert set(rec) == {"BTcode", "questions", "code"} and len(rec["BTcode"]) == len(rec["questions"])
        assert set(rec["BTcode"]) <= {"0", "1"}
    elements = [line.split() for line in (tiny / "elements.txt").read_text().splitlines()]
    sizes = meta["sizes"]
    assert len(elements) == sizes["train"] + sizes["val"] + sizes["test"]
    for cid, label in elements:
        assert re.fullmatch(r"SG[tve]\d{8}_E_\d{6}_\d{6}_A_\d{4}_\d{4}", cid) and 0 <= int(label) < len(lines)


def test_every_clip_decodes_with_decord_and_pyav(tiny: Path) -> None:
    decord = pytest.importorskip("decord")
    paths = sorted((tiny / "videos").glob("*.mp4")) + sorted((tiny / "pretrain" / "videos").glob("*.mp4"))
    meta = json.loads((tiny / "meta.json").read_text())
    assert len(paths) == sum(meta["sizes"][s] for s in ("train", "val", "test", "pretrain"))
    for p in paths:
        n = _frames_in_id(p.stem)
        assert MIN_FRAMES <= n <= MAX_FRAMES
        vr = decord.VideoReader(str(p))
        assert len(vr) == n and vr[0].shape == (64, 64, 3), p.name
        assert _decode_av(p).shape == (n, 64, 64, 3), p.name


def test_lists_nested_stratified_disjoint(tiny: Path) -> None:
    val, test = read_list(tiny / "val.csv"), read_list(tiny / "test.csv")
    key = lambda entries: {e.path.resolve() for e in entries}
    pool = None
    labeled = {}
    for pct in (5, 10, 20, 100):
        tr = read_list(tiny / "splits" / str(pct) / "train.csv")
        un = read_list(tiny / "splits" / str(pct) / "unlabel.csv")
        assert not key(tr) & key(un)
        if pool is None:
            pool = key(tr) | key(un)
        assert key(tr) | key(un) == pool
        labeled[pct] = tr
        assert all(e.path.is_file() for e in tr + un)
    assert not read_list(tiny / "splits" / "100" / "unlabel.csv")
    assert key(labeled[5]) <= key(labeled[10]) <= key(labeled[20]) <= key(labeled[100])
    assert {e.label for e in labeled[5]} == {e.label for e in labeled[100]}  # every class labeled at 5 %
    assert not pool & key(val) and not pool & key(test) and not key(val) & key(test)
    pretrain = key(read_list(tiny / "pretrain" / "train.csv"))
    assert pretrain and not pretrain & (pool | key(val) | key(test))


def test_added_label_rates_nest_with_the_generated_ones(tiny: Path, tmp_path: Path) -> None:
    data = Path(shutil.copytree(tiny, tmp_path / "tiny", ignore=shutil.ignore_patterns("videos", "pretrain")))
    key = lambda path: [e.raw_path for e in read_list(path)]
    meta_before = (data / "meta.json").read_text()
    splits = {pct: key(data / "splits" / str(pct) / "train.csv") for pct in (5, 10, 20, 100)}
    # the generator's 20 % split, written again from its order, equals the generated one
    shutil.rmtree(data / "splits" / "20")
    assert add_label_rates(data, (20, 2)) == {20: len(splits[20]), 2: 12}
    assert key(data / "splits" / "20" / "train.csv") == splits[20]
    two = key(data / "splits" / "2" / "train.csv")
    assert set(two) <= set(splits[5]) and len(two) == 12  # one clip per class, inside the 5 % set
    assert set(two).isdisjoint(key(data / "splits" / "2" / "unlabel.csv"))
    assert len(two) + len(key(data / "splits" / "2" / "unlabel.csv")) == len(splits[100])
    assert (data / "meta.json").read_text() == meta_before
    edited = data / "splits" / "10" / "train.csv"
    edited.write_text("\n".join(edited.read_text().splitlines()[1:]) + "\n")
    with pytest.raises(ValueError, match="splits/10/train.csv"):
        add_label_rates(data, (1,))


def test_label_rate_rule() -> None:
    assert labeled_count(20, 5) == 1 and labeled_count(19, 5) == 1 and labeled_count(60, 5) == 3
    labels = [c for c in range(7) for _ in range(20 + 5 * c)]
    splits = label_rate_splits(labels, seed=1)
    assert splits == label_rate_splits(labels, seed=1)
    assert set(splits[5]) <= set(splits[10]) <= set(splits[20])
    assert {labels[i] for i in splits[5]} == set(range(7))


def test_deterministic_and_order_independent(tiny: Path, tmp_path: Path) -> None:
    preset = PRESETS["tiny"]
    assert plan_dataset(preset, SEED) == plan_dataset(preset, SEED)
    assert plan_dataset(preset, SEED) != plan_dataset(preset, SEED + 1)
    # Re-generating a clip in this process gives the bytes a pool worker wrote.
    spec = next(s for s in plan_dataset(preset, SEED) if s.split == "val")
    rec = generate_clip(spec, str(tmp_path), 1.0, 64, 64)
    assert (tmp_path / f"{rec['clip_id']}.mp4").read_bytes() == (
        tiny / "videos" / f"{rec['clip_id']}.mp4"
    ).read_bytes()
    nz = sample_nuisance(spec.nuisance_seed, 1.0)
    a = pose_track(BY_GLABEL[spec.glabel], nz).pose_vectors()
    b = pose_track(BY_GLABEL[spec.glabel], sample_nuisance(spec.nuisance_seed, 1.0)).pose_vectors()
    assert a.tobytes() == b.tobytes()


def test_writer_is_reproducible(tmp_path: Path) -> None:
    from gym_qa.synthgym.writer import write_mp4

    frames = np.random.default_rng(0).integers(0, 255, size=(30, 32, 48, 3), dtype=np.uint8)
    frames[:, 8:20, 10:30] = 200  # some structure for motion search / rate control
    blobs = set()
    for i in range(6):
        write_mp4(tmp_path / f"c{i}.mp4", frames, fps=25, crf=23)
        blobs.add((tmp_path / f"c{i}.mp4").read_bytes())
    assert len(blobs) == 1
    assert _decode_av(tmp_path / "c0.mp4").shape == (30, 32, 48, 3)
    assert not list(tmp_path.glob("*.tmp.mp4"))


def test_pretrain_annotations(tiny: Path) -> None:
    records = [json.loads(line) for line in (tiny / "pretrain" / "frames.jsonl").read_text().splitlines()]
    assert len(records) == PRESETS["tiny"].pretrain_clips
    for r in records:
        f, n = r["frames"], r["num_frames"]
        assert all(
            len(f[k]) == n
            for k in ("rot", "twist", "shape", "shape_id", "box", "apparatus_px", "parts", "chest")
        )
        boxes = np.array(f["box"])
        # the drawn body parts (capsules, pixels) span the athlete box, to the box's whole-pixel rounding
        parts = np.array(f["parts"])  # [T, P, 5]
        lo = np.minimum(parts[..., 0:2], parts[..., 2:4]) - parts[..., 4:5]
        hi = np.maximum(parts[..., 0:2], parts[..., 2:4]) + parts[..., 4:5]
        span = np.concatenate([lo.min(1), hi.max(1)], 1)
        assert np.abs(span - boxes).max() <= 1.0, r["clip_id"]
        chest = np.array(f["chest"])
        np.testing.assert_allclose(np.linalg.norm(chest, axis=1), 1.0, atol=0.01)
        assert (boxes[:, 0] >= 0).all() and (boxes[:, 1] >= 0).all()
        assert (boxes[:, 2] <= r["width"]).all() and (boxes[:, 3] <= r["height"]).all()
        assert (boxes[:, 2] > boxes[:, 0]).all() and (boxes[:, 3] > boxes[:, 1]).all()
        assert min(f["apparatus_px"]) > 0
        assert all(-180 <= v < 180 for v in f["rot"]) and all(0 <= v < 360 for v in f["twist"])
        frames = _decode_av(tiny / "pretrain" / r["video"])
        dist = np.abs(frames.astype(int) - np.array(r["apparatus_rgb"])).max(-1)
        assert ((dist <= 40).sum(axis=(1, 2)) > 0).all(), f"apparatus colour missing in {r['clip_id']}"


@pytest.mark.parametrize("event", ["FX", "VT", "BB", "UB"])
def test_athlete_camera_keeps_the_athlete_inside_and_larger(event: str) -> None:
    """The close-up keeps the whole athlete in every frame and draws it clearly larger than the scene
    camera does (the bench preset relies on it: at 64 px the scene camera's athlete is 4-6 px wide), also
    in the bench preset's legible style and trimming."""
    elements = [e for e in CATALOGUE if e.event == event][:4]
    bench = PRESETS["bench"]
    ratios = []
    for i, e in enumerate(elements):
        nz = sample_nuisance(10 + i, 1.0)
        track = pose_track(e, nz)
        near, far = render(track, nz, 64, 64, "athlete"), render(track, nz, 64, 64, "scene")
        legible = sample_nuisance(10 + i, 1.0, bench.style)
        trimmed = render(pose_track(e, legible, bench.min_element_share), legible, 64, 64, bench.camera)
        for b in (near.boxes, trimmed.boxes):
            assert (
                (b[:, 0] >= 0).all()
                and (b[:, 1] >= 0).all()
                and (b[:, 2] <= 64).all()
                and (b[:, 3] <= 64).all()
            )
            assert (b[:, 2] > b[:, 0]).all() and (b[:, 3] > b[:, 1]).all(), "the athlete left the frame"
        ratios.append(float(np.median(near.scale) / np.median(far.scale)))
    assert min(ratios) >= 1.0 and np.mean(ratios) >= 1.4, ratios


def test_unknown_camera_is_an_error() -> None:
    nz = sample_nuisance(0, 1.0)
    with pytest.raises(ValueError, match="unknown camera 'drone'"):
        render(pose_track(CATALOGUE[0], nz), nz, 64, 64, "drone")


# ----------------------------------------------------------------------------- fine-grained by construction

NUISANCE_SEEDS = (0, 1, 2)


@pytest.mark.parametrize("fwd,bwd", direction_pairs(CATALOGUE))
def test_direction_pair_is_time_reversal(fwd: int, bwd: int) -> None:
    for s in NUISANCE_SEEDS:
        nz = sample_nuisance(s, 1.0)
        tf, tb = pose_track(BY_GLABEL[fwd], nz), pose_track(BY_GLABEL[bwd], nz)
        assert tf.num_frames == tb.num_frames and tf.windows == tb.windows
        a, b = tf.windows["flight"]
        pf, pb = tf.pose_vectors(), tb.pose_vectors()
        outside = np.r_[0:a, b : tf.num_frames]
        np.testing.assert_allclose(pf[outside], pb[outside], atol=EPS)
        np.testing.assert_allclose(pf[a:b], pb[a:b][::-1], atol=EPS)
        assert np.abs(pf[a:b] - pb[a:b]).max() > 0.5  # but not the same clip
        # An order-blind pool of the flight poses cannot tell them apart either.
        np.testing.assert_allclose(np.sort(pf[a:b], 0), np.sort(pb[a:b], 0), atol=EPS)


@pytest.mark.parametrize("few,many", twist_pairs(CATALOGUE))
def test_twist_pair_equal_outside_window(few: int, many: int) -> None:
    for s in NUISANCE_SEEDS:
        nz = sample_nuisance(s, 1.0)
        t1, t2 = pose_track(BY_GLABEL[few], nz), pose_track(BY_GLABEL[many], nz)
        assert t1.num_frames == t2.num_frames and t1.windows == t2.windows
        a, b = t1.core_window()
        p1, p2 = t1.pose_vectors(), t2.pose_vectors()
        outside = np.r_[0:a, b : t1.num_frames]
        np.testing.assert_allclose(p1[outside], p2[outside], atol=EPS)
        twist = [POSE_FIELDS.index("cos_twist"), POSE_FIELDS.index("sin_twist")]
        assert np.abs(p1[a:b][:, twist] - p2[a:b][:, twist]).max() > 0.5


@pytest.mark.parametrize("without,with_half", short_window_pairs(CATALOGUE))
def test_short_window_pair_equal_before_window(without: int, with_half: int) -> None:
    nz = sample_nuisance(0, 1.0)
    t1, t2 = pose_track(BY_GLABEL[without], nz), pose_track(BY_GLABEL[with_half], nz)
    assert t1.num_frames == t2.num_frames
    a, _ = t1.core_window()
    window = {k: v for k, v in t1.windows.items()}
    start = window.get("turn", window["flight"])[0] if BY_GLABEL[with_half].turns else a
    np.testing.assert_allclose(t1.pose_vectors()[:start], t2.pose_vectors()[:start], atol=EPS)
    assert not np.allclose(t1.pose_vectors(), t2.pose_vectors(), atol=0.1)


def test_facing_is_visible_and_flip_is_a_mirror() -> None:
    nz = sample_nuisance(0, 0.0)
    track = pose_track(CATALOGUE[0], nz)
    caps = capsules(track.fk, np.column_stack([track.x, track.y]), track.twist, nz.body)
    torso, chest, face, hair = 0, 1, 4, 3  # athlete.PARTS order
    # Standing in profile at the first frame: chest panel and face marker on the +x (facing) side.
    assert caps.p0[0, chest, 0] > caps.p0[0, torso, 0] and caps.p0[0, face, 0] > caps.p0[0, hair, 0]
    # The facing sign only mirrors the scene: the pose track does not depend on it.
    other = dataclasses.replace(nz, facing=-nz.facing)
    np.testing.assert_array_equal(pose_track(CATALOGUE[0], other).pose_vectors(), track.pose_vectors())
    # The annotations in image axes follow the mirror: chest normal x and the parts' x flip.
    right, left = (render(track, dataclasses.replace(nz, facing=f), 64, 64, "athlete") for f in (1, -1))
    assert right.chest[0, 0] > 0.9 and left.chest[0, 0] < -0.9
    assert right.parts_px[0, face, 0] > right.parts_px[0, hair, 0]
    assert left.parts_px[0, face, 0] < left.parts_px[0, hair, 0]


def test_catalogue_covers_bench_requirements() -> None:
    bench = [BY_GLABEL[g] for g in PRESETS["bench"].glabels]
    assert len(bench) >= 40 and {e.event for e in bench} == {"VT", "FX", "BB", "UB"}
    names = [(e.event, e.name) for e in CATALOGUE]
    assert len(set(names)) == len(names)
    for e in CATALOGUE:
        assert len(qtree_entry(e)["BTcode"]) == len(qtree_entry(e)["questions"])
    p = PRESETS["bench"]
    plan = plan_dataset(p, 0)
    count = {s: sum(1 for c in plan if c.split == s) for s in ("train", "val", "test", "pretrain")}
    assert count["train"] >= 3000 and count["val"] >= 500 and count["test"] >= 1000 and count["pretrain"] > 0


def test_script_help() -> None:
    import subprocess
    import sys

    script = SCRIPTS / "make_synthgym.py"
    out = subprocess.run(
        [sys.executable, str(script), "--help"], capture_output=True, text=True, check=True
    ).stdout
    assert "--preset" in out and "--difficulty" in out and "--style" in out and "bench" in out


def test_script_help_shows_percent_signs(capsys) -> None:
    with pytest.raises(SystemExit):
        load_script("make_synthgym").parse_args(["--help"])
    out = capsys.readouterr().out
    assert "5/10/20/100 % label-rate" in " ".join(out.split()) and "%%" not in out
