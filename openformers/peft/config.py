"""Adapter configurations, read and written as ``adapter_config.json`` in the peft layout.

Fields keep the names and defaults of the peft package, so a config saved here loads there and
the reverse. Fields another tool wrote that we do not use are kept and written back unchanged.
"""
from __future__ import annotations

import dataclasses
import enum
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from openformers.peft.config_checks import MAX_PATTERN_LENGTH, _check_field_types, check_pattern  # noqa: F401

CONFIG_NAME = "adapter_config.json"
WEIGHTS_NAME = "adapter_model.safetensors"
# prefix tuning with prefix_projection: the trainable table and MLP (the peft file keeps only their output)
PREFIX_ENCODER_NAME = "prefix_encoder.safetensors"
PEFT_FORMAT_VERSION = "0.21.2"  # the peft release whose file layout we write


class PeftType(str, enum.Enum):
    LORA = "LORA"
    PREFIX_TUNING = "PREFIX_TUNING"
    PROMPT_TUNING = "PROMPT_TUNING"
    P_TUNING = "P_TUNING"
    IA3 = "IA3"
    LOHA = "LOHA"
    LOKR = "LOKR"
    ADALORA = "ADALORA"


class TaskType(str, enum.Enum):
    SEQ_CLS = "SEQ_CLS"
    TOKEN_CLS = "TOKEN_CLS"
    QUESTION_ANS = "QUESTION_ANS"
    CAUSAL_LM = "CAUSAL_LM"
    FEATURE_EXTRACTION = "FEATURE_EXTRACTION"
    SEQ_2_SEQ_LM = "SEQ_2_SEQ_LM"


class PromptTuningInit(str, enum.Enum):
    TEXT = "TEXT"
    RANDOM = "RANDOM"
    SAMPLE_VOCAB = "SAMPLE_VOCAB"


# per-architecture defaults, keyed by config.model_type
LORA_TARGET_MODULES: dict[str, list[str]] = {
    "llama": ["q_proj", "v_proj"], "mistral": ["q_proj", "v_proj"], "qwen2": ["q_proj", "v_proj"],
    "gpt2": ["c_attn"], "bert": ["query", "value"], "roberta": ["query", "value"],
    "xlm-roberta": ["query", "value"], "distilbert": ["q_lin", "v_lin"],
}
IA3_TARGET_MODULES: dict[str, list[str]] = {
    "llama": ["k_proj", "v_proj", "down_proj"], "mistral": ["k_proj", "v_proj", "down_proj"],
    "qwen2": ["q_proj", "v_proj", "down_proj"], "gpt2": ["c_attn", "mlp.c_proj"],
    "bert": ["key", "value", "output.dense"], "roberta": ["key", "value", "output.dense"],
    "xlm-roberta": ["key", "value", "output.dense"], "distilbert": ["k_lin", "v_lin", "lin2"],
}
IA3_FEEDFORWARD_MODULES: dict[str, list[str]] = {
    "llama": ["down_proj"], "mistral": ["down_proj"], "qwen2": ["down_proj"], "gpt2": ["mlp.c_proj"],
    "bert": ["output.dense"], "roberta": ["output.dense"], "xlm-roberta": ["output.dense"], "distilbert": ["lin2"],
}
# heads that stay trainable (and are saved with the adapter) for classification tasks
TASK_MODULES_TO_SAVE: dict[str, list[str]] = {
    "SEQ_CLS": ["classifier", "score"], "TOKEN_CLS": ["classifier", "score"], "QUESTION_ANS": ["qa_outputs"],
}


def _plain(value: Any) -> Any:
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, set):
        return sorted(value)
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


@dataclass
class PeftConfig:
    """Fields every adapter type shares."""

    peft_type: PeftType | str | None = None
    task_type: TaskType | str | None = None
    inference_mode: bool = False
    base_model_name_or_path: str | None = None
    revision: str | None = None
    auto_mapping: dict[str, Any] | None = None
    modules_to_save: list[str] | None = None

    _peft_type: ClassVar[PeftType | None] = None
    is_prompt_learning: ClassVar[bool] = False

    def __post_init__(self) -> None:
        _check_field_types(self)
        for name in ("target_modules", "exclude_modules", "feedforward_modules"):
            value = getattr(self, name, None)
            if isinstance(value, str):
                check_pattern(value, f"{type(self).__name__}.{name}")
        layers_pattern = getattr(self, "layers_pattern", None)
        for pattern in [layers_pattern] if isinstance(layers_pattern, str) else layers_pattern or []:
            check_pattern(pattern, f"{type(self).__name__}.layers_pattern")
        for name in ("rank_pattern", "alpha_pattern"):
            if name == "rank_pattern" and self._peft_type == PeftType.ADALORA:
                continue  # parameter names, not patterns
            for pattern in getattr(self, name, None) or {}:
                check_pattern(pattern, f"{type(self).__name__}.{name} key")
        if self._peft_type is not None:
            self.peft_type = self._peft_type
        if isinstance(self.peft_type, str):
            self.peft_type = PeftType(self.peft_type)
        if isinstance(self.task_type, str):
            try:
                self.task_type = TaskType(self.task_type)
            except ValueError:
                raise ValueError(
                    f"task_type={self.task_type!r} is not supported; use one of {[t.value for t in TaskType]}"
                ) from None
        if isinstance(self.modules_to_save, str):
            self.modules_to_save = [self.modules_to_save]
        self._extra: dict[str, Any] = {}

    # -- serialisation -------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        out = dict(self._extra)
        for f in dataclasses.fields(self):
            out[f.name] = _plain(getattr(self, f.name))
        out["peft_version"] = PEFT_FORMAT_VERSION
        return dict(sorted(out.items()))

    def save_pretrained(self, save_directory: str | os.PathLike) -> None:
        path = Path(save_directory)
        path.mkdir(parents=True, exist_ok=True)
        (path / CONFIG_NAME).write_text(json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n", encoding="utf-8")

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "PeftConfig":
        """Build the config class named by ``peft_type`` (or ``cls``) from a dict."""
        target = cls
        peft_type = data.get("peft_type")
        if cls is PeftConfig or (peft_type and cls._peft_type and PeftType(peft_type) != cls._peft_type):
            if peft_type is None:
                raise ValueError("the adapter config has no 'peft_type'; it is not a peft adapter config")
            if peft_type not in CONFIG_CLASSES:
                raise ValueError(
                    f"peft_type={peft_type!r} is not supported by openformers; supported: {sorted(CONFIG_CLASSES)}"
                )
            target = CONFIG_CLASSES[peft_type]
        names = {f.name for f in dataclasses.fields(target)}
        known = {k: v for k, v in data.items() if k in names and k != "peft_type"}
        config = target(**known)
        config._extra = {k: v for k, v in data.items() if k not in names and k != "peft_version"}
        return config

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: str | os.PathLike, subfolder: str = "", **kwargs: Any) -> "PeftConfig":
        """Read ``adapter_config.json`` from a directory (or the file itself)."""
        from openformers.core.hub import contained_path

        path = Path(pretrained_model_name_or_path)
        if subfolder:
            path = contained_path(path, subfolder, "subfolder")
        file = path if path.is_file() else path / CONFIG_NAME
        if not file.is_file():
            raise FileNotFoundError(
                f"no {CONFIG_NAME} in {path}: pass the directory an adapter was saved to with save_pretrained"
            )
        data = read_adapter_config(file)
        data.update(kwargs)
        try:
            return cls.from_dict(data)
        except (TypeError, ValueError, KeyError) as exc:
            raise ValueError(f"{file}: not a usable adapter config: {exc}") from exc


def read_adapter_config(file: Path) -> dict[str, Any]:
    """``adapter_config.json`` as a dict; ``ValueError`` naming the file when it is not a JSON object."""
    try:
        data = json.loads(file.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise ValueError(f"{file} is not valid JSON ({exc}); the adapter config is corrupt: re-save or re-download it") from exc
    if not isinstance(data, dict):
        raise ValueError(f"{file} must hold a JSON object, found {type(data).__name__}")
    return data


@dataclass
class LoraConfig(PeftConfig):
    """Low-rank adapters: ``W x + (lora_alpha / r) * B A x`` on the ``target_modules``."""

    r: int = 8
    target_modules: list[str] | str | None = None
    exclude_modules: list[str] | str | None = None
    lora_alpha: int | float = 8
    lora_dropout: float = 0.0
    fan_in_fan_out: bool = False
    bias: str = "none"
    use_rslora: bool = False
    use_dora: bool = False
    init_lora_weights: bool | str = True
    layers_to_transform: list[int] | int | None = None
    layers_pattern: list[str] | str | None = None
    rank_pattern: dict[str, int] = field(default_factory=dict)
    alpha_pattern: dict[str, float] = field(default_factory=dict)
    lora_bias: bool = False

    _peft_type: ClassVar[PeftType] = PeftType.LORA

    def __post_init__(self) -> None:
        super().__post_init__()
        if not isinstance(self.r, int) or self.r <= 0:
            raise ValueError(f"LoraConfig: r must be a positive integer (the adapter rank), got r={self.r!r}")
        if self.bias not in ("none", "all", "lora_only"):
            raise ValueError(f"LoraConfig: bias must be 'none', 'all' or 'lora_only', got {self.bias!r}")
        if self.init_lora_weights not in (True, False, "gaussian"):
            raise ValueError(
                f"LoraConfig: init_lora_weights must be True, False or 'gaussian', got {self.init_lora_weights!r}"
            )
        if not 0.0 <= float(self.lora_dropout) < 1.0:
            raise ValueError(f"LoraConfig: lora_dropout must be in [0, 1), got {self.lora_dropout}")
        if isinstance(self.target_modules, (set, tuple)):
            self.target_modules = list(self.target_modules)
        if isinstance(self.layers_to_transform, int):
            self.layers_to_transform = [self.layers_to_transform]
        if self.layers_pattern and not self.layers_to_transform:
            raise ValueError("LoraConfig: layers_pattern only applies together with layers_to_transform")
        if isinstance(self.target_modules, str) and self.layers_to_transform:
            raise ValueError("LoraConfig: layers_to_transform cannot be combined with a regex target_modules string")


@dataclass
class IA3Config(PeftConfig):
    """(IA)^3: learned per-feature scales on ``target_modules`` (inputs of ``feedforward_modules``)."""

    target_modules: list[str] | str | None = None
    exclude_modules: list[str] | str | None = None
    feedforward_modules: list[str] | str | None = None
    fan_in_fan_out: bool = False
    init_ia3_weights: bool = True

    _peft_type: ClassVar[PeftType] = PeftType.IA3

    def __post_init__(self) -> None:
        super().__post_init__()
        if isinstance(self.target_modules, (set, tuple)):
            self.target_modules = list(self.target_modules)
        if isinstance(self.feedforward_modules, (set, tuple)):
            self.feedforward_modules = list(self.feedforward_modules)
        if isinstance(self.target_modules, list) and isinstance(self.feedforward_modules, list):
            extra = set(self.feedforward_modules) - set(self.target_modules)
            if extra:
                raise ValueError(f"IA3Config: feedforward_modules {sorted(extra)} must also be in target_modules")


@dataclass
class PromptLearningConfig(PeftConfig):
    """Virtual tokens learned in front of the input (sizes are filled from the model when None)."""

    num_virtual_tokens: int | None = None
    token_dim: int | None = None
    num_transformer_submodules: int | None = None
    num_attention_heads: int | None = None
    num_layers: int | None = None

    is_prompt_learning: ClassVar[bool] = True

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.num_virtual_tokens is None or int(self.num_virtual_tokens) <= 0:
            raise ValueError(
                f"{type(self).__name__}: num_virtual_tokens must be a positive integer, got {self.num_virtual_tokens!r}"
            )


@dataclass
class PromptTuningConfig(PromptLearningConfig):
    """Soft prompt: ``num_virtual_tokens`` trainable embeddings prepended to the input embeddings."""

    prompt_tuning_init: PromptTuningInit | str = PromptTuningInit.RANDOM
    prompt_tuning_init_text: str | None = None
    tokenizer_name_or_path: str | None = None
    tokenizer_kwargs: dict[str, Any] | None = None

    _peft_type: ClassVar[PeftType] = PeftType.PROMPT_TUNING

    def __post_init__(self) -> None:
        super().__post_init__()
        self.prompt_tuning_init = PromptTuningInit(self.prompt_tuning_init)
        if self.prompt_tuning_init == PromptTuningInit.TEXT and not self.prompt_tuning_init_text:
            raise ValueError("PromptTuningConfig: prompt_tuning_init='TEXT' needs prompt_tuning_init_text")
        if self.prompt_tuning_init == PromptTuningInit.TEXT and not self.tokenizer_name_or_path:
            raise ValueError(
                "PromptTuningConfig: prompt_tuning_init='TEXT' needs tokenizer_name_or_path (a tokenizer directory or "
                "embedded name) to turn prompt_tuning_init_text into token ids"
            )


@dataclass
class PrefixTuningConfig(PromptLearningConfig):
    """Prefix tuning: trainable key/value prefixes for every attention layer, passed as a cache.

    With ``prefix_projection`` the prefixes are produced by a two-layer MLP (hidden size
    ``encoder_hidden_size``, default ``token_dim``) from a smaller learned table while training;
    the saved adapter holds only the resulting prefixes."""

    encoder_hidden_size: int | None = None
    prefix_projection: bool = False
    init_weights: str | None = None

    _peft_type: ClassVar[PeftType] = PeftType.PREFIX_TUNING

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.init_weights not in (None, "zero"):
            raise ValueError(f"PrefixTuningConfig: init_weights must be None (random) or 'zero', got {self.init_weights!r}")


class PromptEncoderReparameterizationType(str, enum.Enum):
    MLP = "MLP"
    LSTM = "LSTM"


@dataclass
class PromptEncoderConfig(PromptLearningConfig):
    """P-tuning: virtual-token embeddings produced by a small encoder (an MLP, or a bidirectional LSTM
    followed by an MLP) from a learned table, prepended to the input embeddings.

    While training the table and encoder learn together; the saved adapter holds only the encoder's
    output (``prompt_embeddings``), so a saved adapter loads back as a plain table for inference."""

    encoder_reparameterization_type: PromptEncoderReparameterizationType | str = PromptEncoderReparameterizationType.MLP
    encoder_hidden_size: int | None = None
    encoder_num_layers: int = 2
    encoder_dropout: float = 0.0

    _peft_type: ClassVar[PeftType] = PeftType.P_TUNING

    def __post_init__(self) -> None:
        super().__post_init__()
        try:
            self.encoder_reparameterization_type = PromptEncoderReparameterizationType(self.encoder_reparameterization_type)
        except ValueError:
            raise ValueError(
                f"PromptEncoderConfig: encoder_reparameterization_type must be 'MLP' or 'LSTM', got "
                f"{self.encoder_reparameterization_type!r}"
            ) from None
        if self.encoder_num_layers < 1:
            raise ValueError(f"PromptEncoderConfig: encoder_num_layers must be >= 1, got {self.encoder_num_layers}")


@dataclass
class LycorisConfig(PeftConfig):
    """Fields LoHa and LoKr share (peft's names and defaults)."""

    r: int = 8
    alpha: int | float = 8
    rank_dropout: float = 0.0
    module_dropout: float = 0.0
    use_effective_conv2d: bool = False  # applies to convolutions, which these adapters do not wrap here
    target_modules: list[str] | str | None = None
    exclude_modules: list[str] | str | None = None
    init_weights: bool = True
    layers_to_transform: list[int] | int | None = None
    layers_pattern: list[str] | str | None = None
    rank_pattern: dict[str, int] = field(default_factory=dict)
    alpha_pattern: dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        super().__post_init__()
        where = type(self).__name__
        if not isinstance(self.r, int) or self.r <= 0:
            raise ValueError(f"{where}: r must be a positive integer (the adapter rank), got r={self.r!r}")
        for name in ("rank_dropout", "module_dropout"):
            if not 0.0 <= float(getattr(self, name)) <= 1.0:
                raise ValueError(f"{where}: {name} must be in [0, 1], got {getattr(self, name)}")
        if isinstance(self.target_modules, (set, tuple)):
            self.target_modules = list(self.target_modules)
        if isinstance(self.exclude_modules, (set, tuple)):
            self.exclude_modules = list(self.exclude_modules)
        if isinstance(self.layers_to_transform, int):
            self.layers_to_transform = [self.layers_to_transform]
        if self.layers_pattern and self.layers_to_transform is None:
            raise ValueError(f"{where}: layers_pattern only applies together with layers_to_transform")
        if isinstance(self.target_modules, str) and self.layers_to_transform:
            raise ValueError(f"{where}: layers_to_transform cannot be combined with a regex target_modules string")


@dataclass
class LoHaConfig(LycorisConfig):
    """LoHa: ``delta W = ((w1_a @ w1_b) * (w2_a @ w2_b)) * alpha / r`` on the ``target_modules``
    (a Hadamard product of two rank-``r`` products, so the update's rank can reach ``r**2``)."""

    _peft_type: ClassVar[PeftType] = PeftType.LOHA

    def __post_init__(self) -> None:
        super().__post_init__()
        if type(self.init_weights) is not bool:
            raise ValueError(f"LoHaConfig: init_weights must be true or false, got {self.init_weights!r}")


@dataclass
class LoKrConfig(LycorisConfig):
    """LoKr: ``delta W = kron(w1, w2) * alpha / r`` on the ``target_modules``; each factor is a
    full matrix or a rank-``r`` product (``decompose_both`` also splits ``w1``), sized by
    splitting the layer's dimensions near their square roots (or by ``decompose_factor``)."""

    decompose_both: bool = False
    decompose_factor: int = -1
    rank_dropout_scale: bool = False
    init_weights: bool | str = True

    _peft_type: ClassVar[PeftType] = PeftType.LOKR

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.init_weights not in (True, False, "lycoris"):
            raise ValueError(f"LoKrConfig: init_weights must be true, false or 'lycoris', got {self.init_weights!r}")
        if type(self.decompose_factor) is not int or (self.decompose_factor != -1 and self.decompose_factor < 1):
            raise ValueError(f"LoKrConfig: decompose_factor must be -1 (near the square root) or a positive integer, "
                             f"got {self.decompose_factor!r}")


@dataclass
class AdaLoraConfig(LoraConfig):
    """AdaLoRA: LoRA in SVD form (``B diag(E) A``) whose ranks are pruned while training, from
    ``init_r`` per layer down to a total budget of ``target_r`` per layer, by the importance of each
    singular value (``update_and_allocate`` after every optimizer step). ``r`` is not used.

    Ranks are kept at ``init_r`` for ``tinit`` steps, shrink on a cubic schedule every ``deltaT``
    steps, and stay fixed for the last ``tfinal`` of ``total_step`` steps. ``orth_reg_weight``
    weights the orthogonality penalty on ``A`` and ``B`` added to the loss. ``rank_pattern``
    records which ranks were kept (parameter name -> list of booleans)."""

    target_r: int = 8
    init_r: int = 12
    tinit: int = 0
    tfinal: int = 0
    deltaT: int = 1
    beta1: float = 0.85
    beta2: float = 0.85
    orth_reg_weight: float = 0.5
    total_step: int | None = None
    rank_pattern: dict[str, list[bool]] | None = None

    _peft_type: ClassVar[PeftType] = PeftType.ADALORA

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.use_dora:
            raise ValueError("AdaLoraConfig: AdaLoRA does not support DoRA (use_dora=True)")
        if not isinstance(self.total_step, int) or self.total_step <= 0:
            raise ValueError(f"AdaLoraConfig: total_step must be a positive integer (the number of training steps), "
                             f"got {self.total_step!r}")
        for name in ("target_r", "init_r", "deltaT"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) <= 0:
                raise ValueError(f"AdaLoraConfig: {name} must be a positive integer, got {getattr(self, name)!r}")
        if self.target_r > self.init_r:
            raise ValueError(f"AdaLoraConfig: target_r={self.target_r} must not exceed init_r={self.init_r}")
        if self.orth_reg_weight < 0:
            raise ValueError(f"AdaLoraConfig: orth_reg_weight must be >= 0, got {self.orth_reg_weight}")
        for name in ("beta1", "beta2"):
            if not 0 < getattr(self, name) < 1:
                raise ValueError(f"AdaLoraConfig: {name} must be in (0, 1), got {getattr(self, name)}")
        if self.tinit < 0 or self.tfinal < 0 or self.tinit >= self.total_step - self.tfinal:
            raise ValueError(
                f"AdaLoraConfig: tinit={self.tinit} and tfinal={self.tfinal} leave no budgeting phase in "
                f"total_step={self.total_step} steps; decrease tinit/tfinal or increase total_step"
            )


CONFIG_CLASSES: dict[str, type[PeftConfig]] = {
    "LORA": LoraConfig, "IA3": IA3Config, "PROMPT_TUNING": PromptTuningConfig, "PREFIX_TUNING": PrefixTuningConfig,
    "P_TUNING": PromptEncoderConfig, "LOHA": LoHaConfig, "LOKR": LoKrConfig,
    "ADALORA": AdaLoraConfig,
}
PEFT_TYPE_TO_CONFIG_MAPPING = CONFIG_CLASSES


def get_peft_config(config_dict: dict[str, Any]) -> PeftConfig:
    """The config class named by ``config_dict["peft_type"]``, built from the dict."""
    if not isinstance(config_dict, dict) or "peft_type" not in config_dict:
        raise ValueError("get_peft_config needs a dict with a 'peft_type' key (e.g. 'LORA', 'P_TUNING')")
    return PeftConfig.from_dict(config_dict)
