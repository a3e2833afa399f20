"""Every YAML under configs/ parses with its stage's dataclass and opens with its launch command; the
FineGym encoder configs build their model, fail clearly without data, and their header commands make the
data set folder they read."""

from __future__ import annotations

import itertools
import shlex
import shutil
from pathlib import Path

import pytest
import yaml
from conftest import FINEGYM_DIR, REPO, load_script

from gym_qa.clips import clip_id_of
from gym_qa.hierarchy import Hierarchy
from gym_qa.lists import read_list
from mllm.training_config import MLLMTrainConfig
from sefar_encoder.detection.training_config import DetectorTrainConfig
from sefar_encoder.frame_pretraining import PretrainConfig
from sefar_encoder.methods import method_views, resolve_method
from sefar_encoder.runtime.config import load_config
from sefar_encoder.training_config import EncoderTrainConfig, build_model, check_lists

CONFIGS = REPO / "configs"
ALL_YAML = sorted(CONFIGS.rglob("*.yaml"))
FINEGYM_CONFIGS = {  # file -> (element set, label rate, classes)
    "finegym_gym99_5.yaml": ("gym99", 5, 99),
    "finegym_gym99_10.yaml": ("gym99", 10, 99),
    "finegym_gym288_5.yaml": ("gym288", 5, 288),
    "finegym_gym288_10.yaml": ("gym288", 10, 288),
}


def schema_of(path: Path) -> type | None:
    """The dataclass a YAML under configs/ must parse as (None: not a toolkit config or not ours to load)."""
    group = path.relative_to(CONFIGS).parts[0]
    if group == "encoder":
        return EncoderTrainConfig
    if group == "pretrain":
        return PretrainConfig
    if group == "mllm":
        return MLLMTrainConfig
    if group == "detection":
        return DetectorTrainConfig
    if group == "accelerate":
        return None  # accelerate's own format
    raise AssertionError(f"{path}: no schema known for configs/{group}/ (add it to this test)")


def header(path: Path) -> list[str]:
    """The comment lines a config opens with, without the leading '#'."""
    lines = []
    for line in path.read_text().splitlines():
        if not line.startswith("#"):
            break
        lines.append(line[1:])
    return lines


@pytest.mark.parametrize("path", ALL_YAML, ids=lambda p: str(p.relative_to(CONFIGS)))
def test_every_yaml_parses_with_its_schema(path: Path):
    data = yaml.safe_load(path.read_text())
    assert isinstance(data, dict) and data, f"{path}: empty or not a mapping"
    schema = schema_of(path)
    if schema is None:
        return
    cfg = load_config(schema, path)  # unknown keys and wrong types raise, naming the key
    assert isinstance(cfg, schema)
    lines = header(path)
    assert lines and lines[0].strip(), f"{path}: must open with a comment saying what it runs"
    command = " ".join(lines)
    assert "python scripts/" in command or "accelerate launch" in command, f"{path}: no launch command"
    assert str(path.relative_to(REPO)) in command, f"{path}: the header's command should name this file"


# ----------------------------------------------------------------------------------------- FineGym
def finegym_config(name: str, *overrides: str):
    return load_config(EncoderTrainConfig, CONFIGS / "encoder" / name, list(overrides))


@pytest.mark.parametrize("name", sorted(FINEGYM_CONFIGS))
def test_finegym_config_is_the_paper_recipe(name: str):
    gym, rate, _ = FINEGYM_CONFIGS[name]
    cfg = finegym_config(name)
    assert cfg.data.root == f"data/finegym/{gym}" and cfg.data.label_rate == rate
    assert (cfg.model.embed_dim, cfg.model.depth, cfg.model.num_heads, cfg.model.patch_size) == (
        768,
        12,
        12,
        16,
    )
    assert cfg.data.image_size == 224 and cfg.num_frames == 8
    assert cfg.method.name == "sefar" and cfg.method.dual_level is None  # (2, 2, 4) by default
    assert (cfg.epochs, cfg.method.warm_epochs) == (30, 5)
    o = cfg.optim
    assert (o.name, o.lr, o.momentum, o.nesterov, o.weight_decay) == ("sgd", 5e-3, 0.9, True, 1e-3)
    assert o.milestones == pytest.approx((25 / 30, 28 / 30))
    assert (cfg.data.batch_size, cfg.data.unlabeled_ratio) == (8, 3)
    assert cfg.method.regulation.num_samples == 10 and cfg.model.head_dropout == 0.5
    # the rest of each pair is identical: 5 % and 10 % differ only in the label rate (and the run folder)
    twin = name.replace(f"_{rate}.yaml", "_5.yaml" if rate == 10 else "_10.yaml")
    other = finegym_config(twin, f"data.label_rate={rate}", f"out_dir={cfg.out_dir}")
    assert other == cfg


@pytest.mark.parametrize("name", sorted(FINEGYM_CONFIGS))
def test_finegym_config_builds_its_model(name: str):
    gym, _, num_classes = FINEGYM_CONFIGS[name]
    cfg = finegym_config(name, "init_checkpoint=null")
    hierarchy = Hierarchy.from_finegym(
        FINEGYM_DIR / f"{gym}_categories.txt", FINEGYM_DIR / "set_categories.txt"
    )
    views = method_views(resolve_method(cfg.method), cfg.num_frames)
    model, report = build_model(cfg, hierarchy, views)
    assert report is None and views == (2, 2, 4)
    assert model.config.num_classes == num_classes and model.config.img_size == 224
    params = sum(p.numel() for p in model.parameters())
    assert 100e6 < params < 130e6, params  # ViT-B (86M) + temporal attention (28M) + fusion head


@pytest.mark.parametrize("name", sorted(FINEGYM_CONFIGS))
def test_finegym_config_without_data_names_the_missing_list(name: str, tmp_path, monkeypatch, capsys):
    gym, rate, _ = FINEGYM_CONFIGS[name]
    monkeypatch.chdir(tmp_path)  # data.root is relative: nothing there
    train = load_script("train_encoder")
    code = train.main(["--config", str(CONFIGS / "encoder" / name), f"out_dir={tmp_path / 'run'}"])
    assert code == 1
    err = capsys.readouterr().err
    assert "list file not found" in err and f"data/finegym/{gym}/splits/{rate}/train.csv" in err


def header_commands(path: Path) -> list[list[str]]:
    """The shell commands of a config's header (indented comment lines, '\\' continues a line)."""
    commands, current = [], ""
    for line in header(path):
        if not line.startswith("   ") or not line.strip():
            continue
        current += " " + line.strip()
        if current.endswith("\\"):
            current = current[:-1]
            continue
        commands.append(shlex.split(current))
        current = ""
    return commands


def placeholder_clips(clips: Path, element_list: Path, per_class: int) -> None:
    """Empty files for the first ``per_class`` clips of every class (ingestion only looks at names)."""
    counts: dict[str, int] = {}
    clips.mkdir(parents=True, exist_ok=True)
    for line in element_list.read_text().splitlines():
        if not line.strip():
            continue
        clip_id, label = line.split()
        if counts.get(label, 0) < per_class:
            counts[label] = counts.get(label, 0) + 1
            (clips / f"{clip_id}.mp4").touch()


def test_finegym_twins_share_their_data_commands():
    for gym in ("gym99", "gym288"):
        five, ten = (header_commands(CONFIGS / "encoder" / f"finegym_{gym}_{r}.yaml") for r in (5, 10))
        assert five[:-1] == ten[:-1] and len(five) > 3  # all but the launch line


@pytest.mark.parametrize("name", ["finegym_gym99_5.yaml", "finegym_gym288_10.yaml"])
def test_finegym_header_commands_make_the_data_folder(name: str, tmp_path, monkeypatch, capsys):
    gym, rate, num_classes = FINEGYM_CONFIGS[name]
    path = CONFIGS / "encoder" / name
    monkeypatch.chdir(tmp_path)
    (tmp_path / "gym_qa" / "data").mkdir(parents=True)  # the headers' paths are relative to the checkout
    (tmp_path / "gym_qa" / "data" / "finegym").symlink_to(FINEGYM_DIR)
    placeholder_clips(tmp_path / "data/finegym/clips", FINEGYM_DIR / f"{gym}_train_element_v1.1.txt", 12)
    placeholder_clips(tmp_path / "data/finegym/clips", FINEGYM_DIR / f"{gym}_val_element.txt", 2)

    launched = None
    for cmd in header_commands(path):
        if cmd[0] == "python":
            script = Path(cmd[1])
            assert script.parent == Path("scripts"), cmd
            assert load_script(script.stem).main(cmd[2:]) == 0, (cmd, capsys.readouterr())
        elif cmd[0] == "touch":
            for f in cmd[1:]:
                Path(f).touch()
        elif cmd[0] == "cp":
            shutil.copy(cmd[1], cmd[2])
        elif cmd[:2] == ["accelerate", "launch"]:
            launched = cmd
        else:
            raise AssertionError(f"unexpected command in {name}'s header: {cmd}")
    assert launched is not None and launched[launched.index("--config") + 1] == str(path.relative_to(REPO))

    # the folder is what the config reads: lists present, labels in range, val/test/pool disjoint
    cfg = finegym_config(name)
    check_lists(cfg, ("train", "unlabel", "val", "test"))
    hierarchy = Hierarchy.from_dir(cfg.data.root)
    assert hierarchy.num_classes == num_classes
    root = Path(cfg.data.root)
    lists = {
        "train": root / f"splits/{rate}/train.csv",
        "unlabel": root / f"splits/{rate}/unlabel.csv",
        "val": root / "val.csv",
        "test": root / "test.csv",
    }
    entries = {k: read_list(p, num_classes) for k, p in lists.items()}
    paths = {k: {e.path for e in v} for k, v in entries.items()}
    assert all(entries.values())
    for a, b in itertools.combinations(paths, 2):
        assert not (paths[a] & paths[b]), (a, b)
    assert all(p.is_file() for v in paths.values() for p in v)  # relative paths resolve to the clips
    test_ids = {clip_id_of(p) for p in paths["test"]}
    val_elements = (FINEGYM_DIR / f"{gym}_val_element.txt").read_text().splitlines()
    val_element_ids = {line.split()[0] for line in val_elements if line.strip()}
    assert test_ids <= val_element_ids  # test = FineGym's val list; val is held out of FineGym's train
    assert len({e.label for e in entries["val"]}) == len({e.label for e in entries["train"]})
