"""Server metrics in the Prometheus text format (``GET /metrics``), kept without a client library."""
from __future__ import annotations

import bisect
import threading

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.5, 0.75, 1.0, 2.5, 5.0, 10.0, 30.0)
_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)


class _Histogram:
    def __init__(self, buckets: tuple[float, ...]) -> None:
        self.buckets = buckets
        self.counts = [0] * (len(buckets) + 1)
        self.sum = 0.0
        self.count = 0

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.buckets, value)] += 1
        self.sum += value
        self.count += 1

    def lines(self, name: str) -> list[str]:
        out, running = [], 0
        for bound, n in zip(self.buckets, self.counts):
            running += n
            out.append(f'{name}_bucket{{le="{bound}"}} {running}')
        out.append(f'{name}_bucket{{le="+Inf"}} {self.count}')
        out.append(f"{name}_sum {self.sum:.6f}")
        out.append(f"{name}_count {self.count}")
        return out


class Metrics:
    """Counters, gauges and histograms of one server; the engine and the HTTP layer report into it."""

    def __init__(self, prefix: str = "openformers") -> None:
        self.prefix = prefix
        self._lock = threading.Lock()
        self.http_requests: dict[tuple[str, int], int] = {}
        self.finish_reasons: dict[str, int] = {}
        self.prompt_tokens_total = 0
        self.prompt_tokens_reused = 0
        self.generation_tokens_total = 0
        self.queue_length = 0
        self.running = 0
        self.ttft = _Histogram(_LATENCY_BUCKETS)
        self.itl = _Histogram(_LATENCY_BUCKETS)
        self.batch_size = _Histogram(_BATCH_BUCKETS)

    # engine side
    def prompt_tokens(self, n: int, reused: int) -> None:
        with self._lock:
            self.prompt_tokens_total += n
            self.prompt_tokens_reused += reused

    def generated_tokens(self, n: int) -> None:
        with self._lock:
            self.generation_tokens_total += n

    def first_token(self, seconds: float) -> None:
        with self._lock:
            self.ttft.observe(seconds)

    def token_latency(self, seconds: float) -> None:
        with self._lock:
            self.itl.observe(seconds)

    def batch(self, size: int) -> None:
        with self._lock:
            self.batch_size.observe(size)

    def finished(self, reason: str) -> None:
        with self._lock:
            self.finish_reasons[reason] = self.finish_reasons.get(reason, 0) + 1

    def set_state(self, waiting: int, running: int) -> None:
        self.queue_length, self.running = waiting, running

    # HTTP side
    def http(self, route: str, status: int) -> None:
        with self._lock:
            key = (route, status)
            self.http_requests[key] = self.http_requests.get(key, 0) + 1

    def render(self) -> str:
        p = self.prefix
        with self._lock:
            lines = [f"# HELP {p}_http_requests_total HTTP requests by route and status code.",
                     f"# TYPE {p}_http_requests_total counter"]
            for (route, status), n in sorted(self.http_requests.items()):
                lines.append(f'{p}_http_requests_total{{route="{route}",status="{status}"}} {n}')
            lines += [f"# HELP {p}_requests_finished_total Generation requests by finish reason.",
                      f"# TYPE {p}_requests_finished_total counter"]
            for reason, n in sorted(self.finish_reasons.items()):
                lines.append(f'{p}_requests_finished_total{{finish_reason="{reason}"}} {n}')
            for name, value, kind, help_text in (
                ("prompt_tokens_total", self.prompt_tokens_total, "counter", "Prompt tokens of admitted requests."),
                ("prompt_tokens_reused_total", self.prompt_tokens_reused, "counter",
                 "Prompt tokens found in the cache (shared prefix) and not computed again."),
                ("generation_tokens_total", self.generation_tokens_total, "counter", "Generated tokens."),
                ("queue_length", self.queue_length, "gauge", "Requests waiting for a slot."),
                ("running_requests", self.running, "gauge", "Requests in the running batch."),
            ):
                lines += [f"# HELP {p}_{name} {help_text}", f"# TYPE {p}_{name} {kind}", f"{p}_{name} {value}"]
            for name, hist, help_text in (
                ("time_to_first_token_seconds", self.ttft, "Time from arrival to the first generated token."),
                ("inter_token_latency_seconds", self.itl, "Time between consecutive tokens of a request."),
                ("batch_size", self.batch_size, "Sequences per decode step."),
            ):
                lines += [f"# HELP {p}_{name} {help_text}", f"# TYPE {p}_{name} histogram"] + hist.lines(f"{p}_{name}")
        return "\n".join(lines) + "\n"
