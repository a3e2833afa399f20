"""The detector's trainer (scripts/train_detector.py) on tiny planted features: it learns, picks its epoch on
validation, exports a detector, resumes to the same weights; features and detect.py on SynthGym routines."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import load_script
from safetensors.torch import load_file

from gym_qa.routine_annotations import Routine, RoutineSegment, write_routines_json
from sefar_encoder.detection.detector_export import load_detector
from sefar_encoder.detection.features import (
    RoutineFeatures,
    read_feature_folder,
    window_starts,
    write_features_meta,
    write_routine_features,
)

CLASSES = {0: ("a", 21, "FX"), 1: ("b", 21, "FX"), 2: ("c", 22, "FX"), 3: ("d", 22, "FX")}
DIM, WINDOWS = 8, 30


def planted_routines(root: Path, seed: int = 0) -> tuple[Path, Path]:
    """Routines of 30 one-second windows with 2 elements each; a window inside an element of class c has
    feature direction c (plus noise), the others noise only."""
    rng = np.random.default_rng(seed)
    routines, folder = [], root / "features"
    folder.mkdir(parents=True)
    write_features_meta(folder, {"encoder": "planted", "window": 1, "stride": 1, "feature_dim": DIM})
    for i, subset in enumerate(["training"] * 16 + ["validation"] * 4 + ["testing"] * 4):
        labels = rng.choice(4, size=2, replace=False)
        feats = rng.normal(0, 0.3, size=(WINDOWS, DIM)).astype(np.float32)
        segments = []
        for k, label in enumerate(labels):
            start = 3 + 13 * k + int(rng.integers(0, 4))
            feats[start : start + 6, label] += 2.0
            segments.append(
                RoutineSegment(float(start), float(start + 6), int(label), CLASSES[label][1], "FX")
            )
        rid = f"r{i:03d}"
        routines.append(Routine(rid, subset, float(WINDOWS), "FX", segments))
        write_routine_features(folder, rid, RoutineFeatures(feats, np.arange(WINDOWS), WINDOWS, 1.0))
    path = root / "routines.json"
    write_routines_json(path, routines, CLASSES, "planted")
    return path, folder


def args(routines: Path, features: Path, out: Path, *extra: str) -> list[str]:
    return [
        f"routines={routines}",
        f"features={features}",
        f"out_dir={out}",
        "epochs=6",
        "batch_size=4",
        "lr=0.003",
        "model.hidden_dim=32",
        "model.embed_dim=16",
        "model.num_clusters=6",
        "recluster_every=2",
        "progress=false",
        *extra,
    ]


@pytest.fixture(scope="module")
def planted(tmp_path_factory) -> tuple[Path, Path]:
    return planted_routines(tmp_path_factory.mktemp("planted"))


def test_window_starts_cover_the_routine():
    assert window_starts(40, 16, 8).tolist() == [0, 8, 16, 24]
    assert window_starts(43, 16, 8).tolist() == [0, 8, 16, 24, 27]  # the last window ends at the end
    assert window_starts(10, 16, 8).tolist() == [0]


@pytest.mark.parametrize("switches", [(), ("model.clustering=false", "model.hierarchy=false")])
def test_training_learns_picks_on_val_and_exports(planted, tmp_path: Path, switches: tuple[str, ...]):
    routines, features = planted
    script = load_script("train_detector")
    out = tmp_path / "run"
    assert script.main(args(routines, features, out, *switches)) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    history = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    val_maps = [r["val_map"] for r in history]
    assert len(history) == 6 and metrics["best_epoch"] == 1 + int(np.argmax(val_maps))
    assert metrics["val"]["average_map"] == pytest.approx(max(val_maps))  # the exported epoch is the best
    assert metrics["val"]["average_map"] > 0.3 and metrics["test"]["average_map"] > 0.3  # planted signal
    assert metrics["test_routines"] == 4 and metrics["val_routines"] == 4
    model, rule, meta = load_detector(out / "detector")
    assert meta["set_ids"] == [21, 22] and meta["coarse_of_class"] == [0, 0, 1, 1]
    assert (model.atomic is None) == bool(switches) and rule.alpha == 0.1


def test_interrupted_run_resumes_to_the_same_weights(planted, tmp_path: Path, monkeypatch):
    routines, features = planted
    script = load_script("train_detector")
    whole = tmp_path / "whole"
    assert script.main(args(routines, features, whole)) == 0

    real = script.train_one_epoch

    def stop_after_three(ctx, state):
        losses = real(ctx, state)
        if state.epoch == 2:  # epoch 3 is running: SIGTERM arrives
            ctx.lifecycle.stop_requested = True
        return losses

    monkeypatch.setattr(script, "train_one_epoch", stop_after_three)
    cut = tmp_path / "cut"
    assert script.main(args(routines, features, cut)) == 143
    assert not (cut / "metrics.json").exists()
    monkeypatch.setattr(script, "train_one_epoch", real)
    assert script.main([*args(routines, features, cut), "--resume"]) == 0
    a = load_file(str(whole / "detector" / "model.safetensors"))
    b = load_file(str(cut / "detector" / "model.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert (whole / "metrics.jsonl").read_text() == (cut / "metrics.jsonl").read_text()


def test_bad_input_exits_1(planted, tmp_path: Path, capsys):
    routines, features = planted
    script = load_script("train_detector")
    assert script.main(args(routines, tmp_path / "nowhere", tmp_path / "a")) == 1
    assert "not a feature folder" in capsys.readouterr().err
    assert script.main(args(routines, features, tmp_path / "b", "model.num_clusters=1000")) == 1
    assert "model.num_clusters=1000" in capsys.readouterr().err


def test_features_and_detect_on_synthgym_routines(tmp_path: Path, capsys):
    from gym_qa.synthgym.routines import generate_routines
    from sefar_encoder.model.encoder import ModelConfig, SeFAREncoder

    data = tmp_path / "routines"
    generate_routines(data, "tiny", seed=0, workers=1, width=32, height=32, progress=False)
    torch.manual_seed(0)
    encoder = tmp_path / "encoder"
    config = ModelConfig(img_size=64, patch_size=16, embed_dim=32, depth=1, num_heads=2, num_classes=12)
    SeFAREncoder(config).save_pretrained(encoder)
    extract = load_script("extract_routine_features")
    feats = tmp_path / "features"
    call = [
        "--routines",
        str(data / "routines.json"),
        "--encoder",
        str(encoder),
        "--out",
        str(feats),
        "--quiet",
    ]
    assert extract.main(call) == 0
    capsys.readouterr()
    assert extract.main(call) == 0  # a second run finds every routine done
    assert "0 routines encoded (5 already there)" in capsys.readouterr().out
    got, meta = read_feature_folder(feats, ["SRt00000000"])
    routine = got["SRt00000000"]
    assert routine.features.shape == (len(window_starts(routine.num_frames, 16, 8)), 32)
    assert routine.fps == 25.0 and meta["window"] == 16
    assert extract.main([*call, "--window", "8"]) == 1  # another layout into the same folder
    assert "made with other window" in capsys.readouterr().err

    train = load_script("train_detector")
    run = tmp_path / "run"
    assert train.main(args(data / "routines.json", feats, run, "epochs=2", "model.num_clusters=4")) == 0
    detect = load_script("detect")
    out = tmp_path / "segments.csv"
    assert detect.main([str(data / "videos"), "--detector", str(run / "detector"), "--out", str(out)]) == 0
    rows = out.read_text().splitlines()
    assert rows[0] == "routine,start,end,label_id,label,score"
    for row in rows[1:]:
        routine_id, start, end, label_id, *_ = row.split(",")
        assert routine_id.startswith("SR") and 0.0 <= float(start) < float(end) and 0 <= int(label_id) < 12


def test_framepool_baseline_features_train_and_detect(tmp_path: Path, capsys):
    """The order-blind baseline's features (the frame backbone averaged over a window) through the same
    trainer and detect.py, which rebuilds the baseline from the feature folder's record."""
    import dataclasses

    from safetensors.torch import save_file

    from gym_qa.synthgym.routines import generate_routines
    from sefar_encoder.model.encoder import ModelConfig
    from sefar_encoder.model.image_vit import build_image_vit

    data = tmp_path / "routines"
    generate_routines(data, "tiny", seed=0, workers=1, width=32, height=32, progress=False)
    torch.manual_seed(0)
    config = ModelConfig(img_size=64, patch_size=16, embed_dim=32, depth=1, num_heads=2)
    backbone = tmp_path / "backbone"  # the SynthGym frame-pretrained backbone layout
    backbone.mkdir()
    save_file({k: v.contiguous() for k, v in build_image_vit(config).state_dict().items()},
              str(backbone / "model.safetensors"))  # fmt: skip
    (backbone / "config.json").write_text(json.dumps({"architecture": dataclasses.asdict(config)}))
    feats = tmp_path / "features"
    extract = load_script("extract_routine_features")
    call = [
        "--routines",
        str(data / "routines.json"),
        "--framepool",
        str(backbone),
        "--out",
        str(feats),
        "--quiet",
    ]
    assert extract.main(call) == 0
    got, meta = read_feature_folder(feats, ["SRt00000000"])
    assert meta["encoder"] == "framepool" and meta["feature_dim"] == 32 and meta["framepool_frames"] == 8
    assert got["SRt00000000"].features.shape[1] == 32
    assert extract.main([*call[:-1], "--frames", "4", "--quiet"]) == 1  # another baseline layout: refused
    assert "made with other framepool_frames" in capsys.readouterr().err
    run = tmp_path / "run"
    train = load_script("train_detector")
    assert train.main(args(data / "routines.json", feats, run, "epochs=2", "model.num_clusters=4")) == 0
    out = tmp_path / "segments.json"
    detect = load_script("detect")
    assert detect.main([str(data / "videos"), "--detector", str(run / "detector"), "--out", str(out)]) == 0
    assert json.loads(out.read_text())["results"]  # segments of the generated routines
