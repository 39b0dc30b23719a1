"""Logits processors and warpers: ``processor(input_ids, scores) -> scores``.

``input_ids`` is [batch, cur_len] (prompt and generated tokens so far), ``scores`` is
[batch, vocab] (logits, or log-probabilities in beam search). Processors return a new tensor
and never modify ``scores`` in place, so callers may keep the raw logits.
"""
from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable

import torch

_NEG_INF = -float("inf")


def _as_id_tensor(token_ids: int | Iterable[int] | torch.Tensor, device: torch.device | str = "cpu") -> torch.Tensor:
    if isinstance(token_ids, torch.Tensor):
        return token_ids.to(device=device, dtype=torch.long).reshape(-1)
    if isinstance(token_ids, int):
        token_ids = [token_ids]
    return torch.tensor(list(token_ids), dtype=torch.long, device=device)


def _in_vocab(token_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
    """``token_ids`` on ``scores``' device, without ids past its vocabulary (a config's EOS id may lie outside a
    small model's vocabulary, as transformers' default Starcoder2 config's does: such an id is never generated)."""
    token_ids = token_ids.to(scores.device)
    return token_ids[token_ids < scores.shape[-1]]


def _check_min_tokens_to_keep(value: int) -> None:
    if not isinstance(value, int) or value < 1:
        raise ValueError(f"`min_tokens_to_keep` must be a positive integer, got {value!r}")


class LogitsProcessor:
    """Base class: subclasses implement ``__call__(input_ids, scores) -> scores``."""

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        raise NotImplementedError(f"{type(self).__name__} must implement __call__(input_ids, scores)")


LogitsWarper = LogitsProcessor


class LogitsProcessorList(list):
    """A list of processors applied in order; extra keyword arguments reach processors that declare them."""

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor, **kwargs) -> torch.FloatTensor:
        for processor in self:
            if kwargs:
                params = list(inspect.signature(processor.__call__).parameters)
                if len(params) > 2:
                    missing = [p for p in params[2:] if p not in kwargs]
                    if missing:
                        raise ValueError(f"{type(processor).__name__} needs the arguments {missing}; pass them to the list call")
                    scores = processor(input_ids, scores, **{p: kwargs[p] for p in params[2:]})
                    continue
            scores = processor(input_ids, scores)
        return scores


# -- length ------------------------------------------------------------------------------------
class MinLengthLogitsProcessor(LogitsProcessor):
    """Forbid EOS while the whole sequence (prompt included) is shorter than ``min_length``."""

    def __init__(self, min_length: int, eos_token_id: int | list[int] | torch.Tensor, device: str = "cpu") -> None:
        if not isinstance(min_length, int) or min_length < 0:
            raise ValueError(f"`min_length` must be a non-negative integer, got {min_length!r}")
        self.min_length = min_length
        self.eos_token_id = _as_id_tensor(eos_token_id, device)

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        if input_ids.shape[-1] >= self.min_length:
            return scores
        out = scores.clone()
        out[:, _in_vocab(self.eos_token_id, scores)] = _NEG_INF
        return out


class MinNewTokensLengthLogitsProcessor(LogitsProcessor):
    """Forbid EOS until ``min_new_tokens`` tokens follow the first ``prompt_length_to_skip``."""

    def __init__(self, prompt_length_to_skip: int, min_new_tokens: int, eos_token_id: int | list[int] | torch.Tensor,
                 device: str = "cpu") -> None:
        for name, value in (("prompt_length_to_skip", prompt_length_to_skip), ("min_new_tokens", min_new_tokens)):
            if not isinstance(value, int) or value < 0:
                raise ValueError(f"`{name}` must be a non-negative integer, got {value!r}")
        self.prompt_length_to_skip = prompt_length_to_skip
        self.min_new_tokens = min_new_tokens
        self.eos_token_id = _as_id_tensor(eos_token_id, device)

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        if input_ids.shape[-1] - self.prompt_length_to_skip >= self.min_new_tokens:
            return scores
        out = scores.clone()
        out[:, _in_vocab(self.eos_token_id, scores)] = _NEG_INF
        return out


# -- warpers ----------------------------------------------------------------------------------
class TemperatureLogitsWarper(LogitsProcessor):
    """Divide the logits by ``temperature`` (> 0): below 1 sharpens, above 1 flattens."""

    def __init__(self, temperature: float) -> None:
        if isinstance(temperature, bool) or not isinstance(temperature, (float, int)) or not temperature > 0:
            hint = " For greedy decoding set do_sample=False." if temperature == 0 else ""
            raise ValueError(f"`temperature` must be a strictly positive float, got {temperature!r}.{hint}")
        self.temperature = float(temperature)

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        return scores / self.temperature


class TopKLogitsWarper(LogitsProcessor):
    """Keep the ``top_k`` highest logits (ties with the k-th are kept), set the rest to ``filter_value``."""

    def __init__(self, top_k: int, filter_value: float = _NEG_INF, min_tokens_to_keep: int = 1) -> None:
        if not isinstance(top_k, int) or isinstance(top_k, bool) or top_k <= 0:
            raise ValueError(f"`top_k` must be a strictly positive integer, got {top_k!r}")
        _check_min_tokens_to_keep(min_tokens_to_keep)
        self.top_k = max(top_k, min_tokens_to_keep)
        self.filter_value = filter_value
        self.min_tokens_to_keep = min_tokens_to_keep

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        k = min(self.top_k, scores.shape[-1])
        kth = torch.topk(scores, k, dim=-1).values[..., -1:]
        return scores.masked_fill(scores < kth, self.filter_value)


class TopPLogitsWarper(LogitsProcessor):
    """Nucleus sampling: keep the smallest set of most likely tokens whose probability reaches ``top_p``."""

    def __init__(self, top_p: float, filter_value: float = _NEG_INF, min_tokens_to_keep: int = 1) -> None:
        top_p = float(top_p)
        if not 0.0 <= top_p <= 1.0:
            raise ValueError(f"`top_p` must be a float in (0, 1], got {top_p!r}")
        _check_min_tokens_to_keep(min_tokens_to_keep)
        self.top_p = top_p
        self.filter_value = filter_value
        self.min_tokens_to_keep = min_tokens_to_keep

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        # ascending sort: a token is dropped when the mass of it and everything less likely stays within 1 - top_p
        sorted_logits, order = torch.sort(scores, descending=False, dim=-1)
        tail_mass = sorted_logits.softmax(dim=-1).cumsum(dim=-1)
        drop_sorted = tail_mass <= (1.0 - self.top_p)
        drop_sorted[..., -self.min_tokens_to_keep:] = False
        drop = drop_sorted.scatter(-1, order, drop_sorted)
        return scores.masked_fill(drop, self.filter_value)


class MinPLogitsWarper(LogitsProcessor):
    """Drop tokens whose probability is below ``min_p`` times the top token's probability."""

    def __init__(self, min_p: float, filter_value: float = _NEG_INF, min_tokens_to_keep: int = 1) -> None:
        if not 0.0 <= float(min_p) <= 1.0:
            raise ValueError(f"`min_p` must be a float in [0, 1], got {min_p!r}")
        _check_min_tokens_to_keep(min_tokens_to_keep)
        self.min_p = float(min_p)
        self.filter_value = filter_value
        self.min_tokens_to_keep = min_tokens_to_keep

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        probs = scores.softmax(dim=-1)
        threshold = self.min_p * probs.amax(dim=-1, keepdim=True)
        drop = probs < threshold
        k = min(self.min_tokens_to_keep, probs.shape[-1])
        drop.scatter_(-1, torch.topk(probs, k, dim=-1).indices, False)
        return scores.masked_fill(drop, self.filter_value)


class TypicalLogitsWarper(LogitsProcessor):
    """Locally typical sampling: keep the tokens whose surprisal is closest to the entropy, up to ``mass``."""

    def __init__(self, mass: float = 0.9, filter_value: float = _NEG_INF, min_tokens_to_keep: int = 1) -> None:
        mass = float(mass)
        if not 0.0 < mass < 1.0:
            raise ValueError(f"`typical_p` must be a float in (0, 1), got {mass!r}")
        _check_min_tokens_to_keep(min_tokens_to_keep)
        self.mass = mass
        self.filter_value = filter_value
        self.min_tokens_to_keep = min_tokens_to_keep

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        logp = torch.log_softmax(scores, dim=-1)
        p = logp.exp()
        entropy = -(logp * p).nansum(-1, keepdim=True)
        distance = (-logp - entropy).abs()
        sorted_distance, order = torch.sort(distance, descending=False, dim=-1)
        cum = scores.gather(-1, order).softmax(dim=-1).cumsum(dim=-1)
        last = (cum < self.mass).sum(dim=-1).clamp_(max=scores.shape[-1] - 1)
        drop_sorted = sorted_distance > sorted_distance.gather(-1, last[:, None])
        drop_sorted[..., : self.min_tokens_to_keep] = False
        drop = drop_sorted.scatter(-1, order, drop_sorted)
        return scores.masked_fill(drop, self.filter_value)


class EpsilonLogitsWarper(LogitsProcessor):
    """Drop tokens whose probability is below ``epsilon`` (truncation sampling)."""

    def __init__(self, epsilon: float, filter_value: float = _NEG_INF, min_tokens_to_keep: int = 1) -> None:
        epsilon = float(epsilon)
        if not 0.0 < epsilon < 1.0:
            raise ValueError(f"`epsilon_cutoff` must be a float in (0, 1), got {epsilon!r}")
        _check_min_tokens_to_keep(int(min_tokens_to_keep))
        self.epsilon = epsilon
        self.filter_value = filter_value
        self.min_tokens_to_keep = int(min_tokens_to_keep)

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        drop = scores.softmax(dim=-1) < self.epsilon
        k = min(self.min_tokens_to_keep, scores.shape[-1])
        drop &= scores < torch.topk(scores, k, dim=-1).values[..., -1:]
        return scores.masked_fill(drop, self.filter_value)


class EtaLogitsWarper(LogitsProcessor):
    """Eta sampling: drop tokens below min(eta, sqrt(eta) * exp(-entropy))."""

    def __init__(self, epsilon: float, filter_value: float = _NEG_INF, min_tokens_to_keep: int = 1,
                 device: str = "cpu") -> None:
        epsilon = float(epsilon)
        if not 0.0 < epsilon < 1.0:
            raise ValueError(f"`eta_cutoff` must be a float in (0, 1), got {epsilon!r}")
        _check_min_tokens_to_keep(int(min_tokens_to_keep))
        self.epsilon = torch.tensor(epsilon, device=device)
        self.filter_value = filter_value
        self.min_tokens_to_keep = int(min_tokens_to_keep)

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        logp = torch.log_softmax(scores, dim=-1)
        p = logp.exp()
        entropy = -(p * logp).nansum(-1)
        eps = self.epsilon.to(scores.device)
        eta = torch.minimum(eps, eps.sqrt() * torch.exp(-entropy))[..., None]
        drop = p < eta
        k = min(self.min_tokens_to_keep, scores.shape[-1])
        drop &= scores < torch.topk(scores, k, dim=-1).values[..., -1:]
        return scores.masked_fill(drop, self.filter_value)


# -- penalties and bans -----------------------------------------------------------------------
class RepetitionPenaltyLogitsProcessor(LogitsProcessor):
    """Penalise tokens already present: positive logits are divided by ``penalty``, negative ones multiplied.

    ``prompt_ignore_length`` (an int, or a [batch] tensor such as the left-padding length of each
    row) excludes that many leading positions from the penalty.
    """

    def __init__(self, penalty: float, prompt_ignore_length: int | torch.Tensor | None = None) -> None:
        if isinstance(penalty, bool) or not isinstance(penalty, (float, int)) or not penalty > 0:
            raise ValueError(f"`repetition_penalty` must be a strictly positive float, got {penalty!r}")
        if isinstance(prompt_ignore_length, int) and prompt_ignore_length < 0:
            raise ValueError(f"`prompt_ignore_length` must be non-negative, got {prompt_ignore_length}")
        if isinstance(prompt_ignore_length, torch.Tensor) and prompt_ignore_length.dim() != 1:
            raise ValueError("`prompt_ignore_length` must be an int or a 1-D tensor with one length per row")
        self.penalty = float(penalty)
        self.prompt_ignore_length = prompt_ignore_length

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        vocab = scores.shape[-1]
        ignore = self.prompt_ignore_length
        if isinstance(ignore, int):
            input_ids = input_ids[:, ignore:]
        elif isinstance(ignore, torch.Tensor):
            if ignore.shape[0] != input_ids.shape[0]:
                raise ValueError(
                    f"`prompt_ignore_length` has {ignore.shape[0]} rows but input_ids has {input_ids.shape[0]}"
                )
            positions = torch.arange(input_ids.shape[1], device=input_ids.device)
            input_ids = input_ids.masked_fill(positions[None, :] < ignore.to(input_ids.device)[:, None], vocab)
        # an extra column absorbs ids that must not be penalised (ignored positions, ids past the vocab)
        ids = input_ids.clamp(max=vocab)
        padded = torch.nn.functional.pad(scores, (0, 1))
        picked = padded.gather(1, ids)
        picked = torch.where(picked < 0, picked * self.penalty, picked / self.penalty)
        return padded.scatter(1, ids, picked)[:, :vocab]


class NoRepeatNGramLogitsProcessor(LogitsProcessor):
    """Ban any token that would repeat an n-gram of size ``ngram_size`` already in the sequence."""

    def __init__(self, ngram_size: int) -> None:
        if not isinstance(ngram_size, int) or ngram_size <= 0:
            raise ValueError(f"`no_repeat_ngram_size` must be a strictly positive integer, got {ngram_size!r}")
        self.ngram_size = ngram_size

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        n = self.ngram_size
        cur_len = input_ids.shape[-1]
        if cur_len < n:
            return scores
        vocab = scores.shape[-1]
        if n == 1:
            banned = torch.zeros(scores.shape[0], vocab + 1, dtype=torch.bool, device=scores.device)
            banned.scatter_(1, input_ids.clamp(max=vocab), True)
            return scores.masked_fill(banned[:, :vocab], _NEG_INF)
        # the last n-1 tokens; every earlier window starting with them bans the token that followed
        suffix = input_ids[:, cur_len - n + 1:]  # [b, n-1]
        windows = input_ids.unfold(1, n, 1)  # [b, cur_len - n + 1, n]
        hit = (windows[..., :-1] == suffix[:, None, :]).all(-1)  # [b, w]
        target = torch.where(hit, windows[..., -1].clamp(max=vocab), vocab)
        banned = torch.zeros(scores.shape[0], vocab + 1, dtype=torch.bool, device=scores.device)
        banned.scatter_(1, target, True)
        return scores.masked_fill(banned[:, :vocab], _NEG_INF)


class SequenceBiasLogitsProcessor(LogitsProcessor):
    """Add a bias to the last token of each listed sequence when the sequence's prefix ends the input.

    ``sequence_bias``: ``[[token_ids, bias], ...]`` or ``{tuple(token_ids): bias}``.
    """

    def __init__(self, sequence_bias: list | dict) -> None:
        if isinstance(sequence_bias, list):
            try:
                sequence_bias = {tuple(seq): float(bias) for seq, bias in sequence_bias}
            except (TypeError, ValueError) as exc:
                raise ValueError(f"`sequence_bias` must be [[token_ids, bias], ...], got {sequence_bias!r}") from exc
        if not isinstance(sequence_bias, dict) or not sequence_bias:
            raise ValueError(f"`sequence_bias` must be a non-empty dict or list, got {sequence_bias!r}")
        for seq, bias in sequence_bias.items():
            if not isinstance(seq, tuple) or not seq or not all(isinstance(t, int) and t >= 0 for t in seq):
                raise ValueError(f"`sequence_bias` keys must be non-empty tuples of token ids, got {seq!r}")
            if not isinstance(bias, (float, int)):
                raise ValueError(f"`sequence_bias` values must be floats, got {bias!r}")
        self._set_bias({k: float(v) for k, v in sequence_bias.items()})

    def _set_bias(self, sequence_bias: dict[tuple[int, ...], float]) -> None:
        self.sequence_bias = sequence_bias
        self._prepared_for: tuple[int, torch.device] | None = None

    def _prepare(self, scores: torch.Tensor) -> None:
        vocab = scores.shape[-1]
        too_big = sorted({t for seq in self.sequence_bias for t in seq if t >= vocab})
        if too_big:
            raise ValueError(f"the vocabulary has {vocab} tokens but `sequence_bias`/`bad_words_ids` name {too_big}")
        self._single = torch.zeros(vocab, dtype=torch.float32, device=scores.device)
        groups: dict[int, list[tuple[tuple[int, ...], float]]] = {}
        for seq, bias in self.sequence_bias.items():
            if len(seq) == 1:
                self._single[seq[0]] += bias
            else:
                groups.setdefault(len(seq) - 1, []).append((seq, bias))
        self._multi = [
            (
                torch.tensor([s[:-1] for s, _ in g], dtype=torch.long, device=scores.device),
                torch.tensor([s[-1] for s, _ in g], dtype=torch.long, device=scores.device),
                torch.tensor([b for _, b in g], dtype=torch.float32, device=scores.device),
            )
            for g in groups.values()
        ]
        self._prepared_for = (vocab, scores.device)

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        if self._prepared_for != (scores.shape[-1], scores.device):
            self._prepare(scores)
        bias = self._single.to(scores.dtype).expand_as(scores).clone()
        for prefixes, last, values in self._multi:
            plen = prefixes.shape[1]
            if plen > input_ids.shape[1]:
                continue
            match = (input_ids[:, None, -plen:] == prefixes[None]).all(-1)  # [b, n_seq]
            bias.index_add_(1, last, torch.where(match, values, 0.0).to(bias.dtype))
        return scores + bias


class NoBadWordsLogitsProcessor(SequenceBiasLogitsProcessor):
    """Ban the token sequences in ``bad_words_ids`` (a single-token EOS entry is never banned)."""

    def __init__(self, bad_words_ids: list[list[int]], eos_token_id: int | list[int] | torch.Tensor | None = None) -> None:
        if not isinstance(bad_words_ids, list) or not bad_words_ids:
            raise ValueError(f"`bad_words_ids` must be a non-empty list of lists of token ids, got {bad_words_ids!r}")
        if any(not isinstance(seq, list) or not seq for seq in bad_words_ids):
            raise ValueError(f"`bad_words_ids` must be a list of non-empty lists, got {bad_words_ids!r}")
        if any(not isinstance(t, int) or t < 0 for seq in bad_words_ids for t in seq):
            raise ValueError(f"`bad_words_ids` entries must be non-negative token ids, got {bad_words_ids!r}")
        self.bad_word_ids = bad_words_ids
        eos = set(_as_id_tensor(eos_token_id).tolist()) if eos_token_id is not None else set()
        kept = [seq for seq in bad_words_ids if not (len(seq) == 1 and seq[0] in eos)]
        self._set_bias({tuple(seq): _NEG_INF for seq in kept})


# -- forcing and suppression -------------------------------------------------------------------
class ForcedBOSTokenLogitsProcessor(LogitsProcessor):
    """Force ``bos_token_id`` as the first generated token (when the input has length 1)."""

    def __init__(self, bos_token_id: int) -> None:
        self.bos_token_id = bos_token_id

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        if input_ids.shape[-1] != 1:
            return scores
        out = torch.full_like(scores, _NEG_INF)
        out[:, self.bos_token_id] = 0
        return out


class ForcedEOSTokenLogitsProcessor(LogitsProcessor):
    """Force EOS as the last token when ``max_length`` is reached."""

    def __init__(self, max_length: int, eos_token_id: int | list[int] | torch.Tensor, device: str = "cpu") -> None:
        self.max_length = max_length
        self.eos_token_id = _as_id_tensor(eos_token_id, device)
        if (self.eos_token_id < 0).any():
            raise ValueError(f"`eos_token_id` must be non-negative token ids, got {eos_token_id!r}")

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        if input_ids.shape[-1] != self.max_length - 1:
            return scores
        eos = _in_vocab(self.eos_token_id, scores)
        if eos.numel() == 0:  # no EOS the model can produce: nothing to force
            return scores
        out = torch.full_like(scores, _NEG_INF)
        out[:, eos] = 0
        return out


class SuppressTokensLogitsProcessor(LogitsProcessor):
    """Set the listed tokens to -inf at every step."""

    def __init__(self, suppress_tokens: Iterable[int], device: str = "cpu") -> None:
        self.suppress_tokens = _as_id_tensor(list(suppress_tokens), device)

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        out = scores.clone()
        ids = self.suppress_tokens.to(scores.device)
        out[:, ids[ids < scores.shape[-1]]] = _NEG_INF
        return out


class SuppressTokensAtBeginLogitsProcessor(LogitsProcessor):
    """Set the listed tokens to -inf at the step where the input has ``begin_index`` tokens."""

    def __init__(self, begin_suppress_tokens: Iterable[int], begin_index: int, device: str = "cpu") -> None:
        self.begin_suppress_tokens = _as_id_tensor(list(begin_suppress_tokens), device)
        self.begin_index = begin_index

    def set_begin_index(self, begin_index: int) -> None:
        self.begin_index = begin_index

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        if input_ids.shape[-1] != self.begin_index:
            return scores
        out = scores.clone()
        ids = self.begin_suppress_tokens.to(scores.device)
        out[:, ids[ids < scores.shape[-1]]] = _NEG_INF
        return out


class ExponentialDecayLengthPenalty(LogitsProcessor):
    """Raise the EOS score exponentially once ``start_index`` new tokens are generated: (start_index, decay_factor)."""

    def __init__(self, exponential_decay_length_penalty: tuple[int, float], eos_token_id: int | list[int] | torch.Tensor,
                 input_ids_seq_length: int) -> None:
        self.regulation_start = exponential_decay_length_penalty[0] + input_ids_seq_length
        self.regulation_factor = exponential_decay_length_penalty[1]
        self.eos_token_id = _as_id_tensor(eos_token_id)

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        cur_len = input_ids.shape[-1]
        if cur_len <= self.regulation_start:
            return scores
        eos = _in_vocab(self.eos_token_id, scores)
        eos_scores = scores[:, eos]
        penalty = eos_scores.abs() * (self.regulation_factor ** (cur_len - self.regulation_start) - 1)
        penalty = penalty.masked_fill(~torch.isfinite(eos_scores), 0.0)
        out = scores.clone()
        out[:, eos] = eos_scores + penalty
        return out


class InfNanRemoveLogitsProcessor(LogitsProcessor):
    """Replace NaN by 0 and +/-inf by the dtype's largest/smallest finite value."""

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        info = torch.finfo(scores.dtype)
        scores = torch.where(scores != scores, torch.zeros_like(scores), scores)
        return scores.clamp(min=info.min, max=info.max)


class LogitNormalization(LogitsProcessor):
    """Log-softmax the scores (useful after warpers in beam search)."""

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        return scores.log_softmax(dim=-1)


class PrefixConstrainedLogitsProcessor(LogitsProcessor):
    """Allow only the tokens ``prefix_allowed_tokens_fn(batch_id, input_ids_row)`` returns."""

    def __init__(self, prefix_allowed_tokens_fn: Callable[[int, torch.Tensor], list[int]], num_beams: int) -> None:
        self._fn = prefix_allowed_tokens_fn
        self._num_beams = num_beams

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        mask = torch.full_like(scores, _NEG_INF)
        for row in range(input_ids.shape[0]):
            allowed = self._fn(row // self._num_beams, input_ids[row])
            if len(allowed) == 0:
                raise ValueError(f"prefix_allowed_tokens_fn returned no allowed token for batch row {row // self._num_beams}")
            mask[row, allowed] = 0
        return scores + mask

