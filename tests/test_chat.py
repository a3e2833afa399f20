"""VideoChat and scripts/chat.py: streamed answers about a clip file, multiple choice by likelihood (the same
scores from the file as from the feature cache), question forms, and the encoder fingerprint check."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import load_script

from gym_qa.clips import clip_id_of
from gym_qa.questions import load_questions
from mllm.chat import EncoderMismatchError, VideoChat
from mllm.feature_cache import FeatureCache, build_feature_cache
from mllm.generation import GenerationOptions
from mllm.prompting import Turn

pytest_plugins = ["mllm_run_fixtures"]
chat_cli = load_script("chat")


@pytest.fixture(scope="module")
def chat(mllm_data, trained_mllm) -> VideoChat:
    return VideoChat.from_pretrained(
        trained_mllm, mllm_data["encoder"], generation=GenerationOptions(max_new_tokens=6)
    )


def test_ask_streams_the_greedy_answer(chat, mllm_data):
    video = mllm_data["video"]
    pieces = list(chat.ask(video, "What gymnastics move is this athlete performing?"))
    assert pieces and all(isinstance(p, str) for p in pieces)
    assert "".join(pieces) == chat.ask(
        video, "What gymnastics move is this athlete performing?", stream=False
    )
    follow_up = chat.ask(
        video, "Which apparatus?", history=[Turn("What move?", "".join(pieces))], stream=False
    )
    assert isinstance(follow_up, str)


def test_answer_mc_from_file_equals_from_cache(chat, mllm_data):
    question = load_questions(mllm_data["questions"])[0]
    from_file = chat.answer_mc(mllm_data["video"], question)
    build_feature_cache(chat.encoder, mllm_data["test_list"], mllm_data["features"], progress=False)
    cache = FeatureCache.for_encoder(mllm_data["features"], chat.encoder)
    from_cache = chat.answer_mc(cache.get([question.video]), question)
    assert question.video == clip_id_of(mllm_data["video"])
    torch.testing.assert_close(torch.tensor(from_file.option_scores), torch.tensor(from_cache.option_scores))
    assert from_file.letter == "ABCD"[min(range(4), key=from_file.option_scores.__getitem__)]
    assert from_file.continuations[question.answer_index] == f"{question.answer}. {question.answer_text}"
    # The same question as its JSON record and as plain text.
    assert chat.answer_mc(mllm_data["video"], question.to_record()).option_scores == from_file.option_scores
    assert chat.answer_mc(mllm_data["video"], question.question).option_scores == from_file.option_scores
    prediction = from_file.to_prediction(question.question_id)
    assert prediction.option_scores == tuple(from_file.option_scores)


def test_wrong_encoder_is_refused(mllm_data, trained_mllm):
    with pytest.raises(EncoderMismatchError, match="fingerprint"):
        VideoChat.from_pretrained(trained_mllm, mllm_data["other_encoder"])
    chat = VideoChat.from_pretrained(trained_mllm)  # no encoder: tokens only
    with pytest.raises(ValueError, match="no encoder"):
        chat.ask(mllm_data["video"], "What move?")


def test_cli_streams_to_stdout(mllm_data, trained_mllm, capsys):
    args = [
        "--encoder",
        str(mllm_data["encoder"]),
        "--mllm",
        str(trained_mllm),
        "--video",
        str(mllm_data["video"]),
    ]
    assert chat_cli.main([*args, "--max-new-tokens", "4", "What move is this?"]) == 0
    assert capsys.readouterr().out.endswith("\n")
    question = load_questions(mllm_data["questions"])[0].question
    assert chat_cli.main([*args, "--mc", question]) == 0
    answer = json.loads(capsys.readouterr().out)
    assert answer["letter"] in "ABCD" and len(answer["option_scores"]) == 4
    assert chat_cli.main([*args[:-1], str(mllm_data["root"] / "missing.mp4"), "What?"]) == 2
    assert "not found" in capsys.readouterr().err
