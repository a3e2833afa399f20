"""Evaluation metrics and the atomic, pickle-free checkpoint format."""

from pathlib import Path

import numpy as np
import pytest
import torch

from sefar_encoder.metrics import classification_report, confusion_matrix, mean_class_accuracy
from sefar_encoder.runtime.atomic import TMP_PREFIX
from sefar_encoder.runtime.checkpoint import (
    clean_stale,
    flatten_optimizer,
    latest_checkpoint,
    load_checkpoint,
    save_checkpoint,
    unflatten_optimizer,
)


def test_mean_class_accuracy_weights_classes_equally():
    labels = np.array([0, 0, 0, 0, 1])
    pred = np.array([0, 0, 0, 0, 0])
    assert mean_class_accuracy(pred, labels) == pytest.approx(0.5)  # top-1 would be 0.8


def test_report_top5_groups_and_pairs():
    probs = np.array(
        [
            [0.6, 0.3, 0.1, 0.0],  # label 1: wrong top-1, right pair choice? 0 > 1 -> wrong
            [0.1, 0.2, 0.3, 0.4],  # label 2: wrong top-1, same set as 3 -> set right
            [0.1, 0.7, 0.1, 0.1],  # label 1: right
        ]
    )
    labels = np.array([1, 2, 1])
    rep = classification_report(
        probs, labels, set_of=[10, 10, 20, 20], event_of=["a"] * 4, pairs={"dir": [[0, 1]]}
    )
    assert rep["top1"] == pytest.approx(1 / 3)
    assert rep["top5"] == pytest.approx(1.0)
    assert rep["set"]["top1"] == pytest.approx(1.0)
    assert rep["event"]["top1"] == pytest.approx(1.0)
    assert rep["pairs_dir"]["accuracy"] == pytest.approx(0.5) and rep["pairs_dir"]["count"] == 2
    cm = confusion_matrix(probs.argmax(1), labels, 4)
    assert cm[1, 0] == 1 and cm[2, 3] == 1 and cm[1, 1] == 1 and cm.sum() == 3


def test_checkpoint_round_trip_with_optimizer(tmp_path: Path):
    model = torch.nn.Linear(3, 2)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    model(torch.randn(4, 3)).sum().backward()
    opt.step()
    tensors, meta = flatten_optimizer(opt.state_dict(), "optim")
    tensors.update({f"model.{k}": v for k, v in model.state_dict().items()})
    save_checkpoint(tmp_path, "epoch_0001", tensors, {"epoch": 1, "optim": meta})
    path = latest_checkpoint(tmp_path)
    assert path is not None and path.name == "epoch_0001"
    loaded, state = load_checkpoint(path)
    opt2 = torch.optim.SGD(torch.nn.Linear(3, 2).parameters(), lr=0.5, momentum=0.9)
    opt2.load_state_dict(unflatten_optimizer(loaded, state["optim"], "optim"))
    assert opt2.param_groups[0]["lr"] == 0.1
    buf = opt.state_dict()["state"][0]["momentum_buffer"]
    assert torch.equal(opt2.state_dict()["state"][0]["momentum_buffer"], buf)
    assert {p.suffix for p in path.iterdir()} == {".safetensors", ".json"}


def test_interrupted_write_leaves_previous_checkpoint(tmp_path: Path):
    save_checkpoint(tmp_path, "epoch_0001", {"w": torch.ones(2)}, {"epoch": 1})
    # simulate a crash in the middle of writing epoch 2: a temp dir exists, latest unchanged
    stale = tmp_path / "checkpoints" / (TMP_PREFIX + "epoch_0002")
    stale.mkdir()
    (stale / "tensors.safetensors").write_bytes(b"half")
    assert latest_checkpoint(tmp_path).name == "epoch_0001"
    assert clean_stale(tmp_path) == [stale]
    assert not stale.exists()
