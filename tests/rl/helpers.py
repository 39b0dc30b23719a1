"""Tiny models and the SmolLM2 tokenizer for the post-training tests."""
from __future__ import annotations

import functools
import os
import tempfile

import torch


@functools.lru_cache(maxsize=1)
def tokenizer_dir() -> str:
    """The embedded SmolLM2 tokenizer (with its chat template) saved once as tokenizer.json."""
    from openformers import AutoTokenizer

    path = os.path.join(tempfile.gettempdir(), f"openformers-rl-tests-{os.getuid()}", "tokenizer")
    if not os.path.isfile(os.path.join(path, "tokenizer.json")):
        tok = AutoTokenizer.from_pretrained("smollm2")
        tok.save_pretrained(path)
    return path


def tokenizer():
    from openformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tokenizer_dir())
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return tok


def llama_config(**kw):
    from openformers import LlamaConfig

    base = dict(vocab_size=49152, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                num_key_value_heads=2, max_position_embeddings=256, tie_word_embeddings=True, pad_token_id=2,
                bos_token_id=1, eos_token_id=2)
    base.update(kw)
    return LlamaConfig(**base)


def tiny_llama(seed: int = 0, **kw):
    from openformers import LlamaForCausalLM

    torch.manual_seed(seed)
    return LlamaForCausalLM(llama_config(**kw))


def tiny_llama_classifier(seed: int = 0, **kw):
    from openformers import LlamaForSequenceClassification

    torch.manual_seed(seed)
    return LlamaForSequenceClassification(llama_config(num_labels=1, **kw))


def tiny_gpt2_dir(path) -> str:
    """A tiny random GPT-2 with the SmolLM2 tokenizer saved in ``path`` (stands in for a hub name)."""
    from openformers import AutoTokenizer, GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config(vocab_size=49152, n_positions=128, n_embd=32, n_layer=2, n_head=4,
                                       bos_token_id=1, eos_token_id=2))
    model.save_pretrained(str(path))
    AutoTokenizer.from_pretrained(tokenizer_dir()).save_pretrained(str(path))
    return str(path)


WORDS = ["<pad>", "<s>", "</s>", "cat", "dog", "sun", "moon", "red", "blue", "yes", "no", "good", "bad", "the", "a",
         "is", "and", "say", "pick", "word", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine",
         "ten", ":", "?", "!", ".", ",", "user", "assistant", "system", "<|im_start|>", "<|im_end|>", "tree", "sky",
         "sea", "fish", "bird", "car", "road", "city", "house", "door", "book", "pen", "cup", "tea", "milk", "bread",
         "rice", "salt", "gold", "iron", "wood", "stone", "rain", "snow"]
TEMPLATE = ("{% for message in messages %}{{ '<|im_start|> ' + message['role'] + ' ' + message['content'] + ' <|im_end|> ' }}"
            "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|> assistant ' }}{% endif %}")


def word_tokenizer_dir(path) -> str:
    """A 64-word whole-word tokenizer (tokenizer.json + config, chat template): tiny models sample
    every word often, so rule-based rewards give a signal from the first step."""
    import json
    import os

    from tokenizers import Tokenizer, models, pre_tokenizers, decoders

    os.makedirs(path, exist_ok=True)
    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(WORDS)}, unk_token="<pad>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.decoder = decoders.WordPiece(prefix="##")  # joins words with spaces
    tok.save(os.path.join(path, "tokenizer.json"))
    with open(os.path.join(path, "tokenizer_config.json"), "w") as f:
        json.dump({"tokenizer_class": "PreTrainedTokenizerFast", "pad_token": "<pad>", "bos_token": "<s>",
                   "eos_token": "</s>", "chat_template": TEMPLATE, "model_max_length": 512}, f)
    return str(path)


def word_tokenizer(path):
    from openformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(word_tokenizer_dir(path))


def tiny_word_llama(seed: int = 0, classifier: bool = False):
    from openformers import LlamaForCausalLM, LlamaForSequenceClassification

    torch.manual_seed(seed)
    cfg = llama_config(vocab_size=len(WORDS), pad_token_id=0, bos_token_id=1, eos_token_id=2,
                       **({"num_labels": 1} if classifier else {}))
    return (LlamaForSequenceClassification if classifier else LlamaForCausalLM)(cfg)
