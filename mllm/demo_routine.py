"""The demo's routine tab (issue 17): upload a whole routine → the elements the detector finds, on a
timeline and in a table; pick one segment and ask the video MLLM about that segment only.

    detector = load_routine_detector("runs/detector/detector")      # sefar_encoder.detection
    routine = RoutineHandlers(detector, clips, chat, DemoLimits(), predictor.hierarchy)
    timeline, rows, choices, status = routine.detect_routine("routine.mp4")
    answer = routine.ask_segment("routine.mp4", "12.320-14.000", "What element is this?")

Endpoints (:func:`mllm.demo_app.build_demo`): ``/detect_routine`` (video → timeline PNG, table, segment
choices, status) and ``/ask_segment`` (video, segment ``"<start>-<end>"`` in seconds, question → the MLLM's
answer as Markdown). Each takes the video itself, so no hidden session state is needed: a segment is its time
range, which any client may also type.

The detection is :meth:`RoutineDetector.detect <sefar_encoder.detection.routine_detection.RoutineDetector>`
(the one ``scripts/detect.py`` runs); the MLLM gets the tokens of the segment's frames only
(:meth:`mllm.demo_models.DemoClips.segment_input`). Uploads pass :func:`~mllm.demo_uploads.check_upload`
with the routine's own duration limit; user errors become one short message in the tab's status line or
answer panel, as in the clip tab.
"""

from __future__ import annotations

import re
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import gradio as gr
import numpy as np

from gym_qa.detection_eval import Detection
from gym_qa.hierarchy import Hierarchy
from gym_qa.hierarchy_files import EVENT_NAMES
from mllm.demo_handlers import NO_MLLM, ChatModel, cannot_read, frame_file, reported
from mllm.demo_models import DemoClips
from mllm.demo_uploads import DemoLimits, check_upload, user_error
from sefar_encoder.decoding import DecodeError
from sefar_encoder.detection.routine_detection import RoutineDetector

NO_DETECTOR = (
    "No element detector is loaded: start the demo with `--detector DIR` (a `scripts/train_detector.py` "
    "export) to find the elements of a routine."
)
ROUTINE_HINT = "Please upload a routine video (.mp4, .mkv, .webm, .mov, .avi)."
TABLE_HEADERS = ["#", "start", "end", "element", "set", "event", "score"]  # start, end: seconds
MAX_TIMELINE_ROWS = 40  # a timeline taller than this is unreadable; the table lists every segment
_SEGMENT = re.compile(r"^\s*(\d+(?:\.\d*)?)\s*-\s*(\d+(?:\.\d*)?)\s*(?:s\b.*)?$")


def segment_value(d: Detection) -> str:
    """A segment as the ``/ask_segment`` endpoint takes it: ``"<start>-<end>"`` in seconds."""
    return f"{d.start:.3f}-{d.end:.3f}"


def parse_segment(text: str | None) -> tuple[float, float]:
    """``"12.3-14"`` → (12.3, 14.0) seconds; a user error for anything else or an empty range."""
    match = _SEGMENT.match(text or "")
    if not match:
        raise user_error(
            "Pick a segment first (detect the elements), or type a time range such as `12.3-14.0` (seconds)."
        )
    start, end = float(match.group(1)), float(match.group(2))
    if end <= start:
        raise user_error(f"The segment {start:g}-{end:g} s is empty: its end must come after its start.")
    return start, end


def timeline_file(segments: Sequence[tuple[int, Detection, str]], duration: float, title: str) -> str:
    """``(number, detection, label)`` segments as bars on a time axis, one row each in the given order,
    labelled ``#number label``; written as a content-named PNG, atomically
    (:func:`~mllm.demo_handlers.frame_file`: gradio's cache rewrites arrays in place)."""
    from matplotlib import colormaps
    from matplotlib.backends.backend_agg import FigureCanvasAgg  # no pyplot: no global state, any thread
    from matplotlib.figure import Figure

    fig = Figure(figsize=(10, 1.3 + 0.32 * max(1, len(segments))), dpi=100)
    canvas = FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    cmap = colormaps["tab20"]  # a colour per class
    for row, (_, d, _) in enumerate(segments):
        ax.barh(row, d.end - d.start, left=d.start, height=0.7, color=cmap(d.label % 20), edgecolor="black")
    ax.set_yticks(range(len(segments)), [f"#{k} {label}" for k, _, label in segments], fontsize=8)
    ax.set_ylim(len(segments) - 0.5 if segments else 0.5, -0.5)  # the first segment on top
    ax.set_xlim(0.0, max(duration, max((d.end for _, d, _ in segments), default=0.0)))
    ax.set_xlabel("time (s)")
    ax.grid(axis="x", alpha=0.3)
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    canvas.draw()
    return frame_file(np.asarray(canvas.buffer_rgba())[..., :3])  # [H, W, 3] uint8


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'s' if n != 1 else ''}"


def routine_capabilities(detector: RoutineDetector) -> str:
    """The routine tab's "what this can and cannot do", from the detector's export."""
    trained = detector.meta.get("trained_on", {}).get("routines")
    where = f" of `{Path(trained).parent.name}`" if trained else ""
    text = (
        f"**What this can and cannot do.** The detector looks for the {detector.num_classes} elements"
        f"{where} it was trained on, a closed set, in windows of {detector.layout['window']} frames every "
        f"{detector.layout['stride']}. It learned from routine-level labels only (which elements a routine "
        "holds, not where), so a segment's start and end are approximate, an element can be missed or "
        "found twice, and anything else in the video is named as the closest of its elements. A segment's "
        "score ranks segments (higher: surer); it is not a probability."
    )
    if "val_average_map" in detector.meta:
        text += f" Its validation mAP (tIoU 0.1-0.5) was {100 * detector.meta['val_average_map']:.1f} %."
    return text


class RoutineHandlers:
    """The routine tab's handlers, separate from the layout so they can be tested without a server.

    ``detector`` None: both handlers say no detector is loaded. ``clips`` gives the MLLM's tokens of a
    segment (it needs the MLLM's video encoder when a detector and ``chat`` are given). ``hierarchy``:
    readable set names (the encoder's; a set it does not know is shown by its id).
    """

    def __init__(
        self,
        detector: RoutineDetector | None,
        clips: DemoClips,
        chat: ChatModel | None,
        limits: DemoLimits,
        hierarchy: Hierarchy | None = None,
    ):
        if detector is not None and chat is not None and clips.video_encoder is None:
            raise ValueError(
                "the routine tab's questions need the MLLM's video encoder (load_chat returns it)"
            )
        self.detector, self.clips, self.chat, self.limits = detector, clips, chat, limits
        self.hierarchy = hierarchy

    def element_row(self, d: Detection) -> tuple[str, str, str]:
        """(element, set, event) of a detection's class, as the table shows them."""
        name, set_id, event = self.detector.element(d.label)
        if self.hierarchy is not None and set_id in self.hierarchy.sets:
            set_name = self.hierarchy.set_display_name(set_id)
        else:
            set_name = f"set {set_id}"
        return name, set_name, EVENT_NAMES.get(event, event)

    # -- handlers --------------------------------------------------------------------------------
    def detect_routine(self, video: str | None) -> tuple[str | None, list[list], Any, str]:
        """video → (timeline PNG path, table rows, segment choices (a dropdown update), status Markdown).

        A routine that cannot be searched gives empty outputs and its message in the status line (one
        message, as the clip tab's analyze)."""
        empty = gr.update(choices=[], value=None)
        if self.detector is None:
            return None, [], empty, f"**{NO_DETECTOR}**"
        if not video:
            return None, [], empty, ""
        try:
            path, duration = check_upload(video, self.limits, routine=True)
            with reported("detect_routine"):
                return self._detect(path, duration)
        except gr.Error as err:
            return None, [], empty, f"**{err.message}**"

    def _detect(self, path: Path, duration: float | None) -> tuple[str, list[list], Any, str]:
        start = time.perf_counter()
        try:
            found = sorted(self.detector.detect(path), key=lambda d: (d.start, d.end, -d.score))
        except DecodeError as err:
            raise cannot_read(err, ROUTINE_HINT) from None
        seconds = time.perf_counter() - start
        length = duration if duration is not None else max((d.end for d in found), default=0.0)
        rows, bars, choices = [], [], []
        for k, d in enumerate(found, start=1):
            element, set_name, event = self.element_row(d)
            rows.append([k, f"{d.start:.2f}", f"{d.end:.2f}", element, set_name, event, f"{d.score:.2f}"])
            bars.append((k, d, f"{element} ({d.score:.2f})"))
            choices.append((f"#{k} {d.start:.1f}-{d.end:.1f} s · {element}", segment_value(d)))
        classes = len({d.label for d in found})
        title = f"{_count(len(found), 'segment')} of {_count(classes, 'element')} in {length:.1f} s"
        status = f"`{path.name}`: {title}; the detector ran in {seconds:.1f} s."
        if len(bars) > MAX_TIMELINE_ROWS:  # the highest-scoring ones, still in time order
            best = sorted(bars, key=lambda bar: -bar[1].score)[:MAX_TIMELINE_ROWS]
            bars = sorted(best, key=lambda bar: bar[0])
            title += f", the {MAX_TIMELINE_ROWS} best shown"
            status += f" The timeline shows the {MAX_TIMELINE_ROWS} highest scores; the table lists all."
        timeline = timeline_file(bars, length, title)
        if not found:
            status += (
                "  \nNo element found: no element of the detector's closed set scored high enough over this "
                "routine (or it shows none of them)."
            )
        update = gr.update(choices=choices, value=choices[0][1] if choices else None)
        return timeline, rows, update, status

    def ask_segment(self, video: str | None, segment: str | None, question: str | None) -> str:
        """The MLLM's answer about one segment of the routine (its frames only), as Markdown; a question
        that cannot be answered gives its message instead (one message, as the quiz)."""
        try:
            return self._ask(video, segment, (question or "").strip())
        except gr.Error as err:
            return f"**{err.message}**"

    def _ask(self, video: str | None, segment: str | None, question: str) -> str:
        if self.detector is None:
            return f"**{NO_DETECTOR}**"
        if not question:
            raise user_error("Type a question about the segment first.")
        if self.chat is None:
            return f"**MLLM:** {NO_MLLM}"
        path, duration = check_upload(video, self.limits, routine=True)
        start, end = parse_segment(segment)
        if duration is not None and start >= duration:
            raise user_error(
                f"The segment starts at {start:g} s, after the routine's end ({duration:.1f} s)."
            )
        with reported("ask_segment"):
            try:
                tokens = self.clips.segment_input(path, start, end)
            except DecodeError as err:
                raise cannot_read(err, ROUTINE_HINT) from None
            answer = self.chat.ask(tokens, question, stream=False).strip()
        answer = answer or "(the model gave an empty answer)"
        return f"**Segment {start:.1f}-{end:.1f} s.** {question}\n\n**MLLM:** {answer}"
