"""The method harness (sefar_encoder/methods.py): switch table, views, temporal gradients, one SSL step
per method on random clips with a tiny encoder."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from sefar_encoder.ema import EMATeacher
from sefar_encoder.losses import LossConfig
from sefar_encoder.methods import (
    MethodConfig,
    ResolvedMethod,
    make_order_blind,
    method_views,
    resolve_method,
    ssl_step,
    supervised_step,
    temporal_gradient,
)
from sefar_encoder.model import ModelConfig, SeFAREncoder, TubeMix

# name: (dual_level, perturb, ada_reg, token_mix, ema_teacher, uses_unlabeled, second_stream, order_blind)
TABLE = {
    "supervised": (False, "none", False, False, False, False, False, False),
    "framepool": (False, "none", False, False, False, False, False, True),
    "fixmatch": (False, "none", False, False, False, True, False, False),
    "svformer": (False, "warp", False, True, True, True, False, False),
    "ltg": (False, "none", False, False, False, True, True, False),
    "sefar": (True, "mod_reverse", True, True, True, True, False, False),
}
FIELDS = ("dual_level", "perturb", "ada_reg", "token_mix", "ema_teacher", "uses_unlabeled", "second_stream")


@pytest.mark.parametrize("name", sorted(TABLE))
def test_resolve_method_defaults(name):
    r = resolve_method(MethodConfig(name=name))
    assert r.name == name
    assert tuple(getattr(r, f) for f in (*FIELDS, "order_blind")) == TABLE[name]


@pytest.mark.parametrize(
    ("overrides", "changed"),
    [
        ({"dual_level": False}, {"dual_level": False}),
        ({"mod_perturb": False}, {"perturb": "warp"}),
        ({"mod_perturb": True}, {}),
        ({"ada_reg": False}, {"ada_reg": False}),
        ({"token_mix": False}, {"token_mix": False}),
        ({"all_reverse": True}, {"perturb": "all_reverse"}),
        ({"all_reverse": True, "mod_perturb": False}, {"perturb": "all_reverse"}),  # all_reverse wins
        (
            {"dual_level": False, "mod_perturb": False, "ada_reg": False},
            {"dual_level": False, "perturb": "warp", "ada_reg": False},
        ),
    ],
)
def test_sefar_ablation_switches_change_only_their_switch(overrides, changed):
    base = resolve_method(MethodConfig(name="sefar"))
    r = resolve_method(MethodConfig(name="sefar", **overrides))
    assert r == dataclasses.replace(base, **changed)


def test_switches_apply_to_baselines_too():
    r = resolve_method(MethodConfig(name="svformer", mod_perturb=True, ada_reg=True, dual_level=True))
    assert (r.perturb, r.ada_reg, r.dual_level, r.ema_teacher) == ("mod_reverse", True, True, True)
    # a null switch keeps the method's default, an explicit False is not mistaken for "unset"
    assert resolve_method(MethodConfig(name="fixmatch", token_mix=None)).token_mix is False
    assert resolve_method(MethodConfig(name="sefar", token_mix=False)).token_mix is False


def test_unknown_method_is_rejected_by_the_config_system():
    from sefar_encoder.config import ConfigError, _merge

    with pytest.raises(ConfigError, match="must be one of"):
        _merge(MethodConfig(), {"name": "mean_teacher"}, "test")


def test_method_views():
    sefar = resolve_method(MethodConfig(name="sefar"))
    assert method_views(sefar) == (2, 2, 4)
    assert method_views(sefar, 16) == (4, 4, 8)
    assert method_views(resolve_method(MethodConfig(name="sefar", dual_level=False))) == (8,)
    assert method_views(resolve_method(MethodConfig(name="svformer")), 12) == (12,)
    with pytest.raises(ValueError, match="divisible by 4"):
        method_views(sefar, 6)


def test_temporal_gradient_values_and_shape():
    # frame t of the clip holds the value t^2 everywhere; views (1, 3, 4)
    s = 8
    values = torch.arange(s, dtype=torch.float32) ** 2
    video = values.view(1, 1, s, 1, 1).expand(2, 3, s, 4, 5).clone()
    tg = temporal_gradient(video, (1, 3, 4))
    assert tg.shape == video.shape
    per_frame = tg[0, 0, :, 0, 0].tolist()
    # view0: one frame -> zero; view1 frames 1..3: 4-1, 9-4, repeated; view2 frames 4..7: 25-16, 36-25, 49-36, rep.
    assert per_frame == [0.0, 3.0, 5.0, 5.0, 9.0, 11.0, 13.0, 13.0]
    assert torch.equal(tg, tg[:1, :1].expand_as(tg))  # same for every sample, channel and pixel


def test_temporal_gradient_never_crosses_views_and_handles_one_frame_views():
    video = torch.randn(2, 3, 4, 6, 6)
    assert torch.equal(temporal_gradient(video, (1, 1, 1, 1)), torch.zeros_like(video))
    joined = temporal_gradient(video, (4,))
    split = temporal_gradient(video, (2, 2))
    assert torch.equal(split[:, :, 0], video[:, :, 1] - video[:, :, 0])
    assert torch.equal(split[:, :, 2], video[:, :, 3] - video[:, :, 2])
    assert not torch.equal(joined[:, :, 1], split[:, :, 1])  # (2,2): frame 1 repeats view 0's difference


# ----------------------------------------------------------------------------- one step per method
NUM_CLASSES = 5


def tiny_encoder(views: tuple[int, ...], seed: int = 0) -> SeFAREncoder:
    torch.manual_seed(seed)
    cfg = ModelConfig(
        img_size=32, patch_size=16, embed_dim=32, depth=1, num_heads=2, views=views, num_classes=NUM_CLASSES
    )
    return SeFAREncoder(cfg)


def random_batches(b_l: int = 2, b_u: int = 4, s: int = 8) -> tuple[dict, dict]:
    g = torch.Generator().manual_seed(1)
    labeled = {"video": torch.randn(b_l, 3, s, 32, 32, generator=g), "label": torch.tensor([0, 3][:b_l])}
    unlabeled = {
        "weak": torch.randn(b_u, 3, s, 32, 32, generator=g),
        "strong": torch.randn(b_u, 3, s, 32, 32, generator=g).requires_grad_(True),
        "label": torch.arange(b_u) % NUM_CLASSES,
    }
    return labeled, unlabeled


def snapshot(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def grad_norm(module: torch.nn.Module, prefix: str) -> float:
    norms = [
        p.grad.norm() for n, p in module.named_parameters() if n.startswith(prefix) and p.grad is not None
    ]
    return float(torch.stack(norms).sum()) if norms else 0.0


SSL_CASES = {
    "fixmatch": MethodConfig(name="fixmatch"),
    "svformer": MethodConfig(name="svformer"),
    "ltg": MethodConfig(name="ltg"),
    "sefar": MethodConfig(name="sefar"),
    "sefar_ada_reg_off": MethodConfig(name="sefar", ada_reg=False),
    "sefar_full_passes": MethodConfig(name="sefar", regulation_impl="full_passes"),
}


@pytest.mark.parametrize("case", sorted(SSL_CASES))
def test_one_ssl_step(case):
    # threshold 0 so the thresholded methods also use every unlabeled clip (a random model is never
    # 95 % sure): then the strong views must receive gradient through L_un in every method
    cfg = dataclasses.replace(SSL_CASES[case], loss=LossConfig(threshold=0.0))
    method = resolve_method(cfg)
    views = method_views(method)
    student = tiny_encoder(views)
    student.train()
    second = tiny_encoder(views, seed=1) if method.second_stream else None
    teacher = EMATeacher(student, 0.9).module if method.ema_teacher else None
    before = snapshot(teacher) if teacher is not None else None
    labeled, unlabeled = random_batches()

    torch.manual_seed(2)
    result = ssl_step(
        method, cfg, student, teacher, labeled, unlabeled, 1.0, TubeMix(), student.grid_size, second
    )
    assert torch.isfinite(result.loss) and result.loss.ndim == 0
    assert result.pseudo_labels.shape == (4,)
    assert result.logs["l_un"] > 0 and result.logs["mean_weight"] > 0
    if method.token_mix:
        assert result.logs["l_mix"] > 0
    result.loss.backward()

    assert grad_norm(student, "backbone.patch_embed") > 0 and grad_norm(student, "fusion_head") > 0
    assert unlabeled["strong"].grad is not None and unlabeled["strong"].grad.abs().sum() > 0
    if second is not None:
        assert grad_norm(second, "backbone.patch_embed") > 0
    if teacher is not None:
        assert all(p.grad is None for p in teacher.parameters())
        after = snapshot(teacher)
        assert all(torch.equal(before[k], after[k]) for k in before)
        assert not teacher.training  # the step must not switch the teacher to train mode


def test_ssl_step_with_zero_ramp_is_the_supervised_loss():
    cfg = MethodConfig(name="sefar")
    method = resolve_method(cfg)
    student = tiny_encoder(method_views(method)).eval()  # eval: no head dropout, comparable losses
    teacher = EMATeacher(student, 0.9).module
    labeled, unlabeled = random_batches()
    result = ssl_step(method, cfg, student, teacher, labeled, unlabeled, 0.0, TubeMix(), student.grid_size)
    expected = supervised_step(student, labeled).loss
    torch.testing.assert_close(result.loss, expected, rtol=1e-5, atol=1e-6)


def test_ada_reg_weights_are_soft_and_threshold_weights_hard():
    labeled, unlabeled = random_batches()
    weights = {}
    for ada in (True, False):
        cfg = MethodConfig(name="sefar", ada_reg=ada)
        method = resolve_method(cfg)
        student = tiny_encoder(method_views(method))
        teacher = EMATeacher(student, 0.9).module
        torch.manual_seed(0)
        res = ssl_step(method, cfg, student, teacher, labeled, unlabeled, 1.0, TubeMix(), student.grid_size)
        weights[ada] = res.logs["mean_weight"]
    assert 0 < weights[True] < 1  # Adaptive Regulation: a random teacher gets small but positive weights
    assert weights[False] == 0.0  # fixed threshold 0.95: a random teacher is never that sure


def test_supervised_step_and_order_blind_framepool():
    method = resolve_method(MethodConfig(name="framepool"))
    model = tiny_encoder(method_views(method))
    frozen = make_order_blind(model)
    assert frozen and all(not p.requires_grad for n, p in model.named_parameters() if n in frozen)
    labeled, _ = random_batches()
    res = supervised_step(model, labeled)
    res.loss.backward()
    assert torch.isfinite(res.loss) and grad_norm(model, "backbone.patch_embed") > 0
    model.eval()
    with torch.no_grad():
        shuffled = labeled["video"][:, :, torch.randperm(8, generator=torch.Generator().manual_seed(0))]
        torch.testing.assert_close(model(shuffled).logits, model(labeled["video"]).logits)


def test_resolved_method_is_frozen():
    r = resolve_method(MethodConfig())
    assert isinstance(r, ResolvedMethod)
    with pytest.raises(dataclasses.FrozenInstanceError):
        r.ada_reg = False  # type: ignore[misc]


def test_bench_teacher_runs_and_reports_its_ratios(capsys):
    from synthgym_fixtures import load_script

    bench = load_script("bench_teacher")
    out = bench.main(
        ["--b-l", "1", "--b-u", "2", "--k", "3", "--warmup", "0", "--repeats", "1", "--classes", "4"]
    )
    for key in ("teacher_k10_vs_k1", "official_k10_full_vs_k1"):
        arm = out[key]
        assert arm["unit"] == "s/step" and arm["ratio"] == pytest.approx(arm["a"] / arm["b"], rel=1e-2)
    assert set(out["teacher_only"]["median"]) == {"k10", "k1", "k10_full"} and "machine" in out
    assert '"teacher_k10_vs_k1"' in capsys.readouterr().out
