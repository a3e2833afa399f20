"""Projector + LLM composition: placeholder filling with count checks, trainable flags, checkpoint round
trip, and streamed generation from the merged embeddings."""

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from mllm.generation import GenerationOptions, generate_answer, stream_generate
from mllm.language_model import LLMConfig, LoraOptions
from mllm.multimodal_model import MultimodalConfig, MultimodalModel, VideoTokenMismatchError
from mllm.projector import PROJECTORS, build_projector
from mllm.prompting import PromptBuilder, Turn, pad_batch
from mllm.tokenizer import load_tokenizer

pytest_plugins = ["tiny_llm_fixtures"]

N, D_ENC = 4, 12  # video tokens per clip, encoder width


def _model(llm_dir: Path, *, lora: bool = False, projector: str = "mlp2x_gelu") -> MultimodalModel:
    cfg = MultimodalConfig(
        llm=LLMConfig(name_or_path=str(llm_dir)), lora=LoraOptions(enabled=lora, r=4, alpha=8)
    )
    cfg.projector.type = projector
    cfg.llm_trainable = lora
    torch.manual_seed(0)
    return MultimodalModel.build(
        cfg, video_token_id=0, encoder_dim=D_ENC, encoder_fingerprint="sefar-test-fp"
    )


@pytest.fixture()
def builder(tiny_llm_dir: Path) -> PromptBuilder:
    return PromptBuilder(load_tokenizer(tiny_llm_dir), num_video_tokens=N)


def _batch(builder: PromptBuilder) -> dict[str, torch.Tensor]:
    samples = [
        builder.encode(Turn("What move is this?", "salto backward tucked"), sample_id="a"),
        builder.encode([Turn("Event?", "floor"), Turn("Twists?", "2")], sample_id="b"),
    ]
    return pad_batch(samples, builder.tokenizer.pad_token_id)


@pytest.mark.parametrize("name", sorted(PROJECTORS))
def test_projectors_map_encoder_width_to_llm_width(name: str):
    projector = build_projector(name, D_ENC, 64)
    assert projector(torch.randn(2, N, D_ENC)).shape == (2, N, 64)
    if name == "mlp2x_gelu":  # LLaVA's mm_projector layout: Linear, GELU, Linear
        assert [type(m).__name__ for m in projector] == ["Linear", "GELU", "Linear"]
    with pytest.raises(ValueError, match="unknown projector"):
        build_projector("qformer", D_ENC, 64)


def test_placeholders_are_replaced_by_projected_tokens_in_order(tiny_llm_dir: Path, builder: PromptBuilder):
    model = _model(tiny_llm_dir)
    batch = _batch(builder)
    video = torch.randn(2, N, D_ENC)
    embeds = model.embed(batch["input_ids"], video, batch["attention_mask"])
    plain = model.llm.get_input_embeddings()(batch["input_ids"])
    is_video = model.video_positions(batch["input_ids"], batch["attention_mask"])
    assert is_video.sum(1).tolist() == [N, N]
    for b in range(2):
        # Video token n fills the n-th placeholder of its sample.
        assert torch.allclose(embeds[b, is_video[b]], model.projector(video[b]))
    assert torch.equal(embeds[~is_video], plain[~is_video])


def test_padding_with_the_placeholder_id_is_not_a_video_token(tiny_llm_dir: Path, builder: PromptBuilder):
    model = _model(tiny_llm_dir)
    batch = pad_batch([builder.encode(Turn("q", "a")), builder.encode(Turn("a longer question", "b"))], 0)
    assert (batch["input_ids"][0] == 0).sum() > N  # pads share the placeholder id
    model.embed(batch["input_ids"], torch.randn(2, N, D_ENC), batch["attention_mask"])  # no error
    with pytest.raises(VideoTokenMismatchError, match="sample 0 has"):
        model.embed(batch["input_ids"], torch.randn(2, N, D_ENC))  # without the mask the pads would count


def test_count_mismatches_fail_loudly(tiny_llm_dir: Path, builder: PromptBuilder):
    model = _model(tiny_llm_dir)
    batch = _batch(builder)
    with pytest.raises(VideoTokenMismatchError, match=f"sample 0 has {N} .* N={N + 1}"):
        model(**batch, video_features=torch.randn(2, N + 1, D_ENC))
    with pytest.raises(VideoTokenMismatchError, match="no video_features"):
        model(**batch)
    with pytest.raises(VideoTokenMismatchError, match="B=2"):
        model(**batch, video_features=torch.randn(1, N, D_ENC))
    bad_labels = batch["labels"].clone()
    bad_labels[model.video_positions(batch["input_ids"], batch["attention_mask"])] = 5
    with pytest.raises(ValueError, match="IGNORE_INDEX at video placeholder"):
        model(batch["input_ids"], batch["attention_mask"], bad_labels, torch.randn(2, N, D_ENC))


def test_stage_a_trains_the_projector_only(tiny_llm_dir: Path, builder: PromptBuilder):
    model = _model(tiny_llm_dir)
    batch = _batch(builder)
    out = model(**batch, video_features=torch.randn(2, N, D_ENC))
    assert torch.isfinite(out.loss) and out.logits.shape[:2] == batch["input_ids"].shape
    out.loss.backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.projector.parameters())
    assert not any(p.requires_grad for p in model.llm.parameters())


def test_stage_b_trains_projector_and_lora(tiny_llm_dir: Path, builder: PromptBuilder):
    model = _model(tiny_llm_dir, lora=True)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all(n.startswith("projector.") or "lora_" in n for n in trainable)
    assert any(n.startswith("projector.") for n in trainable)
    model(**_batch(builder), video_features=torch.randn(2, N, D_ENC)).loss.backward()
    model.set_trainable(projector=False, llm=False)
    assert not any(p.requires_grad for p in model.parameters())


def test_param_groups_give_the_projector_its_own_rate(tiny_llm_dir: Path):
    stage_a, stage_b = _model(tiny_llm_dir), _model(tiny_llm_dir, lora=True)
    (only,) = stage_a.param_groups(1e-3, projector_lr=5e-4)  # the LLM is frozen: no empty group
    assert only["name"] == "projector" and only["lr"] == only["peak_lr"] == 5e-4
    assert only["params"] == list(stage_a.projector.parameters())
    projector, llm = stage_b.param_groups(2e-4, projector_lr=2e-5)
    assert (projector["name"], projector["lr"], llm["name"], llm["lr"]) == ("projector", 2e-5, "llm", 2e-4)
    lora = [p for n, p in stage_b.llm.named_parameters() if "lora_" in n]
    assert llm["params"] == lora and projector["params"] == list(stage_b.projector.parameters())
    assert [g["peak_lr"] for g in stage_b.param_groups(2e-4)] == [2e-4, 2e-4]  # projector_lr None: lr


def test_save_from_a_given_state_dict(tmp_path: Path, tiny_llm_dir: Path):
    """What a sharded model saves: the gathered state dict's weights, not the module's own parameters."""
    model = _model(tiny_llm_dir, lora=True)
    gathered = {
        k: v + 1.0 if ("projector." in k or "lora_B" in k) else v for k, v in model.state_dict().items()
    }
    model.save_pretrained(tmp_path / "ckpt", state_dict=gathered)
    model.save_pretrained(tmp_path / "own")  # peft's own save: the same files, the same keys
    for name in ("adapter/adapter_model.safetensors", "projector.safetensors"):
        assert (
            load_file(str(tmp_path / "ckpt" / name)).keys() == load_file(str(tmp_path / "own" / name)).keys()
        )
    assert {p.name for p in (tmp_path / "ckpt" / "adapter").iterdir()} >= {"adapter_config.json"}
    loaded = MultimodalModel.from_pretrained(tmp_path / "ckpt")
    for name, value in loaded.state_dict().items():
        if "projector." in name or "lora_B" in name:
            torch.testing.assert_close(value, gathered[name], rtol=0, atol=0)
            assert not torch.equal(value, model.state_dict()[name])


def test_save_and_load_round_trip(tmp_path: Path, tiny_llm_dir: Path, builder: PromptBuilder):
    model = _model(tiny_llm_dir, lora=True, projector="linear")
    with torch.no_grad():
        for name, p in model.llm.named_parameters():
            if "lora_B" in name:
                p.normal_(std=0.05)
    model.save_pretrained(tmp_path / "ckpt")
    files = {p.name for p in (tmp_path / "ckpt").iterdir()}
    assert files == {"mllm_config.json", "projector.safetensors", "adapter"}
    meta = json.loads((tmp_path / "ckpt" / "mllm_config.json").read_text())
    assert meta["config"]["llm"]["name_or_path"] == str(tiny_llm_dir.resolve())
    assert meta["encoder_fingerprint"] == "sefar-test-fp" and meta["video_token_id"] == 0
    assert meta["config"]["projector"] == {"type": "linear", "in_dim": D_ENC, "out_dim": 64}

    loaded = MultimodalModel.from_pretrained(tmp_path / "ckpt")
    assert not any(p.requires_grad for p in loaded.parameters())
    batch, video = _batch(builder), torch.randn(2, N, D_ENC)
    model.eval()
    loaded.eval()
    with torch.no_grad():
        assert torch.allclose(
            model(**batch, video_features=video).logits, loaded(**batch, video_features=video).logits
        )
    resumed = MultimodalModel.from_pretrained(tmp_path / "ckpt", projector_trainable=True, llm_trainable=True)
    assert {n for n, p in resumed.named_parameters() if p.requires_grad} == {
        n for n, p in model.named_parameters() if p.requires_grad
    }


def test_greedy_generation_streams_the_argmax_continuation(tiny_llm_dir: Path, builder: PromptBuilder):
    model = _model(tiny_llm_dir).eval()
    video = torch.randn(1, N, D_ENC)
    prompt = builder.encode(Turn("What move is this?"))
    options = GenerationOptions(max_new_tokens=6)
    pieces = list(stream_generate(model, builder.tokenizer, torch.tensor([prompt.input_ids]), video, options))
    text = generate_answer(model, builder, "What move is this?", video, options)
    assert "".join(pieces) == text

    # Reference: step-by-step argmax over full forwards of the merged embeddings, stopping at EOS.
    ids = torch.tensor([prompt.input_ids])
    new = []
    with torch.no_grad():
        for _ in range(options.max_new_tokens):
            logits = model(ids, torch.ones_like(ids), video_features=video).logits
            token = int(logits[0, -1].argmax())
            new.append(token)
            if token == builder.tokenizer.eos_token_id:
                break
            ids = torch.cat([ids, torch.tensor([[token]])], dim=1)
    assert text == builder.tokenizer.decode(new, skip_special_tokens=True)


def test_sampling_is_seeded_and_errors_reach_the_consumer(tiny_llm_dir: Path, builder: PromptBuilder):
    model = _model(tiny_llm_dir).eval()
    video = torch.randn(1, N, D_ENC)
    sampled = GenerationOptions(max_new_tokens=5, do_sample=True, temperature=1.0, seed=7)
    assert generate_answer(model, builder, "Why?", video, sampled) == generate_answer(
        model, builder, "Why?", video, sampled
    )
    stream = generate_answer(model, builder, "Why?", video, GenerationOptions(max_new_tokens=50), stream=True)
    next(stream, None)
    stream.close()  # stops the worker thread early instead of waiting for 50 tokens
    with pytest.raises(ValueError, match="last turn must be unanswered"):
        generate_answer(model, builder, Turn("Why?", "because"), video)
    with pytest.raises(VideoTokenMismatchError):
        list(generate_answer(model, builder, "Why?", torch.randn(1, N + 2, D_ENC), stream=True))
    bad = GenerationOptions(max_new_tokens=3, do_sample=True, temperature=-1.0)
    with pytest.raises(ValueError, match="temperature"):
        generate_answer(model, builder, "Why?", video, bad)
