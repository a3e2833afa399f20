"""Ask a trained video MLLM about a clip: free-form answers (streamed) and multiple choice by likelihood.

Shape notation: N video tokens per clip, D_enc encoder width.

::

    video file ──encoder (the feature cache's data path: decode, sample, resize, encode)──► [1, N, D_enc]
        ──► MultimodalModel (projector + LLM + LoRA) ──► streamed text  |  option NLLs -> letter

    chat = VideoChat.from_pretrained("runs/mllm/instruct/mllm", encoder_weights="runs/encoder/encoder")
    for piece in chat.ask("clip.mp4", "What gymnastics move is this athlete performing?"):
        print(piece, end="", flush=True)
    chat.answer_mc("clip.mp4", question)          # a gym_qa Question or its JSON record -> MCAnswer

The encoder must be the one whose features trained the MLLM: its fingerprint (weights, token options,
preprocessing) is checked against the checkpoint's. Its name and builder options (token options, frames
per clip, ...) default to the encoder description the checkpoint's ``instruction.json`` recorded (rebuilt
by :func:`mllm.encoders.builder_options`), so ``encoder_weights`` is usually all that is needed.
Wherever a clip is expected, precomputed tokens ``[1, N, D_enc]`` (e.g. from the feature cache) may be
given instead of a path.
"""

from __future__ import annotations

import os
from collections import OrderedDict
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from transformers import PreTrainedTokenizerBase

from gym_qa.lists import ListEntry
from gym_qa.questions import OPTION_LETTERS, RECORD_FIELDS, Question, split_options
from gym_qa.scoring import Prediction
from mllm.encoders import VideoEncoder, build_video_encoder, builder_options
from mllm.feature_cache import encode_entries
from mllm.generation import GenerationOptions, generate_answer
from mllm.instruction_data import SCORE_TARGETS
from mllm.multimodal_model import MultimodalModel, read_checkpoint_config
from mllm.option_scoring import score_question
from mllm.prompting import PromptBuilder, Turn
from mllm.tokenizer import load_tokenizer
from sefar_encoder.decoding import Backend

Video = str | os.PathLike | torch.Tensor  # a clip file, or its tokens [1, N, D_enc] / [N, D_enc]


class EncoderMismatchError(ValueError):
    """The video encoder is not the one whose features the MLLM was trained on."""


@dataclass
class MCAnswer:
    """The option a model prefers, with the per-option NLLs (lower is better) it was chosen by."""

    letter: str
    index: int
    option_scores: list[float]  # summed NLL of each option's continuation
    option_token_counts: list[int]
    continuations: list[str] = field(default_factory=list)  # what was scored after "ASSISTANT:"

    def to_prediction(self, question_id: str) -> Prediction:
        """A Gym-QA prediction record (likelihood mode) for the evaluator."""
        return Prediction(
            question_id,
            option_scores=tuple(self.option_scores),
            option_token_counts=tuple(self.option_token_counts),
        )


class VideoChat:
    """A trained MLLM (+ optionally its video encoder) behind two calls: :meth:`ask` and :meth:`answer_mc`."""

    def __init__(
        self,
        model: MultimodalModel,
        tokenizer: PreTrainedTokenizerBase,
        *,
        num_video_tokens: int,
        encoder: VideoEncoder | None = None,
        template: str = "vicuna_v1",
        generation: GenerationOptions | None = None,
        score_target: str = "answer",
        backend: Backend = "decord",
        max_cached_clips: int = 8,
    ) -> None:
        if encoder is not None and encoder.num_tokens != num_video_tokens:
            raise EncoderMismatchError(
                f"the encoder gives {encoder.num_tokens} tokens per clip, the MLLM was trained on {num_video_tokens}"
            )
        if score_target not in SCORE_TARGETS:
            raise ValueError(f"unknown score target {score_target!r}; known: {list(SCORE_TARGETS)}")
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.encoder = encoder
        self.builder = PromptBuilder(
            tokenizer,
            num_video_tokens=num_video_tokens,
            template=template,
            video_token_id=model.video_token_id,
        )
        self.generation = generation or GenerationOptions()
        self.score_target = score_target
        self.backend = backend
        self._clips: OrderedDict[tuple, torch.Tensor] = OrderedDict()  # recently encoded clips
        self._max_cached = max_cached_clips

    @classmethod
    def from_pretrained(
        cls,
        mllm_dir: str | os.PathLike,
        encoder_weights: str | os.PathLike | None = None,
        *,
        encoder_name: str | None = None,
        encoder_options: Mapping[str, Any] | None = None,
        device: str | torch.device = "cpu",
        load_in_4bit: bool | None = None,
        generation: GenerationOptions | None = None,
        score_target: str | None = None,
        backend: Backend = "decord",
        trust_remote_code: bool = False,
        llm_name_or_path: str | None = None,
    ) -> VideoChat:
        """Load an MLLM checkpoint (``MultimodalModel.save_pretrained`` + ``instruction.json``) and, when
        ``encoder_weights`` is given, its video encoder: name and builder options from the checkpoint's
        encoder description unless given (``encoder_options`` replace the recorded ones; another
        ``encoder_name`` than the recorded one starts from no options).

        Raises :class:`EncoderMismatchError` when the encoder's fingerprint differs from the one the
        MLLM was trained with. ``trust_remote_code`` (off) lets a hub LLM run its own code.
        ``llm_name_or_path`` (a local folder or hub id) replaces the base LLM recorded in the checkpoint,
        for its model and tokenizer: the same LLM elsewhere (another machine, a local copy).
        """
        try:
            model = MultimodalModel.from_pretrained(
                mllm_dir,
                llm_name_or_path=llm_name_or_path,
                load_in_4bit=load_in_4bit,
                trust_remote_code=trust_remote_code,
            )
        except OSError as err:  # not FileNotFoundError (a checkpoint file): the base LLM could not be loaded
            if isinstance(err, FileNotFoundError):
                raise
            llm = llm_name_or_path or read_checkpoint_config(mllm_dir)["config"]["llm"]["name_or_path"]
            raise FileNotFoundError(
                f"{mllm_dir}: its base LLM {llm!r} cannot be loaded ({err}); give where it is with --llm "
                "(llm_name_or_path): a local folder or hub id"
            ) from None
        meta = model.instruction
        if not getattr(model.llm, "is_loaded_in_4bit", False):
            model.to(device)
        tokenizer = load_tokenizer(model.config.llm.name_or_path, trust_remote_code=trust_remote_code)
        encoder = None
        if encoder_weights is not None:
            described = meta.get("encoder", {})
            name = encoder_name or described.get("name", "sefar")
            if encoder_options is not None:
                options = dict(encoder_options)
            elif described.get("name") == name:
                options = builder_options(described)  # what the MLLM's features were computed with
            else:
                options = {}
            encoder = build_video_encoder(name, encoder_weights, **options).to(device)
            check_encoder(encoder, model)
        num_video_tokens = meta.get("num_video_tokens") or (encoder.num_tokens if encoder else None)
        if num_video_tokens is None:
            raise ValueError(
                f"{mllm_dir}: no instruction.json; give encoder_weights to know the tokens per clip"
            )
        return cls(
            model,
            tokenizer,
            num_video_tokens=int(num_video_tokens),
            encoder=encoder,
            template=meta.get("template", "vicuna_v1"),
            generation=generation,
            score_target=score_target or meta.get("score_target", "answer"),
            backend=backend,
        )

    # -- video -------------------------------------------------------------------------------------

    def video_features(self, video: Video) -> torch.Tensor:
        """Tokens ``[1, N, D_enc]`` of a clip file (encoded through the feature cache's own data path,
        so they equal the cached features), or the given tokens checked and reshaped."""
        if isinstance(video, torch.Tensor):
            tokens = video.unsqueeze(0) if video.dim() == 2 else video
            if tokens.dim() != 3 or tokens.shape[0] != 1 or tokens.shape[1] != self.builder.num_video_tokens:
                raise ValueError(
                    f"video tokens must be [1, {self.builder.num_video_tokens}, D_enc], got {list(video.shape)}"
                )
            return tokens
        if self.encoder is None:
            raise ValueError(
                "this VideoChat has no encoder: pass video tokens, or load it with encoder_weights"
            )
        path = Path(video).resolve()
        if not path.is_file():
            raise FileNotFoundError(f"{path}: video not found")
        stat = path.stat()
        key = (str(path), stat.st_size, stat.st_mtime_ns)
        if key not in self._clips:
            entry = ListEntry(path=path, label=0, line=0, raw_path=str(path))
            (batch,) = encode_entries(
                self.encoder, [entry], batch_size=1, backend=self.backend, progress=False
            )
            self._clips[key] = batch.tokens.cpu()
            while len(self._clips) > self._max_cached:
                self._clips.popitem(last=False)
        self._clips.move_to_end(key)
        return self._clips[key]

    # -- asking ------------------------------------------------------------------------------------

    def ask(
        self,
        video: Video,
        question: str,
        *,
        stream: bool = True,
        history: Sequence[Turn] = (),
        options: GenerationOptions | None = None,
    ) -> Iterator[str] | str:
        """Answer ``question`` about the clip (after the answered ``history`` turns, if any): an iterator
        of text pieces with ``stream=True``, else the whole answer."""
        features = self.video_features(video)
        turns = [*history, Turn(question)]
        return generate_answer(
            self.model, self.builder, turns, features, options or self.generation, stream=stream
        )

    def answer_mc(
        self, video: Video, question: Question | Mapping[str, Any] | str, *, target: str | None = None
    ) -> MCAnswer:
        """Choose an option of a multiple-choice question by likelihood.

        ``question`` is a Gym-QA :class:`~gym_qa.Question`, its JSON record, or the question text itself
        (``"<stem> A.<x> B.<y> ..."``). Each option is scored as the continuation ``target`` names (default:
        the checkpoint's, "C. <text>" after stage B); the lowest summed NLL wins.
        """
        text, options = _question_text_and_options(question)
        target = target or self.score_target
        letters = OPTION_LETTERS[: len(options)]
        continuations = [SCORE_TARGETS[target](letter, option) for letter, option in zip(letters, options)]
        scores = score_question(
            self.model, self.builder, text, continuations, self.video_features(video), sample_id="mc"
        )
        index = scores.best()
        return MCAnswer(
            letter=letters[index],
            index=index,
            option_scores=scores.nll_sum.tolist(),
            option_token_counts=[int(c) for c in scores.num_tokens.tolist()],
            continuations=continuations,
        )


def check_encoder(encoder: VideoEncoder, model: MultimodalModel) -> None:
    """Fail loudly when ``encoder`` is not the encoder the MLLM was trained with."""
    expected = model.encoder_fingerprint
    actual = encoder.fingerprint() if expected else ""
    if actual != expected:
        raise EncoderMismatchError(
            f"the {encoder.name} encoder's fingerprint {actual[:16]} differs from the one the "
            f"MLLM was trained with ({expected[:16]}): other weights, token options or preprocessing"
        )


def _question_text_and_options(question: Question | Mapping[str, Any] | str) -> tuple[str, list[str]]:
    if isinstance(question, Question):
        return question.question, list(question.options)
    if isinstance(question, Mapping):
        record = Question(**{name: question[name] for name in RECORD_FIELDS})
        return record.question, list(record.options)
    _, options = split_options(question)
    return question, options
