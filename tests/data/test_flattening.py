"""DataCollatorWithFlattening: the same batch as transformers', and a packed row scores each document alone."""
from __future__ import annotations

import pytest
import torch

from openformers import LlamaForCausalLM
from openformers.data.collators import DataCollatorWithFlattening
from tests.models.parity import build_reference

transformers = pytest.importorskip("transformers")


def _examples() -> list[dict]:
    g = torch.Generator().manual_seed(0)
    return [{"input_ids": torch.randint(3, 90, (n,), generator=g).tolist()} for n in (5, 9, 3)]


@pytest.mark.parametrize("kwargs", [{}, {"return_flash_attn_kwargs": True, "return_seq_idx": True},
                                    {"separator_id": -1, "position_ids_start": 1}])
def test_batches_match_transformers(kwargs: dict) -> None:
    feats = _examples()
    feats[1]["labels"] = [7] * len(feats[1]["input_ids"])
    for f in feats:
        f.setdefault("labels", list(f["input_ids"]))
    ours = DataCollatorWithFlattening(**kwargs)(feats)
    theirs = transformers.DataCollatorWithFlattening(**kwargs)(feats)
    assert sorted(ours) == sorted(theirs)
    for key, value in theirs.items():
        if isinstance(value, torch.Tensor):
            assert ours[key].dtype == value.dtype, key
            assert torch.equal(ours[key], value), key
        else:
            assert ours[key] == value, key
    np_batch = DataCollatorWithFlattening(**kwargs)(feats, return_tensors="np")
    assert (np_batch["input_ids"] == theirs["input_ids"].numpy()).all()


def test_flattened_loss_and_logits_match_transformers(tmp_path) -> None:
    cfg = dict(vocab_size=96, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
               num_key_value_heads=2, max_position_embeddings=64, tie_word_embeddings=False)
    ref = build_reference("LlamaForCausalLM", "LlamaConfig", tmp_path, **cfg)
    ours = LlamaForCausalLM.from_pretrained(tmp_path).eval()
    batch = DataCollatorWithFlattening()(_examples())
    with torch.no_grad():
        theirs = ref(**batch, use_cache=False)  # transformers reads packed rows only without a cache
        mine = ours(**batch)
    torch.testing.assert_close(mine.logits, theirs.logits, atol=1e-5, rtol=0)
    torch.testing.assert_close(mine.loss, theirs.loss, atol=1e-6, rtol=0)
    # each document scored alone: the packed row's logits are the documents' own
    with torch.no_grad():
        start = 0
        for f in _examples():
            n = len(f["input_ids"])
            alone = ours(input_ids=torch.tensor([f["input_ids"]])).logits
            torch.testing.assert_close(mine.logits[:, start:start + n], alone, atol=1e-5, rtol=0)
            start += n
    # the cumulative lengths alone (no position ids) give the same row
    lengths = DataCollatorWithFlattening(return_position_ids=False, return_flash_attn_kwargs=True)(_examples())
    with torch.no_grad():
        by_lengths = ours(input_ids=lengths["input_ids"], labels=lengths["labels"], cu_seq_lens_q=lengths["cu_seq_lens_q"],
                          cu_seq_lens_k=lengths["cu_seq_lens_k"], max_length_q=lengths["max_length_q"],
                          max_length_k=lengths["max_length_k"])
    torch.testing.assert_close(by_lengths.logits, mine.logits, atol=0, rtol=0)


def test_flattened_training_gradients_match_transformers(tmp_path) -> None:
    cfg = dict(vocab_size=96, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
               num_key_value_heads=2, max_position_embeddings=64)
    ref = build_reference("LlamaForCausalLM", "LlamaConfig", tmp_path, **cfg).train()
    ours = LlamaForCausalLM.from_pretrained(tmp_path).train()
    batch = DataCollatorWithFlattening()(_examples())
    theirs_loss = ref(**batch, use_cache=False).loss
    ours_loss = ours(**batch).loss
    torch.testing.assert_close(ours_loss, theirs_loss, atol=1e-6, rtol=0)
    theirs_loss.backward()
    ours_loss.backward()
    theirs = dict(ref.named_parameters())
    for name, p in ours.named_parameters():
        torch.testing.assert_close(p.grad, theirs[name].grad, atol=1e-5, rtol=1e-4, msg=name)


def test_bad_input_is_named() -> None:
    with pytest.raises(ValueError, match="example 1"):
        DataCollatorWithFlattening()([{"input_ids": [1, 2]}, {"input_ids": []}])
