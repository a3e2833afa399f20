"""The Gradio demo (SPEC §5): upload a clip or pick a SynthGym example → the frames each view sampled, the
top-5 elements with their set and event; a chat panel where the video MLLM answers questions about the
clip (streamed); a Gym-QA quiz about the clip. ``scripts/demo.py`` is the command line.

    dirs = AppDirs.create()                              # private upload/cache + examples folders (first!)
    predictor = Predictor("runs/quickstart/encoder")
    chat = VideoChat.from_pretrained(mllm_dir, encoder_weights=...)       # optional
    examples = copy_examples(read_inputs("data/synthgym-tiny/test.csv"), predictor, dirs.examples)
    demo = build_demo(predictor, chat, examples=examples, limits=DemoLimits())
    launch_demo(demo, dirs, DemoLimits(), host="127.0.0.1", port=7860)

Endpoints (also what ``gradio_client`` calls): ``/analyze`` (video → frames gallery, top-5 label, table,
status), ``/chat`` (message, history, video → streamed history, cleared textbox), ``/quiz`` (video →
question, the MLLM's answer and the truth as Markdown). Each takes the clip itself, so no hidden session
state is needed.

What a visitor can reach, and why:
- The server binds 127.0.0.1 unless told otherwise; a public share link only with ``share=True``.
- Files: gradio serves its upload/cache folder, ``allowed_paths`` and nothing else. :meth:`AppDirs.create`
  points the upload/cache folder (``GRADIO_TEMP_DIR``, and ``GRADIO_EXAMPLES_CACHE``) at a fresh private
  directory instead of the machine-wide ``/tmp/gradio`` other apps share, and ``allowed_paths`` is only
  the examples folder, which holds copies of the example clips (never the data set folder itself).
  Inputs must be files uploaded to this app (gradio refuses any other path in a request).
- Only video files: an upload must start like a video container (MP4/MOV, Matroska/WebM, AVI, MPEG-PS;
  :func:`video_container` reads its first bytes before any decoder opens it, so images, HLS playlists,
  ffconcat lists and other inputs that ffmpeg would also read are turned away).
- The upload/cache folder is bounded in time: gradio's ``delete_cache`` removes uploads and the images the
  app made once older than ``DemoLimits.delete_after_s`` (a later request about a deleted clip asks for
  it again); the whole folder goes at shutdown (:meth:`AppDirs.cleanup`).
- Uploads are bounded by ``max_file_size`` (enforced while receiving), clips by duration and frame size
  (read from the container header before anything is decoded); the queue is bounded and the encoder and
  the LLM run with small concurrency limits, so a burst of requests waits instead of exhausting memory.
- User errors (empty, oversized, not a video, too long, too large frames, unreadable) become short
  ``gr.Error`` messages; unexpected exceptions are logged on the server and reported as a generic
  message, never a traceback.
"""

from __future__ import annotations

import hashlib
import itertools
import logging
import os
import shutil
import tempfile
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Protocol

import gradio as gr
import numpy as np

from gym_qa.hierarchy import EVENT_NAMES
from gym_qa.question_generator import Clip, GeneratorConfig, QuestionGenerator
from gym_qa.questions import Question
from sefar_encoder.decoding import DecodeError
from sefar_encoder.prediction import ClipInput, Prediction, Predictor, describe_decode_error, probe_duration
from sefar_encoder.sampling import fine_views

log = logging.getLogger(__name__)

QUIZ_TYPES = ("what", "event", "set")  # the question types the instruction stage trains on
MIN_DISPLAY_SIDE = 160  # frames smaller than this are enlarged (nearest neighbour) for the gallery
NO_MLLM = "The MLLM is not loaded: start the demo with `--mllm DIR` to chat about the clip."
CSS = "#status { min-height: 2.5em; }"  # the status line does not make the layout jump when it fills


class ChatModel(Protocol):
    """What the demo needs from :class:`mllm.chat.VideoChat` (tests may pass a stand-in)."""

    def ask(self, video: Any, question: str, *, stream: bool = True, history: Sequence[Any] = ()) -> Any: ...

    def answer_mc(self, video: Any, question: Question) -> Any: ...  # returns an object with ``.letter``


@dataclass(frozen=True)
class DemoLimits:
    """Resource limits of the demo."""

    max_file_mb: float = 50.0  # largest upload, in MB (10^6 bytes)
    max_duration_s: float = 60.0  # longest clip accepted, in seconds (FineGym elements last a few)
    max_side: int = 4096  # largest frame width or height, in pixels (decoded frames are kept in memory)
    queue_size: int = 32  # requests waiting in the queue before new ones are turned away
    concurrency: int = 2  # encoder predictions running at once
    chat_concurrency: int = 1  # LLM generations / quiz answers running at once
    history_turns: int = 2  # earlier exchanges about the same clip given to the LLM
    delete_after_s: int = 3600  # uploads and generated files older than this are deleted (0: at shutdown)

    def __post_init__(self) -> None:
        if self.max_file_mb <= 0 or self.max_duration_s <= 0 or self.max_side <= 0:
            raise ValueError("max_file_mb, max_duration_s and max_side must be positive")
        if self.delete_after_s < 0:
            raise ValueError(
                f"delete_after_s must be >= 0 (0: keep files until shutdown), got {self.delete_after_s}"
            )
        if self.queue_size < 20:
            raise ValueError(f"queue_size must be >= 20, got {self.queue_size}")
        if not 1 <= self.concurrency < self.queue_size or not 1 <= self.chat_concurrency < self.queue_size:
            raise ValueError("concurrency limits must be >= 1 and smaller than queue_size")

    @property
    def max_file_bytes(self) -> int:
        return int(self.max_file_mb * 1_000_000)

    @property
    def delete_cache(self) -> tuple[int, int] | None:
        """gradio's ``(frequency, age)`` in seconds: every min(10 min, age / 2), files older than
        ``delete_after_s`` are deleted (a file lives at most 1.5 x the age); None: never."""
        age = int(self.delete_after_s)
        return (max(1, min(600, age // 2)), age) if age else None


@dataclass(frozen=True)
class AppDirs:
    """The only folders the running app serves files from: ``temp`` (uploads, gallery images) and
    ``examples`` (copies of the example clips)."""

    root: Path
    temp: Path
    examples: Path

    @classmethod
    def create(cls, root: str | os.PathLike | None = None) -> AppDirs:
        """Make the folders (under a fresh temporary directory unless ``root`` is given) and point gradio's
        upload/cache folders at ``temp``. Call before building the demo: components read it when built."""
        base = Path(root) if root is not None else Path(tempfile.mkdtemp(prefix="sefar-demo-"))
        dirs = cls(base.resolve(), (base / "gradio").resolve(), (base / "examples").resolve())
        dirs.temp.mkdir(parents=True, exist_ok=True)
        dirs.examples.mkdir(parents=True, exist_ok=True)
        os.environ["GRADIO_TEMP_DIR"] = str(dirs.temp)
        os.environ["GRADIO_EXAMPLES_CACHE"] = str(dirs.temp / "cached_examples")
        return dirs

    def cleanup(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)


@dataclass(frozen=True)
class Example:
    """An example clip (inside :attr:`AppDirs.examples`), its true class if known, and a button title."""

    path: Path
    label: int | None
    title: str


def file_digest(path: str | os.PathLike) -> str:
    """SHA-256 of a file's bytes: how an uploaded copy of an example is recognised."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def video_container(path: str | os.PathLike) -> str | None:
    """The container a file's first bytes announce: "mp4" (ISO BMFF: MP4, MOV, M4V, 3GP), "matroska"
    (MKV, WebM), "avi", "mpeg" (MPEG program stream), or None for anything else."""
    with open(path, "rb") as fh:
        head = fh.read(12)
    if head[4:8] in (b"ftyp", b"moov", b"mdat", b"free", b"wide", b"skip"):
        return "mp4"
    if head[:4] == b"\x1a\x45\xdf\xa3":  # EBML
        return "matroska"
    if head[:4] == b"RIFF" and head[8:12] == b"AVI ":
        return "avi"
    if head[:4] == b"\x00\x00\x01\xba":  # MPEG-PS pack header
        return "mpeg"
    return None


def frame_size(path: str | os.PathLike) -> tuple[int, int] | None:
    """``(width, height)`` of a clip's first video stream from its header (nothing decoded); None if
    unknown (decoding reports an unreadable file afterwards)."""
    import av

    try:
        with av.open(str(path)) as container:
            if container.streams.video:
                codec = container.streams.video[0].codec_context
                return int(codec.width), int(codec.height)
    except (av.FFmpegError, OSError, UnicodeDecodeError, ValueError):
        return None
    return None


def copy_examples(
    clips: Sequence[ClipInput], predictor: Predictor, directory: str | os.PathLike, limit: int = 12
) -> list[Example]:
    """Copy up to ``limit`` clips into ``directory`` (one per class first, in class order, then the rest)
    and title them by event; clips that are missing or not videos are skipped."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    usable = [c for c in clips if c.path.is_file() and c.path.stat().st_size > 0]
    first_of_class: dict[int, ClipInput] = {}
    for clip in usable:
        if clip.label is not None and 0 <= clip.label < predictor.num_classes:
            first_of_class.setdefault(clip.label, clip)
    ordered = [first_of_class[k] for k in sorted(first_of_class)]
    ordered += [c for c in usable if c not in ordered]
    examples = []
    for clip in ordered[:limit]:
        target = directory / clip.path.name
        if target.exists():  # two clips with one name (from different folders): keep both
            target = directory / f"{len(examples) + 1:02d}_{clip.path.name}"
        shutil.copyfile(clip.path, target)
        label = clip.label if clip.label is not None and 0 <= clip.label < predictor.num_classes else None
        event = predictor.element(label).event if label is not None else None
        where = f" · {EVENT_NAMES.get(event, event)}" if event else ""
        examples.append(Example(target, label, f"Example {len(examples) + 1}{where}"))
    return examples


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
    """ "fine" or "coarse" for view ``v`` (SPEC §2.1); "" when all views have the same length."""
    fine = fine_views(views)
    return "" if not fine else ("fine" if v in fine else "coarse")


def _views_caption(views: tuple[int, ...]) -> str:
    """``v1 fine (2 frames), v2 fine (2 frames), v3 coarse (4 frames)`` for views (2, 2, 4)."""
    return ", ".join(
        f"v{v + 1}{' ' + _view_level(views, v) if _view_level(views, v) else ''} ({n} frames)"
        for v, n in enumerate(views)
    )


def _enlarge(frame: np.ndarray) -> np.ndarray:
    """Nearest-neighbour enlargement of a small frame, so the gallery shows pixels, not blur."""
    factor = int(np.ceil(MIN_DISPLAY_SIDE / max(1, min(frame.shape[:2]))))
    return frame if factor <= 1 else frame.repeat(factor, axis=0).repeat(factor, axis=1)


def _user_error(message: str) -> gr.Error:
    return gr.Error(message, print_exception=False)


class DemoHandlers:
    """The event handlers, separate from the layout so they can be tested without a server."""

    def __init__(
        self,
        predictor: Predictor,
        chat: ChatModel | None,
        examples: Sequence[Example],
        limits: DemoLimits,
        questions: Sequence[Question] = (),
    ):
        self.predictor, self.chat, self.limits = predictor, chat, limits
        self.names = display_names(predictor)
        self.truth = {file_digest(e.path): e.label for e in examples if e.label is not None}
        self.questions: dict[str, list[Question]] = {}
        for q in questions:
            self.questions.setdefault(q.video, []).append(q)
        self._draws = itertools.count()  # quiz questions differ from click to click
        self._draw_lock = threading.Lock()

    # -- inputs ----------------------------------------------------------------------------------
    def checked_clip(self, video: str | None) -> tuple[Path, float | None]:
        """The uploaded clip's path and duration (s, None if unknown) after the size and duration
        checks (gr.Error otherwise)."""
        if not video:
            raise _user_error("Upload a clip or pick an example first.")
        path = Path(video)
        if not path.is_file():
            raise _user_error("The uploaded file is no longer available; please upload it again.")
        size = path.stat().st_size
        if size == 0:
            raise _user_error(
                "This file is empty (0 bytes). Please upload a video clip such as an .mp4 file."
            )
        if size > self.limits.max_file_bytes:
            raise _user_error(
                f"This file is {size / 1e6:.1f} MB; the demo accepts clips up to {self.limits.max_file_mb:g} MB."
            )
        if video_container(path) is None:
            raise _user_error(
                "This file is not a video clip. Please upload a video (.mp4, .mov, .mkv, .webm, .avi)."
            )
        duration = probe_duration(path)
        if duration is not None and duration > self.limits.max_duration_s:
            raise _user_error(
                f"This clip lasts {duration:.0f} s; the demo accepts clips up to "
                f"{self.limits.max_duration_s:g} s. Trim it to the element you want recognised."
            )
        size = frame_size(path)
        if size is not None and max(size) > self.limits.max_side:
            raise _user_error(
                f"This clip's frames are {size[0]}x{size[1]} pixels; the demo accepts up to "
                f"{self.limits.max_side} pixels on a side. Please upload a smaller video."
            )
        return path, duration

    def predict(self, path: Path) -> Prediction:
        try:
            return self.predictor.predict(path)
        except DecodeError as err:
            raise _user_error(
                f"Cannot read this file as a video: {describe_decode_error(err)}. "
                "Please upload a video clip (.mp4, .mkv, .webm, .mov, .avi)."
            ) from None

    def true_label(self, path: Path) -> int | None:
        """The class of an example clip (recognised by content), else None."""
        return self.truth.get(file_digest(path)) if self.truth else None

    # -- handlers --------------------------------------------------------------------------------
    def analyze(self, video: str | None) -> tuple[list, dict[str, float] | None, list[list], str]:
        """video → (gallery items, top-5 {name: probability}, table rows, status Markdown)."""
        if not video:
            return [], None, [], ""
        path, duration = self.checked_clip(video)
        with _reported("analyze"):
            prediction = self.predict(path)
            gallery = self.gallery(prediction)
            top = {self.names[s.label]: s.probability for s in prediction.top_k}
            rows = [
                [rank, s.name, s.set_name or "", s.event_name or "", f"{100 * s.probability:.1f} %"]
                for rank, s in enumerate(prediction.top_k, start=1)
            ]
            seconds = f", {duration:.1f} s" if duration is not None else ""
            status = (
                f"`{path.name}`: {prediction.num_frames} frames{seconds}; "
                f"encoder ran in {prediction.seconds:.2f} s."
            )
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

    def gallery(self, prediction: Prediction) -> list[tuple[np.ndarray, str]]:
        """The frames of each view, captioned with the view, its level and the frame index."""
        views = self.predictor.views
        items = []
        for v, (frames, indices) in enumerate(zip(prediction.frames or [], prediction.frame_indices)):
            name = f"v{v + 1} {_view_level(views, v)}".strip()
            items += [(_enlarge(f), f"{name} · f{i}") for f, i in zip(frames, indices)]
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
        path, _ = self.checked_clip(video)
        with _reported("chat"):
            from mllm.prompting import Turn  # the LLM stack loads only when the MLLM is used

            turns = [Turn(q, a) for q, a in _exchanges(history)][-self.limits.history_turns :]
            if self.limits.history_turns == 0:
                turns = []
            history += [_msg("user", message), _msg("assistant", "")]
            yield history, ""
            try:
                pieces = self.chat.ask(path, message, stream=True, history=turns)
                for piece in pieces:
                    history[-1]["content"] += piece
                    yield history, ""
            except DecodeError as err:
                raise _user_error(
                    f"Cannot read this file as a video: {describe_decode_error(err)}."
                ) from None
            if not history[-1]["content"].strip():
                history[-1]["content"] = "(the model gave an empty answer)"
                yield history, ""

    def quiz(self, video: str | None) -> str:
        """A Gym-QA question about the clip, the MLLM's choice and the truth, as Markdown."""
        path, _ = self.checked_clip(video)
        with _reported("quiz"):
            question, truth_note = self.quiz_question(path)
            options = [f"- {letter}. {text}" for letter, text in zip(question.letters, question.options)]
            blocks = [f"**{question.stem.strip()}**", "\n".join(options)]  # Markdown paragraphs
            if self.chat is None:
                blocks.append(f"**MLLM:** {NO_MLLM}")
            else:
                try:
                    answer = self.chat.answer_mc(path, question)
                except DecodeError as err:
                    raise _user_error(
                        f"Cannot read this file as a video: {describe_decode_error(err)}."
                    ) from None
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
        from_file = self.questions.get(path.stem)
        if from_file:
            return from_file[draw % len(from_file)], "from the questions file"
        if self.predictor.hierarchy is None:
            raise _user_error(
                "The encoder checkpoint has no hierarchy.json, so no quiz questions can be made."
            )
        label = self.true_label(path)
        note = "the example's label"
        if label is None:
            label, note = self.predict(path).top1.label, None
        answer_type = QUIZ_TYPES[draw % len(QUIZ_TYPES)]
        generator = QuestionGenerator(
            self.predictor.hierarchy, GeneratorConfig(types=(answer_type,), seed=draw, dataset="demo")
        )
        questions, _ = generator.generate([Clip(video=path.stem, label=label)])
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


class _reported:
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
        raise _user_error(f"Something went wrong in {self.what} ({type(err).__name__}); see the server log.")


def build_demo(
    predictor: Predictor,
    chat: ChatModel | None = None,
    examples: Sequence[Example] = (),
    limits: DemoLimits | None = None,
    questions: Sequence[Question] = (),
) -> gr.Blocks:
    """The app's layout and events. Launch it with :func:`launch_demo` (which applies the limits)."""
    limits = limits or DemoLimits()
    h = DemoHandlers(predictor, chat, examples, limits, questions)
    views = " + ".join(str(v) for v in predictor.views)
    with gr.Blocks(
        title="SeFAR demo: fine-grained gymnastics",
        analytics_enabled=False,
        delete_cache=limits.delete_cache,  # the upload folder does not grow without bound
    ) as demo:
        gr.Markdown(
            "# SeFAR: fine-grained gymnastics elements\n"
            f"Upload a clip (up to {limits.max_file_mb:g} MB and {limits.max_duration_s:g} s) or pick an "
            f"example. The encoder samples {views} frames (fine and coarse views) and names the element; "
            "the video MLLM answers questions about the clip."
        )
        with gr.Row(equal_height=False):
            with gr.Column(scale=2, min_width=280):
                video = gr.Video(label="Clip", sources=["upload"], include_audio=True, height=260)
                if examples:
                    gr.Examples(
                        examples=[[str(e.path)] for e in examples],
                        inputs=[video],
                        example_labels=[e.title for e in examples],
                        examples_per_page=len(examples),
                        label="SynthGym examples",
                    )
                status = gr.Markdown(elem_id="status")
            with gr.Column(scale=3, min_width=360):
                top5 = gr.Label(label="Top-5 elements", num_top_classes=5, elem_id="top5")
                table = gr.Dataframe(
                    headers=["#", "element", "set", "event", "prob."],
                    datatype=["number", "str", "str", "str", "str"],
                    interactive=False,
                    column_widths=["7%", "37%", "28%", "16%", "12%"],
                    wrap=True,
                    label="Top-5 with set and event",
                    elem_id="top5-table",
                )
        gr.Markdown(
            f"**Frames the encoder sampled**: {_views_caption(predictor.views)}; "
            "captions give the view (v) and the frame index in the clip (f)."
        )
        gallery = gr.Gallery(
            label="Sampled frames",
            show_label=False,
            columns=sum(predictor.views),
            rows=1,
            height=190,
            object_fit="contain",
            buttons=["fullscreen"],  # no "share" (to Hugging Face Spaces): this demo runs locally
            elem_id="frames",
        )
        with gr.Row(equal_height=False):
            with gr.Column(scale=3):
                gr.Markdown("### Ask about the clip" + ("" if chat is not None else f"\n{NO_MLLM}"))
                chatbot = gr.Chatbot(
                    label="Video MLLM",
                    height=280,
                    elem_id="chatbot",
                    placeholder="Answers about the clip stream here.",
                    feedback_options=None,
                    buttons=["copy", "copy_all"],  # no "share" button (Hugging Face Spaces only)
                )
                with gr.Row():
                    message = gr.Textbox(
                        placeholder="e.g. What gymnastics move is this athlete performing?",
                        show_label=False,
                        scale=5,
                        container=False,
                    )
                    send = gr.Button("Ask", variant="primary", scale=1)
            with gr.Column(scale=2):
                gr.Markdown("### Gym-QA quiz")
                quiz_button = gr.Button("Quiz me on this clip")
                quiz_out = gr.Markdown(elem_id="quiz")

        video.change(
            h.analyze,
            inputs=[video],
            outputs=[gallery, top5, table, status],
            api_name="analyze",
            concurrency_limit=limits.concurrency,
            concurrency_id="encoder",
        )
        # A new clip starts a new conversation.
        video.change(lambda: ([], ""), outputs=[chatbot, quiz_out], api_visibility="private", queue=False)
        gr.on(
            [message.submit, send.click],
            h.chat_turn,
            inputs=[message, chatbot, video],
            outputs=[chatbot, message],
            api_name="chat",
            concurrency_limit=limits.chat_concurrency,
            concurrency_id="mllm",
        )
        quiz_button.click(
            h.quiz,
            inputs=[video],
            outputs=[quiz_out],
            api_name="quiz",
            concurrency_limit=limits.chat_concurrency,
            concurrency_id="mllm",
        )
    return demo


def launch_demo(
    demo: gr.Blocks,
    dirs: AppDirs,
    limits: DemoLimits | None = None,
    *,
    host: str = "127.0.0.1",
    port: int | None = None,
    share: bool = False,
    prevent_thread_lock: bool = False,
    quiet: bool = False,
) -> tuple[Any, str, str | None]:
    """Queue and launch ``demo`` with the limits and file-access rules above; returns gradio's
    ``(app, local_url, share_url)``."""
    limits = limits or DemoLimits()
    demo.queue(max_size=limits.queue_size, default_concurrency_limit=limits.concurrency)
    return demo.launch(
        server_name=host,
        server_port=port,
        share=share,
        prevent_thread_lock=prevent_thread_lock,
        quiet=quiet,
        max_file_size=limits.max_file_bytes,
        allowed_paths=[str(dirs.examples)],
        show_error=False,  # unexpected exceptions stay in the server log (user errors are gr.Error)
        enable_monitoring=False,
        mcp_server=False,
        ssr_mode=False,
        footer_links=["api"],
        run_history=False,
        theme=gr.themes.Soft(),
        css=CSS,
    )
