"""Chat template rendering and tokenization against transformers' apply_chat_template."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from jinja2.exceptions import SecurityError, TemplateError

from openformers import AutoTokenizer

transformers = pytest.importorskip("transformers")

LLAMA3 = (
    "{% set loop_messages = messages %}{% for message in loop_messages %}"
    "{% set content = '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n' + message['content'] | trim"
    " + '<|eot_id|>' %}{% if loop.index0 == 0 %}{% set content = bos_token + content %}{% endif %}{{ content }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}"
)
CHATML = (
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>'"
    " + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
TOOLS_TEMPLATE = (
    "{% if tools %}{{ tools | tojson }}\n{% endif %}{% for m in messages %}"
    "{% if m['role'] not in ['user', 'assistant', 'system'] %}{{ raise_exception('bad role ' + m['role']) }}{% endif %}"
    "{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}{{ extra | default('') }}"
)
SPECIALS = ["<|begin_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>", "<|im_start|>",
            "<|im_end|>", "<|endoftext|>"]
CHAT = [
    {"role": "system", "content": "You are terse. Ünïcode 🙂"},
    {"role": "user", "content": "Hello there!"},
    {"role": "assistant", "content": "Hi. How can I help?"},
    {"role": "user", "content": "Count to three."},
]


def _make_dir(base: Path, gpt2_dir: Path, name: str, config: dict, template_file: str | None = None,
              add_bos: bool = True) -> Path:
    from tokenizers import Tokenizer, decoders, pre_tokenizers, processors
    from tokenizers.models import BPE

    d = base / name
    d.mkdir()
    tok = Tokenizer(BPE.from_file(str(gpt2_dir / "vocab.json"), str(gpt2_dir / "merges.txt")))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens(SPECIALS)
    bos = "<|begin_of_text|>"
    if add_bos:  # Llama-3 style: the tokenizer itself prepends BOS
        tok.post_processor = processors.TemplateProcessing(
            single=f"{bos} $A", pair=f"{bos} $A {bos} $B", special_tokens=[(bos, tok.token_to_id(bos))])
    tok.save(str(d / "tokenizer.json"))
    (d / "tokenizer_config.json").write_text(json.dumps(config))
    if template_file is not None:
        (d / "chat_template.jinja").write_text(template_file)
    return d


@pytest.fixture(scope="module")
def chat_dirs(tmp_path_factory: pytest.TempPathFactory, gpt2_dir: Path) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("chat")
    common = {"tokenizer_class": "PreTrainedTokenizerFast", "bos_token": "<|begin_of_text|>",
              "eos_token": "<|eot_id|>", "pad_token": "<|endoftext|>", "model_max_length": 512}
    return {
        "llama3": _make_dir(base, gpt2_dir, "llama3", {**common, "chat_template": LLAMA3}),
        # Qwen style: no BOS at all, template in a separate chat_template.jinja
        "chatml": _make_dir(base, gpt2_dir, "chatml", {**common, "bos_token": None, "eos_token": "<|im_end|>"},
                            template_file=CHATML, add_bos=False),
    }


@pytest.fixture(scope="module", params=["llama3", "chatml"])
def pair(request: pytest.FixtureRequest, chat_dirs: dict[str, Path]):
    d = chat_dirs[request.param]
    return AutoTokenizer.from_pretrained(d), transformers.AutoTokenizer.from_pretrained(str(d))


def test_chat_template_is_read(pair):
    ours, theirs = pair
    assert ours.chat_template == theirs.chat_template


@pytest.mark.parametrize("options", [
    {"add_generation_prompt": True}, {"add_generation_prompt": False}, {"continue_final_message": True},
])
def test_render_matches(pair, options):
    ours, theirs = pair
    chat = CHAT + ([{"role": "assistant", "content": "One, two"}] if options.get("continue_final_message") else [])
    text = ours.apply_chat_template(chat, tokenize=False, **options)
    assert text == theirs.apply_chat_template(chat, tokenize=False, **options)
    ids = ours.apply_chat_template(chat, tokenize=True, **options)
    assert ids == theirs.apply_chat_template(chat, tokenize=True, return_dict=False, **options)
    if options.get("continue_final_message"):
        assert text.endswith("One, two")


def test_return_dict_and_batches(pair):
    ours, theirs = pair
    batch = [CHAT, CHAT[:2]]
    kw = dict(add_generation_prompt=True, return_dict=True, padding=True)
    out = ours.apply_chat_template(batch, **kw)
    ref = theirs.apply_chat_template(batch, **kw)
    assert out["input_ids"] == ref["input_ids"]
    assert out["attention_mask"] == ref["attention_mask"]
    pt = ours.apply_chat_template(batch, return_tensors="pt", **kw)
    assert pt["input_ids"].tolist() == ref["input_ids"]
    single = ours.apply_chat_template(CHAT, return_dict=True)
    assert single["input_ids"] == theirs.apply_chat_template(CHAT, return_dict=True)["input_ids"]
    truncated = ours.apply_chat_template(CHAT, truncation=True, max_length=10)
    assert truncated == theirs.apply_chat_template(CHAT, truncation=True, max_length=10, return_dict=False)


def test_bos_never_doubled(chat_dirs):
    tok = AutoTokenizer.from_pretrained(chat_dirs["llama3"])
    bos = tok.bos_token_id
    assert tok("hi")["input_ids"][0] == bos  # the tokenizer itself prepends BOS
    ids = tok.apply_chat_template(CHAT)
    assert ids[0] == bos and ids[1] != bos
    assert ids.count(bos) == 1
    # a template that does not write BOS still gets exactly one
    ids = tok.apply_chat_template(CHAT, chat_template=CHATML)
    assert ids[0] == bos and ids.count(bos) == 1
    text = tok.apply_chat_template(CHAT, chat_template=CHATML, tokenize=False)
    assert ids == [bos] + tok(text, add_special_tokens=False)["input_ids"]


def test_template_helpers_and_sandbox(pair):
    ours, theirs = pair
    tools = [{"type": "function", "function": {"name": "get_weather", "description": "Wetter <b>&",
                                               "parameters": {"type": "object"}}}]
    kw = dict(chat_template=TOOLS_TEMPLATE, tools=tools, tokenize=False, extra="END")
    assert ours.apply_chat_template(CHAT, **kw) == theirs.apply_chat_template(CHAT, **kw)
    assert "Wetter <b>&" in ours.apply_chat_template(CHAT, **kw)  # tojson does not HTML-escape
    with pytest.raises(TemplateError, match="bad role tool"):
        ours.apply_chat_template([{"role": "tool", "content": "x"}], chat_template=TOOLS_TEMPLATE)
    year = ours.apply_chat_template(CHAT, chat_template="{{ strftime_now('%Y') }}", tokenize=False)
    assert year.isdigit() and len(year) == 4
    with pytest.raises(SecurityError):
        ours.apply_chat_template(CHAT, chat_template="{{ messages.__class__.__mro__ }}", tokenize=False)
    with pytest.raises(SecurityError):  # immutable sandbox: no mutation of inputs
        ours.apply_chat_template(CHAT, chat_template="{{ messages.append(1) }}", tokenize=False)


def test_chat_errors(wordpiece_dir):
    tok = AutoTokenizer.from_pretrained(wordpiece_dir)
    with pytest.raises(ValueError, match="no chat template"):
        tok.apply_chat_template(CHAT)
    with pytest.raises(ValueError, match="cannot both"):
        tok.apply_chat_template(CHAT, chat_template=CHATML, add_generation_prompt=True, continue_final_message=True)
    with pytest.raises(ValueError, match="not valid Jinja"):
        tok.apply_chat_template(CHAT, chat_template="{% for %}")
