"""GGUF export of the Llama family (Llama, SmolLM2, Mistral, Qwen2, Qwen3, Gemma, Starcoder2) for llama.cpp and its
tools.

``save_gguf(model, path, tokenizer=None, dtype="f16")`` writes one file: the architecture's
hyperparameters, the tokenizer (vocabulary, merges, token types, special token ids, chat template)
and the weights under llama.cpp's names, with the gguf package's writer. It is the inverse of
:mod:`openformers.models.gguf_loading`: the same name maps, and the query/key rows of "llama"
files put in llama.cpp's rotary order, Gemma's norm weights written as ``1 + weight`` (float32), and
Starcoder2's LayerNorm epsilon under ``starcoder2.attention.layer_norm_epsilon`` with its norms' biases.

Types (``dtype``):

- ``"f32"``, ``"f16"``, ``"bf16"``: every matrix in that type; norms and biases stay float32 (as
  llama.cpp's converter writes them). ``f16`` rounds to nearest; ``bf16`` rounds to nearest even,
  so a bfloat16 model is written exactly.
- ``"q8_0"``: every matrix in Q8_0 (blocks of 32 values, one float16 scale each).
- ``"q4_0"``: the projections in Q4_0 (blocks of 32, 4 bits); the token embedding and the output
  head, which lose the most to 4 bits, in Q8_0 (llama.cpp's own Q4_0 keeps the head at 6 bits).

A matrix whose rows are not a multiple of 32 values falls back to float16 in the quantized types.
Quantization is the gguf package's (``gguf.quants``), which follows llama.cpp's reference code.
"""
from __future__ import annotations

import json
import logging
import math
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from openformers.core.durable import publish_file

logger = logging.getLogger(__name__)

GGUF_TYPES = ("f32", "f16", "bf16", "q8_0", "q4_0")
# model_type -> GGUF architecture (llama.cpp writes Mistral as "llama"; the window tells it apart)
ARCHITECTURES = {"llama": "llama", "mistral": "llama", "qwen2": "qwen2", "qwen3": "qwen3", "gemma": "gemma",
                 "starcoder2": "starcoder2"}
# architectures whose q/k rows llama.cpp stores with each head's rotary halves interleaved
_PERMUTED = {"llama"}
# architectures with LayerNorms (weight and bias): their epsilon goes under "attention.layer_norm_epsilon"
_LAYER_NORM = {"starcoder2"}

# llama.cpp token types
_NORMAL, _UNKNOWN, _CONTROL, _USER_DEFINED, _UNUSED, _BYTE = 1, 2, 3, 4, 5, 6


def _gguf() -> Any:
    try:
        import gguf
    except ImportError as exc:
        raise ImportError("GGUF export needs the 'gguf' package: pip install 'openformers[gguf]'") from exc
    return gguf


def file_name(dtype: str) -> str:
    """The file ``save_pretrained(dir, gguf=dtype)`` writes in ``dir``."""
    return f"model-{_check_dtype(dtype)}.gguf"


def _check_dtype(dtype: str) -> str:
    key = str(dtype).lower()
    if key not in GGUF_TYPES:
        raise ValueError(f"gguf type {dtype!r} is not supported; choose one of {list(GGUF_TYPES)}")
    return key


# -- tensors -----------------------------------------------------------------------------------------------
def permute_qk(t: torch.Tensor, n_head: int) -> torch.Tensor:
    """Hugging Face q/k rows -> llama.cpp's (the inverse of ``gguf_loading.unpermute_qk``): per head, the two
    rotary halves ``(2, d/2)`` become ``(d/2, 2)`` interleaved pairs."""
    rest = t.shape[1:]
    d = t.shape[0] // n_head
    return t.reshape(n_head, 2, d // 2, *rest).transpose(1, 2).reshape(t.shape)


def _tensor_type(gguf_name: str, t: torch.Tensor, dtype: str, gguf: Any) -> Any:
    Q = gguf.GGMLQuantizationType
    if t.dim() != 2:  # norms, biases, rotary factors
        return Q.F32
    if dtype in ("f32", "f16", "bf16"):
        return {"f32": Q.F32, "f16": Q.F16, "bf16": Q.BF16}[dtype]
    if t.shape[-1] % 32:
        return Q.F16
    if dtype == "q4_0" and gguf_name.split(".")[0] not in ("token_embd", "output"):
        return Q.Q4_0
    return Q.Q8_0


def _encode(t: torch.Tensor, qtype: Any, gguf: Any) -> np.ndarray:
    """The tensor's bytes in ``qtype`` (uint8, [rows, bytes per row])."""
    Q = gguf.GGMLQuantizationType
    t = t.detach().cpu()
    if qtype == Q.F32:
        arr = t.float().numpy()
    elif qtype == Q.F16:
        arr = t.to(torch.float16).numpy()
    elif qtype == Q.BF16:
        arr = t.to(torch.bfloat16).view(torch.int16).numpy()
    else:
        arr = gguf.quants.quantize(np.ascontiguousarray(t.float().numpy()), qtype)
    arr = np.ascontiguousarray(arr)
    return arr.view(np.uint8).reshape(arr.shape[0] if arr.ndim > 1 else 1, -1)


def _nbytes(shape: tuple[int, ...], qtype: Any, gguf: Any) -> int:
    block, size = gguf.GGML_QUANT_SIZES[qtype]
    return math.prod(shape) // block * size


def _weights(model: Any, arch: str) -> list[tuple[str, torch.Tensor]]:
    """``(gguf name, tensor)`` in llama.cpp's order, q/k rows permuted where the architecture wants it."""
    from openformers.models.gguf_loading import NORM_KINDS, gguf_names, norm_offset

    cfg = model.config
    block, top = gguf_names(arch)
    offset = norm_offset(arch)
    state = model.state_dict()
    quantized = sorted(n for n in state if n.endswith((".qweight", ".scales_and_zeros")))
    if quantized:
        raise ValueError(
            f"{type(model).__name__} holds quantized layers ({quantized[0]}, ...); GGUF export reads float weights. "
            f"Load the model without quantization_config (GGUF files load dequantized by default) and export that."
        )
    tied = bool(getattr(cfg, "tie_word_embeddings", False))
    out: dict[str, torch.Tensor] = {}
    unknown = []
    for name, t in state.items():
        if tied and name == "lm_head.weight":
            continue  # llama.cpp reads the embedding as the head when "output.weight" is absent
        stem, _, suffix = name.rpartition(".")
        parts = stem.split(".")
        if len(parts) > 3 and parts[:2] == ["model", "layers"] and ".".join(parts[3:]) in block:
            kind = block[".".join(parts[3:])]
            if arch in _PERMUTED and kind in ("attn_q", "attn_k"):
                heads = cfg.num_attention_heads if kind == "attn_q" else cfg.num_key_value_heads
                t = permute_qk(t, heads)
            elif offset and kind in NORM_KINDS:
                t = t.float() + offset
            out[f"blk.{parts[2]}.{kind}.{suffix}"] = t
        elif stem in top:
            out[f"{top[stem]}.{suffix}"] = t.float() + offset if offset and top[stem] in NORM_KINDS else t
        else:
            unknown.append(name)
    if unknown:
        raise ValueError(
            f"{type(model).__name__}: tensors {unknown[:4]} have no name in a GGUF {arch!r} file. Export a "
            f"*ForCausalLM model; merge adapters first (merge_and_unload())."
        )
    if "token_embd.weight" not in out or ("output.weight" not in out and not tied):
        raise ValueError(f"{type(model).__name__} has no language-model head; export a *ForCausalLM model")
    factors = _rope_freq_factors(model)
    if factors is not None:
        out["rope_freqs.weight"] = factors
    head = [n for n in ("token_embd.weight", "output_norm.weight", "output_norm.bias", "output.weight",
                        "rope_freqs.weight") if n in out]
    blocks = sorted((n for n in out if n.startswith("blk.")), key=lambda n: (int(n.split(".")[1]), n))
    return [(n, out[n]) for n in head + blocks]


def _rope_freq_factors(model: Any) -> torch.Tensor | None:
    """Per-frequency divisors for llama3 scaling (or factors read from a GGUF file): ``rope_freqs.weight``."""
    params = dict(getattr(model.config, "rope_parameters", None) or {})
    kind = params.get("rope_type", "default")
    if kind != "llama3" and "freq_factors" not in params:
        return None
    rotary = model.get_decoder().rotary_emb if hasattr(model, "get_decoder") else model.model.rotary_emb
    dim = rotary.inv_freq.shape[0] * 2
    base = 1.0 / (params["rope_theta"] ** (torch.arange(0, dim, 2, dtype=torch.int64).float() / dim))
    return (base / rotary.original_inv_freq.float()).float()


# -- metadata ------------------------------------------------------------------------------------------------
def _architecture(model: Any) -> str:
    model_type = getattr(model.config, "model_type", None)
    if model_type not in ARCHITECTURES:
        raise ValueError(
            f"GGUF export supports the Llama family {sorted(ARCHITECTURES)}; {type(model).__name__} is a "
            f"{model_type!r} model"
        )
    if getattr(model.config, "use_sliding_window", False):
        raise ValueError(
            f"{type(model).__name__} uses sliding-window layers (use_sliding_window=True); a GGUF {model_type!r} file "
            f"has no field for them, so llama.cpp would attend to every position. Set use_sliding_window=False first "
            f"if that is what you want."
        )
    arch = ARCHITECTURES[model_type]
    if arch == "qwen3" and getattr(model.config, "attention_bias", False):
        logger.warning("GGUF export: %s has attention biases; the file holds them and openformers reads them back, but "
                       "llama.cpp's 'qwen3' architecture has no bias tensors and will refuse to load it",
                       type(model).__name__)
    if model_type in ("mistral", "starcoder2") and getattr(model.config, "sliding_window", None):
        logger.warning("GGUF export: %s sets sliding_window=%s; llama.cpp's %r architecture has no field for it and "
                       "attends to every position, so its outputs differ from this model's past %s tokens",
                       type(model).__name__, model.config.sliding_window, arch, model.config.sliding_window)
    return arch


def _write_hparams(w: Any, model: Any, arch: str, dtype: str, name: str | None, gguf: Any) -> None:
    cfg = model.config
    w.add_type(gguf.GGUFType.MODEL)
    w.add_name(name or Path(_source(model)).stem or cfg.model_type)
    w.add_file_type({"f32": gguf.LlamaFileType.ALL_F32, "f16": gguf.LlamaFileType.MOSTLY_F16,
                     "bf16": gguf.LlamaFileType.MOSTLY_BF16, "q8_0": gguf.LlamaFileType.MOSTLY_Q8_0,
                     "q4_0": gguf.LlamaFileType.MOSTLY_Q4_0}[dtype])
    w.add_quantization_version(gguf.GGML_QUANT_VERSION)
    w.add_context_length(int(cfg.max_position_embeddings))
    w.add_embedding_length(int(cfg.hidden_size))
    w.add_block_count(int(cfg.num_hidden_layers))
    w.add_feed_forward_length(int(cfg.intermediate_size))
    w.add_head_count(int(cfg.num_attention_heads))
    w.add_head_count_kv(int(cfg.num_key_value_heads))
    if arch in _LAYER_NORM:
        w.add_layer_norm_eps(float(cfg.rms_norm_eps))
    else:
        w.add_layer_norm_rms_eps(float(cfg.rms_norm_eps))
    w.add_vocab_size(int(cfg.vocab_size))
    head_dim = int(getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads)
    w.add_key_length(head_dim)
    w.add_value_length(head_dim)
    params = dict(getattr(cfg, "rope_parameters", None) or {})
    w.add_rope_freq_base(float(params.get("rope_theta", 10000.0)))
    w.add_rope_dimension_count(int(head_dim * float(params.get("partial_rotary_factor", 1.0) or 1.0)))
    kind = params.get("rope_type", "default")
    if kind == "linear":
        w.add_rope_scaling_type(gguf.RopeScalingType.LINEAR)
        w.add_rope_scaling_factor(float(params["factor"]))
    elif kind == "yarn":
        w.add_rope_scaling_type(gguf.RopeScalingType.YARN)
        w.add_rope_scaling_factor(float(params["factor"]))
        original = params.get("original_max_position_embeddings")
        if original:
            w.add_rope_scaling_orig_ctx_len(int(original))
    elif kind not in ("default", "llama3"):
        raise ValueError(f"rope_type {kind!r} cannot be written to a GGUF file (default, linear, yarn and llama3 can)")
    if cfg.model_type in ("mistral", "starcoder2") and getattr(cfg, "sliding_window", None):
        w.add_sliding_window(int(cfg.sliding_window))


def _pre_tokenizer_name(pre: dict[str, Any] | None) -> str:
    """llama.cpp's ``tokenizer.ggml.pre`` for a byte-level BPE pre-tokenizer (tokenizer.json form)."""
    from openformers.tokenization.gguf import _SPLITS

    steps = (pre.get("pretokenizers") if pre and pre.get("type") == "Sequence" else [pre]) if pre else []
    kinds = [s.get("type") for s in steps]
    if kinds == ["ByteLevel"]:
        return "gpt-2"
    if kinds == ["Digits", "ByteLevel"] and steps[0].get("individual_digits"):
        return "smollm"  # one of the digit-splitting vocabularies llama.cpp knows (_DIGIT_SPLIT)
    for step in steps:
        pattern = (step.get("pattern") or {}).get("Regex") if step.get("type") == "Split" else None
        if pattern is None:
            continue
        for name in ("llama-bpe", "qwen2"):  # the names llama.cpp gives these splits
            if _SPLITS[name] == pattern:
                return name
    logger.warning("GGUF export: pre-tokenizer %s has no llama.cpp name; writing 'default'", kinds)
    return "default"


def _write_tokenizer(w: Any, tokenizer: Any, vocab_size: int, config: Any, gguf: Any) -> None:
    data = json.loads(tokenizer.backend_tokenizer.to_str())
    model = data.get("model") or {}
    if model.get("type") != "BPE":
        raise ValueError(
            f"GGUF export writes BPE vocabularies (byte-level or with byte fallback); this tokenizer's model is "
            f"{model.get('type')!r}. Pass tokenizer=None to write the file without a vocabulary."
        )
    vocab: dict[str, int] = dict(model["vocab"])
    added = {t["id"]: t for t in data.get("added_tokens") or []}
    for index, token in added.items():
        vocab.setdefault(token["content"], index)
    n = max(vocab.values()) + 1
    if n > vocab_size:
        raise ValueError(f"the tokenizer has {n} tokens but the model's embedding only {vocab_size} rows; pass the "
                         f"model's own tokenizer")
    tokens: list[str | None] = [None] * vocab_size
    for text, index in vocab.items():
        tokens[index] = text
    byte_fallback = bool(model.get("byte_fallback"))
    types = []
    for index, text in enumerate(tokens):
        if text is None:
            tokens[index] = f"[PAD{index}]"  # embedding rows past the vocabulary, as llama.cpp's converter pads
            types.append(_UNUSED)
        elif byte_fallback and len(text) == 6 and text.startswith("<0x") and text.endswith(">"):
            types.append(_BYTE)
        elif index in added:
            types.append(_CONTROL if added[index].get("special") else _USER_DEFINED)
        elif text == model.get("unk_token"):
            types.append(_UNKNOWN)
        else:
            types.append(_NORMAL)
    merges = [m if isinstance(m, str) else " ".join(m) for m in model.get("merges") or []]
    if byte_fallback:  # SentencePiece-style: llama.cpp merges by score, so a merge's rank becomes its result's score
        w.add_tokenizer_model("llama")
        w.add_tokenizer_pre("default")
        scores = [0.0] * vocab_size
        for rank, merge in enumerate(merges):
            index = vocab.get(merge.replace(" ", "", 1))
            if index is not None and scores[index] == 0.0:
                scores[index] = -float(rank + 1)
        w.add_token_list(tokens)
        w.add_token_scores(scores)
        w.add_token_types(types)
        w.add_add_space_prefix(_prepends_space(data))
    else:
        w.add_tokenizer_model("gpt2")
        w.add_tokenizer_pre(_pre_tokenizer_name(data.get("pre_tokenizer")))
        w.add_token_list(tokens)
        w.add_token_types(types)
        w.add_token_merges(merges)
    ids = {"bos": tokenizer.bos_token_id, "eos": tokenizer.eos_token_id, "unk": tokenizer.unk_token_id,
           "pad": tokenizer.pad_token_id}
    for key, fallback in (("bos", "bos_token_id"), ("eos", "eos_token_id"), ("pad", "pad_token_id")):
        if ids[key] is None:
            value = getattr(config, fallback, None)
            ids[key] = value[0] if isinstance(value, list) and value else value
    for key, add in (("bos", w.add_bos_token_id), ("eos", w.add_eos_token_id), ("unk", w.add_unk_token_id),
                     ("pad", w.add_pad_token_id)):
        if isinstance(ids[key], int) and 0 <= ids[key] < vocab_size:
            add(int(ids[key]))
    w.add_add_bos_token(bool(getattr(tokenizer, "add_bos_token", False)))
    w.add_add_eos_token(bool(getattr(tokenizer, "add_eos_token", False)))
    template = getattr(tokenizer, "chat_template", None)
    if isinstance(template, dict):
        w.add_chat_template([{"name": k, "template": v} for k, v in template.items()])
    elif template:
        w.add_chat_template(template)


def _prepends_space(data: dict[str, Any]) -> bool:
    """Whether a SentencePiece-style tokenizer.json puts "▁" before the text (normalizer or Metaspace)."""
    def walk(node: Any) -> bool:
        if isinstance(node, dict):
            if node.get("type") == "Prepend":
                return True
            if node.get("type") == "Metaspace":
                return node.get("prepend_scheme", "always") != "never" and node.get("add_prefix_space", True)
            return any(walk(v) for v in node.values())
        if isinstance(node, list):
            return any(walk(v) for v in node)
        return False

    return walk(data.get("normalizer")) or walk(data.get("pre_tokenizer"))


def _source(model: Any) -> str:
    """Where the model was loaded from ("" when built in memory)."""
    return str(getattr(model, "name_or_path", "") or getattr(model.config, "_name_or_path", "") or "")


def _find_tokenizer(model: Any) -> Any:
    """The tokenizer stored beside the model's weights, or None."""
    source = _source(model)
    if not source:
        return None
    from openformers.tokenization.auto import AutoTokenizer

    try:  # a directory, a GGUF file, an embedded name or a cached repo: never a download
        return AutoTokenizer.from_pretrained(source, local_files_only=True)
    except (OSError, ValueError) as exc:
        logger.warning("GGUF export: no tokenizer found at %s (%s)", source, exc)
        return None


# -- the writer ------------------------------------------------------------------------------------------------
def save_gguf(model: Any, path: str | os.PathLike, tokenizer: Any = None, dtype: str = "f16", *,
              name: str | None = None) -> Path:
    """Write ``model`` (a Llama-family ``*ForCausalLM``) to the GGUF file ``path`` and return its path.

    ``tokenizer``: written into the metadata (vocabulary, merges or scores, token types, special token ids,
    ``add_bos_token``, chat template); None looks for one where the model was loaded from and otherwise writes
    the file without a vocabulary (openformers and transformers still load the weights; llama.cpp needs it).
    ``dtype``: ``"f16"``, ``"bf16"``, ``"q8_0"``, ``"q4_0"`` or ``"f32"`` (see the module docstring).
    ``name``: ``general.name`` (default: the model's directory name).
    """
    gguf = _gguf()
    dtype = _check_dtype(dtype)
    arch = _architecture(model)
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"{path} is a directory; pass a file path (or use save_pretrained(dir, gguf=...))")
    tensors = _weights(model, arch)
    if tokenizer is None:
        tokenizer = _find_tokenizer(model)
        if tokenizer is None:
            logger.warning("GGUF export: no tokenizer given or found; %s has no vocabulary (llama.cpp needs one)", path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    w = gguf.GGUFWriter(str(tmp), arch)
    try:
        _write_hparams(w, model, arch, dtype, name, gguf)
        if tokenizer is not None:
            _write_tokenizer(w, tokenizer, int(model.config.vocab_size), model.config, gguf)
        plan = []
        for gguf_name, t in tensors:
            qtype = _tensor_type(gguf_name, t, dtype, gguf)
            shape = tuple(t.shape)
            w.add_tensor_info(gguf_name, shape, np.dtype(np.float32), _nbytes(shape, qtype, gguf), raw_dtype=qtype)
            plan.append((t, qtype))
        w.write_header_to_file()
        w.write_kv_data_to_file()
        w.write_ti_data_to_file()
        for t, qtype in plan:  # one tensor converted at a time
            w.write_tensor_data(_encode(t, qtype, gguf))
        w.close()
    except BaseException:
        w.close()
        tmp.unlink(missing_ok=True)
        raise
    publish_file(tmp, path)  # flushed before the rename: a crash leaves the earlier file or the whole new one
    return path


__all__ = ["ARCHITECTURES", "GGUF_TYPES", "file_name", "permute_qk", "save_gguf"]
