"""Block-wise 4-bit (NF4, FP4) and per-channel 8-bit weight quantization, in plain PyTorch.

Formats (the ones bitsandbytes uses, so the numbers mean the same thing):

* 4-bit: the weight is flattened, cut into blocks of ``blocksize`` (64) values, each block is
  divided by its absolute maximum (``absmax``) and every value is replaced by the index of the
  nearest entry of a 16-value code book in [-1, 1]. Two indices share a byte, the first in the
  high nibble. NF4's code book holds quantiles of a normal distribution (QLoRA); FP4's holds
  the magnitudes of a 1-sign, 2-exponent, 1-mantissa float, scaled so the largest is 1.
* double quantization: the float32 ``absmax`` of the 4-bit blocks are themselves quantized to
  8 bits: their mean (``offset``) is subtracted, then blocks of 256 are scaled by their own
  absolute maximum and mapped onto the signed 8-bit dynamic code book.
* 8-bit: one absmax per output row (``SCB``); ``int8 = round(w * 127 / SCB)``.

Every step is done the way bitsandbytes' PyTorch kernels do it, so the codes and scales are the
same bytes (tests/quantization/test_bnb_parity.py checks this against bitsandbytes itself):
values are multiplied by ``1 / absmax`` (not divided), clamped to [-1, 1] and mapped to the
nearest code (ties to the lower code); dequantization multiplies in float32 and only then casts
to the compute dtype. A state loaded from a checkpoint carries the code books it was written
with (``quant_map``, ``nested_quant_map``) and dequantizes with them.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import torch

BLOCKSIZE_4BIT = 64
BLOCKSIZE_NESTED = 256
_CHUNK = 1 << 20  # values quantized at a time: bounds the temporaries of a large layer
_MIN_ABSMAX = 1e-38  # an all-zero block is scaled by this (its codes all stand for zero)

# QLoRA's NormalFloat4: index 7 is exactly zero, +1 and -1 are the extremes
NF4_CODE = (
    -1.0, -0.6961928009986877, -0.5250730514526367, -0.39491748809814453,
    -0.28444138169288635, -0.18477343022823334, -0.09105003625154495, 0.0,
    0.07958029955625534, 0.16093020141124725, 0.24611230194568634, 0.33791524171829224,
    0.44070982933044434, 0.5626170039176941, 0.7229568362236023, 1.0,
)


def _fp4_code() -> tuple[float, ...]:
    # index bits: sign, exponent (2), mantissa (1); exponent 0 is the subnormal range
    values = []
    for idx in range(16):
        sign = -1.0 if idx & 8 else 1.0
        exp = (idx >> 1) & 3
        mant = idx & 1
        if exp == 0:
            mag = 0.0625 * mant
        else:
            mag = 2.0 ** (4 - exp) * (1.5 if mant else 1.0)
        values.append(sign * mag / 12.0)  # 12 is the largest magnitude
    return tuple(values)


FP4_CODE = _fp4_code()
QUANT_TYPES = ("fp4", "nf4")


@lru_cache(maxsize=None)
def dynamic_code(signed: bool = True, exponent_bits: int = 7, total_bits: int = 8) -> torch.Tensor:
    """The 256-entry dynamic 8-bit code book (sorted), used for the double-quantized absmax.

    Each decade ``10**-k`` holds a linearly spaced set of fractions in (0.1, 1), with more
    fractions in the larger decades; zero and one are added.
    """
    values: list[float] = []
    value_bits = total_bits - 1
    for i in range(exponent_bits):
        n = 2 ** (i + value_bits - exponent_bits) + 1 if signed else 2 ** (i + value_bits - exponent_bits + 1) + 1
        edges = torch.linspace(0.1, 1, n, dtype=torch.float32)
        mids = (edges[:-1] + edges[1:]) / 2
        scale = 10.0 ** (-(exponent_bits - 1) + i)
        # the product is rounded to float32 (as the stored code book is)
        values += (scale * mids).tolist()
        if signed:
            values += (-scale * mids).tolist()
    extra = 2 ** (value_bits - exponent_bits) - 1
    if extra > 0:
        edges = torch.linspace(0.1, 1, extra + 1, dtype=torch.float32)
        mids = (edges[:-1] + edges[1:]) / 2
        values += (scale * mids).tolist()
        if signed:
            values += (-scale * mids).tolist()
    values += [0.0, 1.0]
    values += [0.0] * (256 - len(values))
    return torch.tensor(sorted(values), dtype=torch.float32)


@lru_cache(maxsize=None)
def code_book(quant_type: str) -> torch.Tensor:
    """The 16 float32 values a 4-bit code stands for (before the block scale)."""
    if quant_type == "nf4":
        return torch.tensor(NF4_CODE, dtype=torch.float32)
    if quant_type == "fp4":
        return torch.tensor(FP4_CODE, dtype=torch.float32)
    raise ValueError(f"quant_type={quant_type!r} is not a 4-bit type; use 'nf4' or 'fp4'")


@lru_cache(maxsize=None)
def _nearest(code: tuple[float, ...]) -> tuple[torch.Tensor, torch.Tensor]:
    """Midpoints between sorted code values and the code index of each sorted slot."""
    values = torch.tensor(code, dtype=torch.float32)
    sorted_values, order = values.sort()
    mids = (sorted_values[1:] + sorted_values[:-1]) / 2
    return mids, order.to(torch.uint8)


def _encode(normalized: torch.Tensor, code: tuple[float, ...]) -> torch.Tensor:
    mids, order = _nearest(code)
    return order[torch.bucketize(normalized, mids)]


_BYTES = torch.arange(256)


def _pair_table(book: torch.Tensor) -> torch.Tensor:
    """``[256, 2]`` float32: the two code values a packed byte holds (high nibble first)."""
    book = book.float().cpu()
    return torch.stack([book[_BYTES >> 4], book[_BYTES & 15]], dim=1)


@lru_cache(maxsize=None)
def _standard_pair_table(quant_type: str) -> torch.Tensor:
    return _pair_table(code_book(quant_type))


# -- 4-bit ----------------------------------------------------------------------------------
@dataclass
class QuantState4bit:
    """What besides the packed codes a 4-bit tensor needs to be dequantized."""

    shape: tuple[int, ...]
    quant_type: str
    blocksize: int
    absmax: torch.Tensor  # float32 [blocks], or uint8 [blocks] when nested
    nested_absmax: torch.Tensor | None = None  # float32 [ceil(blocks / nested_blocksize)]
    nested_offset: torch.Tensor | None = None  # float32 scalar
    quant_map: torch.Tensor | None = None  # float32 [16]; None: the standard code book
    nested_quant_map: torch.Tensor | None = None  # float32 [256]; None: the dynamic code book
    nested_blocksize: int = BLOCKSIZE_NESTED

    @property
    def nested(self) -> bool:
        return self.nested_absmax is not None

    def block_scales(self) -> torch.Tensor:
        """float32 ``[blocks]`` absmax of the 4-bit blocks."""
        if not self.nested:
            return self.absmax.float()
        scales = dequantize_blockwise_8bit(
            self.absmax, self.nested_absmax, self.absmax.numel(), self.nested_blocksize, self.nested_quant_map
        )
        return scales + self.nested_offset

    def pair_table(self) -> torch.Tensor:
        if self.quant_map is None:
            return _standard_pair_table(self.quant_type)
        return _pair_table(self.quant_map)


def quantize_4bit(
    weight: torch.Tensor, quant_type: str = "fp4", blocksize: int = BLOCKSIZE_4BIT, double_quant: bool = False
) -> tuple[torch.Tensor, QuantState4bit]:
    """Quantize ``weight`` (any shape) to packed 4-bit codes: ``(uint8 [ceil(n / 2)], state)``."""
    if quant_type not in QUANT_TYPES:
        raise ValueError(f"quant_type={quant_type!r} is not supported; use 'nf4' or 'fp4'")
    if blocksize <= 0 or blocksize % 2:
        raise ValueError(f"blocksize={blocksize} must be a positive even number")
    code = NF4_CODE if quant_type == "nf4" else FP4_CODE
    flat = weight.detach().reshape(-1)
    n = flat.numel()
    blocks = -(-n // blocksize)
    absmax = torch.empty(blocks, dtype=torch.float32)
    packed = torch.empty((n + 1) // 2, dtype=torch.uint8)
    step = max(blocksize, _CHUNK // blocksize * blocksize)
    for start in range(0, n, step):
        part = flat[start : start + step].float()
        b0 = start // blocksize
        nb = -(-part.numel() // blocksize)
        if part.numel() != nb * blocksize:
            part = torch.nn.functional.pad(part, (0, nb * blocksize - part.numel()))
        part = part.view(nb, blocksize)
        amax = part.abs().amax(dim=1)
        absmax[b0 : b0 + nb] = amax
        scaled = (part * (1.0 / amax.clamp(min=_MIN_ABSMAX))[:, None]).clamp_(-1, 1)
        q = _encode(scaled.reshape(-1), code)
        if q.numel() % 2:
            q = torch.cat([q, q.new_zeros(1)])
        pair = q.view(-1, 2)
        byte = (pair[:, 0] << 4) | pair[:, 1]
        p0 = start // 2
        packed[p0 : p0 + min(byte.numel(), packed.numel() - p0)] = byte[: packed.numel() - p0]
    state = QuantState4bit(tuple(weight.shape), quant_type, blocksize, absmax)
    if double_quant:
        offset = absmax.mean()
        codes, nested = quantize_blockwise_8bit(absmax - offset)
        state.absmax, state.nested_absmax, state.nested_offset = codes, nested, offset
    return packed, state


def dequantize_4bit(packed: torch.Tensor, state: QuantState4bit, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """The ``dtype`` tensor of ``state.shape`` that packed 4-bit codes stand for.

    Code value times block scale is computed in float32 and then cast, so a bfloat16 or float16
    result is the float32 product rounded once (not a product of two rounded factors).
    """
    n = math.prod(state.shape)
    data = packed.reshape(-1)
    if data.dtype != torch.uint8:
        data = data.view(torch.uint8)
    # one gather gives both values of a byte (index_select is ~5x faster than tensor indexing
    # here); the block scale then multiplies in place
    values = state.pair_table().index_select(0, data[: (n + 1) // 2].int()).reshape(-1)
    blocks = -(-n // state.blocksize)
    scales = state.block_scales()
    full = blocks * state.blocksize
    if values.numel() != full:
        values = torch.nn.functional.pad(values, (0, full - values.numel()))
    values.view(blocks, state.blocksize).mul_(scales[:, None])
    return values[:n].view(state.shape).to(dtype)


# -- 8-bit dynamic (for the nested absmax) ----------------------------------------------------
def quantize_blockwise_8bit(x: torch.Tensor, blocksize: int = BLOCKSIZE_NESTED) -> tuple[torch.Tensor, torch.Tensor]:
    """Blocks of ``blocksize`` scaled by their absmax onto the dynamic code: ``(uint8 codes, absmax)``."""
    flat = x.reshape(-1).float()
    n = flat.numel()
    blocks = -(-n // blocksize)
    padded = torch.nn.functional.pad(flat, (0, blocks * blocksize - n)).view(blocks, blocksize)
    absmax = padded.abs().amax(dim=1)
    scaled = (padded * (1.0 / absmax.clamp(min=_MIN_ABSMAX))[:, None]).clamp_(-1, 1)
    code = dynamic_code()
    mids = (code[1:] + code[:-1]) / 2
    idx = torch.bucketize(scaled.reshape(-1), mids).to(torch.uint8)[:n]
    return idx, absmax


def dequantize_blockwise_8bit(
    codes: torch.Tensor, absmax: torch.Tensor, n: int, blocksize: int = BLOCKSIZE_NESTED, code: torch.Tensor | None = None
) -> torch.Tensor:
    """float32 ``[n]`` values of 8-bit ``codes`` (``code``: the 256-entry book, default dynamic)."""
    book = dynamic_code() if code is None else code.float()
    values = book[codes.reshape(-1).long()]
    blocks = absmax.numel()
    padded = torch.nn.functional.pad(values, (0, blocks * blocksize - n)).view(blocks, blocksize)
    return (padded * absmax.float()[:, None]).reshape(-1)[:n]


# -- 8-bit per output channel ------------------------------------------------------------------
def quantize_8bit(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Row-wise absmax int8 of a ``[out, in]`` weight: ``(int8 [out, in], SCB float32 [out])``.

    As bitsandbytes does (its ``Int8Params``), the weight is first rounded to float16, so the
    codes and ``SCB`` are the bytes a transformers + bitsandbytes 8-bit checkpoint holds; a
    weight beyond float16's range (where that rounding would give infinities) stays float32.
    """
    if weight.dim() != 2:
        raise ValueError(f"8-bit quantization takes a [out, in] weight, got shape {tuple(weight.shape)}")
    w = weight.detach()
    if w.abs().max() <= torch.finfo(torch.float16).max:
        w = w.to(torch.float16)
    scb = w.abs().amax(dim=1).float()
    q = (w * (127.0 / scb.clamp(min=_MIN_ABSMAX))[:, None]).round_().clamp_(-127, 127)
    return q.to(torch.int8), scb


def dequantize_8bit(q: torch.Tensor, scb: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    return q.to(dtype) * (scb.to(dtype) / 127)[:, None]


__all__ = [
    "NF4_CODE", "FP4_CODE", "QUANT_TYPES", "QuantState4bit", "code_book", "dynamic_code",
    "quantize_4bit", "dequantize_4bit", "quantize_blockwise_8bit", "dequantize_blockwise_8bit",
    "quantize_8bit", "dequantize_8bit",
]
