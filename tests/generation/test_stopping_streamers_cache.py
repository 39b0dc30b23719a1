"""Stopping criteria (stop strings against transformers), streamers and the static cache."""
from __future__ import annotations

import threading

import pytest
import torch

from openformers.generation import (
    EosTokenCriteria,
    MaxLengthCriteria,
    StoppingCriteriaList,
    StopStringCriteria,
    TextIteratorStreamer,
    TextStreamer,
)
from openformers.modules.cache import DynamicCache, StaticCache
from tests.generation.conftest import EOS


@pytest.fixture(scope="module")
def tokenizers(tokenizer_dir):
    import transformers

    from openformers.tokenization.auto import AutoTokenizer

    return AutoTokenizer.from_pretrained(tokenizer_dir), transformers.AutoTokenizer.from_pretrained(tokenizer_dir)


def test_max_length_and_eos_criteria():
    ids = torch.tensor([[1, 2, 3], [4, 5, 6]])
    assert MaxLengthCriteria(3)(ids, None).tolist() == [True, True]
    assert MaxLengthCriteria(4)(ids, None).tolist() == [False, False]
    assert EosTokenCriteria(6)(ids, None).tolist() == [False, True]
    assert EosTokenCriteria([3, 6])(ids, None).tolist() == [True, True]
    both = StoppingCriteriaList([MaxLengthCriteria(10), EosTokenCriteria(3)])
    assert both(ids, None).tolist() == [True, False] and both.max_length == 10


def test_stop_string_criteria_matches_transformers(tokenizers):
    import transformers

    ours_tok, ref_tok = tokenizers
    texts = ["don't stop me", "full stop", "stopping", "a stop, here", "sto", "café", "x 日本"]
    stops = ["stop", "op,", "é", "本"]
    ours = StopStringCriteria(ours_tok, stops)
    ref = transformers.StopStringCriteria(ref_tok, stops)
    for text in texts:
        ids = torch.tensor([ref_tok(text, add_special_tokens=False)["input_ids"]])
        for cut in range(1, ids.shape[1] + 1):
            prefix = ids[:, :cut]
            assert ours(prefix, None).tolist() == ref(prefix, None).tolist(), (text, cut)


def test_stop_strings_in_generate_match_transformers(llama, tokenizers):
    ours_tok, ref_tok = tokenizers
    ids = torch.tensor([[5, 17, 42, 99]])
    free = llama.ours.generate(ids, max_new_tokens=15)
    text = ours_tok.decode(free[0, 4:])
    # the first two printable characters in a row (a random model emits many lone byte tokens)
    at = next(i for i in range(len(text) - 1) if all(c.isascii() and c.isprintable() for c in text[i:i + 2]))
    stop = text[at:at + 2]
    theirs = llama.hf.generate(ids, max_new_tokens=15, do_sample=False, stop_strings=[stop], tokenizer=ref_tok)
    ours = llama.ours.generate(ids, max_new_tokens=15, stop_strings=stop, tokenizer=ours_tok)
    assert torch.equal(ours, theirs)
    assert ours.shape[1] < free.shape[1] and stop in ours_tok.decode(ours[0, 4:])


def test_text_iterator_streamer_in_thread(llama, tokenizers):
    tok, _ = tokenizers
    ids = torch.tensor([[5, 17, 42, 99]])
    streamer = TextIteratorStreamer(tok, skip_prompt=True, timeout=60)
    result = {}
    thread = threading.Thread(
        target=lambda: result.setdefault("out", llama.ours.generate(ids, max_new_tokens=20, streamer=streamer))
    )
    thread.start()
    pieces = list(streamer)
    thread.join()
    out = result["out"]
    assert "".join(pieces) == tok.decode(out[0, 4:])
    assert len(pieces) > 1


def test_text_streamer_prints_prompt_and_text(llama, tokenizers, capsys):
    tok, _ = tokenizers
    ids = torch.tensor([[5, 17, 42, 99]])
    out = llama.ours.generate(ids, max_new_tokens=10, streamer=TextStreamer(tok))
    assert capsys.readouterr().out == tok.decode(out[0]) + "\n"
    with pytest.raises(ValueError, match="batch size 1"):
        TextStreamer(tok).put(torch.ones(2, 3, dtype=torch.long))


def test_streamer_holds_back_split_characters(tokenizers):
    tok, _ = tokenizers
    ids = tok("café 日本語 🙂🚀", add_special_tokens=False)["input_ids"]
    seen = []
    streamer = TextStreamer(tok, skip_prompt=False)
    streamer.on_finalized_text = lambda text, stream_end=False: seen.append(text)
    for i in ids:
        streamer.put(torch.tensor([i]))
    streamer.end()
    assert "".join(seen) == tok.decode(ids)
    assert not any("\ufffd" in s for s in seen)


def _pieces(streamer_cls, tok, ids, **kwargs):
    seen = []
    streamer = streamer_cls(tok, **kwargs)
    streamer.on_finalized_text = lambda text, stream_end=False: seen.append((text, stream_end))
    for i in ids:
        streamer.put(torch.tensor([i]))
    streamer.end()
    return seen


def test_text_streamer_releases_words_like_transformers(tokenizers):
    import transformers

    from openformers.generation.streamers import is_cjk_char

    ours_tok, ref_tok = tokenizers
    text = "Hello world! The quick\nbrown fox jumps 日本語のテキスト over the lazy dog.\ncafé naïve 🙂🚀 stop"
    ids = ours_tok(text, add_special_tokens=False)["input_ids"]
    ours = _pieces(TextStreamer, ours_tok, ids)
    theirs = _pieces(transformers.TextStreamer, ref_tok, ids, clean_up_tokenization_spaces=False)
    # the same pieces, in the same order, where the text is printed (transformers also reports empty ones)
    assert [t for t in ours if t[0] or t[1]] == [t for t in theirs if t[0] or t[1]]
    assert "".join(t for t, _ in ours) == text
    words = [t for t, end in ours if t and not end]
    assert len(words) > 10 and all(w[-1] in " \n" or is_cjk_char(w[-1]) for w in words)
    assert ours[-1] == ("stop", True)


def test_text_streamer_word_rules_on_hand_made_text():
    from openformers.generation.streamers import is_cjk_char, printable_prefix

    assert printable_prefix("half a wo") == len("half a ")
    assert printable_prefix("nospace") == 0
    assert printable_prefix("line\n") == 5 and printable_prefix("") == 0
    assert printable_prefix("abc 日本") == 6 and is_cjk_char("日") and not is_cjk_char("の")
    assert printable_prefix("abc 🙂") == 4  # an emoji is not an ideograph: it waits for the space


def test_static_cache_behaves_like_dynamic():
    torch.manual_seed(0)
    static, dynamic = StaticCache(max_cache_len=8), DynamicCache()
    for step in (3, 1, 1):
        k, v = torch.randn(2, 2, step, 4), torch.randn(2, 2, step, 4)
        for layer in range(2):
            ks, vs = static.update(layer, k, v)
            kd, vd = dynamic.update(layer, k, v)
            assert torch.equal(ks, kd) and torch.equal(vs, vd)
    assert static.get_seq_length() == dynamic.get_seq_length() == 5
    idx = torch.tensor([1, 0])
    static.reorder_cache(idx)
    dynamic.reorder_cache(idx)
    assert torch.equal(static[0][0], dynamic[0][0])
    static.crop(2)
    assert static.get_seq_length() == 2 and static[1][0].shape[-2] == 2
    with pytest.raises(ValueError, match="max_cache_len"):
        static.update(0, torch.randn(2, 2, 7, 4), torch.randn(2, 2, 7, 4))
    with pytest.raises(ValueError, match="max_cache_len"):
        StaticCache(max_cache_len=0)


def test_generate_with_user_static_cache(llama):
    ids = torch.tensor([[5, 17, 42, 99]])
    cache = StaticCache(max_cache_len=32)
    out = llama.ours.generate(ids, max_new_tokens=6, past_key_values=cache, return_dict_in_generate=True)
    assert out.past_key_values is cache and cache.get_seq_length() == 9
    assert torch.equal(out.sequences, llama.ours.generate(ids, max_new_tokens=6))
    assert llama.ours.generation_config.eos_token_id == EOS
