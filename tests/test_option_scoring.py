"""Option-likelihood scoring: the shared-prefix batched path equals per-option full forwards, and its NLLs
equal the training loss of the same answers."""

import json
from pathlib import Path

import pytest
import torch
from conftest import load_script

from mllm.language_model import LLMConfig
from mllm.multimodal_model import MultimodalConfig, MultimodalModel
from mllm.option_scoring import (
    OptionScores,
    ideal_speedup,
    option_logits_cached,
    option_logits_full,
    packed_option_mask,
    score_options,
    score_question,
    scores_from_logits,
)
from mllm.prompting import IGNORE_INDEX, PromptBuilder, Turn
from mllm.tokenizer import load_tokenizer

pytest_plugins = ["tiny_llm_fixtures"]

N, D_ENC = 6, 16
QUESTION = (
    "What gymnastics move is this athlete performing? A.salto B.split jump C.switch leap D.giant circle"
)
OPTIONS = ["A.salto", "B.split jump", "C.switch leap with 0.5 turn", "D.giant circle backward with 1 turn"]


@pytest.fixture()
def setup(tiny_llm_dir: Path) -> tuple[MultimodalModel, PromptBuilder, torch.Tensor]:
    torch.manual_seed(0)
    cfg = MultimodalConfig(llm=LLMConfig(name_or_path=str(tiny_llm_dir)))
    model = MultimodalModel.build(cfg, video_token_id=0, encoder_dim=D_ENC).eval()
    builder = PromptBuilder(load_tokenizer(tiny_llm_dir), num_video_tokens=N)
    return model, builder, torch.randn(1, N, D_ENC)


def test_cached_batched_logits_equal_full_forwards(setup):
    model, builder, video = setup
    prompt = builder.encode(Turn(QUESTION))
    prefix = model.embed(torch.tensor([prompt.input_ids]), video)  # [1, P, D] with video tokens
    one_token = [builder.tokenizer.eos_token_id]
    options = [builder.encode_answer(o) for o in OPTIONS] + [one_token]
    cached, ids, mask = option_logits_cached(
        model.llm, prefix, options, pad_id=builder.tokenizer.pad_token_id
    )
    full, ids_full, mask_full = option_logits_full(
        model.llm, prefix, options, pad_id=builder.tokenizer.pad_token_id
    )
    assert torch.equal(ids, ids_full) and torch.equal(mask, mask_full)
    assert cached.shape == full.shape == (len(options), max(map(len, options)), model.llm.config.vocab_size)
    real = mask.bool()
    assert (cached[real] - full[real]).abs().max() < 1e-4
    a, b = scores_from_logits(cached, ids, mask), scores_from_logits(full, ids, mask)
    assert torch.allclose(a.nll_sum, b.nll_sum, atol=1e-4)
    assert a.num_tokens.tolist() == [float(len(o)) for o in options]
    # Only one-token options: nothing is packed after the prefix.
    singles = [one_token, [5]]
    cached, _, _ = option_logits_cached(model.llm, prefix, singles)
    assert (cached - option_logits_full(model.llm, prefix, singles)[0]).abs().max() < 1e-4


def test_option_nll_equals_the_training_loss_of_that_answer(setup):
    model, builder, video = setup
    scores = score_question(model, builder, QUESTION, OPTIONS, video)
    for k, option in enumerate(OPTIONS):
        sample = builder.encode(Turn(QUESTION, option))
        ids, labels = torch.tensor([sample.input_ids]), torch.tensor([sample.labels])
        with torch.no_grad():
            loss = model(ids, torch.ones_like(ids), labels, video).loss  # mean over answer tokens + EOS
        count = int((labels != IGNORE_INDEX).sum())
        assert scores.num_tokens[k] == count
        assert abs(float(loss) * count - float(scores.nll_sum[k])) < 1e-3
    full = score_question(model, builder, QUESTION, OPTIONS, video, method="full")
    assert torch.allclose(scores.nll_sum, full.nll_sum, atol=1e-4)


def test_option_scores_choose_the_lowest_nll():
    scores = OptionScores(nll_sum=torch.tensor([4.0, 3.0, 9.0]), num_tokens=torch.tensor([2.0, 1.0, 9.0]))
    assert scores.best() == 1 and scores.best(per_token=True) == 2
    assert scores.nll_mean.tolist() == [2.0, 3.0, 1.0]


def test_bad_inputs(setup):
    model, _, _ = setup
    prefix = torch.zeros(2, 3, model.llm.config.hidden_size)
    with pytest.raises(ValueError, match=r"\[1, P, D\]"):
        option_logits_cached(model.llm, prefix, [[1]])
    with pytest.raises(ValueError, match="at least one token"):
        score_options(model.llm, prefix[:1], [[1], []])
    with pytest.raises(ValueError, match="method"):
        score_options(model.llm, prefix[:1], [[1]], method="beam")


def test_benchmark_script_prints_the_speedup_json(tiny_llm_dir: Path, capsys: pytest.CaptureFixture[str]):
    bench_option_scoring = load_script("bench_option_scoring")
    threads = torch.get_num_threads()
    try:  # the script pins torch to 1 thread (its default --threads): give later tests theirs back
        assert (
            bench_option_scoring.main(["--model", str(tiny_llm_dir), "--repeats", "1", "--video-tokens", "8"])
            == 0
        )
    finally:
        torch.set_num_threads(threads)
    report = json.loads(capsys.readouterr().out)
    speedup = report["mc_prefix_speedup"]
    assert set(speedup) == {"ratio", "a", "b", "ideal", "of_ideal", "unit", "how"} and speedup["unit"] == "s"
    assert speedup["ratio"] > 0 and "machine" in report
    assert speedup["of_ideal"] == pytest.approx(speedup["ratio"] / speedup["ideal"], abs=2e-3)


def test_ideal_speedup_is_the_ratio_of_token_counts():
    assert ideal_speedup(127, [20, 10, 11, 14]) == pytest.approx(563 / 182)  # 4 x 127 + 55 / (127 + 55)
    assert ideal_speedup(10, [2, 2]) == pytest.approx(24 / 14)
    assert ideal_speedup(5, [3]) == 1.0  # one option: nothing to share


def test_packed_option_mask_lets_each_option_see_the_prefix_and_its_own_past():
    mask = packed_option_mask([2, 1], num_prefix=1, dtype=torch.float32)  # S = 3 tokens after P = 1
    allowed = (mask[0, 0] == 0).int().tolist()
    assert mask.shape == (1, 1, 4, 4)
    assert allowed == [[1, 0, 0, 0], [1, 1, 0, 0], [1, 1, 1, 0], [1, 0, 0, 1]]  # option 1 never sees 0
    assert mask.min() == torch.finfo(torch.float32).min


def test_attention_without_4d_masks_scores_by_full_forwards(setup, monkeypatch):
    """Under an attention implementation that does not apply a 4-D mask as given (flash-attention reads a
    2-D padding mask), the packed forward would let options see each other: the full forwards score them."""
    from mllm import option_scoring

    model, builder, video = setup
    prefix = model.embed(torch.tensor([builder.encode(Turn(QUESTION)).input_ids]), video)
    options = [builder.encode_answer(o) for o in OPTIONS]
    calls = []
    forward = model.llm.forward
    monkeypatch.setattr(model.llm, "forward", lambda *a, **kw: calls.append(kw) or forward(*a, **kw))
    packed, _, mask = option_logits_cached(model.llm, prefix, options)
    assert model.llm.config._attn_implementation in option_scoring.PACKED_MASK_ATTENTION and len(calls) == 1
    monkeypatch.setattr(option_scoring, "PACKED_MASK_ATTENTION", frozenset())  # as under flash-attention
    calls.clear()
    logits, _, _ = option_logits_cached(model.llm, prefix, options)
    assert len(calls) == len(options) and all("attention_mask" not in kw for kw in calls)  # one per option
    assert (packed[mask.bool()] - logits[mask.bool()]).abs().max() < 1e-4
