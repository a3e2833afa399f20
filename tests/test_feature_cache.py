"""Feature cache: encode once, read without decoding, invalidate on any encoder change, follow the data
path's bad-sample policy. Tiny clips written on the fly; a tiny SeFAR checkpoint saved and loaded back."""

from __future__ import annotations

import json
import pickle
import shutil
from pathlib import Path

import pytest
import torch
from conftest import load_script
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from video_fixtures import write_clip

from gym_qa.clips import clip_id_of
from gym_qa.lists import ListEntry, write_list
from mllm.encoders import VideoEncoder, build_video_encoder
from mllm.feature_cache import (
    EncodingError,
    FeatureCache,
    StaleCacheError,
    build_feature_cache,
    cache_directory,
    encode_entries,
)
from sefar_encoder.decoding import DECODE_COUNTER, DecodeError
from sefar_encoder.model import ModelConfig, SeFAREncoder

pytest_plugins = ["video_fixtures"]  # bad_clips
bench_cache = load_script("bench_cache")
cache_features = load_script("cache_features")

CFG = ModelConfig(img_size=32, patch_size=16, embed_dim=16, depth=1, num_heads=2, num_classes=3)
NUM_CLIPS = 5


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Clips of different lengths, a list file, and a tiny SeFAR checkpoint."""
    root = tmp_path_factory.mktemp("cache_data")
    # 64 px wide: decord 0.6 fails on some narrower widths (48 px: "DECORDArrayCopyFromTo ... size must match").
    clips = [
        write_clip(root / "videos" / f"clip_{i}.mp4", num_frames=10 + 3 * i, height=40, width=64)
        for i in range(NUM_CLIPS)
    ]
    write_list(root / "test.csv", [(p, i % 3) for i, p in enumerate(clips)])
    torch.manual_seed(0)
    SeFAREncoder(CFG).save_pretrained(root / "encoder")
    return {"root": root, "list": root / "test.csv", "encoder": root / "encoder", "clips": clips}


def encoder_from(path: Path, **options) -> VideoEncoder:
    return build_video_encoder("sefar", path, **options)


def direct_tokens(encoder: VideoEncoder, clip: Path) -> torch.Tensor:
    """The reference: the data path's eval sample of one clip, encoded directly."""
    video = encoder.preprocess.eval_dataset([_entry(clip)])[0]["video"]  # [1, C, S, H, W]
    return encoder.encode(video)[0]


def _entry(path: Path) -> ListEntry:
    return ListEntry(path=path, label=0, line=1, raw_path=str(path))


def test_build_then_read_decodes_nothing_and_matches_direct_encoding(data, tmp_path):
    encoder = encoder_from(data["encoder"])
    report = build_feature_cache(encoder, data["list"], tmp_path, batch_size=2, shard_size=2, progress=False)
    assert (report.encoded, report.reused, report.skipped) == (NUM_CLIPS, 0, {})
    assert report.directory == cache_directory(tmp_path, encoder.fingerprint())

    cache = FeatureCache.for_encoder(tmp_path, encoder)
    ids = [clip_id_of(p) for p in data["clips"]]
    assert sorted(cache.clip_ids) == sorted(ids) and len(cache) == NUM_CLIPS
    DECODE_COUNTER.reset()
    for _epoch in range(2):
        for i in range(0, NUM_CLIPS, 2):
            tokens = cache.get(ids[i : i + 2])
            assert tokens.shape == (len(ids[i : i + 2]), len(CFG.views) + 1, CFG.embed_dim)
    assert DECODE_COUNTER.count == 0  # reading never touches a video

    got = cache.get(ids[::-1])
    for row, clip in enumerate(data["clips"][::-1]):
        torch.testing.assert_close(got[row], direct_tokens(encoder, clip), atol=1e-5, rtol=1e-5)

    index = json.loads((report.directory / "index.json").read_text())
    assert index["fingerprint"] == encoder.fingerprint() and index["dtype"] == "float32"
    assert index["token_shape"] == [len(CFG.views) + 1, CFG.embed_dim]
    assert index["encoder"]["preprocess"] == {
        "views": [2, 2, 4],
        "image_size": 32,
        "mean": list(encoder.preprocess.mean),
        "std": list(encoder.preprocess.std),
    }
    (list_record,) = index["lists"].values()
    assert list_record["num_clips"] == NUM_CLIPS and len(list_record["sha256"]) == 64
    assert sorted(index["shards"].values()) == [1, 2, 2]  # <= shard_size clips per shard
    for name, count in index["shards"].items():
        with safe_open(str(report.directory / name), framework="pt") as shard:
            assert len(list(shard.keys())) == count

    # A second build with the same encoder and list encodes (and decodes) nothing.
    DECODE_COUNTER.reset()
    again = build_feature_cache(encoder, data["list"], tmp_path, progress=False)
    assert (again.encoded, again.reused, DECODE_COUNTER.count) == (0, NUM_CLIPS, 0)
    # Pickles without open file handles (DataLoader workers) and still reads.
    torch.testing.assert_close(pickle.loads(pickle.dumps(cache)).get(ids[:1]), cache.get(ids[:1]))


def test_changed_weights_or_preprocessing_invalidate_the_cache(data, tmp_path):
    encoder = encoder_from(data["encoder"])
    old = build_feature_cache(encoder, data["list"], tmp_path / "cache", progress=False)
    ids = [clip_id_of(p) for p in data["clips"]]
    old_tokens = FeatureCache(old.directory).get(ids)

    edited = Path(shutil.copytree(data["encoder"], tmp_path / "edited"))
    state = load_file(str(edited / "model.safetensors"))
    state["backbone.patch_embed.proj.weight"][0] += 0.5  # one filter of the first layer
    save_file(state, str(edited / "model.safetensors"))
    changed = encoder_from(edited)
    assert changed.fingerprint() != encoder.fingerprint()
    with pytest.raises(FileNotFoundError, match="no feature cache"):
        FeatureCache.for_encoder(tmp_path / "cache", changed)  # never the old encoder's features
    with pytest.raises(StaleCacheError, match="weights, options or preprocessing differ"):
        FeatureCache(old.directory, fingerprint=changed.fingerprint())

    DECODE_COUNTER.reset()
    new = build_feature_cache(changed, data["list"], tmp_path / "cache", progress=False)
    assert new.directory != old.directory and new.encoded == NUM_CLIPS and DECODE_COUNTER.count > 0
    new_tokens = FeatureCache.for_encoder(tmp_path / "cache", changed).get(ids)
    assert not torch.allclose(new_tokens, old_tokens)
    torch.testing.assert_close(new_tokens[0], direct_tokens(changed, data["clips"][0]), atol=1e-5, rtol=1e-5)

    frames = encoder_from(data["encoder"], token_layout="frame_mean")  # same weights, other tokens
    renormalised = encoder_from(data["encoder"], mean=(0.5, 0.5, 0.5))  # same weights, other input
    assert len({encoder.fingerprint(), frames.fingerprint(), renormalised.fingerprint()}) == 3


def test_edited_clip_is_encoded_again_alone(data, tmp_path):
    videos = Path(shutil.copytree(data["root"] / "videos", tmp_path / "videos"))
    write_list(tmp_path / "list.csv", [(p, 0) for p in sorted(videos.glob("*.mp4"))])
    encoder = encoder_from(data["encoder"])
    build_feature_cache(encoder, tmp_path / "list.csv", tmp_path / "cache", progress=False)
    write_clip(videos / "clip_2.mp4", num_frames=7, height=40, width=64)  # other content, same id
    report = build_feature_cache(encoder, tmp_path / "list.csv", tmp_path / "cache", progress=False)
    assert (report.encoded, report.reused) == (1, NUM_CLIPS - 1)
    got = FeatureCache.for_encoder(tmp_path / "cache", encoder).get(["clip_2"])[0]
    torch.testing.assert_close(got, direct_tokens(encoder, videos / "clip_2.mp4"), atol=1e-5, rtol=1e-5)


def test_bad_clips_follow_the_data_path_policy(data, tmp_path, bad_clips):
    entries = [(data["clips"][0], 0), (bad_clips["text"], 1), (data["clips"][1], 2)]
    write_list(tmp_path / "list.csv", entries)
    encoder = encoder_from(data["encoder"])
    with pytest.raises(DecodeError, match="text.mp4"):
        build_feature_cache(encoder, tmp_path / "list.csv", tmp_path / "cache", batch_size=1, progress=False)
    # What was encoded before the error is kept; the skip policy then only handles the rest.
    assert FeatureCache.for_encoder(tmp_path / "cache", encoder).clip_ids == ["clip_0"]

    report = build_feature_cache(
        encoder, tmp_path / "list.csv", tmp_path / "cache", on_bad_sample="skip", progress=False
    )
    assert (report.encoded, report.reused) == (1, 1) and list(report.skipped) == ["text"]
    cache = FeatureCache.for_encoder(tmp_path / "cache", encoder)
    assert sorted(cache.clip_ids) == ["clip_0", "clip_1"] and cache.skipped["text"]  # the decoder's reason
    with pytest.raises(KeyError, match=r"text \(skipped"):
        cache.get(["clip_0", "text"])
    index = json.loads((cache.directory / "index.json").read_text())
    assert index["skipped"]["text"]["path"] == str(bad_clips["text"])
    assert next(iter(index["lists"].values()))["num_skipped"] == 1


def test_non_finite_features_are_an_encoding_error(data, tmp_path, monkeypatch):
    encoder = encoder_from(data["encoder"])
    entries = [_entry(p) for p in data["clips"][:2]]
    monkeypatch.setattr(encoder.model, "forward", _nan_on_second_clip(encoder.model.forward))
    with pytest.raises(EncodingError, match="clip_1.mp4: the sefar encoder produced non-finite"):
        list(encode_entries(encoder, entries, batch_size=2, progress=False))
    (batch,) = encode_entries(encoder, entries, batch_size=2, on_bad_sample="skip", progress=False)
    assert [clip_id_of(e.path) for e in batch.entries] == ["clip_0"] and batch.tokens.shape[0] == 1
    assert [(clip_id_of(e.path), why) for e, why in batch.skipped] == [("clip_1", "non-finite features")]


def _nan_on_second_clip(forward):
    def patched(video):
        out = forward(video)
        out.tokens[1:] = float("nan")
        return out

    return patched


def test_script_and_benchmark(data, tmp_path, capsys):
    args = ["--encoder", "sefar", "--weights", str(data["encoder"]), "--list", str(data["list"])]
    args += ["--out", str(tmp_path), "--batch-size", "4", "--dtype", "float16", "--no-progress"]
    assert cache_features.main([*args, "--option", "token_layout=frame_mean"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["encoded"] == NUM_CLIPS and summary["encoder"]["options"] == {"token_layout": "frame_mean"}
    cache = FeatureCache(summary["directory"], fingerprint=summary["fingerprint"])
    assert cache.dtype == torch.float16 and cache.token_shape == (8, CFG.embed_dim)

    encoder = encoder_from(data["encoder"], token_layout="frame_mean")
    stats = bench_cache.benchmark_feature_cache(encoder, cache, data["list"], num_clips=3, batch_size=2)
    assert stats["clips"] == 3 and stats["on_the_fly_s"] > 0 and stats["cache_s"] > 0
    assert stats["max_abs_diff"] < 1e-2  # float16 storage

    assert cache_features.main([*args, "--option", "grd=2"]) == 2
    assert "no option(s) ['grd']" in capsys.readouterr().err
