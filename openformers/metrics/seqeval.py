"""Entity-level precision / recall / F1 for sequence labelling, with seqeval's chunking rules.

Default mode follows conlleval: chunks start and end by comparing each tag with the previous
one, so ill-formed sequences (an I- without a B-) still yield entities. ``mode="strict"``
accepts only entities well formed under a tagging ``scheme`` (IOB1, IOE1, IOB2, IOE2, IOBES,
BILOU; detected from the references when not given).
"""
from __future__ import annotations

import warnings
from collections import defaultdict
from typing import Any, Sequence

import numpy as np

from .base import Metric

# ---------------------------------------------------------------------------------------------
# default (conlleval-like) mode

_ENDS = {("B", "B"), ("B", "S"), ("B", "O"), ("I", "B"), ("I", "S"), ("I", "O")}
_STARTS = {("E", "E"), ("E", "I"), ("S", "E"), ("S", "I"), ("O", "E"), ("O", "I")}


def _split_tag(chunk: str, suffix: bool) -> tuple[str, str]:
    if suffix:
        return chunk[-1], chunk[:-1].rsplit("-", maxsplit=1)[0] or "_"
    return chunk[0], chunk[1:].split("-", maxsplit=1)[-1] or "_"


def get_entities(seq: Sequence[Any], suffix: bool = False) -> list[tuple[str, int, int]]:
    """(type, start, end) chunks of a tag sequence (a list of lists is joined with "O" separators)."""
    if any(isinstance(s, list) for s in seq):
        seq = [tag for sent in seq for tag in list(sent) + ["O"]]
    chunks = []
    prev_tag, prev_type, begin = "O", "", 0
    for i, chunk in enumerate(list(seq) + ["O"]):
        if chunk not in ("O", "B", "I", "E", "S"):
            ok = chunk.endswith(("-B", "-I", "-E", "-S")) if suffix else chunk.startswith(("B-", "I-", "E-", "S-"))
            if not ok:
                warnings.warn(f"seqeval: {chunk} seems not to be a NE tag.", UserWarning, stacklevel=5)
        tag, type_ = _split_tag(chunk, suffix)
        if prev_tag in ("E", "S") or (prev_tag, tag) in _ENDS or (prev_tag not in ("O", ".") and prev_type != type_):
            chunks.append((prev_type, begin, i - 1))
        if tag in ("B", "S") or (prev_tag, tag) in _STARTS or (tag not in ("O", ".") and prev_type != type_):
            begin = i
        prev_tag, prev_type = tag, type_
    return chunks


def _default_entities(sequences: list[list[str]], suffix: bool) -> dict[str, set]:
    out: dict[str, set] = defaultdict(set)
    for type_name, start, end in get_entities(sequences, suffix):
        out[type_name].add((start, end))
    return out


# ---------------------------------------------------------------------------------------------
# strict mode: (previous prefixes, current prefixes, tag condition) patterns per scheme

_A = "IOBESUL"  # any prefix
_SCHEMES: dict[str, dict[str, Any]] = {
    "IOB1": {"allowed": "IOB",
             "start": [("O", "I", "any"), ("I", "I", "diff"), ("B", "I", "any"), ("I", "B", "same"), ("B", "B", "same")],
             "inside": [("B", "I", "same"), ("I", "I", "same")],
             "end": [("I", "I", "diff"), ("I", "O", "any"), ("I", "B", "any"), ("B", "O", "any"), ("B", "I", "diff"),
                     ("B", "B", "same")]},
    "IOE1": {"allowed": "IOE",
             "start": [("O", "I", "any"), ("I", "I", "diff"), ("E", "I", "any"), ("E", "E", "same")],
             "inside": [("I", "I", "same"), ("I", "E", "same")],
             "end": [("I", "I", "diff"), ("I", "O", "any"), ("I", "E", "diff"), ("E", "I", "same"), ("E", "E", "same")]},
    "IOB2": {"allowed": "IOB",
             "start": [(_A, "B", "any")],
             "inside": [("B", "I", "same"), ("I", "I", "same")],
             "end": [("I", "O", "any"), ("I", "I", "diff"), ("I", "B", "any"), ("B", "O", "any"), ("B", "I", "diff"),
                     ("B", "B", "any")]},
    "IOE2": {"allowed": "IOE",
             "start": [("O", "I", "any"), ("O", "E", "any"), ("E", "I", "any"), ("E", "E", "any"), ("I", "I", "diff"),
                       ("I", "E", "diff")],
             "inside": [("I", "E", "same"), ("I", "I", "same")],
             "end": [("E", _A, "any")]},
    "IOBES": {"allowed": "IOBES",
              "start": [(_A, "B", "any"), (_A, "S", "any")],
              "inside": [("B", "I", "same"), ("B", "E", "same"), ("I", "I", "same"), ("I", "E", "same")],
              "end": [("S", _A, "any"), ("E", _A, "any")]},
    "BILOU": {"allowed": "BILOU",
              "start": [(_A, "B", "any"), (_A, "U", "any")],
              "inside": [("B", "I", "same"), ("B", "L", "same"), ("I", "I", "same"), ("I", "L", "same")],
              "end": [("U", _A, "any"), ("L", _A, "any")]},
}


def _strict_token(token: str, suffix: bool) -> tuple[str, str]:
    prefix = token[-1] if suffix else token[0]
    if prefix not in _A:
        raise ValueError(f"seqeval: this scheme is not supported for token {token!r} (unknown prefix {prefix!r}).")
    tag = (token[:-1] if suffix else token[1:]).strip("-") or "_"
    return prefix, tag


def _matches(prev: tuple[str, str], cur: tuple[str, str], patterns: list[tuple[str, str, str]]) -> bool:
    for prev_prefixes, cur_prefixes, cond in patterns:
        if prev[0] in prev_prefixes and cur[0] in cur_prefixes:
            if cond == "any" or (cond == "same") == (prev[1] == cur[1]):
                return True
    return False


def _strict_sentence(tokens: list[str], scheme: dict[str, Any], suffix: bool) -> list[tuple[str, int, int]]:
    outside = ("O", "_")
    toks = [_strict_token(t, suffix) for t in tokens] + [outside]
    for t, raw in zip(toks, tokens):
        if t[0] not in scheme["allowed"]:
            raise ValueError(f"seqeval: invalid token {raw!r} for this scheme; allowed prefixes: {'|'.join(scheme['allowed'])}.")
    entities, i, prev = [], 0, outside
    while i < len(toks):
        token = toks[i]
        if _matches(prev, token, scheme["start"]):
            end, inner_prev = i + 1, token
            while end < len(toks) and _matches(inner_prev, toks[end], scheme["inside"]):
                inner_prev, end = toks[end], end + 1
            if end >= len(toks):
                end = len(toks) - 2
            if _matches(toks[end - 1], toks[end], scheme["end"]):
                entities.append((token[1], i, end))
            i = end
        else:
            i += 1
        prev = toks[i - 1]
    return entities


def _detect_scheme(sequences: list[list[str]], suffix: bool) -> str:
    prefixes = frozenset(_strict_token(t, suffix)[0] for seq in sequences for t in seq)
    options = {
        "IOB2": ["IOB", "IB", "BO", "B"], "IOE2": ["IOE", "IE", "EO", "E"],
        "IOBES": ["IOBES", "IBES", "IOBE", "OBES", "IBE", "BES", "OBE", "BE", "S"],
        "BILOU": ["IOBLU", "IBLU", "IOBL", "OBLU", "IBL", "BLU", "OBL", "BL", "U"],
    }
    for name, sets in options.items():
        if prefixes in {frozenset(s) for s in sets}:
            return name
    raise ValueError(f"seqeval: cannot detect the tagging scheme from prefixes {sorted(prefixes)}; pass `scheme=`.")


def _strict_entities(sequences: list[list[str]], scheme: dict[str, Any], suffix: bool) -> dict[str, set]:
    out: dict[str, set] = defaultdict(set)
    for sent_id, seq in enumerate(sequences):
        for tag, start, end in _strict_sentence(list(seq), scheme, suffix):
            out[tag].add((sent_id, start, end))
    return out


# ---------------------------------------------------------------------------------------------

def _divide(num: np.ndarray, den: np.ndarray, zero_division: Any) -> np.ndarray:
    out = num / np.where(den == 0, 1, den)
    if (den == 0).any():
        out[den == 0] = 0.0 if zero_division in ("warn", 0) else 1.0
        if zero_division == "warn":
            warnings.warn("seqeval: precision/recall ill-defined for some entity types; set to 0.0.",
                          UserWarning, stacklevel=5)
    return out


def _prf(tp: np.ndarray, pred: np.ndarray, true: np.ndarray, zero_division: Any) -> tuple[np.ndarray, ...]:
    precision = _divide(tp.astype(np.float64), pred.astype(np.float64), zero_division)
    recall = _divide(tp.astype(np.float64), true.astype(np.float64), zero_division)
    denom = precision + recall
    f1 = 2 * precision * recall / np.where(denom == 0, 1, denom)
    return precision, recall, f1


class Seqeval(Metric):
    """Per entity type ``{"precision", "recall", "f1", "number"}`` plus overall_precision /
    overall_recall / overall_f1 (micro average) and overall_accuracy (token level)."""

    name = "seqeval"

    def _compute(self, predictions: Sequence[Sequence[str]], references: Sequence[Sequence[str]], suffix: bool = False,
                 scheme: str | None = None, mode: str | None = None, sample_weight: Any = None,
                 zero_division: Any = "warn") -> dict[str, Any]:
        # sample_weight is accepted for API compatibility; like seqeval, entity scores ignore it.
        preds = [list(p) for p in predictions]
        refs = [list(r) for r in references]
        for i, (p, r) in enumerate(zip(preds, refs)):
            if len(p) != len(r):
                raise ValueError(f"seqeval: predictions[{i}] has {len(p)} tags but references[{i}] has {len(r)}.")
            if not all(isinstance(t, str) for t in p + r):
                raise TypeError(f"seqeval: predictions[{i}] and references[{i}] must be lists of tag strings.")
        if zero_division not in ("warn", 0, 1):
            raise ValueError(f"seqeval: `zero_division` must be 'warn', 0 or 1, got {zero_division!r}.")
        if mode == "strict":
            name = scheme if scheme is not None else _detect_scheme(refs, suffix)
            name = getattr(name, "__name__", name)
            if name not in _SCHEMES:
                raise ValueError(f"seqeval: unknown scheme {name!r}; use one of {list(_SCHEMES)}.")
            true_ents = _strict_entities(refs, _SCHEMES[name], suffix)
            pred_ents = _strict_entities(preds, _SCHEMES[name], suffix)
        elif mode is None:
            true_ents, pred_ents = _default_entities(refs, suffix), _default_entities(preds, suffix)
        else:
            raise ValueError(f"seqeval: `mode` must be None or 'strict', got {mode!r}.")
        types = sorted(set(true_ents) | set(pred_ents))
        tp = np.array([len(true_ents.get(t, set()) & pred_ents.get(t, set())) for t in types], dtype=np.int64)
        pred = np.array([len(pred_ents.get(t, set())) for t in types], dtype=np.int64)
        true = np.array([len(true_ents.get(t, set())) for t in types], dtype=np.int64)
        p, r, f = _prf(tp, pred, true, zero_division)
        scores: dict[str, Any] = {
            t: {"precision": float(p[i]), "recall": float(r[i]), "f1": float(f[i]), "number": int(true[i])}
            for i, t in enumerate(types)
        }
        op, orr, of = _prf(np.array([tp.sum()]), np.array([pred.sum()]), np.array([true.sum()]), zero_division)
        flat_true = [t for s in refs for t in s]
        flat_pred = [t for s in preds for t in s]
        if not flat_true:
            raise ValueError("seqeval: got no tags; pass at least one non-empty sequence.")
        scores["overall_precision"] = float(op[0])
        scores["overall_recall"] = float(orr[0])
        scores["overall_f1"] = float(of[0])
        scores["overall_accuracy"] = sum(a == b for a, b in zip(flat_true, flat_pred)) / len(flat_true)
        return scores
