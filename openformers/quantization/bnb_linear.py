"""Quantized linear layers for ``BitsAndBytesConfig``: ``Linear4bit`` (NF4/FP4) here and ``Linear8bitLt`` (bnb_linear_8bit).

Both keep their weight packed and dequantize it for each forward pass into the compute dtype
(no full-precision copy stays in memory, not even for the backward pass: the input gradient
dequantizes the weight again). Both can be built empty on the meta device and then
filled while a checkpoint streams in (``_set_loaded_tensor``): a float weight is quantized the
moment it arrives; the tensors of an already quantized checkpoint are stored as they are. Their
``state_dict`` is the layout transformers + bitsandbytes write (see ``bnb_format``), so files
saved here load there and theirs load here.

Every layer exposes what adapters need: ``in_features``, ``out_features``, ``weight`` (the
packed storage, with ``weight.device``), ``bias``, ``compute_dtype``, ``forward(x)`` and
``dequantize() -> Tensor`` (the float ``[out, in]`` weight it computes with).
"""
from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from openformers.modules.casts import apply_keeping_buffer_dtypes
from openformers.quantization import bnb_format
from openformers.quantization.functional import (
    BLOCKSIZE_4BIT,
    BLOCKSIZE_NESTED,
    QuantState4bit,
    code_book,
    dequantize_4bit,
    dynamic_code,
    quantize_4bit,
)

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
    # the model loader hands every checkpoint tensor under this layer's name to _set_loaded_tensor
    _loads_own_tensors = True
    _required: tuple[str, ...] = ("weight",)
    _follows_model_dtype = False  # model.to(float dtype) also sets the compute dtype

    def __init__(self, in_features: int, out_features: int, bias: bool, pre_quantized: bool,
                 dtype: torch.dtype | None) -> None:
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self.pre_quantized = pre_quantized
        dtype = dtype or torch.float32
        self.weight_dtype = dtype  # the float dtype the weight had before quantization
        # waiting for a float weight: a placeholder of the float shape the checkpoint matches
        self._quantized = False
        if not pre_quantized:
            self.weight = nn.Parameter(torch.empty(out_features, in_features, dtype=dtype, device="meta"), requires_grad=False)
        self.bias = nn.Parameter(torch.empty(out_features, dtype=dtype, device="meta"), requires_grad=False) if bias else None

    # -- filling ---------------------------------------------------------------------------
    def _set_loaded_tensor(self, attr: str, tensor: torch.Tensor, dtype: torch.dtype) -> None:
        """Store one checkpoint tensor (``attr``: its name below the layer, in either layout)."""
        if attr == "bias":
            if self.bias is None:
                raise ValueError(f"{type(self).__name__} was built without a bias but the checkpoint has one")
            if tuple(tensor.shape) != (self.out_features,):
                raise ValueError(f"bias of shape {list(tensor.shape)}, expected [{self.out_features}]")
            self.bias = _float_param(tensor, dtype)
        elif attr == "weight" and not self.pre_quantized:
            if not tensor.is_floating_point():
                raise ValueError(
                    f"weight of dtype {tensor.dtype} in a checkpoint without a quantization_config in config.json; "
                    f"a float weight was expected"
                )
            if self._quantized:
                raise ValueError(f"{type(self).__name__}: the float weight was given twice")
            self.weight_dtype = tensor.dtype
            self.quantize_weight(tensor)
            release_freed_memory()  # the float temporaries of earlier layers (the caller still holds this one)
        else:
            self._load_packed(attr, tensor)

    def _unknown(self, attr: str) -> ValueError:
        return ValueError(f"{type(self).__name__} has no tensor {attr!r}; the checkpoint does not match this layer type")

    def _check_loaded(self) -> None:
        """Raise ``ValueError`` when a tensor the layer needs never arrived (called after loading)."""
        absent = [k for k in self._required if getattr(self, k, None) is None or getattr(self, k).is_meta]
        if self.bias is not None and self.bias.is_meta:
            absent.append("bias")
        if absent:
            raise ValueError(
                f"{type(self).__name__}(in_features={self.in_features}, out_features={self.out_features}): the checkpoint "
                f"lacks tensors of this quantized layer ({', '.join(absent)}); check that the checkpoint matches the "
                f"model, or leave the layer out with llm_int8_skip_modules"
            )

    def _apply(self, fn: Any, recurse: bool = True) -> "_QuantizedLinearBase":
        # model.to(dtype) / .half() move packed data and scales between devices but never cast
        # them: a cast would corrupt the codes (or the scales' exact bits)
        apply_keeping_buffer_dtypes(self, super()._apply, fn, recurse)
        if self._follows_model_dtype:
            probe = fn(torch.empty(0))
            if probe.is_floating_point():
                self._compute_dtype = probe.dtype
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

    def _waiting_for_float(self) -> bool:
        """Built to quantize a float weight that has not arrived yet (only the float placeholder)."""
        return not self.pre_quantized and not self._quantized

    def _save_bias(self, destination: dict[str, Any], prefix: str, keep_vars: bool) -> None:
        if self.bias is not None:
            destination[prefix + "bias"] = self.bias if keep_vars else self.bias.detach()

    # -- compute (subclasses define quantize_weight and dequantize) -----------------------------
    @property
    def compute_dtype(self) -> torch.dtype:
        return self._compute_dtype

    @compute_dtype.setter
    def compute_dtype(self, dtype: torch.dtype) -> None:
        self._compute_dtype = dtype

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


def _meta(*shape: int, dtype: torch.dtype) -> torch.Tensor:
    return torch.empty(shape, dtype=dtype, device="meta")


class Linear4bit(_QuantizedLinearBase):
    """A linear layer with block-wise 4-bit weights (NF4 or FP4), optionally double-quantized.

    Buffers: ``weight`` uint8 ``[ceil(out * in / 2), 1]`` (two codes a byte, or viewed as
    ``quant_storage``), ``absmax`` (float32 per block of ``blocksize``, or uint8 when
    double-quantized, then with ``nested_absmax`` float32 per ``nested_blocksize`` blocks and
    ``nested_offset``). ``state_dict`` gives them the names bitsandbytes uses (``bnb_format``).
    ``compute_dtype`` is the dtype the weight is dequantized to and the product computed in:
    code value times block scale is formed in float32, rounded once to ``compute_dtype``, and the
    input is cast to it (the output is cast back to the input's dtype), as bitsandbytes does.
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
        self.nested_blocksize = BLOCKSIZE_NESTED
        self._compute_dtype = compute_dtype or torch.float32
        # code books a checkpoint brought (None: the standard ones; they are not buffers so that
        # layers share nothing a save would have to write once)
        self.quant_map: torch.Tensor | None = None
        self.nested_quant_map: torch.Tensor | None = None
        if pre_quantized:
            n = in_features * out_features
            item = torch.empty((), dtype=self.quant_storage).element_size()
            self.register_buffer("weight", _meta(-(-((n + 1) // 2) // item), 1, dtype=self.quant_storage))
            blocks = -(-n // blocksize)
            self.register_buffer("absmax", _meta(blocks, dtype=torch.uint8 if compress_statistics else torch.float32))
            if compress_statistics:
                self.register_buffer("nested_absmax", _meta(-(-blocks // BLOCKSIZE_NESTED), dtype=torch.float32))
                self.register_buffer("nested_offset", _meta(dtype=torch.float32))

    @property
    def _required(self) -> tuple[str, ...]:  # type: ignore[override]
        return ("weight", "absmax", "nested_absmax", "nested_offset") if self.compress_statistics else ("weight", "absmax")

    @classmethod
    def _empty(cls, linear: nn.Linear, **kwargs: Any) -> "Linear4bit":
        return cls(linear.in_features, linear.out_features, bias=linear.bias is not None, **kwargs)

    def quantize_weight(self, weight: torch.Tensor) -> None:
        if tuple(weight.shape) != (self.out_features, self.in_features):
            raise ValueError(f"Linear4bit: weight of shape {tuple(weight.shape)}, expected {(self.out_features, self.in_features)}")
        packed, state = quantize_4bit(weight, self.quant_type, self.blocksize, self.compress_statistics)
        self._drop_float_placeholder()
        self.weight_dtype = weight.dtype
        item = torch.empty((), dtype=self.quant_storage).element_size()
        if item > 1:
            packed = F.pad(packed, (0, -packed.numel() % item))
        self.register_buffer("weight", packed.view(self.quant_storage).reshape(-1, 1))
        self.register_buffer("absmax", state.absmax)
        if state.nested:
            self.register_buffer("nested_absmax", state.nested_absmax)
            self.register_buffer("nested_offset", state.nested_offset)
        self.quant_map = self.nested_quant_map = None

    # -- the checkpoint layout -------------------------------------------------------------
    def _save_to_state_dict(self, destination: dict[str, Any], prefix: str, keep_vars: bool) -> None:
        if self._waiting_for_float():
            return super()._save_to_state_dict(destination, prefix, keep_vars)

        def put(key: str, tensor: torch.Tensor) -> None:
            destination[prefix + key] = tensor if keep_vars else tensor.detach()

        put("weight", self.weight)
        self._save_bias(destination, prefix, keep_vars)
        put("weight.absmax", self.absmax)
        put("weight.quant_map", (code_book(self.quant_type) if self.quant_map is None else self.quant_map).clone())
        nested = self.compress_statistics
        if nested:
            put("weight.nested_absmax", self.nested_absmax)
            put("weight.nested_quant_map", (dynamic_code() if self.nested_quant_map is None else self.nested_quant_map).clone())
        if self.weight.is_meta or (nested and self.nested_offset.is_meta):
            state = _meta(0, dtype=torch.uint8)  # its length is known once the offset is
        else:
            offset = float(self.nested_offset) if nested else None
            state = bnb_format.quant_state_json(
                self.quant_type, self.blocksize, self.weight_dtype, (self.out_features, self.in_features),
                offset, self.nested_blocksize,
            )
        put(bnb_format.QUANT_STATE_KEY + self.quant_type, state)

    def _load_packed(self, attr: str, tensor: torch.Tensor) -> None:
        if attr == "weight":
            self.quant_storage = tensor.dtype
            self.register_buffer("weight", tensor.reshape(-1, 1))
        elif attr in ("weight.absmax", "absmax"):
            self.register_buffer("absmax", tensor.reshape(-1))
        elif attr in ("weight.nested_absmax", "nested_absmax"):
            self.register_buffer("nested_absmax", tensor.reshape(-1).float())
        elif attr == "nested_offset":  # the earlier layout kept it as a tensor of its own
            self.register_buffer("nested_offset", tensor.reshape(()).float())
        elif attr == "weight.quant_map":
            if tensor.numel() != 16:
                raise ValueError(f"{attr} holds {tensor.numel()} values, a 4-bit code book has 16")
            book = tensor.float().reshape(-1)
            self.quant_map = None if torch.equal(book, code_book(self.quant_type)) else book
        elif attr == "weight.nested_quant_map":
            if tensor.numel() != 256:
                raise ValueError(f"{attr} holds {tensor.numel()} values, an 8-bit code book has 256")
            book = tensor.float().reshape(-1)
            self.nested_quant_map = None if torch.equal(book, dynamic_code()) else book
        elif attr.startswith(bnb_format.QUANT_STATE_KEY):
            # the file is the authority on how this layer was quantized
            values = bnb_format.read_quant_state(attr, tensor, (self.out_features, self.in_features))
            self.quant_type, self.blocksize = values["quant_type"], values["blocksize"]
            self.weight_dtype = bnb_format.parse_dtype(values.get("dtype", "float32"), attr)
            self.compress_statistics = "nested_offset" in values
            if self.compress_statistics:
                self.nested_blocksize = values["nested_blocksize"]
                self.register_buffer("nested_offset", torch.tensor(float(values["nested_offset"]), dtype=torch.float32))
                if self._buffers.get("nested_absmax") is None:
                    self.register_buffer("nested_absmax", _meta(1, dtype=torch.float32))
            else:
                for key in ("nested_absmax", "nested_offset"):
                    if key in self._buffers and self._buffers[key].is_meta:
                        del self._buffers[key]
        else:
            raise self._unknown(attr)

    def _check_loaded(self) -> None:
        super()._check_loaded()
        n = self.in_features * self.out_features
        blocks = -(-n // self.blocksize)
        if self.weight.numel() * self.weight.element_size() < (n + 1) // 2:
            raise ValueError(f"weight holds {self.weight.numel() * self.weight.element_size()} bytes, {(n + 1) // 2} are needed")
        want = torch.uint8 if self.compress_statistics else torch.float32
        if self.absmax.numel() != blocks or self.absmax.dtype != want:
            raise ValueError(
                f"weight.absmax is {self.absmax.dtype} [{self.absmax.numel()}], expected {want} [{blocks}] "
                f"(blocks of {self.blocksize}, double quantization {self.compress_statistics})"
            )
        if self.compress_statistics and self.nested_absmax.numel() != -(-blocks // self.nested_blocksize):
            raise ValueError(f"weight.nested_absmax holds {self.nested_absmax.numel()} values, expected {-(-blocks // self.nested_blocksize)}")

    @property
    def quant_state(self) -> QuantState4bit:
        nested = self.compress_statistics
        return QuantState4bit(
            (self.out_features, self.in_features), self.quant_type, self.blocksize, self.absmax,
            self.nested_absmax if nested else None, self.nested_offset if nested else None,
            self.quant_map, self.nested_quant_map, self.nested_blocksize,
        )

    def dequantize(self, dtype: torch.dtype | None = None) -> torch.Tensor:
        """The ``[out, in]`` weight in ``dtype`` (default: the compute dtype).

        A weight quantized from a 16-bit float is dequantized to that dtype first (so a bfloat16
        model computing in float32 multiplies by the bfloat16 values, as bitsandbytes does).
        """
        self._check_ready()
        dtype = dtype or self.compute_dtype
        if self.weight_dtype.is_floating_point and self.weight_dtype != dtype and self.weight_dtype.itemsize < 4:
            return dequantize_4bit(self.weight, self.quant_state, self.weight_dtype).to(dtype)
        return dequantize_4bit(self.weight, self.quant_state, dtype)

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}, "
                f"quant_type={self.quant_type}, double_quant={self.compress_statistics}, compute_dtype={self.compute_dtype}")


def quantized_weight_bytes(model: nn.Module) -> tuple[int, int]:
    """``(bytes of the quantized weights and scales, their float32 bytes)`` over a model's quantized layers."""
    packed = full = 0
    for module in model.modules():
        if isinstance(module, _QuantizedLinearBase):
            packed += module.weight_bytes()
            full += module.in_features * module.out_features * 4
    return packed, full


__all__ = ["Linear4bit", "quantized_weight_bytes"]
