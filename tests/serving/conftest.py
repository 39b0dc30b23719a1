"""A tiny random Llama with the SmolLM2 tokenizer (real vocabulary and chat template), saved once per session."""
from __future__ import annotations

import threading
from pathlib import Path

import pytest
import torch


def build_tiny_llama(path: Path, hidden_size: int = 32, intermediate_size: int = 64,
                     initializer_range: float = 0.3) -> Path:
    import openformers
    from openformers import AutoTokenizer
    from openformers.models.llama import LlamaConfig, LlamaForCausalLM

    tokenizer = AutoTokenizer.from_pretrained(openformers.embedded_model_path("smollm2"))
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=hidden_size, intermediate_size=intermediate_size,
                         num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                         initializer_range=initializer_range, tie_word_embeddings=True, bos_token_id=tokenizer.bos_token_id,
                         eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    torch.manual_seed(0)
    model = LlamaForCausalLM(config).eval()
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def tiny_llama_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_llama(tmp_path_factory.mktemp("tiny-llama"))


class EngineEvents:
    """The token events of ``n`` engine requests, by request index; :meth:`wait` returns once all have finished."""

    def __init__(self, n: int) -> None:
        self.events: dict[int, list] = {i: [] for i in range(n)}
        self._left, self._lock, self._done = n, threading.Lock(), threading.Event()

    def sink_for(self, i: int):
        def sink(ev):
            self.events[i].append(ev)
            if ev.finish_reason is not None:
                with self._lock:
                    self._left -= 1
                    if self._left == 0:
                        self._done.set()
        return sink

    def wait(self, timeout: float) -> dict[int, list]:
        assert self._done.wait(timeout), "the engine did not finish every request"
        return self.events
