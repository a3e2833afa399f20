"""Answer generation about a clip: greedy or sampled, streamed as text pieces.

Shape notation: N video tokens, L prompt length, D LLM width.

``generate`` runs in a worker thread and pushes decoded text into a ``TextIteratorStreamer``;
:func:`stream_generate` is a plain generator over those pieces (what the Gradio demo iterates).
Generation starts from ``inputs_embeds`` (the prompt with projected video tokens) and stops at EOS, at
a role marker of the conversation template (``USER:``, ``ASSISTANT:``: transformers' ``stop_strings``;
the marker and what follows never reach the answer) or after ``max_new_tokens``. An exception in the
worker is re-raised in the consumer, and closing the generator early stops the worker at its next token.
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
