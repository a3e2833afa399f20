"""The method harness (sefar_encoder/methods.py): switch table, views, temporal gradients, one SSL step
per method on random clips with a tiny encoder."""

from __future__ import annotations

import dataclasses

import pytest
import torch
import torch.nn.functional as F
from conftest import load_script

from sefar_encoder import methods
from sefar_encoder.ema import EMATeacher
from sefar_encoder.losses import FreeMatchConfig, LossConfig, SelfAdaptiveThreshold, mix_loss, threshold_mask
from sefar_encoder.methods import (
    MethodConfig,
    ResolvedMethod,
    eval_mode_probs,
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
    "freematch": (False, "none", False, False, False, True, False, False),
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
    assert r.self_adaptive == (name == "freematch")


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
    from sefar_encoder.runtime.config import ConfigError, _merge

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
    "freematch": MethodConfig(name="freematch"),
    "freematch_no_fairness": MethodConfig(name="freematch", freematch=FreeMatchConfig(fairness=False)),
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
    # freematch: the clip with the largest max prob always passes τ(c) ≤ τ ≤ that max after one update
    thresholds = SelfAdaptiveThreshold(NUM_CLASSES) if method.self_adaptive else None
    labeled, unlabeled = random_batches()

    torch.manual_seed(2)
    result = ssl_step(
        method,
        cfg,
        student,
        teacher,
        labeled,
        unlabeled,
        1.0,
        TubeMix(),
        student.grid_size,
        second,
        thresholds,
    )
    assert torch.isfinite(result.loss) and result.loss.ndim == 0
    assert result.pseudo_labels.shape == (4,)
    assert result.logs["l_un"] > 0 and result.logs["mean_weight"] > 0
    counts = result.unlabeled_counts.tolist()
    assert counts[0] == 4 and 1 <= counts[1] <= 4 and 0 <= counts[2] <= 4
    assert counts[2] == int((result.pseudo_labels == unlabeled["label"]).sum())
    if thresholds is not None:
        assert float(thresholds.tau) != pytest.approx(1 / NUM_CLASSES) and "tau" in result.logs
        assert ("l_fair" in result.logs) == cfg.freematch.fairness
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
    bench = load_script("bench_teacher")
    out = bench.main(
        ["--b-l", "1", "--b-u", "2", "--k", "3", "--warmup", "0", "--repeats", "1", "--classes", "4"]
    )
    for key in ("teacher_k10_vs_k1", "official_k10_full_vs_k1"):
        arm = out[key]
        assert arm["unit"] == "s/step" and arm["ratio"] == pytest.approx(arm["a"] / arm["b"], rel=1e-2)
    assert set(out["teacher_only"]["median"]) == {"k10", "k1", "k10_full"} and "machine" in out
    assert '"teacher_k10_vs_k1"' in capsys.readouterr().out


# ----------------------------------------------------------------------------- pseudo-labels in eval mode
def test_eval_mode_probs_equal_the_eval_forward_and_restore_every_mode():
    student = tiny_encoder((8,))  # head dropout 0.5
    assert student.config.head_dropout == 0.5
    student.train()
    student.backbone.blocks[0].eval()  # a submodule in another mode keeps it
    _, unlabeled = random_batches()
    modes = {n: m.training for n, m in student.named_modules()}
    probs = eval_mode_probs(student, unlabeled["weak"])
    assert {n: m.training for n, m in student.named_modules()} == modes
    assert not probs.requires_grad
    student.eval()
    with torch.no_grad():
        assert torch.equal(probs, student(unlabeled["weak"]).logits.softmax(-1))


@pytest.mark.parametrize("name", ["fixmatch", "ltg", "freematch"])
def test_student_pseudo_labels_come_from_the_eval_mode_forward(name, monkeypatch):
    cfg = MethodConfig(name=name)
    method = resolve_method(cfg)
    student = tiny_encoder((8,)).train()
    second = tiny_encoder((8,), seed=1).train() if method.second_stream else None
    thresholds = SelfAdaptiveThreshold(NUM_CLASSES) if method.self_adaptive else None
    labeled, unlabeled = random_batches()
    seen = []
    if thresholds is not None:
        real_update = thresholds.update
        monkeypatch.setattr(thresholds, "update", lambda q: seen.append(q) or real_update(q))
    else:
        monkeypatch.setattr(methods, "threshold_mask", lambda q, t: seen.append(q) or threshold_mask(q, t))

    ssl_step(
        method, cfg, student, None, labeled, unlabeled, 1.0, TubeMix(), student.grid_size, second, thresholds
    )
    models = [student] if second is None else [student, second]
    assert all(m.training for model in models for m in model.modules())  # train mode is back
    for model in models:
        model.eval()
    with torch.no_grad():
        expected = student(unlabeled["weak"]).logits.softmax(-1)
        if second is not None:
            tg = temporal_gradient(unlabeled["weak"], (8,))
            expected = 0.5 * (expected + second(tg).logits.softmax(-1))
    assert len(seen) == 1 and torch.equal(seen[0], expected)


def test_the_eval_mode_pass_leaves_the_training_forward_alone():
    # the same loss and gradients as the training forward alone: the eval pass draws no random numbers
    # (so the dropout masks are the same) and adds nothing to the autograd graph
    cfg = dataclasses.replace(MethodConfig(name="fixmatch"), loss=LossConfig(threshold=0.0))
    method = resolve_method(cfg)
    student = tiny_encoder((8,)).train()
    labeled, unlabeled = random_batches()
    torch.manual_seed(5)
    result = ssl_step(method, cfg, student, None, labeled, unlabeled, 1.0, TubeMix(), student.grid_size)
    result.loss.backward()
    grads = {n: p.grad.clone() for n, p in student.named_parameters() if p.grad is not None}
    student.zero_grad(set_to_none=True)

    pseudo = eval_mode_probs(student, unlabeled["weak"]).argmax(-1)
    torch.manual_seed(5)
    logits = student(torch.cat([labeled["video"], unlabeled["strong"]])).logits
    l_sup = F.cross_entropy(logits[:2], labeled["label"])
    loss = l_sup + cfg.loss.gamma_un * F.cross_entropy(logits[2:], pseudo)  # every weight 1 at threshold 0
    loss.backward()
    assert torch.equal(result.pseudo_labels, pseudo)
    torch.testing.assert_close(result.loss, loss, rtol=0, atol=0)
    assert grads.keys() == {n for n, p in student.named_parameters() if p.grad is not None}
    for n, p in student.named_parameters():
        if p.grad is not None:
            torch.testing.assert_close(grads[n], p.grad, rtol=0, atol=0, msg=n)


# ----------------------------------------------------------------------------- L_mix switch
@pytest.mark.parametrize("name", ["svformer", "sefar"])
def test_mix_on_logits_reaches_l_mix(name, monkeypatch):
    calls = []

    def spy(*args, **kwargs):
        calls.append(kwargs["on_logits"])
        return mix_loss(*args, **kwargs)

    monkeypatch.setattr(methods, "mix_loss", spy)
    l_mix = {}
    for on_logits in (False, True):
        cfg = dataclasses.replace(
            MethodConfig(name=name), loss=LossConfig(threshold=0.0, mix_on_logits=on_logits)
        )
        method = resolve_method(cfg)
        student = tiny_encoder(method_views(method))
        teacher = EMATeacher(student, 0.9).module
        labeled, unlabeled = random_batches()
        torch.manual_seed(0)
        res = ssl_step(method, cfg, student, teacher, labeled, unlabeled, 1.0, TubeMix(), student.grid_size)
        l_mix[on_logits] = res.logs["l_mix"]
    assert calls == [False, True]
    assert l_mix[False] > 0 and l_mix[True] > 0 and l_mix[False] != l_mix[True]
