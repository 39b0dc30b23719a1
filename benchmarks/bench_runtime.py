"""Decode speed and memory of two openformers source trees side by side (before/after a change to the runtime).

Each tree runs in its own child process (two versions of one package cannot share a process); the parent
sends the same greedy-decoding runs to both in turn (old, new, old, new, ...) so the machine's load falls
on both alike, and reports the best tokens/s of each, their ratio new / old, whether both produced the
same tokens, and each child's peak RSS. Tokens per CPU-second are compared too: on a loaded machine
with one thread per process they measure the code rather than the other load. Cases: the embedded
SmolLM2-135M (GGUF dequantized) in float32 and bfloat16 at batch 1 and 8, kept 4-bit
(``GGUFQuantizationConfig``, bf16 activations) at batch 1 and 8, and on request the embedded MiniLM
encoder's forward over a padded batch of 128 tokens a row (``minilm-float32:32``, ``minilm-bfloat16:32``).

Run: ``python benchmarks/bench_runtime.py --old /path/to/old/tree [--new .] [--iters 3] [--threads 2]``
(a tree is a directory holding the ``openformers`` package, e.g. ``git archive <commit> openformers | tar -x -C DIR``).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

CHILD = r"""
import hashlib, json, sys, time, torch
torch.set_num_threads(int(sys.argv[1]))
quantized, encoder = sys.argv[2] == "q4", sys.argv[2] == "encoder"
import openformers
from openformers import AutoModel, AutoModelForCausalLM
if encoder:
    model = AutoModel.from_pretrained("minilm").eval()
elif quantized:
    from openformers.quantization import GGUFQuantizationConfig
    from openformers.core.hub import embedded_model_path
    gguf = embedded_model_path("smollm2")
    model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name,
                                                 quantization_config=GGUFQuantizationConfig()).eval()
else:
    model = AutoModelForCausalLM.from_pretrained("smollm2").eval()

def peak():
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmHWM")) / 1024

print(json.dumps({"ready": openformers.__file__, "peak_mb": peak()}), flush=True)
dtype = None
for line in sys.stdin:
    cmd = json.loads(line)
    if cmd.get("dtype") and not quantized and cmd["dtype"] != dtype:
        dtype = cmd["dtype"]
        model.to(getattr(torch, dtype))
    if encoder:  # a padded batch of [batch, 128]: one forward
        ids = torch.randint(1000, 30000, (cmd["batch"], 128), generator=torch.Generator().manual_seed(0))
        mask = torch.ones_like(ids)
        mask[1::2, 96:] = 0
        t0, c0 = time.perf_counter(), time.process_time()
        with torch.inference_mode():
            out = model(input_ids=ids, attention_mask=mask).last_hidden_state
        out = (out.float() * 64).round()
    else:
        ids = torch.randint(100, 49000, (cmd["batch"], 32), generator=torch.Generator().manual_seed(cmd["batch"]))
        t0, c0 = time.perf_counter(), time.process_time()
        out = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=cmd["tokens"], min_new_tokens=None,
                             do_sample=False, eos_token_id=None, pad_token_id=0)
    seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
    digest = hashlib.sha1(out.numpy().tobytes()).hexdigest()
    print(json.dumps({"seconds": seconds, "cpu": cpu, "tokens": digest, "peak_mb": peak()}), flush=True)
"""


class Child:
    def __init__(self, tree: Path, kind: str, threads: int) -> None:
        env = {**os.environ, "PYTHONPATH": str(tree)}
        self.proc = subprocess.Popen([sys.executable, "-c", CHILD, str(threads), kind], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True, env=env, cwd=str(tree))
        self.ready = json.loads(self.proc.stdout.readline())

    def run(self, **cmd) -> dict:
        self.proc.stdin.write(json.dumps(cmd) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"child for {self.ready} ended early")
        return json.loads(line)

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait()


def _kind(case: str) -> str:
    name = case.split(":")[0]
    return "q4" if name == "q4" else "encoder" if name.startswith("minilm") else "float"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--old", type=Path, required=True)
    parser.add_argument("--new", type=Path, default=Path(__file__).resolve().parents[1])
    parser.add_argument("--iters", type=int, default=3)
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--cases", nargs="+", default=["float32:1", "float32:8", "bfloat16:1", "bfloat16:8", "q4:1", "q4:8"],
                        help="dtype:batch; q4:batch (kept 4-bit); minilm-float32:32 / minilm-bfloat16:32 (encoder forward)")
    parser.add_argument("--json", type=str, default=None)
    args = parser.parse_args()
    with open("/proc/loadavg") as f:
        print(f"load average at start: {f.read().split()[:3]}", flush=True)
    rows = []
    for kind in ("float", "q4", "encoder"):
        cases = [c.split(":") for c in args.cases if _kind(c) == kind]
        if not cases:
            continue
        children = {"old": Child(args.old, kind, args.threads), "new": Child(args.new, kind, args.threads)}
        for dtype, batch in cases:
            batch = int(batch)
            cmd = {"dtype": None if dtype == "q4" else dtype.replace("minilm-", ""), "batch": batch}
            for child in children.values():
                child.run(**cmd, tokens=8)  # warm-up: kernels, allocator, copies
            best = {name: float("inf") for name in children}
            best_cpu = {name: float("inf") for name in children}
            digests = {}
            for _ in range(args.iters):
                for name, child in children.items():
                    r = child.run(**cmd, tokens=args.new_tokens)
                    best[name] = min(best[name], r["seconds"])
                    best_cpu[name] = min(best_cpu[name], r["cpu"])
                    digests[name] = r["tokens"]
            per_run = batch * (128 if kind == "encoder" else args.new_tokens)  # encoder: tokens of one forward
            tok = {name: per_run / s for name, s in best.items()}
            tok_cpu = {name: per_run / s for name, s in best_cpu.items()}
            row = {"case": f"{dtype} b{batch}", "old_tok_s": tok["old"], "new_tok_s": tok["new"],
                   "ratio": tok["new"] / tok["old"], "cpu_ratio": tok_cpu["new"] / tok_cpu["old"],
                   "same_tokens": digests["old"] == digests["new"]}
            rows.append(row)
            print(f"{row['case']:>12}  old {tok['old']:7.1f}  new {tok['new']:7.1f} tok/s  new/old {row['ratio']:.3f}  "
                  f"per CPU-second new/old {row['cpu_ratio']:.3f}  same tokens {row['same_tokens']}", flush=True)
        peaks = {name: child.run(**cmd, tokens=1)["peak_mb"] for name, child in children.items()}
        print(f"{kind:>12}  peak RSS old {peaks['old']:.0f} MB  new {peaks['new']:.0f} MB  new/old "
              f"{peaks['new'] / peaks['old']:.3f}", flush=True)
        rows.append({"case": f"{kind} peak RSS", "old_mb": peaks["old"], "new_mb": peaks["new"]})
        for child in children.values():
            child.close()
    with open("/proc/loadavg") as f:
        print(f"load average at end: {f.read().split()[:3]}", flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
