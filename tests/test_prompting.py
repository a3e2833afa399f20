"""The one prompt builder: vicuna_v1 rendering, exact label masks, video placeholders, mismatch detection —
with the tiny trained tokenizer and a real LLaMA-family tokenizer (mistral_common's v1)."""

import dataclasses
from pathlib import Path

import pytest
import sentencepiece as spm
import torch

from mllm.prompting import (
    IGNORE_INDEX,
    VICUNA_V1,
    PromptBuilder,
    PromptConfig,
    TemplateMismatchError,
    Turn,
    pad_batch,
    resolve_video_token_id,
)
from mllm.tokenizer import encode_fragment, load_tokenizer

pytest_plugins = ["tiny_llm_fixtures"]

SYSTEM = (
    "A chat between a curious user and an artificial intelligence assistant. The assistant gives helpful, "
    "detailed, and polite answers to the user's questions."
)
QUESTION = "What gymnastics move is this athlete performing? A.salto forward piked B.split jump with 1 turn"
ANSWER = "B.split jump with 1 turn"
N = 5  # video tokens


@pytest.fixture()
def builder(any_tokenizer_dir: Path) -> PromptBuilder:
    return PromptBuilder(load_tokenizer(any_tokenizer_dir), num_video_tokens=N)


def test_render_is_the_vicuna_v1_string(builder: PromptBuilder):
    assert (
        builder.render(Turn(QUESTION, ANSWER))
        == f"{SYSTEM} USER: <video>\n{QUESTION} ASSISTANT: {ANSWER}</s>"
    )
    assert builder.render(Turn(QUESTION)) == f"{SYSTEM} USER: <video>\n{QUESTION} ASSISTANT:"
    turns = [Turn(QUESTION, ANSWER), Turn("Are you sure?", "Yes."), Turn("Why?")]
    assert builder.render(turns) == (
        f"{SYSTEM} USER: <video>\n{QUESTION} ASSISTANT: {ANSWER}</s> USER: Are you sure? ASSISTANT: Yes.</s>"
        " USER: Why? ASSISTANT:"
    )


def test_labels_are_exactly_the_answer_tokens_and_eos(builder: PromptBuilder):
    turns = [Turn(QUESTION, ANSWER), Turn("Are you sure?", "Yes, 1 turn.")]
    sample = builder.encode(turns, sample_id="s1")
    ids, labels = sample.input_ids, sample.labels
    assert len(ids) == len(labels)
    # Each answer starts where the generation prompt of its turn ends (prompts are prefixes of samples).
    expected = [IGNORE_INDEX] * len(ids)
    for k, turn in enumerate(turns):
        prompt = builder.encode(turns[:k] + [Turn(turn.question)]).input_ids
        assert ids[: len(prompt)] == prompt
        answer = builder.encode_answer(turn.answer)  # answer tokens + EOS
        assert ids[len(prompt) : len(prompt) + len(answer)] == answer
        expected[len(prompt) : len(prompt) + len(answer)] = answer
    assert labels == expected
    tokenizer = builder.tokenizer
    assert ids[0] == tokenizer.bos_token_id and labels[0] == IGNORE_INDEX
    assert (
        ids.count(tokenizer.eos_token_id) == 2 and ids[-1] == tokenizer.eos_token_id and labels[-1] == ids[-1]
    )
    answered = tokenizer.decode(
        [t for t, lab in zip(ids, labels) if lab != IGNORE_INDEX], skip_special_tokens=True
    )
    assert answered.split() == f"{ANSWER} Yes, 1 turn.".split()


def test_video_placeholder_is_n_masked_ids_after_user_prefix(builder: PromptBuilder):
    sample = builder.encode(Turn(QUESTION, ANSWER))
    vid = builder.video_token_id
    assert vid == builder.tokenizer.unk_token_id
    positions = [i for i, t in enumerate(sample.input_ids) if t == vid]
    assert len(positions) == N and positions == list(range(positions[0], positions[0] + N))
    assert all(sample.labels[i] == IGNORE_INDEX for i in positions)
    before = builder.tokenizer.decode(sample.input_ids[1 : positions[0]])
    assert before == f"{SYSTEM} USER: "
    after = sample.input_ids[positions[-1] + 1]
    assert builder.tokenizer.convert_ids_to_tokens(after) == "<0x0A>"  # "\n", no dummy-prefix "▁" before it


def test_segments_equal_tokenising_the_whole_text(builder: PromptBuilder, any_tokenizer_dir: Path):
    sp = spm.SentencePieceProcessor(model_file=str(any_tokenizer_dir / "tokenizer.model"))
    text_only = PromptBuilder(builder.tokenizer, num_video_tokens=0)
    prompt = text_only.encode([Turn(QUESTION, ANSWER), Turn("And then?")])
    # No placeholder and no EOS in the middle: the whole rendered string through sentencepiece itself.
    rendered = text_only.render([Turn(QUESTION, ANSWER), Turn("And then?")])
    head, tail = rendered.split("</s>")
    eos = builder.tokenizer.eos_token_id
    assert text_only.encode(Turn(QUESTION)).input_ids == [1] + sp.encode(text_only.render(Turn(QUESTION)))
    assert (
        text_only.encode(Turn(QUESTION)).input_ids
        == builder.tokenizer(text_only.render(Turn(QUESTION)))["input_ids"]
    )
    # Text after an EOS is mid-sequence text: sentencepiece without its dummy prefix ("▁USER" from " USER").
    assert prompt.input_ids == [1] + sp.encode(head) + [eos] + encode_fragment(
        builder.tokenizer, tail, at_start=False
    )
    assert encode_fragment(builder.tokenizer, tail, at_start=False) == sp.encode(tail.lstrip(" "))
    assert (
        builder.tokenize_rendered(builder.render(Turn(QUESTION, ANSWER)))
        == builder.encode(Turn(QUESTION, ANSWER)).input_ids
    )


def test_eos_is_an_id_never_the_literal_string(builder: PromptBuilder):
    ids = builder.encode(Turn(QUESTION, ANSWER)).input_ids
    pieces = builder.tokenizer.convert_ids_to_tokens(ids)
    assert pieces[-1] == "</s>" and "/" not in "".join(pieces[-3:-1])


def test_broken_template_raises_with_the_sample_id(builder: PromptBuilder):
    # The same rendered text, but the space before the answer sits at the end of the prompt segment:
    # the answer's first word loses its "▁" when tokenised alone.
    broken = dataclasses.replace(VICUNA_V1, assistant_prefix=" ASSISTANT: ", answer_lead="")
    bad = PromptBuilder(builder.tokenizer, num_video_tokens=N, template=broken)
    assert bad.render(Turn(QUESTION, "with 1 twist")) == builder.render(Turn(QUESTION, "with 1 twist"))
    with pytest.raises(TemplateMismatchError, match="sample gymqa-0000042"):
        bad.encode(Turn(QUESTION, "with 1 twist"), sample_id="gymqa-0000042")


@pytest.mark.parametrize("question", ["What is <video> here?", "Stop</s>now"])
def test_markers_inside_user_text_raise(builder: PromptBuilder, question: str):
    with pytest.raises(TemplateMismatchError, match="sample q7"):
        builder.encode(Turn(question, ANSWER), sample_id="q7")


def test_only_the_last_turn_may_be_unanswered(builder: PromptBuilder):
    with pytest.raises(ValueError, match="turn 0 has no answer"):
        builder.encode([Turn(QUESTION), Turn("more?", "no")])


def test_video_token_resolution(mistral_tokenizer_dir: Path):
    tokenizer = load_tokenizer(mistral_tokenizer_dir)
    assert resolve_video_token_id(tokenizer) == 0
    assert resolve_video_token_id(tokenizer, "<0x00>") == 3
    with pytest.raises(ValueError, match="eos"):
        resolve_video_token_id(tokenizer, "</s>")
    with pytest.raises(ValueError, match="not in the tokenizer"):
        resolve_video_token_id(tokenizer, "<video>")
    built = PromptBuilder.from_config(tokenizer, PromptConfig(video_token="<0x00>"), num_video_tokens=2)
    assert built.encode(Turn("q", "a")).input_ids.count(3) == 2
    with pytest.raises(ValueError, match="unknown conversation template"):
        PromptBuilder(tokenizer, num_video_tokens=1, template="llama_2")


def test_pad_batch(builder: PromptBuilder):
    a, b = builder.encode(Turn("q", "a")), builder.encode(Turn(QUESTION, ANSWER))
    batch = pad_batch([a, b], pad_token_id=builder.tokenizer.pad_token_id)
    assert batch["input_ids"].shape == batch["labels"].shape == (2, len(b))
    assert batch["attention_mask"].sum(1).tolist() == [len(a), len(b)]
    assert (batch["labels"][0, len(a) :] == IGNORE_INDEX).all()
    assert torch.equal(batch["input_ids"][1], torch.tensor(b.input_ids))
