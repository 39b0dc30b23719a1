"""Model cards: a repository's README.md, YAML metadata between ``---`` lines then Markdown.

The metadata fields are the Hub's (``license``, ``base_model``, ``datasets``, ``language``,
``library_name``, ``pipeline_tag``, ``tags``, ``metrics`` and ``model-index`` with the evaluation
results), so the Hub and ``huggingface_hub.ModelCard`` read what we write.

>>> card = ModelCard.load("out/my-model")          # a file, a folder or a hub repo id
>>> card.data.license = "apache-2.0"
>>> card.save("out/my-model/README.md")
"""
from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import yaml

_FRONT = re.compile(r"\A\s*---\s*\n(.*?\n)?---\s*(?:\n|\Z)", re.S)
_REPO_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*$")

# model class name ending -> pipeline tag
_PIPELINE_TAGS = (("ForSequenceClassification", "text-classification"), ("ForTokenClassification", "token-classification"),
                  ("ForQuestionAnswering", "question-answering"), ("ForMaskedLM", "fill-mask"),
                  ("ForCausalLM", "text-generation"), ("LMHeadModel", "text-generation"), ("Model", "feature-extraction"))
_TASK_NAMES = {"text-classification": "Text Classification", "token-classification": "Token Classification",
               "question-answering": "Question Answering", "fill-mask": "Masked Language Modeling",
               "text-generation": "Causal Language Modeling", "feature-extraction": "Feature Extraction"}


class CardData(dict):
    """The metadata of a card: a dict whose keys also read and write as attributes
    (``card.data.license``; ``card.data["model-index"]``). Fields set to None are left out."""

    def __getattr__(self, name: str) -> Any:
        key = name if name in self else name.replace("_", "-")
        return self.get(key)

    def __setattr__(self, name: str, value: Any) -> None:
        self[name.replace("_", "-") if name == "model_index" else name] = value

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in self.items() if v is not None and v != [] and v != {}}

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False, allow_unicode=True).strip()


class ModelCard:
    """A model card: ``data`` (:class:`CardData`) and ``text`` (the Markdown body)."""

    def __init__(self, content: str = "") -> None:
        self.content = content

    @property
    def content(self) -> str:
        meta = self.data.to_yaml() if self.data.to_dict() else ""
        return f"---\n{meta}\n---\n\n{self.text.lstrip()}" if meta else self.text

    @content.setter
    def content(self, value: str) -> None:
        match = _FRONT.match(value)
        if match:
            loaded = yaml.safe_load(match.group(1) or "") or {}
            if not isinstance(loaded, dict):
                raise ValueError(f"the model card's metadata block is not a mapping (got {type(loaded).__name__})")
            self.data = CardData(loaded)
            self.text = value[match.end():]
        else:
            self.data = CardData()
            self.text = value

    def __str__(self) -> str:
        return self.content

    @classmethod
    def load(cls, repo_id_or_path: str | os.PathLike, revision: str | None = None,
             hub_dir: str | os.PathLike | None = None) -> "ModelCard":
        """Read a card from a README.md file, a folder holding one, or a repository of the local hub
        (or the Hugging Face cache) at ``revision``."""
        path = Path(os.fspath(repo_id_or_path)).expanduser()
        if path.is_dir():
            path = path / "README.md"
        elif not path.is_file():
            from openformers.hub.local import LocalHub

            hub = LocalHub(hub_dir)
            name = os.fspath(repo_id_or_path)
            if _REPO_ID.match(name) and hub.repo_exists(name):
                path = hub.snapshot_dir(name, revision) / "README.md"
            else:
                from openformers.core.hub import resolve_model_dir

                path = resolve_model_dir(name, revision=revision) / "README.md"
        if not path.is_file():
            raise FileNotFoundError(f"no model card: {path} does not exist")
        return cls(path.read_text(encoding="utf-8"))

    def save(self, path: str | os.PathLike) -> Path:
        """Write the card (a folder means its README.md)."""
        out = Path(path)
        if out.is_dir():
            out = out / "README.md"
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(self.content if self.content.endswith("\n") else self.content + "\n", encoding="utf-8")
        return out

    def validate(self) -> None:
        """Check the metadata the way the Hub does for the fields we write: a clear ValueError otherwise."""
        data = self.data
        for key in ("tags", "datasets", "language", "metrics", "base_model"):
            value = data.get(key)
            if value is not None and not isinstance(value, (str, list)):
                raise ValueError(f"model card: {key!r} must be a string or a list of strings, got {type(value).__name__}")
            if isinstance(value, list) and not all(isinstance(v, str) for v in value):
                raise ValueError(f"model card: every entry of {key!r} must be a string")
        index = data.get("model-index")
        if index is None:
            return
        if not isinstance(index, list) or not all(isinstance(m, dict) and "name" in m for m in index):
            raise ValueError("model card: 'model-index' must be a list of {name, results} mappings")
        for model in index:
            for result in model.get("results") or []:
                task, dataset = result.get("task") or {}, result.get("dataset") or {}
                if "type" not in task:
                    raise ValueError(f"model card: a model-index result of {model['name']!r} has no task.type")
                if "type" not in dataset or "name" not in dataset:
                    raise ValueError(f"model card: a model-index result of {model['name']!r} needs dataset.name and dataset.type")
                for metric in result.get("metrics") or []:
                    if "type" not in metric or "value" not in metric:
                        raise ValueError(f"model card: a metric of {model['name']!r} needs type and value")

    # -- building cards ------------------------------------------------------------------------------
    @classmethod
    def from_model(cls, model: Any, repo_id: str | None = None, **metadata: Any) -> "ModelCard":
        """A card for a model pushed without training: library, pipeline tag, base model."""
        name = (repo_id or getattr(model, "name_or_path", "") or type(model).__name__).split("/")[-1]
        data = CardData(library_name="openformers", pipeline_tag=pipeline_tag(model), tags=["openformers"])
        base = base_model_of(model)
        if base:
            data["base_model"] = base
        data.update({k: v for k, v in metadata.items() if v is not None})
        text = f"# {name}\n\n{type(model).__name__} saved with openformers.\n"
        card = cls()
        card.data, card.text = data, text
        return card


def pipeline_tag(model: Any) -> str | None:
    name = type(model).__name__
    for suffix, tag in _PIPELINE_TAGS:
        if name.endswith(suffix):
            return tag
    return None


def base_model_of(model: Any) -> str | None:
    """The Hub id the model was loaded from, when it was one (local paths are not Hub ids)."""
    source = getattr(getattr(model, "config", None), "_name_or_path", None) or getattr(model, "name_or_path", None)
    source = str(source or "")
    if _REPO_ID.match(source) and not Path(source).exists():
        return source
    return None


def _metric_name(key: str) -> str:
    return key[len("eval_"):] if key.startswith("eval_") else key


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4f}"
    return "No log" if value is None else str(value)


def trainer_card(trainer: Any, language: str | list[str] | None = None, license: str | None = None,
                 tags: str | list[str] | None = None, model_name: str | None = None, finetuned_from: str | None = None,
                 tasks: str | list[str] | None = None, dataset_tags: str | list[str] | None = None,
                 dataset: str | list[str] | None = None, dataset_args: str | list[str] | None = None) -> ModelCard:
    """The card of a trained model (what ``Trainer.create_model_card`` writes): metadata with the
    last evaluation's metrics in ``model-index``, the hyperparameters and the training log table."""
    from openformers import __version__

    args = trainer.args
    model = trainer.model
    model_name = model_name or (args.hub_model_id or Path(args.output_dir).name).split("/")[-1]
    as_list = lambda v: [v] if isinstance(v, str) else list(v or [])  # noqa: E731
    history = list(trainer.state.log_history)
    evals = [h for h in history if any(k.startswith("eval_") for k in h)]
    final = evals[-1] if evals else {}
    task = (as_list(tasks) or [pipeline_tag(model)])[0]
    ds_names = as_list(dataset) or _dataset_names(trainer)
    ds_tags = as_list(dataset_tags) or ds_names
    base = finetuned_from or base_model_of(model)

    data = CardData()
    data["library_name"] = "openformers"
    data["license"] = license
    data["base_model"] = base
    data["tags"] = list(dict.fromkeys(["generated_from_trainer", "openformers", *as_list(tags)]))
    data["datasets"] = ds_tags or None
    data["language"] = language
    data["pipeline_tag"] = task
    metric_keys = [k for k in final if k.startswith("eval_") and isinstance(final[k], (int, float))
                   and k not in ("eval_runtime", "eval_samples_per_second", "eval_steps_per_second")]
    data["metrics"] = [_metric_name(k) for k in metric_keys if k != "eval_loss"] or None
    results = []
    if metric_keys and task:
        result: dict[str, Any] = {"task": {"type": task, "name": _TASK_NAMES.get(task, task)}}
        if ds_names:
            result["dataset"] = {"name": ds_names[0], "type": ds_tags[0] if ds_tags else ds_names[0]}
            args_list = as_list(dataset_args)
            if args_list:
                result["dataset"]["args"] = args_list[0]
        result["metrics"] = [{"type": _metric_name(k), "value": float(final[k]), "name": _metric_name(k).replace("_", " ").title()}
                             for k in metric_keys]
        if "dataset" in result:
            results.append(result)
    data["model-index"] = [{"name": model_name, "results": results}]

    lines = [f"# {model_name}", ""]
    about = f"This model is a fine-tuned version of [{base}](https://huggingface.co/{base})" if base else \
        "This model was trained from scratch"
    lines += [about + (f" on the {ds_names[0]} dataset." if ds_names else " on an unknown dataset."), ""]
    if metric_keys:
        lines += ["It achieves the following results on the evaluation set:"]
        lines += [f"- {_metric_name(k).replace('_', ' ').title()}: {_fmt(final[k])}" for k in metric_keys]
        lines += [""]
    lines += ["## Training procedure", "", "### Training hyperparameters", "",
              "The following hyperparameters were used during training:"]
    lines += [f"- {k}: {v}" for k, v in _hyperparameters(args, trainer).items()]
    lines += ["", "### Training results", ""]
    lines += _log_table(history)
    lines += ["", "### Framework versions", "", f"- openformers {__version__}"]
    try:
        import torch

        lines.append(f"- PyTorch {torch.__version__}")
    except ImportError:  # pragma: no cover
        pass
    card = ModelCard()
    card.data, card.text = data, "\n".join(lines) + "\n"
    return card


def _dataset_names(trainer: Any) -> list[str]:
    names = []
    for ds in (trainer.train_dataset, trainer.eval_dataset):
        info = getattr(ds, "info", None)
        name = getattr(info, "dataset_name", None) if info is not None and not isinstance(info, dict) else \
            (info or {}).get("dataset_name") if isinstance(info, dict) else None
        if name and name not in names:
            names.append(str(name))
    return names


def _hyperparameters(args: Any, trainer: Any) -> dict[str, Any]:
    world = max(int(getattr(args, "world_size", 1) or 1), 1)
    accum = int(getattr(args, "gradient_accumulation_steps", 1) or 1)
    per_device = getattr(args, "per_device_train_batch_size", None)
    out: dict[str, Any] = {
        "learning_rate": args.learning_rate,
        "train_batch_size": per_device,
        "eval_batch_size": getattr(args, "per_device_eval_batch_size", None),
        "seed": args.seed,
    }
    if accum > 1:
        out["gradient_accumulation_steps"] = accum
    if per_device is not None and (accum > 1 or world > 1):
        out["total_train_batch_size"] = per_device * accum * world
    optim = str(getattr(args, "optim", "adamw_torch"))
    optim = optim.split(".")[-1]
    out["optimizer"] = (f"Use {optim} with betas=({args.adam_beta1},{args.adam_beta2}) and epsilon={args.adam_epsilon}"
                        if hasattr(args, "adam_beta1") else optim)
    sched = getattr(args, "lr_scheduler_type", None)
    out["lr_scheduler_type"] = getattr(sched, "value", sched)
    if getattr(args, "warmup_ratio", 0):
        out["lr_scheduler_warmup_ratio"] = args.warmup_ratio
    if getattr(args, "warmup_steps", 0):
        out["lr_scheduler_warmup_steps"] = args.warmup_steps
    if getattr(args, "max_steps", -1) and args.max_steps > 0:
        out["training_steps"] = args.max_steps
    else:
        out["num_epochs"] = args.num_train_epochs
    return {k: v for k, v in out.items() if v is not None}


def _log_table(history: list[dict[str, Any]]) -> list[str]:
    """One row per evaluation (with the last training loss before it), as the Hub's cards show;
    without evaluations, one row per training log."""
    evals = [h for h in history if "eval_loss" in h or any(k.startswith("eval_") for k in h)]
    skip = {"eval_runtime", "eval_samples_per_second", "eval_steps_per_second", "epoch", "step"}
    if not evals:
        rows = [h for h in history if "loss" in h]
        if not rows:
            return ["No training log was recorded."]
        out = ["| Training Loss | Epoch | Step |", "|:---:|:---:|:---:|"]
        out += [f"| {_fmt(h['loss'])} | {_fmt(h.get('epoch'))} | {h.get('step', '')} |" for h in rows]
        return out
    metric_keys = [k for k in evals[-1] if k.startswith("eval_") and k not in skip and k != "eval_loss"]
    header = ["Training Loss", "Epoch", "Step", "Validation Loss", *[_metric_name(k).replace("_", " ").title() for k in metric_keys]]
    out = ["| " + " | ".join(header) + " |", "|" + ":---:|" * len(header)]
    last_loss = None
    for h in history:
        if "loss" in h:
            last_loss = h["loss"]
        if h in evals:
            cells = [_fmt(last_loss), _fmt(h.get("epoch")), str(h.get("step", "")), _fmt(h.get("eval_loss")),
                     *[_fmt(h.get(k)) for k in metric_keys]]
            out.append("| " + " | ".join(cells) + " |")
    return out
