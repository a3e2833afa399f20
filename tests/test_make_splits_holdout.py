"""scripts/make_splits.py --holdout: a val split carved out of the train pool (FineGym has no val list),
stratified per class, disjoint from the label-rate splits and from test, deterministic for a seed."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from types import ModuleType

import pytest
from conftest import load_script

from gym_qa.lists import read_list, write_list

SIZES = [1, 2, 3, 10, 19, 40]  # clips per class in the pool (a long tail, one singleton class)


@pytest.fixture(scope="module")
def script() -> ModuleType:
    return load_script("make_splits")


def write_inputs(tmp_path: Path) -> tuple[Path, Path]:
    labels = [c for c, n in enumerate(SIZES) for _ in range(n)]
    labels = sorted(labels, key=lambda x: (hash((x, 3)) % 4, x))  # interleaved classes
    pool = tmp_path / "in" / "train.csv"
    write_list(pool, [(tmp_path / "clips" / f"p{i}.mp4", y) for i, y in enumerate(labels)])
    test = tmp_path / "in" / "test.csv"
    write_list(test, [(tmp_path / "clips" / f"t{i}.mp4", i % len(SIZES)) for i in range(12)])
    return pool, test


def run(script: dict, pool: Path, test: Path, out: Path, *extra: str) -> int:
    return script.main(["--pool", str(pool), "--test", str(test), "--out", str(out), *extra])


@pytest.mark.parametrize(
    "n, percent, expected",
    [(1, 10, 0), (2, 10, 1), (2, 90, 1), (10, 10, 1), (40, 10, 4), (19, 10, 2), (10, 50, 5)],
)
def test_holdout_count_rule(script: dict, n: int, percent: float, expected: int):
    assert script.holdout_count(n, percent) == expected


def test_holdout_val_is_carved_from_the_pool(script: dict, tmp_path: Path, capsys):
    pool, test = write_inputs(tmp_path)
    out = tmp_path / "data"
    assert run(script, pool, test, out, "--holdout", "10", "--rates", "5,20,100", "--seed", "3") == 0
    pool_entries = read_list(pool)
    val = {e.path for e in read_list(out / "val.csv")}
    train100 = {e.path for e in read_list(out / "splits" / "100" / "train.csv")}
    assert val and not val & train100 and val | train100 == {e.path for e in pool_entries}
    assert not val & {e.path for e in read_list(out / "test.csv")}
    for pct in ("5", "20"):  # the label-rate splits only see the rest of the pool
        rate = {e.path for e in read_list(out / "splits" / pct / "train.csv")}
        rate |= {e.path for e in read_list(out / "splits" / pct / "unlabel.csv")}
        assert rate == train100
    # per class: the rule, every class with >= 2 clips in val and still in train
    val_counts = Counter(e.label for e in read_list(out / "val.csv"))
    assert val_counts == {c: script.holdout_count(n, 10) for c, n in enumerate(SIZES) if n >= 2}
    assert {e.label for e in read_list(out / "splits" / "100" / "train.csv")} == set(range(len(SIZES)))
    summary = json.loads((out / "splits" / "splits.json").read_text())
    assert summary["val"] == len(val) and summary["pool"] == len(train100)
    assert summary["val_holdout"]["percent"] == 10 and summary["val_holdout"]["seed"] == 3
    assert json.loads(capsys.readouterr().out)["val_holdout"]["classes"] == len(SIZES) - 1

    # deterministic for a seed; another seed holds out other clips
    assert run(script, pool, test, tmp_path / "again", "--holdout", "10", "--seed", "3") == 0
    assert (tmp_path / "again" / "val.csv").read_text() == (out / "val.csv").read_text()
    assert run(script, pool, test, tmp_path / "other", "--holdout", "10", "--seed", "4") == 0
    assert (tmp_path / "other" / "val.csv").read_text() != (out / "val.csv").read_text()


def test_holdout_refusals(script: dict, tmp_path: Path, capsys):
    pool, test = write_inputs(tmp_path)
    for bad in ("0", "100", "-5"):
        assert run(script, pool, test, tmp_path / "o", "--holdout", bad) == 2
        assert f"--holdout {float(bad)} is not in (0, 100)" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:  # --val and --holdout exclude each other
        run(script, pool, test, tmp_path / "o", "--holdout", "10", "--val", str(test))
    assert exit_info.value.code == 2
    assert "not allowed with argument" in capsys.readouterr().err
    overlap = tmp_path / "in" / "overlap.csv"  # a test clip that is also in the pool
    overlap.write_text(pool.read_text().splitlines()[0] + "\n")
    assert run(script, pool, overlap, tmp_path / "o", "--holdout", "10") == 2
    assert "appears in both" in capsys.readouterr().err
    singletons = tmp_path / "in" / "single.csv"
    write_list(singletons, [(tmp_path / "clips" / f"s{i}.mp4", i) for i in range(3)])
    assert run(script, singletons, test, tmp_path / "o", "--holdout", "10") == 2
    assert "holds out nothing" in capsys.readouterr().err
