"""Float32 ``F.linear`` for training on the CPU, forward and backward through oneDNN where that is faster,
and :class:`Linear`, the ``nn.Linear`` the model files build their linear layers from.

PyTorch's x86 wheels run a float32 CPU product through their BLAS, Intel's MKL. On an AMD CPU
oneDNN's GEMM (shipped in the same wheels) is faster at training shapes: on an AMD EPYC, 512 rows
through a layer (forward, input and weight gradients) took 17-35% less time at one thread for the
projections of SmolLM2, GPT-2, MiniLM and BERT-base, and their 50k-way LM heads 32-33% less
(``benchmarks/bench_train_products.py``), with the weight as it is (no packed copy, no extra memory).
On an Intel Xeon MKL is the faster one (the same products 8-20% faster than oneDNN; a LoRA step on
SmolLM2 10% faster), so by default oneDNN is used unless the CPU is Intel's and the BLAS is MKL
(:func:`prefers_onednn`). :func:`train_linear` runs the forward product, the input gradient and the
bias gradient there; the weight gradient stays a BLAS product. Values differ from BLAS's in the last
bits only (summation order).

Model files use :class:`Linear` where they would write ``nn.Linear`` (``Linear(in, out, bias=...)``):
a subclass with nothing but its forward changed, so parameters, initialisation and ``state_dict`` are
``nn.Linear``'s, and whatever recognises ``nn.Linear`` (adapters, quantization, export, the runtime's
inference plans through :func:`is_plain_linear`) takes it as one. GPT-2's ``Conv1D`` (weight stored
``[in, out]``) runs :func:`train_linear` on the transposed view. A layer with few outputs (a
classification head) costs some tens of microseconds more a call this way (the autograd function),
nothing next to a training step.

It applies only where it is the same computation as ``F.linear``: float32 input, weight and
bias on the CPU (plain tensors: not subclasses such as DTensor, nor DeepSpeed ZeRO-3's partitioned
parameters), autocast off, autograd recording,
and no graph being captured (``torch.compile``, ``torch.export`` and the ONNX and Core ML exports built
on it, ``torch.jit.trace``, ``torch.func`` transforms): those get ``F.linear``. The weight must be
dense, row-major or transposed: oneDNN takes a column block of a wider buffer through a reference
kernel about 1000x slower, so such weights stay with ``F.linear``. A second derivative
(``create_graph=True``) is taken through plain differentiable products. Set
``OPENFORMERS_ONEDNN_LINEAR=0`` to use ``F.linear`` everywhere (then :class:`Linear` is ``nn.Linear``
bit for bit), ``=1`` to use oneDNN whatever the CPU.
"""
from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from openformers.core import native, settings


def _choice_from_env() -> bool | None:
    """``OPENFORMERS_ONEDNN_LINEAR`` (see ``core/settings.py``): True or False, None (the CPU decides)
    when unset or empty."""
    return settings.get("OPENFORMERS_ONEDNN_LINEAR")


def prefers_onednn(vendor: str, blas_is_mkl: bool) -> bool:
    """Whether oneDNN beats the BLAS at training products: everywhere but MKL on Intel's CPUs."""
    return not (blas_is_mkl and vendor == "GenuineIntel")


_available = torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_linear_pointwise")
_choice = _choice_from_env()
_state = {"available": _available,
          "enabled": _available and (_choice if _choice is not None
                                     else prefers_onednn(native.cpu_vendor(), torch.backends.mkl.is_available()))}


def _product(rows: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """``rows @ weight.T + bias`` for rows [n, in] and weight [out, in] (any strides)."""
    return torch.ops.mkldnn._linear_pointwise(rows, weight, bias, "none", [], "")


def _forward(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """:func:`_product` for x [..., in]."""
    return _product(x.reshape(-1, x.shape[-1]), weight, bias).view(*x.shape[:-1], weight.shape[0])


class _OneDNNLinear(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:  # type: ignore[override]
        ctx.save_for_backward(x, weight)
        ctx.has_bias = bias is not None
        return _forward(x, weight, bias)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:  # type: ignore[override]
        x, weight = ctx.saved_tensors
        grad_rows = grad.reshape(-1, grad.shape[-1])
        grad_x = grad_w = grad_b = None
        if ctx.needs_input_grad[0]:
            if torch.is_grad_enabled():  # create_graph: a product autograd can differentiate again
                grad_x = grad_rows @ weight
            else:
                grad_x = _product(grad_rows, weight.t(), None)
            grad_x = grad_x.view(*grad.shape[:-1], weight.shape[1])
        if ctx.needs_input_grad[1]:
            rows = x.reshape(-1, x.shape[-1])
            if weight.is_contiguous():
                grad_w = grad_rows.t() @ rows
            else:  # a weight stored [in, out] (Conv1D): its gradient made in that layout, no copy to lay it out
                grad_w = (rows.t() @ grad_rows).t()
        if ctx.has_bias and ctx.needs_input_grad[2]:
            grad_b = grad_rows.sum(0)
        return grad_x, grad_w, grad_b


def _plain(weight: torch.Tensor) -> bool:
    """A weight that is a plain tensor or parameter (not a tensor subclass such as a DTensor), and not a
    parameter DeepSpeed ZeRO-3 partitions (``ds_id``; it gathers and frees those around each module and
    routes ``F.linear`` through its own autograd function for them)."""
    if not (type(weight) is nn.Parameter or type(weight) is torch.Tensor):
        return False
    base = weight._base
    return not (hasattr(weight, "ds_id") or (base is not None and hasattr(base, "ds_id")))


def _tracing() -> bool:
    """``torch.compile`` or ``torch.export`` (ONNX and Core ML export included), ``torch.jit`` tracing or a
    ``torch.func`` transform: their graphs get ``F.linear``, which every one of them knows."""
    return (torch.compiler.is_compiling() or torch._C._is_tracing() or torch._C._are_functorch_transforms_active())


def train_linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """``F.linear(x, weight, bias)``; float32 CPU products made while autograd records run through
    oneDNN (see the module docstring)."""
    if (_state["enabled"] and x.device.type == "cpu" and x.dtype == torch.float32 and torch.is_grad_enabled()
            and type(x) is torch.Tensor and not _tracing() and _plain(weight) and (bias is None or _plain(bias))
            and weight.dtype == torch.float32 and weight.device.type == "cpu" and weight.dim() == 2 and x.dim() >= 2
            and (weight.is_contiguous() or weight.t().is_contiguous())
            and (bias is None or (bias.dtype == torch.float32 and bias.device.type == "cpu" and bias.dim() == 1))
            and x.numel() > 0 and not torch.is_autocast_enabled("cpu")):
        if x.requires_grad or weight.requires_grad or (bias is not None and bias.requires_grad):
            return _OneDNNLinear.apply(x, weight, bias)
        # nothing to differentiate (a frozen layer under the first trainable one): the product alone
        return _forward(x, weight, bias)
    return F.linear(x, weight, bias)


class Linear(nn.Linear):
    """``nn.Linear`` whose forward is :func:`train_linear`: the building block of the model files.

    The same module as ``nn.Linear`` in every other respect (a subclass: ``weight`` [out, in] and
    ``bias``, the same initialisation, ``state_dict`` keys and ``repr``), so whatever recognises or
    replaces ``nn.Linear`` (adapters, quantization, the runtime's inference plans, export) takes it
    as one; :func:`is_plain_linear` is the test for "a linear layer running the plain product".
    Outside recorded float32 CPU products it is ``F.linear`` (see the module docstring).
    """

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        return train_linear(input, self.weight, self.bias)


def is_plain_linear(module: nn.Module) -> bool:
    """True for ``nn.Linear`` and :class:`Linear` themselves (not subclasses with their own forward)."""
    return type(module) is nn.Linear or type(module) is Linear


def run_linear(module: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``module(x)``, through :func:`train_linear` for a plain linear layer (:func:`is_plain_linear`) without
    hooks."""
    if is_plain_linear(module) and not (module._forward_hooks or module._forward_pre_hooks):
        return train_linear(x, module._parameters["weight"], module._parameters.get("bias"))
    return module(x)
