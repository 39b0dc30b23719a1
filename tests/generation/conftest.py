"""Tiny random causal LMs built with transformers (the oracle) and loaded here, plus a tiny tokenizer."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

VOCAB = 300
BOS, EOS, PAD = 1, 2, 0

FAMILIES = {
    "llama": ("LlamaConfig", "LlamaForCausalLM", "openformers.models.llama", "LlamaForCausalLM"),
    "mistral": ("MistralConfig", "MistralForCausalLM", "openformers.models.llama", "MistralForCausalLM"),
    "qwen2": ("Qwen2Config", "Qwen2ForCausalLM", "openformers.models.llama", "Qwen2ForCausalLM"),
    "gpt2": ("GPT2Config", "GPT2LMHeadModel", "openformers.models.gpt2", "GPT2LMHeadModel"),
}


def _config_kwargs(family: str) -> dict:
    special = dict(bos_token_id=BOS, eos_token_id=EOS, pad_token_id=PAD)
    if family == "gpt2":
        # a large init spread gives varied (not repetitive) greedy continuations
        return dict(vocab_size=VOCAB, n_embd=32, n_layer=2, n_head=4, n_positions=128, initializer_range=0.3, **special)
    kw = dict(vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
              num_key_value_heads=2, max_position_embeddings=128, initializer_range=0.3, **special)
    if family == "mistral":
        kw["sliding_window"] = 6  # shorter than prompt + generation, so the window matters
    if family == "qwen2":
        kw["tie_word_embeddings"] = True
    return kw


class Pair:
    """The transformers model and ours, loaded from the same saved directory."""

    def __init__(self, family: str, path: Path) -> None:
        import importlib

        import transformers

        cfg_name, hf_name, module, ours_name = FAMILIES[family]
        config = getattr(transformers, cfg_name)(**_config_kwargs(family))
        torch.manual_seed(0)
        self.hf = getattr(transformers, hf_name)(config).eval()
        self.hf.save_pretrained(path)
        self.ours = getattr(importlib.import_module(module), ours_name).from_pretrained(path)
        self.family = family
        self.path = path


_PAIRS: dict[str, Pair] = {}


@pytest.fixture(params=list(FAMILIES), scope="session")
def pair(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Pair:
    return get_pair(request.param, tmp_path_factory)


def get_pair(family: str, tmp_path_factory: pytest.TempPathFactory) -> Pair:
    if family not in _PAIRS:
        module = FAMILIES[family][2]
        pytest.importorskip(module)
        _PAIRS[family] = Pair(family, tmp_path_factory.mktemp(f"gen_{family}"))
    return _PAIRS[family]


@pytest.fixture(scope="session")
def llama(tmp_path_factory: pytest.TempPathFactory) -> Pair:
    return get_pair("llama", tmp_path_factory)


@pytest.fixture(scope="session")
def tokenizer_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A byte-level BPE tokenizer with VOCAB tokens ("<pad>", "<s>", "</s>" = 0, 1, 2)."""
    from tokenizers import ByteLevelBPETokenizer

    corpus = [
        "Hello world! The quick brown fox jumps over the lazy dog.",
        "Héllo wörld, café naïve résumé. 日本語のテキスト 🙂🚀",
        "stop here. STOP there. full stop, period. don't stop me now",
    ] * 30
    d = tmp_path_factory.mktemp("gen_tok")
    tok = ByteLevelBPETokenizer()
    tok.train_from_iterator(corpus, vocab_size=VOCAB, min_frequency=1, special_tokens=["<pad>", "<s>", "</s>"])
    assert tok.get_vocab_size() <= VOCAB
    tok.save(str(d / "tokenizer.json"))
    (d / "tokenizer_config.json").write_text(json.dumps({
        "tokenizer_class": "PreTrainedTokenizerFast", "bos_token": "<s>", "eos_token": "</s>", "pad_token": "<pad>",
        "model_max_length": 128,
    }))
    return d


def left_padded_batch(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Three prompts of lengths 7, 4 and 6, left-padded with PAD."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(3, VOCAB, (3, 7), generator=g)
    mask = torch.ones_like(ids)
    mask[1, :3] = 0
    mask[2, :1] = 0
    return ids.masked_fill(mask == 0, PAD), mask


def right_pad(ids: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The same rows as a left-padded batch, padded on the right instead."""
    order = torch.sort(1 - mask, dim=1, stable=True).indices
    return ids.gather(1, order), mask.gather(1, order)


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny models gain nothing from threads, and on a busy machine a second thread stalls each small op."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
