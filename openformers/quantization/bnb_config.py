"""``BitsAndBytesConfig``: 8-bit and 4-bit (NF4 / FP4) weight quantization while loading.

``from_pretrained(path, quantization_config=BitsAndBytesConfig(load_in_4bit=True, ...))``
builds the model on the meta device, replaces its ``nn.Linear`` layers (all but the output
embeddings and ``llm_int8_skip_modules``) with empty ``Linear4bit`` / ``Linear8bitLt`` layers,
and each float weight is quantized the moment the checkpoint (safetensors or GGUF) yields it,
so no full-precision copy of the model is ever held. A saved quantized model carries this
config in ``config.json`` and its packed tensors load back as they are; the files have the
layout transformers + bitsandbytes write (``bnb_format``), so checkpoints move both ways.

The codes, scales and dequantized values are the ones bitsandbytes computes (tested bit for bit
against it). The output embeddings (``lm_head``, tied or not) and ``llm_int8_skip_modules`` stay
float, as in transformers.

Re-quantizing weights that are already 4-bit: a GGUF file with Q4_0/Q4_1/Q4_K blocks, loaded with
``load_in_4bit``, is dequantized and quantized again to NF4/FP4 blocks, which stacks a second
4-bit rounding on the first (SmolLM2-135M Q4_1 -> NF4: perplexity +26% over the dequantized file,
see benchmarks/RESULTS.md). Loading logs a warning then; ``GGUFQuantizationConfig`` keeps the
file's blocks as they are (no added error, about the same memory), at the price of a layout
transformers + bitsandbytes cannot read. The request is not silently switched: a model asked
for as NF4 is NF4, and saves as a bitsandbytes checkpoint.
"""
from __future__ import annotations

import copy
import json
import logging
import os
from typing import Any

import torch
from torch import nn

from openformers.modules.dense import is_plain_linear
from openformers.quantization.bnb_linear import Linear4bit, _QuantizedLinearBase, release_freed_memory
from openformers.quantization.bnb_linear_8bit import Linear8bitLt
from openformers.quantization.functional import QUANT_TYPES

logger = logging.getLogger("openformers")

_DTYPE_NAMES = {
    "float32": torch.float32, "float": torch.float32, "fp32": torch.float32,
    "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
    "float16": torch.float16, "half": torch.float16, "fp16": torch.float16,
    "float64": torch.float64, "uint8": torch.uint8, "int8": torch.int8,
}
_STORAGE = (torch.uint8, torch.int8, torch.float16, torch.bfloat16, torch.float32)


def _as_dtype(value: Any, field: str) -> torch.dtype | None:
    if value is None or isinstance(value, torch.dtype):
        return value
    name = str(value).replace("torch.", "")
    if name not in _DTYPE_NAMES:
        raise ValueError(f"BitsAndBytesConfig: {field}={value!r} is not a dtype; use e.g. torch.float32 or 'bfloat16'")
    return _DTYPE_NAMES[name]


def check_compute_dtype(dtype: torch.dtype, device: torch.device | str = "cpu") -> None:
    """Raise a clear error when ``device`` cannot multiply matrices in ``dtype``."""
    if not dtype.is_floating_point or dtype.itemsize < 2:
        raise ValueError(
            f"bnb_4bit_compute_dtype={dtype} cannot be computed in: dequantized weights are multiplied in a "
            f"floating-point dtype; use torch.float32, torch.bfloat16 or torch.float16"
        )
    try:
        a = torch.ones(2, 2, dtype=dtype, device=device)
        torch.nn.functional.linear(a, a)
    except (RuntimeError, NotImplementedError, TypeError) as exc:
        raise ValueError(
            f"bnb_4bit_compute_dtype={dtype}: the {torch.device(device).type} device cannot multiply matrices in "
            f"this dtype ({exc}); use torch.float32 or torch.bfloat16"
        ) from exc


class BitsAndBytesConfig:
    """Weight quantization settings with the Hugging Face field names and defaults.

    Args:
        load_in_8bit: int8 weights with one absmax scale per output row.
        load_in_4bit: 4-bit weights in blocks of 64 with one absmax each.
        llm_int8_threshold: LLM.int8 outlier threshold (kept; see ``Linear8bitLt``).
        llm_int8_skip_modules: module names (or dotted suffixes) left in full precision, on top
            of the output embeddings (``lm_head``), which always stay.
        llm_int8_enable_fp32_cpu_offload: accepted for compatibility; everything is on the CPU here.
        llm_int8_has_fp16_weight: accepted for compatibility (training keeps float weights).
        bnb_4bit_compute_dtype: dtype the 4-bit weights are dequantized to for the matmul
            (default float32).
        bnb_4bit_quant_type: ``"fp4"`` (default) or ``"nf4"``.
        bnb_4bit_use_double_quant: quantize the block scales to 8 bits as well (blocks of 256).
        bnb_4bit_quant_storage: dtype the packed bytes are viewed as (default uint8).
    """

    quant_method = "bitsandbytes"

    def __init__(
        self,
        load_in_8bit: bool = False,
        load_in_4bit: bool = False,
        llm_int8_threshold: float = 6.0,
        llm_int8_skip_modules: list[str] | None = None,
        llm_int8_enable_fp32_cpu_offload: bool = False,
        llm_int8_has_fp16_weight: bool = False,
        bnb_4bit_compute_dtype: torch.dtype | str | None = None,
        bnb_4bit_quant_type: str = "fp4",
        bnb_4bit_use_double_quant: bool = False,
        bnb_4bit_quant_storage: torch.dtype | str | None = None,
        **kwargs: Any,
    ) -> None:
        if load_in_8bit and load_in_4bit:
            raise ValueError("BitsAndBytesConfig: load_in_8bit and load_in_4bit are both True; set only one of them")
        self._load_in_8bit = bool(load_in_8bit)
        self._load_in_4bit = bool(load_in_4bit)
        self.llm_int8_threshold = llm_int8_threshold
        self.llm_int8_skip_modules = llm_int8_skip_modules
        self.llm_int8_enable_fp32_cpu_offload = llm_int8_enable_fp32_cpu_offload
        self.llm_int8_has_fp16_weight = llm_int8_has_fp16_weight
        self.bnb_4bit_quant_type = bnb_4bit_quant_type
        self.bnb_4bit_use_double_quant = bnb_4bit_use_double_quant
        self.bnb_4bit_compute_dtype = _as_dtype(bnb_4bit_compute_dtype, "bnb_4bit_compute_dtype") or torch.float32
        self.bnb_4bit_quant_storage = _as_dtype(bnb_4bit_quant_storage, "bnb_4bit_quant_storage") or torch.uint8
        # the checkpoint already holds packed weights (set when the config comes from config.json)
        self._pre_quantized = False
        for key in ("quant_method", "_load_in_8bit", "_load_in_4bit"):
            kwargs.pop(key, None)
        if kwargs:
            logger.warning("BitsAndBytesConfig: unused arguments %s", sorted(kwargs))
        self.post_init()

    # -- the load_in_* pair can never be both true ---------------------------------------------
    @property
    def load_in_8bit(self) -> bool:
        return self._load_in_8bit

    @load_in_8bit.setter
    def load_in_8bit(self, value: bool) -> None:
        if value and self._load_in_4bit:
            raise ValueError("BitsAndBytesConfig: load_in_8bit and load_in_4bit are both True; set only one of them")
        self._load_in_8bit = bool(value)

    @property
    def load_in_4bit(self) -> bool:
        return self._load_in_4bit

    @load_in_4bit.setter
    def load_in_4bit(self, value: bool) -> None:
        if value and self._load_in_8bit:
            raise ValueError("BitsAndBytesConfig: load_in_8bit and load_in_4bit are both True; set only one of them")
        self._load_in_4bit = bool(value)

    def post_init(self) -> None:
        """Check every field; raises ``ValueError``/``TypeError`` naming the field."""
        if not isinstance(self.llm_int8_threshold, (int, float)):
            raise TypeError(f"BitsAndBytesConfig: llm_int8_threshold must be a number, got {self.llm_int8_threshold!r}")
        if self.llm_int8_skip_modules is not None and not isinstance(self.llm_int8_skip_modules, (list, tuple)):
            raise TypeError(f"BitsAndBytesConfig: llm_int8_skip_modules must be a list of module names, got {self.llm_int8_skip_modules!r}")
        if self.bnb_4bit_quant_type not in QUANT_TYPES:
            raise ValueError(
                f"BitsAndBytesConfig: bnb_4bit_quant_type={self.bnb_4bit_quant_type!r} is unknown; use 'nf4' or 'fp4'"
            )
        if not isinstance(self.bnb_4bit_use_double_quant, bool):
            raise TypeError(f"BitsAndBytesConfig: bnb_4bit_use_double_quant must be a bool, got {self.bnb_4bit_use_double_quant!r}")
        if self.bnb_4bit_quant_storage not in _STORAGE:
            raise ValueError(
                f"BitsAndBytesConfig: bnb_4bit_quant_storage={self.bnb_4bit_quant_storage} is not supported; "
                f"use one of {[str(d).replace('torch.', '') for d in _STORAGE]}"
            )
        if self.load_in_4bit:
            check_compute_dtype(self.bnb_4bit_compute_dtype)

    def is_quantizable(self) -> bool:
        return self.load_in_8bit or self.load_in_4bit

    def quantization_method(self) -> str | None:
        if self.load_in_8bit:
            return "llm_int8"
        if self.load_in_4bit:
            return self.bnb_4bit_quant_type
        return None

    # -- serialisation ---------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {
            "quant_method": self.quant_method,
            "_load_in_8bit": self.load_in_8bit,
            "_load_in_4bit": self.load_in_4bit,
            "llm_int8_threshold": self.llm_int8_threshold,
            "llm_int8_skip_modules": copy.deepcopy(self.llm_int8_skip_modules),
            "llm_int8_enable_fp32_cpu_offload": self.llm_int8_enable_fp32_cpu_offload,
            "llm_int8_has_fp16_weight": self.llm_int8_has_fp16_weight,
            "bnb_4bit_quant_type": self.bnb_4bit_quant_type,
            "bnb_4bit_use_double_quant": self.bnb_4bit_use_double_quant,
            "bnb_4bit_compute_dtype": str(self.bnb_4bit_compute_dtype).replace("torch.", ""),
            "bnb_4bit_quant_storage": str(self.bnb_4bit_quant_storage).replace("torch.", ""),
            "load_in_4bit": self.load_in_4bit,
            "load_in_8bit": self.load_in_8bit,
        }

    def to_diff_dict(self) -> dict[str, Any]:
        """Only the fields that differ from a default config."""
        default = BitsAndBytesConfig().to_dict()
        return {k: v for k, v in self.to_dict().items() if v != default[k]}

    @classmethod
    def from_dict(cls, config_dict: dict[str, Any], return_unused_kwargs: bool = False, **kwargs: Any) -> Any:
        data = dict(config_dict)
        method = data.get("quant_method", cls.quant_method)
        if str(method) != cls.quant_method:
            raise ValueError(f"BitsAndBytesConfig.from_dict: quant_method={method!r}, expected 'bitsandbytes'")
        data.setdefault("load_in_8bit", data.get("_load_in_8bit", False))
        data.setdefault("load_in_4bit", data.get("_load_in_4bit", False))
        unused = {k: kwargs.pop(k) for k in list(kwargs) if k not in _FIELDS}
        data.update(kwargs)
        config = cls(**{k: v for k, v in data.items() if k in _FIELDS})
        return (config, unused) if return_unused_kwargs else config

    def to_json_string(self, use_diff: bool = True) -> str:
        return json.dumps(self.to_diff_dict() if use_diff else self.to_dict(), indent=2, sort_keys=True) + "\n"

    def to_json_file(self, json_file_path: str | os.PathLike, use_diff: bool = True) -> None:
        with open(json_file_path, "w", encoding="utf-8") as f:
            f.write(self.to_json_string(use_diff=use_diff))

    def update(self, **kwargs: Any) -> dict[str, Any]:
        """Set the given fields that exist; return the others."""
        unused = {}
        for key, value in kwargs.items():
            if key in _FIELDS:
                setattr(self, key, _as_dtype(value, key) if key.endswith(("compute_dtype", "quant_storage")) else value)
            else:
                unused[key] = value
        self.post_init()
        return unused

    def __eq__(self, other: object) -> bool:
        return isinstance(other, BitsAndBytesConfig) and self.to_dict() == other.to_dict()

    def __repr__(self) -> str:
        return f"BitsAndBytesConfig {json.dumps(self.to_dict(), indent=2, sort_keys=True)}"

    # -- the hooks from_pretrained runs -------------------------------------------------------
    def plan_gguf(self, gf: Any, arch: str, config: dict[str, Any], plan: list[tuple[str, str, str | None]]) -> dict[str, Any]:
        """Before a GGUF file streams in: warn when 4-bit weights would be quantized to 4 bits again.

        Every tensor still arrives dequantized (the returned dict of special loaders is empty).
        """
        if not self.load_in_4bit:
            return {}
        from openformers.core.gguf import FOUR_BIT_TYPES

        kinds = sorted({gf.tensors[g].type_name for g, name, _ in plan if name.endswith("proj.weight")} & set(FOUR_BIT_TYPES))
        if kinds:
            logger.warning(
                "%s holds %s weights, already 4-bit: quantizing them to %s adds a second 4-bit rounding "
                "(SmolLM2-135M Q4_1 to NF4: perplexity +26%%). To keep the file's blocks without added error use "
                "openformers.quantization.GGUFQuantizationConfig instead of BitsAndBytesConfig(load_in_4bit=True).",
                getattr(gf, "path", "the GGUF file"), "/".join(kinds), self.bnb_4bit_quant_type.upper(),
            )
        return {}

    def modules_to_not_convert(self, model: nn.Module) -> list[str]:
        """Names of the ``nn.Linear`` modules that stay in full precision."""
        keep = list(self.llm_int8_skip_modules or [])
        head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
        for name, module in model.named_modules():
            if head is not None and module is head:
                keep.append(name)
        return keep

    def _skipped(self, name: str, keep: list[str]) -> bool:
        # a whole dotted part of the name: "lm_head", "down_proj", "layers.1.mlp", a full name
        dotted = f".{name}."
        return any(f".{k.strip('.')}." in dotted for k in keep)

    def _new_layer(self, linear: nn.Linear, dtype: torch.dtype | None, pre_quantized: bool) -> _QuantizedLinearBase:
        bias = linear.bias is not None
        if self.load_in_4bit:
            return Linear4bit(
                linear.in_features, linear.out_features, bias=bias, compute_dtype=self.bnb_4bit_compute_dtype,
                quant_type=self.bnb_4bit_quant_type, compress_statistics=self.bnb_4bit_use_double_quant,
                quant_storage=self.bnb_4bit_quant_storage, pre_quantized=pre_quantized, dtype=dtype,
            )
        return Linear8bitLt(
            linear.in_features, linear.out_features, bias=bias, threshold=self.llm_int8_threshold,
            has_fp16_weights=self.llm_int8_has_fp16_weight, pre_quantized=pre_quantized, dtype=dtype,
        )

    def prepare_model(self, model: nn.Module) -> None:
        """Before loading: put empty quantized layers where the float ``nn.Linear`` layers are."""
        if not self.is_quantizable():
            raise ValueError("BitsAndBytesConfig: neither load_in_8bit nor load_in_4bit is set; nothing to quantize")
        keep = self.modules_to_not_convert(model)
        for name, module in list(model.named_modules()):
            if not is_plain_linear(module) or self._skipped(name, keep):
                continue
            model.set_submodule(name, self._new_layer(module, module.weight.dtype, self._pre_quantized))
        _mark(model, self)

    def quantize_model(self, model: nn.Module) -> nn.Module:
        """Quantize the float ``nn.Linear`` layers of a model in memory (one layer at a time)."""
        if not self.is_quantizable():
            raise ValueError("BitsAndBytesConfig: neither load_in_8bit nor load_in_4bit is set; nothing to quantize")
        keep = self.modules_to_not_convert(model)
        names = []
        for name, module in model.named_modules():
            if isinstance(module, _QuantizedLinearBase):
                if module.weight.is_meta:
                    raise RuntimeError(f"quantized layer {name} received no weight while loading")
            elif is_plain_linear(module) and not self._skipped(name, keep) and not module.weight.is_meta:
                names.append(name)
        # by name, not by a list of the modules: each float layer is freed as soon as it is replaced
        for name in names:
            module = model.get_submodule(name)
            layer = self._new_layer(module, module.weight.dtype, pre_quantized=False)
            layer.quantize_weight(module.weight)
            if module.bias is not None:
                layer.bias = nn.Parameter(module.bias.detach(), requires_grad=False)
            model.set_submodule(name, layer)
            del module
            release_freed_memory()
        _mark(model, self)
        config = getattr(model, "config", None)
        if config is not None:
            config.quantization_config = self
        return model


_FIELDS = {
    "load_in_8bit", "load_in_4bit", "llm_int8_threshold", "llm_int8_skip_modules", "llm_int8_enable_fp32_cpu_offload",
    "llm_int8_has_fp16_weight", "bnb_4bit_compute_dtype", "bnb_4bit_quant_type", "bnb_4bit_use_double_quant",
    "bnb_4bit_quant_storage",
}


def _mark(model: nn.Module, config: BitsAndBytesConfig) -> None:
    model.is_loaded_in_8bit = config.load_in_8bit
    model.is_loaded_in_4bit = config.load_in_4bit
    model.is_quantized = True
    model.quantization_method = config.quant_method


__all__ = ["BitsAndBytesConfig", "check_compute_dtype"]
