"""Collate: sample dicts -> one batch, and a batch -> the device, normalised (docs/DESIGN.md
§Dataset and loader).

    [sample dict | SkippedSample, ...] ──collate_clips──► batch (B in front) + "skipped", "skipped_reasons",
        "fallbacks" ──finish_batch──► on the device, uint8 clips normalised to float32

:func:`collate_clips` lists skipped clips under ``"skipped"`` (paths) and ``"skipped_reasons"``, and clips
that decord could not read but PyAV could under ``"fallbacks"`` (``(path, decord's reason)``; see
:mod:`sefar_encoder.decoding`). An all-skipped batch has ``index`` of length 0 and no tensors.
"""

from __future__ import annotations

from typing import Any

import torch
from torch.utils.data import default_collate

from sefar_encoder.dataset import SkippedSample
from sefar_encoder.transforms import AugmentConfig, normalize_video, one_thread


def _rows_of_one_buffer(tensors: list[torch.Tensor]) -> torch.Tensor | None:
    """The batch buffer whose consecutive rows are ``tensors`` (as made by
    ``VideoClipDataset.__getitems__``), or None."""
    base = tensors[0]._base
    if base is None or base.shape[0] != len(tensors) or base.shape[1:] != tensors[0].shape:
        return None
    row_bytes = base[0].numel() * base.element_size()
    if any(
        t._base is not base or t.data_ptr() != base.data_ptr() + i * row_bytes for i, t in enumerate(tensors)
    ):
        return None
    return base


def collate_clips(batch: list[dict[str, Any] | SkippedSample]) -> dict[str, Any]:
    """Stack sample dicts along a new first axis B; ``"skipped"`` lists paths of skipped clips,
    ``"skipped_reasons"`` why, and ``"fallbacks"`` the ``(path, reason)`` of clips decoded with PyAV
    because decord failed on them.

    Tensors that are already the rows of one batch buffer (from ``VideoClipDataset.__getitems__``) are
    returned as that buffer; the rest go through torch's ``default_collate`` (which, inside a worker,
    stacks straight into shared memory). An all-skipped batch has ``index`` of length 0 and no tensors.
    """
    skipped = [b.path for b in batch if isinstance(b, SkippedSample)]
    reasons = [b.reason for b in batch if isinstance(b, SkippedSample)]
    fallbacks = [b["fallback"] for b in batch if not isinstance(b, SkippedSample) and "fallback" in b]
    kept = [
        {k: v for k, v in b.items() if k != "fallback"} if "fallback" in b else b
        for b in batch
        if not isinstance(b, SkippedSample)
    ]
    info = {"skipped": skipped, "skipped_reasons": reasons, "fallbacks": fallbacks}
    if not kept:
        return {"index": torch.empty(0, dtype=torch.long), **info}
    prebuilt = {}
    for key, value in kept[0].items():
        if isinstance(value, torch.Tensor):
            buffer = _rows_of_one_buffer([b[key] for b in kept])
            if buffer is not None:
                prebuilt[key] = buffer
    rest = [{k: v for k, v in b.items() if k not in prebuilt} for b in kept] if prebuilt else kept
    with one_thread():  # see transforms.one_thread: small per-batch copies
        out = default_collate(rest)
    out.update(prebuilt)
    out.update(info)
    return out


VIDEO_KEYS = ("video", "weak", "strong")


def finish_batch(
    batch: dict[str, Any], augment: AugmentConfig, device: str | torch.device | None = None
) -> dict[str, Any]:
    """Move a collated batch's tensors to ``device`` (if given) and normalise uint8 clips with
    ``augment.mean/std``; float clips (already normalised in the workers) pass unchanged."""
    out = dict(batch)
    for key, value in batch.items():
        if not isinstance(value, torch.Tensor):
            continue
        if device is not None:
            value = value.to(device, non_blocking=True)
        if key in VIDEO_KEYS and value.dtype == torch.uint8:
            # On CPU single-threaded: intra-op threads spin-wait and, on a busy machine, made this
            # 3-5x slower (see transforms.one_thread); on a GPU the thread count does not matter.
            with one_thread():
                value = normalize_video(value, augment.mean, augment.std)
        out[key] = value
    return out
