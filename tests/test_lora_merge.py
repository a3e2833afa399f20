"""scripts/merge_lora.py: save -> load -> merge gives a standalone model with the unmerged model's logits."""

from pathlib import Path

import pytest
import torch
from conftest import load_script

from mllm.language_model import LLMConfig, LoraOptions, load_language_model
from mllm.multimodal_model import MultimodalConfig, MultimodalModel
from mllm.projector import ProjectorConfig
from mllm.tokenizer import load_tokenizer

pytest_plugins = ["tiny_llm_fixtures"]


def _merge_main(argv: list[str]) -> int:
    return load_script("merge_lora").main(argv)


def test_merge_matches_unmerged_logits(tmp_path: Path, tiny_llm_dir: Path):
    cfg = MultimodalConfig(
        llm=LLMConfig(name_or_path=str(tiny_llm_dir)),
        projector=ProjectorConfig(type="linear", in_dim=8),
        lora=LoraOptions(enabled=True, r=4, alpha=8),
        llm_trainable=True,
    )
    model = MultimodalModel.build(cfg, video_token_id=0, encoder_fingerprint="test")
    torch.manual_seed(0)
    with torch.no_grad():  # LoRA B starts at zero: give the adapter an effect worth merging
        for name, p in model.llm.named_parameters():
            if "lora_B" in name:
                p.normal_(std=0.05)
    model.save_pretrained(tmp_path / "ckpt")

    # The checkpoint directory is accepted (its adapter/ is used), as is the adapter directory itself.
    assert (
        _merge_main(
            ["--base", str(tiny_llm_dir), "--adapter", str(tmp_path / "ckpt"), "--out", str(tmp_path / "m")]
        )
        == 0
    )
    assert (tmp_path / "m" / "model.safetensors").is_file() and (tmp_path / "m" / "tokenizer.model").is_file()
    merged = load_language_model(LLMConfig(name_or_path=str(tmp_path / "m"))).eval()
    unmerged = MultimodalModel.from_pretrained(tmp_path / "ckpt").llm.eval()

    ids = torch.tensor(
        [load_tokenizer(tmp_path / "m")("The athlete performs salto backward tucked.")["input_ids"]]
    )
    with torch.no_grad():
        merged_logits, unmerged_logits = merged(input_ids=ids).logits, unmerged(input_ids=ids).logits
        base_logits = load_language_model(LLMConfig(name_or_path=str(tiny_llm_dir)))(input_ids=ids).logits
    assert torch.allclose(merged_logits, unmerged_logits, atol=1e-4)
    assert (merged_logits - base_logits).abs().max() > 1e-3  # the adapter really changed the model
    assert not any("lora" in name for name, _ in merged.named_parameters())


def test_merge_script_help_and_bad_adapter(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    with pytest.raises(SystemExit) as exit_info:
        _merge_main(["--help"])
    assert exit_info.value.code == 0
    help_text = capsys.readouterr().out
    assert "--adapter" in help_text and "standalone" in help_text
    assert _merge_main(["--base", "x", "--adapter", str(tmp_path), "--out", str(tmp_path / "o")]) == 2
