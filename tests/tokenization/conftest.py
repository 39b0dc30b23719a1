"""Tiny tokenizers trained on a small corpus, written in the Hugging Face file layouts."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

CORPUS = [
    "Hello world! This is a small corpus for tokenizer tests.",
    "Héllo wörld, café naïve résumé façade.",
    "日本語のテキストと中文文本。",
    "Emoji time 🙂🚀 and more 🎉!",
    "tabs\tand   many    spaces   here",
    "The quick brown fox jumps over the lazy dog.",
    "Numbers 12345 and 3.14159 and 2,718.",
    "don't won't it's they're we've I'm",
    "UPPER lower MiXeD CaSe",
    "a b c d e f g h i j k l m n o p",
] * 20

TEXTS = [
    "Hello world!",
    "Héllo wörld, café naïve",
    "日本語のテキスト 中文",
    "emoji 🙂🚀 mixed",
    "   leading and   long    whitespace   runs   ",
    "special tokens inside: [CLS] <s> </s> [SEP] <|endoftext|>",
    "",
    "The quick brown fox jumps over the lazy dog. " * 3,
    "don't stop, it's fine",
]


def write_json(path: Path, data: object) -> None:
    path.write_text(json.dumps(data), encoding="utf-8")


@pytest.fixture(scope="session")
def wordpiece_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tokenizers import BertWordPieceTokenizer

    d = tmp_path_factory.mktemp("wordpiece")
    tok = BertWordPieceTokenizer(lowercase=True)
    tok.train_from_iterator(CORPUS, vocab_size=300, min_frequency=1)
    tok.save_model(str(d))
    write_json(d / "tokenizer_config.json", {"tokenizer_class": "BertTokenizer", "do_lower_case": True,
                                              "model_max_length": 64})
    assert sorted(p.name for p in d.iterdir()) == ["tokenizer_config.json", "vocab.txt"]
    return d


@pytest.fixture(scope="session")
def gpt2_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tokenizers import ByteLevelBPETokenizer

    d = tmp_path_factory.mktemp("gpt2")
    tok = ByteLevelBPETokenizer()
    tok.train_from_iterator(CORPUS, vocab_size=400, min_frequency=1, special_tokens=["<|endoftext|>"])
    tok.save_model(str(d))
    write_json(d / "tokenizer_config.json", {"tokenizer_class": "GPT2Tokenizer", "model_max_length": 64})
    return d


@pytest.fixture(scope="session")
def roberta_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tokenizers import ByteLevelBPETokenizer

    d = tmp_path_factory.mktemp("roberta")
    tok = ByteLevelBPETokenizer()
    tok.train_from_iterator(CORPUS, vocab_size=400, min_frequency=1,
                            special_tokens=["<s>", "<pad>", "</s>", "<unk>", "<mask>"])
    tok.save_model(str(d))
    write_json(d / "tokenizer_config.json", {"tokenizer_class": "RobertaTokenizer", "model_max_length": 64})
    return d


def _train_sentencepiece(d: Path, model_type: str) -> None:
    import sentencepiece as spm

    corpus = d / "corpus.txt"
    corpus.write_text("\n".join(CORPUS), encoding="utf-8")
    spm.SentencePieceTrainer.train(
        input=str(corpus), model_prefix=str(d / "tokenizer"), vocab_size=400, model_type=model_type,
        byte_fallback=True, character_coverage=0.98, bos_id=1, eos_id=2, unk_id=0, pad_id=-1,
        add_dummy_prefix=True, remove_extra_whitespaces=False, normalization_rule_name="identity",
        minloglevel=2, hard_vocab_limit=False,
    )
    corpus.unlink()
    (d / "tokenizer.vocab").unlink()


@pytest.fixture(scope="session")
def sp_bpe_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("sp_bpe")
    _train_sentencepiece(d, "bpe")
    write_json(d / "tokenizer_config.json", {"tokenizer_class": "LlamaTokenizer", "add_bos_token": True,
                                              "add_eos_token": False, "model_max_length": 64})
    return d


@pytest.fixture(scope="session")
def sp_unigram_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("sp_unigram")
    _train_sentencepiece(d, "unigram")
    return d


@pytest.fixture(scope="session")
def minilm_dir() -> Path:
    from openformers.core.hub import embedded_model_path

    return embedded_model_path("minilm")


@pytest.fixture(scope="session")
def tokenizer_json_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A Unigram tokenizer.json (with its own normalizer) next to a tokenizer_config.json."""
    from tokenizers import Tokenizer, decoders, normalizers, pre_tokenizers
    from tokenizers.models import Unigram
    from tokenizers.trainers import UnigramTrainer

    d = tmp_path_factory.mktemp("tokjson")
    tok = Tokenizer(Unigram())
    tok.normalizer = normalizers.NFKC()
    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    tok.decoder = decoders.Metaspace()
    tok.train_from_iterator(CORPUS, UnigramTrainer(vocab_size=200, special_tokens=["<pad>", "<unk>", "<eos>"],
                                                   unk_token="<unk>"))
    tok.save(str(d / "tokenizer.json"))
    write_json(d / "tokenizer_config.json", {"tokenizer_class": "PreTrainedTokenizerFast", "pad_token": "<pad>",
                                              "unk_token": "<unk>", "eos_token": "<eos>", "model_max_length": 32})
    return d
