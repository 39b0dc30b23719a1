"""The user's optimizer and scheduler, wrapped by ``Accelerator.prepare``: they step only on the
micro-batches that synchronise gradients (and the scheduler not after a skipped fp16 update)."""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from openformers.distributed.data import GradientState


class AcceleratedOptimizer(torch.optim.Optimizer):
    """The user's optimizer: steps and zeroes only on steps that synchronise gradients;
    with a gradient scaler, ``step`` is the scaler's (skipped on overflow)."""

    def __init__(self, optimizer: torch.optim.Optimizer, gradient_state: GradientState,
                 scaler: torch.amp.GradScaler | None = None) -> None:
        self.optimizer = optimizer
        self.scaler = scaler
        self.gradient_state = gradient_state
        self._is_overflow = False

    # the wrapped optimizer's state is the state: no copy of its own
    @property
    def state(self) -> Any:  # type: ignore[override]
        return self.optimizer.state

    @property
    def param_groups(self) -> list[dict[str, Any]]:  # type: ignore[override]
        return self.optimizer.param_groups

    @param_groups.setter
    def param_groups(self, value: list[dict[str, Any]]) -> None:
        self.optimizer.param_groups = value

    @property
    def defaults(self) -> dict[str, Any]:  # type: ignore[override]
        return self.optimizer.defaults

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        self.optimizer.add_param_group(param_group)

    def state_dict(self) -> dict[str, Any]:
        return self.optimizer.state_dict()

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.optimizer.load_state_dict(state_dict)

    def zero_grad(self, set_to_none: bool = True) -> None:
        if self.gradient_state.sync_gradients:
            self.optimizer.zero_grad(set_to_none=set_to_none)

    def step(self, closure: Callable[[], float] | None = None) -> Any:  # type: ignore[override]
        if not self.gradient_state.sync_gradients:
            return None
        if self.scaler is None:
            self._is_overflow = False
            return self.optimizer.step(closure)
        scale = self.scaler.get_scale()
        self.scaler.step(self.optimizer, closure)
        self.scaler.update()
        self._is_overflow = self.scaler.get_scale() < scale
        return None

    @property
    def step_was_skipped(self) -> bool:
        return self._is_overflow

    def __repr__(self) -> str:
        return f"AcceleratedOptimizer({self.optimizer!r})"


class AcceleratedScheduler:
    """Steps the user's scheduler with the optimizer: not on accumulating steps nor after a skipped
    update; once per process (the schedule counts samples) unless batches are split."""

    def __init__(self, scheduler: Any, optimizers: list[AcceleratedOptimizer], gradient_state: GradientState,
                 num_processes: int, step_with_optimizer: bool = True, split_batches: bool = False) -> None:
        self.scheduler = scheduler
        self.optimizers = optimizers
        self.gradient_state = gradient_state
        self.num_processes = num_processes
        self.step_with_optimizer = step_with_optimizer
        self.split_batches = split_batches

    def step(self, *args: Any, **kwargs: Any) -> None:
        if not self.step_with_optimizer:
            self.scheduler.step(*args, **kwargs)
            return
        if not self.gradient_state.sync_gradients:
            return
        if any(o.step_was_skipped for o in self.optimizers):
            return
        for _ in range(1 if self.split_batches else self.num_processes):
            # past its total length a scheduler may raise (OneCycleLR): stop stepping there
            total = getattr(self.scheduler, "total_steps", None)
            if total is not None and self.scheduler.last_epoch >= total:
                break
            self.scheduler.step(*args, **kwargs)

    def get_last_lr(self) -> list[float]:
        return self.scheduler.get_last_lr()

    def state_dict(self) -> dict[str, Any]:
        return self.scheduler.state_dict()

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.scheduler.load_state_dict(state_dict)

    def __getattr__(self, name: str) -> Any:
        if name == "scheduler":
            raise AttributeError(name)
        return getattr(self.scheduler, name)
