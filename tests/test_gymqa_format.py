"""Gym-QA JSON: byte-identical round trip of the official sample, options, rotation, prompts, errors."""

import json
from pathlib import Path

import pytest
from conftest import FINEGYM_DIR

from gym_qa.questions import (
    RECORD_FIELDS,
    Question,
    QuestionFormatError,
    circular_questions,
    dump_questions,
    join_options,
    load_questions,
    parse_questions,
    render_prompt,
    rotate_options,
    split_options,
    write_questions,
)

SAMPLE = FINEGYM_DIR / "gymqa_official_format_sample.json"


def test_official_sample_round_trip_is_byte_identical(tmp_path: Path):
    questions = load_questions(SAMPLE)
    assert len(questions) == 12
    assert dump_questions(questions).encode("utf-8") == SAMPLE.read_bytes()
    write_questions(tmp_path / "copy.json", questions)
    assert (tmp_path / "copy.json").read_bytes() == SAMPLE.read_bytes()
    assert not SAMPLE.read_bytes().endswith(b"\n")  # the official writer adds no trailing newline


def test_official_sample_fields():
    questions = load_questions(SAMPLE)
    assert [q.question_id for q in questions] == [f"{i:07d}" for i in range(12)]
    first = questions[0]
    assert list(first.to_record()) == list(RECORD_FIELDS)
    assert (first.answer, first.answer_type, first.dataset, first.frame_length) == (
        "C",
        "what",
        "finegym",
        66,
    )
    assert first.video == "0LtLS9wROrk_E_002407_002435_A_0003_0005"
    assert first.stem == "What gymnastics move is this athlete performing?"
    assert first.answer_text == "giant circle backward with 0.5 turn to handstand"
    assert all(len(q.options) == 4 and q.answer in "ABCD" for q in questions)
    assert (
        questions[1].options[2]
        == "(swing backward or front support) salto forward straddled to hang on high bar"
    )


def make(options: list[str], answer: int = 0, qid: str = "0000007") -> Question:
    return Question.from_parts("Which?", options, answer, "what", qid, "finegym", "clip", 12)


def test_option_layout_and_yes_no():
    q = make(["x y", "z"], answer=1)
    assert q.question == "Which? A.x y B.z" and q.answer == "B" and q.letters == "AB"
    assert split_options("Q? A.yes B.no") == ("Q?", ["yes", "no"])
    with pytest.raises(QuestionFormatError, match="unambiguously"):
        join_options("Q?", ["salto B.x", "y"])  # " B." inside option A would split it
    with pytest.raises(QuestionFormatError, match="2..26 options"):
        join_options("Q?", ["only"])


def test_ensure_ascii_escapes_like_the_official_writer():
    text = dump_questions([make(["fouetté hop", "b"])])
    assert "fouett\\u00e9" in text
    assert "fouetté" in dump_questions([make(["fouetté hop", "b"])], ensure_ascii=False)
    assert parse_questions(text)[0].options[0] == "fouetté hop"


def test_rotation_keeps_the_answer_text():
    q = make(["a", "b", "c", "d"], answer=2)
    r1 = rotate_options(q, 1)
    assert r1.options == ("d", "a", "b", "c") and r1.answer == "D" and r1.question_id == "0000007#r1"
    assert rotate_options(q, 4) == q and rotate_options(r1, 3).question_id == "0000007"
    rotations = circular_questions([q])
    assert [r.answer_text for r in rotations] == ["c"] * 4 and sorted(r.answer for r in rotations) == list(
        "ABCD"
    )
    assert parse_questions(dump_questions(rotations))[1].question_id == "0000007#r1"


def test_render_prompt():
    q = make(["salto", "turn"])
    assert render_prompt(q) == "Which? A.salto B.turn"
    assert render_prompt(q, "{stem}\n{options}\nAnswer with {letters}.") == (
        "Which?\nA. salto\nB. turn\nAnswer with A or B."
    )
    with pytest.raises(QuestionFormatError, match="placeholder"):
        render_prompt(q, "{nope}")


def file_with(key: str = "0000001", **fields) -> str:
    record = {
        "answer": "A",
        "question": "Q? A.x B.y",
        "answer_type": "what",
        "question_id": key,
        "dataset": "d",
        "video": "v",
        "frame_length": 0,
        **fields,
    }
    return "{\n" + json.dumps(key) + ": " + json.dumps(record) + "\n}"


@pytest.mark.parametrize(
    "text, message",
    [
        ('{\n  "0000000": [1,\n}', r"q\.json:3: invalid JSON"),
        ('{\n "0000000": {"answer": "A"}\n}', r"q\.json:2: record '0000000' lacks question"),
        (file_with(answer="E"), r"q\.json:2: .*answer 'E'"),
        (file_with(question_id="0000002"), r"q\.json:2: key '0000001' differs"),
        (file_with("12"), r"q\.json:2: question id '12' is not 7 digits"),
        (file_with(question="no options"), r"q\.json:2: no ' A\.' option marker"),
        (file_with(frame_length=-3), r"q\.json:2: frame_length -3"),
    ],
)
def test_malformed_files_name_file_and_line(tmp_path: Path, text: str, message: str):
    path = tmp_path / "q.json"
    path.write_text(text)
    with pytest.raises(QuestionFormatError, match=message):
        load_questions(path)
