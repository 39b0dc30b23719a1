"""Shared fixtures for the data tests: every test gets its own cache directories."""
from __future__ import annotations

import os

import pytest

os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")


@pytest.fixture(autouse=True)
def _data_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("OPENFORMERS_DATA_CACHE", str(tmp_path / "of_cache"))
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "hf_cache"))
    yield


@pytest.fixture(scope="session")
def hf():
    """The Hugging Face ``datasets`` library, the reference implementation (test-only)."""
    datasets = pytest.importorskip("datasets")
    datasets.disable_progress_bars()
    return datasets
