"""The demo's event handlers, separate from the layout (:mod:`mllm.demo_app`) so that they can be tested
without a server: analyze (frames gallery, top-5, status), chat (streamed answers), quiz (a Gym-QA
question, the MLLM's choice and the truth).

    handlers = DemoHandlers(predictor, chat, examples, DemoLimits(), video_encoder=video_encoder)
    gallery, top5, rows, status = handlers.analyze("clip.mp4")

The status line also gives the prediction's uncertainty (its out-of-domain score, and whether the encoder's
calibration flags the clip) and a warning when the clip is flagged out of domain or the top element has less
than :data:`LOW_CONFIDENCE` probability (:func:`uncertainty_notes`).

Every handler checks the upload first (:func:`mllm.demo_uploads.check_upload`); a clip is decoded once for
the classifier and the MLLM (:class:`mllm.demo_models.DemoClips`). User errors become short ``gr.Error``
messages; unexpected exceptions are logged and reported as a generic message, never a traceback.
"""

from __future__ import annotations

import hashlib
import itertools
import logging
import os
import tempfile
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, Protocol

import gradio as gr
import numpy as np

from gym_qa.clips import Clip, clip_id_of
from gym_qa.question_generator import GeneratorConfig, QuestionGenerator
from gym_qa.questions import Question
from mllm.demo_models import DemoClips
from mllm.demo_uploads import DemoLimits, Example, check_upload, file_digest, user_error
from mllm.encoders import VideoEncoder
from sefar_encoder.decoding import DecodeError
from sefar_encoder.prediction import ClipPrediction, Predictor
from sefar_encoder.runtime.atomic import write_atomic
from sefar_encoder.sampling import fine_views

log = logging.getLogger(__name__)

QUIZ_TYPES = ("what", "event", "set")  # the question types the instruction stage trains on
MIN_DISPLAY_SIDE = 160  # frames smaller than this are enlarged (nearest neighbour) for the gallery
LOW_CONFIDENCE = 0.5  # a top-1 probability below this (less than even odds) is called low confidence
NO_MLLM = "The MLLM is not loaded: start the demo with `--mllm DIR` to chat about the clip."
UPLOAD_HINT = "Please upload a video clip (.mp4, .mkv, .webm, .mov, .avi)."


class ChatModel(Protocol):
    """What the demo needs from :class:`mllm.chat.VideoChat` (tests may pass a stand-in)."""

    def ask(self, video: Any, question: str, *, stream: bool = True, history: Sequence[Any] = ()) -> Any: ...

    def answer_mc(self, video: Any, question: Question) -> Any: ...  # returns an object with ``.letter``


def display_names(predictor: Predictor) -> list[str]:
    """A unique label per class for the top-5 widget (FineGym repeats some names across events)."""
    names = list(predictor.class_names)
    counts = {n: names.count(n) for n in names}
    out = []
    for label, name in enumerate(names):
        if counts[name] > 1 and predictor.hierarchy is not None:
            name = f"{name} ({predictor.element(label).event_name})"
        out.append(name)
    seen = {n: out.count(n) for n in out}
    return [f"{n} #{label}" if seen[n] > 1 else n for label, n in enumerate(out)]


def _view_level(views: tuple[int, ...], v: int) -> str:
    """ "fine" or "coarse" for view ``v`` (docs/DESIGN.md §Dual-level sampling); "" when all views have
    the same length."""
    fine = fine_views(views)
    return "" if not fine else ("fine" if v in fine else "coarse")


def views_caption(views: tuple[int, ...]) -> str:
    """``v1 fine (2 frames), v2 fine (2 frames), v3 coarse (4 frames)`` for views (2, 2, 4)."""
    return ", ".join(
        f"v{v + 1}{' ' + _view_level(views, v) if _view_level(views, v) else ''} ({n} frames)"
        for v, n in enumerate(views)
    )


def _enlarge(frame: np.ndarray) -> np.ndarray:
    """Nearest-neighbour enlargement of a small frame, so the gallery shows pixels, not blur."""
    factor = int(np.ceil(MIN_DISPLAY_SIDE / max(1, min(frame.shape[:2]))))
    return frame if factor <= 1 else frame.repeat(factor, axis=0).repeat(factor, axis=1)


def frame_file(frame: np.ndarray) -> str:
    """``frame`` as a PNG named by its content in the app's temporary folder, written under a temporary name
    and renamed. The gallery gets paths, not arrays: gradio caches an array by rewriting a file named by its
    content in place, so two visitors analysing the same clip at once could download a half-written image."""
    from PIL import Image  # gradio's own dependency

    pixels = np.ascontiguousarray(frame, dtype=np.uint8)
    digest = hashlib.sha256(f"{pixels.shape}".encode() + pixels.tobytes()).hexdigest()[:32]
    path = Path(os.environ.get("GRADIO_TEMP_DIR") or tempfile.gettempdir()) / "frames" / f"{digest}.png"
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(path, lambda tmp: Image.fromarray(pixels).save(tmp, format="PNG"))
    return str(path)


def short_clip_warning(frames: int, views: tuple[int, ...]) -> str:
    """The status line's warning for a clip with fewer frames than the sampler takes (it repeats frames)."""
    needed = sum(views)
    return (
        f"⚠ **Too short to judge**: this clip has {frames} frame{'s' if frames != 1 else ''}, the encoder "
        f"samples {needed} ({' + '.join(map(str, views))}), so it sees repeated frames and no motion "
        "between them; do not trust the elements below."
    )


def uncertainty_notes(prediction: ClipPrediction, calibration_status: str) -> list[str]:
    """The status line's uncertainty: the out-of-domain score (and the flag's verdict, or why there is
    none), then a warning for a clip flagged out of domain and one for a low-confidence top-1."""
    u, top = prediction.uncertainty, prediction.top1
    lines = []
    if u is not None:
        if u.threshold is None:
            verdict = f"no out-of-domain check ({calibration_status})"
        else:
            verdict = (
                f"flagged above {u.threshold:.3g}: {'out of domain' if u.out_of_domain else 'in domain'}"
            )
        lines.append(f"Uncertainty: {u.score} score {u.value:.3g}, {verdict}.")
    if prediction.out_of_domain:
        lines.append(
            f"⚠ **Looks out of domain**: its {u.score} score is higher than almost all of the encoder's "
            "in-domain calibration clips'. It is probably not one of the gymnastics elements the encoder "
            "knows (or not gymnastics at all); the elements below are the closest of its closed set, not a "
            "recognition."
        )
    if top.probability < LOW_CONFIDENCE:
        lines.append(
            f"⚠ **Low confidence**: the top element has {100 * top.probability:.0f} %, less than even odds; "
            "the encoder is unsure which element this is, if it is one at all."
        )
    return lines


def cannot_read(err: DecodeError, hint: str = "") -> gr.Error:
    """The visitor's message for a clip that does not decode (``hint``: what to do instead)."""
    return user_error(
        " ".join(filter(None, [f"Cannot read this file as a video: {err.without_path()}.", hint]))
    )


class DemoHandlers:
    """The event handlers, separate from the layout so they can be tested without a server."""

    def __init__(
        self,
        predictor: Predictor,
        chat: ChatModel | None,
        examples: Sequence[Example],
        limits: DemoLimits,
        questions: Sequence[Question] = (),
        video_encoder: VideoEncoder | None = None,
    ):
        """``video_encoder``: the MLLM's video encoder, so that the MLLM gets tokens of the clip's one
        decode; None: the chat model is given the clip's path and decodes it itself."""
        self.predictor, self.chat, self.limits = predictor, chat, limits
        self.clips = DemoClips(predictor, video_encoder if chat is not None else None)
        self.names = display_names(predictor)
        self.truth = {file_digest(e.path): e.label for e in examples if e.label is not None}
        self.questions: dict[str, list[Question]] = {}
        for q in questions:
            self.questions.setdefault(q.video, []).append(q)
        self._draws = itertools.count()  # quiz questions differ from click to click
        self._draw_lock = threading.Lock()

    # -- inputs ----------------------------------------------------------------------------------
    def predict(self, path: Path) -> ClipPrediction:
        try:
            return self.clips.predict(path)
        except DecodeError as err:
            raise cannot_read(err, UPLOAD_HINT) from None

    def top1(self, path: Path) -> int:
        """The encoder's top-1 class of the clip (of its earlier decode, if kept)."""
        try:
            return self.clips.top1(path)
        except DecodeError as err:
            raise cannot_read(err, UPLOAD_HINT) from None

    def true_label(self, path: Path) -> int | None:
        """The class of an example clip (recognised by content), else None."""
        return self.truth.get(file_digest(path)) if self.truth else None

    # -- handlers --------------------------------------------------------------------------------
    def analyze(self, video: str | None) -> tuple[list, dict[str, float] | None, list[list], str]:
        """video → (gallery items, top-5 {name: probability}, table rows, status Markdown).

        A clip that cannot be analysed (a refused upload, an undecodable file, an unexpected failure) gives
        empty outputs and its message in the status line: one message. Raised as ``gr.Error`` it would
        also mark each of the event's outputs (and the upload) with an "Error" badge."""
        if not video:
            return [], None, [], ""
        try:
            path, duration = check_upload(video, self.limits)
            with reported("analyze"):
                return self._analyze(path, duration)
        except gr.Error as err:
            return [], None, [], f"**{err.message}**"

    def _analyze(self, path: Path, duration: float | None) -> tuple[list, dict[str, float], list[list], str]:
        prediction = self.predict(path)
        gallery = self.gallery(prediction)
        top = {self.names[s.label]: s.probability for s in prediction.top_k}
        rows = [
            [rank, s.name, s.set_name or "", s.event_name or "", f"{100 * s.probability:.1f} %"]
            for rank, s in enumerate(prediction.top_k, start=1)
        ]
        seconds = f", {duration:.1f} s" if duration is not None else ""
        frames = prediction.num_frames
        status = (
            f"`{path.name}`: {frames} frame{'s' if frames != 1 else ''}{seconds}; "
            f"encoder ran in {prediction.seconds:.2f} s."
        )
        if frames < sum(self.predictor.views):
            status += "  \n" + short_clip_warning(frames, self.predictor.views)
        for line in uncertainty_notes(prediction, self.predictor.calibration_status):
            status += "  \n" + line
        label = self.true_label(path)
        if label is not None:
            ranks = [s.label for s in prediction.top_k]
            if ranks[0] == label:
                verdict = "top-1 correct ✓"
            elif label in ranks:
                verdict = f"ranked {ranks.index(label) + 1} ✗"
            else:
                verdict = f"not in the top {len(ranks)} ✗"
            status += f"  \nSynthGym example, true element **{self.names[label]}**: {verdict}."
        return gallery, top, rows, status

    def gallery(self, prediction: ClipPrediction) -> list[tuple[str, str]]:
        """The frames of each view, captioned with the view, its level and the frame index."""
        views = self.predictor.views
        items = []
        for v, (frames, indices) in enumerate(zip(prediction.frames or [], prediction.frame_indices)):
            name = f"v{v + 1} {_view_level(views, v)}".strip()
            items += [(frame_file(_enlarge(f)), f"{name} · f{i}") for f, i in zip(frames, indices)]
        return items

    def chat_turn(
        self, message: str, history: list[dict] | None, video: str | None
    ) -> Iterator[tuple[list, str]]:
        """Streams the conversation: yields (history with the growing answer, cleared textbox)."""
        history = [_msg(str(m.get("role", "user")), _text(m.get("content"))) for m in history or []]
        message = (message or "").strip()
        if not message:
            gr.Warning("Type a question about the clip first.")
            yield history, ""
            return
        if self.chat is None:
            yield history + [_msg("user", message), _msg("assistant", NO_MLLM)], ""
            return
        path, _ = check_upload(video, self.limits)
        with reported("chat"):
            from mllm.prompting import Turn  # the LLM stack loads only when the MLLM is used

            turns = [Turn(q, a) for q, a in _exchanges(history)][-self.limits.history_turns :]
            if self.limits.history_turns == 0:
                turns = []
            history += [_msg("user", message), _msg("assistant", "")]
            yield history, ""
            try:
                pieces = self.chat.ask(self.clips.mllm_input(path), message, stream=True, history=turns)
                for piece in pieces:
                    history[-1]["content"] += piece
                    yield history, ""
            except DecodeError as err:
                raise cannot_read(err) from None
            if not history[-1]["content"].strip():
                history[-1]["content"] = "(the model gave an empty answer)"
                yield history, ""

    def quiz(self, video: str | None) -> str:
        """A Gym-QA question about the clip, the MLLM's choice and the truth, as Markdown; a clip that cannot
        be quizzed gives its message instead (one message, as :meth:`analyze`)."""
        try:
            return self._quiz(video)
        except gr.Error as err:
            return f"**{err.message}**"

    def _quiz(self, video: str | None) -> str:
        path, _ = check_upload(video, self.limits)
        with reported("quiz"):
            question, truth_note = self.quiz_question(path)
            options = [f"- {letter}. {text}" for letter, text in zip(question.letters, question.options)]
            blocks = [f"**{question.stem.strip()}**", "\n".join(options)]  # Markdown paragraphs
            if self.chat is None:
                blocks.append(f"**MLLM:** {NO_MLLM}")
            else:
                try:
                    answer = self.chat.answer_mc(self.clips.mllm_input(path), question)
                except DecodeError as err:
                    raise cannot_read(err) from None
                chosen = question.options[question.letters.index(answer.letter)]
                mark = ""
                if truth_note is not None:
                    mark = " ✓ correct" if answer.letter == question.answer else " ✗ wrong"
                blocks.append(f"**MLLM answer:** {answer.letter}. {chosen}{mark}")
            if truth_note is not None:
                blocks.append(f"**Truth:** {question.answer}. {question.answer_text} ({truth_note})")
            else:
                blocks.append(
                    "**Truth:** unknown for an uploaded clip; the options were built around the encoder's "
                    f"top-1 ({question.answer}. {question.answer_text})."
                )
            return "\n\n".join(blocks)

    def quiz_question(self, path: Path) -> tuple[Question, str | None]:
        """A question about the clip and where its truth comes from (None: no truth known).

        A question from the questions file about this clip (by clip id) comes first; otherwise one is
        generated for the example's label, or for the encoder's top-1 on an uploaded clip.
        """
        with self._draw_lock:
            draw = next(self._draws)
        from_file = self.questions.get(clip_id_of(path))
        if from_file:
            return from_file[draw % len(from_file)], "from the questions file"
        if self.predictor.hierarchy is None:
            raise user_error(
                "The encoder checkpoint has no hierarchy.json, so no quiz questions can be made."
            )
        label = self.true_label(path)
        note = "the example's label"
        if label is None:
            label, note = self.top1(path), None
        answer_type = QUIZ_TYPES[draw % len(QUIZ_TYPES)]
        generator = QuestionGenerator(
            self.predictor.hierarchy, GeneratorConfig(types=(answer_type,), seed=draw, dataset="demo")
        )
        questions, _ = generator.generate([Clip(video=clip_id_of(path), label=label)])
        return questions[0], note


def _msg(role: str, content: str) -> dict[str, str]:
    return {"role": role, "content": content}


def _text(content: Any) -> str:
    """Text of a chat message's content: gradio passes a list of parts ({"type": "text", "text": ...})."""
    if isinstance(content, str):
        return content
    if isinstance(content, dict):
        return str(content.get("text") or "")
    if isinstance(content, (list, tuple)):
        return "".join(_text(part) for part in content)
    return ""


def _exchanges(history: list[dict]) -> list[tuple[str, str]]:
    """(question, answer) pairs of a messages history, skipping notices and unanswered questions."""
    pairs = []
    for user, assistant in itertools.pairwise(history):
        if user.get("role") == "user" and assistant.get("role") == "assistant":
            answer = _text(assistant.get("content"))
            if answer and answer != NO_MLLM:
                pairs.append((_text(user.get("content")), answer))
    return pairs


class reported:
    """Turn unexpected exceptions into a generic user message (details go to the server log)."""

    def __init__(self, what: str):
        self.what = what

    def __enter__(self) -> None:
        return None

    def __exit__(
        self, kind: type[BaseException] | None, err: BaseException | None, tb: TracebackType | None
    ) -> bool:
        if err is None or isinstance(err, (gr.Error, GeneratorExit)):
            return False
        log.exception("demo %s failed", self.what, exc_info=(kind, err, tb))
        raise user_error(f"Something went wrong in {self.what} ({type(err).__name__}); see the server log.")
