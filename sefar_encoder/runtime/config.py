"""One config system for every stage: typed dataclasses <-> YAML, with ``key.sub=value`` overrides.

A stage declares its configuration as (nested) dataclasses whose fields carry a one-line doc in
``field(metadata={"help": ...})``. :func:`load_config` builds an instance from defaults, then merges a
YAML file, then command-line overrides; unknown keys and wrong types raise :class:`ConfigError` naming
the dotted key and where it came from. :func:`save_config` writes the resolved config next to a run.

    cfg = load_config(EncoderTrainConfig, "configs/encoder/synthgym_tiny.yaml", ["optim.lr=0.01"])
    save_config(cfg, run_dir / "config.yaml")

YAML is parsed with ``yaml.safe_load`` only. PyYAML follows YAML 1.1, where ``1e-3`` (no dot) is a
string, not a float: a float or int field accepts such numeric strings (``optim.lr=1e-3``, ``lr: 1e-3``
in a file); any other string for a number still fails, naming the key.
"""

from __future__ import annotations

import dataclasses
import re
import sys
import types
import typing
from pathlib import Path
from typing import Any, Literal, TypeVar, get_args, get_origin, get_type_hints

import yaml

from sefar_encoder.runtime.atomic import write_text_atomic

T = TypeVar("T")


class ConfigError(ValueError):
    """A configuration key is unknown, has the wrong type, or an override is malformed."""


# A decimal number as YAML 1.1 may leave it a string: "1e-3", "-2E5", "+3" (no hex, no inf/nan words).
_NUMBER = re.compile(r"[-+]?(\d+(\.\d*)?|\.\d+)([eE][-+]?\d+)?")


def _number_from_string(value: str, integer: bool) -> float | int | None:
    """``value`` as a float (or an exact int when ``integer``), or None when it is not a plain number."""
    text = value.strip()
    if not _NUMBER.fullmatch(text):
        return None
    number = float(text)
    if not integer:
        return number
    if re.fullmatch(r"[-+]?\d+", text):
        return int(text)
    return int(number) if number.is_integer() and abs(number) < 2**53 else None


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _coerce(value: Any, tp: Any, key: str, source: str) -> Any:
    """Check ``value`` against the annotation ``tp`` and convert where lossless (int->float, list->tuple)."""
    origin = get_origin(tp)
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        args = get_args(tp)
        if value is None and type(None) in args:
            return None
        if isinstance(value, str) and str in args:  # a string stays a string (no numeric reading)
            return value
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, key, source)
            except ConfigError as err:
                errors.append(str(err))
        raise ConfigError(f"{source}: '{key}' = {value!r} matches none of {_type_name(tp)}")
    if origin is Literal:
        if value not in get_args(tp):
            raise ConfigError(f"{source}: '{key}' must be one of {list(get_args(tp))}, got {value!r}")
        return value
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if not isinstance(value, dict):
            raise ConfigError(f"{source}: '{key}' must be a mapping for {tp.__name__}, got {value!r}")
        return _merge(tp(), value, source, prefix=key + ".")
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{source}: '{key}' must be a list, got {value!r}")
        args = get_args(tp)
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(args) != len(value):
                raise ConfigError(f"{source}: '{key}' must have {len(args)} items, got {len(value)}")
            items = [_coerce(v, a, f"{key}[{i}]", source) for i, (v, a) in enumerate(zip(value, args))]
        else:
            item_tp = args[0] if args else Any
            items = [_coerce(v, item_tp, f"{key}[{i}]", source) for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{source}: '{key}' must be a mapping, got {value!r}")
        return dict(value)
    if tp is float:
        if isinstance(value, str) and _number_from_string(value, integer=False) is not None:
            return float(_number_from_string(value, integer=False))  # YAML 1.1: "1e-3" is a string
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{source}: '{key}' must be a number, got {value!r}")
        return float(value)
    if tp is int:
        if isinstance(value, str) and _number_from_string(value, integer=True) is not None:
            return _number_from_string(value, integer=True)  # "1e3" -> 1000; "1.5e0" stays an error
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{source}: '{key}' must be an integer, got {value!r}")
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{source}: '{key}' must be true or false, got {value!r}")
        return value
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{source}: '{key}' must be a string, got {value!r}")
        return value
    if isinstance(tp, type) and not isinstance(value, tp):
        raise ConfigError(f"{source}: '{key}' must be {_type_name(tp)}, got {value!r}")
    return value


def _merge(cfg: T, data: dict[str, Any], source: str, prefix: str = "") -> T:
    """Return a copy of dataclass ``cfg`` with the mapping ``data`` merged in, field by field."""
    hints = get_type_hints(type(cfg))
    names = {f.name for f in dataclasses.fields(cfg)}
    updates = {}
    for key, value in data.items():
        if key not in names:
            raise ConfigError(
                f"{source}: unknown key '{prefix}{key}' (known keys of {type(cfg).__name__}: {sorted(names)})"
            )
        current = getattr(cfg, key)
        if dataclasses.is_dataclass(current) and isinstance(value, dict):
            updates[key] = _merge(current, value, source, prefix=f"{prefix}{key}.")
        else:
            updates[key] = _coerce(value, hints[key], prefix + key, source)
    return dataclasses.replace(cfg, **updates)


def parse_overrides(overrides: list[str]) -> dict[str, Any]:
    """Turn ``["a.b=1", "c=[2, 4]"]`` into a nested mapping; values are parsed as YAML scalars/lists."""
    nested: dict[str, Any] = {}
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"command line: override '{item}' is not of the form key.sub=value")
        key, raw = item.split("=", 1)
        if not key or any(not part for part in key.split(".")):
            raise ConfigError(f"command line: override '{item}' has an empty key")
        value = yaml.safe_load(raw) if raw.strip() else ""
        node = nested
        parts = key.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"command line: override '{item}' conflicts with another override")
        node[parts[-1]] = value
    return nested


def _read_mapping(path: Path) -> dict[str, Any]:
    """A YAML file whose top level is a mapping (``{}`` when empty); :class:`ConfigError` otherwise."""
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML: {err}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping")
    return data


def load_config(cls: type[T], path: str | Path | None = None, overrides: list[str] | None = None) -> T:
    """Defaults of ``cls``, then the YAML file at ``path``, then ``key.sub=value`` overrides."""
    cfg = cls()
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"{path}: config file not found")
        cfg = _merge(cfg, _read_mapping(path), str(path))
    if overrides:
        cfg = _merge(cfg, parse_overrides(overrides), "command line")
    return cfg


def to_dict(cfg: Any) -> dict[str, Any]:
    """Plain, YAML-safe nested dict (tuples become lists)."""

    def plain(v: Any) -> Any:
        if dataclasses.is_dataclass(v):
            return {f.name: plain(getattr(v, f.name)) for f in dataclasses.fields(v)}
        if isinstance(v, (list, tuple)):
            return [plain(x) for x in v]
        if isinstance(v, dict):
            return {k: plain(x) for k, x in v.items()}
        return v

    return plain(cfg)


def save_config(cfg: Any, path: str | Path) -> None:
    """Write the resolved config as YAML, atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(path, yaml.safe_dump(to_dict(cfg), sort_keys=False))


def check_resume_config(path: str | Path, cfg: Any, may_differ: frozenset[str] = frozenset()) -> None:
    """Refuse to resume the run whose config is at ``path`` with different settings.

    A resumed run must end where the uninterrupted one would, so every dotted key present in both the
    saved and the new config must have the same value, except the keys in ``may_differ`` (those that do
    not change what is computed, e.g. progress bars or worker counts). Keys only one side has (a field
    added or removed by a newer version of the code) are not compared. Raises :class:`ConfigError`
    naming the file and each differing key; does nothing when ``path`` does not exist.
    """
    path = Path(path)
    if not path.is_file():
        return
    saved = _read_mapping(path)

    def flat(d: Any, prefix: str = "") -> dict[str, Any]:
        if not isinstance(d, dict):
            return {prefix[:-1]: d}
        return {k: v for key, value in d.items() for k, v in flat(value, f"{prefix}{key}.").items()}

    old, new = flat(saved), flat(to_dict(cfg))
    changed = [
        f"{k}: {old[k]!r} -> {new[k]!r}" for k in old if k in new and k not in may_differ and old[k] != new[k]
    ]
    if changed:
        raise ConfigError(
            f"{path}: --resume with settings other than the run's own ({'; '.join(changed)}); resume with "
            "the same settings, or start a new run in another out_dir"
        )


def config_help(cls: type, prefix: str = "", cfg: Any = None, source: str = "") -> list[str]:
    """One line per leaf key, ``key (type, default X): help`` — used by scripts' ``--help``.

    ``X`` is the dataclass (class) default. With ``cfg`` (a loaded config, e.g. from the script's
    ``--config`` file named ``source``), a key whose value differs says so: ``default X; <source>: Y``.
    """
    lines = []
    hints = get_type_hints(cls)
    defaults = cls()
    for f in dataclasses.fields(cls):
        default = getattr(defaults, f.name)
        value = getattr(cfg, f.name) if cfg is not None else default
        if dataclasses.is_dataclass(default):
            lines.extend(
                config_help(type(default), prefix + f.name + ".", value if cfg is not None else None, source)
            )
        else:
            doc = f.metadata.get("help", "")
            shown = f"default {default!r}"
            if cfg is not None and value != default:
                shown += f"; {source or 'config'}: {value!r}"
            lines.append(f"  {prefix}{f.name} ({_type_name(hints[f.name])}, {shown}): {doc}")
    return lines


def _config_argument(argv: list[str], flag: str) -> tuple[str | None, list[str]]:
    """The value of ``flag`` in ``argv`` (``--config X`` or ``--config=X``) and the ``key=value`` items."""
    path = None
    for i, item in enumerate(argv):
        if item == flag and i + 1 < len(argv):
            path = argv[i + 1]
        elif item.startswith(flag + "="):
            path = item[len(flag) + 1 :]
    overrides = [a for a in argv if "=" in a and not a.startswith("-")]
    return path, overrides


def config_epilog(cls: type, argv: list[str] | None = None, flag: str = "--config") -> str:
    """A script's ``--help`` epilog: every key with its class default and, when ``argv`` names a config
    file with ``flag`` (plus ``key=value`` overrides), the effective value where it differs.

    Scripts build their parser before parsing, so this pre-scans ``argv`` (default ``sys.argv[1:]``);
    a config that fails to load is reported in the epilog instead of its values.
    """
    argv = sys.argv[1:] if argv is None else list(argv)
    path, overrides = _config_argument(argv, flag)
    header = "config keys (override with key=value; 'default' = the built-in class default"
    if path is None:
        return header + "):\n" + "\n".join(config_help(cls))
    try:
        cfg = load_config(cls, path, overrides)
    except ConfigError as err:
        return header + f"; {path} not shown: {err}):\n" + "\n".join(config_help(cls))
    source = path + (" + overrides" if overrides else "")
    return (
        header
        + f", then the value {source} sets where it differs):\n"
        + "\n".join(config_help(cls, cfg=cfg, source=source))
    )
