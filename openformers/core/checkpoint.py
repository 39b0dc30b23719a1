"""Reading and writing weight files: safetensors (single or sharded) and ``.bin`` archives.

``.bin`` files are opened with ``torch.load(weights_only=True)`` only: they can hold tensors
and plain containers, never arbitrary pickled objects. Writes go to a temporary name first
and are renamed into place, so a crash mid-save never leaves a half-written file under the
final name.
"""
from __future__ import annotations

import json
import pickle
import re
import zipfile
from collections.abc import Iterator
from pathlib import Path

import torch

from openformers.core.durable import publish_file, write_text

SAFE_WEIGHTS_NAME = "model.safetensors"
SAFE_WEIGHTS_INDEX_NAME = "model.safetensors.index.json"
WEIGHTS_NAME = "pytorch_model.bin"
WEIGHTS_INDEX_NAME = "pytorch_model.bin.index.json"


class CheckpointError(ValueError):
    """A weight file is missing, corrupt or holds something other than tensors."""


def find_weight_files(directory: Path) -> list[Path]:
    """The weight files of a model directory, safetensors preferred."""
    for single, index in ((SAFE_WEIGHTS_NAME, SAFE_WEIGHTS_INDEX_NAME), (WEIGHTS_NAME, WEIGHTS_INDEX_NAME)):
        if (directory / single).is_file():
            return [directory / single]
        if (directory / index).is_file():
            return _shards_from_index(directory / index)
    # a lone differently-named safetensors file (e.g. adapter or exported model)
    loose = sorted(directory.glob("*.safetensors"))
    if len(loose) == 1:
        return loose
    raise CheckpointError(
        f"no weights found in {directory}: looked for {SAFE_WEIGHTS_NAME}, {SAFE_WEIGHTS_INDEX_NAME}, "
        f"{WEIGHTS_NAME} and {WEIGHTS_INDEX_NAME}. Save the model with save_pretrained(dir), or pass "
        f"gguf_file= for a GGUF file."
    )


def _shards_from_index(index_file: Path) -> list[Path]:
    from openformers.core.hub import contained_path

    try:
        index = json.loads(index_file.read_text(encoding="utf-8"))
        weight_map = index["weight_map"]
    except (OSError, ValueError, KeyError, TypeError, RecursionError) as exc:
        raise CheckpointError(f"{index_file} is not a valid shard index (needs a 'weight_map'): {exc}") from exc
    if not isinstance(weight_map, dict) or not all(isinstance(v, str) for v in weight_map.values()):
        raise CheckpointError(
            f"{index_file}: 'weight_map' must map tensor names to shard file names (strings), "
            f"found {type(weight_map).__name__}; the index is corrupt"
        )
    shards = sorted(set(weight_map.values()))
    files = [contained_path(index_file.parent, s, f"{index_file}: shard", error=CheckpointError) for s in shards]
    bad = [f.name for f in files if not f.name.endswith((".safetensors", ".bin"))]
    if bad:
        raise CheckpointError(f"{index_file} lists shards that are not .safetensors or .bin files: {bad[:5]}")
    missing = [str(f) for f in files if not f.is_file()]
    if missing:
        raise CheckpointError(f"{index_file} lists shards that do not exist: {missing}")
    return files


_LAYER_INDEX = re.compile(r"(?:^|\.)(?:layers|layer|h|blocks)\.(\d+)\.")
_EMBEDDINGS = ("embed_tokens.weight", "word_embeddings.weight", "wte.weight")


def safetensors_shapes(files: list[Path]) -> dict[str, tuple[int, ...]]:
    """Tensor name -> shape from the headers of the safetensors ``files`` (no tensor is read)."""
    from safetensors import SafetensorError, safe_open

    shapes: dict[str, tuple[int, ...]] = {}
    for file in files:
        if file.suffix != ".safetensors":
            continue
        try:
            with safe_open(str(file), framework="pt") as handle:
                for name in handle.keys():
                    shapes[name] = tuple(handle.get_slice(name).get_shape())
        except (SafetensorError, OSError, ValueError) as exc:
            raise CheckpointError(f"{file} is not a readable safetensors file ({exc}); it may be truncated or corrupt") from exc
    return shapes


def check_config_against_checkpoint(config: dict, files: list[Path], source: str) -> None:
    """Refuse a ``config.json`` that asks for more layers, a larger vocabulary or a wider hidden
    size than the safetensors checkpoint beside it holds: the model would be sized (and the
    missing part allocated) from numbers no file backs."""
    shapes = safetensors_shapes(files)
    if not shapes:
        return
    layers = {int(m.group(1)) for m in map(_LAYER_INDEX.search, shapes) if m}
    declared = next((config[k] for k in ("num_hidden_layers", "n_layer", "n_layers") if isinstance(config.get(k), int)), None)
    if layers and declared is not None and declared > max(layers) + 1:
        raise CheckpointError(
            f"{source}: config.json asks for {declared} layers but the checkpoint holds {max(layers) + 1}; "
            f"the config does not belong to these weights"
        )
    embedding = next((shapes[n] for n in shapes if n.endswith(_EMBEDDINGS) and len(shapes[n]) == 2), None)
    if embedding is not None:
        for key, size in (("vocab_size", embedding[0]), ("hidden_size", embedding[1]), ("n_embd", embedding[1]), ("dim", embedding[1])):
            value = config.get(key)
            if isinstance(value, int) and value > size and not (key == "hidden_size" and config.get("embedding_size")):
                raise CheckpointError(
                    f"{source}: config.json has {key} = {value} but the checkpoint's embedding is {list(embedding)}; "
                    f"the config does not belong to these weights"
                )


def iter_checkpoint(files: list[Path]) -> Iterator[tuple[str, torch.Tensor]]:
    """Yield ``(name, tensor)`` pairs one at a time, so peak memory stays near one copy."""
    for file in files:
        if file.suffix == ".safetensors":
            yield from _iter_safetensors(file)
        else:
            yield from load_bin_file(file).items()


def _iter_safetensors(file: Path) -> Iterator[tuple[str, torch.Tensor]]:
    from safetensors import SafetensorError, safe_open

    try:
        handle = safe_open(str(file), framework="pt")
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(
            f"{file} is not a readable safetensors file ({exc}); it may be truncated or corrupt: "
            f"re-download or re-save it"
        ) from exc
    with handle:
        for name in handle.keys():
            try:
                yield name, handle.get_tensor(name)
            except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
                raise CheckpointError(f"{file}: tensor {name!r} cannot be read ({exc}); the file is corrupt") from exc


def checkpoint_dtype(files: list[Path]) -> torch.dtype | None:
    """The dtype of the first floating-point tensor (what ``dtype="auto"`` falls back to)."""
    for name, tensor in iter_checkpoint(files[:1]):
        if tensor.is_floating_point():
            return tensor.dtype
    return None


def load_bin_file(file: Path) -> dict[str, torch.Tensor]:
    """Load a ``.bin`` state dict with ``weights_only=True``; never run pickled code."""
    try:
        # mmap needs the zip format (torch >= 1.6); older files, e.g. 2019 GPT-2 era, are read whole
        state = torch.load(str(file), map_location="cpu", weights_only=True, mmap=zipfile.is_zipfile(file))
    except pickle.UnpicklingError as exc:
        detail = _unpickling_cause(str(exc))
        raise CheckpointError(
            f"{file} holds pickled objects other than tensors, or is corrupt; openformers refuses to load "
            f"it (nothing in it was executed). Convert it to safetensors with a tool you trust. Details: {detail}"
        ) from exc
    except (RuntimeError, OSError, EOFError, ValueError) as exc:
        raise CheckpointError(f"{file} is not a readable PyTorch weight file ({exc}); it may be truncated") from exc
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"{file} does not hold a flat dict of tensors (found {type(state).__name__})")
    return state


def _unpickling_cause(message: str) -> str:
    """The cause in PyTorch's refusal (the global it met), without its advice to retry with
    ``weights_only=False``: that advice is wrong for a file from an untrusted source."""
    parts = [p.strip() for p in re.split(r"\n\s*\n", message) if p.strip()]
    causes = [p for p in parts if "weights_only" not in p and not p.startswith("Check the documentation")]
    detail = causes[0] if causes else "the file holds content other than tensors"
    detail = re.sub(r"^\s*WeightsUnpickler error:\s*", "", detail)
    return detail.split(". Please use")[0].split(" Please use")[0].strip()


def _parse_size(size: int | str) -> int:
    if isinstance(size, int):
        return size
    s = size.strip().upper()
    for unit, mult in (("GIB", 2**30), ("MIB", 2**20), ("KIB", 2**10), ("GB", 10**9), ("MB", 10**6), ("KB", 10**3), ("B", 1)):
        if s.endswith(unit):
            return int(float(s[: -len(unit)]) * mult)
    return int(s)


def save_state_dict(
    state_dict: dict[str, torch.Tensor],
    directory: Path,
    *,
    max_shard_size: int | str = "5GB",
    safe_serialization: bool = True,
    metadata: dict[str, str] | None = None,
) -> list[Path]:
    """Write ``state_dict`` as one file or as shards plus an index, atomically per file."""
    directory.mkdir(parents=True, exist_ok=True)
    limit = _parse_size(max_shard_size)
    shards: list[dict[str, torch.Tensor]] = [{}]
    size = 0
    for name, tensor in state_dict.items():
        nbytes = tensor.numel() * tensor.element_size()
        if shards[-1] and size + nbytes > limit:
            shards.append({})
            size = 0
        shards[-1][name] = tensor
        size += nbytes
    single, index_name = (SAFE_WEIGHTS_NAME, SAFE_WEIGHTS_INDEX_NAME) if safe_serialization else (WEIGHTS_NAME, WEIGHTS_INDEX_NAME)
    if len(shards) == 1:
        names = [single]
    else:
        stem, ext = single.rsplit(".", 1)
        names = [f"{stem}-{i + 1:05d}-of-{len(shards):05d}.{ext}" for i in range(len(shards))]
    # files of an earlier save that this one does not overwrite (the other layout, more shards), removed only
    # once the new files are in place: a save that fails leaves the earlier weights loadable
    stale = [p for p in list(directory.glob("model*.safetensors")) + list(directory.glob("pytorch_model*.bin")) + [
        directory / SAFE_WEIGHTS_INDEX_NAME, directory / WEIGHTS_INDEX_NAME] if p.name not in names and p.exists()]
    written = []
    for shard, name in zip(shards, names):
        _write_one(shard, directory / name, safe_serialization, metadata)
        written.append(directory / name)
    if len(shards) > 1:
        total = sum(t.numel() * t.element_size() for t in state_dict.values())
        index = {"metadata": {"total_size": total}, "weight_map": {k: n for shard, n in zip(shards, names) for k in shard}}
        stale = [p for p in stale if p.name != index_name]
        write_text(directory / index_name, json.dumps(index, indent=2, sort_keys=True) + "\n")
    for path in stale:  # so that a reload cannot pick up old weights
        path.unlink(missing_ok=True)
    return written


def _write_one(shard: dict[str, torch.Tensor], path: Path, safe: bool, metadata: dict[str, str] | None) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tensors = {k: v.detach().contiguous().cpu() for k, v in shard.items()}
    try:
        if safe:
            from safetensors.torch import save_file

            save_file(tensors, str(tmp), metadata={"format": "pt", **(metadata or {})})
        else:
            torch.save(tensors, str(tmp))
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    publish_file(tmp, path)
