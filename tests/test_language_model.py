"""LLM loading, the 4-bit config, LoRA placement, gradient checkpointing, adapter save/load and the tiny LLM."""

import json
import logging
from pathlib import Path

import pytest
import torch
from conftest import load_script
from tiny_llm_fixtures import ELEMENT_NAMES
from torch import nn

from mllm.language_model import (
    LLMConfig,
    LoraOptions,
    apply_lora,
    build_quantization_config,
    load_adapter,
    load_adapter_weights,
    load_language_model,
    lora_target_modules,
    save_adapter,
    tiny_llm_corpus,
)
from mllm.tokenizer import load_tokenizer
from sefar_encoder.runtime.config import ConfigError

pytest_plugins = ["tiny_llm_fixtures"]

LLAMA_LINEARS = ["down_proj", "gate_proj", "k_proj", "o_proj", "q_proj", "up_proj", "v_proj"]


def test_quantization_config_is_nf4_double_quant():
    assert build_quantization_config(LLMConfig(name_or_path="x")) is None
    q = build_quantization_config(
        LLMConfig(name_or_path="x", load_in_4bit=True, bnb_4bit_compute_dtype="float16")
    )
    assert q.load_in_4bit and not q.load_in_8bit
    assert q.bnb_4bit_quant_type == "nf4" and q.bnb_4bit_use_double_quant
    assert q.bnb_4bit_compute_dtype == torch.float16
    with pytest.raises(ValueError, match="bnb_4bit_compute_dtype"):
        build_quantization_config(
            LLMConfig(name_or_path="x", load_in_4bit=True, bnb_4bit_compute_dtype="int4")
        )


def test_4bit_without_cuda_fails_at_once(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ConfigError, match="needs a CUDA GPU"):
        load_language_model(LLMConfig(name_or_path="does/not-matter", load_in_4bit=True))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="4-bit nf4 loading needs a CUDA GPU (bitsandbytes)")
def test_4bit_load_and_qlora_on_cuda(tiny_llm_dir: Path):
    model = load_language_model(LLMConfig(name_or_path=str(tiny_llm_dir), load_in_4bit=True))
    assert model.is_loaded_in_4bit
    model = apply_lora(model, LoraOptions(enabled=True, r=4, alpha=8), gradient_checkpointing=True)
    ids = torch.tensor([[1, 5, 6, 7]], device="cuda")
    model(input_ids=ids, labels=ids).loss.backward()
    assert all(p.grad is not None for n, p in model.named_parameters() if p.requires_grad)


def test_defaults():
    lora, llm = LoraOptions(), LLMConfig()
    assert (lora.r, lora.alpha, lora.dropout, lora.target_modules) == (128, 256, 0.05, [])
    assert llm.trust_remote_code is False and llm.load_in_4bit is False


def test_load_lora_targets_every_linear_but_lm_head(tiny_llm_dir: Path):
    model = load_language_model(LLMConfig(name_or_path=str(tiny_llm_dir)))
    assert lora_target_modules(model) == LLAMA_LINEARS
    peft_model = apply_lora(model, LoraOptions(enabled=True, r=4, alpha=8))
    adapted = {n.rsplit(".", 2)[0] for n, _ in peft_model.named_parameters() if "lora_A" in n}
    assert len(adapted) == len(LLAMA_LINEARS) * model.config.num_hidden_layers
    assert not any("lm_head" in name for name in adapted)
    trainable = [n for n, p in peft_model.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n in trainable)
    assert peft_model.peft_config["default"].r == 4 and peft_model.peft_config["default"].lora_alpha == 8


def test_gradient_checkpointing_trains(tiny_llm_dir: Path):
    model = load_language_model(LLMConfig(name_or_path=str(tiny_llm_dir), gradient_checkpointing=True))
    assert model.is_activation_checkpointing and model.config.use_cache is False
    model = apply_lora(model, LoraOptions(enabled=True, r=4, alpha=8), gradient_checkpointing=True)
    model.train()
    ids = torch.tensor([[1, 10, 11, 12, 13, 2]])
    model(input_ids=ids, labels=ids).loss.backward()
    grads = [p.grad for n, p in model.named_parameters() if p.requires_grad]
    assert all(g is not None for g in grads) and any(g.abs().sum() > 0 for g in grads)


def test_adapter_save_load_round_trip(tmp_path: Path, tiny_llm_dir: Path):
    cfg = LLMConfig(name_or_path=str(tiny_llm_dir))
    model = apply_lora(load_language_model(cfg), LoraOptions(enabled=True, r=4, alpha=8))
    with torch.no_grad():  # LoRA B starts at zero; make the adapter matter
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(std=0.05)
    save_adapter(model, tmp_path / "adapter")
    assert (tmp_path / "adapter" / "adapter_model.safetensors").is_file()
    reloaded = load_adapter(load_language_model(cfg), tmp_path / "adapter")
    ids = torch.tensor([[1, 20, 21, 22, 23]])
    model.eval()
    with torch.no_grad():
        assert torch.allclose(model(input_ids=ids).logits, reloaded(input_ids=ids).logits, atol=1e-6)
        assert not torch.allclose(model(input_ids=ids).logits, load_language_model(cfg)(input_ids=ids).logits)
    assert not any(p.requires_grad for p in reloaded.parameters())
    # the weights alone, into a fresh adapter with the same settings (stage B's init_from)
    fresh = apply_lora(load_language_model(cfg), LoraOptions(enabled=True, r=4, alpha=8))
    assert load_adapter_weights(fresh, tmp_path / "adapter" / "adapter_model.safetensors") == []
    fresh.eval()
    with torch.no_grad():
        assert torch.allclose(model(input_ids=ids).logits, fresh(input_ids=ids).logits, atol=1e-6)
    assert (
        load_adapter_weights(load_language_model(cfg), tmp_path / "adapter" / "adapter_model.safetensors")
        is None
    )


def test_only_the_unused_cpu_4bit_kernel_warning_is_dropped(caplog: pytest.LogCaptureFixture):
    """mllm/__init__.py filters bitsandbytes' import-time notice about a CPU 4-bit kernel it could not fetch."""
    logger = logging.getLogger("bitsandbytes.backends.cpu.ops")
    with caplog.at_level(logging.WARNING, logger=logger.name):
        logger.warning("Failed to load CPU gemm_4bit_forward from kernels-community: %s.", "offline")
        logger.warning("some other bitsandbytes warning")
    assert [r.getMessage() for r in caplog.records] == ["some other bitsandbytes warning"]


def test_tiny_llm_directory_loads_like_vicuna(tiny_llm_dir: Path):
    names = {p.name for p in tiny_llm_dir.iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.model", "tokenizer_config.json"} <= names
    assert not any(n.endswith(".bin") for n in names)
    tok_cfg = json.loads((tiny_llm_dir / "tokenizer_config.json").read_text())
    assert tok_cfg["add_bos_token"] is True and tok_cfg["add_eos_token"] is False
    tokenizer = load_tokenizer(tiny_llm_dir)
    model = load_language_model(LLMConfig(name_or_path=str(tiny_llm_dir)))
    assert model.config.vocab_size == len(tokenizer)
    assert (model.config.bos_token_id, model.config.eos_token_id) == (1, 2)
    assert isinstance(model.get_output_embeddings(), nn.Linear)


def test_corpus_lines_use_the_prompt_template():
    lines = tiny_llm_corpus(ELEMENT_NAMES, seed=3)
    assert len(lines) == 3 * len(ELEMENT_NAMES) and lines == tiny_llm_corpus(ELEMENT_NAMES, seed=3)
    assert any(line.startswith("A chat between") and " ASSISTANT: " in line for line in lines)
    with pytest.raises(ValueError, match="at least 4"):
        tiny_llm_corpus(ELEMENT_NAMES[:3])


def test_make_tiny_llm_script(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n".join(tiny_llm_corpus(ELEMENT_NAMES)) + "\n")
    out = tmp_path / "llm"
    make_tiny_llm = load_script("make_tiny_llm")
    assert make_tiny_llm.main(["--corpus", str(corpus), "--out", str(out), "--micro", "--steps", "2"]) == 0
    assert (out / "model.safetensors").is_file() and (out / "tokenizer.model").is_file()
    assert load_language_model(LLMConfig(name_or_path=str(out))).config.hidden_size == 64
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        make_tiny_llm.main(["--help"])
    assert exit_info.value.code == 0
    help_text = capsys.readouterr().out
    assert "--vocab-size" in help_text and "--steps" in help_text and "FineGym" in help_text
