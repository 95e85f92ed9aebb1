"""A parametric collider detector between the generator and jet clustering.

The model turns stable generator-level particles into the objects a particle-flow
reconstruction would hand to a jet algorithm: tracks, ECAL cells and HCAL cells. It is
vectorised over a whole batch of events (flat numpy arrays plus per-event counts); no Python
loop runs over events or particles.

What happens to each stable particle
------------------------------------
- Neutrinos leave nothing.
- Charged particles with ``pT > track_pt_min`` inside ``|eta| < tracker_abs_eta_max`` are
  reconstructed as tracks with probability ``track_efficiency(pT, eta)``. A track keeps the
  particle's direction; its transverse momentum is smeared with the relative resolution
  ``sigma(pT)/pT = track_resolution_constant (+) track_resolution_linear * pT`` (added in
  quadrature, pT in GeV). The energy is recomputed with the particle's true mass. Tracked
  charged particles leave no calorimeter cell: their calorimeter deposits are assumed to be
  subtracted perfectly by the particle-flow algorithm.
- Charged particles below ``track_pt_min`` curl up in the solenoid field and reach no
  calorimeter; they are lost.
- Untracked muons pass through the calorimeters as minimum-ionising particles and are lost.
- Photons and untracked electrons deposit their energy in the ECAL; neutral hadrons and
  untracked charged hadrons deposit theirs in the HCAL (only within ``calo_abs_eta_max``).
- Deposits are merged per calorimeter cell (a regular eta x phi grid per layer). The summed
  cell energy E is smeared with a Gaussian of relative width
  ``sigma(E)/E = stochastic / sqrt(E) (+) constant`` (E in GeV, in quadrature), negative values
  are set to zero, and cells below the layer's energy threshold are dropped. A cell becomes a
  massless object pointing at the cell centre.

What the calorimeters measured
------------------------------
Besides the particle-flow objects above, :func:`simulate` returns the cells the calorimeters
themselves measured (:class:`CalorimeterCells`, one per layer), from which calorimeter jet
images are made. They come from *every* particle that reaches the calorimeter inside
``calo_abs_eta_max``, tracked or not: photons and electrons in the ECAL, charged and neutral
hadrons in the HCAL. Neutrinos and muons leave nothing, and charged particles with
``pT <= track_pt_min`` curl up before reaching it. Deposits are merged, smeared and thresholded
with the same layer parameters as above. Each cell's Gaussian fluctuation is drawn once and
shared with the particle-flow cell of the same position, so where a cell holds only untracked
deposits both views measure exactly the same energy.

Default parameters (GeV, radians in eta-phi space)
--------------------------------------------------
Chosen to resemble a general-purpose LHC detector (the ATLAS/CMS Delphes cards of the
top-tagging reference sample are of this order):

================================  ==========================================
tracker acceptance                |eta| < 2.5, pT > 0.5 GeV
track efficiency                  0.70 (pT < 1 GeV), 0.95 (|eta| < 1.5), 0.85 (1.5 < |eta| < 2.5)
track pT resolution               1 % (+) 0.015 % x pT/GeV  (2.5 % at 100 GeV)
calorimeter acceptance            |eta| < 3.0
ECAL cell                         0.025 x 0.025 (eta x phi), threshold 0.5 GeV
ECAL resolution                   10 % / sqrt(E) (+) 1 %
HCAL cell                         0.1 x 0.1 (eta x phi), threshold 1.0 GeV
HCAL resolution                   50 % / sqrt(E) (+) 3 %
================================  ==========================================

Reconstructed particle identities
---------------------------------
Each object gets a reconstructed PDG id as particle flow would assign it: tracks are
electrons (+-11) or muons (+-13) when the true particle was one (perfect lepton identification)
and charged pions (+-211) otherwise; ECAL cells are photons (22) and HCAL cells neutral
hadrons (130). ``KIND_*`` constants give the object category.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from hepnn.utils import validation as check

KIND_CHARGED_HADRON = 0
KIND_ELECTRON = 1
KIND_MUON = 2
KIND_PHOTON = 3
KIND_NEUTRAL_HADRON = 4

_NEUTRINOS = (12, 14, 16)


@dataclass(frozen=True)
class CalorimeterLayer:
    """One calorimeter layer: a regular eta x phi cell grid with a resolution and a threshold.

    ``cell_eta`` is the cell size in pseudorapidity, ``cell_phi`` the requested cell size in
    azimuth (rad; rounded so that an integer number of cells covers 2 pi), ``stochastic`` in
    sqrt(GeV), ``constant`` dimensionless, ``threshold`` in GeV.
    """

    cell_eta: float
    cell_phi: float
    stochastic: float
    constant: float
    threshold: float

    @property
    def n_phi(self) -> int:
        """Number of cells around the full azimuth."""
        return max(1, round(2 * np.pi / self.cell_phi))

    def relative_resolution(self, energy: np.ndarray) -> np.ndarray:
        """sigma(E)/E for cell energies ``energy`` in GeV."""
        safe = np.maximum(energy, 1e-9)
        return np.hypot(self.stochastic / np.sqrt(safe), self.constant)


@dataclass(frozen=True)
class DetectorConfig:
    """Parameters of the parametric detector; see the module docstring for their meaning."""

    tracker_abs_eta_max: float = 2.5
    track_pt_min: float = 0.5
    track_efficiency_low_pt: float = 0.70
    track_efficiency_central: float = 0.95
    track_efficiency_forward: float = 0.85
    track_low_pt_max: float = 1.0
    track_central_abs_eta_max: float = 1.5
    track_resolution_constant: float = 0.01
    track_resolution_linear: float = 1.5e-4
    calo_abs_eta_max: float = 3.0
    ecal: CalorimeterLayer = CalorimeterLayer(0.025, 0.025, 0.10, 0.01, 0.5)
    hcal: CalorimeterLayer = CalorimeterLayer(0.1, 0.1, 0.50, 0.03, 1.0)

    @classmethod
    def from_dict(cls, values: dict | None) -> DetectorConfig:
        """Build from a (Hydra) mapping; ``ecal``/``hcal`` are mappings of CalorimeterLayer fields."""
        values = dict(check.mapping(values or {}, "generate.detector", sorted(cls.__dataclass_fields__)))
        for layer in ("ecal", "hcal"):
            if layer in values and not isinstance(values[layer], CalorimeterLayer):
                base = getattr(cls(), layer).__dict__ | dict(values[layer])
                values[layer] = CalorimeterLayer(**base)
        return cls(**values)


@dataclass
class CalorimeterCells:
    """Flat arrays of the measured cells of one calorimeter layer for a batch of events.

    ``counts[i]`` cells belong to event ``i``; ``eta`` and ``phi`` (rad, in [-pi, pi)) are the
    cell centre, ``energy`` the smeared cell energy in GeV (above the layer's threshold).
    ``pileup_fraction`` is the fraction of the cell's deposited energy that came from pile-up
    particles (0 without pile-up): the cell's pile-up energy is ``energy * pileup_fraction``.
    """

    eta: np.ndarray
    phi: np.ndarray
    energy: np.ndarray
    counts: np.ndarray
    pileup_fraction: np.ndarray


@dataclass
class DetectedObjects:
    """Flat arrays of reconstructed objects of a batch of events.

    ``counts[i]`` objects belong to event ``i``; momenta in GeV, ``kind`` one of ``KIND_*``.
    ``ecal`` and ``hcal`` hold what the calorimeters measured from all particles reaching them
    (tracked ones included; see the module docstring). With pile-up, ``pileup_fraction`` is the
    truth (1 for a track of a pile-up particle, the pile-up share of the energy of a cell) and
    ``pileup_vertex`` marks the tracks the tracker assigns to a pile-up vertex (what
    charged-hadron subtraction removes); both zero without pile-up.
    """

    px: np.ndarray
    py: np.ndarray
    pz: np.ndarray
    energy: np.ndarray
    charge: np.ndarray
    pid: np.ndarray
    kind: np.ndarray
    counts: np.ndarray
    ecal: CalorimeterCells
    hcal: CalorimeterCells
    pileup_fraction: np.ndarray
    pileup_vertex: np.ndarray


def pseudorapidity(px: np.ndarray, py: np.ndarray, pz: np.ndarray) -> np.ndarray:
    """Pseudorapidity of momenta; +-inf along the beam axis."""
    pt = np.hypot(px, py)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(pt > 0, np.arcsinh(pz / np.where(pt > 0, pt, 1.0)), np.copysign(np.inf, pz))


def track_efficiency(pt: np.ndarray, abs_eta: np.ndarray, cfg: DetectorConfig) -> np.ndarray:
    """Probability to reconstruct a charged particle of transverse momentum ``pt`` (GeV) as a track."""
    eff = np.where(
        abs_eta < cfg.track_central_abs_eta_max, cfg.track_efficiency_central, cfg.track_efficiency_forward
    )
    eff = np.where(pt < cfg.track_low_pt_max, cfg.track_efficiency_low_pt, eff)
    inside = (pt > cfg.track_pt_min) & (abs_eta < cfg.tracker_abs_eta_max)
    return np.where(inside, eff, 0.0)


def simulate(
    px: np.ndarray,
    py: np.ndarray,
    pz: np.ndarray,
    energy: np.ndarray,
    pdg_id: np.ndarray,
    charge: np.ndarray,
    counts: np.ndarray,
    rng: np.random.Generator,
    cfg: DetectorConfig,
    pileup: np.ndarray | None = None,
    separable: np.ndarray | None = None,
    vertex_efficiency: float = 0.0,
) -> DetectedObjects:
    """Detector response to the stable particles of a batch of events.

    Inputs are flat arrays over all particles of all events (``counts`` per event), momenta and
    energies in GeV, ``charge`` in units of e. Returns the particle-flow objects (tracks followed
    by ECAL then HCAL cells of untracked particles, grouped by event) and the cells measured by
    each calorimeter layer from all particles reaching it.

    ``pileup`` marks the particles of pile-up collisions: their origin is followed into the
    objects and cells. Each track of a pile-up particle whose vertex is ``separable`` from the
    hard vertex (all, if not given) is assigned to that pile-up vertex with probability
    ``vertex_efficiency``, drawn after everything else, so that a batch without pile-up gets
    exactly the objects it gets without these arguments.
    """
    event = np.repeat(np.arange(len(counts)), counts)
    abs_id = np.abs(pdg_id)
    pt = np.hypot(px, py)
    eta = pseudorapidity(px, py, pz)
    phi = np.arctan2(py, px)
    mass2 = np.maximum(energy**2 - pt**2 - pz**2, 0.0)

    visible = ~np.isin(abs_id, _NEUTRINOS)
    charged = (charge != 0) & visible
    tracked = charged & (rng.random(len(pt)) < track_efficiency(pt, np.abs(eta), cfg))
    lost_low_pt = charged & (pt <= cfg.track_pt_min)
    reaches_calo = visible & ~lost_low_pt & (abs_id != 13) & (np.abs(eta) < cfg.calo_abs_eta_max)
    electromagnetic = (abs_id == 22) | (abs_id == 11)

    origin = np.zeros(len(pt)) if pileup is None else np.asarray(pileup, dtype=np.float64)
    tracks = _smear_tracks(px, py, pz, mass2, pt, charge, abs_id, tracked, rng, cfg)
    ecal, ecal_cells = _calorimeter_cells(
        event,
        eta,
        phi,
        energy,
        reaches_calo & electromagnetic,
        tracked,
        len(counts),
        cfg.ecal,
        cfg,
        rng,
        origin,
    )
    hcal, hcal_cells = _calorimeter_cells(
        event,
        eta,
        phi,
        energy,
        reaches_calo & ~electromagnetic,
        tracked,
        len(counts),
        cfg.hcal,
        cfg,
        rng,
        origin,
    )
    track_vertex = np.zeros(int(tracked.sum()))
    if pileup is not None:
        apart = np.ones(len(pt), dtype=bool) if separable is None else np.asarray(separable, dtype=bool)
        track_vertex = (
            (origin[tracked] > 0) & apart[tracked] & (rng.random(int(tracked.sum())) < vertex_efficiency)
        )

    parts = [
        (event[tracked], *tracks, origin[tracked], track_vertex.astype(np.float64)),
        (
            *ecal[:5],
            np.zeros_like(ecal[1]),
            np.full_like(ecal[1], 22, dtype=np.int32),
            np.full_like(ecal[1], KIND_PHOTON, dtype=np.int8),
            ecal[5],
            np.zeros_like(ecal[1]),
        ),
        (
            *hcal[:5],
            np.zeros_like(hcal[1]),
            np.full_like(hcal[1], 130, dtype=np.int32),
            np.full_like(hcal[1], KIND_NEUTRAL_HADRON, dtype=np.int8),
            hcal[5],
            np.zeros_like(hcal[1]),
        ),
    ]
    columns = [np.concatenate(c) for c in zip(*parts, strict=True)]
    order = np.argsort(columns[0], kind="stable")
    ev, opx, opy, opz, oe, och, opid, okind, ofraction, overtex = (c[order] for c in columns)
    return DetectedObjects(
        px=opx,
        py=opy,
        pz=opz,
        energy=oe,
        charge=och.astype(np.int32),
        pid=opid.astype(np.int32),
        kind=okind.astype(np.int8),
        counts=np.bincount(ev, minlength=len(counts)),
        ecal=ecal_cells,
        hcal=hcal_cells,
        pileup_fraction=ofraction,
        pileup_vertex=overtex.astype(bool),
    )


def _smear_tracks(px, py, pz, mass2, pt, charge, abs_id, tracked, rng, cfg: DetectorConfig):
    """Smeared track momenta (GeV), charges, reconstructed PDG ids and kinds of tracked particles."""
    pt_t = pt[tracked]
    sigma = np.hypot(cfg.track_resolution_constant, cfg.track_resolution_linear * pt_t)
    scale = np.maximum(1.0 + sigma * rng.standard_normal(len(pt_t)), 0.01)
    tpx, tpy, tpz = px[tracked] * scale, py[tracked] * scale, pz[tracked] * scale
    tenergy = np.sqrt(tpx**2 + tpy**2 + tpz**2 + mass2[tracked])
    tcharge = charge[tracked]
    sign = np.sign(tcharge).astype(np.int32)
    tid = abs_id[tracked]
    is_electron, is_muon = tid == 11, tid == 13
    # PDG convention: e-, mu- have positive ids; pi+ positive.
    pid = np.where(is_electron, -11 * sign, np.where(is_muon, -13 * sign, 211 * sign))
    kind = np.where(is_electron, KIND_ELECTRON, np.where(is_muon, KIND_MUON, KIND_CHARGED_HADRON))
    return tpx, tpy, tpz, tenergy, tcharge, pid, kind


def _calorimeter_cells(
    event,
    eta,
    phi,
    energy,
    deposits,
    tracked,
    n_events,
    layer: CalorimeterLayer,
    cfg: DetectorConfig,
    rng,
    origin: np.ndarray,
):
    """Cells of one layer from the particles ``deposits`` that reach it.

    Returns the particle-flow cells (deposits of untracked particles only) as massless objects
    ``(event, px, py, pz, energy, pile-up fraction)`` and the measured cells of all deposits as
    :class:`CalorimeterCells` (GeV, rad). Both are merged per cell, smeared and thresholded; a
    cell's Gaussian fluctuation is drawn once and used in both. ``origin`` is 1 for pile-up
    particles: a cell's pile-up fraction is the share of its deposited energy they brought.
    """
    n_eta = int(np.ceil(2 * cfg.calo_abs_eta_max / layer.cell_eta))
    n_phi = layer.n_phi
    i_eta = np.clip(((eta[deposits] + cfg.calo_abs_eta_max) / layer.cell_eta).astype(np.int64), 0, n_eta - 1)
    i_phi = np.clip(((phi[deposits] + np.pi) / (2 * np.pi) * n_phi).astype(np.int64), 0, n_phi - 1)
    key = (event[deposits].astype(np.int64) * n_eta + i_eta) * n_phi + i_phi
    deposit_energy = energy[deposits]

    cells, inverse = np.unique(key, return_inverse=True)
    fluctuation = rng.standard_normal(len(cells))
    deposited = np.bincount(inverse, weights=deposit_energy, minlength=len(cells))
    from_pileup = np.bincount(inverse, weights=deposit_energy * origin[deposits], minlength=len(cells))
    cell_energy = _smear(deposited, fluctuation, layer)

    untracked = ~tracked[deposits]
    pf_cells, pf_inverse = np.unique(key[untracked], return_inverse=True)
    pf_deposited = np.bincount(pf_inverse, weights=deposit_energy[untracked], minlength=len(pf_cells))
    pf_from_pileup = np.bincount(
        pf_inverse, weights=(deposit_energy * origin[deposits])[untracked], minlength=len(pf_cells)
    )
    pf_energy = _smear(pf_deposited, fluctuation[np.searchsorted(cells, pf_cells)], layer)

    keep = cell_energy > layer.threshold
    measured_event, measured_eta, measured_phi = _cell_centres(cells[keep], n_eta, n_phi, layer, cfg)
    measured = CalorimeterCells(
        eta=measured_eta,
        phi=measured_phi,
        energy=cell_energy[keep],
        counts=np.bincount(measured_event, minlength=n_events),
        pileup_fraction=_fraction(from_pileup[keep], deposited[keep]),
    )

    keep = pf_energy > layer.threshold
    pf_fraction = _fraction(pf_from_pileup[keep], pf_deposited[keep])
    pf_energy = pf_energy[keep]
    pf_event, pf_eta, pf_phi = _cell_centres(pf_cells[keep], n_eta, n_phi, layer, cfg)
    pf_pt = pf_energy / np.cosh(pf_eta)
    particle_flow = (
        pf_event,
        pf_pt * np.cos(pf_phi),
        pf_pt * np.sin(pf_phi),
        pf_pt * np.sinh(pf_eta),
        pf_energy,
        pf_fraction,
    )
    return particle_flow, measured


def _fraction(part: np.ndarray, total: np.ndarray) -> np.ndarray:
    """``part / total``, 0 where the total is 0 (GeV / GeV)."""
    return np.divide(part, total, out=np.zeros(np.shape(part)), where=total > 0)


def _smear(cell_energy: np.ndarray, fluctuation: np.ndarray, layer: CalorimeterLayer) -> np.ndarray:
    """Cell energies (GeV) smeared by ``fluctuation`` (standard normal) times the layer's resolution."""
    smeared = cell_energy * (1.0 + layer.relative_resolution(cell_energy) * fluctuation)
    return np.maximum(smeared, 0.0)


def _cell_centres(cells: np.ndarray, n_eta: int, n_phi: int, layer: CalorimeterLayer, cfg: DetectorConfig):
    """Event index, eta and phi (rad) of the centres of cells given by their flat keys."""
    cell_event = cells // (n_eta * n_phi)
    cell_eta = -cfg.calo_abs_eta_max + ((cells // n_phi) % n_eta + 0.5) * layer.cell_eta
    cell_phi = -np.pi + (cells % n_phi + 0.5) * (2 * np.pi / n_phi)
    return cell_event, cell_eta, cell_phi
