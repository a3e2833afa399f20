"""The Gradio demo (docs/DESIGN.md §Demo): upload a clip or pick a SynthGym example → the frames each view
sampled, the top-5 elements with their set and event; a chat panel where the video MLLM answers questions
about the clip (streamed); a Gym-QA quiz about the clip. ``scripts/demo.py`` is the command line. This
module holds the layout and the launch; the handlers are in :mod:`mllm.demo_handlers`, the models and the
one decode per clip in :mod:`mllm.demo_models`, limits, folders and upload checks in
:mod:`mllm.demo_uploads`.

    dirs = AppDirs.create()                              # private upload/cache + examples folders (first!)
    predictor = Predictor("runs/quickstart/encoder")
    chat, video_encoder = load_chat(mllm_dir, predictor, "runs/quickstart/encoder")   # optional
    examples = copy_examples(read_inputs("data/synthgym-tiny/test.csv"), predictor, dirs.examples)
    detector = load_routine_detector("runs/detector/detector", predictor.model)   # optional: routine tab
    demo = build_demo(predictor, chat, examples=examples, limits=DemoLimits(), video_encoder=video_encoder,
                      detector=detector)
    launch_demo(demo, dirs, DemoLimits(), host="127.0.0.1", port=7860)

The page has two tabs: "Clip" (the above) and "Routine" (:mod:`mllm.demo_routine`: upload a whole routine →
the element detector's segments on a timeline and in a table; pick a segment and ask the MLLM about it).

Endpoints (also what ``gradio_client`` calls): ``/analyze`` (video → frames gallery, top-5 label, table,
status), ``/chat`` (message, history, video → streamed history, cleared textbox), ``/quiz`` (video →
question, the MLLM's answer and the truth as Markdown), ``/detect_routine`` (routine video → timeline image,
table, segment choices, status), ``/ask_segment`` (routine video, segment ``"<start>-<end>"`` seconds,
question → the MLLM's answer as Markdown). Each takes the video itself, so no hidden session state is
needed.

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
  (read from the container header before anything is decoded: :func:`~mllm.demo_uploads.check_upload`);
  the queue is bounded and the encoder and the LLM run with small concurrency limits, so a burst of
  requests waits instead of exhausting memory.
- User errors (empty, oversized, not a video, too long, too large frames, unreadable) become one short
  message: in the status line (analyze) or the quiz panel, a ``gr.Error`` toast in the chat; unexpected
  exceptions are logged on the server and reported as a generic message, never a traceback.

What a visitor is told about the models: the header says what they can and cannot do (a closed set of
elements, the frames the encoder sees, whether it checks for clips out of its domain, a chat that can be
wrong); the status line gives each clip's uncertainty and warns of a clip shorter than the sampler's frames,
a clip the out-of-domain check flags, and a low-confidence top-1.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import gradio as gr

from gym_qa.questions import Question
from mllm.demo_handlers import NO_MLLM, ChatModel, DemoHandlers, views_caption
from mllm.demo_routine import NO_DETECTOR, TABLE_HEADERS, RoutineHandlers, routine_capabilities
from mllm.demo_uploads import AppDirs, DemoLimits, Example
from mllm.encoders import VideoEncoder
from sefar_encoder.detection.routine_detection import RoutineDetector
from sefar_encoder.prediction import Predictor

CSS = "#status { min-height: 2.5em; }"  # the status line does not make the layout jump when it fills
# The browser's player cannot play every file (a refused upload; AVI or codecs the browser lacks, which the
# decoder reads): gradio then shows its own "Video not playable" toast beside the status line, which says
# what the demo made of the file. One message: the player's error event stops before gradio's handler.
SILENCE_PLAYER_ERRORS = """() => {
  window.addEventListener("error", (event) => {
    if (event.target instanceof HTMLVideoElement) event.stopImmediatePropagation();
  }, true);
}"""


def capabilities(predictor: Predictor, chat: bool) -> str:
    """The header's "what this can and cannot do", from the loaded models."""
    classes = predictor.num_classes
    root = predictor.model.preprocessing.data_root
    trained = f" of `{Path(root).name}`" if root else ""
    text = (
        f"**What this can and cannot do.** The encoder names one of the {classes} elements{trained} it was "
        "trained on, a closed set: every clip gets one of them, even a clip of something else, and a "
        "high percentage says which of those elements fits best, not that the clip shows one. It looks at "
        f"{sum(predictor.views)} frames spread over the whole clip, so upload one trimmed element (a few "
        "seconds, one athlete); shorter clips repeat frames and longer ones are squeezed into those frames."
    )
    if predictor.calibration is not None:
        text += (
            f" Each clip gets an out-of-domain check ({predictor.calibration.score} score): a clip scoring "
            f"higher than {100 * predictor.calibration.keep:.0f} % of its in-domain calibration clips is "
            "flagged. Measured on synthetic clips, it catches most clips that are not gymnastics at all but "
            "few gymnastics elements it was not trained on, so an unflagged clip can still be something else."
        )
    else:
        text += (
            " Its out-of-domain check is not calibrated, so no clip is flagged as unlike its training data."
        )
    if chat:
        text += (
            " The chat's answers come from a language model trained on the same labels: they can be wrong, "
            "and it knows no more about the clip than the encoder's features."
        )
    return text


def build_demo(
    predictor: Predictor,
    chat: ChatModel | None = None,
    examples: Sequence[Example] = (),
    limits: DemoLimits | None = None,
    questions: Sequence[Question] = (),
    video_encoder: VideoEncoder | None = None,
    detector: RoutineDetector | None = None,
) -> gr.Blocks:
    """The app's layout and events. Launch it with :func:`launch_demo` (which applies the limits).
    ``video_encoder``: the MLLM's video encoder (see :class:`~mllm.demo_handlers.DemoHandlers`; the routine
    tab's questions need it). ``detector``: the element detector of the routine tab (None: the tab says
    that no detector is loaded)."""
    limits = limits or DemoLimits()
    h = DemoHandlers(predictor, chat, examples, limits, questions, video_encoder)
    routine = RoutineHandlers(detector, h.clips, chat, limits, predictor.hierarchy)
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
            "the video MLLM answers questions about the clip.\n\n" + capabilities(predictor, chat is not None)
        )
        with gr.Tabs():
            with gr.Tab("Clip", id="clip"):
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
                    f"**Frames the encoder sampled**: {views_caption(predictor.views)}; "
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
            with gr.Tab("Routine", id="routine"):
                routine_tab(routine, limits, chat is not None)

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


def routine_tab(h: RoutineHandlers, limits: DemoLimits, chat: bool) -> None:
    """The routine tab's layout and events (inside :func:`build_demo`'s Blocks): upload a routine → the
    detected elements on a timeline and in a table; pick a segment and ask the MLLM about it."""
    intro = (
        f"Upload a whole routine (up to {limits.max_file_mb:g} MB and {limits.max_routine_duration_s:g} s): "
        "the element detector finds its elements; pick one to ask the video MLLM about that segment only."
    )
    about = routine_capabilities(h.detector) if h.detector is not None else f"**{NO_DETECTOR}**"
    gr.Markdown(f"{intro}\n\n{about}")
    with gr.Row(equal_height=False):
        with gr.Column(scale=2, min_width=280):
            video = gr.Video(
                label="Routine", sources=["upload"], include_audio=True, height=260, elem_id="routine-video"
            )
            detect = gr.Button("Detect elements", variant="primary", interactive=h.detector is not None)
            status = gr.Markdown(elem_id="routine-status")
        with gr.Column(scale=3, min_width=360):
            timeline = gr.Image(
                label="Detected elements",
                type="filepath",
                interactive=False,
                buttons=["download", "fullscreen"],
                elem_id="timeline",
            )
            table = gr.Dataframe(
                headers=TABLE_HEADERS,
                datatype=["number", "str", "str", "str", "str", "str", "str"],
                interactive=False,
                column_widths=["5%", "8%", "8%", "35%", "14%", "18%", "12%"],
                wrap=True,
                label="Segments in time order (start and end in seconds)",
                elem_id="routine-table",
            )
    gr.Markdown("### Ask about a segment" + ("" if chat else f"\n{NO_MLLM}"))
    with gr.Row():
        segment = gr.Dropdown(
            label="Segment (or type start-end in seconds)",
            choices=[],
            allow_custom_value=True,  # /ask_segment takes any time range, not only this session's list
            scale=2,
            elem_id="segment",
        )
        question = gr.Textbox(
            placeholder="e.g. What gymnastics move is this athlete performing?", label="Question", scale=4
        )
        ask = gr.Button("Ask", variant="primary", scale=1)
    answer = gr.Markdown(elem_id="segment-answer")

    detect.click(
        h.detect_routine,
        inputs=[video],
        outputs=[timeline, table, segment, status],
        api_name="detect_routine",
        concurrency_limit=limits.concurrency,
        concurrency_id="encoder",
    )
    # A new routine: the old segments and answer no longer apply.
    video.change(
        lambda: (None, [], gr.update(choices=[], value=None), "", ""),
        outputs=[timeline, table, segment, status, answer],
        api_visibility="private",
        queue=False,
    )
    gr.on(
        [ask.click, question.submit],
        h.ask_segment,
        inputs=[video, segment, question],
        outputs=[answer],
        api_name="ask_segment",
        concurrency_limit=limits.chat_concurrency,
        concurrency_id="mllm",
    )


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
        js=SILENCE_PLAYER_ERRORS,
    )
