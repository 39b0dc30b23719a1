"""``openformers hub serve``: the real huggingface_hub client and transformers download a model we
pushed, at a branch, a tag and a commit, from a server on 127.0.0.1 (nothing leaves loopback)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import torch

from openformers.hub import LocalHub
from openformers.models.auto import AutoConfig, AutoModel

ROOT = Path(__file__).resolve().parents[2]

CLIENT = r"""
import json, sys
from huggingface_hub import snapshot_download, hf_hub_download, HfApi
import transformers
endpoint, repo, main, tag, branch, first, cache = sys.argv[1:]
out = {}
for rev in ("main", "v1", "experiment", first):
    path = snapshot_download(repo, revision=rev, cache_dir=cache)
    out["snapshot:" + rev] = {"path": path, "files": sorted(__import__("os").listdir(path))}
out["hf_hub_download"] = hf_hub_download(repo, "config.json", revision=first, endpoint=endpoint, cache_dir=cache + "2")
api = HfApi(endpoint=endpoint)
out["sha:v1"] = api.model_info(repo, revision="v1").sha
out["refs"] = sorted(b.name for b in api.list_repo_refs(repo).branches)
for rev in ("main", "v1", first):
    model = transformers.AutoModel.from_pretrained(repo, revision=rev, cache_dir=cache + "3")
    out["tf:" + rev] = float(model.embeddings.word_embeddings.weight.sum())
try:
    hf_hub_download(repo, "missing.txt", endpoint=endpoint, cache_dir=cache)
except Exception as exc:
    out["missing"] = type(exc).__name__
# uploads with the token: a new repository, a folder, then one file changed on a new branch
import os, tempfile
writer = HfApi(endpoint=endpoint, token="s3cret")
writer.create_repo("acme/uploaded")
folder = tempfile.mkdtemp()
for name, text in (("config.json", '{"a": 1}'), ("sub/notes.txt", "hello")):
    os.makedirs(os.path.dirname(os.path.join(folder, name)), exist_ok=True)
    open(os.path.join(folder, name), "w").write(text)
c1 = writer.upload_folder(repo_id="acme/uploaded", folder_path=folder, commit_message="folder").oid
writer.create_branch("acme/uploaded", branch="dev")
writer.create_tag("acme/uploaded", tag="v0", revision=c1)
c2 = writer.upload_file(path_or_fileobj=b"changed", path_in_repo="sub/notes.txt", repo_id="acme/uploaded",
                        commit_message="edit").oid
out["uploaded"] = [c1, c2, open(hf_hub_download("acme/uploaded", "sub/notes.txt", cache_dir=cache)).read(),
                   open(hf_hub_download("acme/uploaded", "sub/notes.txt", revision=c1, cache_dir=cache)).read()]
try:
    HfApi(endpoint=endpoint, token="wrong").upload_file(path_or_fileobj=b"x", path_in_repo="x", repo_id="acme/uploaded")
except Exception as exc:
    out["bad_token"] = getattr(getattr(exc, "response", None), "status_code", type(exc).__name__)
print("RESULT " + json.dumps(out))
"""


def _tiny_bert(seed: int):
    torch.manual_seed(seed)
    cfg = AutoConfig.for_model("bert", vocab_size=99, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                               intermediate_size=20)
    return AutoModel.from_config(cfg).eval()


@pytest.fixture()
def served_hub(tmp_path):
    hub_dir = tmp_path / "hub"
    hub = LocalHub(hub_dir)
    first_model, second_model = _tiny_bert(0), _tiny_bert(1)
    first = first_model.push_to_hub("acme/tiny", hub_dir=hub_dir, commit_message="first")
    hub.create_tag("acme/tiny", "v1")
    hub.create_branch("acme/tiny", "experiment")
    main = second_model.push_to_hub("acme/tiny", hub_dir=hub_dir, commit_message="second")
    env = {**os.environ, "PYTHONPATH": str(ROOT), "NO_PROXY": "127.0.0.1,localhost", "no_proxy": "127.0.0.1,localhost"}
    server = subprocess.Popen([sys.executable, "-m", "openformers", "hub", "serve", str(hub_dir), "--port", "0", "--token", "s3cret"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=ROOT)
    try:
        line = server.stdout.readline()
        assert "http://127.0.0.1:" in line, line + server.stderr.read()
        endpoint = line.split("HF_ENDPOINT=")[1].split(")")[0]
        yield endpoint, hub, first, main, (first_model, second_model)
    finally:
        server.terminate()
        server.wait(timeout=10)


def _get(url: str, method: str = "GET", headers: dict | None = None):
    req = urllib.request.Request(url, method=method, headers=headers or {})
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # loopback only, never a proxy
    return opener.open(req, timeout=10)


def test_real_clients_download_at_branch_tag_and_commit(served_hub, tmp_path):
    pytest.importorskip("transformers")
    endpoint, hub, first, main, (first_model, second_model) = served_hub
    env = {**os.environ, "HF_ENDPOINT": endpoint, "HF_HOME": str(tmp_path / "hf_home"), "HF_HUB_OFFLINE": "0",
           "TRANSFORMERS_OFFLINE": "0", "HF_HUB_DISABLE_TELEMETRY": "1", "HF_HUB_DISABLE_XET": "1",
           "NO_PROXY": "127.0.0.1,localhost", "no_proxy": "127.0.0.1,localhost"}
    for var in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy", "ALL_PROXY", "all_proxy", "HF_TOKEN"):
        env.pop(var, None)
    proc = subprocess.run([sys.executable, "-c", CLIENT, endpoint, "acme/tiny", main, "v1", "experiment", first,
                           str(tmp_path / "cache")], capture_output=True, text=True, env=env, timeout=240)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    assert proc.returncode == 0 and lines, proc.stderr[-3000:]
    out = json.loads(lines[0][len("RESULT "):])
    assert out["snapshot:main"]["path"].endswith(main) and out["snapshot:v1"]["path"].endswith(first)
    assert out["snapshot:experiment"]["path"].endswith(first) and out["snapshot:" + first]["path"].endswith(first)
    assert out["snapshot:main"]["files"] == ["README.md", "config.json", "model.safetensors"]
    assert Path(out["hf_hub_download"]).read_text() == (hub.snapshot_dir("acme/tiny", first) / "config.json").read_text()
    assert out["sha:v1"] == first and out["refs"] == ["experiment", "main"]
    sums = {name: float(m.embeddings.word_embeddings.weight.detach().sum()) for name, m in (("first", first_model), ("second", second_model))}
    assert out["tf:main"] == pytest.approx(sums["second"], abs=1e-4)
    assert out["tf:v1"] == pytest.approx(sums["first"], abs=1e-4) and out["tf:" + first] == pytest.approx(sums["first"], abs=1e-4)
    assert out["missing"] in ("EntryNotFoundError", "RemoteEntryNotFoundError")
    c1, c2, now, before = out["uploaded"]
    assert (now, before) == ("changed", "hello") and hub.list_repo_commits("acme/uploaded")[0].parents == [c1]
    assert hub.list_repo_commits("acme/uploaded")[0].commit_id == c2
    assert set(hub.list_files("acme/uploaded")) == {"config.json", "sub/notes.txt"}  # a commit changes, not replaces
    assert out["bad_token"] == 401
    assert hub.list_repo_refs("acme/uploaded") == {"branches": {"main": c2, "dev": c1}, "tags": {"v0": c1}}


def test_headers_ranges_and_errors(served_hub):
    endpoint, hub, first, main, _ = served_hub
    blob = (hub.snapshot_dir("acme/tiny", "main") / "model.safetensors").read_bytes()
    url = f"{endpoint}/acme/tiny/resolve/main/model.safetensors"
    head = _get(url, "HEAD")
    files = hub.list_files("acme/tiny")
    assert head.headers["X-Repo-Commit"] == main and head.headers["Content-Length"] == str(len(blob))
    assert head.headers["ETag"] == f'"{files["model.safetensors"]["blob"]}"' == head.headers["X-Linked-Etag"]
    part = _get(url, headers={"Range": "bytes=10-99"})
    assert part.status == 206 and part.read() == blob[10:100]
    assert part.headers["Content-Range"] == f"bytes 10-99/{len(blob)}"
    assert _get(url, headers={"Range": "bytes=-5"}).read() == blob[-5:]
    info = json.loads(_get(f"{endpoint}/api/models/acme/tiny/revision/v1").read())
    assert info["sha"] == first and {s["rfilename"] for s in info["siblings"]} == {"README.md", "config.json", "model.safetensors"}
    for path, code in (("acme/tiny/resolve/main/nope.bin", "EntryNotFound"), ("acme/tiny/resolve/nope/config.json", "RevisionNotFound"),
                       ("acme/other/resolve/main/config.json", "RepoNotFound"), ("acme/tiny/resolve/main/..%2F..%2Frefs%2Fmain", "EntryNotFound")):
        with pytest.raises(urllib.error.HTTPError) as err:
            _get(f"{endpoint}/{path}")
        assert err.value.code == 404 and err.value.headers["X-Error-Code"] == code, path
    with pytest.raises(urllib.error.HTTPError) as err:  # this server takes uploads with its token only
        _get(f"{endpoint}/api/models/acme/tiny/commit/main", "POST")
    assert err.value.code == 401


def test_read_only_by_default(tmp_path):
    import threading

    from openformers.hub.server import make_server

    _tiny_bert(0).push_to_hub("acme/tiny", hub_dir=tmp_path)
    server = make_server(tmp_path, port=0)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        host, port = server.server_address[:2]
        with pytest.raises(urllib.error.HTTPError) as err:
            _get(f"http://{host}:{port}/api/models/acme/tiny/commit/main", "POST")
        assert err.value.code == 405 and err.value.headers["X-Error-Code"] == "ReadOnly"
        listing = json.loads(_get(f"http://{host}:{port}/api/models").read())
        assert [m["id"] for m in listing] == ["acme/tiny"]
    finally:
        server.shutdown()
        server.server_close()
