"""bleu / sacrebleu against sacrebleu; rouge and the Porter stemmer against rouge_score / nltk."""
import random

import pytest
import sacrebleu
from rouge_score import rouge_scorer

from openformers.metrics import load
from openformers.metrics.porter import stem

VOCAB = ["the", "cat", "sat", "on", "mat", ".", ",", "3.5", "1,000", "-1", "é", "naïve", '"q"', "a&amp;b", "日本",
         "中文字", "！", "?", "(x)", "—", "€5", "don't", "U.S.", "x-ray", "ÅB"]


def _sentences(rng, n, max_len=14):
    return [" ".join(rng.choice(VOCAB) for _ in range(rng.randint(0, max_len))) for _ in range(n)]


@pytest.mark.parametrize("tokenize", ["13a", "none", "intl", "char", "zh"])
def test_sacrebleu_matches_reference(tokenize):
    rng = random.Random(tokenize)
    preds = _sentences(rng, 30)
    refs = [_sentences(rng, 2) for _ in preds]
    streams = [[r[i] for r in refs] for i in range(2)]
    metric = load("sacrebleu")
    for smooth in ("exp", "floor", "add-k", "none"):
        for lowercase in (False, True):
            for eff in (False, True):
                ref = sacrebleu.corpus_bleu(preds, streams, tokenize=tokenize, smooth_method=smooth,
                                            lowercase=lowercase, use_effective_order=eff)
                got = metric.compute(predictions=preds, references=refs, tokenize=tokenize, smooth_method=smooth,
                                     lowercase=lowercase, use_effective_order=eff)
                assert got["score"] == pytest.approx(ref.score, abs=1e-9)
                assert got["counts"] == ref.counts and got["totals"] == ref.totals
                assert got["precisions"] == pytest.approx(ref.precisions, abs=1e-9)
                assert (got["bp"], got["sys_len"], got["ref_len"]) == (pytest.approx(ref.bp, abs=1e-12), ref.sys_len, ref.ref_len)


def test_sacrebleu_edge_cases():
    metric = load("sacrebleu")
    got = metric.compute(predictions=["", ""], references=[["a b"], ["c"]])
    ref = sacrebleu.corpus_bleu(["", ""], [["a b", "c"]])
    assert got["score"] == ref.score == 0.0 and got["bp"] == ref.bp
    same = metric.compute(predictions=["Ünïcode text is fine here ?"], references=["Ünïcode text is fine here ?"])
    assert same["score"] == pytest.approx(100.0)
    assert set(same) == {"score", "counts", "totals", "precisions", "bp", "sys_len", "ref_len"}
    with pytest.raises(ValueError, match="tokenizer"):
        metric.compute(predictions=["a"], references=["a"], tokenize="ja-mecab-x")


def test_bleu_equals_unsmoothed_sacrebleu_with_single_references():
    # with one reference, evaluate's BLEU (shortest ref) and sacrebleu (closest ref) coincide
    rng = random.Random(7)
    preds = _sentences(rng, 40, 20)
    refs = _sentences(rng, 40, 20)
    got = load("bleu").compute(predictions=preds, references=refs)
    ref = sacrebleu.corpus_bleu(preds, [refs], smooth_method="none")
    assert got["bleu"] == pytest.approx(ref.score / 100, abs=1e-9)
    assert got["precisions"] == pytest.approx([p / 100 for p in ref.precisions], abs=1e-12)
    assert got["brevity_penalty"] == pytest.approx(ref.bp, abs=1e-12)
    assert (got["translation_length"], got["reference_length"]) == (ref.sys_len, ref.ref_len)
    assert got["length_ratio"] == pytest.approx(ref.sys_len / ref.ref_len)


def test_bleu_multi_reference_and_smoothing_by_hand():
    preds = ["the cat sat on the mat"]
    refs = [["the cat is on the mat", "a cat sat on the mat today"]]
    got = load("bleu").compute(predictions=preds, references=refs, max_order=2, smooth=True)
    # unigrams: 6 of 6 match (the x2 from ref 1); bigrams: the-cat, cat-sat, sat-on, on-the, the-mat = 5 of 5
    assert got["precisions"] == pytest.approx([7 / 7, 6 / 6])
    assert got["reference_length"] == 6 and got["translation_length"] == 6  # shortest reference
    assert got["bleu"] == pytest.approx(1.0) and got["brevity_penalty"] == 1.0
    empty = load("bleu").compute(predictions=[""], references=["a b"])
    assert empty["bleu"] == 0.0 and empty["brevity_penalty"] == 0.0


def test_porter_stemmer_matches_nltk():
    from nltk.stem.porter import PorterStemmer

    nltk_stemmer = PorterStemmer()
    words = ("caresses ponies ties caress cats feed agreed plastered bled motoring sing conflated troubled sized "
             "hopping tanned falling hissing fizzed failing filing happy sky skies relational conditional rational "
             "valenci hesitanci digitizer conformabli radicalli differentli vileli analogousli vietnamization "
             "predication operator feudalism decisiveness hopefulness callousness formaliti sensitiviti sensibiliti "
             "triplicate formative formalize electriciti electrical hopeful goodness revival allowance inference "
             "airliner gyroscopic adjustable defensible irritant replacement adjustment dependent adoption homologou "
             "communism activate angulariti homologous effective bowdlerize probate rate cease controll roll "
             "generously dying lying news innings howe proceeding exceeded syzygy enjoying crying spied died "
             "generalizations oscillators archaeology analogies ie flies eyed").split()
    assert [stem(w) for w in words] == [nltk_stemmer.stem(w) for w in words]


@pytest.mark.parametrize("use_stemmer", [False, True])
def test_rouge_matches_rouge_score(use_stemmer):
    rng = random.Random(int(use_stemmer))
    vocab = "The cats running quickly happiness organization relational a an to be is sat mat hopping 42 x-y Ünï".split()

    def text():
        lines = [" ".join(rng.choice(vocab) for _ in range(rng.randint(0, 10))) for _ in range(rng.randint(1, 3))]
        return "\n".join(lines)

    preds, refs = [text() for _ in range(40)], [text() for _ in range(40)]
    types = ["rouge1", "rouge2", "rouge3", "rougeL", "rougeLsum"]
    scorer = rouge_scorer.RougeScorer(types, use_stemmer=use_stemmer)
    expected = [scorer.score(r, p) for p, r in zip(preds, refs)]
    got = load("rouge").compute(predictions=preds, references=refs, rouge_types=types, use_aggregator=False,
                                use_stemmer=use_stemmer)
    for t in types:
        assert got[t] == pytest.approx([e[t].fmeasure for e in expected], abs=1e-12)
    agg = load("rouge").compute(predictions=preds, references=refs, use_stemmer=use_stemmer)
    assert set(agg) == {"rouge1", "rouge2", "rougeL", "rougeLsum"}
    for t in agg:
        assert agg[t] == pytest.approx(sum(e[t].fmeasure for e in expected) / len(expected), abs=1e-12)
    # several references: the best one per prediction, as rouge_score's score_multi
    multi_refs = [[r, p[: len(p) // 2]] for p, r in zip(preds, refs)]
    got = load("rouge").compute(predictions=preds, references=multi_refs, use_aggregator=False, use_stemmer=use_stemmer)
    for i, (p, rs) in enumerate(zip(preds, multi_refs)):
        best = scorer.score_multi(rs, p)
        for t in got:
            assert got[t][i] == pytest.approx(best[t].fmeasure, abs=1e-12)


def test_rouge_errors():
    with pytest.raises(ValueError, match="invalid rouge type"):
        load("rouge").compute(predictions=["a"], references=["a"], rouge_types=["rougeX"])
    with pytest.raises(ValueError, match="mismatch"):
        load("rouge").compute(predictions=["a", "b"], references=["a"])


def test_tokenizers_match_sacrebleu_strings():
    from sacrebleu.tokenizers.tokenizer_13a import Tokenizer13a
    from sacrebleu.tokenizers.tokenizer_intl import TokenizerV14International
    from sacrebleu.tokenizers.tokenizer_zh import TokenizerZh

    from openformers.metrics.bleu_tokenizers import tokenize_13a, tokenize_intl, tokenize_zh

    lines = ["Hello, world... 1,000.5 -3 a-b 3-4", "“Quoted”—dash…!?", "x..y,,z 2.. .5", "a&quot;b&lt;c &amp; d",
             "価格は€5です。中文，测试！ＡＢＣ", "¿Qué? ¡Sí! (ok) [x] {y} <z>", "e.g. U.S.A. 12:30 $4 100%", "\u2001\u2a6d\u2fa1"]
    for line in lines:
        assert tokenize_13a(line) == Tokenizer13a()(line)
        assert tokenize_intl(line) == TokenizerV14International()(line)
        assert tokenize_zh(line) == TokenizerZh()(line)


def test_bleu_pretokenized_and_glue():
    from openformers.metrics import load_metric

    bleu = load_metric("bleu")
    tokens = load("bleu").compute(predictions=[["the", "cat", "sat", "on", "the", "mat"]],
                                  references=[[["the", "cat", "sat", "on", "the", "mat"], ["a", "cat"]]])
    text = bleu.compute(predictions=["the cat sat on the mat"], references=[["the cat sat on the mat", "a cat"]])
    assert tokens == text and tokens["bleu"] == pytest.approx(1.0)
    with pytest.raises(TypeError, match="token lists"):
        bleu.compute(predictions=[["a"]], references=["a"])


@pytest.mark.parametrize("kw", [{}, {"word_order": 2}, {"lowercase": True, "whitespace": True},
                                {"eps_smoothing": True, "char_order": 3, "beta": 1}])
def test_chrf_matches_sacrebleu(kw):
    from sacrebleu.metrics import CHRF

    rng = random.Random(str(kw))
    preds = _sentences(rng, 25) + [""]
    refs = [_sentences(rng, 2) for _ in preds]
    ref = CHRF(**kw).corpus_score(preds, [[r[i] for r in refs] for i in range(2)])
    got = load("chrf").compute(predictions=preds, references=refs, **kw)
    assert got["score"] == pytest.approx(ref.score, abs=1e-9)
    assert (got["char_order"], got["word_order"], got["beta"]) == (ref.char_order, ref.word_order, ref.beta)


def test_sacrebleu_force_warning():
    preds = ["a tokenized sentence ."] * 100
    with pytest.warns(UserWarning, match="force=True"):
        load("sacrebleu").compute(predictions=preds, references=preds)
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        load("sacrebleu").compute(predictions=preds, references=preds, force=True)


def test_google_bleu_matches_nltk():
    from nltk.translate.gleu_score import corpus_gleu
    from sacrebleu.tokenizers.tokenizer_13a import Tokenizer13a

    tok = Tokenizer13a()
    rng = random.Random(11)
    preds = _sentences(rng, 30) + [""]
    refs = [_sentences(rng, 2) for _ in preds]
    expected = corpus_gleu([[tok(r).split() for r in rs] for rs in refs], [tok(p).split() for p in preds])
    got = load("google_bleu").compute(predictions=preds, references=refs)
    assert got == {"google_bleu": pytest.approx(expected, abs=1e-12)}
    expected = corpus_gleu([[tok(r).split() for r in rs] for rs in refs], [tok(p).split() for p in preds], min_len=2, max_len=3)
    assert load("google_bleu").compute(predictions=preds, references=refs, min_len=2, max_len=3)["google_bleu"] == pytest.approx(expected, abs=1e-12)
