"""Tiny models and data for trainer tests (importable by subprocess scripts too)."""
from __future__ import annotations

import torch


def tiny_gpt2(dropout: float = 0.0, seed: int = 0):
    from openformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(seed)
    cfg = GPT2Config(vocab_size=64, n_positions=32, n_embd=32, n_layer=2, n_head=4, resid_pdrop=dropout,
                     embd_pdrop=dropout, attn_pdrop=dropout, pad_token_id=0)
    return GPT2LMHeadModel(cfg)


def ragged_lm_data(n: int = 32, seed: int = 0) -> list[dict[str, list[int]]]:
    """Sequences of different lengths (3..12 tokens)."""
    g = torch.Generator().manual_seed(seed)
    rows = []
    for _ in range(n):
        length = int(torch.randint(3, 13, (1,), generator=g))
        ids = torch.randint(1, 64, (length,), generator=g).tolist()
        rows.append({"input_ids": ids, "labels": list(ids)})
    return rows


def pad_collator(features: list[dict]) -> dict[str, torch.Tensor]:
    """Right-pad input_ids with 0 and labels with -100."""
    length = max(len(f["input_ids"]) for f in features)
    ids = torch.zeros(len(features), length, dtype=torch.long)
    labels = torch.full((len(features), length), -100, dtype=torch.long)
    mask = torch.zeros(len(features), length, dtype=torch.long)
    for i, f in enumerate(features):
        n = len(f["input_ids"])
        ids[i, :n] = torch.tensor(f["input_ids"])
        labels[i, :n] = torch.tensor(f["labels"])
        mask[i, :n] = 1
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


def params(model) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def train_tiny_with_eval(tmp_path, **kw):
    """A 4-step tiny GPT-2 run logging every step and evaluating every 2 (``kw``: more TrainingArguments);
    the trainer, trained, for reporting tests to read back."""
    from openformers import Trainer, TrainingArguments

    args = TrainingArguments(str(tmp_path / "out"), max_steps=4, per_device_train_batch_size=4, logging_steps=1,
                             save_strategy="no", eval_strategy="steps", eval_steps=2, disable_tqdm=True, **kw)
    data = ragged_lm_data(12)
    trainer = Trainer(model=tiny_gpt2(), args=args, train_dataset=data, eval_dataset=data[:4], data_collator=pad_collator)
    trainer.train()
    return trainer
