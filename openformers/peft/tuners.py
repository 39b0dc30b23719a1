"""Injection: find the ``target_modules`` of a model and replace them with adapter layers.

``TunerModel`` (``LoraModel`` / ``IA3Model`` / ``LoHaModel`` / ``LoKrModel``) holds the original model as ``.model``, so the
parameter names are ``model.<original path>.lora_A.<adapter>.weight``; under ``PeftModel`` they
read ``base_model.model....``, the names the peft package uses.
"""
from __future__ import annotations

import copy
import re
from contextlib import contextmanager
from typing import Any, Iterator

import torch
from torch import nn

from openformers.peft.config import (
    IA3_FEEDFORWARD_MODULES,
    IA3_TARGET_MODULES,
    LORA_TARGET_MODULES,
    IA3Config,
    LoraConfig,
    PeftConfig,
)
from openformers.peft.ia3 import IA3Linear
from openformers.peft.lora import AdapterLayer, LoraEmbedding, LoraLinear, is_linear_like, wrap_lora
from openformers.peft.lycoris import LoHaLinear, LoKrLinear

ALL_LINEAR = "all-linear"
_LAYER_INDEX = re.compile(r"(?:^|.*\.)[^.]*\.(\d+)\.")


class ModulesToSaveWrapper(nn.Module):
    """Keeps ``original_module`` and a trainable copy per adapter (``modules_to_save.<adapter>``)."""

    def __init__(self, module: nn.Module, adapter_name: str) -> None:
        super().__init__()
        self.original_module = module
        self.modules_to_save = nn.ModuleDict()
        self.active_adapter: str | None = None
        self.disable_adapters = False
        self.update(adapter_name)
        self.set_adapter(adapter_name)

    def update(self, adapter_name: str) -> None:
        copied = copy.deepcopy(self.original_module)
        for p in copied.parameters():
            p.requires_grad_(True)
        self.modules_to_save[adapter_name] = copied

    def set_adapter(self, names: str | list[str], trainable: bool = True) -> None:
        name = names if isinstance(names, str) else (names[0] if names else None)
        self.original_module.requires_grad_(False)
        for key, module in self.modules_to_save.items():
            module.requires_grad_(trainable and key == name)
        self.active_adapter = name if name in self.modules_to_save else None

    def delete_adapter(self, name: str) -> None:
        if name in self.modules_to_save:
            del self.modules_to_save[name]
        if self.active_adapter == name:
            self.active_adapter = None

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        if self.disable_adapters or self.active_adapter is None:
            return self.original_module(*args, **kwargs)
        return self.modules_to_save[self.active_adapter](*args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        try:
            return super().__getattr__(name)
        except AttributeError:
            pass
        modules = self._modules
        active = self.__dict__.get("active_adapter")
        target = modules["modules_to_save"][active] if active in modules["modules_to_save"] else modules["original_module"]
        return getattr(target, name)  # e.g. ``score.weight``: the copy that is in use


def _layer_index(key: str, layers_pattern: list[str] | str | None) -> int | None:
    if layers_pattern:
        patterns = [layers_pattern] if isinstance(layers_pattern, str) else list(layers_pattern)
        for pat in patterns:
            m = re.match(rf"(?:^|.*\.){pat}\.(\d+)\.", key)
            if m:
                return int(m.group(1))
        return None
    m = _LAYER_INDEX.match(key)
    return int(m.group(1)) if m else None


def _name_matches(patterns: list[str] | str, key: str) -> bool:
    if isinstance(patterns, str):
        return re.fullmatch(patterns, key) is not None
    return any(key == t or key.endswith("." + t) for t in patterns)


def _matches(config: Any, key: str) -> bool:
    excluded = getattr(config, "exclude_modules", None)
    if excluded and _name_matches(excluded, key):
        return False
    if not _name_matches(config.target_modules, key):
        return False
    layers = getattr(config, "layers_to_transform", None)
    if layers:
        idx = _layer_index(key, getattr(config, "layers_pattern", None))
        return idx is not None and idx in layers
    return True


def _model_type(model: nn.Module) -> str | None:
    return getattr(getattr(model, "config", None), "model_type", None)


def _candidate_names(model: nn.Module) -> list[str]:
    names = {n.rsplit(".", 1)[-1] for n, m in model.named_modules() if n and (is_linear_like(m) or isinstance(m, nn.Embedding))}
    return sorted(names)


class TunerModel(nn.Module):
    """Base of ``LoraModel`` and ``IA3Model``: injection, adapter switching, merging."""

    prefix = ""

    def __init__(self, model: nn.Module, peft_config: dict[str, PeftConfig], adapter_name: str) -> None:
        super().__init__()
        self.model = model
        self.peft_config = peft_config
        self.active_adapter: str | list[str] = adapter_name
        self.inject_adapter(adapter_name)

    def __getattr__(self, name: str) -> Any:
        try:
            return super().__getattr__(name)
        except AttributeError:
            if name == "model":
                raise
            return getattr(self.model, name)

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        return self.model(*args, **kwargs)

    @property
    def active_adapters(self) -> list[str]:
        return [self.active_adapter] if isinstance(self.active_adapter, str) else list(self.active_adapter)

    # -- injection ---------------------------------------------------------------------------
    def _default_targets(self, config: PeftConfig) -> None:
        raise TypeError(f"{type(self).__name__} must define _default_targets")

    def _resolve_targets(self, config: Any) -> None:
        if config.target_modules is None:
            self._default_targets(config)
        if config.target_modules == ALL_LINEAR:
            out = self.model.get_output_embeddings() if hasattr(self.model, "get_output_embeddings") else None
            skip = set(config.modules_to_save or [])
            names = {
                n.rsplit(".", 1)[-1] for n, m in self.model.named_modules()
                if n and is_linear_like(m) and m is not out and not any(n == s or n.endswith("." + s) for s in skip)
            }
            out_names = {n.rsplit(".", 1)[-1] for n, m in self.model.named_modules() if m is out}
            config.target_modules = sorted(names - out_names)

    def inject_adapter(self, adapter_name: str) -> None:
        config = self.peft_config[adapter_name]
        self._resolve_targets(config)
        matched: list[str] = []
        for key, module in list(self.model.named_modules()):
            if not key or isinstance(module, ModulesToSaveWrapper) or any(key.startswith(m + ".") for m in matched):
                continue
            if ".modules_to_save." in key or ".original_module" in key or ".base_layer" in key:
                continue
            if ".lora_" in key or ".ia3_l" in key or ".hada_" in key or ".lokr_" in key or not _matches(config, key):
                continue
            matched.append(key)
            self._create_or_update(adapter_name, config, key, module)
        if not matched:
            raise ValueError(
                f"target_modules={config.target_modules!r} matched no module of {type(self.model).__name__}"
                + (f" (with layers_to_transform={config.layers_to_transform})" if getattr(config, "layers_to_transform", None) else "")
                + f"; candidate module names: {_candidate_names(self.model)}"
            )
        for name in config.modules_to_save or []:
            self._wrap_module_to_save(name, adapter_name)
        self._mark_trainable(adapter_name)

    def _replace(self, key: str, new: nn.Module) -> None:
        self.model.set_submodule(key, new)

    def _wrap_module_to_save(self, name: str, adapter_name: str) -> None:
        wrap_module_to_save(self.model, name, adapter_name)

    def _mark_trainable(self, adapter_name: str) -> None:
        for p in self.model.parameters():
            p.requires_grad_(False)
        self.set_adapter(self.active_adapters)
        bias = getattr(self.peft_config[adapter_name], "bias", "none")
        if bias == "all":
            for n, p in self.model.named_parameters():
                if "bias" in n.rsplit(".", 1)[-1]:
                    p.requires_grad_(True)
        elif bias == "lora_only":
            for m in self.model.modules():
                if isinstance(m, LoraLinear) and getattr(m.base_layer, "bias", None) is not None:
                    m.base_layer.bias.requires_grad_(True)

    # -- adapter switching -------------------------------------------------------------------
    def set_adapter(self, adapter_name: str | list[str]) -> None:
        names = [adapter_name] if isinstance(adapter_name, str) else list(adapter_name)
        for n in names:
            if n not in self.peft_config:
                raise ValueError(f"unknown adapter {n!r}; this model has adapters {sorted(self.peft_config)}")
        inference = all(self.peft_config[n].inference_mode for n in names)
        for m in self.model.modules():
            if isinstance(m, (AdapterLayer, ModulesToSaveWrapper)):
                if isinstance(m, AdapterLayer) and m.merged_adapters:
                    m.unmerge()
                m.set_adapter(names, trainable=not inference)
        self.active_adapter = adapter_name

    def delete_adapter(self, adapter_name: str) -> None:
        for m in self.model.modules():
            if isinstance(m, (AdapterLayer, ModulesToSaveWrapper)):
                m.delete_adapter(adapter_name)

    def enable_adapter_layers(self, enabled: bool = True) -> None:
        for m in self.model.modules():
            if isinstance(m, (AdapterLayer, ModulesToSaveWrapper)):
                m.disable_adapters = not enabled

    @contextmanager
    def disable_adapter(self) -> Iterator[None]:
        self.enable_adapter_layers(False)
        try:
            yield
        finally:
            self.enable_adapter_layers(True)

    # -- merging -----------------------------------------------------------------------------
    def merge_adapter(self, adapter_names: list[str] | None = None, safe_merge: bool = False) -> None:
        for m in self.model.modules():
            if isinstance(m, AdapterLayer):
                m.merge(safe_merge=safe_merge, adapter_names=adapter_names)

    def unmerge_adapter(self) -> None:
        for m in self.model.modules():
            if isinstance(m, AdapterLayer):
                m.unmerge()

    def _unload(self, merge: bool, safe_merge: bool = False, adapter_names: list[str] | None = None) -> nn.Module:
        for key, m in list(self.model.named_modules()):
            if isinstance(m, AdapterLayer):
                if merge and (adapter_names or safe_merge) and not _quantized_base(m):
                    m.merge(safe_merge=safe_merge, adapter_names=adapter_names)
                self._replace(key, m.unloaded(merge))
            elif isinstance(m, ModulesToSaveWrapper):
                chosen = m.modules_to_save[m.active_adapter] if m.active_adapter else m.original_module
                self._replace(key, chosen)
        return self.model

    def merge_and_unload(self, progressbar: bool = False, safe_merge: bool = False,
                         adapter_names: list[str] | None = None) -> nn.Module:
        """Merge the active adapters into the base weights and return the plain model.

        Quantized base layers are dequantized and merged into ``nn.Linear`` layers."""
        return self._unload(True, safe_merge, adapter_names)

    def unload(self) -> nn.Module:
        """Remove every adapter layer without merging; returns the original model."""
        return self._unload(False)


def wrap_module_to_save(model: nn.Module, name: str, adapter_name: str) -> None:
    """Give every module called ``name`` a trainable copy for ``adapter_name`` (ModulesToSaveWrapper)."""
    for key, module in list(model.named_modules()):
        if not (key == name or key.endswith("." + name)) or ".modules_to_save." in key or key.endswith(".original_module"):
            continue
        if isinstance(module, ModulesToSaveWrapper):
            module.update(adapter_name)
            module.set_adapter(module.active_adapter or adapter_name)
        elif isinstance(module, AdapterLayer):
            raise ValueError(f"module {key!r} is both an adapter target and in modules_to_save; list it in one only")
        else:
            model.set_submodule(key, ModulesToSaveWrapper(module, adapter_name))


def _quantized_base(m: AdapterLayer) -> bool:
    from openformers.peft.lora import is_quantized

    return is_quantized(m.base_layer)


class LoraModel(TunerModel):
    """The model with LoRA layers injected at ``target_modules``."""

    prefix = "lora_"

    def _default_targets(self, config: LoraConfig) -> None:
        mt = _model_type(self.model)
        if mt not in LORA_TARGET_MODULES:
            raise ValueError(
                f"LoraConfig.target_modules is None and there is no default for model_type={mt!r}; pass target_modules "
                f"(names, a regex or 'all-linear'); candidate module names: {_candidate_names(self.model)}"
            )
        config.target_modules = list(LORA_TARGET_MODULES[mt])

    def _create_or_update(self, adapter_name: str, config: LoraConfig, key: str, module: nn.Module) -> None:
        short = key.rsplit(".", 1)[-1]
        r = _pattern_value(config.rank_pattern, key, config.r)
        alpha = _pattern_value(config.alpha_pattern, key, config.lora_alpha)
        if isinstance(module, (LoraLinear, LoraEmbedding)):
            module.update_layer(adapter_name, r, alpha, config.lora_dropout, config.init_lora_weights,
                                config.use_rslora, config.use_dora)
            return
        if not (is_linear_like(module) or isinstance(module, nn.Embedding)):
            raise ValueError(
                f"target module {key!r} ({type(module).__name__}) is not supported: LoRA wraps Linear, Conv1D, "
                f"Embedding and quantized linear layers; candidate module names: {_candidate_names(self.model)}"
            )
        from openformers.modules.conv1d import Conv1D

        if isinstance(module, Conv1D) and not config.fan_in_fan_out:
            config.fan_in_fan_out = True  # Conv1D stores [in, out]; recorded so the saved config says so
        if isinstance(module, nn.Linear) and config.fan_in_fan_out:
            raise ValueError(f"fan_in_fan_out=True but {key!r} ({short}) is an nn.Linear; set fan_in_fan_out=False")
        self._replace(key, wrap_lora(module, adapter_name, r, alpha, config.lora_dropout, config.fan_in_fan_out,
                                     config.init_lora_weights, config.use_rslora, config.use_dora))

    def add_weighted_adapter(self, adapters: list[str], weights: list[float], adapter_name: str,
                             combination_type: str = "svd", **kwargs: Any) -> None:
        """Add ``adapter_name`` combining ``adapters`` with ``weights`` ("linear" or "cat")."""
        if combination_type not in ("linear", "cat"):
            raise ValueError(f"combination_type={combination_type!r} is not supported; use 'linear' or 'cat'")
        if len(adapters) != len(weights) or not adapters:
            raise ValueError("add_weighted_adapter needs one weight per adapter")
        for a in adapters:
            if a not in self.peft_config:
                raise ValueError(f"unknown adapter {a!r}; this model has adapters {sorted(self.peft_config)}")
        if adapter_name in self.peft_config:
            raise ValueError(f"an adapter named {adapter_name!r} already exists")
        configs = [self.peft_config[a] for a in adapters]
        if any(c.use_dora for c in configs):
            raise ValueError("add_weighted_adapter does not combine DoRA adapters")
        if combination_type == "linear":
            ranks = {c.r for c in configs}
            if len(ranks) != 1:
                raise ValueError(f"combination_type='linear' needs adapters of one rank, got {sorted(ranks)}; use 'cat'")
            new_r = configs[0].r
        else:
            new_r = sum(c.r for c in configs)
        targets: set[str] = set()
        for c in configs:
            targets |= {c.target_modules} if isinstance(c.target_modules, str) else set(c.target_modules)
        new_config = LoraConfig(r=new_r, lora_alpha=new_r, target_modules=sorted(targets) if all(
            not isinstance(c.target_modules, str) for c in configs) else configs[0].target_modules,
            task_type=configs[0].task_type, base_model_name_or_path=configs[0].base_model_name_or_path,
            fan_in_fan_out=configs[0].fan_in_fan_out, modules_to_save=configs[0].modules_to_save)
        self.peft_config[adapter_name] = new_config
        for m in self.model.modules():
            if not isinstance(m, LoraLinear):
                continue
            present = [(a, w) for a, w in zip(adapters, weights) if a in m.lora_A]
            if not present:
                continue
            m.update_layer(adapter_name, new_r, new_r, 0.0, True, False, False)
            a_new, b_new = m.lora_A[adapter_name].weight, m.lora_B[adapter_name].weight
            with torch.no_grad():
                if combination_type == "linear":
                    a_new.zero_()
                    b_new.zero_()
                    for a, w in present:
                        # the new scaling is 1 (alpha = r), so fold each source's scaling and weight in
                        s = (w * m.scaling[a]) ** 0.5
                        a_new += m.lora_A[a].weight * s
                        b_new += m.lora_B[a].weight * s
                else:
                    row = 0
                    a_new.zero_()
                    b_new.zero_()
                    for a, w in present:
                        r_a = m.r[a]
                        a_new[row:row + r_a] = m.lora_A[a].weight * w * m.scaling[a]
                        b_new[:, row:row + r_a] = m.lora_B[a].weight
                        row += r_a
        for m in self.model.modules():
            if isinstance(m, ModulesToSaveWrapper) and adapters[0] in m.modules_to_save:
                m.modules_to_save[adapter_name] = copy.deepcopy(m.modules_to_save[adapters[0]])
        self.set_adapter(self.active_adapter)


def _pattern_value(patterns: dict[str, Any], key: str, default: Any) -> Any:
    for pat, value in (patterns or {}).items():
        if re.fullmatch(rf"(.*\.)?{pat}", key):
            return value
    return default


class IA3Model(TunerModel):
    """The model with (IA)^3 scales injected at ``target_modules``."""

    prefix = "ia3_"

    def _default_targets(self, config: IA3Config) -> None:
        mt = _model_type(self.model)
        if mt not in IA3_TARGET_MODULES:
            raise ValueError(
                f"IA3Config.target_modules is None and there is no default for model_type={mt!r}; pass target_modules "
                f"and feedforward_modules; candidate module names: {_candidate_names(self.model)}"
            )
        config.target_modules = list(IA3_TARGET_MODULES[mt])
        if config.feedforward_modules is None:
            config.feedforward_modules = list(IA3_FEEDFORWARD_MODULES[mt])

    def _create_or_update(self, adapter_name: str, config: IA3Config, key: str, module: nn.Module) -> None:
        ff = bool(config.feedforward_modules) and _name_matches(config.feedforward_modules, key)
        if isinstance(module, IA3Linear):
            module.update_layer(adapter_name, config.init_ia3_weights)
            return
        if not is_linear_like(module):
            raise ValueError(
                f"target module {key!r} ({type(module).__name__}) is not supported: IA3 wraps Linear, Conv1D and "
                f"quantized linear layers; candidate module names: {_candidate_names(self.model)}"
            )
        from openformers.modules.conv1d import Conv1D

        if isinstance(module, Conv1D):
            config.fan_in_fan_out = True
        self._replace(key, IA3Linear.from_base(module, adapter_name, ff, config.fan_in_fan_out, config.init_ia3_weights))


class _LycorisModel(TunerModel):
    """Shared injection of LoHa / LoKr layers (``nn.Linear`` targets only)."""

    layer_cls: type = AdapterLayer

    def _default_targets(self, config: Any) -> None:
        mt = _model_type(self.model)
        if mt not in LORA_TARGET_MODULES:  # peft uses LoRA's per-architecture defaults for these methods
            raise ValueError(
                f"{type(config).__name__}.target_modules is None and there is no default for model_type={mt!r}; pass "
                f"target_modules (names, a regex or 'all-linear'); candidate module names: {_candidate_names(self.model)}"
            )
        config.target_modules = list(LORA_TARGET_MODULES[mt])

    def _layer_args(self, config: Any) -> dict[str, Any]:
        return dict(rank_dropout=config.rank_dropout, module_dropout=config.module_dropout, init_weights=config.init_weights)

    def _create_or_update(self, adapter_name: str, config: Any, key: str, module: nn.Module) -> None:
        r = _pattern_value(config.rank_pattern, key, config.r)
        alpha = _pattern_value(config.alpha_pattern, key, config.alpha)
        if isinstance(module, self.layer_cls):
            module.update_layer(adapter_name, r, alpha, **self._layer_args(config))
            return
        if not isinstance(module, nn.Linear):
            raise ValueError(
                f"target module {key!r} ({type(module).__name__}) is not supported: {self.layer_cls.method} wraps "
                f"nn.Linear layers; candidate module names: {_candidate_names(self.model)}"
            )
        self._replace(key, self.layer_cls.from_base(module, adapter_name, r, alpha, **self._layer_args(config)))


class LoHaModel(_LycorisModel):
    """The model with LoHa layers injected at ``target_modules``."""

    prefix = "hada_"
    layer_cls = LoHaLinear


class LoKrModel(_LycorisModel):
    """The model with LoKr layers injected at ``target_modules``."""

    prefix = "lokr_"
    layer_cls = LoKrLinear

    def _layer_args(self, config: Any) -> dict[str, Any]:
        return dict(super()._layer_args(config), decompose_both=config.decompose_both,
                    decompose_factor=config.decompose_factor, rank_dropout_scale=config.rank_dropout_scale)
