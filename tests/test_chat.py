"""VideoChat and scripts/chat.py: streamed answers about a clip file, multiple choice by likelihood (the same
scores from the file as from the feature cache), question forms, and the encoder fingerprint check."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import load_script
from mllm_run_fixtures import moved_checkpoint
from transformers import LogitsProcessor

from gym_qa.clips import clip_id_of
from gym_qa.questions import load_questions
from mllm.chat import EncoderMismatchError, VideoChat
from mllm.feature_cache import FeatureCache, build_feature_cache
from mllm.generation import GenerationOptions, until_markers
from mllm.prompting import VICUNA_V1, Turn

pytest_plugins = ["mllm_run_fixtures", "tiny_llm_fixtures"]
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


# ---- answers end at the template's role markers ----------------------------------------------------------
RUN_ON = "B. salto forward piked USER: And the apparatus? ASSISTANT: C. floor exercise"


@pytest.mark.parametrize(
    "pieces",
    [
        [RUN_ON],
        ["B. salto ", "forward piked US", "ER: And", " the apparatus? ASSISTANT: C."],
        ["B.", " salto forward piked", " ", "U", "S", "E", "R", ":", " And"],
    ],
)
def test_until_markers_cuts_before_a_marker_split_across_pieces(pieces):
    markers = VICUNA_V1.role_markers
    assert markers == ("USER:", "ASSISTANT:")
    assert "".join(until_markers(iter(pieces), markers)) == "B. salto forward piked"


def test_until_markers_leaves_an_answer_without_markers_whole():
    pieces = ["B. ", "salto", " US", "A ", "U"]  # "US" and a final "U" look like a marker's start, are not
    assert "".join(until_markers(iter(pieces), ("USER:", "ASSISTANT:"))) == "B. salto USA U"
    assert list(until_markers(iter(["a", " b"]), ())) == ["a", " b"]


class _Script(LogitsProcessor):
    """Forces the generated tokens to be ``ids`` (a model that runs on past its answer)."""

    def __init__(self, ids: list[int]):
        self.ids, self.calls = ids, 0

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        forced = torch.full_like(scores, float("-inf"))
        forced[:, self.ids[min(self.calls, len(self.ids) - 1)]] = 0.0
        self.calls += 1
        return forced


def test_generation_stops_at_the_role_markers(chat, mllm_data, monkeypatch):
    script = _Script(chat.builder.encode_answer(RUN_ON))
    generate = chat.model.llm.generate
    monkeypatch.setattr(chat.model.llm, "generate", lambda **kw: generate(**kw, logits_processor=[script]))
    options = GenerationOptions(max_new_tokens=len(script.ids))
    streamed = list(chat.ask(mllm_data["video"], "What move?", options=options))
    assert "".join(streamed) == "B. salto forward piked" and "USER" not in "".join(streamed)
    marker_end = len(chat.builder.encode_answer(RUN_ON.split(" And")[0], add_eos=False))
    assert script.calls == marker_end < len(script.ids)  # generation stopped at the marker's last token
    script.calls = 0
    assert (
        chat.ask(mllm_data["video"], "What move?", stream=False, options=options) == "B. salto forward piked"
    )


def test_cli_llm_loads_the_base_llm_from_another_place(
    mllm_data, trained_mllm, tiny_llm_dir, tmp_path, capsys
):
    question = load_questions(mllm_data["questions"])[0].question
    args = ["--encoder", str(mllm_data["encoder"]), "--video", str(mllm_data["video"]), "--mc", question]
    assert chat_cli.main([*args, "--mllm", str(trained_mllm)]) == 0
    reference = json.loads(capsys.readouterr().out)
    moved = moved_checkpoint(trained_mllm, tmp_path)
    assert chat_cli.main([*args, "--mllm", str(moved)]) == 2  # the recorded LLM is not here: one line
    err = capsys.readouterr().err
    assert "vicuna-7b-v1.5" in err and "--llm" in err and "Traceback" not in err
    assert chat_cli.main([*args, "--mllm", str(moved), "--llm", str(tiny_llm_dir)]) == 0
    assert json.loads(capsys.readouterr().out) == reference  # the same LLM (and tokenizer), found elsewhere
