"""The config system: YAML round trip, CLI overrides, unknown keys and wrong types rejected by name."""

from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml
from conftest import load_script

from sefar_encoder.runtime.config import (
    ConfigError,
    check_resume_config,
    config_epilog,
    config_help,
    load_config,
    parse_overrides,
    save_config,
)


@dataclass
class OptimConfig:
    lr: float = field(default=5e-3, metadata={"help": "peak learning rate"})
    name: str = "sgd"
    milestones: tuple[float, ...] = (25 / 30, 28 / 30)


@dataclass
class RunConfig:
    seed: int = 0
    views: tuple[int, ...] = (2, 2, 4)
    out_dir: str | None = None
    tag: int | str = 0
    flip: bool = True
    optim: OptimConfig = field(default_factory=OptimConfig)


def test_defaults_yaml_round_trip(tmp_path: Path):
    cfg = load_config(RunConfig, None, ["optim.lr=0.1", "views=[8]", "out_dir=runs/x"])
    save_config(cfg, tmp_path / "config.yaml")
    again = load_config(RunConfig, tmp_path / "config.yaml")
    assert again == cfg
    assert again.views == (8,) and again.optim.lr == 0.1 and again.out_dir == "runs/x"


def test_yaml_then_override_precedence(tmp_path: Path):
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({"seed": 3, "optim": {"lr": 0.5, "name": "adamw"}}))
    cfg = load_config(RunConfig, path, ["optim.lr=2"])
    assert cfg.seed == 3 and cfg.optim.name == "adamw"
    assert cfg.optim.lr == 2.0 and isinstance(cfg.optim.lr, float)
    assert cfg.optim.milestones == pytest.approx((25 / 30, 28 / 30))


def test_unknown_key_names_key_and_file(tmp_path: Path):
    path = tmp_path / "bad.yaml"
    path.write_text("optim:\n  lrr: 0.1\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml.*optim\.lrr"):
        load_config(RunConfig, path)
    with pytest.raises(ConfigError, match=r"command line.*unknown key 'sede'"):
        load_config(RunConfig, None, ["sede=1"])


@pytest.mark.parametrize(
    "override, key",
    [
        ("seed=1.5", "seed"),
        ("flip=3", "flip"),
        ("optim.lr=fast", "optim.lr"),
        ("views=[2, x]", "views[1]"),
        ("seed=1.5e0", "seed"),  # a numeric string that is no integer
        ("seed=12abc", "seed"),
        ("optim.lr=1e-3x", "optim.lr"),
        ("optim.lr=inf", "optim.lr"),  # the word, not YAML's .inf
    ],
)
def test_wrong_types_rejected(override: str, key: str):
    with pytest.raises(ConfigError, match=key.replace("[", r"\[").replace("]", r"\]")):
        load_config(RunConfig, None, [override])


def test_malformed_override_and_missing_file(tmp_path: Path):
    with pytest.raises(ConfigError, match="not of the form"):
        parse_overrides(["seed"])
    with pytest.raises(ConfigError, match="not found"):
        load_config(RunConfig, tmp_path / "nope.yaml")


def test_yaml11_exponent_strings_are_numbers(tmp_path: Path):
    # PyYAML (YAML 1.1) reads 1e-3 without a dot as the string "1e-3": a float field must still take it.
    assert yaml.safe_load("1e-3") == "1e-3"
    cfg = load_config(RunConfig, None, ["optim.lr=1e-3", "seed=1e3", "views=[2E0, 4]"])
    assert cfg.optim.lr == 0.001 and isinstance(cfg.optim.lr, float)
    assert cfg.seed == 1000 and isinstance(cfg.seed, int)
    assert cfg.views == (2, 4) and all(isinstance(v, int) for v in cfg.views)
    path = tmp_path / "c.yaml"
    path.write_text("optim:\n  lr: 5e-4\n  milestones: [1e-1, +2E-1]\nseed: '-3'\n")
    cfg = load_config(RunConfig, path)
    assert cfg.optim.lr == 5e-4 and cfg.optim.milestones == pytest.approx((0.1, 0.2)) and cfg.seed == -3
    # A union with str keeps a string a string; a non-numeric string is still no float.
    assert load_config(RunConfig, None, ["tag=1e3"]).tag == "1e3"
    assert load_config(RunConfig, None, ["tag=7"]).tag == 7
    with pytest.raises(ConfigError, match=r"c2\.yaml.*'optim\.lr' must be a number"):
        (tmp_path / "c2.yaml").write_text("optim:\n  lr: 1e-3e\n")
        load_config(RunConfig, tmp_path / "c2.yaml")


def test_help_lists_leaf_keys():
    text = "\n".join(config_help(RunConfig))
    assert "optim.lr (float, default 0.005): peak learning rate" in text
    assert "views" in text


def test_help_shows_the_values_of_the_given_config(tmp_path: Path):
    path = tmp_path / "c.yaml"
    path.write_text("seed: 3\noptim:\n  lr: 1e-2\n")
    text = config_epilog(RunConfig, ["--config", str(path), "optim.name=adamw"])
    source = f"{path} + overrides"
    assert f"optim.lr (float, default 0.005; {source}: 0.01): peak learning rate" in text
    assert f"seed (int, default 0; {source}: 3)" in text
    assert f"optim.name (str, default 'sgd'; {source}: 'adamw')" in text
    assert "flip (bool, default True):" in text  # unchanged keys show the class default only
    assert "class default" in text.splitlines()[0]
    # --config=X form; without a config only the class defaults; a broken config is named, not hidden.
    assert f"{path}: 0.01" in config_epilog(RunConfig, [f"--config={path}"])
    plain = config_epilog(RunConfig, [])
    assert "optim.lr (float, default 0.005): peak" in plain and str(path) not in plain
    bad = tmp_path / "bad.yaml"
    bad.write_text("optim:\n  lrr: 1\n")
    text = config_epilog(RunConfig, ["--config", str(bad)])
    assert "not shown" in text and "optim.lrr" in text and "optim.lr (float, default 0.005)" in text


def test_train_mllm_help_shows_the_given_config(tmp_path: Path, capsys):
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


def test_resume_config_must_match_the_saved_one(tmp_path: Path):
    path = tmp_path / "config.yaml"
    cfg = load_config(RunConfig, None, ["optim.lr=0.1", "views=[2,2,4]"])
    check_resume_config(path, cfg)  # no saved config yet: nothing to compare
    save_config(cfg, path)
    check_resume_config(path, load_config(RunConfig, path))  # the same settings, read back from YAML
    check_resume_config(path, load_config(RunConfig, path, ["flip=false"]), frozenset({"flip"}))
    with pytest.raises(ConfigError) as err:
        check_resume_config(path, load_config(RunConfig, path, ["optim.lr=0.2", "views=[8]"]))
    message = str(err.value)
    assert str(path) in message and "optim.lr: 0.1 -> 0.2" in message and "views: [2, 2, 4] -> [8]" in message
    assert "seed" not in message  # unchanged keys are not listed


def test_resume_config_ignores_keys_only_one_side_has(tmp_path: Path):
    path = tmp_path / "config.yaml"
    saved = yaml.safe_load(yaml.safe_dump({"seed": 0, "optim": {"lr": 0.005}, "removed_field": 1}))
    path.write_text(yaml.safe_dump(saved))  # an older run: no "tag", an extra "removed_field"
    check_resume_config(path, RunConfig())
    path.write_text("seed: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        check_resume_config(path, RunConfig())
