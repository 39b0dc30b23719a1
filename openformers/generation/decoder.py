"""The model driver used by the decode loops: prefill, then one token per row per step."""
from __future__ import annotations

import inspect
from typing import Any

import torch

from openformers.modules.cache import Cache

_FORWARD_PARAMS: dict[type, frozenset[str]] = {}
_PER_TOKEN_INPUTS = ("token_type_ids",)


def _forward_params(model: torch.nn.Module) -> frozenset[str]:
    cls = type(model)
    params = _FORWARD_PARAMS.get(cls)
    if params is None:
        sig = inspect.signature(model.forward)
        names = set(sig.parameters)
        if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in sig.parameters.values()):
            names.add("**")
        params = _FORWARD_PARAMS[cls] = frozenset(names)
    return params


# -- the model driver -----------------------------------------------------------------------------
class _Decoder:
    """Runs the model: prefill, then one token per row per step, keeping mask and positions current."""

    def __init__(self, model: torch.nn.Module, attention_mask: torch.Tensor, padded: bool, max_length: int,
                 cache: Cache | None, model_kwargs: dict[str, Any], output_attentions: bool,
                 output_hidden_states: bool) -> None:
        self.model = model
        self.params = _forward_params(model)
        self.cache = cache
        self.kwargs = dict(model_kwargs)
        # per-token inputs ([b, len], e.g. token_type_ids) continue with each row's last value
        self.per_token: dict[str, torch.Tensor] = {}
        for name in _PER_TOKEN_INPUTS:
            value = self.kwargs.pop(name, None)
            if value is not None:
                buf = value[:, -1:].expand(value.shape[0], max_length).clone()
                buf[:, : value.shape[1]] = value
                self.per_token[name] = buf
        self.output_attentions = output_attentions
        self.output_hidden_states = output_hidden_states
        if output_attentions:
            self.kwargs["output_attentions"] = True
        if output_hidden_states:
            self.kwargs["output_hidden_states"] = True
        b, length = attention_mask.shape
        self.mask_buf: torch.Tensor | None = None
        if padded:
            self.mask_buf = torch.ones(b, max_length, dtype=attention_mask.dtype, device=attention_mask.device)
            self.mask_buf[:, :length] = attention_mask
            positions = (attention_mask.long().cumsum(-1) - 1).clamp_(min=0)
        else:
            positions = torch.arange(length, device=attention_mask.device).expand(b, length)
        self.prefill_positions = positions
        self.next_position = positions[:, -1:] + 1  # [b, 1]
        self.ids: torch.Tensor | None = None  # without a cache: the full sequence so far
        self.last_output: Any = None

    def _call(self, input_ids: torch.Tensor, position_ids: torch.Tensor, total_len: int, past_len: int) -> torch.Tensor:
        kw: dict[str, Any] = dict(self.kwargs)
        for name, buf in self.per_token.items():
            kw[name] = buf[:, past_len:total_len]
        p = self.params
        if self.mask_buf is not None:
            kw["attention_mask"] = self.mask_buf[:, :total_len]
        if "position_ids" in p or "**" in p:
            kw["position_ids"] = position_ids
        if self.cache is not None:
            kw["past_key_values"] = self.cache
            kw["use_cache"] = True
        elif "use_cache" in p or "**" in p:
            kw["use_cache"] = False
        if "logits_to_keep" in p:
            kw["logits_to_keep"] = 1
        if "cache_position" in p and "position_ids" not in p:
            kw["cache_position"] = torch.arange(past_len, total_len, device=input_ids.device)
        out = self.model(input_ids=input_ids, **kw)
        self.last_output = out
        logits = out.logits if hasattr(out, "logits") else out[0]
        if self.cache is not None:
            returned = getattr(out, "past_key_values", None)
            if isinstance(returned, Cache):
                self.cache = returned
        return logits[:, -1, :].float()

    def prefill(self, input_ids: torch.Tensor) -> torch.Tensor:
        past = self.cache.get_seq_length() if self.cache is not None else 0
        if self.cache is None:
            self.ids = input_ids
        if past >= input_ids.shape[1]:
            raise ValueError(
                f"past_key_values already holds {past} positions but input_ids has only {input_ids.shape[1]}; "
                "pass input_ids covering the cached tokens plus at least one new token"
            )
        return self._call(input_ids[:, past:], self.prefill_positions[:, past:], input_ids.shape[1], past)

    def step(self, tokens: torch.Tensor, total_len: int) -> torch.Tensor:
        """Feed ``tokens`` [b] (the sequence now has ``total_len`` tokens)."""
        position = self.next_position
        self.next_position = position + 1
        if self.cache is None:
            self.ids = torch.cat([self.ids, tokens[:, None]], dim=-1)
            if self.mask_buf is not None:
                full_pos = (self.mask_buf[:, :total_len].long().cumsum(-1) - 1).clamp_(min=0)
            else:
                full_pos = torch.arange(total_len, device=tokens.device).expand(tokens.shape[0], total_len)
            return self._call(self.ids, full_pos, total_len, 0)
        return self._call(tokens[:, None], position, total_len, total_len - 1)

    def reorder(self, beam_idx: torch.Tensor) -> None:
        if self.cache is not None:
            self.cache.reorder_cache(beam_idx)
        else:
            self.ids = self.ids.index_select(0, beam_idx)
        if self.mask_buf is not None:
            self.mask_buf = self.mask_buf.index_select(0, beam_idx)
        for name, buf in self.per_token.items():
            self.per_token[name] = buf.index_select(0, beam_idx)
        self.next_position = self.next_position.index_select(0, beam_idx)
