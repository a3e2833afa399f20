"""Prediction library and ``scripts/predict.py``: a folder with good clips and an unreadable one, a labeled
list classified correctly, CSV output, exit codes, the same tensors as the data path's eval dataset; the
uncertainty and out-of-domain flag of every record, ``--calibrate``."""

from __future__ import annotations

import csv
import dataclasses
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import SCRIPTS, load_script
from video_fixtures import write_clip

from gym_qa.lists import ListEntry
from sefar_encoder.clip_inputs import ClipInput, InputError, read_inputs
from sefar_encoder.dataset import VideoClipDataset
from sefar_encoder.decoding import DecodeError
from sefar_encoder.model.presets import build_encoder
from sefar_encoder.out_of_domain import (
    CALIBRATION_FILE,
    FEATURE_FILE,
    SCORES,
    FeatureGaussian,
    OutOfDomainCalibration,
)
from sefar_encoder.prediction import ClipPrediction, PredictionFailure, Predictor
from sefar_encoder.transforms import AugmentConfig

pytest_plugins = ["demo_fixtures"]  # fitted_encoder, synthgym_clips
predict_cli = load_script("predict")


@pytest.fixture(scope="module")
def tiny_encoder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random 6-class encoder without hierarchy (labels and names only)."""
    torch.manual_seed(0)
    encoder = build_encoder("timesformer_tiny_p16_64", num_classes=6, views=(2, 2, 4))
    return encoder.save_pretrained(tmp_path_factory.mktemp("tiny_encoder") / "encoder")


@pytest.fixture(scope="module")
def clip_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Three good clips (5 frames: shorter than S = 8; 24 and 40 frames, one not square) + a text file
    named .mp4 + a 0-byte .mp4 + a file that is not a video by its extension (ignored)."""
    folder = tmp_path_factory.mktemp("clips")
    write_clip(folder / "a_short.mp4", num_frames=5)
    write_clip(folder / "b_medium.mp4", num_frames=24, height=48, width=64)
    write_clip(folder / "c_long.mp4", num_frames=40)
    (folder / "d_text.mp4").write_text("this is not a video\n" * 10)
    (folder / "e_empty.mp4").write_bytes(b"")
    (folder / "notes.txt").write_text("not a clip")
    return folder


GOOD = {"a_short.mp4", "b_medium.mp4", "c_long.mp4"}
BAD = {"d_text.mp4", "e_empty.mp4"}


def _records(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_folder_with_bad_files_exit_code_2_and_csv(tiny_encoder, clip_folder, tmp_path, capsys):
    out = tmp_path / "out" / "predictions.jsonl"
    code = predict_cli.main(
        ["--encoder", str(tiny_encoder), "--inputs", str(clip_folder), "--out", str(out), "--csv", "--quiet"]
    )
    assert code == 2
    records = _records(out)
    assert [Path(r["path"]).name for r in records] == sorted(GOOD | BAD)  # input order, .txt ignored
    by_name = {Path(r["path"]).name: r for r in records}
    for name in GOOD:
        r = by_name[name]
        assert r["ok"] is True and len(r["top_k"]) == 5
        probs = [s["probability"] for s in r["top_k"]]
        assert probs == sorted(probs, reverse=True) and 0 < sum(probs) <= 1.0 + 1e-6
        assert [len(v) for v in r["frame_indices"]] == [2, 2, 4]
    assert by_name["a_short.mp4"]["num_frames"] == 5  # shorter than S: sampled with repetition
    assert by_name["d_text.mp4"] == {
        "path": str(clip_folder / "d_text.mp4"),
        "ok": False,
        "error": by_name["d_text.mp4"]["error"],
    }
    assert "cannot decode video" in by_name["d_text.mp4"]["error"]
    assert "0 bytes" in by_name["e_empty.mp4"]["error"]
    stderr = capsys.readouterr().err
    for name in BAD:
        assert f"bad input {clip_folder / name}" in stderr
    assert "3 of 5 clips predicted, 2 could not be read" in stderr

    rows = list(csv.DictReader(out.with_suffix(".csv").open()))
    assert [Path(r["path"]).name for r in rows] == sorted(GOOD | BAD)
    assert {Path(r["path"]).name for r in rows if r["ok"] == "True"} == GOOD
    good = next(r for r in rows if r["ok"] == "True")
    assert (
        len(good["top_k_labels"].split("|")) == 5 and good["top1_name"] == good["top_k_names"].split("|")[0]
    )
    bad = next(r for r in rows if Path(r["path"]).name == "d_text.mp4")
    assert bad["error"].startswith("cannot decode video") and bad["top1_label"] == ""


def test_labeled_list_all_correct_exit_code_0(fitted_encoder, synthgym_clips, tmp_path, capsys):
    out = tmp_path / "p.jsonl"
    args = ["--encoder", str(fitted_encoder), "--inputs", str(synthgym_clips["list"]), "--out", str(out)]
    assert predict_cli.main([*args, "--top-k", "3", "--quiet", "--batch-size", "5"]) == 0
    records = _records(out)
    hierarchy = synthgym_clips["hierarchy"]
    assert [(Path(r["path"]), r["label"]) for r in records] == synthgym_clips["clips"]
    for r in records:
        top = r["top_k"][0]
        assert r["correct"] is True and r["in_top_k"] is True and len(r["top_k"]) == 3
        assert top["label"] == r["label"] and top["name"] == hierarchy.name_of(r["label"])
        assert top["event"] == hierarchy.event_of(r["label"]) and top["set"] == hierarchy.set_of(r["label"])
        assert top["set_name"] == hierarchy.set_display_name(top["set"])
    assert "top-1 100.0%, top-3 100.0%" in capsys.readouterr().err


def test_csv_set_and_event_columns_match_the_json_records(fitted_encoder, synthgym_clips, tmp_path):
    out = tmp_path / "p.jsonl"
    args = ["--encoder", str(fitted_encoder), "--inputs", str(synthgym_clips["list"]), "--out", str(out)]
    assert predict_cli.main([*args, "--csv", "--quiet"]) == 0
    rows = list(csv.DictReader(out.with_suffix(".csv").open()))
    keys = ("set", "set_name", "event", "event_name")
    for record, row in zip(_records(out), rows, strict=True):
        top = record["top_k"][0]
        assert [row[k] for k in keys] == [str(top[k]) for k in keys]  # set id and name, event code and name
        assert row["set"].isdigit() and row["set_name"] and row["event"] in ("VT", "FX", "BB", "UB")


def test_records_carry_uncertainty_and_an_uncalibrated_flag(tiny_encoder, clip_folder, tmp_path, capsys):
    out = tmp_path / "p.jsonl"
    args = ["--encoder", str(tiny_encoder), "--inputs", str(clip_folder / "c_long.mp4"), "--out", str(out)]
    assert predict_cli.main([*args, "--csv", "--quiet"]) == 0
    (record,) = _records(out)
    assert record["out_of_domain"] is None
    u = record["uncertainty"]
    assert set(u["scores"]) == set(SCORES) - {"feature_distance"}  # no feature Gaussian beside this export
    assert u["score"] == "max_softmax" and u["threshold"] is None  # the default without a Gaussian
    assert u["value"] == u["scores"]["max_softmax"] and "no out_of_domain.json" in u["note"]
    assert 1 - u["scores"]["max_softmax"] == pytest.approx(record["top_k"][0]["probability"], abs=1e-5)
    (row,) = csv.DictReader(out.with_suffix(".csv").open())
    assert row["out_of_domain"] == "" and row["ood_threshold"] == "" and row["ood_score"] == "max_softmax"
    assert float(row["ood_value"]) == pytest.approx(u["value"], abs=1e-5)
    assert "out-of-domain flag uncalibrated" in capsys.readouterr().err


def test_calibrate_then_flag(fitted_encoder, synthgym_clips, tmp_path, capsys):
    encoder = shutil.copytree(fitted_encoder, tmp_path / "encoder")  # the session's export stays uncalibrated
    clips = str(synthgym_clips["list"])
    args = ["--encoder", str(encoder), "--inputs", clips, "--quiet"]
    assert predict_cli.main([*args, "--calibrate", "--keep", "0.75", "--ood-score", "max_softmax"]) == 0
    calibration = OutOfDomainCalibration.load(encoder)
    assert calibration.num_clips == 12 and calibration.keep == 0.75 and calibration.score == "max_softmax"
    assert set(calibration.thresholds) == set(SCORES) - {"feature_distance"} and calibration.inputs == clips
    assert "calibrated on 12 clips, keeping 75% in domain" in capsys.readouterr().err

    out = tmp_path / "p.jsonl"
    assert predict_cli.main([*args, "--out", str(out), "--csv", "--ood-score", "dropout_std"]) == 0
    records = _records(out)
    # the fitted logits are alike for every clip (energy, max-softmax nearly tie); the dropout spread is not
    values = sorted(r["uncertainty"]["scores"]["dropout_std"] for r in records)
    assert len(set(values)) == 12
    # ceil(0.75 * 12) = 9th smallest is the threshold: the 3 clips above it are flagged
    assert sum(r["out_of_domain"] for r in records) == 3
    assert records[0]["uncertainty"]["threshold"] == pytest.approx(values[8], abs=1e-6)
    rows = list(csv.DictReader(out.with_suffix(".csv").open()))
    assert [row["out_of_domain"] for row in rows] == [str(r["out_of_domain"]) for r in records]
    assert "3 flagged out of domain" in capsys.readouterr().err

    # other test views than the calibration's: the thresholds do not apply, the flag says so
    assert predict_cli.main([*args, "--out", str(out), "--test-offsets", "2"]) == 0
    records = _records(out)
    assert all(r["out_of_domain"] is None for r in records)
    assert "calibrated with test_offsets=1" in records[0]["uncertainty"]["note"]
    (encoder / CALIBRATION_FILE).write_text("{")
    assert predict_cli.main([*args, "--out", str(out)]) == 1  # a broken calibration file is a model error
    assert CALIBRATION_FILE in capsys.readouterr().err


def test_calibrate_with_a_reference_fits_the_feature_gaussian(
    fitted_encoder, synthgym_clips, tmp_path, capsys
):
    encoder = shutil.copytree(fitted_encoder, tmp_path / "encoder")
    clips = str(synthgym_clips["list"])
    args = ["--encoder", str(encoder), "--inputs", clips, "--quiet"]
    assert predict_cli.main([*args, "--calibrate", "--reference", clips, "--keep", "0.75"]) == 0
    assert "feature Gaussian fitted on 12 reference views" in capsys.readouterr().err
    calibration = OutOfDomainCalibration.load(encoder)
    assert calibration.score == "feature_distance" and calibration.reference == clips  # the default with one
    assert set(calibration.thresholds) == set(SCORES) and FeatureGaussian.load(encoder).num_clips == 12
    out = tmp_path / "p.jsonl"
    assert predict_cli.main([*args, "--out", str(out)]) == 0
    records = _records(out)
    assert all(r["uncertainty"]["score"] == "feature_distance" for r in records)
    assert sum(r["out_of_domain"] for r in records) == 3  # 9 of 12 kept (distinct distances)
    (encoder / FEATURE_FILE).unlink()  # the calibration names a score whose Gaussian is gone
    assert predict_cli.main([*args, "--out", str(out)]) == 0
    assert all(r["out_of_domain"] is None for r in _records(out))
    assert "whose Gaussian" in _records(out)[0]["uncertainty"]["note"]
    with pytest.raises(SystemExit):
        predict_cli.main([*args, "--out", str(out), "--reference", clips])  # only with --calibrate
    fresh = shutil.copytree(fitted_encoder, tmp_path / "fresh")  # the score named on a fresh export
    named = ["--encoder", str(fresh), "--inputs", clips, "--quiet", "--calibrate", "--reference", clips]
    assert predict_cli.main([*named, "--ood-score", "feature_distance"]) == 0
    assert OutOfDomainCalibration.load(fresh).score == "feature_distance"


def test_usage_and_model_errors_exit_code_1(tiny_encoder, clip_folder, tmp_path):
    out = str(tmp_path / "p.jsonl")
    assert (
        predict_cli.main(["--encoder", str(tmp_path / "nope"), "--inputs", str(clip_folder), "--out", out])
        == 1
    )
    assert (
        predict_cli.main(["--encoder", str(tiny_encoder), "--inputs", str(tmp_path / "nope"), "--out", out])
        == 1
    )
    empty = tmp_path / "empty_folder"
    empty.mkdir()
    assert predict_cli.main(["--encoder", str(tiny_encoder), "--inputs", str(empty), "--out", out]) == 1
    bad_list = tmp_path / "bad.csv"
    bad_list.write_text("a.mp4 1 extra\n")
    assert predict_cli.main(["--encoder", str(tiny_encoder), "--inputs", str(bad_list), "--out", out]) == 1
    with pytest.raises(
        SystemExit
    ) as exc:  # argparse errors: 1, not argparse's 2 (which means bad clips here)
        predict_cli.main(["--encoder", str(tiny_encoder)])
    assert exc.value.code == 1
    assert not Path(out).exists()


def test_read_inputs_list_formats(tmp_path):
    (tmp_path / "sub").mkdir()
    listing = tmp_path / "list.txt"
    listing.write_text("# clips\r\nsub/a.mp4 3\r\n\r\n/abs/b.mkv\r\n")
    assert read_inputs(listing) == [ClipInput(tmp_path / "sub" / "a.mp4", 3), ClipInput(Path("/abs/b.mkv"))]
    listing.write_text("a.mp4 x y\n")
    with pytest.raises(InputError, match="list.txt:1"):
        read_inputs(listing)
    listing.write_text("# nothing\n")
    with pytest.raises(InputError, match="names no clips"):
        read_inputs(listing)


def test_predictor_matches_the_eval_dataset_and_keeps_frames(tiny_encoder, clip_folder):
    predictor = Predictor(tiny_encoder)
    path = clip_folder / "b_medium.mp4"
    dataset = VideoClipDataset(
        [ListEntry(path, 0, 1, str(path))],
        None,
        "eval",
        views=(2, 2, 4),
        image_size=64,
        augment=AugmentConfig(),
    )
    sample = dataset[0]
    assert torch.equal(predictor.load(path).video, sample["video"])  # one preprocessing path
    prediction = predictor.predict(path)
    assert prediction.frame_indices == [v.tolist() for v in sample["frame_indices"][0].split([2, 2, 4])]
    assert [f.shape for f in prediction.frames] == [(2, 48, 64, 3), (2, 48, 64, 3), (4, 48, 64, 3)]
    with torch.no_grad():
        logits = predictor.model(sample["video"]).logits.softmax(-1)[0]
    assert prediction.top1.label == int(logits.argmax())
    assert prediction.top1.probability == pytest.approx(float(logits.max()), rel=1e-5)
    assert prediction.top1.set_name is None and prediction.top1.name == str(prediction.top1.label)
    with pytest.raises(DecodeError, match="0 bytes"):
        predictor.predict(clip_folder / "e_empty.mp4")
    batch = list(predictor.predict_many([path, clip_folder / "d_text.mp4"], batch_size=2))
    assert isinstance(batch[0], ClipPrediction) and isinstance(batch[1], PredictionFailure)
    assert [s.label for s in batch[0].top_k] == [s.label for s in prediction.top_k]


def test_predictor_normalises_as_the_export_records(tmp_path, clip_folder):
    torch.manual_seed(0)
    encoder = build_encoder("timesformer_tiny_p16_64", num_classes=6, views=(2, 2, 4))
    encoder.preprocessing = dataclasses.replace(encoder.preprocessing, mean=(0.5, 0.5, 0.5), std=(0.25,) * 3)
    predictor = Predictor(encoder.save_pretrained(tmp_path / "encoder"))
    path = clip_folder / "c_long.mp4"
    augment = AugmentConfig(mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))
    dataset = VideoClipDataset(
        [ListEntry(path, 0, 1, str(path))], None, "eval", image_size=64, augment=augment
    )
    assert torch.equal(predictor.load(path).video, dataset[0]["video"])


@pytest.mark.slow
def test_script_runs_as_a_program(tiny_encoder, clip_folder, tmp_path):
    """The real process: exit status 2 with a bad clip in the folder (about 6 s: imports torch)."""
    out = tmp_path / "p.jsonl"
    args = ["--encoder", str(tiny_encoder), "--inputs", str(clip_folder), "--out", str(out), "--quiet"]
    result = subprocess.run(
        [sys.executable, str(SCRIPTS / "predict.py"), *args], check=False, capture_output=True
    )
    assert result.returncode == 2, result.stderr.decode()
    assert sum(r["ok"] for r in _records(out)) == len(GOOD)
