"""Loading llama.cpp GGUF files: the config and the weights under Hugging Face names.

``read_gguf_config(path)`` turns the file's metadata into a config dict (``model_type`` plus
the family's fields). ``read_gguf_model(path, model_cls)`` returns that dict and an iterator
of ``(hf_name, tensor)`` that dequantizes one tensor at a time, so ``from_pretrained`` streams
them into a meta-built model without holding a second copy.

llama.cpp stores the query and key projections of llama-architecture models with the rows of
each head reordered for its rotary kernel (the two halves of a head interleaved); loading puts
them back in the Hugging Face order. A "llama" file with ``llama.attention.sliding_window`` is a
Mistral model and loads as one, with that window. GPT-2's attention and MLP weights are stored as ``[out,
in]`` like ``nn.Linear``; Hugging Face's GPT-2 (``Conv1D``) keeps them ``[in, out]``, so they
are transposed. Llama 3.1 style files carry their llama3 rope scaling as ``rope_freqs.weight``,
one divisor per inverse rotary frequency; it becomes ``rope_parameters["freq_factors"]``.
A "gemma" file stores every norm weight as ``1 + weight`` (Gemma's offset RMSNorm) and no LM head (tied);
loading subtracts the offset.
A "starcoder2" file holds LayerNorms with biases (``attn_norm``, ``ffn_norm``, ``output_norm``), the plain MLP as
``ffn_up`` (``c_fc``) and ``ffn_down`` (``c_proj``), biases on every projection (``use_bias``), its epsilon under
``starcoder2.attention.layer_norm_epsilon`` and q/k rows in the Hugging Face order.

With a :class:`~openformers.quantization.gguf_linear.GGUFQuantizationConfig`, the projection
weights are not dequantized: they become the buffers of ``QuantizedLinear`` modules
(``<module>.qweight`` and ``<module>.scales_and_zeros``) that the config's ``prepare_model``
puts in place of ``nn.Linear`` before loading.
"""
from __future__ import annotations

import math
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from openformers.core.gguf import GGUFError, GGUFFile
from openformers.models.llama import gemma as _gemma
from openformers.models.llama import qwen3 as _qwen3
from openformers.models.llama import starcoder2 as _starcoder2

# general.architecture -> model_type
SUPPORTED_ARCHITECTURES = {"llama": "llama", "mistral": "mistral", "qwen2": "qwen2", "gpt2": "gpt2"}
# Llama-like families whose name maps live beside their model: architecture -> (model_type, extra block names)
_FAMILY_MAPS = {_qwen3.GGUF_ARCHITECTURE: ("qwen3", _qwen3.GGUF_BLOCK_NAMES),
                _gemma.GGUF_ARCHITECTURE: ("gemma", _gemma.GGUF_BLOCK_NAMES),
                _starcoder2.GGUF_ARCHITECTURE: ("starcoder2", _starcoder2.GGUF_BLOCK_NAMES)}
# what such a family's files store otherwise: architecture -> (the offset added to every norm weight, config
# fields the metadata does not carry)
_FAMILY_VALUES = {_gemma.GGUF_ARCHITECTURE: (_gemma.GGUF_NORM_OFFSET, _gemma.GGUF_CONFIG),
                  _starcoder2.GGUF_ARCHITECTURE: (_starcoder2.GGUF_NORM_OFFSET, _starcoder2.GGUF_CONFIG)}
# the rest of a family's file layout, read from its model module (GGUF_KEYS: metadata keys of its own ->
# config field; GGUF_ABSENT: Llama block kinds it lacks; GGUF_NORM_BIASES: every norm has a bias;
# GGUF_BIAS_FIELD: the config field the projection biases' presence sets)
_FAMILY_MODULES = {m.GGUF_ARCHITECTURE: m for m in (_qwen3, _gemma, _starcoder2)}


def _family(arch: str, attr: str, default: Any) -> Any:
    return getattr(_FAMILY_MODULES.get(arch), attr, default)



# the llama.cpp block kinds of norm weights (a family's offset applies to them)
NORM_KINDS = frozenset({"attn_norm", "ffn_norm", "output_norm", "attn_q_norm", "attn_k_norm"})
SUPPORTED_ARCHITECTURES.update({arch: model_type for arch, (model_type, _) in _FAMILY_MAPS.items()})
# architectures whose q/k rows llama.cpp reorders on conversion
_PERMUTED_QK = {"llama", "mistral"}

# per-architecture metadata key (after "<arch>.") -> config field
_LLAMA_KEYS = {
    "context_length": "max_position_embeddings",
    "block_count": "num_hidden_layers",
    "feed_forward_length": "intermediate_size",
    "embedding_length": "hidden_size",
    "attention.head_count": "num_attention_heads",
    "attention.head_count_kv": "num_key_value_heads",
    "attention.layer_norm_rms_epsilon": "rms_norm_eps",
    "rope.freq_base": "rope_theta",
    "attention.sliding_window": "sliding_window",
}
_GPT2_KEYS = {
    "context_length": "n_positions",
    "block_count": "n_layer",
    "feed_forward_length": "n_inner",
    "embedding_length": "n_embd",
    "attention.head_count": "n_head",
    "attention.layer_norm_epsilon": "layer_norm_epsilon",
}
_TOKEN_IDS = {"bos_token_id": "bos_token_id", "eos_token_id": "eos_token_id", "padding_token_id": "pad_token_id"}

# llama.cpp tensor name (block part after "blk.N.") -> Hugging Face name (after the layer prefix)
_LLAMA_BLOCK = {
    "attn_norm": "input_layernorm",
    "ffn_norm": "post_attention_layernorm",
    "attn_q": "self_attn.q_proj",
    "attn_k": "self_attn.k_proj",
    "attn_v": "self_attn.v_proj",
    "attn_output": "self_attn.o_proj",
    "ffn_gate": "mlp.gate_proj",
    "ffn_up": "mlp.up_proj",
    "ffn_down": "mlp.down_proj",
}
_LLAMA_TOP = {"token_embd": "model.embed_tokens", "output_norm": "model.norm", "output": "lm_head"}
_GPT2_BLOCK = {
    "attn_norm": "ln_1",
    "ffn_norm": "ln_2",
    "attn_qkv": "attn.c_attn",
    "attn_output": "attn.c_proj",
    "ffn_up": "mlp.c_fc",
    "ffn_down": "mlp.c_proj",
}
_GPT2_TOP = {"token_embd": "transformer.wte", "position_embd": "transformer.wpe", "output_norm": "transformer.ln_f", "output": "lm_head"}
_GPT2_TRANSPOSED = {"attn_qkv", "attn_output", "ffn_up", "ffn_down"}
# per-pair rotary frequency divisors; read into the config (rope_parameters["freq_factors"]), not a weight
_ROPE_FREQS = "rope_freqs.weight"
_IGNORED = {_ROPE_FREQS}
_BLOCK_RE = re.compile(r"^blk\.(\d+)\.([a-z_]+)\.(weight|bias)$")
_TOP_RE = re.compile(r"^([a-z_]+)\.(weight|bias)$")


def _open(path: str | Path) -> GGUFFile:
    try:
        return GGUFFile(path)
    except GGUFError:
        raise
    except (OSError, ValueError) as exc:
        raise GGUFError(f"{path}: cannot read GGUF file: {exc}") from exc


def _architecture(gf: GGUFFile) -> str:
    arch = gf.architecture
    if arch is None:
        raise GGUFError(f"{gf.path}: no 'general.architecture' in the GGUF metadata")
    if arch not in SUPPORTED_ARCHITECTURES:
        raise GGUFError(
            f"{gf.path}: GGUF architecture {arch!r} is not supported; openformers loads GGUF files of "
            f"the architectures {sorted(SUPPORTED_ARCHITECTURES)}"
        )
    return arch


# config fields read from metadata that size the model: positive integers, bounded
_SIZE_FIELDS = {"max_position_embeddings", "num_hidden_layers", "intermediate_size", "hidden_size", "num_attention_heads",
                "num_key_value_heads", "n_positions", "n_layer", "n_inner", "n_embd", "n_head", "head_dim"}
_MAX_SIZE = 1 << 31
_FLOAT_FIELDS = {"rms_norm_eps", "layer_norm_epsilon", "rope_theta"}


def _check_field(gf: GGUFFile, key: str, field: str, value: Any) -> Any:
    """A metadata value that sizes the model, refused when it has the wrong type or an absurd value."""
    if field in _SIZE_FIELDS or field == "sliding_window":
        low = 0 if field == "sliding_window" else 1
        if type(value) is not int or not low <= value < _MAX_SIZE:
            raise GGUFError(f"{gf.path}: metadata {key} = {value!r} must be an integer from {low} to {_MAX_SIZE - 1}; the file is corrupt")
    elif field in _FLOAT_FIELDS:
        if type(value) not in (int, float) or not math.isfinite(value) or value <= 0:
            raise GGUFError(f"{gf.path}: metadata {key} = {value!r} must be a positive finite number; the file is corrupt")
    return value


def _layers_in_file(gf: GGUFFile) -> set[int]:
    return {int(m.group(1)) for m in map(_BLOCK_RE.match, gf.tensors) if m}


def _check_block_count(gf: GGUFFile, arch: str, n_layers: int | None) -> None:
    """The declared layer count against the layers whose tensors the file holds: a count the
    tensors do not back is refused before anything is sized from it."""
    present = _layers_in_file(gf)
    if n_layers is None:
        if present:
            raise GGUFError(f"{gf.path}: no '{arch}.block_count' in the metadata, but the file holds layer tensors")
        return
    if len(present) != n_layers or (present and (min(present) != 0 or max(present) != n_layers - 1)):
        held = f"layers {min(present)} to {max(present)} ({len(present)} in all)" if present else "no layer tensors"
        raise GGUFError(
            f"{gf.path}: metadata {arch}.block_count = {n_layers}, but the file holds {held}; "
            f"the file is inconsistent (truncated or hostile): re-download or re-convert it"
        )


def _config_from_file(gf: GGUFFile) -> dict[str, Any]:
    arch = _architecture(gf)
    meta = gf.metadata
    model_type = SUPPORTED_ARCHITECTURES[arch]
    if arch == "llama" and meta.get("llama.attention.sliding_window"):
        # llama.cpp writes Mistral models as "llama"; the window is what sets them apart here
        # (transformers guesses from general.name instead; names are not a contract)
        model_type = "mistral"
    keys = _GPT2_KEYS if arch == "gpt2" else {**_LLAMA_KEYS, **_family(arch, "GGUF_KEYS", {})}
    required = ["block_count", "embedding_length", "attention.head_count"] + ([] if arch == "gpt2" else ["feed_forward_length"])
    absent = [f"{arch}.{k}" for k in required if f"{arch}.{k}" not in meta]
    if absent:
        raise GGUFError(f"{gf.path}: the GGUF metadata lacks {absent}, which size the model; the file is incomplete")
    config: dict[str, Any] = {"model_type": model_type}
    for key, field in keys.items():
        if f"{arch}.{key}" in meta:
            config[field] = _check_field(gf, f"{arch}.{key}", field, meta[f"{arch}.{key}"])
    _check_block_count(gf, arch, config.get("n_layer" if arch == "gpt2" else "num_hidden_layers"))
    for key, field in _TOKEN_IDS.items():
        if f"tokenizer.ggml.{key}" in meta:
            value = meta[f"tokenizer.ggml.{key}"]
            if type(value) is not int or value < 0:
                raise GGUFError(f"{gf.path}: metadata tokenizer.ggml.{key} = {value!r} must be a non-negative integer")
            config[field] = value
    if "token_embd.weight" in gf.tensors:
        config["vocab_size"] = gf.tensors["token_embd.weight"].shape[0]
    elif f"{arch}.vocab_size" in meta:
        config["vocab_size"] = _check_field(gf, f"{arch}.vocab_size", "n_embd", meta[f"{arch}.vocab_size"])
    elif "tokenizer.ggml.tokens" in meta:
        config["vocab_size"] = len(meta["tokenizer.ggml.tokens"])
    config["tie_word_embeddings"] = "output.weight" not in gf.tensors
    if arch == "gpt2":
        config["n_ctx"] = config.get("n_positions", 1024)
        return config
    heads = config.get("num_attention_heads")
    if heads and "hidden_size" in config:
        default = config["hidden_size"] // heads
        key = f"{arch}.attention.key_length" if f"{arch}.attention.key_length" in meta else f"{arch}.rope.dimension_count"
        if key in meta:
            config["head_dim"] = _check_field(gf, key, "head_dim", meta[key])
        elif default:
            config["head_dim"] = default
        else:
            raise GGUFError(f"{gf.path}: {arch}.embedding_length {config['hidden_size']} is smaller than the {heads} attention heads")
    kv_heads = config.get("num_key_value_heads")
    if heads and kv_heads and heads % kv_heads:
        raise GGUFError(f"{gf.path}: {heads} attention heads cannot be shared by {kv_heads} key/value heads (not a divisor)")
    config["hidden_act"] = "silu"
    config.update(_FAMILY_VALUES.get(arch, (0.0, {}))[1])
    if arch in _PERMUTED_QK or arch in _FAMILY_MAPS:
        config[_family(arch, "GGUF_BIAS_FIELD", "attention_bias")] = "blk.0.attn_q.bias" in gf.tensors
    scaling: dict[str, Any] = {}
    scaling_type = meta.get(f"{arch}.rope.scaling.type")
    if scaling_type and scaling_type != "none":
        scaling = {"rope_type": scaling_type, "type": scaling_type}
        if f"{arch}.rope.scaling.factor" in meta:
            scaling["factor"] = float(meta[f"{arch}.rope.scaling.factor"])
        if f"{arch}.rope.scaling.original_context_length" in meta:
            scaling["original_max_position_embeddings"] = int(meta[f"{arch}.rope.scaling.original_context_length"])
    factors = _rope_freq_factors(gf, arch, config)
    if factors is not None:
        if scaling.get("rope_type") in (None, "llama3"):  # the factors are the llama3 scaling, already worked out
            scaling = {"rope_type": "default", "type": "default"}
        scaling["freq_factors"] = factors
    if scaling:
        config["rope_scaling"] = scaling
    return config


def _rope_freq_factors(gf: GGUFFile, arch: str, config: dict[str, Any]) -> list[float] | None:
    """``rope_freqs.weight`` (Llama 3.1 style files): llama.cpp divides each inverse rotary
    frequency by its factor, which is how those files carry the llama3 scaling."""
    if _ROPE_FREQS not in gf.tensors:
        return None
    try:
        t = gf.dequantize(_ROPE_FREQS).reshape(-1)
    except GGUFError:
        raise
    except Exception as exc:
        raise GGUFError(f"{gf.path}: cannot read tensor {_ROPE_FREQS!r}: {exc}") from exc
    rot_dim = int(gf.metadata.get(f"{arch}.rope.dimension_count", config.get("head_dim", 0)) or 0)
    if rot_dim and t.numel() != rot_dim // 2:
        raise GGUFError(
            f"{gf.path}: tensor {_ROPE_FREQS!r} has {t.numel()} values but the rotary dimension is {rot_dim} "
            f"(expected {rot_dim // 2}, one per rotated pair); the file is inconsistent"
        )
    if not bool(torch.isfinite(t).all()) or bool((t <= 0).any()):
        raise GGUFError(f"{gf.path}: tensor {_ROPE_FREQS!r} must hold positive finite factors, got {t.tolist()[:8]}")
    return [float(v) for v in t]


def read_gguf_config(path: str | Path) -> dict[str, Any]:
    """A Hugging Face style config dict (with ``model_type``) from a GGUF file's metadata."""
    if path is None:
        raise GGUFError("no GGUF file given: pass gguf_file= or a path ending in .gguf")
    gf = _open(path)
    try:
        return _config_from_file(gf)
    finally:
        gf.close()


def hf_name(arch: str, gguf_name: str) -> tuple[str, str | None] | None:
    """``(hf_name, llama.cpp block kind)`` of a GGUF tensor, or None for an unknown name."""
    block, top = (_GPT2_BLOCK, _GPT2_TOP) if arch == "gpt2" else (_LLAMA_BLOCK, _LLAMA_TOP)
    if arch in _FAMILY_MAPS:
        block = {**block, **_FAMILY_MAPS[arch][1]}
    layer_prefix = "transformer.h" if arch == "gpt2" else "model.layers"
    m = _BLOCK_RE.match(gguf_name)
    if m and m.group(2) in block:
        return f"{layer_prefix}.{m.group(1)}.{block[m.group(2)]}.{m.group(3)}", m.group(2)
    m = _TOP_RE.match(gguf_name)
    if m and m.group(1) in top:
        return f"{top[m.group(1)]}.{m.group(2)}", m.group(1)
    return None


def _expected_tensors(arch: str, config: dict[str, Any]) -> list[str]:
    n_layers = int(config.get("n_layer" if arch == "gpt2" else "num_hidden_layers", 0))
    if arch == "gpt2":
        top = ["token_embd.weight", "position_embd.weight", "output_norm.weight", "output_norm.bias"]
        per = [f"{k}.{p}" for k in _GPT2_BLOCK for p in ("weight", "bias")]
    else:
        top = ["token_embd.weight", "output_norm.weight"]
        per = [f"{k}.weight" for k in _LLAMA_BLOCK]
        if arch == "qwen2":
            per += ["attn_q.bias", "attn_k.bias", "attn_v.bias"]
        if arch in _FAMILY_MAPS:
            absent = {f"{k}.weight" for k in _family(arch, "GGUF_ABSENT", ())}
            per = [p for p in per if p not in absent]
            per += [f"{k}.weight" for k in _FAMILY_MAPS[arch][1] if f"{k}.weight" not in per]
        if _family(arch, "GGUF_NORM_BIASES", False):
            top.append("output_norm.bias")
            per += ["attn_norm.bias", "ffn_norm.bias"]
        if config.get(_family(arch, "GGUF_BIAS_FIELD", "")):  # the projections' biases, all of them
            per += [p.replace(".weight", ".bias") for p in per if not p.startswith(("attn_norm", "ffn_norm"))
                    and p.endswith(".weight")]
    return top + [f"blk.{i}.{p}" for i in range(n_layers) for p in per]


def _expected_shape(arch: str, config: dict[str, Any], kind: str | None, suffix: str) -> tuple[int, ...] | None:
    """The shape (torch order, as stored) the config implies for a tensor of a block ``kind``;
    None where a size it depends on is not in the metadata."""
    vocab = config.get("vocab_size")
    if arch == "gpt2":
        n = config.get("n_embd")
        inner = config.get("n_inner") or (4 * n if n else None)
        shapes: dict[str, tuple[Any, ...]] = {
            "token_embd": (vocab, n), "output": (vocab, n), "position_embd": (config.get("n_positions", 1024), n),
            "output_norm": (n,), "attn_norm": (n,), "ffn_norm": (n,),
            "attn_qkv": (3 * n if n else None, n), "attn_output": (n, n), "ffn_up": (inner, n), "ffn_down": (n, inner),
        }
    else:
        h, hd = config.get("hidden_size"), config.get("head_dim")
        heads = config.get("num_attention_heads")
        kv = config.get("num_key_value_heads", heads)
        q = heads * hd if heads and hd else None
        k = kv * hd if kv and hd else None
        ff = config.get("intermediate_size")
        shapes = {
            "token_embd": (vocab, h), "output": (vocab, h), "output_norm": (h,), "attn_norm": (h,), "ffn_norm": (h,),
            "attn_q": (q, h), "attn_k": (k, h), "attn_v": (k, h), "attn_output": (h, q),
            "ffn_gate": (ff, h), "ffn_up": (ff, h), "ffn_down": (h, ff),
        }
    shape = shapes.get(kind or "")
    if shape is None:
        return None
    if suffix == "bias":
        shape = shape[:1]
    return None if any(d is None for d in shape) else tuple(int(d) for d in shape)


def _check_shapes(gf: GGUFFile, arch: str, config: dict[str, Any], plan: list[tuple[str, str, str | None]]) -> None:
    """Every tensor against the shape the config implies, before any is read: the 4-bit path
    sizes its layers from these shapes, so one that disagrees must never reach a model."""
    bad = []
    for gguf_name, _, kind in plan:
        expected = _expected_shape(arch, config, kind, gguf_name.rsplit(".", 1)[-1])
        actual = gf.tensors[gguf_name].shape
        if expected is not None and tuple(actual) != expected:
            bad.append(f"{gguf_name} is {list(actual)}, the metadata implies {list(expected)}")
    if bad:
        shown = "; ".join(bad[:5]) + (f"; and {len(bad) - 5} more" if len(bad) > 5 else "")
        raise GGUFError(f"{gf.path}: tensor shapes disagree with the file's own metadata: {shown}. The file is corrupt or hostile")


def unpermute_qk(t: torch.Tensor, n_head: int) -> torch.Tensor:
    """Undo llama.cpp's per-head row reordering of a q or k weight ``[n_head * d, ...]`` (or bias).

    llama.cpp stores each head's rows as ``(d/2, 2)`` interleaved pairs; Hugging Face keeps the
    two rotary halves as ``(2, d/2)`` blocks.
    """
    rest = t.shape[1:]
    d = t.shape[0] // n_head
    # [n_head, d/2, 2, ...] -> [n_head, 2, d/2, ...]
    return t.reshape(n_head, d // 2, 2, *rest).transpose(1, 2).reshape(t.shape)


def read_gguf_model(
    path: str | Path, model_cls: type | None = None, quantization_config: Any = None
) -> tuple[dict[str, Any], Iterator[tuple[str, torch.Tensor]]]:
    """``(config dict, iterator of (hf_name, float32 tensor))`` for a GGUF file.

    Tensors are read and dequantized one at a time from the memory map. Raises
    :class:`GGUFError` naming the file for unsupported architectures, unknown tensor names and
    missing tensors, before any tensor is read.
    """
    gf = _open(path)
    try:
        return _read_model(gf, model_cls, quantization_config)
    except BaseException:
        gf.close()
        raise


def _read_model(gf: GGUFFile, model_cls: type | None, quantization_config: Any) -> tuple[dict[str, Any], Iterator[tuple[str, torch.Tensor]]]:
    arch = _architecture(gf)
    config = _config_from_file(gf)
    declared = getattr(getattr(model_cls, "config_class", None), "model_type", "") if model_cls is not None else ""
    if declared and declared != config["model_type"] and not (declared in _PERMUTED_QK and config["model_type"] in _PERMUTED_QK):
        raise GGUFError(
            f"{gf.path} holds a {config['model_type']!r} model (GGUF architecture {arch!r}); "
            f"{model_cls.__name__} loads {declared!r} models. Use AutoModelForCausalLM.from_pretrained."
        )
    missing = [n for n in _expected_tensors(arch, config) if n not in gf.tensors]
    if missing:
        shown = ", ".join(missing[:5]) + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
        raise GGUFError(f"{gf.path}: the GGUF file lacks tensors a {arch} model needs: {shown}")
    plan: list[tuple[str, str, str | None]] = []
    for name in gf.tensors:
        if name in _IGNORED:
            continue
        mapped = hf_name(arch, name)
        if mapped is None:
            raise GGUFError(f"{gf.path}: tensor {name!r} has no counterpart in a {arch} model; the file may be of another architecture variant")
        plan.append((name, *mapped))
    _check_shapes(gf, arch, config, plan)
    quantized: dict[str, Any] = {}
    if quantization_config is not None and hasattr(quantization_config, "plan_gguf"):
        quantized = quantization_config.plan_gguf(gf, arch, config, plan)
    return config, _iter_tensors(gf, arch, config, plan, quantized)


def _iter_tensors(
    gf: GGUFFile, arch: str, config: dict[str, Any], plan: list[tuple[str, str, str | None]], quantized: dict[str, Any]
) -> Iterator[tuple[str, torch.Tensor]]:
    try:
        n_head = int(config.get("num_attention_heads", 0) or 0)
        n_kv = int(config.get("num_key_value_heads", n_head) or n_head)
        offset = norm_offset(arch)
        for gguf_name, name, kind in plan:
            if name in quantized:
                yield from quantized[name](gf, gguf_name, name)
                continue
            try:
                t = gf.dequantize(gguf_name)
            except GGUFError:
                raise
            except Exception as exc:  # a corrupt block or a type the backend rejects
                raise GGUFError(f"{gf.path}: cannot dequantize tensor {gguf_name!r} ({gf.tensors[gguf_name].type_name}): {exc}") from exc
            if arch in _PERMUTED_QK and kind == "attn_q":
                t = unpermute_qk(t, n_head)
            elif arch in _PERMUTED_QK and kind == "attn_k":
                t = unpermute_qk(t, n_kv)
            elif arch == "gpt2" and kind in _GPT2_TRANSPOSED and name.endswith(".weight"):
                t = t.t().contiguous()
            elif offset and kind in NORM_KINDS:  # the file holds offset + weight
                t = t - offset
            yield name, t
    finally:
        gf.close()


__all__ = ["SUPPORTED_ARCHITECTURES", "GGUFError", "gguf_names", "hf_name", "norm_offset", "read_gguf_config",
           "read_gguf_model", "unpermute_qk"]


def norm_offset(arch: str) -> float:
    """What an architecture's files add to every norm weight (1 for "gemma", else 0)."""
    return _FAMILY_VALUES.get(arch, (0.0, {}))[0]


def gguf_names(arch: str) -> tuple[dict[str, str], dict[str, str]]:
    """The inverse of :func:`hf_name` for a Llama-like architecture: ``(block, top)`` maps from the Hugging Face
    name part (``self_attn.q_proj``, ``model.embed_tokens``) to llama.cpp's (``attn_q``, ``token_embd``)."""
    block = {**_LLAMA_BLOCK, **(_FAMILY_MAPS[arch][1] if arch in _FAMILY_MAPS else {})}
    return {v: k for k, v in block.items()}, {v: k for k, v in _LLAMA_TOP.items()}
