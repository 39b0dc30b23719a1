"""Parity with transformers' AutoTokenizer loaded from the same files."""
from __future__ import annotations

import pytest

from openformers import AutoTokenizer

from .conftest import TEXTS

transformers = pytest.importorskip("transformers")

FIXTURES = ["wordpiece_dir", "gpt2_dir", "roberta_dir", "sp_bpe_dir", "minilm_dir", "tokenizer_json_dir"]
KEYS = ["input_ids", "attention_mask", "token_type_ids", "offset_mapping", "special_tokens_mask",
        "overflow_to_sample_mapping", "length"]


@pytest.fixture(scope="module", params=FIXTURES)
def pair(request: pytest.FixtureRequest):
    d = request.getfixturevalue(request.param)
    ours = AutoTokenizer.from_pretrained(d)
    theirs = transformers.AutoTokenizer.from_pretrained(str(d))
    for t in (ours, theirs):
        if t.pad_token is None:
            t.pad_token = t.eos_token
    return request.param, ours, theirs


def _norm(v):
    if isinstance(v, (list, tuple)):
        return [_norm(x) for x in v]
    return v


def assert_same(a, b, context=""):
    assert set(a.keys()) == set(b.keys()), context
    for k in a.keys():
        assert _norm(a[k]) == _norm(b[k]), f"{context}: {k} differs"


def test_single_texts(pair):
    name, ours, theirs = pair
    for text in TEXTS:
        kw = dict(return_offsets_mapping=True, return_special_tokens_mask=True, return_length=True)
        assert_same(ours(text, **kw), theirs(text, **kw), f"{name} {text!r}")
        assert ours.tokenize(text) == theirs.tokenize(text), (name, text)
        assert ours.encode(text) == theirs.encode(text)


def test_pairs_and_batches(pair):
    name, ours, theirs = pair
    a, b = TEXTS[:4], TEXTS[4:8]
    for padding_side in ("left", "right"):
        kw = dict(padding=True, padding_side=padding_side, return_offsets_mapping=True)
        oe, te = ours(a, b, **kw), theirs(a, b, **kw)
        assert_same(oe, te, f"{name} pairs {padding_side}")
        for i in range(len(a)):
            assert oe.sequence_ids(i) == te.sequence_ids(i)
            assert oe.word_ids(i) == te.word_ids(i)
            assert oe.tokens(i) == te.tokens(i)
    kw = dict(padding="max_length", max_length=48, pad_to_multiple_of=16, truncation=True)
    assert_same(ours(TEXTS, **kw), theirs(TEXTS, **kw), f"{name} max_length")


@pytest.mark.parametrize("strategy", ["longest_first", "only_first", "only_second"])
def test_truncation_strategies(pair, strategy):
    name, ours, theirs = pair
    first, second = TEXTS[7], TEXTS[1]
    kw = dict(truncation=strategy, max_length=14)
    try:
        expected = theirs(first, second, **kw)
    except Exception:
        with pytest.raises(Exception):
            ours(first, second, **kw)
        return
    assert_same(ours(first, second, **kw), expected, f"{name} {strategy}")


def test_overflow_with_stride(pair):
    name, ours, theirs = pair
    kw = dict(truncation=True, max_length=12, stride=3, return_overflowing_tokens=True,
              return_offsets_mapping=True, padding=True)
    oe, te = ours(TEXTS[7:9] + TEXTS[:2], **kw), theirs(TEXTS[7:9] + TEXTS[:2], **kw)
    assert_same(oe, te, f"{name} overflow")
    assert oe.overflow_to_sample_mapping == te["overflow_to_sample_mapping"]
    assert len(oe["input_ids"]) > 4  # the long text really overflowed
    # single text, left truncation side
    ours.truncation_side = theirs.truncation_side = "left"
    try:
        kw.pop("padding")
        assert_same(ours(TEXTS[7], **kw), theirs(TEXTS[7], **kw), f"{name} overflow left")
    finally:
        ours.truncation_side = theirs.truncation_side = "right"


def test_split_into_words(pair):
    name, ours, theirs = pair
    words = [["Hello", "wörld", "🙂"], ["日本語", "of", "tokens", "here"]]
    oe = ours(words, is_split_into_words=True, padding=True)
    te = theirs(words, is_split_into_words=True, padding=True)
    assert_same(oe, te, f"{name} words")
    for i in range(2):
        assert oe.word_ids(i) == te.word_ids(i)
    single = ours(words[0], is_split_into_words=True)
    assert single["input_ids"] == theirs(words[0], is_split_into_words=True)["input_ids"]


def test_decode(pair):
    name, ours, theirs = pair
    batch = ours(TEXTS)["input_ids"]
    for skip in (False, True):
        assert ours.batch_decode(batch, skip_special_tokens=skip) == theirs.batch_decode(
            batch, skip_special_tokens=skip), name
        for clean in (False, True):
            assert ours.decode(batch[1], skip_special_tokens=skip, clean_up_tokenization_spaces=clean) == \
                theirs.decode(batch[1], skip_special_tokens=skip, clean_up_tokenization_spaces=clean)
    ids = batch[0]
    assert ours.convert_ids_to_tokens(ids) == theirs.convert_ids_to_tokens(ids)
    tokens = ours.convert_ids_to_tokens(ids)
    assert ours.convert_tokens_to_ids(tokens) == theirs.convert_tokens_to_ids(tokens)


def test_vocab_and_special_tokens(pair):
    name, ours, theirs = pair
    assert len(ours) == len(theirs), name
    assert ours.get_vocab() == theirs.get_vocab()
    assert ours.vocab_size == theirs.vocab_size
    assert ours.model_max_length == theirs.model_max_length
    assert ours.padding_side == theirs.padding_side
    assert ours.model_input_names == theirs.model_input_names
    assert sorted(ours.all_special_tokens) == sorted(theirs.all_special_tokens)
    for key in ("bos_token", "eos_token", "unk_token", "sep_token", "pad_token", "cls_token", "mask_token"):
        assert getattr(ours, key) == getattr(theirs, key), key
        assert getattr(ours, key + "_id") == getattr(theirs, key + "_id"), key


def test_return_tensors(pair):
    name, ours, theirs = pair
    for rt in ("pt", "np"):
        oe = ours(TEXTS[:3], padding=True, return_tensors=rt)
        te = theirs(TEXTS[:3], padding=True, return_tensors=rt)
        for k in te:
            assert oe[k].tolist() == te[k].tolist()
            assert type(oe[k]) is type(te[k])
    single = ours(TEXTS[0], return_tensors="pt")
    assert single["input_ids"].shape == theirs(TEXTS[0], return_tensors="pt")["input_ids"].shape


def test_save_with_openformers_load_with_transformers(pair, tmp_path):
    name, ours, _ = pair
    ours.save_pretrained(tmp_path)
    reloaded = transformers.AutoTokenizer.from_pretrained(str(tmp_path))
    kw = dict(return_offsets_mapping=True, padding=True)
    assert_same(ours(TEXTS, **kw), reloaded(TEXTS, **kw), f"{name} saved")
    assert ours.batch_decode(ours(TEXTS)["input_ids"]) == reloaded.batch_decode(ours(TEXTS)["input_ids"])
    assert reloaded.model_max_length == ours.model_max_length
    assert reloaded.pad_token == ours.pad_token
    again = AutoTokenizer.from_pretrained(tmp_path)
    assert_same(ours(TEXTS, **kw), again(TEXTS, **kw), f"{name} reloaded")


def test_special_token_building(pair):
    name, ours, theirs = pair
    a, b = ours.encode("hello world", add_special_tokens=False), ours.encode("again", add_special_tokens=False)
    for ids1 in (None, b):
        pair_text = "again" if ids1 else None
        ref = theirs("hello world", pair_text, return_special_tokens_mask=True, return_token_type_ids=True)
        built = ours.build_inputs_with_special_tokens(a, ids1)
        assert built == ref["input_ids"], name
        assert ours.get_special_tokens_mask(a, ids1) == ref["special_tokens_mask"], name
        assert ours.create_token_type_ids_from_sequences(a, ids1) == ref["token_type_ids"], name
    full = ours("hello world")["input_ids"]
    assert ours.get_special_tokens_mask(full, already_has_special_tokens=True) == [
        int(i in theirs.all_special_ids) for i in full]
    assert ours.num_special_tokens_to_add(True) == theirs.num_special_tokens_to_add(True)


@pytest.mark.parametrize("base,config", [
    ("wordpiece_dir", {"tokenizer_class": "BertTokenizer", "do_lower_case": False, "tokenize_chinese_chars": False}),
    ("wordpiece_dir", {"tokenizer_class": "BertTokenizer", "do_lower_case": False, "strip_accents": True}),
    ("gpt2_dir", {"tokenizer_class": "GPT2Tokenizer", "add_prefix_space": True, "pad_token": "<|endoftext|>"}),
    ("roberta_dir", {"tokenizer_class": "RobertaTokenizer", "add_prefix_space": True, "trim_offsets": False}),
    ("sp_bpe_dir", {"tokenizer_class": "LlamaTokenizer", "add_bos_token": True, "add_eos_token": True,
                    "padding_side": "right"}),
])
def test_config_variants(request, tmp_path, base, config):
    import json
    import shutil

    src = request.getfixturevalue(base)
    for f in src.iterdir():
        if f.name != "tokenizer_config.json":
            shutil.copy(f, tmp_path / f.name)
    (tmp_path / "tokenizer_config.json").write_text(json.dumps(config))
    ours, theirs = AutoTokenizer.from_pretrained(tmp_path), transformers.AutoTokenizer.from_pretrained(str(tmp_path))
    kw = dict(return_offsets_mapping=True)
    for text in TEXTS:
        assert_same(ours(text, **kw), theirs(text, **kw), f"{config} {text!r}")
        assert_same(ours(text, TEXTS[0], **kw), theirs(text, TEXTS[0], **kw), f"{config} pair {text!r}")
        ids = ours(text)["input_ids"]
        assert ours.decode(ids) == theirs.decode(ids)
    assert ours.padding_side == theirs.padding_side
