"""Pytest helpers for the prediction CLI and the demo: real SynthGym clips and an encoder that is right
about them, built once per session.

    pytest_plugins = ["demo_fixtures"]       # the fixtures synthgym_clips, fitted_encoder
    from demo_fixtures import running_demo   # a context manager

``synthgym_clips``: the 12 test clips of SynthGym's ``tiny`` preset (one per class, 64x64 px, rendered in
about half a second), their hierarchy files and ``test.csv`` (``<path> <label>``).

``fitted_encoder``: a randomly initialised ``timesformer_tiny_p16_64`` encoder (views 2+2+4) whose
classifier alone is then solved in closed form (least squares on the fused features of those 12 clips),
so that it classifies every one of them correctly; nothing is trained. The features come from a reference
path that shares no code with ``sefar_encoder.prediction``: PyAV decoding of the sampler's segment
centres, the eval transform, a direct forward. So "the demo shows the right element" checks decoding
(decord there), sampling, preprocessing, the forward pass and the label → name/set/event mapping.

``running_demo(...)``: the demo served on 127.0.0.1 (random free port) for the length of a ``with``.
"""

from __future__ import annotations

import contextlib
import os
import socket
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import torch

from gym_qa.hierarchy import Hierarchy
from gym_qa.lists import write_list
from gym_qa.synthgym.dataset import PRESETS, generate_clip, plan_dataset
from gym_qa.synthgym.elements import BY_GLABEL, SETS
from gym_qa.synthgym.metadata import category_line
from sefar_encoder.decoding import probe, read_frames
from sefar_encoder.model.presets import build_encoder
from sefar_encoder.sampling import DualLevelSampler
from sefar_encoder.transforms import AugmentConfig, ClipTransform

VIEWS = (2, 2, 4)
LOGIT_SCALE = 4.0  # the fitted logits: LOGIT_SCALE for the true class, 0 for the others


def build_synthgym_clips(root: Path) -> dict[str, Any]:
    preset = PRESETS["tiny"]
    elements = [BY_GLABEL[g] for g in preset.glabels]
    (root / "videos").mkdir(parents=True, exist_ok=True)
    (root / "categories.txt").write_text("".join(category_line(i, e) + "\n" for i, e in enumerate(elements)))
    (root / "set_categories.txt").write_text("".join(f"set: {s}; {name}\n" for s, name in SETS.items()))
    items = []
    for spec in (s for s in plan_dataset(preset, seed=0) if s.split == "test"):
        record = generate_clip(spec, str(root / "videos"), difficulty=1.0, width=64, height=64)
        items.append((root / "videos" / f"{record['clip_id']}.mp4", record["label"]))
    write_list(root / "test.csv", items)
    return {
        "root": root,
        "list": root / "test.csv",
        "clips": items,
        "hierarchy": Hierarchy.from_dir(root),
    }


def reference_input(path: Path, image_size: int = 64) -> torch.Tensor:
    """``[1, C, S, h, w]``: PyAV decode of the segment centres + the eval transform (the reference path)."""
    num_frames = probe(path, backend="pyav", check_last_frame=False)
    indices = DualLevelSampler(VIEWS).eval(num_frames)[0].flat
    frames, _ = read_frames(path, indices, backend="pyav")
    return ClipTransform(VIEWS, image_size, AugmentConfig()).eval([frames])  # [1, C, S, h, w]


def build_fitted_encoder(directory: Path, clips: list[tuple[Path, int]], hierarchy: Hierarchy) -> Path:
    torch.manual_seed(0)
    encoder = build_encoder(
        "timesformer_tiny_p16_64", class_names=hierarchy.names, num_classes=hierarchy.num_classes, views=VIEWS
    ).eval()
    encoder.hierarchy = hierarchy.to_json()
    with torch.no_grad():
        video = torch.cat([reference_input(p) for p, _ in clips])  # [n, C, S, h, w]
        h = encoder(video).h  # [n, Dh]
        targets = torch.zeros(len(clips), hierarchy.num_classes)
        targets[torch.arange(len(clips)), torch.tensor([y for _, y in clips])] = LOGIT_SCALE
        design = torch.cat([h, torch.ones(len(clips), 1)], dim=1).double()  # [n, Dh + 1]
        solution = torch.linalg.pinv(design) @ targets.double()  # [Dh + 1, K], minimum norm
        encoder.fusion_head.classifier.weight.copy_(solution[:-1].T.float())
        encoder.fusion_head.classifier.bias.copy_(solution[-1].float())
        fitted = encoder(video).logits.argmax(dim=1).tolist()
    assert fitted == [y for _, y in clips], "the closed-form classifier must separate the 12 clips"
    encoder.save_pretrained(directory)
    return directory


@pytest.fixture(scope="session")
def synthgym_clips(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """12 SynthGym clips (one per class) + categories + ``test.csv``; read-only."""
    return build_synthgym_clips(tmp_path_factory.mktemp("synthgym_clips"))


@pytest.fixture(scope="session")
def fitted_encoder(tmp_path_factory: pytest.TempPathFactory, synthgym_clips) -> Path:
    """An encoder checkpoint (with hierarchy.json) that classifies every ``synthgym_clips`` clip correctly."""
    return build_fitted_encoder(
        tmp_path_factory.mktemp("fitted_encoder") / "encoder",
        synthgym_clips["clips"],
        synthgym_clips["hierarchy"],
    )


def free_port() -> int:
    """A TCP port that was free on 127.0.0.1 a moment ago (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def running_demo(
    root: Path,
    encoder_dir: Path,
    examples_list: Path,
    chat: Any = None,
    models: Any = None,
    **limits: Any,
):
    """Launch the demo on 127.0.0.1 (random free port, background thread); yields a namespace with
    ``url``, ``dirs``, ``limits``, ``predictor``, ``demo``. ``models(predictor)``, if given, returns more
    keyword arguments of ``build_demo`` built on the demo's predictor (``chat``, ``video_encoder``,
    ``detector``).
    Closes the server and restores the gradio environment variables that :meth:`AppDirs.create` set."""
    from mllm.demo_app import build_demo, launch_demo
    from mllm.demo_uploads import AppDirs, DemoLimits, copy_examples
    from sefar_encoder.clip_inputs import read_inputs
    from sefar_encoder.prediction import Predictor

    keys = ("GRADIO_TEMP_DIR", "GRADIO_EXAMPLES_CACHE", "GRADIO_ANALYTICS_ENABLED")
    saved = {k: os.environ.get(k) for k in keys}
    os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"
    demo = None
    try:
        dirs = AppDirs.create(root)
        predictor = Predictor(encoder_dir)
        examples = copy_examples(read_inputs(examples_list), predictor, dirs.examples)
        settings = DemoLimits(**limits)
        extra = {"chat": chat, **(models(predictor) if models is not None else {})}
        demo = build_demo(predictor, examples=examples, limits=settings, **extra)
        _, url, share_url = launch_demo(
            demo, dirs, settings, port=free_port(), prevent_thread_lock=True, quiet=True
        )
        yield SimpleNamespace(
            url=url,
            share_url=share_url,
            dirs=dirs,
            limits=settings,
            predictor=predictor,
            demo=demo,
            examples=examples,
        )
    finally:
        if demo is not None:
            demo.close()
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
