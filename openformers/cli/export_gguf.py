"""``openformers export gguf``: write a Llama-family model as one llama.cpp GGUF file.

    openformers export gguf --model NAME_OR_PATH OUT.gguf --type f16

``--model`` takes a checkpoint directory, a cached repo id, a GGUF file or an embedded name
(``smollm2``); the tokenizer found there goes into the file's metadata.
"""
from __future__ import annotations

import argparse
import sys
import time

GGUF_TYPES = ("f16", "bf16", "q8_0", "q4_0", "f32")  # openformers.export.gguf.GGUF_TYPES, without importing torch


def add_arguments(parser: argparse.ArgumentParser, name: str) -> None:
    parser.add_argument("output", help="the .gguf file to write")
    parser.add_argument("--model", required=True, help="model directory, cached repo id, GGUF file or embedded name")
    parser.add_argument("--gguf-file", default=None, help="GGUF file name inside --model's directory (to re-export one)")
    parser.add_argument("--type", default="f16", choices=GGUF_TYPES, help="weight type (default: f16)")
    parser.add_argument("--name", default=None, help="general.name in the file (default: the model's name)")


def run(args: argparse.Namespace) -> int:
    from openformers import AutoModelForCausalLM, AutoTokenizer
    from openformers.export.gguf import save_gguf

    start = time.perf_counter()
    kwargs = {"gguf_file": args.gguf_file} if args.gguf_file else {}
    model = AutoModelForCausalLM.from_pretrained(args.model, **kwargs)
    try:
        tokenizer = AutoTokenizer.from_pretrained(args.model, **kwargs)
    except (OSError, ValueError) as exc:
        print(f"openformers export gguf: no tokenizer at {args.model} ({exc}); writing the file without one",
              file=sys.stderr)
        tokenizer = None
    path = save_gguf(model, args.output, tokenizer, args.type, name=args.name)
    size = path.stat().st_size / 2**20
    print(f"wrote {path} ({args.type}, {size:.1f} MiB) in {time.perf_counter() - start:.1f} s")
    return 0
