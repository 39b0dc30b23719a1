"""``openformers serve``: an OpenAI-compatible HTTP server with continuous batching.

Defaults to the embedded SmolLM2-135M-Instruct; ``--model`` takes any local checkpoint directory,
cached repo id or GGUF file. Needs the ``serving`` extra (FastAPI and uvicorn).
"""
from __future__ import annotations

import argparse
import logging
import os
import sys


def _api_key() -> str | None:
    from openformers.core import settings

    return settings.get("OPENFORMERS_API_KEY")


def add_arguments(parser: argparse.ArgumentParser, name: str) -> None:
    parser.add_argument("--model", default="smollm2", help="model directory, cached repo id, GGUF file or embedded name (default: smollm2)")
    parser.add_argument("--served-model-name", default=None, help="the model id clients send (default: from --model)")
    parser.add_argument("--gguf-file", default=None, help="GGUF file name inside --model's directory")
    parser.add_argument("--dtype", default="auto", help="auto (as from_pretrained loads it), float32 or bfloat16")
    parser.add_argument("--quantized", action="store_true", help="keep a GGUF model's 4-bit weights quantized in memory")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (0.0.0.0 for the network)")
    parser.add_argument("--port", type=int, default=8000, help="port to listen on")
    parser.add_argument("--max-batch-size", type=int, default=32, help="sequences decoded together (KV cache slots)")
    parser.add_argument("--max-queue", type=int, default=256, help="waiting requests beyond this get 429 with Retry-After")
    parser.add_argument("--max-model-len", type=int, default=2048,
                        help="positions per sequence, prompt + output (default: 2048 or the model's context if "
                             "shorter); the KV cache holds up to --max-batch-size times this many positions")
    parser.add_argument("--prefill-chunk", type=int, default=256,
                        help="prompt tokens computed per engine step, between decode steps (smaller: steadier streams)")
    parser.add_argument("--max-body-mb", type=float, default=4.0, help="larger request bodies get 413")
    parser.add_argument("--api-key", default=_api_key(),
                        help="require 'Authorization: Bearer KEY' on every route but /health (default: $OPENFORMERS_API_KEY)")
    parser.add_argument("--embedding-model", default=None, help="an encoder served on /v1/embeddings, e.g. minilm")
    parser.add_argument("--drain-timeout", type=float, default=30.0, help="seconds SIGTERM waits for requests in flight")
    parser.add_argument("--log-level", default="info", help="uvicorn's log level: critical, error, warning, info, debug")


def _model_id(name: str) -> str:
    base = os.path.basename(os.path.normpath(name)) if os.path.exists(name) else name
    return base[:-5] if base.endswith(".gguf") else base


def run(args: argparse.Namespace) -> int:
    try:
        import fastapi  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError as exc:
        raise ImportError(f"openformers serve needs FastAPI and uvicorn: pip install 'openformers[serving]' ({exc})") from exc
    from openformers.cli.generate import load
    from openformers.serving.app import ServerState, serve
    from openformers.serving.embeddings import Embedder
    from openformers.serving.engine import Engine
    from openformers.serving.metrics import Metrics

    for name in ("max_batch_size", "max_queue", "prefill_chunk"):
        if getattr(args, name) < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be at least 1, got {getattr(args, name)}")
    logging.basicConfig(level=getattr(logging, args.log_level.upper(), logging.INFO), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    model, tokenizer = load(args)
    metrics = Metrics()
    engine = Engine(model, tokenizer, max_batch_size=args.max_batch_size, max_len=args.max_model_len,
                    prefill_chunk=args.prefill_chunk, metrics=metrics)
    embedder = Embedder(args.embedding_model) if args.embedding_model else None
    state = ServerState(engine=engine, tokenizer=tokenizer, model_name=args.served_model_name or _model_id(args.model),
                        embedder=embedder, embedding_model_name=_model_id(args.embedding_model) if args.embedding_model else None,
                        api_key=args.api_key, max_queue=args.max_queue, max_body_bytes=int(args.max_body_mb * 1024 * 1024),
                        drain_timeout=args.drain_timeout, metrics=metrics)
    print(f"openformers serve: {state.model_name} on http://{args.host}:{args.port}/v1 "
          f"(batch {args.max_batch_size}, {engine.max_len} positions per sequence)", file=sys.stderr, flush=True)
    return serve(state, args.host, args.port, args.log_level)
