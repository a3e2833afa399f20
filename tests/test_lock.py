"""Reproducible installs (issue 18, point 12): constraints.txt pins exactly this environment's dependency
closure of sefar-toolkit[dev], the project excluded; the Makefile installs through it and `make lock`
rewrites it; scripts/lock_constraints.py --check tells a drifted lock."""

from __future__ import annotations

import subprocess

from conftest import REPO, load_script
from packaging.utils import canonicalize_name

lock = load_script("lock_constraints")
LOCK_FILE = REPO / "constraints.txt"


def test_the_lock_is_this_environments_closure():
    pins = lock.read_pins(LOCK_FILE)
    assert lock.main(["--check", "--out", str(LOCK_FILE)]) == 0, (
        "constraints.txt differs from .venv: install through it, or run `make lock` after an upgrade"
    )
    assert {"torch", "transformers", "timm", "peft", "accelerate", "pytest", "gradio"} <= set(pins)
    assert "sefar-toolkit" not in pins
    assert all(version and "," not in version for version in pins.values())  # exact pins only


def test_closure_follows_extras_and_markers():
    dev = lock.closure(extras=("dev",))
    base = {canonicalize_name(n) for n in lock.closure(extras=())}
    assert "pytest" not in base and "pytest" in {canonicalize_name(n) for n in dev}
    assert "setuptools" in {canonicalize_name(n) for n in dev}  # torch needs it at run time
    # psutil's "setuptools; extra == 'dev'" is psutil's own extra, not ours: markers use each package's extras
    assert "psutil" in base


def test_check_reports_a_drifted_lock(tmp_path, capsys):
    drifted = tmp_path / "constraints.txt"
    assert lock.main(["--out", str(drifted)]) == 0
    assert lock.main(["--check", "--out", str(drifted)]) == 0
    text = drifted.read_text().replace("\ntorch==", "\ntorch==0.0.1+was")
    drifted.write_text(text + "nonexistent-package==1.0\n")
    assert lock.main(["--check", "--out", str(drifted)]) == 1
    out = capsys.readouterr().out
    assert "torch: 0.0.1+was" in out and "nonexistent-package: 1.0" in out and "make lock" in out


def test_make_installs_through_the_lock_and_lock_rewrites_it():
    def dry_run(target: str) -> str:
        result = subprocess.run(
            ["make", "-n", "-B", target], cwd=REPO, capture_output=True, text=True, check=True
        )
        return result.stdout

    installs = [line for line in dry_run("venv").splitlines() if "pip install" in line]
    assert installs and all("-c constraints.txt" in line or "--upgrade pip" in line for line in installs)
    assert any('-e ".[dev]"' in line for line in installs)
    assert "scripts/lock_constraints.py --extras dev --out constraints.txt" in dry_run("lock")
