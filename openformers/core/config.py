"""Configuration base class: reads and writes ``config.json`` in the Hugging Face format."""
from __future__ import annotations

import copy
import json
import os
from pathlib import Path
from typing import Any, ClassVar

from openformers.core.durable import write_text
from openformers.core.hub import contained_path, find_file, resolve_model_dir

CONFIG_NAME = "config.json"


class PretrainedConfig:
    """Base of every model configuration.

    Subclasses set ``model_type`` and take their architecture fields as keyword arguments
    with defaults, then call ``super().__init__(**kwargs)``. Keys a subclass does not know
    are kept as attributes and written back on save, so a round trip loses nothing.
    """

    model_type: ClassVar[str] = ""
    # alternative names accepted for a field, e.g. GPT-2's n_embd -> hidden_size
    attribute_map: ClassVar[dict[str, str]] = {}
    # fields written to config.json even when equal to the base default
    _always_save: ClassVar[tuple[str, ...]] = ()

    def __init__(
        self,
        *,
        id2label: dict[int, str] | None = None,
        label2id: dict[str, int] | None = None,
        num_labels: int | None = None,
        problem_type: str | None = None,
        pad_token_id: int | None = None,
        bos_token_id: int | None = None,
        eos_token_id: int | list[int] | None = None,
        tie_word_embeddings: bool = True,
        dtype: str | None = None,
        architectures: list[str] | None = None,
        output_hidden_states: bool = False,
        output_attentions: bool = False,
        use_return_dict: bool = True,
        is_decoder: bool = False,
        **kwargs: Any,
    ) -> None:
        if id2label is not None:
            self.id2label = _label_ids(id2label)
            if num_labels is not None and num_labels != len(self.id2label):
                # an explicit num_labels that disagrees wins, with fresh names (as users expect
                # when re-heading a checkpoint)
                self.id2label = {i: f"LABEL_{i}" for i in range(num_labels)}
        else:
            self.id2label = {i: f"LABEL_{i}" for i in range(num_labels if num_labels is not None else 2)}
        if label2id is not None and len(label2id) == len(self.id2label):
            self.label2id = {k: int(v) for k, v in label2id.items()}
        else:
            self.label2id = {v: k for k, v in self.id2label.items()}
        if problem_type not in (None, "regression", "single_label_classification", "multi_label_classification"):
            raise ValueError(
                f"problem_type={problem_type!r} is not one of 'regression', "
                "'single_label_classification', 'multi_label_classification'"
            )
        self.problem_type = problem_type
        self.pad_token_id = pad_token_id
        self.bos_token_id = bos_token_id
        self.eos_token_id = eos_token_id
        self.tie_word_embeddings = tie_word_embeddings
        # transformers 4 wrote "torch_dtype", 5 writes "dtype"
        self.dtype = dtype if dtype is not None else kwargs.pop("torch_dtype", None)
        kwargs.pop("torch_dtype", None)
        self.architectures = architectures
        self.output_hidden_states = output_hidden_states
        self.output_attentions = output_attentions
        self.use_return_dict = use_return_dict
        self.is_decoder = is_decoder
        self.attn_implementation: str | None = kwargs.pop("attn_implementation", None) or kwargs.pop(
            "_attn_implementation", None
        )
        self.use_return_dict = bool(kwargs.pop("return_dict", self.use_return_dict))  # transformers' alias
        for key, value in kwargs.items():
            try:
                setattr(self, key, value)
            except AttributeError as exc:
                raise AttributeError(f"cannot set config field {key!r} = {value!r}: {exc}") from exc

    # -- attribute aliases -------------------------------------------------------------
    def __setattr__(self, key: str, value: Any) -> None:
        key = type(self).attribute_map.get(key, key)
        super().__setattr__(key, value)

    def __getattr__(self, key: str) -> Any:  # only called when normal lookup fails
        amap = type(self).attribute_map
        if key in amap:
            return getattr(self, amap[key])
        raise AttributeError(f"{type(self).__name__} has no attribute {key!r}")

    @property
    def num_labels(self) -> int:
        return len(self.id2label)

    @num_labels.setter
    def num_labels(self, n: int) -> None:
        if n != len(getattr(self, "id2label", {}) or {}):
            self.id2label = {i: f"LABEL_{i}" for i in range(n)}
            self.label2id = {v: k for k, v in self.id2label.items()}

    @property
    def return_dict(self) -> bool:
        return self.use_return_dict

    # -- serialisation -----------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key, value in self.__dict__.items():
            if key.startswith("_") or key in ("attn_implementation", "use_return_dict"):
                continue
            # objects with their own serialisation (quantization configs) are stored as dicts
            out[key] = value.to_dict() if callable(getattr(value, "to_dict", None)) else copy.deepcopy(value)
        out["id2label"] = {str(k): v for k, v in self.id2label.items()}
        out["model_type"] = self.model_type
        if self.dtype is not None:
            out["dtype"] = str(self.dtype).replace("torch.", "")
        return out

    def to_diff_dict(self) -> dict[str, Any]:
        return self.to_dict()

    def to_json_string(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n"

    def save_pretrained(self, save_directory: str | os.PathLike) -> None:
        path = Path(save_directory)
        if path.is_file():
            raise ValueError(f"save_directory {path} is a file; pass a directory")
        path.mkdir(parents=True, exist_ok=True)
        write_text(path / CONFIG_NAME, self.to_json_string())

    @classmethod
    def from_dict(cls, config_dict: dict[str, Any], **kwargs: Any) -> "PretrainedConfig":
        data = dict(config_dict)
        data.pop("model_type", None)
        data.pop("transformers_version", None)
        check_field_types(cls, data)
        data.update(kwargs)
        return cls(**data)

    @classmethod
    def from_json_file(cls, json_file: str | os.PathLike) -> "PretrainedConfig":
        return cls.from_dict(read_config_file(Path(json_file)))

    @classmethod
    def from_pretrained(cls, name_or_path: str | os.PathLike, **kwargs: Any) -> Any:
        """Load ``config.json`` from a directory, a json file, a cached repo id or an embedded name;
        keyword arguments override its fields. Download options are accepted and ignored, like
        ``AutoConfig.from_pretrained``; ``return_unused_kwargs=True`` returns ``(config, unused)``
        with the keywords that are not fields of the config."""
        from openformers.core.loading_options import NO_OP_MODEL_KWARGS

        kwargs = {k: v for k, v in kwargs.items() if k not in NO_OP_MODEL_KWARGS}
        return_unused = bool(kwargs.pop("return_unused_kwargs", False))
        config_dict, kwargs = load_config_dict(name_or_path, **kwargs)
        declared = config_dict.get("model_type")
        if cls.model_type and declared and declared != cls.model_type:
            # a subclass family (e.g. Mistral loaded through Llama) is fine; anything else is
            # the user pointing at the wrong checkpoint, which transformers only warns about
            import warnings

            warnings.warn(
                f"{name_or_path}: config.json has model_type={declared!r}, loading it as "
                f"{cls.__name__} (model_type={cls.model_type!r})",
                stacklevel=2,
            )
        return cls._from_dict_and_kwargs(config_dict, kwargs, return_unused)

    @classmethod
    def _from_dict_and_kwargs(cls, config_dict: dict[str, Any], kwargs: dict[str, Any], return_unused: bool) -> Any:
        """``from_dict`` with ``kwargs`` as overrides; with ``return_unused``, ``(config, unused)``: the keywords
        that are not fields of the config are left off it and returned (``num_labels`` is always set)."""
        if not return_unused:
            return cls.from_dict(config_dict, **kwargs)
        config = cls.from_dict(config_dict)
        unused = {}
        for key, value in kwargs.items():
            if key == "num_labels" or hasattr(config, key):
                setattr(config, key, value)
            else:
                unused[key] = value
        return config, unused

    def __repr__(self) -> str:
        return f"{type(self).__name__} {self.to_json_string()}"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, PretrainedConfig) and self.to_dict() == other.to_dict()


def _label_ids(id2label: Any) -> dict[int, str]:
    if not isinstance(id2label, dict):
        raise ValueError(f"config id2label must map label ids to names (a dict), got {type(id2label).__name__}")
    out = {}
    for key, value in id2label.items():
        try:
            out[int(key)] = value
        except (TypeError, ValueError):
            raise ValueError(f"config id2label keys must be integer label ids, got {key!r}") from None
    return out


# Fields that size a model, with the largest value a real checkpoint could need (far above any
# released model) and the smallest allowed; a value outside would build a model no file backs.
SIZE_LIMITS: dict[str, tuple[int, int]] = {
    "hidden_size": (1, 1 << 17), "n_embd": (1, 1 << 17), "dim": (1, 1 << 17), "d_model": (1, 1 << 17),
    "intermediate_size": (1, 1 << 20), "n_inner": (1, 1 << 20), "hidden_dim": (1, 1 << 20),
    "num_hidden_layers": (0, 1024), "n_layer": (0, 1024), "n_layers": (0, 1024),
    "num_attention_heads": (1, 4096), "n_head": (1, 4096), "n_heads": (1, 4096),
    "num_key_value_heads": (1, 4096), "head_dim": (1, 1 << 14),
    "vocab_size": (1, 1 << 24), "type_vocab_size": (0, 1 << 16),
    "max_position_embeddings": (1, 1 << 24), "n_positions": (1, 1 << 24), "n_ctx": (1, 1 << 24),
    "num_labels": (0, 1 << 20),
}
MAX_CONFIG_BYTES = 64 << 20
_NULLABLE_SIZES = {"num_key_value_heads", "head_dim", "n_inner", "num_labels"}
_RATES = ("dropout", "pdrop", "_eps", "epsilon")


def validate_config_dict(data: dict[str, Any], source: str) -> dict[str, Any]:
    """Refuse a config dict whose sizes have the wrong type, sign or an absurd value, naming the
    field and ``source`` (``ValueError``), before any model is sized from it."""
    if "model_type" in data and not isinstance(data["model_type"], str):
        raise ValueError(f"{source}: config field model_type = {data['model_type']!r} must be a string")
    for key, (low, high) in SIZE_LIMITS.items():
        value = data.get(key)
        if value is None:
            continue
        if type(value) is not int or not low <= value <= high:
            raise ValueError(
                f"{source}: config field {key} = {value!r} must be an integer from {low} to {high}; "
                f"the config file is corrupt or belongs to another model"
            )
    heads = next((data[k] for k in ("num_attention_heads", "n_head", "n_heads") if data.get(k) is not None), None)
    hidden = next((data[k] for k in ("hidden_size", "n_embd", "dim", "d_model") if data.get(k) is not None), None)
    kv = data.get("num_key_value_heads")
    if heads and kv and heads % kv:
        raise ValueError(f"{source}: num_attention_heads = {heads} is not a multiple of num_key_value_heads = {kv}")
    if heads and hidden and data.get("head_dim") is None and hidden % heads:
        raise ValueError(f"{source}: the hidden size {hidden} is not divisible by the {heads} attention heads")
    for key in ("id2label", "label2id"):
        if key in data and data[key] is not None and not isinstance(data[key], dict):
            raise ValueError(f"{source}: config field {key} must be a JSON object, got {type(data[key]).__name__}")
    if isinstance(data.get("id2label"), dict):
        try:
            _label_ids(data["id2label"])
        except ValueError as exc:
            raise ValueError(f"{source}: {exc}") from None
    return data


def _defaults(cls: type) -> dict[str, Any]:
    import inspect

    out: dict[str, Any] = {}
    for klass in reversed(cls.__mro__):
        init = klass.__dict__.get("__init__")
        if init is None:
            continue
        for name, param in inspect.signature(init).parameters.items():
            if param.default is not inspect.Parameter.empty:
                out[name] = param.default
    return out


def check_field_types(cls: type, data: dict[str, Any]) -> None:
    """A config file's values against the kind of each field's default (``ValueError`` naming
    the field): an int field takes an integer, a float field a finite number, a flag a boolean,
    a name a string; probabilities (``*dropout``, ``*pdrop``) lie in [0, 1]."""
    import math

    defaults = _defaults(cls)
    for key, value in data.items():
        if key not in defaults:
            continue
        default = defaults[key]
        if value is None:
            # null often means "off" or "derive it" (sliding_window, head_dim); not for a size or a rate
            needed = (key in SIZE_LIMITS and key not in _NULLABLE_SIZES) or key.endswith(_RATES)
            if needed and default is not None:
                raise ValueError(f"config field {key} = null must be a value like its default {default!r}")
            continue
        if isinstance(default, bool):
            ok, kind = type(value) is bool, "true or false"
        elif isinstance(default, int):
            ok, kind = type(value) is int, "an integer"
        elif isinstance(default, float):
            ok = type(value) in (int, float) and math.isfinite(value)
            kind = "a finite number"
            if ok and (key.endswith("dropout") or key.endswith("pdrop")) and not 0 <= value <= 1:
                ok, kind = False, "a probability from 0 to 1"
        elif isinstance(default, str):
            ok, kind = isinstance(value, str), "a string"
        else:
            continue
        if not ok:
            raise ValueError(f"config field {key} = {value!r} must be {kind} (default {default!r})")


_HUB_KWARGS = ("revision", "local_files_only", "cache_dir", "token", "force_download", "proxies", "subfolder")


def read_config_file(path: Path) -> dict[str, Any]:
    try:
        if path.stat().st_size > MAX_CONFIG_BYTES:
            raise ValueError(f"{path} is {path.stat().st_size} bytes, too large for a model config")
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise OSError(f"cannot read the model config {path}: {exc}") from exc
    except UnicodeDecodeError as exc:
        raise ValueError(f"{path} is not UTF-8 text ({exc}); the config file is corrupt") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path} is not valid JSON ({exc}); the config file is corrupt") from exc
    except RecursionError:
        raise ValueError(f"{path}: JSON nested too deeply; the config file is corrupt or hostile") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path} must hold a JSON object, found {type(data).__name__}")
    return validate_config_dict(data, str(path))


def load_config_dict(name_or_path: str | os.PathLike, **kwargs: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    """Read a config dict; return it with the kwargs that were not hub options."""
    if kwargs.pop("trust_remote_code", False):
        raise ValueError(
            "trust_remote_code=True is not supported: openformers never runs code shipped with a "
            "checkpoint. Use a model whose model_type is built in (see AutoConfig's error for the list)."
        )
    hub = {k: kwargs.pop(k) for k in _HUB_KWARGS if k in kwargs}
    subfolder = hub.pop("subfolder", None) or ""
    hub.pop("force_download", None)
    hub.pop("proxies", None)
    path = Path(os.fspath(name_or_path))
    if path.is_file() and path.suffix == ".json":
        return read_config_file(path), kwargs
    directory = contained_path(resolve_model_dir(name_or_path, **hub), subfolder, "subfolder")
    config_file = find_file(directory, CONFIG_NAME)
    if config_file is None:
        raise OSError(
            f"{directory} has no {CONFIG_NAME}; a model directory needs config.json beside its "
            f"weights (save one with config.save_pretrained(dir)), or pass gguf_file= for a GGUF model"
        )
    return read_config_file(config_file), kwargs


# transformers 5 spells it PreTrainedConfig; both names are the same class
PreTrainedConfig = PretrainedConfig
