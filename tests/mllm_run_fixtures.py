"""Pytest helpers for the MLLM stage scripts: a 16-clip data set, a tiny SeFAR encoder, a stage config
writer, and a trained (align -> instruct) MLLM checkpoint, each built once per session.

    pytest_plugins = ["mllm_run_fixtures", "tiny_llm_fixtures"]   # fixtures mllm_data, trained_mllm, tiny_llm_dir
    from mllm_run_fixtures import moved_checkpoint, write_config   # plain helpers

The data set follows the SynthGym layout (``videos/``, ``splits/5/train.csv``, ``val.csv``, ``test.csv``,
``categories.txt``, ``set_categories.txt``) with 4 classes: 2 labeled train clips per class, 1 val and 1
test clip per class, 32x32 pixels, 12 frames. ``questions_test.json`` holds one "what" question per
test clip.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml
from conftest import load_script
from video_fixtures import write_clip

from gym_qa.clips import Clip, clip_id_of
from gym_qa.hierarchy import Hierarchy
from gym_qa.question_generator import GeneratorConfig, QuestionGenerator
from gym_qa.questions import write_questions
from sefar_encoder.model import ModelConfig, SeFAREncoder

pytest_plugins = ["tiny_llm_fixtures"]  # trained_mllm builds on tiny_llm_dir

CLASSES = [  # (set, event, name): names the tiny LLM's tokenizer was trained on
    (25, "FX", "salto backward tucked"),
    (24, "FX", "salto forward piked"),
    (21, "FX", "split jump with 1 turn"),
    (41, "UB", "giant circle backward with 1 turn to handstand"),
]
SETS = {21: "FX_leap_jump_hop", 24: "FX_front_salto", 25: "FX_back_salto", 41: "UB_circles"}
ENCODER_CFG = ModelConfig(img_size=32, patch_size=8, embed_dim=32, depth=1, num_heads=2, num_classes=4)


def build_data(root: Path) -> dict[str, Path]:
    root.mkdir(parents=True, exist_ok=True)
    (root / "categories.txt").write_text(
        "".join(
            f"Clabel: {i:3d}; set: {s:2d}; Glabel: {i:3d}; ({ev}) {name}\n"
            for i, (s, ev, name) in enumerate(CLASSES)
        )
    )
    (root / "set_categories.txt").write_text("".join(f"set: {s}; {name}\n" for s, name in SETS.items()))
    rows: dict[str, list[tuple[str, int]]] = {"train": [], "val": [], "test": []}
    for label in range(len(CLASSES)):
        for split, count in (("train", 2), ("val", 1), ("test", 1)):
            for k in range(count):
                name = f"{split}_{label}_{k}"
                write_clip(root / "videos" / f"{name}.mp4", num_frames=12 + label, height=32, width=32)
                rows[split].append((f"videos/{name}.mp4", label))
    (root / "splits" / "5").mkdir(parents=True)
    (root / "splits" / "5" / "train.csv").write_text("".join(f"../../{p} {y}\n" for p, y in rows["train"]))
    for split in ("val", "test"):
        (root / f"{split}.csv").write_text("".join(f"{p} {y}\n" for p, y in rows[split]))
    hierarchy = Hierarchy.from_dir(root)
    clips = [Clip(video=clip_id_of(p), label=y) for p, y in rows["test"]]
    questions, _ = QuestionGenerator(hierarchy, GeneratorConfig(types=("what",), dataset="test")).generate(
        clips
    )
    write_questions(root / "questions_test.json", questions)

    torch.manual_seed(0)
    SeFAREncoder(ENCODER_CFG, class_names=[c[2] for c in CLASSES]).eval().save_pretrained(root / "encoder")
    torch.manual_seed(1)  # a second encoder: same architecture, other weights (fingerprint mismatch tests)
    SeFAREncoder(ENCODER_CFG).eval().save_pretrained(root / "other_encoder")
    return {
        "root": root,
        "encoder": root / "encoder",
        "other_encoder": root / "other_encoder",
        "features": root / "features",
        "questions": root / "questions_test.json",
        "test_list": root / "test.csv",
        "video": root / "videos" / "test_0_0.mp4",
    }


@pytest.fixture(scope="session")
def mllm_data(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The 16-clip data set, the encoders and the question file (read-only; shares one feature cache)."""
    return build_data(tmp_path_factory.mktemp("mllm_data"))


def write_config(path: Path, data: dict[str, Path], llm_dir: Path, runs: Path, **sections: dict) -> Path:
    """A stage config for the test data (align and instruct sections under ``runs``); ``sections``
    update the groups (``align={"max_steps": 3}``)."""
    cfg: dict[str, Any] = {
        "progress": False,
        "llm": {"name_or_path": str(llm_dir)},
        "lora": {"enabled": True, "r": 4, "alpha": 8, "dropout": 0.1},
        "features": {
            "encoder": "sefar",
            "weights": str(data["encoder"]),
            "cache_root": str(data["features"]),
        },
        "data": {"root": str(data["root"]), "label_rate": 5},
        "align": {
            "out_dir": str(runs / "align"),
            "epochs": 1,
            "batch_size": 4,
            "micro_batch_size": 2,
            "lr": 3e-3,
            "warmup_fraction": 0.0,
        },
        "instruct": {
            "out_dir": str(runs / "instruct"),
            "init_from": str(runs / "align" / "mllm"),
            "max_steps": 4,
            "batch_size": 4,
            "micro_batch_size": 2,
            "lr": 3e-3,
            "warmup_fraction": 0.0,
            "train_llm": True,
        },
    }
    for group, values in sections.items():
        cfg[group] = {**cfg.get(group, {}), **values} if isinstance(values, dict) else values
    path.write_text(yaml.safe_dump(cfg))
    return path


def moved_checkpoint(mllm_dir: Path, tmp_path: Path) -> Path:
    """A copy of the MLLM whose mllm_config.json names a base LLM that is not here (trained elsewhere)."""
    moved = Path(shutil.copytree(mllm_dir, tmp_path / "mllm"))
    meta = json.loads((moved / "mllm_config.json").read_text())
    meta["config"]["llm"]["name_or_path"] = str(tmp_path / "elsewhere" / "vicuna-7b-v1.5")
    (moved / "mllm_config.json").write_text(json.dumps(meta))
    return moved


@pytest.fixture(scope="session")
def trained_mllm(tmp_path_factory: pytest.TempPathFactory, mllm_data, tiny_llm_dir) -> Path:
    """An MLLM checkpoint after a short stage A and stage B (``<runs>/instruct/mllm``)."""
    runs = tmp_path_factory.mktemp("mllm_runs")
    config = write_config(runs / "config.yaml", mllm_data, tiny_llm_dir, runs, instruct={"max_steps": 6})
    train = load_script("train_mllm")
    for stage in ("align", "instruct"):
        assert train.main(["--config", str(config), "--stage", stage]) == 0
    return runs / "instruct" / "mllm"
