"""CONTRIBUTING.md and the docs point only at files inside the repository, and those files exist."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ["CONTRIBUTING.md", "docs/design.md", "README.md", "benchmarks/RESULTS.md"]
PATH = re.compile(r"`((?:docs|benchmarks|tests|openformers|examples)/[\w./-]+\.(?:md|py|c|txt|jsonl))`")


@pytest.mark.parametrize("doc", DOCS)
def test_points_only_inside_the_repository(doc):
    text = (ROOT / doc).read_text(encoding="utf-8")
    assert "../" not in text, f"{doc} points outside the repository"
    if doc == "benchmarks/RESULTS.md":  # a record of past runs: it may name files since renamed
        return
    for path in PATH.findall(text):
        assert (ROOT / path).exists(), f"{doc} names {path}, which does not exist"


def test_license_is_apache():
    text = (ROOT / "LICENSE").read_text(encoding="utf-8")
    assert "Apache License" in text and "Version 2.0, January 2004" in text and "END OF TERMS AND CONDITIONS" in text
