"""The rule-based pile-up corrections, applied to jets read from a sample with pile-up.

Every function takes the jets' branches (an awkward record array or a mapping of the branches
of :mod:`hepnn.sim.jets` and :mod:`hepnn.sim.pileup_density`) and returns the corrected jet pT
and mass (GeV, numpy arrays, one entry per jet):

- **CHS** (charged-hadron subtraction): the jet without its tracks assigned to a pile-up vertex
  (``part_pileup_vertex``).
- **Area subtraction** (Cacciari, Salam, arXiv:0707.1378, with the mass term of Soyez et al.,
  arXiv:1211.2811): the four-vector ``p - [rho A_x, rho A_y, (rho + rho_m) A_z, (rho + rho_m)
  A_E]`` with the area four-vector of a disc of radius R in rapidity and azimuth around the jet
  axis (anti-kT jets around a hard core are circular): the sum of massless ghosts of transverse
  momentum equal to their area over the disc, which has a mass and so removes the mass that
  uniform pile-up adds. A jet whose pT would become negative gets pT and mass 0.
- **SoftKiller** (Cacciari, Salam, Soyez, arXiv:1407.0408): the jet without its constituents
  below the pT cut. SoftKiller cuts the particles before clustering; cutting the constituents of
  the jet clustered with everything is the same for an anti-kT jet around a hard core, which
  neither gains nor loses the remaining particles.

Each can be combined with CHS (``chs=True``: pile-up-vertex tracks removed first, densities and
the cut measured without them: the ``_chs`` branches).
"""

from __future__ import annotations

import functools
from collections.abc import Mapping

import awkward as ak
import numpy as np

METHODS = ("none", "chs", "area", "chs_area", "softkiller", "chs_softkiller")


def four_momentum_sum(jets, keep) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``(px, py, pz, E)`` (GeV) of every jet's constituents where ``keep`` (jagged bool)."""
    return tuple(
        ak.to_numpy(ak.sum(ak.where(keep, jets[f"part_{k}"], 0.0), axis=1)).astype(np.float64)
        for k in ("px", "py", "pz", "energy")
    )


def pt_mass(px, py, pz, energy) -> tuple[np.ndarray, np.ndarray]:
    """Transverse momentum and mass (GeV) of four-vectors (GeV); mass 0 where m^2 < 0."""
    return np.hypot(px, py), np.sqrt(np.maximum(energy**2 - px**2 - py**2 - pz**2, 0.0))


def uncorrected(jets) -> tuple[np.ndarray, np.ndarray]:
    """The jet as clustered with pile-up."""
    return pt_mass(*four_momentum_sum(jets, ak.ones_like(jets["part_px"], dtype=bool)))


def chs(jets) -> tuple[np.ndarray, np.ndarray]:
    """The jet without the tracks assigned to a pile-up vertex."""
    return pt_mass(*four_momentum_sum(jets, _chs_keep(jets)))


def area_subtracted(jets, radius: float, with_chs: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """The jet minus rho and rho_m times its area four-vector (area pi ``radius``^2)."""
    keep = _chs_keep(jets) if with_chs else ak.ones_like(jets["part_px"], dtype=bool)
    px, py, pz, energy = four_momentum_sum(jets, keep)
    suffix = "_chs" if with_chs else ""
    rho = np.asarray(jets[f"jet_rho{suffix}"], dtype=np.float64)
    rho_m = np.asarray(jets[f"jet_rho_m{suffix}"], dtype=np.float64)
    pt = np.hypot(px, py)
    phi = np.arctan2(py, px)
    with np.errstate(divide="ignore", invalid="ignore"):
        y = np.where(energy > np.abs(pz), 0.5 * np.log((energy + pz) / (energy - pz)), 0.0)
    transverse, longitudinal = disc_area_factors(radius)
    sub = [rho * transverse * np.cos(phi), rho * transverse * np.sin(phi)]
    sub += [(rho + rho_m) * longitudinal * np.sinh(y), (rho + rho_m) * longitudinal * np.cosh(y)]
    corrected = pt_mass(px - sub[0], py - sub[1], pz - sub[2], energy - sub[3])
    gone = pt <= rho * transverse
    return np.where(gone, 0.0, corrected[0]), np.where(gone, 0.0, corrected[1])


@functools.cache
def disc_area_factors(radius: float, step: float = 0.005) -> tuple[float, float]:
    """The area four-vector of a disc of ``radius`` around an axis at rapidity y and azimuth phi is
    ``(T cos phi, T sin phi, L sinh y, L cosh y)``: returns ``(T, L)``, the integrals of
    cos(d phi) and cosh(d y) over the disc (ghosts on a grid of ``step``; by symmetry the sine
    terms vanish). Both tend to pi R^2 for small R; its mass is sqrt(L^2 - T^2)."""
    grid = np.arange(-radius + step / 2, radius, step)
    dy, dphi = np.meshgrid(grid, grid, indexing="ij")
    inside = dy**2 + dphi**2 < radius**2
    return float(np.cos(dphi[inside]).sum() * step**2), float(np.cosh(dy[inside]).sum() * step**2)


def softkiller(jets, with_chs: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """The jet without its constituents below the SoftKiller pT cut."""
    cut = np.asarray(jets["jet_softkiller_pt_chs" if with_chs else "jet_softkiller_pt"], dtype=np.float64)
    keep = np.hypot(jets["part_px"], jets["part_py"]) >= cut
    if with_chs:
        keep = keep & _chs_keep(jets)
    return pt_mass(*four_momentum_sum(jets, keep))


def corrected(jets, method: str, radius: float) -> tuple[np.ndarray, np.ndarray]:
    """pT and mass (GeV) of every jet after ``method`` (one of :data:`METHODS`)."""
    if method == "none":
        return uncorrected(jets)
    if method == "chs":
        return chs(jets)
    if method in ("area", "chs_area"):
        return area_subtracted(jets, radius, with_chs=method == "chs_area")
    if method in ("softkiller", "chs_softkiller"):
        return softkiller(jets, with_chs=method == "chs_softkiller")
    raise ValueError(f"unknown pile-up correction {method!r}; known: {', '.join(METHODS)}")


def _chs_keep(jets: Mapping) -> ak.Array:
    return jets["part_pileup_vertex"] == 0
