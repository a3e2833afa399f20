"""Pytest helpers for the LLM side: a micro tokenizer + Llama built once per session, and the LLaMA-family
sentencepiece model shipped by mistral_common as a second, real-size tokenizer (test fixture only).

Register them in a test module with ``pytest_plugins = ["tiny_llm_fixtures"]``.
"""

from __future__ import annotations

import shutil
from importlib import resources
from pathlib import Path

import pytest

from mllm.language_model import MICRO_TINY_LLM, build_tiny_llm, tiny_llm_corpus

# A few FineGym-style element names: enough text for a micro tokenizer, no dependency on shared/.
ELEMENT_NAMES = [
    "salto backward tucked",
    "salto backward stretched with 1 twist",
    "salto backward stretched with 2 twist",
    "salto forward piked",
    "switch leap with 0.5 turn",
    "split jump with 1 turn",
    "round-off, flic-flac on, stretched salto backward with 1 turn off",
    "clear hip circle through handstand with 0.5 turn",
    "giant circle backward with 1 turn to handstand",
    "double salto backward tucked with 1 twist",
]
MISTRAL_V1_VOCAB_SIZE = 32000


def build_micro_llm(directory: Path) -> Path:
    """Tokenizer + 2-layer Llama (D=64) trained for a few steps: about a second on CPU."""
    build_tiny_llm(tiny_llm_corpus(ELEMENT_NAMES * 3, seed=0), directory, MICRO_TINY_LLM)
    return directory


@pytest.fixture(scope="session")
def tiny_llm_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Directory of the micro LLM (config.json, model.safetensors, tokenizer.model, tokenizer_config.json).
    Read-only: copy it before changing anything."""
    return build_micro_llm(tmp_path_factory.mktemp("tiny_llm"))


def mistral_tokenizer_model() -> Path:
    """The LLaMA-family ``tokenizer.model.v1`` inside the mistral_common package."""
    pytest.importorskip("mistral_common")
    return Path(str(resources.files("mistral_common") / "data" / "tokenizer.model.v1"))


@pytest.fixture(scope="session")
def mistral_tokenizer_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tokenizer directory holding only mistral_common's ``tokenizer.model.v1`` as ``tokenizer.model``."""
    directory = tmp_path_factory.mktemp("mistral_v1")
    shutil.copy(mistral_tokenizer_model(), directory / "tokenizer.model")
    return directory


@pytest.fixture(scope="session", params=["tiny", "mistral_v1"])
def any_tokenizer_dir(request: pytest.FixtureRequest) -> Path:
    """Both tokenizer directories, one after the other (tests that must hold for every LLaMA tokenizer)."""
    name = "tiny_llm_dir" if request.param == "tiny" else "mistral_tokenizer_dir"
    return request.getfixturevalue(name)
