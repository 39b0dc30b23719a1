"""Losses of the post-training trainers against TRL's (the pinned ``trl`` package) on the same batch
and the same weights: a tiny random Llama built with transformers, loaded here from its files."""
from __future__ import annotations

import copy
import warnings

import pytest
import torch

from tests.rl.helpers import tokenizer, tokenizer_dir

trl = pytest.importorskip("trl")
transformers = pytest.importorskip("transformers")
datasets = pytest.importorskip("datasets")

CONFIG = dict(vocab_size=49152, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
              num_key_value_heads=2, max_position_embeddings=256, tie_word_embeddings=True, pad_token_id=2,
              bos_token_id=1, eos_token_id=2)
TOL = dict(rtol=1e-6, atol=1e-6)


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """(transformers model, our model, transformers tokenizer, our tokenizer) with the same weights."""
    from openformers import AutoModelForCausalLM

    torch.manual_seed(0)
    hf = transformers.LlamaForCausalLM(transformers.LlamaConfig(**CONFIG))
    path = tmp_path_factory.mktemp("llama")
    hf.save_pretrained(path)
    hf.config._name_or_path = str(path)  # TRL loads its reference model (beta != 0) from this path
    ours = AutoModelForCausalLM.from_pretrained(path)
    htok = transformers.AutoTokenizer.from_pretrained(tokenizer_dir())
    return hf, ours, htok, tokenizer()


def _trl_args(cls, tmp_path, **kw):
    return cls(str(tmp_path / "trl"), per_device_train_batch_size=4, report_to="none", use_cpu=True, bf16=False,
               gradient_checkpointing=False, **kw)


def _our_args(cls, tmp_path, **kw):
    return cls(str(tmp_path / "ours"), per_device_train_batch_size=4, gradient_checkpointing=False, **kw)


def _first_trl_batch(trainer):
    return next(iter(trainer.get_train_dataloader()))


PC = [{"prompt": f"Question {i}: what does the cat say?", "completion": f" It says meow{'!' * i}"} for i in range(4)]
CHAT = [{"messages": [{"role": "user", "content": f"Hi {i}"}, {"role": "assistant", "content": f"Hello there {i}"},
                      {"role": "user", "content": "And then?"}, {"role": "assistant", "content": "Then" + " more" * i}]}
        for i in range(4)]
# the same template with TRL's generation marks (TRL needs them; ours finds the turns from the rendering)
MARKED = ("{% for message in messages %}{% if message['role'] == 'assistant' %}{{ '<|im_start|>assistant\n' }}"
          "{% generation %}{{ message['content'] + '<|im_end|>\n' }}{% endgeneration %}{% else %}"
          "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>\n' }}{% endif %}{% endfor %}"
          "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}")
PLAIN = MARKED.replace("{% generation %}", "").replace("{% endgeneration %}", "")


@pytest.mark.parametrize("case", ["completion_only", "assistant_only"])
def test_sft_loss_and_masks_match_trl(models, tmp_path, case):
    from openformers.rl import SFTConfig, SFTTrainer

    hf, ours, htok, tok = models
    htok, tok = copy.deepcopy(htok), copy.deepcopy(tok)
    kw = {}
    if case == "completion_only":
        data = PC
    else:
        data, kw = CHAT, {"assistant_only_loss": True}
        htok.chat_template, tok.chat_template = MARKED, PLAIN
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs = trl.SFTTrainer(model=hf, args=_trl_args(trl.SFTConfig, tmp_path, **kw),
                                train_dataset=datasets.Dataset.from_list(data), processing_class=htok)
    mine = SFTTrainer(ours, args=_our_args(SFTConfig, tmp_path, **kw), train_dataset=data, processing_class=tok)
    their_batch = theirs.data_collator([theirs.train_dataset[i] for i in range(4)])
    my_batch = mine.data_collator([mine.train_dataset[i] for i in range(4)])
    assert torch.equal(my_batch["input_ids"], their_batch["input_ids"])
    assert torch.equal(my_batch["labels"], their_batch["labels"])
    assert (my_batch["labels"] != -100).sum() < my_batch["attention_mask"].sum()  # a real mask
    hf.eval(), ours.eval()
    their_loss = theirs.compute_loss(hf, dict(their_batch))
    my_loss = mine.compute_loss(ours, dict(my_batch))
    torch.testing.assert_close(my_loss, their_loss, **TOL)


PREF = [{"prompt": f"Pick {i}:", "chosen": " yes" + " indeed" * i, "rejected": " no" + " way" * (3 - i)} for i in range(4)]


@pytest.mark.parametrize("loss_type,beta,label_smoothing", [("sigmoid", 0.1, 0.0), ("ipo", 0.5, 0.0), ("hinge", 0.2, 0.0),
                                                           ("robust", 0.1, 0.2)])
def test_dpo_loss_matches_trl(models, tmp_path, loss_type, beta, label_smoothing):
    from openformers.rl import DPOConfig, DPOTrainer

    hf, ours, htok, tok = models
    torch.manual_seed(1)
    hf_ref = copy.deepcopy(hf)
    with torch.no_grad():  # a reference that differs from the policy, so the log-ratios are not zero
        for p in hf_ref.parameters():
            p.add_(0.05 * torch.randn_like(p))
    our_ref = copy.deepcopy(ours)
    our_ref.load_state_dict({k: v for k, v in hf_ref.state_dict().items()}, strict=False)
    kw = dict(loss_type=[loss_type], beta=beta, label_smoothing=label_smoothing)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs = trl.DPOTrainer(model=hf, ref_model=hf_ref, args=_trl_args(trl.DPOConfig, tmp_path, **kw),
                                train_dataset=datasets.Dataset.from_list(PREF), processing_class=htok)
    mine = DPOTrainer(ours, ref_model=our_ref, args=_our_args(DPOConfig, tmp_path, **kw), train_dataset=PREF,
                      processing_class=tok)
    their_batch = theirs.data_collator([theirs.train_dataset[i] for i in range(4)])
    my_batch = mine.data_collator([mine.train_dataset[i] for i in range(4)])
    for key in ("input_ids", "attention_mask", "completion_mask"):
        assert torch.equal(my_batch[key], their_batch[key]), key
    hf.eval(), ours.eval()
    their_loss = theirs.compute_loss(theirs.model, dict(their_batch))
    my_loss = mine.compute_loss(ours, dict(my_batch))
    assert float(their_loss) != pytest.approx(0.6931, abs=1e-3) or loss_type != "sigmoid"
    torch.testing.assert_close(my_loss, their_loss, **TOL)
    for key in ("rewards/margins", "rewards/chosen"):
        assert mine._metrics["eval"][key][-1] == pytest.approx(theirs._metrics["eval"][key][-1], abs=1e-6)


@pytest.mark.parametrize("margin,center", [(False, None), (True, 0.01)])
def test_reward_loss_matches_trl(tmp_path, margin, center):
    from openformers import AutoModelForSequenceClassification
    from openformers.rl import RewardConfig, RewardTrainer

    torch.manual_seed(0)
    hf = transformers.LlamaForSequenceClassification(transformers.LlamaConfig(num_labels=1, **CONFIG))
    hf.save_pretrained(tmp_path / "rm")
    ours = AutoModelForSequenceClassification.from_pretrained(tmp_path / "rm")
    data = [dict(p, margin=0.5 * i) if margin else dict(p) for i, p in enumerate(PREF)]
    kw = {"center_rewards_coefficient": center}
    htok = transformers.AutoTokenizer.from_pretrained(tokenizer_dir())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs = trl.RewardTrainer(model=hf, args=_trl_args(trl.RewardConfig, tmp_path, **kw),
                                   train_dataset=datasets.Dataset.from_list(data), processing_class=htok)
    mine = RewardTrainer(ours, args=_our_args(RewardConfig, tmp_path, **kw), train_dataset=data, processing_class=tokenizer())
    their_batch = theirs.data_collator([theirs.train_dataset[i] for i in range(4)])
    my_batch = mine.data_collator([mine.train_dataset[i] for i in range(4)])
    assert torch.equal(my_batch["input_ids"], their_batch["input_ids"])
    hf.eval(), ours.eval()
    torch.testing.assert_close(mine.compute_loss(ours, dict(my_batch)), theirs.compute_loss(hf, dict(their_batch)), **TOL)


def _grpo_trainers(models, tmp_path, kw: dict):
    """TRL's and our GRPOTrainer on the same models, settings and a constant reward (the tests feed fixed rollouts)."""
    from openformers.rl import GRPOConfig, GRPOTrainer

    hf, ours, htok, tok = models

    def reward(completions, **_):
        return [0.0] * len(completions)

    data = [{"prompt": "Count:"}] * 4
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs = trl.GRPOTrainer(model=hf, reward_funcs=reward, args=_trl_args(trl.GRPOConfig, tmp_path, **kw),
                                 train_dataset=datasets.Dataset.from_list(data), processing_class=htok)
    mine = GRPOTrainer(ours, reward_funcs=reward, args=_our_args(GRPOConfig, tmp_path, **kw), train_dataset=data,
                       processing_class=tok)
    return theirs, mine


@pytest.mark.parametrize("loss_type", ["grpo", "dr_grpo", "dapo", "bnpo"])
def test_grpo_loss_matches_trl_on_fixed_rollouts(models, tmp_path, loss_type):
    """TRL's own loss computation (``GRPOTrainer._compute_loss``) on fixed rollouts, rewards and reference."""
    from openformers.rl.losses import group_advantages

    hf, ours, _, _ = models
    g, length = 4, 6
    kw = dict(num_generations=g, max_completion_length=length, beta=0.05, loss_type=loss_type, temperature=0.7,
              epsilon=0.2)

    theirs, mine = _grpo_trainers(models, tmp_path, kw)
    gen = torch.Generator().manual_seed(3)
    prompt_ids = torch.tensor([[2, 2, 65, 32], [2, 65, 32, 42], [65, 32, 42, 43], [2, 2, 2, 65]])
    prompt_mask = (torch.arange(4).unsqueeze(0) >= torch.tensor([2, 1, 0, 3]).unsqueeze(1)).long()
    completion_ids = torch.randint(3, 49152, (4, length), generator=gen)
    completion_mask = (torch.arange(length).unsqueeze(0) < torch.tensor([6, 3, 5, 1]).unsqueeze(1)).long()
    rewards = torch.tensor([1.0, 0.0, 0.5, 2.0])
    advantages = group_advantages(rewards, g, "group")
    ref = -torch.rand(4, length, generator=gen) * 10 - 1
    batch = {"prompt_ids": prompt_ids, "prompt_mask": prompt_mask, "completion_ids": completion_ids,
             "completion_mask": completion_mask, "advantages": advantages, "ref_per_token_logps": ref,
             "num_items_in_batch": completion_mask.sum()}
    theirs.current_gradient_accumulation_steps = 1
    hf.train(), ours.train()  # dropout is zero; train mode as in a training step
    their_loss = theirs._compute_loss(hf, dict(batch))
    my_loss = mine.compute_loss(ours, dict(batch))
    torch.testing.assert_close(my_loss, their_loss, **TOL)


@pytest.mark.parametrize("loss_type", ["grpo", "dr_grpo", "dapo", "bnpo"])
def test_grpo_loss_with_old_policy_log_probs_matches_trl(models, tmp_path, loss_type):
    """num_iterations > 1: the later steps on one batch of rollouts weigh tokens by the ratio to the log-probs
    of the sampling policy, clipped by epsilon (below) and epsilon_high (above), on both sides."""
    from openformers.rl.losses import group_advantages

    hf, ours, _, _ = models
    g, length = 4, 6
    kw = dict(num_generations=g, max_completion_length=length, beta=0.04, loss_type=loss_type, num_iterations=3,
              epsilon=0.2, epsilon_high=0.28)

    theirs, mine = _grpo_trainers(models, tmp_path, kw)
    gen = torch.Generator().manual_seed(5)
    prompt_ids = torch.tensor([[2, 65, 32, 42], [65, 32, 42, 43], [2, 2, 65, 32], [2, 2, 2, 65]])
    prompt_mask = (torch.arange(4).unsqueeze(0) >= torch.tensor([1, 0, 2, 3]).unsqueeze(1)).long()
    completion_ids = torch.randint(3, 49152, (4, length), generator=gen)
    completion_mask = (torch.arange(length).unsqueeze(0) < torch.tensor([6, 4, 2, 5]).unsqueeze(1)).long()
    advantages = group_advantages(torch.tensor([1.0, 0.0, 0.5, 2.0]), g, "group")
    batch = {"prompt_ids": prompt_ids, "prompt_mask": prompt_mask, "completion_ids": completion_ids,
             "completion_mask": completion_mask, "advantages": advantages,
             "ref_per_token_logps": -torch.rand(4, length, generator=gen) * 10 - 1,
             "num_items_in_batch": completion_mask.sum()}
    hf.train(), ours.train()
    with torch.no_grad():
        current = mine._per_token_logps(ours, batch)
    # the old policy a little away from the current one: ratios from about 0.6 to 1.6, so both clips bind
    batch["old_per_token_logps"] = current + (torch.rand(4, length, generator=gen) - 0.5)
    ratio = torch.exp(current - batch["old_per_token_logps"])[completion_mask.bool()]
    assert (ratio < 0.8).any() and (ratio > 1.28).any()
    theirs.current_gradient_accumulation_steps = 1
    their_loss = theirs._compute_loss(hf, dict(batch))
    my_loss = mine.compute_loss(ours, dict(batch))
    torch.testing.assert_close(my_loss, their_loss, **TOL)
    without_old = {k: v for k, v in batch.items() if k != "old_per_token_logps"}
    assert not torch.allclose(mine.compute_loss(ours, without_old), my_loss)  # the ratios are used


def test_grpo_advantages_match_trl_formula():
    """Group-relative advantages with TRL's scaling (std of the group, plus 1e-4)."""
    from openformers.rl.losses import group_advantages

    rewards = torch.tensor([1.0, 0.0, 0.5, 2.0, 3.0, 3.0, 1.0, 0.0])
    grouped = rewards.view(-1, 4)
    expected = (rewards - grouped.mean(1).repeat_interleave(4)) / (grouped.std(1).repeat_interleave(4) + 1e-4)
    torch.testing.assert_close(group_advantages(rewards, 4, "group"), expected)
    expected_batch = (rewards - grouped.mean(1).repeat_interleave(4)) / (rewards.std() + 1e-4)
    torch.testing.assert_close(group_advantages(rewards, 4, "batch"), expected_batch)
    torch.testing.assert_close(group_advantages(rewards, 4, "none"), rewards - grouped.mean(1).repeat_interleave(4))
