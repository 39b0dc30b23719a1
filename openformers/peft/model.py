"""``PeftModel``: a model with adapters, saved and loaded in the peft package's file layout.

LoRA and IA3 are injected into the model's own modules (``base_model`` is a ``LoraModel`` /
``IA3Model`` holding the model as ``.model``). Prompt tuning and prefix tuning keep the model
untouched and add ``prompt_encoder``: prompt tuning prepends learned embeddings to the input,
prefix tuning hands every attention layer learned key/value prefixes through the cache.
"""
from __future__ import annotations

import inspect
import math
import os
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import torch
from torch import nn

from openformers.modules.cache import Cache, DynamicCache
from openformers.peft.config import (
    PREFIX_ENCODER_NAME,
    TASK_MODULES_TO_SAVE,
    WEIGHTS_NAME,
    PeftConfig,
    PeftType,
    PrefixTuningConfig,
    PromptEncoderConfig,
    PromptEncoderReparameterizationType,
    PromptLearningConfig,
    PromptTuningInit,
    TaskType,
)
from openformers.peft.prompt_encoders import PrefixEncoder, PromptEmbedding, PromptEncoder
from openformers.peft.save_and_load import get_peft_model_state_dict, load_adapter_state, set_peft_model_state_dict
from openformers.peft.tuners import IA3Model, LoHaModel, LoKrModel, LoraModel, TunerModel
from openformers.peft.adalora import AdaLoraModel

TUNERS: dict[PeftType, type[TunerModel]] = {
    PeftType.LORA: LoraModel, PeftType.IA3: IA3Model, PeftType.LOHA: LoHaModel, PeftType.LOKR: LoKrModel,
    PeftType.ADALORA: AdaLoraModel,
}


def _model_sizes(model: nn.Module) -> dict[str, int]:
    cfg = model.config

    def first(*names: str) -> int:
        for n in names:
            v = getattr(cfg, n, None)
            if isinstance(v, int):
                return v
        raise ValueError(f"cannot read {names[0]} from {type(cfg).__name__}; set it in the adapter config")

    hidden = first("hidden_size", "n_embd", "d_model", "dim")
    heads = first("num_attention_heads", "n_head", "n_heads")
    kv_heads = getattr(cfg, "num_key_value_heads", None) or heads
    head_dim = getattr(cfg, "head_dim", None) or hidden // heads
    return {"hidden": hidden, "heads": heads, "kv_heads": kv_heads, "head_dim": head_dim,
            "layers": first("num_hidden_layers", "n_layer", "n_layers")}


class PeftModel(nn.Module):
    """A model with one or more named adapters of one PEFT method."""

    def __init__(self, model: nn.Module, peft_config: PeftConfig, adapter_name: str = "default", **kwargs: Any) -> None:
        super().__init__()
        if isinstance(model, PeftModel):
            raise ValueError("the model already has adapters; use add_adapter to add another")
        self.peft_type = PeftType(peft_config.peft_type)
        self.active_adapter = adapter_name
        self.peft_config: dict[str, PeftConfig] = {}
        self._fill_config(model, peft_config)
        self.peft_config[adapter_name] = peft_config
        known = {id(m) for m in model.modules()}
        if peft_config.is_prompt_learning:
            self.base_model = model
            self.prompt_encoder = nn.ModuleDict()
            for p in model.parameters():
                p.requires_grad_(False)
            self._add_prompt_learning(adapter_name, peft_config)
            self._wrap_prompt_heads(adapter_name, peft_config)
        else:
            if self.peft_type not in TUNERS:
                raise ValueError(f"peft_type={self.peft_type.value} is not supported")
            self.base_model = TUNERS[self.peft_type](model, self.peft_config, adapter_name)
        _follow_modes(self, known, model.training)
        if peft_config.inference_mode:
            self._freeze(adapter_name)

    # -- plumbing ----------------------------------------------------------------------------
    def __getattr__(self, name: str) -> Any:
        try:
            return super().__getattr__(name)
        except AttributeError:
            if name in ("base_model", "prompt_encoder"):
                raise
            return getattr(self.base_model, name)

    def get_base_model(self) -> nn.Module:
        """The wrapped transformer model (with adapter layers injected for LoRA/IA3)."""
        return self.base_model if self.active_peft_config.is_prompt_learning else self.base_model.model

    @property
    def active_peft_config(self) -> PeftConfig:
        name = self.active_adapter if isinstance(self.active_adapter, str) else self.active_adapter[0]
        return self.peft_config[name]

    @property
    def active_adapters(self) -> list[str]:
        return [self.active_adapter] if isinstance(self.active_adapter, str) else list(self.active_adapter)

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    @property
    def config(self) -> Any:
        return self.get_base_model().config

    def _fill_config(self, model: nn.Module, config: PeftConfig) -> None:
        if config.base_model_name_or_path is None:
            config.base_model_name_or_path = getattr(model, "name_or_path", None)
        defaults = TASK_MODULES_TO_SAVE.get(TaskType(config.task_type).value) if config.task_type is not None else None
        if defaults:  # the task head always trains with the adapter
            config.modules_to_save = list(config.modules_to_save or []) + [
                d for d in defaults if d not in (config.modules_to_save or [])]
        if isinstance(config, PromptLearningConfig):
            sizes = _model_sizes(model)
            config.num_layers = config.num_layers or sizes["layers"]
            config.num_transformer_submodules = config.num_transformer_submodules or 1
            if isinstance(config, PrefixTuningConfig):
                config.num_attention_heads = config.num_attention_heads or sizes["kv_heads"]
                config.token_dim = config.token_dim or sizes["kv_heads"] * sizes["head_dim"]
                config.encoder_hidden_size = config.encoder_hidden_size or config.token_dim
            else:
                config.num_attention_heads = config.num_attention_heads or sizes["heads"]
                config.token_dim = config.token_dim or sizes["hidden"]

    def _freeze(self, adapter_name: str) -> None:
        for n, p in self.named_parameters():
            if adapter_name in n.split(".")[1:]:
                p.requires_grad_(False)

    def _check_same_type(self, config: PeftConfig) -> None:
        if PeftType(config.peft_type) != self.peft_type:
            raise ValueError(
                f"this model holds {self.peft_type.value} adapters; an adapter of type {PeftType(config.peft_type).value} "
                "cannot be added to it (one PEFT method per model)"
            )

    # -- prompt learning ---------------------------------------------------------------------
    def _word_embeddings(self) -> nn.Embedding:
        return self.base_model.get_input_embeddings()

    def _wrap_prompt_heads(self, adapter_name: str, config: PeftConfig) -> None:
        from openformers.peft.tuners import ModulesToSaveWrapper, wrap_module_to_save

        for name in config.modules_to_save or []:
            wrap_module_to_save(self.base_model, name, adapter_name)
        for m in self.base_model.modules():
            if isinstance(m, ModulesToSaveWrapper):
                m.set_adapter(self.active_adapter if isinstance(self.active_adapter, str) else adapter_name)

    def _add_prompt_learning(self, adapter_name: str, config: PromptLearningConfig) -> None:
        n = config.num_virtual_tokens * config.num_transformer_submodules
        if isinstance(config, PrefixTuningConfig):
            forward_params = inspect.signature(self.base_model.forward).parameters
            if "past_key_values" not in forward_params:
                raise ValueError(
                    f"prefix tuning needs a model whose forward takes past_key_values; {type(self.base_model).__name__} "
                    "does not: use PromptTuningConfig or LoraConfig for it"
                )
            # a loaded (inference) adapter holds the projected prefixes only: a plain table
            self.prompt_encoder[adapter_name] = PrefixEncoder(
                config.num_virtual_tokens, config.token_dim, config.num_layers, config.encoder_hidden_size,
                projection=config.prefix_projection and not config.inference_mode, zero_init=config.init_weights == "zero",
            ).to(self._word_embeddings().weight.device)
            return
        if isinstance(config, PromptEncoderConfig):
            self.prompt_encoder[adapter_name] = PromptEncoder(
                n, config.token_dim, config.encoder_hidden_size or config.token_dim,
                PromptEncoderReparameterizationType(config.encoder_reparameterization_type).value,
                config.encoder_num_layers, config.encoder_dropout, inference=config.inference_mode,
            ).to(self._word_embeddings().weight.device)
            return
        init = None
        if config.prompt_tuning_init == PromptTuningInit.TEXT:
            from openformers.tokenization.auto import AutoTokenizer

            tokenizer = AutoTokenizer.from_pretrained(config.tokenizer_name_or_path, **(config.tokenizer_kwargs or {}))
            ids = list(tokenizer(config.prompt_tuning_init_text)["input_ids"])
            if not ids:
                raise ValueError("prompt_tuning_init_text tokenizes to no tokens")
            ids = (ids * math.ceil(n / len(ids)))[:n]
            with torch.no_grad():
                emb = self._word_embeddings()
                init = emb(torch.tensor(ids, device=emb.weight.device)).detach().clone().float()
        elif config.prompt_tuning_init == PromptTuningInit.SAMPLE_VOCAB:
            emb = self._word_embeddings()
            idx = torch.randint(0, emb.num_embeddings, (n,), device=emb.weight.device)
            init = emb.weight.detach()[idx].clone().float()
        self.prompt_encoder[adapter_name] = PromptEmbedding(n, config.token_dim, init).to(self._word_embeddings().weight.device)

    def get_prompt(self, batch_size: int) -> torch.Tensor | DynamicCache:
        """Prompt tuning: [b, n, hidden] embeddings. Prefix tuning: a cache holding the prefixes."""
        config = self.active_peft_config
        table = self.prompt_encoder[self.active_adapter].flat_prompt()
        if isinstance(config, PrefixTuningConfig):
            n = config.num_virtual_tokens
            # [n, layers * 2 * kv_heads * head_dim] -> [layers * 2, b, kv_heads, n, head_dim]
            kv = table.view(n, config.num_layers * 2, config.num_attention_heads, config.token_dim // config.num_attention_heads)
            kv = kv.permute(1, 2, 0, 3).unsqueeze(1).expand(-1, batch_size, -1, -1, -1)
            dtype = self.get_base_model().dtype if hasattr(self.get_base_model(), "dtype") else table.dtype
            kv = kv.to(dtype)
            cache = DynamicCache()
            for layer in range(config.num_layers):
                cache.update(layer, kv[2 * layer], kv[2 * layer + 1])
            return cache
        return table.unsqueeze(0).expand(batch_size, -1, -1)

    def _prompt_learning_inputs(self, input_ids: Any, attention_mask: Any, inputs_embeds: Any, labels: Any,
                                kwargs: dict[str, Any], prepend_labels: bool) -> dict[str, Any]:
        config = self.active_peft_config
        n = config.num_virtual_tokens
        ref = input_ids if input_ids is not None else inputs_embeds
        b, device = ref.shape[0], ref.device
        cache = kwargs.get("past_key_values")
        past = cache.get_seq_length() if isinstance(cache, Cache) else (cache[0][0].shape[-2] if cache else 0)
        kwargs.pop("cache_position", None)
        position_ids = kwargs.pop("position_ids", None)
        if attention_mask is not None:
            attention_mask = torch.cat([torch.ones(b, n, dtype=attention_mask.dtype, device=device), attention_mask], dim=1)
        if position_ids is not None:
            position_ids = position_ids + n  # the virtual tokens take positions 0..n-1
        out: dict[str, Any] = dict(kwargs)
        if isinstance(config, PrefixTuningConfig):
            if past == 0:
                prefix = self.get_prompt(b)
                if isinstance(cache, Cache):  # fill the caller's cache (generate keeps using it)
                    for layer, (k, v) in enumerate(prefix):
                        cache.update(layer, k, v)
                    prefix = cache
                out["past_key_values"] = prefix
            out.update(input_ids=input_ids, inputs_embeds=inputs_embeds)
        else:
            if past == 0:
                if inputs_embeds is None:
                    inputs_embeds = self._word_embeddings()(input_ids)
                prompts = self.get_prompt(b).to(inputs_embeds.dtype)
                inputs_embeds = torch.cat([prompts, inputs_embeds], dim=1)
                input_ids = None
                if labels is not None and prepend_labels:
                    labels = torch.cat([torch.full((b, n), -100, dtype=labels.dtype, device=labels.device), labels], dim=1)
                if out.get("token_type_ids") is not None:
                    tt = out["token_type_ids"]
                    out["token_type_ids"] = torch.cat([torch.zeros(b, n, dtype=tt.dtype, device=tt.device), tt], dim=1)
                if position_ids is not None:
                    virtual = torch.arange(n, device=device).expand(position_ids.shape[0], n)
                    position_ids = torch.cat([virtual, position_ids], dim=1)
            out.update(input_ids=input_ids, inputs_embeds=inputs_embeds)
        if position_ids is not None:
            out["position_ids"] = position_ids
        out["attention_mask"] = attention_mask
        if labels is not None:
            out["labels"] = labels
        return {k: v for k, v in out.items() if not (k in ("input_ids", "inputs_embeds") and v is None)}

    # -- forward / generate ------------------------------------------------------------------
    def forward(self, input_ids: torch.Tensor | None = None, attention_mask: torch.Tensor | None = None,
                inputs_embeds: torch.Tensor | None = None, labels: torch.Tensor | None = None, **kwargs: Any) -> Any:
        if self.active_peft_config.is_prompt_learning and not self.__dict__.get("_prompt_disabled", False):
            prepend = TaskType(self.active_peft_config.task_type or "CAUSAL_LM") == TaskType.CAUSAL_LM
            args = self._prompt_learning_inputs(input_ids, attention_mask, inputs_embeds, labels, kwargs, prepend)
            return self.base_model(**args)
        if input_ids is not None:
            kwargs["input_ids"] = input_ids
        if inputs_embeds is not None:
            kwargs["inputs_embeds"] = inputs_embeds
        if labels is not None:
            kwargs["labels"] = labels
        if attention_mask is not None:
            kwargs["attention_mask"] = attention_mask
        return self.base_model(**kwargs)

    def generate(self, *args: Any, **kwargs: Any) -> Any:
        """Generate with the adapters active (see ``openformers.generation``)."""
        if not self.active_peft_config.is_prompt_learning:
            return self.get_base_model().generate(*args, **kwargs)
        from openformers.generation.utils import generate

        return generate(self, *args, **kwargs)

    # -- adapters ----------------------------------------------------------------------------
    def add_adapter(self, adapter_name: str, peft_config: PeftConfig, low_cpu_mem_usage: bool = False) -> None:
        """Add a new adapter (not activated; use set_adapter)."""
        self._check_same_type(peft_config)
        if adapter_name in self.peft_config:
            raise ValueError(f"an adapter named {adapter_name!r} already exists; delete_adapter it first")
        self._fill_config(self.get_base_model(), peft_config)
        self.peft_config[adapter_name] = peft_config
        known = {id(m) for m in self.modules()}
        try:
            if peft_config.is_prompt_learning:
                self._add_prompt_learning(adapter_name, peft_config)
                self._wrap_prompt_heads(adapter_name, peft_config)
            else:
                self.base_model.inject_adapter(adapter_name)
        except Exception:
            del self.peft_config[adapter_name]
            raise
        _follow_modes(self, known, self.training)
        if peft_config.inference_mode:
            self._freeze(adapter_name)

    def set_adapter(self, adapter_name: str | list[str]) -> None:
        """Make ``adapter_name`` the active (and trainable) adapter."""
        names = [adapter_name] if isinstance(adapter_name, str) else list(adapter_name)
        for n in names:
            if n not in self.peft_config:
                raise ValueError(f"unknown adapter {n!r}; this model has adapters {sorted(self.peft_config)}")
        if self.peft_config[names[0]].is_prompt_learning:
            if len(names) != 1:
                raise ValueError("prompt learning methods use one active adapter at a time")
            for key, enc in self.prompt_encoder.items():
                enc.requires_grad_(key == names[0] and not self.peft_config[key].inference_mode)
            from openformers.peft.tuners import ModulesToSaveWrapper

            for m in self.base_model.modules():
                if isinstance(m, ModulesToSaveWrapper):
                    m.set_adapter(names[0], trainable=not self.peft_config[names[0]].inference_mode)
        else:
            self.base_model.set_adapter(adapter_name)
        self.active_adapter = adapter_name

    def delete_adapter(self, adapter_name: str) -> None:
        if adapter_name not in self.peft_config:
            raise ValueError(f"unknown adapter {adapter_name!r}; this model has adapters {sorted(self.peft_config)}")
        del self.peft_config[adapter_name]
        if isinstance(self.base_model, TunerModel):
            self.base_model.delete_adapter(adapter_name)
        else:
            del self.prompt_encoder[adapter_name]
        remaining = [n for n in self.active_adapters if n != adapter_name]
        if not remaining and self.peft_config:
            remaining = [next(iter(self.peft_config))]
        if remaining:
            self.set_adapter(remaining[0] if len(remaining) == 1 else remaining)

    @contextmanager
    def disable_adapter(self) -> Iterator[None]:
        """Run the base model without adapters inside the ``with`` block."""
        if self.active_peft_config.is_prompt_learning:
            self._prompt_disabled = True
            try:
                yield
            finally:
                self._prompt_disabled = False
        else:
            with self.base_model.disable_adapter():
                yield

    def merge_and_unload(self, progressbar: bool = False, safe_merge: bool = False,
                         adapter_names: list[str] | None = None) -> nn.Module:
        self._needs_tuner("merge_and_unload")
        return self.base_model.merge_and_unload(progressbar, safe_merge, adapter_names)

    def unload(self) -> nn.Module:
        self._needs_tuner("unload")
        return self.base_model.unload()

    def merge_adapter(self, adapter_names: list[str] | None = None, safe_merge: bool = False) -> None:
        self._needs_tuner("merge_adapter")
        self.base_model.merge_adapter(adapter_names, safe_merge)

    def unmerge_adapter(self) -> None:
        self._needs_tuner("unmerge_adapter")
        self.base_model.unmerge_adapter()

    def add_weighted_adapter(self, adapters: list[str], weights: list[float], adapter_name: str,
                             combination_type: str = "svd", **kwargs: Any) -> None:
        if not isinstance(self.base_model, LoraModel) or isinstance(self.base_model, AdaLoraModel):
            raise ValueError("add_weighted_adapter combines LoRA adapters only")
        self.base_model.add_weighted_adapter(adapters, weights, adapter_name, combination_type, **kwargs)

    def _needs_tuner(self, what: str) -> None:
        if not isinstance(self.base_model, TunerModel):
            raise ValueError(f"{what} applies to LoRA, IA3, LoHa and LoKr adapters, not to {self.peft_type.value}")

    # -- counting ----------------------------------------------------------------------------
    def get_nb_trainable_parameters(self) -> tuple[int, int]:
        """(trainable, total) parameter counts, as peft gives them: a quantized layer's packed
        weight (a buffer here) counts as its ``out_features x in_features`` values."""
        trainable = total = 0
        for _, p in self.named_parameters():
            n = p.numel()
            total += n
            if p.requires_grad:
                trainable += n
        for module in self.modules():
            packed = module._buffers.get("weight", module._buffers.get("qweight"))
            if packed is not None and hasattr(module, "in_features") and hasattr(module, "out_features"):
                total += module.in_features * module.out_features
        return trainable, total

    def print_trainable_parameters(self) -> None:
        trainable, total = self.get_nb_trainable_parameters()
        print(f"trainable params: {trainable:,d} || all params: {total:,d} || trainable%: {100 * trainable / total:.4f}")

    # -- saving ------------------------------------------------------------------------------
    def save_pretrained(self, save_directory: str | os.PathLike, safe_serialization: bool = True,
                        selected_adapters: list[str] | None = None, is_main_process: bool = True, **kwargs: Any) -> None:
        """Write ``adapter_config.json`` and ``adapter_model.safetensors`` (adapters other than
        "default" go to a subdirectory of their name), nothing of the base model."""
        from safetensors.torch import save_file

        path = Path(save_directory)
        if path.is_file():
            raise ValueError(f"save_directory {path} is a file; pass a directory")
        if not is_main_process:
            return
        names = list(selected_adapters or self.peft_config)
        for n in names:
            if n not in self.peft_config:
                raise ValueError(f"unknown adapter {n!r}; this model has adapters {sorted(self.peft_config)}")
        from openformers.core.hub import contained_path

        for name in names:
            out = path if name == "default" else contained_path(path, name, "adapter name")
            out.mkdir(parents=True, exist_ok=True)
            state = {k: v.detach().contiguous().cpu() for k, v in get_peft_model_state_dict(self, adapter_name=name).items()}
            if safe_serialization:
                save_file(state, str(out / WEIGHTS_NAME), metadata={"format": "pt"})
            else:
                torch.save(state, out / "adapter_model.bin")
            encoder = self.prompt_encoder[name] if self.peft_config[name].is_prompt_learning else None
            if getattr(encoder, "projection", False):
                # the peft file holds only the projected prefixes; the table and MLP that produce them
                # go to a file of their own so training can resume (other tools ignore it)
                save_file({k: v.detach().contiguous().cpu() for k, v in encoder.state_dict().items()},
                          str(out / PREFIX_ENCODER_NAME), metadata={"format": "pt"})
            config = self.peft_config[name]
            inference = config.inference_mode
            config.inference_mode = True
            config.save_pretrained(out)
            config.inference_mode = inference

    @classmethod
    def from_pretrained(cls, model: nn.Module, model_id: str | os.PathLike, adapter_name: str = "default",
                        is_trainable: bool = False, config: PeftConfig | None = None, **kwargs: Any) -> "PeftModel":
        """Load the adapter saved in ``model_id`` onto ``model``."""
        config = config or PeftConfig.from_pretrained(model_id, subfolder=kwargs.pop("subfolder", ""))
        config.inference_mode = not is_trainable
        target = cls
        if cls is PeftModel and config.task_type is not None:
            target = MODEL_TYPE_TO_PEFT_MODEL_MAPPING.get(TaskType(config.task_type).value, PeftModel)
        peft_model = target(model, config, adapter_name)
        peft_model._load_into(model_id, adapter_name, is_trainable)
        return peft_model

    def load_adapter(self, model_id: str | os.PathLike, adapter_name: str, is_trainable: bool = False,
                     config: PeftConfig | None = None, **kwargs: Any) -> None:
        """Load a saved adapter as ``adapter_name`` (added next to the existing ones)."""
        if adapter_name not in self.peft_config:
            config = config or PeftConfig.from_pretrained(model_id)
            config.inference_mode = not is_trainable
            self.add_adapter(adapter_name, config)
        self._load_into(model_id, adapter_name, is_trainable)

    def _load_into(self, model_id: str | os.PathLike, adapter_name: str, is_trainable: bool) -> None:
        if self._load_prefix_encoder(Path(model_id), adapter_name):
            return
        state = load_adapter_state(model_id)
        set_peft_model_state_dict(self, state, adapter_name, source=str(model_id))
        if not is_trainable:
            self._freeze(adapter_name)
            self.eval()

    def load_adapter_weights(self, directory: str | os.PathLike) -> None:
        """Restore the weights of every adapter saved in ``directory`` (Trainer resume)."""
        from openformers.core.hub import contained_path

        directory = Path(directory)
        for name in self.peft_config:
            sub = directory if name == "default" else contained_path(directory, name, "adapter name")
            if self._load_prefix_encoder(sub, name):
                continue
            if (sub / WEIGHTS_NAME).is_file() or (sub / "adapter_model.bin").is_file():
                set_peft_model_state_dict(self, load_adapter_state(sub), name, source=str(sub))

    def _load_prefix_encoder(self, directory: Path, adapter_name: str) -> bool:
        """Restore a trainable projected prefix encoder from its own file; False when there is none to restore."""
        encoder = self.prompt_encoder[adapter_name] if "prompt_encoder" in self._modules else None
        file = directory / PREFIX_ENCODER_NAME
        if not getattr(encoder, "projection", False) or not file.is_file():
            return False
        from safetensors.torch import load_file

        try:
            encoder.load_state_dict(load_file(str(file)))
        except RuntimeError as exc:
            raise ValueError(f"{file} does not fit this prefix encoder ({exc}); it was saved for another model or config") from exc
        return True


class PeftModelForCausalLM(PeftModel):
    pass


class PeftModelForSequenceClassification(PeftModel):
    pass


class PeftModelForTokenClassification(PeftModel):
    def _add_prompt_learning(self, adapter_name: str, config: PromptLearningConfig) -> None:
        raise ValueError("prompt learning for TOKEN_CLS is not supported; use LoraConfig or IA3Config")


class PeftModelForQuestionAnswering(PeftModelForTokenClassification):
    def _add_prompt_learning(self, adapter_name: str, config: PromptLearningConfig) -> None:
        raise ValueError("prompt learning for QUESTION_ANS is not supported; use LoraConfig or IA3Config")


class PeftModelForFeatureExtraction(PeftModel):
    pass


MODEL_TYPE_TO_PEFT_MODEL_MAPPING: dict[str, type[PeftModel]] = {
    "CAUSAL_LM": PeftModelForCausalLM, "SEQ_CLS": PeftModelForSequenceClassification,
    "TOKEN_CLS": PeftModelForTokenClassification, "QUESTION_ANS": PeftModelForQuestionAnswering,
    "FEATURE_EXTRACTION": PeftModelForFeatureExtraction,
}


def _follow_modes(root: nn.Module, known: set[int], mode: bool) -> None:
    """Give the modules under ``root`` that adding an adapter created (their ids not in ``known``) the training
    mode of the module they wrap (a pre-existing direct child: a LoRA layer's ``base_layer``, a
    ``ModulesToSaveWrapper``'s ``original_module``, the tuner's ``model``) or else of their parent: an adapter
    added to a model in eval mode starts in eval mode (no dropout; the runtime's decode plan applies), one
    added in training mode trains. ``mode`` is the mode of ``root`` when it is new itself. Modules that were
    there before keep their mode."""
    def visit(m: nn.Module, inherited: bool) -> None:
        if id(m) in known:
            inherited = m.training
        else:
            wrapped = next((c for c in m._modules.values() if c is not None and id(c) in known), None)
            inherited = wrapped.training if wrapped is not None else inherited
            m.training = inherited
        for child in m._modules.values():
            if child is not None:
                visit(child, inherited)
    visit(root, mode)


def get_peft_model(model: nn.Module, peft_config: PeftConfig, adapter_name: str = "default", **kwargs: Any) -> PeftModel:
    """Wrap ``model`` with a new adapter described by ``peft_config``."""
    if not isinstance(peft_config, PeftConfig):
        raise TypeError(f"peft_config must be a PeftConfig (e.g. LoraConfig), got {type(peft_config).__name__}")
    task = TaskType(peft_config.task_type).value if peft_config.task_type is not None else None
    cls = MODEL_TYPE_TO_PEFT_MODEL_MAPPING.get(task, PeftModel) if task else PeftModel
    return cls(model, peft_config, adapter_name)
