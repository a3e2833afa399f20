"""Gym-QA evaluation of a trained MLLM: predictions in generate and likelihood mode, the evaluator's report,
circular evaluation, and a loud failure for the wrong encoder."""

from __future__ import annotations

import json
from pathlib import Path

from conftest import load_script
from mllm_run_fixtures import moved_checkpoint

from gym_qa import read_predictions
from gym_qa.answer_extraction import extract_answer_form, extract_stated_option
from gym_qa.questions import load_questions

pytest_plugins = ["mllm_run_fixtures", "tiny_llm_fixtures"]
evaluate = load_script("eval_mllm_gymqa")


def _args(data: dict[str, Path], mllm: Path, out: Path, *extra: str) -> list[str]:
    return [
        "--mllm", str(mllm), "--weights", str(data["encoder"]), "--questions", str(data["questions"]),
        "--list", str(data["test_list"]), "--cache-root", str(data["features"]),
        "--out-predictions", str(out), "--no-progress", *extra,
    ]  # fmt: skip


def test_generate_and_likelihood_predictions_and_report(mllm_data, trained_mllm, tmp_path):
    questions = load_questions(mllm_data["questions"])
    out = tmp_path / "generate.jsonl"
    assert (
        evaluate.main(_args(mllm_data, trained_mllm, out, "--mode", "generate", "--max-new-tokens", "6")) == 0
    )
    predictions = read_predictions(out)
    assert list(predictions) == [q.question_id for q in questions]
    assert all(p.text is not None and p.option_scores is None for p in predictions.values())
    report = json.loads((tmp_path / "generate_report.json").read_text())
    # free text, the trained form "C. <text>" by its letter, and by the option text it states
    assert list(report["modes"]) == ["text", "answer_form", "option_text"]
    assert report["modes"]["text"]["overall"]["total"] == len(questions)
    form = [extract_answer_form(predictions[q.question_id].text, 4) == q.answer for q in questions]
    assert report["modes"]["answer_form"]["overall"]["correct"] == sum(form)
    stated = [
        extract_stated_option(predictions[q.question_id].text, q.options) == q.answer for q in questions
    ]
    assert report["modes"]["option_text"]["overall"]["correct"] == sum(stated)
    assert (tmp_path / "generate_report.md").read_text().startswith("# Gym-QA")
    assert report["run"]["mode"] == "generate" and report["run"]["score_target"] == "answer"

    out = tmp_path / "likelihood.jsonl"
    extra = ("--mode", "likelihood", "--circular", "--categories", str(mllm_data["root"]), "--out-json")
    assert evaluate.main(_args(mllm_data, trained_mllm, out, *extra, str(tmp_path / "r.json"))) == 0
    predictions = read_predictions(out)
    assert len(predictions) == 4 * len(questions)  # every rotation of 4 options
    first = predictions[questions[0].question_id]
    assert first.text is None and len(first.option_scores) == 4 and min(first.option_token_counts) >= 3
    report = json.loads((tmp_path / "r.json").read_text())
    assert set(report["modes"]) == {"nll_sum", "nll_mean"} and report["circular"]
    assert report["modes"]["nll_sum"]["per_event"]  # --categories: per event / set breakdown
    correct = report["modes"]["nll_sum"]["overall"]["correct"]
    chosen = [
        "ABCD"[min(range(4), key=p.option_scores.__getitem__)] == q.answer
        for q in questions
        for p in [predictions[q.question_id]]
    ]
    assert correct == sum(chosen)


def test_wrong_encoder_or_unlisted_clips_fail_loudly(mllm_data, trained_mllm, tmp_path, capsys):
    args = _args(mllm_data, trained_mllm, tmp_path / "p.jsonl")
    args[args.index("--weights") + 1] = str(mllm_data["other_encoder"])
    assert evaluate.main(args) == 2
    assert "fingerprint" in capsys.readouterr().err
    args = _args(mllm_data, trained_mllm, tmp_path / "p.jsonl")
    args[args.index("--list") + 1] = str(mllm_data["root"] / "val.csv")
    assert evaluate.main(args) == 2
    assert "not listed" in capsys.readouterr().err
    assert not (tmp_path / "p.jsonl").exists()


def test_both_modes_in_one_record(mllm_data, trained_mllm, tmp_path):
    out = tmp_path / "both.jsonl"
    extra = ("--mode", "both", "--max-new-tokens", "2", "--limit", "2")
    assert evaluate.main(_args(mllm_data, trained_mllm, out, *extra)) == 0
    predictions = list(read_predictions(out).values())
    assert len(predictions) == 2 and all(p.text is not None and p.option_scores for p in predictions)
    report = json.loads((tmp_path / "both_report.json").read_text())
    assert set(report["modes"]) == {"text", "answer_form", "option_text", "nll_sum", "nll_mean"}
    assert report["questions"] == 2


def test_llm_loads_the_base_llm_from_another_place(mllm_data, trained_mllm, tiny_llm_dir, tmp_path, capsys):
    moved = moved_checkpoint(trained_mllm, tmp_path)
    extra = ("--mode", "likelihood", "--limit", "2")
    assert evaluate.main(_args(mllm_data, moved, tmp_path / "gone.jsonl", *extra)) == 2
    assert "--llm" in capsys.readouterr().err
    assert evaluate.main(_args(mllm_data, trained_mllm, tmp_path / "here.jsonl", *extra)) == 0
    moved_args = _args(mllm_data, moved, tmp_path / "moved.jsonl", *extra, "--llm", str(tiny_llm_dir))
    assert evaluate.main(moved_args) == 0
    here, there = read_predictions(tmp_path / "here.jsonl"), read_predictions(tmp_path / "moved.jsonl")
    assert here.keys() == there.keys() and all(here[q].option_scores == there[q].option_scores for q in here)


def test_letter_mode_answers_a_valid_letter_and_is_scored_as_text(mllm_data, trained_mllm, tmp_path):
    questions = load_questions(mllm_data["questions"])
    out = tmp_path / "letter.jsonl"
    assert evaluate.main(_args(mllm_data, trained_mllm, out, "--mode", "letter")) == 0
    predictions = read_predictions(out)
    assert list(predictions) == [q.question_id for q in questions]
    for q in questions:
        assert predictions[q.question_id].text in "ABCD"[: len(q.options)]  # the letter alone, always valid
    report = json.loads((tmp_path / "letter_report.json").read_text())
    assert list(report["modes"]) == ["text"] and report["run"]["mode"] == "letter"
    text = report["modes"]["text"]
    assert text["unparseable"] == 0
    correct = sum(predictions[q.question_id].text == q.answer for q in questions)
    assert text["overall"]["correct"] == correct and text["overall"]["total"] == len(questions)
