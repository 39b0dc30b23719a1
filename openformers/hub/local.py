"""A model hub with history in a local directory, in the Hugging Face cache layout.

``<root>/models--org--name/`` holds ``blobs/<id>`` (each file content once: ``id`` is the git
blob sha1 for small files and the sha256 for large ones, as the Hub's ETags are),
``snapshots/<commit>/<path>`` (links to the blobs, so ``from_pretrained("org/name",
revision=...)`` and the Hugging Face tools read a snapshot as a plain folder) and ``refs/<name>``
(the commit a branch or tag points at). The history the cache layout has no place for lives in
``.openformers/``: one JSON record per commit (parents, message, date, files) and which refs are
branches and which tags.

The root is ``OPENFORMERS_HUB`` (or a ``hub_dir`` argument); with neither set, the Hugging Face
cache (``HF_HUB_CACHE``).
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

from openformers.core import durable

LFS_THRESHOLD = 10 * 1024 * 1024  # files from this size (and weight formats) are stored as LFS files are: sha256 ids
LFS_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".onnx", ".data", ".gguf", ".h5", ".msgpack", ".model", ".npz")
_REPO_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,95}/[A-Za-z0-9][A-Za-z0-9._-]{0,95}$")
_REF = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._/-]{0,199}$")
_COMMIT = re.compile(r"^[0-9a-f]{40}$")


class RevisionNotFoundError(ValueError):
    """A branch, tag or commit that the repository does not have."""


class RepositoryNotFoundError(FileNotFoundError):
    """A repository the hub does not hold."""


def default_root(hub_dir: str | os.PathLike | None = None) -> Path:
    if hub_dir is not None:
        return Path(hub_dir)
    from openformers.core import settings
    from openformers.core.hub import hub_cache_dir

    return settings.get("OPENFORMERS_HUB") or hub_cache_dir()


def check_repo_id(repo_id: str) -> str:
    """An "org/name" id that names one folder of the hub (``core.hub.check_repo_id``'s rules: no '--', no '..')."""
    from openformers.core.hub import check_repo_id as check_path_safe

    if not isinstance(repo_id, str) or not _REPO_ID.match(check_path_safe(repo_id)):
        raise ValueError(f"repo_id {repo_id!r} is not a valid repository name; use 'org/name' (letters, digits, "
                         f"'-', '_', '.')")
    return repo_id


def check_ref(name: str, what: str = "branch") -> str:
    parts = name.split("/") if isinstance(name, str) else [""]
    if not isinstance(name, str) or not _REF.match(name) or any(p in ("", ".", "..") or p.startswith(".") for p in parts) \
            or _COMMIT.match(name):
        raise ValueError(f"{what} name {name!r} is not valid: letters, digits, '.', '_', '-' and '/' between parts "
                         f"(and not a 40-hex commit id)")
    return name


def git_blob_sha1(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def is_lfs(path: str, size: int) -> bool:
    return size >= LFS_THRESHOLD or path.endswith(LFS_SUFFIXES)


def _file_id(file: Path, rel: str) -> tuple[str, int, bool]:
    size = file.stat().st_size
    if is_lfs(rel, size):
        h = hashlib.sha256()
        with open(file, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
        return h.hexdigest(), size, True
    return git_blob_sha1(file.read_bytes()), size, False


@dataclass
class CommitInfo:
    """One commit of a repository (``huggingface_hub.GitCommitInfo``'s fields)."""

    commit_id: str
    title: str
    message: str
    authors: list[str]
    created_at: str
    parents: list[str]
    files: dict[str, dict[str, Any]] = field(default_factory=dict)


@dataclass
class ModelInfo:
    """What ``list_models`` returns for each repository."""

    id: str
    sha: str | None
    last_modified: str | None
    branches: list[str]
    tags: list[str]


def _write_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    durable.write_text(path, text)


class LocalHub:
    """The repositories under ``root`` (see the module docstring)."""

    def __init__(self, root: str | os.PathLike | None = None) -> None:
        self.root = default_root(root)

    # -- layout ----------------------------------------------------------------------------------
    def repo_dir(self, repo_id: str) -> Path:
        return self.root / f"models--{check_repo_id(repo_id).replace('/', '--')}"

    def _meta(self, repo_id: str) -> Path:
        return self.repo_dir(repo_id) / ".openformers"

    def _refs_record(self, repo_id: str) -> dict[str, list[str]]:
        path = self._meta(repo_id) / "refs.json"
        if path.is_file():
            return json.loads(path.read_text(encoding="utf-8"))
        refs = self.repo_dir(repo_id) / "refs"
        branches = sorted(p.relative_to(refs).as_posix() for p in refs.rglob("*") if p.is_file()) if refs.is_dir() else []
        return {"branches": branches, "tags": []}

    def _save_refs_record(self, repo_id: str, record: dict[str, list[str]]) -> None:
        _write_atomic(self._meta(repo_id) / "refs.json", json.dumps(record, indent=2, sort_keys=True))

    def _set_ref(self, repo_id: str, name: str, commit: str) -> None:
        _write_atomic(self.repo_dir(repo_id) / "refs" / name, commit)

    def repo_exists(self, repo_id: str) -> bool:
        return self.repo_dir(repo_id).is_dir()

    def _require(self, repo_id: str) -> Path:
        d = self.repo_dir(repo_id)
        if not d.is_dir():
            raise RepositoryNotFoundError(f"repository {repo_id!r} is not in the hub {self.root}; push it first "
                                          f"(model.push_to_hub({repo_id!r}) or upload_folder)")
        return d

    # -- reading ---------------------------------------------------------------------------------
    def resolve(self, repo_id: str, revision: str | None = None) -> str:
        """The commit id of ``revision`` (a branch, a tag or a commit id; default ``main``)."""
        d = self._require(repo_id)
        rev = revision or "main"
        if _COMMIT.match(rev) and (d / "snapshots" / rev).is_dir():
            return rev
        check_ref(rev, "revision")
        ref = d / "refs" / rev
        if ref.is_file():
            return ref.read_text(encoding="utf-8").strip()
        if re.fullmatch(r"[0-9a-f]{7,39}", rev):  # an abbreviated commit id, as git accepts
            found = [p.name for p in (d / "snapshots").iterdir() if p.name.startswith(rev)]
            if len(found) == 1:
                return found[0]
        record = self._refs_record(repo_id)
        raise RevisionNotFoundError(f"{repo_id} has no revision {rev!r}; branches: {record['branches']}, "
                                    f"tags: {record['tags']}")

    def snapshot_dir(self, repo_id: str, revision: str | None = None) -> Path:
        return self.repo_dir(repo_id) / "snapshots" / self.resolve(repo_id, revision)

    def commit_info(self, repo_id: str, commit: str) -> CommitInfo:
        path = self._meta(repo_id) / "commits" / f"{commit}.json"
        if not path.is_file():
            snap = self.repo_dir(repo_id) / "snapshots" / commit
            if not snap.is_dir():
                raise RevisionNotFoundError(f"{repo_id} has no commit {commit}")
            # a snapshot written by another tool: no recorded history
            files = {p.relative_to(snap).as_posix(): self._describe(p, p.relative_to(snap).as_posix())
                     for p in sorted(snap.rglob("*")) if p.is_file()}
            mtime = time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime(snap.stat().st_mtime))
            return CommitInfo(commit, "", "", [], mtime, [], files)
        return CommitInfo(**json.loads(path.read_text(encoding="utf-8")))

    def _describe(self, file: Path, rel: str) -> dict[str, Any]:
        blob, size, lfs = _file_id(file, rel)
        return {"blob": blob, "size": size, "lfs": lfs}

    def list_files(self, repo_id: str, revision: str | None = None) -> dict[str, dict[str, Any]]:
        """``{path: {"blob", "size", "lfs"}}`` of a revision."""
        return self.commit_info(repo_id, self.resolve(repo_id, revision)).files

    def list_repo_commits(self, repo_id: str, revision: str | None = None) -> list[CommitInfo]:
        """The history of ``revision``, newest first (first parents)."""
        out = []
        commit: str | None = self.resolve(repo_id, revision)
        seen = set()
        while commit and commit not in seen:
            seen.add(commit)
            info = self.commit_info(repo_id, commit)
            out.append(info)
            commit = info.parents[0] if info.parents else None
        return out

    def list_repo_refs(self, repo_id: str) -> dict[str, dict[str, str]]:
        """``{"branches": {name: commit}, "tags": {name: commit}}``."""
        self._require(repo_id)
        record = self._refs_record(repo_id)
        refs = self.repo_dir(repo_id) / "refs"
        read = lambda n: (refs / n).read_text(encoding="utf-8").strip()  # noqa: E731
        return {kind: {n: read(n) for n in record[kind] if (refs / n).is_file()} for kind in ("branches", "tags")}

    def list_models(self, author: str | None = None, search: str | None = None) -> list[ModelInfo]:
        """Every repository of the hub (``author``: only that organisation; ``search``: a substring of the id)."""
        out = []
        if not self.root.is_dir():
            return out
        for d in sorted(self.root.glob("models--*--*")):
            repo_id = d.name[len("models--"):].replace("--", "/", 1)
            if not _REPO_ID.match(repo_id) or (author and repo_id.split("/")[0] != author) or (search and search not in repo_id):
                continue
            refs = self.list_repo_refs(repo_id)
            sha = refs["branches"].get("main")
            modified = self.commit_info(repo_id, sha).created_at if sha else None
            out.append(ModelInfo(repo_id, sha, modified, sorted(refs["branches"]), sorted(refs["tags"])))
        return out

    # -- writing ---------------------------------------------------------------------------------
    def create_repo(self, repo_id: str, exist_ok: bool = True) -> Path:
        d = self.repo_dir(repo_id)
        if d.is_dir() and not exist_ok:
            raise FileExistsError(f"repository {repo_id!r} already exists in {self.root}")
        for sub in ("blobs", "snapshots", "refs", ".openformers/commits"):
            (d / sub).mkdir(parents=True, exist_ok=True)
        return d

    def upload_folder(self, repo_id: str, folder_path: str | os.PathLike, commit_message: str = "Upload folder",
                      revision: str | None = None, commit_description: str = "", author: str | None = None,
                      create_pr: bool = False, ignore_patterns: list[str] | None = None) -> str:
        """Commit the files of ``folder_path`` as the new state of branch ``revision`` (default ``main``):
        a new commit whose parent is the branch's head; a file whose content is already stored
        is not stored again. Returns the commit id."""
        if create_pr:
            raise ValueError("a local hub has no pull requests; push to a branch instead (revision='my-branch')")
        folder = Path(folder_path)
        if not folder.is_dir():
            raise NotADirectoryError(f"upload_folder: {folder} is not a directory")
        branch = check_ref(revision or "main")
        d = self.create_repo(repo_id)
        record = self._refs_record(repo_id)
        if branch in record["tags"]:
            raise ValueError(f"{branch!r} is a tag of {repo_id}; commits go to branches")
        parent = (d / "refs" / branch).read_text(encoding="utf-8").strip() if (d / "refs" / branch).is_file() else None
        files: dict[str, dict[str, Any]] = {}
        ignored = ignore_patterns or []
        for p in sorted(folder.rglob("*")):
            rel = p.relative_to(folder).as_posix()
            if not p.is_file() or any(part.startswith(".") for part in rel.split("/")) or \
                    any(Path(rel).match(pat) for pat in ignored):
                continue
            info = self._describe(p, rel)
            blob = d / "blobs" / info["blob"]
            if not blob.exists():  # content-addressed: an unchanged file is stored once
                tmp = blob.with_name(f".{blob.name}.{uuid.uuid4().hex}.tmp")
                shutil.copyfile(p, tmp)
                durable.publish_file(tmp, blob)
            files[rel] = info
        return self._commit(repo_id, branch, files, parent, commit_message, commit_description, author)

    def commit_files(self, repo_id: str, additions: dict[str, bytes], deletions: list[str] | None = None,
                     commit_message: str = "Upload files", commit_description: str = "", revision: str | None = None,
                     parent_commit: str | None = None, author: str | None = None) -> str:
        """A commit that changes some files of branch ``revision`` (default ``main``), as the Hub's
        commit API does: ``additions`` {path: content}, ``deletions`` (paths, or folders ending in
        "/"). ``parent_commit``: refuse (ValueError) when the branch has moved past it."""
        branch = check_ref(revision or "main")
        d = self.create_repo(repo_id)
        if branch in self._refs_record(repo_id)["tags"]:
            raise ValueError(f"{branch!r} is a tag of {repo_id}; commits go to branches")
        ref = d / "refs" / branch
        parent = ref.read_text(encoding="utf-8").strip() if ref.is_file() else None
        if parent is None and (d / "refs").is_dir() and any((d / "refs").iterdir()):
            raise RevisionNotFoundError(f"{repo_id} has no branch {branch!r}; create it first (create_branch)")
        if parent_commit is not None and parent_commit != parent:
            raise ValueError(f"parent commit {parent_commit} is not the head of {branch!r} ({parent}); pull and retry")
        files = dict(self.commit_info(repo_id, parent).files) if parent else {}
        for path in deletions or []:
            folder = path.rstrip("/") + "/"
            gone = [p for p in files if p == path or p.startswith(folder)]
            if not gone:
                raise FileNotFoundError(f"{path} does not exist in {repo_id} at {branch}")
            for p in gone:
                del files[p]
        for path, data in additions.items():
            parts = path.split("/")
            if not path or path.startswith("/") or any(part in ("", ".", "..") for part in parts) or "\\" in path:
                raise ValueError(f"invalid path in repository: {path!r}")
            lfs = is_lfs(path, len(data))
            blob_id = hashlib.sha256(data).hexdigest() if lfs else git_blob_sha1(data)
            blob = d / "blobs" / blob_id
            if not blob.exists():
                tmp = blob.with_name(f".{blob.name}.{uuid.uuid4().hex}.tmp")
                tmp.write_bytes(data)
                durable.publish_file(tmp, blob)
            files[path] = {"blob": blob_id, "size": len(data), "lfs": lfs}
        return self._commit(repo_id, branch, files, parent, commit_message, commit_description, author)

    def _commit(self, repo_id: str, branch: str, files: dict[str, dict[str, Any]], parent: str | None,
                commit_message: str, commit_description: str, author: str | None) -> str:
        d = self.repo_dir(repo_id)
        record = self._refs_record(repo_id)
        if parent is not None and self.commit_info(repo_id, parent).files == files:
            return parent  # nothing changed: no empty commit (the Hub does the same)
        created = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime()) + f".{time.time_ns() // 1_000_000 % 1000:03d}Z"
        author = author or os.environ.get("USER") or "openformers"
        body = json.dumps({"files": files, "parents": [parent] if parent else [], "message": commit_message,
                           "description": commit_description, "author": author, "created_at": created,
                           "nonce": uuid.uuid4().hex}, sort_keys=True)
        commit = hashlib.sha1(body.encode()).hexdigest()
        self._write_snapshot(d, commit, files)
        info = CommitInfo(commit, commit_message, (commit_message + ("\n\n" + commit_description if commit_description else "")),
                          [author], created, [parent] if parent else [], files)
        _write_atomic(self._meta(repo_id) / "commits" / f"{commit}.json", json.dumps(info.__dict__, indent=1))
        self._set_ref(repo_id, branch, commit)
        if branch not in record["branches"]:
            record["branches"] = sorted({*record["branches"], branch})
            self._save_refs_record(repo_id, record)
        return commit

    def _write_snapshot(self, d: Path, commit: str, files: dict[str, dict[str, Any]]) -> None:
        staging = Path(tempfile.mkdtemp(prefix=f".{commit}.", dir=d / "snapshots"))
        for rel, info in files.items():
            target = staging / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            blob = d / "blobs" / info["blob"]
            try:  # a relative link, as the Hugging Face cache makes them
                target.symlink_to(os.path.relpath(blob, target.parent))
            except OSError:  # no symlinks here (Windows without developer mode): a copy
                shutil.copyfile(blob, target)
        os.replace(staging, d / "snapshots" / commit)

    def create_branch(self, repo_id: str, branch: str, revision: str | None = None, exist_ok: bool = False) -> str:
        """Branch ``branch`` at ``revision`` (default: ``main``'s head). Returns its commit id."""
        check_ref(branch)
        commit = self.resolve(repo_id, revision)
        record = self._refs_record(repo_id)
        if branch in record["branches"] or branch in record["tags"]:
            if exist_ok and branch in record["branches"]:
                return self.resolve(repo_id, branch)
            raise FileExistsError(f"{repo_id} already has a {'branch' if branch in record['branches'] else 'tag'} {branch!r}")
        self._set_ref(repo_id, branch, commit)
        record["branches"] = sorted({*record["branches"], branch})
        self._save_refs_record(repo_id, record)
        return commit

    def create_tag(self, repo_id: str, tag: str, revision: str | None = None, tag_message: str | None = None,
                   exist_ok: bool = False) -> str:
        """Tag ``revision`` (default: ``main``'s head) as ``tag``; a tag never moves. Returns its commit id."""
        check_ref(tag, "tag")
        commit = self.resolve(repo_id, revision)
        record = self._refs_record(repo_id)
        if tag in record["tags"] or tag in record["branches"]:
            if exist_ok and tag in record["tags"]:
                return self.resolve(repo_id, tag)
            raise FileExistsError(f"{repo_id} already has a {'tag' if tag in record['tags'] else 'branch'} {tag!r}")
        self._set_ref(repo_id, tag, commit)
        record["tags"] = sorted({*record["tags"], tag})
        self._save_refs_record(repo_id, record)
        return commit

    def iter_blobs(self, repo_id: str) -> Iterator[Path]:
        d = self.repo_dir(repo_id) / "blobs"
        return (p for p in d.iterdir() if not p.name.startswith(".")) if d.is_dir() else iter(())


def push_folder(repo_id: str, folder: str | os.PathLike, commit_message: str = "Upload model",
                revision: str | None = None, hub_dir: str | os.PathLike | None = None) -> str:
    """Commit ``folder`` to ``repo_id`` in the local hub; returns the commit id."""
    return LocalHub(hub_dir).upload_folder(repo_id, folder, commit_message=commit_message, revision=revision)


def push_to_hub(obj: Any, repo_id: str, commit_message: str | None = None, revision: str | None = None,
                hub_dir: str | os.PathLike | None = None, model_card: Any = True, **save_kwargs: Any) -> str:
    """Save ``obj`` (a model, tokenizer or anything with ``save_pretrained``) and commit it to
    ``repo_id`` in the local hub (``OPENFORMERS_HUB``, ``hub_dir``). The commit holds what
    ``save_pretrained`` writes, plus the README.md model card the repository already has or a new
    one (``model_card=False``: none; a ``ModelCard``: that one). Returns the commit id."""
    hub = LocalHub(hub_dir)
    with tempfile.TemporaryDirectory(prefix="openformers-push-") as tmp:
        if hub.repo_exists(repo_id):
            try:  # start from the branch's files, so a tokenizer push keeps the weights (as the Hub does)
                snap = hub.snapshot_dir(repo_id, revision)
                shutil.copytree(snap, tmp, dirs_exist_ok=True, symlinks=False)
            except RevisionNotFoundError:
                pass
        obj.save_pretrained(tmp, **save_kwargs)
        if model_card is not False and model_card is not None:
            from openformers.hub.card import ModelCard

            card = model_card if isinstance(model_card, ModelCard) else None
            readme = Path(tmp) / "README.md"
            if card is None and not readme.is_file():
                card = ModelCard.from_model(obj, repo_id=repo_id)
            if card is not None:
                card.save(readme)
        name = type(obj).__name__
        return hub.upload_folder(repo_id, tmp, commit_message=commit_message or f"Upload {name}", revision=revision)
