"""A model folder laid out as a Hugging Face hub cache entry, for the tests of file resolution."""
from __future__ import annotations

from pathlib import Path


def make_hub_cache(root: Path, source: Path, repo: str = "org/name", commit: str = "a" * 40) -> Path:
    """``root/models--org--name`` with snapshot ``commit`` (a copy of ``source``'s files) and
    ``refs/main`` pointing at it; returns the snapshot folder (the repo folder is ``.parents[1]``)."""
    repo_dir = root / f"models--{repo.replace('/', '--')}"
    snap = repo_dir / "snapshots" / commit
    snap.mkdir(parents=True)
    for f in source.iterdir():
        (snap / f.name).write_bytes(f.read_bytes())
    (repo_dir / "refs").mkdir()
    (repo_dir / "refs" / "main").write_text(commit)
    return snap
