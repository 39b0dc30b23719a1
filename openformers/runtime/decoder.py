"""The runner of described decoders: inference calls of a Llama-like stack and its causal-LM head.

A model opts in with plain data, never with code of this package:

- each decoder layer class declares its ``blocks`` (``modules/blocks.py``), read by ``decode.py``;
- the stack class (``LlamaModel``) declares ``decoder_role = "stack"``: its forward is its
  ``layer_inputs(...)`` (embeddings, cache, masks, rotary cos and sin), the layers over ``layers``, then
  ``norm``;
- the head class (``LlamaForCausalLM``) declares ``decoder_role = "causal_lm"``: its forward is the stack
  (``base_model_prefix``), the last ``logits_to_keep`` positions through ``lm_head``, and the shifted
  token loss when ``labels`` are given.

A class that changes ``forward`` without declaring its own role is not described. When a call asks for
something this runner does not give (attentions or hidden states per layer, an argument it does not
know), or the layers are not plain (a hook, an adapter the plan does not merge, training), it returns None and the model's own
``forward`` runs: the same outputs, module by module.
"""
from __future__ import annotations

import functools
import inspect
from typing import Any

import torch
from torch import nn

from openformers.core.modeling import PreTrainedModel
from openformers.core.outputs import BaseModelOutputWithPast, CausalLMOutputWithPast
from openformers.modules.heads import causal_lm_loss
from openformers.runtime.decode import DecodePlan, logger, plan_for  # its debug lines go on the plan's logger
from openformers.runtime.describe import declared, why_not
from openformers.runtime.dispatch import register_runner
from openformers.runtime.fused import project

_STACK_ARGS = frozenset({"input_ids", "attention_mask", "position_ids", "past_key_values", "inputs_embeds",
                         "use_cache", "output_attentions", "output_hidden_states", "return_dict", "cache_position"})
_HEAD_ARGS = _STACK_ARGS | {"labels", "logits_to_keep", "num_items_in_batch"}


@functools.lru_cache(maxsize=64)
def _signature(cls: type) -> inspect.Signature:
    return inspect.signature(cls.forward)


def _role(model: nn.Module) -> str | None:
    """The role the class that defines ``model``'s forward declares, or None."""
    cls = type(model)
    owner = declared(cls, "decoder_role")
    if owner is None:
        return None
    if cls.forward is not owner.forward:
        why_not(logger, f"{cls.__name__} changes its forward without declaring its own decoder_role")
        return None
    return owner.decoder_role


def _arguments(model: nn.Module, args: tuple, kwargs: dict, known: frozenset) -> dict[str, Any] | None:
    """The call's arguments by name (without defaults), or None when one is outside ``known`` (or
    ``cu_seq_lens_q``) or they do not bind (the forward raises the error)."""
    try:
        bound = _signature(type(model)).bind(model, *args, **kwargs)
    except TypeError:
        return None
    out = dict(bound.arguments)
    out.pop("self", None)
    extra = out.pop("kwargs", {})
    if any(k != "cu_seq_lens_q" for k in extra) or not set(out) <= known:
        return None
    out.update(extra)
    return out


def _plan(stack: nn.Module, a: dict[str, Any]) -> DecodePlan | None:
    cfg = stack.config
    for flag in ("output_attentions", "output_hidden_states"):
        if (getattr(cfg, flag) if a.get(flag) is None else a[flag]):
            return None
    ids = a.get("input_ids") if a.get("input_ids") is not None else a.get("inputs_embeds")
    if ids is None or ids.device.type != "cpu" or stack.training:
        return None
    return plan_for(stack)


def _run_stack(stack: nn.Module, plan: DecodePlan, a: dict[str, Any]) -> tuple[torch.Tensor, Any, bool]:
    """(last hidden state, cache, use_cache) of the stack's forward for arguments ``a``."""
    use_cache = a.get("use_cache")
    use_cache = getattr(stack.config, "use_cache", True) if use_cache is None else use_cache
    hidden, cache, masks, cos, sin = stack.layer_inputs(
        a.get("input_ids"), a.get("attention_mask"), a.get("position_ids"), a.get("past_key_values"),
        a.get("inputs_embeds"), use_cache, a.get("cache_position"), a.get("cu_seq_lens_q"))
    hidden = plan(hidden, cos, sin, masks, cache)
    return stack.norm(hidden), cache, use_cache


def _stack_runner(model: nn.Module, args: tuple, kwargs: dict) -> Any:
    a = _arguments(model, args, kwargs, _STACK_ARGS)
    plan = None if a is None else _plan(model, a)
    if plan is None:
        return None

    def run(*_: Any, **__: Any) -> Any:
        hidden, cache, use_cache = _run_stack(model, plan, a)
        out = BaseModelOutputWithPast(last_hidden_state=hidden, past_key_values=cache if use_cache else None)
        return_dict = a.get("return_dict")
        return out if (model.config.use_return_dict if return_dict is None else return_dict) else out.to_tuple()
    return run


def _causal_lm_runner(model: nn.Module, args: tuple, kwargs: dict) -> Any:
    a = _arguments(model, args, kwargs, _HEAD_ARGS)
    stack = getattr(model, model.base_model_prefix, None)
    if a is None or stack is None or _role(stack) != "stack":
        return None
    plan = _plan(stack, a)
    if plan is None or model.training:
        return None

    def run(*_: Any, **__: Any) -> Any:
        hidden, cache, use_cache = _run_stack(stack, plan, a)
        keep = a.get("logits_to_keep", 0)
        if isinstance(keep, int):
            if keep < 0:
                raise ValueError(f"logits_to_keep must be >= 0 (0 keeps every position), got {keep}")
            if keep:
                hidden = hidden[:, -keep:]
        else:
            hidden = hidden[:, keep.to(hidden.device)]
        logits = project(model.lm_head, hidden)
        labels = a.get("labels")
        loss = None if labels is None else causal_lm_loss(logits, labels,
                                                          num_items_in_batch=a.get("num_items_in_batch"))
        out = CausalLMOutputWithPast(loss=loss, logits=logits, past_key_values=cache if use_cache else None)
        return_dict = a.get("return_dict")
        return out if (model.config.use_return_dict if return_dict is None else return_dict) else out.to_tuple()
    return run


_RUNNERS = {"stack": _stack_runner, "causal_lm": _causal_lm_runner}


def decoder_runner(model: nn.Module, args: tuple, kwargs: dict) -> Any:
    """``runtime/dispatch.py``'s builder for every model: a runner where the model's class declares a
    ``decoder_role`` (see the module docstring), else None."""
    role = _role(model)
    if role is None:
        return None
    return _RUNNERS[role](model, args, kwargs)


register_runner(PreTrainedModel, decoder_runner)
