"""Post-training the embedded SmolLM2-135M-Instruct with LoRA: SFT, reward model, DPO, GRPO and PPO.

    python examples/rl_smollm2.py [--only sft,reward,dpo,grpo,ppo] [--quantized] [--steps-scale 1.0]

Each section prints its logged curve (one value per step). The data are the shipped instruction
set (examples/data/instructions.jsonl: answers of the form ``RESULT: <answer> [END]``):
- SFT on conversations (assistant turns only), then the share of held-out prompts answered in format;
- a reward model on pairs (formatted answer chosen, bare answer rejected), accuracy on held-out pairs;
- DPO on the same pairs (reference: the model with its adapter disabled);
- GRPO and PPO with a rule-based reward: 1 when the answer contains the word "RESULT".
``--quantized`` keeps the GGUF weights 4-bit (LoRA on the quantized model). Only the imports differ
from a TRL script.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from openformers import AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer
from openformers.peft import LoraConfig
from openformers.rl import (
    DPOConfig,
    DPOTrainer,
    GRPOConfig,
    GRPOTrainer,
    PPOConfig,
    PPOTrainer,
    RewardConfig,
    RewardTrainer,
    SFTConfig,
    SFTTrainer,
)

DATA = Path(__file__).parent / "data" / "instructions.jsonl"
LORA = dict(r=8, lora_alpha=16, lora_dropout=0.0, target_modules=["q_proj", "k_proj", "v_proj", "o_proj"])


def rows() -> list[dict[str, str]]:
    return [json.loads(line) for line in DATA.read_text().splitlines() if line.strip()]


def load(quantized: bool, classifier: bool = False):
    kwargs = {}
    if quantized:
        from openformers.quantization import GGUFQuantizationConfig

        kwargs["quantization_config"] = GGUFQuantizationConfig()
    if classifier:
        return AutoModelForSequenceClassification.from_pretrained("smollm2", num_labels=1, **kwargs)
    return AutoModelForCausalLM.from_pretrained("smollm2", **kwargs)


def curve(trainer, key: str) -> list[float]:
    return [round(h[key], 4) for h in trainer.state.log_history if key in h and "train_runtime" not in h]


def common(out: str, steps: int, **kw):
    return dict(output_dir=out, max_steps=steps, logging_steps=1, save_strategy="no", disable_tqdm=True,
                gradient_checkpointing=False, seed=0, **kw)


def bare(response: str) -> str:
    return response.replace("RESULT: ", "").replace(" [END]", "")


def in_format(text: str) -> bool:
    return "RESULT" in text


@torch.no_grad()
def format_share(model, tok, prompts: list[str]) -> float:
    model.eval()
    hits = 0
    for p in prompts:
        ids = tok.apply_chat_template([{"role": "user", "content": p}], add_generation_prompt=True, return_tensors="pt")
        out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=12, do_sample=False)
        hits += in_format(tok.decode(out[0, ids.shape[1]:], skip_special_tokens=True))
    return hits / len(prompts)


def sft(tok, quantized: bool, scale: float) -> None:
    data = rows()
    held, train = data[:12], data[12:]
    convs = [{"messages": [{"role": "user", "content": r["instruction"]}, {"role": "assistant", "content": r["response"]}]}
             for r in train]
    model = load(quantized)
    trainer = SFTTrainer(model, args=SFTConfig(**common("out/sft", int(30 * scale), per_device_train_batch_size=8,
                                                        learning_rate=2e-3, assistant_only_loss=True, max_length=96)),
                         train_dataset=convs, processing_class=tok, peft_config=LoraConfig(**LORA))
    prompts = [r["instruction"] for r in held]
    before = format_share(trainer.model, tok, prompts)
    trainer.train()
    after = format_share(trainer.model, tok, prompts)
    print(f"SFT loss: {curve(trainer, 'loss')}")
    print(f"SFT held-out answers in the trained format: {before:.2f} before, {after:.2f} after")


def pairs(data):
    return [{"prompt": [{"role": "user", "content": r["instruction"]}],
             "chosen": [{"role": "assistant", "content": r["response"]}],
             "rejected": [{"role": "assistant", "content": bare(r["response"])}]} for r in data]


def reward(tok, quantized: bool, scale: float) -> None:
    data = rows()
    model = load(quantized, classifier=True)
    lora = LoraConfig(task_type="SEQ_CLS", **LORA)
    trainer = RewardTrainer(model, args=RewardConfig(**common("out/reward", int(30 * scale), per_device_train_batch_size=8,
                                                              learning_rate=1e-3, max_length=128)),
                            train_dataset=pairs(data[24:]), eval_dataset=pairs(data[:24]), processing_class=tok,
                            peft_config=lora)
    before = trainer.evaluate()["eval_accuracy"]
    trainer.train()
    after = trainer.evaluate()["eval_accuracy"]
    print(f"Reward loss: {curve(trainer, 'loss')}")
    print(f"Reward held-out accuracy: {before:.3f} before, {after:.3f} after (24 pairs)")


def dpo(tok, quantized: bool, scale: float) -> None:
    data = rows()
    trainer = DPOTrainer(load(quantized), args=DPOConfig(**common("out/dpo", int(20 * scale), per_device_train_batch_size=8,
                                                                  learning_rate=1e-3, beta=0.1, max_length=128)),
                         train_dataset=pairs(data[12:]), processing_class=tok, peft_config=LoraConfig(**LORA))
    trainer.train()
    print(f"DPO loss: {curve(trainer, 'loss')}")
    print(f"DPO rewards/margins: {curve(trainer, 'rewards/margins')}")
    print(f"DPO rewards/accuracies: {curve(trainer, 'rewards/accuracies')}")


def result_reward(completions, **_):
    texts = [c[0]["content"] if isinstance(c, list) else c for c in completions]
    return [1.0 if in_format(t) else 0.0 for t in texts]


def grpo(tok, quantized: bool, scale: float) -> None:
    data = [{"prompt": [{"role": "user", "content": r["instruction"] + " Start your answer with RESULT."}]}
            for r in rows()]
    args = GRPOConfig(**common("out/grpo", int(15 * scale), per_device_train_batch_size=16, num_generations=8,
                               max_completion_length=16, learning_rate=5e-4, beta=0.04))
    trainer = GRPOTrainer(load(quantized), reward_funcs=result_reward, args=args, train_dataset=data,
                          processing_class=tok, peft_config=LoraConfig(**LORA))
    start = time.time()
    trainer.train()
    print(f"GRPO reward: {curve(trainer, 'reward')}")
    print(f"GRPO kl: {curve(trainer, 'kl')}")
    print(f"GRPO {time.time() - start:.0f} s")


def ppo(tok, quantized: bool, scale: float) -> None:
    from openformers.peft import get_peft_model

    model = get_peft_model(load(quantized), LoraConfig(**LORA))
    config = PPOConfig(batch_size=16, mini_batch_size=8, ppo_epochs=2, learning_rate=5e-4, init_kl_coef=0.05,
                       output_dir="out/ppo")
    trainer = PPOTrainer(config, model, None, tok)  # the reference: the adapter disabled
    prompts = [r["instruction"] + " Start your answer with RESULT." for r in rows()]
    queries = [tok.apply_chat_template([{"role": "user", "content": p}], add_generation_prompt=True, return_tensors="pt")[0]
               for p in prompts]
    scores_seen, kls = [], []
    for step in range(int(12 * scale)):
        batch = queries[(step * 16) % len(queries):][:16]
        if len(batch) < 16:
            batch = queries[:16]
        responses = trainer.generate(batch, return_prompt=False, max_new_tokens=16, do_sample=True, top_k=0,
                                     batch_size=16)
        texts = tok.batch_decode(responses, skip_special_tokens=True)
        stats = trainer.step(batch, responses, result_reward(texts))
        scores_seen.append(round(stats["ppo/mean_scores"], 3))
        kls.append(round(stats["objective/kl"], 3))
    print(f"PPO mean scores: {scores_seen}")
    print(f"PPO objective/kl: {kls}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default="sft,reward,dpo,grpo,ppo")
    parser.add_argument("--quantized", action="store_true", help="keep the GGUF weights 4-bit")
    parser.add_argument("--steps-scale", type=float, default=1.0)
    args = parser.parse_args()
    torch.manual_seed(0)
    tok = AutoTokenizer.from_pretrained("smollm2")
    for name in args.only.split(","):
        start = time.time()
        globals()[name](tok, args.quantized, args.steps_scale)
        print(f"[{name}: {time.time() - start:.0f} s]", flush=True)


if __name__ == "__main__":
    main()
