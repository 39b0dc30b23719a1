"""Quantized linear layers for ``BitsAndBytesConfig``: ``Linear4bit`` (NF4/FP4) and ``Linear8bitLt``.

Both keep their weight packed and dequantize it for each forward pass into the compute dtype
(no full-precision copy stays in memory, not even for the backward pass: the input gradient
dequantizes the weight again). Both can be built empty on the meta device and then
filled while a checkpoint streams in (``_set_loaded_tensor``): a float weight is quantized the
moment it arrives; the tensors of an already quantized checkpoint are stored as they are.

Every layer exposes what adapters need: ``in_features``, ``out_features``, ``weight`` (the
packed storage, with ``weight.device``), ``bias``, ``compute_dtype``, ``forward(x)`` and
``dequantize() -> Tensor`` (the float ``[out, in]`` weight it computes with).
"""
from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from openformers.quantization.functional import (
    BLOCKSIZE_4BIT,
    BLOCKSIZE_NESTED,
    QuantState4bit,
    dequantize_4bit,
    quantize_4bit,
    quantize_8bit,
)

# float tensors of a quantized checkpoint that must keep their exact bits (no dtype cast)
_EXACT = {"absmax", "nested_absmax", "nested_offset", "SCB"}


def _load_trim() -> Any:
    try:
        import ctypes

        return ctypes.CDLL("libc.so.6").malloc_trim
    except (OSError, AttributeError):  # not glibc: nothing to do
        return None


_MALLOC_TRIM = _load_trim()


def release_freed_memory() -> None:
    """Hand memory freed by the float temporaries back to the OS.

    Quantizing while loading interleaves short-lived float weights (megabytes each) with the
    small long-lived packed tensors; glibc then keeps the freed float blocks in its heap, and
    the process grew by ~2 MB a layer on SmolLM2 (890 MB instead of 455 MB after loading).
    """
    if _MALLOC_TRIM is not None:
        _MALLOC_TRIM(0)


def _float_param(tensor: torch.Tensor, dtype: torch.dtype) -> nn.Parameter:
    return nn.Parameter(tensor.detach().to(dtype), requires_grad=False)


class _DequantizedLinear(torch.autograd.Function):
    """``x @ W.T + bias`` for a packed weight ``W``: dequantized for the forward product and again
    for the input gradient, so autograd never holds a float copy of the weight between the two
    (that copy is as large as the unquantized layer)."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, bias: torch.Tensor | None, layer: "_QuantizedLinearBase") -> torch.Tensor:
        ctx.layer = layer
        return F.linear(x, layer.dequantize(x.dtype), bias)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor | None, None]:
        grad_x = grad_bias = None
        if ctx.needs_input_grad[0]:
            grad_x = grad @ ctx.layer.dequantize(grad.dtype)
        if ctx.needs_input_grad[1]:
            grad_bias = grad.reshape(-1, grad.shape[-1]).sum(0)
        return grad_x, grad_bias, None


class _QuantizedLinearBase(nn.Module):
    in_features: int
    out_features: int

    def __init__(self, in_features: int, out_features: int, bias: bool, pre_quantized: bool,
                 dtype: torch.dtype | None) -> None:
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self.pre_quantized = pre_quantized
        dtype = dtype or torch.float32
        # waiting for a float weight: a placeholder of the float shape the checkpoint matches
        self._quantized = False
        if not pre_quantized:
            self.weight = nn.Parameter(torch.empty(out_features, in_features, dtype=dtype, device="meta"), requires_grad=False)
        self.bias = nn.Parameter(torch.empty(out_features, dtype=dtype, device="meta"), requires_grad=False) if bias else None

    # -- filling ---------------------------------------------------------------------------
    def _set_loaded_tensor(self, attr: str, tensor: torch.Tensor, dtype: torch.dtype) -> None:
        """Store one checkpoint tensor (called by ``PreTrainedModel`` while loading)."""
        if attr == "bias":
            self.bias = _float_param(tensor, dtype)
        elif attr == "weight" and not self.pre_quantized:
            if self._quantized:
                raise ValueError(f"{type(self).__name__}: the float weight was given twice")
            self.quantize_weight(tensor)
            del tensor
            release_freed_memory()
        else:
            self._buffers[attr] = tensor if attr in _EXACT or not tensor.is_floating_point() else tensor.to(dtype)

    def _apply(self, fn: Any, recurse: bool = True) -> "_QuantizedLinearBase":
        # model.to(dtype) / .half() move packed data and scales between devices but never cast
        # them: a cast would corrupt the codes (or the scales' exact bits)
        kept = {k: b for k, b in self._buffers.items() if b is not None}
        super()._apply(fn, recurse)
        for key, old in kept.items():
            new = self._buffers[key]
            if new is not None and new.dtype != old.dtype:
                self._buffers[key] = old.to(new.device)
        if isinstance(self, Linear8bitLt):
            probe = fn(torch.empty(0))
            if probe.is_floating_point():
                self._compute_dtype = probe.dtype  # 8-bit layers compute in the model's dtype
        return self

    def reset_parameters(self) -> None:
        """Refuse random initialisation (called for tensors a checkpoint lacks)."""
        raise ValueError(
            f"{type(self).__name__}(in_features={self.in_features}, out_features={self.out_features}): the checkpoint "
            f"lacks tensors of this quantized layer and a quantized layer is never initialised randomly; check that "
            f"the checkpoint matches the model, or leave the layer out with llm_int8_skip_modules"
        )

    def _drop_float_placeholder(self) -> None:
        if "weight" in self._parameters:
            del self._parameters["weight"]
        self._quantized = True

    # -- compute (subclasses define quantize_weight, dequantize and compute_dtype) ------------
    def weight_bytes(self) -> int:
        """Bytes of the packed weight and its scales (the bias excluded)."""
        return sum(b.numel() * b.element_size() for b in self.buffers(recurse=False) if b is not None)

    def _check_ready(self) -> None:
        if self.weight.is_meta:
            raise RuntimeError(f"{type(self).__name__} has no quantized weight yet; load it with from_pretrained or build it with from_linear")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        cd = self.compute_dtype
        bias = self.bias.to(cd) if self.bias is not None else None
        xc = x.to(cd)
        if torch.is_grad_enabled() and (xc.requires_grad or (bias is not None and bias.requires_grad)):
            return _DequantizedLinear.apply(xc, bias, self).to(x.dtype)
        return F.linear(xc, self.dequantize(cd), bias).to(x.dtype)

    @classmethod
    def _empty(cls, linear: nn.Linear, **kwargs: Any) -> "_QuantizedLinearBase":
        return cls(linear.in_features, linear.out_features, bias=linear.bias is not None, **kwargs)

    @classmethod
    def from_linear(cls, linear: nn.Linear, **kwargs: Any) -> "_QuantizedLinearBase":
        """Quantize a float ``nn.Linear`` (its weight is read once, then released)."""
        layer = cls._empty(linear, dtype=linear.weight.dtype, **kwargs)
        layer.quantize_weight(linear.weight)
        if linear.bias is not None:
            layer.bias = _float_param(linear.bias, linear.bias.dtype)
        return layer


class Linear4bit(_QuantizedLinearBase):
    """A linear layer with block-wise 4-bit weights (NF4 or FP4), optionally double-quantized.

    Buffers (the saved format): ``weight`` uint8 ``[ceil(out * in / 2), 1]`` (two codes a byte,
    or viewed as ``quant_storage``), ``absmax`` (float32 per block of ``blocksize``, or uint8
    when double-quantized, then with ``nested_absmax`` float32 per 256 blocks and
    ``nested_offset``).
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        bias: bool = True,
        compute_dtype: torch.dtype | None = None,
        quant_type: str = "fp4",
        compress_statistics: bool = False,
        quant_storage: torch.dtype | None = None,
        blocksize: int = BLOCKSIZE_4BIT,
        pre_quantized: bool = False,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__(in_features, out_features, bias, pre_quantized, dtype)
        if quant_type not in ("nf4", "fp4"):
            raise ValueError(f"Linear4bit: quant_type={quant_type!r} is not supported; use 'nf4' or 'fp4'")
        self.quant_type = quant_type
        self.compress_statistics = compress_statistics
        self.quant_storage = quant_storage or torch.uint8
        self.blocksize = blocksize
        self._compute_dtype = compute_dtype or torch.float32
        n = in_features * out_features
        blocks = -(-n // blocksize)
        if pre_quantized:
            item = torch.empty((), dtype=self.quant_storage).element_size()
            storage_elems = -(-((n + 1) // 2) // item)
            self.register_buffer("weight", torch.empty(storage_elems, 1, dtype=self.quant_storage, device="meta"))
            self.register_buffer("absmax", torch.empty(blocks, dtype=torch.uint8 if compress_statistics else torch.float32, device="meta"))
            if compress_statistics:
                self.register_buffer("nested_absmax", torch.empty(-(-blocks // BLOCKSIZE_NESTED), dtype=torch.float32, device="meta"))
                self.register_buffer("nested_offset", torch.empty((), dtype=torch.float32, device="meta"))

    @classmethod
    def _empty(cls, linear: nn.Linear, **kwargs: Any) -> "Linear4bit":
        return cls(linear.in_features, linear.out_features, bias=linear.bias is not None, **kwargs)

    def quantize_weight(self, weight: torch.Tensor) -> None:
        if tuple(weight.shape) != (self.out_features, self.in_features):
            raise ValueError(f"Linear4bit: weight of shape {tuple(weight.shape)}, expected {(self.out_features, self.in_features)}")
        packed, state = quantize_4bit(weight, self.quant_type, self.blocksize, self.compress_statistics)
        self._drop_float_placeholder()
        item = torch.empty((), dtype=self.quant_storage).element_size()
        if item > 1:
            packed = F.pad(packed, (0, -packed.numel() % item))
        self.register_buffer("weight", packed.view(self.quant_storage).reshape(-1, 1))
        self.register_buffer("absmax", state.absmax)
        if state.nested:
            self.register_buffer("nested_absmax", state.nested_absmax)
            self.register_buffer("nested_offset", state.nested_offset)

    @property
    def quant_state(self) -> QuantState4bit:
        nested = self.compress_statistics
        return QuantState4bit(
            (self.out_features, self.in_features), self.quant_type, self.blocksize, self.absmax,
            self.nested_absmax if nested else None, self.nested_offset if nested else None,
        )

    @property
    def compute_dtype(self) -> torch.dtype:
        return self._compute_dtype

    @compute_dtype.setter
    def compute_dtype(self, dtype: torch.dtype) -> None:
        self._compute_dtype = dtype

    def dequantize(self, dtype: torch.dtype | None = None) -> torch.Tensor:
        """The ``[out, in]`` weight in ``dtype`` (default: the compute dtype)."""
        self._check_ready()
        return dequantize_4bit(self.weight, self.quant_state, dtype or self.compute_dtype)

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}, "
                f"quant_type={self.quant_type}, double_quant={self.compress_statistics}, compute_dtype={self.compute_dtype}")


class Linear8bitLt(_QuantizedLinearBase):
    """A linear layer with int8 weights and one absmax scale per output row (``SCB``).

    On the CPU the product is ``(x @ int8.T) * SCB / 127`` in the compute dtype (the layer's
    float dtype), i.e. ``x @ dequantize().T``. PyTorch's int8 weight-only kernel
    (``_weight_int8pack_mm``) computes the same product but measured 3x (1 row) to 40x (64 rows)
    slower on the AVX-512 CPUs this was tuned on, so it is not used. ``threshold`` (LLM.int8's outlier threshold) is kept for
    the configuration: the activations are never quantized here, which is the limit of every
    column being an outlier.
    """

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
            self.register_buffer("weight", torch.empty(out_features, in_features, dtype=torch.int8, device="meta"))
            self.register_buffer("SCB", torch.empty(out_features, dtype=torch.float32, device="meta"))

    def _set_loaded_tensor(self, attr: str, tensor: torch.Tensor, dtype: torch.dtype) -> None:
        self._compute_dtype = dtype  # 8-bit layers compute in the model's dtype
        super()._set_loaded_tensor(attr, tensor, dtype)

    def quantize_weight(self, weight: torch.Tensor) -> None:
        if tuple(weight.shape) != (self.out_features, self.in_features):
            raise ValueError(f"Linear8bitLt: weight of shape {tuple(weight.shape)}, expected {(self.out_features, self.in_features)}")
        q, scb = quantize_8bit(weight)
        self._drop_float_placeholder()
        self.register_buffer("weight", q)
        self.register_buffer("SCB", scb)

    @property
    def compute_dtype(self) -> torch.dtype:
        return self._compute_dtype

    @compute_dtype.setter
    def compute_dtype(self, dtype: torch.dtype) -> None:
        self._compute_dtype = dtype

    def dequantize(self, dtype: torch.dtype | None = None) -> torch.Tensor:
        self._check_ready()
        dtype = dtype or self.compute_dtype
        return self.weight.to(dtype) * (self.SCB.to(dtype) / 127)[:, None]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._check_ready()
        cd = self.compute_dtype
        rows = x.numel() // self.in_features
        x2 = x.reshape(rows, self.in_features).to(cd)
        scale = self.SCB.to(cd) / 127
        # scaling the [rows, out] product is cheaper than scaling the [out, in] weight
        y = (x2 @ self.weight.to(cd).t()) * scale
        if self.bias is not None:
            y = y + self.bias.to(cd)
        return y.reshape(*x.shape[:-1], self.out_features).to(x.dtype)

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}, "
                f"compute_dtype={self.compute_dtype}")


def quantized_weight_bytes(model: nn.Module) -> tuple[int, int]:
    """``(bytes of the quantized weights and scales, their float32 bytes)`` over a model's quantized layers."""
    packed = full = 0
    for module in model.modules():
        if isinstance(module, _QuantizedLinearBase):
            packed += module.weight_bytes()
            full += module.in_features * module.out_features * 4
    return packed, full


__all__ = ["Linear4bit", "Linear8bitLt", "quantized_weight_bytes"]
