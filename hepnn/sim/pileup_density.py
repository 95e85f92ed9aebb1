"""Pile-up density around each jet, measured where the generator overlays pile-up.

The rule-based pile-up corrections need an event-level estimate of the pile-up: area-median
subtraction the transverse-momentum density rho and the mass density rho_m (Cacciari, Salam,
"Pileup subtraction using jet areas", arXiv:0707.1378; Soyez et al., arXiv:1211.2811), SoftKiller
its pT cut (Cacciari, Salam, Soyez, arXiv:1407.0408): the median over patches of the event of
each patch's pT density, resp. of its hardest particle's pT. Pile-up is overlaid only within
``region`` of the selected jets (:mod:`hepnn.sim.pileup`), so the patches here are the
``SECTORS`` azimuthal sectors (around the jet axis) of the ring between the jet radius R and
``region``, inside the tracker's acceptance (sectors whose centre is beyond it are left out: they
would see only part of the pile-up). The median is robust against the hard scatter's own
radiation in a few sectors; a jet without pile-up gets rho close to 0.

Each jet stores ``jet_rho``, ``jet_rho_m`` (GeV per unit area in eta x phi) and
``jet_softkiller_pt`` (GeV) from all particle-flow objects, and the same with the suffix ``_chs``
from the objects that charged-hadron subtraction keeps (tracks assigned to a pile-up vertex left
out).
"""

from __future__ import annotations

import numpy as np

SECTORS = 24
BRANCHES = ("rho", "rho_m", "softkiller_pt")


def ring_estimates(
    obj_event: np.ndarray,
    obj_eta: np.ndarray,
    obj_phi: np.ndarray,
    obj_pt: np.ndarray,
    obj_mass: np.ndarray,
    jet_event: np.ndarray,
    jet_eta: np.ndarray,
    jet_phi: np.ndarray,
    n_events: int,
    radius: float,
    region: float,
    abs_eta_max: float,
) -> dict[str, np.ndarray]:
    """``rho``, ``rho_m`` and ``softkiller_pt`` for every jet, from the objects of its event
    (flat arrays: event index, eta, phi in rad, pT and mass in GeV) in the ring
    ``radius < Delta R < region`` around its axis (jets flat: event, eta, phi); objects grouped
    by event, ``n_events`` events; sectors centred beyond ``abs_eta_max`` are left out."""
    from hepnn.sim import truth

    n_jets = len(jet_event)
    pair_jet, pair_obj = truth.same_event_pairs(jet_event, obj_event, n_events)
    deta = obj_eta[pair_obj] - jet_eta[pair_jet]
    dphi = (obj_phi[pair_obj] - jet_phi[pair_jet] + np.pi) % (2 * np.pi) - np.pi
    distance = np.hypot(deta, dphi)
    inside = (distance > radius) & (distance < region)
    pair_jet, pair_obj, deta, dphi = pair_jet[inside], pair_obj[inside], deta[inside], dphi[inside]
    sector = np.minimum(
        ((np.arctan2(dphi, deta) + np.pi) / (2 * np.pi) * SECTORS).astype(np.int64), SECTORS - 1
    )
    key = pair_jet * SECTORS + sector
    pt, mass = obj_pt[pair_obj], obj_mass[pair_obj]
    n_keys = n_jets * SECTORS
    area = np.pi * (region**2 - radius**2) / SECTORS
    pt_density = np.bincount(key, weights=pt, minlength=n_keys) / area
    mass_density = np.bincount(key, weights=np.sqrt(pt * pt + mass * mass) - pt, minlength=n_keys) / area
    hardest = np.zeros(n_keys)
    order = np.lexsort((pt, key))
    last = np.ones(len(order), dtype=bool)
    last[:-1] = key[order][1:] != key[order][:-1]
    hardest[key[order][last]] = pt[order][last]

    # sectors whose centre lies outside the acceptance are left out of the medians
    centre_angle = (np.arange(SECTORS) + 0.5) / SECTORS * 2 * np.pi - np.pi
    centre_eta = jet_eta[:, None] + 0.5 * (radius + region) * np.cos(centre_angle)[None, :]
    valid = np.abs(centre_eta) < abs_eta_max

    def median(values: np.ndarray) -> np.ndarray:
        table = np.where(valid, values.reshape(n_jets, SECTORS), np.nan)
        with np.errstate(all="ignore"):
            return np.nan_to_num(np.nanmedian(table, axis=1), nan=0.0) if n_jets else np.zeros(0)

    return {"rho": median(pt_density), "rho_m": median(mass_density), "softkiller_pt": median(hardest)}
