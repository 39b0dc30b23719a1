"""Load and speed of ``openformers serve`` beside ``transformers serve`` and a llama.cpp server.

N concurrent streaming chat clients (each a loop of requests) for T seconds against each server in
turn, same model, same prompts (~``--prompt-tokens`` tokens), ``--max-tokens`` per answer, greedy:
output tokens/s, time to first token and inter-token latency (p50/p99), 5xx answers, lost or
truncated streams (no finish_reason before the stream closed, or a broken connection; a stream
without ``[DONE]`` is counted apart: transformers serve sends none). Then, against openformers only
(unless ``--skip-robustness``):

- disconnects: half the clients hang up mid-stream; the running batch (``/metrics``) must fall;
- SIGTERM under load: streams in flight finish with ``[DONE]``, new requests get 503, exit code 0.

    python benchmarks/bench_serve.py --clients 16 --duration 60 --skip-robustness
    python benchmarks/bench_serve.py --clients 64 --duration 60 --peers openformers,transformers

The model: SmolLM2-135M-Instruct (the embedded Q4_1 GGUF). ``openformers`` and ``transformers`` load one
float32 checkpoint directory written from it once (the same float32 weights); ``openformers-q4``
(``serve --quantized``) and ``llama_cpp`` load the GGUF file itself, 4-bit weights kept. ``llama_cpp`` is
llama-cpp-python's ``llama_cpp.server`` where installed, else ``benchmarks/llama_cpp_server.py`` (a small
batching server on llama.cpp's library from llama-cpp-py-sync; see its docstring).
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Stats:
    ttft: list[float] = field(default_factory=list)
    itl: list[float] = field(default_factory=list)
    tokens: int = 0
    completed: int = 0
    truncated: int = 0
    lost: int = 0
    status_5xx: int = 0
    status_503: int = 0
    status_other: int = 0
    disconnected: int = 0
    no_done_marker: int = 0
    started_at: float = 0.0
    ended_at: float = 0.0

    def report(self) -> dict:
        wall = max(self.ended_at - self.started_at, 1e-9)

        def pct(values: list[float], q: float) -> float | None:
            if not values:
                return None
            values = sorted(values)
            return round(1000 * values[min(len(values) - 1, int(q * len(values)))], 1)

        return {"output_tokens_per_s": round(self.tokens / wall, 1), "completed": self.completed,
                "truncated": self.truncated, "lost": self.lost, "5xx": self.status_5xx, "503": self.status_503,
                "other_status": self.status_other, "disconnected_on_purpose": self.disconnected,
                "completed_without_done_marker": self.no_done_marker,
                "ttft_ms_p50": pct(self.ttft, 0.5), "ttft_ms_p99": pct(self.ttft, 0.99),
                "itl_ms_p50": pct(self.itl, 0.5), "itl_ms_p99": pct(self.itl, 0.99)}


class Server:
    def __init__(self, name: str, cmd: list[str], port: int, model_id: str, env: dict | None = None,
                 cwd: Path = ROOT) -> None:
        self.name, self.port, self.model_id = name, port, model_id
        self.base = f"http://127.0.0.1:{port}"
        self.log = tempfile.NamedTemporaryFile("w+", prefix=f"bench-{name}-", suffix=".log", delete=False)
        self.proc = subprocess.Popen(cmd, cwd=cwd, env={**os.environ, **(env or {})}, stdout=self.log,
                                     stderr=subprocess.STDOUT, text=True)

    def wait_ready(self, timeout: float = 300) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.proc.returncode}; log: {self.log.name}")
            try:
                if httpx.get(self.base + "/health", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        raise RuntimeError(f"{self.name} did not come up in {timeout} s; log: {self.log.name}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=30)


def make_prompts(tokenizer, n: int, prompt_tokens: int) -> list[list[dict]]:
    words = ("Explain how a river carves a canyon over millions of years, and what the layers of rock tell a "
             "geologist about the climate at the time each layer was laid down. ").split()
    prompts = []
    for i in range(n):
        text, k = f"Request {i}.", 0
        while True:
            candidate = text + " " + words[k % len(words)]
            msgs = [{"role": "user", "content": candidate}]
            ids = tokenizer.apply_chat_template(msgs, add_generation_prompt=True, tokenize=True)
            ids = ids["input_ids"] if hasattr(ids, "keys") else ids
            if len(ids) > prompt_tokens:
                break
            text, k = candidate, k + 1
        prompts.append([{"role": "user", "content": text}])
    return prompts


async def one_request(client: httpx.AsyncClient, server: Server, messages: list[dict], max_tokens: int, stats: Stats,
                      disconnect_after: int | None = None, usage: bool = True) -> str:
    body = {"model": server.model_id, "messages": messages, "max_tokens": max_tokens, "stream": True, "temperature": 0}
    if usage:
        body["stream_options"] = {"include_usage": True}
    start = time.perf_counter()
    last = None
    chunks = 0
    done = finished = False
    usage_tokens = None
    try:
        async with client.stream("POST", server.base + "/v1/chat/completions", json=body) as r:
            if r.status_code != 200:
                await r.aread()
                if r.status_code == 503:
                    stats.status_503 += 1
                    return "503"
                if r.status_code >= 500:
                    stats.status_5xx += 1
                else:
                    stats.status_other += 1
                return str(r.status_code)
            async for line in r.aiter_lines():
                if not line.startswith("data: "):
                    continue
                data = line[6:]
                if data == "[DONE]":
                    done = True
                    break
                obj = json.loads(data)
                if obj.get("usage"):
                    usage_tokens = obj["usage"].get("completion_tokens")
                for choice in obj.get("choices") or []:
                    if (choice.get("delta") or {}).get("content"):
                        now = time.perf_counter()
                        if last is None:
                            stats.ttft.append(now - start)
                        else:
                            stats.itl.append(now - last)
                        last = now
                        chunks += 1
                    if choice.get("finish_reason"):
                        finished = True
                if disconnect_after is not None and chunks >= disconnect_after:
                    stats.disconnected += 1
                    stats.tokens += chunks
                    return "disconnected"
    except (httpx.HTTPError, json.JSONDecodeError):
        stats.lost += 1
        stats.tokens += chunks
        return "lost"
    stats.tokens += usage_tokens if usage_tokens is not None else chunks
    if finished:  # a finish_reason, then a cleanly closed stream (transformers serve sends no [DONE])
        stats.completed += 1
        if not done:
            stats.no_done_marker += 1
        return "ok"
    stats.truncated += 1
    return "truncated"


async def load(server: Server, prompts: list[list[dict]], clients: int, duration: float, max_tokens: int,
               usage: bool, disconnect_half: bool = False, stop_flag: dict | None = None) -> Stats:
    stats = Stats()
    limits = httpx.Limits(max_connections=clients + 8, max_keepalive_connections=clients + 8)
    async with httpx.AsyncClient(timeout=httpx.Timeout(600, connect=30), limits=limits) as client:
        stats.started_at = time.perf_counter()
        end = stats.started_at + duration

        async def loop(i: int) -> None:
            k = 0
            while time.perf_counter() < end and not (stop_flag and stop_flag.get("stop")):
                hang_up = 5 if disconnect_half and i % 2 == 0 else None
                outcome = await one_request(client, server, prompts[(i + k * clients) % len(prompts)], max_tokens, stats,
                                            hang_up, usage)
                k += 1
                if outcome in ("disconnected", "503"):
                    return

        await asyncio.gather(*(loop(i) for i in range(clients)))
        stats.ended_at = time.perf_counter()
    return stats


def running_gauge(server: Server) -> int | None:
    try:
        text = httpx.get(server.base + "/metrics", timeout=5).text
    except httpx.HTTPError:
        return None
    for line in text.splitlines():
        if line.startswith("openformers_running_requests "):
            return int(float(line.split()[1]))
    return None


async def disconnect_phase(server: Server, prompts, clients: int, max_tokens: int) -> dict:
    samples: list[tuple[float, int]] = []
    flag = {"stop": False}

    async def sampler() -> None:
        t0 = time.perf_counter()
        while not flag["stop"]:
            value = await asyncio.to_thread(running_gauge, server)
            if value is not None:
                samples.append((time.perf_counter() - t0, value))
            await asyncio.sleep(0.25)

    task = asyncio.create_task(sampler())
    stats = await load(server, prompts, clients, duration=8.0, max_tokens=max_tokens, usage=True, disconnect_half=True)
    flag["stop"] = True
    await task
    peak = max((v for _, v in samples), default=0)
    after = [v for t, v in samples if t > 0.6 * (samples[-1][0] if samples else 0)]
    return {"clients": clients, "running_peak": peak, "running_late_max": max(after, default=None),
            "half_disconnected": stats.disconnected, "others_completed": stats.completed,
            "truncated": stats.truncated, "lost": stats.lost, "5xx": stats.status_5xx}


async def sigterm_phase(server: Server, prompts, clients: int, max_tokens: int) -> dict:
    flag = {"stop": False}
    task = asyncio.create_task(load(server, prompts, clients, duration=120, max_tokens=max_tokens, usage=True,
                                    stop_flag=flag))
    # wait until the batch is full, then SIGTERM
    for _ in range(400):
        if (await asyncio.to_thread(running_gauge, server) or 0) >= min(clients, 4):
            break
        await asyncio.sleep(0.1)
    t0 = time.perf_counter()
    server.proc.send_signal(signal.SIGTERM)
    await asyncio.sleep(0.2)
    try:
        late = httpx.post(server.base + "/v1/chat/completions", json={"model": server.model_id, "messages": prompts[0],
                                                                        "max_tokens": 4}, timeout=10).status_code
    except httpx.HTTPError:
        late = "refused"
    flag["stop"] = True
    stats = await task
    code = await asyncio.to_thread(server.proc.wait, 120)
    return {"clients": clients, "new_request_status": late, "streams_completed": stats.completed,
            "truncated": stats.truncated, "lost": stats.lost, "5xx": stats.status_5xx, "503_after_sigterm": stats.status_503,
            "exit_code": code, "seconds_to_exit": round(time.perf_counter() - t0, 1)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--clients", type=int, default=64)
    ap.add_argument("--duration", type=float, default=60.0)
    ap.add_argument("--prompt-tokens", type=int, default=128)
    ap.add_argument("--max-tokens", type=int, default=128)
    ap.add_argument("--peers", default="openformers,transformers,openformers-q4,llama_cpp",
                    help="comma-separated, run one after the other: openformers (float32), openformers-q4 (serve "
                         "--quantized on the Q4_1 GGUF), transformers (transformers serve --continuous-batching, "
                         "float32), transformers-nocb (transformers serve without it), llama_cpp (the same GGUF)")
    ap.add_argument("--quantized", action="store_true", help="run openformers as openformers-q4 (the GGUF's 4-bit "
                    "weights kept, the peer of llama_cpp)")
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="threads of every server: llama.cpp's "
                    "--threads, OMP_NUM_THREADS of the PyTorch ones (default: one per core; on a machine shared with "
                    "other work 1 is fairer, as threads that meet at barriers wait for each other's time slices)")
    ap.add_argument("--skip-robustness", action="store_true")
    ap.add_argument("--openformers-tree", default=None, help="run the openformers peers from another source tree "
                    "(e.g. `git archive COMMIT openformers | tar -x -C DIR`), for a before/after")
    ap.add_argument("--model-dir", default=os.path.join(tempfile.gettempdir(), "openformers-bench-smollm2"))
    args = ap.parse_args()
    sys.path.insert(0, str(ROOT))
    import openformers
    from openformers import AutoModelForCausalLM, AutoTokenizer

    gguf = openformers.embedded_model_path("smollm2")
    if not os.path.exists(os.path.join(args.model_dir, "model.safetensors")):
        model = AutoModelForCausalLM.from_pretrained(gguf)
        model.save_pretrained(args.model_dir)
        AutoTokenizer.from_pretrained(gguf).save_pretrained(args.model_dir)
        del model
    tokenizer = AutoTokenizer.from_pretrained(args.model_dir)
    prompts = make_prompts(tokenizer, max(args.clients * 2, 16), args.prompt_tokens)
    with open("/proc/loadavg") as f:
        loadavg = f.read().split()[:3]
    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")), "?")
    print(f"# CPU: {cpu}; load average at start: {' '.join(loadavg)}; clients {args.clients}, {args.duration:.0f} s, "
          f"~{args.prompt_tokens}-token prompts, max_tokens {args.max_tokens}, {args.threads} thread(s) per server",
          flush=True)
    results: dict[str, dict] = {}
    env = {"PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "OMP_NUM_THREADS": str(args.threads)}
    peers = args.peers.split(",")
    if args.quantized:  # the older spelling: openformers with the GGUF's 4-bit weights kept
        peers = ["openformers-q4" if p == "openformers" else p for p in peers]
    for peer in peers:
        port = free_port()
        if peer in ("openformers", "openformers-q4"):
            quantized = peer == "openformers-q4"
            cmd = [sys.executable, "-m", "openformers", "serve", "--model", gguf if quantized else args.model_dir,
                   "--served-model-name", "bench", "--port", str(port), "--max-batch-size", str(args.clients),
                   "--max-queue", str(4 * args.clients), "--drain-timeout", "600", "--log-level", "warning"]
            tree = Path(args.openformers_tree).resolve() if args.openformers_tree else ROOT
            server = Server(peer, cmd + (["--quantized"] if quantized else []), port, "bench",
                            {**env, "PYTHONPATH": str(tree)}, cwd=tree)
        elif peer in ("transformers", "transformers-nocb"):
            exe = subprocess.run(["which", "transformers"], capture_output=True, text=True).stdout.strip()
            if not exe:
                results[peer] = {"skipped": "no `transformers` command"}
                continue
            cmd = [exe, "serve", args.model_dir, "--port", str(port), "--host", "127.0.0.1", "--dtype", "float32",
                   "--log-level", "info"]
            if peer == "transformers":
                # the paged KV cache sized for the clients (pages of 256 tokens, two a request: prompt and answer
                # within 512 positions); left to itself it takes 60-90% of the free memory (13 GB here), which
                # starves the machine
                cmd += ["--continuous-batching", "--cb-num-blocks", str(2 * args.clients + 4),
                        "--cb-max-batch-tokens", "512"]
            server = Server(peer, cmd, port, args.model_dir, env)
        elif peer == "llama_cpp":
            # llama-cpp-python's own server where installed, else the batching server of llama_cpp_server.py on
            # the prebuilt libllama of llama-cpp-py-sync; both on the same Q4_1 GGUF file
            try:
                import llama_cpp  # noqa: F401
                cmd = [sys.executable, "-m", "llama_cpp.server", "--model", gguf, "--port", str(port), "--host",
                       "127.0.0.1", "--model_alias", "bench", "--n_threads", str(args.threads)]
                label = "llama_cpp.server (llama-cpp-python)"
            except ImportError:
                try:
                    import llama_cpp_py_sync  # noqa: F401
                except (ImportError, OSError, RuntimeError):
                    results[peer] = {"skipped": "neither llama-cpp-python nor llama-cpp-py-sync is installed"}
                    print(f"{peer}: skipped ({results[peer]['skipped']})", flush=True)
                    continue
                cmd = [sys.executable, str(ROOT / "benchmarks" / "llama_cpp_server.py"), "--model", gguf, "--port",
                       str(port), "--parallel", str(args.clients), "--threads", str(args.threads)]
                label = "benchmarks/llama_cpp_server.py (libllama of llama-cpp-py-sync)"
            print(f"{peer}: {label}, {args.threads} thread(s)", flush=True)
            server = Server(peer, cmd, port, "bench", env)
        else:
            raise SystemExit(f"unknown peer {peer!r}; use openformers, openformers-q4, transformers, transformers-nocb, "
                             f"llama_cpp")
        try:
            server.wait_ready()
            usage = peer.startswith("openformers") or peer == "llama_cpp"
            asyncio.run(load(server, prompts, min(4, args.clients), 3.0, 8, usage))  # warm-up
            stats = asyncio.run(load(server, prompts, args.clients, args.duration, args.max_tokens, usage))
            results[peer] = stats.report()
            print(f"{peer}: {json.dumps(results[peer])}", flush=True)
            if peer.startswith("openformers") and not args.skip_robustness:
                short = min(args.max_tokens, 32)  # the robustness phases need streams, not long ones
                results["openformers_disconnect"] = asyncio.run(disconnect_phase(server, prompts, args.clients, short))
                print(f"openformers disconnect half: {json.dumps(results['openformers_disconnect'])}", flush=True)
                results["openformers_sigterm"] = asyncio.run(sigterm_phase(server, prompts, args.clients, short))
                print(f"openformers SIGTERM under load: {json.dumps(results['openformers_sigterm'])}", flush=True)
        except Exception as exc:  # a peer that cannot run here is reported, not fatal
            results[peer] = {"failed": f"{type(exc).__name__}: {exc}"}
            print(f"{peer}: failed: {exc}", flush=True)
        except KeyboardInterrupt:
            print(f"{peer}: interrupted; its log: {server.log.name}", flush=True)
            raise
        finally:
            server.stop()
    for ours, theirs in (("openformers", "transformers"), ("openformers", "transformers-nocb"),
                         ("openformers-q4", "llama_cpp")):
        a, b = results.get(ours, {}).get("output_tokens_per_s"), results.get(theirs, {}).get("output_tokens_per_s")
        if a and b:
            print(f"ratio output tokens/s {ours} / {theirs}: {a / b:.2f}x", flush=True)
    with open("/proc/loadavg") as f:
        print(f"# load average at end: {' '.join(f.read().split()[:3])}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
