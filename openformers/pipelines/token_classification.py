"""``token-classification`` (alias ``ner``): a label for each token, optionally grouped into entities."""
from __future__ import annotations

from typing import Any

import numpy as np
import torch

from .base import Pipeline

STRATEGIES = ("none", "simple", "first", "average", "max")


def _split_tag(label: str) -> tuple[str, str]:
    """``"B-PER"`` -> ("B", "PER"); ``"I-PER"`` and plain ``"PER"`` -> ("I", "PER")."""
    if label.startswith("B-"):
        return "B", label[2:]
    if label.startswith("I-"):
        return "I", label[2:]
    return "I", label


class TokenClassificationPipeline(Pipeline):
    """Label tokens (named entities, parts of speech) with a token-classification model.

    ``aggregation_strategy``: ``"none"`` gives one result per token (``entity``, ``score``,
    ``index``, ``word``, ``start``, ``end``); ``"simple"`` groups adjacent tokens with the same tag;
    ``"first"``, ``"average"`` and ``"max"`` first make every word take one label (from its first
    sub-token, the mean scores, or the most confident sub-token) and then group. Grouped results
    have ``entity_group``, ``score``, ``word`` (cut from the original text), ``start`` and ``end``.
    ``ignore_labels`` (default ``["O"]``) are dropped. ``stride`` splits texts longer than the
    tokenizer's ``model_max_length`` into overlapping windows.
    """

    task = "token-classification"
    chunked = True
    token_outputs = ("logits",)

    def _sanitize_parameters(self, ignore_labels: list[str] | None = None, aggregation_strategy: Any = None,
                             stride: int | None = None, is_split_into_words: bool = False,
                             delimiter: str | None = None, offset_mapping: Any = None,
                             grouped_entities: bool | None = None, ignore_subwords: bool | None = None,
                             **kwargs: Any) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
        self._unknown_kwargs(kwargs)
        if aggregation_strategy is None and (grouped_entities or ignore_subwords):
            # the reference's older spelling: grouped_entities -> "simple", with ignore_subwords -> "first"
            aggregation_strategy = "first" if ignore_subwords else "simple"
        pre: dict[str, Any] = {"is_split_into_words": is_split_into_words}
        if is_split_into_words:
            pre["delimiter"] = " " if delimiter is None else delimiter
        if offset_mapping is not None:
            pre["offset_mapping"] = offset_mapping
        post: dict[str, Any] = {}
        if aggregation_strategy is not None:
            name = str(getattr(aggregation_strategy, "value", aggregation_strategy)).lower()
            if name not in STRATEGIES:
                raise ValueError(f"aggregation_strategy must be one of {list(STRATEGIES)}, got {aggregation_strategy!r}")
            post["aggregation_strategy"] = name
        if ignore_labels is not None:
            post["ignore_labels"] = list(ignore_labels)
        if stride is not None:
            if stride >= self.tokenizer.model_max_length:
                raise ValueError(f"stride={stride} must be smaller than tokenizer.model_max_length "
                                 f"({self.tokenizer.model_max_length}) minus the special tokens")
            if post.get("aggregation_strategy", "none") == "none":
                raise ValueError('stride splits long texts in windows whose entities are merged; that needs '
                                 'aggregation_strategy="simple", "first", "average" or "max", not "none"')
            pre["stride"] = stride
        return pre, {}, post

    def __call__(self, inputs: Any = None, *args: Any, **kwargs: Any) -> Any:
        split = kwargs.get("is_split_into_words", self._preprocess_params.get("is_split_into_words", False))
        if split and isinstance(inputs, (list, tuple)) and inputs and all(isinstance(w, str) for w in inputs):
            return super().__call__([list(inputs)], *args, **kwargs)  # a batch of one, as transformers
        return super().__call__(inputs, *args, **kwargs)

    def preprocess(self, sentence: Any, is_split_into_words: bool = False, delimiter: str = " ",
                   stride: int | None = None, offset_mapping: Any = None) -> list[dict[str, Any]]:
        word_chars = None
        if is_split_into_words:
            if not isinstance(sentence, (list, tuple)) or not all(isinstance(w, str) for w in sentence):
                raise ValueError("with is_split_into_words=True each input is a list of words (strings)")
            words = list(sentence)
            sentence = delimiter.join(words)
            word_chars, pos = [], 0
            for w in words:
                word_chars.append(pos)
                pos += len(w) + len(delimiter)
            text: Any = words
        else:
            if not isinstance(sentence, str):
                raise ValueError(f"token classification takes a string (or words with is_split_into_words=True), "
                                 f"got {type(sentence).__name__}")
            if not sentence:
                raise ValueError("the input text is an empty string; give at least one character")
            text = sentence
        kwargs: dict[str, Any] = dict(truncation=True, return_special_tokens_mask=True, return_offsets_mapping=True,
                                      is_split_into_words=is_split_into_words)
        if stride is not None:
            kwargs.update(return_overflowing_tokens=True, stride=stride)
        enc = self.tokenizer(text, **kwargs)
        n = len(enc["input_ids"]) if stride is not None else 1
        features = []
        for i in range(n):
            feat = {k: (enc[k][i] if stride is not None else enc[k]) for k in enc.data if k != "overflow_to_sample_mapping"}
            if offset_mapping is not None:
                feat["offset_mapping"] = offset_mapping
            feat["sentence"] = sentence
            if word_chars is not None:
                feat["word_ids"] = enc.word_ids(i)
                feat["word_chars"] = word_chars
            features.append(feat)
        return features

    def _forward(self, model_inputs: dict[str, torch.Tensor]) -> dict[str, Any]:
        return {"logits": self.model(**model_inputs).logits}

    def postprocess(self, outputs: list[dict[str, Any]], aggregation_strategy: str = "none",
                    ignore_labels: list[str] | None = None) -> list[dict[str, Any]]:
        ignore = ["O"] if ignore_labels is None else ignore_labels
        entities: list[dict[str, Any]] = []
        for out in outputs:
            logits = out["logits"].float().numpy()
            e = np.exp(logits - logits.max(axis=-1, keepdims=True))
            scores = e / e.sum(axis=-1, keepdims=True)
            pre = self._pre_entities(out, scores, aggregation_strategy)
            for ent in self._aggregate(pre, aggregation_strategy, out["sentence"]):
                if ent.get("entity", ent.get("entity_group")) not in ignore:
                    entities.append(ent)
        if len(outputs) > 1:
            entities = self._merge_windows(entities)
        return entities

    def _pre_entities(self, out: dict[str, Any], scores: np.ndarray, strategy: str) -> list[dict[str, Any]]:
        sentence = out["sentence"]
        ids = [int(i) for i in out["input_ids"]]
        special = out["special_tokens_mask"]
        offsets = out.get("offset_mapping")
        word_ids, word_chars = out.get("word_ids"), out.get("word_chars")
        model = getattr(self.tokenizer.backend_tokenizer, "model", None)
        has_prefix = bool(getattr(model, "continuing_subword_prefix", None))
        unk = self.tokenizer.unk_token_id
        pre = []
        for idx, token_scores in enumerate(scores):
            if special[idx]:
                continue
            word = self.tokenizer.convert_ids_to_tokens(ids[idx])
            if offsets is not None:
                start, end = (int(x) for x in offsets[idx])
                if word_ids is not None and word_ids[idx] is not None:
                    start += word_chars[word_ids[idx]]
                    end += word_chars[word_ids[idx]]
                ref = sentence[start:end]
                if has_prefix:
                    is_subword = len(word) != len(ref)
                else:  # byte-level BPE and friends: a token glued to the previous character
                    is_subword = start > 0 and " " not in sentence[start - 1:start + 1]
                if ids[idx] == unk:
                    word, is_subword = ref, False
            else:
                start = end = None
                is_subword = False
            pre.append({"word": word, "scores": token_scores, "start": start, "end": end, "index": idx,
                        "is_subword": is_subword})
        return pre

    def _aggregate(self, pre: list[dict[str, Any]], strategy: str, sentence: str) -> list[dict[str, Any]]:
        id2label = self.model.config.id2label
        if strategy in ("none", "simple"):
            entities = []
            for p in pre:
                best = int(p["scores"].argmax())
                entities.append({"entity": id2label[best], "score": float(p["scores"][best]), "index": p["index"],
                                 "word": p["word"], "start": p["start"], "end": p["end"]})
            if strategy == "none":
                return entities
        else:
            entities = [self._aggregate_word(group, strategy, sentence) for group in self._words(pre)]
        return self._group(entities, sentence)

    @staticmethod
    def _words(pre: list[dict[str, Any]]) -> list[list[dict[str, Any]]]:
        groups: list[list[dict[str, Any]]] = []
        for p in pre:
            if groups and p["is_subword"]:
                groups[-1].append(p)
            else:
                groups.append([p])
        return groups

    def _text(self, tokens: list[dict[str, Any]], sentence: str) -> str:
        start, end = tokens[0]["start"], tokens[-1]["end"]
        if start is None or end is None:
            return self.tokenizer.convert_tokens_to_string([t["word"] for t in tokens])
        return sentence[start:end]

    def _aggregate_word(self, tokens: list[dict[str, Any]], strategy: str, sentence: str) -> dict[str, Any]:
        if strategy == "first":
            scores = tokens[0]["scores"]
        elif strategy == "max":
            scores = max(tokens, key=lambda t: t["scores"].max())["scores"]
        else:  # average
            scores = np.nanmean(np.stack([t["scores"] for t in tokens]), axis=0)
        best = int(scores.argmax())
        return {"entity": self.model.config.id2label[best], "score": float(scores[best]),
                "word": self._text(tokens, sentence), "start": tokens[0]["start"], "end": tokens[-1]["end"]}

    def _group(self, entities: list[dict[str, Any]], sentence: str) -> list[dict[str, Any]]:
        groups: list[list[dict[str, Any]]] = []
        for ent in entities:
            if groups:
                bi, tag = _split_tag(ent["entity"])
                _, last_tag = _split_tag(groups[-1][-1]["entity"])
                if tag == last_tag and bi != "B":
                    groups[-1].append(ent)
                    continue
            groups.append([ent])
        return [{"entity_group": g[0]["entity"].split("-", 1)[-1],
                 "score": float(np.nanmean([e["score"] for e in g])),
                 "word": self._text(g, sentence), "start": g[0]["start"], "end": g[-1]["end"]} for g in groups]

    @staticmethod
    def _merge_windows(entities: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Entities seen in several overlapping windows: keep the longest (then the most confident)."""
        if not entities:
            return entities
        entities = sorted(entities, key=lambda e: e["start"])
        merged, prev = [], entities[0]
        for ent in entities[1:]:
            if prev["start"] <= ent["start"] < prev["end"]:
                n, m = ent["end"] - ent["start"], prev["end"] - prev["start"]
                if n > m or (n == m and ent["score"] > prev["score"]):
                    prev = ent
            else:
                merged.append(prev)
                prev = ent
        merged.append(prev)
        return merged
