"""``openformers serve FILE.gguf --quantized``: the 4-bit weights stay quantized and greedy answers equal ``generate()``."""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest
import torch

from openformers import AutoModelForCausalLM, AutoTokenizer
from tests.serving.server import ServerProcess

openai = pytest.importorskip("openai")
pytest.importorskip("gguf")
MODEL = "tiny-q4"


@pytest.fixture(scope="module")
def gguf_file(tiny_llama_dir, tmp_path_factory):
    from openformers.export.gguf import save_gguf

    model = AutoModelForCausalLM.from_pretrained(tiny_llama_dir)
    tokenizer = AutoTokenizer.from_pretrained(tiny_llama_dir)
    return save_gguf(model, tmp_path_factory.mktemp("tiny-gguf") / "tiny-q4_0.gguf", tokenizer, "q4_0")


@pytest.fixture(scope="module")
def local(gguf_file):
    """The same file loaded the way ``--quantized`` loads it (projections kept 4-bit)."""
    from openformers.quantization import GGUFQuantizationConfig
    from openformers.quantization.gguf_linear import QuantizedLinear

    model = AutoModelForCausalLM.from_pretrained(str(gguf_file), quantization_config=GGUFQuantizationConfig())
    assert any(isinstance(m, QuantizedLinear) for m in model.modules())
    return model, AutoTokenizer.from_pretrained(str(gguf_file))


@pytest.fixture(scope="module")
def server(gguf_file):
    srv = ServerProcess("--model", str(gguf_file), "--quantized", "--served-model-name", MODEL,
                        "--max-batch-size", "4", "--prefill-chunk", "32")
    yield srv
    srv.stop()


def _prompt(i: int) -> str:
    return f"Item {i}: " + "the quick brown fox " * (1 + 2 * i)  # different lengths, one spans two prefill chunks


def _reference(model, tokenizer, text: str, max_new_tokens: int) -> list[int]:
    ids = tokenizer(text)["input_ids"]
    out = model.generate(torch.tensor([ids]), max_new_tokens=max_new_tokens, do_sample=False)[0, len(ids):].tolist()
    eos = model.generation_config.eos_token_id
    return out[: out.index(eos) + 1] if eos in out else out


def test_quantized_completions_and_streams_equal_generate(server, local):
    model, tokenizer = local
    client = server.openai()
    assert [m.id for m in client.models.list().data] == [MODEL]
    max_tokens = [6, 9, 12, 7]

    def complete(i):
        return client.completions.create(model=MODEL, prompt=_prompt(i), max_tokens=max_tokens[i], temperature=0)

    def stream(i):
        chunks = client.completions.create(model=MODEL, prompt=_prompt(i), max_tokens=max_tokens[i], temperature=0,
                                           stream=True)
        text, finish = "", None
        for chunk in chunks:
            for choice in chunk.choices:
                text += choice.text or ""
                finish = choice.finish_reason or finish
        return text, finish

    with ThreadPoolExecutor(4) as pool:  # four at once: one batch, rows of different lengths
        replies = list(pool.map(complete, range(4)))
        streamed = list(pool.map(stream, range(4)))
    for i in range(4):
        ref = _reference(model, tokenizer, _prompt(i), max_tokens[i])
        text = tokenizer.decode(ref, skip_special_tokens=True)
        finish = "stop" if ref[-1] == tokenizer.eos_token_id else "length"
        assert replies[i].choices[0].text == text, f"prompt {i}"
        assert replies[i].choices[0].finish_reason == finish
        assert replies[i].usage.completion_tokens == len(ref)
        assert streamed[i] == (text, finish), f"stream {i}"
