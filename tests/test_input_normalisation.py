"""Input statistics follow the pretrained weights (issue 18, point 2): mean/std come from the checkpoint's timm
``pretrained_cfg`` (looked up without downloading), the FineGym configs pin the paper's ViT-B/16 tag, the
encoder export records where its mean/std come from and the training pipeline normalises with them; a local
weights file without a tag keeps the configured statistics and says so; the MLLM's frame encoders (EVA,
framepool) take their own checkpoint's statistics too."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import timm
from conftest import REPO, load_script
from synthgym_fixtures import tiny_cli_args, tiny_train_config
from video_encoder_fixtures import EVA_KWARGS, VIT_KWARGS

from mllm.encoders import build_video_encoder
from mllm.encoders.base import IMAGENET_MEAN, IMAGENET_STD, OPENAI_CLIP_MEAN, OPENAI_CLIP_STD
from sefar_encoder.model.encoder import EncoderPreprocessing
from sefar_encoder.model.image_vit import checkpoint_normalisation
from sefar_encoder.runtime.config import load_config
from sefar_encoder.training_config import EncoderTrainConfig

pytest_plugins = ["synthgym_fixtures", "video_encoder_fixtures"]

FINEGYM_CONFIGS = sorted((REPO / "configs" / "encoder").glob("finegym_*.yaml"))
HALF = (0.5, 0.5, 0.5)
SIDECAR_MEAN, SIDECAR_STD = (0.4, 0.3, 0.2), (0.25, 0.2, 0.15)


def timm_config_beside(weights: Path, mean=SIDECAR_MEAN, std=SIDECAR_STD, legacy: bool = False) -> Path:
    """Write the timm ``config.json`` a hub repo has beside its weights (``legacy``: timm's older flat form)."""
    cfg = {"tag": "test_tag", "mean": list(mean), "std": list(std), "num_classes": 0}
    data = {"architecture": "vit_small_patch16_224", **cfg} if legacy else {
        "architecture": "vit_small_patch16_224",
        "num_classes": 0,
        "pretrained_cfg": cfg,
    }  # fmt: skip
    (weights.parent / "config.json").write_text(json.dumps(data))
    return weights


# ----------------------------------------------------------------------------------------- the lookup
@pytest.mark.parametrize("name", ["vit_tiny_patch16_224.augreg_in21k_ft_in1k", "vit_small_patch16_224"])
def test_timm_names_give_the_pretrained_cfg_of_the_model_timm_builds(name):
    norm = checkpoint_normalisation(name, IMAGENET_MEAN, IMAGENET_STD)
    cfg = timm.create_model(name, pretrained=False).pretrained_cfg  # what timm would load, no download
    assert norm.from_checkpoint and (norm.mean, norm.std) == (tuple(cfg["mean"]), tuple(cfg["std"]))
    assert norm.checkpoint == f"{cfg['architecture']}.{cfg['tag']}"


def test_an_untagged_name_is_timms_default_tag_and_says_so():
    norm = checkpoint_normalisation("vit_base_patch16_224", IMAGENET_MEAN, IMAGENET_STD)
    assert norm.checkpoint == "vit_base_patch16_224.augreg2_in21k_ft_in1k" and norm.mean == HALF
    assert "no tag" in norm.source and "default tag" in norm.source


def test_eva_clip_has_clips_statistics_not_imagenets():
    norm = checkpoint_normalisation("eva_giant_patch14_clip_224", IMAGENET_MEAN, IMAGENET_STD)
    assert (norm.mean, norm.std) == (OPENAI_CLIP_MEAN, OPENAI_CLIP_STD)


def test_unknown_names_and_tags_are_clear_errors():
    with pytest.raises(RuntimeError, match="Invalid pretrained tag"):
        checkpoint_normalisation("vit_base_patch16_224.no_such_tag", IMAGENET_MEAN, IMAGENET_STD)
    with pytest.raises(RuntimeError, match="local .pth or .safetensors"):
        checkpoint_normalisation("vit_does_not_exist_patch8", IMAGENET_MEAN, IMAGENET_STD)


@pytest.mark.parametrize("path", FINEGYM_CONFIGS, ids=lambda p: p.name)
def test_finegym_configs_pin_the_papers_vit_and_take_its_statistics(path: Path):
    cfg = load_config(EncoderTrainConfig, path)
    assert cfg.init_checkpoint == "vit_base_patch16_224.orig_in21k_ft_in1k"  # the JAX ViT-B/16, tag pinned
    norm = checkpoint_normalisation(cfg.init_checkpoint, cfg.data.augment.mean, cfg.data.augment.std)
    assert norm.from_checkpoint and norm.checkpoint == cfg.init_checkpoint  # no default tag substituted
    assert (norm.mean, norm.std) == (HALF, HALF) != (cfg.data.augment.mean, cfg.data.augment.std)


def test_a_local_file_keeps_the_configured_statistics_unless_a_timm_config_is_beside_it(tmp_path):
    weights = tmp_path / "vit.safetensors"
    weights.write_bytes(b"")
    bare = checkpoint_normalisation(weights, IMAGENET_MEAN, IMAGENET_STD)
    assert not bare.from_checkpoint and (bare.mean, bare.std) == (IMAGENET_MEAN, IMAGENET_STD)
    assert "configured mean/std" in bare.source and "no tag" in bare.source
    (tmp_path / "config.json").write_text(json.dumps({"architecture": {"embed_dim": 32}}))  # a backbone's
    assert not checkpoint_normalisation(weights, IMAGENET_MEAN, IMAGENET_STD).from_checkpoint
    for legacy in (False, True):
        timm_config_beside(weights, legacy=legacy)
        norm = checkpoint_normalisation(weights, IMAGENET_MEAN, IMAGENET_STD)
        assert norm.from_checkpoint and (norm.mean, norm.std) == (SIDECAR_MEAN, SIDECAR_STD)
        assert "vit_small_patch16_224.test_tag" in norm.source
        by_id = checkpoint_normalisation(f"local-dir:{tmp_path}", IMAGENET_MEAN, IMAGENET_STD)
        assert (by_id.mean, by_id.std, by_id.source) == (norm.mean, norm.std, norm.source)


# ----------------------------------------------------------------------------------------- training
def test_training_normalises_with_the_weights_statistics_and_the_export_records_them(
    synthgym_tiny, tmp_path, monkeypatch, capsys
):
    train = load_script("train_encoder")
    weights = timm_config_beside(Path(shutil.copy(synthgym_tiny.backbone, tmp_path / "model.safetensors")))
    seen = []
    build_datasets = train.build_datasets
    monkeypatch.setattr(
        train, "build_datasets", lambda cfg, *a, **k: seen.append(cfg) or build_datasets(cfg, *a, **k)
    )
    run = tmp_path / "run"
    args = tiny_cli_args(
        synthgym_tiny, run, "method.name=supervised", "epochs=1", f"init_checkpoint={weights}"
    )
    assert train.main(args) == 0
    rate = tiny_train_config(synthgym_tiny, run).data.label_rate
    assert [(c.augment.mean, c.augment.std) for c in seen] == [(SIDECAR_MEAN, SIDECAR_STD)]
    pre = EncoderPreprocessing.read(run / "encoder")
    assert (pre.mean, pre.std) == (SIDECAR_MEAN, SIDECAR_STD) and "test_tag" in pre.normalisation
    assert (pre.init_checkpoint, pre.data_root, pre.label_rate) == (
        str(weights),
        str(synthgym_tiny.root),
        rate,
    )
    assert f"input normalisation: mean {SIDECAR_MEAN}" in capsys.readouterr().out

    # the same backbone without the timm config: the config's statistics, and the export says so
    (tmp_path / "config.json").unlink()
    assert train.main([*args[:-1], "out_dir=" + str(tmp_path / "bare"), f"init_checkpoint={weights}"]) == 0
    bare = EncoderPreprocessing.read(tmp_path / "bare" / "encoder")
    assert (bare.mean, bare.std) == (IMAGENET_MEAN, IMAGENET_STD) and "configured" in bare.normalisation


# ----------------------------------------------------------------------------------------- MLLM encoders
def test_eva_and_framepool_files_take_their_checkpoints_statistics(checkpoints, tmp_path):
    eva = build_video_encoder("eva", checkpoints["eva"], num_frames=2, model_kwargs=EVA_KWARGS)
    assert (eva.preprocess.mean, eva.preprocess.std) == (OPENAI_CLIP_MEAN, OPENAI_CLIP_STD)  # EVA-CLIP's own
    tagged = build_video_encoder(
        "framepool", checkpoints["vit"], num_frames=2, model_kwargs=VIT_KWARGS,
        model_name="vit_small_patch16_224.augreg_in1k",
    )  # fmt: skip
    assert tagged.preprocess.mean == HALF
    for name, kwargs in (("eva", {"model_kwargs": EVA_KWARGS}), ("framepool", {"model_kwargs": VIT_KWARGS})):
        source = checkpoints["eva" if name == "eva" else "vit"]
        weights = timm_config_beside(Path(shutil.copy(source, tmp_path / source.name)))
        if name == "framepool":
            kwargs["model_name"] = "vit_small_patch16_224"
        encoder = build_video_encoder(name, weights, num_frames=2, **kwargs)
        assert (encoder.preprocess.mean, encoder.preprocess.std) == (SIDECAR_MEAN, SIDECAR_STD), name
        (tmp_path / "config.json").unlink()
