"""Inputs that would make generate() run unbounded or fail part-way: refused before any work."""
from __future__ import annotations

import time

import pytest
import torch


@pytest.fixture(scope="module")
def gpt2():
    from openformers.models.gpt2 import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    return GPT2LMHeadModel(GPT2Config(vocab_size=64, n_embd=16, n_layer=1, n_head=2, n_positions=32)).eval()


@pytest.fixture(scope="module")
def llama():
    from openformers.models.llama import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                      num_key_value_heads=1, max_position_embeddings=64)
    return LlamaForCausalLM(cfg).eval()


def test_prompt_longer_than_the_context_is_refused_before_work(llama, monkeypatch):
    calls = []
    monkeypatch.setattr(llama, "forward", lambda *a, **k: calls.append(1))
    ids = torch.randint(0, 64, (1, 5000))
    start = time.perf_counter()
    with pytest.raises(ValueError, match=r"the prompt has 5000 tokens but the model reads at most 64 positions.*truncation=True"):
        llama.generate(ids, max_new_tokens=5)
    assert calls == [] and time.perf_counter() - start < 2


def test_gpt2_prompt_plus_new_tokens_past_its_positions_is_refused(gpt2):
    with pytest.raises(ValueError, match=r"the prompt \(30 tokens\) plus the tokens to generate \(10\) exceed the 32"):
        gpt2.generate(torch.randint(0, 64, (1, 30)), max_new_tokens=10)
    with pytest.raises(ValueError, match="the prompt has 40 tokens"):
        gpt2.generate(torch.randint(0, 64, (1, 40)), max_new_tokens=1)
    out = gpt2.generate(torch.randint(0, 64, (1, 30)), max_new_tokens=2, do_sample=False)
    assert out.shape == (1, 32)


def test_rotary_model_may_generate_past_its_positions_from_a_short_prompt(llama):
    out = llama.generate(torch.randint(0, 64, (1, 60)), max_new_tokens=8, do_sample=False)
    assert out.shape == (1, 68)


@pytest.mark.parametrize("bad", [64, 1000, -1])
def test_token_ids_outside_the_vocabulary_are_refused(gpt2, bad):
    ids = torch.tensor([[1, 2, bad]])
    with pytest.raises(ValueError, match=f"token id {bad}, outside the model's vocabulary of 64"):
        gpt2.generate(ids, max_new_tokens=2)


def test_empty_batch_is_refused(gpt2):
    with pytest.raises(ValueError, match="batch size 0"):
        gpt2.generate(torch.zeros((0, 4), dtype=torch.long), max_new_tokens=2)


# -- adapter target_modules: regular expressions that match in bounded time ------------------------
@pytest.mark.parametrize("pattern", [r"(a+)+$", r"(.*\.)*q_proj", r"(q|q)*_proj", r"((\w+)\.?)*"])
def test_catastrophic_target_modules_regex_is_refused(pattern):
    from openformers.peft import LoraConfig

    with pytest.raises(ValueError, match="exponential time"):
        LoraConfig(target_modules=pattern)


def test_catastrophic_pattern_in_an_adapter_file_is_refused(tmp_path):
    import json

    from openformers.peft.config import PeftConfig

    (tmp_path / "adapter_config.json").write_text(json.dumps(
        {"peft_type": "LORA", "r": 4, "target_modules": "(x+x+)+y", "rank_pattern": {}}))
    start = time.perf_counter()
    with pytest.raises(ValueError, match="exponential time"):
        PeftConfig.from_pretrained(tmp_path)
    assert time.perf_counter() - start < 2


@pytest.mark.parametrize("pattern", [r".*\.(q_proj|v_proj)", r"model\.layers\.\d+\.self_attn\.(q|v)_proj", "q_proj",
                                     r"^(?!.*lm_head).*proj"])
def test_ordinary_target_modules_regexes_are_kept(pattern):
    from openformers.peft import LoraConfig

    assert LoraConfig(target_modules=pattern).target_modules == pattern


def test_rank_pattern_keys_are_checked():
    from openformers.peft import LoraConfig

    with pytest.raises(ValueError, match="rank_pattern key"):
        LoraConfig(target_modules=["q_proj"], rank_pattern={"(a*)*": 4})
