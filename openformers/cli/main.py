"""``openformers`` command line: one sub-command per job.

The parser is built without importing torch, so ``openformers --help`` is instant.
"""
from __future__ import annotations

import argparse
import importlib
import sys

# sub-command -> module with add_arguments(parser) and run(args) -> int
COMMANDS: dict[str, tuple[str, str]] = {
    "chat": ("openformers.cli.generate", "chat with a model in the terminal (default: the embedded SmolLM2-135M-Instruct)"),
    "generate": ("openformers.cli.generate", "generate text from a prompt"),
    "embed": ("openformers.cli.embed", "sentence embeddings with an encoder (default: the embedded MiniLM)"),
    "similarity": ("openformers.cli.embed", "cosine similarity of sentences to the first one"),
    "env": ("openformers.cli.env", "versions, CPU, GPU, native kernels, caches and settings, for a bug report"),
    "export": ("openformers.cli.export", "export a model to another runtime's format (onnx, gguf, coreml)"),
    "hub": ("openformers.cli.hub", "the local model hub: serve it over HTTP, list, log, branch, tag"),
    "launch": ("openformers.cli.launch", "run a training script on several processes or machines (torchrun, Accelerate's flags)"),
    "serve": ("openformers.cli.serve", "an OpenAI-compatible HTTP server with continuous batching"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="openformers", description="Transformer models, offline.")
    from openformers import __version__  # the package's __init__ is lazy: no torch here

    parser.add_argument("--version", action="version", version=f"openformers {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    for name, (module, help_text) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text,
                           formatter_class=argparse.ArgumentDefaultsHelpFormatter)
        importlib.import_module(module).add_arguments(p, name)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    module = importlib.import_module(COMMANDS[args.command][0])
    try:
        return int(module.run(args) or 0)
    except KeyboardInterrupt:
        print(file=sys.stderr)
        return 130
    except (ValueError, OSError, ImportError) as exc:  # user errors: say what is wrong, no traceback
        print(f"openformers {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
