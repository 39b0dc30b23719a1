"""load / combine / add / add_batch behaviour of the evaluate-style API."""
import numpy as np
import pytest

from openformers import metrics
from openformers.metrics import combine, list_metrics, load


def test_load_names_and_unknown():
    assert {"accuracy", "f1", "bleu", "sacrebleu", "rouge", "wer", "cer", "seqeval", "perplexity", "squad",
            "roc_auc", "spearmanr"} <= set(list_metrics())
    assert load("evaluate-metric/accuracy").name == "accuracy"
    assert load("accuracy", module_type="metric").config_name == "default"
    with pytest.raises(ValueError, match="Unknown metric 'acuracy'.*accuracy"):
        load("acuracy")


def test_add_add_batch_then_compute():
    acc = load("accuracy")
    acc.add_batch(predictions=[0, 1], references=[0, 0])
    acc.add(prediction=1, reference=1)
    assert acc.compute() == {"accuracy": pytest.approx(2 / 3)}
    with pytest.raises(ValueError, match="no data"):
        acc.compute()  # the buffer was consumed
    with pytest.raises(ValueError, match="mismatch"):
        acc.add_batch(predictions=[0, 1], references=[0])
    roc = load("roc_auc")
    roc.add_batch(prediction_scores=np.array([0.1, 0.8]), references=[0, 1])
    roc.add(prediction_scores=0.4, reference=1)
    assert roc.compute() == {"roc_auc": 1.0}


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_compute_kwargs_defaults_and_errors():
    f1 = load("f1", average="macro")  # load-time kwargs become compute defaults
    assert f1.compute(predictions=[0, 1, 2], references=[0, 1, 1])["f1"] == pytest.approx((1 + 2 / 3 + 0) / 3)
    with pytest.raises(TypeError, match="unexpected arguments"):
        load("accuracy").compute(predictions=[0], references=[0], bogus=1)
    with pytest.raises(ValueError, match="missing"):
        load("accuracy").compute(predictions=[0])
    with pytest.raises(TypeError, match="list of examples"):
        load("bleu").compute(predictions="a b", references=["a b"])


def test_combine_merges_and_prefixes():
    clf = combine(["accuracy", "f1", "precision", "recall"])
    out = clf.compute(predictions=[0, 1, 0], references=[0, 1, 1])
    assert out == {"accuracy": pytest.approx(2 / 3), "f1": pytest.approx(2 / 3), "precision": 1.0, "recall": 0.5}
    clf.add_batch(predictions=[1, 1], references=[1, 0])
    assert clf.compute()["precision"] == 0.5
    dup = combine([load("f1"), load("f1", average="macro")]).compute(predictions=[0, 1], references=[0, 1])
    assert dup == {"f1_f1": 1.0}  # both prefixed, the later one wins on a full name clash
    mixed = combine(["wer", "cer"]).compute(predictions=["a b"], references=["a c"])
    assert mixed == {"wer": 0.5, "cer": pytest.approx(1 / 3)}
    forced = combine(["accuracy"], force_prefix=True).compute(predictions=[1], references=[1])
    assert forced == {"accuracy_accuracy": 1.0}


def test_package_exports():
    assert metrics.Metric is type(load("accuracy")).__mro__[-2]


def test_compute_inputs_join_added_examples():
    acc = load("accuracy")
    acc.add(prediction=0, reference=1)
    assert acc.compute(predictions=[1, 1], references=[1, 1]) == {"accuracy": pytest.approx(2 / 3)}
    with pytest.raises(TypeError, match="unexpected"):
        acc.add_batch(predictions=[1], references=[1]) or acc.compute(nope=True)
    assert acc.compute() == {"accuracy": 1.0}  # a rejected call keeps the buffer


def test_glue_configs():
    from scipy.stats import pearsonr, spearmanr
    from sklearn.metrics import f1_score, matthews_corrcoef

    preds, refs = [0, 1, 1, 0, 1], [0, 1, 0, 0, 1]
    assert load("glue", "mrpc").compute(predictions=preds, references=refs) == {
        "accuracy": 0.8, "f1": pytest.approx(f1_score(refs, preds), abs=1e-12)}
    assert load("glue", "sst2").compute(predictions=preds, references=refs) == {"accuracy": 0.8}
    assert load("glue", "cola").compute(predictions=preds, references=refs)["matthews_correlation"] == pytest.approx(
        matthews_corrcoef(refs, preds), abs=1e-12)
    x, y = [0.1, 2.5, 3.0, 4.2, 1.0], [0.0, 2.0, 3.5, 4.0, 2.0]
    out = load("glue", "stsb").compute(predictions=x, references=y)
    assert out == {"pearson": pytest.approx(pearsonr(x, y)[0], abs=1e-12), "spearmanr": pytest.approx(spearmanr(x, y)[0], abs=1e-12)}
    with pytest.raises(ValueError, match="config_name"):
        load("glue")
