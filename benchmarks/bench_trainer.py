"""Trainer benchmark: openformers vs transformers fine-tuning the embedded MiniLM, side by side.

The same run on both sides, as in examples/fine_tune_sentiment.py: the MiniLM weights with a
fresh 2-label sequence-classification head, examples/data/sentiment/train.jsonl tokenized with
truncation at 128 tokens (each library's own dataset, tokenizer and DataCollatorWithPadding),
batch 16, AdamW (lr 1e-4, weight decay 0.01, linear schedule, grad-norm clipping at 1.0),
a fixed number of optimizer steps, no evaluation, no saving, one log line at the end,
report_to none, no progress bar, on CPU.

Each run is a fresh subprocess (so peak RSS, read from /proc/self/status VmHWM, is that run's
alone); the two libraries run alternately, ``--rounds`` times each, at fp32 and at bf16
(``bf16=True``: autocast for both). Speed is steps/s over the steps after the first
``--warmup`` (timed from a callback at each step end), so start-up costs are left out; the
whole ``train()`` wall time is reported too. Figures are medians over rounds.

Run: ``python benchmarks/bench_trainer.py [--steps 30] [--rounds 2] [--padding dynamic|max_length]
[--precisions fp32,bf16] [--optim default|adamw_torch|adamw_torch_fused] [--json out.json]``

``--optim default`` leaves the optimizer choice to each library's TrainingArguments default
(both are torch AdamW; which variant is printed).
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "examples" / "data" / "sentiment" / "train.jsonl"

CHILD = r"""
import json, sys, tempfile, time
lib, precision, steps, warmup, padding, optim, threads = sys.argv[1:8]
steps, warmup, threads = int(steps), int(warmup), int(threads)
data_file = sys.argv[8]
import torch
if threads:
    torch.set_num_threads(threads)

def vm(field):
    for line in open("/proc/self/status"):
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return float("nan")

t_start = time.perf_counter()
if lib == "openformers":
    from openformers import (AutoModelForSequenceClassification, AutoTokenizer, DataCollatorWithPadding, Trainer,
                             TrainerCallback, TrainingArguments, load_dataset)
    name = "minilm"
else:
    import transformers
    from datasets import load_dataset
    from transformers import (AutoModelForSequenceClassification, AutoTokenizer, DataCollatorWithPadding, Trainer,
                              TrainerCallback, TrainingArguments)
    from openformers.core.hub import embedded_model_path
    transformers.logging.set_verbosity_error()
    name = str(embedded_model_path("minilm"))
    try:
        import datasets
        datasets.disable_progress_bars()
    except Exception:
        pass

torch.manual_seed(0)
dataset = load_dataset("json", data_files={"train": data_file})
tokenizer = AutoTokenizer.from_pretrained(name)
pad_kw = {"padding": "max_length"} if padding == "max_length" else {}
tokenized = dataset.map(lambda ex: tokenizer(ex["text"], truncation=True, max_length=128, **pad_kw), batched=True)
collator = DataCollatorWithPadding(tokenizer=tokenizer)
model = AutoModelForSequenceClassification.from_pretrained(name, num_labels=2)
rss_loaded = vm("VmRSS")


class Timer(TrainerCallback):
    def __init__(self):
        self.stamps, self.tokens = [], 0

    def on_step_end(self, args, state, control, **kw):
        self.stamps.append(time.perf_counter())


timer = Timer()
with tempfile.TemporaryDirectory() as out:
    kw = dict(output_dir=out, max_steps=steps, per_device_train_batch_size=16, learning_rate=1e-4, weight_decay=0.01,
              eval_strategy="no", save_strategy="no", logging_steps=steps, report_to="none", disable_tqdm=True,
              bf16=(precision == "bf16"), dataloader_pin_memory=False, use_cpu=True, seed=42)
    if optim != "default":
        kw["optim"] = optim
    args = TrainingArguments(**kw)
    trainer = Trainer(model=model, args=args, train_dataset=tokenized["train"], data_collator=collator,
                      callbacks=[timer])
    # count the padded tokens of the batches each side trains on (the same batches, in the same order: both
    # samplers are randperm seeded with seed + epoch; accelerate's loader collates one batch ahead, left out)
    inner = trainer.data_collator
    seen = []
    def counting(features):
        batch = inner(features)
        seen.append(tuple(batch["input_ids"].shape))
        return batch
    trainer.data_collator = counting
    t0 = time.perf_counter()
    result = trainer.train()
    train_s = time.perf_counter() - t0
    opt = trainer.optimizer
    opt = getattr(opt, "optimizer", opt)  # accelerate wraps it
    d = opt.defaults
    optim_used = f"{type(opt).__name__}(fused={d.get('fused')}, foreach={d.get('foreach')})"

s = timer.stamps
timed = len(s) - 1 - warmup
print("RESULT " + json.dumps({
    "steps": len(s), "steps_per_s": timed / (s[-1] - s[warmup]) if timed > 0 else float("nan"),
    "train_s": train_s, "whole_steps_per_s": len(s) / train_s, "peak_rss_mb": vm("VmHWM"), "loaded_rss_mb": rss_loaded,
    "train_loss": float(result.training_loss), "tokens": sum(a * b for a, b in seen[:steps]), "optim": optim_used,
    "total_s": time.perf_counter() - t_start,
}))
"""

LIBS = ("openformers", "transformers")


def run_child(lib: str, precision: str, opts: argparse.Namespace) -> dict:
    cmd = [sys.executable, "-c", CHILD, lib, precision, str(opts.steps), str(opts.warmup), opts.padding, opts.optim,
           str(opts.threads or 0), str(DATA)]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=str(ROOT))
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"{lib} {precision} run failed (exit {proc.returncode}):\n{proc.stderr[-4000:]}")
    return json.loads(lines[-1][len("RESULT "):])


def median(runs: list[dict], key: str) -> float:
    return statistics.median(r[key] for r in runs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--warmup", type=int, default=2, help="steps left out of the steps/s timing")
    parser.add_argument("--padding", choices=("dynamic", "max_length"), default="dynamic")
    parser.add_argument("--precisions", default="fp32,bf16")
    parser.add_argument("--optim", default="default", help="default (each library's own), adamw_torch, adamw_torch_fused")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--json", default=None, help="also write the results here")
    opts = parser.parse_args()
    if opts.steps <= opts.warmup + 1:
        parser.error("--steps must exceed --warmup + 1")

    report: dict[str, object] = {"steps": opts.steps, "rounds": opts.rounds, "padding": opts.padding, "optim": opts.optim}
    rows = []
    for precision in opts.precisions.split(","):
        runs: dict[str, list[dict]] = {lib: [] for lib in LIBS}
        for r in range(opts.rounds):
            order = LIBS if r % 2 == 0 else LIBS[::-1]  # alternate who goes first
            for lib in order:
                res = run_child(lib, precision, opts)
                runs[lib].append(res)
                print(f"  [{precision} round {r + 1}] {lib:12s} {res['steps_per_s']:.3f} steps/s  "
                      f"peak {res['peak_rss_mb']:.0f} MB  loss {res['train_loss']:.4f}  tokens {res['tokens']}  {res['optim']}",
                      flush=True)
        summary = {lib: {k: median(v, k) for k in ("steps_per_s", "whole_steps_per_s", "peak_rss_mb", "loaded_rss_mb",
                                                    "train_loss", "tokens")} | {"optim": v[0]["optim"]}
                   for lib, v in runs.items()}
        ours, theirs = summary["openformers"], summary["transformers"]
        summary["speed_ratio"] = ours["steps_per_s"] / theirs["steps_per_s"]
        summary["whole_speed_ratio"] = ours["whole_steps_per_s"] / theirs["whole_steps_per_s"]
        summary["memory_ratio"] = ours["peak_rss_mb"] / theirs["peak_rss_mb"]
        report[precision] = {"summary": summary, "runs": runs}
        rows.append((precision, ours, theirs, summary))

    print(f"\nMiniLM fine-tune, batch 16, {opts.steps} steps, padding={opts.padding}, optim={opts.optim}, "
          f"median of {opts.rounds} rounds (steps/s after {opts.warmup} warm-up steps)")
    print(f"{'precision':9s} {'library':12s} {'steps/s':>8s} {'whole':>7s} {'peak MB':>8s} {'loaded MB':>9s} {'loss':>7s}")
    for precision, ours, theirs, summary in rows:
        for lib, s in (("openformers", ours), ("transformers", theirs)):
            print(f"{precision:9s} {lib:12s} {s['steps_per_s']:8.3f} {s['whole_steps_per_s']:7.3f} {s['peak_rss_mb']:8.0f} "
                  f"{s['loaded_rss_mb']:9.0f} {s['train_loss']:7.4f}")
        print(f"{precision:9s} {'ratio':12s} speed x{summary['speed_ratio']:.2f} (target >= 1.2; whole train() "
              f"x{summary['whole_speed_ratio']:.2f}), peak memory x{summary['memory_ratio']:.2f} (target <= 1.0)")
    if opts.json:
        Path(opts.json).write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
