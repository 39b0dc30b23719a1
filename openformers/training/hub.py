"""push_to_hub without a network: a local hub directory in the Hugging Face cache layout.

The repository ``org/name`` is written to ``<hub>/models--org--name/snapshots/<revision>/`` with
``refs/main`` pointing at it, so ``from_pretrained("org/name")`` finds it offline. The hub is
``OPENFORMERS_HUB`` when set, else the Hugging Face cache (``HF_HUB_CACHE``).
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from pathlib import Path
from typing import Any

from openformers.core import settings
from openformers.core.hub import hub_cache_dir


def local_hub_root() -> Path:
    return settings.get("OPENFORMERS_HUB") or hub_cache_dir()


def model_card(trainer: Any, repo_id: str) -> str:
    args = trainer.args
    evals = [h for h in trainer.state.log_history if any(k.startswith("eval_") for k in h)]
    final = evals[-1] if evals else {}
    datasets = sorted({str(getattr(d, "info", {}).get("dataset_name", "") if isinstance(getattr(d, "info", None), dict) else "")
                       for d in (trainer.train_dataset, trainer.eval_dataset) if d is not None} - {""})
    base = getattr(getattr(trainer.model, "config", None), "_name_or_path", None) or getattr(getattr(trainer.model, "config", None), "name_or_path", None)
    lines = [
        "---", "library_name: openformers", "tags:", "- openformers", "- generated_from_trainer", "---", "",
        f"# {repo_id.split('/')[-1]}", "",
        f"Trained with the openformers Trainer{f' from {base}' if base else ''}"
        f"{' on ' + ', '.join(datasets) if datasets else ''}.", "",
        "## Results", "",
    ]
    lines += [f"- {k}: {v}" for k, v in final.items() if k.startswith("eval_")] or ["- no evaluation was run"]
    lines += ["", "## Training hyperparameters", "", "```json",
              json.dumps({k: v for k, v in args.to_sanitized_dict().items() if v not in (None, "", [])}, indent=2, sort_keys=True), "```", ""]
    lines += ["## Training log", "", "| step | epoch | loss | eval_loss |", "|---|---|---|---|"]
    for h in trainer.state.log_history:
        if "loss" in h or "eval_loss" in h:
            lines.append(f"| {h.get('step', '')} | {round(h.get('epoch', 0), 3)} | {h.get('loss', '')} | {h.get('eval_loss', '')} |")
    return "\n".join(lines) + "\n"


def push_to_local_hub(trainer: Any, commit_message: str = "End of training", repo_id: str | None = None, **_: Any) -> str:
    args = trainer.args
    repo_id = repo_id or args.hub_model_id or Path(args.output_dir).name
    if "/" not in repo_id:
        repo_id = f"local/{repo_id}"
    from openformers.core.hub import check_repo_id

    check_repo_id(repo_id)  # "../x" or "a--b" would write outside its own folder or alias another repo
    root = local_hub_root() / f"models--{repo_id.replace('/', '--')}"
    revision = hashlib.sha1(f"{repo_id}-{time.time_ns()}-{commit_message}".encode()).hexdigest()
    staging = root / "snapshots" / f".tmp-{revision}"
    staging.mkdir(parents=True, exist_ok=True)
    trainer._save_model_files(staging)
    (staging / "README.md").write_text(model_card(trainer, repo_id), encoding="utf-8")
    (staging / "training_args.json").write_text(args.to_json_string(), encoding="utf-8")
    final = root / "snapshots" / revision
    os.replace(staging, final)
    refs = root / "refs"
    refs.mkdir(exist_ok=True)
    tmp_ref = refs / ".main.tmp"
    tmp_ref.write_text(revision, encoding="utf-8")
    os.replace(tmp_ref, refs / "main")
    # keep only the newest few snapshots so repeated checkpoint pushes do not fill the disk
    snaps = sorted((p for p in (root / "snapshots").iterdir() if not p.name.startswith(".")), key=lambda p: p.stat().st_mtime)
    for old in snaps[:-3]:
        if old != final:
            shutil.rmtree(old, ignore_errors=True)
    return str(final)
