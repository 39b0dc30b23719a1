"""Tiny llama GGUF files written with the ``gguf`` package, with sizes a test may make inconsistent."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import numpy as np


def write_llama_gguf(
    path: Path,
    *,
    hidden: int = 64,
    intermediate: int | list[int] = 128,
    layers: int = 2,
    heads: int = 4,
    kv_heads: int = 2,
    vocab: int = 128,
    qtype: str = "Q4_0",
    block_count: int | None = None,
    metadata: Callable[[Any], None] | None = None,
    skip: tuple[str, ...] = (),
    seed: int = 0,
) -> Path:
    """A llama GGUF; ``intermediate`` may be a list (one MLP width per layer, to make them differ)."""
    import gguf

    rng = np.random.default_rng(seed)
    widths = intermediate if isinstance(intermediate, list) else [intermediate] * layers
    head_dim = hidden // heads
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_block_count(layers if block_count is None else block_count)
    w.add_context_length(64)
    w.add_embedding_length(hidden)
    w.add_feed_forward_length(widths[0])
    w.add_head_count(heads)
    w.add_head_count_kv(kv_heads)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_rope_freq_base(10000.0)
    w.add_tokenizer_model("gpt2")
    w.add_token_list([f"t{i}" for i in range(vocab)])
    w.add_token_merges([])
    w.add_bos_token_id(1)
    w.add_eos_token_id(2)
    if metadata is not None:
        metadata(w)

    def mat(rows: int, cols: int) -> np.ndarray:
        return (rng.standard_normal((rows, cols)) * 0.05).astype(np.float32)

    tensors = {"token_embd.weight": mat(vocab, hidden), "output_norm.weight": np.ones(hidden, np.float32),
               "output.weight": mat(vocab, hidden)}
    for i in range(layers):
        ff = widths[i]
        tensors.update({
            f"blk.{i}.attn_norm.weight": np.ones(hidden, np.float32),
            f"blk.{i}.ffn_norm.weight": np.ones(hidden, np.float32),
            f"blk.{i}.attn_q.weight": mat(heads * head_dim, hidden),
            f"blk.{i}.attn_k.weight": mat(kv_heads * head_dim, hidden),
            f"blk.{i}.attn_v.weight": mat(kv_heads * head_dim, hidden),
            f"blk.{i}.attn_output.weight": mat(hidden, heads * head_dim),
            f"blk.{i}.ffn_gate.weight": mat(ff, hidden),
            f"blk.{i}.ffn_up.weight": mat(ff, hidden),
            f"blk.{i}.ffn_down.weight": mat(hidden, ff),
        })
    q = getattr(gguf.GGMLQuantizationType, qtype)
    for name, t in tensors.items():
        if name in skip:
            continue
        if t.ndim == 2 and qtype != "F32":
            w.add_tensor(name, gguf.quants.quantize(np.ascontiguousarray(t), q), raw_dtype=q)
        else:
            w.add_tensor(name, t)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


# -- raw GGUF bytes, for headers no writer would produce --------------------------------------
import struct  # noqa: E402

U32, I32, F32, BOOL, STRING, ARRAY, U64 = 4, 5, 6, 7, 8, 9, 10


def gguf_string(s: str | bytes) -> bytes:
    b = s.encode() if isinstance(s, str) else s
    return struct.pack("<Q", len(b)) + b


def kv(key: str, vtype: int, payload: bytes) -> bytes:
    """One metadata entry; ``payload`` is the value's bytes (see :func:`value`)."""
    return gguf_string(key) + struct.pack("<I", vtype) + payload


def value(vtype: int, v: Any) -> bytes:
    if vtype == STRING:
        return gguf_string(v)
    fmt = {U32: "<I", I32: "<i", F32: "<f", BOOL: "<?", U64: "<Q"}[vtype]
    return struct.pack(fmt, v)


def array(itype: int, items: list) -> bytes:
    return struct.pack("<IQ", itype, len(items)) + b"".join(value(itype, i) for i in items)


def raw_gguf(entries: list[bytes], tensors: list[tuple[str, tuple[int, ...], int, int]] = (), *,
             n_kv: int | None = None, n_tensors: int | None = None, data: bytes = b"", align: int = 32) -> bytes:
    """A GGUF v3 file from raw entries; ``tensors`` are ``(name, dims innermost first, type, offset)``."""
    out = b"GGUF" + struct.pack("<IQQ", 3, len(tensors) if n_tensors is None else n_tensors,
                               len(entries) if n_kv is None else n_kv)
    out += b"".join(entries)
    for name, dims, ttype, offset in tensors:
        out += gguf_string(name) + struct.pack("<I", len(dims)) + b"".join(struct.pack("<Q", d) for d in dims)
        out += struct.pack("<IQ", ttype, offset)
    out += b"\0" * (-len(out) % align)
    return out + data
