"""Multiple-choice scoring by option likelihood, with the shared prompt encoded once.

Shape notation: K options, P prefix length, T longest option (tokens), D LLM width, V vocabulary.

A Gym-QA question has one long prompt (system message, N video tokens, question with its options)
and K short continuations. Instead of K full forwards over ``prompt + option`` (cost ~K x (P + T)):

    prefix [1, P, D] ──LLM, use_cache──► KV cache (P positions) + logits of the last position
    cache repeated K times ─┐
    options [K, T] ─────────┴─LLM──► logits [K, T, V]          (cost ~P + K x T)

The option forward attends to the cached prefix; options are right-padded, so under the causal mask
no real token ever sees a pad. ``option_scores`` are negative log-likelihoods (lower is better;
docs/DESIGN.md §Evaluator): summed over each option's tokens, with the token counts for the
per-token-mean variant.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch.nn import functional as F
from transformers import PreTrainedModel

from mllm.multimodal_model import MultimodalModel
from mllm.prompting import PromptBuilder, Turn


@dataclass
class OptionScores:
    """Per-option negative log-likelihoods (float64 tensors of shape [K])."""

    nll_sum: torch.Tensor  # summed over the option's tokens
    num_tokens: torch.Tensor  # tokens scored per option (EOS included when it was appended)

    @property
    def nll_mean(self) -> torch.Tensor:
        return self.nll_sum / self.num_tokens

    def best(self, *, per_token: bool = False) -> int:
        """Index of the most likely option (summed NLL by default, as docs/DESIGN.md §Evaluator chooses)."""
        return int(torch.argmin(self.nll_mean if per_token else self.nll_sum))


def _pad_options(
    option_ids: Sequence[Sequence[int]], pad_id: int, device: torch.device
) -> tuple[torch.Tensor, ...]:
    if not option_ids or any(len(o) == 0 for o in option_ids):
        raise ValueError("every option needs at least one token")
    length = max(len(o) for o in option_ids)
    ids = torch.full((len(option_ids), length), pad_id, dtype=torch.long, device=device)  # [K, T]
    mask = torch.zeros_like(ids)
    for k, option in enumerate(option_ids):
        ids[k, : len(option)] = torch.tensor(option, device=device)
        mask[k, : len(option)] = 1
    return ids, mask


@torch.no_grad()
def option_logits_cached(
    llm: PreTrainedModel, prefix_embeds: torch.Tensor, option_ids: Sequence[Sequence[int]], *, pad_id: int = 0
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Logits predicting each option token, prefix encoded once and options in one batched forward.

    ``prefix_embeds`` [1, P, D]. Returns ``(logits [K, T, V], ids [K, T], mask [K, T])``: ``logits[k, t]``
    is the distribution the model gives for ``ids[k, t]``.
    """
    if prefix_embeds.dim() != 3 or prefix_embeds.shape[0] != 1:
        raise ValueError(f"prefix_embeds must be [1, P, D], got {tuple(prefix_embeds.shape)}")
    num_prefix = prefix_embeds.shape[1]  # P
    ids, mask = _pad_options(option_ids, pad_id, prefix_embeds.device)  # [K, T]
    num_options, length = ids.shape  # K, T
    prefix_out = llm(inputs_embeds=prefix_embeds, use_cache=True, logits_to_keep=1)
    # The prefix's last position predicts every option's first token.
    first = prefix_out.logits[:, -1:].expand(num_options, -1, -1)  # [K, 1, V]
    if length == 1:
        return first, ids, mask
    cache = prefix_out.past_key_values
    # The cache is ours alone: repeat it in place for the K options (the option forward then appends
    # to it in place too, so it is not reusable afterwards; deep-copy it first if it had to be).
    cache.batch_repeat_interleave(num_options)
    # The last token of an option predicts nothing we score, so it is not fed: T - 1 inputs per option.
    inputs = ids[:, :-1]  # [K, T-1]
    attention_mask = torch.cat([mask.new_ones(num_options, num_prefix), mask[:, :-1]], dim=1)  # [K, P+T-1]
    option_out = llm(
        inputs_embeds=llm.get_input_embeddings()(inputs),
        attention_mask=attention_mask,
        past_key_values=cache,
        use_cache=True,
    )
    logits = torch.cat([first, option_out.logits], dim=1)  # [K, T, V]
    return logits, ids, mask


@torch.no_grad()
def option_logits_full(
    llm: PreTrainedModel, prefix_embeds: torch.Tensor, option_ids: Sequence[Sequence[int]], *, pad_id: int = 0
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Reference: one unbatched full forward over ``prefix + option`` per option (same outputs as
    :func:`option_logits_cached`). Used by tests and as the benchmark baseline."""
    ids, mask = _pad_options(option_ids, pad_id, prefix_embeds.device)
    num_prefix = prefix_embeds.shape[1]
    rows = []
    for k, option in enumerate(option_ids):
        embeds = torch.cat([prefix_embeds, llm.get_input_embeddings()(ids[k : k + 1, : len(option)])], dim=1)
        logits = llm(inputs_embeds=embeds, use_cache=False).logits[0]  # [P + T_k, V]
        rows.append(logits[num_prefix - 1 : num_prefix - 1 + len(option)])  # positions predicting the option
    logits = torch.zeros(ids.shape + (rows[0].shape[-1],), dtype=rows[0].dtype, device=ids.device)
    for k, row in enumerate(rows):
        logits[k, : row.shape[0]] = row
    return logits, ids, mask


def scores_from_logits(logits: torch.Tensor, ids: torch.Tensor, mask: torch.Tensor) -> OptionScores:
    """Summed NLL and token count per option from ``logits [K, T, V]``, targets ``ids [K, T]``."""
    nll = F.cross_entropy(logits.float().transpose(1, 2), ids, reduction="none")  # [K, T]
    nll = (nll * mask).sum(dim=1)
    return OptionScores(nll_sum=nll.double().cpu(), num_tokens=mask.sum(dim=1).double().cpu())


def score_options(
    llm: PreTrainedModel,
    prefix_embeds: torch.Tensor,
    option_ids: Sequence[Sequence[int]],
    *,
    method: str = "cached",
    pad_id: int = 0,
) -> OptionScores:
    """Score continuations of one prefix; ``method`` "cached" (shared prefix) or "full" (reference)."""
    compute = {"cached": option_logits_cached, "full": option_logits_full}.get(method)
    if compute is None:
        raise ValueError(f"method must be 'cached' or 'full', got {method!r}")
    return scores_from_logits(*compute(llm, prefix_embeds, option_ids, pad_id=pad_id))


@torch.no_grad()
def score_question(
    model: MultimodalModel,
    builder: PromptBuilder,
    question: str,
    options: Sequence[str],
    video_features: torch.Tensor | None,
    *,
    add_eos: bool = True,
    method: str = "cached",
    sample_id: str = "?",
) -> OptionScores:
    """Option scores of a question about one clip (``video_features`` [1, N, D_enc]).

    The prompt is the generation prompt of ``question`` and each option continues it exactly as an
    answer would be tokenised in training (:meth:`PromptBuilder.encode_answer`).
    """
    prompt = builder.encode(Turn(question), sample_id=sample_id)
    input_ids = torch.tensor([prompt.input_ids], device=model.device)  # [1, P]
    prefix_embeds = model.embed(input_ids, video_features)  # [1, P, D]
    option_ids = [builder.encode_answer(option, add_eos=add_eos) for option in options]
    pad_id = builder.tokenizer.pad_token_id or 0
    return score_options(model.llm, prefix_embeds, option_ids, method=method, pad_id=pad_id)


def benchmark_option_scoring(
    llm: PreTrainedModel,
    prefix_embeds: torch.Tensor,
    option_ids: Sequence[Sequence[int]],
    *,
    repeats: int = 10,
    pad_id: int = 0,
) -> dict[str, float]:
    """Median seconds of :func:`option_logits_full` (a: K sequential full forwards) and
    :func:`option_logits_cached` (b: shared prefix + one batched option forward); runs alternate."""
    import statistics
    import time

    timings: dict[str, list[float]] = {"full": [], "cached": []}
    methods = {"full": option_logits_full, "cached": option_logits_cached}
    for name, fn in methods.items():  # warm-up (allocator, kernels)
        fn(llm, prefix_embeds, option_ids, pad_id=pad_id)
    for _ in range(repeats):
        for name, fn in methods.items():
            start = time.perf_counter()
            fn(llm, prefix_embeds, option_ids, pad_id=pad_id)
            timings[name].append(time.perf_counter() - start)
    full, cached = statistics.median(timings["full"]), statistics.median(timings["cached"])
    return {"full_s": full, "cached_s": cached, "ratio": full / cached}
