"""What a decoder layer is made of, as plain data: the description a family gives of its layer.

A model file writes its layer's forward once, in PyTorch. Beside it, the layer class declares
``blocks = DecoderBlocks(...)``: which known blocks that forward is built from. The inference runtime
(``openformers/runtime``) reads the description, never the code, to run the same layer on its own
fused and packed kernels; a layer whose description names a block the runtime does not know, or a
class that changes ``forward`` without declaring its own ``blocks``, runs its module path.

The blocks of a pre-norm decoder layer::

    x = x + o_proj(attention(rotary(qk_norm(q_proj(norm(x)))), rotary(qk_norm(k_proj(norm(x)))), v_proj(norm(x))))
    x = x + mlp(norm(x))

with projection biases and sliding windows read from the layer's own modules and config, the norms'
offset and the embeddings' scale as the fields below say.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class DecoderBlocks:
    """The blocks of one pre-norm decoder layer.

    - ``norm``: the kind of the layer's two norms (and the model's final one): ``"rms"`` or ``"layer"``
      (``nn.LayerNorm`` with a weight and a bias, Starcoder2; no offset; per-head q/k norms stay RMSNorms).
    - ``norm_offset``: 0 (Llama): every RMSNorm of the stack (the layer's two, the q/k norms, the final one) is
      ``modules/norms.py: RMSNorm``, ``weight * normed.to(dtype)`` (weights start at ones). Any other value
      (1 for Gemma): they are ``OffsetRMSNorm(offset=norm_offset)``, ``(normed * (offset + weight)).to(dtype)``
      with the product in float32 and one rounding (weights start at zeros).
    - ``attention``: ``"rotary"``, grouped-query attention with rotary embeddings over q and k.
    - ``qk_norm``: an RMSNorm over each query and key head (``q_norm``, ``k_norm``) before the rotary.
    - ``mlp``: ``"gated"`` (``down(act(gate(x)) * up(x))``, ``GatedMLP``) or ``"plain"`` (``c_proj(act(c_fc(x)))``,
      ``PlainMLP``; modules/mlp.py).
    - ``embedding_scale``: None (not scaled), a number, or ``"sqrt_hidden_size"`` (Gemma: the config's
      ``hidden_size ** 0.5``); :func:`embedding_scale` gives the number for a config. The stack multiplies
      the embeddings of ``input_ids`` (not ``inputs_embeds`` passed by the caller) by that number as a
      float32 scalar cast to the embeddings' dtype, in its ``layer_inputs``.
    """

    norm: str = "rms"
    norm_offset: float = 0.0
    attention: str = "rotary"
    qk_norm: bool = False
    mlp: str = "gated"
    embedding_scale: float | str | None = None


# the embedding scales that depend on the config, by name
_SCALES = {"sqrt_hidden_size": lambda config: config.hidden_size**0.5}


def embedding_scale(blocks: DecoderBlocks, config: Any) -> float | None:
    """The number ``blocks.embedding_scale`` stands for in a model of ``config`` (None: not scaled)."""
    scale = blocks.embedding_scale
    if scale is None or isinstance(scale, (int, float)):
        return None if scale is None else float(scale)
    if scale not in _SCALES:
        raise ValueError(f"DecoderBlocks.embedding_scale={scale!r}: give a number, None or one of {sorted(_SCALES)}")
    return float(_SCALES[scale](config))
