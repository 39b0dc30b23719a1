"""Models that run an exported ``model.onnx`` on onnxruntime, with the PyTorch models' call
signature and outputs, so ``pipeline(task, model=ort_model, tokenizer=...)`` and ``generate``
drive them like the PyTorch models.

>>> ort_model = ORTModelForCausalLM.from_pretrained("out/gpt2-onnx")
>>> ort_model.generate(input_ids, max_new_tokens=20)
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch

from openformers.core import outputs as O

_NUMPY_FLOAT = {"tensor(float)": np.float32, "tensor(float16)": np.float16, "tensor(double)": np.float64}


def _numpy(value: Any, dtype: Any = np.int64) -> np.ndarray:
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu().numpy()
    return np.ascontiguousarray(np.asarray(value), dtype=dtype)


class ORTModel:
    """An exported model on an onnxruntime ``InferenceSession``; subclasses give the head's outputs.

    Load with :meth:`from_pretrained` (a directory written by ``to_onnx`` or ``openformers export
    onnx``, or a hub name). Call it with the torch tensors a tokenizer returns; outputs are the
    PyTorch heads' output classes holding torch tensors.
    """

    _head: str = "base"
    _outputs: tuple[str, ...] = ()
    main_input_name = "input_ids"

    def __init__(self, session: Any, config: Any, model_dir: Path | None = None,
                 generation_config: Any = None) -> None:
        self.session = session
        self.config = config
        self.model_dir = model_dir
        self.name_or_path = str(model_dir) if model_dir is not None else ""
        self.input_names = [i.name for i in session.get_inputs()]
        self.output_names = [o.name for o in session.get_outputs()]
        self._input_types = {i.name: i.type for i in session.get_inputs()}
        self.generation_config = generation_config
        self.device = torch.device("cpu")
        self.dtype = torch.float32
        missing = [n for n in self._outputs if n not in self.output_names]
        if missing:
            raise ValueError(f"{type(self).__name__}: the ONNX graph {model_dir} has outputs {self.output_names}, not "
                             f"{missing}; export it for this head's task or load it with the matching ORTModelFor... class")

    @classmethod
    def from_pretrained(cls, model_id: str | os.PathLike, *, file_name: str = "model.onnx",
                        provider: str = "CPUExecutionProvider", providers: list[str] | None = None,
                        session_options: Any = None, revision: str | None = None, local_files_only: bool = False,
                        cache_dir: str | os.PathLike | None = None, token: str | bool | None = None,
                        subfolder: str = "", **config_kwargs: Any) -> "ORTModel":
        """Load ``model_id/file_name`` (a local directory or a hub repository holding an ONNX export)
        into an onnxruntime session. ``provider`` / ``providers``: execution providers;
        ``session_options``: an ``onnxruntime.SessionOptions``."""
        try:
            import onnxruntime as ort
        except ImportError as exc:
            raise ImportError("ORT models need onnxruntime: pip install 'openformers[export]'") from exc
        from openformers.core.hub import resolve_model_dir
        from openformers.models.auto import AutoConfig

        directory = resolve_model_dir(model_id, revision=revision, local_files_only=local_files_only,
                                      cache_dir=cache_dir, token=token)
        if subfolder:
            directory = directory / subfolder
        path = directory / file_name
        if not path.is_file():
            found = sorted(p.name for p in directory.glob("*.onnx"))
            raise FileNotFoundError(f"{path} does not exist; {'ONNX files there: ' + str(found) if found else 'export the model first: openformers export onnx --model ... ' + str(directory)}"
                                    f"{' (pass file_name=)' if found else ''}")
        config = AutoConfig.from_pretrained(str(directory), **config_kwargs)
        session = ort.InferenceSession(str(path), sess_options=session_options, providers=providers or [provider])
        generation_config = None
        if (directory / "generation_config.json").is_file():
            from openformers.generation.config import GenerationConfig

            generation_config = GenerationConfig.from_pretrained(str(directory))
        return cls(session, config, directory, generation_config)

    def save_pretrained(self, save_directory: str | os.PathLike, **_: Any) -> None:
        """Copy the ONNX graph (and its external data), the config and the generation config."""
        if self.model_dir is None:
            raise ValueError("this ORT model was built from a session, not loaded from a directory; nothing to copy")
        out = Path(save_directory)
        out.mkdir(parents=True, exist_ok=True)
        for p in self.model_dir.iterdir():
            if p.is_file() and (p.suffix in (".onnx", ".data") or p.name.endswith(".onnx_data")
                                or p.name in ("config.json", "generation_config.json")):
                shutil.copy2(p, out / p.name)

    # torch-module habits the pipelines rely on
    def eval(self) -> "ORTModel":
        return self

    def to(self, *args: Any, **kwargs: Any) -> "ORTModel":
        target = [a for a in (*args, kwargs.get("device")) if a is not None]
        for t in target:
            if isinstance(t, (str, torch.device)) and torch.device(t).type != "cpu":
                raise ValueError(f"{type(self).__name__} runs on onnxruntime's CPU provider; .to({t!r}) is not "
                                 f"possible (load it with provider='CUDAExecutionProvider' instead)")
        return self

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.forward(*args, **kwargs)

    def _feeds(self, input_ids: Any, attention_mask: Any = None, token_type_ids: Any = None) -> dict[str, np.ndarray]:
        if input_ids is None:
            raise ValueError(f"{type(self).__name__}: input_ids is required (inputs_embeds cannot be fed to the ONNX graph)")
        ids = _numpy(input_ids)
        if ids.ndim == 1:
            ids = ids[None]
        feeds = {"input_ids": ids}
        if "attention_mask" in self.input_names:
            feeds["attention_mask"] = np.ones_like(ids) if attention_mask is None else _numpy(attention_mask)
        if "token_type_ids" in self.input_names:
            feeds["token_type_ids"] = np.zeros_like(ids) if token_type_ids is None else _numpy(token_type_ids)
        elif token_type_ids is not None and _numpy(token_type_ids).any():
            raise ValueError(f"{type(self).__name__}: token_type_ids holds segment ids other than 0 but the ONNX graph "
                             f"has no token_type_ids input (its model has one token type); leave them out")
        return feeds

    def _run(self, feeds: dict[str, np.ndarray]) -> dict[str, torch.Tensor]:
        results = self.session.run(None, feeds)
        return {name: torch.from_numpy(np.asarray(v)) for name, v in zip(self.output_names, results)}

    def forward(self, input_ids: Any = None, attention_mask: Any = None, token_type_ids: Any = None,
                return_dict: bool | None = None, **kwargs: Any) -> Any:
        _check_kwargs(self, kwargs)
        out = self._run(self._feeds(input_ids, attention_mask, token_type_ids))
        result = self._output_class(**{k: out[k] for k in self._outputs})
        return result if return_dict is not False else result.to_tuple()

    _output_class: Any = O.BaseModelOutput

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name_or_path or 'session'}, inputs={self.input_names})"


def _check_kwargs(model: ORTModel, kwargs: dict[str, Any]) -> None:
    flags = {"output_attentions", "output_hidden_states", "use_cache", "labels"}
    unknown = sorted(k for k, v in kwargs.items() if v not in (None, False) and k not in ("use_cache",))
    asked = [k for k in unknown if k in flags]
    if asked:
        raise ValueError(f"{type(model).__name__}: {asked} cannot be computed by the exported ONNX graph "
                         f"(its outputs are {model.output_names}); run the PyTorch model for them")
    if unknown:
        raise TypeError(f"{type(model).__name__}.forward got unexpected arguments {unknown}")


class ORTModelForFeatureExtraction(ORTModel):
    """``last_hidden_state`` of an encoder exported for ``feature-extraction``."""

    _head = "base"
    _outputs = ("last_hidden_state",)
    _output_class = O.BaseModelOutput


class ORTModelForSequenceClassification(ORTModel):
    """``logits`` [batch, num_labels] of a model exported for ``text-classification``."""

    _head = "sequence-classification"
    _outputs = ("logits",)
    _output_class = O.SequenceClassifierOutput


class ORTModelForTokenClassification(ORTModel):
    """``logits`` [batch, seq, num_labels] of a model exported for ``token-classification``."""

    _head = "token-classification"
    _outputs = ("logits",)
    _output_class = O.TokenClassifierOutput


class ORTModelForQuestionAnswering(ORTModel):
    """``start_logits`` and ``end_logits`` of a model exported for ``question-answering``."""

    _head = "question-answering"
    _outputs = ("start_logits", "end_logits")
    _output_class = O.QuestionAnsweringModelOutput


class ORTModelForMaskedLM(ORTModel):
    """``logits`` [batch, seq, vocab] of a model exported for ``fill-mask``."""

    _head = "masked-lm"
    _outputs = ("logits",)
    _output_class = O.MaskedLMOutput


class ORTModelForCausalLM(ORTModel):
    """A decoder exported for ``text-generation-with-past`` (or ``text-generation``). ``generate``
    is openformers' own (greedy, sampling, beam search, every logits processor), with the key/value
    cache carried between onnxruntime calls in a ``DynamicCache``."""

    _head = "causal-lm"
    _outputs = ("logits",)
    _is_causal_lm = True

    def __init__(self, session: Any, config: Any, model_dir: Path | None = None,
                 generation_config: Any = None) -> None:
        super().__init__(session, config, model_dir, generation_config)
        self.past_names = [n for n in self.input_names if n.startswith("past_key_values.")]
        self.use_cache = bool(self.past_names)
        self.num_layers = len(self.past_names) // 2
        if self.use_cache:
            from openformers.export.onnx import kv_shape

            _, self._kv_heads, self._head_dim = kv_shape(config)
            self._past_dtype = _NUMPY_FLOAT.get(self._input_types[self.past_names[0]], np.float32)
        if self.generation_config is None:
            from openformers.generation.config import GenerationConfig

            self.generation_config = GenerationConfig.from_model_config(config)

    def can_generate(self) -> bool:
        return True

    def forward(self, input_ids: Any = None, attention_mask: Any = None, position_ids: Any = None,
                past_key_values: Any = None, use_cache: bool | None = None, return_dict: bool | None = None,
                token_type_ids: Any = None, **kwargs: Any) -> Any:
        """``attention_mask`` covers past and new positions (default: all ones); ``position_ids``
        default to the mask's running count. ``past_key_values``: a ``DynamicCache`` (filled in place
        with the graph's ``present`` outputs) or legacy ``((key, value), ...)`` tuples."""
        from openformers.modules.cache import Cache, DynamicCache

        kwargs.pop("logits_to_keep", None)
        kwargs.pop("cache_position", None)
        _check_kwargs(self, kwargs)
        if token_type_ids is not None:  # GPT-2 would add their embeddings; the exported graph has no such input
            raise ValueError(f"{type(self).__name__}: the ONNX graph takes no token_type_ids; leave them out "
                             f"(e.g. tokenizer(..., return_token_type_ids=False))")
        ids = _numpy(input_ids)
        if ids.ndim == 1:
            ids = ids[None]
        b, q = ids.shape
        use_cache = self.use_cache if use_cache is None else use_cache
        if use_cache and not self.use_cache:
            use_cache = False  # a graph exported without past (text-generation) recomputes everything
        if past_key_values is not None and not self.use_cache:
            raise ValueError(f"{type(self).__name__}: this graph was exported without past key values "
                             f"(task text-generation); export with --task text-generation-with-past to use a cache")
        if isinstance(past_key_values, Cache) and not isinstance(past_key_values, DynamicCache):
            raise ValueError(f"{type(self).__name__} carries its cache in a DynamicCache, not a {type(past_key_values).__name__}")
        legacy = (past_key_values.to_legacy_cache() if isinstance(past_key_values, DynamicCache)
                  else tuple(past_key_values or ()))
        past_len = int(legacy[0][0].shape[-2]) if legacy else 0
        mask = np.ones((b, past_len + q), dtype=np.int64) if attention_mask is None else _numpy(attention_mask)
        if mask.shape != (b, past_len + q):
            raise ValueError(f"attention_mask has shape {mask.shape}; it must cover the {past_len} cached and {q} new "
                             f"positions: ({b}, {past_len + q})")
        if position_ids is None:
            positions = np.clip(np.cumsum(mask, axis=-1) - 1, 0, None)[:, past_len:]
        else:
            positions = _numpy(position_ids)
            positions = np.broadcast_to(positions, (b, q)).copy() if positions.shape != (b, q) else positions
        feeds = {"input_ids": ids, "attention_mask": mask, "position_ids": positions}
        if self.use_cache:
            if legacy and len(legacy) != self.num_layers:
                raise ValueError(f"past_key_values has {len(legacy)} layers; the graph has {self.num_layers}")
            empty = np.zeros((b, self._kv_heads, 0, self._head_dim), dtype=self._past_dtype)
            for i in range(self.num_layers):
                k, v = legacy[i] if legacy else (empty, empty)
                feeds[f"past_key_values.{i}.key"] = _numpy(k, self._past_dtype)
                feeds[f"past_key_values.{i}.value"] = _numpy(v, self._past_dtype)
        out = self._run({k: v for k, v in feeds.items() if k in self.input_names})
        cache = None
        if self.use_cache and use_cache:
            keys = [out[f"present.{i}.key"] for i in range(self.num_layers)]
            values = [out[f"present.{i}.value"] for i in range(self.num_layers)]
            cache = past_key_values if isinstance(past_key_values, DynamicCache) else DynamicCache()
            cache.keys[:] = keys  # the graph returns past and new positions together
            cache.values[:] = values
        result = O.CausalLMOutputWithPast(logits=out["logits"], past_key_values=cache)
        return result if return_dict is not False else result.to_tuple()

    def generate(self, input_ids: Any = None, attention_mask: Any = None, **kwargs: Any) -> Any:
        """openformers' ``generate`` over onnxruntime (same arguments and outputs as the PyTorch models')."""
        from openformers.generation.utils import generate

        if not self.use_cache:
            kwargs.setdefault("use_cache", False)
        return generate(self, input_ids, attention_mask, **kwargs)
