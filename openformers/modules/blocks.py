"""What a decoder layer is made of, as plain data: the description a family gives of its layer.

A model file writes its layer's forward once, in PyTorch. Beside it, the layer class declares
``blocks = DecoderBlocks(...)``: which known blocks that forward is built from. The inference runtime
(``openformers/runtime``) reads the description, never the code, to run the same layer on its own
fused and packed kernels; a layer whose description names a block the runtime does not know, or a
class that changes ``forward`` without declaring its own ``blocks``, runs its module path.

The blocks of a pre-norm decoder layer::

    x = x + o_proj(attention(rotary(qk_norm(q_proj(norm(x)))), rotary(qk_norm(k_proj(norm(x)))), v_proj(norm(x))))
    x = x + mlp(norm(x))

with projection biases and sliding windows read from the layer's own modules and config.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class DecoderBlocks:
    """The blocks of one pre-norm decoder layer.

    - ``norm``: the kind of the layer's two norms (and the model's final one): ``"rms"`` or ``"layer"``.
    - ``norm_offset``: the norm multiplies by ``norm_offset + weight`` (0 for Llama, 1 for Gemma).
    - ``attention``: ``"rotary"``, grouped-query attention with rotary embeddings over q and k.
    - ``qk_norm``: an RMSNorm over each query and key head (``q_norm``, ``k_norm``) before the rotary.
    - ``mlp``: ``"gated"`` (``down(act(gate(x)) * up(x))``) or ``"plain"`` (``down(act(up(x)))``).
    - ``embedding_scale``: the token embeddings are multiplied by this (None: not scaled).
    """

    norm: str = "rms"
    norm_offset: float = 0.0
    attention: str = "rotary"
    qk_norm: bool = False
    mlp: str = "gated"
    embedding_scale: float | None = None
