"""Regression and correlation metrics against scikit-learn and scipy."""
import warnings

import numpy as np
import pytest
from scipy import stats
from sklearn import metrics as skm

from openformers.metrics import load
from openformers.metrics._special import betainc

TOL = 1e-9


def test_mse_mae_match_sklearn():
    rng = np.random.RandomState(0)
    y, p, w = rng.randn(40), rng.randn(40), rng.rand(40)
    for sw in (None, w):
        assert load("mse").compute(predictions=p, references=y, sample_weight=sw)["mse"] == pytest.approx(
            skm.mean_squared_error(y, p, sample_weight=sw), abs=TOL)
        assert load("mse").compute(predictions=p, references=y, sample_weight=sw, squared=False)["mse"] == pytest.approx(
            skm.root_mean_squared_error(y, p, sample_weight=sw), abs=TOL)
        assert load("mae").compute(predictions=p, references=y, sample_weight=sw)["mae"] == pytest.approx(
            skm.mean_absolute_error(y, p, sample_weight=sw), abs=TOL)
    Y, P = rng.randn(30, 3), rng.randn(30, 3)
    for mo in ("raw_values", "uniform_average", [0.2, 0.5, 0.3]):
        np.testing.assert_allclose(load("mse", "multilist").compute(predictions=P, references=Y, multioutput=mo)["mse"],
                                   skm.mean_squared_error(Y, P, multioutput=mo), atol=TOL)
        np.testing.assert_allclose(load("mae", "multilist").compute(predictions=P, references=Y, multioutput=mo)["mae"],
                                   skm.mean_absolute_error(Y, P, multioutput=mo), atol=TOL)
    np.testing.assert_allclose(
        load("mse", "multilist").compute(predictions=P, references=Y, squared=False, multioutput="raw_values")["mse"],
        skm.root_mean_squared_error(Y, P, multioutput="raw_values"), atol=TOL)
    # r_squared returns a plain float, like evaluate's metric
    assert load("r_squared").compute(predictions=p, references=y) == pytest.approx(skm.r2_score(y, p), abs=TOL)


@pytest.mark.parametrize("n", [3, 4, 10, 57, 400])
def test_correlations_match_scipy(n):
    rng = np.random.RandomState(n)
    x = rng.randn(n)
    y = 0.3 * x + rng.randn(n)
    y_ties = np.round(y)  # ties for spearman
    got = load("pearsonr").compute(predictions=y, references=x, return_pvalue=True)
    ref = stats.pearsonr(x, y)
    assert got["pearsonr"] == pytest.approx(ref.statistic, abs=TOL)
    assert got["p-value"] == pytest.approx(ref.pvalue, abs=TOL)
    assert set(load("pearsonr").compute(predictions=y, references=x)) == {"pearsonr"}
    for yy in (y, y_ties):
        got = load("spearmanr").compute(predictions=yy, references=x, return_pvalue=True)
        ref = stats.spearmanr(yy, x)
        assert got["spearmanr"] == pytest.approx(ref.statistic, abs=TOL)
        assert got["spearmanr_pvalue"] == pytest.approx(ref.pvalue, abs=TOL)


def test_betainc_matches_scipy():
    from scipy.special import betainc as ref

    for a, b, x in [(0.5, 0.5, 0.3), (2, 3, 0.9), (50, 0.5, 0.99), (200, 200, 0.45), (1e-3, 5, 0.1), (7.5, 0.5, 0.01)]:
        assert betainc(a, b, x) == pytest.approx(ref(a, b, x), rel=1e-10, abs=1e-14)


def test_regression_edge_cases():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert np.isnan(load("pearsonr").compute(predictions=[1, 1, 1], references=[1, 2, 3])["pearsonr"])
    assert load("pearsonr").compute(predictions=[1, 2], references=[2, 5], return_pvalue=True)["p-value"] == 1.0
    with pytest.raises(TypeError, match="numbers"):
        load("mse").compute(predictions=["a"], references=[1.0])
    with pytest.raises(ValueError, match="multilist"):
        load("mae").compute(predictions=[[1, 2]], references=[[1, 2]])
    with pytest.raises(ValueError, match="constant"):
        load("r_squared").compute(predictions=[1, 2], references=[3, 3])


def test_mape_and_brier_match_sklearn():
    rng = np.random.RandomState(5)
    y, p, w = rng.randn(30), rng.randn(30), rng.rand(30)
    y[3] = 0.0  # zero reference: the epsilon floor
    assert load("mape").compute(predictions=p, references=y, sample_weight=w)["mape"] == pytest.approx(
        skm.mean_absolute_percentage_error(y, p, sample_weight=w), rel=1e-12)
    Y, P = rng.randn(20, 2), rng.randn(20, 2)
    np.testing.assert_allclose(load("mape", "multilist").compute(predictions=P, references=Y, multioutput="raw_values")["mape"],
                               skm.mean_absolute_percentage_error(Y, P, multioutput="raw_values"), rtol=1e-12)
    yb, prob = rng.randint(0, 2, 30), rng.rand(30)
    assert load("brier_score").compute(predictions=prob, references=yb, sample_weight=w)["brier_score"] == pytest.approx(
        skm.brier_score_loss(yb, prob, sample_weight=w), abs=TOL)
    with pytest.raises(ValueError, match="probabilities"):
        load("brier_score").compute(predictions=[1.5], references=[1])


def test_correlation_p_values_near_perfect_correlation():
    # for n = 3 the p-value is very sensitive to rounding of r near +-1
    rng = np.random.RandomState(9)
    for _ in range(40):
        x = rng.randn(3)
        for y in (x, -x, x + 1e-9 * rng.randn(3), np.round(x, 1)):
            if len(set(np.round(x, 1))) < 2:
                continue
            ref = stats.pearsonr(x, y)
            got = load("pearsonr").compute(predictions=y, references=x, return_pvalue=True)
            assert (got["pearsonr"], got["p-value"]) == (pytest.approx(ref.statistic, abs=TOL), pytest.approx(ref.pvalue, abs=TOL))
            ref = stats.spearmanr(y, x)
            got = load("spearmanr").compute(predictions=y, references=x, return_pvalue=True)
            assert (got["spearmanr"], got["spearmanr_pvalue"]) == (pytest.approx(ref.statistic, abs=TOL),
                                                                   pytest.approx(ref.pvalue, abs=TOL))
