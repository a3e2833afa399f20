"""Small reliability fixes: device names for ``from_pretrained``, help texts that say what they mean."""

from __future__ import annotations

import runpy
from pathlib import Path

import pytest
import torch

from sefar_encoder.model import ModelConfig, SeFAREncoder

SCRIPTS = Path(__file__).resolve().parents[1] / "scripts"


@pytest.mark.parametrize("device", [torch.device("cpu:0"), "cpu:0", "cpu", torch.device("cpu")])
def test_from_pretrained_accepts_any_cpu_device_name(tmp_path: Path, device):
    cfg = ModelConfig(img_size=32, patch_size=16, embed_dim=16, depth=1, num_heads=2, num_classes=3)
    torch.manual_seed(0)
    saved = SeFAREncoder(cfg).eval()
    saved.save_pretrained(tmp_path / "enc")
    loaded = SeFAREncoder.from_pretrained(tmp_path / "enc", map_location=device).eval()
    assert next(loaded.parameters()).device.type == "cpu"
    assert all(torch.equal(a, b) for a, b in zip(saved.state_dict().values(), loaded.state_dict().values()))


def test_make_synthgym_help_shows_percent_signs(capsys):
    main = runpy.run_path(str(SCRIPTS / "make_synthgym.py"))["parse_args"]
    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    assert "5/10/20/100 % label-rate" in " ".join(out.split()) and "%%" not in out


def test_train_mllm_help_shows_the_given_config(tmp_path: Path, capsys):
    from mllm_run_fixtures import load_script

    train = load_script("train_mllm")
    config = tmp_path / "c.yaml"
    config.write_text("instruct:\n  lr: 1e-3\n  max_steps: 7\n")  # 1e-3: a YAML 1.1 string, read as a float
    with pytest.raises(SystemExit):
        train.main(["--config", str(config), "--help"])
    out = capsys.readouterr().out
    assert f"instruct.lr (float, default 0.0002; {config}: 0.001)" in out
    assert f"instruct.max_steps (int, default 0; {config}: 7)" in out
    assert "align.lr (float, default 0.001):" in out  # keys the file leaves alone: the class default
    with pytest.raises(SystemExit):
        train.main(["--help"])
    assert "instruct.lr (float, default 0.0002):" in capsys.readouterr().out
