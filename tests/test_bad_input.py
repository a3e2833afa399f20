"""Bad input everywhere data enters the encoder path (docs/DESIGN.md §Dataset and loader,
docs/reliability.md), on the corpus of ``bad_input_fixtures``: odd-but-valid clips are accepted and
converted, bad files and list lines are rejected naming the file (and line); decoding, data set, loader,
predict.py, eval_encoder.py, ingest_finegym.py and train_encoder.py under both ``on_bad_sample`` policies."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from bad_input_fixtures import (
    BAD_KINDS,
    BAD_LIST_LINES,
    FRAME_COUNTS,
    NEEDS_FALLBACK,
    SHAPES,
    Corpus,
    write_corpus,
    write_corpus_dataset,
    write_list,
)
from conftest import REPO, SCRIPTS, load_script
from synthgym_fixtures import tiny_cli_args
from video_fixtures import read_frame_index

from gym_qa.lists import ListEntry, ListFileError, read_list
from sefar_encoder.clip_checks import BadClipsError
from sefar_encoder.dataset import VideoClipDataset
from sefar_encoder.decoding import BACKENDS, DecodeError, DecoderFallbackWarning, open_video, probe
from sefar_encoder.loader import DataConfig, SemiSupervisedLoader, build_datasets, eval_loader
from sefar_encoder.model.presets import build_encoder
from sefar_encoder.runtime.checkpoint import latest_checkpoint
from sefar_encoder.transforms import AugmentConfig

pytest_plugins = ["synthgym_fixtures"]  # synthgym_tiny


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Corpus:
    return write_corpus(tmp_path_factory.mktemp("corpus"))


def entries(paths: list[Path]) -> list[ListEntry]:
    return [ListEntry(p, 0, i + 1, p.name) for i, p in enumerate(paths)]


# ----------------------------------------------------------------------------------------- decoding
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name", sorted(FRAME_COUNTS))
def test_odd_but_valid_clips_decode_to_rgb(corpus, name, backend):
    n, (h, w) = FRAME_COUNTS[name], SHAPES[name]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with open_video(corpus.odd[name], backend) as clip:
            assert clip.num_frames == n
            frames = clip.get(np.arange(n)[::-1])  # any order
            fallback = clip.fallback
    assert frames.shape == (n, h, w, 3) and frames.dtype == np.uint8
    assert [read_frame_index(f) for f in frames] == list(range(n))[::-1]
    said = [str(c.message) for c in caught if issubclass(c.category, DecoderFallbackWarning)]
    if backend == "decord" and name in NEEDS_FALLBACK:  # decord fails on it: PyAV, and it says so
        assert fallback and len(said) == 1 and str(corpus.odd[name]) in said[0]
    else:
        assert fallback is None and not said


def test_decord_alone_fails_on_the_fallback_clips(corpus):
    # why the fallback exists; when a decord release reads these clips, NEEDS_FALLBACK can shrink
    for name in NEEDS_FALLBACK:
        with pytest.raises(DecodeError), open_video(corpus.odd[name], "decord", fallback=False) as clip:
            clip.get(np.arange(clip.num_frames))


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("kind", BAD_KINDS)
def test_bad_files_are_rejected_naming_the_file(corpus, kind, backend):
    path = corpus.bad[kind]
    with pytest.raises(DecodeError) as info:
        probe(path, backend)
    message = str(info.value)
    assert message.startswith(f"{path}: cannot decode video (") and "\n" not in message
    assert "Traceback" not in message and ".cc:" not in message and info.value.__cause__ is None


def test_decode_error_from_a_loader_worker_keeps_its_one_line_message(corpus):
    ds = VideoClipDataset(entries([corpus.good["good_0"], corpus.bad["text"]]), None, "eval", image_size=32)
    with pytest.raises(DecodeError) as info:
        list(eval_loader(ds, batch_size=1, num_workers=1))
    assert info.value.path == str(corpus.bad["text"]) and info.value.reason
    assert "\n" not in str(info.value) and "Traceback" not in str(info.value)


# ----------------------------------------------------------------------------------------- data set
@pytest.mark.parametrize("mode", ["labeled", "unlabeled", "eval"])
def test_dataset_converts_every_odd_clip(corpus, mode):
    augment = AugmentConfig(test_offsets=2, test_crops=3)
    ds = VideoClipDataset(entries(list(corpus.odd.values())), None, mode, image_size=32, augment=augment)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DecoderFallbackWarning)
        items = [ds[(i, (0, i))] if mode != "eval" else ds[i] for i in range(len(ds))]
    key = {"labeled": "video", "unlabeled": "strong", "eval": "video"}[mode]
    shape = (6, 3, 8, 32, 32) if mode == "eval" else (3, 8, 32, 32)
    for name, item in zip(corpus.odd, items):
        assert item[key].shape == shape and torch.isfinite(item[key]).all(), name
        assert int(item["frame_indices"].max()) < FRAME_COUNTS[name]  # short clips: frames repeat
    fallbacks = {Path(item["fallback"][0]).name for item in items if "fallback" in item}
    assert fallbacks == {corpus.odd[n].name for n in NEEDS_FALLBACK}


def test_validate_lists_every_bad_clip_and_only_those(corpus, tmp_path):
    clips = [*corpus.good.values(), *corpus.odd.values(), *corpus.bad.values()]
    listing = write_list(tmp_path / "mixed.csv", [(p, 0) for p in clips])
    ds = VideoClipDataset(listing, 1, "unlabeled")
    with pytest.raises(BadClipsError) as info:
        ds.validate(progress=False)
    assert {Path(b.path) for b in info.value.bad} == set(corpus.bad.values())
    text = str(info.value)
    first = len(corpus.good) + len(corpus.odd) + 1
    assert text.splitlines()[0] == f"{listing}: {len(BAD_KINDS)} clip(s) cannot be decoded:"
    for i, path in enumerate(corpus.bad.values()):
        assert f"{path} (list line {first + i} of {listing}): " in text
    assert set(ds.fallbacks) == {str(corpus.odd[n]) for n in NEEDS_FALLBACK}
    skipping = VideoClipDataset(listing, 1, "unlabeled", on_bad_sample="skip")
    assert len(skipping.validate(progress=False)) == len(BAD_KINDS)


@pytest.mark.parametrize("case", sorted(BAD_LIST_LINES))
def test_malformed_list_lines_name_file_and_line(case, tmp_path):
    line, message = BAD_LIST_LINES[case]
    listing = tmp_path / "train.csv"
    listing.write_text(f"# header\r\nvideos/ok.mp4 0\r\n\r\n{line}\r\n")
    with pytest.raises(ListFileError, match=rf"train\.csv:4: .*{message}"):
        VideoClipDataset(listing, 12, "labeled")


def test_validate_progress_bar_follows_the_flag(corpus, tmp_path, capfd):
    root = tmp_path / "data"
    for name in ("train", "val", "test"):
        path = root / (f"splits/10/{name}.csv" if name == "train" else f"{name}.csv")
        write_list(path, [(p, 0) for p in corpus.good.values()])
    cfg = DataConfig(root=str(root), image_size=32, num_workers=0)
    build_datasets(cfg, 1, ("train", "val", "test"), progress=False)
    assert "validate" not in capfd.readouterr().err
    build_datasets(cfg, 1, ("train", "val", "test"), progress=True)
    assert "validate train.csv" in capfd.readouterr().err


def test_eval_loading_leaves_the_global_rng_alone(corpus):
    ds = VideoClipDataset(entries(list(corpus.good.values())), None, "eval", image_size=32)
    before = torch.get_rng_state()
    ds[0]
    for _ in eval_loader(ds, batch_size=2):
        pass
    assert torch.equal(torch.get_rng_state(), before)


def test_a_process_whose_batch_is_all_bad_stays_in_step(corpus):
    # two shards of global batches of 2 (one clip per process): whenever a process draws the bad clip its
    # batch is empty; it must still take the step (keep_empty), else the other process would wait forever
    # in the step's collective operation
    clips = entries([corpus.good["good_0"], corpus.bad["text"], corpus.good["good_1"]])
    steps = {}
    for keep_empty in (False, True):
        for rank in (0, 1):
            lab = VideoClipDataset(clips, None, "labeled", image_size=32, on_bad_sample="skip")
            loader = SemiSupervisedLoader(lab, lab, batch_size=2, ratio=1, shard=(rank, 2))
            taken = list(loader.labeled_steps(0, 6, keep_empty=keep_empty))
            steps[keep_empty, rank] = (len(taken), sum(s is None for s in taken), loader.num_skipped)
    # 12 draws = 4 passes over the 3 clips: the bad clip is drawn 4 times, each time emptying one process
    assert sum(steps[True, r][2] for r in (0, 1)) == 4
    for rank in (0, 1):
        assert steps[True, rank][0] == 6 and steps[True, rank][1] == steps[True, rank][2]
        assert steps[False, rank][0] == 6 - steps[True, rank][1]  # what desynchronised the processes


# ----------------------------------------------------------------------------------------- CLIs
@pytest.fixture(scope="module")
def tiny_encoder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    encoder = build_encoder("timesformer_tiny_p16_64", num_classes=3, views=(2, 2, 4))
    return encoder.save_pretrained(tmp_path_factory.mktemp("encoder") / "encoder")


def test_predict_cli_on_the_corpus(corpus, tiny_encoder, tmp_path, capsys):
    clips = [*corpus.good.values(), *corpus.odd.values(), *corpus.bad.values()]
    listing = write_list(tmp_path / "inputs.csv", [(p, 0) for p in clips])
    out = tmp_path / "pred.jsonl"
    code = load_script("predict").main(
        ["--encoder", str(tiny_encoder), "--inputs", str(listing), "--out", str(out), "--quiet"]
    )
    assert code == 2  # documented: some clips could not be read, every other one predicted
    records = {Path(r["path"]).name: r for r in map(json.loads, out.read_text().splitlines())}
    assert {n for n, r in records.items() if r["ok"]} == {
        p.name for p in [*corpus.good.values(), *corpus.odd.values()]
    }
    err = capsys.readouterr().err
    for path in corpus.bad.values():
        assert not records[path.name]["ok"] and f"bad input {path}: cannot decode video" in err


def test_eval_encoder_cli_on_the_corpus(corpus, tiny_encoder, tmp_path, capsys):
    cli = load_script("eval_encoder")
    clips = [*corpus.good.values(), *corpus.odd.values(), *corpus.bad.values()]
    listing = write_list(tmp_path / "test.csv", [(p, i % 3) for i, p in enumerate(clips)])
    out = tmp_path / "eval" / "metrics.json"
    args = ["--encoder", str(tiny_encoder), "--list", str(listing), "--out", str(out), "--quiet"]
    assert cli.main(args) == 1 and not out.exists()
    err = capsys.readouterr().err
    assert f"{len(BAD_KINDS)} clip(s) cannot be decoded" in err and "Traceback" not in err
    assert all(str(p) in err for p in corpus.bad.values())
    assert cli.main([*args, "--on-bad-sample", "skip"]) == 0
    metrics = json.loads(out.read_text())
    assert metrics["count"] == len(corpus.good) + len(corpus.odd)
    assert {c["path"] for c in metrics["skipped"]["clips"]} == {str(p) for p in corpus.bad.values()}
    assert [c["path"] for c in metrics["decoder_fallbacks"]["clips"]] == [
        str(corpus.odd[n]) for n in NEEDS_FALLBACK
    ]
    listing.write_text(f"{clips[0]} 7\n")  # label outside the encoder's 3 classes
    assert cli.main(args) == 1
    assert f"{listing}:1: label 7 out of range [0, 3)" in capsys.readouterr().err


def test_ingest_finegym_names_file_and_line(tmp_path, capsys):
    elements = tmp_path / "elements.txt"
    elements.write_text("0LtLS9wROrk_E_002407_002435_A_0003_0005 1\nnot-a-clip-id\n")
    (tmp_path / "clips").mkdir()
    code = load_script("ingest_finegym").main(
        ["--elements", str(elements), "--clips", str(tmp_path / "clips"), "--out", str(tmp_path / "l.csv")]
    )
    assert code == 2 and f"{elements}:2: " in capsys.readouterr().err


# ----------------------------------------------------------------------------------------- training
@pytest.fixture(scope="module")
def corpus_data(corpus, synthgym_tiny, tmp_path_factory) -> Path:
    return write_corpus_dataset(tmp_path_factory.mktemp("corpus-data") / "data", synthgym_tiny.root, corpus)


# one SSL epoch of 2 steps; the 12-clip unlabeled list (6 odd, 6 bad) is read whole by every step
CORPUS_RUN = [
    "epochs=1",
    "method.warm_epochs=0",
    "data.batch_size=2",
    "data.unlabeled_ratio=6",
    "eval.teacher=false",
]


def train_args(synthgym_tiny, corpus_data: Path, run_dir: Path, *extra: str) -> list[str]:
    return tiny_cli_args(synthgym_tiny, run_dir, f"data.root={corpus_data}", *CORPUS_RUN, *extra)


def test_training_error_policy_fails_before_step_one_listing_every_bad_clip(
    synthgym_tiny, corpus, corpus_data, tmp_path, capsys
):
    run_dir = tmp_path / "run"
    code = load_script("train_encoder").main(
        train_args(synthgym_tiny, corpus_data, run_dir, "data.validate=true")
    )
    assert code == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "Traceback" not in err
    assert f"{len(BAD_KINDS) + 2} clip(s) cannot be decoded" in err  # unlabel: all 6, val and test: 1 each
    for path in corpus.bad.values():
        assert str(path) in err
    assert latest_checkpoint(run_dir) is None and not (run_dir / "metrics.jsonl").exists()
    assert not (run_dir / "config.yaml").exists()  # written only once the input check has passed


def test_training_error_policy_mid_training_names_the_clip(
    synthgym_tiny, corpus, corpus_data, tmp_path, capsys
):
    code = load_script("train_encoder").main(
        train_args(synthgym_tiny, corpus_data, tmp_path / "r")
    )  # no validate
    assert code == 1
    err = capsys.readouterr().err.strip()
    last = err.splitlines()[-1]
    assert last.startswith("error: ") and ": cannot decode video (" in last and "Traceback" not in err
    assert any(str(p) in last for p in corpus.bad.values())


def test_training_skip_policy_trains_reports_and_names_the_bad_clips(
    synthgym_tiny, corpus, corpus_data, tmp_path, capsys
):
    run_dir = tmp_path / "run"
    # no validation first: every bad clip is met while training or evaluating, and skipped there
    args = train_args(synthgym_tiny, corpus_data, run_dir, "--on-bad-sample", "skip")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DecoderFallbackWarning)
        assert load_script("train_encoder").main(args) == 0
    assert "6 bad clip(s) skipped" in capsys.readouterr().out
    metrics = json.loads((run_dir / "metrics.json").read_text())
    bad = metrics["bad_samples"]
    assert bad["policy"] == "skip" and bad["count"] == len(BAD_KINDS)
    assert {c["path"] for c in bad["clips"]} == {str(p) for p in corpus.bad.values()}
    assert {c["split"] for c in bad["clips"]} <= {"unlabel", "val", "test"} and all(
        c["reason"] for c in bad["clips"]
    )
    assert metrics["skipped_clips"] == 2 * len(BAD_KINDS)  # each of the 2 steps drew every bad clip once
    assert metrics["optimizer_steps"] == 2 and metrics["empty_steps"] == 0
    assert metrics["val"]["count"] == metrics["test"]["count"] == 6 + len(corpus.odd)
    assert [c["path"] for c in metrics["decoder_fallbacks"]["clips"]] == [
        str(corpus.odd[n]) for n in NEEDS_FALLBACK
    ]
    assert 0.0 <= metrics["pseudo_label_entropy"] <= 1.0  # the collapse monitor, in metrics.json
    report = (run_dir / "report.md").read_text()
    assert all(f"`{p}`" in report for p in corpus.bad.values()) and "pseudo-label entropy" in report


@pytest.mark.slow
@pytest.mark.timeout(1200)
def test_two_processes_skipping_clips_do_not_hang(synthgym_tiny, corpus, tmp_path):
    """DDP on CPU (gloo), on_bad_sample=skip: whenever one process's share of a batch is the bad clip it
    has nothing to train on, yet both processes take every step (before the fix: a hang)."""
    data = write_corpus_dataset(tmp_path / "data", synthgym_tiny.root, corpus)
    labeled = read_list(synthgym_tiny.root / "splits" / "10" / "train.csv")[:2]
    bad = [(corpus.bad["text"], 0)]
    write_list(data / "splits" / "10" / "train.csv", [(e.path, e.label) for e in labeled] + bad)
    for name in ("val.csv", "test.csv"):  # only good clips: the test is about the training stream
        write_list(data / name, [(e.path, e.label) for e in read_list(synthgym_tiny.root / name)])
    args = tiny_cli_args(synthgym_tiny, tmp_path / "run", f"data.root={data}", "method.name=supervised")
    args += ["steps_per_epoch=3", "data.validate=true", "--on-bad-sample", "skip"]
    accelerate = str(Path(sys.executable).parent / "accelerate")
    launch = [accelerate, "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1"]
    launch += ["--mixed_precision", "no", "--dynamo_backend", "no"]
    proc = subprocess.Popen(
        [*launch, str(SCRIPTS / "train_encoder.py"), *args],
        cwd=REPO,
        env={**os.environ, "ACCELERATE_USE_CPU": "1", "OMP_NUM_THREADS": "1"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # the launcher and both workers in one group, to end them all on a hang
    )
    try:
        _, err = proc.communicate(timeout=1000)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        pytest.fail("the two processes hung (a collective operation waited for a process that skipped it)")
    assert proc.returncode == 0, err[-3000:]
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    # 2 epochs x 3 steps x 2 clips = 12 draws = 4 passes over the 3 listed clips: the bad one 4 times
    assert metrics["skipped_clips"] == 4 and 2 <= metrics["empty_steps"] <= 4
    assert metrics["optimizer_steps"] == 6 and metrics["bad_samples"]["count"] == 1
