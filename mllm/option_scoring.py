"""Multiple-choice scoring by option likelihood, with the shared prompt encoded once.

Shape notation: K options, P prefix length, T longest option (tokens), D LLM width, V vocabulary.

A Gym-QA question has one long prompt (system message, N video tokens, question with its options)
and K short continuations. Instead of K full forwards over ``prompt + option`` (cost ~K x (P + T)):

    [prefix [P] | option 0 | option 1 | ...]  one row of P + S tokens, S = sum(T_k - 1)
        ──LLM, block mask──► logits of the S + 1 positions that predict option tokens ──► [K, T, V]
                                                                       (cost ~P + K x T tokens)

The mask makes the prefix causal and lets every option token see the prefix and its own option only:
no option token ever sees another option's. ``option_scores`` are negative log-likelihoods (lower is better;
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


def packed_option_mask(lengths: Sequence[int], num_prefix: int, dtype: torch.dtype) -> torch.Tensor:
    """Additive attention mask ``[1, 1, P + S, P + S]`` of a prefix of ``P`` tokens followed by options of
    ``lengths`` tokens (``S = sum(lengths)``) packed in one row: the prefix is causal, each option token
    sees the whole prefix and the earlier tokens of its own option (0), nothing else (the dtype's minimum).

    E.g. lengths (2, 1), P = 1 -> allowed rows ``[1 0 0 0]``, ``[1 1 0 0]``, ``[1 1 1 0]``, ``[1 0 0 1]``.
    """
    total = sum(lengths)  # S
    owner = torch.cat(
        [
            torch.full((num_prefix,), -1),
            torch.repeat_interleave(torch.arange(len(lengths)), torch.tensor(lengths)),
        ]
    )  # [P + S]: -1 = prefix
    causal = torch.ones(num_prefix + total, num_prefix + total, dtype=torch.bool).tril()
    allowed = causal & ((owner[None, :] == -1) | (owner[:, None] == owner[None, :]))  # [P + S, P + S]
    mask = torch.zeros(allowed.shape, dtype=dtype).masked_fill_(~allowed, torch.finfo(dtype).min)
    return mask[None, None]


PACKED_MASK_ATTENTION = frozenset({"sdpa", "eager"})  # apply a 4-D attention mask as given


@torch.no_grad()
def option_logits_cached(
    llm: PreTrainedModel, prefix_embeds: torch.Tensor, option_ids: Sequence[Sequence[int]], *, pad_id: int = 0
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Logits predicting each option token, the prefix encoded once, in one forward with the options.

    ``prefix_embeds`` [1, P, D]. Returns ``(logits [K, T, V], ids [K, T], mask [K, T])``: ``logits[k, t]``
    is the distribution the model gives for ``ids[k, t]`` (0 where ``mask`` is 0).

    The prefix and the options are packed into one row of ``P + S`` tokens (``S = sum(T_k - 1)``: the last
    token of an option predicts nothing scored, so it is not fed) with a block mask
    (:func:`packed_option_mask`) and each option's own positions ``P, P+1, ...``; the LM head runs on the
    ``S + 1`` positions that predict option tokens only. The work is the token count itself: no padding,
    no K copies of a prefix KV cache, one forward's overhead. (A prefix forward with ``use_cache`` then a
    right-padded ``[K, T-1]`` batch on the repeated cache measured ~0.75x of the token-count ideal here.)

    The block mask is a 4-D additive mask, which only the ``sdpa`` and ``eager`` attention implementations
    apply as given; under another one (``flash_attention_2`` reads masks as 2-D padding) the options are
    scored by :func:`option_logits_full`, which gives the same logits without a custom mask.
    """
    if prefix_embeds.dim() != 3 or prefix_embeds.shape[0] != 1:
        raise ValueError(f"prefix_embeds must be [1, P, D], got {tuple(prefix_embeds.shape)}")
    if getattr(llm.config, "_attn_implementation", "sdpa") not in PACKED_MASK_ATTENTION:
        return option_logits_full(llm, prefix_embeds, option_ids, pad_id=pad_id)
    num_prefix, device = prefix_embeds.shape[1], prefix_embeds.device  # P
    ids, mask = _pad_options(option_ids, pad_id, device)  # [K, T]
    lengths = [len(option) - 1 for option in option_ids]
    inputs = torch.cat([ids[k, :n] for k, n in enumerate(lengths)])[None]  # [1, S]
    embeds = torch.cat([prefix_embeds, llm.get_input_embeddings()(inputs)], dim=1)  # [1, P + S, D]
    positions = torch.cat(
        [torch.arange(num_prefix), *(torch.arange(num_prefix, num_prefix + n) for n in lengths)]
    )
    out = llm(
        inputs_embeds=embeds,
        attention_mask=packed_option_mask(lengths, num_prefix, embeds.dtype).to(device),
        position_ids=positions[None].to(device),
        use_cache=False,
        logits_to_keep=sum(lengths) + 1,  # the prefix's last position, then every option input
    ).logits[0]  # [1 + S, V]
    logits = out.new_zeros(ids.shape + (out.shape[-1],))  # [K, T, V]
    logits[:, 0] = out[0]  # the prefix's last position predicts every option's first token
    for k, row in enumerate(out[1:].split(lengths)):  # K x [T_k - 1, V]
        logits[k, 1 : 1 + row.shape[0]] = row
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


def ideal_speedup(num_prefix: int, option_lengths: Sequence[int]) -> float:
    """The speed-up the token counts allow: K forwards of ``P + T_k`` tokens against one of ``P`` and the
    options' ``sum(T_k)`` (e.g. P = 127, T = 20, 10, 11, 14: 563 / 182 = 3.09)."""
    return sum(num_prefix + t for t in option_lengths) / (num_prefix + sum(option_lengths))


def benchmark_option_scoring(
    llm: PreTrainedModel,
    prefix_embeds: torch.Tensor,
    option_ids: Sequence[Sequence[int]],
    *,
    repeats: int = 10,
    pad_id: int = 0,
) -> dict[str, float]:
    """Seconds of :func:`option_logits_full` (a: K sequential full forwards) and
    :func:`option_logits_cached` (b: the prompt once with the options packed after it), run in alternation.

    ``ratio`` is the median over the repeats of a / b within each (a, b) pair: both arms of a pair run
    back to back, so load from other jobs mostly cancels; ``full_s`` and ``cached_s`` are the arms'
    medians, ``ideal`` is :func:`ideal_speedup` of these token counts."""
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
    pairs = [a / b for a, b in zip(timings["full"], timings["cached"])]
    return {
        "full_s": statistics.median(timings["full"]),
        "cached_s": statistics.median(timings["cached"]),
        "ratio": statistics.median(pairs),
        "ideal": ideal_speedup(prefix_embeds.shape[1], [len(o) for o in option_ids]),
    }
