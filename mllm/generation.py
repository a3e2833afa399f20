"""Answer generation about a clip: greedy or sampled, streamed as text pieces.

Shape notation: N video tokens, L prompt length, D LLM width.

``generate`` runs in a worker thread and pushes decoded text into a ``TextIteratorStreamer``;
:func:`stream_generate` is a plain generator over those pieces (what the Gradio demo iterates).
Generation starts from ``inputs_embeds`` (the prompt with projected video tokens) and stops at EOS, at
a role marker of the conversation template (``USER:``, ``ASSISTANT:``: transformers' ``stop_strings``;
the marker and what follows never reach the answer) or after ``max_new_tokens``. An exception in the
worker is re-raised in the consumer, and closing the generator early stops the worker at its next token.

:func:`choose_letter` is constrained decoding of a multiple-choice answer: the LLM's next-token
distribution after the generation prompt, restricted to the tokens that continue some option's trained
answer (stage B answers start with the option letter, ``"C. <text>"``), argmax, until one option is
left. It can only ever answer with a valid letter: the letter the trained answer would start with,
read without letting the model go on to restate (or misstate) an option's text.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from transformers import PreTrainedTokenizerBase, StoppingCriteria, StoppingCriteriaList, TextIteratorStreamer

from mllm.multimodal_model import MultimodalModel
from mllm.prompting import PromptBuilder, Turn


@dataclass
class GenerationOptions:
    """Decoding option group."""

    max_new_tokens: int = field(default=64, metadata={"help": "upper bound on generated tokens"})
    do_sample: bool = field(default=False, metadata={"help": "sample (true) or greedy (false)"})
    temperature: float = field(default=0.7, metadata={"help": "sampling temperature (do_sample only)"})
    top_p: float = field(default=0.9, metadata={"help": "nucleus sampling mass (do_sample only)"})
    seed: int | None = field(
        default=None, metadata={"help": "torch seed set before sampling (null = leave RNG)"}
    )


class _StopWhenSet(StoppingCriteria):
    """Stops generation once the consumer has gone away."""

    def __init__(self, event: threading.Event) -> None:
        self.event = event

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor, **kwargs: Any) -> torch.Tensor:
        return torch.full(
            (input_ids.shape[0],), self.event.is_set(), dtype=torch.bool, device=input_ids.device
        )


def until_markers(pieces: Iterable[str], markers: Sequence[str]) -> Iterator[str]:
    """The text of ``pieces`` up to the first of ``markers`` (without the marker, what follows it, or the
    spaces before it). Text that may still turn into a marker is held back until the next piece says."""
    if not markers:
        yield from pieces
        return
    held = ""
    for piece in pieces:
        held += piece
        found = [i for i in (held.find(m) for m in markers) if i >= 0]
        if found:
            if text := held[: min(found)].rstrip():
                yield text
            return
        # the longest tail that is blank, or blank then the start of a marker, waits for more text
        cut = next(i for i in range(len(held) + 1) if any(m.startswith(held[i:].lstrip()) for m in markers))
        if cut:
            yield held[:cut]
            held = held[cut:]
    if held:
        yield held


def stream_generate(
    model: MultimodalModel,
    tokenizer: PreTrainedTokenizerBase,
    input_ids: torch.Tensor,
    video_features: torch.Tensor | None = None,
    options: GenerationOptions | None = None,
    stop_strings: Sequence[str] = (),
) -> Iterator[str]:
    """Yield text pieces of the answer to a prompt ``input_ids`` [1, L] (ends with ``ASSISTANT:``); the
    answer ends at the first of ``stop_strings`` (the template's role markers), which is not yielded."""
    options = options or GenerationOptions()
    input_ids = input_ids.to(model.device)
    attention_mask = torch.ones_like(input_ids)
    with torch.no_grad():
        inputs_embeds = model.embed(input_ids, video_features, attention_mask)  # [1, L, D]
    streamer = TextIteratorStreamer(tokenizer, skip_prompt=True, skip_special_tokens=True)
    stop = threading.Event()
    kwargs: dict[str, Any] = {
        "inputs_embeds": inputs_embeds,
        "attention_mask": attention_mask,
        "max_new_tokens": options.max_new_tokens,
        "do_sample": options.do_sample,
        "eos_token_id": tokenizer.eos_token_id,
        "pad_token_id": tokenizer.pad_token_id,
        "streamer": streamer,
        "stopping_criteria": StoppingCriteriaList([_StopWhenSet(stop)]),
    }
    if stop_strings:  # generation stops at the token completing a marker; until_markers cuts the text
        kwargs.update(stop_strings=list(stop_strings), tokenizer=tokenizer)
    if options.do_sample:
        kwargs.update(temperature=options.temperature, top_p=options.top_p)
    else:  # the checkpoint's generation_config may carry sampling values; greedy ignores them
        kwargs.update(temperature=None, top_p=None, top_k=None)
    errors: list[Exception] = []

    def work() -> None:
        try:
            if options.seed is not None:
                torch.manual_seed(options.seed)
            with torch.no_grad():
                model.llm.generate(**kwargs)
        except Exception as err:  # noqa: BLE001 - re-raised in the consumer, below
            errors.append(err)
        finally:  # the consumer blocks on the queue until a stop signal: always send one (extra ones are unread)
            streamer.on_finalized_text("", stream_end=True)

    worker = threading.Thread(target=work, daemon=True)
    worker.start()
    try:
        for piece in until_markers(streamer, stop_strings):
            if piece:
                yield piece
    finally:
        stop.set()
        worker.join()
    if errors:
        raise errors[0]


@dataclass
class LetterChoice:
    """Constrained answer to a multiple-choice question: the chosen option and how it was decoded."""

    letter: str
    index: int
    tokens: list[int]  # the decoded tokens, up to the one that leaves a single option
    forwards: int  # LLM forwards it took (one per position where more than one option was left)


def answer_token_ids(builder: PromptBuilder, answers: Sequence[str]) -> list[list[int]]:
    """The trained answers' tokens as they follow the generation prompt (no EOS); no answer may be the
    start of another (then no token would ever choose the shorter one)."""
    encoded = [builder.encode_answer(answer, add_eos=False) for answer in answers]
    for i, a in enumerate(encoded):
        for j, b in enumerate(encoded):
            if i != j and b[: len(a)] == a:
                raise ValueError(f"answer {answers[i]!r} is the start of {answers[j]!r} in tokens")
    return encoded


@torch.no_grad()
def choose_letter(
    model: MultimodalModel,
    builder: PromptBuilder,
    question: str,
    answers: Sequence[str],
    letters: Sequence[str],
    video_features: torch.Tensor | None = None,
) -> LetterChoice:
    """Constrained greedy decoding of one multiple-choice answer (see the module docstring).

    ``answers`` are the options' trained answers (``format_answer(letter, text)``), ``letters`` their
    letters; the prompt is the generation prompt of ``question`` about the clip ``video_features``
    [1, N, D_enc]. At each position the allowed tokens are the next tokens of the answers still
    consistent with what was decoded (a trie over the answers' tokens); a single allowed token is taken
    without a forward, several are decided by the argmax of the LLM's next-token logits among them (the
    first wins an exact tie). Decoding ends when one answer is left: its letter. With the letters'
    tokens (``▁A`` ...) that is one forward; a vocabulary without ``▁C`` spells it ``▁`` ``C``, and the
    trie follows that too.
    """
    if len(answers) != len(letters) or len(answers) < 2:
        raise ValueError(
            f"need one answer per letter and at least two, got {len(answers)} and {len(letters)}"
        )
    encoded = answer_token_ids(builder, answers)
    prompt = builder.encode(Turn(question), sample_id="letter").input_ids
    left, decoded, forwards = list(range(len(answers))), [], 0
    while len(left) > 1:
        position = len(decoded)
        allowed = list(dict.fromkeys(encoded[i][position] for i in left))  # next tokens, option order
        if len(allowed) == 1:
            pick = allowed[0]
        else:
            input_ids = torch.tensor([prompt + decoded], device=model.device)  # [1, L + decoded]
            inputs_embeds = model.embed(input_ids, video_features)  # [1, L + decoded, D]
            logits = model.llm(inputs_embeds=inputs_embeds, logits_to_keep=1).logits[0, -1]  # [V]
            forwards += 1
            pick = allowed[int(logits[torch.tensor(allowed, device=logits.device)].argmax())]
        decoded.append(pick)
        left = [i for i in left if encoded[i][position] == pick]
    index = left[0]
    return LetterChoice(letters[index], index, decoded, forwards)


def generate_answer(
    model: MultimodalModel,
    builder: PromptBuilder,
    turns: list[Turn] | Turn | str,
    video_features: torch.Tensor | None = None,
    options: GenerationOptions | None = None,
    *,
    stream: bool = False,
) -> str | Iterator[str]:
    """Answer the last (unanswered) turn of a conversation about a clip: the whole text, or with
    ``stream=True`` an iterator of pieces. A plain string is a single question."""
    if isinstance(turns, str):
        turns = Turn(turns)
    turns = [turns] if isinstance(turns, Turn) else list(turns)
    if turns[-1].answer is not None:
        raise ValueError("the last turn must be unanswered for generation")
    prompt = builder.encode(turns, sample_id="generation")
    input_ids = torch.tensor([prompt.input_ids])  # [1, L]
    pieces = stream_generate(
        model, builder.tokenizer, input_ids, video_features, options, builder.template.role_markers
    )
    return pieces if stream else "".join(pieces)
