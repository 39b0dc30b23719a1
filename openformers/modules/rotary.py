"""Rotary position embeddings (RoPE) with a registry of frequency-scaling schemes.

A config describes its rope either the transformers 5 way, as one ``rope_parameters`` dict
(``{"rope_type": "llama3", "rope_theta": 500000.0, "factor": 8.0, ...}``), or the older way,
``rope_theta`` plus an optional ``rope_scaling`` dict (``"type"`` or ``"rope_type"``).
:func:`standardize_rope_parameters` turns either into the first form.

Scaling schemes (``rope_type``): default, linear, dynamic (NTK, recomputed when a sequence
grows past ``max_position_embeddings``), llama3 and yarn. An optional ``freq_factors`` list (one
float per rotated pair, what llama.cpp files carry as ``rope_freqs.weight``) divides the scheme's
inverse frequencies afterwards.
"""
from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from openformers.modules import rotary_native
from openformers.modules.casts import apply_keeping_buffer_dtypes

DEFAULT_ROPE_THETA = 10_000.0
# rope types that need the pre-training context length
_NEEDS_ORIGINAL_MAX = ("llama3", "yarn", "longrope")


def standardize_rope_parameters(
    rope_parameters: dict[str, Any] | None = None,
    *,
    rope_scaling: dict[str, Any] | None = None,
    rope_theta: float | None = None,
    partial_rotary_factor: float | None = None,
    max_position_embeddings: int | None = None,
    original_max_position_embeddings: int | None = None,
    default_theta: float = DEFAULT_ROPE_THETA,
) -> dict[str, Any]:
    """One flat rope dict with ``rope_type`` and ``rope_theta`` always present.

    ``rope_scaling`` (the older name) wins over ``rope_parameters`` when both are given,
    as in transformers; ``rope_theta`` fills in a missing theta.
    """
    source = rope_scaling or rope_parameters or {}
    if not isinstance(source, dict):
        raise TypeError(f"rope_parameters / rope_scaling must be a dict, got {type(source).__name__}: {source!r}")
    params = dict(source)
    params.setdefault("rope_theta", rope_theta if rope_theta is not None else default_theta)
    params.setdefault("rope_type", params.get("type", "default"))
    if partial_rotary_factor is not None:
        params.setdefault("partial_rotary_factor", partial_rotary_factor)
    if params["rope_type"] in _NEEDS_ORIGINAL_MAX:
        if original_max_position_embeddings is not None:
            params["original_max_position_embeddings"] = original_max_position_embeddings
        elif max_position_embeddings is not None:
            params.setdefault("original_max_position_embeddings", max_position_embeddings)
    return params


def rope_parameters_of(config: Any) -> dict[str, Any]:
    """The standardised rope dict of any config (new or old field names)."""
    return standardize_rope_parameters(
        getattr(config, "rope_parameters", None),
        rope_scaling=None if hasattr(config, "rope_parameters") else getattr(config, "rope_scaling", None),
        rope_theta=getattr(config, "rope_theta", None),
        partial_rotary_factor=getattr(config, "partial_rotary_factor", None),
        max_position_embeddings=getattr(config, "max_position_embeddings", None),
        original_max_position_embeddings=getattr(config, "original_max_position_embeddings", None),
    )


def _require(params: dict[str, Any], key: str) -> Any:
    if params.get(key) is None:
        raise ValueError(f"rope_type={params['rope_type']!r} needs {key!r} in rope_parameters / rope_scaling; got {params}")
    return params[key]


def _base_inv_freq(base: float, dim: int) -> torch.Tensor:
    """1 / base^(2i/dim) for i in [0, dim/2), float32 on the CPU."""
    exponents = torch.arange(0, dim, 2, dtype=torch.int64, device="cpu").float() / dim
    return 1.0 / (base**exponents)


def _default(params: dict[str, Any], dim: int, max_pos: int, seq_len: int | None) -> tuple[torch.Tensor, float]:
    return _base_inv_freq(params["rope_theta"], dim), 1.0


def _linear(params: dict[str, Any], dim: int, max_pos: int, seq_len: int | None) -> tuple[torch.Tensor, float]:
    return _base_inv_freq(params["rope_theta"], dim) / _require(params, "factor"), 1.0


def _dynamic(params: dict[str, Any], dim: int, max_pos: int, seq_len: int | None) -> tuple[torch.Tensor, float]:
    factor = _require(params, "factor")
    seq_len = max(seq_len or max_pos, max_pos)
    base = params["rope_theta"] * ((factor * seq_len / max_pos) - (factor - 1)) ** (dim / (dim - 2))
    return _base_inv_freq(base, dim), 1.0


def _llama3(params: dict[str, Any], dim: int, max_pos: int, seq_len: int | None) -> tuple[torch.Tensor, float]:
    inv_freq = _base_inv_freq(params["rope_theta"], dim)
    factor = _require(params, "factor")
    low, high = _require(params, "low_freq_factor"), _require(params, "high_freq_factor")
    old_context = _require(params, "original_max_position_embeddings")
    low_wavelen, high_wavelen = old_context / low, old_context / high
    wavelen = 2 * math.pi / inv_freq
    # long wavelengths are interpolated by `factor`, short ones kept, the band between blended
    scaled = torch.where(wavelen > low_wavelen, inv_freq / factor, inv_freq)
    smooth = (old_context / wavelen - low) / (high - low)
    blended = (1 - smooth) * scaled / factor + smooth * scaled
    medium = (wavelen >= high_wavelen) & (wavelen <= low_wavelen)
    return torch.where(medium, blended, scaled), 1.0


def _yarn(params: dict[str, Any], dim: int, max_pos: int, seq_len: int | None) -> tuple[torch.Tensor, float]:
    base = params["rope_theta"]
    original = _require(params, "original_max_position_embeddings")
    factor = params.get("factor") or max_pos / original
    attention_factor = params.get("attention_factor")
    mscale, mscale_all_dim = params.get("mscale"), params.get("mscale_all_dim")

    def get_mscale(scale: float, m: float = 1.0) -> float:
        return 1.0 if scale <= 1 else 0.1 * m * math.log(scale) + 1.0

    if attention_factor is None:
        if mscale and mscale_all_dim:
            attention_factor = float(get_mscale(factor, mscale) / get_mscale(factor, mscale_all_dim))
        else:
            attention_factor = get_mscale(factor)
    beta_fast = params.get("beta_fast") or 32
    beta_slow = params.get("beta_slow") or 1

    def correction_dim(rotations: float) -> float:
        return (dim * math.log(original / (rotations * 2 * math.pi))) / (2 * math.log(base))

    low, high = correction_dim(beta_fast), correction_dim(beta_slow)
    if params.get("truncate", True):
        low, high = math.floor(low), math.ceil(high)
    low, high = max(low, 0), min(high, dim - 1)
    if low == high:
        high += 0.001  # avoid a zero-width ramp
    ramp = ((torch.arange(dim // 2, dtype=torch.float32, device="cpu") - low) / (high - low)).clamp(0, 1)
    pos_freqs = base ** (torch.arange(0, dim, 2, device="cpu").float() / dim)
    extrapolation, interpolation = 1.0 / pos_freqs, 1.0 / (factor * pos_freqs)
    keep = 1 - ramp  # 1: keep the original frequency, 0: interpolate
    return interpolation * (1 - keep) + extrapolation * keep, float(attention_factor)


def _freq_factors(params: dict[str, Any], dim: int) -> torch.Tensor | None:
    """``rope_parameters["freq_factors"]`` as a float32 [dim/2] tensor (None when absent)."""
    factors = params.get("freq_factors")
    if factors is None:
        return None
    t = torch.as_tensor(factors, dtype=torch.float32, device="cpu").reshape(-1)
    if t.numel() != dim // 2 or not bool(torch.isfinite(t).all()) or bool((t <= 0).any()):
        raise ValueError(
            f"rope_parameters['freq_factors'] must hold {dim // 2} positive numbers (one per rotated pair of the "
            f"{dim} rotary dimensions), got {t.numel()} values: {t.tolist()[:8]}"
        )
    return t


RopeInitFn = Callable[[dict[str, Any], int, int, "int | None"], tuple[torch.Tensor, float]]
ROPE_INIT_FUNCTIONS: dict[str, RopeInitFn] = {
    "default": _default,
    "linear": _linear,
    "dynamic": _dynamic,
    "llama3": _llama3,
    "yarn": _yarn,
}


class RotaryEmbedding(nn.Module):
    """cos/sin tables for rotary embeddings, built from a model config.

    Reads ``head_dim`` (or ``hidden_size // num_attention_heads``), ``max_position_embeddings``
    and the rope dict (see :func:`rope_parameters_of`). ``forward(x, position_ids)`` returns
    ``(cos, sin)``, each [batch, seq, rotary_dim], in ``x``'s dtype.
    """

    inv_freq: torch.Tensor

    def __init__(self, config: Any) -> None:
        super().__init__()
        self.rope_parameters = rope_parameters_of(config)
        self.rope_type = self.rope_parameters["rope_type"]
        if self.rope_type not in ROPE_INIT_FUNCTIONS:
            raise ValueError(
                f"rope_type={self.rope_type!r} (from rope_parameters / rope_scaling) is not supported; "
                f"choose one of {sorted(ROPE_INIT_FUNCTIONS)}"
            )
        head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
        self.dim = int(head_dim * self.rope_parameters.get("partial_rotary_factor", 1.0))
        self.original_max_seq_len = config.max_position_embeddings
        self.max_seq_len_cached = config.max_position_embeddings
        self._init_fn = ROPE_INIT_FUNCTIONS[self.rope_type]
        self.freq_factors = _freq_factors(self.rope_parameters, self.dim)
        inv_freq, self.attention_scaling = self._frequencies(None)
        # computed, never stored in checkpoints; explicit CPU so a meta-device build still has it
        self.register_buffer("inv_freq", inv_freq.to("cpu"), persistent=False)
        self.register_buffer("original_inv_freq", inv_freq.clone().to("cpu"), persistent=False)

    def _frequencies(self, seq_len: int | None) -> tuple[torch.Tensor, float]:
        inv_freq, attention_scaling = self._init_fn(self.rope_parameters, self.dim, self.original_max_seq_len, seq_len)
        if self.freq_factors is not None:
            inv_freq = inv_freq / self.freq_factors
        return inv_freq, attention_scaling

    def _apply(self, fn: Callable[[torch.Tensor], torch.Tensor], recurse: bool = True) -> RotaryEmbedding:
        # follow device moves but keep the frequencies in float32 through model.half() etc.
        apply_keeping_buffer_dtypes(self, super()._apply, fn, recurse)
        return self

    def _update_dynamic(self, position_ids: torch.Tensor) -> None:
        seq_len = int(position_ids.max()) + 1
        if seq_len > self.max_seq_len_cached:  # grow: recompute for the longer context
            inv_freq, self.attention_scaling = self._frequencies(seq_len)
            self.inv_freq = inv_freq.to(self.inv_freq.device)
            self.max_seq_len_cached = seq_len
        if seq_len < self.original_max_seq_len and self.max_seq_len_cached > self.original_max_seq_len:  # reset
            self.inv_freq = self.original_inv_freq.clone()
            self.max_seq_len_cached = self.original_max_seq_len

    @torch.no_grad()
    def forward(self, x: torch.Tensor, position_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if position_ids.dim() == 1:
            position_ids = position_ids[None]
        if self.rope_type == "dynamic":
            self._update_dynamic(position_ids)
        device_type = x.device.type if x.device.type in ("cuda", "cpu", "xpu") else "cpu"
        with torch.autocast(device_type=device_type, enabled=False):
            inv_freq = self.inv_freq.to(device=x.device, dtype=torch.float32)
            freqs = position_ids[..., None].float() * inv_freq  # [b, seq, dim/2]
            emb = torch.cat((freqs, freqs), dim=-1)  # [b, seq, dim]
            cos, sin = emb.cos(), emb.sin()
            if self.attention_scaling != 1.0:
                cos, sin = cos * self.attention_scaling, sin * self.attention_scaling
        return cos.to(x.dtype), sin.to(x.dtype)

    def extra_repr(self) -> str:
        return f"dim={self.dim}, rope_type={self.rope_type!r}, theta={self.rope_parameters['rope_theta']}"


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    """[x1, x2] -> [-x2, x1] on the last dimension."""
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


def apply_rotary(
    q: torch.Tensor, k: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, unsqueeze_dim: int = 1
) -> tuple[torch.Tensor, torch.Tensor]:
    """Rotate q [b, h, seq, d] and k [b, kv_h, seq, d] by cos/sin [b, seq, rot_d].

    With partial rotary (rot_d < d) only the first rot_d features are rotated and the rest
    pass through. ``unsqueeze_dim=2`` serves [b, seq, h, d] layouts.
    """
    cos, sin = cos.unsqueeze(unsqueeze_dim), sin.unsqueeze(unsqueeze_dim)
    return _rotate(q, cos, sin), _rotate(k, cos, sin)


def apply_rotary_heads(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate x [b, seq, heads, d] by cos/sin [b, seq, rot_d]: one pass for q and k heads side by side."""
    return _rotate(x, cos.unsqueeze(2), sin.unsqueeze(2))


def _rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    rot = cos.shape[-1]
    if rot == x.shape[-1]:
        native = rotary_native.rotate(x, cos, sin)  # training on the CPU: one pass (the same values)
        if native is not None:
            return native
        return x * cos + rotate_half(x) * sin
    x_rot, x_pass = x[..., :rot], x[..., rot:]
    return torch.cat((x_rot * cos + rotate_half(x_rot) * sin, x_pass), dim=-1)
