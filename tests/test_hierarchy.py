"""Hierarchy: FineGym gym99/gym288/gym530 + Qtree, quirks, JSON round trip, SynthGym folders, errors."""

import json
from pathlib import Path

import pytest
from conftest import FINEGYM_DIR

from gym_qa.hierarchy import Hierarchy, load_hierarchy
from gym_qa.hierarchy_files import HierarchyError, read_qtree


def finegym(name: str, qtree: bool = True) -> Hierarchy:
    return Hierarchy.from_finegym(
        FINEGYM_DIR / f"{name}_categories.txt",
        FINEGYM_DIR / "set_categories.txt",
        FINEGYM_DIR / "finegym_glabel_to_Qtree.json" if qtree else None,
    )


@pytest.fixture(scope="module")
def gym99() -> Hierarchy:
    return finegym("gym99")


def test_gym99_classes_sets_events_and_quirks(gym99: Hierarchy):
    assert gym99.num_classes == 99
    assert len(gym99.sets) == 15 and len(gym99.used_sets) == 14  # one FineGym set unused by Gym99
    assert gym99.events == ["VT", "FX", "BB", "UB"]
    first = gym99.element(0)
    assert (first.label, first.glabel, first.set_id, first.event) == (0, 1, 1, "VT")
    assert first.name == "round-off, flic-flac with 0.5 turn on, stretched salto forward with 0.5 turn off"
    assert not any(name.startswith("(") and name[3:4] == ")" for name in gym99.names)  # "(VT) " stripped
    shared = {name: labels for name, labels in gym99.name_groups.items() if len(labels) > 1}
    assert len(shared) == 10 and all(len(labels) == 2 for labels in shared.values())
    assert gym99.labels_with_name("salto backward tucked") == (58, 70)
    # A shared name can span events: floor and beam both have "switch leap with 0.5 turn".
    assert {gym99.event_of(label) for label in gym99.labels_with_name("switch leap with 0.5 turn")} == {
        "FX",
        "BB",
    }
    assert gym99.set_of(6) == 21 and gym99.set_name(21) == "FX_leap_jump_hop"
    assert gym99.event_name(gym99.event_of(6)) == "floor exercise"
    assert gym99.set_display_name(42) == "uneven bars: flight same bar"  # FineGym's "fligh" typo fixed
    assert gym99.set_display_name(1) == "vault"


def test_gym288_and_gym530():
    gym288 = finegym("gym288")
    assert gym288.num_classes == 288 and len(gym288.used_sets) == 15
    assert sum(len(labels) > 1 for labels in gym288.name_groups.values()) == 33
    assert len(gym288.labels_with_name("salto backward tucked")) == 3
    gym530 = finegym("gym530", qtree=False)
    assert gym530.num_classes == 530
    assert all(e.label == e.glabel for e in gym530.elements)  # Glabel-only file: class id = Glabel
    assert gym530.name_of(126) == "fouetté-hop to land in arabesque"  # UTF-8 kept


def test_qtree_bits_answer_questions_in_order(gym99: Hierarchy):
    raw = json.loads((FINEGYM_DIR / "finegym_glabel_to_Qtree.json").read_text())
    assert len(gym99.attributes) == 99 and not gym99.issues
    for label in (0, 40, 98):
        entry = raw[str(gym99.element(label).glabel)]
        answers = gym99.attributes_of(label)
        assert len(answers) == len(entry["questions"])
        assert [a.answer for a in answers] == [bit == "1" for bit in entry["BTcode"]]
        assert answers[0].question == " ".join(entry["questions"][0].split())


def test_json_round_trip_and_save(gym99: Hierarchy, tmp_path: Path):
    assert Hierarchy.from_json(json.loads(json.dumps(gym99.to_json()))) == gym99
    gym99.save(tmp_path / "model" / "hierarchy.json")
    loaded = load_hierarchy(tmp_path / "model" / "hierarchy.json")
    assert loaded == gym99 and loaded.attributes_of(5) == gym99.attributes_of(5)
    with pytest.raises(HierarchyError, match="format_version"):
        Hierarchy.from_json({"elements": []})


def test_set_categories_default_beside_categories():
    assert load_hierarchy(FINEGYM_DIR / "gym99_categories.txt").set_name(44) == "UB_dismounts"


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


@pytest.mark.parametrize(
    "lines, message",
    [
        (["Clabel: 0; set: 1; Glabel: 1; (VT) a", "Clabel 1 set 1"], r"cats\.txt:2: expected"),
        (
            ["Clabel: 0; set: 1; Glabel: 1; (VT) a", "Clabel: 0; set: 1; Glabel: 2; (VT) b"],
            r"cats\.txt:2: label 0 already",
        ),
        (["Clabel: 0; set: 1; Glabel: 1; (VT) a", "Clabel: 2; set: 1; Glabel: 2; (VT) b"], r"missing 1"),
        (["Clabel: 0; set: 1; Glabel: 1; (XX) a"], r"cats\.txt:1: unknown event code"),
        (
            ["Clabel: 0; set: 21; Glabel: 1; (FX) a", "Clabel: 1; set: 21; Glabel: 2; (BB) b"],
            r"cats\.txt:2: set 21 is BB",
        ),
        (
            ["Clabel: 0; set: 1; Glabel: 1; (VT) a", "Glabel: 3; set: 1; (VT) b"],
            r"cats\.txt:2: expected 'Clabel",
        ),
        (["Clabel: 0; set: 9; Glabel: 1; a"], r"cats\.txt:1: .*no '\(EV\)' event prefix"),
    ],
)
def test_categories_errors_name_file_and_line(tmp_path: Path, lines: list[str], message: str):
    path = write(tmp_path / "cats.txt", "\n".join(lines) + "\n")
    with pytest.raises(HierarchyError, match=message):
        Hierarchy.from_finegym(path)


def test_crlf_comments_and_missing_set(tmp_path: Path):
    cats = tmp_path / "cats.txt"
    cats.write_bytes(
        b"# comment\r\nClabel: 0; set: 21; Glabel: 5; (FX) a\r\n\r\nClabel: 1; set: 22; Glabel: 6; b\r\n"
    )
    sets = write(tmp_path / "sets.txt", "set: 21; FX_leap_jump_hop\n")
    with pytest.raises(HierarchyError, match=r"class 1 uses set 22, which .*sets\.txt does not define"):
        Hierarchy.from_finegym(cats, sets)
    write(sets, "set: 21; FX_leap_jump_hop\nset: 22; FX_turns\n")
    h = Hierarchy.from_finegym(cats, sets)
    assert h.event_of(1) == "FX"  # no "(EV)" prefix: the set id's first digit decides
    write(sets, "set: 21; a\nset 22 b\n")
    with pytest.raises(HierarchyError, match=r"sets\.txt:2: expected 'set: s; name'"):
        Hierarchy.from_finegym(cats, sets)


def test_qtree_mismatch_reported_and_skipped(tmp_path: Path):
    qtree = write(
        tmp_path / "q.json",
        json.dumps(
            {
                "5": {"questions": ["a?", "b?"], "BTcode": "101", "code": "x"},
                "6": {"questions": ["a?", "b?"], "BTcode": "10", "code": "x"},
                "7": {"questions": ["a?"], "BTcode": "2", "code": "x"},
            }
        ),
    )
    attributes, issues = read_qtree(qtree)
    assert list(attributes) == [6] and [a.answer for a in attributes[6]] == [True, False]
    assert "BTcode has 3 bits for 2 questions" in issues[5] and "not binary" in issues[7]
    cats = write(
        tmp_path / "cats.txt",
        "Clabel: 0; set: 21; Glabel: 5; (FX) a\nClabel: 1; set: 21; Glabel: 6; (FX) b\n",
    )
    h = Hierarchy.from_finegym(cats, qtree=qtree)
    assert h.attributes_of(0) == () and len(h.attributes_of(1)) == 2
    assert any("Glabel 5" in issue for issue in h.issues)
    write(qtree, '{\n  "5": [1, 2\n}')
    with pytest.raises(HierarchyError, match=r"q\.json:3: invalid JSON"):
        read_qtree(qtree)


def test_synthgym_folder_with_meta(tmp_path: Path):
    write(
        tmp_path / "categories.txt",
        "Clabel: 0; set: 25; Glabel: 30; (FX) salto backward tucked\n"
        "Clabel: 1; set: 25; Glabel: 33; (FX) salto backward stretched with 1 twist\n",
    )
    write(tmp_path / "set_categories.txt", "set: 25; FX_back_salto\n")
    write(
        tmp_path / "attributes_qtree.json",
        json.dumps(
            {"30": {"questions": ["Twist?"], "BTcode": "0"}, "33": {"questions": ["Twist?"], "BTcode": "1"}}
        ),
    )
    write(
        tmp_path / "meta.json",
        json.dumps(
            {
                "seed": 3,
                "elements": [
                    {
                        "glabel": 30,
                        "name": "salto backward tucked",
                        "twists": 0.0,
                        "saltos": 1,
                        "shape": "tucked",
                    },
                    {"glabel": 33, "twists": 1.0, "saltos": 1, "shape": "stretched", "flag": True},
                    {"glabel": 99, "twists": 2.0},  # catalogue element not in this preset: skipped
                ],
            }
        ),
    )
    h = Hierarchy.from_dir(tmp_path)
    assert h.num_classes == 2 and h.attributes_of(1)[0].answer is True
    assert h.class_attributes[1] == {"twists": 1.0, "saltos": 1, "shape": "stretched"}
    assert h.numeric_attribute_names() == ["saltos", "twists"]
    assert Hierarchy.from_json(h.to_json()).class_attributes == h.class_attributes
    # The layout SynthGym's writer uses: class rows with the attributes nested.
    nested = {
        "label": 1,
        "glabel": 33,
        "set": 25,
        "set_name": "FX_back_salto",
        "event": "FX",
        "name": "x",
        "attributes": {"glabel": 33, "set_id": 25, "kind": "salto", "direction": -1, "twists": 1.0},
    }
    write(tmp_path / "meta.json", json.dumps({"num_classes": 2, "classes": [nested], "pairs": {}}))
    assert Hierarchy.from_dir(tmp_path).class_attributes == {
        1: {"kind": "salto", "direction": -1, "twists": 1.0}
    }
    write(tmp_path / "meta.json", json.dumps({"classes": [{"label": 5, "twists": 1}]}))
    with pytest.raises(HierarchyError, match=r"meta\.json: class label 5 out of range"):
        Hierarchy.from_dir(tmp_path)
    with pytest.raises(HierarchyError, match="come from the hierarchy itself"):
        load_hierarchy(tmp_path, qtree=tmp_path / "attributes_qtree.json")
