"""Label-rate splits: nested, stratified, disjoint, deterministic; the data set layout
(docs/DESIGN.md §List files and splits); val/test refusals."""

import json
from collections import Counter
from pathlib import Path

import pytest
from conftest import FINEGYM_DIR, load_script

from gym_qa.finegym import read_element_list
from gym_qa.lists import read_list, write_list
from gym_qa.splits import SplitError, build_label_splits, labeled_count, make_split_dir


def long_tail_labels() -> list[int]:
    sizes = [1, 2, 5, 19, 20, 21, 30, 100, 333]
    labels = [c for c, n in enumerate(sizes) for _ in range(n)]
    # Interleave classes so a split that ignored labels would not look stratified by accident.
    return sorted(labels, key=lambda x: (hash((x, 7)) % 5, x))


@pytest.mark.parametrize(
    "n, rate, expected",
    [
        (0, 5, 0),
        (1, 5, 1),
        (19, 5, 1),
        (20, 5, 1),
        (30, 5, 2),
        (29, 5, 1),
        (100, 10, 10),
        (7, 100, 7),
        (3, 20, 1),
    ],
)
def test_labeled_count_rule(n: int, rate: float, expected: int):
    assert labeled_count(n, rate) == expected


def test_nested_stratified_deterministic():
    labels = long_tail_labels()
    splits = build_label_splits(labels, (20, 5, 10, 100), seed=3)
    assert list(splits) == [5, 10, 20, 100]
    per_class = Counter(labels)
    for rate, chosen in splits.items():
        assert chosen == sorted(set(chosen))
        counts = Counter(labels[i] for i in chosen)
        assert counts == {c: labeled_count(n, rate) for c, n in per_class.items()}
        assert all(counts[c] >= 1 for c in per_class)  # every class present has a labeled clip
    assert set(splits[5]) <= set(splits[10]) <= set(splits[20]) <= set(splits[100]) == set(range(len(labels)))
    assert build_label_splits(labels, (5, 10, 20, 100), seed=3) == splits
    assert build_label_splits(labels, (5, 10, 20, 100), seed=4)[10] != splits[10]


def test_class_picks_independent_of_other_classes():
    labels = long_tail_labels()
    full = build_label_splits(labels, (10,), seed=0)[10]
    keep = [i for i, label in enumerate(labels) if label != 8]
    reduced = build_label_splits([labels[i] for i in keep], (10,), seed=0)[10]
    assert [keep[i] for i in reduced] == [i for i in full if labels[i] != 8]


def test_bad_rates():
    for rates in ((0,), (101,), ()):
        with pytest.raises(SplitError):
            build_label_splits([0, 1], rates)


def test_gym99_train_pool_every_class_labeled_at_5_percent():
    labels = [clip.label for clip in read_element_list(FINEGYM_DIR / "gym99_train_element_v1.1.txt", 99)]
    splits = build_label_splits(labels, (5, 10, 20), seed=0)
    sizes = Counter(labels)
    labeled5 = Counter(labels[i] for i in splits[5])
    assert all(labeled5[c] >= 1 for c, n in sizes.items() if n >= 20)
    assert set(splits[5]) <= set(splits[10]) <= set(splits[20])
    assert abs(len(splits[5]) / len(labels) - 0.05) < 0.005  # the per-class minimum barely moves the rate


def make_lists(tmp_path: Path) -> tuple[Path, Path, Path]:
    labels = long_tail_labels()
    pool = tmp_path / "in" / "pool.csv"
    write_list(pool, [(tmp_path / "clips" / f"p{i}.mp4", label) for i, label in enumerate(labels)])
    val = tmp_path / "in" / "val.csv"
    write_list(val, [(tmp_path / "clips" / f"v{i}.mp4", i % 9) for i in range(20)])
    test = tmp_path / "in" / "test.csv"
    write_list(test, [(tmp_path / "clips" / f"t{i}.mp4", i % 9) for i in range(25)])
    return pool, val, test


def test_split_dir_layout(tmp_path: Path):
    pool, val, test = make_lists(tmp_path)
    out = tmp_path / "data"
    summary = make_split_dir(out, pool, val, test, rates=(5, 10, 20, 100), seed=1, num_classes=9)
    pool_paths = {e.path for e in read_list(pool)}
    assert {e.path for e in read_list(out / "val.csv")} == {e.path for e in read_list(val)}
    assert len(read_list(out / "test.csv")) == 25
    previous: set[Path] = set()
    for pct in ("5", "10", "20", "100"):
        train = {e.path for e in read_list(out / "splits" / pct / "train.csv")}
        unlabel = {e.path for e in read_list(out / "splits" / pct / "unlabel.csv")}
        assert not train & unlabel and train | unlabel == pool_paths
        assert previous <= train
        previous = train
        assert summary["rates"][pct]["labeled"] == len(train)
    assert (out / "splits" / "100" / "unlabel.csv").read_text() == ""
    assert json.loads((out / "splits" / "splits.json").read_text())["seed"] == 1
    assert not (out / "splits" / "5" / "train.csv").read_text().startswith("/")  # relative paths


def test_refuses_same_or_overlapping_val_test_and_duplicates(tmp_path: Path):
    pool, val, test = make_lists(tmp_path)
    with pytest.raises(SplitError, match="same file"):
        make_split_dir(tmp_path / "o", pool, val, val)
    overlap = tmp_path / "in" / "overlap.csv"
    overlap.write_text(val.read_text().splitlines()[0] + "\n")
    with pytest.raises(SplitError, match="appears in both 'val' and 'test'"):
        make_split_dir(tmp_path / "o", pool, val, overlap)
    duplicated = tmp_path / "in" / "dup.csv"
    duplicated.write_text(pool.read_text() + pool.read_text().splitlines()[0] + "\n")
    with pytest.raises(SplitError, match=r"dup\.csv|already listed"):
        make_split_dir(tmp_path / "o", duplicated, val, test)


def test_make_splits_script(tmp_path: Path, capsys):
    pool, val, test = make_lists(tmp_path)
    main = load_script("make_splits").main
    assert (
        main(
            [
                "--pool",
                str(pool),
                "--val",
                str(val),
                "--test",
                str(test),
                "--out",
                str(tmp_path / "d"),
                "--rates",
                "5,10",
            ]
        )
        == 0
    )
    assert (tmp_path / "d" / "splits" / "10" / "unlabel.csv").is_file()
    bad = tmp_path / "in" / "bad.csv"
    bad.write_text("a.mp4 1\nb.mp4 x\n")
    assert (
        main(["--pool", str(bad), "--val", str(val), "--test", str(test), "--out", str(tmp_path / "e")]) == 2
    )
    assert "bad.csv:2" in capsys.readouterr().err
