"""Bootstrap uncertainties on known cases: the mean, the AUC of two Gaussians, infinite rejections."""

import math

import numpy as np
import pytest

from hepnn.metrics import bootstrap
from hepnn.metrics.classification import background_rejection, roc_auc


def two_gaussians(n_per_class: int, separation: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Scores of unit-width Gaussian signal (mean ``separation``) and background (mean 0)."""
    rng = np.random.default_rng(seed)
    scores = np.r_[rng.normal(separation, 1.0, n_per_class), rng.normal(0.0, 1.0, n_per_class)]
    return scores, np.r_[np.ones(n_per_class, bool), np.zeros(n_per_class, bool)]


def hanley_mcneil_error(auc: float, n_signal: int, n_background: int) -> float:
    """Hanley & McNeil (1982) standard error of the AUC."""
    q1, q2 = auc / (2 - auc), 2 * auc**2 / (1 + auc)
    variance = auc * (1 - auc) + (n_signal - 1) * (q1 - auc**2) + (n_background - 1) * (q2 - auc**2)
    return math.sqrt(variance / (n_signal * n_background))


def test_error_of_the_mean_is_one_over_sqrt_n():
    values = np.random.default_rng(11).normal(size=10_000)
    estimate = bootstrap.bootstrap(np.mean, values, n_resamples=400, seed=2)
    assert estimate.value == np.mean(values)
    assert estimate.error == pytest.approx(1 / math.sqrt(values.size), rel=0.1)
    assert (estimate.n_resamples, estimate.n_nonfinite) == (400, 0)


def test_error_of_the_auc_agrees_with_hanley_mcneil():
    scores, is_signal = two_gaussians(2000, separation=1.0, seed=4)
    estimate = bootstrap.bootstrap(roc_auc, scores, is_signal, seed=5)
    assert estimate.value == roc_auc(scores, is_signal)
    assert estimate.error == pytest.approx(hanley_mcneil_error(estimate.value, 2000, 2000), rel=0.2)


def test_same_seed_same_result_other_seed_other_result():
    scores, is_signal = two_gaussians(500, separation=1.0, seed=6)
    first = bootstrap.bootstrap(roc_auc, scores, is_signal, n_resamples=50, seed=7)
    assert bootstrap.bootstrap(roc_auc, scores, is_signal, n_resamples=50, seed=7) == first
    assert bootstrap.bootstrap(roc_auc, scores, is_signal, n_resamples=50, seed=8).error != first.error


def test_classifier_figures_share_the_resamples_of_the_generic_bootstrap():
    scores, is_signal = two_gaussians(800, separation=1.5, seed=9)
    fast = bootstrap.classifier_figures(scores, is_signal, n_resamples=40, seed=3)

    def figures(s, y):
        return {
            "auc": roc_auc(s, y),
            "rej30": background_rejection(s, y, 0.3),
            "rej50": background_rejection(s, y, 0.5),
        }

    generic = bootstrap.bootstrap_figures(figures, scores, is_signal, n_resamples=40, seed=3)
    assert list(fast) == ["auc", "rej30", "rej50"]
    for name, estimate in generic.items():
        assert fast[name].value == pytest.approx(estimate.value, rel=1e-12)
        assert fast[name].error == pytest.approx(estimate.error, rel=1e-9)


def test_infinite_rejections_are_left_out_of_the_error_and_counted():
    # One background entry (index 0) scores above 70 % of the signal; every other background entry
    # lies below all signal. At eps_S = 0.3 a resample has 1/eps_B = inf exactly when it misses
    # entry 0 (about exp(-1) of the resamples).
    rng = np.random.default_rng(12)
    scores = np.r_[0.95, rng.uniform(-2.0, -1.0, 49), rng.uniform(0.0, 1.0, 100)]
    is_signal = np.r_[np.zeros(50, bool), np.ones(100, bool)]
    entry = np.arange(scores.size)

    def figures(s, y, ids):
        return {"rej30": background_rejection(s, y, 0.3), "has_entry_0": float(np.any(ids == 0))}

    resampled = bootstrap.resampled_figures(figures, scores, is_signal, entry, seed=1)
    missing = resampled["has_entry_0"] == 0
    assert 0.2 < missing.mean() < 0.5
    assert np.array_equal(np.isinf(resampled["rej30"]), missing)

    estimate = bootstrap.classifier_figures(scores, is_signal, seed=1)["rej30"]
    assert estimate.value == background_rejection(scores, is_signal, 0.3) < np.inf
    assert estimate.n_nonfinite == missing.sum()
    assert estimate.error == pytest.approx(np.std(resampled["rej30"][~missing], ddof=1))
    assert f"({missing.sum()}/200 resamples non-finite)" in str(estimate)


def test_an_infinite_value_keeps_the_spread_of_the_finite_resamples():
    estimate = bootstrap.Estimate.from_resamples(np.inf, np.r_[np.inf, 2.0, 4.0])
    assert (estimate.value, estimate.error, estimate.n_nonfinite) == (np.inf, pytest.approx(math.sqrt(2)), 1)
    assert math.isnan(bootstrap.Estimate.from_resamples(1.0, np.r_[np.inf, 2.0]).error)


def test_format_shows_two_significant_digits_of_the_error():
    assert str(bootstrap.Estimate(0.98123, 0.00114)) == "0.9812 ± 0.0011"
    assert str(bootstrap.Estimate(412.3, 23.4)) == "412 ± 23"
    assert bootstrap.Estimate(0.98123, 0.00114).format(2) == "0.98 ± 0.00"


def test_bad_arguments_are_one_line_errors():
    with pytest.raises(ValueError, match="n_resamples must be an integer >= 2"):
        bootstrap.bootstrap(np.mean, np.ones(3), n_resamples=1)
    with pytest.raises(ValueError, match="equal length"):
        bootstrap.bootstrap(roc_auc, np.ones(3), np.ones(4))


def test_the_paired_auc_difference_of_two_correlated_taggers_is_more_precise_than_their_errors():
    rng = np.random.default_rng(11)
    is_signal = rng.integers(0, 2, 4000).astype(bool)
    better = rng.normal(1.5 * is_signal, 1.0)
    worse = better + rng.normal(0.0, 0.4, len(better))  # the same tagger, smeared
    difference = bootstrap.auc_difference(better, worse, is_signal, n_resamples=200, seed=3)
    assert difference.value == pytest.approx(roc_auc(better, is_signal) - roc_auc(worse, is_signal))
    errors = [bootstrap.bootstrap(roc_auc, s, is_signal, seed=3).error for s in (better, worse)]
    combined = np.hypot(*errors)
    assert 0 < difference.error < 0.6 * combined
    assert difference.value > 3 * difference.error  # smearing costs separation, and the pairing shows it
