"""Write ``constraints.txt``: the exact version installed here of every package the toolkit needs — the
dependencies of ``sefar-toolkit`` and of the extras named, and theirs, recursively (the project itself
excluded) — so that ``make`` installs what the test suite passed with (``pip install -c constraints.txt``).

    python scripts/lock_constraints.py                    # = make lock: constraints.txt for [dev]
    python scripts/lock_constraints.py --check            # exit 1 when constraints.txt is not this venv's

The closure is read from the installed packages' metadata (``importlib.metadata``), with each requirement's
environment markers evaluated here, so it is this Python on this platform; pip ignores the pins of packages
another platform does not need. Extras not named (``gpu``: deepspeed, ``clip``: open_clip_torch) are not
pinned themselves; their dependencies that the closure holds are. How to upgrade: README, "Reproducible
installs".
"""

from __future__ import annotations

import argparse
import sys
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

PROJECT = "sefar-toolkit"
HEADER = """\
# Exact versions the test suite passed with: the dependency closure of {project}[{extras}] as installed
# when this file was written (Python {python}, {platform}), the project itself excluded.
# `make` installs through it: pip install -c constraints.txt -e ".[{extras}]". Refresh: make lock
# (scripts/lock_constraints.py); to upgrade, see README "Reproducible installs".
"""


class LockError(RuntimeError):
    """A requirement of the closure is not installed in this environment."""


def closure(project: str = PROJECT, extras: tuple[str, ...] = ("dev",)) -> dict[str, str]:
    """{distribution name: installed version} of every package ``project[extras]`` needs here."""
    pins: dict[str, str] = {}
    todo = [(project, frozenset(extras), "")]
    seen: set[tuple[str, frozenset[str]]] = set()
    while todo:
        name, wanted, needed_by = todo.pop()
        key = (canonicalize_name(name), wanted)
        if key in seen:
            continue
        seen.add(key)
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            raise LockError(
                f"{name} (needed by {needed_by or 'the lock'}) is not installed here: install the project "
                f'first (pip install -e ".[{",".join(extras)}]"), then lock'
            ) from None
        if key[0] != canonicalize_name(project):
            pins[dist.metadata["Name"]] = dist.version
        for text in dist.requires or []:
            req = Requirement(text)
            environments = [{"extra": e} for e in sorted(wanted)] or [{"extra": ""}]
            if req.marker is None or any(req.marker.evaluate(env) for env in environments):
                todo.append((req.name, frozenset(req.extras), dist.metadata["Name"]))
    return pins


def render(pins: dict[str, str], extras: tuple[str, ...]) -> str:
    import platform

    header = HEADER.format(
        project=PROJECT,
        extras=",".join(extras),
        python=platform.python_version(),
        platform=f"{platform.system()} {platform.machine()}",
    )
    return header + "".join(f"{name}=={pins[name]}\n" for name in sorted(pins, key=str.lower))


def read_pins(path: Path) -> dict[str, str]:
    """The ``name==version`` lines of a constraints file, by canonical name."""
    pins = {}
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, _, version = line.partition("==")
            pins[canonicalize_name(name)] = version
    return pins


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="constraints.txt", help="the constraints file (default: %(default)s)")
    p.add_argument("--extras", default="dev", help="comma-separated extras to lock (default: %(default)s)")
    p.add_argument("--check", action="store_true", help="compare --out with this environment; write nothing")
    args = p.parse_args(argv)
    extras = tuple(e for e in args.extras.split(",") if e)
    try:
        pins = closure(PROJECT, extras)
    except LockError as err:
        print(f"lock: error: {err}", file=sys.stderr)
        return 1
    out = Path(args.out)
    if args.check:
        have = {canonicalize_name(k): v for k, v in pins.items()}
        locked = read_pins(out) if out.is_file() else {}
        diff = sorted(
            f"{name}: {locked.get(name, 'not pinned')} in {out}, {have.get(name, 'not needed')} here"
            for name in set(have) | set(locked)
            if have.get(name) != locked.get(name)
        )
        for line in diff:
            print(line)
        if diff:
            print(f"{out} is not this environment's closure: run `make lock` (or install through it)")
        return 1 if diff else 0
    tmp = out.with_name(f".{out.name}.tmp")
    tmp.write_text(render(pins, extras))
    tmp.replace(out)
    print(f"{len(pins)} packages pinned -> {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
