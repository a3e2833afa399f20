"""The config system: YAML round trip, CLI overrides, unknown keys and wrong types rejected by name."""

from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml

from sefar_encoder.config import ConfigError, config_help, load_config, parse_overrides, save_config


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
    [("seed=1.5", "seed"), ("flip=3", "flip"), ("optim.lr=fast", "optim.lr"), ("views=[2, x]", "views[1]")],
)
def test_wrong_types_rejected(override: str, key: str):
    with pytest.raises(ConfigError, match=key.replace("[", r"\[").replace("]", r"\]")):
        load_config(RunConfig, None, [override])


def test_malformed_override_and_missing_file(tmp_path: Path):
    with pytest.raises(ConfigError, match="not of the form"):
        parse_overrides(["seed"])
    with pytest.raises(ConfigError, match="not found"):
        load_config(RunConfig, tmp_path / "nope.yaml")


def test_help_lists_leaf_keys():
    text = "\n".join(config_help(RunConfig))
    assert "optim.lr (float, default 0.005): peak learning rate" in text
    assert "views" in text
