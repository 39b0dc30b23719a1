"""Encoder benchmark: openformers vs transformers on the embedded MiniLM (a 6-layer BERT).

Measures, side by side in one run:
  * import time of each library (``python -c "import ..."`` in fresh subprocesses, median)
  * load time and peak RSS of loading the MiniLM (each library in its own subprocess)
  * encoder throughput, batch 32 x 128 tokens, fp32 and bf16 (same weights, same inputs,
    warm-up, interleaved timed iterations under torch.inference_mode), sequences/s and ratio, also per
    second of the process's CPU time (on a machine shared with other work, less hit by waits); the
    bf16 run also times transformers in fp32 in the same loop (the bf16 target is against it)

Run: ``python benchmarks/bench_encoder.py [--iters 6] [--threads N] [--dtypes fp32,bf16] [--json out.json]``
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time

LOAD_SNIPPET = r"""
import json, resource, sys, time
t0 = time.perf_counter()
lib = sys.argv[1]
if lib == "openformers":
    import openformers
    model = openformers.AutoModel.from_pretrained("minilm")
else:
    import transformers
    from openformers.core.hub import embedded_model_path
    path = str(embedded_model_path("minilm"))
    transformers.logging.set_verbosity_error()
    model = transformers.AutoModel.from_pretrained(path).eval()
elapsed = time.perf_counter() - t0
print(json.dumps({"load_s": elapsed, "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def _run(cmd: list[str]) -> str:
    return subprocess.run(cmd, check=True, capture_output=True, text=True).stdout


def import_time(module: str, runs: int) -> dict[str, float]:
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        _run([sys.executable, "-c", f"import {module}"])
        times.append(time.perf_counter() - t0)
    baseline = []
    for _ in range(runs):
        t0 = time.perf_counter()
        _run([sys.executable, "-c", "pass"])
        baseline.append(time.perf_counter() - t0)
    # interpreter start-up is the same for both; also report the import alone
    return {"total_s": statistics.median(times), "net_s": statistics.median(times) - statistics.median(baseline)}


def load_stats(lib: str, runs: int) -> dict[str, float]:
    results = [json.loads(_run([sys.executable, "-c", LOAD_SNIPPET, lib]).strip().splitlines()[-1]) for _ in range(runs)]
    return {
        "load_s": statistics.median(r["load_s"] for r in results),
        "peak_rss_mb": statistics.median(r["peak_rss_mb"] for r in results),
    }


def throughput(dtype_name: str, batch: int, seq: int, warmup: int, iters: int) -> dict[str, float]:
    import torch
    import transformers

    import openformers
    from openformers.core.hub import embedded_model_path

    transformers.logging.set_verbosity_error()
    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16}[dtype_name]
    path = str(embedded_model_path("minilm"))
    models = {
        "openformers": openformers.AutoModel.from_pretrained("minilm", dtype=dtype),
        "transformers": transformers.AutoModel.from_pretrained(path, dtype=dtype).eval(),
    }
    if dtype != torch.float32:
        models["transformers_fp32"] = transformers.AutoModel.from_pretrained(path, dtype=torch.float32).eval()
    g = torch.Generator().manual_seed(0)
    inputs = {
        "input_ids": torch.randint(1000, models["openformers"].config.vocab_size, (batch, seq), generator=g),
        "attention_mask": torch.ones(batch, seq, dtype=torch.long),
        "token_type_ids": torch.zeros(batch, seq, dtype=torch.long),
    }
    times: dict[str, list[float]] = {k: [] for k in models}
    cpu: dict[str, list[float]] = {k: [] for k in models}  # process CPU seconds (all threads, spinning included)
    with torch.inference_mode():
        outs = {k: models[k](**inputs).last_hidden_state.float() for k in ("openformers", "transformers")}
        max_diff = (outs["openformers"] - outs["transformers"]).abs().max().item()
        for _ in range(warmup):
            for m in models.values():
                m(**inputs)
        for _ in range(iters):  # interleaved, so drift on a shared machine hits both alike
            for name, m in models.items():
                t0, c0 = time.perf_counter(), time.process_time()
                m(**inputs)
                times[name].append(time.perf_counter() - t0)
                cpu[name].append(time.process_time() - c0)
    result = {f"{k}_seq_per_s": batch / statistics.median(v) for k, v in times.items()}
    result.update({f"{k}_seq_per_cpu_s": batch / statistics.median(v) for k, v in cpu.items()})
    result["ratio"] = result["openformers_seq_per_s"] / result["transformers_seq_per_s"]
    result["cpu_ratio"] = result["openformers_seq_per_cpu_s"] / result["transformers_seq_per_cpu_s"]
    if "transformers_fp32_seq_per_s" in result:
        result["ratio_vs_transformers_fp32"] = result["openformers_seq_per_s"] / result["transformers_fp32_seq_per_s"]
        result["transformers_ratio_vs_fp32"] = result["transformers_seq_per_s"] / result["transformers_fp32_seq_per_s"]
        result["cpu_ratio_vs_transformers_fp32"] = (result["openformers_seq_per_cpu_s"]
                                                    / result["transformers_fp32_seq_per_cpu_s"])
    result["max_abs_diff"] = max_diff
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--iters", type=int, default=6, help="timed iterations per library")
    parser.add_argument("--warmup", type=int, default=2, help="untimed iterations first")
    parser.add_argument("--import-runs", type=int, default=5, help="fresh-interpreter imports per library")
    parser.add_argument("--load-runs", type=int, default=3, help="loads per library, each in its own process")
    parser.add_argument("--batch", type=int, default=32, help="sequences per batch")
    parser.add_argument("--seq", type=int, default=128, help="tokens per sequence")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    parser.add_argument("--dtypes", default="fp32,bf16", help="throughput runs, comma-separated (fp32, bf16)")
    parser.add_argument("--skip-startup", action="store_true", help="leave out the import and load measures")
    parser.add_argument("--json", default=None, help="also write the results here")
    args = parser.parse_args()

    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    report: dict[str, object] = {"torch": torch.__version__, "threads": torch.get_num_threads()}
    import transformers

    report["transformers"] = transformers.__version__

    print(f"torch {torch.__version__}, transformers {transformers.__version__}, {torch.get_num_threads()} threads")
    imports = {} if args.skip_startup else {lib: import_time(lib, args.import_runs) for lib in ("openformers", "transformers")}
    report["import_s"] = imports
    for lib, r in imports.items():
        print(f"import {lib} (median of {args.import_runs}): {r['total_s']:.3f} s with interpreter start-up, "
              f"{r['net_s']:.3f} s without")
    loads = {} if args.skip_startup else {lib: load_stats(lib, args.load_runs) for lib in ("openformers", "transformers")}
    report["load"] = loads
    for lib, r in loads.items():
        print(f"load MiniLM ({lib}, import included): {r['load_s']:.3f} s, peak RSS {r['peak_rss_mb']:.0f} MB")
    for dtype_name in args.dtypes.split(","):
        r = throughput(dtype_name, args.batch, args.seq, args.warmup, args.iters)
        report[f"throughput_{dtype_name}"] = r
        print(f"encoder {args.batch}x{args.seq} {dtype_name}: openformers {r['openformers_seq_per_s']:.1f} seq/s, "
              f"transformers {r['transformers_seq_per_s']:.1f} seq/s, ratio {r['ratio']:.3f} "
              f"(max |diff| {r['max_abs_diff']:.2e}); per CPU second {r['openformers_seq_per_cpu_s']:.1f} / "
              f"{r['transformers_seq_per_cpu_s']:.1f} seq, ratio {r['cpu_ratio']:.3f}")
        if "ratio_vs_transformers_fp32" in r:
            print(f"  same loop, transformers fp32 {r['transformers_fp32_seq_per_s']:.1f} seq/s: openformers {dtype_name} "
                  f"{r['ratio_vs_transformers_fp32']:.3f}x of it (per CPU second {r['cpu_ratio_vs_transformers_fp32']:.3f}x), "
                  f"transformers {dtype_name} {r['transformers_ratio_vs_fp32']:.3f}x")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(report, f, indent=2)


if __name__ == "__main__":
    main()
