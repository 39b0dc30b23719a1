"""Learning-rate schedules with the Hugging Face names, as ``LambdaLR`` multipliers."""
from __future__ import annotations

import enum
import math
from functools import partial
from typing import Any

from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR, ReduceLROnPlateau


def _constant(step: int) -> float:
    return 1.0


def _constant_warmup(step: int, *, warmup: int) -> float:
    return step / max(1, warmup) if step < warmup else 1.0


def _linear(step: int, *, warmup: int, total: int) -> float:
    if step < warmup:
        return step / max(1, warmup)
    return max(0.0, (total - step) / max(1, total - warmup))


def _cosine(step: int, *, warmup: int, total: int, num_cycles: float = 0.5, min_lr_rate: float = 0.0) -> float:
    if step < warmup:
        return step / max(1, warmup)
    progress = (step - warmup) / max(1, total - warmup)
    factor = 0.5 * (1.0 + math.cos(math.pi * num_cycles * 2.0 * progress))
    return max(0.0, factor * (1 - min_lr_rate) + min_lr_rate)


def _cosine_restarts(step: int, *, warmup: int, total: int, num_cycles: int = 1) -> float:
    if step < warmup:
        return step / max(1, warmup)
    progress = (step - warmup) / max(1, total - warmup)
    if progress >= 1.0:
        return 0.0
    return max(0.0, 0.5 * (1.0 + math.cos(math.pi * ((num_cycles * progress) % 1.0))))


def _polynomial(step: int, *, warmup: int, total: int, lr_init: float, lr_end: float = 1e-7, power: float = 1.0) -> float:
    if step < warmup:
        return step / max(1, warmup)
    if step > total:
        return lr_end / lr_init
    decay = (lr_init - lr_end) * (1 - (step - warmup) / max(1, total - warmup)) ** power + lr_end
    return decay / lr_init


def _inverse_sqrt(step: int, *, warmup: int, timescale: int | None = None) -> float:
    if step < warmup:
        return step / max(1, warmup)
    timescale = timescale or (warmup or 10_000)
    shift = timescale - warmup
    return 1.0 / math.sqrt((step + shift) / timescale)


def get_scheduler(
    name: str,
    optimizer: Optimizer,
    num_warmup_steps: int = 0,
    num_training_steps: int | None = None,
    scheduler_specific_kwargs: dict[str, Any] | None = None,
) -> Any:
    """Build the schedule ``name`` (linear, cosine, cosine_with_restarts, polynomial, constant, ...)."""
    kw = dict(scheduler_specific_kwargs or {})
    name = name.value if isinstance(name, enum.Enum) else name
    if name == "reduce_lr_on_plateau":
        return ReduceLROnPlateau(optimizer, **kw)
    if name == "constant":
        return LambdaLR(optimizer, _constant)
    if name == "constant_with_warmup":
        return LambdaLR(optimizer, partial(_constant_warmup, warmup=num_warmup_steps))
    if name == "inverse_sqrt":
        return LambdaLR(optimizer, partial(_inverse_sqrt, warmup=num_warmup_steps, **kw))
    if num_training_steps is None:
        raise ValueError(f"lr_scheduler_type={name!r} needs num_training_steps")
    common = dict(warmup=num_warmup_steps, total=num_training_steps)
    if name == "linear":
        return LambdaLR(optimizer, partial(_linear, **common))
    if name in ("cosine", "cosine_with_min_lr"):
        if "min_lr" in kw:
            kw["min_lr_rate"] = kw.pop("min_lr") / optimizer.defaults["lr"]
        return LambdaLR(optimizer, partial(_cosine, **common, **kw))
    if name == "cosine_with_restarts":
        return LambdaLR(optimizer, partial(_cosine_restarts, **common, **kw))
    if name == "polynomial":
        return LambdaLR(optimizer, partial(_polynomial, **common, lr_init=optimizer.defaults["lr"], **kw))
    if name == "warmup_stable_decay":
        decay = int(kw.get("num_decay_steps", max(1, num_training_steps // 10)))
        stable_end = num_training_steps - decay

        def wsd(step: int) -> float:
            if step < num_warmup_steps:
                return step / max(1, num_warmup_steps)
            if step < stable_end:
                return 1.0
            return max(0.0, (num_training_steps - step) / max(1, decay))

        return LambdaLR(optimizer, wsd)
    raise ValueError(f"unknown lr_scheduler_type {name!r}")


class SchedulerType(str, enum.Enum):
    """The schedule names ``lr_scheduler_type`` and ``get_scheduler`` take."""

    LINEAR = "linear"
    COSINE = "cosine"
    COSINE_WITH_RESTARTS = "cosine_with_restarts"
    POLYNOMIAL = "polynomial"
    CONSTANT = "constant"
    CONSTANT_WITH_WARMUP = "constant_with_warmup"
    INVERSE_SQRT = "inverse_sqrt"
    REDUCE_ON_PLATEAU = "reduce_lr_on_plateau"
    COSINE_WITH_MIN_LR = "cosine_with_min_lr"
    WARMUP_STABLE_DECAY = "warmup_stable_decay"


# The reference's per-schedule constructors, each a named entry point to get_scheduler.
def get_constant_schedule(optimizer: Optimizer, last_epoch: int = -1) -> LambdaLR:
    """A constant learning rate."""
    return LambdaLR(optimizer, _constant, last_epoch=last_epoch)


def get_constant_schedule_with_warmup(optimizer: Optimizer, num_warmup_steps: int, last_epoch: int = -1) -> LambdaLR:
    """Linear warmup from 0 over ``num_warmup_steps``, then constant."""
    return LambdaLR(optimizer, partial(_constant_warmup, warmup=num_warmup_steps), last_epoch=last_epoch)


def get_linear_schedule_with_warmup(optimizer: Optimizer, num_warmup_steps: int, num_training_steps: int,
                                    last_epoch: int = -1) -> LambdaLR:
    """Linear warmup, then linear decay to 0 at ``num_training_steps``."""
    return LambdaLR(optimizer, partial(_linear, warmup=num_warmup_steps, total=num_training_steps), last_epoch=last_epoch)


def get_cosine_schedule_with_warmup(optimizer: Optimizer, num_warmup_steps: int, num_training_steps: int,
                                    num_cycles: float = 0.5, last_epoch: int = -1) -> LambdaLR:
    """Linear warmup, then a cosine from the initial rate down to 0 (``num_cycles`` half-waves * 2)."""
    return LambdaLR(optimizer, partial(_cosine, warmup=num_warmup_steps, total=num_training_steps, num_cycles=num_cycles),
                    last_epoch=last_epoch)


def get_cosine_with_hard_restarts_schedule_with_warmup(optimizer: Optimizer, num_warmup_steps: int,
                                                       num_training_steps: int, num_cycles: int = 1,
                                                       last_epoch: int = -1) -> LambdaLR:
    """Linear warmup, then ``num_cycles`` cosine decays, each restarting at the initial rate."""
    return LambdaLR(optimizer, partial(_cosine_restarts, warmup=num_warmup_steps, total=num_training_steps,
                                       num_cycles=num_cycles), last_epoch=last_epoch)


def get_polynomial_decay_schedule_with_warmup(optimizer: Optimizer, num_warmup_steps: int, num_training_steps: int,
                                              lr_end: float = 1e-7, power: float = 1.0, last_epoch: int = -1) -> LambdaLR:
    """Linear warmup, then polynomial decay from the optimizer's rate to ``lr_end``."""
    lr_init = optimizer.defaults["lr"]
    if not lr_init > lr_end:
        raise ValueError(f"lr_end ({lr_end}) must be smaller than the optimizer's initial lr ({lr_init})")
    return LambdaLR(optimizer, partial(_polynomial, warmup=num_warmup_steps, total=num_training_steps, lr_init=lr_init,
                                       lr_end=lr_end, power=power), last_epoch=last_epoch)


def get_inverse_sqrt_schedule(optimizer: Optimizer, num_warmup_steps: int, timescale: int | None = None,
                              last_epoch: int = -1) -> LambdaLR:
    """Linear warmup, then decay proportional to 1 / sqrt(step)."""
    return LambdaLR(optimizer, partial(_inverse_sqrt, warmup=num_warmup_steps, timescale=timescale), last_epoch=last_epoch)


def get_wsd_schedule(optimizer: Optimizer, num_warmup_steps: int, num_training_steps: int,
                     num_decay_steps: int | None = None, last_epoch: int = -1) -> Any:
    """Warmup, a stable phase, then linear decay over the last ``num_decay_steps``."""
    kw = {} if num_decay_steps is None else {"num_decay_steps": num_decay_steps}
    return get_scheduler("warmup_stable_decay", optimizer, num_warmup_steps, num_training_steps, kw)
