"""Classic PPO: the losses, GAE, KL penalty and KL control against computations written out here
(TRL no longer ships this API), the value head's file layout, input handling and learning."""
from __future__ import annotations

import math

import pytest
import torch

from tests.rl.helpers import tiny_gpt2_dir


def _loop_gae(values, rewards, mask, gamma, lam):
    """Advantages one sequence and one token at a time, as in the PPO paper (no vectorisation)."""
    b, t = values.shape
    adv = torch.zeros(b, t, dtype=torch.float64)
    for i in range(b):
        running = 0.0
        for j in reversed(range(t)):
            v = float(values[i, j]) * float(mask[i, j])
            r = float(rewards[i, j]) * float(mask[i, j])
            nxt = float(values[i, j + 1]) * float(mask[i, j + 1]) if j + 1 < t else 0.0
            delta = r + gamma * nxt - v
            running = delta + gamma * lam * running
            adv[i, j] = running
    returns = adv + (values * mask).double()
    sel = mask.bool()
    mean = adv[sel].mean()
    var = adv[sel].var(unbiased=True)
    whitened = (adv - mean) / math.sqrt(float(var) + 1e-8)
    return whitened, returns


def test_gae_matches_the_written_out_recursion():
    from openformers.rl.losses import gae_advantages

    g = torch.Generator().manual_seed(0)
    values, rewards = torch.randn(3, 7, generator=g), torch.randn(3, 7, generator=g)
    mask = torch.tensor([[1, 1, 1, 1, 1, 1, 1], [0, 0, 1, 1, 1, 0, 0], [0, 1, 1, 1, 1, 1, 1]], dtype=torch.float32)
    adv, ret = gae_advantages(values, rewards, mask, gamma=0.99, lam=0.95)
    ref_adv, ref_ret = _loop_gae(values, rewards, mask, 0.99, 0.95)
    torch.testing.assert_close(adv[mask.bool()].double(), ref_adv[mask.bool()], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(ret[mask.bool()].double(), ref_ret[mask.bool()], rtol=1e-5, atol=1e-5)


def test_policy_and_value_losses_match_the_written_out_formulas():
    from openformers.rl.losses import ppo_losses

    g = torch.Generator().manual_seed(1)
    shape = (4, 5)
    logp, old_logp = -torch.rand(shape, generator=g) * 3, -torch.rand(shape, generator=g) * 3
    v, old_v = torch.randn(shape, generator=g), torch.randn(shape, generator=g)
    adv, ret = torch.randn(shape, generator=g), torch.randn(shape, generator=g)
    mask = (torch.rand(shape, generator=g) > 0.3).float()
    pg, vf, total, stats = ppo_losses(logp, old_logp, v, old_v, adv, ret, mask, cliprange=0.2, cliprange_value=0.3,
                                      vf_coef=0.1)
    pg_terms, vf_terms, clipped = [], [], 0
    for i in range(shape[0]):
        for j in range(shape[1]):
            if not mask[i, j]:
                continue
            ratio = math.exp(float(logp[i, j] - old_logp[i, j]))
            a = float(adv[i, j])
            unclipped, clip = -a * ratio, -a * min(max(ratio, 0.8), 1.2)
            pg_terms.append(max(unclipped, clip))
            clipped += clip > unclipped
            vc = float(old_v[i, j]) + min(max(float(v[i, j] - old_v[i, j]), -0.3), 0.3)
            vf_terms.append(max((float(v[i, j]) - float(ret[i, j])) ** 2, (vc - float(ret[i, j])) ** 2))
    assert float(pg) == pytest.approx(sum(pg_terms) / len(pg_terms), rel=1e-5)
    assert float(vf) == pytest.approx(0.5 * sum(vf_terms) / len(vf_terms), rel=1e-5)
    assert float(total) == pytest.approx(float(pg) + 0.1 * float(vf), rel=1e-6)
    assert float(stats["policy/clipfrac"]) == pytest.approx(clipped / len(pg_terms), rel=1e-6)


def test_kl_penalty_puts_the_score_on_the_last_response_token():
    from openformers.rl.losses import kl_penalised_rewards

    logp = torch.tensor([[-1.0, -2.0, -0.5, -3.0], [-1.0, -1.0, -1.0, -1.0]])
    ref = torch.tensor([[-1.5, -1.0, -0.5, -2.0], [-0.5, -2.0, -1.0, -1.0]])
    mask = torch.tensor([[0.0, 1.0, 1.0, 0.0], [1.0, 1.0, 1.0, 1.0]])
    rewards, kl = kl_penalised_rewards(torch.tensor([2.0, -1.0]), logp, ref, mask, kl_coef=0.2)
    expected = torch.tensor([[0.0, -0.2 * (-1.0), -0.2 * 0.0 + 2.0, 0.0],
                             [-0.2 * -0.5, -0.2 * 1.0, 0.0, -0.2 * 0.0 - 1.0]])
    torch.testing.assert_close(rewards, expected)
    torch.testing.assert_close(kl, (logp - ref) * mask)


def test_kl_controllers():
    from openformers.rl import AdaptiveKLController, FixedKLController

    c = AdaptiveKLController(0.2, target=6.0, horizon=10000)
    c.update(12.0, n_steps=8)  # error clipped to +0.2
    assert c.value == pytest.approx(0.2 * (1 + 0.2 * 8 / 10000))
    c.update(6.0 * 1.1, n_steps=8)
    assert c.value == pytest.approx(0.2 * (1 + 0.2 * 8 / 10000) * (1 + 0.1 * 8 / 10000))
    f = FixedKLController(0.3)
    f.update(100.0, 8)
    assert f.value == 0.3


def test_value_head_saves_in_trl_layout_and_loads_back(tmp_path):
    from safetensors import safe_open

    from openformers.rl import AutoModelForCausalLMWithValueHead

    path = tiny_gpt2_dir(tmp_path / "gpt2")
    model = AutoModelForCausalLMWithValueHead.from_pretrained(path)
    with torch.no_grad():
        model.v_head.summary.weight.normal_()
        model.v_head.summary.bias.fill_(0.5)
    model.save_pretrained(tmp_path / "saved")
    with safe_open(str(tmp_path / "saved" / "model.safetensors"), "pt") as f:
        keys = set(f.keys())
    assert {"v_head.summary.weight", "v_head.summary.bias"} <= keys
    assert "transformer.wte.weight" in keys  # the language model's own names, beside the head
    again = AutoModelForCausalLMWithValueHead.from_pretrained(tmp_path / "saved")
    torch.testing.assert_close(again.v_head.summary.weight, model.v_head.summary.weight)
    ids = torch.tensor([[5, 6, 7]])
    model.eval(), again.eval()
    torch.testing.assert_close(again(ids)[2], model(ids)[2])
    assert set(model.state_dict()) - {"lm_head.weight"} == keys  # tied to wte, saved once


def test_value_head_loads_into_trl_layout_readers(tmp_path):
    """TRL's v_head keys are what a TRL-era checkpoint holds; transformers reads the rest of the file."""
    transformers = pytest.importorskip("transformers")
    from openformers.rl import AutoModelForCausalLMWithValueHead

    path = tiny_gpt2_dir(tmp_path / "gpt2")
    AutoModelForCausalLMWithValueHead.from_pretrained(path).save_pretrained(tmp_path / "saved")
    hf = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "saved")
    assert hf.config.n_layer == 2


@pytest.fixture(autouse=True)
def _in_tmp(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # PPOConfig's default output_dir


@pytest.fixture()
def ppo_setup(tmp_path):
    from tests.rl.helpers import tiny_word_llama, word_tokenizer

    return tiny_word_llama(), word_tokenizer(tmp_path / "tok")


def test_step_input_checks(ppo_setup):
    from openformers.rl import PPOConfig, PPOTrainer

    model, tok = ppo_setup
    trainer = PPOTrainer(PPOConfig(batch_size=2), model, None, tok)
    q = [torch.tensor([[5, 6]]), torch.tensor([7, 8, 9])]
    r = [torch.tensor([1, 2]), torch.tensor([[3]])]
    with pytest.raises(ValueError, match="batch_size"):
        trainer.step(q[:1], r[:1], [1.0])
    with pytest.raises(ValueError, match=r"shape \(2, 3\)"):
        trainer.step([torch.zeros(2, 3, dtype=torch.long), q[1]], r, [1.0, 0.0])
    with pytest.raises(ValueError, match="one scalar"):
        trainer.step(q, r, [torch.tensor([1.0, 2.0]), 0.0])
    with pytest.raises(TypeError, match="scores"):
        trainer.step(q, r, ["good", 0.0])
    stats = trainer.step(q, r, [torch.tensor(1.0), 0.5])  # [1, n] rows and tensor scores are fine
    assert stats["tokens/responses_len_mean"] == 1.5


def test_ppo_raises_a_rule_based_reward_with_bounded_kl(tmp_path):
    """Reward: the share of response words among eight target words (1/8 by chance). Mean score rises."""
    from openformers.rl import PPOConfig, PPOTrainer
    from tests.rl.helpers import tiny_word_llama, word_tokenizer

    tok, model = word_tokenizer(tmp_path / "tok"), tiny_word_llama()
    torch.manual_seed(0)
    config = PPOConfig(batch_size=16, mini_batch_size=8, ppo_epochs=4, learning_rate=1e-2, init_kl_coef=0.05)
    trainer = PPOTrainer(config, model, None, tok)
    queries = [torch.tensor(tok(f"say {w}")["input_ids"]) for w in ("one", "two", "three", "four") * 4]
    scores_seen, kls = [], []
    for _ in range(12):
        responses = trainer.generate(queries, return_prompt=False, max_new_tokens=6, do_sample=True, top_k=0,
                                     batch_size=16)
        scores = [float(((r >= 3) & (r <= 10)).float().mean()) for r in responses]
        stats = trainer.step(queries, responses, scores)
        scores_seen.append(round(stats["ppo/mean_scores"], 3))
        kls.append(round(stats["objective/kl"], 3))
    print("PPO mean scores", scores_seen, "KL", kls)
    assert sum(scores_seen[-3:]) / 3 > sum(scores_seen[:3]) / 3 + 0.2, scores_seen
    assert max(abs(k) for k in kls) < 15.0, kls
