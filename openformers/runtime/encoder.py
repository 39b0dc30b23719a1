"""The runner of described encoders: inference calls of a post-norm BERT-like stack and of its heads, and the
training forward of a first-position head on a padded batch.

A family opts in with plain data (``modules/encoder_blocks.py``): its layer class declares ``blocks``,
its model class ``encoder_stack``, and a head that reads the first position alone ``encoder_reads``.
For an inference call (no gradient, eval mode) of such a model this module runs the same computation
as the model's forward on its own kernels:

* every product on a copy of its weights in oneDNN's blocked layout (``packed_weights.py``) for float32
  and bfloat16 on the CPU; q, k and v as one product on one copy of their stacked weights; the
  activation after the first MLP product and the residual after the attention and MLP outputs are
  oneDNN post-ops of those products (no pass of their own over the activations);
* attention as one native pass over the stacked q/k/v product's output on the CPU in float32 and bfloat16
  (``attention_native.py``: float32 inside, the output written in the layout the next product reads),
  else through ``F.scaled_dot_product_attention``, with no mask when nothing is padded;
* under a head that reads only the first position (sequence classification): the per-token work
  (products, norms, activations) on the real tokens alone, gathered into rows and scattered back to
  the padded layout only for attention; and the last layer for the first position alone (its keys
  and values still come from every token). The last hidden state the head sees is zero elsewhere.

It changes no parameter: the copies live in ``packed_weights.py``'s table, keyed weakly by each layer
module, and a plan (the modules, their copies) in this module's table, keyed weakly by the model; the
plan is remade when a module is replaced (an adapter), or a weight is replaced or updated in place.
A call it does not cover runs the model's own ``forward``, module by module: training mode, hooks on
any module of the stack, a module that is not a plain ``nn.Linear`` / ``nn.LayerNorm``, attentions or
hidden states asked for, ``attn_implementation="eager"``, an unknown activation or argument. A debug
log line says why, once per reason.

Training (``encoder_training_runner``, asked by ``PreTrainedModel.__call__`` in training mode with autograd
recording): under a head that reads the first position alone (sequence classification), a padded batch's
per-token work (products, LayerNorms, the activation, the hidden dropouts) runs on the real tokens' rows with
the live parameters (``train_linear``, no copies), attention on the padded layout through the module path's
own SDPA call (its mask and attention dropout), the last layer for the first position alone
(``train_pad_free``). The dropouts after ``attention_out`` and ``mlp_out`` (``EncoderBlocks.dropouts``) draw
the mask of the whole padded tensor, as ``F.dropout`` does on the CPU, and keep the rows they need: the
random stream, the loss and every gradient are the module path's (to fp32 rounding), so a run resumes
exactly whichever path its steps took. (On other devices ``F.dropout`` runs a fused kernel with a random
stream of its own; there the masks are other draws of the same law, and the stream is consumed differently.) It steps aside (the module path, a debug line) where the caller reads
every position (the bare model, token classification, masked LM: their outputs at padding positions are the
forward's to give), for gradient checkpointing, hooks, adapters or other modules that are not plain,
attentions or hidden states asked for, eager attention; and with nothing padded, a padded first position
or too few positions to leave out.
"""
from __future__ import annotations

import functools
import inspect
import logging
import math
import weakref
from contextvars import ContextVar
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from openformers.core.modeling import PreTrainedModel
from openformers.core.outputs import BaseModelOutput, BaseModelOutputWithPooling
from openformers.modules.attention import sdpa_attention
from openformers.modules.dense import is_plain_linear, train_linear
from openformers.modules.encoder_blocks import EncoderBlocks, EncoderDropouts, EncoderStack
from openformers.modules.masks import padding_mask
from openformers.runtime import attention_native
from openformers.runtime.describe import declared, why_not
from openformers.runtime.dispatch import register_runner, register_training_runner
from openformers.runtime.packed_weights import packed_weight, tensor_version

logger = logging.getLogger(__name__)

# activation name -> (oneDNN post-op, its algorithm) or a function applied after the product
_POST_OPS = {"gelu": ("gelu", "none"), "gelu_new": ("gelu", "tanh"), "gelu_pytorch_tanh": ("gelu", "tanh"),
             "gelu_fast": ("gelu", "tanh"), "relu": ("relu", "")}
_FUNCTIONS = {"gelu": F.gelu, "gelu_new": functools.partial(F.gelu, approximate="tanh"),
              "gelu_pytorch_tanh": functools.partial(F.gelu, approximate="tanh"),
              "gelu_fast": functools.partial(F.gelu, approximate="tanh"), "relu": F.relu, "silu": F.silu,
              "swish": F.silu, "tanh": torch.tanh}
_LINEAR = torch.ops.mkldnn._linear_pointwise if torch.backends.mkldnn.is_available() else None
_ARGS = frozenset({"input_ids", "attention_mask", "token_type_ids", "position_ids", "inputs_embeds",
                   "output_attentions", "output_hidden_states", "return_dict"})
# the model whose next call is made by a head that reads the first position alone
_FIRST_ONLY: ContextVar[nn.Module | None] = ContextVar("openformers_encoder_first_only", default=None)
# the model whose next training call is made by a head that reads the first position alone
_PAD_FREE: ContextVar[nn.Module | None] = ContextVar("openformers_encoder_pad_free", default=None)
# model -> its plan
_PLANS: "weakref.WeakKeyDictionary[nn.Module, EncoderPlan]" = weakref.WeakKeyDictionary()


def _described(cls: type, attribute: str) -> Any:
    """``cls``'s ``attribute`` where the class that declares it also defines the forward ``cls`` runs."""
    owner = declared(cls, attribute)
    if owner is None:
        return None
    if cls.forward is not owner.forward:
        why_not(logger, f"{cls.__name__} changes its forward without declaring its own {attribute}")
        return None
    return owner.__dict__[attribute]


def _at(module: nn.Module, path: str) -> Any:
    for name in path.split("."):
        module = getattr(module, name)
    return module


def _hooked(m: nn.Module) -> bool:
    return bool(m._forward_hooks or m._forward_pre_hooks)


def _stamp(t: torch.Tensor | None) -> tuple:
    return (None,) if t is None else (id(t), t.data_ptr(), tensor_version(t))


class _Product:
    """``act(x @ W.T + b) (+ residual)`` for one ``nn.Linear`` or a group reading one input (stacked), on a
    packed copy of the weight where one is kept, else ``F.linear``."""

    def __init__(self, owner: nn.Module, slot: str, layers: tuple[nn.Linear, ...], activation: str | None) -> None:
        weights = tuple(m.weight for m in layers)
        biases = tuple(m.bias for m in layers)
        self.bias = None if biases[0] is None else (biases[0] if len(biases) == 1 else torch.cat(biases)).detach()
        w = weights[0]
        self.packed = None
        if _LINEAR is not None and w.device.type == "cpu" and w.dtype in (torch.float32, torch.bfloat16):
            self.packed = packed_weight(owner, slot, lambda: torch.cat(weights) if len(weights) > 1 else weights[0],
                                        weights)
        self.weight = None
        if self.packed is None:
            self.weight = (w if len(weights) == 1 else torch.cat(weights)).detach()
        # the activation: a oneDNN post-op of the packed product where it has one, else a function after it
        self.post_op = ("none", "") if activation is None else _POST_OPS.get(activation)
        self.function = None if activation is None else _FUNCTIONS[activation]

    def __call__(self, x: torch.Tensor, residual: torch.Tensor | None = None) -> torch.Tensor:
        if self.packed is not None:
            if residual is not None:
                return _LINEAR.binary(x, residual, self.packed, self.bias, "add")
            if self.post_op is not None:
                return _LINEAR(x, self.packed, self.bias, self.post_op[0], [], self.post_op[1])
            return self.function(_LINEAR(x, self.packed, self.bias, "none", [], ""))
        y = F.linear(x, self.weight, self.bias)
        if residual is not None:
            return y + residual
        return y if self.function is None else self.function(y)


class _Layer:
    """One described layer's products and norms."""

    def __init__(self, layer: nn.Module, activation: str, modules: list[nn.Module]) -> None:
        q, k, v, out, norm1, mlp_in, mlp_out, norm2 = modules
        self.qkv = _Product(layer, "encoder_qkv", (q, k, v), None)
        self.out = _Product(out, "encoder_out", (out,), None)
        self.mlp_in = _Product(mlp_in, "encoder_mlp_in", (mlp_in,), activation)
        self.mlp_out = _Product(mlp_out, "encoder_mlp_out", (mlp_out,), None)
        self.norm1 = (norm1.weight, norm1.bias, norm1.eps, norm1.normalized_shape)
        self.norm2 = (norm2.weight, norm2.bias, norm2.eps, norm2.normalized_shape)


class _Rows:
    """The real tokens of a padded [batch, seq] batch as rows, rounded up to a few row counts with padding
    positions (kernels that build code per shape then build few)."""

    def __init__(self, attention_mask: torch.Tensor) -> None:
        self.batch, self.seq = attention_mask.shape
        flat = attention_mask.reshape(-1) != 0
        real = flat.nonzero().squeeze(1)
        rows = rounded_rows(real.numel(), flat.numel())
        if rows > real.numel():
            real = torch.cat([real, (~flat).nonzero().squeeze(1)[: rows - real.numel()]])
        self.index = real
        # each position's row; a padding position left out reads row 0: attention masks it out as a key,
        # and its query's output is dropped, so any finite value does
        self.gather = torch.zeros(flat.numel(), dtype=torch.long, device=real.device)
        self.gather[real] = torch.arange(real.numel(), device=real.device)
        # each sequence's first position among the rows (every row starts with a real token)
        self.first = self.gather[torch.arange(self.batch, device=real.device) * self.seq]

    @classmethod
    def worth_it(cls, attention_mask: torch.Tensor | None) -> _Rows | None:
        if attention_mask is None or attention_mask.dim() != 2 or not bool(attention_mask[:, 0].all()):
            return None
        if rounded_rows(int(torch.count_nonzero(attention_mask)), attention_mask.numel()) >= attention_mask.numel():
            return None
        return cls(attention_mask)

    def pack(self, x: torch.Tensor) -> torch.Tensor:
        """[batch * seq, ...] -> [rows, ...]."""
        return x.index_select(0, self.index)

    def unpack(self, x: torch.Tensor) -> torch.Tensor:
        """[rows, ...] -> [batch * seq, ...] for attention (one gather, no zero fill): the padding positions
        left out hold row 0's values, which attention never reads."""
        return x.index_select(0, self.gather)


def rounded_rows(n: int, limit: int) -> int:
    """``n`` rounded up to a multiple of 16, or of n's power of two / 16 when larger; at most ``limit``."""
    step = max(16, 1 << max(n.bit_length() - 4, 0))
    return min(-(-n // step) * step, limit)


class EncoderPlan:
    """The described encoder ``model``'s layers as products and norms; ``key`` tells whether it still
    matches the model's modules and weights."""

    def __init__(self, model: nn.Module, layers: list[tuple[nn.Module, EncoderBlocks, list]], key: tuple) -> None:
        config = model.config
        blocks = layers[0][1]
        self.heads = getattr(config, blocks.heads)
        self.activation = getattr(config, blocks.activation)
        self.layers = [_Layer(layer, self.activation, mods) for layer, _, mods in layers]
        self.key = key

    def run(self, x: torch.Tensor, attention_mask: torch.Tensor | None, first_only: bool) -> torch.Tensor:
        """The layers over embeddings ``x`` [batch, seq, hidden]; with ``first_only`` the result is right at
        the first position alone (zero elsewhere)."""
        b, s, hidden = x.shape
        heads, dim = self.heads, hidden // self.heads
        mask = padding_mask(attention_mask, x.dtype)
        native = attention_native.available(x)
        bias = attention_native.key_bias(attention_mask) if native and mask is not None else None
        scale = 1.0 / math.sqrt(dim)
        rows = _Rows.worth_it(attention_mask) if first_only else None
        h = x.reshape(b * s, hidden)
        if rows is not None:
            h = rows.pack(h)
        last = len(self.layers) - 1
        for i, layer in enumerate(self.layers):
            only_first = first_only and i == last
            qkv = layer.qkv(h)
            if rows is not None:
                qkv = rows.unpack(qkv)
            attn = attention_native.encoder_attention(qkv, b, s, heads, dim, bias, scale, 1 if only_first else s) \
                if native else None
            if attn is None:
                qkv = qkv.view(b, s, 3, heads, dim)
                q = (qkv[:, :1, 0] if only_first else qkv[:, :, 0]).transpose(1, 2)  # [b, heads, q, dim]
                k, v = qkv[:, :, 1].transpose(1, 2), qkv[:, :, 2].transpose(1, 2)
                attn = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=scale)
                attn = attn.transpose(1, 2)
            attn = attn.reshape(-1, hidden)  # [b * q, hidden]
            if only_first:  # the first position of each sequence alone from here on
                residual = h.view(b, s, hidden)[:, 0] if rows is None else h.index_select(0, rows.first)
            else:
                residual = h
                if rows is not None:
                    attn = rows.pack(attn)
            h = F.layer_norm(layer.out(attn, residual), layer.norm1[3], *layer.norm1[:3])
            h = F.layer_norm(layer.mlp_out(layer.mlp_in(h), h), layer.norm2[3], *layer.norm2[:3])
        if first_only:  # h: [b, hidden]
            out = h.new_zeros(b, s, hidden)
            out[:, 0] = h
            return out
        return h.view(b, s, hidden)


def _layers(model: nn.Module, stack: EncoderStack) -> tuple[list, tuple] | None:
    """The described layers with their modules, and the key of the plan they make; None when one is not plain."""
    if nn.modules.module._global_forward_hooks or nn.modules.module._global_forward_pre_hooks:
        why_not(logger, "a global module hook")
        return None
    found, key = [], []
    for layer in _at(model, stack.layers):
        blocks = _described(type(layer), "blocks")
        if not isinstance(blocks, EncoderBlocks) or (blocks.norm, blocks.mlp) != ("post", "plain"):
            why_not(logger, f"{type(layer).__name__} declares no encoder blocks the runtime runs")
            return None
        mods = [_at(layer, p) for p in (blocks.q, blocks.k, blocks.v, blocks.attention_out, blocks.attention_norm,
                                        blocks.mlp_in, blocks.mlp_out, blocks.mlp_norm)]
        for i, m in enumerate(mods):
            if not (type(m) is nn.LayerNorm if i in (4, 7) else is_plain_linear(m)) or _hooked(m):
                why_not(logger, f"a {type(m).__name__} in {type(layer).__name__} is not a plain module without hooks")
                return None
        for m in layer.modules():
            if _hooked(m):
                why_not(logger, f"a hook on {type(m).__name__}")
                return None
        found.append((layer, blocks, mods))
        key.append(id(layer))
        for m in mods:
            key.extend(_stamp(m.weight) + _stamp(m.bias))
    return found, tuple(key)


@functools.lru_cache(maxsize=64)
def _signature(cls: type) -> inspect.Signature:
    return inspect.signature(cls.forward)


def _arguments(model: nn.Module, args: tuple, kwargs: dict) -> dict[str, Any] | None:
    try:
        bound = _signature(type(model)).bind(model, *args, **kwargs)
    except TypeError:
        return None  # the forward raises the error
    out = dict(bound.arguments)
    out.pop("self", None)
    extra = out.pop("kwargs", {})
    if not set(out) <= _ARGS or any(v is not None for v in extra.values()):
        return None
    return out


def _plan(model: nn.Module, stack: EncoderStack) -> EncoderPlan | None:
    found = _layers(model, stack)
    if found is None:
        return None
    layers, key = found
    if not layers:
        return None
    config = model.config
    blocks = layers[0][1]
    activation = getattr(config, blocks.activation, None)
    if activation not in _POST_OPS and activation not in _FUNCTIONS:
        why_not(logger, f"activation {activation!r} is unknown to the encoder runner")
        return None
    key = key + (model.dtype, activation)
    plan = _PLANS.get(model)
    if plan is None or plan.key != key:
        _PLANS.pop(model, None)
        plan = _PLANS[model] = EncoderPlan(model, layers, key)
    return plan


def _head_runner(model: nn.Module, mark: Any) -> Any:
    """A runner for a head that reads the first position alone: its own forward, with its described base model
    set in the context variable ``mark`` for the base model's call (None without such a base model)."""
    base = getattr(model, model.base_model_prefix, None)
    if base is None or _described(type(base), "encoder_stack") is None:
        return None

    def run_head(*a: Any, **kw: Any) -> Any:
        token = mark.set(base)
        try:
            return model.forward(*a, **kw)
        finally:
            mark.reset(token)
    return run_head


def encoder_runner(model: nn.Module, args: tuple, kwargs: dict) -> Any:
    """``runtime/dispatch.py``'s builder: a runner for a described encoder (or a head that reads the first
    position alone, over one), else None."""
    cls = type(model)
    if model.training:
        return None
    if _described(cls, "encoder_reads") == "first":
        return _head_runner(model, _FIRST_ONLY)
    stack = _described(cls, "encoder_stack")
    if not isinstance(stack, EncoderStack):
        return None
    config = model.config
    if config.attn_implementation not in (None, "sdpa"):
        why_not(logger, f"attn_implementation={config.attn_implementation!r}")
        return None
    a = _arguments(model, args, kwargs)
    if a is None:
        return None
    for flag in ("output_attentions", "output_hidden_states"):
        if (getattr(config, flag) if a.get(flag) is None else a[flag]):
            return None
    plan = _plan(model, stack)
    if plan is None:
        return None
    first_only = _FIRST_ONLY.get() is model

    def run(*_: Any, **__: Any) -> Any:
        if (a.get("input_ids") is None) == (a.get("inputs_embeds") is None):
            raise ValueError("pass exactly one of input_ids and inputs_embeds")
        x = _at(model, stack.embeddings)(*(a.get(name) for name in stack.inputs))
        x = plan.run(x, a.get("attention_mask"), first_only)
        return _outputs(model, stack, a, x)
    return run


def _outputs(model: nn.Module, stack: EncoderStack, a: dict[str, Any], x: torch.Tensor) -> Any:
    """The stack's outputs from the last hidden state ``x``: the pooler on it where the model has one."""
    return_dict = a.get("return_dict")
    return_dict = model.config.use_return_dict if return_dict is None else return_dict
    if stack.pooler is None:
        return BaseModelOutput(last_hidden_state=x) if return_dict else (x,)
    pooler = _at(model, stack.pooler)
    pooled = pooler(x) if pooler is not None else None
    if not return_dict:
        return tuple(t for t in (x, pooled) if t is not None)
    return BaseModelOutputWithPooling(last_hidden_state=x, pooler_output=pooled)


def _dropout(x: torch.Tensor, p: float, positions: torch.Tensor, total: int) -> torch.Tensor:
    """Dropout of rows ``x`` [n, width] that are positions ``positions`` of a [total, width] tensor, with the mask
    ``F.dropout`` draws for that whole tensor on the CPU (one ``bernoulli_`` of its size, scaled by 1 / (1 - p)),
    the rows kept: the random stream and every kept row's values are the padded computation's."""
    if p == 0:
        return x
    if p == 1:
        return x * 0
    noise = torch.empty((total, x.shape[1]), dtype=x.dtype, device=x.device).bernoulli_(1 - p).div_(1 - p)
    return x * noise.index_select(0, positions)


class _Pack(torch.autograd.Function):
    """``x.index_select(0, rows.index)`` ([batch * seq, w] -> [rows, w]); its backward writes the rows' gradients
    into zeros by ``index_copy_`` (the indices are distinct): no accumulating scatter."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, rows: _Rows) -> torch.Tensor:  # type: ignore[override]
        ctx.rows = rows
        return x.index_select(0, rows.index)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None]:  # type: ignore[override]
        rows = ctx.rows
        return grad.new_zeros(rows.batch * rows.seq, grad.shape[1]).index_copy_(0, rows.index, grad), None


class _Unpack(torch.autograd.Function):
    """``rows.unpack(x)`` ([rows, w] -> [batch * seq, w]: the padding positions left out read row 0); its backward
    reads each row's gradient at that row's own position alone. The positions left out add nothing there: they
    are padding, masked out as keys (probability exactly 0: no gradient to their keys and values) and their
    queries' outputs are never read (no gradient either)."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, rows: _Rows) -> torch.Tensor:  # type: ignore[override]
        ctx.rows = rows
        return x.index_select(0, rows.gather)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None]:  # type: ignore[override]
        return grad.index_select(0, ctx.rows.index), None


class _TrainLayer:
    """One described layer's modules and dropout rates for a training forward (the live parameters)."""

    def __init__(self, layer: nn.Module, modules: list[nn.Module], dropouts: EncoderDropouts) -> None:
        self.q, self.k, self.v, self.out, self.norm1, self.mlp_in, self.mlp_out, self.norm2 = modules
        owner, _, name = dropouts.attention.rpartition(".")
        holder = _at(layer, owner) if owner else layer
        self.attention_p = float(getattr(holder, name)) if holder.training else 0.0
        self.out_p = self._rate(layer, dropouts.attention_out)
        self.mlp_p = self._rate(layer, dropouts.mlp_out)

    @staticmethod
    def _rate(layer: nn.Module, path: str | None) -> float:
        if path is None:
            return 0.0
        m = _at(layer, path)
        return float(m.p) if m.training else 0.0

    def qkv(self, h: torch.Tensor) -> torch.Tensor:
        weight = torch.cat([self.q.weight, self.k.weight, self.v.weight])
        bias = None if self.q.bias is None else torch.cat([self.q.bias, self.k.bias, self.v.bias])
        return train_linear(h, weight, bias)


def _train_layers(model: nn.Module, stack: EncoderStack) -> tuple[list[_TrainLayer], EncoderBlocks] | None:
    """The described layers for a training forward, with the first one's blocks; None when one is not plain."""
    found = _layers(model, stack)
    if found is None or not found[0]:
        return None
    layers = []
    for layer, blocks, mods in found[0]:
        if blocks.dropouts is None:
            why_not(logger, f"{type(layer).__name__} declares no dropouts for training")
            return None
        for path in (blocks.dropouts.attention_out, blocks.dropouts.mlp_out):
            if path is not None and type(_at(layer, path)) is not nn.Dropout:
                why_not(logger, f"a dropout of {type(layer).__name__} is not a plain nn.Dropout")
                return None
        if any(m.bias is None for m in mods[:3]) and not all(m.bias is None for m in mods[:3]):
            why_not(logger, f"{type(layer).__name__}: q, k and v do not all have a bias or all lack one")
            return None
        layers.append(_TrainLayer(layer, mods, blocks.dropouts))
    return layers, found[0][0][1]


def train_pad_free(layers: list[_TrainLayer], x: torch.Tensor, attention_mask: torch.Tensor, rows: _Rows,
                   heads: int, activation: str) -> torch.Tensor:
    """The layers over embeddings ``x`` [batch, seq, hidden] in training, for a caller that reads the first
    position alone: the per-token work on ``rows`` (the real tokens), attention on the padded layout with the
    padding mask (the module path's call, its dropout included), the last layer for the first position
    alone. Dropouts draw the padded tensors' masks. The result is right at the first position, zero elsewhere."""
    b, s, hidden = x.shape
    dim = hidden // heads
    mask = padding_mask(attention_mask, x.dtype)
    scale = 1.0 / math.sqrt(dim)
    total = b * s
    act = _FUNCTIONS[activation]
    firsts = torch.arange(b, device=x.device) * s  # each sequence's first position, padded numbering
    h = _Pack.apply(x.reshape(total, hidden), rows)
    last = len(layers) - 1
    for i, layer in enumerate(layers):
        qkv = _Unpack.apply(layer.qkv(h), rows).view(b, s, 3, heads, dim)
        q, k, v = (t.transpose(1, 2) for t in qkv.unbind(2))  # [b, heads, s, dim]
        # the last layer: the first query alone, unless the attention's dropout draws a mask of every query's
        first_query = i == last and layer.attention_p == 0
        if first_query:
            q = q[:, :, :1]
        attn, _ = sdpa_attention(q, k, v, mask, scale, layer.attention_p, training=layer.attention_p > 0)
        attn = attn.reshape(-1, hidden)  # [b * queries, hidden]
        if i == last:
            if not first_query:
                attn = attn.index_select(0, firsts)
            residual, positions = h.index_select(0, rows.first), firsts
        else:
            attn, residual, positions = _Pack.apply(attn, rows), h, rows.index
        y = _dropout(train_linear(attn, layer.out.weight, layer.out.bias), layer.out_p, positions, total)
        h = F.layer_norm(y + residual, layer.norm1.normalized_shape, layer.norm1.weight, layer.norm1.bias,
                         layer.norm1.eps)
        y = train_linear(act(train_linear(h, layer.mlp_in.weight, layer.mlp_in.bias)), layer.mlp_out.weight,
                         layer.mlp_out.bias)
        y = _dropout(y, layer.mlp_p, positions, total)
        h = F.layer_norm(y + h, layer.norm2.normalized_shape, layer.norm2.weight, layer.norm2.bias, layer.norm2.eps)
    return F.pad(h[:, None], (0, 0, 0, s - 1))


def _checkpointing(model: nn.Module) -> bool:
    return any(getattr(m, "gradient_checkpointing", False) is True for m in model.modules())


def encoder_training_runner(model: nn.Module, args: tuple, kwargs: dict) -> Any:
    """``runtime/dispatch.py``'s training builder: under a head that reads the first position alone, a runner
    for its described encoder's training call on a padded batch (the per-token work on the real tokens), else
    None (the module path)."""
    cls = type(model)
    if _described(cls, "encoder_reads") == "first":
        return _head_runner(model, _PAD_FREE)
    stack = _described(cls, "encoder_stack")
    if not isinstance(stack, EncoderStack):
        return None
    if _PAD_FREE.get() is not model:
        why_not(logger, f"training {cls.__name__} for a caller that reads every position (only a head that "
                        "reads the first position alone trains on the real tokens)")
        return None
    config = model.config
    if config.attn_implementation not in (None, "sdpa"):
        why_not(logger, f"training with attn_implementation={config.attn_implementation!r}")
        return None
    if _checkpointing(model):
        why_not(logger, "training with gradient checkpointing")
        return None
    a = _arguments(model, args, kwargs)
    if a is None:
        why_not(logger, f"a training call of {cls.__name__} with an argument the encoder runner does not know")
        return None
    for flag in ("output_attentions", "output_hidden_states"):
        if (getattr(config, flag) if a.get(flag) is None else a[flag]):
            why_not(logger, f"a training call with {flag}")
            return None
    attention_mask = a.get("attention_mask")
    rows = _Rows.worth_it(attention_mask)
    if rows is None:  # nothing padded, a padded first position, or too little to leave out
        return None
    if (a.get("input_ids") is None) == (a.get("inputs_embeds") is None):
        return None  # the forward raises the error
    found = _train_layers(model, stack)
    if found is None:
        return None
    layers, blocks = found
    activation = getattr(config, blocks.activation, None)
    if activation not in _FUNCTIONS:
        why_not(logger, f"activation {activation!r} is unknown to the encoder runner")
        return None
    heads = getattr(config, blocks.heads)

    def run(*_: Any, **__: Any) -> Any:
        x = _at(model, stack.embeddings)(*(a.get(name) for name in stack.inputs))
        if x.dim() != 3 or tuple(x.shape[:2]) != tuple(attention_mask.shape):
            raise ValueError(f"attention_mask is {tuple(attention_mask.shape)} for embeddings of {tuple(x.shape)}; "
                             "pass one 1/0 entry per position, [batch, seq]")
        x = train_pad_free(layers, x, attention_mask, rows, heads, activation)
        return _outputs(model, stack, a, x)
    return run


register_runner(PreTrainedModel, encoder_runner)
register_training_runner(PreTrainedModel, encoder_training_runner)
