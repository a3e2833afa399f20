"""The demo's routine tab (mllm/demo_routine.py): on SynthGym tiny routines (make_synthgym.py --routines tiny)
with a detector trained for two epochs on the tiny MLLM encoder's window features, the detect handler gives
a timeline PNG and a table of segments inside the routine, the same segments scripts/detect.py writes; the
tiny MLLM (the MLLM fixtures') answers about one segment from that segment's frames only; bad uploads and
a missing detector get their messages; ``demo.py --detector`` exits 1 for a missing folder or an encoder of
another width; the two endpoints work through ``gradio_client``.

The detector is exported with ``inference.min_class_score`` very low, so that every class is searched and
the untrained detector still reports segments: these tests are about the demo, not the detector's quality.
"""

from __future__ import annotations

import csv
import os
import signal
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import load_script
from demo_fixtures import running_demo
from gradio_client import Client, handle_file
from PIL import Image

from gym_qa.routine_annotations import read_routines_json
from mllm.demo_handlers import NO_MLLM
from mllm.demo_models import DemoClips, PartSampler, load_chat
from mllm.demo_routine import NO_DETECTOR, RoutineHandlers, parse_segment
from mllm.demo_uploads import DemoLimits
from sefar_encoder.detection.routine_detection import load_routine_detector
from sefar_encoder.model import ModelConfig, SeFAREncoder
from sefar_encoder.prediction import Predictor
from sefar_encoder.sampling import DualLevelSampler

pytest_plugins = ["demo_fixtures", "mllm_run_fixtures", "synthgym_fixtures", "tiny_llm_fixtures"]

QUESTION = "What gymnastics move is this athlete performing?"


@pytest.fixture(scope="module")
def gradio_temp(tmp_path_factory):
    """The handlers write their images under GRADIO_TEMP_DIR (the app's private folder): a test folder."""
    saved = os.environ.get("GRADIO_TEMP_DIR")
    os.environ["GRADIO_TEMP_DIR"] = str(tmp_path_factory.mktemp("gradio_temp"))
    yield Path(os.environ["GRADIO_TEMP_DIR"])
    if saved is None:
        os.environ.pop("GRADIO_TEMP_DIR", None)
    else:
        os.environ["GRADIO_TEMP_DIR"] = saved


@pytest.fixture(scope="module")
def routines(synthgym_tiny_routines) -> Path:
    return synthgym_tiny_routines


@pytest.fixture(scope="module")
def detector_dir(tmp_path_factory, routines, mllm_data) -> Path:
    """A detector export trained on the window features of the MLLM fixtures' encoder (2 epochs)."""
    root = tmp_path_factory.mktemp("detector")
    extract = load_script("extract_routine_features")
    call = ["--routines", str(routines / "routines.json"), "--encoder", str(mllm_data["encoder"])]
    assert extract.main([*call, "--out", str(root / "features"), "--quiet"]) == 0
    train = load_script("train_detector")
    assert (
        train.main(
            [
                f"routines={routines / 'routines.json'}",
                f"features={root / 'features'}",
                f"out_dir={root / 'run'}",
                "epochs=2",
                "batch_size=2",
                "model.hidden_dim=32",
                "model.embed_dim=16",
                "model.num_clusters=4",
                "recluster_every=2",
                "inference.min_class_score=-1000",  # every class searched: segments even untrained
                "progress=false",
            ]
        )
        == 0
    )
    return root / "run" / "detector"


@pytest.fixture(scope="module")
def predictor(mllm_data) -> Predictor:
    return Predictor(mllm_data["encoder"])


@pytest.fixture(scope="module")
def handlers(gradio_temp, detector_dir, predictor, mllm_data, trained_mllm) -> RoutineHandlers:
    chat, video_encoder = load_chat(trained_mllm, predictor, mllm_data["encoder"])
    detector = load_routine_detector(detector_dir, loaded={mllm_data["encoder"]: predictor.model})
    return RoutineHandlers(
        detector, DemoClips(predictor, video_encoder), chat, DemoLimits(), predictor.hierarchy
    )


@pytest.fixture(scope="module")
def routine(routines) -> tuple[Path, float]:
    """The test routine's video and its duration (s)."""
    found, _ = read_routines_json(routines / "routines.json")
    r = next(r for r in found if r.subset == "testing")
    return routines / r.extra["video"], r.duration


@pytest.fixture(scope="module")
def detected(handlers, routine):
    return handlers.detect_routine(str(routine[0]))


# ---- detection --------------------------------------------------------------------------------------


def test_detect_gives_a_timeline_and_rows_inside_the_routine(detected, routine, gradio_temp):
    timeline, rows, choices, status = detected
    video, duration = routine
    assert rows, status  # every class is searched (see the module docstring): there are segments
    starts = [float(r[1]) for r in rows]
    assert starts == sorted(starts) and [r[0] for r in rows] == list(range(1, len(rows) + 1))
    for _, start, end, element, set_name, event, score in rows:
        assert 0.0 <= float(start) < float(end) <= duration + 0.005, (start, end, duration)
        assert element and set_name.startswith("set ") and event and float(score) == float(score)
    path = Path(timeline)
    assert path.parent.parent == gradio_temp and path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with Image.open(path) as image:
        assert image.width == 1000 and image.height > 130 + 20 * min(len(rows), 40)  # a row per segment
    assert f"`{video.name}`: {len(rows)} segments" in status
    values = [value for _, value in choices["choices"]]
    assert len(values) == len(rows) and choices["value"] == values[0]
    np.testing.assert_allclose(
        [parse_segment(v) for v in values], [(float(r[1]), float(r[2])) for r in rows], atol=0.005
    )


def test_detect_py_finds_the_same_segments(detected, detector_dir, routine, tmp_path):
    """One way of detecting: scripts/detect.py and the demo call the same library function."""
    out = tmp_path / "segments.csv"
    assert (
        load_script("detect").main([str(routine[0]), "--detector", str(detector_dir), "--out", str(out)]) == 0
    )
    with open(out) as f:
        written = sorted((float(r["start"]), float(r["end"]), r["label"]) for r in csv.DictReader(f))
    shown = sorted((float(r[1]), float(r[2]), r[3]) for r in detected[1])
    assert len(written) == len(shown)
    for (s0, e0, name0), (s1, e1, name1) in zip(written, shown):
        assert name0 == name1 and s0 == pytest.approx(s1, abs=0.005) and e0 == pytest.approx(e1, abs=0.005)


def test_detect_py_on_a_corrupt_file_names_it_and_exits_1(detector_dir, routine, tmp_path, capsys):
    """A file that does not decode: a clear error naming it, exit code 1, no output written."""
    corrupt = tmp_path / "broken_routine.mp4"
    corrupt.write_bytes(routine[0].read_bytes()[:2048])  # a real MP4's first bytes, cut off
    out = tmp_path / "segments.json"
    assert load_script("detect").main([str(corrupt), "--detector", str(detector_dir), "--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error:") and str(corrupt) in err and "Traceback" not in err
    assert not out.exists()


def test_the_timeline_file_is_named_by_its_content(handlers, routine, detected):
    again = handlers.detect_routine(str(routine[0]))
    assert again[0] == detected[0] and again[1] == detected[1]


# ---- asking about a segment ----------------------------------------------------------------------------


def test_part_sampler_takes_frames_of_the_part_only():
    sampler = DualLevelSampler((2, 2, 4))
    (part,) = PartSampler(sampler, 100, 140).eval(375)
    expected = [v + 100 for v in sampler.eval(40)[0].per_view]
    assert all(np.array_equal(a, b) for a, b in zip(part.per_view, expected))
    assert part.flat.min() >= 100 and part.flat.max() < 140
    (tail,) = PartSampler(sampler, 370, 400).eval(375)  # past the end: cut at the last frame
    assert tail.flat.min() >= 370 and tail.flat.max() == 374
    with pytest.raises(ValueError):
        PartSampler(sampler, 5, 5)


def test_segment_tokens_come_from_the_segment(handlers, routine):
    video, duration = routine
    clips = handlers.clips
    whole = clips.segment_input(video, 0.0, duration)  # the whole routine as one part = the whole clip
    torch.testing.assert_close(whole, clips.mllm_input(video))
    first, second = clips.segment_input(video, 0.0, 3.0), clips.segment_input(video, 8.0, 11.0)
    assert first.shape == whole.shape and not torch.allclose(first, second)


def test_asking_about_a_segment_gives_the_mllms_answer(handlers, routine, detected):
    segment = detected[2]["value"]
    text = handlers.ask_segment(str(routine[0]), segment, QUESTION)
    start, end = parse_segment(segment)
    assert text.startswith(f"**Segment {start:.1f}-{end:.1f} s.** {QUESTION}")
    answer = text.split("**MLLM:**", 1)[1].strip()
    assert answer and NO_MLLM not in answer and not answer.startswith("**")


def test_segment_and_question_errors_are_one_message(handlers, routine):
    video, duration = routine
    assert "Pick a segment first" in handlers.ask_segment(str(video), "", QUESTION)
    assert "is empty" in handlers.ask_segment(str(video), "5-3", QUESTION)
    assert "after the routine's end" in handlers.ask_segment(
        str(video), f"{duration + 5:.0f}-{duration + 9:.0f}", QUESTION
    )
    assert "Type a question" in handlers.ask_segment(str(video), "1-2", "  ")


# ---- bad uploads, limits, no detector, no MLLM ----------------------------------------------------------


def test_a_non_video_upload_gets_the_clear_message(handlers, tmp_path):
    bad = tmp_path / "routine.mp4"
    bad.write_text("this is not a video\n")
    timeline, rows, choices, status = handlers.detect_routine(str(bad))
    assert (timeline, rows, choices["choices"]) == (
        None,
        [],
        [],
    ) and "This file is not a video clip" in status
    assert "This file is not a video clip" in handlers.ask_segment(str(bad), "1-2", QUESTION)


def test_routines_have_their_own_duration_limit(handlers, predictor, routine):
    video, duration = routine
    clips_only = DemoLimits(max_duration_s=5.0)  # shorter than the routine: the clip limit does not apply
    lenient = RoutineHandlers(handlers.detector, handlers.clips, handlers.chat, clips_only)
    assert lenient.detect_routine(str(video))[1]
    strict = RoutineHandlers(
        handlers.detector, handlers.clips, handlers.chat, DemoLimits(max_routine_duration_s=10.0)
    )
    status = strict.detect_routine(str(video))[3]
    assert f"This routine lasts {duration:.0f} s; the demo accepts routines up to 10 s" in status


def test_without_a_detector_or_an_mllm_the_tab_says_so(handlers, predictor, routine):
    no_detector = RoutineHandlers(None, DemoClips(predictor, None), None, DemoLimits())
    timeline, rows, _, status = no_detector.detect_routine(str(routine[0]))
    assert (timeline, rows) == (None, []) and NO_DETECTOR in status
    assert NO_DETECTOR in no_detector.ask_segment(str(routine[0]), "1-2", QUESTION)
    no_mllm = RoutineHandlers(handlers.detector, DemoClips(predictor, None), None, DemoLimits())
    assert NO_MLLM in no_mllm.ask_segment(str(routine[0]), "1-2", QUESTION)


# ---- the command line ------------------------------------------------------------------------------------


def test_demo_cli_detector_errors_exit_1(monkeypatch, capsys, mllm_data, detector_dir, tmp_path):
    demo_cli = load_script("demo")
    launched = []
    monkeypatch.setattr(demo_cli, "launch_demo", lambda demo, *a, **k: launched.append(demo))
    for key in ("GRADIO_TEMP_DIR", "GRADIO_EXAMPLES_CACHE"):  # main() points them at its own folder
        if key in os.environ:
            monkeypatch.setenv(key, os.environ[key])
        else:
            monkeypatch.delenv(key, raising=False)
    narrow = tmp_path / "narrow_encoder"  # features of width 16, the detector reads 32
    cfg = ModelConfig(img_size=32, patch_size=8, embed_dim=16, depth=1, num_heads=2, num_classes=4)
    SeFAREncoder(cfg).save_pretrained(narrow)
    base = ["--encoder", str(mllm_data["encoder"]), "--no-mllm", "--examples", str(mllm_data["test_list"])]
    sigterm = signal.getsignal(signal.SIGTERM)
    try:
        assert demo_cli.main([*base, "--detector", str(tmp_path / "missing")]) == 1
        assert "cannot load the detector" in capsys.readouterr().err
        assert demo_cli.main([*base, "--detector", str(detector_dir), "--detector-encoder", str(narrow)]) == 1
        assert "features of width 16, the detector" in capsys.readouterr().err
        assert not launched
        assert demo_cli.main([*base, "--detector", str(detector_dir), "--max-routine-duration", "30"]) == 0
    finally:
        signal.signal(signal.SIGTERM, sigterm)
    (demo,) = launched
    names = {fn.api_name for fn in demo.fns.values()}
    assert {"analyze", "chat", "quiz", "detect_routine", "ask_segment"} <= names


# ---- the endpoints ---------------------------------------------------------------------------------------


def test_endpoints_detect_and_answer(tmp_path_factory, mllm_data, trained_mllm, detector_dir, routine):
    def models(predictor: Predictor) -> dict:
        chat, video_encoder = load_chat(trained_mllm, predictor, mllm_data["encoder"])
        detector = load_routine_detector(detector_dir, loaded={mllm_data["encoder"]: predictor.model})
        return {"chat": chat, "video_encoder": video_encoder, "detector": detector}

    root = tmp_path_factory.mktemp("routine_app")
    with running_demo(root, mllm_data["encoder"], mllm_data["test_list"], models=models) as server:
        client = Client(server.url, verbose=False)
        timeline, table, _, status = client.predict(handle_file(routine[0]), api_name="/detect_routine")
        assert Path(timeline).read_bytes()[:4] == b"\x89PNG" and table["data"] and "segments" in status
        first = table["data"][0]
        text = client.predict(
            handle_file(routine[0]), f"{first[1]}-{first[2]}", QUESTION, api_name="/ask_segment"
        )
        assert text.startswith("**Segment") and text.split("**MLLM:**", 1)[1].strip()
