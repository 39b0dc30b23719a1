"""The command line, run as a real subprocess on a tiny local model with the real SmolLM2 tokenizer."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from openformers.core.hub import ModelNotFoundError, embedded_model_path


@pytest.fixture(scope="module")
def tiny_chat_model(tmp_path_factory) -> Path:
    try:
        embedded_model_path("smollm2")
    except ModelNotFoundError as exc:
        pytest.skip(str(exc))
    from openformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tokenizer = AutoTokenizer.from_pretrained("smollm2")
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=len(tokenizer), hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                      num_attention_heads=2, num_key_value_heads=1, tie_word_embeddings=True,
                      bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id)
    path = tmp_path_factory.mktemp("tiny-chat")
    LlamaForCausalLM(cfg).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def _cli(*args: str, stdin: str = "") -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "openformers", *args], input=stdin, capture_output=True, text=True, timeout=300)


def test_help_lists_commands():
    out = _cli("--help")
    assert out.returncode == 0
    for command in ("chat", "generate", "embed", "similarity"):
        assert command in out.stdout


def test_chat_keeps_conversation_and_handles_commands(tiny_chat_model):
    script = "hello there\n/unknown\n/reset\nsecond question\n/exit\nnever read\n"
    out = _cli("chat", "--model", str(tiny_chat_model), "--max-new-tokens", "5", "--timing", stdin=script)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "[conversation cleared]" in out.stdout and "unknown command '/unknown'" in out.stdout
    assert out.stderr.count("[first token") == 2  # two answers, then /exit stopped reading


def test_chat_ends_cleanly_at_end_of_input(tiny_chat_model):
    out = _cli("chat", "--model", str(tiny_chat_model), "--max-new-tokens", "3", stdin="hi\n")
    assert out.returncode == 0 and "Traceback" not in out.stderr


def test_generate_is_greedy_and_reproducible(tiny_chat_model):
    a = _cli("generate", "Once upon a time", "--model", str(tiny_chat_model), "--max-new-tokens", "6")
    b = _cli("generate", "Once upon a time", "--model", str(tiny_chat_model), "--max-new-tokens", "6")
    assert a.returncode == 0, a.stderr[-2000:]
    assert a.stdout.startswith("Once upon a time") and a.stdout == b.stdout


def test_generate_sampling_with_seed(tiny_chat_model):
    args = ("generate", "Hi", "--model", str(tiny_chat_model), "--max-new-tokens", "6", "--do-sample", "--temperature", "1.5", "--seed", "3")
    assert _cli(*args).stdout == _cli(*args).stdout


def test_bad_option_is_clear(tiny_chat_model):
    out = _cli("generate", "Hi", "--model", str(tiny_chat_model), "--do-sample", "--top-p", "1.5")
    assert out.returncode == 2 and "top_p" in out.stderr and "Traceback" not in out.stderr


def test_similarity_ranks_related_sentence_first():
    try:
        embedded_model_path("minilm")
    except ModelNotFoundError as exc:
        pytest.skip(str(exc))
    out = _cli("similarity", "A man is playing a guitar.", "The stock market fell sharply today.", "Someone plays an instrument.")
    assert out.returncode == 0, out.stderr[-2000:]
    lines = out.stdout.splitlines()
    assert "Someone plays an instrument." in lines[1]


def test_every_option_has_help_with_its_default():
    from openformers.cli.main import build_parser

    parser = build_parser()
    sub = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction")
    for name, command in sub.choices.items():
        text = command.format_help()
        options = [a for a in command._actions if a.option_strings and a.dest != "help"]
        for action in options:
            assert action.help, f"openformers {name} {action.option_strings[0]} has no help"
        if options:  # a command of sub-commands only (export) has no defaults to show
            assert "(default:" in text, f"openformers {name}: its help shows no defaults"
