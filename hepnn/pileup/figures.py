"""Figures of merit of a pile-up correction: how well corrected jets recover the jets without pile-up.

For every jet the corrected pT and mass are compared with those of the same jet of the hard event
clustered alone (``jet_nopu_pt``, ``jet_nopu_mass``): the bias is the median of corrected minus
true, the resolution half the width of its central 68 % interval (GeV, as in
:mod:`hepnn.metrics.regression`), with bootstrap errors over the jets.
"""

from __future__ import annotations

import numpy as np

from hepnn.metrics.bootstrap import DEFAULT_RESAMPLES, Estimate, bootstrap_figures
from hepnn.metrics.regression import bias, resolution

FIGURES = ("pt_bias", "pt_resolution", "mass_bias", "mass_resolution")


def correction_figures(pt, mass, true_pt, true_mass) -> dict[str, float]:
    """Bias and resolution (GeV) of corrected jet pT and mass against the jets without pile-up."""
    return {
        "pt_bias": bias(pt, true_pt),
        "pt_resolution": resolution(pt, true_pt),
        "mass_bias": bias(mass, true_mass),
        "mass_resolution": resolution(mass, true_mass),
    }


def correction_estimates(
    pt, mass, true_pt, true_mass, n_resamples: int = DEFAULT_RESAMPLES, seed: int = 0
) -> dict[str, Estimate]:
    """:func:`correction_figures` with bootstrap errors (the same resamples for every method given
    the same seed and number of jets)."""
    arrays = [np.asarray(a, dtype=np.float64) for a in (pt, mass, true_pt, true_mass)]
    return bootstrap_figures(correction_figures, *arrays, n_resamples=n_resamples, seed=seed)
