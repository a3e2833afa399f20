"""Benchmark multiple-choice option scoring: one forward of the prompt with the K options packed after it vs
K full forwards.

    python scripts/bench_option_scoring.py                       # tiny-LLM-sized random Llama, built on the fly
    python scripts/bench_option_scoring.py --model data/tiny_llm --video-tokens 32 --repeats 20

The prompt is realistic for Gym-QA: vicuna_v1 system message, --video-tokens projected video tokens and a
"What gymnastics move ..." question with 4 FineGym-like options; the options are the answers "A.<name>"
... "D.<name>" (+ EOS). Prints JSON: {"mc_prefix_speedup": {"ratio", "a", "b", "ideal", "of_ideal", "unit",
"how"}, "machine"} where a = 4 sequential unbatched full forwards, b = one forward of the prompt once and
the 4 options packed after it (median seconds), ratio = the median of a / b over back-to-back pairs, and
ideal = the ratio of their token counts, sum_k (P + T_k) / (P + sum_k T_k)
(``mllm.option_scoring.ideal_speedup``).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import torch

from mllm.language_model import LLMConfig, TinyLLMConfig, build_tiny_llm, load_language_model, tiny_llm_corpus
from mllm.option_scoring import benchmark_option_scoring
from mllm.prompting import PromptBuilder, Turn
from mllm.tokenizer import load_tokenizer
from sefar_encoder.benchmarking import emit
from sefar_encoder.runtime.machine import machine_info

OPTIONS = [
    "round-off, flic-flac on, stretched salto backward with 2 turn off",
    "salto backward tucked with 1 twist",
    "switch leap with 0.5 turn",
    "clear hip circle through handstand with 0.5 turn",
]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--model",
        type=Path,
        default=None,
        help="LLM directory (default: a random tiny-LLM-sized Llama built in a temp dir)",
    )
    parser.add_argument(
        "--video-tokens", type=int, default=32, help="video tokens N in the prompt (default 32)"
    )
    parser.add_argument("--repeats", type=int, default=30, help="timed (a, b) pairs; the median is reported")
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch intra-op threads (default 1: stable timings on a shared machine; 0 = torch's default)",
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = args.model
        if model_dir is None:  # weights do not change the timing: skip pre-training
            model_dir = Path(tmp) / "tiny_llm"
            build_tiny_llm(
                tiny_llm_corpus(OPTIONS * 2 + [f"element {i}" for i in range(20)]),
                model_dir,
                TinyLLMConfig(steps=0),
            )
        tokenizer = load_tokenizer(model_dir)
        llm = load_language_model(LLMConfig(name_or_path=str(model_dir))).eval()
        builder = PromptBuilder(tokenizer, num_video_tokens=args.video_tokens)
        question = "What gymnastics move is this athlete performing? " + " ".join(
            f"{letter}.{option}" for letter, option in zip("ABCD", OPTIONS)
        )
        prompt = builder.encode(Turn(question), sample_id="bench")
        with torch.no_grad():
            embeds = llm.get_input_embeddings()(torch.tensor([prompt.input_ids]))  # [1, P, D]
            # Random stand-ins for the projected video tokens.
            is_video = torch.tensor(prompt.input_ids) == builder.video_token_id
            embeds[0, is_video] = torch.randn(args.video_tokens, embeds.shape[-1])
        options = [builder.encode_answer(f"{letter}.{option}") for letter, option in zip("ABCD", OPTIONS)]
        result = benchmark_option_scoring(
            llm, embeds, options, repeats=args.repeats, pad_id=tokenizer.pad_token_id
        )
    report = {
        "mc_prefix_speedup": {
            "ratio": round(result["ratio"], 3),
            "a": round(result["full_s"], 5),
            "b": round(result["cached_s"], 5),
            "ideal": round(result["ideal"], 3),
            "of_ideal": round(result["ratio"] / result["ideal"], 3),
            "unit": "s",
            "how": (
                f"median of {args.repeats} back-to-back (a, b) pairs of a / b; a = 4 sequential unbatched full "
                "forwards of prompt+option, b = 1 forward of the prompt once + the 4 options packed after it "
                "(block mask); "
                "ideal = token counts sum_k(P + T_k) / (P + sum_k T_k); prompt P = "
                f"{len(prompt.input_ids)} "
                f"tokens ({args.video_tokens} video), options {[len(o) for o in options]} tokens; "
                f"LLM {sum(p.numel() for p in llm.parameters())} params, float32, "
                f"{torch.get_num_threads()} torch thread(s)"
            ),
        },
        "machine": machine_info(),
    }
    emit(report, json_out=None)
    return 0


if __name__ == "__main__":
    sys.exit(main())
