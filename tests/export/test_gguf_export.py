"""GGUF export: files read back bit for bit, by transformers' GGUF loader, and by llama.cpp when installed;
the embedded SmolLM2 re-exported with its tokenizer and chat template."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

gguf = pytest.importorskip("gguf")

import openformers  # noqa: E402
from openformers.core.gguf import GGUFFile, read_gguf_metadata  # noqa: E402
from openformers.export.gguf import save_gguf  # noqa: E402
from openformers.models.gguf_loading import read_gguf_model  # noqa: E402

TINY = dict(vocab_size=128, hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=2, max_position_embeddings=64, rms_norm_eps=1e-5)
FAMILIES = {
    "llama": ("Llama", {}),
    "mistral": ("Mistral", {"sliding_window": 16}),
    "qwen2": ("Qwen2", {}),
    "qwen3": ("Qwen3", {"head_dim": 24, "tie_word_embeddings": True}),
    "qwen3-bias": ("Qwen3", {"attention_bias": True}),
    "gemma": ("Gemma", {"head_dim": 24}),  # norms written as 1 + weight, embeddings scaled, tanh-GELU; tied
    "starcoder2": ("Starcoder2", {"norm_epsilon": 1e-3}),  # LayerNorms with biases, c_fc/c_proj, biases; tied
}


def _tiny(family: str, dtype: torch.dtype = torch.float32, **overrides):
    prefix, extra = FAMILIES[family]
    config = getattr(openformers, f"{prefix}Config")(**{**TINY, **extra, **overrides})
    torch.manual_seed(0)
    model = getattr(openformers, f"{prefix}ForCausalLM")(config).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() == 1:  # norms and biases away from their init, so the test sees them
                p.copy_(torch.rand(p.shape) + 0.5)
            if dtype == torch.float16:  # weights an f16 file holds exactly
                p.copy_(p.half().float())
    return model.to(dtype) if dtype == torch.bfloat16 else model


def _ids(n: int = 9, vocab: int = 128) -> torch.Tensor:
    return torch.randint(3, vocab, (2, n), generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize("family", sorted(FAMILIES))
@pytest.mark.parametrize("kind", ["f16", "bf16"])
def test_read_back_bit_for_bit(tmp_path, family, kind):
    model = _tiny(family, torch.float16 if kind == "f16" else torch.bfloat16)
    model.save_pretrained(tmp_path, gguf=kind)
    path = tmp_path / f"model-{kind}.gguf"
    assert sorted(p.name for p in tmp_path.iterdir()) == [path.name]
    config, tensors = read_gguf_model(path)
    assert config["model_type"] == model.config.model_type
    got = dict(tensors)
    state = {k: v for k, v in model.state_dict().items() if not (model.config.tie_word_embeddings and k == "lm_head.weight")}
    assert set(got) == set(state)
    for name, t in got.items():
        assert torch.equal(t, state[name].float()), name
    gf = GGUFFile(path)
    try:
        types = {n: i.type_name for n, i in gf.tensors.items()}
    finally:
        gf.close()
    assert types["blk.0.attn_q.weight"] == kind.upper() and types["output_norm.weight"] == "F32"
    loaded = openformers.AutoModelForCausalLM.from_pretrained(tmp_path, gguf_file=path.name)
    assert type(loaded) is type(model)
    with torch.no_grad():
        torch.testing.assert_close(loaded(_ids()).logits, model.float()(_ids()).logits, rtol=0, atol=1e-6)


@pytest.mark.parametrize("kind,atol", [("q8_0", 0.05), ("q4_0", 0.5)])
def test_quantized_types(tmp_path, kind, atol):
    model = _tiny("llama", intermediate_size=128)
    path = save_gguf(model, tmp_path / "m.gguf", dtype=kind)
    gf = GGUFFile(path)
    try:
        types = {n: i.type_name for n, i in gf.tensors.items()}
    finally:
        gf.close()
    assert types["blk.1.ffn_down.weight"] == kind.upper() and types["blk.0.attn_norm.weight"] == "F32"
    assert types["token_embd.weight"] == types["output.weight"] == "Q8_0"  # the 4-bit file keeps both at 8 bits
    assert read_gguf_metadata(path)["general.file_type"] == {"q8_0": 7, "q4_0": 2}[kind]
    loaded = openformers.AutoModelForCausalLM.from_pretrained(str(path))
    with torch.no_grad():
        diff = (loaded(_ids()).logits - model(_ids()).logits).abs().max().item()
    assert 0 < diff < atol


@pytest.mark.parametrize("family", ["llama", "qwen2", "qwen3"])
def test_transformers_reads_the_file(tmp_path, family):
    transformers = pytest.importorskip("transformers")
    # transformers' qwen3 GGUF config keeps its default head_dim (128): give the tiny model that head size
    over = {"hidden_size": 256, "num_attention_heads": 2, "num_key_value_heads": 1, "head_dim": 128} if family == "qwen3" else {}
    model = _tiny(family, torch.float16, **over)
    model.save_pretrained(tmp_path, gguf="f16")
    theirs = transformers.AutoModelForCausalLM.from_pretrained(tmp_path, gguf_file="model-f16.gguf", dtype=torch.float32)
    assert type(theirs).__name__ == type(model).__name__
    with torch.no_grad():
        torch.testing.assert_close(theirs(_ids()).logits, model(_ids()).logits, rtol=0, atol=1e-4)


def test_llama3_rope_scaling_travels_as_rope_freqs(tmp_path):
    rope = {"rope_type": "llama3", "rope_theta": 10000.0, "factor": 8.0, "low_freq_factor": 1.0,
            "high_freq_factor": 4.0, "original_max_position_embeddings": 16}
    model = _tiny("llama", rope_parameters=rope)
    path = save_gguf(model, tmp_path / "m.gguf", dtype="f32")
    loaded = openformers.AutoModelForCausalLM.from_pretrained(str(path))
    ids = _ids(40)
    with torch.no_grad():
        torch.testing.assert_close(loaded(ids).logits, model(ids).logits, rtol=0, atol=1e-5)


def test_bad_input(tmp_path):
    model = _tiny("llama")
    with pytest.raises(ValueError, match="q5_k"):
        model.save_pretrained(tmp_path, gguf="q5_k")
    gpt2 = openformers.GPT2LMHeadModel(openformers.GPT2Config(n_layer=1, n_embd=32, n_head=2, vocab_size=64))
    with pytest.raises(ValueError, match="Llama family"):
        save_gguf(gpt2, tmp_path / "g.gguf")
    with pytest.raises(ValueError, match="ForCausalLM"):
        save_gguf(model.model, tmp_path / "b.gguf")
    sliding = _tiny("qwen2", use_sliding_window=True, sliding_window=4, max_window_layers=1)
    with pytest.raises(ValueError, match="use_sliding_window"):
        save_gguf(sliding, tmp_path / "s.gguf")
    assert not list(tmp_path.glob("*.gguf*"))


def test_cli(tmp_path):
    from openformers.cli.main import main

    model = _tiny("qwen3")
    model.save_pretrained(tmp_path / "ckpt")
    out = tmp_path / "out.gguf"
    assert main(["export", "gguf", "--model", str(tmp_path / "ckpt"), str(out), "--type", "q8_0"]) == 0
    loaded = openformers.AutoModelForCausalLM.from_pretrained(str(out))
    assert type(loaded).__name__ == "Qwen3ForCausalLM" and loaded.config.tie_word_embeddings


# -- the embedded SmolLM2 (Q4_1): dequantized, re-exported with its tokenizer ---------------------------------
@pytest.fixture(scope="module")
def smollm2(tmp_path_factory):
    try:
        source = openformers.embedded_model_path("smollm2")
    except OSError as exc:
        pytest.skip(str(exc))
    model = openformers.AutoModelForCausalLM.from_pretrained(source)
    tokenizer = openformers.AutoTokenizer.from_pretrained(source)
    out = tmp_path_factory.mktemp("smollm2")
    model.save_pretrained(out, gguf="f16")  # the tokenizer is found where the model was loaded from
    files = {"f16": out / "model-f16.gguf", "q8_0": save_gguf(model, out / "smollm2-q8_0.gguf", tokenizer, "q8_0")}
    return source, model, tokenizer, files


def _prompt(tokenizer) -> torch.Tensor:
    messages = [{"role": "user", "content": "Name three colours of the rainbow."}]
    return tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt")


def test_smollm2_tokenizer_metadata_round_trip(smollm2):
    source, _, tokenizer, files = smollm2
    original, written = read_gguf_metadata(source), read_gguf_metadata(files["f16"])
    for key in ("tokenizer.ggml.model", "tokenizer.ggml.pre", "tokenizer.ggml.tokens", "tokenizer.ggml.token_type",
                "tokenizer.ggml.merges", "tokenizer.ggml.bos_token_id", "tokenizer.ggml.eos_token_id",
                "tokenizer.ggml.padding_token_id", "tokenizer.ggml.add_bos_token", "tokenizer.chat_template"):
        assert written[key] == original[key], key
    again = openformers.AutoTokenizer.from_pretrained(files["f16"])
    text = "Hello world, 12345 tokens!\n<|im_start|>user"
    assert again(text)["input_ids"] == tokenizer(text)["input_ids"]
    assert torch.equal(_prompt(again), _prompt(tokenizer))
    transformers = pytest.importorskip("transformers")
    theirs = transformers.AutoTokenizer.from_pretrained(files["f16"].parent, gguf_file=files["f16"].name)
    assert theirs(text)["input_ids"] == tokenizer(text)["input_ids"]
    messages = [{"role": "user", "content": "hi"}]
    assert theirs.apply_chat_template(messages, add_generation_prompt=True, tokenize=False) == \
        tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)


@pytest.mark.slow
def test_smollm2_round_trip_greedy(smollm2):
    _, model, tokenizer, files = smollm2
    ids = _prompt(tokenizer)
    args = dict(max_new_tokens=12, do_sample=False)
    with torch.no_grad():
        expected = model.generate(ids, **args)
        f16 = openformers.AutoModelForCausalLM.from_pretrained(files["f16"])
        assert torch.equal(f16.generate(ids, **args), expected)
        q8 = openformers.AutoModelForCausalLM.from_pretrained(files["q8_0"])
        # teacher-forced top-1 agreement along the f32 model's greedy continuation
        agree = (q8(expected).logits.argmax(-1) == model(expected).logits.argmax(-1)).float().mean().item()
    assert agree >= 0.95, agree


def _llama_cpp():
    """The llama.cpp oracle, or a skip when neither binding is installed."""
    from tests.export.llama_cpp_runner import LlamaCpp, binding

    if binding() is None:
        pytest.skip("llama.cpp: neither llama-cpp-python nor llama-cpp-py-sync (the 'test' extra) is installed")
    return LlamaCpp


def _first_difference(a: list[int], b: list[int]):
    return next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), None if len(a) == len(b) else min(len(a), len(b)))


@pytest.mark.parametrize("family", ["llama", "mistral", "qwen2", "qwen3", "gemma", "starcoder2"])
@pytest.mark.parametrize("kind", ["f32", "f16"])
def test_tiny_models_in_llama_cpp(tmp_path, family, kind):
    """llama.cpp loads a tiny random model of each family from our file, with a small SentencePiece-style vocabulary:
    its logits at every position equal ours, its greedy tokens (one decode per token, with its KV cache) are ours and
    its tokenizer reads the vocabulary as we do."""
    LlamaCpp = _llama_cpp()
    tokenizer = _spm_tokenizer()
    model = _tiny(family, torch.float16 if kind == "f16" else torch.float32, vocab_size=len(tokenizer))
    path = save_gguf(model, tmp_path / f"{family}.gguf", tokenizer, kind)
    # 12 + 4 positions, within Mistral's window (16): llama.cpp runs its "llama" architecture without the window
    ids = torch.randint(3, len(tokenizer), (1, 12), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ours = model(ids).logits[0]
        greedy = model.generate(ids, max_new_tokens=4, do_sample=False, eos_token_id=None)[0, 12:].tolist()
    text = "the quick brown fox, hello world"
    with LlamaCpp(path, n_ctx=64) as llm:
        theirs = torch.from_numpy(llm.logits(ids[0].tolist()))
        assert llm.greedy(ids[0].tolist(), 4) == greedy
        assert llm.tokenize(text) == tokenizer(text)["input_ids"]
    assert ours.abs().max() > 0.3  # logits far from zero, so the bound below says something
    torch.testing.assert_close(theirs, ours, rtol=0, atol=2e-3)


def _smollm2_in_llama_cpp(smollm2, n: int, text: str):
    """f16: llama.cpp's greedy tokens from our prompt ids (one decode per token) equal ours from the same file, and
    its tokenizer gives our ids for ``text``; q8_0: teacher-forced along our float32 model's greedy continuation,
    llama.cpp's top-1 agrees with our float32 model's on >= 95% of the ``n`` positions."""
    LlamaCpp = _llama_cpp()
    _, model, tokenizer, files = smollm2
    ids = _prompt(tokenizer)
    start = ids.shape[1]
    f16 = openformers.AutoModelForCausalLM.from_pretrained(files["f16"])  # the weights llama.cpp reads
    with torch.no_grad():
        ours16 = f16.generate(ids, max_new_tokens=n, do_sample=False, eos_token_id=None)[0, start:].tolist()
        ours = model.generate(ids, max_new_tokens=n, do_sample=False, eos_token_id=None)
        top1 = model(ours).logits[0, start - 1 : -1].argmax(-1)
    with LlamaCpp(files["f16"], n_ctx=start + n + 8) as llm:
        assert llm.tokenize(text) == tokenizer(text)["input_ids"]
        theirs16 = llm.greedy(ids[0].tolist(), n)
    assert theirs16 == ours16, f"first different token at {_first_difference(theirs16, ours16)} of {n}"
    with LlamaCpp(files["q8_0"], n_ctx=start + n + 8) as llm:
        theirs = torch.from_numpy(llm.logits(ours[0, :-1].tolist())[start - 1 :].argmax(-1))
    agree = (theirs == top1).float().mean().item()
    print(f"q8_0 top-1 agreement over {len(theirs)} tokens: {agree:.3f}")
    assert agree >= 0.95, agree


@pytest.mark.slow
def test_smollm2_in_llama_cpp(smollm2):
    _smollm2_in_llama_cpp(smollm2, 48, "Hello world, 12345 tokens!")


@pytest.mark.long
def test_smollm2_in_llama_cpp_256_tokens(smollm2):
    _smollm2_in_llama_cpp(smollm2, 256, "The quick brown fox jumps over the lazy dog. It's 3:45 pm, 2 x 21 = 42.")


def _spm_tokenizer():
    """A small BPE vocabulary with byte fallback, as Llama 2 and Mistral ship (about 300 tokens)."""
    from tokenizers import Tokenizer, decoders, models, normalizers, trainers

    from openformers.tokenization.base import PreTrainedTokenizerFast

    backend = Tokenizer(models.BPE(unk_token="<unk>", byte_fallback=True, fuse_unk=True))
    backend.normalizer = normalizers.Sequence([normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")])
    backend.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse(),
                                         decoders.Strip(" ", 1, 0)])
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=["<unk>", "<s>", "</s>"] + [f"<0x{i:02X}>" for i in range(256)],
                                  show_progress=False)
    backend.train_from_iterator(["the quick brown fox jumps over the lazy dog", "hello world, the weather is nice"] * 20, trainer)
    return PreTrainedTokenizerFast(tokenizer_object=backend, bos_token="<s>", eos_token="</s>", unk_token="<unk>",
                                   add_bos_token=True)


def test_sentencepiece_style_tokenizer(tmp_path):
    """A BPE vocabulary with byte fallback (Llama 2, Mistral) is written as llama.cpp's "llama" model: scores from the
    merge ranks, byte tokens typed as such; read back, it encodes as the original."""
    tokenizer = _spm_tokenizer()
    model = _tiny("llama", vocab_size=len(tokenizer))
    path = save_gguf(model, tmp_path / "spm.gguf", tokenizer, "f16")
    meta = read_gguf_metadata(path)
    assert meta["tokenizer.ggml.model"] == "llama" and meta["tokenizer.ggml.add_space_prefix"] is True
    assert meta["tokenizer.ggml.token_type"][3 + 0x41] == 6 and meta["tokenizer.ggml.token_type"][1] == 3
    again = openformers.AutoTokenizer.from_pretrained(path)
    for text in ("the quick brown fox", "hello wörld ✓ nice weather", "jumps over!"):
        assert again(text)["input_ids"] == tokenizer(text)["input_ids"], text


def test_export_after_generate_with_one_thread(tmp_path):
    """Inference may leave weights with other strides (one thread); the file still holds their values."""
    model = _tiny("llama")
    expected = {k: v.clone() for k, v in model.state_dict().items()}
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with torch.no_grad():
            model.generate(_ids(3), max_new_tokens=3, do_sample=False)
        path = save_gguf(model, tmp_path / "m.gguf", dtype="f32")
    finally:
        torch.set_num_threads(threads)
    _, tensors = read_gguf_model(path)
    for name, t in tensors:
        assert torch.equal(t, expected[name]), name


@pytest.mark.parametrize("family,words", [("qwen3-bias", "bias tensors"), ("mistral", "sliding_window=16"), ("llama", None)])
def test_export_warns_what_llama_cpp_will_not_honour(tmp_path, caplog, family, words):
    # the file is still written and reads back (previous test); the warning says what llama.cpp does with it
    with caplog.at_level("WARNING", logger="openformers.export.gguf"):
        save_gguf(_tiny(family), tmp_path / "m.gguf", dtype="f32")
    said = [r.getMessage() for r in caplog.records if "llama.cpp" in r.getMessage() and "tokenizer" not in r.getMessage()]
    if words is None:
        assert said == []
    else:
        assert len(said) == 1 and words in said[0], said
