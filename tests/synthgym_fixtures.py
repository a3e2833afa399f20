"""Pytest helpers for the encoder training tests: ONE SynthGym tiny data set and a frame-pretrained tiny
backbone, built once per session and shared by every module that uses them.

    pytest_plugins = ["synthgym_fixtures"]                    # the fixture synthgym_tiny
    from synthgym_fixtures import tiny_train_config           # plain helpers

``synthgym_tiny`` yields :class:`TinyData` (``root``: the data set folder, ``backbone``: the image-ViT
``model.safetensors``). The data set is the generator's ``tiny`` preset (12 classes; 12 labeled + 60
unlabeled train clips at 10 %, 12 val, 12 test, 64 px); the backbone is pretrained for a few steps only —
enough to exercise the loading path, not to be good. :func:`tiny_train_config` gives an
``EncoderTrainConfig`` that trains in a couple of seconds on it.

:func:`resume_reference` is a plain function the resume and kill tests call with their own folders; it
trains the reference run once per session (``_REFERENCE``) whichever module calls it first.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import REPO, load_script

TINY_ENCODER_YAML = REPO / "configs" / "encoder" / "synthgym_tiny.yaml"
TINY_PRETRAIN_YAML = REPO / "configs" / "pretrain" / "synthgym_tiny.yaml"

_REFERENCE: dict[str, Path] = {}  # the resume reference run, once per session


@dataclass(frozen=True)
class TinyData:
    root: Path  # SynthGym tiny data set folder
    backbone: Path  # frame-pretrained image ViT (model.safetensors)


def build_tiny_data(base: Path) -> TinyData:
    """Generate SynthGym tiny (seed 0) under ``base/synthgym-tiny`` and pretrain a backbone for 6 steps."""
    from gym_qa.synthgym.dataset import generate_dataset

    root = base / "synthgym-tiny"
    generate_dataset(root, "tiny", seed=0, workers=1, progress=False)
    from sefar_encoder.frame_pretraining import PretrainConfig
    from sefar_encoder.runtime.config import load_config

    pretrain = load_script("pretrain_image_backbone")
    cfg = load_config(
        PretrainConfig,
        TINY_PRETRAIN_YAML,
        [f"data_root={root}", f"out_dir={base / 'backbone'}", "steps=6", "batch_size=32", "progress=false"],
    )
    out = pretrain.pretrain(cfg)
    return TinyData(root=root, backbone=out / "model.safetensors")


@pytest.fixture(scope="session")
def synthgym_tiny(tmp_path_factory) -> TinyData:
    return build_tiny_data(tmp_path_factory.mktemp("synthgym-shared"))


# Small and fast, yet every phase runs: 1 supervised warm-up epoch, then 1 SSL epoch; 2 steps each.
TINY_OVERRIDES = [
    "epochs=2",
    "steps_per_epoch=2",
    "method.warm_epochs=1",
    "data.batch_size=2",
    "data.unlabeled_ratio=2",
    "data.num_workers=0",
    "data.validate=false",
    "eval.batch_size=12",
    "progress=false",
]


@pytest.fixture(scope="session")
def synthgym_tiny_routines(tmp_path_factory) -> Path:
    """SynthGym's tiny routines (``make_synthgym.py --routines tiny``: 3 / 1 / 1 routines of 15-16 s), made
    once per session; read-only for the tests."""
    out = tmp_path_factory.mktemp("routines") / "tiny"
    script = load_script("make_synthgym")
    assert script.main(["--out", str(out), "--routines", "tiny", "--workers", "1", "--quiet"]) == 0
    return out


def tiny_train_config(data: TinyData, out_dir: Path, *overrides: str):
    """``configs/encoder/synthgym_tiny.yaml`` + :data:`TINY_OVERRIDES` + ``overrides`` as an
    ``EncoderTrainConfig``."""
    from sefar_encoder.runtime.config import load_config
    from sefar_encoder.training_config import EncoderTrainConfig

    return load_config(
        EncoderTrainConfig,
        TINY_ENCODER_YAML,
        [
            f"data.root={data.root}",
            f"out_dir={out_dir}",
            f"init_checkpoint={data.backbone}",
            *TINY_OVERRIDES,
            *overrides,
        ],
    )


def tiny_cli_args(data: TinyData, out_dir: Path, *overrides: str) -> list[str]:
    """The same configuration as :func:`tiny_train_config`, as ``train_encoder.py`` arguments."""
    return [
        "--config",
        str(TINY_ENCODER_YAML),
        f"data.root={data.root}",
        f"out_dir={out_dir}",
        f"init_checkpoint={data.backbone}",
        *TINY_OVERRIDES,
        *overrides,
    ]


# The resume/kill tests' reference run: sefar, 3 epochs x 2 steps (1 warm-up epoch; the EMA teacher is born
# at the start of epoch 2), deterministic CPU settings, RESUME_THREADS intra-op threads (bitwise-equal
# results need the same thread count in every run, subprocesses too: OMP_NUM_THREADS).
RESUME_COMMON = ["epochs=3", "method.name=sefar", "deterministic=true"]
RESUME_THREADS = 2


def resume_reference(data: TinyData, base: Path) -> Path:
    """The uninterrupted reference run of :data:`RESUME_COMMON` (run once per session, in ``base``)."""
    if "run" not in _REFERENCE:
        import torch

        before = torch.get_num_threads()
        torch.set_num_threads(RESUME_THREADS)
        try:
            run_dir = base / "reference"
            load_script("train_encoder").run(tiny_train_config(data, run_dir, *RESUME_COMMON))
        finally:
            torch.set_num_threads(before)
        _REFERENCE["run"] = run_dir
    return _REFERENCE["run"]
