"""Uncertainty scores of a prediction and the out-of-domain flag calibrated on in-domain clips (issue 18,
point 11).

A closed-set classifier names one of its classes for every clip, a bouncing ball included. Each
prediction therefore carries scores that grow as the clip looks less like the training data, and a flag
set when the chosen score exceeds a threshold calibrated on in-domain clips (the encoder's val split):
the score value that keeps a fraction ``keep`` (default 95 %) of them in domain.

Scores (:data:`SCORES`; every one: higher = more out of domain)::

    max_softmax        1 - max_c p_c                       p: softmax, averaged over the test views
    energy             -logsumexp_c z_c                    z: logits; averaged over the test views
    dropout_std        s = std_k q_k[ŷ]                    K fusion-head dropout samples (Adaptive Regulation)
    regulation_weight  1 - w(p̄, s)                         the pseudo-label weight of Adaptive Regulation
    feature_distance   sqrt((f - μ)ᵀ Σ⁻¹ (f - μ))          f: the V view features [V·D]; μ, Σ fitted on the
                                                           in-domain training clips (:class:`FeatureGaussian`)

The first four read the classifier's output and only say how sure it is among its own classes; a clip of
something else can still get a peaked softmax. ``feature_distance`` asks instead whether the backbone's
features look like those of the training clips: one Gaussian over the concatenated view features of a
reference list (the training pool, labels unused), its covariance shrunk toward a multiple of the identity
(:data:`SHRINKAGE`) so that it is invertible with fewer clips than dimensions. It exists only for an export
with the fitted Gaussian beside it (``out_of_domain_features.safetensors``, ``predict.py --calibrate
--reference``).

``dropout_std`` and ``regulation_weight`` are the statistics SeFAR's teacher computes for its pseudo-labels
(:func:`sefar_encoder.regulation.k_sample_stats`): K predictions of one fused feature ``h`` under K
dropout masks of the head. Here the K masks are fixed per predictor (:func:`dropout_masks`, seeded), so a
clip gets the same score whatever batch it is in and from whichever thread (the training path draws fresh
masks from the global generator instead).

The calibration (:class:`OutOfDomainCalibration`) lives beside the encoder export as
``out_of_domain.json`` (and the Gaussian as ``out_of_domain_features.safetensors``) and records the thresholds of every score, the score the flag uses, and the test-time
settings the scores depend on; ``scripts/predict.py --calibrate`` writes it. An export without it loads and
its predictions say the flag is uncalibrated (``out_of_domain: null``). :func:`auroc` measures how well a
score separates in-domain from out-of-domain clips (``scripts/eval_out_of_domain.py``).

Shape notation: B batch, n_test test views per clip, C classes, K dropout samples, Dh fusion width,
F = V·D view-feature width, N reference clips.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from .regulation import RegulationConfig, k_sample_stats
from .runtime.atomic import write_json_atomic
from .runtime.config import ConfigError, load_config, to_dict

CALIBRATION_FILE = "out_of_domain.json"
FEATURE_FILE = "out_of_domain_features.safetensors"
SCORES: dict[str, str] = {
    "max_softmax": "1 - top-1 probability",
    "energy": "-logsumexp of the logits (the energy score)",
    "dropout_std": "std of the top-1 probability over K head-dropout samples",
    "regulation_weight": "1 - the Adaptive Regulation weight of the K head-dropout samples",
    "feature_distance": "Mahalanobis distance of the view features to the training clips' Gaussian",
}
SHRINKAGE = 0.1  # Σ = (1 - a) Σ̂ + a · mean(diag Σ̂) · I
# The score the flag uses without a feature Gaussian (with one: feature_distance), unless told otherwise:
# of the four output scores the best on the selection pair of docs/RESULTS.md ("Out-of-domain clips"), and
# still near chance there (AUROC 0.52); every calibration keeps the thresholds of all scores.
DEFAULT_SCORE = "max_softmax"
DEFAULT_KEEP = 0.95
DEFAULT_DROPOUT_SAMPLES = 10
MASK_SEED = 0


def dropout_masks(dim: int, p: float, k: int, seed: int = MASK_SEED) -> torch.Tensor:
    """K inverted-dropout masks ``[K, Dh]`` (entries 0 or ``1/(1-p)``), as ``F.dropout`` draws them, from
    a generator of their own (deterministic; the global RNG is untouched)."""
    if k < 1:
        raise ValueError(f"need at least one dropout sample, got {k}")
    if not 0.0 <= p < 1.0:
        raise ValueError(f"dropout probability must be in [0, 1), got {p}")
    generator = torch.Generator().manual_seed(seed)
    keep = torch.rand(k, dim, generator=generator) >= p
    return keep.float() / (1.0 - p)


@dataclass
class FeatureGaussian:
    """One Gaussian over the view features of in-domain clips: ``mean [F]`` and ``precision [F, F]`` (the
    inverse of the shrunk covariance), fitted on ``num_clips`` clips."""

    mean: torch.Tensor
    precision: torch.Tensor
    num_clips: int

    @classmethod
    def fit(cls, features: torch.Tensor, shrinkage: float = SHRINKAGE) -> FeatureGaussian:
        """``features [N, F]`` -> the Gaussian; the covariance is the biased one (divided by N), shrunk:
        ``(1 - shrinkage) Σ̂ + shrinkage · mean(diag Σ̂) · I``."""
        if features.ndim != 2 or features.shape[0] < 2:
            raise ValueError(f"need features [N >= 2, F], got {tuple(features.shape)}")
        if not 0.0 < shrinkage <= 1.0:
            raise ValueError(f"shrinkage must be in (0, 1], got {shrinkage}")
        x = features.double()
        mean = x.mean(dim=0)
        centred = x - mean
        cov = centred.T @ centred / x.shape[0]  # [F, F]
        cov = (1.0 - shrinkage) * cov + shrinkage * cov.diagonal().mean() * torch.eye(
            x.shape[1], dtype=x.dtype
        )
        return cls(mean.float(), torch.linalg.inv(cov).float(), int(x.shape[0]))

    def distance(self, features: torch.Tensor) -> torch.Tensor:
        """``features [..., F]`` -> Mahalanobis distance ``[...]``."""
        d = features.float() - self.mean.to(features.device)
        squared = torch.einsum("...i,ij,...j->...", d, self.precision.to(features.device), d)
        return squared.clamp_min(0.0).sqrt()

    def save(self, directory: str | Path) -> Path:
        path = Path(directory) / FEATURE_FILE
        tensors = {"mean": self.mean.contiguous(), "precision": self.precision.contiguous()}
        save_file(tensors, str(path), metadata={"num_clips": str(self.num_clips)})
        return path

    @classmethod
    def load(cls, directory: str | Path) -> FeatureGaussian | None:
        """The Gaussian beside an export, or None when it has none."""
        path = Path(directory) / FEATURE_FILE
        if not path.is_file():
            return None
        try:
            with safe_open(str(path), framework="pt") as fh:
                num_clips = int((fh.metadata() or {}).get("num_clips", 0))
            tensors = load_file(str(path))
            return cls(tensors["mean"], tensors["precision"], num_clips)
        except Exception as err:  # noqa: BLE001 - any unreadable file is reported with its name
            raise ConfigError(f"{path}: not a feature Gaussian ({type(err).__name__}: {err})") from None


def uncertainty_scores(
    logits: torch.Tensor,
    sample_logits: torch.Tensor,
    regulation: RegulationConfig | None = None,
    view_features: torch.Tensor | None = None,
    gaussian: FeatureGaussian | None = None,
) -> dict[str, torch.Tensor]:
    """The scores of :data:`SCORES` per clip, ``[B]`` each (``feature_distance`` only with a ``gaussian``).

    ``logits [B, n_test, C]``: the deterministic logits of each test view; ``sample_logits [K, B, n_test,
    C]``: the logits under K dropout masks; ``view_features [B, n_test, F]``. Softmaxes are averaged over
    the test views (as the prediction's probabilities), the energy and the feature distance too.
    """
    if logits.ndim != 3 or sample_logits.ndim != 4 or sample_logits.shape[1:] != logits.shape:
        raise ValueError(
            f"expected logits [B, n_test, C] and sample logits [K, B, n_test, C], got "
            f"{tuple(logits.shape)} and {tuple(sample_logits.shape)}"
        )
    logits, sample_logits = logits.float(), sample_logits.float()
    probs = logits.softmax(dim=-1).mean(dim=1)  # [B, C]
    energy = -torch.logsumexp(logits, dim=-1).mean(dim=1)  # [B]
    stats = k_sample_stats(sample_logits.softmax(dim=-1).mean(dim=2), regulation)  # q [K, B, C]
    scores = {
        "max_softmax": 1.0 - probs.max(dim=1).values,
        "energy": energy,
        "dropout_std": stats.p_std,
        "regulation_weight": 1.0 - stats.weight,
    }
    if gaussian is not None:
        if view_features is None or view_features.shape[:2] != logits.shape[:2]:
            raise ValueError("feature_distance needs view features [B, n_test, F]")
        scores["feature_distance"] = gaussian.distance(view_features).mean(dim=1)
    return scores


def threshold_keeping(values: np.ndarray | list[float], keep: float) -> float:
    """The smallest observed value ``v`` with at least a fraction ``keep`` of ``values`` at or below it:
    the ``ceil(keep·n)``-th smallest. Clips scoring above it are flagged."""
    values = np.sort(np.asarray(values, dtype=np.float64))
    if values.size == 0:
        raise ValueError("no calibration scores")
    if not 0.0 < keep <= 1.0:
        raise ValueError(f"keep must be in (0, 1], got {keep}")
    if not np.isfinite(values).all():
        raise ValueError("calibration scores must be finite")
    rank = math.ceil(round(keep * values.size, 9))  # round: 0.95 * 20 is 19.000000000000004 in floats
    return float(values[max(rank, 1) - 1])


def auroc(in_domain: np.ndarray | list[float], out_of_domain: np.ndarray | list[float]) -> float:
    """Area under the ROC curve of a score flagging ``out_of_domain`` clips (positives) among
    ``in_domain`` ones: P(score_out > score_in) + ½ P(score_out = score_in) over all pairs (Mann-Whitney)."""
    a = np.asarray(in_domain, dtype=np.float64)[None, :]
    b = np.asarray(out_of_domain, dtype=np.float64)[:, None]
    if a.size == 0 or b.size == 0:
        raise ValueError("AUROC needs clips on both sides")
    return float(((b > a).sum() + 0.5 * (b == a).sum()) / (a.size * b.size))


@dataclass
class OutOfDomainCalibration:
    """The ``out_of_domain.json`` beside an encoder export: thresholds per score and how they were made."""

    score: str = field(default=DEFAULT_SCORE, metadata={"help": "the score the out_of_domain flag uses"})
    keep: float = field(
        default=DEFAULT_KEEP, metadata={"help": "fraction of calibration clips kept in domain"}
    )
    thresholds: dict[str, float] = field(
        default_factory=dict, metadata={"help": "per score: clips scoring above it are flagged"}
    )
    num_clips: int = field(default=0, metadata={"help": "in-domain clips the thresholds come from"})
    inputs: str = field(default="", metadata={"help": "the list of those clips"})
    reference: str = field(
        default="", metadata={"help": "the clips the feature Gaussian was fitted on (empty: no Gaussian)"}
    )
    test_offsets: int = field(
        default=1, metadata={"help": "temporal test views the scores were computed with"}
    )
    test_crops: int = field(default=1, metadata={"help": "spatial test crops the scores were computed with"})
    dropout_samples: int = field(default=DEFAULT_DROPOUT_SAMPLES, metadata={"help": "K head-dropout samples"})
    mask_seed: int = field(default=MASK_SEED, metadata={"help": "seed of the K dropout masks"})

    def __post_init__(self) -> None:
        unknown = sorted(set(self.thresholds) - set(SCORES))
        if unknown or (self.thresholds and self.score not in self.thresholds):
            raise ConfigError(
                f"calibration: score {self.score!r} and thresholds for {sorted(self.thresholds)}; "
                f"known scores: {sorted(SCORES)}"
            )

    @property
    def threshold(self) -> float:
        return self.thresholds[self.score]

    def with_score(self, score: str) -> OutOfDomainCalibration:
        """The same calibration with the flag on another score."""
        if score not in self.thresholds:
            raise ValueError(f"no threshold for score {score!r}; calibrated: {sorted(self.thresholds)}")
        return OutOfDomainCalibration(**{**to_dict(self), "score": score})

    def mismatch(self, test_offsets: int, test_crops: int, dropout_samples: int) -> str | None:
        """Why these thresholds do not apply to a predictor with these settings (None: they do)."""
        ours = (self.test_offsets, self.test_crops, self.dropout_samples)
        theirs = (test_offsets, test_crops, dropout_samples)
        if ours == theirs:
            return None
        return (
            f"calibrated with test_offsets={ours[0]}, test_crops={ours[1]}, dropout_samples={ours[2]}; "
            f"this predictor uses {theirs[0]}, {theirs[1]}, {theirs[2]}"
        )

    def save(self, directory: str | Path) -> Path:
        path = Path(directory) / CALIBRATION_FILE
        write_json_atomic(path, to_dict(self))
        return path

    @classmethod
    def load(cls, directory: str | Path) -> OutOfDomainCalibration | None:
        """The calibration beside an export, or None when it has none. Raises :class:`ConfigError` naming
        the file for a malformed one."""
        path = Path(directory) / CALIBRATION_FILE
        if not path.is_file():
            return None
        try:
            json.loads(path.read_text())
        except json.JSONDecodeError as err:
            raise ConfigError(f"{path}:{err.lineno}: not valid JSON: {err.msg}") from None
        try:
            return load_config(cls, path)  # JSON is YAML: validated, typed
        except ConfigError as err:
            raise ConfigError(f"{path}: {err}") from None


def calibrate(
    scores: dict[str, np.ndarray | list[float]],
    keep: float = DEFAULT_KEEP,
    score: str = DEFAULT_SCORE,
    **settings: Any,
) -> OutOfDomainCalibration:
    """Thresholds of every score in ``scores`` (each: one value per in-domain clip) keeping ``keep`` of
    them; ``settings`` are the other fields of :class:`OutOfDomainCalibration` (inputs, test settings)."""
    sizes = {len(v) for v in scores.values()}
    if len(sizes) != 1:
        raise ValueError(f"every score needs one value per clip, got sizes {sorted(sizes)}")
    thresholds = {name: threshold_keeping(values, keep) for name, values in scores.items()}
    return OutOfDomainCalibration(
        score=score, keep=keep, thresholds=thresholds, num_clips=sizes.pop(), **settings
    )


@dataclass(frozen=True)
class Uncertainty:
    """A prediction's scores (:data:`SCORES`) and its out-of-domain flag: ``out_of_domain`` is None when
    the predictor has no calibration that applies (``note`` says why)."""

    scores: dict[str, float]
    score: str
    threshold: float | None = None
    note: str = ""

    @property
    def value(self) -> float:
        return self.scores[self.score]

    @property
    def out_of_domain(self) -> bool | None:
        return None if self.threshold is None else self.value > self.threshold

    def to_record(self) -> dict[str, Any]:
        record: dict[str, Any] = {
            "score": self.score,
            "value": round(self.value, 6),
            "threshold": None if self.threshold is None else round(self.threshold, 6),
            "scores": {name: round(v, 6) for name, v in self.scores.items()},
        }
        if self.note:
            record["note"] = self.note
        return record
