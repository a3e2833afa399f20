"""The two-stage MLLM training script on a 16-clip data set with the micro LLM: run directory contents,
SIGTERM + resume on the uninterrupted loss trajectory, loss going down, non-finite steps, the data order,
the sample formats, and (slow) 2 processes vs 1 with the same global batches."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import REPO, SCRIPTS, load_script
from mllm_run_fixtures import write_config
from safetensors.torch import load_file

from gym_qa import extract_letter
from gym_qa.questions import load_questions
from mllm.instruction_data import (
    CAPTION_QUESTION,
    caption_text,
    epoch_order,
    format_answer,
    option_continuations,
    process_micro_batches,
    question_samples,
)
from mllm.multimodal_model import CheckpointMismatchError, MultimodalModel
from mllm.prompting import PromptBuilder
from mllm.tokenizer import load_tokenizer
from mllm.training_config import MLLMTrainConfig
from sefar_encoder.runtime.config import load_config, save_config

pytest_plugins = ["mllm_run_fixtures", "tiny_llm_fixtures"]  # mllm_data, tiny_llm_dir
train = load_script("train_mllm")


def _losses(run_dir: Path) -> list[float | None]:
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [r["loss"] for r in records if "loss" in r]


def _weights(mllm_dir: Path) -> dict[str, torch.Tensor]:
    out = load_file(str(mllm_dir / "projector.safetensors"))
    adapter = mllm_dir / "adapter" / "adapter_model.safetensors"
    return {**out, **(load_file(str(adapter)) if adapter.is_file() else {})}


# ---------------------------------------------------------------------------------------- pure parts
@pytest.mark.parametrize("path", sorted((REPO / "configs" / "mllm").glob("*.yaml")), ids=lambda p: p.name)
def test_every_mllm_config_parses(path: Path):
    cfg = load_config(MLLMTrainConfig, path)
    for stage in train.STAGES:
        section = getattr(cfg, stage)
        assert section.batch_size % section.micro_batch_size == 0
    assert cfg.instruct.init_from == str(Path(cfg.align.out_dir) / "mllm")


def test_data_order_is_a_function_of_seed_and_epoch():
    a, b = epoch_order(10, seed=0, epoch=3), epoch_order(10, seed=0, epoch=3)
    assert np.array_equal(a, b) and sorted(a.tolist()) == list(range(10))
    assert not np.array_equal(a, epoch_order(10, seed=0, epoch=4))
    assert not np.array_equal(a, epoch_order(10, seed=1, epoch=3))
    batch = [7, 3, 9, 1, 4, 8, 0, 2]
    one = process_micro_batches(batch, 0, 1, 4)
    two = [process_micro_batches(batch, r, 2, 2) for r in range(2)]
    assert one == [[7, 3], [9, 1], [4, 8], [0, 2]]
    assert two == [[[7, 3], [9, 1]], [[4, 8], [0, 2]]]  # the same micro-batches, split over processes
    with pytest.raises(ValueError, match="does not split"):
        process_micro_batches(batch, 0, 3, 1)


def test_sample_formats(mllm_data, tiny_llm_dir):
    questions = load_questions(mllm_data["questions"])
    q = questions[0]
    samples, dropped = question_samples(questions, {q.video})
    assert dropped == len(questions) - 1 and samples[0].clip_id == q.video
    answer = samples[0].turns[0].answer
    assert answer == f"{q.answer}. {q.answer_text}" == format_answer(q.answer, q.answer_text)
    assert extract_letter(answer, q.options) == q.answer
    assert option_continuations(q)[q.answer_index] == answer
    assert option_continuations(q, "caption")[0] == caption_text(q.options[0])
    # Why "C. <text>": the option's words get the same ids as in the stage A caption.
    builder = PromptBuilder(load_tokenizer(tiny_llm_dir), num_video_tokens=4)
    name = "salto backward tucked"
    caption = builder.encode_answer(caption_text(name), add_eos=False)
    words = builder.encode_answer("The athlete performs", add_eos=False)
    name_ids = caption[len(words) : -1]  # drop the final "."
    assert builder.encode_answer(format_answer("C", name), add_eos=False)[-len(name_ids) :] == name_ids
    assert CAPTION_QUESTION == "Describe the move."


# ---------------------------------------------------------------------------------------- runs
def test_align_then_instruct_resume_follows_the_uninterrupted_run(
    mllm_data,
    tiny_llm_dir,
    tmp_path,
    monkeypatch,
):
    config = write_config(tmp_path / "c.yaml", mllm_data, tiny_llm_dir, tmp_path, instruct={"max_steps": 5})
    assert train.main(["--config", str(config), "--stage", "align"]) == 0
    align = tmp_path / "align"
    for name in (
        "config.yaml",
        "metrics.jsonl",
        "metrics.json",
        "report.md",
        "loss.png",
        "checkpoints/latest.json",
    ):
        assert (align / name).is_file(), name
    assert {p.name for p in (align / "mllm").iterdir()} == {
        "mllm_config.json",
        "projector.safetensors",
        "instruction.json",
    }
    metrics = json.loads((align / "metrics.json").read_text())
    assert metrics["steps"] == 2 and metrics["samples"] == 8 and metrics["grad_accum"] == 2  # 8 captions / 4
    assert metrics["val_loss"] is not None and len(_losses(align)) == 2

    # Stage B starts from stage A's projector.
    stage_a = MultimodalModel.from_pretrained(align / "mllm")
    fresh = MultimodalModel.from_pretrained(align / "mllm")
    torch.nn.init.zeros_(fresh.projector[0].weight)
    fresh.init_from(align / "mllm")
    assert torch.equal(fresh.projector[0].weight, stage_a.projector[0].weight)
    fresh.encoder_fingerprint = "0" * 64  # features of another encoder
    with pytest.raises(CheckpointMismatchError, match="another encoder"):
        fresh.init_from(align / "mllm")

    # Uninterrupted stage B (LoRA dropout 0.1: the RNG must be restored on resume too).
    assert train.main(["--config", str(config), "--stage", "instruct"]) == 0
    reference = _losses(tmp_path / "instruct")
    reference_weights = _weights(tmp_path / "instruct" / "mllm")
    assert (
        len(reference) == 5 and (tmp_path / "instruct" / "mllm" / "adapter" / "adapter_config.json").is_file()
    )

    # Interrupted by SIGTERM during step 3, then resumed.
    interrupted = write_config(
        tmp_path / "i.yaml",
        mllm_data,
        tiny_llm_dir,
        tmp_path,
        instruct={"max_steps": 5, "out_dir": str(tmp_path / "b")},
    )
    calls = {"n": 0}
    original = train.batch_nll

    def nll_with_sigterm(model, batch):
        if torch.is_grad_enabled():
            calls["n"] += 1
            if calls["n"] == 5:  # micro-batch 1 of step 3
                signal.raise_signal(signal.SIGTERM)
        return original(model, batch)

    monkeypatch.setattr(train, "batch_nll", nll_with_sigterm)
    assert train.main(["--config", str(interrupted), "--stage", "instruct"]) == 143
    monkeypatch.setattr(train, "batch_nll", original)
    assert json.loads((tmp_path / "b" / "checkpoints" / "latest.json").read_text())["name"] == "step_00000003"
    assert not (tmp_path / "b" / "mllm").exists()
    assert train.main(["--config", str(interrupted), "--stage", "instruct", "--resume"]) == 0
    resumed = _losses(tmp_path / "b")
    assert resumed == pytest.approx(reference, abs=1e-6)
    for key, value in _weights(tmp_path / "b" / "mllm").items():
        torch.testing.assert_close(value, reference_weights[key], atol=1e-6, rtol=0)
    # --resume on a finished run does nothing.
    assert train.main(["--config", str(interrupted), "--stage", "instruct", "--resume"]) == 0
    assert _losses(tmp_path / "b") == resumed


def test_instruct_loss_decreases_on_a_fixed_set(mllm_data, tiny_llm_dir, tmp_path):
    config = write_config(
        tmp_path / "c.yaml",
        mllm_data,
        tiny_llm_dir,
        tmp_path,
        lora={"dropout": 0.0, "r": 8, "alpha": 16},
        eval={"list_file": ""},
        instruct={"init_from": "", "max_steps": 20, "batch_size": 8, "micro_batch_size": 8, "lr": 1e-2},
    )
    assert train.main(["--config", str(config), "--stage", "instruct"]) == 0
    losses = _losses(tmp_path / "instruct")
    assert len(losses) == 20
    first, last = np.mean(losses[:3]), np.mean(losses[-3:])
    # Measured: 5.29 -> 4.87 (the micro LLM is near-uniform over its 400 tokens: ln 400 = 6.0).
    assert last < first - 0.25, losses
    assert max(losses[10:]) < min(losses[:3]), losses


def test_nonfinite_steps_are_skipped_then_stop_the_run(mllm_data, tiny_llm_dir, tmp_path, monkeypatch):
    config = write_config(
        tmp_path / "c.yaml",
        mllm_data,
        tiny_llm_dir,
        tmp_path,
        max_nonfinite_steps=2,
        eval={"list_file": ""},
        align={"max_steps": 4, "micro_batch_size": 4},
    )
    original = train.batch_nll
    calls = {"n": 0}

    def nan_on_step_2(model, batch):
        calls["n"] += 1
        loss = original(model, batch)
        return loss * float("nan") if calls["n"] == 2 else loss

    monkeypatch.setattr(train, "batch_nll", nan_on_step_2)
    assert train.main(["--config", str(config), "--stage", "align"]) == 0
    assert _losses(tmp_path / "align")[1] is None
    assert json.loads((tmp_path / "align" / "metrics.json").read_text())["nonfinite_steps"] == 1

    monkeypatch.setattr(train, "batch_nll", lambda model, batch: original(model, batch) * float("inf"))
    config = write_config(
        tmp_path / "d.yaml",
        mllm_data,
        tiny_llm_dir,
        tmp_path / "d",
        max_nonfinite_steps=2,
        eval={"list_file": ""},
    )
    assert train.main(["--config", str(config), "--stage", "align"]) == 3
    assert _losses(tmp_path / "d" / "align") == [None, None]
    assert not (tmp_path / "d" / "align" / "mllm").exists()


def test_4bit_without_cuda_stops_before_the_feature_cache(
    mllm_data, tiny_llm_dir, tmp_path, monkeypatch, capsys
):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)

    def build_features(*args, **kwargs):
        raise AssertionError("the feature cache is built before the 4-bit check")

    monkeypatch.setattr(train, "build_features", build_features)
    config = write_config(tmp_path / "c.yaml", mllm_data, tiny_llm_dir, tmp_path, llm={"load_in_4bit": True})
    assert train.main(["--config", str(config), "--stage", "instruct"]) == 1  # bad configuration, one line
    err = capsys.readouterr().err
    assert "needs a CUDA GPU" in err and "llm.load_in_4bit=false" in err and "internal error" not in err


def test_projector_trains_at_its_own_learning_rate(mllm_data, tiny_llm_dir, tmp_path):
    instruct = {"init_from": "", "max_steps": 2, "lr": 1e-2, "projector_lr": 1e-3, "warmup_fraction": 0.0}
    config = write_config(
        tmp_path / "c.yaml", mllm_data, tiny_llm_dir, tmp_path, eval={"list_file": ""}, instruct=instruct
    )
    assert train.main(["--config", str(config), "--stage", "instruct"]) == 0
    state = json.loads((tmp_path / "instruct" / "checkpoints" / "step_00000002" / "state.json").read_text())
    groups = {group["name"]: group for group in state["optim"]["param_groups"]}
    assert set(groups) == {"projector", "llm"}
    assert (groups["projector"]["peak_lr"], groups["llm"]["peak_lr"]) == (1e-3, 1e-2)
    # The schedule scales both peaks: the last of 2 steps is half-way down the cosine.
    assert groups["projector"]["lr"] == pytest.approx(5e-4) and groups["llm"]["lr"] == pytest.approx(5e-3)
    assert len(groups["projector"]["params"]) == 4  # mlp2x_gelu: two linears, weight and bias
    assert len(groups["llm"]["params"]) == len(state["trainable_names"]) - 4  # every LoRA weight


def test_bad_configuration_exits_1(mllm_data, tiny_llm_dir, tmp_path, capsys):
    config = write_config(
        tmp_path / "c.yaml", mllm_data, tiny_llm_dir, tmp_path, align={"micro_batch_size": 3}
    )
    assert train.main(["--config", str(config), "--stage", "align"]) == 1
    assert "must be a multiple of micro_batch_size" in capsys.readouterr().err
    assert train.main(["--config", str(config), "--stage", "align", "align.lrr=1"]) == 1
    assert "align.lrr" in capsys.readouterr().err
    config = write_config(tmp_path / "d.yaml", mllm_data, tiny_llm_dir, tmp_path, align={"batch_size": 16})
    assert train.main(["--config", str(config), "--stage", "align"]) == 1
    assert "exceeds the 8 training samples" in capsys.readouterr().err


def test_resume_with_other_settings_exits_1(mllm_data, tiny_llm_dir, tmp_path, capsys):
    config = write_config(tmp_path / "c.yaml", mllm_data, tiny_llm_dir, tmp_path)
    cfg = load_config(MLLMTrainConfig, config, ["stage=align", "seed=5", "progress=true"])
    save_config(cfg, Path(cfg.align.out_dir) / "config.yaml")  # a run started with seed 5
    assert train.main(["--config", str(config), "--stage", "align", "--resume"]) == 1
    err = capsys.readouterr().err
    assert "config.yaml: --resume with settings" in err and "seed: 5 -> 0" in err
    assert "progress" not in err  # a setting that does not change the run may differ


@pytest.mark.slow
def test_two_processes_follow_one_process(mllm_data, tiny_llm_dir, tmp_path):
    """DDP over 2 CPU processes: per-step loss within 1e-3 of 1 process over 20 steps
    with the same global batches (LoRA dropout 0, so the random streams cannot differ)."""
    runs = {}
    for processes in (1, 2):
        out = tmp_path / f"p{processes}"
        config = write_config(
            tmp_path / f"c{processes}.yaml",
            mllm_data,
            tiny_llm_dir,
            out,
            lora={"dropout": 0.0},
            eval={"list_file": ""},
            instruct={"init_from": "", "max_steps": 20, "batch_size": 4, "micro_batch_size": 2},
        )
        # `accelerate launch --cpu --num_processes 2` starts ONE process without MPI (accelerate 1.15):
        # torchrun's launcher (--multi_gpu) with ACCELERATE_USE_CPU gives DDP over gloo.
        launch = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2"]
        if processes == 1:
            launch = [sys.executable]
        cmd = [*launch, str(SCRIPTS / "train_mllm.py"), "--config", str(config), "--stage", "instruct"]
        env = {**os.environ, "OMP_NUM_THREADS": "1", "ACCELERATE_USE_CPU": "1"}
        result = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=900, check=False)
        assert result.returncode == 0, result.stderr[-3000:]
        runs[processes] = _losses(out / "instruct")
        metrics = json.loads((out / "instruct" / "metrics.json").read_text())
        assert metrics["processes"] == processes and metrics["grad_accum"] == 3 - processes
        print(f"{processes} process(es): median step {metrics['median_step_seconds']:.4f} s")
    difference = np.abs(np.array(runs[1]) - np.array(runs[2]))
    print(f"max |loss(1 process) - loss(2 processes)| over 20 steps: {difference.max():.2e}")
    assert len(runs[1]) == 20 and difference.max() < 1e-3
