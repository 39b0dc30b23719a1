"""Feed-forward blocks and the activation table they draw from."""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from openformers.modules.dense import Linear
from openformers.modules.swiglu_native import swiglu



def gelu_tanh(x: torch.Tensor) -> torch.Tensor:
    """GELU with the tanh approximation (PyTorch's ``approximate="tanh"``)."""
    return F.gelu(x, approximate="tanh")


# names as they appear in Hugging Face configs (``hidden_act``); one function object per kind, so a runtime
# can tell the kinds apart by identity
ACTIVATIONS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "silu": F.silu,
    "swish": F.silu,
    "gelu": F.gelu,
    "gelu_new": gelu_tanh,
    "gelu_pytorch_tanh": gelu_tanh,
    "gelu_fast": gelu_tanh,
    "relu": F.relu,
    "relu2": lambda x: F.relu(x).square(),
    "tanh": torch.tanh,
    "sigmoid": torch.sigmoid,
}


def get_activation(name: str) -> Callable[[torch.Tensor], torch.Tensor]:
    """The activation function for a config's ``hidden_act`` name."""
    if name not in ACTIVATIONS:
        raise ValueError(f"hidden_act={name!r} is not supported; choose one of {sorted(ACTIVATIONS)}")
    return ACTIVATIONS[name]


class GatedMLP(nn.Module):
    """SwiGLU-style feed-forward: ``down_proj(act(gate_proj(x)) * up_proj(x))``.

    Reads ``hidden_size``, ``intermediate_size``, ``hidden_act`` and ``mlp_bias`` (default
    False) from the config.
    """

    def __init__(self, config: Any) -> None:
        super().__init__()
        hidden, inner = config.hidden_size, config.intermediate_size
        bias = bool(getattr(config, "mlp_bias", False))
        self.gate_proj = Linear(hidden, inner, bias=bias)
        self.up_proj = Linear(hidden, inner, bias=bias)
        self.down_proj = Linear(inner, hidden, bias=bias)
        self.act_fn = get_activation(config.hidden_act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate, up = self.gate_proj(x), self.up_proj(x)
        fused = swiglu(gate, up) if self.act_fn is F.silu else None  # training on the CPU: one pass each way
        return self.down_proj(fused if fused is not None else self.act_fn(gate) * up)


class PlainMLP(nn.Module):
    """Two-layer feed-forward: ``c_proj(act(c_fc(x)))`` (Starcoder2).

    Reads ``hidden_size``, ``intermediate_size``, ``hidden_act`` and ``mlp_bias`` (default False) from the
    config.
    """

    def __init__(self, config: Any) -> None:
        super().__init__()
        hidden, inner = config.hidden_size, config.intermediate_size
        bias = bool(getattr(config, "mlp_bias", False))
        self.c_fc = Linear(hidden, inner, bias=bias)
        self.c_proj = Linear(inner, hidden, bias=bias)
        self.act_fn = get_activation(config.hidden_act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.c_proj(self.act_fn(self.c_fc(x)))


# the MLP classes of ``DecoderBlocks.mlp`` (modules/blocks.py)
MLPS: dict[str, type[nn.Module]] = {"gated": GatedMLP, "plain": PlainMLP}


def decoder_mlp(kind: str, config: Any) -> nn.Module:
    """The MLP a layer's blocks name (``"gated"`` or ``"plain"``) for ``config``."""
    if kind not in MLPS:
        raise ValueError(f"DecoderBlocks.mlp={kind!r}: choose one of {sorted(MLPS)}")
    return MLPS[kind](config)
