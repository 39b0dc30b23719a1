"""Normalisation layers shared by decoder families."""
from __future__ import annotations

import torch
from torch import nn


class RMSNorm(nn.Module):
    """Root-mean-square norm (no mean subtraction, no bias), as in Llama, Mistral and Qwen2.

    The statistics are computed in float32 and the normalised activations are cast back to
    the input dtype before the weight is applied, so half-precision models match the
    reference implementation bit for bit.
    """

    def __init__(self, hidden_size: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(hidden_size))
        self.variance_epsilon = eps

    @property
    def eps(self) -> float:
        return self.variance_epsilon

    def reset_parameters(self) -> None:
        nn.init.ones_(self.weight)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        input_dtype = hidden_states.dtype
        if input_dtype == torch.float32:  # the same arithmetic, without the no-op casts
            return self.weight * (hidden_states * torch.rsqrt(hidden_states.pow(2).mean(-1, keepdim=True) + self.variance_epsilon))
        x = hidden_states.to(torch.float32)
        variance = x.pow(2).mean(-1, keepdim=True)
        x = x * torch.rsqrt(variance + self.variance_epsilon)
        return self.weight * x.to(input_dtype)

    def extra_repr(self) -> str:
        return f"{tuple(self.weight.shape)}, eps={self.variance_epsilon}"


class OffsetRMSNorm(nn.Module):
    """RMSNorm that multiplies by ``offset + weight`` (Gemma: ``offset`` 1, the weight starts at zeros).

    Unlike :class:`RMSNorm`, the product with the weight is taken in float32 and cast to the input dtype
    once at the end: ``(x_f32 * rsqrt(mean(x_f32**2) + eps) * (offset + weight_f32)).to(x.dtype)``.
    """

    def __init__(self, hidden_size: int, eps: float = 1e-6, offset: float = 1.0) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(hidden_size))
        self.variance_epsilon = eps
        self.offset = float(offset)

    @property
    def eps(self) -> float:
        return self.variance_epsilon

    def reset_parameters(self) -> None:
        nn.init.zeros_(self.weight)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        x = hidden_states.float()
        x = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.variance_epsilon)
        return (x * (self.offset + self.weight.float())).to(hidden_states.dtype)

    def extra_repr(self) -> str:
        return f"{tuple(self.weight.shape)}, eps={self.variance_epsilon}, offset={self.offset}"


def rms_norm(hidden_size: int, eps: float, offset: float = 0.0) -> nn.Module:
    """The RMSNorm a layer's blocks name (``DecoderBlocks.norm_offset``): :class:`RMSNorm` for offset 0,
    else :class:`OffsetRMSNorm` with that offset."""
    return RMSNorm(hidden_size, eps=eps) if not offset else OffsetRMSNorm(hidden_size, eps=eps, offset=offset)


def decoder_norm(kind: str, hidden_size: int, eps: float, offset: float = 0.0) -> nn.Module:
    """The norm a layer's blocks name (``DecoderBlocks.norm``): :func:`rms_norm` for ``"rms"`` (with the blocks'
    ``norm_offset``), ``nn.LayerNorm`` with a weight and a bias for ``"layer"`` (no offset)."""
    if kind == "rms":
        return rms_norm(hidden_size, eps, offset)
    if kind == "layer":
        if offset:
            raise ValueError(f"DecoderBlocks(norm='layer', norm_offset={offset}): LayerNorms take no offset")
        return nn.LayerNorm(hidden_size, eps=eps)
    raise ValueError(f"DecoderBlocks.norm={kind!r}: choose 'rms' or 'layer'")
