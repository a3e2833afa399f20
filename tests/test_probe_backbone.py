"""scripts/probe_backbone.py: a linear probe on a frozen frame backbone, ordered and time-averaged."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import load_script

pytest_plugins = ["synthgym_fixtures"]
probe = load_script("probe_backbone")


def test_probe_writes_the_three_readouts(synthgym_tiny, tmp_path) -> None:
    out = tmp_path / "probe.json"
    rc = probe.main(
        [
            "--backbone",
            str(synthgym_tiny.backbone),
            "--data-root",
            str(synthgym_tiny.root),
            "--frames",
            "4",
            "--out",
            str(out),
            "--quiet",
        ]
    )
    assert rc == 0
    result = json.loads(out.read_text())
    assert result["frames"] == 4 and result["train_clips"] > 0 and result["test_clips"] > 0
    for name in ("ordered", "mean", "views"):
        assert {"train_top1", "test_top1", "test_mean_class", "pairs_direction"} <= set(result[name])
        assert all(0.0 <= v <= 1.0 for v in result[name].values())


def _ramps(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Class 0: one feature rises over 4 frames; class 1: it falls. Same frames, opposite order."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % 2
    feats = 0.1 * torch.randn(n, 4, 3, generator=g)
    ramp = torch.linspace(-2, 2, 4)
    feats[:, :, 0] += torch.where(labels[:, None] == 0, ramp, ramp.flip(0))
    return feats, labels


def test_the_mean_readout_is_blind_to_frame_order_and_the_ordered_one_is_not() -> None:
    (train, y), (test, y_test) = _ramps(64, 0), _ramps(64, 1)
    ordered = probe.fit_probe(train.flatten(1), y, test.flatten(1), y_test, l2=0.0)
    mean = probe.fit_probe(train.mean(1), y, test.mean(1), y_test, l2=0.0)
    assert ordered["test_top1"] == 1.0
    assert mean["test_top1"] <= 0.75  # averaged over time both classes look alike (chance 0.5)


def test_view_means_pool_each_view_and_keep_the_views_in_order() -> None:
    feats = torch.arange(8, dtype=torch.float32).reshape(1, 8, 1)  # frame t has feature t
    assert probe.view_means(feats, (2, 2, 4)).tolist() == [[0.5, 2.5, 5.5]]
    assert probe.view_means(feats.flip(1), (2, 2, 4)).tolist() == [[6.5, 4.5, 1.5]]  # reversed clip


def test_frames_must_fill_the_dual_level_views(synthgym_tiny) -> None:
    with pytest.raises(SystemExit):
        probe.main(["--backbone", str(synthgym_tiny.backbone), "--data-root", str(synthgym_tiny.root),
                    "--frames", "6", "--quiet"])  # fmt: skip


def test_missing_backbone_config_is_an_error_naming_it(tmp_path, capsys) -> None:
    (tmp_path / "model.safetensors").write_bytes(b"")
    rc = probe.main(["--backbone", str(tmp_path / "model.safetensors"), "--data-root", str(tmp_path)])
    assert rc == 1
    assert "config.json" in capsys.readouterr().err


def test_help_explains_the_two_readouts(capsys) -> None:
    with pytest.raises(SystemExit):
        probe.main(["--help"])
    text = capsys.readouterr().out
    assert "ordered" in text and "order-blind" in text
