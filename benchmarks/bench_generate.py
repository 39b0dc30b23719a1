"""Generation benchmark: openformers vs transformers, greedy decoding on SmolLM2-135M.

Both libraries load the embedded SmolLM2-135M-Instruct GGUF (dequantized to float): ours with
``AutoModelForCausalLM.from_pretrained("smollm2")``, transformers with
``AutoModelForCausalLM.from_pretrained(dir, gguf_file=...)``. ``--random`` uses instead a random
Llama of SmolLM2's shape (hidden 576, 30 layers, 9 heads, 3 kv heads, MLP 1536, vocab 49152,
tied embeddings) saved once and loaded by both.

Measured side by side in one process: greedy decoding of ``--new-tokens`` (128) tokens after a
32-token prompt, EOS ignored so every run decodes the same number of tokens, batch 1 and 8,
float32 and bfloat16 (``--static`` adds ours with the static cache). Runs are interleaved
(ours, theirs, ours, ...) after a warm-up and the best of ``--iters`` is reported as
generated tokens per second (batch x new tokens / seconds), with the ratio ours / theirs and
whether both produced the same tokens.

Tokens per CPU-second are reported too: on a shared machine, wall-clock figures mostly measure
the other load; with ``--threads 1`` the CPU-time ratio is the fairer comparison.

``--quantized`` adds openformers keeping the GGUF's 4-bit weights (``GGUFQuantizationConfig``,
the CPU int4 kernel; activations, embeddings and the LM head in bfloat16), with its ratio to
transformers in the same row's dtype.

``--family qwen3`` runs a random Qwen3 of SmolLM2's shape (head_dim 64, q/k norm weights drawn in
[0.5, 1.5]) against transformers' ``Qwen3ForCausalLM``; ``--family gemma`` a random Gemma of that shape (head_dim
64, tanh-GELU, norm weights drawn in [-0.5, 0.5] around Gemma's 1 + weight, embeddings scaled by sqrt(576)) against
``GemmaForCausalLM``; ``--family qwen2`` a random Qwen2 of that shape (q/k/v biases drawn from N(0, 0.02)) against
``Qwen2ForCausalLM``; ``--family starcoder2`` a random Starcoder2 of that shape (LayerNorms, biases on every
projection drawn from N(0, 0.02), plain tanh-GELU MLP) against ``Starcoder2ForCausalLM``.

Run: ``python benchmarks/bench_generate.py [--iters 3] [--threads N] [--random] [--family llama|qwen3|gemma|qwen2|starcoder2] [--static]
[--quantized] [--json out.json]``

``--no-native-step`` runs openformers' decode steps on the plan's PyTorch layers, not ``of_llama_step``.

``--native-flags=FLAGS`` builds ``runtime/int4_native.c`` with these compiler flags added (its own cached library)
and runs openformers on it, to measure on this CPU what a CPU without some instructions would run:
``-mno-avx512bf16`` (AVX-512F/BW float32 products, an Ice Lake's), ``-march=x86-64-v3`` (AVX2 + FMA, a Zen 2/3's).
For a fair comparison, hold PyTorch to the same instructions with its own switches, set before the run:
``ATEN_CPU_CAPABILITY=avx2 MKL_ENABLE_INSTRUCTIONS=AVX2 ONEDNN_MAX_CPU_ISA=AVX2`` (or ``=AVX512_CORE`` for oneDNN
without bf16); the header line says what each side runs.

``--packed-memory`` measures openformers alone: the peak RSS and tokens/s of the embedded SmolLM2
with and without the packed weight copies (``OPENFORMERS_PACKED_WEIGHTS=1`` / ``0``), bf16 and
float32 at batch 1 and 8, each case in its own process.

Last measured (2-core AMD EPYC, load 1.9-2.1), ``python benchmarks/bench_generate.py --threads 2 --iters 3``::

        dtype batch  openformers  transformers  ratio cpu ratio same tokens
      float32     1         35.6          15.2  2.34x     2.26x        True
      float32     8        173.3          61.8  2.80x     2.80x        True
     bfloat16     1         33.7          20.7  1.63x     1.63x       False
     bfloat16     8        179.9          79.7  2.26x     2.25x       False

(other runs the same hour: float32 1.92x to 2.46x at batch 1, 2.04x to 2.18x at batch 8; transformers' own
rate moves by up to 35% between runs here)

Decoding is bound by the bytes of weight read per step: float32 ~540 MB (113 MB of it the tied
49152 x 576 LM head), bfloat16 ~270 MB, the 4-bit path ~60 MB of int4 projections plus the bf16
head. Both libraries read the same bytes in float; ours reads them faster: a float32 product of up
to 64 rows is split into one contiguous block of output rows per thread (one batched matmul),
and bf16 products (float32 ones of a batch) run on packed copies of the weights in oneDNN's layout
(``runtime/packed_weights.py``; extra memory, reported in RESULTS.md). Besides: q/k/v and gate/up
run as one matmul each, the dynamic cache appends in place, rotary runs once over the q and k
heads, decode steps compute logits for the last position only and build no mask. Full history
and what limits float32: benchmarks/RESULTS.md.
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch


def load_models(random_weights: bool, family: str = "llama"):
    import transformers

    import openformers

    transformers.logging.set_verbosity_error()
    if random_weights or family != "llama":
        shape = dict(
            vocab_size=49152, hidden_size=576, intermediate_size=1536, num_hidden_layers=30, num_attention_heads=9,
            num_key_value_heads=3, max_position_embeddings=2048, rope_theta=100000.0, rms_norm_eps=1e-5,
            tie_word_embeddings=True, bos_token_id=1, eos_token_id=2,
        )
        if family == "qwen3":  # Qwen3's layer (per-head q/k RMSNorms) at SmolLM2's shape
            config, cls = transformers.Qwen3Config(**shape, head_dim=64), transformers.Qwen3ForCausalLM
        elif family == "gemma":  # Gemma's layer (offset norms, scaled embeddings, tanh-GELU) at SmolLM2's shape
            config, cls = transformers.GemmaConfig(**shape, head_dim=64), transformers.GemmaForCausalLM
        elif family == "qwen2":  # Qwen2's layer (q/k/v biases) at SmolLM2's shape
            config, cls = transformers.Qwen2Config(**shape), transformers.Qwen2ForCausalLM
        elif family == "starcoder2":  # Starcoder2's layer (LayerNorms, biases, plain MLP) at SmolLM2's shape
            shape["norm_epsilon"] = shape.pop("rms_norm_eps")
            config, cls = transformers.Starcoder2Config(**shape), transformers.Starcoder2ForCausalLM
        else:
            config, cls = transformers.LlamaConfig(**shape), transformers.LlamaForCausalLM
        torch.manual_seed(0)
        directory = Path(tempfile.mkdtemp(prefix="bench_generate_"))
        model = cls(config)
        if family == "qwen3":
            with torch.no_grad():  # norm weights other than ones
                for name, p in model.named_parameters():
                    if name.endswith(("q_norm.weight", "k_norm.weight")):
                        p.uniform_(0.5, 1.5)
        if family == "gemma":
            with torch.no_grad():  # norm weights other than their zero init
                for name, p in model.named_parameters():
                    if name.endswith("norm.weight"):
                        p.uniform_(-0.5, 0.5)
        if family in ("qwen2", "starcoder2"):
            with torch.no_grad():  # biases other than their zero init
                for name, p in model.named_parameters():
                    if name.endswith("proj.bias") or name.endswith("c_fc.bias"):
                        p.normal_(0, 0.02)
        model.save_pretrained(directory)
        theirs = transformers.AutoModelForCausalLM.from_pretrained(directory, dtype=torch.float32).eval()
        ours = openformers.AutoModelForCausalLM.from_pretrained(directory, dtype=torch.float32)
        name = {"qwen3": "Qwen3", "gemma": "Gemma", "qwen2": "Qwen2", "starcoder2": "Starcoder2"}.get(family, "Llama")
        return ours, theirs, f"random {name} of SmolLM2-135M's shape"
    from openformers.core.hub import embedded_model_path

    gguf = embedded_model_path("smollm2")
    ours = openformers.AutoModelForCausalLM.from_pretrained("smollm2")
    theirs = transformers.AutoModelForCausalLM.from_pretrained(
        str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32
    ).eval()
    return ours, theirs, "SmolLM2-135M-Instruct (embedded GGUF, dequantized)"


def timed_generate(model, ids, new_tokens: int, **kw) -> tuple[float, float, torch.Tensor]:
    """(wall seconds, CPU seconds of this process, output ids)."""
    t0, c0 = time.perf_counter(), time.process_time()
    out = model.generate(
        ids, attention_mask=torch.ones_like(ids), max_new_tokens=new_tokens, min_new_tokens=None, do_sample=False,
        eos_token_id=None, pad_token_id=0, **kw,
    )
    return time.perf_counter() - t0, time.process_time() - c0, out


def bench(ours, theirs, batch: int, dtype: torch.dtype, new_tokens: int, iters: int, static: bool,
          quantized=None) -> dict:
    ours.to(dtype)
    theirs.to(dtype)
    g = torch.Generator().manual_seed(batch)
    ids = torch.randint(100, 49000, (batch, 32), generator=g)
    runners = {
        "openformers": lambda n=new_tokens: timed_generate(ours, ids, n),
        "transformers": lambda n=new_tokens: timed_generate(theirs, ids, n),
    }
    if static:
        runners["openformers_static"] = lambda n=new_tokens: timed_generate(ours, ids, n, cache_implementation="static")
    if quantized is not None:
        runners["openformers_q4"] = lambda n=new_tokens: timed_generate(quantized, ids, n)
    for run in runners.values():  # warm-up (allocator, kernels)
        run(8)
    best = {name: float("inf") for name in runners}
    best_cpu = {name: float("inf") for name in runners}
    outputs = {}
    for _ in range(iters):
        for name, run in runners.items():
            seconds, cpu_seconds, out = run()
            best[name] = min(best[name], seconds)
            best_cpu[name] = min(best_cpu[name], cpu_seconds)
            outputs[name] = out
    tokens = batch * new_tokens
    result = {name: tokens / s for name, s in best.items()}
    # tokens per CPU-second: robust on a shared machine when running one thread
    result.update({f"{name}_cpu": tokens / s for name, s in best_cpu.items()})
    result["ratio_cpu"] = result["openformers_cpu"] / result["transformers_cpu"]
    result["ratio"] = result["openformers"] / result["transformers"]
    result["same_tokens"] = bool(torch.equal(outputs["openformers"], outputs["transformers"]))
    if static:
        result["ratio_static"] = result["openformers_static"] / result["transformers"]
        result["same_tokens_static"] = bool(torch.equal(outputs["openformers_static"], outputs["transformers"]))
    if quantized is not None:
        result["ratio_q4"] = result["openformers_q4"] / result["transformers"]
        result["ratio_q4_cpu"] = result["openformers_q4_cpu"] / result["transformers_cpu"]
    return result


PACKED_MEMORY_CHILD = r"""
import json, sys, time, torch
dtype, batch, new_tokens, threads = getattr(torch, sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
torch.set_num_threads(threads)
from openformers import AutoModelForCausalLM
from openformers.runtime.packed_weights import packed_bytes

def status(key):
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(key)) / 1024

model = AutoModelForCausalLM.from_pretrained("smollm2", dtype=dtype).eval()
ids = torch.randint(100, 49000, (batch, 32), generator=torch.Generator().manual_seed(0))
kw = dict(attention_mask=torch.ones_like(ids), max_new_tokens=new_tokens, min_new_tokens=None, do_sample=False,
          eos_token_id=None, pad_token_id=0)
model.generate(ids, **kw)
t0 = time.perf_counter()
model.generate(ids, **kw)
seconds = time.perf_counter() - t0
print(json.dumps({"peak_mb": status("VmHWM"), "packed_mib": packed_bytes() / 2**20, "tok_s": batch * new_tokens / seconds}))
"""


def packed_memory(threads: int, new_tokens: int) -> list[dict]:
    """Peak RSS and speed with and without the packed weight copies (runtime/packed_weights.py),
    each case in its own process (the switch is read at import)."""
    import os
    import subprocess
    import sys

    rows = []
    for dtype, batch in (("bfloat16", 1), ("bfloat16", 8), ("float32", 1), ("float32", 8)):
        for packed in ("1", "0"):
            out = subprocess.run([sys.executable, "-c", PACKED_MEMORY_CHILD, dtype, str(batch), str(new_tokens), str(threads)],
                                 capture_output=True, text=True, check=True,
                                 env={**os.environ, "OPENFORMERS_PACKED_WEIGHTS": packed})
            rows.append({"dtype": dtype, "batch": batch, "packed": packed == "1", **json.loads(out.stdout.strip().splitlines()[-1])})
            r = rows[-1]
            print(f"{dtype:>9} {batch:5d}  packed {'on ' if r['packed'] else 'off'}  peak RSS {r['peak_mb']:6.0f} MB  "
                  f"copies {r['packed_mib']:5.0f} MiB  {r['tok_s']:7.1f} tok/s", flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--iters", type=int, default=3)
    parser.add_argument("--new-tokens", type=int, default=128)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--dtypes", nargs="+", default=["float32", "bfloat16"])
    parser.add_argument("--random", action="store_true", help="random weights of SmolLM2's shape instead of the GGUF")
    parser.add_argument("--family", choices=["llama", "qwen3", "gemma", "qwen2", "starcoder2"], default="llama",
                        help="qwen3 / gemma / qwen2 / starcoder2: a random Qwen3 (per-head q/k norms) / Gemma (offset "
                             "norms, scaled embeddings, tanh-GELU) / Qwen2 (q/k/v biases) / Starcoder2 (LayerNorms, "
                             "biases, plain MLP) of SmolLM2's shape against transformers' class of the family "
                             "(implies random weights)")
    parser.add_argument("--no-native-step", action="store_true",
                        help="openformers without the one-call native decode step (the plan's PyTorch layers), "
                             "to measure what the step gives a family")
    parser.add_argument("--static", action="store_true", help="also time openformers with cache_implementation='static'")
    parser.add_argument("--quantized", action="store_true",
                        help="also time openformers keeping the GGUF's 4-bit weights (GGUFQuantizationConfig, int4 kernel)")
    parser.add_argument("--packed-memory", action="store_true",
                        help="openformers only: peak RSS and tok/s with and without the packed weight copies")
    parser.add_argument("--native-flags", type=str, default=None,
                        help="build and use int4_native.c with these extra compiler flags (e.g. -march=x86-64-v3)")
    parser.add_argument("--json", type=str, default=None)
    args = parser.parse_args()
    from openformers.runtime import int4_native

    if args.native_flags:
        lib = int4_native.load(int4_native.build(tuple(args.native_flags.split())))
        mismatch = int4_native.struct_mismatch(lib)
        if mismatch is not None:  # what library() refuses, refused here too
            raise SystemExit(f"--native-flags={args.native_flags}: the library's structures differ: {mismatch}")
        int4_native.library = lambda: lib  # every caller asks the module for its library
    print(f"int4_native: {int4_native.simd()} products ({args.native_flags or 'default flags'}); PyTorch's CPU "
          f"capability {torch.backends.cpu.get_cpu_capability()}; load average {open('/proc/loadavg').read().split()[:3]}")
    if args.packed_memory:
        rows = packed_memory(args.threads or torch.get_num_threads(), args.new_tokens)
        if args.json:
            Path(args.json).write_text(json.dumps(rows, indent=2))
        return
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.no_native_step:
        from openformers.runtime import decode

        decode.native_step = lambda *a: None  # the plan looks the step up in its module at each new key
    ours, theirs, what = load_models(args.random, args.family)
    quantized = None
    if args.quantized:
        import openformers
        from openformers.quantization import GGUFQuantizationConfig

        quantized = openformers.AutoModelForCausalLM.from_pretrained("smollm2", quantization_config=GGUFQuantizationConfig())
        # bf16 activations, embeddings and LM head (57 MB a token instead of 113 MB); the 4-bit weights and
        # their bf16 scales stay as they are (module casts never touch them). One setting for every row.
        quantized.to(torch.bfloat16)
    print(f"{what}; greedy, 32-token prompt, {args.new_tokens} new tokens; torch threads {torch.get_num_threads()}")
    print("tokens/s (wall clock); ratio = openformers / transformers; cpu ratio from tokens per CPU-second")
    print(f"{'dtype':>9} {'batch':>5} {'openformers':>12} {'transformers':>13} {'ratio':>6} {'cpu ratio':>9} "
          f"{'same tokens':>11}" + ("  static: tok/s ratio same" if args.static else "")
          + ("  q4: tok/s ratio cpu-ratio" if args.quantized else ""))
    rows = []
    with torch.inference_mode():
        for dtype_name in args.dtypes:
            dtype = getattr(torch, dtype_name)
            for batch in args.batches:
                r = bench(ours, theirs, batch, dtype, args.new_tokens, args.iters, args.static, quantized)
                r.update(dtype=dtype_name, batch=batch)
                rows.append(r)
                line = (f"{dtype_name:>9} {batch:>5} {r['openformers']:>12.1f} {r['transformers']:>13.1f} "
                        f"{r['ratio']:>5.2f}x {r['ratio_cpu']:>8.2f}x {str(r['same_tokens']):>11}")
                if args.static:
                    line += f"  {r['openformers_static']:.1f} {r['ratio_static']:.2f}x {r['same_tokens_static']}"
                if quantized is not None:
                    line += f"  {r['openformers_q4']:.1f} {r['ratio_q4']:.2f}x {r['ratio_q4_cpu']:.2f}x"
                print(line, flush=True)
    print(f"load average at the end {open('/proc/loadavg').read().split()[:3]}")
    if args.json:
        Path(args.json).write_text(json.dumps({"model": what, "threads": torch.get_num_threads(), "rows": rows,
                                               "native": int4_native.simd()}, indent=2))


if __name__ == "__main__":
    main()
