"""A real fine-tune: the embedded MiniLM on the shipped sentiment set, via the example script."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

from openformers.core.hub import ModelNotFoundError, embedded_model_path

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_minilm_sentiment_fine_tune_reaches_accuracy(tmp_path, monkeypatch):
    try:
        embedded_model_path("minilm")
    except ModelNotFoundError as exc:
        pytest.skip(str(exc))
    monkeypatch.chdir(tmp_path)
    sys.path.insert(0, str(ROOT / "examples"))
    try:
        import fine_tune_sentiment
    finally:
        sys.path.pop(0)
    metrics = fine_tune_sentiment.main(["--epochs", "2", "--train-rows", "160", "--learning-rate", "3e-4", "--output-dir", str(tmp_path / "results")])
    # held-out subjects and phrases the training rows never show
    assert metrics["eval_accuracy"] >= 0.9, metrics
    assert (tmp_path / "results" / "fine-tuned-model" / "model.safetensors").is_file()
