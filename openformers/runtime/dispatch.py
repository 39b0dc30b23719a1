"""Which model calls the runtime runs on its own plan.

``PreTrainedModel.__call__`` asks :func:`inference_runner` whenever no gradient is recorded (and the
model has no hooks, and nothing is being compiled or exported). A family's runtime module registers a
builder with :func:`register_runner`; the builder looks at the model and the call and returns a
callable that gives the same outputs as ``model.forward`` would, or ``None`` when its plan does not
cover the call (an unknown layer, a hook or an adapter it does not merge inside, an argument it does not handle), in which
case the model's own ``forward`` runs. Builders keep what they make in tables of their own, keyed
weakly by the model; nothing is stored on a module and no parameter is changed.

Training calls (the model in training mode, autograd recording, no hooks on it, nothing compiled or
exported) ask :func:`training_runner` the same way, with builders registered by
:func:`register_training_runner`: a runner there gives the outputs ``model.forward`` gives and records
a graph whose gradients are the forward's, from the parameters themselves (no copies).
"""
from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from torch import nn

logger = logging.getLogger(__name__)

Runner = Callable[..., Any]
Builder = Callable[[nn.Module, tuple, dict], "Runner | None"]

# model class -> its builders, in the order registered; looked up along the model class's MRO, so a subclass
# inherits its family's; the first runner a builder gives runs the call
_BUILDERS: dict[type, list[Builder]] = {}
_TRAINING_BUILDERS: dict[type, list[Builder]] = {}


def register_runner(model_class: type, builder: Builder) -> None:
    """Let ``builder(model, args, kwargs)`` run inference calls of ``model_class`` and its subclasses (builders
    that decline, returning None, leave the call to the next one)."""
    builders = _BUILDERS.setdefault(model_class, [])
    if builder not in builders:
        builders.append(builder)


def register_training_runner(model_class: type, builder: Builder) -> None:
    """Let ``builder(model, args, kwargs)`` run training calls of ``model_class`` and its subclasses."""
    builders = _TRAINING_BUILDERS.setdefault(model_class, [])
    if builder not in builders:
        builders.append(builder)


def _first_runner(table: dict[type, list[Builder]], model: nn.Module, args: tuple, kwargs: dict) -> Runner | None:
    for cls in type(model).__mro__:
        for builder in table.get(cls, ()):
            runner = builder(model, args, kwargs)
            if runner is not None:
                return runner
    return None


def inference_runner(model: nn.Module, args: tuple, kwargs: dict) -> Runner | None:
    """The runner for this call of ``model``, or ``None`` to run ``model.forward``."""
    return _first_runner(_BUILDERS, model, args, kwargs)


def training_runner(model: nn.Module, args: tuple, kwargs: dict) -> Runner | None:
    """The runner for this training call of ``model``, or ``None`` to run ``model.forward``."""
    return _first_runner(_TRAINING_BUILDERS, model, args, kwargs)


# the runners this package ships register themselves on import (after register_runner exists)
from openformers.runtime import encoder as _encoder  # noqa: E402,F401
from openformers.runtime import decoder as _decoder  # noqa: E402,F401
