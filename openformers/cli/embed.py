"""``openformers embed`` and ``openformers similarity``: sentence embeddings from an encoder."""
from __future__ import annotations

import argparse
import json


def add_arguments(parser: argparse.ArgumentParser, name: str) -> None:
    parser.add_argument("sentences", nargs="+", help="sentences to embed" + (" (the first is the query)" if name == "similarity" else ""))
    parser.add_argument("--model", default="minilm", help="a local model directory, cached repo id or embedded name")
    parser.add_argument("--dtype", default="float32", help="float32 or bfloat16")
    parser.add_argument("--max-length", type=int, default=256, help="longest input in tokens; longer sentences are cut")


def embed(model_name: str, sentences: list[str], dtype: str = "float32", max_length: int = 256):
    """Mean-pooled, L2-normalised sentence embeddings, as sentence-transformers computes them."""
    import torch

    from openformers import AutoModel, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_name)
    model = AutoModel.from_pretrained(model_name, dtype=dtype)
    batch = tokenizer(sentences, padding=True, truncation=True, max_length=max_length, return_tensors="pt")
    with torch.inference_mode():
        hidden = model(**batch).last_hidden_state.float()
    mask = batch["attention_mask"].unsqueeze(-1).float()
    pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
    return torch.nn.functional.normalize(pooled, dim=-1)


def run(args: argparse.Namespace) -> int:
    vectors = embed(args.model, args.sentences, args.dtype, args.max_length)
    if args.command == "embed":
        for sentence, vec in zip(args.sentences, vectors.tolist()):
            print(json.dumps({"text": sentence, "embedding": [round(v, 6) for v in vec]}))
        return 0
    if len(args.sentences) < 2:
        raise SystemExit("similarity needs a query and at least one other sentence")
    scores = (vectors[1:] @ vectors[0]).tolist()
    print(f"query: {args.sentences[0]}")
    for sentence, score in sorted(zip(args.sentences[1:], scores), key=lambda x: -x[1]):
        print(f"{score:+.4f}  {sentence}")
    return 0
