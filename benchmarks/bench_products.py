"""Inference products: openformers' float32 CPU kernel against ``F.linear`` (what transformers runs).

The weights of one SmolLM2-135M decode step, read from memory: 30 layers of the fused shapes
(q/k/v 960 x 576, o 576 x 576, gate/up 3072 x 576, down 576 x 1536; 425 MB in float32), random
values, each weight multiplied once per pass, so every pass streams all of them from memory as a
decode step does (the 32 MB cache holds under a tenth). For each row count (1 = a batch-1 decode
step; more = a batch or a prompt) both paths run alternately, ``--passes`` times each; the table
gives the best and the median pass and the ratio of the medians.

``openformers`` is ``openformers.modules.fused.linear``: up to 64 rows, one contiguous block of
output rows per thread in one batched matmul; beyond, ``F.linear``.

Run: ``python benchmarks/bench_products.py [--rows 1 2 8 32 64 256] [--passes 10] [--threads 2]``
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F

from openformers.modules.fused import linear

SHAPES = [(960, 576), (576, 576), (3072, 576), (576, 1536)]  # [out, in] of SmolLM2's fused products


def timed(fn, weights, inputs) -> float:
    start = time.perf_counter()
    for layer in weights:
        for w in layer:
            fn(inputs[w.shape[1]], w)
    return (time.perf_counter() - start) * 1e3


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, nargs="+", default=[1, 2, 8, 32, 64, 256])
    parser.add_argument("--passes", type=int, default=10)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--layers", type=int, default=30)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    g = torch.Generator().manual_seed(0)
    weights = [[torch.randn(*shape, generator=g) for shape in SHAPES] for _ in range(args.layers)]
    megabytes = sum(w.numel() * 4 for layer in weights for w in layer) / 1e6
    print(f"float32 products of {megabytes:.0f} MB of weights a pass, torch threads {args.threads}")
    print(f"{'rows':>5} {'openformers ms':>18} {'F.linear ms':>18} {'ratio':>7}")
    paths = {"openformers": linear, "F.linear": F.linear}
    with torch.inference_mode():
        for rows in args.rows:
            inputs = {n: torch.randn(rows, n, generator=g) for n in {s[1] for s in SHAPES}}
            times: dict[str, list[float]] = {name: [] for name in paths}
            for name, fn in paths.items():  # warm-up
                timed(fn, weights, inputs)
            for i in range(args.passes):
                order = list(paths.items()) if i % 2 == 0 else list(paths.items())[::-1]
                for name, fn in order:
                    times[name].append(timed(fn, weights, inputs))
            cells = {name: f"{min(t):.1f} / {statistics.median(t):.1f}" for name, t in times.items()}
            ratio = statistics.median(times["F.linear"]) / statistics.median(times["openformers"])
            print(f"{rows:>5} {cells['openformers']:>18} {cells['F.linear']:>18} {ratio:>6.2f}x")
    print("(best / median of the passes; ratio = F.linear median / openformers median)")


if __name__ == "__main__":
    main()
