"""What a visitor of the Gradio demo can and cannot do, through ``gradio_client`` and raw HTTP against a
server started here on 127.0.0.1: it binds loopback without a share link (also from the command line);
no file outside the app's own folders can be read, whether by URL, as a file-typed input, through a chat
history or by making the server fetch a URL; only video files within the size, duration and frame-size
limits are accepted, and every refusal or failure is a short message, never a traceback; 20 concurrent
requests all succeed through a bounded queue with small concurrency limits."""

from __future__ import annotations

import os
import signal
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import pytest
from conftest import load_script
from demo_fixtures import running_demo
from gradio_client import Client, handle_file
from gradio_client.exceptions import AppError
from PIL import Image
from video_fixtures import write_clip

from mllm.chat import VideoChat
from mllm.demo_handlers import display_names
from mllm.demo_uploads import DemoLimits, video_container

pytest_plugins = ["demo_fixtures", "mllm_run_fixtures", "tiny_llm_fixtures"]

LIMITS = {"max_file_mb": 1.0, "max_duration_s": 10.0, "max_side": 80, "queue_size": 24, "concurrency": 2}
QUESTION = "What gymnastics move is this athlete performing?"
NOT_A_VIDEO = "This file is not a video clip. Please upload a video"


@pytest.fixture(scope="module")
def server(tmp_path_factory, fitted_encoder, synthgym_clips, trained_mllm, mllm_data):
    chat = VideoChat.from_pretrained(trained_mllm, encoder_weights=mllm_data["encoder"])
    with running_demo(
        tmp_path_factory.mktemp("demo_visitor_limits"), fitted_encoder, synthgym_clips["list"], chat, **LIMITS
    ) as running:
        yield running


@pytest.fixture(scope="module")
def client(server) -> Client:
    return Client(server.url, verbose=False)


@pytest.fixture(scope="module")
def bad_files(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("bad_uploads")
    files = {
        name: folder / f"{name}.mp4"
        for name in ("empty", "text", "png", "gif", "hls", "truncated", "big", "long", "wide")
    }
    files["empty"].write_bytes(b"")
    files["text"].write_text("this is not a video\n" * 20)
    Image.fromarray(np.zeros((64, 64, 3), np.uint8)).save(files["png"], format="PNG")  # named .mp4
    frames = [Image.fromarray(np.full((64, 64, 3), v, np.uint8)) for v in (0, 255, 0, 255)]
    frames[0].save(files["gif"], format="GIF", save_all=True, append_images=frames[1:])
    # An HLS playlist that points at a local file: ffmpeg must never be asked to follow it.
    files["hls"].write_text("#EXTM3U\n#EXTINF:10.0,\nfile:///etc/passwd\n#EXT-X-ENDLIST\n")
    files["truncated"].write_bytes(write_clip(folder / "whole.mp4").read_bytes()[:600])  # MP4 header, no data
    files["big"].write_bytes(b"\0" * 1_200_000)  # over the 1 MB limit
    write_clip(files["long"], num_frames=120, fps=5)  # 24 s, over the 10 s limit, 20 kB
    write_clip(files["wide"], num_frames=8, height=64, width=96)  # 96 px wide, over the 80 px limit
    return files


# ---- binding ------------------------------------------------------------------------------------------


def test_binds_loopback_without_share(server):
    assert server.url.startswith("http://127.0.0.1:") and server.share_url is None


def test_cli_binds_loopback_shares_only_when_asked(monkeypatch, fitted_encoder, synthgym_clips):
    demo_cli = load_script("demo")
    launched = []

    def fake_launch(demo, dirs, limits, **kwargs):
        launched.append((limits, kwargs))
        return None, "", None

    monkeypatch.setattr(demo_cli, "launch_demo", fake_launch)
    for key in ("GRADIO_TEMP_DIR", "GRADIO_EXAMPLES_CACHE"):  # main() points them at its own folder
        if key in os.environ:
            monkeypatch.setenv(key, os.environ[key])
        else:
            monkeypatch.delenv(key, raising=False)
    sigterm = signal.getsignal(signal.SIGTERM)
    base = ["--encoder", str(fitted_encoder), "--no-mllm", "--examples", str(synthgym_clips["list"])]
    custom = ["--share", "--max-file-mb", "5", "--max-duration", "8", "--max-side", "640"]
    try:
        assert demo_cli.main(base) == 0
        assert demo_cli.main(base + custom) == 0
        assert demo_cli.main([*base, "--queue-size", "5"]) == 1  # a queue of at least 20 is enforced
    finally:
        signal.signal(signal.SIGTERM, sigterm)
    (limits, defaults), (custom_limits, shared) = launched
    assert defaults["host"] == "127.0.0.1" and defaults["share"] is False
    assert shared["share"] is True and shared["host"] == "127.0.0.1"
    assert (limits.max_file_mb, limits.max_duration_s, limits.max_side) == (50.0, 60.0, 4096)
    assert (custom_limits.max_file_mb, custom_limits.max_duration_s, custom_limits.max_side) == (
        5.0,
        8.0,
        640,
    )


# ---- files ---------------------------------------------------------------------------------------------


def test_no_file_outside_the_app_folders_is_served(server, synthgym_clips):
    foreign = Path(tempfile.gettempdir()) / "gradio" / "sefar-demo-test-foreign.txt"  # the shared default
    foreign.parent.mkdir(parents=True, exist_ok=True)
    foreign.write_text("another app's upload")
    example = server.examples[0].path
    outside = [
        "/etc/passwd",
        f"{server.dirs.examples}/../../../../../../etc/passwd",
        "%2Fetc%2Fpasswd",
        "..%2F..%2F..%2F..%2Fetc%2Fpasswd",
        str(synthgym_clips["list"]),  # the data set folder itself: only the copies are served
        str(synthgym_clips["clips"][0][0]),
        str(Path(__file__).resolve()),  # the working tree
        str(foreign),
    ]
    try:
        with httpx.Client(base_url=server.url) as http:
            for path in outside:
                for route in ("gradio_api/file=", "file=", "gradio_api/file/"):
                    response = http.get(route + path)
                    assert response.status_code in (403, 404), (route, path, response.status_code)
                    assert "root:" not in response.text and "another app" not in response.text
            assert http.get(f"gradio_api/file={example}").status_code == 200  # the examples folder is
    finally:
        foreign.unlink()


def _call(http: httpx.Client, api: str, data: list) -> str:
    """A raw queued API call; the event stream's text."""
    call = http.post(f"gradio_api/call/{api}", json={"data": data})
    assert call.status_code == 200, call.text
    return http.get(f"gradio_api/call/{api}/{call.json()['event_id']}").text


def _file(path: str | Path) -> dict:
    return {"path": str(path), "meta": {"_type": "gradio.FileData"}}


def test_file_inputs_must_be_uploads_to_this_app(server, synthgym_clips):
    passwd = _file("/etc/passwd")
    with httpx.Client(base_url=server.url, timeout=60) as http:
        with open(synthgym_clips["clips"][0][0], "rb") as fh:
            uploaded = _file(http.post("gradio_api/upload", files={"files": ("clip.mp4", fh)}).json()[0])
        # Controls: an uploaded clip and a plain chat history work.
        assert "event: complete" in _call(http, "analyze", [uploaded])
        text_history = [
            {"role": role, "content": [{"type": "text", "text": text}]}
            for role, text in (("user", "hi"), ("assistant", "hello"))
        ]
        assert "event: complete" in _call(http, "chat", ["and now?", text_history, uploaded])

        refused = [
            ("analyze", [passwd]),
            ("analyze", [_file(server.examples[0].path)]),  # a path the app serves, but no upload
            ("quiz", [passwd]),
            # A chat history carrying a file message (with a good clip): nothing of the file comes back.
            ("chat", ["hi", [{"role": "user", "content": [{"type": "file", "file": passwd}]}], uploaded]),
            # A URL makes the server fetch it: refused for this machine's own addresses.
            ("analyze", [_file(f"{server.url}gradio_api/file={server.examples[0].path}")]),
        ]
        for api, data in refused:
            stream = _call(http, api, data)
            assert "event: error" in stream and "root:" not in stream and "top-1" not in stream, (api, data)


# ---- uploads -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "message"),
    [
        ("empty", "This file is empty (0 bytes)"),
        ("text", NOT_A_VIDEO),
        ("png", NOT_A_VIDEO),
        ("gif", NOT_A_VIDEO),
        ("hls", NOT_A_VIDEO),
        ("truncated", "Cannot read this file as a video: cannot decode video"),
        ("long", "This clip lasts 24 s; the demo accepts clips up to 10 s"),
        ("wide", "This clip's frames are 96x64 pixels; the demo accepts up to 80 pixels on a side"),
    ],
)
def test_bad_uploads_get_friendly_messages(client, bad_files, kind, message):
    # analyze and the quiz answer with the message in their own panel (one message, no error badges)
    gallery, _, _, status = client.predict(handle_file(bad_files[kind]), api_name="/analyze")
    assert message in status and "Traceback" not in status and not gallery
    quiz = client.predict(handle_file(bad_files[kind]), api_name="/quiz")
    assert message in quiz and "Traceback" not in quiz
    with pytest.raises(AppError, match="This file|Cannot read|This clip"):
        client.predict(QUESTION, [], handle_file(bad_files[kind]), api_name="/chat")


def test_oversize_upload_is_refused(server, client, bad_files):
    with pytest.raises(ValueError, match="exceeds the maximum file size of 1000000 bytes"):
        client.predict(handle_file(bad_files["big"]), api_name="/analyze")  # the client checks first
    with open(bad_files["big"], "rb") as fh:  # the server refuses it too, while receiving
        response = httpx.post(f"{server.url}gradio_api/upload", files={"files": ("big.mp4", fh)})
    assert response.status_code == 413 and "maximum allowed size of 1000000 bytes" in response.text


def test_unexpected_errors_are_a_short_message(server, client, synthgym_clips, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("internal detail /srv/secret/path")

    monkeypatch.setattr(server.predictor, "predict", broken)
    text = client.predict(handle_file(synthgym_clips["clips"][0][0]), api_name="/analyze")[3]  # the status
    assert "Something went wrong in analyze (RuntimeError); see the server log." in text
    assert "Traceback" not in text and "/srv/secret" not in text


def test_video_container_sniffing(bad_files, synthgym_clips, tmp_path):
    assert video_container(synthgym_clips["clips"][0][0]) == "mp4"
    write_clip(tmp_path / "clip.mkv", num_frames=4)
    write_clip(tmp_path / "clip.avi", num_frames=4, codec="mpeg4")
    assert video_container(tmp_path / "clip.mkv") == "matroska"
    assert video_container(tmp_path / "clip.avi") == "avi"
    for kind in ("empty", "text", "png", "gif", "hls", "big"):
        assert video_container(bad_files[kind]) is None, kind


# ---- load ----------------------------------------------------------------------------------------------


def test_twenty_concurrent_requests_all_succeed(server, client, synthgym_clips):
    clips = synthgym_clips["clips"]
    names = display_names(server.predictor)
    start = time.perf_counter()
    with ThreadPoolExecutor(max_workers=20) as pool:
        jobs = [
            pool.submit(client.predict, handle_file(clips[i % len(clips)][0]), api_name="/analyze")
            for i in range(20)
        ]
        results = [job.result(timeout=120) for job in jobs]
    for i, (_, top5, _, _) in enumerate(results):
        assert top5["label"] == names[clips[i % len(clips)][1]]
    assert time.perf_counter() - start < 60


def test_queue_and_concurrency_limits(server):
    assert server.demo._queue.max_size == 24  # bounded queue
    limits = {fn.api_name: fn.concurrency_limit for fn in server.demo.fns.values() if fn.api_name}
    assert limits["analyze"] == 2 and limits["chat"] == 1 and limits["quiz"] == 1


def test_limits_are_validated():
    with pytest.raises(ValueError, match="queue_size"):
        DemoLimits(queue_size=10)
    with pytest.raises(ValueError, match="concurrency"):
        DemoLimits(queue_size=20, concurrency=20)
    with pytest.raises(ValueError, match="max_side"):
        DemoLimits(max_side=0)
