"""Attribute questions (direction, twists, shape, turns): answers against the clip metadata of a generated
SynthGym set, and the option / distractor rules on a hand-made hierarchy."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from gym_qa.attribute_questions import ATTRIBUTE_QUESTIONS, attribute_answer
from gym_qa.clips import Clip, clips_from_list
from gym_qa.hierarchy import Hierarchy, load_hierarchy
from gym_qa.hierarchy_files import Element
from gym_qa.question_generator import GeneratorConfig, QuestionGenerator
from gym_qa.scoring import Prediction, score

TYPES = ("direction", "twists", "shape", "turns")


@pytest.fixture(scope="module")
def synthgym(tmp_path_factory) -> Path:
    from gym_qa.synthgym.dataset import generate_dataset

    root = tmp_path_factory.mktemp("attr") / "synthgym-tiny"
    generate_dataset(root, "tiny", seed=0, workers=1, progress=False)
    return root


def expected_answer(answer_type: str, record: dict) -> str | None:
    """What meta.json says, read here independently of gym_qa.attribute_questions."""
    a = record["attributes"]
    if answer_type == "direction":
        return {1: "forward", -1: "backward"}.get(a["direction"])
    if answer_type == "shape":
        return a["shape"] if a["saltos"] >= 1 and a["shape"] in ("tucked", "piked", "stretched") else None
    number = a["twists"] if answer_type == "twists" else a["turns"]
    supported = a["kind"] in ("turn", "circle")
    if supported != (answer_type == "turns"):
        return None
    return str(int(number)) if float(number).is_integer() else str(number)


def test_answers_agree_with_the_clip_metadata(synthgym):
    hierarchy = load_hierarchy(synthgym)
    clips = clips_from_list(synthgym / "test.csv", hierarchy.num_classes)
    config = GeneratorConfig(types=("what", *TYPES), distractors="hard", dataset="synthgym")
    questions, summary = QuestionGenerator(hierarchy, config).generate(clips)
    meta = {c["label"]: c for c in json.loads((synthgym / "meta.json").read_text())["classes"]}
    label_of = {clip.video: clip.label for clip in clips}
    asked = Counter()
    for clip in clips:
        for answer_type in TYPES:
            about = [q for q in questions if q.video == clip.video and q.answer_type == answer_type]
            expected = expected_answer(answer_type, meta[clip.label])
            assert len(about) == (expected is not None), (clip.video, answer_type)
            if about:
                q = about[0]
                assert (
                    q.answer_text
                    == expected
                    == attribute_answer(answer_type, hierarchy.class_attributes[label_of[q.video]])
                )
                assert len(set(q.options)) == len(q.options) >= 2
                asked[answer_type] += 1
    assert all(asked[t] > 0 for t in TYPES), asked  # the tiny preset has every kind of question
    assert {t: summary["by_type"][t]["questions"] for t in TYPES} == dict(asked)
    # each type is its own accuracy column; an oracle answering from the metadata scores 100 % on each
    oracle = [Prediction(q.question_id, text=q.answer) for q in questions]
    report = score(questions, oracle)
    per_type = report["modes"]["text"]["per_answer_type"]
    assert set(per_type) == {"what", *TYPES}
    assert all(block["accuracy"] == 1.0 for block in per_type.values())


def toy() -> Hierarchy:
    rows = [  # name, kind, direction, shape, saltos, twists, turns
        ("salto forward tucked", "salto", 1, "tucked", 1, 0, 0),
        ("salto backward piked", "salto", -1, "piked", 1, 0, 0),
        ("salto backward stretched with 2 twist", "salto", -1, "stretched", 1, 2, 0),
        ("salto backward stretched with 1 twist", "salto", -1, "stretched", 1, 1, 0),
        ("split jump with 0.5 turn", "jump", 0, "split", 0, 0.5, 0),
        ("2 turn on one leg", "turn", 0, "passe", 0, 0, 2),
    ]
    elements = [Element(i, 10 + i, 21, "FX", r[0]) for i, r in enumerate(rows)]
    h = Hierarchy.from_elements(elements, {21: "FX_set"})
    keys = ("kind", "direction", "shape", "saltos", "twists", "turns")
    h.class_attributes = {i: dict(zip(keys, r[1:], strict=True)) for i, r in enumerate(rows)}
    return h


def test_values_options_and_hard_distractors_by_hand():
    h = toy()
    attrs = h.class_attributes
    assert [attribute_answer("direction", attrs[i]) for i in range(6)] == [
        "forward", "backward", "backward", "backward", None, None,
    ]  # fmt: skip
    assert [attribute_answer("shape", attrs[i]) for i in range(6)] == [
        "tucked", "piked", "stretched", "stretched", None, None,
    ]  # fmt: skip
    assert [attribute_answer("twists", attrs[i]) for i in range(6)] == ["0", "0", "2", "1", "0.5", None]
    assert [attribute_answer("turns", attrs[i]) for i in range(6)] == [None] * 5 + ["2"]

    clips = [Clip(f"c{i}", i, 10) for i in range(6)]
    config = GeneratorConfig(types=TYPES, distractors="hard", num_options=2)
    questions, _ = QuestionGenerator(h, config).generate(clips)
    by = {(q.video, q.answer_type): q for q in questions}
    # twists values 0, 0.5, 1, 2: with one distractor, the nearest one
    assert set(by["c2", "twists"].options) == {"2", "1"}
    assert set(by["c4", "twists"].options) in ({"0.5", "0"}, {"0.5", "1"})  # 0 and 1 equally near
    assert set(by["c0", "shape"].options) == {"tucked", "piked"}  # shapes by hip angle: piked is nearest
    assert set(by["c1", "direction"].options) == {"backward", "forward"}
    assert ("c5", "turns") not in by  # turns has a single value (2) in this hierarchy: nothing to choose


def test_count_leaves_an_attribute_to_its_own_type():
    h = toy()
    clips = [Clip(f"c{i}", i, 10) for i in range(6)]
    alone, _ = QuestionGenerator(h, GeneratorConfig(types=("count",))).generate(clips)
    both, _ = QuestionGenerator(h, GeneratorConfig(types=("count", "twists"))).generate(clips)
    twists_stem = ATTRIBUTE_QUESTIONS["twists"].stem
    assert sum(q.stem == twists_stem for q in alone) == 6
    assert sum(q.stem == twists_stem and q.answer_type == "count" for q in both) == 0
    assert sum(q.answer_type == "twists" for q in both) == 5  # the supported turn has no twist question


def test_finegym_has_no_attribute_questions():
    h = toy()
    h.class_attributes = {}
    questions, summary = QuestionGenerator(h, GeneratorConfig(types=("what", *TYPES))).generate(
        [Clip("c0", 0, 10)]
    )
    assert [q.answer_type for q in questions] == ["what"]
    assert all(summary["by_type"][t]["skipped_clips"] == 1 for t in TYPES)
