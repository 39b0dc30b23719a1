"""``openformers export FORMAT ...``: write a model in another runtime's format.

Each format is a sub-command defined by a module with ``add_arguments(parser, name)`` and
``run(args)`` (the same contract as the top-level commands); a new format is one entry in
:data:`FORMATS`.
"""
from __future__ import annotations

import argparse
import importlib
import os

# format -> (module with add_arguments(parser, name) and run(args), help)
FORMATS: dict[str, tuple[str, str]] = {
    "onnx": ("openformers.cli.export", "an ONNX graph (with the config and tokenizer) for onnxruntime"),
    "gguf": ("openformers.cli.export_gguf", "a llama.cpp GGUF file of a Llama-family model (f16, bf16, q8_0, q4_0)"),
    "coreml": ("openformers.cli.export", "a CoreML ML program (.mlpackage) of an encoder, through coremltools"),
}

ONNX_TASKS = ("feature-extraction", "text-classification", "token-classification", "question-answering",
              "fill-mask", "text-generation", "text-generation-with-past")


def add_arguments(parser: argparse.ArgumentParser, name: str) -> None:
    if name == "export":
        sub = parser.add_subparsers(dest="format", required=True, metavar="FORMAT")
        for fmt, (module, help_text) in FORMATS.items():
            p = sub.add_parser(fmt, help=help_text, description=help_text)
            importlib.import_module(module).add_arguments(p, fmt)
        return
    what = "model.onnx" if name == "onnx" else "model.mlpackage"
    parser.add_argument("output", metavar="OUT_DIR", help=f"directory to write {what}, config.json and the tokenizer to")
    parser.add_argument("--model", "-m", required=True,
                        help="a local model directory, a hub repo id (cached or in OPENFORMERS_HUB) or an embedded name (minilm)")
    tasks = ONNX_TASKS if name == "onnx" else ONNX_TASKS[:5]
    parser.add_argument("--task", default=None, choices=tasks + ("sequence-classification", "masked-lm") +
                        (("causal-lm",) if name == "onnx" else ()),
                        help="what the model computes (default: feature-extraction for encoders"
                             + ("; text-generation-with-past for causal LMs)" if name == "onnx" else ")"))
    parser.add_argument("--revision", default=None, help="a branch, tag or commit of a hub model")
    parser.add_argument("--hub", default=None, help="a local hub directory to find --model in (default: OPENFORMERS_HUB)")
    if name == "onnx":
        parser.add_argument("--opset", type=int, default=None, help="ONNX opset (default 18)")
    else:
        parser.add_argument("--precision", default="float32", choices=("float32", "float16"))


def _default_task(model: str, revision: str | None) -> str:
    from openformers.core.config import load_config_dict

    archs = load_config_dict(model, revision=revision)[0].get("architectures") or []
    if any(a.endswith(("ForCausalLM", "LMHeadModel")) for a in archs):
        return "text-generation-with-past"
    return "feature-extraction"


def run(args: argparse.Namespace) -> int:
    if FORMATS[args.format][0] != __name__:
        return importlib.import_module(FORMATS[args.format][0]).run(args)
    if args.hub:
        os.environ["OPENFORMERS_HUB"] = str(args.hub)
        from openformers.core import settings

        settings.reload()
    load = {"revision": args.revision} if args.revision else {}
    if args.format == "coreml":
        from openformers.export.coreml import to_coreml

        task = args.task or "feature-extraction"
        path = to_coreml(args.model, args.output, task=task, precision=args.precision, **load)
        print(f"exported {args.model} ({task}) to {path} (CoreML runs it on macOS)")
        return 0
    from openformers.export.onnx import DEFAULT_OPSET, to_onnx

    task = args.task or _default_task(args.model, args.revision)
    path = to_onnx(args.model, args.output, task=task, opset=args.opset or DEFAULT_OPSET, **load)
    print(f"exported {args.model} ({task}) to {path}")
    return 0
