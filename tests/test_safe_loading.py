"""Safe loading (docs/reliability.md, "Safe loading"): nothing the toolkit reads can run code.

Over the code base (``sefar_encoder``, ``mllm``, ``gym_qa``, ``scripts``), by the syntax tree: no pickle
(nor dill/joblib/shelve), ``torch.load`` only with ``weights_only=True``, YAML only through
``yaml.safe_*``, no ``np.load(allow_pickle=...)`` other than False, and ``trust_remote_code`` never True
by default (a keyword, a parameter default, a dataclass default or an argparse default): it is switched
on only by an explicit user flag. Over the artifacts: the run folders of a tiny MLLM run (stage A + B),
the feature cache, and (slow) a tiny encoder run and its backbone pretraining hold only .safetensors,
.json, .jsonl, .yaml, .png and .md files (plus the cache's empty ``.lock``). The micro LLM's ``tokenizer.model``
is a sentencepiece protobuf (parsed here as one), not a pickle; it stays in the LLM's folder and is not
copied into run folders. Each check is shown to fail on planted offenders.
"""

from __future__ import annotations

import ast
import json
import textwrap
from pathlib import Path

import pytest
from conftest import REPO, load_script
from synthgym_fixtures import tiny_train_config

pytest_plugins = ["mllm_run_fixtures", "synthgym_fixtures", "tiny_llm_fixtures"]
SCANNED = ("sefar_encoder", "mllm", "gym_qa", "scripts")
PICKLE_MODULES = {"pickle", "_pickle", "cPickle", "cloudpickle", "dill", "joblib", "shelve"}
SAFE_YAML = {"safe_load", "safe_load_all", "safe_dump", "safe_dump_all", "YAMLError"}
ALLOWED_SUFFIXES = {".safetensors", ".json", ".jsonl", ".yaml", ".png", ".md"}


# ---------------------------------------------------------------------------------------- the scanner
def _is_true(node: ast.AST | None) -> bool:
    return isinstance(node, ast.Constant) and node.value is True


def _dotted(node: ast.AST) -> str:
    """``torch.load`` for ``Attribute(Name('torch'), 'load')``; '' for anything else."""
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name):
        return ".".join([node.id, *reversed(parts)])
    return ""


def _default_true(value: ast.AST | None) -> bool:
    """``True``, or ``field(default=True, ...)``."""
    if _is_true(value):
        return True
    if isinstance(value, ast.Call) and _dotted(value.func).split(".")[-1] == "field":
        return any(k.arg == "default" and _is_true(k.value) for k in value.keywords)
    return False


def unsafe_uses(source: str, name: str) -> list[str]:
    """``"<name>:<line>: <rule>"`` for every unsafe loading construct in Python ``source``."""
    found = []

    def flag(node: ast.AST, rule: str) -> None:
        found.append(f"{name}:{node.lineno}: {rule}")

    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] in PICKLE_MODULES:
                    flag(node, f"imports {alias.name}")
                if alias.name == "yaml" and alias.asname:
                    flag(node, "imports yaml under another name (hides its calls from this check)")
        elif isinstance(node, ast.ImportFrom):
            module = (node.module or "").split(".")[0]
            if module in PICKLE_MODULES:
                flag(node, f"imports from {node.module}")
            if module == "yaml" and any(a.name not in SAFE_YAML for a in node.names):
                flag(node, f"imports {[a.name for a in node.names]} from yaml")
            if module == "torch" and any(a.name == "load" for a in node.names):
                flag(node, "imports torch.load by name (its calls escape the weights_only check)")
        elif isinstance(node, ast.Attribute):
            dotted = _dotted(node)
            if dotted.split(".")[0] in PICKLE_MODULES:
                flag(node, f"uses {dotted}")
            if dotted.startswith("yaml.") and dotted.split(".")[1] not in SAFE_YAML:
                flag(node, f"uses {dotted} (only yaml.safe_load / safe_dump)")
        elif isinstance(node, ast.Call):
            func = _dotted(node.func)
            keywords = {k.arg: k.value for k in node.keywords}
            if func == "torch.load" and not _is_true(keywords.get("weights_only")):
                flag(node, "torch.load without weights_only=True")
            if func in ("np.load", "numpy.load") and "allow_pickle" in keywords:
                value = keywords["allow_pickle"]
                if not (isinstance(value, ast.Constant) and value.value is False):
                    flag(node, "np.load with allow_pickle")
            if func in ("torch.hub.load", "pd.read_pickle", "pandas.read_pickle"):
                flag(node, f"calls {func}")
            if _is_true(keywords.get("trust_remote_code")):
                flag(node, "trust_remote_code=True")
            first = node.args[0] if node.args else None
            is_flag = isinstance(first, ast.Constant) and first.value == "--trust-remote-code"
            action = keywords.get("action")
            store_false = isinstance(action, ast.Constant) and action.value == "store_false"
            if is_flag and (_is_true(keywords.get("default")) or store_false):
                flag(node, "--trust-remote-code on by default")
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            if node.target.id == "trust_remote_code" and _default_true(node.value):
                flag(node, "trust_remote_code defaults to True")
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            args = node.args
            positional = args.posonlyargs + args.args
            pairs = list(zip(positional[len(positional) - len(args.defaults) :], args.defaults))
            pairs += [(a, d) for a, d in zip(args.kwonlyargs, args.kw_defaults) if d is not None]
            for arg, default in pairs:
                if arg.arg == "trust_remote_code" and _is_true(default):
                    flag(node, f"{node.name}(trust_remote_code=True)")
    return found


def scan_tree(root: Path, packages: tuple[str, ...]) -> list[str]:
    found = []
    for package in packages:
        for path in sorted((root / package).rglob("*.py")):
            found += unsafe_uses(path.read_text(encoding="utf-8"), str(path.relative_to(root)))
    return found


def test_code_base_loads_nothing_unsafely():
    files = [p for package in SCANNED for p in (REPO / package).rglob("*.py")]
    assert len(files) > 50  # the scan really covers the packages
    assert scan_tree(REPO, SCANNED) == []


PLANTED = """
import pickle
import dill
import yaml, torch, numpy as np
from yaml import load, Loader
from torch import load as tload
from dataclasses import dataclass, field
from transformers import AutoModel

data = pickle.loads(b"")
torch.load("a.pt")
torch.load("a.pt", weights_only=False)
yaml.load(open("c.yaml"), Loader=yaml.Loader)
yaml.unsafe_load("a: 1")
np.load("a.npy", allow_pickle=True)
AutoModel.from_pretrained("x", trust_remote_code=True)


def build(name, *, trust_remote_code=True):
    return name


@dataclass
class Options:
    trust_remote_code: bool = True
    other: bool = field(default=True)


class Flags:
    trust_remote_code: bool = field(default=True, metadata={})


parser.add_argument("--trust-remote-code", action="store_true", default=True)
"""

CLEAN = """
import yaml, torch, numpy as np
from dataclasses import dataclass, field
from yaml import YAMLError

torch.load("a.pt", map_location="cpu", weights_only=True)
cfg = yaml.safe_load("a: 1")
text = yaml.safe_dump(cfg)
np.load("a.npy")
np.load("a.npy", allow_pickle=False, mmap_mode="r")
note = "pickle.loads in a string is only text; so is torch.load('x')"


def build(name, *, trust_remote_code: bool = False):
    return AutoModel.from_pretrained(name, trust_remote_code=trust_remote_code)


@dataclass
class Options:
    trust_remote_code: bool = field(default=False, metadata={"help": "off"})


parser.add_argument("--trust-remote-code", action="store_true")
"""


def test_scanner_flags_planted_offenders(tmp_path: Path):
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "bad.py").write_text(textwrap.dedent(PLANTED))
    (tmp_path / "pkg" / "good.py").write_text(textwrap.dedent(CLEAN))
    found = scan_tree(tmp_path, ("pkg",))
    assert all(f.startswith("pkg/bad.py:") for f in found), found
    rules = "\n".join(found)
    for expected in [
        "imports pickle",
        "imports dill",
        "imports ['load', 'Loader'] from yaml",
        "imports torch.load by name",
        "uses pickle.loads",
        ":11: torch.load without weights_only=True",
        ":12: torch.load without weights_only=True",
        "uses yaml.load",
        "uses yaml.Loader",
        "uses yaml.unsafe_load",
        "np.load with allow_pickle",
        ":16: trust_remote_code=True",
        "build(trust_remote_code=True)",
        ":25: trust_remote_code defaults to True",
        ":30: trust_remote_code defaults to True",
        "--trust-remote-code on by default",
    ]:
        assert expected in rules, (expected, found)
    assert not any(":26:" in f for f in found)  # `other: bool = field(default=True)` is not about code


# ---------------------------------------------------------------------------------------- user flags
def test_trust_remote_code_is_off_unless_the_user_asks(mllm_data, trained_mllm, tmp_path, monkeypatch):
    import inspect
    import shutil

    from mllm import multimodal_model
    from mllm.chat import VideoChat
    from mllm.language_model import LLMConfig
    from mllm.tokenizer import load_tokenizer

    assert LLMConfig().trust_remote_code is False
    for function in (
        load_tokenizer,
        multimodal_model.MultimodalModel.from_pretrained,
        VideoChat.from_pretrained,
    ):
        assert inspect.signature(function).parameters["trust_remote_code"].default is False, function

    # A checkpoint file cannot switch it on: only the caller's argument counts.
    ckpt = tmp_path / "mllm"
    shutil.copytree(trained_mllm, ckpt)
    meta = json.loads((ckpt / "mllm_config.json").read_text())
    meta["config"]["llm"]["trust_remote_code"] = True
    (ckpt / "mllm_config.json").write_text(json.dumps(meta))
    seen = []
    real = multimodal_model.load_language_model
    monkeypatch.setattr(
        multimodal_model,
        "load_language_model",
        lambda cfg, **kw: seen.append(cfg.trust_remote_code) or real(cfg, **kw),
    )
    multimodal_model.MultimodalModel.from_pretrained(ckpt)
    multimodal_model.MultimodalModel.from_pretrained(ckpt, trust_remote_code=True)  # local dir: no code runs
    assert seen == [False, True]

    # The scripts' flags: off by default, on only when given.
    train = load_script("train_mllm")
    configs = []
    done = {"steps": 0, "first_loss": None, "final_loss": None}
    monkeypatch.setattr(train, "run", lambda cfg, resume=False: configs.append(cfg) or done)
    for extra in ([], ["--trust-remote-code"]):
        train.main(["--stage", "align", *extra])
    assert [c.llm.trust_remote_code for c in configs] == [False, True]

    evaluate = load_script("eval_mllm_gymqa")
    calls = []

    class Stop(FileNotFoundError):
        pass

    def fake_from_pretrained(*args, **kwargs):
        calls.append(kwargs["trust_remote_code"])
        raise Stop("stop here")

    monkeypatch.setattr(evaluate.VideoChat, "from_pretrained", fake_from_pretrained)
    base = [
        "--mllm",
        str(ckpt),
        "--weights",
        str(mllm_data["encoder"]),
        "--questions",
        str(mllm_data["questions"]),
    ]
    base += ["--list", str(mllm_data["test_list"]), "--out-predictions", str(tmp_path / "p.jsonl")]
    for extra in ([], ["--trust-remote-code"]):
        assert evaluate.main([*base, *extra]) == 2
    assert calls == [False, True]


# ---------------------------------------------------------------------------------------- artifacts
def unsafe_files(directory: Path, extra: dict[str, str] | None = None) -> list[str]:
    """Files of ``directory`` (recursively) whose suffix is neither allowed nor in ``extra``
    (suffix -> why it is safe, checked by :func:`check_extra`)."""
    extra = extra or {}
    bad = []
    for path in sorted(p for p in directory.rglob("*") if p.is_file()):
        if path.suffix in ALLOWED_SUFFIXES:
            continue
        if path.suffix in extra or path.name in extra:
            check_extra(path)
            continue
        bad.append(str(path.relative_to(directory)))
    return bad


def check_extra(path: Path) -> None:
    if path.name == ".lock":  # the feature cache's fcntl lock: always empty
        assert path.stat().st_size == 0, path
    elif path.suffix == ".model":  # sentencepiece: a protobuf ModelProto, parsed as one
        import sentencepiece as spm
        from sentencepiece import sentencepiece_model_pb2

        proto = sentencepiece_model_pb2.ModelProto()
        proto.ParseFromString(path.read_bytes())
        assert len(proto.pieces) > 0, f"{path}: not a sentencepiece model"
        assert spm.SentencePieceProcessor(model_file=str(path)).get_piece_size() == len(proto.pieces)
    else:
        raise AssertionError(f"{path}: no check for this extra file type")


def test_artifact_check_flags_planted_files(tmp_path: Path):
    (tmp_path / "run" / "checkpoints").mkdir(parents=True)
    (tmp_path / "run" / "metrics.json").write_text("{}")
    (tmp_path / "run" / "checkpoints" / "optimizer.pt").write_bytes(b"\x80\x04K\x01.")
    (tmp_path / "run" / "state.pkl").write_bytes(b"\x80\x04K\x01.")
    assert unsafe_files(tmp_path / "run") == ["checkpoints/optimizer.pt", "state.pkl"]
    fake = tmp_path / "llm" / "tokenizer.model"
    fake.parent.mkdir()
    fake.write_bytes(b"\x80\x04\x95\x05\x00\x00\x00\x00\x00\x00\x00K\x01.")  # a pickle named .model
    with pytest.raises(Exception):  # noqa: B017 - protobuf's DecodeError or our assertion
        unsafe_files(tmp_path / "llm", {".model": "sentencepiece protobuf"})


def test_mllm_run_folders_hold_only_plain_formats(mllm_data, trained_mllm, tiny_llm_dir):
    mllm_runs = trained_mllm.parents[1]  # <runs>/align and <runs>/instruct
    for stage in ("align", "instruct"):
        folder = mllm_runs / stage
        assert (folder / "metrics.json").is_file() and any(
            p.suffix == ".safetensors" for p in folder.rglob("*")
        )
        assert unsafe_files(folder) == [], stage
    # The feature cache: shards, index, and the writers' (empty) lock file.
    assert unsafe_files(mllm_data["features"], {".lock": "empty fcntl lock"}) == []
    # The LLM folder (an input, not a run output): its tokenizer.model is a sentencepiece protobuf.
    assert (tiny_llm_dir / "tokenizer.model").is_file()
    assert unsafe_files(tiny_llm_dir, {".model": "sentencepiece protobuf"}) == []
    assert not any(p.suffix == ".model" for p in mllm_runs.rglob("*"))  # not copied into run folders


@pytest.mark.slow
def test_encoder_run_folders_hold_only_plain_formats(synthgym_tiny, tmp_path):
    """A tiny encoder run and its backbone pretraining (slow: the default suite has the same suffix
    check on every method's run in tests/test_train_encoder.py)."""
    train_encoder = load_script("train_encoder")
    encoder_run = tmp_path / "encoder_run"
    train_encoder.run(tiny_train_config(synthgym_tiny, encoder_run))
    for folder in (encoder_run, synthgym_tiny.backbone.parent):
        assert any(p.suffix == ".safetensors" for p in folder.rglob("*")), folder
        assert unsafe_files(folder) == [], folder
    assert (encoder_run / "metrics.json").is_file()
