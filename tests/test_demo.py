"""The Gradio demo through ``gradio_client`` against a server started here on 127.0.0.1: a SynthGym clip the
encoder classifies correctly comes back with its element first in the top-5 (with set and event), the MLLM
(a micro LLM trained by the MLLM fixtures, through the real ``VideoChat``) streams a non-empty answer, and
the quiz shows the model's answer and the truth. Handler-level tests need no server. What visitors cannot
do (files, bad uploads, limits, load) is in test_demo_visitor_limits.py."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import gradio as gr
import pytest
import torch
from demo_fixtures import reference_input, running_demo
from gradio_client import Client, handle_file
from mllm_run_fixtures import moved_checkpoint
from video_fixtures import write_clip

from gym_qa.clips import Clip, clip_id_of
from gym_qa.question_generator import GeneratorConfig, QuestionGenerator
from gym_qa.questions import load_questions
from mllm.chat import EncoderMismatchError, VideoChat
from mllm.demo_app import build_demo, capabilities
from mllm.demo_handlers import NO_MLLM, DemoHandlers, display_names
from mllm.demo_models import load_chat
from mllm.demo_uploads import DemoLimits
from sefar_encoder.decoding import DECODE_COUNTER
from sefar_encoder.model import SeFAREncoder
from sefar_encoder.prediction import Predictor

pytest_plugins = ["demo_fixtures", "mllm_run_fixtures", "tiny_llm_fixtures"]

LIMITS = {"max_file_mb": 1.0, "max_duration_s": 10.0, "queue_size": 24, "concurrency": 2}
QUESTION = "What gymnastics move is this athlete performing?"


@pytest.fixture(scope="module")
def chat(trained_mllm, mllm_data):
    """The real VideoChat: the micro LLM after a short stage A + B, with the video encoder it was trained on."""
    return VideoChat.from_pretrained(trained_mllm, encoder_weights=mllm_data["encoder"])


@pytest.fixture(scope="module")
def server(tmp_path_factory, fitted_encoder, synthgym_clips, chat):
    with running_demo(
        tmp_path_factory.mktemp("demo_app"), fitted_encoder, synthgym_clips["list"], chat, **LIMITS
    ) as running:
        yield running


@pytest.fixture(scope="module")
def client(server) -> Client:
    return Client(server.url, verbose=False)


@pytest.fixture(scope="module")
def correct_clip(fitted_encoder, synthgym_clips) -> tuple[Path, int]:
    """A clip the encoder classifies correctly, chosen by running the encoder directly (reference path)."""
    encoder = SeFAREncoder.from_pretrained(fitted_encoder).eval()
    for path, label in synthgym_clips["clips"]:
        with torch.no_grad():
            if int(encoder(reference_input(path)).logits.argmax()) == label:
                return path, label
    pytest.fail("the fitted encoder classifies no clip correctly")


# ---- the server ---------------------------------------------------------------------------------------


def test_uploaded_clip_top1_is_its_element(client, correct_clip, synthgym_clips):
    path, label = correct_clip
    hierarchy = synthgym_clips["hierarchy"]
    gallery, top5, table, status = client.predict(handle_file(path), api_name="/analyze")
    first = top5["confidences"][0]
    assert top5["label"] == first["label"] and first["label"].startswith(hierarchy.name_of(label))
    assert len(top5["confidences"]) == 5
    row = table["data"][0]
    assert row[1:4] == [
        hierarchy.name_of(label),
        hierarchy.set_display_name(hierarchy.set_of(label)),
        hierarchy.event_name(hierarchy.event_of(label)),
    ]
    assert len(gallery) == 8 and gallery[0]["caption"].startswith("v1 fine · f")
    assert gallery[-1]["caption"].startswith("v3 coarse · f")
    assert "top-1 correct" in status  # recognised as a SynthGym example by content


def test_chat_streams_a_nonempty_answer(client, correct_clip):
    job = client.submit(QUESTION, [], handle_file(correct_clip[0]), api_name="/chat")
    history, textbox = job.result(timeout=120)
    updates = job.outputs()
    assert textbox == ""
    assert history[0]["role"] == "user" and history[-1]["role"] == "assistant"
    answer = "".join(part["text"] for part in history[-1]["content"])
    assert answer.strip() and answer != NO_MLLM
    assert len(updates) >= 3  # the question, then the answer growing piece by piece
    # a follow-up goes into the same conversation
    history2, _ = client.predict(
        "And which apparatus?", history, handle_file(correct_clip[0]), api_name="/chat"
    )
    assert len(history2) == 4 and history2[-1]["content"]


def test_quiz_shows_model_answer_and_truth(client, correct_clip, synthgym_clips):
    path, label = correct_clip
    text = client.predict(handle_file(path), api_name="/quiz")
    assert "**MLLM answer:**" in text and ("✓ correct" in text or "✗ wrong" in text)
    assert "(the example's label)" in text
    truth = text.split("**Truth:**")[1]
    assert synthgym_clips["hierarchy"].name_of(label) in truth


# ---- handlers without a server ------------------------------------------------------------------------


def test_without_mllm_the_chat_says_so(fitted_encoder, correct_clip):
    handlers = DemoHandlers(Predictor(fitted_encoder), None, [], DemoLimits())
    updates = list(handlers.chat_turn(QUESTION, [], str(correct_clip[0])))
    assert updates[-1][0][-1] == {"role": "assistant", "content": NO_MLLM}
    quiz = handlers.quiz(str(correct_clip[0]))
    assert NO_MLLM in quiz and "unknown for an uploaded clip" in quiz  # not an example here: no truth


def test_display_names_are_unique(fitted_encoder, synthgym_clips):
    names = display_names(Predictor(fitted_encoder))
    assert len(set(names)) == len(names)
    assert (
        "salto backward tucked (floor exercise)" in names and "salto backward tucked (balance beam)" in names
    )


class _FakeChat:
    """Answers every multiple-choice question with B (only for the handler test below)."""

    def answer_mc(self, video, question):
        return SimpleNamespace(letter="B")

    def ask(self, video, question, *, stream=True, history=()):
        return iter(["B"])


def test_quiz_takes_questions_from_a_file(fitted_encoder, synthgym_clips):
    path, label = synthgym_clips["clips"][0]
    generator = QuestionGenerator(synthgym_clips["hierarchy"], GeneratorConfig(types=("set",), seed=3))
    questions, _ = generator.generate([Clip(video=clip_id_of(path), label=label)])
    handlers = DemoHandlers(Predictor(fitted_encoder), _FakeChat(), [], DemoLimits(), questions=questions)
    text = handlers.quiz(str(path))
    assert questions[0].stem in text and "(from the questions file)" in text
    assert f"**MLLM answer:** B. {questions[0].options[1]}" in text
    assert ("✓ correct" in text) == (questions[0].answer == "B")


# ---- one load, one decode -----------------------------------------------------------------------------


def test_the_mllm_shares_the_classifiers_loaded_encoder(trained_mllm, mllm_data):
    predictor = Predictor(mllm_data["encoder"])
    chat, video_encoder = load_chat(trained_mllm, predictor, mllm_data["encoder"])
    assert video_encoder.model is predictor.model and chat.encoder is None  # loaded once
    with pytest.raises(EncoderMismatchError):  # other weights named for the MLLM: its own, checked
        load_chat(trained_mllm, predictor, mllm_data["encoder"], mllm_data["other_encoder"])


def test_llm_loads_the_mllms_base_llm_from_another_place(trained_mllm, mllm_data, tiny_llm_dir, tmp_path):
    predictor = Predictor(mllm_data["encoder"])
    moved = moved_checkpoint(trained_mllm, tmp_path)  # its recorded base LLM is not on this machine
    with pytest.raises(FileNotFoundError, match="--llm"):
        load_chat(moved, predictor, mllm_data["encoder"])
    chat, _ = load_chat(moved, predictor, mllm_data["encoder"], llm_name_or_path=str(tiny_llm_dir))
    reference, _ = load_chat(trained_mllm, predictor, mllm_data["encoder"])
    for (name, a), b in zip(
        chat.model.state_dict().items(), reference.model.state_dict().values(), strict=True
    ):
        assert torch.equal(a, b), name


def test_a_clip_is_decoded_once_for_classifier_chat_and_quiz(trained_mllm, mllm_data, chat):
    predictor = Predictor(mllm_data["encoder"])
    shared_chat, video_encoder = load_chat(trained_mllm, predictor, mllm_data["encoder"])
    questions = load_questions(mllm_data["questions"])
    handlers = DemoHandlers(
        predictor, shared_chat, [], DemoLimits(), questions=questions, video_encoder=video_encoder
    )
    video = str(mllm_data["video"])
    DECODE_COUNTER.reset()
    handlers.analyze(video)
    updates = list(handlers.chat_turn(QUESTION, [], video))
    quiz = handlers.quiz(video)
    assert DECODE_COUNTER.count == 1
    assert updates[-1][0][-1]["content"].strip() and "**MLLM answer:**" in quiz
    # the tokens of that one decode are the ones the MLLM gets from a file through its own data path
    torch.testing.assert_close(handlers.clips.mllm_input(mllm_data["video"]), chat.video_features(video))


# ---- what the visitor is told ---------------------------------------------------------------------------


def test_header_says_what_the_models_can_and_cannot_do(fitted_encoder):
    predictor = Predictor(fitted_encoder)
    text = capabilities(predictor, chat=True)
    assert text.startswith("**What this can and cannot do.**")
    assert f"one of the {predictor.num_classes} elements" in text and "closed set" in text
    assert f"{sum(predictor.views)} frames" in text and "can be wrong" in text
    assert "chat" not in capabilities(predictor, chat=False)
    demo = build_demo(predictor, None)
    assert any("What this can and cannot do" in str(getattr(b, "value", "")) for b in demo.blocks.values())


def test_a_clip_shorter_than_the_sampler_is_flagged(fitted_encoder, synthgym_clips, tmp_path):
    handlers = DemoHandlers(Predictor(fitted_encoder), None, [], DemoLimits())
    short = write_clip(tmp_path / "one_frame.mp4", num_frames=1)
    _, top5, _, status = handlers.analyze(str(short))
    assert (
        top5
        and ": 1 frame," in status
        and "Too short to judge" in status
        and "samples 8 (2 + 2 + 4)" in status
    )
    _, _, _, status = handlers.analyze(str(synthgym_clips["clips"][0][0]))
    assert "Too short" not in status


def test_an_invalid_upload_is_one_message_in_its_own_panel(fitted_encoder, tmp_path):
    handlers = DemoHandlers(Predictor(fitted_encoder), _FakeChat(), [], DemoLimits())
    bad = tmp_path / "notes.mp4"
    bad.write_text("this is not a video\n")
    gallery, top5, table, status = handlers.analyze(str(bad))  # returned, not raised: no error badges
    assert (gallery, top5, table) == ([], None, []) and "This file is not a video clip" in status
    assert "This file is not a video clip" in handlers.quiz(str(bad))
    with pytest.raises(gr.Error, match="not a video"):  # the chat keeps gradio's toast (one message)
        list(handlers.chat_turn(QUESTION, [], str(bad)))
