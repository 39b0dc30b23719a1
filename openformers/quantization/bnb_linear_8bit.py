"""``Linear8bitLt``: int8 weights with one absmax scale per output row (``BitsAndBytesConfig(load_in_8bit=True)``)."""
from __future__ import annotations

from typing import Any

import torch

from openformers.quantization import bnb_format
from openformers.quantization.bnb_linear import _meta, _QuantizedLinearBase
from openformers.quantization.functional import quantize_8bit


class _Int8Product(torch.autograd.Function):
    """``(x @ int8.T) * SCB / 127`` whose backward converts the int8 weight again instead of
    autograd keeping a float copy of it (as large as the unquantized layer) from forward to backward."""

    @staticmethod
    def forward(ctx: Any, x2: torch.Tensor, layer: "Linear8bitLt") -> torch.Tensor:
        ctx.layer = layer
        return (x2 @ layer.weight.to(x2.dtype).t()) * (layer.SCB.to(x2.dtype) / 127)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, None]:
        if not ctx.needs_input_grad[0]:
            return None, None
        layer = ctx.layer
        return (grad * (layer.SCB.to(grad.dtype) / 127)) @ layer.weight.to(grad.dtype), None


class Linear8bitLt(_QuantizedLinearBase):
    """A linear layer with int8 weights and one absmax scale per output row (``SCB``).

    On the CPU the product is ``(x @ int8.T) * SCB / 127`` in the compute dtype (the layer's
    float dtype), i.e. ``x @ dequantize().T``. PyTorch's int8 weight-only kernel
    (``_weight_int8pack_mm``) computes the same product but measured 3x (1 row) to 40x (64 rows)
    slower on the AVX-512 CPUs this was tuned on, so it is not used. ``threshold`` (LLM.int8's
    outlier threshold) is kept for the configuration: the activations are never quantized here,
    which is the limit of every column being an outlier.
    """

    _required = ("weight", "SCB")
    _follows_model_dtype = True  # 8-bit layers compute in the model's dtype

    def __init__(
        self,
        in_features: int,
        out_features: int,
        bias: bool = True,
        threshold: float = 6.0,
        has_fp16_weights: bool = False,
        pre_quantized: bool = False,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__(in_features, out_features, bias, pre_quantized, dtype)
        self.threshold = threshold
        self.has_fp16_weights = has_fp16_weights
        self._compute_dtype = dtype or torch.float32
        if pre_quantized:
            self.register_buffer("weight", _meta(out_features, in_features, dtype=torch.int8))
            self.register_buffer("SCB", _meta(out_features, dtype=torch.float32))

    def _set_loaded_tensor(self, attr: str, tensor: torch.Tensor, dtype: torch.dtype) -> None:
        self._compute_dtype = dtype  # 8-bit layers compute in the model's dtype
        super()._set_loaded_tensor(attr, tensor, dtype)

    def _load_packed(self, attr: str, tensor: torch.Tensor) -> None:
        if attr == "weight":
            if tensor.dtype != torch.int8 or tuple(tensor.shape) != (self.out_features, self.in_features):
                raise ValueError(
                    f"weight is {tensor.dtype} {list(tensor.shape)}, an 8-bit layer needs int8 "
                    f"[{self.out_features}, {self.in_features}]"
                )
            self.register_buffer("weight", tensor)
        elif attr == "SCB":
            if tensor.numel() != self.out_features:
                raise ValueError(f"SCB holds {tensor.numel()} scales, the layer has {self.out_features} rows")
            self.register_buffer("SCB", tensor.reshape(-1).float())
        elif attr == "weight_format":
            value = int(tensor.reshape(-1)[0]) if tensor.numel() else bnb_format.WEIGHT_FORMAT_ROW
            if value != bnb_format.WEIGHT_FORMAT_ROW:
                raise ValueError(f"weight_format {value} is a GPU tile layout; only row-major weights (0) can be read")
        else:
            raise self._unknown(attr)

    def _save_to_state_dict(self, destination: dict[str, Any], prefix: str, keep_vars: bool) -> None:
        if self._waiting_for_float():
            return super()._save_to_state_dict(destination, prefix, keep_vars)
        destination[prefix + "weight"] = self.weight if keep_vars else self.weight.detach()
        self._save_bias(destination, prefix, keep_vars)
        destination[prefix + "SCB"] = self.SCB if keep_vars else self.SCB.detach()
        destination[prefix + "weight_format"] = torch.tensor(bnb_format.WEIGHT_FORMAT_ROW, dtype=torch.uint8)

    def quantize_weight(self, weight: torch.Tensor) -> None:
        if tuple(weight.shape) != (self.out_features, self.in_features):
            raise ValueError(f"Linear8bitLt: weight of shape {tuple(weight.shape)}, expected {(self.out_features, self.in_features)}")
        q, scb = quantize_8bit(weight)
        self._drop_float_placeholder()
        self.register_buffer("weight", q)
        self.register_buffer("SCB", scb)

    def dequantize(self, dtype: torch.dtype | None = None) -> torch.Tensor:
        self._check_ready()
        dtype = dtype or self.compute_dtype
        return self.weight.to(dtype) * (self.SCB.to(dtype) / 127)[:, None]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._check_ready()
        cd = self.compute_dtype
        rows = x.numel() // self.in_features
        x2 = x.reshape(rows, self.in_features).to(cd)
        # scaling the [rows, out] product is cheaper than scaling the [out, in] weight
        if torch.is_grad_enabled() and x2.requires_grad:
            y = _Int8Product.apply(x2, self)
        else:
            y = (x2 @ self.weight.to(cd).t()) * (self.SCB.to(cd) / 127)
        if self.bias is not None:
            y = y + self.bias.to(cd)
        return y.reshape(*x.shape[:-1], self.out_features).to(x.dtype)

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}, "
                f"compute_dtype={self.compute_dtype}")


__all__ = ["Linear8bitLt"]
