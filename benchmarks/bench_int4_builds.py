"""The 4-bit product of each build of ``runtime/int4_native.c`` against PyTorch's int4 kernel.

One SmolLM2-135M projection shape at a time (gate/up 3072 x 576, down 576 x 1536; random 4-bit values,
groups of 32, bfloat16 scales), for several row counts (1 = a batch-1 decode step, more = a batch or a
prompt): the native kernel built with ``--flags`` added (``-mno-avx512bf16``: the AVX-512F float32 products
of a CPU without AVX-512 BF16; ``-march=x86-64-v3``: AVX2 + FMA; none: this CPU's best) against
``torch.ops.aten._weight_int4pack_mm_for_cpu`` on bfloat16 activations (the native kernel takes float32 ones and
gives float32 results; PyTorch's gives bfloat16). The last column says which of the two a 4-bit layer runs for
bfloat16 rows of that count on this build (``NativeInt4.takes``; float32 rows always run natively). One thread,
timed in CPU seconds of that thread (best of 7 rounds, the two kernels taking turns in each), so that other load
on the machine counts little.

PyTorch picks its kernels by the CPU at run time; to compare with what it runs on a CPU without some
instructions, hold it to them before the run: ``ATEN_CPU_CAPABILITY=avx2 MKL_ENABLE_INSTRUCTIONS=AVX2
ONEDNN_MAX_CPU_ISA=AVX2`` (AVX2), ``ATEN_CPU_CAPABILITY=avx512 ONEDNN_MAX_CPU_ISA=AVX512_CORE`` (AVX-512
without bf16).

Run: ``python benchmarks/bench_int4_builds.py [--flags=-march=x86-64-v3] [--rows 1 2 4 8 16 64]``
"""
from __future__ import annotations

import argparse
import time

import torch

from openformers.quantization import QuantizedLinear
from openformers.runtime import int4_native


def cpu_us(fns, calls: int, rounds: int = 7) -> list[float]:
    """The least thread CPU time of one call of each of ``fns`` over ``rounds`` rounds of ``calls``, in
    microseconds; the functions take turns within each round, so that a change in the other load on the machine
    (another thread on the same core slows a product bound by its multiply-adds) falls on all of them alike."""
    for fn in fns:
        fn()
    best = [float("inf")] * len(fns)
    for _ in range(rounds):
        for i, fn in enumerate(fns):
            start = time.thread_time()
            for _ in range(calls):
                fn()
            best[i] = min(best[i], (time.thread_time() - start) / calls)
    return [b * 1e6 for b in best]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--flags", type=str, default="", help="extra compiler flags for int4_native.c")
    parser.add_argument("--rows", type=int, nargs="+", default=[1, 2, 4, 8, 16, 64])
    args = parser.parse_args()
    torch.set_num_threads(1)
    lib = int4_native.load(int4_native.build(tuple(args.flags.split())))
    print(f"int4_native: {int4_native.simd(lib)} products ({args.flags or 'default flags'}); PyTorch's CPU capability "
          f"{torch.backends.cpu.get_cpu_capability()}; load average {open('/proc/loadavg').read().split()[:3]}")
    print(f"{'shape':>10} {'rows':>4} {'native us':>9} {'torch us':>8} {'torch / native':>14}  "
          "a layer's bfloat16 rows run on")
    for out_f, in_f in ((3072, 576), (576, 1536)):
        g = torch.Generator().manual_seed(0)
        q = torch.randint(0, 16, (out_f, in_f), generator=g, dtype=torch.uint8)
        scale = torch.rand(out_f, in_f // 32, generator=g) * 0.05 + 0.01
        zero = torch.randn(out_f, in_f // 32, generator=g) * 0.1
        kernel = int4_native.NativeInt4.from_values(q, scale, zero)
        kernel.lib = lib
        layer = QuantizedLinear.from_linear(torch.nn.Linear(in_f, out_f, bias=False), 32, torch.bfloat16)
        for rows in args.rows:
            x = torch.randn(rows, in_f, generator=g)
            xb = x.bfloat16()
            calls = max(2, 400 // rows)
            ours, theirs = cpu_us([lambda: kernel(x, torch.float32),
                                   lambda: torch.ops.aten._weight_int4pack_mm_for_cpu(xb, layer.qweight, 32,
                                                                                      layer.scales_and_zeros)], calls)
            runs = "native" if kernel.takes(rows, torch.bfloat16) else "PyTorch (int4_native.PYTORCH_FROM_ROWS)"
            print(f"{out_f:>5}x{in_f:<4} {rows:>4} {ours:>9.0f} {theirs:>8.0f} {theirs / ours:>13.2f}x  {runs}",
                  flush=True)
    print(f"load average at the end {open('/proc/loadavg').read().split()[:3]}")


if __name__ == "__main__":
    main()
