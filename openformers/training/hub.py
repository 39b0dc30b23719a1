"""The Trainer's ``push_to_hub`` and ``create_model_card`` over the local hub (openformers.hub).

A push commits the saved model, the tokenizer, ``training_args.json`` and a model card to
``hub_model_id`` (or ``local/<output_dir name>``) as a new commit of branch ``hub_revision``
(default ``main``) in ``OPENFORMERS_HUB`` (else the Hugging Face cache): the history is kept,
unchanged files are stored once, and every pushed version loads with
``from_pretrained(repo_id, revision=<commit, branch or tag>)``.
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

from openformers.core import settings
from openformers.core.hub import hub_cache_dir


def local_hub_root() -> Path:
    return settings.get("OPENFORMERS_HUB") or hub_cache_dir()


def model_card(trainer: Any, repo_id: str, **card_kwargs: Any) -> str:
    """The README.md text of a trained model (see ``openformers.hub.card.trainer_card``)."""
    from openformers.hub.card import trainer_card

    card_kwargs.setdefault("model_name", repo_id.split("/")[-1])
    return trainer_card(trainer, **card_kwargs).content


def create_model_card(trainer: Any, **card_kwargs: Any) -> Path | None:
    """Write README.md (the model card) to the output directory; returns its path."""
    if not trainer.args.should_save:
        return None
    from openformers.hub.card import trainer_card

    out = Path(trainer.args.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    return trainer_card(trainer, **card_kwargs).save(out / "README.md")


def repo_id_of(trainer: Any, repo_id: str | None = None) -> str:
    repo_id = repo_id or trainer.args.hub_model_id or Path(trainer.args.output_dir).name
    return repo_id if "/" in repo_id else f"local/{repo_id}"


def push_to_local_hub(trainer: Any, commit_message: str = "End of training", repo_id: str | None = None,
                      revision: str | None = None, **card_kwargs: Any) -> str:
    """Commit the trained model to the local hub; returns the snapshot directory of the new commit."""
    from openformers.hub.local import LocalHub, check_repo_id

    args = trainer.args
    repo_id = check_repo_id(repo_id_of(trainer, repo_id))
    card_kwargs.pop("blocking", None)
    card_kwargs.pop("token", None)
    revision = revision or getattr(args, "hub_revision", None)
    hub = LocalHub(local_hub_root())
    with tempfile.TemporaryDirectory(prefix="openformers-push-") as tmp:
        trainer._save_model_files(Path(tmp))
        (Path(tmp) / "README.md").write_text(model_card(trainer, repo_id, **card_kwargs), encoding="utf-8")
        (Path(tmp) / "training_args.json").write_text(args.to_json_string(), encoding="utf-8")
        commit = hub.upload_folder(repo_id, tmp, commit_message=commit_message, revision=revision)
    return str(hub.repo_dir(repo_id) / "snapshots" / commit)
