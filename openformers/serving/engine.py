"""The continuous-batching engine behind ``openformers serve``.

One thread runs the model. Each turn of its loop it

1. drops cancelled requests (their slots are free at once) and admits waiting requests into free
   slots of the :class:`~openformers.serving.cache.SlotCache` (a slot that still holds a prefix of
   the new prompt, e.g. the same system prompt, is preferred and that prefix is not computed again);
2. runs prefill for admitted requests, up to ``prefill_chunk`` prompt tokens this turn in one forward
   (the chunks of several prompts left-padded into one batch, each row at its own positions; a long
   prompt is split over several turns, so running streams do not stall behind it);
3. runs one decode step for every running request in one batched forward, samples each row with
   its own processors and random generator, and hands the new token (and its text) to the request.

Sampling is ``generate()``'s own: each request's processors come from
``generation.setup._build_processors`` for a ``GenerationConfig`` of its parameters, and a token
is ``argmax`` (temperature 0) or ``torch.multinomial(softmax(scores), 1, generator=g)``. A request
with ``seed=s`` samples from ``g = torch.Generator().manual_seed(s)``, one draw per token, exactly as
``model.generate(ids, do_sample=True, temperature=t, top_p=p, top_k=0, generator=g)`` does for one
prompt, so the same seed gives the same tokens whatever else is in the batch. With ``n > 1`` choice
``i`` uses seed ``s + i``.
"""
from __future__ import annotations

import collections
import itertools
import logging
import os
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import torch

from openformers.generation.config import GenerationConfig
from openformers.generation.decoder import _forward_params
from openformers.generation.logits_process import LogitsProcessor, LogitsProcessorList
from openformers.generation.setup import _build_processors, _id_list
from openformers.serving.cache import SlotCache
from openformers.serving.json_mode import JsonObjectLogitsProcessor, JsonVocabulary
from openformers.tokenization.streaming import StreamingDetokenizer

logger = logging.getLogger("openformers")


@dataclass
class SamplingParams:
    """What one request asks of the engine (OpenAI's parameters, already validated)."""

    max_tokens: int
    temperature: float = 1.0
    top_p: float = 1.0
    seed: int | None = None
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    stop: list[str] = field(default_factory=list)
    logprobs: int | None = None  # None: none; k: the chosen token's logprob and the k most likely
    json_object: bool = False
    ignore_eos: bool = False


@dataclass
class TokenEvent:
    """One generated token as the engine hands it to the request's consumer."""

    token_id: int
    text: str  # text completed by this token (stop strings and partial characters held back)
    logprob: float | None = None
    top_logprobs: list[tuple[int, float]] | None = None
    finish_reason: str | None = None  # "stop" / "length" on the last event, "cancelled" / "error" too


class PresenceFrequencyPenalty(LogitsProcessor):
    """OpenAI's penalties on the tokens generated so far: ``score -= frequency * count + presence * (count > 0)``."""

    def __init__(self, presence: float, frequency: float, prompt_length: int) -> None:
        self.presence = presence
        self.frequency = frequency
        self.prompt_length = prompt_length

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        generated = input_ids[:, self.prompt_length:]
        if generated.shape[1] == 0:
            return scores
        counts = torch.zeros_like(scores).scatter_add_(1, generated, torch.ones_like(generated, dtype=scores.dtype))
        return scores - self.frequency * counts - self.presence * (counts > 0).to(scores.dtype)


_WAITING, _PREFILL, _DECODE, _DONE = "waiting", "prefill", "decode", "done"
_ids = itertools.count()


class Request:
    """A sequence in the engine: its prompt, state, slot and sampling machinery."""

    def __init__(self, prompt_ids: list[int], params: SamplingParams, sink: Callable[[TokenEvent], None]) -> None:
        self.id = next(_ids)
        self.prompt_ids = list(prompt_ids)
        self.params = params
        self.sink = sink
        self.state = _WAITING
        self.slot: int | None = None
        self.cached = 0  # positions of this request in its slot
        self.generated: list[int] = []
        self.pending: int | None = None  # the last sampled token, fed at the next decode step
        self.cancelled = False
        self.arrival = time.perf_counter()
        self.last_token_at: float | None = None
        self.finish_reason: str | None = None
        self.reused = 0  # prompt tokens found in the slot already
        self.processors = LogitsProcessorList()
        self.generator: torch.Generator | None = None
        self.ids_buf: torch.Tensor | None = None
        self.detok: StreamingDetokenizer | None = None
        self.held = ""  # text not yet handed out: it may begin a stop string
        self.emitted = ""

    @property
    def all_tokens(self) -> list[int]:
        return self.prompt_ids + self.generated


class Engine:
    """Continuous batching over a causal LM (see the module docstring).

    ``max_batch_size`` slots run at once; ``max_len`` caps a sequence's positions (prompt + output);
    ``prefill_chunk`` caps the prompt tokens computed per turn; ``metrics`` (optional) is told about
    queue length, batch size, tokens and latencies.
    """

    def __init__(self, model: torch.nn.Module, tokenizer: Any, max_batch_size: int = 16, max_len: int | None = None,
                 prefill_chunk: int = 256, metrics: Any = None) -> None:
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.max_batch_size = int(max_batch_size)
        context = getattr(model.config, "max_position_embeddings", None) or 2048
        self.max_len = int(min(max_len, context) if max_len else context)
        self.prefill_chunk = int(prefill_chunk)
        self.metrics = metrics
        self.device = next(model.parameters()).device
        self.vocab_size = int(model.config.vocab_size)
        gen_config = getattr(model, "generation_config", None)
        eos = _id_list(getattr(gen_config, "eos_token_id", None)) or _id_list(getattr(model.config, "eos_token_id", None))
        if not eos and getattr(tokenizer, "eos_token_id", None) is not None:
            eos = [int(tokenizer.eos_token_id)]
        self.eos: set[int] = set(eos or [])
        self.params = _forward_params(model)
        self.cache = SlotCache(self.max_batch_size, self.max_len)
        self.slot_tokens: list[list[int]] = [[] for _ in range(self.max_batch_size)]  # what each slot holds
        self.free_slots = set(range(self.max_batch_size))
        self.waiting: collections.deque[Request] = collections.deque()
        self.running: list[Request] = []
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = False
        self._thread: threading.Thread | None = None
        self._json_vocab: JsonVocabulary | None = None
        self.steps = 0
        self._native_decode = False  # the last decode step ran on the runtime's native step (no idle rows needed)

    # -- public API (any thread) ---------------------------------------------------------------------
    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._loop, name="openformers-engine", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        self._stop = True
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def submit(self, prompt_ids: list[int], params: SamplingParams, sink: Callable[[TokenEvent], None]) -> Request:
        """Queue a request; ``sink`` receives its :class:`TokenEvent` objects from the engine thread."""
        if not prompt_ids:
            raise ValueError("the prompt is empty: it needs at least one token")
        if len(prompt_ids) + 1 > self.max_len:
            raise ValueError(f"the prompt has {len(prompt_ids)} tokens; this server holds at most {self.max_len} per sequence")
        request = Request(prompt_ids, params, sink)
        with self._lock:
            self.waiting.append(request)
        self._wake.set()
        return request

    def cancel(self, request: Request) -> None:
        """Stop ``request``; its slot is freed at the engine's next turn."""
        request.cancelled = True
        self._wake.set()

    @property
    def num_waiting(self) -> int:
        return len(self.waiting)

    @property
    def num_running(self) -> int:
        return len(self.running)

    def idle(self) -> bool:
        return not self.waiting and not self.running

    # -- the loop ----------------------------------------------------------------------------------------
    def _loop(self) -> None:
        torch.set_grad_enabled(False)
        while not self._stop:
            if self.idle():
                self._wake.wait(timeout=0.5)
                self._wake.clear()
                continue
            try:
                with torch.inference_mode():
                    self._turn()
            except Exception as exc:  # a failure fails the requests in flight, never the server
                logger.exception("serving engine step failed")
                for request in list(self.running):
                    self._finish(request, "error", str(exc))
            self._report()

    def _turn(self) -> None:
        self._drop_cancelled()
        self._admit()
        prefilling = [r for r in self.running if r.state == _PREFILL]
        if prefilling:
            self._prefill(prefilling)
        decoding = [r for r in self.running if r.state == _DECODE]
        if decoding:
            self._decode(decoding)
        self.steps += 1

    def _drop_cancelled(self) -> None:
        with self._lock:
            cancelled = [r for r in self.waiting if r.cancelled]
            for request in cancelled:
                self.waiting.remove(request)
        for request in cancelled:
            self._finish(request, "cancelled")
        for request in [r for r in self.running if r.cancelled]:
            self._finish(request, "cancelled")

    def _admit(self) -> None:
        while self.free_slots:
            with self._lock:
                if not self.waiting:
                    return
                request = self.waiting.popleft()
            try:
                self._setup(request)
            except Exception as exc:  # a request that cannot be set up fails alone
                logger.exception("serving: request setup failed")
                self._finish(request, "error", str(exc))
                continue
            slot, reused = self._pick_slot(request.prompt_ids)
            self.free_slots.remove(slot)
            request.slot, request.cached, request.reused = slot, reused, reused
            request.state = _PREFILL
            self.running.append(request)

    def _pick_slot(self, prompt: list[int]) -> tuple[int, int]:
        """The free slot holding the longest prefix of ``prompt`` (at least one token is left to compute)."""
        best, best_len = min(self.free_slots), 0
        limit = len(prompt) - 1
        for slot in sorted(self.free_slots):
            held = self.slot_tokens[slot]
            n = 0
            for a, b in zip(held, prompt[:limit]):
                if a != b:
                    break
                n += 1
            if n > best_len:
                best, best_len = slot, n
        return best, best_len

    def _setup(self, request: Request) -> None:
        p = request.params
        do_sample = p.temperature > 0
        config = GenerationConfig(do_sample=do_sample, temperature=p.temperature if do_sample else 1.0,
                                  top_p=p.top_p if do_sample else 1.0, top_k=0,
                                  max_new_tokens=p.max_tokens)
        config.update(defaults_only=True, **GenerationConfig.default_values())
        prompt_len = len(request.prompt_ids)
        own: list[LogitsProcessor] = []
        if p.presence_penalty or p.frequency_penalty:
            own.append(PresenceFrequencyPenalty(p.presence_penalty, p.frequency_penalty, prompt_len))
        if p.json_object:
            if self._json_vocab is None:
                self._json_vocab = JsonVocabulary(self.tokenizer, self.vocab_size, sorted(self.eos))
            own.append(JsonObjectLogitsProcessor(self._json_vocab, prompt_len))
        request.processors = LogitsProcessorList(own + list(_build_processors(config, prompt_len, sorted(self.eos) or None,
                                                                                None, None, None, self.device)))
        if do_sample:
            seed = p.seed if p.seed is not None else int.from_bytes(os.urandom(8), "little") >> 1
            request.generator = torch.Generator(device=self.device).manual_seed(seed)
        if request.processors:
            request.ids_buf = torch.tensor(request.prompt_ids + [0] * p.max_tokens, dtype=torch.long, device=self.device)[None]
        request.detok = StreamingDetokenizer(self.tokenizer, skip_special_tokens=True)

    # -- model calls -------------------------------------------------------------------------------------
    def _forward(self, ids: torch.Tensor, mask: torch.Tensor | None, positions: torch.Tensor) -> torch.Tensor:
        kw: dict[str, Any] = {"past_key_values": self.cache, "use_cache": True}
        if mask is not None:
            kw["attention_mask"] = mask
        if "position_ids" in self.params or "**" in self.params:
            kw["position_ids"] = positions
        if "logits_to_keep" in self.params:
            kw["logits_to_keep"] = 1
        out = self.model(input_ids=ids, **kw)
        logits = out.logits if hasattr(out, "logits") else out[0]
        return logits[:, -1, :].float()

    def _prefill_batch(self, requests: list[Request]) -> list[tuple[Request, int]]:
        """The rows of this turn's prefill: (request, chunk length) in arrival order, ``prefill_chunk`` prompt
        tokens in all (a long prompt goes on next turn), with the left-padded batch at most twice that and the
        longest bound slot plus the chunk width within ``max_len``."""
        rows: list[tuple[Request, int]] = []
        budget, width, past = self.prefill_chunk, 0, 0
        for r in requests:
            if budget <= 0:
                break
            n = min(len(r.prompt_ids) - r.cached, budget)
            w, p = max(width, n), max(past, r.cached)
            if rows and ((len(rows) + 1) * w > 2 * self.prefill_chunk or p + w > self.max_len):
                continue
            rows.append((r, n))
            budget, width, past = budget - n, w, p
        return rows

    def _prefill(self, requests: list[Request]) -> None:
        """One forward over the next prompt chunk of several requests (left-padded to the longest chunk)."""
        rows = self._prefill_batch(requests)
        starts = [r.cached for r, _ in rows]
        counts = [n for _, n in rows]
        q, past = max(counts), max(starts)
        self.cache.bind([r.slot for r, _ in rows], starts, q, counts)
        ids = torch.zeros(len(rows), q, dtype=torch.long, device=self.device)
        for i, (r, n) in enumerate(rows):
            ids[i, q - n:] = torch.tensor(r.prompt_ids[r.cached : r.cached + n], dtype=torch.long)
        if len(rows) == 1:  # one sequence: no padding, the model's own causal mask (as generate() runs it)
            mask = torch.ones(1, past + q, dtype=torch.long, device=self.device)
            positions = torch.arange(past, past + q, device=self.device)[None]
        else:
            # query t of row i sits at position start_i + t - pad_i (padding queries at the first real one's)
            pad = torch.tensor([q - n for n in counts], device=self.device)[:, None]
            positions = torch.tensor(starts, device=self.device)[:, None] + (torch.arange(q, device=self.device)[None] - pad).clamp(min=0)
            mask = (torch.arange(past + q, device=self.device)[None, None, :] <= positions[:, :, None])[:, None]
        logits = self._forward(ids, mask, positions)
        done, rows_done = [], []
        for i, (r, n) in enumerate(rows):
            r.cached += n
            self.slot_tokens[r.slot] = r.prompt_ids[: r.cached]
            if r.cached == len(r.prompt_ids):
                if self.metrics is not None:
                    self.metrics.prompt_tokens(len(r.prompt_ids), r.reused)
                r.state = _DECODE
                done.append(r)
                rows_done.append(i)
        if done:
            self._sample(done, logits[rows_done])

    def _decode(self, requests: list[Request]) -> None:
        requests.sort(key=lambda r: r.slot)
        rows: list[Request | None] = list(requests)
        lo, hi = requests[0].slot, requests[-1].slot + 1
        if not self._native_decode and hi - lo > len(requests) and 2 * (hi - lo) <= 3 * len(requests):
            # slots in between (free, or prefilling) run as idle rows, so the bound slots are consecutive and
            # the cache hands attention a view of its buffers instead of gathering every layer's keys and values;
            # an idle row writes one position past what its slot holds, which the slot's next owner overwrites.
            # The runtime's native step (runtime/decode.py, of the SlotCache's native_rows) reads each row where it
            # lies: when the last step went that way, idle rows would only add work
            by_slot = {r.slot: r for r in requests}
            rows = [by_slot.get(slot) for slot in range(lo, hi)]
        slots = [r.slot if r is not None else lo + i for i, r in enumerate(rows)]
        lengths = [r.cached if r is not None else self._held(slot) for r, slot in zip(rows, slots)]
        self.cache.bind(slots, lengths, 1)
        past = max(lengths)
        lens = torch.tensor(lengths, dtype=torch.long, device=self.device)
        ids = torch.tensor([[r.pending if r is not None else 0] for r in rows], dtype=torch.long, device=self.device)
        # row i holds its own positions [0, length_i) and its new one at length_i; rows of one length need
        # no mask (the model's plain causal path, as generate() takes for an unpadded batch)
        mask = None if min(lengths) == past else (torch.arange(past + 1, device=self.device)[None] <= lens[:, None]).long()
        logits = self._forward(ids, mask, lens[:, None])
        self._native_decode = not self.cache.written  # the runtime's native step wrote the cache itself
        for r in requests:
            r.cached += 1
            self.slot_tokens[r.slot].append(r.pending)
        if self.metrics is not None:
            self.metrics.batch(len(requests))
        if len(rows) != len(requests):
            logits = logits[[i for i, r in enumerate(rows) if r is not None]]
        self._sample(requests, logits)

    def _held(self, slot: int) -> int:
        """Positions slot ``slot`` holds now: its prefilling request's, or the prefix kept for reuse."""
        owner = next((r for r in self.running if r.slot == slot), None)
        return owner.cached if owner is not None else len(self.slot_tokens[slot])

    def _sample(self, requests: list[Request], logits: torch.Tensor) -> None:
        greedy = torch.argmax(logits, dim=-1).tolist()
        for row, r in enumerate(requests):
            scores = logits[row : row + 1]
            if r.processors:
                n = len(r.prompt_ids) + len(r.generated)
                scores = r.processors(r.ids_buf[:, :n], scores)
            if r.generator is not None:
                probs = torch.softmax(scores, dim=-1)
                token = int(torch.multinomial(probs, num_samples=1, generator=r.generator)[0, 0])
            elif r.processors:
                token = int(torch.argmax(scores, dim=-1)[0])
            else:
                token = greedy[row]
            self._accept(r, token, logits[row])

    def _accept(self, r: Request, token: int, raw_logits: torch.Tensor) -> None:
        now = time.perf_counter()
        if self.metrics is not None:
            if r.last_token_at is None:
                self.metrics.first_token(now - r.arrival)
            else:
                self.metrics.token_latency(now - r.last_token_at)
        r.last_token_at = now
        if r.ids_buf is not None:
            r.ids_buf[0, len(r.prompt_ids) + len(r.generated)] = token
        r.generated.append(token)
        r.pending = token
        logprob = top = None
        if r.params.logprobs is not None:
            lp = torch.log_softmax(raw_logits.float(), dim=-1)
            logprob = float(lp[token])
            if r.params.logprobs > 0:
                values, indices = torch.topk(lp, r.params.logprobs)
                top = list(zip(indices.tolist(), values.tolist()))
        finish = None
        is_eos = token in self.eos and not r.params.ignore_eos
        text = "" if is_eos else r.detok.put(token)
        if is_eos:
            finish = "stop"
        elif len(r.generated) >= r.params.max_tokens or r.cached + 1 >= self.max_len:
            finish = "length"
        text, stopped = self._stop_strings(r, text, final=finish is not None)
        if stopped:
            finish = "stop"
        if self.metrics is not None:
            self.metrics.generated_tokens(1)
        self._emit(r, TokenEvent(token, text, logprob, top, finish))
        if finish is not None:
            self._finish(r, finish, emit=False)

    def _stop_strings(self, r: Request, text: str, final: bool) -> tuple[str, bool]:
        """Hold back text that may begin a stop string; cut at a stop string found."""
        if final:
            text += r.detok.flush()
        stops = r.params.stop
        if not stops:
            r.emitted += text
            return text, False
        pending = r.held + text
        window_start = max(0, len(r.emitted) - max(len(s) for s in stops) + 1)
        window = r.emitted[window_start:] + pending
        offset = len(r.emitted) - window_start
        cut = None
        for s in stops:
            at = window.find(s)
            if at != -1 and (cut is None or at < cut):
                cut = at
        if cut is not None:
            out = pending[: max(0, cut - offset)]
            r.emitted += out
            r.held = ""
            return out, True
        if final:
            r.emitted += pending
            r.held = ""
            return pending, False
        keep = 0
        for s in stops:
            for k in range(min(len(s) - 1, len(pending)), 0, -1):
                if pending.endswith(s[:k]):
                    keep = max(keep, k)
                    break
        out = pending[: len(pending) - keep]
        r.held = pending[len(pending) - keep:]
        r.emitted += out
        return out, False

    def _finish(self, r: Request, reason: str, message: str = "", emit: bool = True) -> None:
        if r.state == _DONE:
            return
        r.finish_reason = reason
        r.state = _DONE
        if r in self.running:
            self.running.remove(r)
        if r.slot is not None:
            self.free_slots.add(r.slot)
            # the slot keeps what it computed, for a later prompt with the same prefix
            self.slot_tokens[r.slot] = self.slot_tokens[r.slot][: r.cached]
            r.slot = None
        if self.metrics is not None:
            self.metrics.finished(reason)
        if emit:
            self._emit(r, TokenEvent(-1, message, finish_reason=reason))

    @staticmethod
    def _emit(r: Request, event: TokenEvent) -> None:
        """Hand ``event`` to the request's consumer; a consumer that is gone cancels the request."""
        try:
            r.sink(event)
        except Exception:  # e.g. the server's event loop closed: nobody reads this request any more
            r.cancelled = True

    def _report(self) -> None:
        if self.metrics is not None:
            self.metrics.set_state(len(self.waiting), len(self.running))
