"""``question-answering``: extract the answer to a question as a character span of the context."""
from __future__ import annotations

from typing import Any

import numpy as np
import torch

from .base import Pipeline


PADDINGS = (False, True, "do_not_pad", "longest", "max_length")


def best_spans(start: np.ndarray, end: np.ndarray, allowed: np.ndarray, top_k: int,
               max_answer_len: int) -> list[tuple[int, int, float]]:
    """The ``top_k`` spans (start token, end token, p_start * p_end) with start <= end < start + max_answer_len,
    both ends on allowed tokens, best first."""
    scores = np.outer(start, end)
    scores = np.tril(np.triu(scores), max_answer_len - 1)
    keep = allowed[:, None] & allowed[None, :]
    keep &= np.tril(np.triu(np.ones_like(keep)), max_answer_len - 1)
    flat = np.where(keep, scores, -1.0).ravel()
    k = min(top_k, int(keep.sum()))
    if k <= 0:
        return []
    idx = np.argpartition(-flat, k - 1)[:k] if k < flat.size else np.arange(flat.size)
    idx = idx[np.argsort(-flat[idx], kind="stable")][:k]
    n = scores.shape[1]
    return [(int(i // n), int(i % n), float(flat[i])) for i in idx]


class QuestionAnsweringPipeline(Pipeline):
    """Extractive question answering with a model that has start/end logits per token.

    The context is split into windows of ``max_seq_len`` tokens overlapping by ``doc_stride``
    tokens. In each window the start and end logits are turned into probabilities with a softmax
    over the context tokens (and the CLS token), and a span scores ``p_start * p_end``; spans
    longer than ``max_answer_len`` tokens are not considered. The ``top_k`` best spans over all
    windows are returned as ``{"score", "start", "end", "answer"}`` (character offsets in the
    context; with ``align_to_words`` the span is widened to whole words). With
    ``handle_impossible_answer=True`` the "no answer" candidate (``p_start[CLS] * p_end[CLS]``,
    lowest over the windows) competes as ``{"answer": "", "start": 0, "end": 0}``. The same span
    found in two overlapping windows is reported once, with its best score.
    """

    task = "question-answering"
    chunked = True
    token_outputs = ("start_logits", "end_logits")

    def _sanitize_parameters(self, top_k: int | None = None, doc_stride: int | None = None,
                             max_answer_len: int | None = None, max_seq_len: int | None = None,
                             max_question_len: int | None = None, handle_impossible_answer: bool | None = None,
                             align_to_words: bool | None = None, topk: int | None = None, padding: Any = None,
                             **kwargs: Any) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
        self._unknown_kwargs(kwargs)
        pre: dict[str, Any] = {}
        if padding is not None:
            # windows of a batch are padded to the longest anyway; "max_length" pads each to max_seq_len
            if padding not in PADDINGS:
                raise ValueError(f"padding={padding!r} is not one of {sorted(map(str, PADDINGS))}")
            pre["padding"] = padding
        if doc_stride is not None:
            pre["doc_stride"] = doc_stride
        if max_seq_len is not None:
            pre["max_seq_len"] = max_seq_len
        if max_question_len is not None:
            pre["max_question_len"] = max_question_len
        post: dict[str, Any] = {}
        top_k = top_k if top_k is not None else topk
        if top_k is not None:
            if not isinstance(top_k, int) or top_k < 1:
                raise ValueError(f"top_k must be a positive int, got {top_k!r}")
            post["top_k"] = top_k
        if max_answer_len is not None:
            if max_answer_len < 1:
                raise ValueError(f"max_answer_len must be >= 1, got {max_answer_len}")
            post["max_answer_len"] = max_answer_len
        if handle_impossible_answer is not None:
            post["handle_impossible_answer"] = bool(handle_impossible_answer)
        if align_to_words is not None:
            post["align_to_words"] = bool(align_to_words)
        return pre, {}, post

    def __call__(self, *args: Any, question: Any = None, context: Any = None, **kwargs: Any) -> Any:
        if args and (question is not None or context is not None):
            raise ValueError("give the input either positionally or as question=/context=, not both")
        if args:
            if len(args) != 1:
                raise ValueError("give one input: {'question': ..., 'context': ...} or a list of them")
            inputs = args[0]
        elif question is None or context is None:
            raise ValueError("question answering needs both question= and context=")
        elif isinstance(question, str) and isinstance(context, str):
            inputs = {"question": question, "context": context}
        else:
            qs = [question] * len(context) if isinstance(question, str) else list(question)
            cs = [context] * len(qs) if isinstance(context, str) else list(context)
            if len(qs) != len(cs):
                raise ValueError(f"got {len(qs)} questions and {len(cs)} contexts; give as many of each")
            inputs = [{"question": q, "context": c} for q, c in zip(qs, cs)]
        return super().__call__(inputs, **kwargs)

    def _limits(self, max_seq_len: int | None, doc_stride: int | None) -> tuple[int, int]:
        max_seq_len = max_seq_len or min(int(self.tokenizer.model_max_length), 384)
        doc_stride = min(max_seq_len // 2, 128) if doc_stride is None else doc_stride
        if doc_stride >= max_seq_len:
            raise ValueError(f"doc_stride ({doc_stride}) must be smaller than max_seq_len ({max_seq_len})")
        return max_seq_len, doc_stride

    def preprocess(self, item: Any, doc_stride: int | None = None, max_seq_len: int | None = None,
                   max_question_len: int = 64, padding: Any = "do_not_pad") -> list[dict[str, Any]]:
        if not isinstance(item, dict) or "question" not in item or "context" not in item:
            raise ValueError("each question-answering input is a dict {'question': ..., 'context': ...}")
        question, context = item["question"], item["context"]
        if not isinstance(question, str) or not question.strip():
            raise ValueError("the question is empty; give a non-empty string")
        if not isinstance(context, str) or not context.strip():
            raise ValueError("the context is empty; give a non-empty string")
        max_seq_len, doc_stride = self._limits(max_seq_len, doc_stride)
        q = self.tokenizer(question, add_special_tokens=False, return_offsets_mapping=True)
        if len(q["input_ids"]) > max_question_len:
            question = question[:q["offset_mapping"][max_question_len - 1][1]]
            n_question = max_question_len
        else:
            n_question = len(q["input_ids"])
        question_first = self.tokenizer.padding_side == "right"
        room = max_seq_len - n_question - self.tokenizer.num_special_tokens_to_add(pair=True)
        if room <= 0:
            raise ValueError(f"the question ({n_question} tokens) leaves no room for the context in max_seq_len="
                             f"{max_seq_len} tokens; raise max_seq_len or shorten the question (max_question_len)")
        if doc_stride >= room:
            raise ValueError(f"doc_stride={doc_stride} must be smaller than the context room of a window "
                             f"({room} tokens = max_seq_len {max_seq_len} - question - special tokens); lower doc_stride "
                             f"or raise max_seq_len")
        first, second = (question, context) if question_first else (context, question)
        enc = self.tokenizer(first, second, truncation="only_second" if question_first else "only_first",
                             max_length=max_seq_len, stride=doc_stride, return_overflowing_tokens=True,
                             return_offsets_mapping=True, padding="max_length" if padding == "max_length" else False)
        context_seq = 1 if question_first else 0
        cls_id = self.tokenizer.cls_token_id
        feats = []
        for i in range(len(enc["input_ids"])):
            ids = enc["input_ids"][i]
            seq_ids = enc.sequence_ids(i)
            is_context = np.array([s == context_seq for s in seq_ids])
            cls_index = ids.index(cls_id) if cls_id is not None and cls_id in ids else 0
            feat = {k: enc[k][i] for k in ("input_ids", "attention_mask", "token_type_ids") if k in enc.data}
            feat.update(is_context=is_context, cls_index=cls_index, encoding=enc[i], context=context,
                        context_seq=context_seq)
            feats.append(feat)
        return feats

    def _forward(self, model_inputs: dict[str, torch.Tensor]) -> dict[str, Any]:
        out = self.model(**model_inputs)
        return {"start_logits": out.start_logits, "end_logits": out.end_logits}

    @staticmethod
    def _probabilities(logits: np.ndarray, allowed: np.ndarray) -> np.ndarray:
        x = np.where(allowed, logits, -10000.0)
        e = np.exp(x - x.max())
        return e / e.sum()

    def postprocess(self, outputs: list[dict[str, Any]], top_k: int = 1, max_answer_len: int = 15,
                    handle_impossible_answer: bool = False, align_to_words: bool = True) -> Any:
        best: dict[tuple[int, int], dict[str, Any]] = {}
        null_score = 1.0
        for out in outputs:
            allowed = out["is_context"].copy()
            cls = out["cls_index"]
            softmax_over = allowed.copy()
            softmax_over[cls] = True  # the CLS token takes part in the softmax ("no answer")
            p_start = self._probabilities(out["start_logits"].float().numpy(), softmax_over)
            p_end = self._probabilities(out["end_logits"].float().numpy(), softmax_over)
            null_score = min(null_score, float(p_start[cls] * p_end[cls]))
            enc, seq, context = out["encoding"], out["context_seq"], out["context"]
            for s, e, score in best_spans(p_start, p_end, allowed, top_k, max_answer_len):
                start_char, end_char = enc.offsets[s][0], enc.offsets[e][1]
                if align_to_words:
                    ws, we = enc.token_to_word(s), enc.token_to_word(e)
                    if ws is not None and we is not None:
                        start_char = enc.word_to_chars(ws, seq)[0]
                        end_char = enc.word_to_chars(we, seq)[1]
                key = (start_char, end_char)
                if key not in best or best[key]["score"] < score:
                    best[key] = {"score": score, "start": start_char, "end": end_char,
                                 "answer": context[start_char:end_char]}
        answers = list(best.values())
        if handle_impossible_answer:
            answers.append({"score": null_score, "start": 0, "end": 0, "answer": ""})
        answers = sorted(answers, key=lambda a: a["score"], reverse=True)[:top_k]
        if not answers:
            return {"score": 0.0, "start": 0, "end": 0, "answer": ""} if top_k == 1 else []
        return answers[0] if len(answers) == 1 else answers
