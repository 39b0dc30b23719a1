"""Inference-only fused projections: several ``nn.Linear`` layers that read the same input run
as one matmul.

Decoding one token is a chain of small GEMVs; fusing q/k/v (and gate/up) cuts the number of
matmul calls, module calls and passes over the activations. The concatenated weight is built
lazily, cached on the owning module (outside ``state_dict`` and ``parameters()``), and rebuilt
whenever one of the source weights changes: moved, cast, replaced or updated in place (the
tensor version counter). 4-bit ``QuantizedLinear`` layers fuse too (their packed rows and scales
concatenate along the output dimension). Other layers (LoRA and other adapters) and any call that
records gradients take the unfused path, so training and adapters see the original modules.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

_HALF = (torch.bfloat16, torch.float16)


def _version(t: torch.Tensor) -> int:
    try:
        return t._version
    except RuntimeError:  # inference tensors carry no version counter; they cannot be updated in place either
        return -1


def _is_int4(m: nn.Module) -> bool:
    # the CPU int4 layer of openformers.quantization (duck-typed: modules do not import quantization)
    return type(m).__name__ == "QuantizedLinear" and hasattr(m, "qweight") and hasattr(m, "scales_and_zeros")


def _hooked(m: nn.Module) -> bool:
    return bool(m._forward_hooks or m._forward_pre_hooks)


def fusable(*layers: nn.Module) -> bool:
    """True when no grad is recorded and ``layers`` are all plain ``nn.Linear`` (or all 4-bit
    ``QuantizedLinear`` with one group size and compute dtype), with matching bias presence and
    no forward hooks (a hooked layer must run as itself)."""
    if torch.is_grad_enabled() or any(_hooked(m) for m in layers):
        return False
    first = layers[0]
    has_bias = getattr(first, "bias", None) is not None
    if type(first) is nn.Linear:
        return all(type(m) is nn.Linear and (m.bias is not None) == has_bias for m in layers)
    if _is_int4(first) and first.qweight.device.type == "cpu":
        return all(
            _is_int4(m) and m.group_size == first.group_size and m.scales_and_zeros.dtype == first.scales_and_zeros.dtype
            and (m.bias is not None) == has_bias for m in layers
        )
    return False


def _build(layers: tuple[nn.Module, ...]) -> tuple:
    bias = torch.cat([m.bias.detach() for m in layers]) if layers[0].bias is not None else None
    if type(layers[0]) is nn.Linear:
        return torch.cat([m.weight.detach() for m in layers]), bias
    # packed int4 rows ([out, in / 2]) and their [groups, out, 2] scales concatenate along out when
    # every part is a whole number of the kernel's row blocks (machine-dependent): a probe decides
    qweight = torch.cat([m.qweight for m in layers])
    scales = torch.cat([m.scales_and_zeros for m in layers], dim=1)
    group = layers[0].group_size
    probe = torch.randn(2, layers[0].in_features, generator=torch.Generator().manual_seed(0)).to(scales.dtype)
    parts = [torch.ops.aten._weight_int4pack_mm_for_cpu(probe, m.qweight, group, m.scales_and_zeros) for m in layers]
    if not torch.equal(torch.ops.aten._weight_int4pack_mm_for_cpu(probe, qweight, group, scales), torch.cat(parts, -1)):
        return (None,)  # not fusable on this machine: run the layers one by one
    return qweight, scales, bias, group


def fused_linear(owner: nn.Module, slot: str, layers: tuple[nn.Module, ...], x: torch.Tensor) -> torch.Tensor:
    """``cat([m(x) for m in layers], -1)`` as one matmul, with the fused weight cached on ``owner``.

    Call only when :func:`fusable` says so. ``slot`` names the cache entry (one per fused group).

    Half-precision inputs of several rows (a prefill, a batch) run the layers one by one: a
    bf16/fp16 GEMM rounds its float32 accumulator once per output, but the kernel splits the
    reduction by the weight's shape and the thread count, so the stacked weight can round
    differently from the separate ones (SmolLM2's q/k/v: from 18 rows with 16 threads, 64 with
    4), and the logits drift from the unfused reference. A single row is a matrix-vector product
    whose outputs are independent dot products, identical either way, so decode steps still fuse.
    """
    if type(layers[0]) is nn.Linear and x.dtype in _HALF and x.numel() != x.shape[-1]:
        return torch.cat([F.linear(x, m.weight, m.bias) for m in layers], dim=-1)
    if type(layers[0]) is nn.Linear:
        tensors = [t for m in layers for t in (m.weight, m.bias) if t is not None]
    else:
        tensors = [t for m in layers for t in (m.qweight, m.scales_and_zeros, m.bias) if t is not None]
    key = tuple((t.data_ptr(), _version(t), t.dtype, t.device) for t in tensors)
    cached = owner.__dict__.get(slot)
    if cached is None or cached[0] != key:
        owner.__dict__[slot] = cached = (key, *_build(layers))
    if len(cached) == 3:
        return linear(x, cached[1], cached[2])
    if len(cached) == 2:
        return torch.cat([m(x) for m in layers], dim=-1)
    _, qweight, scales, bias, group = cached
    shape = x.shape
    # [*, in] -> [rows, in] -> [rows, out], activations in the kernel's compute dtype
    y = torch.ops.aten._weight_int4pack_mm_for_cpu(x.reshape(-1, shape[-1]).to(scales.dtype), qweight, group, scales)
    y = y.to(x.dtype).reshape(*shape[:-1], qweight.shape[0])
    return y if bias is None else y + bias.to(x.dtype)


def linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """``F.linear``, but a single half-precision row (a batch-1 decode step) runs as ``torch.mv``:
    on CPU the bf16 GEMM path is slow for one row, the matrix-vector kernel is not."""
    if x.dtype in _HALF and x.numel() == x.shape[-1] and x.device.type == "cpu":
        y = torch.mv(weight, x.reshape(-1)).view(*x.shape[:-1], weight.shape[0])
        return y if bias is None else y + bias
    return F.linear(x, weight, bias)


def project(module: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``module(x)``; a plain ``nn.Linear`` at inference goes through :func:`linear`."""
    if type(module) is nn.Linear and not torch.is_grad_enabled() and not _hooked(module):
        return linear(x, module.weight, module.bias)
    return module(x)
