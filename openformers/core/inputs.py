"""Checks on the token ids a model is called with, shared by every family (``PreTrainedModel.__call__``).

Without them a 1-D tensor, an empty batch or an id past the vocabulary fails deep inside a layer with a
bare ``IndexError`` or a reshape error that names neither the argument nor the fix. The shape and dtype
checks read only the tensor's metadata, so they hold under ``torch.export`` and ONNX export too; the
value check reads the data, so it is left out while tracing, compiling or exporting (a graph must not
depend on token values) and costs one ``aminmax`` otherwise.
"""
from __future__ import annotations

from typing import Any

import torch

_ID_DTYPES = (torch.long, torch.int32)


def is_tracing() -> bool:
    """True while torch.compile, torch.export or TorchScript tracing records the call."""
    exporting = getattr(torch.compiler, "is_exporting", None)
    return bool(torch.compiler.is_compiling() or (exporting is not None and exporting())
                or torch.jit.is_tracing() or torch.jit.is_scripting())


def check_token_ids(input_ids: Any, vocab_size: int | None, *, values: bool = True, leading_dims: bool = False) -> None:
    """Refuse ``input_ids`` a model cannot embed, with an error naming the argument and the fix.

    ``input_ids`` must be a ``[batch, length]`` integer tensor with at least one row and one column
    (``leading_dims``: extra leading dimensions are allowed, as GPT-2 reads them), and, when ``values`` is
    true, every id must lie in ``[0, vocab_size)``.
    """
    if isinstance(input_ids, (list, tuple)):
        raise TypeError(
            f"input_ids must be a torch.Tensor of shape [batch, length], got a {type(input_ids).__name__}; "
            "pass torch.tensor([ids]) or the tokenizer's output with return_tensors='pt'"
        )
    if not isinstance(input_ids, torch.Tensor):  # None (inputs_embeds given) or a tracer's proxy
        return
    shape = tuple(int(d) for d in input_ids.shape) if torch.jit.is_tracing() else tuple(input_ids.shape)
    if input_ids.dim() < 2:
        raise ValueError(
            f"input_ids has shape {shape}, but the model reads a batch of shape [batch, length]; "
            "add the batch dimension: input_ids[None] (or input_ids.unsqueeze(0)) for one sequence"
        )
    if input_ids.dim() > 2 and not leading_dims:
        raise ValueError(
            f"input_ids has shape {shape}, but the model reads a batch of shape [batch, length]; "
            "flatten the leading dimensions: input_ids.reshape(-1, input_ids.shape[-1])"
        )
    if input_ids.dtype not in _ID_DTYPES:
        raise ValueError(
            f"input_ids holds {input_ids.dtype} values, but the embedding reads torch.long (or torch.int32) token "
            "ids; pass the tokenizer's ids, or input_ids.long() if these are whole numbers"
        )
    if 0 in shape:
        raise ValueError(
            f"input_ids has shape {shape}: an empty batch (no sequences or no tokens); pass at least one "
            "sequence of at least one token"
        )
    if not values or not isinstance(vocab_size, int) or is_tracing():
        return
    low, high = (int(v) for v in torch.aminmax(input_ids))
    if low < 0 or high >= vocab_size:
        bad = low if low < 0 else high
        raise ValueError(
            f"input_ids holds the token id {bad}, outside the model's vocabulary of {vocab_size} ids "
            f"(0 to {vocab_size - 1}); encode the text with this model's tokenizer (or resize_token_embeddings "
            "after adding tokens)"
        )


def model_vocab_size(model: torch.nn.Module) -> int | None:
    """The number of rows of the model's input embedding (falling back to ``config.vocab_size``)."""
    try:
        rows = getattr(model.get_input_embeddings(), "num_embeddings", None)
    except (AttributeError, NotImplementedError):
        rows = None
    if isinstance(rows, int):
        return rows
    vocab = getattr(getattr(model, "config", None), "vocab_size", None)
    return vocab if isinstance(vocab, int) else None
