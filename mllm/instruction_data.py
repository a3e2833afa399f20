"""Training samples of the two MLLM stages, their data order, and batches built from the feature cache.

Shape notation: B batch, N video tokens per clip, D_enc encoder width, L text length.

::

    labeled list splits/<rate>/train.csv + Hierarchy ──caption_samples──►  stage A (align) samples
    Gym-QA JSON filtered to the labeled clips ─┐
      (or generated from the labeled list)   ──┴─question_samples──►        stage B (instruct) samples
    samples ──InstructionData(PromptBuilder, FeatureCache)──► batch(indices):
        input_ids / attention_mask / labels [B, L], video_features [B, N, D_enc]

Both stages see only the labeled subset of the encoder's label rate (docs/DESIGN.md §Training stages), so
every encoder compared is aligned and instructed on the same clips and questions.

Conversations (vicuna_v1, rendered by :mod:`mllm.prompting`)::

    stage A   USER: <video>\\nDescribe the move. ASSISTANT: The athlete performs salto backward tucked.</s>
    stage B   USER: <video>\\nWhat gymnastics move is this athlete performing? A.x B.y C.salto backward
              tucked D.z ASSISTANT: C. salto backward tucked</s>

**Stage B answer format: ``"<letter>. <option text>"``** (:func:`format_answer`). Why the letter *and*
the text: the letter is what the Gym-QA evaluator extracts, the text ties the answer to the stage A
captions (the model learns to name the move, not only to pick a position). Why a space after the dot,
unlike the question's ``"C.salto"``: with sentencepiece, ``"C.salto"`` tokenises the first word without
its word-start piece (``sal`` ``to``), ``"C. salto"`` as ``▁salto``, the same ids the stage A captions
use; :func:`gym_qa.extract_letter` reads ``"C. salto backward tucked"`` as C.

**The trained form is the evaluated form.** Free-text reading (``extract_letter``) calls an answer that
states another option's text after its letter ("C. <text of A>") self-contradictory, and issue 16 counted
such answers in 50-58 % of greedy answers on the SynthGym bench. The evaluation therefore also reads
answers exactly as they were trained: ``scripts/eval_mllm_gymqa.py`` reports mode ``answer_form``
(:func:`gym_qa.answer_extraction.extract_answer_form`: "C. <any text>" is C, anything else unparseable)
beside free text, and its ``--mode letter`` decodes only the start of this form, constrained to the
options' letters (:func:`mllm.generation.choose_letter`), so it always answers a valid letter.

**Data order**: one permutation of the samples per epoch, seeded by ``(seed, epoch)``
(:func:`epoch_order`); optimizer step ``s`` consumes global batch ``s`` of it, and each process takes
its contiguous slice of every global batch, split into micro-batches (:func:`process_micro_batches`).
A resumed run and a run with another number of processes therefore see the same global batches.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from gym_qa.clips import Clip, clip_id_of
from gym_qa.hierarchy import Hierarchy
from gym_qa.lists import ListEntry
from gym_qa.question_generator import GeneratorConfig, QuestionGenerator
from gym_qa.questions import Question
from mllm.feature_cache import FeatureCache
from mllm.prompting import IGNORE_INDEX, EncodedSample, PromptBuilder, Turn, pad_batch

CAPTION_QUESTION = "Describe the move."  # stage A instruction (the tiny LLM's corpus uses it too)
CAPTION_FORMAT = "The athlete performs {name}."
ANSWER_FORMAT = "{letter}. {text}"


def caption_text(name: str) -> str:
    """Stage A target for an element name: ``"The athlete performs <name>."``."""
    return CAPTION_FORMAT.format(name=name)


def format_answer(letter: str, text: str) -> str:
    """Stage B target for a multiple-choice answer: ``"C. salto backward tucked"``."""
    return ANSWER_FORMAT.format(letter=letter, text=text)


# What option-likelihood scoring appends to the prompt for option ``letter``/``text``: ``answer`` is the
# stage B target (score instructed models with it), ``caption`` the stage A target (zero-shot scoring of an
# aligned-only model), ``option`` the bare option text.
SCORE_TARGETS: dict[str, Callable[[str, str], str]] = {
    "answer": format_answer,
    "caption": lambda letter, text: caption_text(text),
    "option": lambda letter, text: text,
}


def option_continuations(question: Question, target: str = "answer") -> list[str]:
    """The continuation scored for each option of ``question`` (see :data:`SCORE_TARGETS`)."""
    if target not in SCORE_TARGETS:
        raise ValueError(f"unknown score target {target!r}; known: {list(SCORE_TARGETS)}")
    return [SCORE_TARGETS[target](letter, text) for letter, text in zip(question.letters, question.options)]


@dataclass(frozen=True)
class InstructionSample:
    """One training conversation about one clip."""

    sample_id: str  # "caption:<clip id>" or "question:<question id>"
    clip_id: str  # key of the clip's features in the cache (``gym_qa.clips.clip_id_of``, Gym-QA's ``video``)
    turns: tuple[Turn, ...]


def caption_samples(entries: Sequence[ListEntry], hierarchy: Hierarchy) -> list[InstructionSample]:
    """Stage A: one caption per labeled clip, the element name taken from the hierarchy."""
    samples = []
    for entry in entries:
        if not 0 <= entry.label < hierarchy.num_classes:
            raise ValueError(
                f"line {entry.line} ({entry.raw_path}): label {entry.label} outside the hierarchy's "
                f"{hierarchy.num_classes} classes"
            )
        cid = clip_id_of(entry.raw_path)
        turn = Turn(CAPTION_QUESTION, caption_text(hierarchy.name_of(entry.label)))
        samples.append(InstructionSample(f"caption:{cid}", cid, (turn,)))
    return samples


def generate_questions(
    entries: Sequence[ListEntry], hierarchy: Hierarchy, config: GeneratorConfig
) -> tuple[list[Question], dict[str, Any]]:
    """Gym-QA questions about the clips of a list (when no question file is given); frame lengths are
    left at 0, they play no part in training."""
    clips = [Clip(video=clip_id_of(e.raw_path), label=e.label) for e in entries]
    return QuestionGenerator(hierarchy, config).generate(clips)


def question_samples(
    questions: Sequence[Question], allowed_clips: set[str] | None = None
) -> tuple[list[InstructionSample], int]:
    """Stage B: one sample per question whose clip is in ``allowed_clips`` (None = all).

    Returns the samples and how many questions were dropped because their clip is not allowed (a
    question file usually covers the whole train pool; only its labeled clips may be used).
    """
    samples, dropped = [], 0
    for q in questions:
        if allowed_clips is not None and q.video not in allowed_clips:
            dropped += 1
            continue
        turn = Turn(q.question, format_answer(q.answer, q.answer_text))
        samples.append(InstructionSample(f"question:{q.question_id}", q.video, (turn,)))
    return samples, dropped


# ---------------------------------------------------------------------------------------- order
def epoch_order(num_samples: int, seed: int, epoch: int) -> np.ndarray:
    """The permutation of sample indices used in ``epoch``: a function of ``(seed, epoch)`` only."""
    return np.random.default_rng([seed, epoch]).permutation(num_samples)


def process_micro_batches(
    global_batch: Sequence[int], rank: int, world_size: int, grad_accum: int
) -> list[list[int]]:
    """Process ``rank``'s contiguous slice of a global batch, cut into ``grad_accum`` micro-batches."""
    size = len(global_batch)
    if size % (world_size * grad_accum):
        raise ValueError(
            f"a global batch of {size} does not split into {world_size} processes x {grad_accum} micro-batches"
        )
    per_process = size // world_size
    mine = list(global_batch[rank * per_process : (rank + 1) * per_process])
    micro = per_process // grad_accum
    return [mine[i * micro : (i + 1) * micro] for i in range(grad_accum)]


# ---------------------------------------------------------------------------------------- batches
class InstructionData:
    """Encoded samples + the feature cache: ``batch(indices)`` gives tensors ready for the model.

    Every sample is tokenised once, up front (template/tokenizer mismatches fail here, naming the
    sample), and its clip must be in the cache.
    """

    def __init__(
        self,
        samples: Sequence[InstructionSample],
        builder: PromptBuilder,
        cache: FeatureCache,
        max_length: int | None = None,
    ) -> None:
        if not samples:
            raise ValueError("no training samples")
        missing = sorted({s.clip_id for s in samples if s.clip_id not in cache})
        if missing:
            raise KeyError(
                f"{cache.directory}: no features for {len(missing)} clip(s) of the samples, e.g. {missing[:5]}"
            )
        self.samples = list(samples)
        self.builder = builder
        self.cache = cache
        self.encoded: list[EncodedSample] = [builder.encode(s.turns, sample_id=s.sample_id) for s in samples]
        if max_length is not None:
            longest = max(self.encoded, key=len)
            if len(longest) > max_length:
                raise ValueError(
                    f"sample {longest.sample_id} has {len(longest)} tokens, more than the LLM's "
                    f"{max_length} positions"
                )
        # Tokens carrying loss per sample (the labels are already aligned with the ids they predict).
        self.loss_tokens = [sum(label != IGNORE_INDEX for label in e.labels) for e in self.encoded]

    def __len__(self) -> int:
        return len(self.samples)

    def num_loss_tokens(self, indices: Sequence[int]) -> int:
        return sum(self.loss_tokens[i] for i in indices)

    def batch(self, indices: Sequence[int]) -> dict[str, torch.Tensor]:
        """``input_ids``, ``attention_mask``, ``labels`` [B, L] (right-padded) and ``video_features``
        [B, N, D_enc] (float32) of the samples ``indices``."""
        out = pad_batch([self.encoded[i] for i in indices], self.builder.tokenizer.pad_token_id)
        out["video_features"] = self.cache.get([self.samples[i].clip_id for i in indices]).float()
        return out
