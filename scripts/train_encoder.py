"""Train the SeFAR encoder — or a baseline — from a few labeled and many unlabeled clips.

    python scripts/train_encoder.py --config configs/encoder/synthgym_tiny.yaml [key=value ...]
    python scripts/train_encoder.py --config ... --resume        # continue from the run's last checkpoint
    python scripts/train_encoder.py --config ... --on-bad-sample skip   # = data.on_bad_sample=skip
    accelerate launch --config_file configs/accelerate/ddp.yaml --num_processes 8 scripts/train_encoder.py ...
    ACCELERATE_USE_CPU=1 accelerate launch --multi_gpu --num_processes 2 scripts/train_encoder.py ...  # DDP, CPU
    (accelerate 1.15's ``--cpu --num_processes 2`` starts ONE process unless MPI is configured)

Methods (``method.name``): supervised, framepool, fixmatch, svformer, ltg, sefar (+ ``method.dual_level``,
``method.mod_perturb``, ``method.ada_reg`` ablation switches); see ``sefar_encoder/methods.py``. The
training itself is ``sefar_encoder/training.py``; this script is its command line.

The run directory (``out_dir``) receives: ``config.yaml`` (resolved), ``init_report.json`` (what the
image-ViT initialisation loaded), ``metrics.jsonl`` (one line per epoch; ``steps.jsonl`` one line per
optimizer step with ``log_every_step=true``), ``checkpoints/`` (atomic, safetensors + JSON, every epoch
and on SIGTERM), ``encoder/`` (the best model on val, ``save_pretrained``), and at the end ``report.md``,
``curves.png``, ``confusion.png`` and, last, ``metrics.json`` (with the bad clips skipped and the clips
decoded by the PyAV fallback). Test is evaluated once, with the model selected on val.

Bad input (docs/reliability.md): ``data.on_bad_sample=error`` (default) checks every clip of every list
before step 1 (``data.validate``) and stops listing ALL bad clips (file, list line, reason);
``skip`` trains without them and names them in metrics.json and report.md. No clip is ever replaced.
"""

from __future__ import annotations

import argparse
import sys
import traceback
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from accelerate import PartialState

from gym_qa.hierarchy import HierarchyError
from gym_qa.lists import ListFileError
from sefar_encoder.config import ConfigError, config_epilog, load_config
from sefar_encoder.dataset import BadClipsError
from sefar_encoder.decoding import DecodeError
from sefar_encoder.evaluation import NoClipsError
from sefar_encoder.training import StopRequested, TrainConfig, run

EXIT_OK, EXIT_BAD_INPUT, EXIT_USAGE, EXIT_NONFINITE, EXIT_INTERNAL = 0, 1, 2, 3, 4
EXIT_INTERRUPTED, EXIT_SIGTERM = 130, 143
EXIT_CODES = f"""exit codes:
  {EXIT_OK}    done (or, with --resume, the run had already finished)
  {EXIT_BAD_INPUT}    bad input or configuration: unknown/ill-typed config key, missing or malformed list file
       (file:line), label out of range, undecodable clips with data.on_bad_sample=error (every bad
       clip listed: file, list line, reason), no clip left to evaluate, unreadable/unwritable file
  {EXIT_USAGE}    command-line usage error (unknown option)
  {EXIT_NONFINITE}    stopped after max_nonfinite_steps non-finite losses in a row
  {EXIT_INTERNAL}    internal error (a bug): one line here, the traceback in <out_dir>/error.log
  {EXIT_INTERRUPTED}  interrupted (Ctrl-C); no checkpoint written beyond the last epoch's
  {EXIT_SIGTERM}  stopped by SIGTERM after writing a checkpoint (resume with --resume)
"""
BAD_INPUT_ERRORS = (
    ConfigError,
    ListFileError,
    HierarchyError,
    BadClipsError,
    DecodeError,
    NoClipsError,
    OSError,
)


def error(message: str) -> None:
    """The error's first line after ``error:``; further lines (a list of bad clips) follow as they are."""
    print(f"error: {message}", file=sys.stderr)


def internal_error(err: BaseException, out_dir: str | None) -> int:
    """One line on stderr; the traceback in ``<out_dir>/error.log`` when that folder can be written."""
    where = "not saved"
    if out_dir is not None:
        try:
            log = Path(out_dir) / "error.log"
            log.parent.mkdir(parents=True, exist_ok=True)
            log.write_text("".join(traceback.format_exception(err)))
            where = f"traceback in {log}"
        except OSError:
            pass
    error(
        f"internal error {type(err).__name__}: {str(err).strip().splitlines()[0] if str(err).strip() else ''}"
        f" ({where}; please report it)"
    )
    return EXIT_INTERNAL


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=EXIT_CODES + "\n" + config_epilog(TrainConfig, argv),
    )
    parser.add_argument("--config", help="YAML config (see configs/encoder/)")
    parser.add_argument("--resume", action="store_true", help="continue from the run's last checkpoint")
    parser.add_argument(
        "--on-bad-sample",
        choices=("error", "skip"),
        help="undecodable clips: error = stop before step 1 listing them all; skip = leave them out and "
        "report them (= data.on_bad_sample)",
    )
    parser.add_argument("overrides", nargs="*", help="key.sub=value overrides")
    args = parser.parse_args(argv)
    overrides = args.overrides + ([f"data.on_bad_sample={args.on_bad_sample}"] if args.on_bad_sample else [])
    cfg = None
    try:
        cfg = load_config(TrainConfig, args.config, overrides)
        metrics = run(cfg, resume=args.resume)
    except BAD_INPUT_ERRORS as err:
        error(str(err))
        return EXIT_BAD_INPUT
    except FloatingPointError as err:
        error(str(err))
        return EXIT_NONFINITE
    except StopRequested:
        return EXIT_SIGTERM
    except KeyboardInterrupt:
        error("interrupted")
        return EXIT_INTERRUPTED
    except Exception as err:  # noqa: BLE001 - a bug: one line, the traceback in the run folder
        return internal_error(err, cfg.out_dir if cfg is not None else None)
    if PartialState().is_main_process:
        bad = metrics.get("bad_samples", {}).get("count", 0)
        print(
            f"done: test mean class {100 * metrics['test']['mean_class']:.1f} % "
            f"(top-1 {100 * metrics['test']['top1']:.1f} %)"
            + (f"; {bad} bad clip(s) skipped, listed in metrics.json" if bad else "")
            + f" -> {cfg.out_dir}/report.md"
        )
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
