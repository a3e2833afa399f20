"""Letter mode (constrained decoding over the option letters) on an untrained micro LLM: it only ever
answers a valid letter, and the letter is what step-by-step full forwards restricted to the allowed
tokens give."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from gym_qa.answer_extraction import extract_letter
from gym_qa.questions import OPTION_LETTERS, join_options
from mllm.generation import answer_token_ids, choose_letter
from mllm.instruction_data import format_answer
from mllm.language_model import LLMConfig
from mllm.multimodal_model import MultimodalConfig, MultimodalModel
from mllm.prompting import PromptBuilder, Turn
from mllm.tokenizer import load_tokenizer

pytest_plugins = ["tiny_llm_fixtures"]

N, D_ENC = 4, 12  # video tokens per clip, encoder width
NAMES = ["salto backward tucked", "salto forward piked", "giant circle backward", "split jump", "2 turn"]


@pytest.fixture(scope="module")
def model_and_builder(tiny_llm_dir: Path) -> tuple[MultimodalModel, PromptBuilder]:
    cfg = MultimodalConfig(llm=LLMConfig(name_or_path=str(tiny_llm_dir)))
    torch.manual_seed(0)
    model = MultimodalModel.build(cfg, video_token_id=0, encoder_dim=D_ENC, encoder_fingerprint="fp").eval()
    return model, PromptBuilder(load_tokenizer(tiny_llm_dir), num_video_tokens=N)


def reference_letter(model, builder, question, answers, video) -> int:
    """Step by step: a full forward of prompt + decoded tokens, argmax among the allowed next tokens."""
    encoded = [builder.encode_answer(a, add_eos=False) for a in answers]
    prompt = builder.encode(Turn(question)).input_ids
    left, decoded = list(range(len(answers))), []
    while len(left) > 1:
        allowed = sorted({encoded[i][len(decoded)] for i in left})
        ids = torch.tensor([prompt + decoded])
        with torch.no_grad():
            logits = model(ids, torch.ones_like(ids), video_features=video).logits[0, -1]
        pick = max(allowed, key=lambda t: float(logits[t]))
        left = [i for i in left if encoded[i][len(decoded)] == pick]
        decoded.append(pick)
    return left[0]


@pytest.mark.parametrize("num_options", [2, 3, 4, 5])
def test_letter_mode_only_answers_a_valid_letter(model_and_builder, num_options):
    model, builder = model_and_builder
    letters = OPTION_LETTERS[:num_options]
    options = NAMES[:num_options]
    question = join_options("What gymnastics move is this athlete performing?", options)
    answers = [format_answer(letter, text) for letter, text in zip(letters, options, strict=True)]
    for seed in range(10):  # random clips: an untrained LLM still answers a letter in range, every time
        video = torch.randn(1, N, D_ENC, generator=torch.Generator().manual_seed(seed))
        choice = choose_letter(model, builder, question, answers, letters, video)
        assert choice.letter in letters and choice.letter == letters[choice.index]
        assert extract_letter(choice.letter, options) == choice.letter  # the evaluator reads it as is
        assert choice.index == reference_letter(model, builder, question, answers, video)
        assert 1 <= choice.forwards <= len(choice.tokens)


def test_the_decoded_tokens_start_the_chosen_answer(model_and_builder):
    model, builder = model_and_builder
    answers = [format_answer(letter, "salto backward tucked") for letter in "ABCD"]
    encoded = answer_token_ids(builder, answers)
    choice = choose_letter(model, builder, "Which?", answers, list("ABCD"), torch.randn(1, N, D_ENC))
    assert encoded[choice.index][: len(choice.tokens)] == choice.tokens
    others = [e for i, e in enumerate(encoded) if i != choice.index]
    assert all(e[: len(choice.tokens)] != choice.tokens for e in others)  # no other answer is still open
    with pytest.raises(ValueError, match="is the start of"):
        answer_token_ids(builder, ["A. salto", "A. salto backward"])
