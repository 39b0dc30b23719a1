"""from_pretrained with BitsAndBytesConfig: quantized while loading, memory, outputs, save and reload."""
from __future__ import annotations

import json
import logging

import pytest
import torch
from torch import nn

from openformers.modules.dense import is_plain_linear
from openformers import AutoModelForCausalLM, BitsAndBytesConfig
from openformers.models.llama import LlamaConfig, LlamaForCausalLM
from openformers.quantization import Linear4bit, Linear8bitLt, quantize_model, quantized_weight_bytes
from openformers.quantization import bnb_linear, bnb_linear_8bit, functional

CONFIGS = {
    "int8": dict(load_in_8bit=True),
    "nf4-dq": dict(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True),
    "fp4": dict(load_in_4bit=True),
}
MAX_WEIGHT_RATIO = {"int8": 0.30, "nf4-dq": 0.17, "fp4": 0.17}
MAX_LOGIT_ERROR = {"int8": 0.03, "nf4-dq": 0.25, "fp4": 0.3}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    config = LlamaConfig(vocab_size=256, hidden_size=128, intermediate_size=256, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=False)
    torch.manual_seed(0)
    model = LlamaForCausalLM(config).eval()
    path = tmp_path_factory.mktemp("tiny-llama")
    model.save_pretrained(path)
    ids = torch.randint(0, 256, (2, 12))
    with torch.no_grad():
        logits = model(ids).logits
    return path, model, ids, logits


def _quantized_layers(model: nn.Module) -> dict[str, nn.Module]:
    return {n: m for n, m in model.named_modules() if isinstance(m, (Linear4bit, Linear8bitLt))}


@pytest.mark.parametrize("kind", list(CONFIGS))
def test_quantized_load_memory_and_outputs(tiny, kind):
    path, ref_model, ids, ref = tiny
    model = AutoModelForCausalLM.from_pretrained(path, quantization_config=BitsAndBytesConfig(**CONFIGS[kind]))
    layers = _quantized_layers(model)
    assert len(layers) == 14  # 7 projections x 2 layers
    assert is_plain_linear(model.lm_head) and type(model.model.embed_tokens) is nn.Embedding
    assert model.lm_head.weight.dtype == torch.float32
    assert model.is_loaded_in_4bit == kind.startswith(("nf4", "fp4")) and model.is_loaded_in_8bit == (kind == "int8")
    packed, full = quantized_weight_bytes(model)
    assert full == sum(p.numel() * 4 for n, p in ref_model.named_parameters() if n.endswith("proj.weight"))
    assert packed / full <= MAX_WEIGHT_RATIO[kind], packed / full
    assert all(not t.is_meta for t in model.state_dict().values())
    with torch.no_grad():
        out = model(ids).logits
    assert ((out - ref).norm() / ref.norm()) < MAX_LOGIT_ERROR[kind]
    assert (out.argmax(-1) == ref.argmax(-1)).float().mean() > (0.9 if kind == "int8" else 0.6)


def test_layers_are_quantized_as_they_arrive(tiny, monkeypatch):
    """Each float weight is packed when it streams in; later layers are still empty then."""
    path, *_ = tiny
    seen: list[nn.Module] = []
    snapshots: list[tuple[int, int, int]] = []
    original = Linear4bit.quantize_weight

    def spy(self, weight):
        seen.append(self)
        model_layers = [m for m in all_layers if m is not self]
        packed = sum(1 for m in model_layers if not m.weight.is_meta and m.weight.dtype == torch.uint8)
        waiting = sum(1 for m in model_layers if m.weight.is_meta)
        floats = sum(1 for m in model_layers if not m.weight.is_meta and m.weight.is_floating_point())
        snapshots.append((packed, waiting, floats))
        original(self, weight)

    all_layers: list[nn.Module] = []
    prepare = BitsAndBytesConfig.prepare_model

    def capture(self, model):
        prepare(self, model)
        all_layers.extend(_quantized_layers(model).values())

    monkeypatch.setattr(Linear4bit, "quantize_weight", spy)
    monkeypatch.setattr(BitsAndBytesConfig, "prepare_model", capture)
    AutoModelForCausalLM.from_pretrained(path, quantization_config=BitsAndBytesConfig(load_in_4bit=True))
    assert len(seen) == 14
    # at the k-th weight: k layers already packed, the rest still empty, never a float one held
    assert snapshots == [(k, 13 - k, 0) for k in range(14)]


def test_skip_modules_stay_float(tiny):
    path, *_ = tiny
    cfg = BitsAndBytesConfig(load_in_8bit=True, llm_int8_skip_modules=["down_proj", "model.layers.1.self_attn.q_proj", "layers.1.mlp"])
    model = AutoModelForCausalLM.from_pretrained(path, quantization_config=cfg)
    assert is_plain_linear(model.model.layers[0].mlp.down_proj)
    assert is_plain_linear(model.model.layers[1].self_attn.q_proj)
    assert is_plain_linear(model.model.layers[1].mlp.up_proj)
    assert isinstance(model.model.layers[0].self_attn.q_proj, Linear8bitLt)
    assert isinstance(model.model.layers[0].mlp.up_proj, Linear8bitLt)
    assert len(_quantized_layers(model)) == 14 - 5


@pytest.mark.parametrize("kind", list(CONFIGS))
def test_save_and_reload_without_requantizing(tiny, tmp_path, kind, monkeypatch):
    path, _, ids, _ = tiny
    model = AutoModelForCausalLM.from_pretrained(path, quantization_config=BitsAndBytesConfig(**CONFIGS[kind]))
    model.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "config.json").read_text())["quantization_config"]
    assert saved == BitsAndBytesConfig(**CONFIGS[kind]).to_dict()

    def refuse(*args, **kwargs):
        raise AssertionError("a saved quantized model must load without quantizing again")

    monkeypatch.setattr(functional, "quantize_4bit", refuse)
    monkeypatch.setattr(bnb_linear, "quantize_4bit", refuse)
    monkeypatch.setattr(bnb_linear_8bit, "quantize_8bit", refuse)
    again = AutoModelForCausalLM.from_pretrained(tmp_path)
    a, b = model.state_dict(), again.state_dict()
    assert a.keys() == b.keys()
    for name in a:
        assert a[name].dtype == b[name].dtype and torch.equal(a[name], b[name]), name
    assert isinstance(again.config.quantization_config, BitsAndBytesConfig)
    with torch.no_grad():
        assert torch.equal(model(ids).logits, again(ids).logits)


def test_saved_checkpoint_wins_over_passed_config(tiny, tmp_path, caplog):
    path, *_ = tiny
    AutoModelForCausalLM.from_pretrained(path, quantization_config=BitsAndBytesConfig(load_in_8bit=True)).save_pretrained(tmp_path)
    with caplog.at_level(logging.WARNING, logger="openformers"):
        model = AutoModelForCausalLM.from_pretrained(tmp_path, quantization_config=BitsAndBytesConfig(load_in_4bit=True))
    assert "already quantized" in caplog.text
    assert isinstance(model.model.layers[0].mlp.up_proj, Linear8bitLt)


def test_quantize_model_in_memory_matches_loading(tiny):
    path, ref_model, *_ = tiny
    cfg = BitsAndBytesConfig(**CONFIGS["nf4-dq"])
    loaded = AutoModelForCausalLM.from_pretrained(path, quantization_config=cfg)
    in_memory = LlamaForCausalLM.from_pretrained(path)
    quantize_model(in_memory, cfg)
    a, b = loaded.state_dict(), in_memory.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_bfloat16_model_in_8bit(tiny):
    path, _, ids, ref = tiny
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.bfloat16, quantization_config=BitsAndBytesConfig(load_in_8bit=True))
    layer = model.model.layers[0].mlp.up_proj
    assert layer.compute_dtype == torch.bfloat16 and layer.weight.dtype == torch.int8 and layer.SCB.dtype == torch.float32
    with torch.no_grad():
        out = model(ids).logits.float()
    assert ((out - ref).norm() / ref.norm()) < 0.05


def test_gguf_file_is_requantized_layer_by_layer(tmp_path):
    pytest.importorskip("gguf")
    transformers = pytest.importorskip("transformers")
    from tests.models.test_gguf import write_tiny_llama

    config = transformers.LlamaConfig(vocab_size=128, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
                                      rms_norm_eps=1e-5, tie_word_embeddings=False)
    torch.manual_seed(0)
    hf = transformers.LlamaForCausalLM(config).eval()
    gguf_path = write_tiny_llama(tmp_path / "tiny.gguf", hf)
    hf.save_pretrained(tmp_path / "st")
    cfg = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4")
    from_gguf = AutoModelForCausalLM.from_pretrained(gguf_path, quantization_config=cfg)
    from_st = AutoModelForCausalLM.from_pretrained(tmp_path / "st", quantization_config=cfg)
    layers = _quantized_layers(from_gguf)
    assert len(layers) == 14 and is_plain_linear(from_gguf.lm_head)
    # the F32 file holds the same floats, so the packed codes are the same bytes
    st_layers = _quantized_layers(from_st)
    for name, layer in layers.items():
        assert torch.equal(layer.weight, st_layers[name].weight) and torch.equal(layer.absmax, st_layers[name].absmax), name


def test_tied_embeddings_stay_tied_and_float(tmp_path):
    config = LlamaConfig(vocab_size=128, hidden_size=64, intermediate_size=128, num_hidden_layers=1,
                         num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=True)
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(tmp_path / "float")
    cfg = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4")
    model = AutoModelForCausalLM.from_pretrained(tmp_path / "float", quantization_config=cfg)
    assert model.lm_head.weight is model.model.embed_tokens.weight
    model.save_pretrained(tmp_path / "q")
    again = AutoModelForCausalLM.from_pretrained(tmp_path / "q")
    assert again.lm_head.weight is again.model.embed_tokens.weight
    ids = torch.randint(0, 128, (1, 6))
    with torch.no_grad():
        assert torch.equal(model(ids).logits, again(ids).logits)


def test_incomplete_quantized_checkpoint_fails_clearly(tiny, tmp_path):
    from safetensors.torch import load_file, save_file

    path, *_ = tiny
    AutoModelForCausalLM.from_pretrained(path, quantization_config=BitsAndBytesConfig(load_in_4bit=True)).save_pretrained(tmp_path)
    weights = load_file(tmp_path / "model.safetensors")
    del weights["model.layers.0.mlp.up_proj.weight.absmax"]
    save_file(weights, tmp_path / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(ValueError, match="lacks tensors of this quantized layer"):
        AutoModelForCausalLM.from_pretrained(tmp_path)


def test_lora_trains_on_a_4bit_base():
    peft = pytest.importorskip("openformers.peft")
    config = LlamaConfig(vocab_size=64, hidden_size=64, intermediate_size=128, num_hidden_layers=1,
                         num_attention_heads=4, num_key_value_heads=2)
    torch.manual_seed(0)
    model = quantize_model(LlamaForCausalLM(config), BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4"))
    lora = peft.get_peft_model(model, peft.LoraConfig(r=4, target_modules=["q_proj", "v_proj", "down_proj"]))
    ids = torch.randint(0, 64, (2, 8))
    lora(input_ids=ids, labels=ids).loss.backward()
    trainable = [p for p in lora.parameters() if p.requires_grad]
    assert len(trainable) == 6 and all(p.grad is not None for p in trainable)
    assert isinstance(lora.base_model.model.model.layers[0].self_attn.q_proj.base_layer, Linear4bit)
