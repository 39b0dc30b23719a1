"""Float32 training products: ``modules/dense.py``'s ``Linear`` (oneDNN) against ``nn.Linear`` (``F.linear``, the BLAS).

One full fine-tune product per shape: forward, then backward with the input, weight and bias
gradients (what a layer of a fully trained model costs), timed alternately on the same weights and
inputs, ``--reps`` times each; the table gives the median of each and their ratio, in wall time and in
process CPU time (the latter less moved by other processes on a busy machine, at one thread). The shapes are
the projections of the families' reference checkpoints (``[out, in]``, bias as in the checkpoint):
SmolLM2-135M (Llama family), GPT-2 small (``Conv1D`` layers: ``x @ W + b`` with ``W`` stored
``[in, out]``; compared there with ``addmm``, what ``Conv1D`` runs), MiniLM-L6 and BERT-base
(BERT, RoBERTa and DistilBERT share BERT-base's shapes), plus the decoders' LM heads.

Run: ``python benchmarks/bench_train_products.py [--rows 512] [--reps 15] [--threads 2] [--family all]``
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch
from torch import nn

from openformers.modules import dense

FAMILIES: dict[str, list[tuple[str, int, int, bool]]] = {  # name, out, in, bias
    "smollm2": [("q/o", 576, 576, False), ("k/v", 192, 576, False), ("gate/up", 1536, 576, False),
                ("down", 576, 1536, False), ("lm_head", 49152, 576, False)],
    "gpt2": [("c_attn", 2304, 768, True), ("attn c_proj", 768, 768, True), ("c_fc", 3072, 768, True),
             ("mlp c_proj", 768, 3072, True), ("lm_head", 50257, 768, False)],
    "minilm": [("q/k/v/o", 384, 384, True), ("intermediate", 1536, 384, True), ("output", 384, 1536, True)],
    "bert-base": [("q/k/v/o", 768, 768, True), ("intermediate", 3072, 768, True), ("output", 768, 3072, True)],
}


def step(fn, x: torch.Tensor, params: list[torch.Tensor], grad: torch.Tensor) -> tuple[float, float]:
    """Wall and process CPU milliseconds of one forward and backward."""
    start, cpu = time.perf_counter(), time.process_time()
    y = fn(x)
    torch.autograd.backward(y, grad)
    elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu
    for t in (x, *params):
        t.grad = None
    return elapsed * 1e3, cpu * 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=512)
    parser.add_argument("--reps", type=int, default=15)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--family", default="all", choices=["all", *FAMILIES])
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if not dense._state["available"]:
        raise SystemExit("this PyTorch build has no oneDNN linear (torch.ops.mkldnn._linear_pointwise)")
    dense._state["enabled"] = True
    print(f"float32, {args.rows} rows, torch threads {args.threads}, forward + backward (input, weight, bias grads), "
          f"median of {args.reps} alternating runs (wall and process CPU time)")
    print(f"{'family':10s} {'product':12s} {'[out, in]':>13s} {'BLAS ms':>9s} {'oneDNN ms':>10s} {'ratio':>6s}"
          f" {'BLAS CPU ms':>12s} {'oneDNN CPU ms':>14s} {'ratio':>6s}")
    g = torch.Generator().manual_seed(0)
    for family, shapes in FAMILIES.items():
        if args.family not in ("all", family):
            continue
        for name, out, inp, bias in shapes:
            x = torch.randn(args.rows, inp, generator=g).requires_grad_(True)
            grad = torch.randn(args.rows, out, generator=g)
            if family == "gpt2" and name != "lm_head":  # Conv1D: weight [in, out]
                w = nn.Parameter(torch.randn(inp, out, generator=g) * 0.02)
                b = nn.Parameter(torch.zeros(out))
                params = [w, b]
                blas = lambda x, w=w, b=b: torch.addmm(b, x, w)  # noqa: E731
                onednn = lambda x, w=w, b=b: dense.train_linear(x, w.t(), b)  # noqa: E731
            else:
                base = nn.Linear(inp, out, bias=bias)
                block = dense.Linear(inp, out, bias=bias)
                block.load_state_dict(base.state_dict())
                params = list(base.parameters()) + list(block.parameters())
                blas, onednn = base, block
            times: dict[str, list[tuple[float, float]]] = {"blas": [], "onednn": []}
            for i in range(args.reps + 2):
                for key, fn in (("blas", blas), ("onednn", onednn)):
                    t = step(fn, x, params, grad)
                    if i >= 2:
                        times[key].append(t)
            (a, b_), (ca, cb) = ((statistics.median(t[k] for t in times[key]) for key in ("blas", "onednn"))
                                 for k in (0, 1))
            print(f"{family:10s} {name:12s} {f'[{out}, {inp}]':>13s} {a:9.2f} {b_:10.2f} {b_ / a:6.2f}"
                  f" {ca:12.2f} {cb:14.2f} {cb / ca:6.2f}", flush=True)


if __name__ == "__main__":
    main()
