"""TimeSformer + SeFAR encoder: shapes, view isolation of temporal attention, export round trip."""

import json
from pathlib import Path

import pytest
import torch

from sefar_encoder.model import PRESETS, ModelConfig, SeFAREncoder, TimeSformer, build_encoder, model_config
from sefar_encoder.model.encoder import EncoderPreprocessing
from sefar_encoder.runtime.config import ConfigError


def tiny(**kw) -> ModelConfig:
    base = {"img_size": 32, "patch_size": 8, "embed_dim": 32, "depth": 2, "num_heads": 2, "num_classes": 5}
    return ModelConfig(**{**base, **kw})


def randomise_temporal(model: torch.nn.Module) -> None:
    """proj_t and time embeddings start at zero (frames independent); make temporal mixing visible."""
    torch.manual_seed(1)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "proj_t" in name or "time_embeds" in name:
                p.normal_(0, 0.2)


@pytest.mark.parametrize(
    ("views", "layout", "n_tokens"),
    [
        ((2, 2, 4), "view_cls", 4),
        ((8,), "view_cls", 2),
        ((4, 4), "frame_mean", 8),
        ((2, 4, 2), "frame_mean", 8),
    ],
)
def test_forward_shapes(views, layout, n_tokens):
    model = SeFAREncoder(tiny(views=views, token_layout=layout)).eval()
    video = torch.randn(3, 3, sum(views), 32, 32)
    out = model(video)
    assert out.logits.shape == (3, 5)
    assert out.h.shape == (3, 32)
    assert out.view_features.shape == (3, len(views), 32)
    assert out.tokens.shape == (3, n_tokens, 32)
    f, patches = model.forward_features(video, return_patch_tokens=True)
    assert patches.shape == (3, sum(views), 16, 32)
    torch.testing.assert_close(model.forward_head(f), out.logits)
    assert model.forward_head(f, pre_logits=True).shape == (3, 32)


def test_wrong_frame_count_is_rejected():
    model = SeFAREncoder(tiny())
    with pytest.raises(ValueError, match="frames"):
        model(torch.randn(1, 3, 6, 32, 32))


def test_temporal_projection_is_zero_at_init_so_frames_are_independent():
    model = SeFAREncoder(tiny()).eval()
    for block in model.backbone.blocks:
        assert not block.proj_t.weight.any() and not block.proj_t.bias.any()
    video = torch.randn(2, 3, 8, 32, 32)
    perturbed = video.clone()
    perturbed[:, :, 4] += 1.0
    with torch.no_grad():
        tok, tok_p = model.backbone(video), model.backbone(perturbed)
    torch.testing.assert_close(tok[:, 5:], tok_p[:, 5:], rtol=0, atol=0)
    assert not torch.allclose(tok[:, 4], tok_p[:, 4])


@pytest.mark.parametrize("views", [(2, 2, 4), (2, 4, 2)])
def test_temporal_attention_stays_within_a_view(views):
    model = SeFAREncoder(tiny(views=views)).eval()
    randomise_temporal(model)
    starts = [sum(views[:i]) for i in range(len(views))]
    video = torch.randn(2, 3, sum(views), 32, 32)
    target = len(views) - 1 if views[-1] == 4 else 1  # perturb the 4-frame view
    first = starts[target]
    perturbed = video.clone()
    perturbed[:, :, first] += torch.randn_like(perturbed[:, :, first])
    with torch.no_grad():
        tok, tok_p = model.backbone(video), model.backbone(perturbed)
        f, f_p = model.forward_features(video), model.forward_features(perturbed)
    for v, (s, t) in enumerate(zip(starts, views)):
        if v == target:
            # the other frames of the perturbed view DO change: temporal attention is active
            assert not torch.allclose(tok[:, s + 1 : s + t], tok_p[:, s + 1 : s + t])
            assert not torch.allclose(f[:, v], f_p[:, v])
        else:
            torch.testing.assert_close(tok[:, s : s + t], tok_p[:, s : s + t], rtol=0, atol=1e-6)
            torch.testing.assert_close(f[:, v], f_p[:, v], rtol=0, atol=1e-6)


@pytest.mark.parametrize("views", [(2, 2, 4), (2, 4, 2), (3, 1)])
def test_fused_call_equals_one_call_per_view(views):
    """One backbone call over all views == the same weights run on each view separately."""
    fused = TimeSformer(img_size=32, patch_size=8, embed_dim=32, depth=2, num_heads=2, views=views).eval()
    randomise_temporal(fused)
    video = torch.randn(2, 3, sum(views), 32, 32)
    with torch.no_grad():
        f = fused.pool_views(fused(video))
        start = 0
        for v, t in enumerate(views):
            single = TimeSformer(img_size=32, patch_size=8, embed_dim=32, depth=2, num_heads=2, views=(t,))
            state = {k: p for k, p in fused.state_dict().items() if not k.startswith("time_embeds.")}
            state["time_embeds.0"] = fused.time_embeds[v]
            single.load_state_dict(state)
            f_v = single.eval().pool_views(single(video[:, :, start : start + t]))[:, 0]
            torch.testing.assert_close(f[:, v], f_v, rtol=0, atol=1e-5)
            start += t


def test_no_weight_decay_names_embeddings_norms_biases():
    model = SeFAREncoder(tiny())
    names = model.no_weight_decay()
    params = dict(model.named_parameters())
    assert {"backbone.cls_token", "backbone.pos_embed", "backbone.time_embeds.2"} <= names
    assert "backbone.blocks.0.norm_t.weight" in names and "fusion_head.classifier.bias" in names
    assert names <= set(params)
    decayed = set(params) - names
    assert "backbone.blocks.0.attn.qkv.weight" in decayed and "fusion_head.classifier.weight" in decayed
    assert all(params[n].ndim >= 2 for n in decayed)


def test_save_and_load_round_trip(tmp_path):
    torch.manual_seed(0)
    names = [f"element {i}" for i in range(5)]
    hierarchy = {"events": {"beam": ["element 0", "element 1"]}}
    model = SeFAREncoder(tiny(views=(2, 4)), class_names=names, hierarchy=hierarchy).eval()
    randomise_temporal(model)
    video = torch.randn(2, 3, 6, 32, 32)
    out_dir = tmp_path / "ckpt"
    model.save_pretrained(out_dir)
    model.save_pretrained(out_dir)  # overwriting an existing checkpoint is atomic too
    assert sorted(p.name for p in out_dir.iterdir()) == [
        "class_names.json",
        "config.json",
        "hierarchy.json",
        "model.safetensors",
        "preprocessing.json",
    ]
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt"]  # no temp directories left behind
    assert json.loads((out_dir / "config.json").read_text())["views"] == [2, 4]
    loaded = SeFAREncoder.from_pretrained(out_dir).eval()
    assert loaded.config == model.config
    assert loaded.class_names == names and loaded.hierarchy == hierarchy
    with torch.no_grad():
        torch.testing.assert_close(loaded(video).logits, model(video).logits, rtol=0, atol=0)


@pytest.mark.parametrize("device", [torch.device("cpu:0"), "cpu:0", "cpu", torch.device("cpu")])
def test_from_pretrained_accepts_any_cpu_device_name(tmp_path: Path, device):
    cfg = ModelConfig(img_size=32, patch_size=16, embed_dim=16, depth=1, num_heads=2, num_classes=3)
    torch.manual_seed(0)
    saved = SeFAREncoder(cfg).eval()
    saved.save_pretrained(tmp_path / "enc")
    loaded = SeFAREncoder.from_pretrained(tmp_path / "enc", map_location=device).eval()
    assert next(loaded.parameters()).device.type == "cpu"
    assert all(torch.equal(a, b) for a, b in zip(saved.state_dict().values(), loaded.state_dict().values()))


def test_view_cls_layout_needs_matching_fusion_width():
    with pytest.raises(ValueError, match="fusion_dim"):
        tiny(fusion_dim=16)
    assert SeFAREncoder(tiny(fusion_dim=16, token_layout="frame_mean"))(
        torch.randn(1, 3, 8, 32, 32)
    ).h.shape == (
        1,
        16,
    )


def test_presets():
    assert set(PRESETS) >= {
        "timesformer_base_p16_224",
        "timesformer_small_p16_224",
        "timesformer_tiny_p16_64",
    }
    base = model_config("timesformer_base_p16_224")
    assert (base.embed_dim, base.depth, base.num_heads, base.img_size) == (768, 12, 12, 224)
    small = model_config("timesformer_small_p16_224")
    assert (small.embed_dim, small.depth, small.num_heads) == (384, 12, 6)
    encoder = build_encoder("timesformer_tiny_p16_64", num_classes=3).eval()
    assert encoder(torch.randn(1, 3, 8, 64, 64)).logits.shape == (1, 3)
    with pytest.raises(KeyError):
        model_config("vit_huge")
    with pytest.raises(TypeError):
        model_config("timesformer_tiny_p16_64", width=3)


def test_export_records_its_preprocessing_and_provenance(tmp_path):
    cfg = tiny(views=(2, 4))
    pre = EncoderPreprocessing.for_config(
        cfg,
        mean=(0.5, 0.4, 0.3),
        std=(0.2, 0.2, 0.2),
        data_root="data/x",
        label_rate=5,
        init_checkpoint="b.pt",
        normalisation="the timm pretrained_cfg in config.json",
    )
    SeFAREncoder(cfg, preprocessing=pre).save_pretrained(tmp_path / "enc")
    written = json.loads((tmp_path / "enc" / "preprocessing.json").read_text())
    assert written == {
        "image_size": 32,
        "views": [2, 4],
        "mean": [0.5, 0.4, 0.3],
        "std": [0.2, 0.2, 0.2],
        "data_root": "data/x",
        "label_rate": 5,
        "init_checkpoint": "b.pt",
        "normalisation": "the timm pretrained_cfg in config.json",
    }
    loaded = SeFAREncoder.from_pretrained(tmp_path / "enc")
    assert loaded.preprocessing == pre == EncoderPreprocessing.read(tmp_path / "enc")  # read without weights
    loaded.save_pretrained(tmp_path / "again")  # a loaded encoder keeps describing itself
    assert json.loads((tmp_path / "again" / "preprocessing.json").read_text()) == written

    with pytest.raises(ValueError, match="the model takes 32 px"):
        SeFAREncoder(cfg, preprocessing=EncoderPreprocessing(image_size=64, views=(2, 4)))
    written["views"] = [2, 2, 2]
    (tmp_path / "enc" / "preprocessing.json").write_text(json.dumps(written))
    with pytest.raises(ConfigError, match="differ from config.json"):
        SeFAREncoder.from_pretrained(tmp_path / "enc")


def test_an_export_without_preprocessing_json_loads_with_imagenet_normalisation(tmp_path):
    SeFAREncoder(tiny()).save_pretrained(tmp_path / "enc")
    (tmp_path / "enc" / "preprocessing.json").unlink()  # as written before the file existed
    pre = SeFAREncoder.from_pretrained(tmp_path / "enc").preprocessing
    assert (pre.image_size, pre.views) == (32, (2, 2, 4))
    assert pre.mean == (0.485, 0.456, 0.406) and pre.std == (0.229, 0.224, 0.225)
    assert (pre.data_root, pre.label_rate, pre.init_checkpoint) == (None, None, None)
