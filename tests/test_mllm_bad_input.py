"""Bad input on the MLLM side gives one clear line and a documented exit code (docs/reliability.md,
"Bad input: one line, a documented exit code").

Scripts and codes: train_mllm.py (1 bad input, 3 non-finite losses), eval_mllm_gymqa.py (2),
cache_features.py (2), eval_gymqa.py (2). Inputs: malformed Gym-QA JSON (file and line/record named), a
question about a clip missing from the list or without features, a clip that cannot be decoded (policy
``error`` stops naming the clip, ``skip`` goes on and says what it dropped), a duplicated clip id.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import pytest
import torch
import yaml
from conftest import load_script
from mllm_run_fixtures import write_config

from gym_qa.lists import read_list, write_list
from gym_qa.questions import load_questions, write_questions

pytest_plugins = ["mllm_run_fixtures", "tiny_llm_fixtures", "video_fixtures"]
train = load_script("train_mllm")
evaluate = load_script("eval_mllm_gymqa")
cache_features = load_script("cache_features")
eval_gymqa = load_script("eval_gymqa")


def config_with_data(path: Path, data: dict, llm_dir: Path, runs: Path, data_group: dict, **sections) -> Path:
    """``write_config`` with keys of its ``data:`` group changed (its own ``data`` parameter is taken)."""
    write_config(path, data, llm_dir, runs, **sections)
    cfg = yaml.safe_load(path.read_text())
    cfg["data"].update(data_group)
    path.write_text(yaml.safe_dump(cfg))
    return path


def one_error_line(err: str) -> str:
    """The single ``error:`` line of a script's stderr (no traceback)."""
    assert "Traceback" not in err, err
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, err
    return lines[0]


@pytest.fixture
def bad_questions(tmp_path: Path, mllm_data) -> dict[str, Path]:
    """A file that is not JSON (line 3), and one whose second record lacks its answer."""
    text = tmp_path / "not_json.json"
    text.write_text('{\n  "0001": {\n    "question": oops\n  }\n}\n')
    records = json.loads(mllm_data["questions"].read_text())
    key = list(records)[1]
    del records[key]["answer"]
    missing = tmp_path / "missing_answer.json"
    missing.write_text(json.dumps(records, indent=4))
    line = next(i for i, x in enumerate(missing.read_text().splitlines(), 1) if f'"{key}"' in x)
    return {"not_json": text, "missing_answer": missing, "key": key, "line": line}


# ---------------------------------------------------------------------------------------- train_mllm
def test_train_mllm_malformed_or_unrelated_questions(
    mllm_data, tiny_llm_dir, bad_questions, tmp_path, capsys
):
    def run(questions: Path) -> str:
        config = config_with_data(
            tmp_path / "c.yaml",
            mllm_data,
            tiny_llm_dir,
            tmp_path,
            {"questions": [str(questions)]},
            instruct={"init_from": ""},
        )
        assert train.main(["--config", str(config), "--stage", "instruct"]) == 1
        return one_error_line(capsys.readouterr().err)

    assert "not_json.json:3: invalid JSON" in run(bad_questions["not_json"])
    line = run(bad_questions["missing_answer"])
    assert f"missing_answer.json:{bad_questions['line']}:" in line and "lacks answer" in line
    # the test questions are about test clips, none of them in the labeled train list
    line = run(mllm_data["questions"])
    assert "questions_test.json: none of the 4 questions is about a clip of" in line and "train.csv" in line


def data_root_with_bad_clip(mllm_data, bad_path: Path, root: Path) -> Path:
    """The test data set with one undecodable clip added to the labeled train list (absolute paths)."""
    root.mkdir()
    for name in ("categories.txt", "set_categories.txt"):
        shutil.copy(mllm_data["root"] / name, root / name)
    train_entries = read_list(mllm_data["root"] / "splits" / "5" / "train.csv")
    items = [(e.path, e.label) for e in train_entries] + [(bad_path, 0)]
    write_list(root / "splits" / "5" / "train.csv", items, relative=False)
    return root


def test_train_mllm_bad_clip_error_then_skip(mllm_data, tiny_llm_dir, bad_clips, tmp_path, capsys):
    root = data_root_with_bad_clip(mllm_data, bad_clips["text"], tmp_path / "data")
    features = {"encoder": "sefar", "weights": str(mllm_data["encoder"]), "cache_root": str(tmp_path / "f")}
    config = config_with_data(
        tmp_path / "c.yaml",
        mllm_data,
        tiny_llm_dir,
        tmp_path,
        {"root": str(root)},
        features=features,
        eval={"list_file": ""},
        align={"max_steps": 1, "micro_batch_size": 4},
    )
    assert train.main(["--config", str(config), "--stage", "align"]) == 1
    line = one_error_line(capsys.readouterr().err)
    assert "text.mp4" in line and "cannot decode" in line

    assert train.main(["--config", str(config), "--stage", "align", "features.on_bad_sample=skip"]) == 0
    assert "1 skipped" in capsys.readouterr().out
    metrics = json.loads((tmp_path / "align" / "metrics.json").read_text())
    assert metrics["samples"] == 8 and metrics["dropped_no_features"] == 1


def test_train_mllm_nonfinite_losses_in_stage_b(mllm_data, tiny_llm_dir, tmp_path, monkeypatch, capsys):
    config = write_config(
        tmp_path / "c.yaml",
        mllm_data,
        tiny_llm_dir,
        tmp_path,
        max_nonfinite_steps=2,
        eval={"list_file": ""},
        instruct={"init_from": "", "micro_batch_size": 4},
    )
    original = train.batch_nll
    monkeypatch.setattr(train, "batch_nll", lambda model, batch: original(model, batch) * float("nan"))
    assert train.main(["--config", str(config), "--stage", "instruct"]) == 3
    line = one_error_line(capsys.readouterr().err)
    assert "2 non-finite losses in a row at step 2; lower instruct.lr" in line
    records = [json.loads(x) for x in (tmp_path / "instruct" / "metrics.jsonl").read_text().splitlines()]
    assert [r["loss"] for r in records] == [None, None]  # both steps logged, neither applied


# ---------------------------------------------------------------------------------------- eval_mllm_gymqa
def eval_args(data: dict, mllm: Path, out: Path, questions: Path, list_file: Path, *extra: str) -> list[str]:
    return [
        "--mllm", str(mllm), "--weights", str(data["encoder"]), "--questions", str(questions),
        "--list", str(list_file), "--cache-root", str(out.parent / "features"),
        "--out-predictions", str(out), "--no-progress", *extra,
    ]  # fmt: skip


def test_eval_mllm_bad_questions_and_clips(
    mllm_data, trained_mllm, bad_questions, bad_clips, tmp_path, capsys
):
    out = tmp_path / "p.jsonl"
    test_list = mllm_data["test_list"]
    assert evaluate.main(eval_args(mllm_data, trained_mllm, out, bad_questions["not_json"], test_list)) == 2
    assert "not_json.json:3: invalid JSON" in one_error_line(capsys.readouterr().err)
    assert (
        evaluate.main(eval_args(mllm_data, trained_mllm, out, bad_questions["missing_answer"], test_list))
        == 2
    )
    assert f"missing_answer.json:{bad_questions['line']}:" in one_error_line(capsys.readouterr().err)

    # one question moved to a clip that cannot be decoded (listed), one to a clip nobody listed
    questions = load_questions(mllm_data["questions"])
    broken = [dataclasses.replace(questions[0], video="text"), *questions[1:]]
    write_questions(tmp_path / "q.json", broken)
    items = [(e.path, e.label) for e in read_list(test_list)] + [(bad_clips["text"], 0)]
    write_list(tmp_path / "list.csv", items, relative=False)
    write_list(tmp_path / "short.csv", items[2:4], relative=False)  # test_1_0 and text are not listed
    args = eval_args(mllm_data, trained_mllm, out, tmp_path / "q.json", tmp_path / "short.csv")
    assert evaluate.main(args) == 2
    assert "short.csv: 2 question clip(s) are not listed" in one_error_line(capsys.readouterr().err)

    args = eval_args(mllm_data, trained_mllm, out, tmp_path / "q.json", tmp_path / "list.csv")
    assert evaluate.main(args) == 2
    assert "text.mp4: cannot decode video" in one_error_line(capsys.readouterr().err)
    assert evaluate.main([*args, "--on-bad-sample", "skip"]) == 0
    err = capsys.readouterr().err
    assert "warning: 1 question(s) about clips without features count as wrong" in err and "'text'" in err
    report = json.loads((tmp_path / "p_report.json").read_text())
    assert report["run"]["questions_without_features"] == [questions[0].question_id]
    assert report["modes"]["nll_sum"]["overall"]["total"] == len(questions)  # still scored: as wrong


# ---------------------------------------------------------------------------------------- cache / eval_gymqa
def test_cache_features_bad_clips_and_duplicate_ids(mllm_data, bad_clips, tmp_path, capsys):
    clips = [e.path for e in read_list(mllm_data["test_list"])][:2]
    write_list(tmp_path / "bad.csv", [(clips[0], 0), (bad_clips["text"], 1), (clips[1], 0)], relative=False)
    base = [
        "--encoder",
        "sefar",
        "--weights",
        str(mllm_data["encoder"]),
        "--no-progress",
        "--batch-size",
        "1",
    ]
    for workers in ("0", "1"):  # a worker's DecodeError carries its traceback: still one line
        args = [*base, "--list", str(tmp_path / "bad.csv"), "--out", str(tmp_path / f"f{workers}")]
        assert cache_features.main([*args, "--workers", workers]) == 2
        line = one_error_line(capsys.readouterr().err)
        assert line.startswith(f"error: {bad_clips['text']}: cannot decode video") and "skip goes on" in line
    assert cache_features.main([*args, "--on-bad-sample", "skip"]) == 0
    assert list(json.loads(capsys.readouterr().out)["skipped"]) == ["text"]

    write_list(tmp_path / "dup.csv", [(clips[0], 0), (tmp_path / "other" / clips[0].name, 1)], relative=False)
    assert (
        cache_features.main([*base, "--list", str(tmp_path / "dup.csv"), "--out", str(tmp_path / "g")]) == 2
    )
    assert "dup.csv:2: clip id" in one_error_line(capsys.readouterr().err)


def test_eval_gymqa_bad_questions_and_predictions(mllm_data, bad_questions, tmp_path, capsys):
    assert eval_gymqa.main(["--questions", str(bad_questions["not_json"]), "--reference", "first"]) == 2
    assert "not_json.json:3: invalid JSON" in one_error_line(capsys.readouterr().err)
    first = load_questions(mllm_data["questions"])[0].question_id
    predictions = tmp_path / "p.jsonl"
    predictions.write_text(json.dumps({"question_id": first, "text": "A"}) + '\n{"question_id": \n')
    assert (
        eval_gymqa.main(["--questions", str(mllm_data["questions"]), "--predictions", str(predictions)]) == 2
    )
    assert "p.jsonl:2: invalid JSON" in one_error_line(capsys.readouterr().err)


def test_feature_cache_build_leaves_the_callers_rng_alone(mllm_data, tmp_path):
    from mllm.encoders import build_video_encoder
    from mllm.feature_cache import build_feature_cache, encode_entries

    encoder = build_video_encoder("sefar", mllm_data["encoder"])
    for workers in (0, 1):
        torch.manual_seed(123)
        expected = torch.rand(3)
        torch.manual_seed(123)
        build_feature_cache(encoder, mllm_data["test_list"], tmp_path / f"c{workers}", num_workers=workers,
                            progress=False)  # fmt: skip
        assert torch.equal(torch.rand(3), expected), f"num_workers={workers}"
    # Draws of the consumer between batches still advance its stream (nothing is rolled back).
    entries = read_list(mllm_data["test_list"])
    torch.manual_seed(7)
    drawn = [torch.rand(1) for _ in encode_entries(encoder, entries, batch_size=1, progress=False)]
    torch.manual_seed(7)
    assert torch.equal(torch.cat(drawn), torch.rand(len(entries)))
