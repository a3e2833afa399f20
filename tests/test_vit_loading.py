"""Loading a timm image ViT checkpoint into the encoder: key report, bit-equal weights, per-frame equality."""

import re

import pytest
import torch
from safetensors.torch import save_file

from sefar_encoder.model import ModelConfig, SeFAREncoder, build_image_vit, load_image_vit
from sefar_encoder.model.image_vit import image_vit_kwargs

CFG = ModelConfig(img_size=32, patch_size=8, embed_dim=32, depth=2, num_heads=2, num_classes=5)
VIDEO_ONLY = re.compile(
    r"^(backbone\.blocks\.\d+\.(attn_t|norm_t|proj_t)\.|backbone\.time_embeds\.|fusion_head\.)"
)


def image_vit(num_classes: int = 10, **kw) -> torch.nn.Module:
    torch.manual_seed(0)
    vit = build_image_vit(ModelConfig(**{**CFG.__dict__, **kw}), num_classes=num_classes).eval()
    with torch.no_grad():  # random, non-trivial values everywhere (timm zero-inits some biases)
        for p in vit.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return vit


@pytest.mark.parametrize("fmt", ["pth", "safetensors"])
def test_load_reports_exactly_the_video_only_keys(tmp_path, fmt):
    vit = image_vit()
    state = vit.state_dict()
    path = tmp_path / f"vit.{fmt}"
    if fmt == "pth":
        torch.save(state, path)
    else:
        save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    model = SeFAREncoder(CFG)
    with torch.no_grad():  # the loader itself must zero the temporal projections
        for block in model.backbone.blocks:
            block.proj_t.weight.normal_()
            block.proj_t.bias.normal_()
    report = load_image_vit(model, path)

    target_keys = set(model.state_dict())
    expected_missing = {k for k in target_keys if VIDEO_ONLY.match(k)}
    assert set(report.missing_keys) == expected_missing
    assert {k.split(".")[3] for k in expected_missing if ".blocks." in k} == {"attn_t", "norm_t", "proj_t"}
    assert report.unexpected_keys == []
    assert sorted(report.ignored_keys) == ["head.bias", "head.weight"]
    assert set(report.loaded_keys) == {"backbone." + k for k in state if not k.startswith("head.")}
    assert set(report.initialised_from_spatial) == {
        k for k in expected_missing if ".attn_t." in k or ".norm_t." in k
    }

    got = model.state_dict()
    for key, value in state.items():
        if not key.startswith("head."):
            assert torch.equal(got["backbone." + key], value), key  # bit-equal
    for i in range(CFG.depth):
        for name in ("qkv.weight", "qkv.bias", "proj.weight", "proj.bias"):
            assert torch.equal(got[f"backbone.blocks.{i}.attn_t.{name}"], state[f"blocks.{i}.attn.{name}"])
        assert torch.equal(got[f"backbone.blocks.{i}.norm_t.weight"], state[f"blocks.{i}.norm1.weight"])
        assert not got[f"backbone.blocks.{i}.proj_t.weight"].any()
        assert not got[f"backbone.blocks.{i}.proj_t.bias"].any()


def test_each_frame_equals_the_image_vit_at_init():
    vit = image_vit()
    model = SeFAREncoder(CFG).eval()
    load_image_vit(model, vit.state_dict())
    video = torch.randn(2, 3, 8, 32, 32)
    frames = video.transpose(1, 2).reshape(16, 3, 32, 32)
    with torch.no_grad():
        tokens = model.backbone(video)  # [B, S, 1+N, D]
        ref = vit.forward_features(frames).reshape(2, 8, 17, 32)
        f = model.forward_features(video)
    torch.testing.assert_close(tokens, ref, rtol=0, atol=1e-6)
    # f_v = mean of the image ViT's per-frame CLS features over the frames of view v (views 2, 2, 4)
    cls = ref[:, :, 0]
    expected = torch.stack([cls[:, 0:2].mean(1), cls[:, 2:4].mean(1), cls[:, 4:8].mean(1)], 1)
    torch.testing.assert_close(f, expected, rtol=0, atol=1e-6)


def test_pos_embed_is_resampled_when_the_grid_differs():
    from timm.layers import resample_abs_pos_embed

    vit = image_vit(img_size=48)  # 6x6 grid -> the encoder's 4x4
    model = SeFAREncoder(CFG)
    report = load_image_vit(model, vit.state_dict())
    assert list(report.resized) == ["backbone.pos_embed"]
    expected = resample_abs_pos_embed(
        vit.pos_embed.detach(), new_size=[4, 4], old_size=[6, 6], num_prefix_tokens=1
    )
    torch.testing.assert_close(model.backbone.pos_embed.detach(), expected)


def test_strict_mode_refuses_mismatches():
    state = image_vit().state_dict()
    model = SeFAREncoder(CFG)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    extra = {**state, "fc_norm.weight": torch.ones(32)}
    with pytest.raises(ValueError, match="UNEXPECTED"):
        load_image_vit(model, extra)
    missing = {k: v for k, v in state.items() if k != "blocks.1.mlp.fc2.weight"}
    with pytest.raises(ValueError, match="MISSING"):
        load_image_vit(model, missing)
    for k, v in model.state_dict().items():  # nothing half-copied by the failed loads
        assert torch.equal(v, before[k]), k
    report = load_image_vit(model, extra, strict=False)  # non-strict only on request, and reported
    assert report.unexpected_keys == ["fc_norm.weight"]
    wrong = {**state, "blocks.0.mlp.fc1.weight": torch.zeros(3, 3)}
    with pytest.raises(ValueError, match="shape"):
        load_image_vit(model, wrong, strict=False)


def test_training_checkpoint_wrapper_and_unknown_hub_id(tmp_path):
    path = tmp_path / "ckpt.pth"
    torch.save({"model": image_vit().state_dict(), "epoch": 3}, path)
    assert load_image_vit(SeFAREncoder(CFG), path).unexpected_keys == []
    with pytest.raises(RuntimeError, match="local .pth"):
        load_image_vit(SeFAREncoder(CFG), "vit_does_not_exist_patch8")


def test_image_vit_kwargs_match_the_config():
    kw = image_vit_kwargs(CFG)
    assert (kw["embed_dim"], kw["depth"], kw["num_heads"], kw["patch_size"]) == (32, 2, 2, 8)
