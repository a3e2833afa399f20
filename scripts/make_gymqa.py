"""Generate Gym-QA multiple-choice questions (official JSON format) from a list file and a hierarchy.

    python scripts/make_gymqa.py --list gym_qa/data/finegym/gym99_val_element.txt \\
        --out data/gymqa/gym99_val.json --types what,event,set,attribute --distractors uniform --seed 0

    python scripts/make_gymqa.py --list data/synthgym-tiny/test.csv --categories data/synthgym-tiny \\
        --out data/gymqa/synthgym_test.json --types all --dataset synthgym

--list takes a list file ('<path> <label>') or a FineGym element list ('<clip_id> <label>'); the record's
``video`` is the clip id (file name without video extension), ``frame_length`` the clip's frame count
(PyAV) when the file exists, else 0. --categories takes a gymNN/gym530 categories file (set names from
--set-categories, default set_categories.txt beside it), a SynthGym folder (categories.txt,
set_categories.txt, attributes_qtree.json, meta.json) or a saved hierarchy .json. Without --categories
the hierarchy is FineGym Gym99 (the official Gym-QA's elements) with FineGym's Qtree, both packaged in
gym_qa/data/finegym/.
Answer types: what, event, set, attribute (yes/no, "A.yes B.no"; needs a Qtree), count (needs numeric
class attributes such as twists/saltos in meta.json), and one type per SynthGym attribute that needs time
to see: direction (forward/backward), twists (count), shape (tucked/piked/stretched), turns (count)
(gym_qa/attribute_questions.py; need meta.json); "all" selects every type. A summary (questions per
type, letter balance with a χ² p-value, distractor statistics, attribute coverage) is printed as JSON.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from gym_qa.clips import ClipError, clips_from_list
from gym_qa.finegym import metadata_path
from gym_qa.hierarchy import load_hierarchy
from gym_qa.hierarchy_files import HierarchyError
from gym_qa.lists import ListFileError
from gym_qa.question_generator import (
    DISTRACTOR_MODES,
    GeneratorConfig,
    GeneratorError,
    QuestionGenerator,
    parse_answer_types,
)
from gym_qa.questions import QuestionFormatError, write_questions


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--list", required=True, type=Path, help="list file or element list of the clips")
    parser.add_argument(
        "--categories",
        type=Path,
        default=None,
        help="categories file, SynthGym folder, or saved hierarchy .json "
        "(default: FineGym Gym99 and, unless --qtree is given, FineGym's Qtree; both packaged)",
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
        help="Qtree JSON for attribute questions (finegym_glabel_to_Qtree.json)",
    )
    parser.add_argument("--meta", type=Path, default=None, help="SynthGym meta.json with class attributes")
    parser.add_argument("--out", required=True, type=Path, help="question file to write (Gym-QA JSON)")
    parser.add_argument(
        "--distractors",
        choices=DISTRACTOR_MODES,
        default="uniform",
        help="uniform: any other element (official); hard: same set, then same event; "
        "frequency: in proportion to how often each answer is correct (no prior leak)",
    )
    parser.add_argument(
        "--types",
        default="what",
        help="comma-separated answer types: what,event,set,attribute,count,direction,twists,shape,turns "
        "or all (default: what)",
    )
    parser.add_argument("--seed", type=int, default=0, help="random seed (questions are deterministic in it)")
    parser.add_argument("--dataset", default="finegym", help="value of the records' 'dataset' field")
    parser.add_argument("--num-options", type=int, default=4, help="options per multiple-choice question")
    parser.add_argument(
        "--attributes-per-clip",
        type=int,
        default=1,
        help="yes/no attribute questions per clip (0 = every Qtree question of the element)",
    )
    parser.add_argument(
        "--clips",
        type=Path,
        default=None,
        help="folder of clip files, to read frame counts for element-list entries",
    )
    parser.add_argument("--start-id", type=int, default=0, help="id of the first question")
    parser.add_argument("--summary-json", type=Path, default=None, help="also write the summary here")
    args = parser.parse_args(argv)
    if args.categories is None:
        args.categories = metadata_path("gym99_categories.txt")
        args.qtree = args.qtree or metadata_path("finegym_glabel_to_Qtree.json")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        hierarchy = load_hierarchy(args.categories, args.set_categories, args.qtree, args.meta)
        config = GeneratorConfig(
            types=parse_answer_types(args.types),
            distractors=args.distractors,
            num_options=args.num_options,
            seed=args.seed,
            dataset=args.dataset,
            attributes_per_clip=args.attributes_per_clip,
            start_id=args.start_id,
        )
        clips = clips_from_list(args.list, hierarchy.num_classes, args.clips)
        questions, summary = QuestionGenerator(hierarchy, config).generate(clips)
        write_questions(args.out, questions)
    except (ListFileError, HierarchyError, GeneratorError, QuestionFormatError, ClipError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    summary = {"out": str(args.out), **summary}
    if hierarchy.issues:
        summary["hierarchy_issues"] = list(hierarchy.issues)
    text = json.dumps(summary, indent=2)
    print(text)
    if args.summary_json:
        args.summary_json.parent.mkdir(parents=True, exist_ok=True)
        args.summary_json.write_text(text + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
