"""Keep GGUF weights 4-bit in memory: ``QuantizedLinear`` on PyTorch's CPU int4 matmul kernel.

``from_pretrained(path, gguf_file=..., quantization_config=GGUFQuantizationConfig())`` loads
the projection weights of a llama-family GGUF model as 4-bit groups of 32 instead of
dequantizing them to float. Q4_0, Q4_1 and Q4_K blocks map exactly onto the kernel's format (a
value is ``(q - 8) * scale + zero`` per group of 32): Q4_1 stores ``d * q + m``, so
``scale = d`` and ``zero = m + 8 d``; Q4_0 stores ``d * (q - 8)``, so ``zero = 0``; Q4_K stores
``d * sc * q - dmin * m`` per sub-block of 32, so ``scale = d * sc``. Other block types
(Q8_0, Q5/Q6 K-quants, F16, F32) are dequantized and re-quantized to 4 bits with a per-group
min and max, which loses precision. Embeddings and norms stay float; the LM head stays float
unless ``quantize_lm_head=True``.

With the default bfloat16 ``compute_dtype`` on an x86-64 CPU and a C compiler, the
products run on the native kernel of ``runtime/int4_native.c`` (built on first use): it reads a
tiled copy of the weights that the runtime keeps (the layer's own buffers never change), and a 4-bit
Llama model decodes through ``of_llama_step``, one native call for all layers
(``runtime/native_step.py``). Elsewhere
(another compute dtype, no compiler, ``OPENFORMERS_NATIVE=0``) the matmul is
``torch.ops.aten._weight_int4pack_mm_for_cpu``; activations are cast to ``compute_dtype`` and
back. Decoding is bound by the bytes read per token, and the 4-bit weights are ~0.63 bytes per
value against 4 for float32.

``save_pretrained`` writes ``quant_method: "gguf"`` in ``config.json`` and each layer's
``qweight`` in a portable layout (:func:`to_nibbles`; the kernels' own packings depend on the
machine) next to its ``scales_and_zeros`` in PyTorch's order; ``from_pretrained`` on that directory rebuilds the
same 4-bit layers bit for bit.
"""
from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

import numpy as np
import torch
from torch import nn

from openformers.modules.casts import apply_keeping_buffer_dtypes
from openformers.modules.dense import is_plain_linear
from openformers.runtime import int4_native

# llama.cpp block kinds of the projections that become QuantizedLinear
_LINEAR_KINDS = {"attn_q", "attn_k", "attn_v", "attn_output", "ffn_gate", "ffn_up", "ffn_down"}
_N_MULTIPLE = 16  # the CPU packing needs out_features divisible by 16


def _pack(q: torch.Tensor) -> torch.Tensor:
    """Pack ``[out, in]`` integers in 0..15 into the CPU kernel's ``[out, in / 2]`` uint8 layout.

    That layout is blocked for the machine's vector width (it differs between AVX2 and AVX-512
    builds), so it never leaves memory: checkpoints hold the plain layout of :func:`to_nibbles`.
    """
    q32 = torch.from_numpy(np.ascontiguousarray(q.numpy(), dtype=np.int32))
    return torch.ops.aten._convert_weight_to_int4pack_for_cpu(q32, 1)


def to_nibbles(q: torch.Tensor) -> torch.Tensor:
    """``[out, in]`` values in 0..15 -> the saved ``[out, in / 2]`` uint8 layout: column ``2j``
    in the low nibble of byte ``j``, column ``2j + 1`` in the high one."""
    a = q.numpy().astype(np.uint8)  # numpy: torch's uint8 ops pay a thread start-up per call
    return torch.from_numpy(a[:, 0::2] | (a[:, 1::2] << 4))


def from_nibbles(packed: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`to_nibbles`: ``[out, in / 2]`` bytes -> ``[out, in]`` values in 0..15."""
    a = packed.numpy()
    out = np.empty((*a.shape, 2), dtype=np.uint8)
    np.bitwise_and(a, 0x0F, out=out[..., 0])
    np.right_shift(a, 4, out=out[..., 1])
    return torch.from_numpy(out.reshape(a.shape[0], -1))


@lru_cache(maxsize=4)
def _packed_order(out_features: int, in_features: int) -> np.ndarray:
    """For each nibble of the kernel layout (low nibble first), the flat ``[out, in]`` index of
    the value it holds.

    The packing only moves nibbles, so packing each base-16 digit of every value's flat index
    tells where each value goes; no knowledge of the machine-specific layout is needed. Cached
    per shape: a model has a handful of projection shapes.
    """
    n = out_features * in_features
    index = np.arange(n, dtype=np.int64)
    source = np.zeros(n, dtype=np.int64)
    shift = 0
    while shift == 0 or (1 << shift) < n:
        digit = torch.from_numpy(((index >> shift) & 0x0F).astype(np.int32).reshape(out_features, in_features))
        source |= from_nibbles(_pack(digit)).numpy().reshape(-1).astype(np.int64) << shift
        shift += 4
    return source


def _unpack(qweight: torch.Tensor, out_features: int, in_features: int) -> torch.Tensor:
    """Inverse of :func:`_pack`: the ``[out, in]`` values behind a kernel-packed weight."""
    q = np.empty(out_features * in_features, dtype=np.uint8)
    q[_packed_order(out_features, in_features)] = from_nibbles(qweight).numpy().reshape(-1)
    out = torch.from_numpy(q.reshape(out_features, in_features))
    if not torch.equal(_pack(out), qweight):
        raise RuntimeError("QuantizedLinear: the packed int4 weight could not be unpacked exactly")
    return out


def _scales_and_zeros(scale: torch.Tensor, minimum: torch.Tensor) -> torch.Tensor:
    """``[out, groups]`` scale and minimum -> the kernel's ``[groups, out, 2]`` (scale, zero)."""
    zero = minimum + 8 * scale
    return torch.stack([scale, zero], dim=-1).transpose(0, 1).contiguous().float()


def quantize_int4(weight: torch.Tensor, group_size: int = 32) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Asymmetric 4-bit quantization of ``[out, in]`` per group of ``group_size`` inputs.

    Returns ``(q [out, in] in 0..15, scale [out, groups], minimum [out, groups])``.
    """
    out_f, in_f = weight.shape
    w = weight.detach().float().reshape(out_f, in_f // group_size, group_size)
    lo = w.amin(-1)
    hi = w.amax(-1)
    scale = ((hi - lo) / 15).clamp(min=torch.finfo(torch.float32).tiny)
    q = ((w - lo[..., None]) / scale[..., None]).round_().clamp_(0, 15).to(torch.uint8)
    return q.reshape(out_f, in_f), scale, lo


class QuantizedLinear(nn.Module):
    """A linear layer with 4-bit weights in groups (CPU int4 weight-only matmul).

    Buffers: ``qweight`` ``[out, in / 2]`` uint8 (packed for the CPU kernel) and
    ``scales_and_zeros`` ``[in / group_size, out, 2]`` in the compute dtype. ``bias`` stays float.
    The buffers keep that layout for good: the native kernel reads a tiled copy that the runtime
    holds (``runtime/int4_native.py``, the protocol of ``is_int4``).
    """

    int4_linear = True  # the runtime's 4-bit layer protocol (runtime/int4_native.is_int4)

    def __init__(
        self,
        in_features: int,
        out_features: int,
        bias: bool = False,
        group_size: int = 32,
        device: torch.device | str | None = None,
        dtype: torch.dtype = torch.float32,
    ) -> None:
        super().__init__()
        for name, value in (("in_features", in_features), ("out_features", out_features), ("group_size", group_size)):
            if type(value) is not int or value <= 0:
                raise ValueError(f"QuantizedLinear: {name} must be a positive integer, got {value!r}")
        if in_features % group_size or out_features % _N_MULTIPLE:
            raise ValueError(
                f"QuantizedLinear({in_features}, {out_features}): in_features must be a multiple of "
                f"group_size={group_size} and out_features a multiple of {_N_MULTIPLE}"
            )
        self.in_features, self.out_features, self.group_size = in_features, out_features, group_size
        self.register_buffer("qweight", torch.empty(out_features, in_features // 2, dtype=torch.uint8, device=device))
        self.register_buffer("scales_and_zeros", torch.empty(in_features // group_size, out_features, 2, dtype=dtype, device=device))
        self.bias = nn.Parameter(torch.empty(out_features, dtype=dtype, device=device), requires_grad=False) if bias else None

    @classmethod
    def from_quantized(
        cls, q: torch.Tensor, scale: torch.Tensor, minimum: torch.Tensor, bias: torch.Tensor | None = None,
        compute_dtype: torch.dtype = torch.bfloat16,
    ) -> "QuantizedLinear":
        """From ``q [out, in]`` in 0..15 with ``value = q * scale + minimum`` per group."""
        out_f, in_f = q.shape
        group = in_f // scale.shape[1]
        with torch.device("meta"):
            layer = cls(in_f, out_f, bias=bias is not None, group_size=group)
        layer.qweight = _pack(q)
        layer.scales_and_zeros = _scales_and_zeros(scale.float(), minimum.float()).to(compute_dtype)
        if bias is not None:
            layer.bias = nn.Parameter(bias.detach().float().clone(), requires_grad=False)
        return layer

    @classmethod
    def from_linear(cls, linear: nn.Linear, group_size: int = 32, compute_dtype: torch.dtype = torch.bfloat16) -> "QuantizedLinear":
        """Quantize a float ``nn.Linear`` (per-group min/max, 4 bits)."""
        q, scale, lo = quantize_int4(linear.weight, group_size)
        return cls.from_quantized(q, scale, lo, linear.bias, compute_dtype)

    @property
    def compute_dtype(self) -> torch.dtype:
        return self.scales_and_zeros.dtype

    def _apply(self, fn: Callable[..., Any], recurse: bool = True) -> "QuantizedLinear":
        """Module casts (``.to(dtype)``, ``.float()``, ``.half()``) move the bias but leave
        ``scales_and_zeros`` in the kernel's compute dtype: a float32 cast of a bfloat16 layer
        would otherwise put the kernel on its float32 path (many times slower) for no gain, as
        the output is cast to the input's dtype anyway. Device moves still apply. Set the compute
        dtype with ``GGUFQuantizationConfig(compute_dtype=...)``."""
        apply_keeping_buffer_dtypes(self, super()._apply, fn, recurse)  # qweight is uint8: casts never touch it
        return self

    # -- checkpoints: the saved qweight is the portable to_nibbles layout ------------------
    def _save_to_state_dict(self, destination: dict[str, Any], prefix: str, keep_vars: bool) -> None:
        super()._save_to_state_dict(destination, prefix, keep_vars)
        if not keep_vars and not self.qweight.is_meta:
            destination[prefix + "qweight"] = to_nibbles(self._values())

    def _load_from_state_dict(self, state_dict: dict[str, Any], prefix: str, *args: Any, **kwargs: Any) -> None:
        key = prefix + "qweight"
        if key in state_dict and state_dict[key].shape == self.qweight.shape:
            state_dict[key] = _pack(from_nibbles(state_dict[key]))
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def _loaded_shape(self, attr: str) -> tuple[int, ...]:
        """The shape a checkpoint's ``attr`` must have for this layer's sizes."""
        if attr == "qweight":
            return (self.out_features, self.in_features // 2)
        if attr == "scales_and_zeros":
            return (self.in_features // self.group_size, self.out_features, 2)
        if attr == "bias" and self.bias is not None:
            return (self.out_features,)
        raise ValueError(f"QuantizedLinear has no tensor {attr!r} to load (bias={self.bias is not None})")

    def _set_loaded_tensor(self, attr: str, tensor: torch.Tensor, dtype: torch.dtype) -> None:
        """Store one checkpoint tensor (called by ``PreTrainedModel`` while loading).

        The tensor must have the shape this layer's sizes imply (``ValueError`` otherwise): the
        kernels read these buffers by the layer's sizes, never by the tensor's."""
        expected = self._loaded_shape(attr)
        if tuple(tensor.shape) != expected:
            raise ValueError(
                f"{attr} has shape {list(tensor.shape)}, but a {self.out_features}x{self.in_features} 4-bit layer "
                f"(groups of {self.group_size}) needs {list(expected)}"
            )
        if attr == "qweight" and tensor.dtype != torch.uint8:
            raise ValueError(f"qweight must be uint8 (two 4-bit values per byte), not {tensor.dtype}")
        if attr == "qweight":
            self.qweight = _pack(from_nibbles(tensor))
        elif attr == "bias":
            self.bias = nn.Parameter(tensor.to(dtype), requires_grad=False)
        else:  # scales_and_zeros: kept exactly; quantize_model casts them to the compute dtype
            self._buffers[attr] = tensor

    def dequantize(self) -> torch.Tensor:
        """The float32 ``[out, in]`` weight this layer computes with."""
        eye = torch.eye(self.in_features)
        return torch.ops.aten._weight_int4pack_mm_for_cpu(eye, self.qweight, self.group_size, self.scales_and_zeros.float()).t().contiguous()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.device.type != "cpu":
            raise RuntimeError("QuantizedLinear runs on the CPU int4 kernel; keep the model on the CPU")
        shape = x.shape
        # [*, in] -> [rows, in] -> [rows, out]
        rows = x.reshape(-1, self.in_features)
        if torch.is_grad_enabled() and rows.requires_grad:
            y = _Int4MatMul.apply(rows, self)  # the kernel has no backward: adapters below still train
        else:
            y = self._matmul(rows)
        y = y.to(x.dtype).reshape(*shape[:-1], self.out_features)
        if self.bias is not None:
            y = y + self.bias.to(x.dtype)
        return y

    def _values(self) -> torch.Tensor:
        """The ``[out, in]`` 4-bit values (0..15) behind ``qweight``."""
        return _unpack(self.qweight, self.out_features, self.in_features)

    def _pairs(self) -> torch.Tensor:
        """``[out, groups, 2]``: each group's (scale, zero)."""
        return self.scales_and_zeros.transpose(0, 1)

    int4_values, int4_pairs = _values, _pairs  # the runtime's protocol

    def _native(self) -> int4_native.NativeInt4 | None:
        """The native kernel over the runtime's tiled copy of this layer, or None where PyTorch's kernel runs."""
        self._check_native_buffers(self.qweight, self.scales_and_zeros)
        return int4_native.layer_kernel(self)

    def _check_native_buffers(self, qw: torch.Tensor, sz: torch.Tensor) -> None:
        """The buffers the native kernel will read by this layer's sizes must hold exactly that much
        (a buffer replaced by hand with another shape would be read past its end)."""
        groups = self.in_features // self.group_size
        if (qw.dtype != torch.uint8 or qw.numel() != self.out_features * self.in_features // 2 or not qw.is_contiguous()
                or sz.numel() != groups * self.out_features * 2 or not sz.is_contiguous()):
            raise RuntimeError(
                f"QuantizedLinear({self.in_features}, {self.out_features}): qweight {tuple(qw.shape)} {qw.dtype} and "
                f"scales_and_zeros {tuple(sz.shape)} do not hold the {self.out_features}x{self.in_features} 4-bit weight "
                f"its sizes describe; load them through load_state_dict or from_pretrained"
            )

    def _matmul(self, rows: torch.Tensor) -> torch.Tensor:
        kernel = self._native()
        if kernel is not None and kernel.takes(rows.shape[0], rows.dtype):  # else rows PyTorch's kernel runs as fast
            return kernel(rows)
        return torch.ops.aten._weight_int4pack_mm_for_cpu(  # the kernel takes contiguous rows only
            rows.to(self.compute_dtype).contiguous(), self.qweight, self.group_size, self.scales_and_zeros
        )

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}, "
                f"group_size={self.group_size}, compute_dtype={self.compute_dtype}")


class _Int4MatMul(torch.autograd.Function):
    """The int4 kernel's product with a gradient for the input (the weights stay frozen)."""

    @staticmethod
    def forward(ctx: Any, rows: torch.Tensor, layer: QuantizedLinear) -> torch.Tensor:  # type: ignore[override]
        ctx.layer = layer
        ctx.input_dtype = rows.dtype
        return layer._matmul(rows)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None]:  # type: ignore[override]
        weight = ctx.layer.dequantize().to(grad.dtype)  # [out, in]
        return (grad @ weight).to(ctx.input_dtype), None


@dataclass
class GGUFQuantizationConfig:
    """Keep a GGUF model's projection weights 4-bit (see the module docstring).

    Args:
        compute_dtype: activation dtype inside the int4 matmul (bfloat16, float16 or float32;
            float32 reproduces Q4_0/Q4_1 weights exactly but is slower).
        quantize_lm_head: also make the LM head 4-bit (an untied copy when embeddings are tied).
        fast_lm_head: keep the LM head float but score with a 4-bit copy and rescore, from the float
            weight, every token that could have the highest logit (``CheckedInt4Head``): the top
            logit and greedy picks stay those of the float head, the others move by at most the
            4-bit error, and a decoding step reads about a third of the head's bytes.
        modules_to_not_convert: module names (or name fragments) left as float ``nn.Linear``.
    """

    compute_dtype: torch.dtype = torch.bfloat16
    quantize_lm_head: bool = False
    fast_lm_head: bool = False
    modules_to_not_convert: list[str] = field(default_factory=list)
    group_size: int = 32
    quant_method: str = "gguf"

    def __post_init__(self) -> None:
        if self.group_size not in (32, 64, 128, 256):
            raise ValueError(f"group_size={self.group_size}: the CPU int4 kernel takes 32, 64, 128 or 256")
        if self.compute_dtype not in (torch.bfloat16, torch.float16, torch.float32):
            raise ValueError(f"compute_dtype={self.compute_dtype}: use torch.bfloat16, torch.float16 or torch.float32")
        self._planned: dict[str, tuple[int, int, bool]] = {}

    def to_dict(self) -> dict[str, Any]:
        return {"quant_method": self.quant_method, "compute_dtype": str(self.compute_dtype).replace("torch.", ""),
                "quantize_lm_head": self.quantize_lm_head, "fast_lm_head": self.fast_lm_head,
                "modules_to_not_convert": list(self.modules_to_not_convert),
                "group_size": self.group_size, "bits": 4}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "GGUFQuantizationConfig":
        """The config ``to_dict`` wrote (``config.json``'s ``quantization_config``)."""
        dtype = data.get("compute_dtype", "bfloat16")
        return cls(
            compute_dtype=getattr(torch, dtype) if isinstance(dtype, str) else dtype,
            quantize_lm_head=bool(data.get("quantize_lm_head", False)),
            fast_lm_head=bool(data.get("fast_lm_head", False)),
            modules_to_not_convert=list(data.get("modules_to_not_convert") or []),
            group_size=int(data.get("group_size", 32)),
        )

    def _skipped(self, module: str) -> bool:
        return any(part in module for part in self.modules_to_not_convert)

    # -- the three steps from_pretrained runs --------------------------------------------
    def plan_gguf(self, gf: Any, arch: str, config: dict[str, Any], plan: list[tuple[str, str, str | None]]) -> dict[str, Callable[..., Iterator[tuple[str, torch.Tensor]]]]:
        """Pick the GGUF tensors loaded 4-bit; return ``hf_name -> loader`` for the tensor stream."""
        from openformers.models.gguf_loading import unpermute_qk

        self._planned = {}
        self._planned_source = str(getattr(gf, "path", "GGUF file"))
        if arch == "gpt2":
            return {}  # GPT-2's Conv1D layers stay float
        heads = {"attn_q": int(config.get("num_attention_heads", 0)),
                 "attn_k": int(config.get("num_key_value_heads", config.get("num_attention_heads", 0)))}
        permute = arch in ("llama", "mistral")
        biases = {n for n, _, _ in plan if n.endswith(".bias")}
        loaders: dict[str, Callable[..., Iterator[tuple[str, torch.Tensor]]]] = {}
        group = self.group_size
        for gguf_name, name, kind in plan:
            if not name.endswith(".weight") or not (kind in _LINEAR_KINDS or (kind == "output" and self.quantize_lm_head)):
                continue
            module = name[: -len(".weight")]
            info = gf.tensors[gguf_name]
            out_f, in_f = info.shape
            if self._skipped(module) or in_f % group or out_f % _N_MULTIPLE:
                continue
            self._planned[module] = (in_f, out_f, gguf_name[: -len("weight")] + "bias" in biases)
            n_head = heads.get(kind, 0) if permute else 0

            def load(gf: Any, gguf_name: str, name: str, module: str = module, n_head: int = n_head) -> Iterator[tuple[str, torch.Tensor]]:
                kind_name = gf.tensors[gguf_name].type_name
                from openformers.core.gguf import FOUR_BIT_TYPES, q4_blocks

                if kind_name in FOUR_BIT_TYPES and group == 32:

                    q, scale, lo = q4_blocks(gf.raw(gguf_name), kind_name)  # exact
                else:
                    w = gf.dequantize(gguf_name)
                    q, scale, lo = quantize_int4(w, group)
                if n_head:  # rows are whole, so the head reordering applies to q, scale and min alike
                    q, scale, lo = (unpermute_qk(t, n_head) for t in (q, scale, lo))
                yield f"{module}.qweight", to_nibbles(q)
                yield f"{module}.scales_and_zeros", _scales_and_zeros(scale, lo)

            loaders[name] = load
        return loaders

    def prepare_model(self, model: nn.Module) -> None:
        """Put meta-device ``QuantizedLinear`` modules where the plan says, before loading.

        A checkpoint saved 4-bit (``_pre_quantized``) holds every layer :meth:`quantize_model`
        would convert; those become empty ``QuantizedLinear`` modules its tensors fill.
        """
        if getattr(self, "_pre_quantized", False) and not self._planned:
            for name, module, _ in self._targets(model):
                with torch.device("meta"):
                    layer = QuantizedLinear(module.in_features, module.out_features, bias=module.bias is not None,
                                            group_size=self.group_size)
                model.set_submodule(name, layer)
            return
        for module, (in_f, out_f, bias) in self._planned.items():
            owner_name, _, attr = module.rpartition(".")
            owner = _find_owner(model, owner_name)
            current = getattr(owner, attr, None) if owner is not None else None
            if not isinstance(current, nn.Linear):
                continue
            if (current.in_features, current.out_features) != (in_f, out_f) or (current.bias is not None) != bias:
                # the file's tensor, not the config, would size the layer: refuse (native kernels trust these sizes)
                from openformers.core.gguf import GGUFError

                raise GGUFError(
                    f"{self._planned_source}: {module}: the GGUF tensor is [{out_f}, {in_f}]{' with a bias' if bias else ''}, but the model's "
                    f"config makes this layer [{current.out_features}, {current.in_features}]"
                    f"{' with a bias' if current.bias is not None else ''}; the file is inconsistent with its own metadata"
                )
            with torch.device("meta"):
                setattr(owner, attr, QuantizedLinear(in_f, out_f, bias=bias, group_size=self.group_size))

    def quantize_model(self, model: nn.Module) -> nn.Module:
        """After loading: scales to the compute dtype; quantize what is still float and planned.

        Called on a model loaded from a non-GGUF checkpoint, every eligible ``nn.Linear`` of the
        decoder layers (and the LM head with ``quantize_lm_head``) is quantized from float.
        """
        for module in model.modules():
            if isinstance(module, QuantizedLinear):
                module.scales_and_zeros = module.scales_and_zeros.to(self.compute_dtype)
        for name, module, is_head in self._targets(model):
            if self._planned and not is_head:
                continue
            model.set_submodule(name, QuantizedLinear.from_linear(module, self.group_size, self.compute_dtype))
            if is_head and getattr(getattr(model, "config", None), "tie_word_embeddings", False):
                model.config.tie_word_embeddings = False  # the head is now its own 4-bit copy
        self._planned = {}  # the plan belonged to this load only
        head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
        if self.fast_lm_head and is_plain_linear(head) and head.in_features % self.group_size == 0:
            from openformers.quantization.int4_head import CheckedInt4Head

            model.set_output_embeddings(CheckedInt4Head.from_linear(head, self.group_size, self.compute_dtype))
        return model


    def _targets(self, model: nn.Module) -> list[tuple[str, nn.Linear, bool]]:
        """``(name, layer, is_lm_head)`` of the float ``nn.Linear`` layers this config makes 4-bit."""
        head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
        out = []
        for name, module in model.named_modules():
            if not isinstance(module, nn.Linear) or self._skipped(name):
                continue
            if module is head and not self.quantize_lm_head:
                continue
            if module.in_features % self.group_size or module.out_features % _N_MULTIPLE:
                continue
            out.append((name, module, module is head))
        return out


def _find_owner(model: nn.Module, owner_name: str) -> nn.Module | None:
    for candidate in (owner_name, owner_name.partition(".")[2]):
        try:
            return model.get_submodule(candidate)
        except AttributeError:
            continue
    return None


def weight_bytes(model: nn.Module) -> int:
    """Bytes held by parameters and buffers (shared tensors counted once)."""
    return _tensor_bytes(model, set())


def step_bytes(model: nn.Module) -> int:
    """Weight bytes one decoding step reads: every parameter and buffer except the input
    embeddings (one row a token), with the LM head counted whole even when it shares the
    embedding matrix (a head that reads less, ``CheckedInt4Head``, says how much it reads). Set
    against the memory bandwidth it bounds the tokens per second."""
    embeddings = model.get_input_embeddings() if hasattr(model, "get_input_embeddings") else None
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    skip = {t.data_ptr() for t in embeddings.parameters()} if embeddings is not None else set()
    total = 0
    if head is not None:
        head_tensors = {t.data_ptr() for t in list(head.parameters()) + list(head.buffers())}
        if hasattr(head, "step_bytes"):
            skip |= head_tensors
            total += head.step_bytes()
        else:
            skip -= head_tensors
    return total + _tensor_bytes(model, skip)


def _tensor_bytes(model: nn.Module, skip: set[int]) -> int:
    """Bytes of the parameters and buffers not in ``skip`` (data pointers), each storage once."""
    seen: set[int] = set(skip)
    total = 0
    for t in list(model.parameters()) + list(model.buffers()):
        if t.data_ptr() in seen or t.is_meta:
            continue
        seen.add(t.data_ptr())
        total += t.numel() * t.element_size()
    return total
