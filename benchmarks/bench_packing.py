"""Packing benchmark: the same batches run packed (real tokens only) and padded, in one process.

The ``eval`` case alternates packed and padded per batch (which goes first alternates by round),
so machine load hits both sides alike; padding is switched off by making ``worth_it`` of the runtime's
rows decline: the embedded MiniLM with a 2-label sequence-classification head, batches of 32 rows of
examples/data/sentiment/train.jsonl (dynamic padding), forward under ``torch.no_grad()``: the inference
runtime's rows of real tokens (``openformers/runtime/encoder.py``, ``_Rows``).

The ``train`` case (``train_bf16``: under bf16 autocast) times a fine-tune step the way the Trainer makes
it (forward in training mode, backward, gradient-norm clipping at 1.0, fused AdamW, zero_grad, freed memory
kept for reuse as in ``train()``) on the same
MiniLM head, batches of 16 rows (dynamic padding), alternating per step between the runtime's training
forward on the real tokens (``train_pad_free``) and the module path on the padded batch; both sides
train the one model.

Decoders do not pack padded batches: their packed training is several documents a row
(``DataCollatorWithFlattening``).

Run: ``python benchmarks/bench_packing.py [--cases eval,train,train_bf16] [--rounds 2] [--threads 2]``
"""
from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path
from typing import Callable

import torch

ROOT = Path(__file__).resolve().parent.parent


def eval_case() -> tuple[list, Callable]:
    from openformers import AutoModelForSequenceClassification, AutoTokenizer, DataCollatorWithPadding

    rows = [json.loads(line) for line in open(ROOT / "examples/data/sentiment/train.jsonl", encoding="utf-8")]
    tok = AutoTokenizer.from_pretrained("minilm")
    model = AutoModelForSequenceClassification.from_pretrained("minilm", num_labels=2).eval()
    collate = DataCollatorWithPadding(tokenizer=tok)
    batches = [collate([dict(tok(r["text"], truncation=True, max_length=128), labels=r["label"]) for r in rows[i:i + 32]])
               for i in range(0, len(rows), 32)]

    def step(batch):
        with torch.no_grad():
            model(**batch)

    return batches, step


def train_case(bf16: bool = False) -> tuple[list, Callable]:
    from openformers import AutoModelForSequenceClassification, AutoTokenizer, DataCollatorWithPadding

    rows = [json.loads(line) for line in open(ROOT / "examples/data/sentiment/train.jsonl", encoding="utf-8")]
    tok = AutoTokenizer.from_pretrained("minilm")
    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_pretrained("minilm", num_labels=2).train()
    collate = DataCollatorWithPadding(tokenizer=tok)
    batches = [collate([dict(tok(r["text"], truncation=True, max_length=128), labels=r["label"]) for r in rows[i:i + 16]])
               for i in range(0, len(rows) - 15, 16)]
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5, weight_decay=0.01, fused=True)  # the Trainer's choice

    def step(batch):
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = model(**batch).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    step(batches[0])  # the optimizer's state, and the kernels' first builds, out of the timings
    return batches, step


CASES = {"eval": eval_case, "train": train_case, "train_bf16": lambda: train_case(bf16=True)}


def run_rounds(batches: list, step: Callable, rounds: int, owner: type, original: object, times: dict,
               cpu: dict) -> None:
    """Each batch once a side per round, the side that goes first alternating by round."""
    for r in range(rounds):
        for batch in batches:
            for packed in ((True, False) if r % 2 else (False, True)):
                owner.worth_it = original if packed else classmethod(lambda cls, mask: None)
                t, c = time.perf_counter(), time.process_time()
                step(batch)
                times[packed].append(time.perf_counter() - t)
                cpu[packed] += time.process_time() - c


def measure(name: str, rounds: int) -> dict:
    from openformers.training.allocator import reuse_freed_memory
    from openformers.runtime import encoder

    batches, step = CASES[name]()
    calls = [0]
    run_rows = encoder.train_pad_free

    def counted(*args, **kwargs):
        calls[0] += 1
        return run_rows(*args, **kwargs)
    encoder.train_pad_free = counted
    load = Path("/proc/loadavg").read_text().split()[0]
    owner = encoder._Rows
    original = owner.__dict__["worth_it"]
    padding = 1 - sum(float(b["attention_mask"].float().mean()) for b in batches) / len(batches)
    times: dict[bool, list[float]] = {True: [], False: []}
    cpu: dict[bool, float] = {True: 0.0, False: 0.0}
    try:
        with reuse_freed_memory(name.startswith("train")):  # as the Trainer's train() does
            run_rounds(batches, step, rounds, owner, original, times, cpu)
    finally:
        owner.worth_it = original
        encoder.train_pad_free = run_rows
    return {"case": name, "batches": len(batches), "padding": padding, "pad_free_calls": calls[0],
            "load": f"{load} -> {Path('/proc/loadavg').read_text().split()[0]}",
            "packed_s": sum(times[True]), "padded_s": sum(times[False]), "packed_cpu_s": cpu[True],
            "padded_cpu_s": cpu[False],
            "packed_median_ms": statistics.median(times[True]) * 1e3, "padded_median_ms": statistics.median(times[False]) * 1e3}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", default="eval")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    opts = parser.parse_args()
    torch.set_num_threads(opts.threads)
    for name in opts.cases.split(","):
        r = measure(name, opts.rounds)
        print(f"{r['case']:5s} {r['batches']} batches, {r['padding']:.0%} padding: packed {r['packed_s']:.2f} s "
              f"(median {r['packed_median_ms']:.1f} ms), padded {r['padded_s']:.2f} s (median {r['padded_median_ms']:.1f} ms), "
              f"packed / padded time {r['packed_s'] / r['padded_s']:.2f}x (process CPU time "
              f"{r['packed_cpu_s'] / r['padded_cpu_s']:.2f}x); training forwards on the real tokens: "
              f"{r['pad_free_calls']}; load average {r['load']}", flush=True)


if __name__ == "__main__":
    main()
