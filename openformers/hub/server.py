"""``openformers hub serve DIR``: the local hub over HTTP, with the part of the Hugging Face Hub's
API that downloads use, so ``huggingface_hub`` (``snapshot_download``, ``hf_hub_download`` with
``endpoint=`` or ``HF_ENDPOINT``) and transformers' ``from_pretrained`` download from it.

Routes (reads; uploads only when the server has a token, see ``do_POST``):

* ``GET /api/models`` (``?author=``, ``?search=``): the repositories;
* ``GET /api/models/{repo}[/revision/{rev}]``: id, ``sha`` (the commit) and ``siblings``;
* ``GET /api/models/{repo}/tree/{rev}[/{path}]`` (``?recursive=true``): files with ``oid``,
  ``size`` and ``lfs`` ({oid: sha256, size, pointerSize}) for large files;
* ``GET /api/models/{repo}/refs`` and ``/commits/{rev}``: branches, tags and history;
* ``GET``/``HEAD /{repo}/resolve/{rev}/{path}``: the file, with ``ETag`` (git blob sha1, or sha256
  for large files, as the Hub sends them; ``X-Linked-Etag`` and ``X-Linked-Size`` too for those),
  ``X-Repo-Commit``, ``Content-Length``, ``Accept-Ranges`` and ``Range`` requests (206).

Errors carry the Hub's ``X-Error-Code`` (``RepoNotFound``, ``RevisionNotFound``,
``EntryNotFound``), which the client turns into its own exceptions. File paths are looked up in
the commit's file list, never joined onto the filesystem, so no request reaches outside the hub.
"""
from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import logging
import os
import re
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote, unquote, urlsplit

from openformers.hub.local import (
    LocalHub,
    RepositoryNotFoundError,
    RevisionNotFoundError,
    git_blob_sha1,
)

from openformers.core import settings

logger = logging.getLogger("openformers")
_RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")
MAX_UPLOAD_BYTES = int(settings.get("OPENFORMERS_HUB_MAX_UPLOAD_MB") * 1024 * 1024)


class _HubError(Exception):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


def _lfs_pointer_oid(sha256: str, size: int) -> str:
    """The git blob id of an LFS pointer file: what the Hub reports as a large file's ``oid``."""
    pointer = f"version https://git-lfs.github.com/spec/v1\noid sha256:{sha256}\nsize {size}\n".encode()
    return git_blob_sha1(pointer)


class HubRequestHandler(BaseHTTPRequestHandler):
    server_version = "openformers-hub"
    protocol_version = "HTTP/1.1"
    hub: LocalHub  # set on the subclass that make_server builds
    token: str | None = None  # uploads need it; None: read-only

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 (the base class's name)
        logger.debug("hub %s - %s", self.address_string(), format % args)

    # -- dispatch -------------------------------------------------------------------------------------
    def do_GET(self) -> None:
        self._handle(head=False)

    def do_HEAD(self) -> None:
        self._handle(head=True)

    def _refuse_write(self) -> None:
        self._error(_HubError(HTTPStatus.METHOD_NOT_ALLOWED, "ReadOnly",
                              "this hub is served read-only; start it with --token to accept uploads"))

    do_PUT = do_DELETE = _refuse_write

    def do_POST(self) -> None:
        """Uploads (``huggingface_hub``'s ``create_repo``, ``upload_file``, ``upload_folder``,
        ``create_commit``): only when the server has a token and the request carries it."""
        try:
            if self.token is None:
                self._refuse_write()
                return
            given = self.headers.get("Authorization", "")
            if not hmac.compare_digest(given.encode(), f"Bearer {self.token}".encode()):
                raise _HubError(HTTPStatus.UNAUTHORIZED, "Unauthorized", "a write needs the hub's token (HfApi(token=...))")
            length = int(self.headers.get("Content-Length") or 0)
            if length > MAX_UPLOAD_BYTES:
                raise _HubError(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, "TooLarge",
                                f"an upload of {length} bytes is over the limit of {MAX_UPLOAD_BYTES}")
            body = self.rfile.read(length) if length else b""
            parts = [p for p in urlsplit(self.path).path.split("/") if p]
            if parts == ["api", "repos", "create"]:
                self._create_repo(json.loads(body or b"{}"))
            elif len(parts) >= 6 and parts[:2] == ["api", "models"] and parts[4] in ("branch", "tag"):
                repo_id, name = f"{parts[2]}/{parts[3]}", unquote("/".join(parts[5:]))
                payload = json.loads(body or b"{}")
                try:
                    if parts[4] == "branch":  # /branch/{branch}, {"startingPoint": revision}
                        self.hub.create_branch(repo_id, name, payload.get("startingPoint"))
                    else:  # /tag/{revision}, {"tag": name}
                        self.hub.create_tag(repo_id, payload["tag"], name)
                except FileExistsError as exc:
                    raise _HubError(HTTPStatus.CONFLICT, "RefExists", str(exc)) from exc
                self._json({"success": True}, False)
            elif len(parts) >= 5 and parts[:2] == ["api", "models"] and parts[4] in ("preupload", "commit"):
                repo_id = f"{parts[2]}/{parts[3]}"
                revision = unquote(parts[5]) if len(parts) > 5 else "main"
                if parts[4] == "preupload":
                    # every file goes in the commit itself (base64), none through LFS storage
                    files = json.loads(body or b"{}").get("files", [])
                    self._json({"files": [{"path": f["path"], "uploadMode": "regular", "shouldIgnore": False}
                                          for f in files]}, False)
                else:
                    self._commit(repo_id, revision, body)
            else:
                raise _HubError(HTTPStatus.NOT_FOUND, "NotFound", f"no upload route {urlsplit(self.path).path}")
        except _HubError as exc:
            self._error(exc)
        except RevisionNotFoundError as exc:
            self._error(_HubError(HTTPStatus.NOT_FOUND, "RevisionNotFound", str(exc)))
        except RepositoryNotFoundError as exc:
            self._error(_HubError(HTTPStatus.NOT_FOUND, "RepoNotFound", str(exc)))
        except FileNotFoundError as exc:
            self._error(_HubError(HTTPStatus.NOT_FOUND, "EntryNotFound", str(exc)))
        except (ValueError, KeyError, binascii.Error) as exc:
            self._error(_HubError(HTTPStatus.BAD_REQUEST, "BadRequest", str(exc)))

    def _create_repo(self, payload: dict[str, Any]) -> None:
        name, org = payload.get("name"), payload.get("organization")
        if payload.get("type", "model") not in ("model", None):
            raise _HubError(HTTPStatus.BAD_REQUEST, "BadRequest", "this hub holds models only")
        repo_id = f"{org}/{name}" if org else str(name)
        if self.hub.repo_exists(repo_id):
            raise _HubError(HTTPStatus.CONFLICT, "RepoExists", f"You already created this model repo: {repo_id}")
        self.hub.create_repo(repo_id)
        host = self.headers.get("Host", "localhost")
        self._json({"url": f"http://{host}/{repo_id}", "name": repo_id}, False)

    def _commit(self, repo_id: str, revision: str, body: bytes) -> None:
        header: dict[str, Any] = {}
        additions: dict[str, bytes] = {}
        deletions: list[str] = []
        for line in body.splitlines():
            if not line.strip():
                continue
            item = json.loads(line)
            key, value = item.get("key"), item.get("value") or {}
            if key == "header":
                header = value
            elif key == "file":
                if value.get("encoding", "base64") != "base64":
                    raise ValueError(f"file {value.get('path')!r}: only base64 content is accepted")
                additions[value["path"]] = base64.b64decode(value["content"], validate=True)
            elif key == "deletedFile":
                deletions.append(value["path"])
            elif key == "deletedFolder":
                deletions.append(value["path"].rstrip("/") + "/")
            else:
                raise ValueError(f"commit operation {key!r} is not supported here (files are sent inline, no LFS)")
        commit = self.hub.commit_files(repo_id, additions, deletions, commit_message=header.get("summary") or "Upload",
                                       commit_description=header.get("description") or "", revision=revision,
                                       parent_commit=header.get("parentCommit"))
        host = self.headers.get("Host", "localhost")
        self._json({"commitUrl": f"http://{host}/{repo_id}/commit/{commit}", "commitOid": commit,
                    "success": True}, False)

    def _handle(self, head: bool) -> None:
        try:
            url = urlsplit(self.path)
            query = {k: v[-1] for k, v in parse_qs(url.query).items()}
            parts = [p for p in url.path.split("/") if p]
            if parts[:2] == ["api", "models"]:
                self._api(parts[2:], query, head)
            elif len(parts) >= 5 and parts[2] == "resolve":
                self._resolve(f"{parts[0]}/{parts[1]}", unquote(parts[3]), "/".join(unquote(p) for p in parts[4:]), head)
            elif len(parts) >= 6 and parts[0] == "models" and parts[3] == "resolve":
                self._resolve(f"{parts[1]}/{parts[2]}", unquote(parts[4]), "/".join(unquote(p) for p in parts[5:]), head)
            else:
                raise _HubError(HTTPStatus.NOT_FOUND, "NotFound", f"no route for {url.path}")
        except _HubError as exc:
            self._error(exc, head)
        except RepositoryNotFoundError as exc:
            self._error(_HubError(HTTPStatus.NOT_FOUND, "RepoNotFound", str(exc)), head)
        except RevisionNotFoundError as exc:
            self._error(_HubError(HTTPStatus.NOT_FOUND, "RevisionNotFound", str(exc)), head)
        except ValueError as exc:  # an invalid repo id or revision name
            self._error(_HubError(HTTPStatus.BAD_REQUEST, "BadRequest", str(exc)), head)
        except (BrokenPipeError, ConnectionResetError):
            pass

    # -- responses ------------------------------------------------------------------------------------
    def _error(self, exc: _HubError, head: bool = False) -> None:
        body = json.dumps({"error": exc.message}).encode()
        self.send_response(exc.status)
        self.send_header("Content-Type", "application/json")
        self.send_header("X-Error-Code", exc.code)
        self.send_header("X-Error-Message", exc.message.replace("\n", " ")[:1000])
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if not head:
            self.wfile.write(body)

    def _json(self, value: Any, head: bool, headers: dict[str, str] | None = None) -> None:
        body = json.dumps(value).encode()
        self.send_response(HTTPStatus.OK)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        if not head:
            self.wfile.write(body)

    # -- API ------------------------------------------------------------------------------------------
    def _api(self, parts: list[str], query: dict[str, str], head: bool) -> None:
        hub = self.hub
        if not parts:
            models = hub.list_models(author=query.get("author"), search=query.get("search"))
            self._json([{"id": m.id, "modelId": m.id, "sha": m.sha, "lastModified": m.last_modified, "tags": m.tags,
                         "private": False} for m in models], head)
            return
        if len(parts) < 2:
            raise _HubError(HTTPStatus.NOT_FOUND, "RepoNotFound", "give a repository: /api/models/{org}/{name}")
        repo_id, rest = f"{parts[0]}/{parts[1]}", parts[2:]
        if not rest or rest[0] == "revision":
            revision = unquote(rest[1]) if len(rest) > 1 else None
            self._json(self._info(repo_id, revision), head)
        elif rest[0] == "tree":
            revision = unquote(rest[1]) if len(rest) > 1 else None
            prefix = "/".join(unquote(p) for p in rest[2:])
            recursive = query.get("recursive", "false").lower() in ("1", "true")
            self._json(self._tree(repo_id, revision, prefix, recursive), head)
        elif rest[0] == "refs":
            refs = hub.list_repo_refs(repo_id)
            self._json({
                "branches": [{"name": n, "ref": f"refs/heads/{n}", "targetCommit": c} for n, c in sorted(refs["branches"].items())],
                "tags": [{"name": n, "ref": f"refs/tags/{n}", "targetCommit": c} for n, c in sorted(refs["tags"].items())],
                "converts": [],
            }, head)
        elif rest[0] == "commits":
            revision = unquote(rest[1]) if len(rest) > 1 else None
            self._json([{"id": c.commit_id, "title": c.title, "message": c.message, "date": c.created_at,
                         "authors": [{"user": a} for a in c.authors]}
                        for c in hub.list_repo_commits(repo_id, revision)], head)
        else:
            raise _HubError(HTTPStatus.NOT_FOUND, "NotFound", f"no API route /api/models/{repo_id}/{'/'.join(rest)}")

    def _info(self, repo_id: str, revision: str | None) -> dict[str, Any]:
        commit = self.hub.resolve(repo_id, revision)
        info = self.hub.commit_info(repo_id, commit)
        refs = self.hub.list_repo_refs(repo_id)
        card = {}
        if "README.md" in info.files:
            try:
                from openformers.hub.card import ModelCard

                card = ModelCard(self._blob(repo_id, info.files["README.md"]).read_text(encoding="utf-8")).data.to_dict()
            except (ValueError, OSError):
                card = {}
        author, name = repo_id.split("/")
        return {
            "_id": commit[:24], "id": repo_id, "modelId": repo_id, "author": author, "sha": commit,
            "lastModified": info.created_at, "createdAt": info.created_at, "private": False, "disabled": False,
            "gated": False, "downloads": 0, "likes": 0, "tags": sorted({*(card.get("tags") or []), *refs["tags"]}),
            "library_name": card.get("library_name"), "pipeline_tag": card.get("pipeline_tag"),
            "cardData": card or None, "siblings": [{"rfilename": p} for p in sorted(info.files)],
            "usedStorage": sum(f["size"] for f in info.files.values()),
        }

    def _tree(self, repo_id: str, revision: str | None, prefix: str, recursive: bool) -> list[dict[str, Any]]:
        files = self.hub.list_files(repo_id, revision)
        base = prefix.strip("/")
        if base and base not in files and not any(p.startswith(base + "/") for p in files):
            raise _HubError(HTTPStatus.NOT_FOUND, "EntryNotFound", f"{repo_id} has no folder {base!r} at this revision")
        out: list[dict[str, Any]] = []
        dirs: set[str] = set()
        for path, f in sorted(files.items()):
            if base and not path.startswith(base + "/"):
                continue
            rel = path[len(base) + 1:] if base else path
            if not recursive and "/" in rel:
                dirs.add((base + "/" if base else "") + rel.split("/")[0])
                continue
            if recursive:  # every folder on the way is an entry too, as the Hub lists them
                segs = rel.split("/")[:-1]
                for i in range(1, len(segs) + 1):
                    dirs.add((base + "/" if base else "") + "/".join(segs[:i]))
            entry: dict[str, Any] = {"type": "file", "path": path, "size": f["size"]}
            if f["lfs"]:
                entry["oid"] = _lfs_pointer_oid(f["blob"], f["size"])
                entry["lfs"] = {"oid": f["blob"], "size": f["size"], "pointerSize": 134}
            else:
                entry["oid"] = f["blob"]
            out.append(entry)
        out += [{"type": "directory", "path": d, "oid": hashlib.sha1(d.encode()).hexdigest(), "size": 0} for d in sorted(dirs)]
        return out

    # -- files ----------------------------------------------------------------------------------------
    def _blob(self, repo_id: str, f: dict[str, Any]) -> Path:
        blob = self.hub.repo_dir(repo_id) / "blobs" / f["blob"]
        if not blob.is_file():
            raise _HubError(HTTPStatus.INTERNAL_SERVER_ERROR, "MissingBlob", f"blob {f['blob']} of {repo_id} is missing")
        return blob

    def _resolve(self, repo_id: str, revision: str, path: str, head: bool) -> None:
        commit = self.hub.resolve(repo_id, revision)
        files = self.hub.commit_info(repo_id, commit).files
        f = files.get(path)
        if f is None:
            raise _HubError(HTTPStatus.NOT_FOUND, "EntryNotFound", f"{path} does not exist in {repo_id} at {revision}")
        blob = self._blob(repo_id, f)
        size = f["size"]
        etag = f'"{f["blob"]}"'
        if self.headers.get("If-None-Match") in (etag, f["blob"]):
            self.send_response(HTTPStatus.NOT_MODIFIED)
            self.send_header("ETag", etag)
            self.send_header("X-Repo-Commit", commit)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        start, end = 0, size - 1
        status = HTTPStatus.OK
        wanted = self.headers.get("Range")
        if wanted:
            m = _RANGE.match(wanted.strip())
            if not m or (not m.group(1) and not m.group(2)):
                raise _HubError(HTTPStatus.REQUESTED_RANGE_NOT_SATISFIABLE, "BadRange", f"unsupported Range {wanted!r}")
            if m.group(1):
                start = int(m.group(1))
                end = min(int(m.group(2)), size - 1) if m.group(2) else size - 1
            else:  # the last N bytes
                start = max(size - int(m.group(2)), 0)
            if start >= size or start > end:
                self.send_response(HTTPStatus.REQUESTED_RANGE_NOT_SATISFIABLE)
                self.send_header("Content-Range", f"bytes */{size}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            status = HTTPStatus.PARTIAL_CONTENT
        length = end - start + 1 if size else 0
        self.send_response(status)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(length))
        self.send_header("Accept-Ranges", "bytes")
        self.send_header("ETag", etag)
        self.send_header("X-Repo-Commit", commit)
        if f["lfs"]:
            self.send_header("X-Linked-Etag", etag)
            self.send_header("X-Linked-Size", str(size))
        self.send_header("Content-Disposition", f"inline; filename*=UTF-8''{quote(path.split('/')[-1])}")
        if status == HTTPStatus.PARTIAL_CONTENT:
            self.send_header("Content-Range", f"bytes {start}-{end}/{size}")
        self.end_headers()
        if head or not length:
            return
        with open(blob, "rb") as fh:
            fh.seek(start)
            remaining = length
            while remaining:
                chunk = fh.read(min(remaining, 1 << 20))
                if not chunk:
                    break
                self.wfile.write(chunk)
                remaining -= len(chunk)


def make_server(hub_dir: str | os.PathLike | None = None, host: str = "127.0.0.1", port: int = 8000,
                token: str | None = None) -> ThreadingHTTPServer:
    """An HTTP server over the hub at ``hub_dir`` (default ``OPENFORMERS_HUB``); ``port=0`` picks a
    free port (``server.server_address``). ``token``: accept uploads that carry it (``Authorization:
    Bearer``); None: read-only. Run it with ``serve_forever()``."""
    hub = LocalHub(hub_dir)
    if not hub.root.is_dir():
        raise FileNotFoundError(f"hub directory {hub.root} does not exist; push a model to it first "
                                f"(OPENFORMERS_HUB={hub.root} and model.push_to_hub('org/name'))")
    handler = type("BoundHubRequestHandler", (HubRequestHandler,), {"hub": hub, "token": token or None})
    server = ThreadingHTTPServer((host, port), handler)
    server.daemon_threads = True
    return server


def serve(hub_dir: str | os.PathLike | None = None, host: str = "127.0.0.1", port: int = 8000,
          token: str | None = None) -> None:
    """Serve the hub until interrupted (uploads with ``token``)."""
    server = make_server(hub_dir, host, port, token)
    h, p = server.server_address[:2]
    print(f"serving the hub {LocalHub(hub_dir).root} at http://{h}:{p} (HF_ENDPOINT=http://{h}:{p}); Ctrl-C stops", flush=True)
    try:
        server.serve_forever()
    finally:
        server.server_close()


__all__ = ["make_server", "serve", "HubRequestHandler"]
