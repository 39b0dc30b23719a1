"""Against bitsandbytes itself (CPU backend): the same codes, scales and dequantized values."""
from __future__ import annotations

import pytest
import torch

bnb_functional = pytest.importorskip("bitsandbytes.functional")

from openformers.quantization.functional import (  # noqa: E402
    code_book,
    dequantize_4bit,
    dynamic_code,
    quantize_4bit,
    quantize_8bit,
)


def _weights() -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    found = {
        "normal": torch.randn(256, 192),
        "ragged": torch.randn(37, 53),  # n not a multiple of the block: a short last block
        "heavy-tailed": torch.randn(128, 256) ** 3,
        "tiny": torch.randn(64, 7) * 1e-3,
        "zero-block": torch.cat([torch.zeros(2, 64), torch.randn(2, 64)]),
        "bfloat16": torch.randn(64, 128).to(torch.bfloat16),
    }
    try:  # real weights: the embedded MiniLM encoder
        from safetensors import safe_open

        from openformers.core.hub import embedded_model_path

        path = next(embedded_model_path("minilm").glob("*.safetensors"))
        with safe_open(str(path), "pt") as f:
            names = [n for n in f.keys() if n.endswith(("query.weight", "intermediate.dense.weight"))]
            for name in names[:2]:
                found[name] = f.get_tensor(name)
    except Exception:  # noqa: BLE001 - the embedded package is optional here
        pass
    return found


WEIGHTS = _weights()


def test_code_books_are_bitsandbytes_ones():
    for quant_type in ("nf4", "fp4"):
        theirs = bnb_functional.get_4bit_type(quant_type, device="cpu")
        assert torch.equal(code_book(quant_type), theirs.float()), quant_type
    assert torch.equal(dynamic_code(), bnb_functional.create_dynamic_map(signed=True))


@pytest.mark.parametrize("name", list(WEIGHTS))
@pytest.mark.parametrize("quant_type", ["nf4", "fp4"])
def test_4bit_codes_and_scales_are_the_same_bytes(name, quant_type):
    w = WEIGHTS[name]
    packed, state = bnb_functional.quantize_4bit(w, blocksize=64, quant_type=quant_type)
    ours, our_state = quantize_4bit(w, quant_type, 64)
    # blocks run over the flattened row-major weight; two codes a byte, the first in the high nibble
    assert torch.equal(packed.reshape(-1), ours)
    assert torch.equal(state.absmax, our_state.absmax)
    # values in the weight's own dtype: code times scale in float32, rounded once
    assert torch.equal(dequantize_4bit(ours, our_state, w.dtype), bnb_functional.dequantize_4bit(packed, state))
    # a layer computing in another dtype goes through the weight's dtype first, as bitsandbytes' matmul does
    from openformers.quantization import Linear4bit

    layer = Linear4bit.from_linear(_as_linear(w), quant_type=quant_type)
    for dtype in (torch.float32, torch.bfloat16, torch.float16):
        assert torch.equal(layer.dequantize(dtype), bnb_functional.dequantize_4bit(packed, state).to(dtype)), dtype


def _as_linear(w: torch.Tensor) -> torch.nn.Linear:
    linear = torch.nn.Linear(w.shape[1], w.shape[0], bias=False, dtype=w.dtype)
    linear.weight.data.copy_(w)
    return linear


@pytest.mark.parametrize("name", ["normal", "heavy-tailed", "ragged"])
def test_double_quant_matches_up_to_the_native_search(name):
    """Offset and nested scales are the same bits; nested codes too, except where bitsandbytes'
    native CPU kernel (an approximate binary search) misses the nearest code: there ours is the
    nearer one, never the farther."""
    w = WEIGHTS[name]
    packed, state = bnb_functional.quantize_4bit(w, blocksize=64, quant_type="nf4", compress_statistics=True)
    ours, our_state = quantize_4bit(w, "nf4", 64, double_quant=True)
    assert torch.equal(packed.reshape(-1), ours)
    assert torch.equal(state.offset, our_state.nested_offset)
    assert torch.equal(state.state2.absmax, our_state.nested_absmax)
    code = dynamic_code()
    _, plain = quantize_4bit(w, "nf4", 64)
    target = (plain.absmax - our_state.nested_offset).reshape(-1)
    blocks = torch.arange(target.numel()) // 256
    target = target / our_state.nested_absmax[blocks]
    theirs_err = (code[state.absmax.long()] - target).abs()
    ours_err = (code[our_state.absmax.long()] - target).abs()
    differ = state.absmax != our_state.absmax
    assert differ.float().mean() < 0.01
    assert torch.all(ours_err <= theirs_err)
    assert torch.all(ours_err <= (code[:, None] - target[None, :]).abs().min(0).values + 1e-9)
    # their state, dequantized with their own code books, is what our dequantization of it gives
    from openformers.quantization.functional import QuantState4bit

    as_ours = QuantState4bit(tuple(w.shape), "nf4", 64, state.absmax, state.state2.absmax, state.offset,
                             state.code, state.state2.code, state.state2.blocksize)
    assert torch.equal(dequantize_4bit(packed.reshape(-1), as_ours), bnb_functional.dequantize_4bit(packed, state))


@pytest.mark.parametrize("name", [n for n, w in WEIGHTS.items() if w.dim() == 2])
def test_8bit_rows_are_the_same_bytes(name):
    bnb_nn = pytest.importorskip("bitsandbytes.nn")
    w = WEIGHTS[name]
    params = bnb_nn.Int8Params(w.clone(), requires_grad=False, has_fp16_weights=False)._quantize("cpu")
    q, scb = quantize_8bit(w)
    assert torch.equal(q, params.data) and torch.equal(scb, params.SCB)
