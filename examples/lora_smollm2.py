"""LoRA fine-tune of the embedded SmolLM2-135M on the shipped instruction set.

    python examples/lora_smollm2.py [--steps 60] [--batch-size 8] [--max-length 48] [--output-dir DIR] [--n-generate 8]

Every response in examples/data/instructions.jsonl has the form ``RESULT: <answer> [END]``.
The script trains a rank-8 LoRA on the attention projections (loss on response tokens only),
saves only the adapter, reloads it onto a fresh base model and reports: the loss before and
after, the adapter size, and how many held-out prompts the tuned model answers in the trained
format (against the base model). Only the imports differ from a transformers + peft script.
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from openformers import AutoModelForCausalLM, AutoTokenizer, DataCollatorForSeq2Seq, Trainer, TrainingArguments
from openformers.peft import LoraConfig, PeftModel, get_peft_model

DATA = Path(__file__).parent / "data" / "instructions.jsonl"
PROMPT = "### Instruction:\n{instruction}\n### Response:\n"


def load_rows(path: Path = DATA) -> list[dict[str, str]]:
    if not path.is_file():
        from importlib import util

        spec = util.spec_from_file_location("build_instructions", path.parent / "build_instructions.py")
        module = util.module_from_spec(spec)
        spec.loader.exec_module(module)  # type: ignore[union-attr]
        module.build(path)
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def encode(tokenizer: Any, row: dict[str, str], max_length: int) -> dict[str, list[int]]:
    """Prompt + response + EOS; labels cover the response only."""
    prompt = tokenizer(PROMPT.format(instruction=row["instruction"]))["input_ids"]
    answer = tokenizer(row["response"])["input_ids"] + [tokenizer.eos_token_id]
    ids = (prompt + answer)[:max_length]
    labels = ([-100] * len(prompt) + answer)[:max_length]
    return {"input_ids": ids, "labels": labels}


@torch.no_grad()
def mean_loss(model: Any, features: list[dict[str, list[int]]], collator: Any, batch_size: int = 8) -> float:
    model.eval()
    total, count = 0.0, 0
    for i in range(0, len(features), batch_size):
        batch = collator(features[i : i + batch_size])
        n = int((batch["labels"][:, 1:] != -100).sum())
        total += float(model(**batch).loss) * n
        count += n
    return total / count


@torch.no_grad()
def answers(model: Any, tokenizer: Any, rows: list[dict[str, str]], max_new_tokens: int = 12) -> list[str]:
    model.eval()
    out = []
    for row in rows:
        enc = tokenizer(PROMPT.format(instruction=row["instruction"]), return_tensors="pt")
        gen = model.generate(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"],
                             max_new_tokens=max_new_tokens, do_sample=False)
        out.append(tokenizer.decode(gen[0, enc["input_ids"].shape[1]:], skip_special_tokens=True))
    return out


def in_format(text: str) -> bool:
    return text.strip().startswith("RESULT: ")


def run(steps: int = 60, batch_size: int = 8, max_length: int = 48, learning_rate: float = 2e-3,
        output_dir: str | Path | None = None, n_eval: int = 16, n_generate: int = 8, seed: int = 0,
        evaluate_generation: bool = True) -> dict[str, Any]:
    """Train, save, reload and measure; returns the figures the script prints."""
    torch.manual_seed(seed)
    output_dir = Path(output_dir or tempfile.mkdtemp(prefix="openformers-lora-"))
    tokenizer = AutoTokenizer.from_pretrained("smollm2")
    rows = load_rows()
    held_out, train_rows = rows[:n_eval], rows[n_eval:]
    train = [encode(tokenizer, r, max_length) for r in train_rows]
    evaluation = [encode(tokenizer, r, max_length) for r in held_out]
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    collator = DataCollatorForSeq2Seq(tokenizer)  # pads input_ids, attention_mask and labels (-100)

    base = AutoModelForCausalLM.from_pretrained("smollm2")
    config = LoraConfig(r=8, lora_alpha=16, lora_dropout=0.05, task_type="CAUSAL_LM",
                        target_modules=["q_proj", "k_proj", "v_proj", "o_proj"])
    model = get_peft_model(base, config)
    model.print_trainable_parameters()
    loss_before = mean_loss(model, evaluation, collator)
    base_answers = answers(model.get_base_model(), tokenizer, held_out[:n_generate]) if evaluate_generation else []

    args = TrainingArguments(str(output_dir / "run"), max_steps=steps, per_device_train_batch_size=batch_size,
                             learning_rate=learning_rate, warmup_steps=max(1, steps // 10), lr_scheduler_type="linear",
                             logging_steps=max(1, steps // 10), save_strategy="no", report_to="none", disable_tqdm=True,
                             seed=seed)
    trainer = Trainer(model=model, args=args, train_dataset=train, data_collator=collator)
    start = time.perf_counter()
    trainer.train()
    seconds = time.perf_counter() - start
    train_losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    loss_after = mean_loss(model, evaluation, collator)

    adapter_dir = output_dir / "adapter"
    model.save_pretrained(adapter_dir)
    adapter_bytes = sum(p.stat().st_size for p in adapter_dir.iterdir())
    result: dict[str, Any] = {
        "steps": steps, "train_seconds": round(seconds, 1), "tokens_per_second": round(
            sum(len(f["input_ids"]) for f in train[: steps * batch_size]) / seconds, 1) if steps * batch_size <= len(train) else None,
        "first_logged_train_loss": train_losses[0] if train_losses else None,
        "last_logged_train_loss": train_losses[-1] if train_losses else None,
        "eval_loss_before": round(loss_before, 4), "eval_loss_after": round(loss_after, 4),
        "adapter_bytes": adapter_bytes, "adapter_dir": str(adapter_dir),
    }
    if evaluate_generation:
        tuned = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained("smollm2"), adapter_dir)
        tuned_answers = answers(tuned, tokenizer, held_out[:n_generate])
        result["base_in_format"] = sum(map(in_format, base_answers))
        result["tuned_in_format"] = sum(map(in_format, tuned_answers))
        result["tuned_exact"] = sum(a.strip().startswith(r["response"]) for a, r in zip(tuned_answers, held_out))
        result["examples"] = [
            {"instruction": r["instruction"], "base": b.strip(), "tuned": t.strip()}
            for r, b, t in zip(held_out[:n_generate], base_answers, tuned_answers)
        ]
    return result


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--max-length", type=int, default=48)
    parser.add_argument("--learning-rate", type=float, default=2e-3)
    parser.add_argument("--output-dir", default=None,
                        help="where the run and the adapter go (default: a new temporary folder)")
    parser.add_argument("--n-generate", type=int, default=8, help="held-out prompts answered by base and tuned model")
    ns = parser.parse_args(argv)
    output_dir = ns.output_dir or tempfile.mkdtemp(prefix="openformers-lora-")  # never into the repository
    result = run(ns.steps, ns.batch_size, ns.max_length, ns.learning_rate, output_dir, n_generate=ns.n_generate)
    print(f"adapter saved to {Path(output_dir) / 'adapter'}")
    for ex in result.pop("examples", []):
        print(f"- {ex['instruction']}\n    base:  {ex['base']!r}\n    tuned: {ex['tuned']!r}")
    print(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
