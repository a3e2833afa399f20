"""Merge a LoRA adapter into its base LLM and write a standalone model (safetensors) + tokenizer.

    python scripts/merge_lora.py --base data/tiny_llm --adapter runs/stage_b/checkpoint --out runs/merged_llm

--adapter is a peft adapter directory (adapter_config.json) or an MLLM checkpoint directory, whose
``adapter/`` sub-directory is then used. The base is loaded unquantised (--dtype) even when training used
4-bit weights: merging into 4-bit weights would round the adapter away. The projector is not part of
the merged LLM; an MLLM checkpoint keeps it next to the adapter.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from mllm.language_model import DTYPES, merge_lora
from mllm.multimodal_model import ADAPTER_DIR


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--base", required=True, help="base LLM: local directory or hub id")
    parser.add_argument(
        "--adapter", required=True, type=Path, help="peft adapter or MLLM checkpoint directory"
    )
    parser.add_argument("--out", required=True, type=Path, help="directory for the merged model")
    parser.add_argument(
        "--dtype",
        default="float32",
        choices=list(DTYPES),
        help="dtype to load, merge and save in (default: float32; float16 for Vicuna)",
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    adapter = args.adapter
    if (
        not (adapter / "adapter_config.json").is_file()
        and (adapter / ADAPTER_DIR / "adapter_config.json").is_file()
    ):
        adapter = adapter / ADAPTER_DIR
    if not (adapter / "adapter_config.json").is_file():
        print(
            f"error: {args.adapter}: no adapter_config.json (nor {ADAPTER_DIR}/adapter_config.json)",
            file=sys.stderr,
        )
        return 2
    out = merge_lora(args.base, adapter, args.out, dtype=args.dtype)
    print(f"merged model written to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
