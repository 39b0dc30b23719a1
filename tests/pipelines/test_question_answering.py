"""question-answering against a direct computation of the classic span-scoring algorithm.

transformers 5 has no question-answering pipeline, so the reference is written out here with
plain loops over the transformers model's logits: windows of max_seq_len tokens overlapping by
doc_stride, a softmax of start and end logits over the context tokens plus CLS, span score
p_start * p_end for start <= end < start + max_answer_len, the "no answer" score
p_start[CLS] * p_end[CLS] (lowest over windows), spans widened to whole words.
"""
from __future__ import annotations

import math

import pytest
import torch

from openformers import pipeline

from .helpers import assert_same

CONTEXT = ("The Eiffel Tower is a wrought-iron lattice tower on the Champ de Mars in Paris, France. It is named "
           "after the engineer Gustave Eiffel, whose company designed and built the tower from 1887 to 1889. "
           "Locally nicknamed La dame de fer, it was constructed as the centerpiece of the 1889 World's Fair.")
QUESTIONS = ["Who designed the tower?", "When was it built?", "Where is the Eiffel Tower?"]


def reference(model, tok, question, context, top_k=1, max_answer_len=15, max_seq_len=384, doc_stride=128,
              handle_impossible_answer=False, padding=None):  # padding changes no answer
    enc = tok(question, context, truncation="only_second", max_length=max_seq_len, stride=doc_stride,
              return_overflowing_tokens=True, return_offsets_mapping=True)
    candidates, null = {}, math.inf
    for w in range(len(enc["input_ids"])):
        ids = enc["input_ids"][w]
        with torch.no_grad():
            out = model(input_ids=torch.tensor([ids]), attention_mask=torch.tensor([enc["attention_mask"][w]]),
                        token_type_ids=torch.tensor([enc["token_type_ids"][w]]))
        seq = enc.sequence_ids(w)
        ctx = [i for i, s in enumerate(seq) if s == 1]
        cls = ids.index(tok.cls_token_id)
        pool = ctx + [cls]

        def probs(logits):
            vals = [float(logits[i]) for i in pool]
            m = max(vals)
            z = sum(math.exp(v - m) for v in vals)
            return {i: math.exp(float(logits[i]) - m) / z for i in pool}

        ps, pe = probs(out.start_logits[0]), probs(out.end_logits[0])
        null = min(null, ps[cls] * pe[cls])
        e_w = enc.encodings[w]
        for s in ctx:
            for e in ctx:
                if s <= e < s + max_answer_len:
                    a = e_w.word_to_chars(e_w.token_to_word(s), 1)[0]
                    b = e_w.word_to_chars(e_w.token_to_word(e), 1)[1]
                    score = ps[s] * pe[e]
                    if candidates.get((a, b), -1) < score:
                        candidates[(a, b)] = score
    answers = [{"score": sc, "start": a, "end": b, "answer": context[a:b]} for (a, b), sc in candidates.items()]
    if handle_impossible_answer:
        answers.append({"score": null, "start": 0, "end": 0, "answer": ""})
    answers = sorted(answers, key=lambda x: x["score"], reverse=True)[:top_k]
    return answers[0] if len(answers) == 1 else answers


@pytest.fixture(scope="module")
def setup(tiny_dirs):
    import transformers

    model = transformers.AutoModelForQuestionAnswering.from_pretrained(str(tiny_dirs["qa"])).eval()
    tok = transformers.AutoTokenizer.from_pretrained(str(tiny_dirs["qa"]))
    return pipeline("question-answering", model=str(tiny_dirs["qa"])), model, tok


@pytest.mark.parametrize("kwargs", [{}, {"top_k": 3}, {"max_answer_len": 3, "top_k": 2},
                                    {"handle_impossible_answer": True, "top_k": 2},
                                    {"max_seq_len": 32, "doc_stride": 8, "top_k": 3},
                                    {"max_seq_len": 40, "doc_stride": 16, "handle_impossible_answer": True},
                                    {"max_seq_len": 40, "doc_stride": 16, "padding": "max_length", "top_k": 2},
                                    {"padding": "longest"}])
def test_against_reference(setup, kwargs):
    qa, model, tok = setup
    expected = [reference(model, tok, q, CONTEXT, **kwargs) for q in QUESTIONS]
    assert_same(qa(question=QUESTIONS[0], context=CONTEXT, **kwargs), expected[0], atol=1e-5)
    assert_same(qa({"question": QUESTIONS[1], "context": CONTEXT}, **kwargs), expected[1], atol=1e-5)
    for bs in (1, 4):
        assert_same(qa(question=QUESTIONS, context=CONTEXT, batch_size=bs, **kwargs), expected, atol=1e-5)
        batch = [{"question": q, "context": CONTEXT} for q in QUESTIONS]
        assert_same(qa(batch, batch_size=bs, **kwargs), expected, atol=1e-5)


def test_answers_are_context_spans(setup):
    qa, _, _ = setup
    for ans in qa(question=QUESTIONS[0], context=CONTEXT, top_k=5, max_seq_len=32, doc_stride=8):
        assert ans["answer"] == CONTEXT[ans["start"]:ans["end"]] and ans["answer"]


def test_max_question_len(setup):
    qa, model, tok = setup
    long_q = "who " * 30 + "designed the tower?"
    short_q = " ".join(long_q.split()[:10])
    assert_same(qa(question=long_q, context=CONTEXT, max_question_len=10), qa(question=short_q, context=CONTEXT))


def test_errors(setup):
    qa, _, _ = setup
    with pytest.raises(ValueError, match="question is empty"):
        qa(question="", context=CONTEXT)
    with pytest.raises(ValueError, match="context is empty"):
        qa(question="why?", context="  ")
    with pytest.raises(ValueError, match="no room for the context"):
        qa(question="word " * 40, context=CONTEXT, max_seq_len=30, max_question_len=64)
    with pytest.raises(ValueError, match="doc_stride"):
        qa(question="why?", context=CONTEXT, max_seq_len=32, doc_stride=40)
    with pytest.raises(ValueError, match="padding='left'"):
        qa(question="why?", context=CONTEXT, padding="left")
    with pytest.raises(ValueError, match="both question= and context="):
        qa(question="why?")


def test_padding_max_length_pads_every_window(setup):
    qa, _, _ = setup
    item = {"question": QUESTIONS[0], "context": CONTEXT}
    padded = qa.preprocess(item, max_seq_len=40, doc_stride=16, padding="max_length")
    plain = qa.preprocess(item, max_seq_len=40, doc_stride=16)
    assert len(padded) == len(plain) > 1
    assert {len(f["input_ids"]) for f in padded} == {40} and min(len(f["input_ids"]) for f in plain) < 40
