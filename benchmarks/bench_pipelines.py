"""Pipeline benchmark: openformers vs transformers, text-classification and ner, side by side.

The model is a BERT of MiniLM's size: the real all-MiniLM-L6-v2 weights with a random
sequence-classification (3 labels) or token-classification (7 labels) head, saved once to a
temporary directory that both libraries load. 1,000 texts of 3 to 80 words (a realistic spread
of lengths) go through ``pipe(texts, batch_size=32)``; the two libraries are timed alternately
(best of ``--repeats``) after a warm-up, and the results are checked to agree.

Run: ``python benchmarks/bench_pipelines.py [--n 1000] [--batch-size 32] [--repeats 2] [--threads N]``

Measured on a shared 2-core CPU box (load average 11-13 from other jobs, so absolute rates are
low; the peers were timed alternately under the same load), 1,000 texts, batch_size 32:
  --threads 1: text-classification 26.5 vs 15.5 texts/s (1.71x), ner 30.0 vs 15.7 texts/s (1.91x)
  --threads 2: text-classification  8.2 vs  5.8 texts/s (1.40x), ner  8.2 vs  5.3 texts/s (1.54x)
Most of the gain comes from sorting each chunk of inputs by length before batching (less padding).
"""
from __future__ import annotations

import argparse
import json
import random
import tempfile
import time
from pathlib import Path

import torch

WORDS = ("the quick brown fox jumps over lazy dog Paris London Alice Bob company founded in New York "
         "city river music happy sad terrible great movie film acting plot boring exciting weather today "
         "tomorrow Microsoft Google engineer designed built tower 1889 world fair").split()
NER_LABELS = ["O", "B-PER", "I-PER", "B-LOC", "I-LOC", "B-ORG", "I-ORG"]


def make_texts(n: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    return [" ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 80))) + "." for _ in range(n)]


def build_models(root: Path) -> dict[str, Path]:
    import transformers

    from openformers import embedded_model_path

    minilm = str(embedded_model_path("minilm"))
    transformers.logging.set_verbosity_error()
    torch.manual_seed(0)
    out = {}
    for task, cls, kw in (
        ("text-classification", transformers.BertForSequenceClassification, {"num_labels": 3}),
        ("ner", transformers.BertForTokenClassification,
         {"id2label": dict(enumerate(NER_LABELS)), "label2id": {l: i for i, l in enumerate(NER_LABELS)}}),
    ):
        path = root / task
        cls.from_pretrained(minilm, **kw).save_pretrained(path)
        transformers.AutoTokenizer.from_pretrained(minilm).save_pretrained(path)
        out[task] = path
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    import transformers

    from openformers import pipeline

    texts = make_texts(args.n)
    report = {"n": args.n, "batch_size": args.batch_size, "threads": torch.get_num_threads(), "tasks": {}}
    with tempfile.TemporaryDirectory() as tmp:
        dirs = build_models(Path(tmp))
        for task, path in dirs.items():
            kw = {"aggregation_strategy": "simple"} if task == "ner" else {}
            ours = pipeline(task, model=str(path), **kw)
            theirs = transformers.pipeline(task, model=str(path), device="cpu", **kw)
            peers = {"openformers": ours, "transformers": theirs}
            for pipe in peers.values():  # warm-up
                pipe(texts[:64], batch_size=args.batch_size)
            best = {name: float("inf") for name in peers}
            results = {}
            for _ in range(args.repeats):
                for name, pipe in peers.items():
                    t0 = time.perf_counter()
                    results[name] = pipe(texts, batch_size=args.batch_size)
                    best[name] = min(best[name], time.perf_counter() - t0)
            agree = _agree(results["openformers"], results["transformers"], task)
            row = {name: {"seconds": round(s, 3), "texts_per_s": round(args.n / s, 1)} for name, s in best.items()}
            row["speedup"] = round(best["transformers"] / best["openformers"], 2)
            row["results_agree"] = agree
            report["tasks"][task] = row
            print(f"{task:22s} openformers {row['openformers']['texts_per_s']:8.1f} texts/s   "
                  f"transformers {row['transformers']['texts_per_s']:8.1f} texts/s   "
                  f"speedup {row['speedup']:.2f}x   results agree: {agree}")
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2))


def _agree(ours: list, theirs: list, task: str) -> bool:
    if task == "ner":
        key = lambda r: [(e["entity_group"], e["start"], e["end"]) for e in r]  # noqa: E731
        return all(key(a) == key(b) for a, b in zip(ours, theirs))
    return all(a["label"] == b["label"] and abs(a["score"] - b["score"]) < 1e-3 for a, b in zip(ours, theirs))


if __name__ == "__main__":
    main()
