"""LoRA fine-tuning benchmark: openformers.peft vs transformers + peft, side by side.

The same run on both sides: the embedded SmolLM2-135M weights (dequantized from the GGUF,
saved once as safetensors so both libraries load identical fp32 weights), a rank-8 LoRA on
q/k/v/o projections (alpha 16, dropout 0.05), the same seeded random token ids on both sides
(``--batch-size`` x ``--seq-len``, no padding, labels = inputs), AdamW (lr 1e-3) on the adapter, a plain
training loop (forward, backward, step) on CPU. Each run is a fresh subprocess: peak RSS is
read from /proc/self/status (VmHWM), and the training memory is the peak during training (VmHWM
reset through /proc/self/clear_refs after loading) less the RSS before it. Speed is tokens/s over
the steps after ``--warmup``; figures are medians over ``--rounds`` alternating runs.

``--qlora`` measures memory instead, openformers only: QLoRA (the embedded GGUF loaded with
``BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True)``,
``prepare_model_for_kbit_training``, LoRA r=8 on q/k/v/o) against the same LoRA on the float32
base loaded from the same file, with and without gradient checkpointing, each configuration in
its own subprocess; peak RSS is the process's VmHWM (loading included).

``--trainer`` trains the same rows with each library's Trainer instead (AdamW "adamw_torch",
lr 1e-3, constant schedule, no clipping, no saving or logging between; steps timed from the
``on_step_end`` callback), as a user's fine-tune runs.

``--interleaved`` measures speed only, robust to a machine whose speed drifts between runs: both
libraries' models in one process, one plain-loop step of each in turn (ours inside
``reuse_freed_memory()``, as its Trainer runs), ``--steps`` steps each after ``--warmup``; the ratio of
the median step times. Memory is not measured there (one process holds both models).

``--interleaved --full`` measures a full fine-tune step instead (every parameter trained, no adapter,
AdamW lr 1e-5, or plain SGD with ``--optimizer sgd``, which keeps no state): openformers and
transformers in one process stepping in turn, openformers twice a round, with its float32 training
products as they are (``modules/dense.py``: oneDNN where the CPU prefers it) and with them on
``F.linear`` (as before the model files used ``dense.Linear``; one model and optimizer for both, the
switch flipped per step).

Run: ``python benchmarks/bench_lora.py [--steps 8] [--warmup 2] [--batch-size 8] [--seq-len 64]
[--rounds 2] [--threads 0] [--trainer | --interleaved [--full [--optimizer adamw|sgd]]] [--json out.json]`` or ``python benchmarks/bench_lora.py --qlora
[--steps 3] [--batch-size 4] [--compute-dtype float32|bfloat16]``
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
# the adapter both libraries train, in every child below
LORA_SETTINGS = ('dict(r=8, lora_alpha=16, lora_dropout=0.05, task_type="CAUSAL_LM", '
                 'target_modules=["q_proj", "k_proj", "v_proj", "o_proj"])')

CHILD = r"""
import json, sys, tempfile, time, threading, os
lib, weights, steps, warmup, batch, seq, threads, loop = sys.argv[1:9]
steps, warmup, batch, seq, threads = int(steps), int(warmup), int(batch), int(seq), int(threads)
import torch
if threads:
    torch.set_num_threads(threads)
torch.manual_seed(0)

def rss():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS"):
                return int(line.split()[1]) * 1024

def hwm():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM"):
                return int(line.split()[1]) * 1024

kw = LORA_SETTINGS
if lib == "openformers":
    from openformers import AutoModelForCausalLM, Trainer, TrainerCallback, TrainingArguments, default_data_collator
    from openformers.peft import LoraConfig, get_peft_model
    model = AutoModelForCausalLM.from_pretrained(weights, dtype=torch.float32)
else:
    import warnings; warnings.filterwarnings("ignore")
    import transformers
    from transformers import AutoModelForCausalLM, Trainer, TrainerCallback, TrainingArguments, default_data_collator
    from peft import LoraConfig, get_peft_model
    transformers.logging.set_verbosity_error()
    model = AutoModelForCausalLM.from_pretrained(weights, dtype=torch.float32)
model = get_peft_model(model, LoraConfig(**kw))
model.train()
params = [p for p in model.parameters() if p.requires_grad]
opt = torch.optim.AdamW(params, lr=1e-3)
g = torch.Generator().manual_seed(0)
batches = []
for _ in range(steps):
    ids = torch.randint(10, 49000, (batch, seq), generator=g)
    batches.append({"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": ids})
start_rss = rss()
load_peak = hwm()
# the peak of training alone: the kernel's high-water mark reset here (Linux); a thread sampling RSS instead
# took ~5% off the step it measured (it preempts one of the compute threads on a small machine)
try:
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    sampled = False
except OSError:
    sampled = True
peak = [start_rss]
stop = False
def sample():
    while not stop:
        peak[0] = max(peak[0], rss())
        time.sleep(0.01)
t = threading.Thread(target=sample, daemon=True)
if sampled:
    t.start()
times, losses = [], []
if loop == "trainer":
    # each library's Trainer: AdamW lr 1e-3, constant schedule, no clipping, rows in the same order
    rows = [{k: v[i].tolist() for k, v in b.items()} for b in batches for i in range(batch)]
    stamps = [time.perf_counter()]

    class Timer(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            stamps.append(time.perf_counter())

    with tempfile.TemporaryDirectory() as out:
        args = TrainingArguments(output_dir=out, max_steps=steps, per_device_train_batch_size=batch, learning_rate=1e-3,
                                 weight_decay=0.0, lr_scheduler_type="constant", max_grad_norm=0.0, optim="adamw_torch",
                                 logging_steps=steps, save_strategy="no", report_to="none", disable_tqdm=True,
                                 dataloader_pin_memory=False, use_cpu=True, seed=0)
        result = Trainer(model=model, args=args, train_dataset=rows, data_collator=default_data_collator,
                         callbacks=[Timer()]).train()
    times = [b - a for a, b in zip(stamps, stamps[1:])]
    losses = [float(result.training_loss)]
else:
    for b in batches:
        t0 = time.perf_counter()
        loss = model(**b).loss
        loss.backward()
        opt.step(); opt.zero_grad(set_to_none=True)
        times.append(time.perf_counter() - t0)
        losses.append(float(loss))
stop = True
if sampled:
    t.join()
else:
    peak[0] = hwm()
timed = times[warmup:]
print(json.dumps({"lib": lib, "tokens_per_s": batch * seq * len(timed) / sum(timed), "step_s": sum(timed) / len(timed),
                  "train_rss_growth_mb": (peak[0] - start_rss) / 2**20, "peak_rss_mb": max(load_peak, hwm()) / 2**20,
                  "first_loss": losses[0], "last_loss": losses[-1]}))
""".replace("LORA_SETTINGS", LORA_SETTINGS)


QLORA_CHILD = r"""
import json, sys, time
mode, gc_on, steps, batch, seq, threads, compute = sys.argv[1:8]
gc_on, steps, batch, seq, threads = gc_on == "1", int(steps), int(batch), int(seq), int(threads)
import torch
if threads:
    torch.set_num_threads(threads)
torch.manual_seed(0)
from openformers import AutoModelForCausalLM, BitsAndBytesConfig
from openformers.peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training

def rss_mb():
    with open("/proc/self/status") as f:
        return next(int(l.split()[1]) for l in f if l.startswith("VmRSS")) / 1024

def peak_mb():  # VmHWM: ru_maxrss survives execve and could report the parent's size
    with open("/proc/self/status") as f:
        return next(int(l.split()[1]) for l in f if l.startswith("VmHWM")) / 1024

start = rss_mb()
t0 = time.perf_counter()
if mode == "qlora":
    q = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                           bnb_4bit_compute_dtype=getattr(torch, compute))
    model = AutoModelForCausalLM.from_pretrained("smollm2", quantization_config=q)
    model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=gc_on)
else:
    model = AutoModelForCausalLM.from_pretrained("smollm2", dtype=torch.float32)
    if gc_on:
        model.enable_input_require_grads()
        model.gradient_checkpointing_enable({"use_reentrant": False})
load_s = time.perf_counter() - t0
load_peak, loaded = peak_mb(), rss_mb()
model = get_peft_model(model, LoraConfig(r=8, lora_alpha=16, target_modules=["q_proj", "k_proj", "v_proj", "o_proj"],
                                         task_type="CAUSAL_LM"))
model.train()
opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)
g = torch.Generator().manual_seed(0)
losses, t1 = [], time.perf_counter()
for _ in range(steps):
    ids = torch.randint(10, 49000, (batch, seq), generator=g)
    loss = model(input_ids=ids, labels=ids).loss
    loss.backward()
    opt.step(); opt.zero_grad(set_to_none=True)
    losses.append(float(loss))
print(json.dumps({"mode": mode, "gradient_checkpointing": gc_on, "load_s": load_s, "start_mb": start,
                  "load_peak_mb": load_peak, "after_load_mb": loaded, "peak_mb": peak_mb(),
                  "step_s": (time.perf_counter() - t1) / steps, "losses": losses}))
"""


INTERLEAVED_CHILD = r"""
import contextlib, json, statistics, sys, time, warnings
weights, steps, warmup, batch, seq, threads = sys.argv[1:7]
steps, warmup, batch, seq, threads = int(steps), int(warmup), int(batch), int(seq), int(threads)
import torch
if threads:
    torch.set_num_threads(threads)
warnings.filterwarnings("ignore")
import transformers
from peft import LoraConfig as TheirConfig, get_peft_model as their_peft
from openformers import AutoModelForCausalLM
from openformers.peft import LoraConfig, get_peft_model
from openformers.training.allocator import reuse_freed_memory
transformers.logging.set_verbosity_error()
torch.manual_seed(0)
kw = LORA_SETTINGS
models = {"openformers": get_peft_model(AutoModelForCausalLM.from_pretrained(weights, dtype=torch.float32), LoraConfig(**kw)),
          "transformers+peft": their_peft(transformers.AutoModelForCausalLM.from_pretrained(weights, dtype=torch.float32),
                                          TheirConfig(**kw))}
scopes = {"openformers": reuse_freed_memory, "transformers+peft": contextlib.nullcontext}
optims = {}
for lib, model in models.items():
    model.train()
    optims[lib] = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)
g = torch.Generator().manual_seed(0)
times = {lib: [] for lib in models}
for i in range(steps):
    ids = torch.randint(10, 49000, (batch, seq), generator=g)
    b = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": ids}
    for lib, model in models.items():
        with scopes[lib]():
            t0 = time.perf_counter()
            model(**b).loss.backward()
            optims[lib].step(); optims[lib].zero_grad(set_to_none=True)
            times[lib].append(time.perf_counter() - t0)
print(json.dumps({lib: statistics.median(t[warmup:]) for lib, t in times.items()}))
""".replace("LORA_SETTINGS", LORA_SETTINGS)


FULL_CHILD = r"""
import contextlib, json, statistics, sys, time, warnings
weights, steps, warmup, batch, seq, threads, optimizer = sys.argv[1:8]
steps, warmup, batch, seq, threads = int(steps), int(warmup), int(batch), int(seq), int(threads)
import torch
if threads:
    torch.set_num_threads(threads)
warnings.filterwarnings("ignore")
import transformers
from openformers import AutoModelForCausalLM
from openformers.modules import dense
from openformers.training.allocator import reuse_freed_memory
transformers.logging.set_verbosity_error()
torch.manual_seed(0)
ours = AutoModelForCausalLM.from_pretrained(weights, dtype=torch.float32)
theirs = transformers.AutoModelForCausalLM.from_pretrained(weights, dtype=torch.float32)
# ours runs twice a round, its products as they are and on F.linear: one model and optimizer (the cost of a
# step does not depend on the weights' values), so two models fit in memory, not three
runs = {"openformers": (ours, dense._state["enabled"], reuse_freed_memory),
        "openformers, F.linear": (ours, False, reuse_freed_memory),
        "transformers": (theirs, False, contextlib.nullcontext)}
make = (lambda p: torch.optim.AdamW(p, lr=1e-5)) if optimizer == "adamw" else (lambda p: torch.optim.SGD(p, lr=1e-5))
optims = {id(m): make(m.parameters()) for m in (ours, theirs)}
for m in (ours, theirs):
    m.train()
g = torch.Generator().manual_seed(0)
times = {lib: [] for lib in runs}
for i in range(steps):
    ids = torch.randint(10, 49000, (batch, seq), generator=g)
    b = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": ids}
    for lib, (model, onednn, scope) in runs.items():
        dense._state["enabled"] = onednn
        with scope():
            t0 = time.perf_counter()
            model(**b).loss.backward()
            optims[id(model)].step(); optims[id(model)].zero_grad(set_to_none=True)
            times[lib].append(time.perf_counter() - t0)
print(json.dumps({"onednn": runs["openformers"][1], "step_s": {lib: statistics.median(t[warmup:]) for lib, t in times.items()}}))
"""


def run_full_interleaved(ns: argparse.Namespace, weights: Path) -> dict[str, float]:
    """Median full fine-tune step times: ours with its products as they are, ours on F.linear, transformers."""
    out = subprocess.run([sys.executable, "-c", FULL_CHILD, str(weights), str(ns.steps), str(ns.warmup),
                          str(ns.batch_size), str(ns.seq_len), str(ns.threads), ns.optimizer],
                         capture_output=True, text=True, cwd=ROOT, check=False)
    if out.returncode != 0:
        raise RuntimeError(f"interleaved full fine-tune run failed:\n{out.stderr[-3000:]}")
    result = json.loads(out.stdout.strip().splitlines()[-1])
    steps = result["step_s"]
    tokens = ns.batch_size * ns.seq_len
    print(f"full fine-tune, SmolLM2-135M fp32, {ns.optimizer}, plain loop, ours and theirs in one process stepping in "
          f"turn (ours twice: its products as they are, then on F.linear), batch "
          f"{ns.batch_size} x {ns.seq_len} tokens, median of {ns.steps - ns.warmup} steps each; oneDNN products "
          f"{'on' if result['onednn'] else 'off (this CPU prefers the BLAS, or OPENFORMERS_ONEDNN_LINEAR=0)'}")
    for lib, step in steps.items():
        print(f"{lib:22s}{tokens / step:10.1f} tokens/s{step:9.2f} s a step")
    print(f"openformers / openformers on F.linear: {steps['openformers, F.linear'] / steps['openformers']:.2f}x; "
          f"openformers / transformers: {steps['transformers'] / steps['openformers']:.2f}x (speed ratios)")
    return steps


def run_interleaved(ns: argparse.Namespace, weights: Path) -> dict[str, float]:
    """Median step times of both libraries, stepping in turn in one process."""
    out = subprocess.run([sys.executable, "-c", INTERLEAVED_CHILD, str(weights), str(ns.steps), str(ns.warmup),
                          str(ns.batch_size), str(ns.seq_len), str(ns.threads)],
                         capture_output=True, text=True, cwd=ROOT, check=False)
    if out.returncode != 0:
        raise RuntimeError(f"interleaved run failed:\n{out.stderr[-3000:]}")
    steps = json.loads(out.stdout.strip().splitlines()[-1])
    ours, theirs = steps["openformers"], steps["transformers+peft"]
    tokens = ns.batch_size * ns.seq_len
    print(f"LoRA r=8 q/k/v/o, SmolLM2-135M fp32, plain loop, both libraries in one process stepping in turn, batch "
          f"{ns.batch_size} x {ns.seq_len} tokens, median of {ns.steps - ns.warmup} steps each")
    for lib, step in steps.items():
        print(f"{lib:20s}{tokens / step:10.1f} tokens/s{step:9.2f} s a step")
    print(f"speed ratio (ours / theirs): {theirs / ours:.2f}x")
    return steps


def run_qlora(ns: argparse.Namespace) -> list[dict]:
    """QLoRA vs LoRA on the float32 base: peak memory, each configuration in a fresh process."""
    rows = []
    for gc_on in ("0", "1"):
        for mode in ("lora", "qlora"):
            out = subprocess.run(
                [sys.executable, "-c", QLORA_CHILD, mode, gc_on, str(ns.steps), str(ns.batch_size), str(ns.seq_len),
                 str(ns.threads), ns.compute_dtype],
                capture_output=True, text=True, cwd=ROOT, check=False,
            )
            if out.returncode != 0:
                raise RuntimeError(f"{mode} run failed:\n{out.stderr[-3000:]}")
            rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
    print(f"SmolLM2-135M from the embedded GGUF, LoRA r=8 q/k/v/o, batch {ns.batch_size} x {ns.seq_len}, "
          f"{ns.steps} steps; QLoRA = NF4 + double quant, compute {ns.compute_dtype}")
    print(f"{'config':28s}{'load s':>8s}{'RSS after load':>16s}{'peak RSS':>10s}{'peak - start':>14s}{'step s':>8s}  losses")
    for r in rows:
        name = f"{r['mode']}{' + grad ckpt' if r['gradient_checkpointing'] else ''}"
        print(f"{name:28s}{r['load_s']:8.1f}{r['after_load_mb']:14.0f}MB{r['peak_mb']:8.0f}MB"
              f"{r['peak_mb'] - r['start_mb']:12.0f}MB{r['step_s']:8.1f}  {[round(x, 3) for x in r['losses']]}")
    for gc_on in (False, True):
        lora, qlora = (next(r for r in rows if r["mode"] == m and r["gradient_checkpointing"] == gc_on) for m in ("lora", "qlora"))
        print(f"QLoRA / LoRA peak RSS{' (grad ckpt)' if gc_on else ''}: {qlora['peak_mb'] / lora['peak_mb']:.2f}x")
    if ns.json:
        Path(ns.json).write_text(json.dumps({"settings": vars(ns), "runs": rows}, indent=2))
    return rows


def prepare_weights(directory: Path) -> Path:
    """SmolLM2-135M from the embedded GGUF, saved as fp32 safetensors both libraries load."""
    import torch

    from openformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained("smollm2", dtype=torch.float32)
    model.save_pretrained(directory)
    return directory


def main(argv: list[str] | None = None) -> Any:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--seq-len", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--json", default=None)
    parser.add_argument("--qlora", action="store_true", help="QLoRA vs LoRA peak memory (openformers only)")
    parser.add_argument("--trainer", action="store_true", help="train with each library's Trainer instead of a plain loop")
    parser.add_argument("--compute-dtype", default="float32", choices=["float32", "bfloat16"])
    parser.add_argument("--interleaved", action="store_true",
                        help="speed only: both libraries in one process, a step of each in turn")
    parser.add_argument("--full", action="store_true", help="with --interleaved: a full fine-tune step, no adapter")
    parser.add_argument("--optimizer", choices=["adamw", "sgd"], default="adamw",
                        help="with --full: AdamW, or SGD (no optimizer state: less memory)")
    ns = parser.parse_args(argv)
    if ns.full and not ns.interleaved:
        parser.error("--full is measured with --interleaved only: add --interleaved")
    if ns.qlora:
        return run_qlora(ns)
    with tempfile.TemporaryDirectory() as tmp:
        weights = prepare_weights(Path(tmp) / "smollm2")
        if ns.interleaved:
            steps = (run_full_interleaved if ns.full else run_interleaved)(ns, weights)
            if ns.json:
                Path(ns.json).write_text(json.dumps({"settings": vars(ns), "step_s": steps}, indent=2))
            return steps
        runs: dict[str, list[dict[str, float]]] = {"openformers": [], "transformers+peft": []}
        for _ in range(ns.rounds):
            for lib in ("openformers", "transformers+peft"):
                out = subprocess.run(
                    [sys.executable, "-c", CHILD, lib, str(weights), str(ns.steps), str(ns.warmup), str(ns.batch_size),
                     str(ns.seq_len), str(ns.threads), "trainer" if ns.trainer else "loop"],
                    capture_output=True, text=True, cwd=ROOT, check=False,
                )
                if out.returncode != 0:
                    raise RuntimeError(f"{lib} run failed:\n{out.stderr[-3000:]}")
                runs[lib].append(json.loads(out.stdout.strip().splitlines()[-1]))
    summary = {lib: {k: statistics.median(r[k] for r in rs) for k in rs[0] if k != "lib"} for lib, rs in runs.items()}
    ours, theirs = summary["openformers"], summary["transformers+peft"]
    print(f"LoRA r=8 q/k/v/o, SmolLM2-135M fp32, {'Trainer' if ns.trainer else 'plain loop'}, batch {ns.batch_size} x {ns.seq_len} tokens, "
          f"{ns.steps - ns.warmup} timed steps, median of {ns.rounds}")
    print(f"{'':20s}{'tokens/s':>10s}{'step s':>9s}{'train RSS growth MB':>21s}{'peak RSS MB':>13s}")
    for lib, r in summary.items():
        print(f"{lib:20s}{r['tokens_per_s']:10.1f}{r['step_s']:9.2f}{r['train_rss_growth_mb']:21.0f}{r['peak_rss_mb']:13.0f}")
    print(f"speed ratio (ours / theirs): {ours['tokens_per_s'] / theirs['tokens_per_s']:.2f}x; "
          f"training memory ratio: {ours['train_rss_growth_mb'] / max(theirs['train_rss_growth_mb'], 1e-9):.2f}x; "
          f"peak RSS ratio: {ours['peak_rss_mb'] / theirs['peak_rss_mb']:.2f}x")
    if ns.json:
        Path(ns.json).write_text(json.dumps({"settings": vars(ns), "summary": summary, "runs": runs}, indent=2))
    return summary


if __name__ == "__main__":
    main()
