"""scripts/bench_cache.py on the 16-clip MLLM test data: both arms are real train_mllm stage-B epochs, the
on-the-fly arm encodes every micro-batch again (and trains exactly like the cached arm: same features,
same losses), and the JSON reports the measured epochs."""

from __future__ import annotations

import json

import pytest
from conftest import load_script

from mllm import stage_data

pytest_plugins = ["mllm_run_fixtures", "tiny_llm_fixtures"]  # mllm_data, tiny_llm_dir


def _losses(run_dir):
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return [json.loads(line)["loss"] for line in lines if line.strip()]


def test_bench_cache_on_tiny_data(tmp_path, mllm_data, tiny_llm_dir, monkeypatch, capsys):
    bench = load_script("bench_cache")
    train = load_script("train_mllm")
    assert bench.train_mllm is train  # the bench drives train_mllm's own code path
    calls = []
    real_encode = stage_data.encode_entries

    def counting_encode(encoder, entries, *args, **kwargs):
        calls.append(len(entries))
        return real_encode(encoder, entries, *args, **kwargs)

    monkeypatch.setattr(stage_data, "encode_entries", counting_encode)  # features.on_the_fly encodes here
    out = tmp_path / "bench.json"
    result = bench.main(
        [
            "--data", str(mllm_data["root"]), "--encoder", str(mllm_data["encoder"]),
            "--llm", str(tiny_llm_dir), "--work-dir", str(tmp_path / "work"), "--batch-size", "2",
            "--max-clips", "6", "--repeats", "1", "--json-out", str(out),
        ]
    )  # fmt: skip
    printed = json.loads(capsys.readouterr().out)  # stdout is the JSON alone
    assert printed == result == json.loads(out.read_text())

    entry = result["cache_speedup"]
    assert set(entry) == {"ratio", "a", "b", "unit", "how"} and entry["unit"] == "s/epoch"
    assert entry["a"] > 0 and entry["b"] > 0
    assert entry["ratio"] == pytest.approx(entry["a"] / entry["b"], rel=0.01)
    assert result["data"]["labeled_clips"] == 6 and result["cache_build"]["clips"] == 6  # --max-clips
    assert "3 steps of 2 samples (what questions about 6 labeled clips (the first) of" in entry["how"]
    # The on-the-fly arm encoded each micro-batch (2 clips) at each of its 3 steps; the cached arm none.
    assert calls == [2, 2, 2]
    runs = tmp_path / "work" / "runs"
    fly, cached = _losses(runs / "on_the_fly_0"), _losses(runs / "cache_0")
    assert len(fly) == len(cached) == 3
    # Same tokens (up to float rounding: other batch compositions when encoding), so the same training.
    assert fly == pytest.approx(cached, rel=1e-4)


def test_bench_cache_refuses_a_folder_without_splits(tmp_path):
    bench = load_script("bench_cache")
    (tmp_path / "categories.txt").write_text("")
    with pytest.raises(SystemExit, match="splits/5/train.csv not found"):
        bench.main(["--data", str(tmp_path), "--work-dir", str(tmp_path / "work")])
