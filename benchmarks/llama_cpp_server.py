"""A small OpenAI-compatible streaming chat server on llama.cpp, the peer of ``bench_serve.py``.

Not llama.cpp's own server: llama-cpp-python (whose ``llama_cpp.server`` is the usual Python one) has no
wheel for this machine, only a source archive that compiles llama.cpp. This script drives the prebuilt
libllama of llama-cpp-py-sync through its cffi declarations of ``llama.h`` (loaded as
``tests/export/llama_cpp_runner.py`` loads it) and batches the way llama.cpp's ``llama-server`` does:
one ``llama_context`` with ``--parallel`` sequences (each its own KV cache of ``--ctx-per-seq``
positions, or one shared cache with ``--kv-unified``); every turn one
``llama_decode`` holds one new token of each decoding sequence plus prompt tokens of admitted ones
(at most ``--batch`` in all); the next token is the argmax of the logits (``temperature`` 0, what the
benchmark asks). The chat template is the GGUF's own, applied by ``llama_chat_apply_template``.

    python benchmarks/llama_cpp_server.py --model FILE.gguf --port 8081 --parallel 16 --threads 2

Endpoints: ``GET /health``, ``GET /v1/models``, ``POST /v1/chat/completions`` (streaming or not; greedy only,
``max_tokens``). Only for benchmarking.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import threading
import time
import uuid
from collections import deque
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


class Sequence:
    def __init__(self, ids: list[int], max_tokens: int, loop: asyncio.AbstractEventLoop, queue: asyncio.Queue) -> None:
        self.ids, self.max_tokens, self.loop, self.queue = ids, max_tokens, loop, queue
        self.seq = -1
        self.fed = 0  # prompt tokens in the cache
        self.pending: int | None = None  # the last sampled token, fed next turn
        self.generated = 0
        self.cancelled = False

    def put(self, item) -> None:
        self.loop.call_soon_threadsafe(self.queue.put_nowait, item)


class LlamaEngine:
    def __init__(self, model_path: str, parallel: int, ctx_per_seq: int, batch: int, threads: int,
                 kv_unified: bool = False) -> None:
        import llama_cpp_py_sync
        from llama_cpp_py_sync._cffi_bindings import get_ffi

        from tests.export.llama_cpp_runner import _PySync

        self.ffi = ffi = get_ffi()
        self.lib = lib = _PySync._library(ffi, Path(llama_cpp_py_sync.__file__).parent)
        lib.llama_log_set(_PySync._quiet(ffi), ffi.NULL)
        lib.llama_backend_init()
        self.model = lib.llama_model_load_from_file(model_path.encode(), lib.llama_model_default_params())
        if self.model == ffi.NULL:
            raise SystemExit(f"llama.cpp could not load {model_path}: {' | '.join(_PySync.errors[-3:])}")
        p = lib.llama_context_default_params()
        p.n_ctx = parallel * ctx_per_seq
        p.n_batch = p.n_ubatch = batch
        p.n_seq_max = parallel
        p.n_threads = p.n_threads_batch = threads
        p.kv_unified = kv_unified
        self.ctx = lib.llama_init_from_model(self.model, p)
        if self.ctx == ffi.NULL:
            raise SystemExit("llama.cpp could not make a context")
        self.mem = lib.llama_get_memory(self.ctx)
        self.vocab = lib.llama_model_get_vocab(self.model)
        self.n_vocab = lib.llama_vocab_n_tokens(self.vocab)
        self.template = lib.llama_model_chat_template(self.model, ffi.NULL)
        self.parallel, self.batch_size, self.ctx_per_seq = parallel, batch, ctx_per_seq
        self.free = list(range(parallel))
        self.waiting: deque[Sequence] = deque()
        self.running: list[Sequence] = []
        self.lock = threading.Lock()
        self.wake = threading.Event()
        self.batch = lib.llama_batch_init(batch + parallel, 0, 1)
        threading.Thread(target=self.run, daemon=True).start()

    def prompt_ids(self, messages: list[dict]) -> list[int]:
        ffi, lib = self.ffi, self.lib
        keep = [(ffi.new("char[]", m["role"].encode()), ffi.new("char[]", str(m.get("content", "")).encode()))
                for m in messages]
        chat = ffi.new(f"llama_chat_message[{len(keep)}]")
        for i, (role, content) in enumerate(keep):
            chat[i].role, chat[i].content = role, content
        size = 4096 + sum(len(str(m.get("content", ""))) for m in messages) * 2
        buf = ffi.new(f"char[{size}]")
        n = lib.llama_chat_apply_template(self.template, chat, len(keep), True, buf, size)
        if n < 0 or n > size:
            raise ValueError("llama_chat_apply_template failed")
        raw = ffi.buffer(buf, n)[:]
        out = ffi.new(f"llama_token[{len(raw) + 8}]")
        count = lib.llama_tokenize(self.vocab, raw, len(raw), out, len(raw) + 8, True, True)
        return [out[i] for i in range(count)]

    def piece(self, token: int) -> str:
        buf = self.ffi.new("char[64]")
        n = self.lib.llama_token_to_piece(self.vocab, token, buf, 64, 0, False)
        return self.ffi.buffer(buf, max(n, 0))[:].decode("utf-8", errors="replace")

    def submit(self, s: Sequence) -> None:
        with self.lock:
            self.waiting.append(s)
        self.wake.set()

    def _finish(self, s: Sequence, reason: str) -> None:
        self.running.remove(s)
        self.lib.llama_memory_seq_rm(self.mem, s.seq, -1, -1)
        self.free.append(s.seq)
        s.put(("finish", reason))

    def run(self) -> None:
        lib, ffi, batch = self.lib, self.ffi, self.batch
        while True:
            for s in [s for s in self.running if s.cancelled]:
                self._finish(s, "cancelled")
            with self.lock:
                while self.free and self.waiting:
                    s = self.waiting.popleft()
                    s.seq = self.free.pop()
                    self.running.append(s)
            if not self.running:
                self.wake.wait(0.5)
                self.wake.clear()
                continue
            n, rows = 0, []  # rows: (sequence, batch index of its logits)
            for s in self.running:  # decoding sequences first: one token each
                if s.pending is not None:
                    pos = len(s.ids) + s.generated - 1
                    batch.token[n], batch.pos[n], batch.n_seq_id[n], batch.logits[n] = s.pending, pos, 1, 1
                    batch.seq_id[n][0] = s.seq
                    rows.append((s, n))
                    n += 1
            budget = self.batch_size - n
            for s in self.running:  # then prompt tokens, in arrival order, within the batch
                if s.pending is None and budget > 0:
                    take = min(len(s.ids) - s.fed, budget)
                    for j in range(take):
                        last = s.fed + j == len(s.ids) - 1
                        batch.token[n], batch.pos[n], batch.n_seq_id[n], batch.logits[n] = s.ids[s.fed + j], s.fed + j, 1, int(last)
                        batch.seq_id[n][0] = s.seq
                        if last:
                            rows.append((s, n))
                        n += 1
                    s.fed += take
                    budget -= take
            batch.n_tokens = n
            if lib.llama_decode(self.ctx, batch) != 0:
                for s in list(self.running):
                    self._finish(s, "error")
                continue
            for s, i in rows:
                logits = np.frombuffer(ffi.buffer(lib.llama_get_logits_ith(self.ctx, i), 4 * self.n_vocab), np.float32)
                token = int(logits.argmax())
                s.generated += 1
                s.pending = token
                if lib.llama_vocab_is_eog(self.vocab, token):
                    self._finish(s, "stop")
                    continue
                s.put(("token", self.piece(token)))
                if s.generated >= s.max_tokens or len(s.ids) + s.generated >= self.ctx_per_seq:
                    self._finish(s, "length")


def build_app(engine: LlamaEngine, alias: str):
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse, StreamingResponse
    from starlette.routing import Route

    async def health(_: Request):
        return JSONResponse({"status": "ok"})

    async def models(_: Request):
        return JSONResponse({"object": "list", "data": [{"id": alias, "object": "model", "owned_by": "llama.cpp"}]})

    async def chat(request: Request):
        body = await request.json()
        ids = engine.prompt_ids(body["messages"])
        queue: asyncio.Queue = asyncio.Queue()
        s = Sequence(ids, int(body.get("max_tokens") or 128), asyncio.get_running_loop(), queue)
        engine.submit(s)
        rid, created = f"chatcmpl-{uuid.uuid4().hex}", int(time.time())

        def chunk(delta: dict, finish: str | None = None, usage: dict | None = None) -> str:
            obj = {"id": rid, "object": "chat.completion.chunk", "created": created, "model": alias,
                   "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}
            if usage:
                obj["usage"] = usage
            return f"data: {json.dumps(obj)}\n\n"

        if not body.get("stream"):
            text, reason = "", None
            while reason is None:
                kind, value = await queue.get()
                if kind == "token":
                    text += value
                else:
                    reason = value
            return JSONResponse({"id": rid, "object": "chat.completion", "created": created, "model": alias,
                                 "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                                              "finish_reason": reason}],
                                 "usage": {"prompt_tokens": len(ids), "completion_tokens": s.generated}})

        async def events():
            try:
                yield chunk({"role": "assistant", "content": ""})
                while True:
                    kind, value = await queue.get()
                    if kind == "token":
                        yield chunk({"content": value})
                    else:
                        usage = {"prompt_tokens": len(ids), "completion_tokens": s.generated,
                                 "total_tokens": len(ids) + s.generated}
                        yield chunk({}, value, usage if (body.get("stream_options") or {}).get("include_usage") else None)
                        yield "data: [DONE]\n\n"
                        return
            finally:
                s.cancelled = True  # a client that hung up frees its sequence (a finished one is gone already)

        return StreamingResponse(events(), media_type="text/event-stream")

    return Starlette(routes=[Route("/health", health), Route("/v1/models", models),
                             Route("/v1/chat/completions", chat, methods=["POST"])])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True, help="a GGUF file")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=8081)
    ap.add_argument("--alias", default="bench", help="the model id the server answers to")
    ap.add_argument("--parallel", type=int, default=16, help="sequences decoded together (llama-server's --parallel)")
    ap.add_argument("--ctx-per-seq", type=int, default=512, help="KV positions per sequence")
    ap.add_argument("--batch", type=int, default=512, help="tokens per llama_decode (llama-server's --ubatch-size)")
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--kv-unified", action="store_true", help="one KV cache shared by all sequences (llama-server's "
                    "--kv-unified); default: a cache of --ctx-per-seq positions per sequence")
    args = ap.parse_args()
    if not os.path.isfile(args.model):
        raise SystemExit(f"--model {args.model}: no such file (a GGUF file is wanted)")
    import uvicorn

    engine = LlamaEngine(args.model, args.parallel, args.ctx_per_seq, args.batch, args.threads, args.kv_unified)
    uvicorn.run(build_app(engine, args.alias), host=args.host, port=args.port, log_level="warning")
    return 0


if __name__ == "__main__":
    sys.exit(main())
