"""Inference products: openformers' float32 CPU kernel against ``F.linear`` (what transformers runs).

The weights of one SmolLM2-135M decode step, read from memory: 30 layers of the fused shapes
(q/k/v 960 x 576, o 576 x 576, gate/up 3072 x 576, down 576 x 1536; 425 MB in float32), random
values, each weight multiplied once per pass, so every pass streams all of them from memory as a
decode step does (the 32 MB cache holds under a tenth). For each row count (1 = a batch-1 decode
step; more = a batch or a prompt) both paths run alternately, ``--passes`` times each; the table
gives the best and the median pass and the ratio of the medians.

``openformers`` is what a plain ``nn.Linear`` runs at inference (``openformers.runtime.fused.project``),
layout choice included: with several threads, up to 64 rows, one contiguous block of output rows
per thread in one batched matmul, beyond, ``F.linear``; with one thread (``--threads 1``), float32
weights stored ``[in, out]`` and ``F.linear`` on them. ``F.linear`` gets row-major weights, as in
transformers.

Run: ``python benchmarks/bench_products.py [--rows 1 2 8 32 64 256] [--passes 10] [--threads 2]``
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F
from torch import nn

from openformers.runtime.fused import project

SHAPES = [(960, 576), (576, 576), (3072, 576), (576, 1536)]  # [out, in] of SmolLM2's fused products


def timed(fn, layers, inputs) -> float:
    start = time.perf_counter()
    for layer in layers:
        for item in layer:
            fn(inputs[item.in_features if isinstance(item, nn.Linear) else item.shape[1]], item)
    return (time.perf_counter() - start) * 1e3


def linear_module(weight: torch.Tensor) -> nn.Linear:
    module = nn.Linear(weight.shape[1], weight.shape[0], bias=False)
    module.weight = nn.Parameter(weight.clone())
    return module


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
    modules = [[linear_module(w) for w in layer] for layer in weights]  # their weights' layout is the library's
    megabytes = sum(w.numel() * 4 for layer in weights for w in layer) / 1e6
    print(f"float32 products of {megabytes:.0f} MB of weights a pass, torch threads {args.threads}")
    print(f"{'rows':>5} {'openformers ms':>18} {'F.linear ms':>18} {'ratio':>7}")
    paths = {"openformers": (lambda x, module: project(module, x), modules),
             "F.linear": (lambda x, w: F.linear(x, w), weights)}
    with torch.inference_mode():
        for rows in args.rows:
            inputs = {n: torch.randn(rows, n, generator=g) for n in {s[1] for s in SHAPES}}
            times: dict[str, list[float]] = {name: [] for name in paths}
            for name, (fn, layers) in paths.items():  # warm-up (the first openformers call lays out the weights)
                timed(fn, layers, inputs)
            for i in range(args.passes):
                order = list(paths.items()) if i % 2 == 0 else list(paths.items())[::-1]
                for name, (fn, layers) in order:
                    times[name].append(timed(fn, layers, inputs))
            cells = {name: f"{min(t):.1f} / {statistics.median(t):.1f}" for name, t in times.items()}
            ratio = statistics.median(times["F.linear"]) / statistics.median(times["openformers"])
            print(f"{rows:>5} {cells['openformers']:>18} {cells['F.linear']:>18} {ratio:>6.2f}x")
    print("(best / median of the passes; ratio = F.linear median / openformers median)")


if __name__ == "__main__":
    main()
