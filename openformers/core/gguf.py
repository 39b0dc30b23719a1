"""The GGUF reader: metadata, tensor directory, raw blocks and dequantization, memory-mapped.

One reader serves the model loader (``openformers.models.gguf_loading``), the 4-bit GGUF
layers (``openformers.quantization.gguf_linear``) and the tokenizer converter
(``openformers.tokenization.gguf``).

The ``gguf`` package's reader builds a Python object for every string of the vocabulary and
every merge rule, which takes seconds on a small model; this one parses the header with
``struct`` in one pass and maps the tensor data without reading it. Common tensor types are
dequantized here with vectorised torch code; the rest (K-quants, i-quants) go through
``gguf.quants.dequantize`` when the optional ``gguf`` package is installed.

Format (version 2 and 3, little-endian): ``b"GGUF"``, uint32 version, uint64 tensor count,
uint64 metadata count; metadata entries (string key, uint32 value type, value); tensor infos
(string name, uint32 n_dims, uint64 dims innermost first, uint32 type, uint64 offset); padding
to ``general.alignment`` (32 by default); the tensor data.
"""
from __future__ import annotations

import math
import mmap
import os
import struct
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from openformers.core.checkpoint import CheckpointError

GGUF_MAGIC = b"GGUF"

# metadata value types
_SCALARS: dict[int, tuple[str, int]] = {
    0: ("<B", 1), 1: ("<b", 1), 2: ("<H", 2), 3: ("<h", 2), 4: ("<I", 4), 5: ("<i", 4),
    6: ("<f", 4), 7: ("<?", 1), 10: ("<Q", 8), 11: ("<q", 8), 12: ("<d", 8),
}
_NUMPY: dict[int, str] = {0: "<u1", 1: "<i1", 2: "<u2", 3: "<i2", 4: "<u4", 5: "<i4", 6: "<f4", 7: "?", 10: "<u8", 11: "<i8", 12: "<f8"}
_STRING, _ARRAY = 8, 9

# tensor type id -> (name, elements per block, bytes per block)
TENSOR_TYPES: dict[int, tuple[str, int, int]] = {
    0: ("F32", 1, 4), 1: ("F16", 1, 2), 2: ("Q4_0", 32, 18), 3: ("Q4_1", 32, 20),
    6: ("Q5_0", 32, 22), 7: ("Q5_1", 32, 24), 8: ("Q8_0", 32, 34), 9: ("Q8_1", 32, 36),
    10: ("Q2_K", 256, 84), 11: ("Q3_K", 256, 110), 12: ("Q4_K", 256, 144), 13: ("Q5_K", 256, 176),
    14: ("Q6_K", 256, 210), 15: ("Q8_K", 256, 292), 24: ("I8", 1, 1), 25: ("I16", 1, 2),
    26: ("I32", 1, 4), 27: ("I64", 1, 8), 28: ("F64", 1, 8), 30: ("BF16", 1, 2),
}


class GGUFError(CheckpointError):
    """A GGUF file is malformed, truncated or holds something we cannot load."""


# What a header may declare. llama.cpp's own limits: at most 4 dimensions, a power-of-two
# alignment; arrays never nest in files it writes (one level is allowed here).
MAX_DIMS = 4
MAX_ARRAY_DEPTH = 2
MAX_ALIGNMENT = 1 << 20
# the fewest bytes a metadata entry (key length, type, a one-byte value) and a tensor info
# (name length, n_dims, type, offset) take: a count above what the file can hold is refused
# before anything is built from it
_MIN_KV_BYTES = 8 + 4 + 1
_MIN_TENSOR_INFO_BYTES = 8 + 4 + 4 + 8


def _require_gguf(what: str) -> Any:
    try:
        import gguf  # optional extra
    except ImportError as exc:
        raise ImportError(f"{what} needs the optional 'gguf' package: pip install gguf") from exc
    return gguf


def _type_info(type_id: int) -> tuple[str, int, int]:
    if type_id in TENSOR_TYPES:
        return TENSOR_TYPES[type_id]
    try:
        gguf = _require_gguf(f"tensor type {type_id}")
        qtype = gguf.GGMLQuantizationType(type_id)
        block, size = gguf.GGML_QUANT_SIZES[qtype]
        return qtype.name, block, size
    except (ImportError, ValueError, KeyError):
        raise GGUFError(f"unknown GGUF tensor type id {type_id}") from None


@dataclass(frozen=True)
class TensorInfo:
    """One tensor of a GGUF file. ``shape`` is in torch order (outermost first)."""

    name: str
    shape: tuple[int, ...]
    type_id: int
    offset: int  # absolute byte offset in the file
    nbytes: int

    @property
    def type_name(self) -> str:
        return _type_info(self.type_id)[0]


class _Cursor:
    def __init__(self, buf: mmap.mmap | bytes, path: Path) -> None:
        self.buf, self.pos, self.path = buf, 0, path

    def unpack(self, fmt: str, size: int) -> Any:
        if self.pos + size > len(self.buf):
            raise GGUFError(f"{self.path}: truncated GGUF header (needed {size} bytes at offset {self.pos})")
        value = struct.unpack_from(fmt, self.buf, self.pos)[0]
        self.pos += size
        return value

    def string(self) -> str:
        n = self.unpack("<Q", 8)
        if self.pos + n > len(self.buf):
            raise GGUFError(f"{self.path}: truncated GGUF string at offset {self.pos}")
        raw = self.buf[self.pos : self.pos + n]
        self.pos += n
        return raw.decode("utf-8", errors="replace")

    def strings(self, count: int) -> list[str]:
        # vocabularies hold ~1e5 strings: one tight loop, no per-item method calls
        buf, pos, size = self.buf, self.pos, len(self.buf)
        length = struct.Struct("<Q").unpack_from
        out = []
        for _ in range(count):
            if pos + 8 > size:
                raise GGUFError(f"{self.path}: truncated GGUF string array at offset {pos}")
            n = length(buf, pos)[0]
            pos += 8
            if pos + n > size:
                raise GGUFError(f"{self.path}: truncated GGUF string array at offset {pos}")
            out.append(buf[pos : pos + n])
            pos += n
        self.pos = pos
        return [b.decode("utf-8", errors="replace") for b in out]

    def count(self, n: int, item_bytes: int, what: str) -> int:
        """``n`` items of at least ``item_bytes`` each, or an error when the file cannot hold them."""
        if n * item_bytes > len(self.buf) - self.pos:
            raise GGUFError(
                f"{self.path}: the header declares {n} {what} at offset {self.pos}, more than the "
                f"{len(self.buf) - self.pos} bytes left in the file can hold; the file is corrupt or hostile"
            )
        return n

    def value(self, vtype: int, depth: int = 0) -> Any:
        if vtype in _SCALARS:
            return self.unpack(*_SCALARS[vtype])
        if vtype == _STRING:
            return self.string()
        if vtype == _ARRAY:
            if depth >= MAX_ARRAY_DEPTH:
                raise GGUFError(f"{self.path}: GGUF arrays nested deeper than {MAX_ARRAY_DEPTH} levels at offset {self.pos}")
            itype = self.unpack("<I", 4)
            count = self.unpack("<Q", 8)
            item = np.dtype(_NUMPY[itype]).itemsize if itype in _NUMPY else (_SCALARS[itype][1] if itype in _SCALARS else 8 if itype == _STRING else 12)
            self.count(count, item, "array items")
            if itype in _NUMPY:
                dtype = np.dtype(_NUMPY[itype])
                end = self.pos + count * dtype.itemsize
                if end > len(self.buf):
                    raise GGUFError(f"{self.path}: truncated GGUF array at offset {self.pos}")
                arr = np.frombuffer(self.buf, dtype=dtype, count=count, offset=self.pos).tolist()
                self.pos = end
                return arr
            if itype == _STRING:
                return self.strings(count)
            return [self.value(itype, depth + 1) for _ in range(count)]
        raise GGUFError(f"{self.path}: unknown GGUF metadata value type {vtype} at offset {self.pos}")


class GGUFFile:
    """An open GGUF file: ``metadata`` (key -> value), ``tensors`` (name -> :class:`TensorInfo`).

    Tensor bytes stay in the memory map until :meth:`raw` or :meth:`dequantize` reads them.
    """

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        if not self.path.is_file():
            raise FileNotFoundError(f"GGUF file not found: {self.path}")
        with open(self.path, "rb") as f:
            head = f.read(4)
            if head != GGUF_MAGIC:
                raise GGUFError(
                    f"{self.path} is not a GGUF file: it starts with {head!r}, not {GGUF_MAGIC!r}. "
                    f"Pass a .gguf file written by llama.cpp or gguf.GGUFWriter."
                )
            self._mmap = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        cur = _Cursor(self._mmap, self.path)
        cur.pos = 4
        self.version = cur.unpack("<I", 4)
        if self.version not in (2, 3):
            raise GGUFError(f"{self.path}: GGUF version {self.version} is not supported (versions 2 and 3 are)")
        n_tensors = cur.count(cur.unpack("<Q", 8), _MIN_TENSOR_INFO_BYTES, "tensors")
        n_kv = cur.count(cur.unpack("<Q", 8), _MIN_KV_BYTES, "metadata entries")
        self.metadata: dict[str, Any] = {}
        for _ in range(n_kv):
            key = cur.string()
            self.metadata[key] = cur.value(cur.unpack("<I", 4))
        infos = []
        for _ in range(n_tensors):
            name = cur.string()
            n_dims = cur.unpack("<I", 4)
            if n_dims > MAX_DIMS:
                raise GGUFError(f"{self.path}: tensor {name!r} declares {n_dims} dimensions (GGUF allows at most {MAX_DIMS})")
            dims = [cur.unpack("<Q", 8) for _ in range(n_dims)]
            type_id = cur.unpack("<I", 4)
            offset = cur.unpack("<Q", 8)
            infos.append((name, tuple(reversed(dims)), type_id, offset))
        align = self.metadata.get("general.alignment", 32)
        if type(align) is not int or align <= 0 or align > MAX_ALIGNMENT or align & (align - 1):
            raise GGUFError(
                f"{self.path}: general.alignment = {align!r} is not a power of two between 1 and {MAX_ALIGNMENT}; "
                f"the file is corrupt"
            )
        data_start = -(-cur.pos // align) * align
        self.tensors: dict[str, TensorInfo] = {}
        for name, shape, type_id, offset in infos:
            _, block, size = _type_info(type_id)
            n = math.prod(shape)  # Python integers: a product of huge dimensions cannot wrap around
            if n == 0:
                raise GGUFError(f"{self.path}: tensor {name!r} has shape {list(shape)}, with no values")
            if shape and shape[-1] % block:
                raise GGUFError(f"{self.path}: tensor {name!r} has a row of {shape[-1]} values, not a multiple of its block size {block}")
            nbytes = n // block * size
            start = data_start + offset
            if start + nbytes > len(self._mmap):
                raise GGUFError(f"{self.path}: tensor {name!r} runs past the end of the file (truncated download?)")
            if name in self.tensors:
                raise GGUFError(f"{self.path}: tensor {name!r} appears twice in the tensor directory")
            self.tensors[name] = TensorInfo(name, shape, type_id, start, nbytes)

    @property
    def architecture(self) -> str | None:
        return self.metadata.get("general.architecture")

    def raw(self, name: str) -> np.ndarray:
        """The tensor's bytes as a read-only uint8 array of shape ``[rows, bytes per row]``."""
        info = self.tensors[name]
        arr = np.frombuffer(self._mmap, dtype=np.uint8, count=info.nbytes, offset=info.offset)
        rows = int(np.prod(info.shape[:-1])) if len(info.shape) > 1 else 1
        return arr.reshape(rows, -1)

    def raw_torch(self, name: str) -> torch.Tensor:
        """:meth:`raw` as a torch uint8 tensor sharing the memory map (never written to)."""
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the map is read-only; we only read from it
            return torch.from_numpy(self.raw(name))

    def dequantize(self, name: str) -> torch.Tensor:
        """The tensor as float32 (a fresh tensor, not a view of the file)."""
        info = self.tensors[name]
        kind = info.type_name
        if kind in _DEQUANT:
            out = torch.from_numpy(_DEQUANT[kind](self.raw(name)))
        else:
            gguf = _require_gguf(f"{self.path}: tensor {name!r} of type {kind}")
            try:
                out = torch.from_numpy(np.ascontiguousarray(gguf.quants.dequantize(self.raw(name), gguf.GGMLQuantizationType(info.type_id)), dtype=np.float32))
            except NotImplementedError as exc:
                raise GGUFError(f"{self.path}: tensor {name!r} has type {kind}, which cannot be dequantized: {exc}") from exc
        return out.reshape(info.shape)

    def close(self) -> None:
        try:
            self._mmap.close()
        except BufferError:
            pass  # a caller still holds a view of the map; it closes when that view is freed


def read_gguf_metadata(path: str | os.PathLike) -> dict[str, Any]:
    """The metadata (key -> value) of a GGUF file; tensors are never read."""
    gf = GGUFFile(path)
    try:
        return gf.metadata
    finally:
        gf.close()


# Dequantization runs in numpy: single-threaded, vectorised, and free of the thread start-up
# cost torch pays per elementwise op on the many small tensors of a model.
def _half(b: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(b).view(np.float16).astype(np.float32)


def _nibbles(qs: np.ndarray, dtype: Any) -> np.ndarray:
    # a block's 16 bytes hold values 0..15 in the low nibbles and 16..31 in the high ones
    q = np.empty((qs.shape[0], 32), dtype=dtype)
    np.bitwise_and(qs, 0x0F, out=q[:, :16], casting="unsafe")
    np.right_shift(qs, 4, out=q[:, 16:], casting="unsafe")
    return q


def _deq_q4_0(raw: np.ndarray) -> np.ndarray:
    b = raw.reshape(-1, 18)
    q = _nibbles(b[:, 2:], np.float32)
    q -= 8
    q *= _half(b[:, :2])
    return q


def _deq_q4_1(raw: np.ndarray) -> np.ndarray:
    b = raw.reshape(-1, 20)
    q = _nibbles(b[:, 4:], np.float32)
    q *= _half(b[:, :2])
    q += _half(b[:, 2:4])
    return q


def _deq_q8_0(raw: np.ndarray) -> np.ndarray:
    b = raw.reshape(-1, 34)
    q = b[:, 2:].view(np.int8).astype(np.float32)
    q *= _half(b[:, :2])
    return q


def _q4_k_parts(raw: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Q4_K super-blocks of 256 -> per 32 values ``(q [n, 256] uint8, scale [n, 8], min [n, 8])``.

    A super-block holds f16 ``d`` and ``dmin``, twelve bytes of 6-bit sub-block scales and mins,
    and 128 bytes of 4-bit values (each 32-byte run: sub-block 2j in the low nibbles, 2j + 1 in
    the high ones). A value is ``d * sc * q - dmin * m``.
    """
    b = raw.reshape(-1, 144)
    d, dmin = _half(b[:, 0:2]), _half(b[:, 2:4])
    sb = b[:, 4:16]
    lo6, mid6, packed = sb[:, 0:4], sb[:, 4:8], sb[:, 8:12]
    sc = np.concatenate([lo6 & 0x3F, (packed & 0x0F) | ((lo6 >> 6) << 4)], axis=1).astype(np.float32)
    mn = np.concatenate([mid6 & 0x3F, (packed >> 4) | ((mid6 >> 6) << 4)], axis=1).astype(np.float32)
    qs = b[:, 16:].reshape(-1, 4, 32)
    q = np.stack([qs & 0x0F, qs >> 4], axis=2).reshape(-1, 256)
    return q, d * sc, -(dmin * mn)


def _deq_q4_k(raw: np.ndarray) -> np.ndarray:
    q, scale, lo = _q4_k_parts(raw)
    out = q.reshape(-1, 8, 32).astype(np.float32)
    out *= scale[:, :, None]
    out += lo[:, :, None]
    return out.reshape(raw.shape[0], -1)


def _bf16(raw: np.ndarray) -> np.ndarray:
    out = np.zeros(raw.size // 2, dtype=np.uint32)
    out[:] = np.ascontiguousarray(raw).view(np.uint16).reshape(-1)
    out <<= 16
    return out.view(np.float32)


_DEQUANT = {
    "F32": lambda r: np.array(r).view(np.float32),
    "F16": lambda r: np.ascontiguousarray(r).view(np.float16).astype(np.float32),
    "BF16": _bf16,
    "F64": lambda r: np.ascontiguousarray(r).view(np.float64).astype(np.float32),
    "Q4_0": _deq_q4_0,
    "Q4_1": _deq_q4_1,
    "Q8_0": _deq_q8_0,
    "Q4_K": _deq_q4_k,
}


FOUR_BIT_TYPES = ("Q4_0", "Q4_1", "Q4_K")


def q4_blocks(raw: np.ndarray, kind: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Split Q4_0 / Q4_1 / Q4_K rows into ``(q [rows, cols] uint8 in 0..15, scale, min)``.

    ``scale`` and ``min`` are float32 ``[rows, cols // 32]``; a value is ``q * scale + min``
    (Q4_0 stores no min: it is ``-8 * scale``).
    """
    rows = raw.shape[0]
    if kind == "Q4_K":
        q, d, m = _q4_k_parts(raw)
    else:
        size = 18 if kind == "Q4_0" else 20
        b = raw.reshape(-1, size)
        d = _half(b[:, :2])
        m = -8 * d if kind == "Q4_0" else _half(b[:, 2:4])
        q = _nibbles(b[:, size - 16 :], np.uint8)
    return (torch.from_numpy(np.ascontiguousarray(q).reshape(rows, -1)), torch.from_numpy(d.reshape(rows, -1)),
            torch.from_numpy(m.reshape(rows, -1)))
