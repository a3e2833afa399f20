"""VideoClipDataset, collate and the lock-step loader: shapes per mode, one decode per sample, bad-sample
policies, validate(), resumable data order, config nesting, and the loader benchmark's smoke run."""

import json
import pickle

import numpy as np
import pytest
import torch
from conftest import load_script
from video_fixtures import make_dataset_dir, write_clip

from gym_qa.lists import ListEntry, ListFileError
from sefar_encoder.batch_sampler import InfiniteBatchSampler, epoch_permutation
from sefar_encoder.clip_checks import BadClipsError
from sefar_encoder.collate import collate_clips, finish_batch
from sefar_encoder.dataset import SkippedSample, VideoClipDataset
from sefar_encoder.decoding import DECODE_COUNTER, DecodeError
from sefar_encoder.loader import (
    DataConfig,
    SemiSupervisedLoader,
    build_datasets,
    build_semi_loader,
    split_paths,
)
from sefar_encoder.runtime.config import load_config
from sefar_encoder.transforms import AugmentConfig

pytest_plugins = ["video_fixtures"]  # dataset_dir, bad_clips


def make(dataset_dir, split="train", mode="labeled", **kw) -> VideoClipDataset:
    paths = split_paths(dataset_dir, 10)
    return VideoClipDataset(getattr(paths, split), 3, mode, views=(2, 2, 4), image_size=32, **kw)


def test_shapes_and_dtypes_per_mode(dataset_dir):
    lab = make(dataset_dir)[0]
    assert lab["video"].shape == (3, 8, 32, 32) and lab["video"].dtype == torch.float32
    assert isinstance(lab["label"], int) and lab["index"] == 0 and lab["frame_indices"].shape == (8,)
    unl = make(dataset_dir, "unlabel", "unlabeled")[1]
    assert unl["weak"].shape == unl["strong"].shape == (3, 8, 32, 32)
    assert unl["weak"].dtype == unl["strong"].dtype == torch.float32 and unl["index"] == 1
    assert not torch.equal(unl["weak"], unl["strong"])
    ev = make(dataset_dir, "val", "eval", augment=AugmentConfig(test_offsets=2, test_crops=3))[0]
    assert ev["video"].shape == (6, 3, 8, 32, 32) and ev["frame_indices"].shape == (2, 8)
    raw = make(dataset_dir, normalize=False)[0]
    assert raw["video"].dtype == torch.uint8


def test_collate_stacks_batches(dataset_dir):
    ds = make(dataset_dir, "unlabel", "unlabeled")
    keys = [(i, (0, 0, 0, i)) for i in range(3)]
    one_by_one = collate_clips([ds[k] for k in keys])
    batched = collate_clips(ds.__getitems__(keys))
    assert batched["weak"].shape == (3, 3, 8, 32, 32) and batched["label"].shape == (3,)
    assert batched["skipped"] == []
    for key in ("weak", "strong", "index", "label", "frame_indices"):
        assert torch.equal(one_by_one[key], batched[key]), key  # same seeds -> same samples


def test_one_decode_per_sample(dataset_dir):
    unl = make(dataset_dir, "unlabel", "unlabeled")
    DECODE_COUNTER.reset()
    item = unl[(2, (1, 2, 3))]
    assert DECODE_COUNTER.count == 1  # weak and strong views from the same decode
    assert item["weak"].shape == item["strong"].shape
    unl.__getitems__([(i, (0, i)) for i in range(4)])
    assert DECODE_COUNTER.count == 5
    make(dataset_dir, "val", "eval", augment=AugmentConfig(test_offsets=3))[0]
    assert DECODE_COUNTER.count == 6  # all temporal offsets from one decode


def test_same_seed_same_sample_and_uint8_path_matches(dataset_dir):
    ds = make(dataset_dir, "unlabel", "unlabeled")
    a, b = ds[(4, (9, 9))], ds[(4, (9, 9))]
    assert torch.equal(a["strong"], b["strong"]) and torch.equal(a["frame_indices"], b["frame_indices"])
    raw = make(dataset_dir, "unlabel", "unlabeled", normalize=False)
    batch = finish_batch(collate_clips([raw[(4, (9, 9))]]), raw.augment)
    assert batch["strong"].dtype == torch.float32
    assert torch.allclose(batch["strong"][0], a["strong"], atol=1e-6)


def test_frame_cache_gives_the_same_samples_without_decoding(dataset_dir, tmp_path):
    plain = make(dataset_dir)
    cached = make(dataset_dir, cache_dir=tmp_path)  # 64 px clips, cache short side 46: resized
    cached_full = make(dataset_dir, cache_dir=tmp_path / "full", cache_short_side=64)
    key = (1, (5,))
    cached[key]
    DECODE_COUNTER.reset()
    again = cached[key]
    assert DECODE_COUNTER.count == 0 and again["video"].shape == (3, 8, 32, 32)
    assert torch.equal(cached_full[key]["video"], plain[key]["video"])  # no resize: identical samples


def test_dataset_pickles_without_open_readers(dataset_dir):
    ds = make(dataset_dir, "unlabel", "unlabeled")
    ds[0]
    clone = pickle.loads(pickle.dumps(ds))
    assert len(pickle.dumps(ds)) < 100_000
    assert torch.equal(clone[(0, (1,))]["weak"], ds[(0, (1,))]["weak"])


def bad_entries(dataset_dir, bad_clips) -> list[ListEntry]:
    good = [e for e in make(dataset_dir, "unlabel").entries[:3]]
    bad = [ListEntry(p, 0, 100 + i, p.name) for i, p in enumerate(bad_clips.values())]
    return [good[0], bad[0], good[1], *bad[1:], good[2]]


def test_error_policy_raises_naming_the_file(dataset_dir, bad_clips):
    ds = VideoClipDataset(bad_entries(dataset_dir, bad_clips), 3, "labeled", image_size=32)
    with pytest.raises(DecodeError, match="zero_byte.mp4"):
        ds[1]


def test_validate_lists_every_bad_file(dataset_dir, bad_clips):
    ds = VideoClipDataset(bad_entries(dataset_dir, bad_clips), 3, "labeled", image_size=32)
    with pytest.raises(BadClipsError) as info:
        ds.validate(progress=False)
    assert sorted(b.path for b in info.value.bad) == sorted(str(p) for p in bad_clips.values())
    for kind, path in bad_clips.items():
        assert str(path) in str(info.value), kind
    assert "list line 100" in str(info.value)


def test_skip_policy_skips_and_counts(dataset_dir, bad_clips):
    entries = bad_entries(dataset_dir, bad_clips)
    ds = VideoClipDataset(entries, 3, "unlabeled", image_size=32, on_bad_sample="skip")
    items = [ds[i] for i in range(len(ds))]
    assert sum(isinstance(x, SkippedSample) for x in items) == 5 and ds.num_skipped == 5
    batch = collate_clips(items)
    assert batch["weak"].shape[0] == 3 and len(batch["skipped"]) == 5
    assert batch["index"].tolist() == [0, 2, 7]  # never a substitute clip
    all_bad = collate_clips([x for x in items if isinstance(x, SkippedSample)])
    assert len(all_bad["index"]) == 0 and "weak" not in all_bad
    # validate() in skip mode returns the bad clips and later skips them without decoding again.
    fresh = VideoClipDataset(entries, 3, "unlabeled", image_size=32, on_bad_sample="skip")
    assert len(fresh.validate(progress=False)) == 5
    DECODE_COUNTER.reset()
    assert isinstance(fresh[1], SkippedSample) and DECODE_COUNTER.count == 0


def test_loader_counts_skipped_clips(dataset_dir, bad_clips):
    entries = bad_entries(dataset_dir, bad_clips)
    lab = VideoClipDataset(entries[:2], 3, "labeled", image_size=32, on_bad_sample="skip")
    unl = VideoClipDataset(entries, 3, "unlabeled", image_size=32, on_bad_sample="skip")
    loader = SemiSupervisedLoader(lab, unl, batch_size=2, ratio=4)  # one epoch of each list per step
    steps = list(loader.steps(0, 2))
    assert len(steps) == 2 and loader.num_skipped == 2 * (1 + 5)
    assert all(len(s[0]["index"]) == 1 and len(s[1]["index"]) == 3 for s in steps)


def test_bad_list_line_names_file_and_line(tmp_path):
    lst = tmp_path / "train.csv"
    lst.write_text("# comment\nvideos/a.mp4 0\nvideos/b.mp4 zero\n")
    with pytest.raises(ListFileError, match=r"train\.csv:3"):
        VideoClipDataset(lst, 3, "labeled")
    lst.write_text("videos/a.mp4 7\n")
    with pytest.raises(ListFileError, match=r"train\.csv:1.*out of range"):
        VideoClipDataset(lst, 3, "labeled")


def test_epoch_permutation_and_infinite_sampler():
    assert np.array_equal(epoch_permutation(10, 0, 3), epoch_permutation(10, 0, 3))
    assert not np.array_equal(epoch_permutation(10, 0, 3), epoch_permutation(10, 0, 4))
    batches = iter(InfiniteBatchSampler(5, 3, seed=1))
    keys = [k for _ in range(10) for k in next(batches)]  # 30 positions = 6 epochs of 5
    for e in range(6):
        assert sorted(i for i, _ in keys[5 * e : 5 * e + 5]) == list(range(5))
    resumed = next(iter(InfiniteBatchSampler(5, 3, seed=1, start_batch=4)))
    assert resumed == keys[12:15]


def test_loader_lock_step_and_resume(dataset_dir):
    cfg = DataConfig(root=str(dataset_dir), image_size=32, batch_size=2, num_workers=0, validate=False)
    datasets = build_datasets(cfg, 3, splits=("train", "unlabel"))
    loader = build_semi_loader(cfg, datasets)
    full = list(loader.steps(0, 3))
    for lab, unl in full:
        assert lab["video"].shape == (2, 3, 8, 32, 32) and lab["video"].dtype == torch.float32
        assert unl["weak"].shape == unl["strong"].shape == (6, 3, 8, 32, 32)
    resumed = list(loader.steps(2, 1))
    assert torch.equal(resumed[0][0]["index"], full[2][0]["index"])
    assert torch.equal(resumed[0][1]["strong"], full[2][1]["strong"])
    assert loader.steps_per_epoch == len(datasets["unlabel"]) // 6


def test_shards_partition_global_batches_and_labeled_steps_match(dataset_dir):
    cfg = DataConfig(root=str(dataset_dir), image_size=32, batch_size=2, num_workers=0, validate=False)
    datasets = build_datasets(cfg, 3, splits=("train", "unlabel"))
    whole = list(build_semi_loader(cfg, datasets).steps(0, 2))
    parts = [list(build_semi_loader(cfg, datasets, shard=(r, 2)).steps(0, 2)) for r in range(2)]
    for step in range(2):
        for b in (0, 1):  # labeled, unlabeled
            merged = sorted(parts[0][step][b]["index"].tolist() + parts[1][step][b]["index"].tolist())
            assert merged == sorted(whole[step][b]["index"].tolist())
        assert torch.equal(parts[1][step][0]["video"], whole[step][0]["video"][1::2])
    labeled_only = list(build_semi_loader(cfg, datasets).labeled_steps(0, 2))
    for step in range(2):
        assert torch.equal(labeled_only[step]["video"], whole[step][0]["video"])


def test_workers_give_the_same_batches(dataset_dir):
    cfg = DataConfig(root=str(dataset_dir), image_size=32, batch_size=1, num_workers=0, validate=False)
    datasets = build_datasets(cfg, 3, splits=("train", "unlabel"))
    serial = list(build_semi_loader(cfg, datasets).steps(0, 2))
    parallel = list(
        SemiSupervisedLoader(datasets["train"], datasets["unlabel"], 1, 3, num_workers=2).steps(0, 2)
    )
    for (la, ua), (lb, ub) in zip(serial, parallel):
        assert torch.equal(la["video"], lb["video"]) and torch.equal(ua["weak"], ub["weak"])


def test_build_datasets_checks_lists(dataset_dir, tmp_path):
    cfg = DataConfig(root=str(dataset_dir), image_size=32, num_workers=0)
    datasets = build_datasets(cfg, 3)
    assert {k: d.mode for k, d in datasets.items()} == {
        "train": "labeled",
        "unlabel": "unlabeled",
        "val": "eval",
        "test": "eval",
    }
    assert datasets["train"].normalize is False and datasets["val"].normalize is True
    same = tmp_path / "same"
    make_dataset_dir(same, num_clips=6)
    (same / "test.csv").unlink()
    (same / "test.csv").symlink_to(same / "val.csv")
    with pytest.raises(ListFileError, match="same file"):
        split_paths(same, 10)


def test_data_config_nests_in_the_config_system(tmp_path):
    yaml_file = tmp_path / "data.yaml"
    yaml_file.write_text("views: [1, 1, 2]\naugment:\n  flip: false\n  temporal_perturb: all_reverse\n")
    cfg = load_config(DataConfig, yaml_file, ["augment.test_crops=3", "backend=pyav"])
    assert cfg.views == (1, 1, 2) and cfg.augment.flip is False and cfg.augment.test_crops == 3
    assert cfg.augment.temporal_perturb == "all_reverse" and cfg.backend == "pyav"


def test_any_resolution_and_one_frame_clips(tmp_path):
    clips = [
        write_clip(tmp_path / "odd.mp4", num_frames=3, height=37, width=51, pix_fmt="yuv444p"),
        write_clip(tmp_path / "one.mp4", num_frames=1),
        write_clip(tmp_path / "gray.mkv", num_frames=5, codec="ffv1", pix_fmt="gray"),
    ]
    entries = [ListEntry(p, 0, i + 1, p.name) for i, p in enumerate(clips)]
    ds = VideoClipDataset(entries, 1, "unlabeled", image_size=32)
    for i in range(len(ds)):
        assert ds[i]["strong"].shape == (3, 8, 32, 32)


def test_bench_loader_smoke(dataset_dir, tmp_path):
    bench = load_script("bench_loader")
    out = tmp_path / "bench.json"
    args = ["--data", str(dataset_dir), "--workers", "0", "--batches", "1", "--warmup", "1", "--repeats", "1"]
    result = bench.main([*args, "--batch-size", "1", "--image-size", "32", "--json-out", str(out)])
    assert json.loads(out.read_text()) == result
    summary = result["loader_vs_decode"]
    assert summary["unit"] == "clips/s" and summary["a"] > 0 and summary["b"] > 0 and summary["ratio"] > 0
    assert set(result["per_workers"]) == {"0"} and "torch" in result["machine"]
