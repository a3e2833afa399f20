"""FineGym routines from element lists (gym_qa/finegym_routines.py) and the routines JSON format
(gym_qa/routine_annotations.py), on hand-written lists and on the packaged metadata."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import load_script

from gym_qa.detection_eval import Detection
from gym_qa.finegym import metadata_path
from gym_qa.finegym_routines import MIXED_SUBSET, build_finegym_routines
from gym_qa.routine_annotations import (
    RoutineFileError,
    detections_to_json,
    ground_truth_detections,
    read_detections_json,
    read_routines_json,
    write_routines_json,
)

CATEGORIES = """\
Clabel: 0; set: 21; Glabel: 1; (FX) leap A
Clabel: 1; set: 22; Glabel: 2; (FX) turn B
Clabel: 2; set: 1; Glabel: 3; (VT) vault C
"""


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_routines_by_hand(tmp_path: Path):
    categories = write(tmp_path, "cats.txt", CATEGORIES)
    train = write(
        tmp_path,
        "train.txt",
        "vidA_E_000100_000140_A_0010_0012 1\n"  # routine A (40 s): elements at [2, 5], [10, 12], [20, 20]
        "vidA_E_000100_000140_A_0002_0005 0\n"
        "vidA_E_000100_000140_A_0020_0020 0\n"
        "vidB_E_000010_000020_A_0000_0003 2\n"  # routine B, also in val
        "vidA_E_000200_000230_A_0005_0005 0\n"  # zero length squeezed between touching neighbours
        "vidA_E_000200_000230_A_0003_0005 1\n"
        "vidA_E_000200_000230_A_0005_0009 1\n",
    )
    val = write(tmp_path, "val.txt", "vidB_E_000010_000020_A_0005_0009 2\n")
    routines, counts = build_finegym_routines({"training": train, "validation": val}, categories)
    by_id = {r.routine_id: r for r in routines}
    a = by_id["vidA_E_000100_000140"]
    assert (a.subset, a.duration, a.event) == ("training", 40.0, "FX")
    # offsets are relative to the event start, sorted; the 1-s-resolution zero-length one is widened
    assert [(s.start, s.end, s.label, s.set_id) for s in a.segments] == [
        (2.0, 5.0, 0, 21),
        (10.0, 12.0, 1, 22),
        (19.5, 20.5, 0, 21),
    ]
    assert a.labels() == [0, 1] and a.sets() == [21, 22]
    assert a.extra == {"video_id": "vidA", "event_span": [100, 140]}
    squeezed = by_id["vidA_E_000200_000230"]
    assert [(s.start, s.end) for s in squeezed.segments] == [(3.0, 5.0), (5.0, 5.0), (5.0, 9.0)]
    b = by_id["vidB_E_000010_000020"]
    assert b.subset == MIXED_SUBSET and len(b.segments) == 2 and b.event == "VT"
    assert counts.routines == {"training": 2, MIXED_SUBSET: 1}
    assert (counts.segments, counts.widened_zero_length, counts.left_zero_length) == (8, 1, 1)
    assert counts.segments_per_routine == {"mean": 2.667, "median": 3.0, "min": 2.0, "max": 3.0}


def test_bad_lists_name_the_line(tmp_path: Path):
    categories = write(tmp_path, "cats.txt", CATEGORIES)
    outside = write(tmp_path, "outside.txt", "v_E_000010_000020_A_0005_0011 0\n")
    with pytest.raises(ValueError, match=r"outside.txt:1: element span \(5, 11\) is not inside"):
        build_finegym_routines({"training": outside}, categories)
    plain = write(tmp_path, "plain.txt", "v_E_000010_000020_A_0005_0006 0\nclip_001 0\n")
    with pytest.raises(ValueError, match="plain.txt:2: clip_001 is not a FineGym clip id"):
        build_finegym_routines({"training": plain}, categories)
    mixed = write(tmp_path, "mixed.txt", "v_E_000010_000020_A_0001_0002 0\nv_E_000010_000020_A_0003_0004 2\n")
    with pytest.raises(ValueError, match="mixed.txt:1: .* events"):
        build_finegym_routines({"training": mixed}, categories)


def test_packaged_gym99_routines():
    """The counts docs/detection.md reports, measured on the packaged Gym99 lists."""
    routines, counts = build_finegym_routines(
        {
            "training": metadata_path("gym99_train_element_v1.1.txt"),
            "validation": metadata_path("gym99_val_element.txt"),
        },
        metadata_path("gym99_categories.txt"),
    )
    assert counts.routines == {"training": 3526, MIXED_SUBSET: 265, "validation": 1177}
    assert counts.segments == 26320 + 8521
    assert counts.segments_per_routine["median"] == 8.0 and counts.segments_per_routine["max"] == 18.0
    assert counts.events == {"BB": 1255, "FX": 916, "UB": 1271, "VT": 1526}
    for routine in routines:
        previous_end = 0.0
        for s in routine.segments:
            assert previous_end <= s.start <= s.end <= routine.duration, routine.routine_id
            previous_end = s.end


def test_routines_json_round_trip_and_detections(tmp_path: Path):
    categories = write(tmp_path, "cats.txt", CATEGORIES)
    train = write(tmp_path, "train.txt", "v_E_000010_000030_A_0002_0004 0\nv_E_000010_000030_A_0006_0009 1\n")
    routines, _ = build_finegym_routines({"training": train}, categories)
    names = {0: ("leap A", 21, "FX"), 1: ("turn B", 22, "FX"), 2: ("vault C", 1, "VT")}
    path = tmp_path / "routines.json"
    write_routines_json(path, routines, names, "test")
    loaded, classes = read_routines_json(path)
    assert classes == names
    assert [(r.routine_id, r.segments, r.extra) for r in loaded] == [
        (r.routine_id, r.segments, r.extra) for r in routines
    ]
    assert ground_truth_detections(loaded, "training") == [
        Detection("v_E_000010_000030", 2.0, 4.0, 0),
        Detection("v_E_000010_000030", 6.0, 9.0, 1),
    ]
    assert ground_truth_detections(loaded, "validation") == []
    detections = [Detection("v_E_000010_000030", 2.5, 4.0, 0, 0.75)]
    results = tmp_path / "results.json"
    results.write_text(json.dumps(detections_to_json(detections)))
    assert read_detections_json(results) == detections
    # a segment outside its routine is refused, naming the routine
    data = json.loads(path.read_text())
    data["database"]["v_E_000010_000030"]["annotations"][0]["segment"] = [2.0, 25.0]
    path.write_text(json.dumps(data))
    with pytest.raises(RoutineFileError, match="routine v_E_000010_000030: segment"):
        read_routines_json(path)


def test_script_writes_the_json(tmp_path: Path, capsys):
    script = load_script("make_finegym_routines")
    out = tmp_path / "sub" / "gym99.json"
    assert script.main(["--out", str(out)]) == 0
    routines, classes = read_routines_json(out)
    assert len(routines) == 3526 + 265 + 1177 and len(classes) == 99
    assert "wrote 4968 routines" in capsys.readouterr().out
