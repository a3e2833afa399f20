"""Which clips of a list cannot be decoded, found before any training step (docs/DESIGN.md
§Dataset and loader).

    bad, fallbacks = find_bad_clips(entries, backend="decord", num_workers=2)
    raise BadClipsError("train.csv", bad)        # every bad clip at once: file, list line, reason

Each clip is opened, its frame count read and its last frame decoded (which catches truncation that a
header read misses), in DataLoader workers so that a long list is checked in parallel. Clips that decord
cannot read but PyAV can are not bad: they come back in ``fallbacks`` (path -> decord's reason).
:meth:`~sefar_encoder.dataset.VideoClipDataset.validate` runs this for a dataset and applies its
``on_bad_sample`` policy.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from gym_qa.lists import ListEntry
from sefar_encoder.decoding import Backend, DecodeError, DecoderFallbackWarning, probe_clip


@dataclass(frozen=True)
class BadClip:
    """A clip that cannot be decoded: its position in the list, its file, its list line and why."""

    index: int
    path: str
    line: int
    reason: str


def _where(source: str, line: int) -> str:
    """Where a clip is listed: ``list line 3 of <file>``, or ``list line 3`` for entries without a file."""
    return f"list line {line}" if source.startswith("<") else f"list line {line} of {source}"


class BadClipsError(RuntimeError):
    """Lists every bad clip (``.bad``) in the message: a first line with the count, then one line per clip
    (file, list line, reason). Raised by :meth:`~sefar_encoder.dataset.VideoClipDataset.validate`."""

    def __init__(self, source: str, bad: list[BadClip], sources: list[str] | None = None):
        self.bad, self.source = bad, source
        self.sources = sources or [source] * len(bad)  # the list file of each bad clip
        lines = "\n".join(f"  {b.path} ({_where(s, b.line)}): {b.reason}" for s, b in zip(self.sources, bad))
        super().__init__(f"{source}: {len(bad)} clip(s) cannot be decoded:\n{lines}")

    @classmethod
    def combine(cls, errors: list[BadClipsError]) -> BadClipsError:
        """One error for the bad clips of several list files."""
        if len(errors) == 1:
            return errors[0]
        bad = [b for e in errors for b in e.bad]
        sources = [s for e in errors for s in e.sources]
        return cls(", ".join(e.source for e in errors), bad, sources)


class _Probe(Dataset):
    """Frame count + last-frame check of each clip, one per DataLoader item: ``(index, bad reason or None,
    decoder fallback reason or None)``."""

    def __init__(self, paths: list[Path], backend: Backend):
        self.paths, self.backend = paths, backend

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> tuple[int, str | None, str | None]:
        try:
            with warnings.catch_warnings():  # reported once, by validate(), not by every worker
                warnings.simplefilter("ignore", DecoderFallbackWarning)
                _, fallback = probe_clip(self.paths[i], self.backend, check_last_frame=True)
        except DecodeError as err:
            return i, err.reason or str(err), None
        return i, None, fallback


def find_bad_clips(
    entries: Sequence[ListEntry],
    backend: Backend,
    num_workers: int = 0,
    progress: bool = True,
    desc: str = "validate",
) -> tuple[list[BadClip], dict[str, str]]:
    """Probe every clip of ``entries``: the bad ones (list order), and the clips only PyAV could read
    (path -> decord's reason)."""
    probes = _Probe([e.path for e in entries], backend)
    loader = DataLoader(probes, batch_size=None, num_workers=num_workers)
    bad, fallbacks = [], {}
    for i, reason, fallback in tqdm(loader, total=len(probes), desc=desc, disable=not progress, leave=False):
        if reason is not None:
            e = entries[i]
            bad.append(BadClip(i, str(e.path), e.line, reason))
        if fallback is not None:
            fallbacks[str(entries[i].path)] = fallback
    return bad, fallbacks
