"""A fused Adam/AdamW step marks the parameters as changed, so inference copies of the weights
(packed weights, decode plans) are rebuilt: generating after training runs the trained weights."""
from __future__ import annotations

import torch

from openformers.training.arguments import TrainingArguments
from openformers.training.optim import create_optimizer


def test_fused_step_bumps_parameter_versions():
    model = torch.nn.Linear(4, 4)
    opt = create_optimizer(model, TrainingArguments("out").optimizer)
    assert opt.defaults.get("fused")
    model(torch.randn(2, 4)).sum().backward()
    before = [p._version for p in model.parameters()]
    opt.step()
    assert all(p._version > v for p, v in zip(model.parameters(), before))


def test_batched_generation_follows_trained_weights():
    from openformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                         num_attention_heads=4, num_key_value_heads=2, pad_token_id=0))
    q = torch.randint(1, 64, (4, 3))
    model.eval()
    with torch.no_grad():  # builds the inference copies for a batch of 4
        model.generate(input_ids=q, attention_mask=torch.ones_like(q), do_sample=False, max_new_tokens=4)
    opt = create_optimizer(model, TrainingArguments("out", learning_rate=0.05).optimizer)
    model.train()
    for _ in range(3):
        model(q, labels=torch.full_like(q, 5)).loss.backward()
        opt.step()
        opt.zero_grad()
    model.eval()
    with torch.no_grad():
        out = model.generate(input_ids=q, attention_mask=torch.ones_like(q), do_sample=False, max_new_tokens=4)
        greedy = model(out).logits[:, 2:-1].argmax(-1)
    assert torch.equal(out[:, 3:], greedy)
