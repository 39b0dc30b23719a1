"""Streaming a checkpoint's tensors into a model built on the meta device.

``no_init_weights()`` builds the module tree without memory or random initialisation;
``load_tensors`` then takes the checkpoint's tensors one at a time: renames by the model's rules,
hands quantized layers every tensor under their name, reports missing, unexpected and
mismatched tensors by name, and initialises only what the checkpoint lacked. A loading that takes
longer than ``PROGRESS_DELAY`` seconds shows a tqdm bar ("Loading weights", one step a tensor) from
then on; ``openformers.utils.progress.disable_progress_bars()`` hides it.
"""
from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from openformers.core.checkpoint import CheckpointError
from openformers.utils import progress

if TYPE_CHECKING:
    from openformers.core.modeling import PreTrainedModel

logger = logging.getLogger("openformers")

# renames every architecture accepts on load (TensorFlow-era LayerNorm names)
LEGACY_RULES: tuple[tuple[str, str], ...] = ((r"LayerNorm\.gamma$", "LayerNorm.weight"), (r"LayerNorm\.beta$", "LayerNorm.bias"))

# seconds a loading runs before its progress bar appears (quick loads draw nothing)
PROGRESS_DELAY = 1.0


def load_tensors(
    model: PreTrainedModel,
    tensors: Iterator[tuple[str, torch.Tensor]],
    dtype: torch.dtype,
    ignore_mismatched_sizes: bool,
    source: str,
    progress_delay: float | None = None,
) -> dict[str, list[Any]]:
    """Fill ``model`` from ``(name, tensor)`` pairs; returns the loading info (missing, unexpected
    and mismatched keys). ``source`` names the checkpoint in errors and warnings. A progress bar
    shows once the loading has run ``progress_delay`` seconds (default ``PROGRESS_DELAY``)."""
    expected = dict(model.state_dict(keep_vars=True))
    bar = progress.tqdm(total=len(expected), desc="Loading weights", unit="tensor", leave=False,
                        delay=PROGRESS_DELAY if progress_delay is None else progress_delay)
    try:
        return _load_tensors(model, tensors, dtype, ignore_mismatched_sizes, source, expected, bar)
    finally:
        bar.close()


def _load_tensors(model: PreTrainedModel, tensors: Iterator[tuple[str, torch.Tensor]], dtype: torch.dtype,
                  ignore_mismatched_sizes: bool, source: str, expected: dict[str, torch.Tensor],
                  bar: Any) -> dict[str, list[Any]]:
    tied = model._tied_targets()
    prefix = model.base_model_prefix
    has_prefix_module = bool(prefix) and hasattr(model, prefix)
    rules = LEGACY_RULES + tuple(model.checkpoint_rules)
    loaded: set[str] = set()
    unexpected: list[str] = []
    mismatched: list[tuple[str, tuple[int, ...], tuple[int, ...]]] = []
    # quantized layers take every tensor under their name (layouts differ between writers)
    owning = {n: m for n, m in model.named_modules() if getattr(m, "_loads_own_tensors", False)}
    for ckpt_name, tensor in tensors:
        bar.update()
        name = apply_rules(ckpt_name, rules)
        if name not in expected and prefix:
            if has_prefix_module and f"{prefix}.{name}" in expected:
                name = f"{prefix}.{name}"
            elif name.startswith(prefix + ".") and name[len(prefix) + 1 :] in expected:
                name = name[len(prefix) + 1 :]
        layer_name = owning_layer(name, owning)
        if layer_name is not None:
            try:
                owning[layer_name]._set_loaded_tensor(name[len(layer_name) + 1 :], tensor, dtype)
            except ValueError as exc:
                raise CheckpointError(f"{source}: tensor {ckpt_name}: {exc}") from exc
            loaded.add(name)
            continue
        if name not in expected:
            if not any(re.search(p, name) for p in model._keys_to_ignore_on_load_unexpected):
                unexpected.append(ckpt_name)
            continue
        current = expected[name]
        if tuple(current.shape) != tuple(tensor.shape):
            mismatched.append((name, tuple(tensor.shape), tuple(current.shape)))
            continue
        set_tensor(model, name, tensor, dtype)
        loaded.add(name)
    if mismatched and not ignore_mismatched_sizes:
        detail = "; ".join(f"{n}: checkpoint {list(a)} vs model {list(b)}" for n, a, b in mismatched)
        raise CheckpointError(
            f"{source}: tensor shapes do not match {type(model).__name__}: {detail}. If the head is "
            f"meant to be replaced (e.g. a different num_labels), pass ignore_mismatched_sizes=True."
        )
    missing = [
        n for n in expected
        if n not in loaded and n not in tied and not any(re.search(p, n) for p in model._keys_to_ignore_on_load_missing)
        and owning_layer(n, owning) is None
    ]
    for layer_name, layer in owning.items():
        try:
            layer._check_loaded()
        except ValueError as exc:
            raise CheckpointError(f"{source}: layer {layer_name}: {exc}") from exc
    initialise_missing(model, missing + [m[0] for m in mismatched], loaded, dtype)
    model.tie_weights()
    still_meta = [n for n, t in list(model.named_parameters()) + list(model.named_buffers()) if t.is_meta]
    if still_meta:
        raise CheckpointError(f"{source}: tensors left without values after loading: {still_meta}")
    if missing:
        logger.warning(
            "Some weights of %s were not in the checkpoint at %s and are newly initialized: %s. "
            "Train the model before using it for predictions.",
            type(model).__name__, source, missing,
        )
    if mismatched:
        logger.warning(
            "Some weights of %s had other shapes in %s and are newly initialized: %s",
            type(model).__name__, source,
            [f"{n}: checkpoint {list(a)} vs model {list(b)}" for n, a, b in mismatched],
        )
    if unexpected:
        # a base model loaded from a checkpoint with a head is the normal case; say so quietly
        log = logger.info if all(is_head_key(k, prefix) for k in unexpected) else logger.warning
        log("Some weights in %s were not used by %s: %s", source, type(model).__name__, unexpected)
    return {"missing_keys": missing, "unexpected_keys": unexpected, "mismatched_keys": mismatched}


def set_tensor(model: PreTrainedModel, name: str, tensor: torch.Tensor, dtype: torch.dtype) -> None:
    owner_name, _, attr = name.rpartition(".")
    owner = model.get_submodule(owner_name)
    setter = getattr(owner, "_set_loaded_tensor", None)
    if setter is not None:  # quantized layers quantize or keep what the checkpoint holds
        setter(attr, tensor, dtype)
        return
    if tensor.is_floating_point() and tensor.dtype != dtype:
        tensor = tensor.to(dtype)
    if attr in owner._parameters:
        old = owner._parameters[attr]
        owner._parameters[attr] = nn.Parameter(tensor, requires_grad=old.requires_grad if old is not None else True)
    else:
        owner._buffers[attr] = tensor


def initialise_missing(model: PreTrainedModel, names: list[str], loaded: set[str], dtype: torch.dtype) -> None:
    if not names:
        return
    owners: dict[str, nn.Module] = {}
    for name in names:
        owner_name, _, attr = name.rpartition(".")
        owner = model.get_submodule(owner_name)
        current = getattr(owner, attr)
        fresh = torch.empty(current.shape, dtype=dtype if current.is_floating_point() else current.dtype)
        set_tensor(model, name, fresh, dtype)
        owners[owner_name] = owner
    for owner_name, owner in owners.items():
        # keep the siblings that did load: _init_weights resets the whole module
        keep = {
            attr: t.detach().clone()
            for attr, t in list(owner._parameters.items()) + list(owner._buffers.items())
            if t is not None and (f"{owner_name}.{attr}" if owner_name else attr) in loaded
        }
        model._init_weights(owner)
        with torch.no_grad():
            for attr, value in keep.items():
                getattr(owner, attr).copy_(value)


def owning_layer(name: str, owning: dict[str, nn.Module]) -> str | None:
    """The name of the module in ``owning`` that ``name`` (a dotted tensor name) lies under."""
    if not owning:
        return None
    head = name
    while "." in head:
        head = head.rpartition(".")[0]
        if head in owning:
            return head
    return None


def apply_rules(name: str, rules: tuple[tuple[str, str], ...]) -> str:
    for pattern, repl in rules:
        name = re.sub(pattern, repl, name)
    return name


def is_head_key(key: str, prefix: str) -> bool:
    # keys outside the base model's prefix belong to a task head the loading class lacks
    return bool(prefix) and not key.startswith(prefix + ".")


_INIT_FUNCTIONS = ("uniform_", "normal_", "trunc_normal_", "constant_", "ones_", "zeros_", "eye_", "dirac_",
                   "xavier_uniform_", "xavier_normal_", "kaiming_uniform_", "kaiming_normal_", "orthogonal_", "sparse_")


def _skip_init(tensor: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
    return tensor


@contextmanager
def no_init_weights() -> Iterator[None]:
    """Build modules on the meta device with the ``torch.nn.init`` functions switched off.

    Meta tensors take no memory, and skipping the initialisers also skips their cost (some,
    like ``nn.Embedding``'s, have no meta fast path): the checkpoint provides the values, and
    tensors it lacks are initialised after loading.
    """
    saved = {name: getattr(nn.init, name) for name in _INIT_FUNCTIONS if hasattr(nn.init, name)}
    try:
        for name in saved:
            setattr(nn.init, name, _skip_init)
        with torch.device("meta"):
            yield
    finally:
        for name, fn in saved.items():
            setattr(nn.init, name, fn)
