"""Gym-QA generator on the Gym99 val list (no videos) and on a SynthGym-style hierarchy with attributes."""

import json
from collections import Counter
from pathlib import Path

import av
import numpy as np
import pytest
from conftest import FINEGYM_DIR, load_script

from gym_qa.clips import Clip, clips_from_list
from gym_qa.hierarchy import Hierarchy, load_hierarchy
from gym_qa.hierarchy_files import Element
from gym_qa.question_generator import GeneratorConfig, GeneratorError, QuestionGenerator, parse_answer_types
from gym_qa.question_summary import predicted_same_event_share
from gym_qa.questions import dump_questions, load_questions
from gym_qa.reference_answerers import answer_counts_from_labels, frequency_answerer
from gym_qa.statistics import chi_square_uniform


@pytest.fixture(scope="module")
def gym99() -> Hierarchy:
    return load_hierarchy(
        FINEGYM_DIR / "gym99_categories.txt", qtree=FINEGYM_DIR / "finegym_glabel_to_Qtree.json"
    )


@pytest.fixture(scope="module")
def val_clips(gym99: Hierarchy) -> list[Clip]:
    return clips_from_list(FINEGYM_DIR / "gym99_val_element.txt", gym99.num_classes)


def generate(hierarchy: Hierarchy, clips: list[Clip], **config):
    return QuestionGenerator(hierarchy, GeneratorConfig(**config)).generate(clips)


def test_gym99_val_what_questions(gym99: Hierarchy, val_clips: list[Clip]):
    questions, summary = generate(gym99, val_clips)
    assert len(questions) == 8521 == summary["questions"]
    assert [q.question_id for q in questions[:3]] == ["0000000", "0000001", "0000002"]
    letters = Counter(q.answer for q in questions)
    assert chi_square_uniform([letters[x] for x in "ABCD"])[1] > 0.01
    assert max(letters.values()) - min(letters.values()) <= 1  # balanced cycle: off by at most one
    assert sum(len(set(q.options)) != 4 for q in questions) == 0
    for q, clip in zip(questions, val_clips, strict=True):
        assert q.video == clip.video and q.frame_length == 0 and q.answer_type == "what"
        assert q.answer_text == gym99.name_of(clip.label)
    assert not any(o.startswith(("(VT)", "(FX)", "(BB)", "(UB)")) for q in questions for o in q.options)
    stats = summary["what_distractors"]
    # Uniform sampling over distinct names: same-event share within 2 points of the closed form.
    assert abs(stats["same_event_share"] - stats["predicted_same_event_share_uniform"]) < 0.02
    assert summary["questions_with_duplicate_options"] == 0


def test_hard_distractors_share_the_set(gym99: Hierarchy, val_clips: list[Clip]):
    _, summary = generate(gym99, val_clips, distractors="hard")
    assert summary["what_distractors"]["same_set_share"] >= 0.80
    assert summary["what_distractors"]["same_event_share"] == 1.0


def test_deterministic_by_seed(gym99: Hierarchy, val_clips: list[Clip]):
    clips = val_clips[:300]
    first = dump_questions(generate(gym99, clips, types=("what", "set"), seed=5)[0])
    assert dump_questions(generate(gym99, clips, types=("what", "set"), seed=5)[0]) == first
    assert dump_questions(generate(gym99, clips, types=("what", "set"), seed=6)[0]) != first
    # Each type has its own random stream: adding a type changes ids, not the other type's questions.
    what_only = [q.question for q in generate(gym99, clips, seed=5)[0]]
    assert [
        q.question
        for q in generate(gym99, clips, types=("what", "event"), seed=5)[0]
        if q.answer_type == "what"
    ] == what_only


def test_event_set_and_attribute_questions(gym99: Hierarchy, val_clips: list[Clip]):
    types = ("event", "set", "attribute")
    questions, summary = generate(gym99, val_clips, types=types)
    by_type = {t: [q for q in questions if q.answer_type == t] for t in types}
    assert all(len(qs) == 8521 for qs in by_type.values())
    label_of = {c.video: c.label for c in val_clips}
    for q in by_type["event"][:500]:
        assert q.answer_text == gym99.event_name(gym99.event_of(label_of[q.video]))
    for q in by_type["set"][:500]:
        assert q.answer_text == gym99.set_display_name(gym99.set_of(label_of[q.video]))
    truth = {}
    for label in range(99):
        for attribute in gym99.attributes_of(label):
            truth[label, " ".join(attribute.question.split()).replace(" ?", "?").rstrip("?")] = (
                attribute.answer
            )
    for q in by_type["attribute"]:
        assert q.options == ("yes", "no")
        asked = q.stem.split(": ", 1)[1].rstrip("?")
        assert truth[label_of[q.video], asked] == (q.answer == "A")
    # Every Gym99 element has a Qtree entry, so every clip got one yes/no question, balanced yes/no.
    coverage = summary["attribute_coverage"]
    assert coverage["classes_with_attributes"] == 99 and coverage["classes_without_attributes"] == []
    assert summary["by_type"]["attribute"]["letters_p_value"] > 0.01
    every = generate(gym99, val_clips[:50], types=("attribute",), attributes_per_clip=0)[0]
    assert len(every) == sum(len(gym99.attributes_of(c.label)) for c in val_clips[:50])


def test_frequency_distractors_remove_the_class_prior_leak(gym99: Hierarchy, val_clips: list[Clip]):
    train_labels = [int(line.split()[1]) for line in (FINEGYM_DIR / "gym99_train_element_v1.1.txt").open()]
    prior = frequency_answerer(answer_counts_from_labels(gym99, train_labels))

    def prior_accuracy(mode: str) -> float:
        questions = generate(gym99, val_clips, distractors=mode)[0]
        return sum(prior(q) == q.answer for q in questions) / len(questions)

    assert prior_accuracy("uniform") > 0.40  # the official sampling leaks the long-tailed class prior
    assert prior_accuracy("frequency") < 0.30


def toy_hierarchy() -> Hierarchy:
    names = [
        "salto backward tucked",
        "salto backward stretched with 1 twist",
        "salto backward stretched with 2 twist",
        "double salto backward tucked",
        "split jump",
        "split jump with 1 turn",
    ]
    sets = [25, 25, 25, 25, 21, 21]
    elements = [Element(i, 100 + i, s, "FX", n) for i, (n, s) in enumerate(zip(names, sets, strict=True))]
    h = Hierarchy.from_elements(elements, {21: "FX_leap_jump_hop", 25: "FX_back_salto"})
    h.class_attributes = {
        0: {"twists": 0, "saltos": 1},
        1: {"twists": 1, "saltos": 1},
        2: {"twists": 2, "saltos": 1},
        3: {"twists": 0, "saltos": 2},
        4: {"twists": 0, "saltos": 0},
        5: {"twists": 1.5, "saltos": 0, "shape": "split"},
    }
    return h


def test_count_questions_from_numeric_attributes():
    h = toy_hierarchy()
    clips = [Clip(f"c{i}", i % 6, 10) for i in range(60)]
    questions, summary = generate(h, clips, types=("count", "event"))
    counts = [q for q in questions if q.answer_type == "count"]
    assert len(counts) == 120  # twists and saltos for every clip
    for q in counts:
        attribute = "twists" if "twists" in q.stem else "saltos"
        value = h.class_attributes[int(q.video[1:]) % 6][attribute]
        assert q.answer_text == (str(int(value)) if float(value).is_integer() else str(value))
        assert len(set(q.options)) == len(q.options)
    saltos = [q for q in counts if "saltos" in q.stem]
    assert all(len(q.options) == 3 for q in saltos)  # only 0, 1, 2 exist: fewer than 4 options
    assert summary["by_type"]["event"]["skipped_clips"] == 60  # one event only: no event question possible


def test_predicted_same_event_share_closed_form():
    h = Hierarchy.from_elements(
        [
            Element(0, 0, 21, "FX", "a"),
            Element(1, 1, 21, "FX", "b"),
            Element(2, 2, 31, "BB", "b"),
            Element(3, 2, 31, "BB", "c"),
        ],
        {21: "FX_x", 31: "BB_y"},
    )
    # 3 distinct names a, b, c; "b" is on FX and BB. For label 0 (FX "a"): candidates b, c; b counts as FX.
    assert predicted_same_event_share(h, [0]) == pytest.approx(1 / 2)
    assert predicted_same_event_share(h, [3]) == pytest.approx(1 / 2)  # c (BB): b is also BB
    assert predicted_same_event_share(h, [1]) == pytest.approx(1 / 2)  # b (FX) vs a (FX), c (BB)
    with pytest.raises(GeneratorError):
        parse_answer_types("what,colour")


def write_clip(path: Path, frames: int) -> None:
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=25)
        stream.width, stream.height, stream.pix_fmt = 32, 32, "yuv420p"
        for i in range(frames):
            frame = av.VideoFrame.from_ndarray(np.full((32, 32, 3), i * 9, np.uint8), format="rgb24")
            container.mux(stream.encode(frame))
        container.mux(stream.encode())


def test_frame_length_from_real_clip_and_script(tmp_path: Path, capsys):
    write_clip(tmp_path / "clip_a.mp4", 13)
    (tmp_path / "list.csv").write_text("clip_a.mp4 0\nmissing.mp4 1\n")
    (tmp_path / "categories.txt").write_text(
        "Clabel: 0; set: 21; Glabel: 7; (FX) split jump\n"
        "Clabel: 1; set: 22; Glabel: 8; (FX) 1 turn\n"
        "Clabel: 2; set: 41; Glabel: 9; (UB) giant circle\n"
    )
    (tmp_path / "set_categories.txt").write_text(
        "set: 21; FX_leap_jump_hop\nset: 22; FX_turns\nset: 41; UB_circles\n"
    )
    main = load_script("make_gymqa").main
    out = tmp_path / "q.json"
    assert (
        main(
            [
                "--list",
                str(tmp_path / "list.csv"),
                "--categories",
                str(tmp_path),
                "--out",
                str(out),
                "--types",
                "what,event,set",
                "--dataset",
                "synthgym",
                "--summary-json",
                str(tmp_path / "s.json"),
            ]
        )
        == 0
    )
    questions = load_questions(out)
    assert [(q.video, q.frame_length) for q in questions if q.answer_type == "what"] == [
        ("clip_a", 13),
        ("missing", 0),
    ]
    assert all(len(q.options) == 3 for q in questions if q.answer_type == "what")  # 3 classes only
    assert {q.dataset for q in questions} == {"synthgym"}
    assert json.loads((tmp_path / "s.json").read_text())["questions"] == 6
    capsys.readouterr()
    (tmp_path / "list.csv").write_text("clip_a.mp4 0\nclip_b.mp4 7\n")
    assert main(["--list", str(tmp_path / "list.csv"), "--categories", str(tmp_path), "--out", str(out)]) == 2
    assert "list.csv:2: label 7 out of range" in capsys.readouterr().err
    assert (
        main(
            [
                "--list",
                str(tmp_path / "list.csv"),
                "--categories",
                str(tmp_path),
                "--out",
                str(out),
                "--types",
                "what,colour",
            ]
        )
        == 2
    )
