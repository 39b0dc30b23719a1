"""Packed inference copies of linear weights (runtime/packed_weights.py): the same values as the
plain path, rebuilt when a weight changes, bounded by the budget, invisible to copies, pickles and
training."""
from __future__ import annotations

import copy
import gc
import pickle

import pytest
import torch

from openformers.models.llama import LlamaConfig, LlamaForCausalLM
from openformers.core import settings
from openformers.runtime import packed_weights
from openformers.runtime.packed_weights import packed_bytes


@pytest.fixture(autouse=True)
def _settings_read_again():
    """Tests here change OPENFORMERS_PACKED_WEIGHTS_MAX_MB: the value read once per process is forgotten after
    each (monkeypatch has put the environment back by then)."""
    yield
    settings.reload()

pytestmark = pytest.mark.skipif(not torch.backends.mkldnn.is_available(), reason="needs oneDNN (mkldnn)")


def _tiny(dtype=torch.float32) -> LlamaForCausalLM:
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=96, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                      num_key_value_heads=2, max_position_embeddings=64, tie_word_embeddings=True, attention_bias=True)
    return LlamaForCausalLM(cfg).to(dtype).eval()


IDS = torch.randint(0, 96, (4, 9), generator=torch.Generator().manual_seed(1))


def _decode_steps(model, monkeypatch, packed: bool) -> list[torch.Tensor]:
    """Logits of a prompt and of three single-position steps of a batch of 4 (the packed cases)."""
    monkeypatch.setitem(packed_weights._state, "enabled", packed)
    out = []
    with torch.no_grad():
        result = model(IDS, use_cache=True)
        out.append(result.logits)
        cache = result.past_key_values
        for step in range(3):
            result = model(IDS[:, step:step + 1], past_key_values=cache, use_cache=True)
            cache = result.past_key_values
            out.append(result.logits)
    return out


@pytest.mark.parametrize("dtype, atol", [(torch.float32, 1e-5), (torch.bfloat16, 0.05)])
def test_packed_decode_matches_the_plain_path(monkeypatch, dtype, atol):
    model = _tiny(dtype)
    before = packed_bytes()
    plain = _decode_steps(model, monkeypatch, packed=False)
    assert packed_bytes() == before
    packed = _decode_steps(model, monkeypatch, packed=True)
    assert packed_bytes() > before  # copies were made (decode steps of 4 rows)
    for a, b in zip(packed, plain):
        torch.testing.assert_close(a.float(), b.float(), rtol=0, atol=atol)
    # greedy decoding, batched: the same tokens either way
    monkeypatch.setitem(packed_weights._state, "enabled", False)
    expected = model.generate(IDS, max_new_tokens=5, do_sample=False)
    monkeypatch.setitem(packed_weights._state, "enabled", True)
    assert torch.equal(model.generate(IDS, max_new_tokens=5, do_sample=False), expected)


def test_in_place_update_rebuilds_the_copy(monkeypatch):
    model = _tiny()
    _decode_steps(model, monkeypatch, packed=True)
    with torch.no_grad():
        model.model.layers[0].self_attn.k_proj.weight.mul_(2.0)  # one layer of a fused group
        model.model.layers[1].mlp.down_proj.weight.add_(0.01)  # a single layer
        model.model.embed_tokens.weight.mul_(0.5)  # the tied head
    plain = _decode_steps(model, monkeypatch, packed=False)
    packed = _decode_steps(model, monkeypatch, packed=True)
    for a, b in zip(packed, plain):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-5)
    # a replaced weight too
    layer = model.model.layers[1].self_attn.o_proj
    layer.weight = torch.nn.Parameter(torch.randn_like(layer.weight))
    plain = _decode_steps(model, monkeypatch, packed=False)
    packed = _decode_steps(model, monkeypatch, packed=True)
    for a, b in zip(packed, plain):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-5)


def test_budget_bounds_the_copies_and_deleted_models_give_them_back(monkeypatch):
    monkeypatch.setitem(packed_weights._state, "budget", packed_bytes())  # no room left
    model = _tiny()
    plain = _decode_steps(model, monkeypatch, packed=False)
    before = packed_bytes()
    out = _decode_steps(model, monkeypatch, packed=True)
    assert packed_bytes() == before  # over budget: nothing packed, the plain path ran
    for a, b in zip(out, plain):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    monkeypatch.setitem(packed_weights._state, "budget", 1 << 40)
    _decode_steps(model, monkeypatch, packed=True)
    grown = packed_bytes()
    assert grown > before
    del model
    gc.collect()
    assert packed_bytes() == before


def test_copies_pickles_and_training_do_not_see_the_copies(monkeypatch):
    model = _tiny()
    _decode_steps(model, monkeypatch, packed=True)
    twin = copy.deepcopy(model)
    restored = pickle.loads(pickle.dumps(model))
    for other in (twin, restored):
        for a, b in zip(_decode_steps(other, monkeypatch, packed=True), _decode_steps(model, monkeypatch, packed=False)):
            torch.testing.assert_close(a, b, rtol=0, atol=1e-5)
    # training after packed inference: autograd runs the parameters themselves
    model.train()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    model(IDS, labels=IDS).loss.backward()
    opt.step()
    model.eval()
    after = _decode_steps(model, monkeypatch, packed=True)
    for a, b in zip(after, _decode_steps(model, monkeypatch, packed=False)):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-5)


def test_default_budget_is_a_quarter_of_the_memory_limit(monkeypatch, tmp_path):
    import io
    import os

    physical = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    real_open = open

    def container(limit: str):
        def fake_open(path, *args, **kw):
            if str(path) == "/sys/fs/cgroup/memory.max":
                return io.StringIO(limit + "\n")
            if str(path).startswith("/sys/fs/cgroup/"):
                raise OSError(path)
            return real_open(path, *args, **kw)
        return fake_open

    monkeypatch.delenv("OPENFORMERS_PACKED_WEIGHTS_MAX_MB", raising=False)
    settings.reload()
    monkeypatch.setattr(packed_weights, "open", container(str(1 << 30)), raising=False)  # a 1 GiB container
    monkeypatch.setitem(packed_weights._state, "budget", None)
    assert packed_weights._budget() == (1 << 30) // 4
    monkeypatch.setattr(packed_weights, "open", container("max"), raising=False)  # no limit: the machine's memory
    monkeypatch.setitem(packed_weights._state, "budget", None)
    assert packed_weights._budget() == physical // 4
    monkeypatch.setenv("OPENFORMERS_PACKED_WEIGHTS_MAX_MB", "3")
    settings.reload()
    monkeypatch.setitem(packed_weights._state, "budget", None)
    assert packed_weights._budget() == 3 * 2**20


def test_a_budget_that_is_not_a_number_is_named_in_the_error(monkeypatch):
    monkeypatch.setenv("OPENFORMERS_PACKED_WEIGHTS_MAX_MB", "lots")
    settings.reload()
    monkeypatch.setitem(packed_weights._state, "budget", None)
    with pytest.raises(ValueError, match="OPENFORMERS_PACKED_WEIGHTS_MAX_MB='lots' is not a number"):
        packed_weights._budget()
