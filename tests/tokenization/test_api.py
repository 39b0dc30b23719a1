"""Tokenizer API behaviour: special tokens, padding features, BatchEncoding, errors."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from openformers import AutoTokenizer, BatchEncoding, PreTrainedTokenizerFast
from openformers.core.hub import ModelNotFoundError


@pytest.fixture()
def bert(minilm_dir: Path) -> PreTrainedTokenizerFast:
    return AutoTokenizer.from_pretrained(minilm_dir)


def test_add_tokens_and_special_tokens(bert):
    n = len(bert)
    assert bert.add_tokens(["newword", "[CLS]"]) == 1  # [CLS] already known
    assert len(bert) == n + 1
    assert bert.convert_tokens_to_ids("newword") == n
    assert bert.tokenize("a newword b") == ["a", "newword", "b"]
    assert bert.add_special_tokens({"additional_special_tokens": ["<ent>"], "bos_token": "<bos>"}) == 2
    assert bert.bos_token == "<bos>" and bert.bos_token_id == n + 1
    assert bert.convert_tokens_to_ids("<ent>") == n + 2
    assert "<ent>" in bert.all_special_tokens and bert.additional_special_tokens == ["<ent>"]
    ids = bert("x <ent> y")["input_ids"]
    assert bert.convert_tokens_to_ids("<ent>") in ids
    assert "<ent>" not in bert.decode(ids, skip_special_tokens=True)
    with pytest.raises(ValueError, match="unknown key"):
        bert.add_special_tokens({"banana_token": "x"})


def test_pad_token_required(gpt2_dir):
    tok = AutoTokenizer.from_pretrained(gpt2_dir)
    assert tok.pad_token is None
    with pytest.raises(ValueError, match="no pad token"):
        tok(["a", "b c d"], padding=True)
    with pytest.raises(ValueError, match="no pad token"):
        tok.pad([{"input_ids": [1]}, {"input_ids": [1, 2]}])
    tok.pad_token = tok.eos_token
    assert tok.pad_token_id == tok.eos_token_id
    out = tok(["a", "b c d"], padding=True, padding_side="left")
    assert out["attention_mask"][0][0] == 0 and out["input_ids"][0][0] == tok.pad_token_id


def test_pad_features(bert):
    feats = [{"input_ids": [101, 7, 102], "token_type_ids": [0, 0, 0], "label": 1},
             {"input_ids": [101, 102], "token_type_ids": [0, 0], "label": 0}]
    out = bert.pad(feats, return_tensors="pt")
    assert out["input_ids"].tolist() == [[101, 7, 102], [101, 102, 0]]
    assert out["attention_mask"].tolist() == [[1, 1, 1], [1, 1, 0]]
    assert out["label"].tolist() == [1, 0]
    out = bert.pad(feats, padding="max_length", max_length=5, padding_side="left")
    assert out["input_ids"][1] == [0, 0, 0, 101, 102]
    assert out["token_type_ids"][1] == [0, 0, 0, 0, 0]
    out = bert.pad(feats, pad_to_multiple_of=4, return_tensors="np")
    assert isinstance(out["input_ids"], np.ndarray) and out["input_ids"].shape == (2, 4)
    tensors = bert.pad({"input_ids": [torch.tensor([1, 2, 3]), torch.tensor([4])]})
    assert isinstance(tensors["input_ids"], torch.Tensor)  # framework follows the input
    single = bert.pad({"input_ids": [1, 2]}, padding="max_length", max_length=4)
    assert single["input_ids"] == [1, 2, 0, 0]
    with pytest.raises(ValueError, match="input_ids"):
        bert.pad([{"labels": [1]}])
    with pytest.raises(ValueError, match="different lengths"):
        bert.pad(feats, padding=False, return_tensors="pt")


def test_batch_encoding_alignment(bert):
    text = "Hello wonderful world"
    enc = bert(text, return_tensors="pt")
    assert isinstance(enc, BatchEncoding) and isinstance(enc, dict | BatchEncoding)
    assert enc.input_ids is enc["input_ids"]
    assert enc.tokens() == ["[CLS]", "hello", "wonderful", "world", "[SEP]"]
    assert enc.char_to_token(6) == 2 and enc.char_to_token(0, 6) == 2
    assert tuple(enc.token_to_chars(2)) == (6, 15) and text[slice(*enc.token_to_chars(3))] == "world"
    assert enc.word_ids() == [None, 0, 1, 2, None]
    assert enc.token_to_word(3) == 2 and tuple(enc.word_to_tokens(1)) == (2, 3)
    assert enc[0].ids == enc["input_ids"][0].tolist()
    moved = enc.to("cpu")
    assert moved is enc and enc["input_ids"].device.type == "cpu"
    assert enc["input_ids"].shape == (1, 5)
    with pytest.raises(AttributeError):
        enc.not_a_key
    with pytest.raises(ValueError, match="padding=True"):
        bert(["a", "b c d e"], return_tensors="pt")


def test_encode_decode_tensor_inputs(bert):
    ids = bert.encode("Hello, world!")
    assert bert.decode(torch.tensor(ids)) == bert.decode(ids) == "[CLS] hello, world! [SEP]"
    assert bert.decode(ids, skip_special_tokens=True) == "hello, world!"
    assert bert.decode(np.array(ids)[1]) == "hello"
    assert bert.batch_decode(torch.tensor([ids, ids]), skip_special_tokens=True) == ["hello, world!"] * 2
    assert bert.encode("Hello", return_tensors="pt").shape == (1, 3)
    assert bert.clean_up_tokenization("a , b . c ' d n't") == "a, b. c'dn't"


def test_kwargs_override_config(minilm_dir):
    tok = AutoTokenizer.from_pretrained(minilm_dir, model_max_length=8, padding_side="left")
    assert tok.model_max_length == 8 and tok.padding_side == "left"
    out = tok("one two three four five six seven eight nine", truncation=True)
    assert len(out["input_ids"]) == 8 and out["input_ids"][-1] == tok.sep_token_id
    assert tok("a b c d e f g h i j k", max_length=5)["input_ids"][-1] == tok.sep_token_id  # max_length truncates
    with pytest.raises(ValueError, match="padding="):
        tok("a", padding="sideways")
    with pytest.raises(ValueError, match="truncation="):
        tok("a", truncation="middle")
    with pytest.raises(TypeError, match="unexpected keyword"):
        tok("a", retrun_tensors="pt")


def test_model_max_length_absent(gpt2_dir, tmp_path):
    for name in ("vocab.json", "merges.txt"):
        shutil.copy(gpt2_dir / name, tmp_path / name)
    tok = AutoTokenizer.from_pretrained(tmp_path)
    assert tok.model_max_length > 1e20
    long = "word " * 50
    assert len(tok(long, truncation=True)["input_ids"]) == len(tok(long)["input_ids"])  # nothing to truncate to
    with pytest.raises(ValueError, match="max_length"):
        tok("a", padding="max_length")


def test_missing_files_error(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(ModelNotFoundError) as info:
        AutoTokenizer.from_pretrained(tmp_path)
    msg = str(info.value)
    assert str(tmp_path) in msg and "tokenizer.json" in msg and "vocab.txt" in msg and "tokenizer.model" in msg
    with pytest.raises(ModelNotFoundError):
        AutoTokenizer.from_pretrained(tmp_path / "does-not-exist")


def test_corrupt_files_error(minilm_dir, tmp_path):
    shutil.copy(minilm_dir / "tokenizer_config.json", tmp_path / "tokenizer_config.json")
    (tmp_path / "tokenizer.json").write_text('{"version": "1.0", "model": {"type": "BPE", "vocab": ')
    with pytest.raises(ValueError, match="tokenizer.json.*corrupt"):
        AutoTokenizer.from_pretrained(tmp_path)
    (tmp_path / "tokenizer.json").unlink()
    (tmp_path / "tokenizer_config.json").write_text("{not json")
    with pytest.raises(ValueError, match="tokenizer_config.json is not valid JSON"):
        AutoTokenizer.from_pretrained(tmp_path)
    (tmp_path / "tokenizer_config.json").write_text("{}")
    (tmp_path / "tokenizer.model").write_bytes(b"\x00\x01garbage")
    with pytest.raises(ValueError, match="tokenizer.model"):
        AutoTokenizer.from_pretrained(tmp_path)


def test_trust_remote_code_refused(minilm_dir):
    with pytest.raises(ValueError, match="trust_remote_code"):
        AutoTokenizer.from_pretrained(minilm_dir, trust_remote_code=True)


def test_added_tokens_decoder_from_config(wordpiece_dir, tmp_path):
    shutil.copy(wordpiece_dir / "vocab.txt", tmp_path / "vocab.txt")
    n = len((wordpiece_dir / "vocab.txt").read_text(encoding="utf-8").splitlines())
    config = {"tokenizer_class": "BertTokenizer",
              "added_tokens_decoder": {str(n): {"content": "<extra>", "special": True, "lstrip": False,
                                                "rstrip": False, "normalized": False, "single_word": False}},
              "additional_special_tokens": ["<extra>"],
              "mask_token": {"content": "[MASK]", "lstrip": True, "rstrip": False, "normalized": False,
                             "single_word": False, "special": True, "__type": "AddedToken"}}
    (tmp_path / "tokenizer_config.json").write_text(json.dumps(config))
    tok = AutoTokenizer.from_pretrained(tmp_path)
    assert tok.convert_tokens_to_ids("<extra>") == n
    assert tok.mask_token == "[MASK]"
    assert tok.added_tokens_decoder[tok.mask_token_id].lstrip
    assert tok.decode(tok("x <extra>")["input_ids"], skip_special_tokens=True) == "x"


def test_text_target(bert):
    out = bert("question", text_target="answer here")
    assert out["labels"] == bert("answer here")["input_ids"]


def test_pickle_and_threads(bert):
    import pickle
    from concurrent.futures import ThreadPoolExecutor

    clone = pickle.loads(pickle.dumps(bert))
    assert clone("Hello there")["input_ids"] == bert("Hello there")["input_ids"]
    texts = [f"text number {i} " * (i % 7 + 1) for i in range(64)]

    def run(i: int) -> list[int]:
        if i % 2:  # interleave padded/truncated calls with plain ones on the shared backend
            return bert(texts[i], padding="max_length", max_length=20, truncation=True)["input_ids"]
        return bert(texts[i])["input_ids"]

    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(run, range(64)))
    for i, ids in enumerate(results):
        assert ids == run(i)
        if i % 2:
            assert len(ids) == 20


def test_subfolder_and_named_templates(minilm_dir, tmp_path):
    tok = AutoTokenizer.from_pretrained(minilm_dir)
    tok.chat_template = {"default": "{{ messages[0]['content'] }}", "tool_use": "TOOLS {{ tools | length if tools else 0 }}"}
    tok.save_pretrained(tmp_path / "tokenizer")
    again = AutoTokenizer.from_pretrained(tmp_path, subfolder="tokenizer")
    chat = [{"role": "user", "content": "hi"}]
    assert again.apply_chat_template(chat, tokenize=False) == "hi"
    assert again.apply_chat_template(chat, tools=[{"name": "f"}], tokenize=False) == "TOOLS 1"
    assert again.apply_chat_template(chat, chat_template="tool_use", tokenize=False) == "TOOLS 0"
    with pytest.raises(FileNotFoundError, match="subfolder"):
        AutoTokenizer.from_pretrained(tmp_path, subfolder="nope")
