"""``zero-shot-classification``: rank candidate labels with a natural-language-inference model."""
from __future__ import annotations

from typing import Any

import numpy as np
import torch

from .base import Pipeline


def _parse_labels(labels: Any) -> list[str]:
    if isinstance(labels, str):
        labels = [label.strip() for label in labels.split(",") if label.strip()]
    return list(labels)


class ZeroShotClassificationPipeline(Pipeline):
    """Score each of ``candidate_labels`` as the hypothesis ``hypothesis_template.format(label)``
    ("This example is {}." by default) against the text as premise, with an NLI model whose
    ``config.label2id`` has an "entailment" label.

    ``multi_label=False``: a softmax of the entailment logits over the labels (scores sum to 1).
    ``multi_label=True`` (and always with one label): each label on its own, a softmax of
    entailment against contradiction. Result: ``{"sequence", "labels", "scores"}`` sorted by score.
    """

    task = "zero-shot-classification"
    chunked = True

    @property
    def entailment_id(self) -> int:
        for label, idx in self.model.config.label2id.items():
            if label.lower().startswith("entail"):
                return int(idx)
        raise ValueError(f"zero-shot classification needs an NLI model whose config.label2id has an "
                         f"'entailment' label; this model has {self.model.config.label2id}. Set "
                         f"model.config.label2id / id2label to name its labels.")

    def _sanitize_parameters(self, candidate_labels: Any = None, hypothesis_template: str | None = None,
                             multi_label: bool | None = None, truncation: Any = None,
                             **kwargs: Any) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
        self._unknown_kwargs(kwargs)
        pre: dict[str, Any] = {}
        if candidate_labels is not None:
            pre["candidate_labels"] = _parse_labels(candidate_labels)
        if hypothesis_template is not None:
            pre["hypothesis_template"] = hypothesis_template
        if truncation is not None:
            pre["truncation"] = truncation
        post = {} if multi_label is None else {"multi_label": bool(multi_label)}
        return pre, {}, post

    def __call__(self, sequences: Any = None, *args: Any, **kwargs: Any) -> Any:
        if len(args) == 1 and "candidate_labels" not in kwargs:
            kwargs["candidate_labels"] = args[0]
            args = ()
        _ = self.entailment_id  # fail early on a model that is not an NLI model
        return super().__call__(sequences, *args, **kwargs)

    def preprocess(self, sequence: str, candidate_labels: list[str] | None = None,
                   hypothesis_template: str = "This example is {}.", truncation: Any = "only_first") -> list[dict[str, Any]]:
        if not candidate_labels:
            raise ValueError("give at least one label: candidate_labels=[...] (or a comma-separated string)")
        if not isinstance(sequence, str) or not sequence:
            raise ValueError("zero-shot classification takes non-empty strings as sequences")
        if hypothesis_template.format(candidate_labels[0]) == hypothesis_template:
            raise ValueError(f"hypothesis_template {hypothesis_template!r} has no '{{}}' where the label goes")
        hypotheses = [hypothesis_template.format(label) for label in candidate_labels]
        enc = self.tokenizer([sequence] * len(hypotheses), hypotheses, truncation=truncation)
        feats = []
        for i, label in enumerate(candidate_labels):
            feat = {k: v[i] for k, v in enc.data.items()}
            feat.update(candidate_label=label, sequence=sequence)
            feats.append(feat)
        return feats

    def _forward(self, model_inputs: dict[str, torch.Tensor]) -> dict[str, Any]:
        return {"logits": self.model(**model_inputs).logits}

    def postprocess(self, outputs: list[dict[str, Any]], multi_label: bool = False) -> dict[str, Any]:
        labels = [o["candidate_label"] for o in outputs]
        logits = np.stack([o["logits"].float().numpy() for o in outputs])  # [labels, classes]
        entail = self.entailment_id
        if multi_label or len(labels) == 1:
            contradiction = -1 if entail == 0 else 0
            pair = logits[:, [contradiction, entail]]
            e = np.exp(pair - pair.max(-1, keepdims=True))
            scores = (e / e.sum(-1, keepdims=True))[:, 1]
        else:
            x = logits[:, entail]
            e = np.exp(x - x.max())
            scores = e / e.sum()
        order = list(reversed(scores.argsort()))
        return {"sequence": outputs[0]["sequence"], "labels": [labels[i] for i in order],
                "scores": [float(scores[i]) for i in order]}
