"""The per-frame stem and its token cache (``sefar_encoder.frame_tokens``): frame tokens stand in for the
video exactly, the cache serves the evaluation's logits within 1e-5, TokenViews draws the same temporal
perturbation as the pixel pipeline, and a run on cached tokens leaves the stem bit-equal."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from conftest import load_script
from safetensors.torch import load_file
from synthgym_fixtures import tiny_train_config

from gym_qa.lists import read_list
from sefar_encoder.dataset import VideoClipDataset
from sefar_encoder.frame_tokens import FrameTokenCache, TokenViews
from sefar_encoder.model import SeFAREncoder
from sefar_encoder.model.encoder import ModelConfig
from sefar_encoder.model.token_mix import TubeMix
from sefar_encoder.transforms import AugmentConfig, ClipTransform

pytest_plugins = ["synthgym_fixtures"]  # synthgym_tiny


def tiny_encoder(frame_blocks: int, views=(2, 2, 4)) -> SeFAREncoder:
    torch.manual_seed(0)
    cfg = ModelConfig(
        img_size=32,
        patch_size=16,
        embed_dim=32,
        depth=3,
        num_heads=2,
        views=views,
        num_classes=5,
        frame_blocks=frame_blocks,
        drop_path_rate=0.0,
    )
    model = SeFAREncoder(cfg)
    with torch.no_grad():  # non-zero temporal projections, so the temporal branch really mixes frames
        for block in model.backbone.blocks[frame_blocks:]:
            block.proj_t.weight.normal_(0, 0.05)
    return model.eval()


def test_frame_stem_blocks_have_no_temporal_parameters():
    model = tiny_encoder(frame_blocks=2)
    names = [n for n, _ in model.named_parameters()]
    assert not any(n.startswith(("backbone.blocks.0.", "backbone.blocks.1.")) and "_t." in n for n in names)
    assert "backbone.blocks.2.proj_t.weight" in names
    stem = {n for n, _ in model.backbone.frame_stem_parameters()}
    assert "patch_embed.proj.weight" in stem and "blocks.1.mlp.fc1.weight" in stem
    assert not any(n.startswith("blocks.2.") for n in stem)


@pytest.mark.parametrize("frame_blocks", [0, 2])
def test_frame_tokens_give_the_videos_logits(frame_blocks):
    model = tiny_encoder(frame_blocks)
    video = torch.randn(3, 3, 8, 32, 32)
    with torch.no_grad():
        tokens = model.forward_frames(video)
        assert tokens.shape == (3, 8, 5, 32)
        torch.testing.assert_close(model(tokens).logits, model(video).logits, rtol=0, atol=1e-5)
        # one frame alone gives the same stem tokens: the stem never mixes frames
        alone = model.forward_frames(video[:, :, 3:4])
        torch.testing.assert_close(alone[:, 0], tokens[:, 3], rtol=0, atol=1e-6)
        mix = TubeMix().sample(3, model.grid_size, torch.Generator().manual_seed(1))
        torch.testing.assert_close(
            model(tokens, mix=mix).logits, model(video, mix=mix).logits, atol=1e-5, rtol=0
        )


def test_frame_tokens_of_the_wrong_shape_are_a_clear_error():
    model = tiny_encoder(frame_blocks=1)
    with pytest.raises(ValueError, match="frame tokens"):
        model(torch.zeros(2, 4, 5, 32))


def test_token_views_perturb_time_like_the_pixel_pipeline():
    views, cfg = (2, 2, 4), AugmentConfig(flip=True)
    tokens = np.arange(8, dtype=np.float32)[:, None, None, None] + np.zeros((8, 2, 3, 4), np.float32)
    tokens[:, 1] += 100.0  # the mirror variant
    tv, pixels = TokenViews(views, (3, 4), cfg), ClipTransform(views, 32, cfg)
    for seed in range(20):
        params = tv.sample_params("strong", np.random.default_rng(seed), 1, 1)
        out = tv.apply(tokens, params)  # [S, M, D]
        frame = out[:, 0, 0].numpy() % 100
        np.testing.assert_array_equal(frame, [1, 0, 3, 2, 4, 5, 6, 7])  # fine views reversed, coarse kept
        assert params.dropped_channel is None
        for s, n, box in zip(tv.starts.tolist(), views, params.boxes):
            assert (out[s : s + n, 0, 0].numpy() >= 100).all() == box.flip
        pixel_params = pixels.sample_params("strong", np.random.default_rng(seed), 40, 40)
        np.testing.assert_array_equal(pixel_params.time_order, params.time_order)


def test_cached_tokens_give_the_uncached_evaluation(synthgym_tiny, tmp_path):
    cfg = tiny_train_config(synthgym_tiny, tmp_path / "run", "model.frame_blocks=2")
    mcfg = dataclasses.replace(cfg.model, num_classes=12, img_size=64)
    torch.manual_seed(0)
    model = SeFAREncoder(mcfg).eval()
    augment = cfg.data.augment
    cache = FrameTokenCache(tmp_path / "tokens", model, 64, augment)
    entries = read_list(synthgym_tiny.root / "test.csv", 12)[:4]
    assert cache.build([e.path for e in entries], progress=False) == 4
    assert cache.build([e.path for e in entries], progress=False) == 0  # entries are reused
    plain = VideoClipDataset(entries, 12, "eval", image_size=64, augment=augment)
    cached = VideoClipDataset(entries, 12, "eval", image_size=64, augment=augment, token_cache=cache)
    for i in range(len(entries)):
        video, tokens = plain[i]["video"], cached[i]["video"]
        assert tokens.shape == (1, 8, 17, 192)
        with torch.no_grad():
            torch.testing.assert_close(model(tokens).logits, model(video).logits, rtol=0, atol=1e-5)


def test_a_run_on_cached_tokens_trains_and_leaves_the_stem_bit_equal(synthgym_tiny, tmp_path):
    run = load_script("train_encoder").run
    out = tmp_path / "run"
    cfg = tiny_train_config(
        synthgym_tiny, out, "model.frame_blocks=2", f"frame_token_cache={tmp_path / 'tokens'}"
    )
    metrics = run(cfg)
    assert metrics["optimizer_steps"] == 4
    init = load_file(str(synthgym_tiny.backbone))
    trained = SeFAREncoder.from_pretrained(out / "encoder")
    state = {k.removeprefix("backbone."): v for k, v in trained.state_dict().items()}
    stem = [n for n, _ in trained.backbone.frame_stem_parameters()]
    assert stem and set(stem) <= set(init)  # the pretrained image ViT's names
    assert all(torch.equal(state[n], init[n]) for n in stem)
    assert not torch.equal(state["blocks.2.proj_t.weight"], torch.zeros_like(state["blocks.2.proj_t.weight"]))
