"""scripts/eval_encoder.py: an exported encoder on a list file — its numbers against an independent
computation from the prediction library (a separate preprocessing path), multi-view testing, set/event
level and forward/backward pairs, the confusion PNG, and exit codes."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import load_script
from video_fixtures import make_dataset_dir

from gym_qa.hierarchy import Hierarchy
from gym_qa.hierarchy_files import Element
from gym_qa.lists import read_list
from sefar_encoder.dataset import VideoClipDataset
from sefar_encoder.evaluation import evaluate
from sefar_encoder.model.encoder import SeFAREncoder
from sefar_encoder.model.presets import model_config
from sefar_encoder.prediction import Predictor
from sefar_encoder.transforms import AugmentConfig

cli = load_script("eval_encoder")
# 4 classes: two sets on two events; classes 0/1 are a "direction" pair
HIERARCHY = Hierarchy.from_elements(
    [
        Element(0, 0, 1, "FX", "salto forward tucked"),
        Element(1, 1, 1, "FX", "salto backward tucked"),
        Element(2, 2, 2, "BB", "leap"),
        Element(3, 3, 2, "BB", "jump"),
    ],
    {1: "FX saltos", 2: "BB leaps and jumps"},
)
PAIRS = {"direction": [[0, 1]]}


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = make_dataset_dir(tmp_path_factory.mktemp("data"), num_clips=24, num_classes=4, size=64)
    (root / "meta.json").write_text(json.dumps({"pairs": PAIRS}))
    return root


@pytest.fixture(scope="module")
def encoder_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(3)
    config = model_config("timesformer_tiny_p16_64", num_classes=4, views=(2, 2, 4))
    encoder = SeFAREncoder(config, class_names=HIERARCHY.names, hierarchy=HIERARCHY.to_json())
    return encoder.save_pretrained(tmp_path_factory.mktemp("encoder") / "encoder")


def expected(encoder_dir: Path, listing: Path, offsets: int, crops: int) -> dict:
    """Top-1 / mean class / set / pair accuracy computed here from the prediction library's probabilities."""
    entries = read_list(listing)
    predictor = Predictor(encoder_dir, top_k=4, test_offsets=offsets, test_crops=crops)
    full = np.zeros((len(entries), 4))  # every class's probability: top-4 of 4 classes
    for row, result in enumerate(predictor.predict_many([e.path for e in entries], batch_size=5)):
        for score in result.top_k:
            full[row, score.label] = score.probability
    labels = np.array([e.label for e in entries])
    pred = full.argmax(1)
    set_probs = np.stack([full[:, :2].sum(1), full[:, 2:].sum(1)], axis=1)
    pair = (labels == 0) | (labels == 1)
    return {
        "count": len(full),
        "probs": full,
        "top1": float((pred == labels).mean()),
        "mean_class": float(np.mean([(pred[labels == c] == c).mean() for c in np.unique(labels)])),
        "set_top1": float((set_probs.argmax(1) == labels // 2).mean()),
        "pair": float((np.where(full[pair, 0] >= full[pair, 1], 0, 1) == labels[pair]).mean()),
        "pair_count": int(pair.sum()),
    }


@pytest.mark.parametrize("views", [["--num-clips", "1"], ["--views", "2x3"]], ids=["1x1", "2x3"])
def test_metrics_match_an_independent_computation(data, encoder_dir, tmp_path, views):
    out = tmp_path / "eval" / "metrics.json"
    listing = data / "test.csv"
    assert (
        cli.main(
            ["--encoder", str(encoder_dir), "--list", str(listing), "--out", str(out), "--quiet", *views]
        )
        == 0
    )
    m = json.loads(out.read_text())
    offsets, crops = (1, 1) if views[0] == "--num-clips" else (2, 3)
    assert m["multi_view"] == {"num_clips": offsets, "crops": crops, "views_per_clip": offsets * crops}
    ref = expected(encoder_dir, listing, offsets, crops)
    assert m["count"] == len(read_list(listing)) == ref["count"]
    assert m["top1"] == pytest.approx(ref["top1"]) and m["mean_class"] == pytest.approx(ref["mean_class"])
    assert m["set"]["top1"] == pytest.approx(ref["set_top1"]) and "event" in m
    assert m["pairs_direction"]["accuracy"] == pytest.approx(ref["pair"])
    assert m["pairs_direction"]["count"] == ref["pair_count"]
    assert 0.0 <= m["top1"] <= m["top5"] == 1.0  # 4 classes: top-5 holds every class
    assert m["skipped"]["count"] == 0 and m["decoder_fallbacks"]["count"] == 0
    # the probabilities behind the numbers, through the evaluation library, equal the prediction library's
    encoder = SeFAREncoder.from_pretrained(encoder_dir)
    augment = AugmentConfig(test_offsets=offsets, test_crops=crops)
    dataset = VideoClipDataset(listing, 4, "eval", views=(2, 2, 4), image_size=64, augment=augment)
    np.testing.assert_allclose(evaluate(encoder, dataset, batch_size=4).probs, ref["probs"], atol=1e-5)
    png = Path(m["confusion_png"])
    assert png == out.with_name("metrics.confusion.png") and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_list_relative_to_the_data_root(data, encoder_dir, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "m.json"
    args = ["--encoder", str(encoder_dir), "--data-root", str(data), "--list", "val.csv", "--out", str(out)]
    assert cli.main([*args, "--quiet"]) == 0
    assert json.loads(out.read_text())["list"] == str(data / "val.csv")


def test_exit_codes(data, encoder_dir, tmp_path, capsys):
    out = tmp_path / "m.json"
    listing = str(data / "test.csv")
    assert cli.main(["--encoder", str(tmp_path / "nothing"), "--list", listing, "--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("eval_encoder: error: cannot load the encoder from") and len(err.splitlines()) == 1
    assert (
        cli.main(["--encoder", str(encoder_dir), "--list", str(tmp_path / "no.csv"), "--out", str(out)]) == 1
    )
    assert "no.csv: list file not found" in capsys.readouterr().err
    with pytest.raises(SystemExit) as usage:
        cli.main(["--encoder", str(encoder_dir), "--list", listing, "--out", str(out), "--views", "2x2"])
    assert usage.value.code == 2 and not out.exists()
