"""seqeval metric against the seqeval package's classification_report."""
import random
import warnings

import pytest
from seqeval import scheme as seqeval_schemes
from seqeval.metrics import accuracy_score, classification_report

from openformers.metrics import load

TAGSETS = {
    None: "O B-PER I-PER B-LOC I-LOC I-MISC E-PER S-LOC".split(),  # ill-formed mixes for the default mode
    "IOB1": "O I-PER B-PER I-LOC B-LOC".split(),
    "IOB2": "O B-PER I-PER B-LOC I-LOC".split(),
    "IOE1": "O I-A E-A I-B E-B".split(),
    "IOE2": "O I-A E-A I-B E-B".split(),
    "IOBES": "O B-PER I-PER E-PER S-PER B-LOC E-LOC S-LOC".split(),
    "BILOU": "O B-PER I-PER L-PER U-PER U-LOC".split(),
}


def _expected(preds, refs, **kw):
    if "scheme" in kw:
        kw["scheme"] = getattr(seqeval_schemes, kw["scheme"])
    report = classification_report(refs, preds, output_dict=True, **kw)
    for key in ("macro avg", "weighted avg"):
        report.pop(key)
    overall = report.pop("micro avg")
    out = {t: {"precision": v["precision"], "recall": v["recall"], "f1": v["f1-score"], "number": v["support"]}
           for t, v in report.items()}
    out.update(overall_precision=overall["precision"], overall_recall=overall["recall"],
               overall_f1=overall["f1-score"], overall_accuracy=accuracy_score(refs, preds))
    return out


@pytest.mark.parametrize("scheme", list(TAGSETS))
def test_seqeval_matches_reference(scheme):
    rng = random.Random(str(scheme))
    tags = TAGSETS[scheme]
    metric = load("seqeval")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for _ in range(25):
            refs = [[rng.choice(tags) for _ in range(rng.randint(1, 8))] for _ in range(rng.randint(1, 4))]
            preds = [[rng.choice(tags) for _ in r] for r in refs]
            for zd in ("warn", 1):
                assert metric.compute(predictions=preds, references=refs, zero_division=zd) == _expected(
                    preds, refs, zero_division=zd)
                if scheme:
                    got = metric.compute(predictions=preds, references=refs, mode="strict", scheme=scheme, zero_division=zd)
                    assert got == _expected(preds, refs, mode="strict", scheme=scheme, zero_division=zd)


@pytest.mark.filterwarnings("ignore")
def test_seqeval_suffix_autodetect_and_edges():
    refs = [["PER-B", "PER-I", "O", "LOC-B"], ["O", "MISC-B"]]
    preds = [["PER-B", "PER-I", "O", "LOC-I"], ["O", "O"]]
    got = load("seqeval").compute(predictions=preds, references=refs, suffix=True)
    assert got == _expected(preds, refs, suffix=True)
    iobes_refs = [["B-X", "E-X", "S-Y", "O"]]
    iobes_preds = [["B-X", "E-X", "S-X", "O"]]
    got = load("seqeval").compute(predictions=iobes_preds, references=iobes_refs, mode="strict")  # detects IOBES
    assert got == _expected(iobes_preds, iobes_refs, mode="strict")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        all_o = load("seqeval").compute(predictions=[["O", "O"]], references=[["O", "O"]])
        assert all_o == _expected([["O", "O"]], [["O", "O"]]) and all_o["overall_accuracy"] == 1.0
    with pytest.raises(ValueError, match="tags"):
        load("seqeval").compute(predictions=[["O"]], references=[["O", "B-X"]])
    with pytest.raises(ValueError, match="invalid token"):
        load("seqeval").compute(predictions=[["B-X"]], references=[["E-X"]], mode="strict", scheme="IOB2")
