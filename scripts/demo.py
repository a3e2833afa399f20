"""Gradio demo: upload a gymnastics clip (or pick a SynthGym example) → sampled frames per view, top-5
elements with set and event; chat with the video MLLM about the clip; a Gym-QA quiz. A second tab,
"Routine": upload a whole routine → the elements the detector finds, on a timeline and in a table; pick one
and ask the MLLM about that segment only.

    python scripts/demo.py                                  # the quickstart's encoder (+ MLLM if trained)
    python scripts/demo.py --encoder runs/encoder-tiny/encoder --mllm runs/mllm-tiny/instruct/mllm \\
        --examples data/synthgym-tiny/test.csv --questions data/gymqa/synthgym_tiny_test.json --port 7860
    python scripts/demo.py --detector runs/detector/detector      # + the routine tab's element detector

Then open http://127.0.0.1:7860. The server binds 127.0.0.1 unless --host says otherwise; --share
(a public gradio.live link) only when asked. Uploads must be video files (MP4/MOV, MKV/WebM, AVI,
MPEG-PS, recognised by their first bytes) within --max-file-mb (50), --max-duration (60 s) and
--max-side (4096 px); --queue-size (>= 20) requests may wait, --concurrency of them run at once. Uploads
and the images the app makes are deleted once older than --delete-after (3600 s; checked every
min(600 s, half of it); 0 keeps them until shutdown), so the upload folder does not grow without bound:
a visitor whose clip was deleted is asked to upload it again. Everything is removed at shutdown.

--encoder: a SeFAR encoder checkpoint (``save_pretrained`` directory; its hierarchy.json gives sets and
events). --mllm: an MLLM checkpoint (``<stage B run>/mllm``); its video encoder's weights are --encoder
unless --mllm-encoder names others (the MLLM checks the encoder's fingerprint); the same weights are
loaded once, for the classifier and the MLLM, and each clip is decoded once for both. Without --mllm the
quickstart's MLLM is used if it exists, else the chat panel says the MLLM is not loaded (--no-mllm: never
load it). --llm loads the MLLM's base LLM from another place (a local folder or hub id) than the one
recorded in its mllm_config.json. --trust-remote-code (off by default) lets a hub LLM run the
modelling/tokenizer code shipped with it: only for checkpoints you trust. --examples: a list file
(``<path> <label>``: the labels are the truth shown for examples) or a folder of clips; default: the test
list of the data set the encoder was trained on (``data_root`` in the export's preprocessing.json), if
found. The example clips are copied into the app's private folder, the only folder besides its upload
folder that the app serves files from.

--detector: an element detector export (``<scripts/train_detector.py run>/detector``, the folder
scripts/detect.py takes); its windows go through the encoder its detector.json records (the --encoder
weights already loaded, if that is the same folder) unless --detector-encoder names another export.
Without --detector the routine tab is shown but says that no detector is loaded (and its endpoints
answer so). Routines may last up to --max-routine-duration (120 s); their segments' questions go to the
MLLM as the frames of that segment only.

Exit codes: 0 after a normal shutdown (Ctrl-C); 1 usage or model error (missing checkpoint, encoder
mismatch, bad examples or questions file, a detector that is missing or whose encoder's feature width is
not the detector's).
"""

from __future__ import annotations

import argparse
import ipaddress
import os
import signal
import sys
from pathlib import Path

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # no usage reporting over the network

import torch

from gym_qa.questions import QuestionFormatError, load_questions
from mllm.demo_app import build_demo, launch_demo
from mllm.demo_uploads import AppDirs, DemoLimits, copy_examples
from mllm.encoders.framepool import framepool_window_encoder
from sefar_encoder.clip_inputs import InputError, read_inputs
from sefar_encoder.command_line import Exit1ArgumentParser
from sefar_encoder.detection.routine_detection import load_routine_detector
from sefar_encoder.prediction import Predictor

DEFAULT_ENCODER = Path("runs/quickstart/encoder")
DEFAULT_MLLM = Path("runs/quickstart/mllm")
EXIT_OK, EXIT_ERROR = 0, 1


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = Exit1ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--encoder", type=Path, default=DEFAULT_ENCODER, help="SeFAR encoder checkpoint directory")
    p.add_argument(
        "--mllm", type=Path, default=None, help=f"MLLM checkpoint directory (default: {DEFAULT_MLLM})"
    )
    p.add_argument("--no-mllm", action="store_true", help="run without the MLLM (no chat answers)")
    p.add_argument("--llm", default=None, help="base LLM, local folder or hub id (default: the MLLM's)")
    p.add_argument(
        "--mllm-encoder", default=None, help="video encoder weights of the MLLM (default: --encoder)"
    )
    p.add_argument(
        "--detector",
        type=Path,
        default=None,
        help="element detector export for the routine tab (<run>/detector)",
    )
    p.add_argument(
        "--detector-encoder",
        type=Path,
        default=None,
        help="encoder export the detector's windows go through (default: the one its detector.json names)",
    )
    p.add_argument("--examples", type=Path, default=None, help="list file or folder of example clips")
    p.add_argument("--num-examples", type=int, default=12, help="example clips shown (one per class first)")
    p.add_argument(
        "--questions", type=Path, default=None, help="Gym-QA JSON with questions about the examples"
    )
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default: loopback only)")
    p.add_argument("--port", type=int, default=None, help="port (default: 7860 or the next free one)")
    p.add_argument("--share", action="store_true", help="also create a PUBLIC gradio.live link")
    p.add_argument("--max-file-mb", type=float, default=50.0, help="largest upload (MB)")
    p.add_argument("--max-duration", type=float, default=60.0, help="longest clip (seconds)")
    p.add_argument(
        "--max-routine-duration",
        type=float,
        default=120.0,
        help="longest routine of the routine tab (seconds)",
    )
    p.add_argument("--max-side", type=int, default=4096, help="largest frame width or height (pixels)")
    p.add_argument("--queue-size", type=int, default=32, help="requests allowed to wait (>= 20)")
    p.add_argument("--concurrency", type=int, default=2, help="encoder predictions running at once")
    p.add_argument(
        "--delete-after",
        type=int,
        default=DemoLimits.delete_after_s,
        metavar="SECONDS",
        help="delete uploads and generated files older than this, checked every min(600, half of it) s "
        "(gradio's delete_cache; default: %(default)s; 0: only at shutdown)",
    )
    p.add_argument("--max-new-tokens", type=int, default=96, help="longest chat answer (tokens)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", help="torch device")
    p.add_argument(
        "--trust-remote-code",
        action="store_true",
        help="run modelling/tokenizer code shipped with a hub LLM (off by default: only for checkpoints "
        "you trust)",
    )
    return p.parse_args(argv)


def default_examples(predictor: Predictor) -> Path | None:
    """The test list of the data set the encoder was trained on (its export records the data root)."""
    root = predictor.model.preprocessing.data_root
    candidate = Path(root) / "test.csv" if root else None
    return candidate if candidate is not None and candidate.is_file() else None


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        limits = DemoLimits(
            max_file_mb=args.max_file_mb,
            max_duration_s=args.max_duration,
            max_routine_duration_s=args.max_routine_duration,
            max_side=args.max_side,
            queue_size=args.queue_size,
            concurrency=args.concurrency,
            delete_after_s=args.delete_after,
        )
    except ValueError as err:
        print(f"demo: error: {err}", file=sys.stderr)
        return EXIT_ERROR
    dirs = AppDirs.create()  # before the demo is built: gradio's upload/cache folder becomes private
    signal.signal(signal.SIGTERM, _interrupt)  # `kill` shuts down like Ctrl-C: the folder is removed
    try:
        return serve(args, dirs, limits)
    finally:
        dirs.cleanup()


def serve(args: argparse.Namespace, dirs: AppDirs, limits: DemoLimits) -> int:
    """Load the models and examples, then run the server until interrupted."""
    try:
        predictor = Predictor(args.encoder, device=args.device)
    except Exception as err:  # noqa: BLE001 - any load failure is a model error (exit 1)
        print(f"demo: error: cannot load the encoder from {args.encoder}: {err}", file=sys.stderr)
        return EXIT_ERROR
    chat = video_encoder = None
    mllm_dir = None if args.no_mllm else (args.mllm or (DEFAULT_MLLM if DEFAULT_MLLM.is_dir() else None))
    if mllm_dir is not None:
        try:
            from mllm.demo_models import load_chat  # the LLM stack loads only when the MLLM is used
            from mllm.generation import GenerationOptions

            chat, video_encoder = load_chat(
                mllm_dir,
                predictor,
                args.encoder,
                args.mllm_encoder,
                device=args.device,
                generation=GenerationOptions(max_new_tokens=args.max_new_tokens),
                trust_remote_code=args.trust_remote_code,
                llm_name_or_path=args.llm,
            )
        except Exception as err:  # noqa: BLE001 - missing files, encoder mismatch...: a model error
            print(f"demo: error: cannot load the MLLM from {mllm_dir}: {err}", file=sys.stderr)
            return EXIT_ERROR
    else:
        print("demo: no MLLM loaded (give --mllm DIR): the chat panel will say so", file=sys.stderr)
    detector = None
    if args.detector is not None:
        try:
            detector = load_routine_detector(
                args.detector,
                args.detector_encoder,
                framepool=framepool_window_encoder,
                loaded={args.encoder: predictor.model},  # the same weights are not loaded twice
            )
        except Exception as err:  # noqa: BLE001 - missing files, width mismatch...: a model error
            print(f"demo: error: cannot load the detector from {args.detector}: {err}", file=sys.stderr)
            return EXIT_ERROR
    else:
        print(
            "demo: no element detector loaded (give --detector DIR): the routine tab will say so",
            file=sys.stderr,
        )
    examples_source = args.examples or default_examples(predictor)
    examples = []
    if examples_source is not None:
        try:
            examples = copy_examples(
                read_inputs(examples_source), predictor, dirs.examples, args.num_examples
            )
        except InputError as err:
            print(f"demo: error: examples: {err}", file=sys.stderr)
            return EXIT_ERROR
    if not examples:
        print("demo: no example clips (give --examples LIST_OR_FOLDER)", file=sys.stderr)
    questions = []
    if args.questions is not None:
        try:
            questions = load_questions(args.questions)
        except (OSError, QuestionFormatError) as err:
            print(f"demo: error: questions: {err}", file=sys.stderr)
            return EXIT_ERROR
    if not _is_loopback(args.host):
        print(
            f"demo: WARNING: binding {args.host}: the demo is reachable from other machines", file=sys.stderr
        )
    if args.share:
        print(
            "demo: WARNING: --share creates a PUBLIC link; anyone with it can use the demo", file=sys.stderr
        )
    demo = build_demo(
        predictor,
        chat,
        examples=examples,
        limits=limits,
        questions=questions,
        video_encoder=video_encoder,
        detector=detector,
    )
    try:
        launch_demo(demo, dirs, limits, host=args.host, port=args.port, share=args.share)
    except KeyboardInterrupt:
        pass
    except OSError as err:  # port in use, cannot bind
        print(f"demo: error: cannot start the server: {err}", file=sys.stderr)
        return EXIT_ERROR
    return EXIT_OK


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


if __name__ == "__main__":
    sys.exit(main())
