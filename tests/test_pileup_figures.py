"""Figures of a pile-up correction on known inputs: bias and resolution, and the position and width
of a jet-mass peak."""

from __future__ import annotations

import numpy as np
import pytest

from hepnn.pileup.figures import correction_figures, mass_peak, peak_estimates


def test_bias_is_the_median_shift_and_resolution_the_68_percent_half_width():
    rng = np.random.default_rng(0)
    true = rng.uniform(500.0, 700.0, 20_000)
    corrected = true + 5.0 + rng.normal(0.0, 12.0, len(true))
    found = correction_figures(corrected, 0.2 * corrected, true, 0.2 * true)
    assert found["pt_bias"] == pytest.approx(5.0, abs=0.3)
    assert found["pt_resolution"] == pytest.approx(12.0, rel=0.03)
    assert found["mass_resolution"] == pytest.approx(0.2 * 12.0, rel=0.03)


def test_a_gaussian_peak_gives_its_own_mean_and_sigma_on_a_flat_background():
    rng = np.random.default_rng(1)
    mass = np.concatenate(
        [rng.normal(175.0, 12.0, 8000), rng.uniform(0.0, 400.0, 1500), rng.normal(80.0, 8.0, 800)]
    )
    peak = mass_peak(mass)
    assert peak["peak_position"] == pytest.approx(175.0, abs=1.0)
    assert peak["peak_width"] == pytest.approx(12.0, rel=0.08)


def test_a_peak_moved_by_pile_up_is_found_where_it_went():
    rng = np.random.default_rng(2)
    mass = rng.normal(175.0, 12.0, 5000)
    shifted = mass_peak(mass + 90.0)
    assert shifted["peak_position"] - mass_peak(mass)["peak_position"] == pytest.approx(90.0, abs=0.5)
    wider = mass_peak(175.0 + 2.0 * (mass - 175.0))
    assert wider["peak_width"] == pytest.approx(2.0 * mass_peak(mass)["peak_width"], rel=0.02)


def test_too_few_jets_give_no_peak_and_errors_shrink_with_more_jets():
    assert np.isnan(mass_peak(np.array([170.0, 175.0, 180.0]))["peak_position"])
    rng = np.random.default_rng(3)
    small = peak_estimates(rng.normal(175.0, 12.0, 500), n_resamples=50)
    large = peak_estimates(rng.normal(175.0, 12.0, 8000), n_resamples=50)
    assert 0 < large["peak_position"].error < small["peak_position"].error
