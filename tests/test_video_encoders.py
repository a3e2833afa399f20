"""Video encoders behind one interface: tiny random checkpoints saved to tmp dirs and loaded back through
the same builders a user's weights go through (nothing downloaded)."""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import math
import shutil
from pathlib import Path

import pytest
import timm
import torch
from video_encoder_fixtures import CASES, EVA_KWARGS, SEFAR_CFG, SIZE, VIT_KWARGS, perturb, save_state

from mllm.encoders import ENCODERS, VideoEncoder, build_video_encoder, sinusoidal_frame_position
from mllm.encoders.eva import block_output_by_hook
from sefar_encoder.model import SeFAREncoder, build_image_vit
from sefar_encoder.sampling import assign_segments

pytest_plugins = ["video_encoder_fixtures"]  # checkpoints


def build(checkpoints: dict[str, Path], case: str) -> VideoEncoder:
    name = case.split("_")[0]
    return build_video_encoder(name, checkpoints[name], **CASES[case][0])


@pytest.mark.parametrize("case", list(CASES))
def test_tokens_have_the_declared_shape(checkpoints, case):
    _, num_tokens, dim, size = CASES[case]
    encoder = build(checkpoints, case)
    assert (encoder.num_tokens, encoder.dim, encoder.preprocess.image_size) == (num_tokens, dim, size)
    assert not encoder.training and not any(p.requires_grad for p in encoder.parameters())
    s = encoder.preprocess.num_frames
    tokens = encoder.encode(torch.randn(2, 3, s, size, size))
    assert tokens.shape == (2, num_tokens, dim)
    assert tokens.grad_fn is None and torch.isfinite(tokens).all()
    with pytest.raises(ValueError, match=r"expects video \[B, 3"):
        encoder.encode(torch.randn(2, 3, s + 1, size, size))


def test_every_registered_encoder_is_covered():
    assert set(ENCODERS) == {case.split("_")[0] for case in CASES}


def test_sefar_tokens_are_the_encoders_own(checkpoints):
    model = SeFAREncoder.from_pretrained(checkpoints["sefar"]).eval()
    video = torch.randn(2, 3, 8, SIZE, SIZE)
    with torch.no_grad():
        out = model(video)
        patches = model.forward_features(video, return_patch_tokens=True)[1]  # [B, S, N, D], view order
    by_view = build_video_encoder("sefar", checkpoints["sefar"]).encode(video)
    torch.testing.assert_close(by_view, torch.cat([out.view_features, out.h[:, None]], dim=1))
    by_frame = build_video_encoder("sefar", checkpoints["sefar"], token_layout="frame_mean").encode(video)
    flat_segments = [seg for view in assign_segments(SEFAR_CFG.views) for seg in view]  # (3, 7, 1, 5, 0, ...)
    for position, segment in enumerate(flat_segments):  # token i belongs to segment (time) i
        torch.testing.assert_close(by_frame[:, segment], patches[:, position].mean(dim=1))


def test_sefar_view_cls_needs_equal_widths(tmp_path):
    cfg = dataclasses.replace(SEFAR_CFG, fusion_dim=16, token_layout="frame_mean")
    SeFAREncoder(cfg).save_pretrained(tmp_path / "enc")
    assert build_video_encoder("sefar", tmp_path / "enc").num_tokens == 8
    with pytest.raises(ValueError, match="fusion_dim"):
        build_video_encoder("sefar", tmp_path / "enc", token_layout="view_cls")


def test_clip_uses_penultimate_layer_without_cls(checkpoints):
    from transformers import CLIPVisionModel

    encoder = build_video_encoder("clip", checkpoints["clip"], num_frames=2)
    model = CLIPVisionModel.from_pretrained(checkpoints["clip"]).eval()
    video = torch.randn(1, 3, 2, SIZE, SIZE)
    with torch.no_grad():
        hidden = model(pixel_values=video[0].transpose(0, 1), output_hidden_states=True).hidden_states
    assert len(hidden) == 4  # embeddings + 3 layers: [-2] is the second layer's output
    torch.testing.assert_close(encoder.encode(video)[0], hidden[-2][:, 1:].mean(dim=1))
    assert encoder.preprocess.mean == pytest.approx((0.48145466, 0.4578275, 0.40821073))


def test_clip_reads_the_vision_tower_of_a_full_clip_checkpoint(tmp_path):
    from transformers import CLIPConfig, CLIPModel

    text = {"hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2}
    vision = {**text, "image_size": SIZE, "patch_size": 16}
    cfg = CLIPConfig(text_config={**text, "vocab_size": 64}, vision_config=vision, projection_dim=8)
    full = perturb(CLIPModel(cfg)).eval()
    full.save_pretrained(tmp_path / "full")  # the layout of openai/clip-vit-large-patch14
    (tmp_path / "full" / "preprocessor_config.json").write_text(
        json.dumps({"image_mean": [0.5, 0.5, 0.5], "image_std": [0.25, 0.25, 0.25]})
    )
    encoder = build_video_encoder("clip", tmp_path / "full", num_frames=2, layer=-1)
    assert encoder.preprocess.mean == (0.5, 0.5, 0.5) and encoder.preprocess.std == (0.25, 0.25, 0.25)
    video = torch.randn(1, 3, 2, SIZE, SIZE)
    with torch.no_grad():
        hidden = full.vision_model(pixel_values=video[0].transpose(0, 1), output_hidden_states=True)
    torch.testing.assert_close(encoder.encode(video)[0], hidden.hidden_states[-1][:, 1:].mean(dim=1))


def test_eva_penultimate_block_matches_manual_blocks_and_hook_fallback(checkpoints):
    encoder = build_video_encoder("eva", checkpoints["eva"], num_frames=2, grid=2, model_kwargs=EVA_KWARGS)
    trunk = encoder.trunk
    frames = torch.randn(2, 3, 28, 28)
    with torch.no_grad():
        x = trunk.patch_embed(frames)
        x, rope = trunk._pos_embed(x)
        for block in trunk.blocks[:-1]:  # every block but the last
            x = block(x, rope=rope)
        manual = x[:, trunk.num_prefix_tokens :].transpose(1, 2).reshape(2, 32, 2, 2)
        torch.testing.assert_close(encoder.frame_patches(frames), manual)
        torch.testing.assert_close(block_output_by_hook(trunk, frames, encoder.block), manual)
    video = frames.transpose(0, 1)[None]  # [1, 3, S=2, H, W]
    tokens = encoder.encode(video)  # grid 2x2 = the whole patch grid: tokens are the patches themselves
    torch.testing.assert_close(tokens[0], manual.flatten(2).transpose(1, 2).reshape(-1, 32))


def test_eva_loads_pth_and_rejects_a_mismatched_architecture(checkpoints, tmp_path):
    eva = perturb(timm.create_model("eva_giant_patch14_clip_224", num_classes=5, **EVA_KWARGS))
    pth = save_state(eva, tmp_path / "eva.pth")  # with a head (the CLIP projection): ignored
    encoder = build_video_encoder("eva", pth, num_frames=2, model_kwargs=EVA_KWARGS)
    for key, value in encoder.trunk.state_dict().items():
        assert torch.equal(value, eva.state_dict()[key]), key
    with pytest.raises(ValueError, match="does not match"):
        build_video_encoder("eva", pth, num_frames=2, model_kwargs={**EVA_KWARGS, "depth": 4})


@pytest.mark.skipif(
    importlib.util.find_spec("open_clip") is None, reason="open_clip (extra [clip]) not installed"
)
def test_eva_open_clip_backend_reads_the_same_trunk(tmp_path):
    import open_clip

    model_cfg = {
        "embed_dim": 16,
        "vision_cfg": {"image_size": 224, "timm_model_name": "eva02_tiny_patch14_224", "timm_pool": "token"},
        "text_cfg": {"context_length": 8, "vocab_size": 64, "width": 16, "heads": 2, "layers": 1},
    }
    folder = tmp_path / "oc"
    folder.mkdir()
    (folder / "open_clip_config.json").write_text(
        json.dumps({"model_cfg": model_cfg, "preprocess_cfg": {"mean": [0.4] * 3, "std": [0.3] * 3}})
    )
    torch.manual_seed(0)
    reference = open_clip.create_model(f"local-dir:{folder}", load_weights=False)
    torch.save(reference.state_dict(), folder / "open_clip_pytorch_model.bin")
    encoder = build_video_encoder("eva", f"local-dir:{folder}", backend="open_clip", num_frames=1)
    assert encoder.preprocess.image_size == 224 and encoder.preprocess.mean == (0.4, 0.4, 0.4)
    frames = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        expected = block_output_by_hook(
            reference.visual.trunk.eval(), frames, len(reference.visual.trunk.blocks) - 2
        )
    torch.testing.assert_close(encoder.encode(frames[:, :, None])[0, 0], expected.mean(dim=(2, 3))[0])
    # The same checkpoint through the default timm backend (timm converts open_clip's key layout).
    timm_encoder = build_video_encoder(
        "eva", folder / "open_clip_pytorch_model.bin", model_name="eva02_tiny_patch14_224", num_frames=1
    )
    torch.testing.assert_close(timm_encoder.encode(frames[:, :, None]), encoder.encode(frames[:, :, None]))


def test_framepool_is_blind_to_frame_order(checkpoints):
    for options in ({}, {"spatial_grid": 2}):
        encoder = build_video_encoder("framepool", checkpoints["framepool"], num_frames=4, **options)
        video = torch.randn(3, 3, 4, SIZE, SIZE)
        tokens = encoder.encode(video)
        torch.testing.assert_close(encoder.encode(video.flip(2)), tokens, atol=1e-6, rtol=0)
        # ... but not to content: a clip of other frames gives other tokens
        assert not torch.allclose(encoder.encode(torch.randn_like(video)), tokens, atol=1e-3)


def test_framepool_cls_feature_is_the_backbones(checkpoints):
    vit = build_image_vit(SEFAR_CFG)
    from safetensors.torch import load_file

    vit.load_state_dict(load_file(str(checkpoints["framepool"] / "model.safetensors")))
    encoder = build_video_encoder("framepool", checkpoints["framepool"], num_frames=2)
    video = torch.randn(1, 3, 2, SIZE, SIZE)
    with torch.no_grad():
        expected = vit.eval()(video[0].transpose(0, 1)).mean(dim=0)  # CLS after the final norm, time mean
    torch.testing.assert_close(encoder.encode(video)[0, 0], expected)


def test_framepool_reads_a_timm_vit_file(checkpoints):
    encoder = build_video_encoder(
        "framepool",
        checkpoints["vit"],
        num_frames=2,
        model_name="vit_small_patch16_224",
        model_kwargs=VIT_KWARGS,
    )
    assert (encoder.num_tokens, encoder.dim) == (1, 24)
    assert encoder.encode(torch.randn(1, 3, 2, SIZE, SIZE)).shape == (1, 1, 24)


def test_fingerprint_follows_weights_options_and_preprocessing(checkpoints, tmp_path):
    base = build_video_encoder("framepool", checkpoints["framepool"], num_frames=4)
    fp = base.fingerprint()
    assert fp == base.fingerprint() and len(fp) == 64
    moved = shutil.copytree(checkpoints["framepool"], tmp_path / "elsewhere")
    assert (
        build_video_encoder("framepool", moved, num_frames=4).fingerprint() == fp
    )  # location is not identity
    assert build_video_encoder("framepool", moved, num_frames=8).fingerprint() != fp  # preprocessing
    assert build_video_encoder("framepool", moved, num_frames=4, spatial_grid=1).fingerprint() != fp  # tokens
    with torch.no_grad():
        base.vit.blocks[0].mlp.fc1.weight[0, 0] += 1e-3  # one weight
    assert base.fingerprint() != fp


def test_builder_rejects_unknown_names_and_options(checkpoints):
    with pytest.raises(ValueError, match="unknown video encoder 'nope'"):
        build_video_encoder("nope", checkpoints["sefar"])
    with pytest.raises(ValueError, match=r"no option\(s\) \['grd'\]"):
        build_video_encoder("clip", checkpoints["clip"], grd=2)
    with pytest.raises(ValueError, match="grid 5 is larger"):
        build_video_encoder("clip", checkpoints["clip"], grid=5)
    with pytest.raises(ValueError, match="layer must be in"):
        build_video_encoder("eva", checkpoints["eva"], model_kwargs=EVA_KWARGS, layer=-4)
    with pytest.raises(ValueError, match="no 'architecture'"):
        build_video_encoder("framepool", checkpoints["sefar"])  # a video checkpoint is not an image backbone
    with pytest.raises(FileNotFoundError, match="timm could not"):
        build_video_encoder("eva", checkpoints["eva"].parent / "missing.safetensors")


def test_missing_open_clip_names_the_extra(checkpoints, monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_open_clip(name, *args, **kwargs):
        if name == "open_clip":
            raise ImportError("No module named 'open_clip'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_open_clip)
    with pytest.raises(ImportError, match=r"pip install sefar-toolkit\[clip\]"):
        build_video_encoder("eva", "laion400m_s11b_b41k", backend="open_clip")


# ---- the frame sequence layout (frameseq; clip / eva with frame_position) -------------------------------


def test_sinusoidal_frame_position_by_hand():
    code = sinusoidal_frame_position(3, 4)  # frequencies 1 and 10000^(-1/2) = 0.01
    expected = torch.tensor(
        [
            [0.0, 1.0, 0.0, 1.0],
            [math.sin(1.0), math.cos(1.0), math.sin(0.01), math.cos(0.01)],
            [math.sin(2.0), math.cos(2.0), math.sin(0.02), math.cos(0.02)],
        ]
    )
    torch.testing.assert_close(code, expected)
    assert sinusoidal_frame_position(2, 3).shape == (2, 3)  # odd width: the last column is a sine
    with pytest.raises(ValueError):
        sinusoidal_frame_position(0, 4)


def test_frameseq_keeps_frame_order_and_framepool_does_not(checkpoints):
    video = torch.randn(2, 3, 4, SIZE, SIZE)
    order = torch.tensor([2, 0, 3, 1])
    pool = build_video_encoder("framepool", checkpoints["framepool"], num_frames=4, spatial_grid=2)
    torch.testing.assert_close(pool.encode(video[:, :, order]), pool.encode(video), atol=1e-6, rtol=0)
    for options in ({}, {"frame_position": "none"}):
        seq = build_video_encoder("frameseq", checkpoints["frameseq"], num_frames=4, **options)
        tokens = seq.encode(video).view(2, 4, 4, -1)  # [B, S, g*g, D]
        permuted = seq.encode(video[:, :, order]).view(2, 4, 4, -1)
        assert not torch.allclose(permuted, tokens, atol=1e-3)  # the order is in the tokens
        code = sinusoidal_frame_position(4, seq.dim)[:, None] if options == {} else 0
        # frame k's tokens are the backbone's tokens of the frame at position k, plus k's code
        torch.testing.assert_close(permuted - code, (tokens - code)[:, order], atol=1e-5, rtol=0)


def test_frameseq_tokens_are_the_backbones_pooled_patches(checkpoints):
    from safetensors.torch import load_file

    vit = build_image_vit(SEFAR_CFG)
    vit.load_state_dict(load_file(str(checkpoints["framepool"] / "model.safetensors")))
    encoder = build_video_encoder("frameseq", checkpoints["frameseq"], num_frames=2, grid=1)
    video = torch.randn(1, 3, 2, SIZE, SIZE)
    with torch.no_grad():
        patches = vit.eval().forward_features(video[0].transpose(0, 1))[:, vit.num_prefix_tokens :]
    expected = patches.mean(dim=1) + sinusoidal_frame_position(2, encoder.dim)  # [S, D]
    torch.testing.assert_close(encoder.encode(video)[0], expected)


@pytest.mark.parametrize("name", ["clip", "eva"])
def test_clip_and_eva_give_the_frame_sequence_layout(checkpoints, name):
    options, _, _, size = CASES[f"{name}_frameseq"]
    plain_options = {k: v for k, v in options.items() if k != "frame_position"}
    with_code = build_video_encoder(name, checkpoints[name], **options)
    plain = build_video_encoder(name, checkpoints[name], **plain_options)
    assert "frame_position" not in plain.options  # descriptions (and caches) of older encoders unchanged
    assert with_code.options["frame_position"] == "sinusoidal"
    assert with_code.fingerprint() != plain.fingerprint()
    video = torch.randn(1, 3, 4, size, size)
    code = sinusoidal_frame_position(4, plain.dim).repeat_interleave(4, dim=0)  # [S*g*g, D], frame-major
    torch.testing.assert_close(with_code.encode(video)[0], plain.encode(video)[0] + code)
    with pytest.raises(ValueError, match="frame_position"):
        build_video_encoder(name, checkpoints[name], **{**options, "frame_position": "learned"})
