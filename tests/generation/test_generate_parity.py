"""generate() against transformers' generate on tiny random Llama, Mistral, Qwen2 and GPT-2."""
from __future__ import annotations

import pytest
import torch

from tests.generation.conftest import EOS, PAD, left_padded_batch, right_pad


def _alone(model, ids, mask, **kw):
    """Each row generated on its own (no padding at all)."""
    rows = []
    for i in range(ids.shape[0]):
        row = ids[i][mask[i].bool()][None]
        rows.append(model.generate(row, **kw)[0, row.shape[1]:])
    return rows


@pytest.mark.parametrize("cache", [None, "static"])
def test_greedy_single_prompt(pair, cache):
    ids = torch.tensor([[5, 17, 42, 99, 123, 7]])
    theirs = pair.hf.generate(ids, max_new_tokens=15, do_sample=False)
    ours = pair.ours.generate(ids, max_new_tokens=15, cache_implementation=cache)
    assert torch.equal(ours, theirs)
    assert len(set(ours[0, 6:].tolist())) > 3, "the test model should not just repeat one token"


@pytest.mark.parametrize("cache", [None, "static"])
def test_greedy_left_padded_batch(pair, cache):
    ids, mask = left_padded_batch()
    theirs = pair.hf.generate(ids, attention_mask=mask, max_new_tokens=12, do_sample=False)
    ours = pair.ours.generate(ids, attention_mask=mask, max_new_tokens=12, cache_implementation=cache)
    assert torch.equal(ours, theirs)
    # and each row equals the row generated alone
    for i, alone in enumerate(_alone(pair.ours, ids, mask, max_new_tokens=12)):
        assert torch.equal(ours[i, ids.shape[1]:], alone)


def test_greedy_right_padded_batch_matches_rows_alone(pair):
    left_ids, left_mask = left_padded_batch()
    ids, mask = right_pad(left_ids, left_mask)
    out = pair.ours.generate(ids, attention_mask=mask, max_new_tokens=12)
    # the prompt comes back exactly as given, the new tokens follow it
    assert out.shape == (3, ids.shape[1] + 12)
    assert torch.equal(out[:, : ids.shape[1]], ids)
    for i, alone in enumerate(_alone(pair.ours, ids, mask, max_new_tokens=12)):
        assert torch.equal(out[i, ids.shape[1]:], alone)
    # same tokens as the left-padded layout
    left = pair.ours.generate(left_ids, attention_mask=left_mask, max_new_tokens=12)
    assert torch.equal(out[:, ids.shape[1]:], left[:, ids.shape[1]:])


def test_right_padding_inferred_from_pad_token(llama):
    ids, mask = right_pad(*left_padded_batch())
    with_mask = llama.ours.generate(ids, attention_mask=mask, max_new_tokens=6)
    inferred = llama.ours.generate(ids, max_new_tokens=6)  # PAD != EOS, so the mask is inferred
    assert torch.equal(with_mask, inferred)


@pytest.mark.parametrize(
    "opts",
    [
        dict(num_beams=3, num_return_sequences=2),
        dict(num_beams=4, length_penalty=0.6, early_stopping=True),
        dict(num_beams=2, length_penalty=1.5, early_stopping="never", num_return_sequences=2),
    ],
)
def test_beam_search(pair, opts):
    ids, mask = left_padded_batch(1)
    common = dict(attention_mask=mask, max_new_tokens=8, return_dict_in_generate=True, output_scores=True, **opts)
    theirs = pair.hf.generate(ids, do_sample=False, **common)
    ours = pair.ours.generate(ids, **common)
    assert torch.equal(ours.sequences, theirs.sequences)
    torch.testing.assert_close(ours.sequences_scores, theirs.sequences_scores, atol=1e-4, rtol=1e-4)
    assert torch.equal(ours.beam_indices.long(), theirs.beam_indices.long())
    assert len(ours.scores) == len(theirs.scores)


def test_beam_search_with_eos_and_static_cache(llama):
    ids, mask = left_padded_batch(2)
    greedy = llama.ours.generate(ids, attention_mask=mask, max_new_tokens=10)
    eos = [int(greedy[0, 9]), int(greedy[2, 11])]  # tokens the model actually produces
    for early_stopping, cache in ((False, None), (False, "static"), (True, None), ("never", None)):
        kw = dict(attention_mask=mask, max_new_tokens=10, num_beams=3, eos_token_id=eos, return_dict_in_generate=True,
                  output_scores=True, early_stopping=early_stopping, length_penalty=0.7)
        theirs = llama.hf.generate(ids, do_sample=False, **kw)
        ours = llama.ours.generate(ids, cache_implementation=cache, **kw)
        assert torch.equal(ours.sequences, theirs.sequences)
        torch.testing.assert_close(ours.sequences_scores, theirs.sequences_scores, atol=1e-4, rtol=1e-4)
        assert torch.equal(ours.beam_indices.long(), theirs.beam_indices.long())


def test_beam_search_right_padded_matches_left(llama):
    left_ids, left_mask = left_padded_batch(1)
    ids, mask = right_pad(left_ids, left_mask)
    left = llama.ours.generate(left_ids, attention_mask=left_mask, max_new_tokens=6, num_beams=3)
    right = llama.ours.generate(ids, attention_mask=mask, max_new_tokens=6, num_beams=3)
    assert torch.equal(right[:, : ids.shape[1]], ids)
    assert torch.equal(right[:, ids.shape[1]:], left[:, ids.shape[1]:])


def test_eos_list_and_pad_fill(pair):
    ids, mask = left_padded_batch(3)
    greedy = pair.ours.generate(ids, attention_mask=mask, max_new_tokens=12)
    eos = [int(greedy[0, 9]), int(greedy[1, 12])]
    kw = dict(attention_mask=mask, max_new_tokens=12, eos_token_id=eos, pad_token_id=PAD)
    theirs = pair.hf.generate(ids, do_sample=False, **kw)
    ours = pair.ours.generate(ids, **kw)
    assert torch.equal(ours, theirs)
    # row 0 stops at its first EOS; everything after is padding
    new = ours[0, 7:].tolist()
    first = next(i for i, t in enumerate(new) if t in eos)
    assert all(t == PAD for t in new[first + 1:])


def test_processors_in_generate(pair):
    ids, mask = left_padded_batch(4)
    kw = dict(attention_mask=mask, max_new_tokens=12, repetition_penalty=1.3, no_repeat_ngram_size=2,
              bad_words_ids=[[17], [40, 41]], min_new_tokens=5, eos_token_id=EOS,
              return_dict_in_generate=True, output_scores=True, output_logits=True)
    theirs = pair.hf.generate(ids, do_sample=False, **kw)
    ours = pair.ours.generate(ids, **kw)
    assert torch.equal(ours.sequences, theirs.sequences)
    for a, b in zip(ours.scores, theirs.scores):
        torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)
    for a, b in zip(ours.logits, theirs.logits):
        torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)


def test_sampling_is_reproducible_and_matches_reference(llama):
    ids, mask = left_padded_batch(5)
    kw = dict(attention_mask=mask, max_new_tokens=10, do_sample=True, temperature=0.8, top_k=20, top_p=0.9)
    g1 = torch.Generator().manual_seed(123)
    g2 = torch.Generator().manual_seed(123)
    a = llama.ours.generate(ids, generator=g1, **kw)
    b = llama.ours.generate(ids, generator=g2, **kw)
    assert torch.equal(a, b)
    c = llama.ours.generate(ids, generator=torch.Generator().manual_seed(7), **kw)
    assert not torch.equal(a, c)
    # without a generator the global RNG is used, exactly as the reference does
    torch.manual_seed(11)
    theirs = llama.hf.generate(ids, **kw)
    torch.manual_seed(11)
    ours = llama.ours.generate(ids, **kw)
    assert torch.equal(ours, theirs)


def test_num_return_sequences_sampling(llama):
    ids = torch.tensor([[5, 6, 7]])
    out = llama.ours.generate(ids, do_sample=True, num_return_sequences=4, max_new_tokens=5,
                              generator=torch.Generator().manual_seed(0))
    assert out.shape == (4, 8)
    assert torch.equal(out[:, :3], ids.expand(4, 3))


def test_min_p_typical_eta_epsilon_sampling_match_reference(llama):
    ids = torch.tensor([[5, 17, 42, 99]])
    for opts in (dict(min_p=0.1), dict(typical_p=0.7), dict(epsilon_cutoff=0.01), dict(eta_cutoff=0.01)):
        kw = dict(max_new_tokens=8, do_sample=True, top_k=0, **opts)
        torch.manual_seed(3)
        theirs = llama.hf.generate(ids, **kw)
        torch.manual_seed(3)
        ours = llama.ours.generate(ids, **kw)
        assert torch.equal(ours, theirs), opts


def test_default_max_length_and_generation_config(llama):
    from openformers.generation import GenerationConfig

    ids = torch.tensor([[5, 6, 7]])
    assert llama.ours.generate(ids).shape == (1, 23)  # 20 new tokens by default
    assert llama.ours.generate(ids, max_length=8).shape == (1, 8)
    cfg = GenerationConfig(max_new_tokens=4)
    assert llama.ours.generate(ids, generation_config=cfg).shape == (1, 7)
    assert llama.ours.generation_config.eos_token_id == EOS


def test_no_cache_matches_cache(llama):
    ids, mask = left_padded_batch()
    a = llama.ours.generate(ids, attention_mask=mask, max_new_tokens=6)
    b = llama.ours.generate(ids, attention_mask=mask, max_new_tokens=6, use_cache=False)
    assert torch.equal(a, b)


def test_continue_from_returned_cache(llama):
    ids = torch.tensor([[5, 17, 42, 99]])
    first = llama.ours.generate(ids, max_new_tokens=5, return_dict_in_generate=True)
    full = llama.ours.generate(ids, max_new_tokens=10)
    more = llama.ours.generate(first.sequences, past_key_values=first.past_key_values, max_new_tokens=5)
    assert torch.equal(more, full)


def test_errors(llama):
    ids = torch.tensor([[5, 6, 7]])
    with pytest.raises(ValueError, match="max_length"):
        llama.ours.generate(ids, max_length=3)
    with pytest.raises(ValueError, match="not_an_option"):
        llama.ours.generate(ids, not_an_option=1)
    with pytest.raises(ValueError, match="tokenizer"):
        llama.ours.generate(ids, stop_strings=["x"], max_new_tokens=3)
    with pytest.raises(ValueError, match="num_return_sequences"):
        llama.ours.generate(ids, num_beams=2, num_return_sequences=3)
    with pytest.raises(ValueError, match="top_p"):
        llama.ours.generate(ids, do_sample=True, top_p=1.5)
    with pytest.raises(ValueError, match="temperature"):
        llama.ours.generate(ids, do_sample=True, temperature=0.0)
    with pytest.raises(ValueError, match="cache_implementation"):
        llama.ours.generate(ids, cache_implementation="paged-something")
    with pytest.raises(ValueError, match="attention_mask"):
        llama.ours.generate(ids, attention_mask=torch.ones(1, 4, dtype=torch.long))


def test_beam_sample_matches_reference(llama):
    ids, mask = left_padded_batch(6)
    kw = dict(attention_mask=mask, max_new_tokens=6, num_beams=2, do_sample=True, top_k=10)
    torch.manual_seed(5)
    theirs = llama.hf.generate(ids, **kw)
    torch.manual_seed(5)
    ours = llama.ours.generate(ids, **kw)
    assert torch.equal(ours, theirs)


def test_attentions_hidden_states_and_transition_scores(llama):
    from openformers.generation import compute_transition_scores

    ids = torch.tensor([[5, 17, 42, 99]])
    out = llama.ours.generate(ids, max_new_tokens=3, return_dict_in_generate=True, output_scores=True,
                              output_attentions=True, output_hidden_states=True)
    assert len(out.attentions) == len(out.hidden_states) == len(out.scores) == 3
    assert out.attentions[0][0].shape[-1] == 4 and out.attentions[2][0].shape[-1] == 6
    ref = llama.hf.generate(ids, max_new_tokens=3, do_sample=False, return_dict_in_generate=True, output_scores=True)
    ours_t = compute_transition_scores(out.sequences, out.scores, normalize_logits=True)
    theirs_t = llama.hf.compute_transition_scores(ref.sequences, ref.scores, normalize_logits=True)
    torch.testing.assert_close(ours_t, theirs_t, atol=1e-4, rtol=1e-4)
    beams = llama.ours.generate(ids, max_new_tokens=3, num_beams=2, return_dict_in_generate=True, output_scores=True)
    ref = llama.hf.generate(ids, max_new_tokens=3, num_beams=2, do_sample=False, return_dict_in_generate=True,
                            output_scores=True)
    ours_t = compute_transition_scores(beams.sequences, beams.scores, beams.beam_indices)
    theirs_t = llama.hf.compute_transition_scores(ref.sequences, ref.scores, ref.beam_indices)
    torch.testing.assert_close(ours_t, theirs_t, atol=1e-4, rtol=1e-4)


def test_token_type_ids_follow_the_sequence(tmp_path_factory):
    from tests.generation.conftest import get_pair

    gpt2 = get_pair("gpt2", tmp_path_factory)
    ids, mask = left_padded_batch(7)
    types = (torch.arange(7)[None, :] % 2).expand(3, 7).clone()
    theirs = gpt2.hf.generate(ids, attention_mask=mask, token_type_ids=types, max_new_tokens=6, do_sample=False)
    ours = gpt2.ours.generate(ids, attention_mask=mask, token_type_ids=types, max_new_tokens=6)
    assert torch.equal(ours, theirs)
    r_ids, r_mask = right_pad(ids, mask)
    r_types = right_pad(types, mask)[0]
    right = gpt2.ours.generate(r_ids, attention_mask=r_mask, token_type_ids=r_types, max_new_tokens=6, num_beams=2)
    left = gpt2.ours.generate(ids, attention_mask=mask, token_type_ids=types, max_new_tokens=6, num_beams=2)
    assert torch.equal(right[:, 7:], left[:, 7:])
