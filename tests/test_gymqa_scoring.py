"""Gym-QA evaluator: text and option-NLL modes, circular evaluation, groups, CIs, errors, speed, script."""

import json
import time
from pathlib import Path

import pytest
from conftest import FINEGYM_DIR, load_script

from gym_qa.clips import clips_from_list
from gym_qa.hierarchy import Hierarchy, load_hierarchy
from gym_qa.hierarchy_files import Element
from gym_qa.question_generator import GeneratorConfig, QuestionGenerator
from gym_qa.questions import Question, circular_questions, write_questions
from gym_qa.scoring import (
    Prediction,
    PredictionError,
    read_predictions,
    report_to_markdown,
    score,
    write_predictions,
)
from gym_qa.statistics import chi_square_sf, wilson_interval


def q(qid: str, options: list[str], answer: int, answer_type: str = "what", video: str = "v") -> Question:
    return Question.from_parts("Which?", options, answer, answer_type, qid, "finegym", video, 0)


QUESTIONS = [
    q("0000000", ["a", "b", "c", "d"], 2),
    q("0000001", ["e", "f", "g", "h"], 0),
    q("0000002", ["yes", "no"], 1, "attribute"),
    q("0000003", ["i", "j", "k", "l"], 3),
]


def test_golden_statistics():
    lo, hi = wilson_interval(50, 100)
    assert (round(lo, 4), round(hi, 4)) == (0.4038, 0.5962)
    assert wilson_interval(0, 0) == (0.0, 1.0)
    assert chi_square_sf(7.8147, 3) == pytest.approx(0.05, abs=1e-5)
    assert chi_square_sf(3.8415, 1) == pytest.approx(0.05, abs=1e-5)
    assert chi_square_sf(0.5, 4) == pytest.approx(1.25 * 2.718281828**-0.25, rel=1e-6)


def test_text_mode_unparseable_and_missing_count_wrong():
    predictions = [
        {"question_id": "0000000", "text": "The answer is C."},
        {"question_id": "0000001", "text": "A or B"},
        {"question_id": "0000002", "text": "No."},
        {"question_id": "9999999", "text": "A"},
    ]
    report = score(QUESTIONS, predictions)
    text = report["modes"]["text"]
    assert text["overall"]["correct"] == 2 and text["overall"]["total"] == 4
    assert text["unparseable"] == 1 and text["unparseable_items"] == [
        {"question_id": "0000001", "text": "A or B"}
    ]
    assert report["missing_ids"] == ["0000003"] and report["unknown_predictions"] == 1
    assert text["per_answer_type"]["attribute"]["accuracy"] == 1.0  # two-option questions work the same way
    assert text["per_answer_type"]["what"]["total"] == 3
    assert "## Mode `text`" in report_to_markdown(report)


def test_answer_form_reads_the_trained_form_beside_free_text():
    predictions = [
        {"question_id": "0000000", "text": "C. a"},  # C, stating A's text: free text says contradiction
        {"question_id": "0000001", "text": "A. e"},  # the trained form, consistent: both read A
        {"question_id": "0000002", "text": "The answer is B."},  # not the form: only free text reads it
        {"question_id": "0000003", "text": "E. l"},  # letter out of range: only free text (D's text) reads it
    ]
    assert "answer_form" not in score(QUESTIONS, predictions)["modes"]  # only when asked for
    modes = score(QUESTIONS, predictions, answer_form=True)["modes"]
    assert list(modes) == ["text", "answer_form", "option_text"]
    assert modes["text"]["overall"]["correct"] == 3 and modes["text"]["unparseable"] == 1
    assert modes["answer_form"]["overall"]["correct"] == 2  # C and A
    assert [i["question_id"] for i in modes["answer_form"]["unparseable_items"]] == ["0000002", "0000003"]
    # by the stated text: "C. a" reads A (wrong), "A. e" A, "E. l" D (right); "The answer is B." nothing
    assert modes["option_text"]["overall"]["correct"] == 2
    assert [i["question_id"] for i in modes["option_text"]["unparseable_items"]] == ["0000002"]


def test_option_scores_sum_mean_and_ties():
    predictions = [
        # Summed NLL prefers the short option A; per-token mean prefers C.
        Prediction("0000000", option_scores=(2.0, 9.0, 3.0, 9.0), option_token_counts=(1, 3, 3, 3)),
        Prediction("0000001", option_scores=(1.0, 1.0, 5.0, 5.0), option_token_counts=(1, 1, 1, 1)),  # tie
        Prediction("0000002", option_scores=(4.0, 3.0), option_token_counts=(2, 2)),
        Prediction("0000003", option_scores=(4.0, 3.0, 3.5, 0.5), option_token_counts=(1, 1, 1, 1)),
    ]
    report = score(QUESTIONS, predictions)
    assert set(report["modes"]) == {"nll_sum", "nll_mean"}
    assert report["modes"]["nll_sum"]["overall"]["correct"] == 2
    assert report["modes"]["nll_mean"]["overall"]["correct"] == 3
    assert report["modes"]["nll_sum"]["tie"] == 1
    with pytest.raises(PredictionError, match="3 option_scores for question 0000000, which has 4"):
        score(QUESTIONS, [Prediction("0000000", option_scores=(1.0, 2.0, 3.0), where="p.jsonl:1")])


def test_circular_evaluation():
    rotations = circular_questions(QUESTIONS)
    perfect = [Prediction(r.question_id, text=r.answer) for r in rotations]
    position_biased = [Prediction(r.question_id, text="A") for r in rotations]
    assert score(QUESTIONS, perfect)["modes"]["text"]["circular"]["overall"]["accuracy"] == 1.0
    biased = score(QUESTIONS, position_biased)["modes"]["text"]
    assert biased["overall"]["correct"] == 1  # "A" is right for one original question...
    assert biased["circular"]["overall"]["correct"] == 0  # ...but never in every rotation
    partial = [p for p in perfect if p.question_id != "0000000#r2"]
    report = score(QUESTIONS, partial)
    assert (
        report["circular"] and report["modes"]["text"]["circular"]["overall"]["correct"] == 3
    )  # missing = wrong


def test_per_event_and_set_from_list_or_answer_text():
    h = Hierarchy.from_elements(
        [
            Element(0, 0, 21, "FX", "switch leap"),
            Element(1, 1, 31, "BB", "switch leap"),
            Element(2, 2, 41, "UB", "giant circle"),
            Element(3, 3, 1, "VT", "handspring"),
        ],
        {1: "vault", 21: "FX_leap_jump_hop", 31: "BB_leap_jump_hop", 41: "UB_circles"},
    )
    questions = [
        q("0000000", ["giant circle", "handspring"], 0, video="c0"),
        q("0000001", ["switch leap", "handspring"], 0, video="c1"),
        q("0000002", ["vault", "uneven bars"], 1, "event", video="c2"),
        q("0000003", ["vault", "uneven bars: circles"], 1, "set", video="c3"),
    ]
    predictions = [{"question_id": x.question_id, "text": x.answer} for x in questions]
    by_text = score(questions, predictions, hierarchy=h)["modes"]["text"]
    assert by_text["per_event"]["UB"]["total"] == 3
    assert by_text["per_event"]["unknown"]["total"] == 1  # "switch leap" is on FX and BB: ambiguous
    assert by_text["per_set"]["41"]["total"] == 2 and by_text["per_set"]["41"]["name"] == "UB_circles"
    by_list = score(questions, predictions, hierarchy=h, video_labels={"c0": 2, "c1": 1, "c2": 2, "c3": 2})
    assert by_list["modes"]["text"]["per_event"]["BB"]["total"] == 1
    assert "unknown" not in by_list["modes"]["text"]["per_event"]


def test_read_predictions_errors(tmp_path: Path):
    path = tmp_path / "p.jsonl"
    write_predictions(
        path, [Prediction("0000000", text="C"), Prediction("0000001", option_scores=(1.0, 2.0))]
    )
    assert read_predictions(path)["0000001"].option_scores == (1.0, 2.0)
    for body, message in [
        (
            '{"question_id": "1", "text": "A"}\n{"question_id": "1", "text": "B"}\n',
            r"p\.jsonl:2: .*already predicted",
        ),
        ('{"question_id": "1", "text": "A"}\nnot json\n', r"p\.jsonl:2: invalid JSON"),
        ('\n{"question_id": "1", "option_scores": [1.0, NaN]}\n', r"p\.jsonl:2: .*NaN"),
        ('{"question_id": "1"}\n', r"p\.jsonl:1: .*needs 'text' or 'option_scores'"),
        (
            '{"question_id": "1", "option_scores": [1, 2], "option_token_counts": [1]}\n',
            r"p\.jsonl:1: .*token",
        ),
    ]:
        path.write_text(body)
        with pytest.raises(PredictionError, match=message):
            read_predictions(path)


@pytest.fixture(scope="module")
def gym99_setup():
    hierarchy = load_hierarchy(FINEGYM_DIR / "gym99_categories.txt")
    clips = clips_from_list(FINEGYM_DIR / "gym99_val_element.txt", hierarchy.num_classes)
    questions, _ = QuestionGenerator(hierarchy, GeneratorConfig()).generate(clips)
    return hierarchy, clips, questions


def test_scores_8521_questions_fast(gym99_setup, tmp_path: Path):
    hierarchy, clips, questions = gym99_setup
    texts = ["The answer is {}.", "{}", "({})", "I cannot tell", "{}. whatever"]
    predictions = [
        Prediction(x.question_id, text=texts[i % 5].format(x.answer)) for i, x in enumerate(questions)
    ]
    started = time.perf_counter()
    report = score(questions, predictions, hierarchy, {c.video: c.label for c in clips})
    assert time.perf_counter() - started < 5.0
    text = report["modes"]["text"]
    assert text["unparseable"] == len(questions) // 5 + (len(questions) % 5 > 3)
    assert text["overall"]["correct"] == len(questions) - text["unparseable"]
    assert set(text["per_event"]) == {"VT", "FX", "BB", "UB"} and len(text["per_set"]) == 14


def test_eval_script(gym99_setup, tmp_path: Path, capsys):
    questions = gym99_setup[2]
    questions_path = tmp_path / "q.json"
    write_questions(questions_path, questions[:400])
    predictions_path = tmp_path / "p.jsonl"
    write_predictions(
        predictions_path, [Prediction(x.question_id, text=f"Answer: {x.answer}") for x in questions[:400]]
    )
    main = load_script("eval_gymqa").main
    args = [
        "--questions",
        str(questions_path),
        "--categories",
        str(FINEGYM_DIR / "gym99_categories.txt"),
        "--list",
        str(FINEGYM_DIR / "gym99_val_element.txt"),
    ]
    assert (
        main(
            [
                *args,
                "--predictions",
                str(predictions_path),
                "--out-json",
                str(tmp_path / "r.json"),
                "--out-md",
                str(tmp_path / "r.md"),
            ]
        )
        == 0
    )
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["modes"]["text"]["overall"]["accuracy"] == 1.0
    assert "| **overall** | 100.00 | 400/400 |" in (tmp_path / "r.md").read_text()
    assert (
        main(
            [
                *args,
                "--reference",
                "random,first,longest,option_frequency",
                "--out-json",
                str(tmp_path / "ref.json"),
            ]
        )
        == 0
    )
    assert set(json.loads((tmp_path / "ref.json").read_text())["reference"]) == {
        "random",
        "first",
        "longest",
        "option_frequency",
    }
    capsys.readouterr()
    predictions_path.write_text('{"question_id": "0000000", "text": "A"}\n{"question_id": 5}\n')
    assert main([*args, "--predictions", str(predictions_path)]) == 2
    assert "p.jsonl:2" in capsys.readouterr().err
    assert main([*args, "--reference", "most_frequent"]) == 2  # needs training data
