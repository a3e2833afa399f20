"""scripts/probe_routine_features.py on planted routine features: the rule's ceiling on perfect logits is
100 %, a supervised probe finds planted elements, the layout counts are the planted ones, bad input exits 1."""

from __future__ import annotations

import json

import numpy as np
from conftest import load_script
from test_detection_train import planted_routines

probe = load_script("probe_routine_features")


def test_oracle_probe_and_layout_on_planted_features(tmp_path):
    routines, features = planted_routines(tmp_path)
    out = tmp_path / "probe.json"
    assert probe.main(["--routines", str(routines), "--features", str(features), "--json-out", str(out)]) == 0
    result = json.loads(out.read_text())
    # planted: 30 one-second windows per routine, two 6-window elements
    assert result["layout"]["windows_per_routine"] == 30.0
    assert result["layout"]["windows_per_element_median"] == 6.0
    assert result["layout"]["element_window_share"] == 12 / 30
    assert all(v == 100.0 for v in result["oracle"].values())
    assert result["probe"]["element_window_accuracy"] > 90 and result["probe"]["map@0.1"] > 80


def test_window_labels_follow_the_centres(tmp_path):
    routines, features = planted_routines(tmp_path)
    data = probe.load_routine_set(routines, features, "testing")
    for routine, labels in zip(data.routines, probe.window_labels(data)):
        for segment in routine.segments:  # window k covers [k, k + 1) s: centres k + 0.5
            inside = np.arange(int(segment.start), int(segment.end))
            assert (labels[inside] == segment.label).all()
        assert (labels == len(data.class_names)).sum() == 30 - sum(s.end - s.start for s in routine.segments)


def test_missing_feature_folder_exits_1(tmp_path, capsys):
    routines, _ = planted_routines(tmp_path)
    assert probe.main(["--routines", str(routines), "--features", str(tmp_path / "none")]) == 1
    assert "error:" in capsys.readouterr().err
