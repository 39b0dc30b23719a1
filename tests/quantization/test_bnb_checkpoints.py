"""4-bit and 8-bit checkpoints: transformers + bitsandbytes files load here, ours load there.

Needs transformers and bitsandbytes (the CPU backend); skipped without them.
"""
from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file, save_file

transformers = pytest.importorskip("transformers")
bnb_functional = pytest.importorskip("bitsandbytes.functional")

from openformers import AutoModelForCausalLM, BitsAndBytesConfig  # noqa: E402
from openformers.quantization import Linear4bit, Linear8bitLt, bnb_linear, bnb_linear_8bit, functional  # noqa: E402

KINDS = {
    "nf4-dq": dict(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True),
    "fp4": dict(load_in_4bit=True, bnb_4bit_quant_type="fp4"),
    "int8": dict(load_in_8bit=True),
}


@pytest.fixture(scope="module")
def float_dir(tmp_path_factory):
    config = transformers.LlamaConfig(vocab_size=128, hidden_size=64, intermediate_size=192, num_hidden_layers=2,
                                      num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=False)
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("float")
    transformers.LlamaForCausalLM(config).save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def theirs(float_dir, tmp_path_factory):
    """kind -> (directory transformers saved, their model, dequantized weight of every quantized layer)."""
    out = {}
    for kind, fields in KINDS.items():
        model = transformers.AutoModelForCausalLM.from_pretrained(
            float_dir, quantization_config=transformers.BitsAndBytesConfig(**fields), device_map="cpu"
        ).eval()
        path = tmp_path_factory.mktemp(f"theirs-{kind}")
        model.save_pretrained(path)
        out[kind] = (path, model, _their_weights(model))
    return out


def _their_weights(model) -> dict[str, torch.Tensor]:
    weights = {}
    for name, module in model.named_modules():
        state = getattr(module.weight, "quant_state", None) if hasattr(module, "weight") else None
        if state is not None:
            weights[name] = bnb_functional.dequantize_4bit(module.weight.data, state).float()
        elif getattr(module.weight if hasattr(module, "weight") else None, "SCB", None) is not None:
            weights[name] = module.weight.data.float() * (module.weight.SCB / 127)[:, None]
    return weights


def _ours(model) -> dict[str, torch.nn.Module]:
    return {n: m for n, m in model.named_modules() if isinstance(m, (Linear4bit, Linear8bitLt))}


def _no_quantizing(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("a quantized checkpoint must load without quantizing")

    for module in (functional, bnb_linear, bnb_linear_8bit):
        for fn in ("quantize_4bit", "quantize_8bit"):
            if hasattr(module, fn):
                monkeypatch.setattr(module, fn, refuse)


@pytest.mark.parametrize("kind", list(KINDS))
def test_their_checkpoint_loads_here(float_dir, theirs, kind, monkeypatch):
    path, model, weights = theirs[kind]
    _no_quantizing(monkeypatch)
    ours = AutoModelForCausalLM.from_pretrained(path)
    layers = _ours(ours)
    assert sorted(layers) == sorted(weights) and len(layers) == 14
    for name, layer in layers.items():
        assert torch.equal(layer.dequantize(torch.float32), weights[name]), name
    ids = torch.randint(0, 128, (2, 9), generator=torch.Generator().manual_seed(1))
    # the float model holding the dequantized weights is the exact reference: bitsandbytes' own CPU
    # forward runs int8 activations (8-bit) or a bfloat16 kernel (4-bit on AVX512-BF16 CPUs)
    float_model = transformers.AutoModelForCausalLM.from_pretrained(float_dir).eval()
    _load_weights(float_model, weights)
    with torch.no_grad():
        got = ours(ids).logits
        torch.testing.assert_close(got, float_model(ids).logits, rtol=1e-5, atol=1e-5)
        theirs_logits = model(ids).logits
    assert (got - theirs_logits).abs().max() < (0.1 if kind == "int8" else 0.01)


def _load_weights(model, weights: dict[str, torch.Tensor]) -> None:
    for name, w in weights.items():
        model.get_submodule(name).weight.data.copy_(w)


@pytest.mark.parametrize("kind", list(KINDS))
def test_our_checkpoint_is_their_layout_and_loads_there(float_dir, theirs, kind, tmp_path):
    path, _, their_weights = theirs[kind]
    ours = AutoModelForCausalLM.from_pretrained(float_dir, quantization_config=BitsAndBytesConfig(**KINDS[kind]))
    ours.save_pretrained(tmp_path)
    mine, reference = load_file(tmp_path / "model.safetensors"), load_file(path / "model.safetensors")
    assert sorted(mine) == sorted(reference)
    for key, tensor in reference.items():
        assert mine[key].dtype == tensor.dtype and mine[key].shape == tensor.shape, key
        if kind == "nf4-dq" and key.endswith("weight.absmax"):
            # the 8-bit codes of the block scales: see test_bnb_parity (their CPU search is approximate)
            assert (mine[key] != tensor).float().mean() < 0.05, key
        elif kind == "nf4-dq" and "quant_state" in key:
            a, b = (json.loads(bytes(t.tolist())) for t in (mine[key], tensor))
            assert a == b, key
        else:
            assert torch.equal(mine[key], tensor), key
    saved = json.loads((tmp_path / "config.json").read_text())["quantization_config"]
    assert saved == json.loads((path / "config.json").read_text())["quantization_config"]
    # and transformers + bitsandbytes read our files back to our weights
    back = transformers.AutoModelForCausalLM.from_pretrained(tmp_path, device_map="cpu")
    again = _their_weights(back)
    for name, layer in _ours(ours).items():
        assert torch.equal(again[name], layer.dequantize(torch.float32)), name
    assert sorted(again) == sorted(their_weights)


def test_earlier_layout_still_loads(float_dir, tmp_path, monkeypatch):
    model = AutoModelForCausalLM.from_pretrained(float_dir, quantization_config=BitsAndBytesConfig(**KINDS["nf4-dq"]))
    model.save_pretrained(tmp_path)
    new = load_file(tmp_path / "model.safetensors")
    old = {}
    for key, tensor in new.items():
        if ".weight.quant_state." in key:
            layer = key.split(".weight.quant_state.")[0]
            old[f"{layer}.nested_offset"] = torch.tensor(json.loads(bytes(tensor.tolist()))["nested_offset"])
        elif key.endswith((".weight.quant_map", ".weight.nested_quant_map")):
            continue
        else:
            old[key.replace(".weight.absmax", ".absmax").replace(".weight.nested_absmax", ".nested_absmax")] = tensor
    save_file(old, tmp_path / "model.safetensors", metadata={"format": "pt"})
    _no_quantizing(monkeypatch)
    again = AutoModelForCausalLM.from_pretrained(tmp_path)
    a, b = model.state_dict(), again.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("damage", ["json", "shape", "format"])
def test_damaged_files_fail_naming_the_tensor(theirs, tmp_path, damage):
    kind = "int8" if damage == "format" else "nf4-dq"
    path = theirs[kind][0]
    weights = load_file(path / "model.safetensors")
    layer = "model.layers.1.mlp.up_proj"
    if damage == "json":
        key = f"{layer}.weight.quant_state.bitsandbytes__nf4"
        weights[key] = weights[key][:-3]
    elif damage == "shape":
        key = f"{layer}.weight.quant_state.bitsandbytes__nf4"
        state = json.loads(bytes(weights[key].tolist()))
        state["shape"] = [7, 7]
        weights[key] = torch.tensor(list(json.dumps(state).encode()), dtype=torch.uint8)
    else:
        key = f"{layer}.weight_format"
        weights[key] = torch.tensor(2, dtype=torch.uint8)
    for name in ("config.json",):
        (tmp_path / name).write_text((path / name).read_text())
    save_file(weights, tmp_path / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(ValueError, match=key.replace(".", r"\.")):
        AutoModelForCausalLM.from_pretrained(tmp_path)
