"""Jet substructure observables, the inputs of the physicist's cut-based taggers.

Computed for whole batches of jets from their constituents (jagged ``px, py, pz, energy`` in
GeV, one list per jet); no Python loop runs over jets or particles. Angular distances are
``Delta R = sqrt(Delta y^2 + Delta phi^2)`` in rapidity and azimuth, as in FastJet and its
contrib packages. Every observable is dimensionless except where noted.

- N-subjettiness (Thaler, Van Tilburg, arXiv:1011.2268) with beta = 1:
  ``tau_N = sum_k pT_k min_j Delta R(k, a_j) / sum_k pT_k R0``, ``R0`` the jet radius, the axes
  ``a_j`` the N exclusive kT subjets (FastJet's ``kt_algorithm`` with the largest allowed R, E
  scheme, as the contrib's ``KT_Axes``). A jet with at most N constituents has tau_N = 0 (every
  constituent is an axis). ``tau21 = tau2 / tau1`` and ``tau32 = tau3 / tau2`` (0 when the
  denominator is 0). The kT axes are not the ones that minimise tau_N, so for a few percent of
  jets tau_N slightly exceeds tau_(N-1) and a ratio exceeds 1.
- Energy correlation functions (Larkoski, Salam, Thaler, arXiv:1305.0007; Larkoski, Moult,
  Neill, arXiv:1409.6298) with beta = 1, normalised by the jet pT: ``e2 = sum_{i<j} z_i z_j
  Delta R_ij`` and ``e3 = sum_{i<j<k} z_i z_j z_k Delta R_ij Delta R_ik Delta R_jk`` with
  ``z_i = pT_i / sum pT`` (FastJet's EnergyCorrelator); ``C2 = e3 / e2^2`` and ``D2 = e3 / e2^3``
  (0 when e2 is 0).
- Girth (width) ``sum_k pT_k Delta R(k, jet) / pT_jet`` and ``pT_D = sqrt(sum pT_k^2) / sum pT_k``
  (the quark/gluon discriminants of CMS), with ``pT_jet`` the scalar sum of the constituents' pT.
"""

from __future__ import annotations

import functools

import awkward as ak
import numpy as np

from hepnn.sim.clustering import exclusive_jets_of_kt, fastjet_module

# FastJet's JetDefinition::max_allowable_R: no beam distance takes over, every constituent ends in
# one of the N exclusive subjets
MAX_ALLOWABLE_R = 1000.0
MAX_SUBJETS = 3

BRANCHES = (
    "jet_tau1",
    "jet_tau2",
    "jet_tau3",
    "jet_tau21",
    "jet_tau32",
    "jet_girth",
    "jet_ptd",
    "jet_c2",
    "jet_d2",
)


def rapidity_phi(px, py, pz, energy) -> tuple[np.ndarray, np.ndarray]:
    """Rapidity and azimuth (rad) of flat momenta (GeV); a massless particle's rapidity is its eta."""
    pt2 = px * px + py * py
    # y = 1/2 ln((E + pz) / (E - pz)) = asinh(pz / mT), mT^2 = E^2 - pz^2 >= pT^2 (stable form)
    mt = np.sqrt(np.maximum(energy * energy - pz * pz, pt2))
    with np.errstate(divide="ignore", invalid="ignore"):
        y = np.where(mt > 0, np.arcsinh(pz / np.where(mt > 0, mt, 1.0)), np.copysign(np.inf, pz))
    return y, np.arctan2(py, px)


def _wrap(dphi: np.ndarray) -> np.ndarray:
    return (dphi + np.pi) % (2 * np.pi) - np.pi


def ratio(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    """``numerator / denominator``, 0 where the denominator is 0."""
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(denominator > 0, numerator / np.where(denominator > 0, denominator, 1.0), 0.0)


def observables(constituents: dict[str, ak.Array], radius: float) -> dict[str, np.ndarray]:
    """The observables of the module docstring for every jet, as float32 ``jet_*`` columns.

    ``constituents`` maps ``px``, ``py``, ``pz``, ``energy`` to jagged arrays ``(jets,
    constituents)`` in GeV; ``radius`` is the jet radius R0 of the N-subjettiness normalisation.
    """
    counts = ak.to_numpy(ak.num(constituents["px"], axis=1))
    flat = {
        k: ak.to_numpy(ak.flatten(constituents[k])).astype(np.float64) for k in ("px", "py", "pz", "energy")
    }
    n_jets = len(counts)
    jet_of = np.repeat(np.arange(n_jets), counts)
    pt = np.hypot(flat["px"], flat["py"])
    y, phi = rapidity_phi(flat["px"], flat["py"], flat["pz"], flat["energy"])
    pt_sum = np.bincount(jet_of, weights=pt, minlength=n_jets)

    fastjet = fastjet_module()
    objects = ak.zip(
        {
            "px": constituents["px"],
            "py": constituents["py"],
            "pz": constituents["pz"],
            "E": constituents["energy"],
        }
    )
    sequence = fastjet.ClusterSequence(
        ak.values_astype(objects, np.float64), fastjet.JetDefinition(fastjet.kt_algorithm, MAX_ALLOWABLE_R)
    )
    columns: dict[str, np.ndarray] = {}
    taus = {}
    for n in range(1, MAX_SUBJETS + 1):
        with exclusive_jets_of_kt():
            axes = sequence.exclusive_jets_up_to(n)
        taus[n] = _tau(axes, y, phi, pt, jet_of, n_jets, n) / np.where(pt_sum > 0, pt_sum * radius, 1.0)
        columns[f"jet_tau{n}"] = taus[n]
    columns["jet_tau21"] = ratio(taus[2], taus[1])
    columns["jet_tau32"] = ratio(taus[3], taus[2])

    # the jet axis: the four-momentum sum of the constituents (E scheme)
    sums = {k: np.bincount(jet_of, weights=v, minlength=n_jets) for k, v in flat.items()}
    jet_y, jet_phi = rapidity_phi(sums["px"], sums["py"], sums["pz"], sums["energy"])
    distance = np.hypot(y - jet_y[jet_of], _wrap(phi - jet_phi[jet_of]))
    columns["jet_girth"] = ratio(np.bincount(jet_of, weights=pt * distance, minlength=n_jets), pt_sum)
    columns["jet_ptd"] = ratio(np.sqrt(np.bincount(jet_of, weights=pt * pt, minlength=n_jets)), pt_sum)

    correlator = functools.partial(
        sequence.exclusive_jets_energy_correlator, njets=1, beta=1, angles=-1, func="generalized"
    )
    e2 = ak.to_numpy(correlator(npoint=2)).astype(np.float64)
    e3 = ak.to_numpy(correlator(npoint=3)).astype(np.float64)
    columns["jet_c2"] = ratio(e3, e2**2)
    columns["jet_d2"] = ratio(e3, e2**3)
    return {name: columns[name].astype(np.float32) for name in BRANCHES}


def _tau(axes: ak.Array, y, phi, pt, jet_of: np.ndarray, n_jets: int, n: int) -> np.ndarray:
    """``sum_k pT_k min_j Delta R(k, a_j)`` per jet (GeV) for up to ``n`` axes per jet."""
    axis_y = np.full((n_jets, n), np.inf)
    axis_phi = np.zeros((n_jets, n))
    n_axes = ak.to_numpy(ak.num(axes, axis=1))
    rows = np.repeat(np.arange(n_jets), n_axes)
    slots = np.arange(len(rows)) - np.repeat(np.cumsum(n_axes) - n_axes, n_axes)
    flat_y, flat_phi = rapidity_phi(
        *(ak.to_numpy(ak.flatten(axes[k])).astype(np.float64) for k in ("px", "py", "pz", "E"))
    )
    axis_y[rows, slots] = flat_y
    axis_phi[rows, slots] = flat_phi
    # (constituents, n) distances to the axes of each constituent's jet; missing axes are infinitely far
    distance = np.hypot(y[:, None] - axis_y[jet_of], _wrap(phi[:, None] - axis_phi[jet_of]))
    nearest = np.min(distance, axis=1)
    return np.bincount(jet_of, weights=pt * nearest, minlength=n_jets)
