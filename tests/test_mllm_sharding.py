"""The MLLM under FSDP (``mllm.sharding``): the wrap policy gives every unit one dtype (a bf16 LLM beside the
float32 projector and LoRA weights, the Vicuna layout), evaluation runs as many forwards on every process,
and (slow) ``scripts/train_mllm.py`` trains, evaluates, saves and resumes under FSDP on 2 CPU processes.

accelerate (1.16) runs FSDP only on GPUs: on CPU processes its state stays DDP (``MULTI_CPU``), and the
shipped ``fsdp_sync_module_states: true`` is refused on CPU. The 2-process test therefore switches the
state to FSDP itself (:func:`main` below, run by ``accelerate launch``), so that ``accelerator.prepare``
takes its real FSDP1 path over gloo with the shipped ``configs/accelerate/fsdp.yaml`` otherwise.
"""

from __future__ import annotations

import functools
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import torch.distributed as dist
from accelerate.utils import DistributedType
from conftest import REPO, SCRIPTS, load_script
from mllm_run_fixtures import write_config
from safetensors.torch import load_file
from torch.distributed.fsdp import FullyShardedDataParallel as FSDP
from torch.distributed.fsdp.wrap import transformer_auto_wrap_policy
from transformers.models.llama.modeling_llama import LlamaDecoderLayer

from mllm.language_model import LLMConfig, LoraOptions
from mllm.multimodal_model import MultimodalConfig, MultimodalModel
from mllm.sharding import forward_chunks, fsdp_wrap_policy, full_state_dict, load_weights, trainable_state

pytest_plugins = ["mllm_run_fixtures", "tiny_llm_fixtures"]  # mllm_data, tiny_llm_dir
CPU = torch.device("cpu")


@pytest.fixture()
def one_process_group(tmp_path: Path):
    """A gloo process group of one process (FSDP needs one; with one process it flattens, not shards)."""
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    yield
    dist.destroy_process_group()


def vicuna_layout(llm_dir: Path, lora: bool) -> MultimodalModel:
    """The micro LLM in bf16 with the float32 projector (and LoRA), everything trainable as in stage B."""
    cfg = MultimodalConfig(
        llm=LLMConfig(name_or_path=str(llm_dir), dtype="bfloat16"),
        lora=LoraOptions(enabled=lora, r=4, alpha=8, dropout=0.0),
        llm_trainable=True,
    )
    torch.manual_seed(0)
    return MultimodalModel.build(cfg, video_token_id=0, encoder_dim=12)


def nll(model: torch.nn.Module) -> torch.Tensor:
    ids = torch.tensor([[1, 5, 0, 0, 7, 9, 11]])  # two placeholder ids (0) for two video tokens
    video = torch.linspace(-1, 1, 24).reshape(1, 2, 12)
    return model(input_ids=ids, video_features=video, labels=torch.where(ids == 0, -100, ids)).loss


@pytest.mark.parametrize("lora", [False, True], ids=["full", "lora"])
@pytest.mark.parametrize("names", [None, ["LlamaDecoderLayer"]], ids=["default_layers", "named_layers"])
def test_wrap_policy_gives_every_unit_one_dtype(tiny_llm_dir, one_process_group, lora, names):
    model = vicuna_layout(tiny_llm_dir, lora)
    assert model.projector[0].weight.dtype == torch.float32
    assert model.llm.get_input_embeddings().weight.dtype == torch.bfloat16
    reference = nll(model).item()
    # The decoder layers alone as units (the accelerate config's policy): the root mixes the dtypes.
    layers_only = functools.partial(transformer_auto_wrap_policy, transformer_layer_cls={LlamaDecoderLayer})
    with pytest.raises(ValueError, match="uniform dtype"):
        FSDP(
            vicuna_layout(tiny_llm_dir, lora),
            auto_wrap_policy=layers_only,
            use_orig_params=True,
            device_id=CPU,
        )

    lora_linears = sum(name.endswith("lora_A.default") for name, _ in model.named_modules())
    wrapped = FSDP(
        model, auto_wrap_policy=fsdp_wrap_policy(model, names), use_orig_params=True, device_id=CPU
    )
    units: dict[str, list[torch.dtype]] = {}  # module class -> the dtype of each unit's flat parameter
    for unit in FSDP.fsdp_modules(wrapped):
        if unit.params:
            units.setdefault(type(unit.module).__name__, []).append(unit.params[0].dtype)
    bf16, fp32 = torch.bfloat16, torch.float32
    assert units == {
        "MultimodalModel": [bf16],  # the root: embeddings, final norm, output head
        "LlamaDecoderLayer": [bf16, bf16],
        "Linear": [fp32] * (2 + 2 * lora_linears),  # the projector's two, LoRA's A and B per adapted layer
    }
    assert isinstance(model.projector[0], FSDP) and isinstance(model.projector[2], FSDP)
    assert nll(wrapped).item() == pytest.approx(reference, abs=1e-6)  # one process: the same computation


def test_weights_are_read_and_written_whole_under_fsdp(tiny_llm_dir, one_process_group):
    """What a checkpoint, its resume and the MLLM export do with a wrapped model (one process: the path
    through torch.distributed.checkpoint's full state dict, not the sharding itself)."""
    model = vicuna_layout(tiny_llm_dir, lora=True)
    keys = model.state_dict().keys()
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    frozen = {n: p.detach().clone() for n, p in model.named_parameters() if not p.requires_grad}
    wrapped = FSDP(model, auto_wrap_policy=fsdp_wrap_policy(model), use_orig_params=True, device_id=CPU)
    accelerator = SimpleNamespace(distributed_type=DistributedType.FSDP, unwrap_model=lambda m: m.module)
    assert full_state_dict(accelerator, wrapped).keys() == keys  # the unwrapped module's names
    new = {n: torch.full_like(v, 0.5) for n, v in trainable_state(accelerator, wrapped, trainable).items()}
    assert new.keys() == set(trainable)
    load_weights(accelerator, wrapped, new)
    full = full_state_dict(accelerator, wrapped)
    assert all(torch.equal(full[n], v) for n, v in new.items())
    assert all(torch.equal(full[n], v) for n, v in frozen.items())  # a partial load leaves the rest


def test_wrap_policy_names_a_missing_layer_class(tiny_llm_dir):
    with pytest.raises(ValueError, match="GPT2Block"):
        fsdp_wrap_policy(vicuna_layout(tiny_llm_dir, lora=False), ["GPT2Block"])


@pytest.mark.parametrize("n, micro", [(3, 1), (5, 2), (1, 2), (8, 2)])
def test_every_process_runs_as_many_forwards_under_fsdp(n, micro):
    def shares(kind: DistributedType) -> list[list[list[int]]]:
        return [
            forward_chunks(SimpleNamespace(distributed_type=kind, process_index=r, num_processes=2), n, micro)
            for r in range(2)
        ]

    for kind in (DistributedType.MULTI_CPU, DistributedType.FSDP):
        chunks = shares(kind)
        samples = sorted(i for share in chunks for chunk in share for i in chunk)
        assert samples == list(range(n))  # every sample once, whatever the padding
        assert all(0 < len(chunk) <= micro for share in chunks for chunk in share if chunk)
    assert len({len(share) for share in shares(DistributedType.FSDP)}) == 1
    assert all(chunk for share in shares(DistributedType.MULTI_CPU) for chunk in share)  # DDP: no padding


# ------------------------------------------------------------------------------------ 2 CPU processes
def main(argv: list[str]) -> int:
    """``scripts/train_mllm.py``'s main with accelerate's state switched from DDP to FSDP on CPU processes."""
    from accelerate import state

    initialise = state.AcceleratorState.__init__

    def initialise_with_fsdp(self, *args, **kwargs):
        initialise(self, *args, **kwargs)
        if self.distributed_type == DistributedType.MULTI_CPU and kwargs.get("fsdp_plugin") is not None:
            self.fsdp_plugin = kwargs["fsdp_plugin"]
            self.distributed_type = DistributedType.FSDP
            state.PartialState._shared_state["distributed_type"] = DistributedType.FSDP
            self.device = CPU  # FSDP's device_id on CPU: the device without an index

    state.AcceleratorState.__init__ = initialise_with_fsdp
    return load_script("train_mllm").main(argv)


def _losses(run_dir: Path) -> list[float]:
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [r["loss"] for r in records if "loss" in r]


def _saved(mllm_dir: Path) -> dict[str, torch.Tensor]:
    adapter = load_file(str(mllm_dir / "adapter" / "adapter_model.safetensors"))
    return {**load_file(str(mllm_dir / "projector.safetensors")), **adapter}


@pytest.mark.slow
@pytest.mark.timeout(2400)  # three runs of the micro LLM; 2 x 2 processes on 2 cores
def test_train_mllm_under_fsdp_on_two_cpu_processes(mllm_data, tiny_llm_dir, tmp_path):
    """bf16 micro LLM + float32 projector and LoRA (the layout that failed to wrap), 3 val samples over 2
    processes (one pads its evaluation): the per-step losses and the val loss follow 1 process, the saved
    MLLM holds the full weights of the last checkpoint, and --resume loads them back into the shards."""
    val = [line.split() for line in (mllm_data["root"] / "val.csv").read_text().splitlines()][:3]
    (tmp_path / "val3.csv").write_text("".join(f"{mllm_data['root'] / p} {y}\n" for p, y in val))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "ACCELERATE_USE_CPU": "1"}
    runs = {}
    for name in ("one", "fsdp"):
        config = write_config(
            tmp_path / f"{name}.yaml",
            mllm_data,
            tiny_llm_dir,
            tmp_path / name,
            llm={"dtype": "bfloat16"},
            lora={"dropout": 0.0},
            eval={"list_file": str(tmp_path / "val3.csv")},
            instruct={"init_from": "", "max_steps": 4, "batch_size": 4, "micro_batch_size": 1},
        )
        args = [str(SCRIPTS / "train_mllm.py"), "--config", str(config), "--stage", "instruct"]
        if name == "fsdp":  # the shipped config, without what accelerate refuses on CPU
            fsdp = [
                "--config_file",
                str(REPO / "configs/accelerate/fsdp.yaml"),
                "--fsdp_sync_module_states",
                "false",
            ]
            args = ["-m", "accelerate.commands.launch", *fsdp, "--num_processes", "2", __file__, *args[1:]]
        runs[name] = [sys.executable, *args]
        result = subprocess.run(runs[name], capture_output=True, text=True, env=env, timeout=900, check=False)
        assert result.returncode == 0, result.stderr[-3000:]
    one, fsdp = tmp_path / "one" / "instruct", tmp_path / "fsdp" / "instruct"
    metrics = {run: json.loads((run / "metrics.json").read_text()) for run in (one, fsdp)}
    assert metrics[fsdp]["processes"] == 2 and metrics[fsdp]["grad_accum"] == 2
    assert _losses(fsdp) == pytest.approx(_losses(one), abs=0.03)  # bf16 weights, other summation orders
    assert metrics[fsdp]["val_loss"] == pytest.approx(metrics[one]["val_loss"], abs=0.03)

    # The saved MLLM holds the full trained weights: those of the last checkpoint (gathered separately).
    checkpoint = load_file(str(next((fsdp / "checkpoints").glob("step_*")) / "tensors.safetensors"))
    trained = {k.removeprefix("trainable."): v for k, v in checkpoint.items() if k.startswith("trainable.")}
    loaded = dict(MultimodalModel.from_pretrained(fsdp / "mllm").named_parameters())
    assert len(trained) == 4 + 2 * 14  # the projector's 4; LoRA A and B of the 14 linear layers
    assert trained.keys() <= loaded.keys()
    for name, value in trained.items():
        torch.testing.assert_close(loaded[name].float(), value.float(), rtol=0, atol=0, msg=name)
    assert all(v.abs().sum() > 0 for k, v in trained.items() if "lora_B" in k)  # trained (B starts at 0)
    saved = _saved(fsdp / "mllm")
    assert {k: v.shape for k, v in saved.items()} == {k: v.shape for k, v in _saved(one / "mllm").items()}

    # --resume of the run at its last checkpoint: the weights go back into the shards, then are saved again.
    (fsdp / "metrics.json").unlink()
    shutil.rmtree(fsdp / "mllm")
    result = subprocess.run(
        [*runs["fsdp"], "--resume"], capture_output=True, text=True, env=env, timeout=900, check=False
    )
    assert result.returncode == 0, result.stderr[-3000:]
    resumed = _saved(fsdp / "mllm")
    assert resumed.keys() == saved.keys() and all(torch.equal(v, saved[k]) for k, v in resumed.items())


if __name__ == "__main__":  # run by `accelerate launch` in the test above
    sys.exit(main(sys.argv[1:]))
