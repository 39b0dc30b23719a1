"""Data loaders prepared for data-parallel training.

A prepared loader deals the batches of the user's loader round-robin over the processes
(process ``p`` gets batches ``p, p + n, p + 2n, ...``), so ``n`` processes with batch size ``b``
see, step by step, the samples one process sees with batch size ``n * b``. With ``even_batches``
(the default) the last round is completed with samples from the start of the epoch, so every
process runs the same number of full batches; ``GradientState.remainder`` says how many of the
last round's gathered samples are real, and ``Accelerator.gather_for_metrics`` drops the others.

Shuffling draws the epoch's permutation from a generator seeded with ``seed + epoch``, the same
on every process, so a loader's position is two numbers (epoch, batches taken) that
``state_dict`` / ``load_state_dict`` save and restore; ``skip_first_batches`` starts an epoch
part-way without loading the skipped samples.
"""
from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch.utils.data import BatchSampler, DataLoader, RandomSampler, Sampler


@dataclass
class GradientState:
    """What the Accelerator and its loaders share about the current step."""

    num_steps: int = 1
    sync_gradients: bool = True
    end_of_dataloader: bool = False
    # real samples in the last gathered round; -1: not at the end of a loader (nothing to drop)
    remainder: int = -1
    plugin_kwargs: dict[str, Any] | None = None


class SeededRandomSampler(Sampler[int]):
    """A random permutation per epoch from ``seed + epoch``: the same on every process."""

    def __init__(self, length: int, seed: int) -> None:
        self.length, self.seed, self.epoch = length, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self) -> Iterator[int]:
        g = torch.Generator().manual_seed(self.seed + self.epoch)
        return iter(torch.randperm(self.length, generator=g).tolist())

    def __len__(self) -> int:
        return self.length


def _local_batches(batches: Iterator[list[int]], batch_size: int, num_processes: int, rank: int,
                   even_batches: bool, drop_last: bool) -> Iterator[list[int]]:
    """This process's share of the global batches (see the module docstring)."""
    if num_processes == 1:
        yield from batches
        return
    head: list[int] = []  # the epoch's first samples, to complete the last round
    round_: list[list[int]] = []
    for batch in batches:
        if len(head) < batch_size * num_processes:
            head.extend(batch[: batch_size * num_processes - len(head)])
        round_.append(list(batch))
        if len(round_) == num_processes and len(round_[-1]) == batch_size:
            yield round_[rank]
            round_ = []
    if not round_ or drop_last:
        return
    if not even_batches:
        if rank < len(round_):
            yield round_[rank]
        return
    flat = [i for b in round_ for i in b]
    need = batch_size * num_processes - len(flat)
    while need > 0:  # a dataset smaller than one round repeats itself
        flat.extend(head[:need])
        need = batch_size * num_processes - len(flat)
    yield flat[rank * batch_size:(rank + 1) * batch_size]


def _split_batches(batches: Iterator[list[int]], batch_size: int, num_processes: int, rank: int) -> Iterator[list[int]]:
    """With ``split_batches``: this process's slice of every batch (a short last batch completed
    with the epoch's first samples)."""
    part = batch_size // num_processes
    head: list[int] = []
    for batch in batches:
        batch = list(batch)
        if not head:
            head = batch[:]
        while len(batch) < batch_size:
            batch.extend(head[: batch_size - len(batch)])
        yield batch[rank * part:(rank + 1) * part]


def send_to_device(obj: Any, device: torch.device, non_blocking: bool = False) -> Any:
    """``obj`` with every tensor in it moved to ``device`` (containers keep their types)."""
    if isinstance(obj, torch.Tensor):
        return obj if obj.device == device else obj.to(device, non_blocking=non_blocking)
    if hasattr(obj, "to") and hasattr(obj, "data") and isinstance(getattr(obj, "data"), Mapping):  # BatchEncoding
        return obj.to(device)
    if isinstance(obj, Mapping):
        try:
            return type(obj)({k: send_to_device(v, device, non_blocking) for k, v in obj.items()})
        except TypeError:
            return {k: send_to_device(v, device, non_blocking) for k, v in obj.items()}
    if isinstance(obj, tuple) and hasattr(obj, "_fields"):
        return type(obj)(*(send_to_device(v, device, non_blocking) for v in obj))
    if isinstance(obj, (list, tuple)):
        return type(obj)(send_to_device(v, device, non_blocking) for v in obj)
    return obj


class DataLoaderShard:
    """A user's ``DataLoader`` sharded over the processes, its batches on this process's device."""

    def __init__(self, loader: DataLoader, *, num_processes: int, process_index: int, device: torch.device | None,
                 gradient_state: GradientState, seed: int, even_batches: bool = True, split_batches: bool = False) -> None:
        if loader.batch_size is None and loader.batch_sampler is None:
            raise ValueError("prepare(): the DataLoader has batch_size=None (it yields single samples); "
                             "give it a batch_size to shard it over processes")
        self.base = loader
        self.dataset = loader.dataset
        self.num_processes, self.process_index = num_processes, process_index
        self.device = device
        self.gradient_state = gradient_state
        self.even_batches = even_batches
        self.split_batches = split_batches and num_processes > 1
        batch_sampler = loader.batch_sampler
        self.batch_size: int = loader.batch_size if loader.batch_size is not None else getattr(batch_sampler, "batch_size")
        self.drop_last: bool = bool(getattr(batch_sampler, "drop_last", loader.drop_last))
        sampler = getattr(batch_sampler, "sampler", loader.sampler)
        if isinstance(sampler, RandomSampler) and not sampler.replacement and sampler._num_samples is None:
            if sampler.generator is not None:  # the user's own generator decides the seed
                seed = int(torch.empty((), dtype=torch.int64).random_(generator=sampler.generator))
            sampler = SeededRandomSampler(len(sampler.data_source), seed)
            batch_sampler = BatchSampler(sampler, self.batch_size, self.drop_last)
        self.sampler = sampler
        self.batch_sampler = batch_sampler
        self._epoch = 0  # the epoch the next iteration runs
        self._skip = 0  # batches of it already taken (resume)
        self._position: list[int] | None = None  # [epoch, batches taken] of the running iteration
        # the DataLoader that loads this process's batches, with the user's workers and collate_fn
        self._loader = DataLoader(
            loader.dataset, batch_sampler=_ShardSampler(self), collate_fn=loader.collate_fn,
            num_workers=loader.num_workers, pin_memory=loader.pin_memory, timeout=loader.timeout,
            worker_init_fn=loader.worker_init_fn, multiprocessing_context=loader.multiprocessing_context,
            # a private generator: starting an epoch must not draw from the global RNG, or a resumed
            # run (whose epoch starts after the restore) would draw other dropout masks
            generator=loader.generator if loader.generator is not None else torch.Generator().manual_seed(seed),
            prefetch_factor=loader.prefetch_factor if loader.num_workers > 0 else None,
            persistent_workers=loader.persistent_workers and loader.num_workers > 0,
        )

    # -- size -----------------------------------------------------------------------------------
    @property
    def total_batch_size(self) -> int:
        return self.batch_size if self.split_batches else self.batch_size * self.num_processes

    @property
    def total_dataset_length(self) -> int:
        return len(self.dataset)

    def _global_batches(self) -> int:
        return len(self.batch_sampler)

    def __len__(self) -> int:
        n, p = self._global_batches(), self.num_processes
        if p == 1 or self.split_batches:
            return n
        if self.drop_last:
            return n // p
        return -(-n // p) if self.even_batches else n // p + (self.process_index < n % p)

    def set_epoch(self, epoch: int) -> None:
        self._epoch = epoch

    # -- position -------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, int]:
        """Where the next batch comes from: the epoch and the batches of it already taken."""
        epoch, taken = self._position if self._position is not None else (self._epoch, self._skip)
        out = {"epoch": epoch, "batches": taken}
        if taken >= len(self):  # the epoch is spent: the next batch is the next epoch's first
            out = {"epoch": epoch + 1, "batches": 0}
        if isinstance(self.sampler, SeededRandomSampler):
            out["seed"] = self.sampler.seed
        return out

    def load_state_dict(self, state: Mapping[str, int]) -> None:
        self._epoch, self._skip = int(state["epoch"]), int(state["batches"])
        self._position = None
        if "seed" in state and isinstance(self.sampler, SeededRandomSampler):
            self.sampler.seed = int(state["seed"])

    def _indices(self, epoch: int, skip: int) -> Iterator[list[int]]:
        if hasattr(self.sampler, "set_epoch"):
            self.sampler.set_epoch(epoch)
        if self.split_batches:
            batches = _split_batches(iter(self.batch_sampler), self.batch_size, self.num_processes, self.process_index)
        else:
            batches = _local_batches(iter(self.batch_sampler), self.batch_size, self.num_processes, self.process_index,
                                     self.even_batches, self.drop_last)
        for i, batch in enumerate(batches):
            if i >= skip:
                yield batch

    # -- iteration ------------------------------------------------------------------------------
    def __iter__(self) -> Iterator[Any]:
        return self._iterate(None)

    def _iterate(self, skip: int | None) -> Iterator[Any]:
        epoch = self._epoch
        skip = self._skip if skip is None else skip
        self._epoch, self._skip = epoch + 1, 0
        self._position = [epoch, skip]
        self._pending = (epoch, skip)
        total = len(self)
        state = self.gradient_state
        state.end_of_dataloader, state.remainder = False, -1
        try:
            for taken, batch in enumerate(self._loader, start=skip + 1):
                last = taken >= total
                if last:
                    state.end_of_dataloader = True
                    if self.num_processes > 1 and (self.even_batches or self.split_batches) and not self.drop_last:
                        state.remainder = len(self.dataset) % self.total_batch_size
                    elif self.num_processes == 1:
                        state.remainder = -1
                self._position[1] = taken
                yield batch if self.device is None else send_to_device(batch, self.device, non_blocking=True)
        finally:
            # spent or abandoned (a `break`): the next pass is the next epoch, from its start
            self._position = None
        state.end_of_dataloader = True

    def skip_first_batches(self, num_batches: int) -> "SkipBatches":
        return SkipBatches(self, num_batches)

    def __getattr__(self, name: str) -> Any:  # collate_fn, num_workers, ... of the user's loader
        if name in ("base", "_loader"):
            raise AttributeError(name)
        return getattr(self.base, name)


class _ShardSampler(Sampler[list[int]]):
    """The batch sampler of the inner DataLoader: the batches the running iteration asks for."""

    def __init__(self, owner: DataLoaderShard) -> None:
        self.owner = owner

    def __iter__(self) -> Iterator[list[int]]:
        epoch, skip = self.owner._pending
        return self.owner._indices(epoch, skip)

    def __len__(self) -> int:
        return len(self.owner)


class SkipBatches:
    """One pass over a prepared loader that starts after its first ``num_batches`` batches
    (of the epoch it runs); the loader's next pass is a whole epoch again."""

    def __init__(self, loader: DataLoaderShard, num_batches: int) -> None:
        self.loader, self.num_batches = loader, num_batches

    def __iter__(self) -> Iterator[Any]:
        return self.loader._iterate(self.num_batches)

    def __len__(self) -> int:
        return max(0, len(self.loader) - self.num_batches)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.loader, name)


def skip_first_batches(dataloader: Any, num_batches: int = 0) -> Any:
    """``dataloader`` for one pass that skips its first ``num_batches`` batches."""
    if isinstance(dataloader, DataLoaderShard):
        return SkipBatches(dataloader, num_batches)
    if isinstance(dataloader, SkipBatches):
        return SkipBatches(dataloader.loader, num_batches)
    if isinstance(dataloader, DataLoader):
        import itertools

        class _Skipped:
            def __iter__(self) -> Iterator[Any]:
                return itertools.islice(iter(dataloader), num_batches, None)

            def __len__(self) -> int:
                return max(0, len(dataloader) - num_batches)

        return _Skipped()
    raise TypeError(f"skip_first_batches: expected a DataLoader, got {type(dataloader).__name__}")


def split_list(items: Sequence[Any] | Mapping[str, Any] | torch.Tensor, num: int, index: int, pad: bool) -> Any:
    """Process ``index``'s contiguous part of ``items`` split ``num`` ways (the first parts one longer);
    with ``pad``, short parts repeat their last element to the longest part's length."""
    if isinstance(items, Mapping):
        return {k: split_list(v, num, index, pad) for k, v in items.items()}
    n = len(items)
    per, extra = divmod(n, num)
    start = index * per + min(index, extra)
    end = start + per + (index < extra)
    part = items[start:end]
    if pad and extra and index >= extra and n:
        last = items[end - 1:end] if end > start else items[n - 1:n]
        part = torch.cat([part, last]) if isinstance(part, torch.Tensor) else list(part) + list(last)
    return part
