"""Score Gym-QA predictions (or video-blind reference answerers) against a question file.

    python scripts/eval_gymqa.py --questions data/gymqa/gym99_val.json --predictions run/predictions.jsonl \\
        --categories gym_qa/data/finegym/gym99_categories.txt \\
        --list gym_qa/data/finegym/gym99_val_element.txt \\
        --out-json run/gymqa_report.json --out-md run/gymqa_report.md

    python scripts/eval_gymqa.py --questions data/gymqa/gym99_val.json --reference all \\
        --categories gym_qa/data/finegym/gym99_categories.txt \\
        --train-list gym_qa/data/finegym/gym99_train_element_v1.1.txt

Predictions are JSON lines {"question_id", "text"} or {"question_id", "option_scores": [NLL per option],
"option_token_counts": [...]}; rotated copies "<id>#r<k>" switch on circular evaluation. Unparseable and
missing answers count as wrong and are listed. With --categories (and optionally --list, mapping clip →
label) accuracy is also broken down per event and per set. --reference runs text-only baselines
(random, first, longest, shortest, most_frequent, stem_prior, option_frequency; "all" for every one)
instead of reading predictions; most_frequent and stem_prior learn from --train-questions or --train-list.

Exit codes: 0 done; 2 bad input, one line naming the file and its line or record (question file,
predictions JSONL, categories, list files, reference answerer that lacks its training data).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

from gym_qa.clips import clip_id_of
from gym_qa.hierarchy import Hierarchy, load_hierarchy
from gym_qa.hierarchy_files import HierarchyError
from gym_qa.lists import ListFileError, read_list
from gym_qa.questions import QuestionFormatError, load_questions
from gym_qa.reference_answerers import (
    REFERENCE_ANSWERERS,
    ReferenceAnswererError,
    answer_counts_from_labels,
    answer_counts_from_questions,
    build_reference_answerer,
)
from gym_qa.scoring import PredictionError, evaluate, read_predictions, report_to_markdown, score


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--questions", required=True, type=Path, help="Gym-QA question file (JSON)")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--predictions", type=Path, help="predictions JSONL")
    source.add_argument(
        "--reference", help=f"reference answerers, comma-separated: {','.join(REFERENCE_ANSWERERS)} or all"
    )
    parser.add_argument(
        "--categories",
        type=Path,
        default=None,
        help="categories file, SynthGym folder or saved hierarchy .json (per event/set results)",
    )
    parser.add_argument(
        "--set-categories",
        type=Path,
        default=None,
        help="set names (default: set_categories.txt beside --categories)",
    )
    parser.add_argument(
        "--qtree",
        type=Path,
        default=None,
        help="Qtree JSON (lets stem_prior learn yes/no attribute answers from --train-list)",
    )
    parser.add_argument(
        "--list",
        type=Path,
        default=None,
        help="list/element file of the questions' clips (clip -> label, for per event/set results)",
    )
    parser.add_argument(
        "--train-questions", type=Path, default=None, help="training questions (most_frequent prior)"
    )
    parser.add_argument(
        "--train-list",
        type=Path,
        default=None,
        help="training list/element file (most_frequent prior; needs --categories)",
    )
    parser.add_argument(
        "--circular", action="store_true", help="reference answerers also answer every rotation"
    )
    parser.add_argument(
        "--seed", type=int, default=0, help="seed of the random reference answerer and tie breaks"
    )
    parser.add_argument("--out-json", type=Path, default=None, help="write the full report as JSON")
    parser.add_argument("--out-md", type=Path, default=None, help="write the report as Markdown")
    return parser.parse_args(argv)


def _video_labels(path: Path, hierarchy: Hierarchy | None) -> dict[str, int]:
    num_classes = hierarchy.num_classes if hierarchy else None
    return {clip_id_of(entry.raw_path): entry.label for entry in read_list(path, num_classes)}


def _headline(report: dict[str, Any]) -> str:
    parts = []
    for mode, result in report["modes"].items():
        block = result["overall"]
        accuracy = "n/a" if block["accuracy"] is None else f"{100 * block['accuracy']:.2f}%"
        parts.append(f"{mode}: {accuracy} ({block['correct']}/{block['total']})")
        if "circular" in result:
            parts.append(f"{mode} circular: {100 * (result['circular']['overall']['accuracy'] or 0):.2f}%")
    return "; ".join(parts)


def _reference_markdown(reports: dict[str, dict[str, Any]]) -> str:
    types = sorted({t for r in reports.values() for t in r["modes"]["text"]["per_answer_type"]})
    lines = [
        "# Gym-QA reference answerers (no video)",
        "",
        "| answerer | overall % | " + " | ".join(f"{t} %" for t in types) + " |",
        "|---|---|" + "---|" * len(types),
    ]
    for name, report in reports.items():
        result = report["modes"]["text"]
        cells = [
            f"{100 * result['per_answer_type'][t]['accuracy']:.2f}" if t in result["per_answer_type"] else "–"
            for t in types
        ]
        lines.append(f"| {name} | {100 * result['overall']['accuracy']:.2f} | " + " | ".join(cells) + " |")
    body = [
        report_to_markdown(r, title=f"Reference answerer `{n}`").replace("# ", "## ", 1)
        for n, r in reports.items()
    ]
    return "\n".join(lines) + "\n\n" + "\n".join(body)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    started = time.perf_counter()
    try:
        questions = load_questions(args.questions)
        hierarchy = (
            load_hierarchy(args.categories, args.set_categories, args.qtree) if args.categories else None
        )
        video_labels = _video_labels(args.list, hierarchy) if args.list else None
        if args.predictions:
            report = score(questions, read_predictions(args.predictions), hierarchy, video_labels)
            markdown = report_to_markdown(report)
            print(_headline(report))
        else:
            names = list(REFERENCE_ANSWERERS) if args.reference == "all" else args.reference.split(",")
            train_counts = None
            if args.train_questions:
                train_counts = answer_counts_from_questions(load_questions(args.train_questions))
            elif args.train_list:
                if hierarchy is None:
                    raise ReferenceAnswererError(
                        "--train-list needs --categories to turn labels into answers"
                    )
                train_labels = [e.label for e in read_list(args.train_list, hierarchy.num_classes)]
                train_counts = answer_counts_from_labels(hierarchy, train_labels)
            reports = {}
            for name in names:
                if (
                    name in ("most_frequent", "stem_prior")
                    and train_counts is None
                    and args.reference == "all"
                ):
                    continue  # "all" runs what it can; asking for most_frequent by name without data errors
                answerer = build_reference_answerer(name.strip(), questions, args.seed, train_counts)
                reports[name], _ = evaluate(
                    questions, answerer, hierarchy, video_labels, circular=args.circular
                )
                print(f"{name}: {_headline(reports[name])}")
            report = {"reference": reports}
            markdown = _reference_markdown(reports)
    except (
        ListFileError,
        HierarchyError,
        QuestionFormatError,
        PredictionError,
        ReferenceAnswererError,
    ) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    report["seconds"] = round(time.perf_counter() - started, 3)
    for path, text in ((args.out_json, json.dumps(report, indent=2) + "\n"), (args.out_md, markdown)):
        if path:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text, encoding="utf-8")
    print(f"evaluated in {report['seconds']:.2f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
