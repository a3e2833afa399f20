"""The run lifecycle every trainer shares: ``scripts/train_encoder.py``, ``scripts/train_mllm.py`` and
``scripts/pretrain_image_backbone.py`` are recipes over it.

A run folder (``out_dir``)::

    config.yaml      the resolved config, written once the input checks have passed
    metrics.jsonl    the history: one JSON line per epoch or step, cut back to the checkpoint on resume
    checkpoints/     <name>/{tensors.safetensors,state.json} and latest.json (runtime.checkpoint)
    error.log        the traceback of an internal error
    metrics.json     written last and atomically: its presence marks a finished run

Every recipe has the same skeleton (torchtune's setup → train → save_checkpoint → cleanup)::

    def run(cfg, resume):
        with RunLifecycle(cfg.out_dir, cfg, resume=resume, may_differ=RESUME_MAY_DIFFER) as lifecycle:
            if (done := lifecycle.finished()) is not None:  # --resume of a finished run: nothing to train
                return done
            lifecycle.check_resume()            # refuse other settings before anything is touched
            ctx, state = setup(cfg, lifecycle)  # build, input checks, lifecycle.start(), restore_point()
            lifecycle.check_stop()              # SIGTERM during set-up
            train(ctx, state)                   # lifecycle.stop_requested -> stop(); count_loss()
            return cleanup(ctx, state)          # final evaluation, exports, lifecycle.finish(metrics)

    def main(argv):                             # every exception -> the same exit codes everywhere
        ... except (Exception, KeyboardInterrupt) as err: return exit_code(err, BAD_INPUT, lambda: out_dir)

SIGTERM only sets :attr:`RunLifecycle.stop_requested`; the loop finishes its optimizer step (every process
votes with its own flag), writes a checkpoint and raises :class:`StopRequested` (exit code 143). A
non-finite loss skips its step; :func:`count_loss` stops the run after ``max_nonfinite_steps`` in a row
(exit 3).
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import signal
import sys
import threading
import time
import traceback
from collections.abc import Callable, Iterable, Iterator, MutableMapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, NoReturn, Self, TypeVar

import torch
from accelerate import PartialState
from accelerate.utils import gather_object

from sefar_encoder.runtime.atomic import TMP_PREFIX, repair_run_dir, write_json_atomic, write_text_atomic
from sefar_encoder.runtime.checkpoint import (
    clean_stale,
    latest_checkpoint,
    load_checkpoint,
    prune_checkpoints,
    save_checkpoint,
)
from sefar_encoder.runtime.config import ConfigError, check_resume_config, save_config

CONFIG, HISTORY, METRICS, ERROR_LOG = "config.yaml", "metrics.jsonl", "metrics.json", "error.log"

EXIT_OK, EXIT_BAD_INPUT, EXIT_USAGE, EXIT_NONFINITE, EXIT_INTERNAL = 0, 1, 2, 3, 4
EXIT_INTERRUPTED, EXIT_SIGTERM = 130, 143
EXIT_CODES = f"""exit codes (the same for every trainer):
  {EXIT_OK}    done (or, with --resume, the run had already finished)
  {EXIT_BAD_INPUT}    bad input or configuration: unknown/ill-typed config key, missing or malformed input file
       (file:line), a clip that cannot be decoded under on_bad_sample=error (every one listed), --resume
       with other settings than the run's own, unreadable/unwritable file
  {EXIT_USAGE}    command-line usage error (unknown option)
  {EXIT_NONFINITE}    stopped after max_nonfinite_steps non-finite losses in a row
  {EXIT_INTERNAL}    internal error (a bug): one line here, the traceback in <out_dir>/{ERROR_LOG}
  {EXIT_INTERRUPTED}  interrupted (Ctrl-C); nothing saved beyond the last checkpoint
  {EXIT_SIGTERM}  stopped by SIGTERM after writing a checkpoint (resume with --resume)
"""


class StopRequested(Exception):
    """SIGTERM was received; a checkpoint has been written (resume with ``--resume``)."""


class RunFolderError(ValueError):
    """A run folder's file is damaged in a way a kill cannot explain (e.g. a bad line inside the history)."""


@dataclass
class RunState:
    """What every trainer's checkpoint records besides tensors; each trainer's state extends it."""

    nonfinite_steps: int = 0  # steps whose loss was NaN/inf (their update skipped)
    nonfinite_in_row: int = 0  # across epoch boundaries and resumes
    seconds: float = 0.0  # training time over all sessions of the run


S = TypeVar("S", bound=RunState)


class RunLifecycle:
    """One run folder and the lifecycle around a recipe's loop. Every process builds one; the main
    process writes. As a context manager it catches SIGTERM (from the main thread, where signals can be
    set) and restores the previous handler on exit: a run may be called in-process, e.g. by tests."""

    def __init__(self, out_dir: str | Path, cfg: Any, *, resume: bool, may_differ: frozenset[str]):
        self.dir, self.cfg, self.resume, self.may_differ = Path(out_dir), cfg, resume, may_differ
        self.stop_requested = False
        self._previous_handler: Any = None
        self._started = time.time()

    def __enter__(self) -> Self:
        if threading.current_thread() is threading.main_thread():
            self._previous_handler = signal.signal(signal.SIGTERM, self._on_sigterm)
        return self

    def __exit__(
        self, kind: type[BaseException] | None, err: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._previous_handler is not None:
            signal.signal(signal.SIGTERM, self._previous_handler)

    def _on_sigterm(self, signum: int, frame: Any) -> None:
        self.stop_requested = True

    @property
    def is_main(self) -> bool:
        return PartialState().is_main_process

    def wait(self) -> None:
        PartialState().wait_for_everyone()

    # ----------------------------------------------------------------------------------- start-up
    def finished(self) -> dict[str, Any] | None:
        """With ``--resume``, a finished run's ``metrics.json`` (it is not trained again); else None."""
        path = self.dir / METRICS
        return json.loads(path.read_text()) if self.resume and path.is_file() else None

    def check_resume(self) -> None:
        """With ``--resume``: a resumed run must end where the uninterrupted one would, so its settings
        must be the saved ``config.yaml``'s, except the keys in ``may_differ`` (ConfigError otherwise)."""
        if self.resume:
            check_resume_config(self.dir / CONFIG, self.cfg, self.may_differ)

    def start(self) -> None:
        """Call once the input checks have passed, so that a run refused for its input leaves the folder as
        it was: a fresh run forgets the previous run's checkpoints and ``metrics.json`` (a kill before its
        first checkpoint is then never resumed from, or reported as, the old run); ``config.yaml`` is saved."""
        if self.is_main:
            if not self.resume:
                forget_previous_run(self.dir)
            self.dir.mkdir(parents=True, exist_ok=True)
            save_config(self.cfg, self.dir / CONFIG)

    def restore_point(self) -> Path | None:
        """The checkpoint to continue from: None for a fresh run; with ``--resume``, once the folder is
        repaired (:func:`clean_run_dir`), the latest complete one (None: nothing was checkpointed yet)."""
        if not self.resume:
            return None
        if self.is_main:
            for path in clean_run_dir(self.dir):
                print(f"removed stale temporary file {path}")
        self.wait()
        return latest_checkpoint(self.dir)

    def check_stop(self) -> None:
        """After set-up: SIGTERM during it (e.g. while validating every clip) stops before the first step,
        with nothing new to save (collective: every process stops)."""
        if any(gather_object([self.stop_requested])):
            print("SIGTERM during set-up: stopped before the first step (nothing new to save)")
            raise StopRequested

    # ----------------------------------------------------------------------------------- training
    def start_clock(self, state: RunState) -> None:
        """Training time continues from the checkpointed ``state.seconds``."""
        self._started = time.time() - state.seconds

    def tick(self, state: RunState) -> None:
        state.seconds = time.time() - self._started

    def stop(self, state: RunState, save: Callable[[], None], where: str) -> NoReturn:
        """SIGTERM reached a step boundary: write the checkpoint (``save``, on every process) and stop."""
        self.tick(state)
        save()
        print(f"SIGTERM: checkpoint written at {where}; resume with --resume", flush=True)
        raise StopRequested

    def save_checkpoint(
        self,
        name: str,
        tensors: dict[str, torch.Tensor],
        state: RunState,
        keep: int | Iterable[str],
        payload: dict[str, Any] | None = None,
    ) -> None:
        """Checkpoint ``name``: ``tensors``, ``state``, ``payload`` (JSON) and every process' RNG state;
        then only the checkpoints named in ``keep`` — or, given a number, the ``keep`` last in name order —
        and the latest stay. Collective: all processes call, the main one writes, atomically."""
        rng = gather_object([(PartialState().process_index, rng_state())])
        if not self.is_main:
            return
        tensors = dict(tensors)
        for rank, states in rng:
            tensors.update({f"rng.{kind}.{rank}": value for kind, value in states.items()})
        save_checkpoint(self.dir, name, tensors, {**dataclasses.asdict(state), **(payload or {})})
        if isinstance(keep, int):
            names = sorted(p.name for p in (self.dir / "checkpoints").iterdir() if p.is_dir())
            keep = [n for n in names if not n.startswith(TMP_PREFIX)][-max(1, keep) :]
        prune_checkpoints(self.dir, set(keep))

    def load_checkpoint(
        self, path: Path, state_type: type[S]
    ) -> tuple[dict[str, torch.Tensor], S, dict[str, Any]]:
        """The tensors, the state and the payload of checkpoint ``path``; this process' RNG is restored
        (process 0's when the run had fewer processes)."""
        tensors, payload = load_checkpoint(path)
        rank = PartialState().process_index
        if f"rng.torch.{rank}" not in tensors:
            rank = 0
        if "rng.torch.0" not in tensors:
            raise RunFolderError(f"{path}: no RNG state (written by an older version); start a new run")
        restore_rng_state(tensors, rank, path)
        names = {f.name for f in dataclasses.fields(state_type)}
        return tensors, state_type(**{k: v for k, v in payload.items() if k in names}), payload

    # ----------------------------------------------------------------------------------- end
    def finish(self, metrics: dict[str, Any]) -> dict[str, Any]:
        """Write ``metrics.json`` — last, atomically: its presence marks the run finished."""
        if self.is_main:
            write_json_atomic(self.dir / METRICS, metrics)
        self.wait()
        return metrics


def rng_state() -> dict[str, torch.Tensor]:
    """This process' random state: the CPU generator's and, with CUDA, its current device's (dropout, LoRA
    dropout and drop path draw from the device's generator on a GPU; one device per process)."""
    states = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        states["cuda"] = torch.cuda.get_rng_state()
    return states


def restore_rng_state(tensors: dict[str, torch.Tensor], rank: int, path: Path | str) -> None:
    """Set this process' generators to the checkpoint's ``rng.<kind>.<rank>`` states. A checkpoint written
    with CUDA and resumed without it, or the other way round, cannot restore the CUDA generator: said once,
    the run goes on (its dropout draws then differ from the uninterrupted run's)."""
    torch.set_rng_state(tensors[f"rng.torch.{rank}"])
    saved = tensors.get(f"rng.cuda.{rank}")
    if saved is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state(saved)
    elif saved is not None or torch.cuda.is_available():
        where = "with CUDA, resumed without" if saved is not None else "without CUDA, resumed with"
        print(f"{path}: written {where}: the CUDA random state is not restored (dropout draws will differ)")


CUBLAS_WORKSPACE = "CUBLAS_WORKSPACE_CONFIG"
DETERMINISTIC_CUBLAS = (":4096:8", ":16:8")  # the values torch accepts for deterministic cuBLAS


@contextmanager
def deterministic_algorithms(enabled: bool, environ: MutableMapping[str, str] = os.environ) -> Iterator[None]:
    """``torch.use_deterministic_algorithms`` for the block when ``enabled`` (restored after it: a run may be
    called in-process, e.g. by tests). On CUDA, deterministic cuBLAS needs ``CUBLAS_WORKSPACE_CONFIG``, read
    when cuBLAS starts: unset, it is set here to ``:4096:8`` if CUDA is not initialised yet, else a
    :class:`ConfigError` says to export it before starting; any other value is a ConfigError too."""
    if enabled and torch.cuda.is_available():
        value = environ.get(CUBLAS_WORKSPACE)
        if value is None and not torch.cuda.is_initialized():
            environ[CUBLAS_WORKSPACE] = DETERMINISTIC_CUBLAS[0]
        elif value not in DETERMINISTIC_CUBLAS:
            raise ConfigError(
                f"deterministic=true on CUDA needs {CUBLAS_WORKSPACE}={DETERMINISTIC_CUBLAS[0]} (or "
                f"{DETERMINISTIC_CUBLAS[1]}) set before CUDA starts; it is {value!r}: export it and run again"
            )
    was = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(enabled or was)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(was)


def count_loss(state: RunState, finite: bool, max_in_row: int, where: str) -> None:
    """Count a step's loss: a finite one ends a series of non-finite ones; ``max_in_row`` non-finite
    losses in a row raise :class:`FloatingPointError` naming ``where`` (what to change follows it)."""
    if finite:
        state.nonfinite_in_row = 0
        return
    state.nonfinite_steps += 1
    state.nonfinite_in_row += 1
    if state.nonfinite_in_row >= max_in_row:
        raise FloatingPointError(f"{state.nonfinite_in_row} non-finite losses in a row at {where}")


def forget_previous_run(run_dir: Path) -> None:
    """Drop an old run's checkpoints and ``metrics.json`` from ``run_dir`` (a fresh run into a used folder)."""
    old = [p for p in (run_dir / "checkpoints", run_dir / METRICS) if p.exists()]
    for p in old:
        if p.is_dir():  # renamed first: a kill mid-delete leaves a temporary that --resume removes
            shutil.rmtree(p.rename(run_dir / f".tmp-old-{p.name}"))
        else:
            p.unlink()
    if old:
        print(f"{run_dir}: removed the previous run's {' and '.join(p.name for p in old)} (a fresh run)")


def clean_run_dir(run_dir: Path) -> list[Path]:
    """Repair a run folder after a kill (no writer alive); returns what was removed: a checkpoint caught
    between the renames of its re-save is put back (runtime.checkpoint), then every other interrupted
    write is undone (runtime.atomic.repair_run_dir)."""
    return clean_stale(run_dir) + repair_run_dir(run_dir)


# ----------------------------------------------------------------------------------------- history
def append_history(path: Path, record: dict[str, Any]) -> None:
    """One line at the end of a history file (a kill mid-write leaves a partial last line, see below)."""
    with open(path, "a") as f:
        f.write(json.dumps(record) + "\n")


def write_history(path: Path, records: list[dict[str, Any]]) -> None:
    write_text_atomic(path, "".join(json.dumps(r) + "\n" for r in records))


def rewind_history(path: Path, last_step: int, *, write: bool, key: str = "step") -> list[dict[str, Any]]:
    """The records of a history file up to ``record[key] == last_step`` (what the checkpoint has seen),
    written back when ``write`` (the main process); a truncated last line — a kill in the middle of an
    append — is dropped, any other bad line is a :class:`RunFolderError`. A missing file stays missing."""
    if not path.is_file():
        return []
    lines = path.read_text().splitlines()
    records = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            if number < len(lines):
                raise RunFolderError(f"{path}:{number}: not a JSON line") from None
            print(f"{path}:{number}: dropped a truncated last line")
    kept = [r for r in records if r[key] <= last_step]
    if write:
        write_history(path, kept)
    return kept


# ----------------------------------------------------------------------------------------- exit codes
def error(message: str) -> None:
    """The error's first line after ``error:``; further lines (e.g. a list of bad clips) follow as they are."""
    print(f"error: {message}", file=sys.stderr)


def exit_code(
    err: BaseException, bad_input: tuple[type[BaseException], ...], out_dir: Callable[[], str | Path]
) -> int:
    """Report the exception that ended a run and return its exit code (:data:`EXIT_CODES`). A bug's
    traceback goes to ``<out_dir()>/error.log`` when that folder is known and writable."""
    if isinstance(err, StopRequested):
        return EXIT_SIGTERM
    if isinstance(err, KeyboardInterrupt):
        error("interrupted")
        return EXIT_INTERRUPTED
    if isinstance(err, (*bad_input, RunFolderError)):
        error(str(err))
        return EXIT_BAD_INPUT
    if isinstance(err, FloatingPointError):
        error(str(err))
        return EXIT_NONFINITE
    first = str(err).strip().splitlines()[0] if str(err).strip() else ""
    error(f"internal error {type(err).__name__}: {first} ({save_traceback(err, out_dir)}; please report it)")
    return EXIT_INTERNAL


def save_traceback(err: BaseException, out_dir: Callable[[], str | Path]) -> str:
    """Write ``err``'s traceback to ``<out_dir()>/error.log``; says where, or that it could not (no
    folder yet, e.g. the config did not load, or one that cannot be written)."""
    try:
        log = Path(out_dir()) / ERROR_LOG
        log.parent.mkdir(parents=True, exist_ok=True)
        log.write_text("".join(traceback.format_exception(err)))
    except Exception:  # noqa: BLE001 - reporting the bug must not raise another
        return "traceback not saved"
    return f"traceback in {log}"
