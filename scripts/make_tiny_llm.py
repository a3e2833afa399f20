"""Build the tiny LLM, Vicuna's stand-in on CPU: a sentencepiece BPE tokenizer trained on gymnastics text
and a small Llama briefly pre-trained on it, saved with save_pretrained (safetensors).

    python scripts/make_tiny_llm.py --out data/tiny_llm                       # FineGym element names
    python scripts/make_tiny_llm.py --corpus questions.txt names.txt --out data/tiny_llm --steps 300

Without --corpus, the text is generated from the element names in FineGym's gym99/gym288 category files
(packaged with gym_qa, or in --finegym-dir): captions and vicuna_v1-style questions. A corpus file has one text per line. The output
directory then loads exactly like Vicuna (mllm.tokenizer.load_tokenizer, mllm.language_model), with a
Vicuna-style tokenizer_config.json (add_bos_token true, add_eos_token false). Prints a JSON summary.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

from gym_qa.finegym import metadata_path
from gym_qa.hierarchy_files import HierarchyError, read_categories
from mllm.language_model import MICRO_TINY_LLM, TinyLLMConfig, build_tiny_llm, tiny_llm_corpus

CATEGORY_FILES = ("gym99_categories.txt", "gym288_categories.txt")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--out", required=True, type=Path, help="directory to write the tokenizer and model to"
    )
    parser.add_argument(
        "--corpus",
        nargs="+",
        type=Path,
        default=None,
        help="text file(s), one text per line (default: generated from FineGym element names)",
    )
    parser.add_argument(
        "--finegym-dir",
        type=Path,
        default=None,
        help="FineGym metadata folder for the default corpus (default: the copy packaged with gym_qa)",
    )
    parser.add_argument(
        "--micro",
        action="store_true",
        help="start from the micro size used by tests (builds in about a second)",
    )
    sizes = parser.add_argument_group("size and budget (TinyLLMConfig)")
    for f in dataclasses.fields(TinyLLMConfig):
        sizes.add_argument(
            f"--{f.name.replace('_', '-')}",
            type=type(f.default),
            default=None,
            help=f"{f.metadata.get('help', '')} (default: {f.default})",
        )
    return parser.parse_args(argv)


def read_corpus(args: argparse.Namespace, seed: int) -> list[str]:
    if args.corpus:
        texts = []
        for path in args.corpus:
            texts += [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
        return texts
    names = []
    for name in CATEGORY_FILES:
        path = args.finegym_dir / name if args.finegym_dir else metadata_path(name)
        names += [element.name for element in read_categories(path)]
    return tiny_llm_corpus(names, seed=seed)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    base = MICRO_TINY_LLM if args.micro else TinyLLMConfig()
    overrides = {f.name: getattr(args, f.name) for f in dataclasses.fields(TinyLLMConfig)}
    cfg = dataclasses.replace(base, **{k: v for k, v in overrides.items() if v is not None})
    try:
        texts = read_corpus(args, cfg.seed)
        summary = build_tiny_llm(texts, args.out, cfg)
    except (OSError, HierarchyError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
