"""Ask the video MLLM a question about a clip; the answer streams to stdout.

    python scripts/chat.py --encoder runs/encoder-tiny/encoder --mllm runs/mllm-tiny/instruct/mllm \\
        --video data/synthgym-tiny/videos/<clip>.mp4 "What gymnastics move is this athlete performing?"
    python scripts/chat.py ... --video clip.mp4 --mc "What gymnastics move ...? A.x B.y C.z D.w"

--encoder is the video encoder's checkpoint (the one the MLLM was trained on: checked by fingerprint);
its kind and builder options (token options, frames per clip) come from the MLLM checkpoint unless
--encoder-name / --encoder-option say otherwise. --mc answers a multiple-choice question by option
likelihood and prints the letter and the per-option NLLs instead of generating. Several questions are
asked in turn, as one conversation. --llm loads the base LLM from another place (a local folder or hub
id) than the one recorded in the MLLM checkpoint's mllm_config.json. --trust-remote-code (off by default)
lets a hub LLM run the modelling/tokenizer code shipped with it: only for checkpoints you trust.

Exit codes: 0 done; 2 bad input (missing file, encoder mismatch, undecodable video).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

from gym_qa.questions import QuestionFormatError
from mllm.chat import EncoderMismatchError, VideoChat
from mllm.encoders import ENCODERS
from mllm.generation import GenerationOptions
from mllm.prompting import Turn
from sefar_encoder.clip_checks import BadClipsError
from sefar_encoder.decoding import DecodeError
from sefar_encoder.runtime.config import ConfigError, parse_overrides


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--encoder", required=True, help="video encoder checkpoint (directory / file / hub id)")
    p.add_argument("--mllm", required=True, type=Path, help="MLLM checkpoint directory (<stage run>/mllm)")
    p.add_argument("--llm", default=None, help="base LLM, local folder or hub id (default: the checkpoint's)")
    p.add_argument("--video", required=True, type=Path, help="the clip to ask about")
    p.add_argument("questions", nargs="+", help="question(s), asked in turn as one conversation")
    p.add_argument("--encoder-name", default=None, choices=sorted(ENCODERS), help="default: the checkpoint's")
    p.add_argument("--encoder-option", nargs="*", default=None, metavar="KEY=VALUE", help="builder options")
    p.add_argument("--mc", action="store_true", help="multiple choice by option likelihood, no generation")
    p.add_argument("--max-new-tokens", type=int, default=64, help="upper bound on the answer's tokens")
    p.add_argument("--sample", action="store_true", help="sample instead of greedy decoding")
    p.add_argument("--temperature", type=float, default=0.7, help="sampling temperature")
    p.add_argument("--seed", type=int, default=None, help="sampling seed")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", help="torch device")
    p.add_argument("--load-in-4bit", action="store_true", help="load the base LLM in 4 bit (CUDA)")
    p.add_argument(
        "--trust-remote-code",
        action="store_true",
        help="run modelling/tokenizer code shipped with a hub LLM (off by default: only for checkpoints "
        "you trust)",
    )
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    generation = GenerationOptions(
        max_new_tokens=args.max_new_tokens,
        do_sample=args.sample,
        temperature=args.temperature,
        seed=args.seed,
    )
    try:
        options = parse_overrides(args.encoder_option) if args.encoder_option is not None else None
        chat = VideoChat.from_pretrained(
            args.mllm,
            args.encoder,
            encoder_name=args.encoder_name,
            encoder_options=options,
            device=args.device,
            load_in_4bit=args.load_in_4bit or None,
            generation=generation,
            trust_remote_code=args.trust_remote_code,
            llm_name_or_path=args.llm,
        )
        history: list[Turn] = []
        for question in args.questions:
            if args.mc:
                answer = chat.answer_mc(args.video, question)
                print(json.dumps({"letter": answer.letter, "option_scores": answer.option_scores}))
                continue
            pieces = []
            for piece in chat.ask(args.video, question, history=history):
                print(piece, end="", flush=True)
                pieces.append(piece)
            print()
            history.append(Turn(question, "".join(pieces).strip()))
    except (
        BadClipsError,
        ConfigError,
        DecodeError,
        EncoderMismatchError,
        FileNotFoundError,
        QuestionFormatError,
    ) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
