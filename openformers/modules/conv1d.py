"""GPT-2's ``Conv1D``: a linear layer whose weight is stored as [in_features, out_features].

OpenAI's checkpoints keep that layout, so the parameter is kept as-is (no transpose on load
or save). LoRA's ``fan_in_fan_out=True`` refers to this layout. The product is
:func:`~openformers.modules.dense.train_linear` on the weight's ``[out, in]`` view, like the model
files' ``Linear``.
"""
from __future__ import annotations

import torch
from torch import nn

from openformers.modules.dense import train_linear


class Conv1D(nn.Module):
    """``y = x @ weight + bias`` with ``weight`` of shape [nx, nf].

    Args:
        nf: number of output features.
        nx: number of input features.

    The argument order (outputs first) follows the Hugging Face class of the same name.
    """

    def __init__(self, nf: int, nx: int, *, device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> None:
        super().__init__()
        if nf <= 0 or nx <= 0:
            raise ValueError(f"Conv1D needs positive sizes, got nf={nf} (outputs), nx={nx} (inputs)")
        self.nf = nf
        self.nx = nx
        self.weight = nn.Parameter(torch.empty(nx, nf, device=device, dtype=dtype))
        self.bias = nn.Parameter(torch.zeros(nf, device=device, dtype=dtype))
        if self.weight.device.type != "meta":
            nn.init.normal_(self.weight, std=0.02)

    @property
    def in_features(self) -> int:
        return self.nx

    @property
    def out_features(self) -> int:
        return self.nf

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] != self.nx:
            raise ValueError(f"Conv1D expects inputs with last dimension {self.nx}, got shape {tuple(x.shape)}")
        # [..., nx] @ [nx, nf] + [nf] -> [..., nf]: F.linear on the [nf, nx] view of the weight, through
        # train_linear (oneDNN for recorded float32 CPU products, as modules/dense.py's Linear)
        return train_linear(x, self.weight.t(), self.bias)

    def extra_repr(self) -> str:
        return f"nf={self.nf}, nx={self.nx}"
