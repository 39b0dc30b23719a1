"""Family tokenizer names (BertTokenizer, GPT2TokenizerFast, ...) build from the family's vocabulary
files and load from folders, giving the reference classes' ids."""
import pytest

import openformers as of
from openformers.tokenization.families import FAMILY_TOKENIZERS

TEXTS = ["Hello world, this is a test.", "Unaffable   tokens: don't split me!"]


def test_every_family_has_both_spellings():
    for name in FAMILY_TOKENIZERS:
        assert getattr(of, name) is getattr(of, name + "Fast")


def test_bert_from_vocab_file_matches_reference():
    import transformers

    vocab = of.embedded_model_path("minilm") / "vocab.txt"
    ours = of.BertTokenizer(vocab_file=str(vocab))
    theirs = transformers.BertTokenizer(str(vocab))  # transformers 5's first argument is the vocabulary file
    assert of.BertTokenizer(str(vocab))(TEXTS[0])["input_ids"] == ours(TEXTS[0])["input_ids"]
    for text in TEXTS:
        assert ours(text)["input_ids"] == theirs(text)["input_ids"]
        assert ours(text)["token_type_ids"] == theirs(text)["token_type_ids"]
    assert of.BertTokenizerFast.from_pretrained(of.embedded_model_path("minilm"))(TEXTS[0])["input_ids"] == \
        theirs(TEXTS[0])["input_ids"]


def test_gpt2_from_vocab_and_merges_matches_reference(tmp_path):
    import transformers
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(TEXTS * 20, trainers.BpeTrainer(vocab_size=300, special_tokens=["<|endoftext|>"],
                                                            initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    tok.model.save(str(tmp_path))
    vocab, merges = tmp_path / "vocab.json", tmp_path / "merges.txt"
    ours = of.GPT2Tokenizer(str(vocab), str(merges))
    theirs = transformers.GPT2Tokenizer(str(vocab), str(merges))
    for text in TEXTS:
        assert ours(text)["input_ids"] == theirs(text)["input_ids"]
        assert ours.decode(ours(text)["input_ids"]) == text


def test_missing_files_explain(tmp_path):
    with pytest.raises(ValueError, match="vocab_file"):
        of.BertTokenizer()
    with pytest.raises(FileNotFoundError, match="merges_file"):
        (tmp_path / "vocab.json").write_text("{}")
        of.GPT2Tokenizer(str(tmp_path / "vocab.json"))
