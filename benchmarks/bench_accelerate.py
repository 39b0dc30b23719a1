"""Accelerator overhead: the same training loop as plain PyTorch, with openformers' Accelerator and
with Accelerate's own Accelerator, in one process (and, with ``--processes 2``, under torchrun on gloo).

The loop: a small GPT-2 (4 layers, width 128, sequence 64, batch 8 per process), AdamW, gradient
clipping, a data loader over random token rows. The plain loop wraps the model in DDP itself
(with several processes) and shards the data with a DistributedSampler. The three loops run in
turns (``--rounds`` rounds of ``--steps`` timed steps each after ``--warmup``, the order rotating
from round to round), in one process, so they share the machine's state; the figures are the median and the best round's step time per
loop, and their ratios.

Run: ``python benchmarks/bench_accelerate.py [--steps 40] [--rounds 3] [--threads 1]`` (1 process) and
``python benchmarks/bench_accelerate.py --processes 2`` (2 processes, started through
``openformers launch``).
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _parts(seed: int = 0):
    import torch

    from openformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(seed)
    model = GPT2LMHeadModel(GPT2Config(vocab_size=512, n_positions=64, n_embd=128, n_layer=4, n_head=4,
                                       resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    g = torch.Generator().manual_seed(1)
    rows = torch.randint(0, 512, (4096, 64), generator=g)
    data = [{"input_ids": r, "labels": r} for r in rows]
    return model, optimizer, data


def _collate(rows):
    import torch

    ids = torch.stack([r["input_ids"] for r in rows])
    return {"input_ids": ids, "labels": ids}


def _timed(step, batches, warmup: int, steps: int) -> float:
    it = iter(batches)
    for _ in range(warmup):
        step(next(it))
    start = time.perf_counter()
    for _ in range(steps):
        step(next(it))
    return (time.perf_counter() - start) / steps


def plain_loop(warmup: int, steps: int) -> float:
    import torch
    from torch.utils.data import DataLoader, DistributedSampler

    model, optimizer, data = _parts()
    distributed = torch.distributed.is_initialized()
    sampler = DistributedSampler(data, shuffle=True, seed=0) if distributed else None
    loader = DataLoader(data, batch_size=8, shuffle=sampler is None, sampler=sampler, collate_fn=_collate)
    if distributed:
        model = torch.nn.parallel.DistributedDataParallel(model)
    model.train()

    def step(batch):
        loss = model(**batch).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad()

    return _timed(step, loader, warmup, steps)


def accelerator_loop(cls, warmup: int, steps: int) -> float:
    import torch
    from torch.utils.data import DataLoader

    accelerator = cls()
    model, optimizer, data = _parts()
    loader = DataLoader(data, batch_size=8, shuffle=True, collate_fn=_collate)
    model, optimizer, loader = accelerator.prepare(model, optimizer, loader)
    model.train()

    def step(batch):
        loss = model(**batch).loss
        accelerator.backward(loss)
        accelerator.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad()

    return _timed(step, loader, warmup, steps)


def measure(args: argparse.Namespace) -> None:
    import accelerate
    import torch

    from openformers.distributed import Accelerator

    torch.set_num_threads(args.threads)
    if "WORLD_SIZE" in os.environ and not torch.distributed.is_initialized():
        torch.distributed.init_process_group("gloo")
    loops = {"plain": lambda: plain_loop(args.warmup, args.steps),
             "openformers": lambda: accelerator_loop(Accelerator, args.warmup, args.steps),
             "accelerate": lambda: accelerator_loop(accelerate.Accelerator, args.warmup, args.steps)}
    times: dict[str, list[float]] = {k: [] for k in loops}
    import gc

    names = list(loops)
    for r in range(args.rounds):
        for name in names[r % 3:] + names[:r % 3]:  # each loop takes each position in turn
            gc.collect()  # the previous loop's objects are not collected during this one
            times[name].append(loops[name]())
    if int(os.environ.get("RANK", 0)) != 0:
        return
    world = int(os.environ.get("WORLD_SIZE", 1))
    med = {k: statistics.median(v) for k, v in times.items()}
    best = {k: min(v) for k, v in times.items()}  # the round least disturbed by other work on the machine
    print(f"processes={world} threads/process={torch.get_num_threads()} steps={args.steps} rounds={args.rounds}")
    for name in loops:
        print(f"  {name:12s} {med[name] * 1e3:8.2f} ms/step  (rounds: {', '.join(f'{t * 1e3:.2f}' for t in times[name])})")
    for label, t in (("median", med), ("best round", best)):
        print(f"  {label:10s}: openformers / plain = {t['openformers'] / t['plain']:.3f}x step time, "
              f"openformers / accelerate = {t['openformers'] / t['accelerate']:.3f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--processes", type=int, default=1)
    parser.add_argument("--threads", type=int, default=1, help="threads per process (1: no OpenMP spinning on a busy machine)")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.processes > 1 and not args.child:
        with open("/proc/loadavg") as f:
            print("load average before:", f.read().split()[:3])
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        sys.exit(subprocess.call([sys.executable, "-m", "openformers", "launch", "--num_processes", str(args.processes),
                                  __file__, "--child", "--steps", str(args.steps), "--warmup", str(args.warmup),
                                  "--rounds", str(args.rounds), "--threads", str(args.threads)], env=env))
    if not args.child:
        with open("/proc/loadavg") as f:
            print("load average before:", f.read().split()[:3])
    measure(args)


if __name__ == "__main__":
    main()
