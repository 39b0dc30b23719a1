"""Classification metrics against scikit-learn."""
import warnings

import numpy as np
import pytest
from sklearn import metrics as skm

from openformers.metrics import load

TOL = 1e-9


def _cases():
    rng = np.random.RandomState(0)
    yield rng.randint(0, 2, 40), rng.randint(0, 2, 40)  # binary
    yield rng.randint(0, 4, 60), rng.randint(0, 4, 60)  # multiclass
    yield np.ones(10, int), np.ones(10, int)  # all one class
    yield np.zeros(7, int), np.ones(7, int)
    yield np.array(["cat", "dog", "cat", "ému"]), np.array(["cat", "cat", "ému", "ému"])  # strings, unicode


@pytest.mark.parametrize("case", list(_cases()), ids=["binary", "multiclass", "one_class", "disjoint", "strings"])
def test_prf_accuracy_mcc_match_sklearn(case):
    refs, preds = case
    rng = np.random.RandomState(1)
    w = rng.rand(len(refs))
    binary = len(np.union1d(refs, preds)) <= 2
    pos = refs[0] if refs.dtype.kind == "U" else 1
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for normalize in (True, False):
            for sw in (None, w):
                got = load("accuracy").compute(predictions=preds, references=refs, normalize=normalize, sample_weight=sw)
                assert got["accuracy"] == pytest.approx(skm.accuracy_score(refs, preds, normalize=normalize, sample_weight=sw), abs=TOL)
        got = load("matthews_correlation").compute(predictions=preds, references=refs, sample_weight=w)
        assert got["matthews_correlation"] == pytest.approx(skm.matthews_corrcoef(refs, preds, sample_weight=w), abs=TOL)
        averages = ["micro", "macro", "weighted", None] + (["binary"] if binary else [])
        for name, fn in (("precision", skm.precision_score), ("recall", skm.recall_score), ("f1", skm.f1_score)):
            metric = load(name)
            for average in averages:
                for zd in ("warn", 0, 1, np.nan):
                    for sw in (None, w):
                        kw = dict(average=average, sample_weight=sw, zero_division=zd, pos_label=pos)
                        expected = fn(refs, preds, **kw)
                        got = metric.compute(predictions=preds, references=refs, **kw)[name]
                        np.testing.assert_allclose(got, expected, atol=TOL, equal_nan=True)


def test_prf_labels_subset_and_multilabel():
    rng = np.random.RandomState(2)
    refs, preds = rng.randint(0, 5, 50), rng.randint(0, 5, 50)
    for average in ("micro", "macro", "weighted", None):
        got = load("f1").compute(predictions=preds, references=refs, labels=[0, 2, 7], average=average, zero_division=0)
        np.testing.assert_allclose(got["f1"], skm.f1_score(refs, preds, labels=[0, 2, 7], average=average, zero_division=0), atol=TOL)
    yt, yp = rng.randint(0, 2, (30, 4)), rng.randint(0, 2, (30, 4))
    w = rng.rand(30)
    for average in ("micro", "macro", "weighted", "samples", None):
        for name, fn in (("precision", skm.precision_score), ("recall", skm.recall_score), ("f1", skm.f1_score)):
            got = load(name, "multilabel").compute(predictions=yp, references=yt, average=average, zero_division=0,
                                                   sample_weight=w)[name]
            np.testing.assert_allclose(got, fn(yt, yp, average=average, zero_division=0, sample_weight=w), atol=TOL)
    mcc = load("matthews_correlation", "multilabel").compute(predictions=yp, references=yt, sample_weight=w)
    np.testing.assert_allclose(mcc["matthews_correlation"],
                               [skm.matthews_corrcoef(yt[:, c], yp[:, c], sample_weight=w) for c in range(4)], atol=TOL)
    acc = load("accuracy", "multilabel").compute(predictions=yp, references=yt)["accuracy"]
    assert acc == pytest.approx(skm.accuracy_score(yt, yp), abs=TOL)


def test_roc_auc_matches_sklearn():
    rng = np.random.RandomState(3)
    y = rng.randint(0, 2, 80)
    s = np.round(rng.rand(80), 1)  # many ties
    w = rng.rand(80)
    for max_fpr in (None, 0.2, 0.5, 1.0):
        got = load("roc_auc").compute(prediction_scores=s, references=y, max_fpr=max_fpr, sample_weight=w)["roc_auc"]
        assert got == pytest.approx(skm.roc_auc_score(y, s, max_fpr=max_fpr, sample_weight=w), abs=TOL)
    yc = rng.randint(0, 4, 90)
    probs = rng.rand(90, 4)
    probs /= probs.sum(1, keepdims=True)
    metric = load("roc_auc", "multiclass")
    for mc, averages in (("ovr", ("macro", "weighted", None)), ("ovo", ("macro", "weighted"))):
        for average in averages:
            got = metric.compute(prediction_scores=probs, references=yc, multi_class=mc, average=average)["roc_auc"]
            np.testing.assert_allclose(got, skm.roc_auc_score(yc, probs, multi_class=mc, average=average), atol=TOL)
    ym, sm = rng.randint(0, 2, (50, 3)), rng.rand(50, 3)
    for average in ("micro", "macro", "weighted", "samples", None):
        if average == "samples":  # every row needs both classes
            rows = np.arange(50)
            ym[rows, rows % 3], ym[rows, (rows + 1) % 3] = 1, 0
        got = load("roc_auc", "multilabel").compute(prediction_scores=sm, references=ym, average=average)["roc_auc"]
        np.testing.assert_allclose(got, skm.roc_auc_score(ym, sm, average=average), atol=TOL)


def test_classification_errors():
    with pytest.raises(ValueError, match="mismatch"):
        load("accuracy").compute(predictions=[0, 1], references=[0])
    with pytest.raises(TypeError, match="non-integer floats"):
        load("accuracy").compute(predictions=[0.3, 0.9], references=[0, 1])
    with pytest.raises(TypeError, match="numeric"):
        load("roc_auc").compute(prediction_scores=[0.1, 0.9], references=["a", "b"])
    with pytest.raises(ValueError, match="only one class"):
        load("roc_auc").compute(prediction_scores=[0.1, 0.9], references=[1, 1])
    with pytest.raises(ValueError, match="column 1"):
        load("roc_auc", "multiclass").compute(prediction_scores=[[0.6, 0.2, 0.2], [0.1, 0.1, 0.8]], references=[0, 2],
                                              multi_class="ovr", labels=[0, 1, 2])
    with pytest.raises(ValueError, match="multiclass but average='binary'"):
        load("f1").compute(predictions=[0, 1, 2], references=[0, 1, 2])
    with pytest.raises(ValueError, match="pos_label"):
        load("precision").compute(predictions=[0, 2], references=[2, 0])
    with pytest.raises(ValueError, match="Unknown config_name"):
        load("accuracy", "multiclass")
    with pytest.raises(ValueError, match="no examples"):
        load("f1").compute(predictions=[], references=[])
    with pytest.raises(TypeError, match="mix string and integer"):
        load("accuracy").compute(predictions=["a"], references=[1])


def test_confusion_matrix_matches_sklearn():
    rng = np.random.RandomState(4)
    refs, preds, w = rng.randint(0, 4, 60), rng.randint(0, 4, 60), rng.rand(60)
    metric = load("confusion_matrix")
    for labels in (None, [3, 1, 9]):
        for sw in (None, w):
            for normalize in (None, "true", "pred", "all"):
                got = metric.compute(predictions=preds, references=refs, labels=labels, sample_weight=sw,
                                     normalize=normalize)["confusion_matrix"]
                expected = skm.confusion_matrix(refs, preds, labels=labels, sample_weight=sw, normalize=normalize)
                np.testing.assert_allclose(got, expected, atol=TOL)
                assert got.dtype.kind == expected.dtype.kind
    strings = metric.compute(predictions=["b", "a"], references=["a", "a"])["confusion_matrix"]
    np.testing.assert_array_equal(strings, skm.confusion_matrix(["a", "a"], ["b", "a"]))
