"""The model base class: construction without random initialisation, loading and saving.

Loading builds the module tree on the meta device (no memory, no random init), then streams
tensors from the checkpoint into it one at a time (``core/state_loading.py``), so peak memory
stays near one copy of the weights. Modules that compute buffers in ``__init__`` (rotary frequencies, position ids)
must create them with an explicit ``device="cpu"`` so they are real after a meta build.
"""
from __future__ import annotations

import importlib
import logging
import os
import sys
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import nn

from openformers.core.checkpoint import (
    check_config_against_checkpoint,
    checkpoint_dtype,
    find_weight_files,
    iter_checkpoint,
    save_state_dict,
)
from openformers.core import extensions
from openformers.core.config import PretrainedConfig, load_config_dict
from openformers.core.hub import contained_path, resolve_model_dir
from openformers.core.inputs import check_token_ids, model_vocab_size
from openformers.core.state_loading import apply_rules, load_tensors, no_init_weights

logger = logging.getLogger("openformers")

_DTYPES = {
    "float32": torch.float32, "fp32": torch.float32, "float": torch.float32,
    "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
    "float16": torch.float16, "fp16": torch.float16, "half": torch.float16,
    "float64": torch.float64,
}


def to_torch_dtype(dtype: str | torch.dtype | None) -> torch.dtype | None:
    if dtype is None or isinstance(dtype, torch.dtype):
        return dtype
    name = str(dtype).replace("torch.", "")
    if name not in _DTYPES:
        raise ValueError(f"dtype={dtype!r} is not supported; use 'auto', float32, bfloat16 or float16")
    return _DTYPES[name]


def _is_exporting() -> bool:
    is_exporting = getattr(torch.compiler, "is_exporting", None)
    return bool(is_exporting is not None and is_exporting())


class PreTrainedModel(nn.Module):
    """Base of every model: ``from_pretrained``, ``save_pretrained`` and shared utilities."""

    config_class: ClassVar[type[PretrainedConfig]] = PretrainedConfig
    base_model_prefix: ClassVar[str] = ""
    # target parameter -> source parameter, tied when config.tie_word_embeddings
    _tied_weights_keys: ClassVar[dict[str, str]] = {}
    # checkpoint-name regex -> model-name replacement, applied on load; reversed on save
    checkpoint_rules: ClassVar[tuple[tuple[str, str], ...]] = ()
    save_rules: ClassVar[tuple[tuple[str, str], ...]] = ()
    _keys_to_ignore_on_load_unexpected: ClassVar[tuple[str, ...]] = ()
    _keys_to_ignore_on_load_missing: ClassVar[tuple[str, ...]] = ()
    _no_split_modules: ClassVar[tuple[str, ...]] = ()
    supports_gradient_checkpointing: ClassVar[bool] = True
    main_input_name: ClassVar[str] = "input_ids"
    # True where forward reads input_ids of shape [..., batch, length] (GPT-2 flattens the leading dimensions)
    accepts_leading_dims: ClassVar[bool] = False

    def __init__(self, config: PretrainedConfig) -> None:
        super().__init__()
        if not isinstance(config, PretrainedConfig):
            raise TypeError(f"{type(self).__name__} needs a PretrainedConfig, got {type(config).__name__}")
        self.config = config

    # -- initialisation ----------------------------------------------------------------
    def post_init(self) -> None:
        """Initialise weights (skipped on the meta device), tie embeddings and, for causal LMs,
        derive a ``generation_config`` from the model config (``from_pretrained`` replaces it
        with the checkpoint's ``generation_config.json`` when there is one)."""
        if not any(p.is_meta for p in self.parameters()):
            self.apply(self._init_weights)
        self.tie_weights()
        self._load_generation_config(None)

    def _init_weights(self, module: nn.Module) -> None:
        std = getattr(self.config, "initializer_range", 0.02)
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, mean=0.0, std=std)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=std)
            if module.padding_idx is not None:
                with torch.no_grad():
                    module.weight[module.padding_idx].zero_()
        elif isinstance(module, nn.LayerNorm):
            if module.weight is not None:
                nn.init.ones_(module.weight)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif hasattr(module, "reset_parameters") and not list(module.children()):
            module.reset_parameters()

    def tie_weights(self) -> None:
        if not getattr(self.config, "tie_word_embeddings", False):
            return
        for target, source in self._tied_weights_keys.items():
            try:
                src = self.get_parameter(source)
                owner_name, _, attr = target.rpartition(".")
                owner = self.get_submodule(owner_name)
            except AttributeError:
                continue
            setattr(owner, attr, src)

    def _tied_targets(self) -> set[str]:
        if not getattr(self.config, "tie_word_embeddings", False):
            return set()
        return set(self._tied_weights_keys)

    # -- embeddings ----------------------------------------------------------------------
    @property
    def base_model(self) -> nn.Module:
        return getattr(self, self.base_model_prefix, self)

    def get_input_embeddings(self) -> nn.Embedding:
        base = self.base_model
        if base is not self:
            return base.get_input_embeddings()
        raise NotImplementedError(f"{type(self).__name__} must define get_input_embeddings")

    def set_input_embeddings(self, value: nn.Embedding) -> None:
        base = self.base_model
        if base is not self:
            base.set_input_embeddings(value)
            return
        raise NotImplementedError(f"{type(self).__name__} must define set_input_embeddings")

    def get_output_embeddings(self) -> nn.Module | None:
        return None

    def resize_token_embeddings(self, new_num_tokens: int | None = None, pad_to_multiple_of: int | None = None) -> nn.Embedding:
        """Grow or shrink the token embeddings (and a tied or untied LM head) to ``new_num_tokens``.

        New rows are initialised with the mean and covariance-free std of the old ones, so
        added tokens start near the existing distribution.
        """
        old = self.get_input_embeddings()
        if new_num_tokens is None:
            return old
        if pad_to_multiple_of:
            new_num_tokens = -(-new_num_tokens // pad_to_multiple_of) * pad_to_multiple_of
        new = _resized_embedding(old, new_num_tokens)
        self.set_input_embeddings(new)
        head = self.get_output_embeddings()
        if head is not None:
            if getattr(self.config, "tie_word_embeddings", False):
                head.weight = new.weight
            else:
                head.weight = nn.Parameter(_resized_rows(head.weight.data, new_num_tokens))
            if getattr(head, "bias", None) is not None:
                bias = torch.zeros(new_num_tokens, dtype=head.bias.dtype, device=head.bias.device)
                n = min(new_num_tokens, head.bias.shape[0])
                bias[:n] = head.bias.data[:n]
                head.bias = nn.Parameter(bias)
            if hasattr(head, "out_features"):
                head.out_features = new_num_tokens
        self.config.vocab_size = new_num_tokens
        return new

    # -- gradient checkpointing ------------------------------------------------------------
    def gradient_checkpointing_enable(self, gradient_checkpointing_kwargs: dict[str, Any] | None = None) -> None:
        if not self.supports_gradient_checkpointing:
            raise ValueError(f"{type(self).__name__} does not support gradient checkpointing")
        kwargs = {"use_reentrant": False, **(gradient_checkpointing_kwargs or {})}
        for module in self.modules():
            if hasattr(module, "gradient_checkpointing"):
                module.gradient_checkpointing = True
                module._checkpoint_kwargs = kwargs

    def gradient_checkpointing_disable(self) -> None:
        for module in self.modules():
            if hasattr(module, "gradient_checkpointing"):
                module.gradient_checkpointing = False

    @property
    def is_gradient_checkpointing(self) -> bool:
        return any(getattr(m, "gradient_checkpointing", False) for m in self.modules())

    def enable_input_require_grads(self) -> None:
        """Make embedding outputs require grad (needed for checkpointing with frozen embeddings)."""

        def hook(module: nn.Module, inputs: Any, output: torch.Tensor) -> None:
            output.requires_grad_(True)

        self._require_grads_hook = self.get_input_embeddings().register_forward_hook(hook)

    # -- properties -------------------------------------------------------------------------
    @property
    def device(self) -> torch.device:
        for p in self.parameters():
            return p.device
        return torch.device("cpu")

    @property
    def dtype(self) -> torch.dtype:
        for p in self.parameters():
            if p.is_floating_point():
                return p.dtype
        return torch.float32

    def num_parameters(self, only_trainable: bool = False, exclude_embeddings: bool = False) -> int:
        seen: set[int] = set()
        total = 0
        embed_ids = {id(m.weight) for m in self.modules() if isinstance(m, nn.Embedding)} if exclude_embeddings else set()
        for p in self.parameters():
            if id(p) in seen or id(p) in embed_ids or (only_trainable and not p.requires_grad):
                continue
            seen.add(id(p))
            total += p.numel()
        return total

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """Run the model. When no gradient is recorded, the runtime (``runtime/dispatch.py``) may run this
        call on its own plan for the model: the same outputs, from copies it keeps, with no parameter
        changed; in training mode with autograd recording it may run the call its own way too (the same
        loss and gradients, from the parameters themselves). Hooks on the model, a ``forward`` replaced on the instance,
        compiling and exporting always take ``forward``. ``input_ids`` is
        checked first (``core/inputs.py``): a 1-D or empty batch, or ids outside the vocabulary, are refused
        with an error that says what to do."""
        if self.main_input_name == "input_ids":
            check_token_ids(kwargs["input_ids"] if "input_ids" in kwargs else args[0] if args else None,
                            model_vocab_size(self), leading_dims=self.accepts_leading_dims)
        if not (self._forward_hooks or self._forward_pre_hooks or "forward" in self.__dict__
                or torch.compiler.is_compiling() or _is_exporting()):
            if not torch.is_grad_enabled():
                runner = extensions.get("inference_runner")(self, args, kwargs)
            elif self.training:
                runner = extensions.get("training_runner")(self, args, kwargs)
            else:
                runner = None
            if runner is not None:
                return runner(*args, **kwargs)
        return super().__call__(*args, **kwargs)

    def can_generate(self) -> bool:
        return self.get_output_embeddings() is not None and getattr(self, "_is_causal_lm", False)

    def generate(self, *args: Any, **kwargs: Any) -> Any:
        """Generate tokens; see ``openformers.generation``."""
        return extensions.get("generate")(self, *args, **kwargs)

    # -- saving -----------------------------------------------------------------------------
    def save_pretrained(
        self,
        save_directory: str | os.PathLike,
        *,
        is_main_process: bool = True,
        state_dict: dict[str, torch.Tensor] | None = None,
        max_shard_size: int | str = "5GB",
        safe_serialization: bool = True,
        **kwargs: Any,
    ) -> None:
        """Write ``config.json`` and the weights (safetensors, sharded above ``max_shard_size``).

        ``gguf="f16" | "bf16" | "q8_0" | "q4_0"`` writes one llama.cpp file, ``model-<type>.gguf``, instead
        (Llama family; ``tokenizer=`` puts a tokenizer in it, see ``openformers.export.gguf.save_gguf``).
        ``model_card=True`` (or a ``ModelCard``) also writes README.md; ``push_to_hub=True`` then
        commits the folder to ``repo_id`` (default: the folder's name) in the local hub."""
        model_card = kwargs.pop("model_card", False)
        push = kwargs.pop("push_to_hub", False)
        path = Path(save_directory)
        if path.is_file():
            raise ValueError(f"save_directory {path} is a file; pass a directory")
        if not is_main_process:
            return
        gguf_type = kwargs.pop("gguf", None)
        if gguf_type is not None:  # the exporter sits above core: found by name, not imported here
            exporter = importlib.import_module("openformers.export.gguf")
            exporter.save_gguf(self, path / exporter.file_name(gguf_type), kwargs.pop("tokenizer", None), gguf_type)
            return
        path.mkdir(parents=True, exist_ok=True)
        cls = type(self)
        fsdp = sys.modules.get("torch.distributed.fsdp")
        if fsdp is not None and issubclass(cls, fsdp.FSDPModule):  # sharding swaps in a subclass: name the model's own
            cls = next(c for c in cls.__mro__ if not issubclass(c, fsdp.FSDPModule))
        self.config.architectures = [cls.__name__]
        self.config.dtype = str(self.dtype).replace("torch.", "")
        self.config.save_pretrained(path)
        generation_config = getattr(self, "generation_config", None)
        if generation_config is not None and hasattr(generation_config, "save_pretrained"):
            generation_config.save_pretrained(path)
        sd = state_dict if state_dict is not None else self.state_dict()
        tied = self._tied_targets()
        out: dict[str, torch.Tensor] = {}
        seen_storage: dict[tuple[int, int, tuple[int, ...]], str] = {}
        for name, tensor in sd.items():
            if name in tied:
                continue
            key = (tensor.untyped_storage().data_ptr(), tensor.storage_offset(), tuple(tensor.shape))
            if tensor.device.type != "meta" and key in seen_storage:
                continue  # a shared tensor is saved once (safetensors refuses aliases)
            seen_storage[key] = name
            out[apply_rules(name, self.save_rules)] = tensor
        save_state_dict(out, path, max_shard_size=max_shard_size, safe_serialization=safe_serialization)
        if model_card:
            from openformers.hub.card import ModelCard

            (model_card if isinstance(model_card, ModelCard) else ModelCard.from_model(self)).save(path / "README.md")
        if push:
            from openformers.hub.local import push_folder

            push_folder(kwargs.pop("repo_id", None) or path.name, path, kwargs.pop("commit_message", None) or "Upload model",
                        revision=kwargs.pop("revision", None), hub_dir=kwargs.pop("hub_dir", None))

    def push_to_hub(self, repo_id: str, commit_message: str | None = None, revision: str | None = None,
                    hub_dir: str | os.PathLike | None = None, model_card: Any = True, **kwargs: Any) -> str:
        """Commit the model (config, weights, a README.md model card) to ``repo_id`` ("org/name") in
        the local hub (``OPENFORMERS_HUB`` or ``hub_dir``) on branch ``revision`` (default ``main``).
        Returns the commit id; ``from_pretrained(repo_id, revision=<commit, branch or tag>)`` loads it."""
        from openformers.hub.local import push_to_hub

        return push_to_hub(self, repo_id, commit_message, revision, hub_dir, model_card, **kwargs)

    # -- loading ----------------------------------------------------------------------------
    @classmethod
    def from_pretrained(
        cls,
        pretrained_model_name_or_path: str | os.PathLike,
        *,
        config: PretrainedConfig | None = None,
        dtype: str | torch.dtype | None = "auto",
        torch_dtype: str | torch.dtype | None = None,
        device_map: str | dict[str, Any] | torch.device | None = None,
        local_files_only: bool = False,
        revision: str | None = None,
        cache_dir: str | os.PathLike | None = None,
        token: str | bool | None = None,
        subfolder: str = "",
        ignore_mismatched_sizes: bool = False,
        output_loading_info: bool = False,
        attn_implementation: str | None = None,
        gguf_file: str | None = None,
        quantization_config: Any = None,
        trust_remote_code: bool = False,
        state_dict: dict[str, torch.Tensor] | None = None,
        **kwargs: Any,
    ) -> Any:
        """Load a model from a directory, a cached repo id, an embedded name or a GGUF file.

        Extra keyword arguments override config fields (``num_labels=3``, ``id2label=...``).
        """
        if trust_remote_code:
            raise ValueError(
                "trust_remote_code=True is not supported: openformers never runs code shipped with "
                "a checkpoint; use a built-in model_type"
            )
        from openformers.core.loading_options import pop_model_loading_options, shorthand_quantization

        options = pop_model_loading_options(kwargs, cls.__name__)
        quantization_config = shorthand_quantization(options, quantization_config, cls.__name__)
        if torch_dtype is not None:
            dtype = torch_dtype
        hub = dict(revision=revision, local_files_only=local_files_only, cache_dir=cache_dir, token=token)
        name = os.fspath(pretrained_model_name_or_path)
        gguf_path = _gguf_path(name, gguf_file, hub)
        if gguf_path is not None:
            config_dict, tensors = extensions.get("read_gguf_model")(gguf_path, cls, quantization_config=quantization_config)
            model_dir = gguf_path.parent
            if config is None:
                config = cls._config_from_dict(config_dict, kwargs)
            file_dtype = torch.float32
        else:
            model_dir = contained_path(resolve_model_dir(name, **hub), subfolder, "subfolder")
            files = find_weight_files(model_dir) if state_dict is None else []
            if config is None:
                config_dict, _ = load_config_dict(model_dir)  # user kwargs stay for the config overrides
                check_config_against_checkpoint(config_dict, files, str(model_dir))
                try:
                    config = cls._config_from_dict(config_dict, kwargs)
                except (TypeError, ValueError) as exc:
                    raise ValueError(f"{model_dir / 'config.json'}: {exc}") from exc
            else:
                config = _override_config(config, kwargs)
            tensors = iter(state_dict.items()) if state_dict is not None else iter_checkpoint(files)
            file_dtype = checkpoint_dtype(files) if files else None
        if kwargs:
            raise TypeError(
                f"{cls.__name__}.from_pretrained got unknown arguments {sorted(kwargs)}: they are "
                f"neither loading options nor fields of {type(config).__name__}"
            )
        if attn_implementation is not None:
            config.attn_implementation = attn_implementation
        if options.get("return_dict") is not None:
            config.use_return_dict = bool(options["return_dict"])
        target_dtype = _resolve_dtype(dtype, config, file_dtype)
        if quantization_config is not None or getattr(config, "quantization_config", None) is not None:
            # a checkpoint saved quantized brings its own config (and packed tensors)
            quantization_config = extensions.get("resolve_quantization_config")(quantization_config, config)
        if quantization_config is not None:
            config.quantization_config = quantization_config

        with no_init_weights():
            model = cls(config)
        if quantization_config is not None and hasattr(quantization_config, "prepare_model"):
            quantization_config.prepare_model(model)  # swaps in quantized modules the checkpoint fills
        info = load_tensors(model, tensors, target_dtype, ignore_mismatched_sizes, source=str(model_dir))
        config.dtype = str(target_dtype).replace("torch.", "")
        if quantization_config is not None:
            extensions.get("quantize_model")(model, quantization_config)
        model._load_generation_config(model_dir)
        if options.get("generation_config") is not None:
            model.generation_config = options["generation_config"]
        model.name_or_path = name  # recorded by adapters as base_model_name_or_path
        model.eval()
        if device_map is not None:
            from openformers.core.placement import place_model

            place_model(model, device_map)
        return (model, info) if output_loading_info else model

    @classmethod
    def _config_from_dict(cls, config_dict: dict[str, Any], overrides: dict[str, Any]) -> PretrainedConfig:
        config_cls = cls.config_class
        declared = config_dict.get("model_type")
        if config_cls is PretrainedConfig or (declared and declared != config_cls.model_type):
            config_class_for = extensions.get("config_class_for")
            if declared and config_cls is not PretrainedConfig and declared != config_cls.model_type:
                logger.warning(
                    "config.json declares model_type=%r; loading it with %s (model_type=%r)",
                    declared, cls.__name__, config_cls.model_type,
                )
            else:
                config_cls = config_class_for(declared)
        known = {k: overrides.pop(k) for k in list(overrides) if _is_config_field(config_cls, config_dict, k)}
        return config_cls.from_dict(config_dict, **known)

    def _load_generation_config(self, model_dir: Path | None) -> None:
        if not getattr(self, "_is_causal_lm", False):
            return
        try:
            generation_config = extensions.get("generation_config")
        except (LookupError, ImportError):
            return
        self.generation_config = generation_config.from_model(self.config, model_dir)

def _gguf_path(name: str, gguf_file: str | None, hub: dict[str, Any]) -> Path | None:
    if gguf_file is not None:
        candidate = Path(gguf_file)
        if candidate.is_file():
            return candidate
        return contained_path(resolve_model_dir(name, **hub), gguf_file, "gguf_file")
    if name.endswith(".gguf") and Path(name).is_file():
        return Path(name)
    from openformers.core.hub import EMBEDDED_MODELS, embedded_model_path

    if name in EMBEDDED_MODELS or name.lower() in EMBEDDED_MODELS:
        p = embedded_model_path(name)
        return p if p.suffix == ".gguf" else None
    return None


def _is_config_field(config_cls: type[PretrainedConfig], config_dict: dict[str, Any], key: str) -> bool:
    import inspect

    if key in config_dict or key in ("num_labels", "id2label", "label2id", "problem_type", "return_dict"):
        return True
    for klass in config_cls.__mro__:
        init = klass.__dict__.get("__init__")
        if init is not None and key in inspect.signature(init).parameters:
            return True
    return key in config_cls.attribute_map


def _override_config(config: PretrainedConfig, overrides: dict[str, Any]) -> PretrainedConfig:
    for key in list(overrides):
        if key == "num_labels" or hasattr(config, key):
            setattr(config, key, overrides.pop(key))
    return config


def _resolve_dtype(dtype: Any, config: PretrainedConfig, file_dtype: torch.dtype | None) -> torch.dtype:
    if dtype is None:
        return torch.float32
    if dtype == "auto":
        if getattr(config, "dtype", None):
            try:
                return to_torch_dtype(config.dtype) or torch.float32
            except ValueError:
                pass
        return file_dtype or torch.float32
    return to_torch_dtype(dtype)  # type: ignore[return-value]


def _resized_rows(weight: torch.Tensor, n: int) -> torch.Tensor:
    old_n = weight.shape[0]
    out = torch.empty((n, *weight.shape[1:]), dtype=weight.dtype, device=weight.device)
    keep = min(n, old_n)
    out[:keep] = weight[:keep]
    if n > old_n:
        mean = weight.float().mean(0)
        std = weight.float().std(0) if old_n > 1 else torch.full_like(mean, 0.02)
        out[old_n:] = (mean + std * torch.randn(n - old_n, *weight.shape[1:], device=weight.device)).to(weight.dtype)
    return out


def _resized_embedding(old: nn.Embedding, n: int) -> nn.Embedding:
    new = nn.Embedding(n, old.embedding_dim, padding_idx=old.padding_idx if (old.padding_idx or 0) < n else None,
                       device=old.weight.device, dtype=old.weight.dtype)
    new.weight.data = _resized_rows(old.weight.data, n)
    return new

