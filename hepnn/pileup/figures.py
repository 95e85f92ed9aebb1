"""Figures of merit of a pile-up correction: how well corrected jets recover the jets without pile-up.

For every jet the corrected pT and mass are compared with those of the same jet of the hard event
clustered alone (``jet_nopu_pt``, ``jet_nopu_mass``): the bias is the median of corrected minus
true, the resolution half the width of its central 68 % interval (GeV, as in
:mod:`hepnn.metrics.regression`), with bootstrap errors over the jets.
"""

from __future__ import annotations

import math

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


# the standard deviation of a unit Gaussian truncated to |x| < TRUNCATION: the core estimate
# below divides it out so that a Gaussian peak gives back its own width
TRUNCATION = 1.5
_TRUNCATED_STD = math.sqrt(
    1.0
    - 2.0
    * TRUNCATION
    * math.exp(-0.5 * TRUNCATION**2)
    / math.sqrt(2.0 * math.pi)
    / math.erf(TRUNCATION / math.sqrt(2))
)
PEAK_FIGURES = ("peak_position", "peak_width")


def mass_peak(
    mass, start_bin: float = 5.0, start_width: float = 20.0, iterations: int = 20
) -> dict[str, float]:
    """Position and width (GeV) of the main peak of a jet-mass distribution, e.g. the top peak of
    top jets, whatever pile-up has shifted it to.

    The peak's Gaussian core: starting at the fullest bin of a histogram of ``start_bin`` GeV
    (smoothed over three bins) with a width ``start_width``, the mean and the standard deviation
    of the masses within ``TRUNCATION`` widths of the position are taken again and again, the
    standard deviation divided by that of a Gaussian truncated there, until they settle. A
    Gaussian peak on a flat or slowly varying background gives its own mean and sigma.
    """
    mass = np.asarray(mass, dtype=np.float64)
    mass = mass[np.isfinite(mass)]
    if len(mass) < 10:
        return {name: float("nan") for name in PEAK_FIGURES}
    edges = np.arange(0.0, max(float(mass.max()), start_bin) + start_bin, start_bin)
    counts, edges = np.histogram(mass, bins=edges)
    smoothed = np.convolve(counts, np.ones(3) / 3.0, mode="same")
    position = 0.5 * (edges[:-1] + edges[1:])[int(np.argmax(smoothed))]
    width = float(start_width)
    for _ in range(iterations):
        core = mass[np.abs(mass - position) < TRUNCATION * width]
        if len(core) < 5:
            return {name: float("nan") for name in PEAK_FIGURES}
        new_position, new_width = float(core.mean()), float(core.std()) / _TRUNCATED_STD
        settled = abs(new_position - position) < 1e-3 and abs(new_width - width) < 1e-3
        position, width = new_position, new_width
        if settled:
            break
    return {"peak_position": position, "peak_width": width}


def peak_estimates(mass, n_resamples: int = DEFAULT_RESAMPLES, seed: int = 0) -> dict[str, Estimate]:
    """:func:`mass_peak` with bootstrap errors (the same resamples for every method given the same
    seed and number of jets)."""
    return bootstrap_figures(
        mass_peak, np.asarray(mass, dtype=np.float64), n_resamples=n_resamples, seed=seed
    )
