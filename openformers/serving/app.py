"""The HTTP side of ``openformers serve``: OpenAI's routes on FastAPI, over the engine.

``ServerState`` holds what the routes share (engine, tokenizer, limits, metrics, the draining flag);
``create_app(state)`` builds the application; ``serve(state, host, port)`` runs it under uvicorn with
the SIGTERM drain: new requests get 503, requests in flight finish, the process exits 0.
"""
from __future__ import annotations

import asyncio
import base64
import json
import logging
import signal
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, AsyncIterator

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from openformers.serving.engine import Engine, SamplingParams, TokenEvent
from openformers.serving.metrics import Metrics
from openformers.serving.protocol import (
    APIError,
    GenerationRequest,
    error_body,
    parse_chat,
    parse_completion,
    parse_embedding,
    require_object,
)

logger = logging.getLogger("openformers")


@dataclass
class ServerState:
    """Everything the routes share."""

    engine: Engine
    tokenizer: Any
    model_name: str
    embedder: Any = None  # an ``Embedder`` or None
    embedding_model_name: str | None = None
    api_key: str | None = None
    max_queue: int = 256
    max_body_bytes: int = 4 * 1024 * 1024
    max_n: int = 16
    drain_timeout: float = 30.0
    metrics: Metrics = field(default_factory=Metrics)
    draining: bool = False
    in_flight: int = 0
    created: int = field(default_factory=lambda: int(time.time()))

    @property
    def generation_models(self) -> list[str]:
        return [self.model_name]

    @property
    def embedding_models(self) -> list[str]:
        return [self.embedding_model_name] if self.embedder is not None and self.embedding_model_name else []


def _error(status: int, message: str, param: str | None = None, code: str | None = None,
           headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(error_body(status, message, param, code), status_code=status, headers=headers)


class _Guard:
    """ASGI middleware: 503 while draining, the bearer token, a Content-Length over the limit, metrics."""

    def __init__(self, app: Any, state: ServerState) -> None:
        self.app = app
        self.state = state

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        state = self.state
        path = scope.get("path", "")
        status_seen = {"status": 500}

        async def send_wrapper(message: dict) -> None:
            if message["type"] == "http.response.start":
                status_seen["status"] = message["status"]
            await send(message)

        response: Response | None = None
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        if path == "/health":
            pass
        elif state.draining:
            response = _error(503, "The server is shutting down and accepts no new requests; retry on another replica.",
                              code="server_shutting_down", headers={"Connection": "close"})
        elif state.api_key is not None and headers.get("authorization", "") != f"Bearer {state.api_key}":
            given = "authorization" in headers
            response = _error(401, "Incorrect API key provided." if given else
                              "You didn't provide an API key. Pass it as 'Authorization: Bearer YOUR_KEY'.",
                              code="invalid_api_key")
        else:
            length = headers.get("content-length")
            if length is not None:
                try:
                    too_big = int(length) > state.max_body_bytes
                except ValueError:
                    too_big = False
                    response = _error(400, f"Content-Length {length!r} is not a number")
                if too_big:
                    response = _error(413, f"The request body has {length} bytes; this server accepts at most "
                                           f"{state.max_body_bytes}.", code="request_too_large")
        if response is not None:
            await response(scope, receive, send_wrapper)
        else:
            state.in_flight += 1
            try:
                await self.app(scope, receive, send_wrapper)
            finally:
                state.in_flight -= 1
        route = path if path in _ROUTES else "other"
        state.metrics.http(route, status_seen["status"])


_ROUTES = {"/health", "/metrics", "/v1/models", "/v1/chat/completions", "/v1/completions", "/v1/embeddings"}


async def _read_json(request: Request, limit: int) -> Any:
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise APIError(413, f"The request body is larger than the {limit} bytes this server accepts.",
                           code="request_too_large")
        chunks.append(chunk)
    raw = b"".join(chunks)
    if not raw:
        raise APIError(400, "The request body is empty; send a JSON object.")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise APIError(400, f"The request body is not valid UTF-8 (byte {exc.start}).") from exc
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise APIError(400, f"We could not parse the JSON body of your request: {exc.msg} at line {exc.lineno} "
                            f"column {exc.colno}.") from exc


class _Run:
    """The sequences of one HTTP request in the engine, and their events as an asyncio queue."""

    def __init__(self, state: ServerState, gen: GenerationRequest) -> None:
        self.state = state
        self.gen = gen
        self.loop = asyncio.get_running_loop()
        self.queue: asyncio.Queue[tuple[int, TokenEvent]] = asyncio.Queue()
        self.requests: list[Any] = []

    def start(self) -> None:
        engine = self.state.engine
        waiting = engine.num_waiting
        count = len(self.gen.prompts) * self.gen.n
        if waiting + count > self.state.max_queue:
            raise APIError(429, f"{waiting} requests are waiting already (the limit is {self.state.max_queue}); retry "
                                "shortly.", code="rate_limit_exceeded", headers={"Retry-After": "1"})
        base = self.gen.params
        for p_index, prompt in enumerate(self.gen.prompts):
            for i in range(self.gen.n):
                params = SamplingParams(**{**base.__dict__, "stop": list(base.stop)})
                if base.seed is not None:
                    params.seed = (base.seed + i) % (2**63)
                index = p_index * self.gen.n + i
                self.requests.append(engine.submit(prompt, params, self._sink(index)))

    def _sink(self, index: int):
        def sink(event: TokenEvent) -> None:
            self.loop.call_soon_threadsafe(self.queue.put_nowait, (index, event))
        return sink

    def cancel(self) -> None:
        for r in self.requests:
            if r.finish_reason is None:
                self.state.engine.cancel(r)

    async def events(self) -> AsyncIterator[tuple[int, TokenEvent]]:
        left = len(self.requests)
        while left:
            index, event = await self.queue.get()
            if event.finish_reason is not None:
                left -= 1
                if event.finish_reason == "error":
                    raise APIError(500, f"The engine failed while generating: {event.text}", code="engine_error")
            yield index, event


def _token_info(tokenizer: Any, token_id: int, logprob: float) -> dict[str, Any]:
    text = tokenizer.decode([token_id])
    return {"token": text, "logprob": logprob, "bytes": list(text.encode("utf-8"))}


def _chat_logprobs(tokenizer: Any, event: TokenEvent) -> dict[str, Any] | None:
    if event.logprob is None:
        return None
    item = _token_info(tokenizer, event.token_id, event.logprob)
    item["top_logprobs"] = [_token_info(tokenizer, t, lp) for t, lp in (event.top_logprobs or [])]
    return item


def create_app(state: ServerState) -> Any:
    """The FastAPI application of ``state`` (wrapped in the guard middleware)."""
    app = FastAPI(title="openformers", docs_url=None, redoc_url=None, openapi_url=None)
    tokenizer = state.tokenizer

    @app.exception_handler(APIError)
    async def _api_error(request: Request, exc: APIError) -> JSONResponse:
        return JSONResponse(exc.body(), status_code=exc.status, headers=exc.headers)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        message = {404: f"Unknown route {request.method} {request.url.path}",
                   405: f"Method {request.method} is not allowed on {request.url.path}"}.get(exc.status_code, str(exc.detail))
        return _error(exc.status_code, message)

    @app.exception_handler(Exception)
    async def _crash(request: Request, exc: Exception) -> JSONResponse:
        logger.exception("serving: unexpected error")
        return _error(500, f"Internal error: {type(exc).__name__}: {exc}", code="internal_error")

    @app.get("/health")
    async def health() -> Response:
        if state.draining:
            return JSONResponse({"status": "draining"}, status_code=503)
        return JSONResponse({"status": "ok", "running": state.engine.num_running, "waiting": state.engine.num_waiting})

    @app.get("/metrics")
    async def metrics() -> Response:
        state.metrics.set_state(state.engine.num_waiting, state.engine.num_running)
        return PlainTextResponse(state.metrics.render(), media_type="text/plain; version=0.0.4")

    @app.get("/v1/models")
    async def models() -> dict[str, Any]:
        data = [{"id": name, "object": "model", "created": state.created, "owned_by": "openformers"}
                for name in state.generation_models + state.embedding_models]
        return {"object": "list", "data": data}

    @app.get("/v1/models/{model_id:path}")
    async def model(model_id: str) -> dict[str, Any]:
        if model_id not in state.generation_models + state.embedding_models:
            raise APIError(404, f"The model '{model_id}' does not exist", "model", "model_not_found")
        return {"id": model_id, "object": "model", "created": state.created, "owned_by": "openformers"}

    @app.post("/v1/chat/completions")
    async def chat(request: Request) -> Response:
        body = require_object(await _read_json(request, state.max_body_bytes))
        gen = parse_chat(body, state.generation_models, tokenizer, state.engine.max_len, state.max_n)
        return await _generate(request, gen, chat=True)

    @app.post("/v1/completions")
    async def completions(request: Request) -> Response:
        body = require_object(await _read_json(request, state.max_body_bytes))
        gen = parse_completion(body, state.generation_models, tokenizer, state.engine.max_len, state.max_n)
        return await _generate(request, gen, chat=False)

    @app.post("/v1/embeddings")
    async def embeddings(request: Request) -> Response:
        body = require_object(await _read_json(request, state.max_body_bytes))
        if state.embedder is None:
            if isinstance(body.get("model"), str) and body["model"] in state.generation_models:
                raise APIError(400, "This server has no embedding model; start it with --embedding-model", "model")
        served = state.embedding_models
        model_name, ids, encoding = parse_embedding(body, served, state.embedder.tokenizer if state.embedder else tokenizer,
                                                    state.embedder.max_length if state.embedder else 512)
        vectors = await asyncio.get_running_loop().run_in_executor(None, state.embedder.embed_ids, ids)
        data = []
        for i, vec in enumerate(vectors):
            if encoding == "base64":
                emb: Any = base64.b64encode(vec.astype("<f4").tobytes()).decode("ascii")
            else:
                emb = vec.tolist()
            data.append({"object": "embedding", "index": i, "embedding": emb})
        total = sum(len(x) for x in ids)
        return JSONResponse({"object": "list", "data": data, "model": model_name,
                             "usage": {"prompt_tokens": total, "total_tokens": total}})

    async def _generate(request: Request, gen: GenerationRequest, chat: bool) -> Response:
        run = _Run(state, gen)
        run.start()
        rid = ("chatcmpl-" if chat else "cmpl-") + uuid.uuid4().hex[:24]
        if gen.stream:
            return StreamingResponse(_stream(run, rid, chat), media_type="text/event-stream",
                                     headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
        return await _collect(request, run, rid, chat)

    def _usage(gen: GenerationRequest, completion_tokens: int) -> dict[str, int]:
        prompt_tokens = sum(len(p) for p in gen.prompts)
        return {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                "total_tokens": prompt_tokens + completion_tokens}

    async def _collect(request: Request, run: _Run, rid: str, chat: bool) -> Response:
        gen = run.gen
        count = len(run.requests)
        texts = [""] * count
        finish: list[str | None] = [None] * count
        logprobs: list[list[TokenEvent]] = [[] for _ in range(count)]
        tokens = 0
        watcher = asyncio.create_task(_watch_disconnect(request, run))
        try:
            async for index, event in run.events():
                texts[index] += event.text
                if event.token_id >= 0:
                    tokens += 1
                    if event.logprob is not None:
                        logprobs[index].append(event)
                if event.finish_reason is not None:
                    finish[index] = event.finish_reason
        finally:
            watcher.cancel()
            run.cancel()
        choices = []
        for i in range(count):
            reason = finish[i] if finish[i] in ("stop", "length") else "stop"
            if chat:
                lp = {"content": [_chat_logprobs(tokenizer, e) for e in logprobs[i]], "refusal": None} if gen.logprobs else None
                choices.append({"index": i, "message": {"role": "assistant", "content": texts[i], "refusal": None},
                                "logprobs": lp, "finish_reason": reason})
            else:
                text = (gen.prompt_texts[i // gen.n] + texts[i]) if gen.echo else texts[i]
                choices.append({"index": i, "text": text, "logprobs": _completion_logprobs(logprobs[i]) if gen.logprobs else None,
                                "finish_reason": reason})
        return JSONResponse({"id": rid, "object": "chat.completion" if chat else "text_completion",
                             "created": int(time.time()), "model": gen.model, "system_fingerprint": "openformers",
                             "choices": choices, "usage": _usage(gen, tokens)})

    def _completion_logprobs(events: list[TokenEvent]) -> dict[str, Any]:
        out: dict[str, Any] = {"tokens": [], "token_logprobs": [], "top_logprobs": [], "text_offset": []}
        offset = 0
        for e in events:
            text = tokenizer.decode([e.token_id])
            out["tokens"].append(text)
            out["token_logprobs"].append(e.logprob)
            out["top_logprobs"].append({tokenizer.decode([t]): lp for t, lp in (e.top_logprobs or [])})
            out["text_offset"].append(offset)
            offset += len(text)
        return out

    async def _stream(run: _Run, rid: str, chat: bool) -> AsyncIterator[str]:
        gen = run.gen
        created = int(time.time())
        kind = "chat.completion.chunk" if chat else "text_completion"
        tokens = 0

        def chunk(choices: list[dict], usage: Any = None) -> str:
            data = {"id": rid, "object": kind, "created": created, "model": gen.model,
                    "system_fingerprint": "openformers", "choices": choices}
            if gen.include_usage:
                data["usage"] = usage
            return f"data: {json.dumps(data, ensure_ascii=False)}\n\n"

        try:
            if chat:
                yield chunk([{"index": i, "delta": {"role": "assistant", "content": ""}, "logprobs": None,
                              "finish_reason": None} for i in range(len(run.requests))])
            elif gen.echo:
                yield chunk([{"index": i, "text": gen.prompt_texts[i // gen.n], "logprobs": None, "finish_reason": None}
                             for i in range(len(run.requests))])
            try:
                async for index, event in run.events():
                    if event.token_id >= 0:
                        tokens += 1
                    reason = event.finish_reason
                    if reason is not None and reason not in ("stop", "length"):
                        reason = "stop"
                    if not event.text and reason is None and event.logprob is None:
                        continue
                    if chat:
                        lp = None
                        if gen.logprobs and event.logprob is not None:
                            lp = {"content": [_chat_logprobs(tokenizer, event)], "refusal": None}
                        delta = {"content": event.text} if event.text or reason is None else {}
                        yield chunk([{"index": index, "delta": delta, "logprobs": lp, "finish_reason": reason}])
                    else:
                        lp = _completion_logprobs([event]) if gen.logprobs and event.logprob is not None else None
                        yield chunk([{"index": index, "text": event.text, "logprobs": lp, "finish_reason": reason}])
            except APIError as exc:
                yield f"data: {json.dumps(exc.body())}\n\n"
                return
            if gen.include_usage:
                yield chunk([], _usage(gen, tokens))
            yield "data: [DONE]\n\n"
        finally:
            run.cancel()  # a client that went away mid-stream frees its slots here

    async def _watch_disconnect(request: Request, run: _Run) -> None:
        while True:
            await asyncio.sleep(0.2)
            if await request.is_disconnected():
                run.cancel()
                return

    return _Guard(app, state)


def serve(state: ServerState, host: str = "127.0.0.1", port: int = 8000, log_level: str = "info") -> int:
    """Run the server until SIGINT/SIGTERM; on SIGTERM drain (503 for new requests) and return 0."""
    import uvicorn

    app = create_app(state)
    config = uvicorn.Config(app, host=host, port=port, log_level=log_level, timeout_graceful_shutdown=5,
                            timeout_keep_alive=5)

    class _Server(uvicorn.Server):
        def handle_exit(self, sig: int, frame: Any) -> None:
            if state.draining:  # a second signal: stop now
                self.force_exit = True
                self.should_exit = True
                return
            state.draining = True
            logger.warning("serving: %s received; draining (deadline %.0f s)", signal.Signals(sig).name, state.drain_timeout)
            threading.Thread(target=self._drain, daemon=True).start()

        def _drain(self) -> None:
            deadline = time.monotonic() + state.drain_timeout
            while time.monotonic() < deadline and (not state.engine.idle() or state.in_flight > 0):
                time.sleep(0.05)
            self.should_exit = True

    state.engine.start()
    server = _Server(config)
    try:
        server.run()
    finally:
        state.engine.stop()
    return 0
