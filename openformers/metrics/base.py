"""The ``Metric`` base class: evaluate-style accumulation (`add`, `add_batch`) and `compute`."""
from __future__ import annotations

import inspect
from typing import Any, Sequence


class Metric:
    """Base class of every metric returned by :func:`openformers.metrics.load`.

    Subclasses set ``name``, optionally ``input_names`` (the per-example inputs, by default
    ``("predictions", "references")``) and implement ``_compute(**inputs, **kwargs)``.
    Inputs given to :meth:`add` / :meth:`add_batch` are buffered in memory until
    :meth:`compute` is called; calling :meth:`compute` with inputs uses those instead.
    """

    name: str = "metric"
    input_names: tuple[str, ...] = ("predictions", "references")
    # config names the metric understands; None means the metric has no configurations
    config_names: tuple[str, ...] | None = None

    def __init__(self, config_name: str | None = None, **kwargs: Any) -> None:
        if config_name in ("default", None):
            config_name = None
        elif self.config_names is None or config_name not in self.config_names:
            known = ", ".join(repr(c) for c in (self.config_names or ())) or "none"
            raise ValueError(
                f"Unknown config_name {config_name!r} for metric {self.name!r}; known configs: {known}."
            )
        self.config_name = config_name or "default"
        # keyword arguments given at load time become defaults for compute()
        self._default_kwargs = kwargs
        self._buffer: dict[str, list[Any]] = {k: [] for k in self.input_names}

    # -- accumulation -------------------------------------------------------------------------
    def add(self, *, prediction: Any = None, reference: Any = None, **kwargs: Any) -> None:
        """Buffer one example (``prediction=``, ``reference=``; or the metric's own input names)."""
        singular = {"predictions": prediction, "references": reference}
        for name in self.input_names:
            value = kwargs.pop(name[:-1], None) if name.endswith("s") else kwargs.pop(name, None)
            if value is None:
                value = singular.get(name)
            if value is None and name in singular:
                raise ValueError(f"{self.name}.add() needs `{name[:-1]}=`.")
            self._buffer[name].append(value)
        if kwargs:
            raise TypeError(f"{self.name}.add() got unexpected arguments: {sorted(kwargs)}.")

    def add_batch(self, *, predictions: Any = None, references: Any = None, **kwargs: Any) -> None:
        """Buffer a batch of examples (``predictions=``, ``references=``)."""
        given = {"predictions": predictions, "references": references}
        batch: dict[str, list[Any]] = {}
        for name in self.input_names:
            value = kwargs.pop(name, None)
            if value is None:
                value = given.get(name)
            if value is None:
                raise ValueError(f"{self.name}.add_batch() needs `{name}=`.")
            batch[name] = _as_list(value, name)
        if kwargs:
            raise TypeError(f"{self.name}.add_batch() got unexpected arguments: {sorted(kwargs)}.")
        self._check_lengths(batch)
        for name, values in batch.items():
            self._buffer[name].extend(values)

    # -- computation --------------------------------------------------------------------------
    def compute(self, *, predictions: Any = None, references: Any = None, **kwargs: Any) -> Any:
        """Compute the metric on everything added so far plus the given inputs; clears the buffer."""
        kwargs = {**self._default_kwargs, **kwargs}
        given = {"predictions": predictions, "references": references}
        inputs: dict[str, Any] = {}
        for name in self.input_names:
            value = kwargs.pop(name, None)
            inputs[name] = given.get(name) if value is None else value
        self._check_kwargs(kwargs)
        provided = [n for n, v in inputs.items() if v is not None]
        if provided and len(provided) != len(self.input_names):
            missing = [n for n in self.input_names if inputs[n] is None]
            raise ValueError(f"{self.name}.compute() got {provided} but is missing {missing}.")
        if provided:  # like `evaluate`, given inputs join anything added earlier
            batch = {n: _as_list(v, n) for n, v in inputs.items()}
            self._check_lengths(batch)
            for name, values in batch.items():
                self._buffer[name].extend(values)
        elif not any(self._buffer[n] for n in self.input_names):
            raise ValueError(
                f"{self.name}.compute() has no data: pass {', '.join(f'{n}=' for n in self.input_names)} "
                "or call add()/add_batch() first."
            )
        inputs = self._buffer
        self._buffer = {k: [] for k in self.input_names}
        return self._compute(**inputs, **kwargs)

    def _compute(self, **kwargs: Any) -> Any:  # pragma: no cover - abstract
        raise NotImplementedError

    # -- helpers ------------------------------------------------------------------------------
    @property
    def description(self) -> str:
        """What the metric computes (the class docstring)."""
        return (type(self).__doc__ or "").strip()

    def accepted_kwargs(self) -> set[str]:
        """Names of the keyword arguments ``compute`` accepts besides the inputs."""
        params = inspect.signature(self._compute).parameters
        plain = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
        return {n for n, p in params.items() if p.kind in plain and n not in self.input_names}

    def _check_kwargs(self, kwargs: dict[str, Any]) -> None:
        unknown = set(kwargs) - self.accepted_kwargs()
        if unknown:
            raise TypeError(
                f"{self.name}.compute() got unexpected arguments {sorted(unknown)}; "
                f"it accepts {sorted(self.accepted_kwargs())}."
            )

    def _check_lengths(self, inputs: dict[str, list[Any]]) -> None:
        lengths = {n: len(v) for n, v in inputs.items()}
        if len(set(lengths.values())) > 1:
            detail = ", ".join(f"{n}={k}" for n, k in lengths.items())
            raise ValueError(
                f"{self.name}: mismatch in the number of inputs ({detail}); "
                "every prediction needs exactly one reference entry."
            )

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, config_name={self.config_name!r})"


def _as_list(value: Any, name: str) -> list[Any]:
    """Turn a batch input (list, tuple, numpy array, torch tensor) into a Python list."""
    if isinstance(value, (str, bytes, dict)):
        raise TypeError(f"`{name}` must be a list of examples, got a single {type(value).__name__}.")
    if hasattr(value, "tolist") and not isinstance(value, list):
        return list(value.tolist()) if getattr(value, "ndim", 1) > 0 else [value.tolist()]
    if isinstance(value, Sequence) or hasattr(value, "__iter__"):
        return list(value)
    raise TypeError(f"`{name}` must be a list of examples, got {type(value).__name__}.")
