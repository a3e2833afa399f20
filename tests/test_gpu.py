"""The GPU self-check (``make gpu-check``, issue 18 point 10): what a user with a CUDA GPU meets first, on
tiny models, through the toolkit's own entry points and shipped accelerate configs —

- the micro Llama loaded in 4 bit (bitsandbytes nf4, double quantisation) gives the fp32 model's logits;
- one QLoRA step (4-bit LLM + LoRA, bf16 mixed precision, gradient checkpointing) trains the adapter;
- DeepSpeed ZeRO-2 initialises through accelerate (``configs/accelerate/deepspeed_zero2.yaml``) and trains;
- FSDP wraps and trains the whole LLM in bf16 (``configs/accelerate/fsdp.yaml``, its documented command);
- the SeFAR encoder's bf16 autocast step: bf16 activations, fp32 finite gradients, and a bf16 training run.

Every test is marked ``cuda`` (not in the default run) and skipped, with the reason, without a CUDA GPU;
the DeepSpeed test also without the ``gpu`` extra.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import REPO, SCRIPTS, load_script
from mllm_run_fixtures import ENCODER_CFG, write_config
from synthgym_fixtures import tiny_cli_args

from mllm.language_model import LLMConfig, load_language_model
from sefar_encoder.model import SeFAREncoder

pytest_plugins = ["mllm_run_fixtures", "tiny_llm_fixtures", "synthgym_fixtures"]

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(
        not torch.cuda.is_available(),
        reason=f"no CUDA GPU here (torch {torch.__version__}: torch.cuda.is_available() is False); "
        "`make gpu-check` runs these tests on a machine with one",
    ),
]
BF16_QLORA = {  # the Vicuna recipe's LLM settings (configs/mllm/vicuna7b_qlora.yaml), on the micro Llama
    "dtype": "bfloat16",
    "load_in_4bit": True,
    "bnb_4bit_compute_dtype": "bfloat16",
    "gradient_checkpointing": True,
}


def processes() -> int:
    return min(2, torch.cuda.device_count())


def stage_config(tmp_path: Path, mllm_data, tiny_llm_dir, name: str, **sections) -> tuple[Path, Path]:
    """A stage B config of a few steps under ``tmp_path/name`` (no stage A: ``init_from`` empty)."""
    runs = tmp_path / name
    instruct = {
        "init_from": "",
        "max_steps": 2,
        "batch_size": 4,
        "micro_batch_size": 2,
        **sections.pop("instruct", {}),
    }
    config = write_config(
        tmp_path / f"{name}.yaml", mllm_data, tiny_llm_dir, runs,
        mixed_precision="bf16", eval={"list_file": ""}, instruct=instruct, **sections,
    )  # fmt: skip
    return config, runs / "instruct"


def launch(accelerate_config: str, config: Path, *overrides: str) -> subprocess.CompletedProcess:
    """``accelerate launch --config_file configs/accelerate/<accelerate_config>`` of stage B, from the repo
    (the DeepSpeed config names its JSON by a repo-relative path)."""
    cmd = [
        sys.executable, "-m", "accelerate.commands.launch",
        "--config_file", str(REPO / "configs" / "accelerate" / accelerate_config),
        "--num_processes", str(processes()),
        str(SCRIPTS / "train_mllm.py"), "--config", str(config), "--stage", "instruct", *overrides,
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, env=env, timeout=1200, check=False)


def finished(stage_dir: Path, result: subprocess.CompletedProcess | None = None) -> dict:
    """The stage's metrics.json after a successful run with finite losses and a saved MLLM."""
    if result is not None:
        assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]
    metrics = json.loads((stage_dir / "metrics.json").read_text())
    assert metrics["nonfinite_steps"] == 0 and metrics["steps"] == 2
    assert torch.isfinite(torch.tensor([metrics["first_loss"], metrics["final_loss"]])).all()
    assert (stage_dir / "mllm" / "mllm_config.json").is_file()
    return metrics


# ----------------------------------------------------------------------------------------- 4 bit, QLoRA
def test_4bit_load_of_the_micro_llama(tiny_llm_dir):
    import bitsandbytes as bnb

    quantised = load_language_model(LLMConfig(name_or_path=str(tiny_llm_dir), load_in_4bit=True))
    layers = [m for m in quantised.modules() if isinstance(m, bnb.nn.Linear4bit)]
    assert quantised.is_loaded_in_4bit and layers
    assert all(m.weight.quant_type == "nf4" and m.weight.quant_state.nested for m in layers)  # double quant.
    reference = load_language_model(LLMConfig(name_or_path=str(tiny_llm_dir))).cuda().eval()
    ids = torch.arange(1, 33, device="cuda")[None]  # [1, 32]
    with torch.no_grad():
        got, want = quantised(input_ids=ids).logits.float(), reference(input_ids=ids).logits
    assert torch.isfinite(got).all()
    assert torch.nn.functional.cosine_similarity(got.flatten(), want.flatten(), dim=0) > 0.9
    assert quantised.get_memory_footprint() < reference.get_memory_footprint()


def test_one_qlora_step_under_bf16(mllm_data, tiny_llm_dir, tmp_path):
    config, stage_dir = stage_config(tmp_path, mllm_data, tiny_llm_dir, "qlora", llm=BF16_QLORA)
    train = load_script("train_mllm")
    assert train.main(["--config", str(config), "--stage", "instruct"]) == 0
    finished(stage_dir)
    saved = json.loads((stage_dir / "mllm" / "mllm_config.json").read_text())["config"]
    assert saved["llm"]["load_in_4bit"] and saved["lora"]["enabled"]
    from safetensors.torch import load_file

    adapter = {
        k: v for f in (stage_dir / "mllm").rglob("*.safetensors") for k, v in load_file(str(f)).items()
    }
    lora_b = [v for k, v in adapter.items() if "lora_B" in k]
    assert lora_b and any(v.abs().sum() > 0 for v in lora_b)  # B starts at zero: the step trained LoRA


# ----------------------------------------------------------------------------------------- distributed
def test_deepspeed_zero2_initialises_through_accelerate(mllm_data, tiny_llm_dir, tmp_path):
    pytest.importorskip(
        "deepspeed", reason='DeepSpeed is the gpu extra: pip install -c constraints.txt -e ".[gpu]"'
    )
    config, stage_dir = stage_config(tmp_path, mllm_data, tiny_llm_dir, "zero2", llm=BF16_QLORA)
    result = launch("deepspeed_zero2.yaml", config)
    assert finished(stage_dir, result)["processes"] == processes()
    assert "deepspeed" in (result.stdout + result.stderr).lower()  # the engine was initialised


def test_fsdp_wraps_and_trains_the_llm_in_bf16(mllm_data, tiny_llm_dir, tmp_path):
    # configs/accelerate/fsdp.yaml's own command: the whole LLM trained, not 4 bit, no LoRA
    llm = {**BF16_QLORA, "load_in_4bit": False}
    config, stage_dir = stage_config(tmp_path, mllm_data, tiny_llm_dir, "fsdp", llm=llm)
    result = launch("fsdp.yaml", config, "llm.load_in_4bit=false", "lora.enabled=false")
    metrics = finished(stage_dir, result)
    assert metrics["processes"] == processes()
    assert "Must flatten tensors with uniform dtype" not in result.stderr


# ----------------------------------------------------------------------------------------- encoder
def test_encoder_bf16_autocast_step_and_training_run(synthgym_tiny, tmp_path):
    torch.manual_seed(0)
    model = SeFAREncoder(ENCODER_CFG).cuda().train()
    video = torch.randn(2, 3, sum(ENCODER_CFG.views), 32, 32, device="cuda")
    with torch.autocast("cuda", dtype=torch.bfloat16):
        out = model(video)
    assert out.logits.dtype == torch.bfloat16  # the matmuls ran in bf16
    torch.nn.functional.cross_entropy(out.logits.float(), torch.tensor([0, 1], device="cuda")).backward()
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert grads and all(g.dtype == torch.float32 and torch.isfinite(g).all() for g in grads)

    train = load_script("train_encoder")  # warm-up epoch, then an SSL epoch with the EMA teacher, in bf16
    run = tmp_path / "bf16"
    assert train.main(tiny_cli_args(synthgym_tiny, run, "method.name=sefar", "mixed_precision=bf16")) == 0
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["nonfinite_steps"] == 0 and len(metrics["history"]) == 2
    assert all(torch.isfinite(torch.tensor(r["train"]["loss"])) for r in metrics["history"])
