"""The real SmolLM2-135M-Instruct (the embedded GGUF) behind ``openformers serve``, as users run it by default."""
from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor

import pytest
import torch

from openformers.serving.json_mode import START, run
from tests.serving.server import ServerProcess

openai = pytest.importorskip("openai")
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def server():
    srv = ServerProcess("--max-batch-size", "4")  # the default model: smollm2
    yield srv
    srv.stop()


def test_default_model_greedy_equals_generate_and_json_mode(server):
    from openformers import AutoModelForCausalLM, AutoTokenizer

    client = server.openai()
    assert [m.id for m in client.models.list().data] == ["smollm2"]
    questions = ["What is the capital of France?", "Name a primary colour."]
    messages = [[{"role": "user", "content": q}] for q in questions]
    with ThreadPoolExecutor(2) as pool:
        replies = list(pool.map(lambda m: client.chat.completions.create(model="smollm2", messages=m, max_tokens=8,
                                                                         temperature=0), messages))
    model = AutoModelForCausalLM.from_pretrained("smollm2")
    tokenizer = AutoTokenizer.from_pretrained("smollm2")
    for m, reply in zip(messages, replies):
        ids = tokenizer.apply_chat_template(m, add_generation_prompt=True, tokenize=True)
        ids = ids["input_ids"] if hasattr(ids, "keys") else list(ids)
        ref = model.generate(torch.tensor([ids]), max_new_tokens=8, do_sample=False)[0, len(ids):]
        assert reply.choices[0].message.content == tokenizer.decode(ref, skip_special_tokens=True)
    reply = client.chat.completions.create(
        model="smollm2", max_tokens=64, temperature=0, response_format={"type": "json_object"},
        messages=[{"role": "user", "content": 'Give the capital of France as JSON like {"capital": "..."}.'}])
    text = reply.choices[0].message.content
    assert run(START, text) is not None, text  # a valid JSON object so far
    assert text.startswith("{") and '"' in text
    if reply.choices[0].finish_reason == "stop":
        assert isinstance(json.loads(text), dict)
