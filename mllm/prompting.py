"""The ONE prompt builder: conversation template (vicuna_v1), tokenisation by segments, label masking.

Shape notation: L text length (tokens), N video tokens per clip.

A single-turn training sample renders as (docs/DESIGN.md §Prompt and tokenizer)::

    {system} USER: <video>\\n{question} ASSISTANT: {answer}</s>

and the generation prompt stops after ``ASSISTANT:``. Further turns follow as `` USER: {q} ASSISTANT:
{a}</s>``: in token space that is what LLaVA's vicuna_v1 training produced (each round tokenised on
its own, so every round starts with ``▁USER``). ``</s>`` is never tokenised as text: the EOS id is
appended; ``<video>`` becomes exactly N placeholder ids that the multimodal model later overwrites.

Token ids are built segment by segment, so that the loss mask is exact::

    [BOS] system+" USER: " | N x <video id> | "\\n"+question+" ASSISTANT:" | " "+answer  EOS | " USER: "+...
     -100 ...................................................................| loss ........|  -100 ...

Because tokenising pieces of a string separately can differ from tokenising the whole string (a piece
boundary inside a word, or a space on the wrong side of it), every sample is also tokenised as one
rendered string (split only at ``<video>`` and ``</s>``) and the two must agree; otherwise
:class:`TemplateMismatchError` names the sample. The LLaVA family instead warns and zeroes the labels
of such samples, which trains on nothing without anyone noticing.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import NamedTuple

import torch
from transformers import PreTrainedTokenizerBase

from mllm.tokenizer import encode_fragment

IGNORE_INDEX = -100  # label of positions that carry no loss (torch's cross-entropy default)

VICUNA_V1_SYSTEM = (
    "A chat between a curious user and an artificial intelligence assistant. "
    "The assistant gives helpful, detailed, and polite answers to the user's questions."
)


class TemplateMismatchError(ValueError):
    """Segment-wise tokenisation of a sample differs from tokenising its rendered text."""


@dataclass(frozen=True)
class ConversationTemplate:
    """Text pieces of a conversation, named by where the segment boundaries fall.

    A turn renders as ``user_prefix [video_placeholder video_sep] question assistant_prefix`` (no loss),
    then ``answer_lead answer`` + EOS (loss). ``assistant_prefix`` is where a generation prompt ends;
    ``answer_lead`` must hold the space that starts the answer, or the answer's first word would be
    tokenised without its ``▁`` (the mismatch check catches such a template).
    """

    name: str
    system: str
    system_sep: str = " "  # between the system message and the first turn
    user_prefix: str = "USER: "
    video_placeholder: str = "<video>"  # rendered text only; becomes N placeholder ids
    video_sep: str = "\n"  # between the placeholder and the question
    assistant_prefix: str = " ASSISTANT:"
    answer_lead: str = " "
    eos_text: str = "</s>"  # rendered text only; becomes the EOS id
    turn_sep: str = " "  # after the EOS of a turn, before the next user_prefix

    @property
    def role_markers(self) -> tuple[str, ...]:
        """The text that opens a turn (``USER:``, ``ASSISTANT:``): an answer ends before either, so
        generation stops there (a model that missed its EOS would go on writing the conversation)."""
        markers = (self.user_prefix.strip(), self.assistant_prefix.strip())
        return tuple(dict.fromkeys(m for m in markers if m))


VICUNA_V1 = ConversationTemplate(name="vicuna_v1", system=VICUNA_V1_SYSTEM)
TEMPLATES: dict[str, ConversationTemplate] = {"vicuna_v1": VICUNA_V1}


@dataclass
class PromptConfig:
    """How prompts are built (an option group of the stage configs)."""

    template: str = field(
        default="vicuna_v1", metadata={"help": f"conversation template, one of {list(TEMPLATES)}"}
    )
    video_token: str | None = field(
        default=None,
        metadata={"help": "token whose id marks video positions; null = the tokenizer's unk token"},
    )


class Turn(NamedTuple):
    """One exchange; ``answer=None`` only on the last turn of a generation prompt."""

    question: str
    answer: str | None = None


@dataclass
class EncodedSample:
    """Token ids and labels of one conversation (lists of length L)."""

    sample_id: str
    text: str  # the rendered conversation, with the placeholder and EOS written as text
    input_ids: list[int]
    labels: list[int]  # IGNORE_INDEX where no loss; equals input_ids on answer tokens and their EOS

    def __len__(self) -> int:
        return len(self.input_ids)


def resolve_video_token_id(tokenizer: PreTrainedTokenizerBase, video_token: str | None = None) -> int:
    """Id of the video placeholder: ``video_token``'s id, or the unk id when None.

    The placeholder must be one existing id that is not BOS/EOS/pad (those occur in every batch).
    Unk is a safe default for byte-fallback sentencepiece models (LLaMA, Vicuna, the tiny LLM), whose
    text never encodes to unk; the prompt builder checks that anyway.
    """
    if video_token is None:
        if tokenizer.unk_token_id is None:
            raise ValueError(
                "the tokenizer has no unk token: set prompt.video_token to a token of its vocabulary"
            )
        token_id = tokenizer.unk_token_id
    else:
        token_id = tokenizer.convert_tokens_to_ids(video_token)
        if token_id is None or (token_id == tokenizer.unk_token_id and video_token != tokenizer.unk_token):
            raise ValueError(f"video token {video_token!r} is not in the tokenizer's vocabulary")
    taken = {"bos": tokenizer.bos_token_id, "eos": tokenizer.eos_token_id, "pad": tokenizer.pad_token_id}
    for role, other in taken.items():
        if token_id == other:
            raise ValueError(f"the video placeholder id {token_id} is also the {role} token id")
    return int(token_id)


class PromptBuilder:
    """Renders and tokenises conversations about one clip with a template; the only prompt code."""

    def __init__(
        self,
        tokenizer: PreTrainedTokenizerBase,
        *,
        num_video_tokens: int,
        template: str | ConversationTemplate = "vicuna_v1",
        video_token_id: int | None = None,
    ) -> None:
        if isinstance(template, str):
            if template not in TEMPLATES:
                raise ValueError(f"unknown conversation template {template!r}; known: {list(TEMPLATES)}")
            template = TEMPLATES[template]
        if num_video_tokens < 0:
            raise ValueError(f"num_video_tokens must be >= 0, got {num_video_tokens}")
        self.tokenizer = tokenizer
        self.template = template
        self.num_video_tokens = num_video_tokens  # N; 0 = text-only conversations
        self.video_token_id = resolve_video_token_id(tokenizer) if video_token_id is None else video_token_id
        self.bos_id = tokenizer.bos_token_id
        self.eos_id = tokenizer.eos_token_id
        # Splits a rendered conversation at the only places that are not text.
        self._marker_re = re.compile(
            f"({re.escape(template.video_placeholder)}|{re.escape(template.eos_text)})"
        )

    @classmethod
    def from_config(
        cls, tokenizer: PreTrainedTokenizerBase, cfg: PromptConfig, *, num_video_tokens: int
    ) -> PromptBuilder:
        return cls(
            tokenizer,
            num_video_tokens=num_video_tokens,
            template=cfg.template,
            video_token_id=resolve_video_token_id(tokenizer, cfg.video_token),
        )

    # -- rendering ---------------------------------------------------------------------------------

    def render(self, turns: Sequence[Turn] | Turn) -> str:
        """The conversation as text (placeholder and EOS written out), e.g. for logs and tests."""
        return "".join(text for text, _ in self._segments(_as_turns(turns)))

    def _segments(self, turns: list[Turn]) -> list[tuple[str, str]]:
        """(text, kind) pieces in order; kind is "prompt", "video", "answer" or "eos"."""
        t = self.template
        segments: list[tuple[str, str]] = []
        for i, turn in enumerate(turns):
            if turn.answer is None and i != len(turns) - 1:
                raise ValueError(f"turn {i} has no answer; only the last turn may be unanswered")
            lead = t.system + t.system_sep if i == 0 else t.turn_sep
            if i == 0 and self.num_video_tokens > 0:
                segments.append((lead + t.user_prefix, "prompt"))
                segments.append((t.video_placeholder, "video"))
                lead = t.video_sep
            else:
                lead += t.user_prefix
            segments.append((lead + turn.question + t.assistant_prefix, "prompt"))
            if turn.answer is not None:
                segments.append((t.answer_lead + turn.answer, "answer"))
                segments.append((t.eos_text, "eos"))
        return segments

    # -- tokenisation ------------------------------------------------------------------------------

    def encode(self, turns: Sequence[Turn] | Turn, *, sample_id: str = "?") -> EncodedSample:
        """Token ids and labels of a conversation (BOS first).

        All answered: a training sample (answers + their EOS carry loss). Last turn unanswered: a
        generation prompt ending with the assistant prefix (no label carries loss).
        Raises :class:`TemplateMismatchError` when the segments do not tokenise like the whole text.
        """
        turns = _as_turns(turns)
        segments = self._segments(turns)
        input_ids, labels = [self.bos_id], [IGNORE_INDEX]
        at_start = True
        for text, kind in segments:
            if kind == "video":
                ids = [self.video_token_id] * self.num_video_tokens
            elif kind == "eos":
                ids = [self.eos_id]
            else:
                ids = encode_fragment(self.tokenizer, text, at_start=at_start)
            input_ids += ids
            labels += ids if kind in ("answer", "eos") else [IGNORE_INDEX] * len(ids)
            at_start = at_start and not text
        text = "".join(text for text, _ in segments)
        self._check(sample_id, text, input_ids)
        return EncodedSample(sample_id=sample_id, text=text, input_ids=input_ids, labels=labels)

    def encode_answer(self, answer: str, *, add_eos: bool = True) -> list[int]:
        """Ids that follow a generation prompt for ``answer`` (option scoring): exactly the answer
        tokens of a training sample, EOS included by default (it tells "salto" from "salto backward")."""
        ids = encode_fragment(self.tokenizer, self.template.answer_lead + answer, at_start=False)
        return ids + [self.eos_id] if add_eos else ids

    def tokenize_rendered(self, text: str) -> list[int]:
        """Reference tokenisation of a rendered conversation: BOS, then the text split only at the
        placeholder (-> N ids) and EOS markers (-> EOS id), each chunk tokenised whole."""
        ids = [self.bos_id]
        for i, chunk in enumerate(self._marker_re.split(text)):
            if chunk == self.template.video_placeholder:
                ids += [self.video_token_id] * self.num_video_tokens
            elif chunk == self.template.eos_text:
                ids.append(self.eos_id)
            else:
                ids += encode_fragment(self.tokenizer, chunk, at_start=i == 0)
        return ids

    def _check(self, sample_id: str, text: str, input_ids: list[int]) -> None:
        reference = self.tokenize_rendered(text)
        if reference != input_ids:
            k = next((i for i, (a, b) in enumerate(zip(input_ids, reference)) if a != b), None)
            k = min(len(input_ids), len(reference)) if k is None else k
            seg = self.tokenizer.convert_ids_to_tokens(input_ids[max(0, k - 3) : k + 3])
            ref = self.tokenizer.convert_ids_to_tokens(reference[max(0, k - 3) : k + 3])
            raise TemplateMismatchError(
                f"sample {sample_id}: template {self.template.name!r} tokenises differently by segments "
                f"({len(input_ids)} ids) than as one text ({len(reference)} ids); first difference at "
                f"position {k}: segments {seg} vs text {ref}"
            )
        count = input_ids.count(self.video_token_id)
        if count != self.num_video_tokens:
            raise TemplateMismatchError(
                f"sample {sample_id}: {count} tokens have the video placeholder id {self.video_token_id}, "
                f"expected {self.num_video_tokens} (does the text encode to it, e.g. as unk?)"
            )


def _as_turns(turns: Sequence[Turn] | Turn) -> list[Turn]:
    if isinstance(turns, Turn):
        return [turns]
    turns = [t if isinstance(t, Turn) else Turn(*t) for t in turns]
    if not turns:
        raise ValueError("a conversation needs at least one turn")
    return turns


def pad_batch(samples: Sequence[EncodedSample], pad_token_id: int) -> dict[str, torch.Tensor]:
    """Right-pad samples into ``input_ids``, ``attention_mask`` and ``labels`` of shape [B, L_max]."""
    length = max(len(s) for s in samples)
    input_ids = torch.full((len(samples), length), pad_token_id, dtype=torch.long)
    labels = torch.full((len(samples), length), IGNORE_INDEX, dtype=torch.long)
    attention_mask = torch.zeros((len(samples), length), dtype=torch.long)
    for b, s in enumerate(samples):
        input_ids[b, : len(s)] = torch.tensor(s.input_ids)
        labels[b, : len(s)] = torch.tensor(s.labels)
        attention_mask[b, : len(s)] = 1
    return {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}
