"""The training objective of every method in one harness (docs/DESIGN.md §Methods and switches).

    labeled [B_l, C, S, H, W], y ──► student ──► L_sup
    unlabeled weak  [B_u, C, S, H, W] ──► teacher (EMA; K head-dropout samples) ──► ŷ, q̄, w
    unlabeled strong[B_u, C, S, H, W] ──► student ──► L_un  (w · CE against ŷ)
                                     └─ TubeTokenMix ──► student ──► L_mix (w̃ · (softmax − ỹ)²)
    L = L_sup + ξ(e) (γ1 L_un + γ2 L_mix)

Methods, and what each switch turns into (``resolve_method``):

| method     | views   | strong-view time perturbation | pseudo-label weights      | teacher        | mix |
|------------|---------|-------------------------------|---------------------------|----------------|-----|
| supervised | (8,)    | –                             | –                         | –              | –   |
| framepool  | (8,)    | – (supervised, order-blind)   | –                         | –              | –   |
| fixmatch   | (8,)    | none (spatial + channel drop) | threshold 0.95            | the student    | no  |
| freematch  | (8,)    | none (spatial + channel drop) | self-adaptive thresholds  | the student    | no  |
| svformer   | (8,)    | temporal warping              | threshold 0.95            | EMA            | yes |
| ltg        | (8,)    | none                          | threshold, two streams    | the students   | no  |
| sefar      | (2,2,4) | reverse the fine views        | Adaptive Regulation       | EMA, K samples | yes |

Where a student labels the weak views (fixmatch, freematch, ltg) it does so in eval mode: in train mode
the head dropout (0.5) and drop path flatten its softmax, and few clips would reach a threshold.
``freematch`` (Wang et al., ICLR 2023) is FixMatch with FreeMatch's self-adaptive thresholds — a global
one, the running mean of the weak views' max confidence, scaled per class by the running mean class
probability (:class:`~sefar_encoder.losses.SelfAdaptiveThreshold`; its state is the training run's, saved
in every checkpoint) — and the self-adaptive fairness loss (``method.freematch.fairness``).

``framepool`` is the order-blind control: supervised, with the temporal attention output projections and
the time embeddings frozen at zero, so every frame is encoded alone and the view feature is the mean of
the frame features — a bag of frames that cannot tell a forward salto from a backward one.

SeFAR's ablation switches: ``dual_level`` off = one 8-frame view; ``mod_perturb`` off = temporal
warping as SVFormer; ``ada_reg`` off = fixed threshold; ``all_reverse`` = reverse every view (for the
forward/backward comparison). The ``ltg`` baseline co-trains a second encoder on temporal gradients
(frame differences), averages the two streams' pseudo-labels and aligns their fused features.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Literal

import torch
import torch.nn.functional as F

from .losses import (
    FreeMatchConfig,
    LossConfig,
    SelfAdaptiveThreshold,
    fairness_loss,
    mix_loss,
    supervised_loss,
    threshold_mask,
    total_loss,
    unlabeled_loss,
)
from .model.encoder import SeFAREncoder
from .model.token_mix import TubeMix
from .regulation import RegulationConfig, k_sample_stats, teacher_k_full_passes, teacher_k_samples

ORDER_BLIND_MARKERS = (".proj_t.", "time_embeds.")
MethodName = Literal["supervised", "framepool", "fixmatch", "freematch", "svformer", "ltg", "sefar"]
Perturb = Literal["mod_reverse", "all_reverse", "warp", "none"]


@dataclass
class MethodConfig:
    """Which semi-supervised method trains the encoder, with SeFAR's ablation switches."""

    name: MethodName = field(
        default="sefar", metadata={"help": "supervised|framepool|fixmatch|freematch|svformer|ltg|sefar"}
    )
    dual_level: bool | None = field(
        default=None, metadata={"help": "views (2,2,4) instead of one 8-frame view; null = method default"}
    )
    mod_perturb: bool | None = field(
        default=None, metadata={"help": "reverse the fine views (else temporal warping); null = default"}
    )
    ada_reg: bool | None = field(
        default=None,
        metadata={"help": "Adaptive Regulation weights (else a fixed threshold); null = default"},
    )
    all_reverse: bool = field(default=False, metadata={"help": "reverse every view of the strong clip"})
    token_mix: bool | None = field(default=None, metadata={"help": "TubeTokenMix loss; null = default"})
    warm_epochs: int = field(default=5, metadata={"help": "supervised epochs before the SSL losses start"})
    ema_horizon: float = field(
        default=0.2, metadata={"help": "EMA horizon 1/(1-d) as a fraction of the SSL optimizer steps"}
    )
    mix_alpha: float = field(default=10.0, metadata={"help": "TubeTokenMix λ ~ Beta(alpha, alpha)"})
    ltg_align_weight: float = field(default=1.0, metadata={"help": "ltg: weight of the feature alignment"})
    regulation_impl: Literal["one_pass", "full_passes"] = field(
        default="one_pass",
        metadata={
            "help": "Ada-Reg teacher: one pass + K head-dropout samples, or K full passes (official; for "
            "scripts/bench_teacher.py)"
        },
    )
    regulation: RegulationConfig = field(default_factory=RegulationConfig)
    freematch: FreeMatchConfig = field(default_factory=FreeMatchConfig)
    loss: LossConfig = field(default_factory=LossConfig)


@dataclass(frozen=True)
class ResolvedMethod:
    """The concrete switches a :class:`MethodConfig` stands for."""

    name: str
    dual_level: bool
    perturb: Perturb
    ada_reg: bool
    token_mix: bool
    ema_teacher: bool
    uses_unlabeled: bool
    second_stream: bool
    order_blind: bool = False  # framepool: temporal attention and time embeddings frozen at zero
    self_adaptive: bool = False  # freematch: self-adaptive thresholds instead of a fixed one


def _default(name: str, dual: bool, perturb: Perturb, ada: bool, mix: bool, ema: bool, unl: bool):
    return ResolvedMethod(
        name,
        dual,
        perturb,
        ada,
        mix,
        ema,
        unl,
        second_stream=name == "ltg",
        order_blind=name == "framepool",
        self_adaptive=name == "freematch",
    )


_DEFAULTS = {
    #                     dual_level  perturb        ada_reg token_mix ema   unlabeled
    "supervised": _default("supervised", False, "none", False, False, False, False),
    "framepool": _default("framepool", False, "none", False, False, False, False),
    "fixmatch": _default("fixmatch", False, "none", False, False, False, True),
    "freematch": _default("freematch", False, "none", False, False, False, True),
    "svformer": _default("svformer", False, "warp", False, True, True, True),
    "ltg": _default("ltg", False, "none", False, False, False, True),
    "sefar": _default("sefar", True, "mod_reverse", True, True, True, True),
}


def resolve_method(cfg: MethodConfig) -> ResolvedMethod:
    """The method's default switches with the config's explicit ones (non-null) applied."""
    base = _DEFAULTS[cfg.name]
    perturb = base.perturb
    if cfg.mod_perturb is not None:
        perturb = "mod_reverse" if cfg.mod_perturb else "warp"
    if cfg.all_reverse:
        perturb = "all_reverse"
    return dataclasses.replace(
        base,
        dual_level=base.dual_level if cfg.dual_level is None else cfg.dual_level,
        perturb=perturb,
        ada_reg=base.ada_reg if cfg.ada_reg is None else cfg.ada_reg,
        token_mix=base.token_mix if cfg.token_mix is None else cfg.token_mix,
    )


def make_order_blind(model: torch.nn.Module) -> list[str]:
    """Zero and freeze every parameter that lets frames see each other or their position in time."""
    frozen = []
    for name, p in model.named_parameters():
        if any(m in "." + name for m in ORDER_BLIND_MARKERS):
            with torch.no_grad():
                p.zero_()
            p.requires_grad_(False)
            frozen.append(name)
    if not frozen:
        raise ValueError("model has no temporal parameters to freeze (expected proj_t / time_embeds)")
    return frozen


def method_views(method: ResolvedMethod, num_frames: int = 8) -> tuple[int, ...]:
    """(2, 2, 4) for dual-level temporal elements, else a single view of ``num_frames`` frames."""
    if not method.dual_level:
        return (num_frames,)
    if num_frames % 4:
        raise ValueError(f"dual-level views need a frame count divisible by 4, got {num_frames}")
    return (num_frames // 4, num_frames // 4, num_frames // 2)


def temporal_gradient(video: torch.Tensor, views: tuple[int, ...]) -> torch.Tensor:
    """Frame differences inside each view: ``[B, C, S, H, W]`` -> same shape (LTG's second input).

    Difference t is frame t+1 − frame t; the last one is repeated so every view keeps its length. A
    1-frame view has no motion and becomes zeros. Cached frame tokens ``[B, S, M, D]``
    (``sefar_encoder.frame_tokens``) are differenced the same way along their time axis: the second
    stream then sees the temporal gradient of the frozen stem's features instead of the pixels'.
    """
    dim = 2 if video.ndim == 5 else 1
    parts = []
    for chunk in video.split(list(views), dim=dim):
        if chunk.shape[dim] == 1:
            parts.append(torch.zeros_like(chunk))
            continue
        diff = chunk.narrow(dim, 1, chunk.shape[dim] - 1) - chunk.narrow(dim, 0, chunk.shape[dim] - 1)
        parts.append(torch.cat([diff, diff.narrow(dim, diff.shape[dim] - 1, 1)], dim=dim))
    return torch.cat(parts, dim=dim)


@dataclass
class StepResult:
    loss: torch.Tensor
    logs: dict[str, float]
    pseudo_labels: torch.Tensor | None = None  # [B_u], for the pseudo-label collapse monitor
    # [3] int64 counts over the step's unlabeled clips: all, with a non-zero weight, with a correct
    # pseudo-label (analysis only); summed over an epoch they give exact clip-weighted shares
    unlabeled_counts: torch.Tensor | None = None


def unlabeled_counts(pseudo: torch.Tensor, weights: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """``[3]`` int64: unlabeled clips, clips whose pseudo-label has a non-zero weight (passed the threshold),
    clips whose pseudo-label equals the true label (SynthGym's unlabeled lists carry it)."""
    labels = labels.to(pseudo.device)
    return torch.stack(
        [
            torch.tensor(pseudo.numel(), device=pseudo.device),
            (weights.detach() > 0).sum(),
            (pseudo == labels).sum(),
        ]
    ).to(torch.int64)


@torch.no_grad()
def eval_mode_probs(model: torch.nn.Module, video: torch.Tensor) -> torch.Tensor:
    """Softmaxes ``[B, K]`` of ``model`` in eval mode (no head dropout, no drop path), for pseudo-labels.

    Every submodule's train/eval mode is restored afterwards; under ``no_grad`` nothing of this pass joins
    the autograd graph of the training forward that follows.
    """
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        return model(video).logits.softmax(dim=-1)
    finally:
        for m, mode in modes:
            m.training = mode


def _pseudo_stats(
    method: ResolvedMethod, cfg: MethodConfig, teacher: SeFAREncoder, weak: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(ŷ [B], q̄ [B, K_cls], w [B]) from the teacher on the weak views."""
    if method.ada_reg:
        # one backbone pass, K dropout masks on h: the same distribution as K full passes
        # (docs/DESIGN.md §One teacher pass for K samples);
        # "full_passes" runs the official K whole teacher passes (reproduction, scripts/bench_teacher.py)
        sample = teacher_k_samples if cfg.regulation_impl == "one_pass" else teacher_k_full_passes
        stats = k_sample_stats(sample(teacher, weak, cfg.regulation.num_samples), cfg.regulation)
        return stats.pseudo_label, stats.q_mean, stats.weight
    with torch.no_grad():
        q = teacher(weak).logits.softmax(dim=-1)
    pseudo, mask = threshold_mask(q, cfg.loss.threshold)
    return pseudo, q, mask


def supervised_step(student: torch.nn.Module, labeled: dict) -> StepResult:
    loss = supervised_loss(student(labeled["video"]).logits, labeled["label"])
    return StepResult(loss=loss, logs={"l_sup": float(loss.detach())})


def ssl_step(
    method: ResolvedMethod,
    cfg: MethodConfig,
    student: torch.nn.Module,
    teacher: SeFAREncoder | None,
    labeled: dict,
    unlabeled: dict,
    ramp: float,
    tube_mix: TubeMix,
    grid: tuple[int, int],
    second: torch.nn.Module | None = None,
    thresholds: SelfAdaptiveThreshold | None = None,
) -> StepResult:
    """One semi-supervised objective evaluation (no backward, no optimizer step).

    ``thresholds`` (freematch) is updated with this step's weak views before it masks them.
    """
    x_l, y_l = labeled["video"], labeled["label"]
    weak, strong = unlabeled["weak"], unlabeled["strong"]
    n_l = x_l.shape[0]

    if method.second_stream:
        return _ltg_step(method, cfg, student, second, x_l, y_l, unlabeled, ramp)

    if method.ema_teacher:
        assert teacher is not None, "EMA methods need a teacher after the warm-up"
        pseudo, q_mean, weights = _pseudo_stats(method, cfg, teacher, weak)
    else:  # fixmatch, freematch: the student itself labels the weak views
        q_mean = eval_mode_probs(student, weak)
        if method.self_adaptive:
            assert thresholds is not None, "freematch needs its self-adaptive thresholds"
            thresholds.update(q_mean)
            pseudo, weights = thresholds.mask(q_mean)
        else:
            pseudo, weights = threshold_mask(q_mean, cfg.loss.threshold)

    # labeled and strong clips share one backbone call
    logits = student(torch.cat([x_l, strong])).logits
    l_sup = supervised_loss(logits[:n_l], y_l)
    l_un = unlabeled_loss(logits[n_l:], pseudo, weights)
    l_mix = torch.zeros((), device=logits.device)
    if method.token_mix:
        mix = tube_mix.sample(strong.shape[0], grid)  # one permutation for every view and the targets
        z_mix = student(strong, mix=mix).logits
        l_mix = mix_loss(z_mix, q_mean, weights, mix, on_logits=cfg.loss.mix_on_logits)
    loss = total_loss(l_sup, l_un, l_mix, ramp, cfg.loss)
    logs = {
        "l_sup": float(l_sup.detach()),
        "l_un": float(l_un.detach()),
        "l_mix": float(l_mix.detach()),
        "mean_weight": float(weights.mean()),
    }
    if method.self_adaptive:
        logs["tau"] = float(thresholds.tau)
        if cfg.freematch.fairness:
            l_fair = fairness_loss(logits[n_l:], weights, thresholds.p_model, thresholds.label_hist)
            loss = loss + ramp * cfg.freematch.fairness_weight * l_fair
            logs["l_fair"] = float(l_fair.detach())
    return StepResult(
        loss=loss,
        logs=logs,
        pseudo_labels=pseudo.detach(),
        unlabeled_counts=unlabeled_counts(pseudo, weights, unlabeled["label"]),
    )


def _ltg_step(
    method: ResolvedMethod,
    cfg: MethodConfig,
    student: torch.nn.Module,
    second: torch.nn.Module | None,
    x_l: torch.Tensor,
    y_l: torch.Tensor,
    unlabeled: dict,
    ramp: float,
) -> StepResult:
    """LTG: RGB and temporal-gradient students, averaged thresholded pseudo-labels, feature alignment."""
    assert second is not None, "ltg needs the temporal-gradient stream"
    views = _unwrap(student).config.views
    weak, strong = unlabeled["weak"], unlabeled["strong"]
    n_l = x_l.shape[0]
    q = 0.5 * (eval_mode_probs(student, weak) + eval_mode_probs(second, temporal_gradient(weak, views)))
    pseudo, mask = threshold_mask(q, cfg.loss.threshold)
    out_rgb = student(torch.cat([x_l, strong]))
    out_tg = second(temporal_gradient(torch.cat([x_l, strong]), views))
    l_sup = supervised_loss(out_rgb.logits[:n_l], y_l) + supervised_loss(out_tg.logits[:n_l], y_l)
    l_un = unlabeled_loss(out_rgb.logits[n_l:], pseudo, mask) + unlabeled_loss(
        out_tg.logits[n_l:], pseudo, mask
    )
    align = F.mse_loss(F.normalize(out_rgb.h[n_l:], dim=-1), F.normalize(out_tg.h[n_l:], dim=-1))
    loss = l_sup + ramp * (cfg.loss.gamma_un * l_un + cfg.ltg_align_weight * align)
    logs = {
        "l_sup": float(l_sup.detach()),
        "l_un": float(l_un.detach()),
        "l_align": float(align.detach()),
        "mean_weight": float(mask.mean()),
    }
    return StepResult(
        loss=loss,
        logs=logs,
        pseudo_labels=pseudo,
        unlabeled_counts=unlabeled_counts(pseudo, mask, unlabeled["label"]),
    )


def _unwrap(model: torch.nn.Module) -> SeFAREncoder:
    return model.module if hasattr(model, "module") else model  # DDP wrapper
