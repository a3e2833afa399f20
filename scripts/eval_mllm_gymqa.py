"""Answer Gym-QA questions with a trained video MLLM and score them with the Gym-QA evaluator.

    python scripts/eval_mllm_gymqa.py --mllm runs/mllm-tiny/instruct/mllm \\
        --encoder sefar --weights runs/encoder-tiny/encoder \\
        --questions data/gymqa/synthgym_tiny_test.json --list data/synthgym-tiny/test.csv \\
        --out-predictions runs/mllm-tiny/eval/predictions.jsonl --mode likelihood \\
        [--categories data/synthgym-tiny] [--circular] [--out-json R.json] [--out-md R.md]

Modes:
  generate    greedy decoding of the answer; the evaluator extracts the letter from the text (report mode
              ``text``: any free-text answer, a letter contradicted by its text is unparseable) and reads
              it as the trained answer form (mode ``answer_form``: "C. <text>" is C, whatever the text)
  likelihood  every option scored as a continuation of the prompt ("C. <text>" after stage B, see
              --score-target): ``option_scores`` (summed NLL, lower is better) + ``option_token_counts``
  both        one record with both
  letter      constrained decoding: the LLM's next token after the prompt, restricted to the first token of
              each option's trained answer ("C. <text>" -> C's token), argmax; the record's text is the
              letter alone, so it is always a valid letter (mllm.generation.choose_letter)
  classifier4 no MLLM: the SeFAR encoder's own classifier restricted to the options' element classes,
              for the questions whose options are all element names (``gym_qa.classifier_answerer``);
              --weights is the encoder checkpoint, --mllm is not used

Features of the questions' clips (``video`` = clip id, mapped to files by --list) come from the feature
cache under --cache-root; clips not cached yet are encoded first. The encoder (name, --weights,
--encoder-option) must be the one the MLLM was trained on: its fingerprint is checked. --llm loads the base
LLM from another place (a local folder or hub id) than the one recorded in the checkpoint's
mllm_config.json. The report (``gym_qa.score``: overall, per answer type, per event/set with --categories)
goes to --out-json and --out-md (default: next to the predictions), with the run's settings and timings
under ``"run"``.
A clip that cannot be decoded stops the run (--on-bad-sample error) or is skipped (skip): its questions
then count as wrong, are listed under ``run.questions_without_features`` and announced on stderr.

Exit codes: 0 done; 2 bad input, one line naming the file (question file and record, list file and line,
a question whose clip is not in --list, a clip that cannot be decoded or encoded, encoder mismatch, stale
cache, MLLM checkpoint or tokenizer that cannot be read).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from gym_qa.classifier_answerer import answerable_questions, classifier_predictions
from gym_qa.clips import clip_id_of
from gym_qa.hierarchy import load_hierarchy
from gym_qa.hierarchy_files import HierarchyError
from gym_qa.lists import ListEntry, ListFileError, read_list
from gym_qa.questions import OPTION_LETTERS, QuestionFormatError, circular_questions, load_questions
from gym_qa.scoring import Prediction, report_to_markdown, score, write_predictions
from mllm.chat import EncoderMismatchError, VideoChat
from mllm.encoders import ENCODERS
from mllm.feature_cache import EncodingError, FeatureCache, StaleCacheError, build_feature_cache
from mllm.generation import GenerationOptions, choose_letter
from mllm.instruction_data import SCORE_TARGETS, format_answer
from mllm.tokenizer import TokenizerLoadError
from sefar_encoder.clip_inputs import ClipInput
from sefar_encoder.decoding import DecodeError
from sefar_encoder.model.encoder import SeFAREncoder
from sefar_encoder.prediction import PredictionFailure, Predictor
from sefar_encoder.runtime.config import ConfigError, parse_overrides

MODES = ("generate", "likelihood", "both", "letter", "classifier4")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument(
        "--mllm", type=Path, default=None, help="MLLM checkpoint (<stage run>/mllm); not for classifier4"
    )
    p.add_argument("--llm", default=None, help="base LLM, local folder or hub id (default: the checkpoint's)")
    p.add_argument(
        "--encoder", default=None, choices=sorted(ENCODERS), help="encoder name (default: the checkpoint's)"
    )
    p.add_argument("--weights", required=True, help="encoder checkpoint directory / file, or hub id")
    p.add_argument(
        "--encoder-option",
        nargs="*",
        default=None,
        metavar="KEY=VALUE",
        help="encoder builder options (default: the ones the checkpoint recorded)",
    )
    p.add_argument("--questions", required=True, type=Path, help="Gym-QA question file (JSON)")
    p.add_argument("--list", required=True, type=Path, help="list file of the questions' clips")
    p.add_argument("--out-predictions", required=True, type=Path, help="predictions JSONL to write")
    p.add_argument("--mode", default="likelihood", choices=MODES, help="how answers are produced")
    p.add_argument(
        "--score-target",
        default=None,
        choices=sorted(SCORE_TARGETS),
        help="likelihood continuation per option (default: the checkpoint's; 'answer' = 'C. <text>')",
    )
    p.add_argument("--circular", action="store_true", help="also answer every rotation of the options")
    p.add_argument("--categories", type=Path, default=None, help="hierarchy (per event/set accuracy)")
    p.add_argument("--cache-root", type=Path, default=Path("data/features"), help="feature cache root")
    p.add_argument("--max-new-tokens", type=int, default=48, help="generate mode: answer length bound")
    p.add_argument("--limit", type=int, default=0, help="only the first N questions (0 = all)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", help="torch device")
    p.add_argument("--load-in-4bit", action="store_true", help="load the base LLM in 4 bit (CUDA)")
    p.add_argument(
        "--on-bad-sample",
        default="error",
        choices=["error", "skip"],
        help="a clip that cannot be decoded: stop, or skip it (its questions count as wrong)",
    )
    p.add_argument(
        "--trust-remote-code",
        action="store_true",
        help="let a hub LLM run code shipped with it (off: only for checkpoints you trust)",
    )
    p.add_argument("--out-json", type=Path, default=None, help="report JSON (default: beside predictions)")
    p.add_argument("--out-md", type=Path, default=None, help="report Markdown (default: beside predictions)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    args = p.parse_args(argv)
    if args.mode != "classifier4" and args.mllm is None:
        p.error(f"--mllm is required in mode {args.mode}")
    if args.mode == "classifier4" and args.encoder not in (None, "sefar"):
        p.error("--mode classifier4 needs the SeFAR encoder (its classifier head)")
    return args


def predict(chat: VideoChat, features: torch.Tensor, question: Any, mode: str) -> Prediction:
    """One prediction record for ``question`` about the clip with tokens ``features`` [1, N, D_enc]."""
    if mode == "letter":
        letters = OPTION_LETTERS[: len(question.options)]
        answers = [
            format_answer(letter, text) for letter, text in zip(letters, question.options, strict=True)
        ]
        choice = choose_letter(chat.model, chat.builder, question.question, answers, letters, features)
        return Prediction(question.question_id, text=choice.letter)
    text = chat.ask(features, question.question, stream=False) if mode in ("generate", "both") else None
    if mode == "generate":
        return Prediction(question.question_id, text=text)
    mc = chat.answer_mc(features, question)
    return Prediction(question.question_id, text, tuple(mc.option_scores), tuple(mc.option_token_counts))


def classifier_probabilities(
    predictor: Predictor, entries: list[ListEntry], progress: bool
) -> dict[str, list[float]]:
    """Class probabilities of every decodable clip of ``entries`` (clip id → [K])."""
    probabilities = {}
    clips = [ClipInput(e.path) for e in entries]
    for entry, result in zip(entries, predictor.predict_many(clips, progress=progress), strict=True):
        if isinstance(result, PredictionFailure):  # counted as missing by the evaluator, like the MLLM modes
            print(f"warning: {result.path}: {result.error}", file=sys.stderr)
            continue
        row = [0.0] * predictor.num_classes
        for element in result.top_k:  # top_k = every class (see run_classifier4)
            row[element.label] = element.probability
        probabilities[clip_id_of(entry.raw_path)] = row
    return probabilities


def run_classifier4(
    args: argparse.Namespace, questions: list[Any], entries: list[ListEntry]
) -> dict[str, Any]:
    """Mode classifier4: the SeFAR encoder's classifier restricted to each question's element options."""
    started = time.perf_counter()
    encoder = SeFAREncoder.from_pretrained(args.weights)
    predictor = Predictor(encoder, device=args.device, top_k=encoder.config.num_classes)
    answerable = answerable_questions(questions, predictor.class_names)
    wanted = {q.video for q in answerable}
    probabilities = classifier_probabilities(
        predictor, [e for e in entries if clip_id_of(e.raw_path) in wanted], not args.no_progress
    )
    predictions, answerable = classifier_predictions(answerable, probabilities, predictor.class_names)
    write_predictions(args.out_predictions, predictions)
    hierarchy = load_hierarchy(args.categories) if args.categories else None
    labels = {clip_id_of(e.raw_path): e.label for e in entries}
    result = score(answerable, predictions, hierarchy, labels if hierarchy else None)
    seconds = time.perf_counter() - started
    result["run"] = {
        "mode": "classifier4",
        "questions_file": str(args.questions),
        "encoder": {"name": "sefar", "weights": str(args.weights)},
        "answerable_questions": len(answerable),
        "not_element_options": len(questions) - len(answerable),
        "device": str(args.device),
        "seconds": round(seconds, 3),
        "seconds_per_question": round(seconds / max(1, len(predictions)), 4),
    }
    return result


def write_report(args: argparse.Namespace, result: dict[str, Any], title: str) -> None:
    stem = args.out_predictions.with_suffix("")
    out_json = args.out_json or stem.with_name(stem.name + "_report.json")
    out_md = args.out_md or stem.with_name(stem.name + "_report.md")
    out_json.parent.mkdir(parents=True, exist_ok=True)
    out_json.write_text(json.dumps(result, indent=2) + "\n")
    out_md.parent.mkdir(parents=True, exist_ok=True)
    out_md.write_text(report_to_markdown(result, title=title))


def run(args: argparse.Namespace) -> dict[str, Any]:
    started = time.perf_counter()
    questions = load_questions(args.questions)
    if args.limit:
        questions = questions[: args.limit]
    entries = read_list(args.list)
    known = {clip_id_of(e.raw_path) for e in entries}
    unknown = sorted({q.video for q in questions} - known)
    if unknown:
        raise ListFileError(
            f"{args.list}: {len(unknown)} question clip(s) are not listed, e.g. {unknown[:3]}"
        )
    if args.mode == "classifier4":
        result = run_classifier4(args, questions, entries)
        write_report(args, result, f"Gym-QA: SeFAR classifier {args.weights} (classifier4)")
        return result
    options = parse_overrides(args.encoder_option) if args.encoder_option is not None else None
    chat = VideoChat.from_pretrained(
        args.mllm,
        args.weights,
        encoder_name=args.encoder,
        encoder_options=options,
        device=args.device,
        load_in_4bit=args.load_in_4bit or None,
        generation=GenerationOptions(max_new_tokens=args.max_new_tokens),
        score_target=args.score_target,
        trust_remote_code=args.trust_remote_code,
        llm_name_or_path=args.llm,
    )
    report = build_feature_cache(
        chat.encoder,
        args.list,
        args.cache_root,
        on_bad_sample=args.on_bad_sample,
        progress=not args.no_progress,
    )
    cache = FeatureCache(report.directory, fingerprint=chat.model.encoder_fingerprint or None)
    load_seconds = time.perf_counter() - started

    asked = circular_questions(questions) if args.circular else questions
    predictions: list[Prediction] = []
    started_answering = time.perf_counter()
    for question in tqdm(asked, desc=f"Gym-QA ({args.mode})", disable=args.no_progress):
        if question.video not in cache:  # skipped while caching (undecodable): counted as missing
            continue
        predictions.append(predict(chat, cache.get([question.video]), question, args.mode))
    answer_seconds = time.perf_counter() - started_answering
    without = sorted({q.question_id for q in asked if q.video not in cache})
    if without:
        print(
            f"warning: {len(without)} question(s) about clips without features count as wrong "
            f"(skipped while caching: {sorted({q.video for q in asked if q.video not in cache})[:3]})",
            file=sys.stderr,
        )
    write_predictions(args.out_predictions, predictions)

    hierarchy = load_hierarchy(args.categories) if args.categories else None
    labels = {clip_id_of(e.raw_path): e.label for e in entries}
    # Generated answers are also read as the trained answer form ("C. <text>" -> C), beside free text.
    answer_form = args.mode in ("generate", "both")
    result = score(questions, predictions, hierarchy, labels if hierarchy else None, answer_form=answer_form)
    result["run"] = {
        "mllm": str(args.mllm),
        "questions_file": str(args.questions),
        "mode": args.mode,
        "score_target": chat.score_target,
        "encoder": chat.encoder.describe(),
        "encoder_fingerprint": cache.fingerprint,
        "feature_cache": str(cache.directory),
        "device": str(args.device),
        "load_seconds": round(load_seconds, 3),
        "answer_seconds": round(answer_seconds, 3),
        "seconds_per_question": round(answer_seconds / max(1, len(predictions)), 4),
        "questions_without_features": without,
    }
    write_report(args, result, f"Gym-QA: {args.mllm} ({args.mode})")
    return result


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        result = run(args)
    except (
        ConfigError,
        EncoderMismatchError,
        FileNotFoundError,
        HierarchyError,
        ListFileError,
        QuestionFormatError,
        StaleCacheError,
        DecodeError,
        EncodingError,
        TokenizerLoadError,
    ) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    for mode, block in result["modes"].items():
        overall = block["overall"]
        accuracy = "n/a" if overall["accuracy"] is None else f"{100 * overall['accuracy']:.2f} %"
        print(f"{mode}: {accuracy} ({overall['correct']}/{overall['total']})")
    print(f"{result['run']['seconds_per_question']:.3f} s per question -> {args.out_predictions}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
