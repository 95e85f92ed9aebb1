"""Figures of merit against hand-computed values on small known inputs."""

import math

import numpy as np
import pytest

from hepnn.metrics import classification as metrics


def test_roc_curve_points_with_ties():
    # signal scores 0.9, 0.5; background 0.5, 0.1: the tie at 0.5 enters as one step
    scores = [0.9, 0.5, 0.5, 0.1]
    is_signal = [True, True, False, False]
    eff_s, eff_b, thresholds = metrics.roc_curve(scores, is_signal)
    np.testing.assert_allclose(eff_s, [0, 0.5, 1, 1])
    np.testing.assert_allclose(eff_b, [0, 0, 0.5, 1])
    np.testing.assert_allclose(thresholds, [np.inf, 0.9, 0.5, 0.1])


def test_auc_by_hand():
    # pairs (s, b): 0.9>0.5, 0.9>0.1, 0.5=0.5 (half), 0.5>0.1 -> 3.5 / 4
    assert metrics.roc_auc([0.9, 0.5, 0.5, 0.1], [1, 1, 0, 0]) == pytest.approx(0.875)
    # signals 0.9, 0.8, 0.6 vs backgrounds 0.7, 0.5, 0.4 -> 8 of 9 pairs ordered
    assert metrics.roc_auc([0.9, 0.8, 0.7, 0.6, 0.5, 0.4], [1, 1, 0, 1, 0, 0]) == pytest.approx(8 / 9)
    assert metrics.roc_auc([0.1, 0.2], [1, 0]) == 0.0


def test_auc_equals_pairwise_probability_on_random_scores():
    rng = np.random.default_rng(3)
    scores = np.round(rng.normal(size=400), 1)  # many ties
    is_signal = rng.random(400) < 0.4
    s, b = scores[is_signal], scores[~is_signal]
    pairwise = ((s[:, None] > b[None, :]).sum() + 0.5 * (s[:, None] == b[None, :]).sum()) / (len(s) * len(b))
    assert metrics.roc_auc(scores, is_signal) == pytest.approx(pairwise)


def test_background_rejection_interpolates_linearly_on_the_curve():
    scores, is_signal = [0.9, 0.5, 0.5, 0.1], [1, 1, 0, 0]
    # eps_S = 0.75 lies halfway along the segment (0.5, 0) -> (1, 0.5): eps_B = 0.25
    assert metrics.background_rejection(scores, is_signal, 0.75) == pytest.approx(4.0)
    # eps_S = 0.5 is reached exactly at eps_B = 0
    assert math.isinf(metrics.background_rejection(scores, is_signal, 0.5))
    # eps_S = 1: the lowest eps_B with full signal efficiency is 0.5
    assert metrics.background_rejection(scores, is_signal, 1.0) == pytest.approx(2.0)


def test_weights_act_as_repeated_entries():
    scores = np.array([0.9, 0.7, 0.6, 0.3, 0.2])
    is_signal = np.array([1, 0, 1, 0, 1], bool)
    weights = np.array([2, 1, 3, 2, 1])
    repeated = np.repeat(np.arange(5), weights)
    assert metrics.roc_auc(scores, is_signal, weights) == pytest.approx(
        metrics.roc_auc(scores[repeated], is_signal[repeated])
    )
    assert metrics.background_rejection(scores, is_signal, 0.5, weights) == pytest.approx(
        metrics.background_rejection(scores[repeated], is_signal[repeated], 0.5)
    )


def test_accuracy_and_summary():
    probabilities = np.array([[0.8, 0.2], [0.3, 0.7], [0.6, 0.4], [0.1, 0.9]])
    labels = np.array([0, 1, 1, 1])
    summary = metrics.classification_summary(probabilities, labels, ["QCD", "Tbqq"], "Tbqq")
    assert summary["acc"] == pytest.approx(0.75)
    # signal scores 0.7, 0.4, 0.9 vs background 0.2: all ordered
    assert summary["auc"] == pytest.approx(1.0)
    assert set(summary) == {"acc", "auc", "rej30", "rej50"}


def test_multiclass_summary_has_per_class_auc():
    probabilities = np.array([[0.7, 0.2, 0.1], [0.2, 0.5, 0.3], [0.1, 0.3, 0.6], [0.4, 0.4, 0.2]])
    summary = metrics.classification_summary(probabilities, [0, 1, 2, 0], ["a", "b", "c"], "c")
    assert {"auc_a", "auc_b", "auc_c"} <= set(summary)
    assert summary["auc_c"] == pytest.approx(1.0)


def test_roc_needs_both_classes():
    with pytest.raises(ValueError, match="both signal and background"):
        metrics.roc_curve([0.1, 0.2], [1, 1])
