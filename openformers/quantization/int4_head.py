"""An LM head that scores the vocabulary in 4 bits and rescores the best candidates exactly.

Decoding reads the whole LM head each token; for a small model with a large vocabulary (SmolLM2:
49152 x 576) that is the largest single read, 57 MB in bfloat16 against 18 MB in 4 bits. A plain
4-bit head moves every logit by the 4-bit rounding error, enough to change greedy picks. This head
scores all tokens with a 4-bit copy of the weight (per group of 32, round to nearest), then
recomputes the ``top_k`` highest-scoring tokens from the float weight and writes them over their
approximations. The highest logit is therefore exact whenever the float head's best token is among
the 4-bit head's ``top_k`` best (the 4-bit error is a fraction of a logit, far less than the spread
of 64 candidates on a real model; the tests check the greedy picks against the float head); the other
logits carry the 4-bit error, so sampling sees a slightly blurred tail.

The float weight stays the module's ``weight`` (tied to the input embeddings where the model ties
them; ``state_dict`` is unchanged); the 4-bit copy lives outside ``state_dict`` and is rebuilt when
the weight changes. Training (gradients enabled) and calls with more than ``max_rows`` rows (a
prompt's logits) use the float weight.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from openformers.runtime.packed_weights import tensor_version
from openformers.quantization.gguf_linear import QuantizedLinear, quantize_int4


class CheckedInt4Head(nn.Linear):
    """``nn.Linear`` whose inference scores come from a 4-bit copy, the best ``top_k`` rescored."""

    max_rows = 8  # more rows at once (a prompt's logits): the float matmul is as cheap per row
    top_k = 64

    def __init__(self, in_features: int, out_features: int, bias: bool = False, group_size: int = 32,
                 compute_dtype: torch.dtype = torch.bfloat16, device: torch.device | str | None = None,
                 dtype: torch.dtype | None = None) -> None:
        super().__init__(in_features, out_features, bias=bias, device=device, dtype=dtype)
        if in_features % group_size:
            raise ValueError(f"CheckedInt4Head: in_features={in_features} is not a multiple of group_size={group_size}")
        self.group_size, self.compute_dtype = group_size, compute_dtype
        self.__dict__["_int4"] = None  # (key, QuantizedLinear)

    @classmethod
    def from_linear(cls, linear: nn.Linear, group_size: int = 32, compute_dtype: torch.dtype = torch.bfloat16) -> "CheckedInt4Head":
        """A head computing with ``linear``'s own weight (and bias) Parameters: ties are kept."""
        with torch.device("meta"):
            head = cls(linear.in_features, linear.out_features, bias=linear.bias is not None,
                       group_size=group_size, compute_dtype=compute_dtype)
        head.weight = linear.weight
        head.bias = linear.bias
        return head

    def _quantized(self) -> tuple:  # the 4-bit copy of the current weight
        w = self.weight
        key = (w.data_ptr(), tensor_version(w), w.dtype, tuple(w.shape))
        cached = self.__dict__["_int4"]
        if cached is None or cached[0] != key:
            with torch.no_grad():
                q, scale, lo = quantize_int4(w, self.group_size)
                layer = QuantizedLinear.from_quantized(q, scale, lo, None, self.compute_dtype)
            self.__dict__["_int4"] = cached = (key, layer)
        return cached

    def step_bytes(self) -> int:
        """Bytes one single-row call reads: the 4-bit copy and ``top_k`` float rows."""
        _, layer = self._quantized()
        packed = sum(t.numel() * t.element_size() for t in (layer.qweight, layer.scales_and_zeros))
        return packed + self.top_k * self.in_features * self.weight.element_size()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rows = x.numel() // self.in_features
        if torch.is_grad_enabled() or rows > self.max_rows or x.device.type != "cpu":
            return F.linear(x, self.weight, self.bias)
        _, layer = self._quantized()
        flat = x.reshape(rows, self.in_features)
        approx = layer._matmul(flat).to(x.dtype)  # [rows, vocab]
        best = approx.topk(min(self.top_k, self.out_features), dim=-1).indices  # [rows, k]
        for r in range(rows):
            approx[r].index_copy_(0, best[r], self.weight.index_select(0, best[r]).to(x.dtype) @ flat[r])
        if self.bias is not None:
            approx += self.bias.to(x.dtype)
        return approx.reshape(*x.shape[:-1], self.out_features)

    def extra_repr(self) -> str:
        return super().extra_repr() + f", 4-bit scores, top {self.top_k} exact (group_size={self.group_size}, {self.compute_dtype})"
