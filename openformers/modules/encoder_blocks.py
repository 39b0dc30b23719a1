"""What an encoder is made of, as plain data: the description a family gives of its layer and its stack.

A model file writes its forward once, in PyTorch. Beside it, the classes declare what that forward is
built from, and where their modules are (attribute paths), so the runtime
(``openformers/runtime/encoder.py``) can run the same computation on its own kernels without reading
the code:

- the layer class: ``blocks = EncoderBlocks(...)``, a post-norm layer::

      x = attention_norm(x + attention_out(attention(q(x), k(x), v(x))))
      x = mlp_norm(x + mlp_out(activation(mlp_in(x))))

  (bidirectional attention over the unpadded keys, scaled by 1/sqrt(head_dim));
- the model class: ``encoder_stack = EncoderStack(...)``: its forward is ``embeddings(*inputs)``, the
  layers over ``layers`` with the padding mask, then ``pooler`` on the result where the model has one;
- a head class whose output reads the first position of the last layer alone (sequence
  classification): ``encoder_reads = "first"``.

The layer's dropouts, for the runtime's training forward (``dropouts = EncoderDropouts(...)`` in
``blocks``): the attention probabilities' rate (an attribute below the layer, read with its owner's
``training``), and the ``nn.Dropout`` modules after ``attention_out`` and after ``mlp_out``, where the
layer has them (a layer without that description trains on its module path)::

      x = attention_norm(x + dropout(attention_out(...)))
      x = mlp_norm(x + dropout(mlp_out(...)))

A class that changes ``forward`` without declaring its own description is not described, and runs
its module path.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class EncoderDropouts:
    """Paths below a layer: ``attention`` names the attribute holding the attention probabilities' dropout rate
    (its owner's ``training`` says whether it applies); ``attention_out`` and ``mlp_out`` the ``nn.Dropout``
    modules applied to those products' outputs before the residual (None: the layer has none there)."""

    attention: str
    attention_out: str | None
    mlp_out: str | None


@dataclass(frozen=True)
class EncoderBlocks:
    """The blocks of one post-norm encoder layer: paths of its ``nn.Linear`` and ``nn.LayerNorm`` modules
    below the layer, and the config fields that give the head count and the activation's name."""

    q: str
    k: str
    v: str
    attention_out: str
    attention_norm: str
    mlp_in: str
    mlp_out: str
    mlp_norm: str
    heads: str = "num_attention_heads"
    activation: str = "hidden_act"
    norm: str = "post"
    mlp: str = "plain"
    dropouts: EncoderDropouts | None = None


@dataclass(frozen=True)
class EncoderStack:
    """The model around the layers: ``embeddings`` (the module, called with the forward arguments named in
    ``inputs``, in order), ``layers`` (an ``nn.ModuleList`` of described layers) and ``pooler`` (the module
    applied to the last hidden state, its output ``pooler_output``; None: the model returns no pooled
    output)."""

    layers: str
    inputs: tuple[str, ...] = ("input_ids", "inputs_embeds")
    embeddings: str = "embeddings"
    pooler: str | None = None
