"""Training checkpoints without pickle: safetensors for every tensor, JSON for everything else.

A checkpoint is a directory ``<run>/checkpoints/epoch_0003/`` holding

    tensors.safetensors   model/teacher weights, optimiser state tensors, RNG states (flat keys)
    state.json            epoch, step, optimiser hyper-parameters, scheduler, metrics, anything JSON

and ``<run>/checkpoints/latest.json`` is a small JSON file naming the newest complete one. Writing is atomic:
the directory is written under a temporary name, fsynced, then renamed, and only afterwards does
``latest.json`` move (itself via temp + fsync + rename). A crash at any moment leaves either the previous
checkpoint or the new one, never half a file; :func:`clean_stale` puts back a checkpoint caught between
the renames of its re-save (``runtime.lifecycle.clean_run_dir`` then removes every temporary).

We do not use accelerate's ``save_state``: it pickles optimiser and RNG states (docs/DESIGN.md §Checkpoints).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from gym_qa.atomic_files import fsync_dir, fsync_file
from sefar_encoder.runtime.atomic import TMP_PREFIX, write_text_atomic

LATEST = "latest.json"


def flatten_optimizer(state: dict[str, Any], prefix: str) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Split ``optimizer.state_dict()`` into tensors (for safetensors) and a JSON-able remainder."""
    tensors: dict[str, torch.Tensor] = {}
    per_param: dict[str, dict[str, Any]] = {}
    for pid, pstate in state["state"].items():
        plain = {}
        for name, value in pstate.items():
            if torch.is_tensor(value):
                tensors[f"{prefix}.{pid}.{name}"] = value.detach().cpu().contiguous()
            else:
                plain[name] = value
        per_param[str(pid)] = plain
    return tensors, {"param_groups": state["param_groups"], "plain_state": per_param}


def unflatten_optimizer(
    tensors: dict[str, torch.Tensor], meta: dict[str, Any], prefix: str
) -> dict[str, Any]:
    state: dict[int, dict[str, Any]] = {int(pid): dict(plain) for pid, plain in meta["plain_state"].items()}
    for key, value in tensors.items():
        if key.startswith(prefix + "."):
            pid, name = key[len(prefix) + 1 :].split(".", 1)
            state.setdefault(int(pid), {})[name] = value
    return {"state": state, "param_groups": meta["param_groups"]}


def save_checkpoint(
    run_dir: str | Path, name: str, tensors: dict[str, torch.Tensor], state: dict[str, Any]
) -> Path:
    """Atomically write checkpoint ``name`` under ``run_dir/checkpoints`` and point ``latest`` at it."""
    root = Path(run_dir) / "checkpoints"
    root.mkdir(parents=True, exist_ok=True)
    final = root / name
    tmp = root / (TMP_PREFIX + name)
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    # safetensors refuses tensors that share memory; clone views so every entry owns its storage.
    owned = {k: v.detach().cpu().contiguous().clone() for k, v in tensors.items()}
    save_file(owned, str(tmp / "tensors.safetensors"))
    (tmp / "state.json").write_text(json.dumps(state, indent=1))
    for f in tmp.iterdir():
        fsync_file(f)
    fsync_dir(tmp)
    if final.exists():  # re-saving the same epoch (e.g. SIGTERM right after the epoch checkpoint)
        old = root / (TMP_PREFIX + "old-" + name)
        final.replace(old)
        tmp.replace(final)
        shutil.rmtree(old)
    else:
        tmp.replace(final)
    fsync_dir(root)
    write_text_atomic(root / LATEST, json.dumps({"name": name}) + "\n")
    return final


def clean_stale(run_dir: str | Path) -> list[Path]:
    """Remove temporary leftovers of interrupted writes; returns what was removed.

    Re-saving an existing name moves the old directory to ``.tmp-old-<name>`` before renaming the new one
    into place; a kill between the two renames leaves ``latest.json`` naming a missing directory, so the
    complete old one is renamed back first.
    """
    root = Path(run_dir) / "checkpoints"
    removed = []
    pointer = root / LATEST
    if pointer.is_file():
        name = json.loads(pointer.read_text())["name"]
        old = root / (TMP_PREFIX + "old-" + name)
        if not (root / name).exists() and old.is_dir():
            old.replace(root / name)
    if root.is_dir():
        for p in root.iterdir():
            if p.name.startswith(TMP_PREFIX):
                shutil.rmtree(p) if p.is_dir() else p.unlink()
                removed.append(p)
    return removed


def latest_checkpoint(run_dir: str | Path) -> Path | None:
    """The newest complete checkpoint directory of a run, or None."""
    root = Path(run_dir) / "checkpoints"
    pointer = root / LATEST
    if not pointer.is_file():
        return None
    path = root / json.loads(pointer.read_text())["name"]
    if not (path / "tensors.safetensors").is_file() or not (path / "state.json").is_file():
        raise FileNotFoundError(f"{pointer} names {path.name}, which is incomplete or missing")
    return path


def load_checkpoint(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    path = Path(path)
    return load_file(str(path / "tensors.safetensors")), json.loads((path / "state.json").read_text())


def prune_checkpoints(run_dir: str | Path, keep: set[str]) -> None:
    """Delete complete checkpoints whose names are not in ``keep`` (the latest is always kept)."""
    root = Path(run_dir) / "checkpoints"
    pointer = root / LATEST
    if pointer.is_file():
        keep = keep | {json.loads(pointer.read_text())["name"]}
    for p in root.iterdir():
        if p.is_dir() and not p.name.startswith(TMP_PREFIX) and p.name not in keep:
            doomed = root / (TMP_PREFIX + "del-" + p.name)  # a kill mid-delete leaves only a temporary
            p.replace(doomed)
            shutil.rmtree(doomed)


def prefixed(state_dict: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    return {f"{prefix}.{k}": v for k, v in state_dict.items()}


def unprefixed(tensors: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    n = len(prefix) + 1
    return {k[n:]: v for k, v in tensors.items() if k.startswith(prefix + ".")}
