"""ONNX benchmark: MiniLM feature extraction on onnxruntime (our export) against our PyTorch path
and transformers, batch 1 and batch 32, the same real sentences (padded per batch) for all three.

The three run interleaved in one process (a round of each per iteration, median of the rounds),
all with the same number of threads; the figure is sequences/s and the ratios to our PyTorch and
to transformers. Tests the seed documents' "up to 4x faster inference" claim for ONNX.

Run: ``python benchmarks/bench_export.py [--iters 20] [--threads N]``
"""
from __future__ import annotations

import argparse
import os
import platform
import statistics
import tempfile
import time

SENTENCES = [
    "The quick brown fox jumps over the lazy dog.",
    "ONNX Runtime executes exported graphs with graph-level optimisations.",
    "A sentence embedding maps text to a fixed-size vector.",
    "Paris is the capital and most populous city of France.",
    "Transformers compute attention over every pair of tokens in a sequence, which is why long inputs cost more.",
    "Short one.",
    "Benchmarks should compare like with like: the same inputs, threads and precision.",
    "The weather today is sunny with a light breeze from the west and temperatures around twenty degrees.",
]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--iters", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args()

    import onnxruntime as ort
    import torch
    import transformers

    import openformers
    from openformers.export import ORTModelForFeatureExtraction, to_onnx

    threads = args.threads or torch.get_num_threads()
    torch.set_num_threads(threads)
    transformers.logging.set_verbosity_error()
    path = str(openformers.embedded_model_path("minilm"))
    out_dir = tempfile.mkdtemp(prefix="bench-export-")
    t0 = time.perf_counter()
    to_onnx(path, out_dir, task="feature-extraction")
    export_s = time.perf_counter() - t0
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    # no busy-waiting between runs: the interleaved PyTorch rounds would otherwise share the cores with it
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    ort_model = ORTModelForFeatureExtraction.from_pretrained(out_dir, session_options=options)
    ours = openformers.AutoModel.from_pretrained(path).eval()
    theirs = transformers.AutoModel.from_pretrained(path).eval()
    tok = openformers.AutoTokenizer.from_pretrained(path)

    def run_ort(batch):
        return ort_model(**batch).last_hidden_state

    def run_ours(batch):
        with torch.inference_mode():
            return ours(**batch).last_hidden_state

    def run_theirs(batch):
        with torch.inference_mode():
            return theirs(**batch).last_hidden_state

    runners = {"onnxruntime": run_ort, "openformers": run_ours, "transformers": run_theirs}
    print(f"CPU: {_cpu()}  threads: {threads}  loadavg: {open('/proc/loadavg').read().split()[:3]}")
    print(f"torch {torch.__version__}, onnxruntime {ort.__version__}, transformers {transformers.__version__}; "
          f"export took {export_s:.1f} s")
    for batch_size in (1, 32):
        texts = [SENTENCES[i % len(SENTENCES)] for i in range(batch_size)]
        batch = dict(tok(texts, padding=True, return_tensors="pt"))
        ref = run_theirs(batch)
        for name, fn in runners.items():
            diff = (fn(batch) - ref)[batch["attention_mask"].bool()].abs().max().item()
            assert diff < 1e-4, f"{name} differs from transformers by {diff}"
            for _ in range(args.warmup):
                fn(batch)
        times = {name: [] for name in runners}
        for _ in range(args.iters):
            for name, fn in runners.items():
                t = time.perf_counter()
                fn(batch)
                times[name].append(time.perf_counter() - t)
        med = {name: statistics.median(v) for name, v in times.items()}
        seqs = {name: batch_size / t for name, t in med.items()}
        print(f"batch {batch_size:>2} x {batch['input_ids'].shape[1]} tokens: "
              + ", ".join(f"{n} {seqs[n]:.1f} seq/s ({med[n] * 1000:.2f} ms)" for n in runners)
              + f" | onnxruntime / openformers {seqs['onnxruntime'] / seqs['openformers']:.2f}x, "
              f"onnxruntime / transformers {seqs['onnxruntime'] / seqs['transformers']:.2f}x, "
              f"openformers / transformers {seqs['openformers'] / seqs['transformers']:.2f}x")
    print(f"loadavg after: {open('/proc/loadavg').read().split()[:3]}")


def _cpu() -> str:
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip() + f" ({os.cpu_count()} CPUs)"
    except OSError:
        pass
    return platform.processor()


if __name__ == "__main__":
    main()
