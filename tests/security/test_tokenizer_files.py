"""Tokenizer files with settings of the wrong type: an error naming the file and the field."""
from __future__ import annotations

import json

import pytest
from tokenizers import Tokenizer, models, pre_tokenizers


@pytest.fixture
def tok_dir(tmp_path):
    vocab = {"[UNK]": 0, "hello": 1, "world": 2}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.save(str(tmp_path / "tokenizer.json"))
    return tmp_path


def _write_config(path, **fields):
    (path / "tokenizer_config.json").write_text(json.dumps({"unk_token": "[UNK]", **fields}))


def _load(path):
    from openformers.tokenization.auto import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(path))


def test_valid_files_load(tok_dir):
    _write_config(tok_dir, model_max_length=512, chat_template="{{ messages }}")
    tok = _load(tok_dir)
    assert tok.model_max_length == 512 and tok("hello world")["input_ids"] == [1, 2]


@pytest.mark.parametrize("value", ["512", [1], float("nan"), -1])
def test_model_max_length_that_is_not_a_number(tok_dir, value):
    _write_config(tok_dir, model_max_length=value)
    with pytest.raises(ValueError, match="model_max_length = .* must be a non-negative number"):
        _load(tok_dir)


@pytest.mark.parametrize("value", [3, {"a": 1}, [{"name": "x"}], ["tpl"]])
def test_chat_template_that_is_not_a_string_or_named_list(tok_dir, value):
    _write_config(tok_dir, chat_template=value)
    with pytest.raises(ValueError, match="chat_template must be a string"):
        _load(tok_dir)


def test_named_chat_templates_are_accepted(tok_dir):
    _write_config(tok_dir, chat_template=[{"name": "default", "template": "{{ 1 }}"}, {"name": "tool_use", "template": "x"}])
    assert set(_load(tok_dir).chat_template) == {"default", "tool_use"}


def test_special_token_of_the_wrong_type(tok_dir):
    _write_config(tok_dir, eos_token=5)
    with pytest.raises(ValueError, match="eos_token = 5 must be a string"):
        _load(tok_dir)


def test_nested_and_invalid_json_name_the_file(tok_dir):
    (tok_dir / "tokenizer_config.json").write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(ValueError, match="tokenizer_config.json"):
        _load(tok_dir)
    (tok_dir / "tokenizer_config.json").write_bytes(b'{"a": "\xff"}')
    with pytest.raises(ValueError, match="tokenizer_config.json"):
        _load(tok_dir)
