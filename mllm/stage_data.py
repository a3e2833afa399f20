"""The data of an MLLM training stage (``scripts/train_mllm.py``): the feature cache brought up to date,
the features read from it (or encoded again at every step), and the samples about a list file's clips.

Both stages use only the labeled clips of ``data.label_rate``: stage A captions them, stage B asks Gym-QA
questions about them (given files, or generated; ``mllm/instruction_data.py``).
"""

from __future__ import annotations

from pathlib import Path

import torch
from accelerate import Accelerator

from gym_qa.clips import clip_id_of
from gym_qa.hierarchy import Hierarchy
from gym_qa.lists import read_list
from gym_qa.question_generator import GeneratorConfig
from gym_qa.questions import Question, load_questions
from mllm.encoders import build_video_encoder
from mllm.feature_cache import FeatureCache, build_feature_cache, encode_entries
from mllm.instruction_data import InstructionSample, caption_samples, generate_questions, question_samples
from mllm.training_config import FeatureConfig, MLLMTrainConfig
from sefar_encoder.runtime.config import ConfigError


def build_features(cfg: MLLMTrainConfig, acc: Accelerator, lists: list[Path]) -> FeatureCache:
    """The encoder's feature cache, brought up to date for ``lists``: every process encodes a share of the
    clips, the main process merges them (``mllm/feature_cache_ranks.py``)."""
    f = cfg.features
    try:
        encoder = build_video_encoder(f.encoder, f.weights, **f.options).to(acc.device)
    except (ValueError, TypeError) as err:
        raise ConfigError(f"features: {err}") from None
    report = build_feature_cache(
        encoder,
        lists,
        f.cache_root,
        batch_size=f.batch_size,
        num_workers=f.num_workers,
        on_bad_sample=f.on_bad_sample,
        progress=cfg.progress and acc.is_main_process,
        rank=acc.process_index,
        world_size=acc.num_processes,
    )
    if acc.is_main_process:
        print(
            f"feature cache {report.directory}: {report.encoded} encoded, {report.reused} reused, "
            f"{len(report.skipped)} skipped"
        )
    return FeatureCache(report.directory)


class OnTheFlyFeatures:
    """``features.on_the_fly``: the cache's read side (``get``, ``in``), but each call decodes and encodes
    the clips again with the encoder that made the cache (same code path: ``encode_entries``)."""

    def __init__(self, cfg: FeatureConfig, cache: FeatureCache, lists: list[Path], device: torch.device):
        self.encoder = build_video_encoder(cfg.encoder, cfg.weights, **cfg.options).to(device)
        if self.encoder.fingerprint() != cache.fingerprint:
            raise ConfigError(f"features.on_the_fly: the encoder does not match the cache {cache.directory}")
        self.cache, self.directory, self.num_workers = cache, cache.directory, cfg.num_workers
        self.entries = {clip_id_of(e.raw_path): e for path in lists for e in read_list(path)}

    def __contains__(self, cid: object) -> bool:
        return cid in self.cache

    def get(self, clip_ids: list[str]) -> torch.Tensor:
        """``tokens [B, N, D]`` in the cache's dtype, encoded now."""
        entries = [self.entries[c] for c in clip_ids]
        batches = encode_entries(
            self.encoder, entries, batch_size=len(clip_ids), num_workers=self.num_workers, progress=False
        )
        return torch.cat([b.tokens for b in batches]).to(self.cache.dtype)


def build_samples(
    cfg: MLLMTrainConfig,
    hierarchy: Hierarchy,
    list_file: Path,
    question_files: list[str],
    cache: FeatureCache,
) -> tuple[list[InstructionSample], dict[str, int], list[Question]]:
    """The stage's samples about the clips of ``list_file`` whose features exist, their counts, and the
    questions generated for them (stage B without question files; the run keeps them), else ``[]``."""
    entries = read_list(list_file, hierarchy.num_classes)
    generated: list[Question] = []
    if cfg.stage == "align":
        samples, dropped = caption_samples(entries, hierarchy), 0
    elif question_files:
        questions = [q for path in question_files for q in load_questions(path)]
        samples, dropped = question_samples(questions, {clip_id_of(e.raw_path) for e in entries})
        if questions and not samples:
            raise ConfigError(
                f"{', '.join(question_files)}: none of the {len(questions)} questions is "
                f"about a clip of {list_file} (e.g. video {questions[0].video!r})"
            )
    else:
        generator = GeneratorConfig(
            types=tuple(cfg.data.question_types),
            distractors=cfg.data.distractors,
            seed=cfg.data.question_seed,
            dataset=Path(cfg.data.root).name,
        )
        generated, _ = generate_questions(entries, hierarchy, generator)
        samples, dropped = question_samples(generated)
    kept = [s for s in samples if s.clip_id in cache]
    if samples and not kept:
        raise ConfigError(
            f"{list_file}: no clip of the {len(samples)} samples has features in "
            f"{cache.directory} (skipped while caching: {sorted(cache.skipped)[:3]})"
        )
    counts = {
        "samples": len(kept),
        "dropped_other_clips": dropped,
        "dropped_no_features": len(samples) - len(kept),
    }
    return kept, counts, generated
