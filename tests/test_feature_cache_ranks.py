"""The feature cache built on several processes (``mllm/feature_cache_ranks.py``): the split of the clips by
hand, then ``scripts/cache_features.py`` under ``torchrun`` on 2 CPU processes (gloo) against 1 process:
the same files byte for byte, and after a failing rank exactly what one failing process keeps."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import REPO, SCRIPTS
from video_fixtures import write_clip

from gym_qa.lists import ListEntry, write_list
from mllm.feature_cache_ranks import batches_of, share_of
from sefar_encoder.model import ModelConfig, SeFAREncoder

pytest_plugins = ["video_fixtures"]  # bad_clips
CFG = ModelConfig(img_size=32, patch_size=16, embed_dim=16, depth=1, num_heads=2, num_classes=3)


def entries(n: int) -> list[ListEntry]:
    return [ListEntry(path=Path(f"c{i}.mp4"), label=0, line=i + 1, raw_path=f"c{i}.mp4") for i in range(n)]


def names(items: list[ListEntry]) -> list[str]:
    return [e.path.stem for e in items]


def test_each_rank_gets_whole_batches_in_turn():
    todo = entries(7)  # batches of 2: [c0 c1] [c2 c3] [c4 c5] [c6]
    assert [names(b) for b in batches_of(todo, 2)] == [["c0", "c1"], ["c2", "c3"], ["c4", "c5"], ["c6"]]
    assert names(share_of(todo, 2, 0, 2)) == ["c0", "c1", "c4", "c5"]  # batches 0 and 2
    assert names(share_of(todo, 2, 1, 2)) == ["c2", "c3", "c6"]  # batches 1 and 3 (the short last one)
    assert names(share_of(todo, 2, 2, 3)) == ["c4", "c5"]
    assert share_of(entries(1), 2, 1, 2) == []  # more ranks than batches: nothing to do


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """7 clips of different lengths and a tiny SeFAR checkpoint."""
    root = tmp_path_factory.mktemp("ranks_data")
    clips = [
        write_clip(root / "videos" / f"clip_{i}.mp4", num_frames=10 + 3 * i, height=40, width=64)
        for i in range(7)
    ]
    torch.manual_seed(0)
    SeFAREncoder(CFG).save_pretrained(root / "encoder")
    return {"root": root, "clips": clips, "encoder": root / "encoder"}


def cache_features(data: dict[str, Path], list_file: Path, out: Path, processes: int, *extra: str):
    """scripts/cache_features.py on 1 process, or under torchrun on ``processes`` CPU processes (gloo)."""
    launch = [sys.executable]
    if processes > 1:
        launch += ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(processes)]
    script = [str(SCRIPTS / "cache_features.py"), "--encoder", "sefar", "--weights", str(data["encoder"])]
    options = ["--list", str(list_file), "--out", str(out), "--batch-size", "2", "--shard-size", "3"]
    cmd = [*launch, *script, *options, "--no-progress", *extra]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=REPO, timeout=240, check=False)


def files_of(root: Path) -> dict[str, bytes]:
    """Every file of a cache root but the lock, by relative path."""
    return {
        str(p.relative_to(root)): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file() and p.name != ".lock"
    }


@pytest.mark.slow
def test_two_processes_write_the_one_process_cache_bit_for_bit(data, tmp_path, bad_clips):
    list_file = tmp_path / "list.csv"
    write_list(list_file, [(p, i % 3) for i, p in enumerate(data["clips"])])
    one = cache_features(data, list_file, tmp_path / "one", 1)
    two = cache_features(data, list_file, tmp_path / "two", 2)
    assert one.returncode == 0, one.stderr[-3000:]
    assert two.returncode == 0, two.stderr[-3000:]
    summary = json.loads(two.stdout)  # rank 0 alone prints
    assert (summary["processes"], summary["encoded"], summary["reused"]) == (2, 7, 0)
    expected = files_of(tmp_path / "one")
    assert len([name for name in expected if name.endswith(".safetensors")]) == 3  # 3 + 3 + 1 clips
    assert files_of(tmp_path / "two") == expected  # index and shards identical; no staging file left

    # Rank 0 stops before any encoding (the cache holds float32, float16 is asked): the others are told.
    stale = cache_features(data, list_file, tmp_path / "two", 2, "--dtype", "float16")
    assert stale.returncode != 0 and "stores float32 features" in stale.stderr
    assert "stopped on rank 0" in stale.stderr and files_of(tmp_path / "two") == expected

    # A bad clip in rank 1's first batch (batch 1 = list rows 2, 3): one process keeps batch 0 and stops;
    # two processes (rank 0 encoded batches 0 and 2) must keep exactly that too.
    bad_list = tmp_path / "bad.csv"
    rows = (
        [(p, 0) for p in data["clips"][:3]] + [(bad_clips["text"], 0)] + [(p, 0) for p in data["clips"][3:]]
    )
    write_list(bad_list, rows)
    one = cache_features(data, bad_list, tmp_path / "bad_one", 1)
    two = cache_features(data, bad_list, tmp_path / "bad_two", 2)
    assert one.returncode == 2 and "text.mp4" in one.stderr
    assert two.returncode != 0 and "text.mp4" in two.stderr, two.stderr[-3000:]
    expected = files_of(tmp_path / "bad_one")
    assert files_of(tmp_path / "bad_two") == expected
    (index_name,) = [name for name in expected if name.endswith("index.json")]
    index = json.loads(expected[index_name])
    assert sorted(index["clips"]) == ["clip_0", "clip_1"] and index["lists"] == {}  # not marked complete
