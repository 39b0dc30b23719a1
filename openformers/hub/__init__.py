"""Sharing models: a local model hub with history (Hugging Face cache layout), its HTTP server,
and model cards. Names are imported lazily."""
from __future__ import annotations

import importlib
from typing import Any

_EXPORTS: dict[str, str] = {
    "LocalHub": "openformers.hub.local",
    "CommitInfo": "openformers.hub.local",
    "ModelInfo": "openformers.hub.local",
    "RevisionNotFoundError": "openformers.hub.local",
    "RepositoryNotFoundError": "openformers.hub.local",
    "push_to_hub": "openformers.hub.local",
    "ModelCard": "openformers.hub.card",
    "CardData": "openformers.hub.card",
    "serve": "openformers.hub.server",
    "make_server": "openformers.hub.server",
}
# huggingface_hub's function names, over the local hub (OPENFORMERS_HUB, or hub_dir=)
_API = ("upload_folder", "create_repo", "create_branch", "create_tag", "list_models", "list_repo_refs",
        "list_repo_commits")


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    if name in _API:
        from openformers.hub.local import LocalHub

        def call(*args: Any, hub_dir: Any = None, **kwargs: Any) -> Any:
            return getattr(LocalHub(hub_dir), name)(*args, **kwargs)

        call.__name__ = name
        call.__doc__ = getattr(LocalHub, name).__doc__
        return call
    raise AttributeError(f"module 'openformers.hub' has no attribute {name!r}")


__all__ = sorted({*_EXPORTS, *_API})
