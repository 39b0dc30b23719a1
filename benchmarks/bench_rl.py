"""Post-training benchmark: openformers.rl against TRL, side by side, on the same data and LoRA.

Both libraries train the embedded SmolLM2-135M (dequantized from the GGUF and saved once as
safetensors, so both load the same float32 weights) with a rank-8 LoRA on q/k/v/o (alpha 16,
no dropout), AdamW lr 1e-4, no gradient checkpointing, on the shipped instruction set
(examples/data/instructions.jsonl) through each library's own trainer:
- ``sft``: conversations, assistant-only loss, max_length 128, batch 8: tokens/s (tokens in the batches);
- ``sft_packed``: the same with ``packing=True`` (padding-free rows, documents kept apart): tokens/s;
- ``dpo``: prompt/chosen/rejected conversations, batch 4, the reference = the adapter disabled: steps/s;
- ``grpo``: 8 completions of 32 tokens per prompt, 2 prompts per step, sampling at temperature 1: completions/s.
Each (library, task) runs in a fresh subprocess, after ``--warmup`` steps, timed over ``--steps``
steps from the trainer's ``on_step_end`` callback; peak memory is the process's VmHWM (loading
included). The ratio is openformers / TRL (speed: higher is better; memory: lower is better).

Run: ``python benchmarks/bench_rl.py [--tasks sft,sft_packed,dpo,grpo] [--steps 4] [--warmup 1] [--json out.json]``
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent

CHILD = r"""
import json, sys, time, warnings
warnings.filterwarnings("ignore")
lib, task, weights, steps, warmup = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5])
sys.path.insert(0, sys.argv[6])
import torch
torch.manual_seed(0)
rows = [json.loads(l) for l in open(sys.argv[6] + "/examples/data/instructions.jsonl") if l.strip()]
convs = [{"messages": [{"role": "user", "content": r["instruction"]}, {"role": "assistant", "content": r["response"]}]} for r in rows]
pairs = [{"prompt": [{"role": "user", "content": r["instruction"]}], "chosen": [{"role": "assistant", "content": r["response"]}],
          "rejected": [{"role": "assistant", "content": r["response"].replace("RESULT: ", "").replace(" [END]", "")}]} for r in rows]
prompts = [{"prompt": [{"role": "user", "content": r["instruction"]}]} for r in rows]
total = steps + warmup
lora = dict(r=8, lora_alpha=16, lora_dropout=0.0, target_modules=["q_proj", "k_proj", "v_proj", "o_proj"], task_type="CAUSAL_LM")
common = dict(max_steps=total, learning_rate=1e-4, logging_steps=1000, save_strategy="no", gradient_checkpointing=False,
              report_to="none", disable_tqdm=True, seed=0, lr_scheduler_type="constant")
def reward(completions, **kw):
    return [float("RESULT" in (c[0]["content"] if isinstance(c, list) else c)) for c in completions]
if lib == "openformers":
    from openformers import AutoModelForCausalLM, AutoTokenizer
    from openformers.peft import LoraConfig
    from openformers.training.callbacks import TrainerCallback
    import openformers.rl as rl
    model = AutoModelForCausalLM.from_pretrained(weights)
    tok = AutoTokenizer.from_pretrained(weights)
    extra = {}
    data = lambda d: d
else:
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
    from peft import LoraConfig
    import trl as rl
    from datasets import Dataset
    model = AutoModelForCausalLM.from_pretrained(weights, dtype=torch.float32)
    tok = AutoTokenizer.from_pretrained(weights)
    extra = dict(use_cpu=True, bf16=False)
    data = Dataset.from_list
if tok.pad_token is None:
    tok.pad_token = tok.eos_token
tokens = [0]
marks = []
class Clock(TrainerCallback):
    def on_step_end(self, args, state, control, **kw):
        marks.append((time.perf_counter(), tokens[0]))
out = "/tmp/bench_rl_" + lib
if task in ("sft", "sft_packed"):
    args = rl.SFTConfig(out, per_device_train_batch_size=8, max_length=128, assistant_only_loss=True,
                        packing=task == "sft_packed", **common, **extra)
    if lib != "openformers":  # TRL finds assistant turns from {% generation %} marks only
        tok.chat_template = ("{% for message in messages %}{% if message['role'] == 'assistant' %}{{ '<|im_start|>assistant\n' }}"
                             "{% generation %}{{ message['content'] + '<|im_end|>\n' }}{% endgeneration %}{% else %}"
                             "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>\n' }}{% endif %}{% endfor %}"
                             "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}")
    trainer = rl.SFTTrainer(model, args=args, train_dataset=data(convs), processing_class=tok, peft_config=LoraConfig(**lora))
elif task == "dpo":
    args = rl.DPOConfig(out, per_device_train_batch_size=4, max_length=128, **common, **extra)
    trainer = rl.DPOTrainer(model, args=args, train_dataset=data(pairs), processing_class=tok, peft_config=LoraConfig(**lora))
elif task == "grpo":
    args = rl.GRPOConfig(out, per_device_train_batch_size=16, num_generations=8, max_completion_length=32, temperature=1.0,
                         beta=0.0, **common, **extra)
    trainer = rl.GRPOTrainer(model, reward_funcs=reward, args=args, train_dataset=data(prompts), processing_class=tok,
                             peft_config=LoraConfig(**lora))
collate = trainer.data_collator
def counting(features, *a, **k):
    batch = collate(features, *a, **k)
    if isinstance(batch, dict) and "input_ids" in batch:
        m = batch.get("attention_mask")
        tokens[0] += int(m.sum()) if m is not None else int(batch["input_ids"].numel())
    return batch
trainer.data_collator = counting
trainer.add_callback(Clock())
trainer.train()
(t0, k0), (t1, k1) = marks[warmup - 1], marks[-1]
seconds = t1 - t0
def hwm():
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM"):
            return int(line.split()[1]) / 1024
result = {"seconds": seconds, "steps_per_s": steps / seconds, "tokens_per_s": (k1 - k0) / seconds,
          "completions_per_s": steps * 16 / seconds if task == "grpo" else None, "peak_mb": hwm()}
print("RESULT " + json.dumps(result))
"""

METRIC = {"sft": "tokens_per_s", "sft_packed": "tokens_per_s", "dpo": "steps_per_s", "grpo": "completions_per_s"}


def prepare_weights(directory: Path) -> Path:
    sys.path.insert(0, str(ROOT))
    from openformers import AutoModelForCausalLM, AutoTokenizer

    target = directory / "smollm2"
    if not (target / "model.safetensors").is_file():
        AutoModelForCausalLM.from_pretrained("smollm2").save_pretrained(target)
        AutoTokenizer.from_pretrained("smollm2").save_pretrained(target)
    return target


def run_child(lib: str, task: str, weights: Path, steps: int, warmup: int) -> dict[str, Any]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, "-c", CHILD, lib, task, str(weights), str(steps), str(warmup), str(ROOT)],
                          capture_output=True, text=True, env=env, timeout=3600)
    for line in proc.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[7:])
    raise RuntimeError(f"{lib} {task} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}")


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", default="sft,sft_packed,dpo,grpo")
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--json", default=None)
    ns = parser.parse_args(argv)
    weights = prepare_weights(Path(tempfile.gettempdir()) / "openformers-bench-rl")
    report: dict[str, Any] = {"loadavg_before": open("/proc/loadavg").read().split()[:3]}
    for task in ns.tasks.split(","):
        ours = run_child("openformers", task, weights, ns.steps, ns.warmup)
        theirs = run_child("trl", task, weights, ns.steps, ns.warmup)
        metric = METRIC[task]
        report[task] = {"openformers": ours, "trl": theirs, "metric": metric,
                        "speed_ratio": ours[metric] / theirs[metric], "peak_memory_ratio": ours["peak_mb"] / theirs["peak_mb"]}
        print(f"{task:11s} {metric}: openformers {ours[metric]:.2f}  trl {theirs[metric]:.2f}  ratio "
              f"{report[task]['speed_ratio']:.2f}x   peak MB: {ours['peak_mb']:.0f} vs {theirs['peak_mb']:.0f} "
              f"({report[task]['peak_memory_ratio']:.2f}x)", flush=True)
    report["loadavg_after"] = open("/proc/loadavg").read().split()[:3]
    print(f"load average before {report['loadavg_before']} after {report['loadavg_after']}")
    if ns.json:
        Path(ns.json).write_text(json.dumps(report, indent=2))
    return report


if __name__ == "__main__":
    main()
