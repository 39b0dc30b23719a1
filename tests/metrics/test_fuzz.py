"""Property checks on arbitrary unicode text against the reference packages (few examples, fast)."""
import jiwer
import pytest
import sacrebleu
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from rouge_score import rouge_scorer

from openformers.metrics import load

# words from a mixed alphabet, joined by assorted (unicode) whitespace
WORD = st.text(alphabet=st.sampled_from(list("abcAB1.,-!é日中\"'&;€")), min_size=1, max_size=5)
SEP = st.sampled_from([" ", "  ", "\t", "\u00a0", "\n", " \u3000 "])
TEXT = st.builds(lambda ws, s: s.join(ws), st.lists(WORD, max_size=8), SEP)
FAST = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@FAST
@given(st.lists(st.tuples(TEXT, TEXT), min_size=1, max_size=4))
def test_wer_cer_fuzz(pairs):
    preds, refs = [p for p, _ in pairs], [r for _, r in pairs]
    transform = jiwer.Compose([jiwer.RemoveMultipleSpaces(), jiwer.Strip(), jiwer.ReduceToListOfListOfWords()])
    if sum(len(transform([r])[0]) for r in refs) == 0:
        with pytest.raises(ValueError):
            load("wer").compute(predictions=preds, references=refs)
        return
    expected = jiwer.wer(refs, preds, reference_transform=transform, hypothesis_transform=transform)
    assert load("wer").compute(predictions=preds, references=refs) == pytest.approx(expected, abs=1e-12)


@FAST
@given(st.lists(st.tuples(TEXT, TEXT, TEXT), min_size=1, max_size=4), st.sampled_from(["13a", "intl", "zh", "char"]))
def test_sacrebleu_fuzz(rows, tokenize):
    preds = [r[0] for r in rows]
    refs = [[r[1], r[2]] for r in rows]
    ref = sacrebleu.corpus_bleu(preds, [[r[0] for r in refs], [r[1] for r in refs]], tokenize=tokenize)
    got = load("sacrebleu").compute(predictions=preds, references=refs, tokenize=tokenize)
    assert got["score"] == pytest.approx(ref.score, abs=1e-9)
    assert (got["counts"], got["totals"], got["sys_len"], got["ref_len"]) == (ref.counts, ref.totals, ref.sys_len, ref.ref_len)


@FAST
@given(st.lists(st.tuples(TEXT, TEXT), min_size=1, max_size=3))
def test_rouge_fuzz(pairs):
    preds, refs = [p for p, _ in pairs], [r for _, r in pairs]
    scorer = rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL", "rougeLsum"], use_stemmer=True)
    got = load("rouge").compute(predictions=preds, references=refs, use_aggregator=False, use_stemmer=True)
    for i, (p, r) in enumerate(pairs):
        expected = scorer.score(r, p)
        for key, values in got.items():
            assert values[i] == pytest.approx(expected[key].fmeasure, abs=1e-12)
