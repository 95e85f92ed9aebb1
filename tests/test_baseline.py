"""The histogram likelihood-ratio baseline on Gaussians with a known optimal AUC, and its plain-data form."""

import json
import math

import numpy as np
import pytest
import torch

from hepnn.errors import InputError
from hepnn.metrics.baseline import HistogramLikelihoodRatio, bins_per_axis
from hepnn.metrics.classification import roc_auc

N_TEST = 50_000


def gaussians(n_per_class: int, separations, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Independent unit-width Gaussian observables; signal (label 1) shifted by ``separations``."""
    rng = np.random.default_rng(seed)
    shift = np.asarray(separations, dtype=np.float64)
    values = np.r_[
        rng.normal(size=(n_per_class, shift.size)) + shift, rng.normal(size=(n_per_class, shift.size))
    ]
    return values, np.r_[np.ones(n_per_class, int), np.zeros(n_per_class, int)]


def normal_cdf(x: float) -> float:
    return 0.5 * (1 + math.erf(x / math.sqrt(2)))


def hanley_mcneil_error(auc: float, n_signal: int, n_background: int) -> float:
    """Hanley & McNeil (1982) standard error of the AUC: the precision of the test sample."""
    q1, q2 = auc / (2 - auc), 2 * auc**2 / (1 + auc)
    variance = auc * (1 - auc) + (n_signal - 1) * (q1 - auc**2) + (n_background - 1) * (q2 - auc**2)
    return math.sqrt(variance / (n_signal * n_background))


def test_one_observable_reaches_the_analytic_auc():
    separation = 1.0
    baseline = HistogramLikelihoodRatio(["jet_mass"]).fit(
        *gaussians(50_000, [separation], seed=1), signal_index=1
    )
    test_values, test_labels = gaussians(N_TEST, [separation], seed=2)
    expected = normal_cdf(separation / math.sqrt(2))
    auc = roc_auc(baseline.score(test_values), test_labels == 1)
    assert auc == pytest.approx(expected, abs=3 * hanley_mcneil_error(expected, N_TEST, N_TEST))
    assert baseline.observables == ("jet_mass",)
    assert baseline.edges[0].size - 1 == bins_per_axis(50_000, 1) == 37


def test_two_independent_observables_combine_in_quadrature():
    d1, d2 = 1.0, 0.7
    baseline = HistogramLikelihoodRatio(["jet_mass", "jet_tau32"]).fit(
        *gaussians(200_000, [d1, d2], seed=3), signal_index=1
    )
    test_values, test_labels = gaussians(N_TEST, [d1, d2], seed=4)
    expected = normal_cdf(math.hypot(d1, d2) / math.sqrt(2))
    auc = roc_auc(baseline.score(test_values), test_labels == 1)
    assert auc == pytest.approx(expected, abs=3 * hanley_mcneil_error(expected, N_TEST, N_TEST))
    # the 2-D histogram beats either observable alone
    alone = HistogramLikelihoodRatio().fit(*gaussians(200_000, [d1], seed=3), signal_index=1)
    assert auc > roc_auc(alone.score(test_values[:, :1]), test_labels == 1) + 0.03


def test_score_is_invariant_under_an_increasing_transformation():
    values, labels = gaussians(5000, [1.0, 0.5], seed=5)
    test_values, _ = gaussians(2000, [1.0, 0.5], seed=6)
    test_values[:3] = [[-9.0, 0.0], [9.0, 9.0], [0.0, -9.0]]  # outside the training range: edge bins

    def transform(v):
        return np.c_[np.exp(v[:, 0]), v[:, 1] ** 3]

    plain = HistogramLikelihoodRatio().fit(values, labels, signal_index=1)
    transformed = HistogramLikelihoodRatio().fit(transform(values), labels, signal_index=1)
    np.testing.assert_array_equal(plain.score(test_values), transformed.score(transform(test_values)))
    np.testing.assert_array_equal(plain.score(values), transformed.score(transform(values)))


def test_several_background_classes_count_together_in_their_training_proportions():
    values, labels = gaussians(3000, [1.0], seed=7)
    three_classes = np.where(labels == 1, 2, np.arange(labels.size) % 2)  # signal 2, backgrounds 0 and 1
    merged = HistogramLikelihoodRatio().fit(values, labels, signal_index=1)
    split = HistogramLikelihoodRatio().fit(values, three_classes, signal_index=2)
    np.testing.assert_array_equal(merged.score(values), split.score(values))


def test_weights_enter_up_to_a_common_scale():
    values, labels = gaussians(3000, [1.0], seed=8)
    unweighted = HistogramLikelihoodRatio().fit(values, labels, signal_index=1)
    scaled = HistogramLikelihoodRatio().fit(values, labels, signal_index=1, weights=np.full(labels.size, 3.0))
    np.testing.assert_allclose(unweighted.score(values), scaled.score(values), rtol=1e-12)
    tilted = np.exp(values[:, 0])  # reweights the background towards the signal
    weighted = HistogramLikelihoodRatio().fit(values, labels, signal_index=1, weights=tilted)
    assert not np.allclose(unweighted.score(values), weighted.score(values))


def test_empty_cells_give_finite_ratios_and_ratio_one_when_empty_in_both_classes():
    values = np.r_[[[0.0, 0.0]] * 50, [[1.0, 1.0]] * 50]  # two diagonal cells filled, two empty
    labels = np.r_[np.ones(25, int), np.zeros(25, int), np.ones(40, int), np.zeros(10, int)]
    baseline = HistogramLikelihoodRatio(n_bins=2).fit(values, labels, signal_index=1)
    ratio = baseline.ratio
    assert ratio.shape == (2, 2) and np.all(np.isfinite(ratio)) and np.all(ratio > 0)
    assert ratio[0, 1] == ratio[1, 0] == pytest.approx(1.0)
    assert ratio[1, 1] > 1 > ratio[0, 0]


def test_round_trip_through_plain_data_gives_identical_scores(tmp_path):
    values, labels = gaussians(4000, [1.0, 0.5], seed=9)
    baseline = HistogramLikelihoodRatio(["jet_mass", "jet_tau32"]).fit(values, labels, signal_index=1)
    from_json = HistogramLikelihoodRatio.from_dict(json.loads(json.dumps(baseline.to_dict())))
    torch.save({"baseline": baseline.to_dict()}, tmp_path / "baseline.pt")
    loaded = torch.load(tmp_path / "baseline.pt", weights_only=True)["baseline"]
    from_torch = HistogramLikelihoodRatio.from_dict(loaded)
    for restored in (from_json, from_torch):
        np.testing.assert_array_equal(restored.score(values), baseline.score(values))
        assert restored.observables == ("jet_mass", "jet_tau32")
        assert restored.signal_index == 1


def test_bad_inputs_are_one_line_errors():
    values, labels = gaussians(100, [1.0, 0.5], seed=10)
    with pytest.raises(ValueError, match=r"k = 1 or 2 observables, got \(200, 3\)"):
        HistogramLikelihoodRatio().fit(np.c_[values, values[:, 0]], labels, signal_index=1)
    bad = values.copy()
    bad[7, 1] = np.nan
    with pytest.raises(InputError, match=r"observable column 1 \(jet_tau32\) has 1 non-finite"):
        HistogramLikelihoodRatio(["jet_mass", "jet_tau32"]).fit(bad, labels, signal_index=1)
    with pytest.raises(InputError, match="needs signal \\(class 3\\) and background"):
        HistogramLikelihoodRatio().fit(values, labels, signal_index=3)
    with pytest.raises(InputError, match=r"column 0 \(x0\) is constant"):
        HistogramLikelihoodRatio().fit(np.zeros(200), labels, signal_index=1)
    with pytest.raises(ValueError, match="not fitted"):
        HistogramLikelihoodRatio().score(values)
    fitted = HistogramLikelihoodRatio(["jet_mass", "jet_tau32"]).fit(values, labels, signal_index=1)
    with pytest.raises(ValueError, match=r"1 observable column\(s\); expected 2"):
        fitted.score(values[:, 0])
    with pytest.raises(InputError, match=r"column 0 \(jet_mass\)"):
        fitted.score(np.r_[[[np.inf, 0.0]], values])
    with pytest.raises(ValueError, match="labels must be 200 integer class indices"):
        HistogramLikelihoodRatio().fit(values, labels.astype(float), signal_index=1)
    with pytest.raises(ValueError, match="kind"):
        HistogramLikelihoodRatio.from_dict({"edges": []})
