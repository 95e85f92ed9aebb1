"""Jets from Pythia 8 events, through the parametric detector, clustered with FastJet.

Physics of the default top-tagging sample (the conditions of the public top-tagging reference
sample): proton-proton collisions at sqrt(s) = 14 TeV; signal: hadronic ttbar (both W bosons
forced to quarks); background: QCD dijets (``HardQCD:all``). The hard-process transverse
momentum is restricted to a window around the jet-pT window so that most events give jets in
range. Particles with c*tau > 10 mm are stable (K0S and Lambda reach the detector). Stable
particles go through :mod:`hepnn.sim.detector`; tracks and calorimeter cells are clustered
with anti-kT (default R = 0.8). Of the two leading jets of an event, those with
``pt_min < pT < pt_max`` (GeV) and ``|eta| < abs_eta_max`` are kept. For top jets the three
decay quarks of one top (b and the two quarks of its W, taken at the hard-process level before
showering) must all lie within Delta R < R of the jet axis.

Everything here works on whole batches of events as awkward arrays; no Python loop runs over
events, jets or particles.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field

import awkward as ak
import numpy as np

from hepnn.sim import detector

# Pythia settings shared by every process (beam energy and window are added per sample).
COMMON_PYTHIA_SETTINGS = (
    "Print:quiet = on",
    "Next:numberCount = 0",
    "ParticleDecays:limitTau0 = on",
    "ParticleDecays:tau0Max = 10",
    "Random:setSeed = on",
)


@dataclass(frozen=True)
class Process:
    """A generator process: its Pythia settings and the truth matching its jets need.

    ``match`` is ``"top_bqq"`` (the b and both W-decay quarks of one top inside the jet) or
    ``"none"``. ``truth_status`` selects the hard partons whose kinematics are stored with each
    jet (the nearest within Delta R < R): |status| 62 for the top before its decay, 23 for the
    outgoing partons of the hard 2 -> 2 scattering.
    """

    name: str
    settings: tuple[str, ...]
    match: str = "none"
    truth_status: int = 23
    truth_abs_ids: tuple[int, ...] = (1, 2, 3, 4, 5, 21)


PROCESSES: dict[str, Process] = {
    "ttbar": Process(
        name="ttbar",
        settings=("Top:gg2ttbar = on", "Top:qqbar2ttbar = on", "24:onMode = off", "24:onIfAny = 1 2 3 4 5"),
        match="top_bqq",
        truth_status=62,
        truth_abs_ids=(6,),
    ),
    "qcd": Process(name="qcd", settings=("HardQCD:all = on",)),
}


@dataclass(frozen=True)
class JetSelection:
    """Jet definition and selection: anti-kT radius, pT window (GeV), |eta| cut, jets per event."""

    radius: float = 0.8
    pt_min: float = 550.0
    pt_max: float = 650.0
    abs_eta_max: float = 2.0
    max_jets_per_event: int = 2


@dataclass(frozen=True)
class PythiaSetup:
    """Beam energy and hard-process pT window (GeV) for Pythia; extra settings are appended."""

    ecm: float = 14000.0
    pthat_min: float = 500.0
    pthat_max: float = 700.0
    extra_settings: tuple[str, ...] = field(default_factory=tuple)


def pythia_settings(process: Process, setup: PythiaSetup, seed: int) -> list[str]:
    """All Pythia ``readString`` lines for one seeded generator of ``process``."""
    return [
        *COMMON_PYTHIA_SETTINGS,
        f"Beams:eCM = {setup.ecm}",
        f"PhaseSpace:pTHatMin = {setup.pthat_min}",
        f"PhaseSpace:pTHatMax = {setup.pthat_max}",
        f"Random:seed = {seed}",
        *process.settings,
        *setup.extra_settings,
    ]


def make_pythia(process: Process, setup: PythiaSetup, seed: int):
    """An initialised ``pythia8mc.Pythia`` for ``process``; raises if Pythia rejects a setting."""
    import pythia8mc

    pythia = pythia8mc.Pythia("", False)
    for line in pythia_settings(process, setup, seed):
        if not pythia.readString(line):
            raise ValueError(f"Pythia rejected the setting {line!r} of process {process.name!r}")
    if not pythia.init():
        raise RuntimeError(f"Pythia failed to initialise process {process.name!r}")
    return pythia


class ChargeTable:
    """Electric charge (units of e) of PDG ids, looked up once per distinct id in Pythia's tables."""

    def __init__(self, particle_data):
        self._particle_data = particle_data
        self._cache: dict[int, float] = {}

    def __call__(self, pdg_ids: np.ndarray) -> np.ndarray:
        unique, inverse = np.unique(pdg_ids, return_inverse=True)
        charges = np.array([self._charge(int(i)) for i in unique], dtype=np.float64)
        return charges[inverse]

    def _charge(self, pdg_id: int) -> float:
        if pdg_id not in self._cache:
            self._cache[pdg_id] = float(self._particle_data.charge(pdg_id))
        return self._cache[pdg_id]


@functools.cache
def _fastjet():
    """The fastjet module with its per-process banner silenced (the README cites FastJet)."""
    import fastjet
    import fastjet._swig

    fastjet._swig.ClusterSequence.set_fastjet_banner_stream(None)
    return fastjet


def _eta_phi(px, py, pz):
    return detector.pseudorapidity(px, py, pz), np.arctan2(py, px)


def delta_phi(a, b):
    """phi difference wrapped into [-pi, pi)."""
    return (a - b + np.pi) % (2 * np.pi) - np.pi


def jets_from_events(
    events: ak.Array,
    process: Process,
    charges: ChargeTable,
    rng: np.random.Generator,
    detector_cfg: detector.DetectorConfig,
    selection: JetSelection,
) -> dict[str, np.ndarray | ak.Array]:
    """Selected jets of a batch of Pythia events (``Pythia.nextBatch`` output) as flat columns.

    Returns a mapping of column name to array with one entry per selected jet: jagged ``part_*``
    constituent columns sorted by decreasing pT and scalar ``jet_*`` / ``aux_parton_*`` columns.
    Momenta and energies are in GeV.
    """
    fastjet = _fastjet()
    prt = events.prt
    final = prt[prt.status > 0]
    counts = ak.to_numpy(ak.num(final, axis=1))
    mom = final.p
    flat = {k: ak.to_numpy(ak.flatten(getattr(mom, k))) for k in ("px", "py", "pz", "e")}
    ids = ak.to_numpy(ak.flatten(final.id))
    det = detector.simulate(
        flat["px"], flat["py"], flat["pz"], flat["e"], ids, charges(ids), counts, rng, detector_cfg
    )

    objects = ak.unflatten(ak.zip({"px": det.px, "py": det.py, "pz": det.pz, "E": det.energy}), det.counts)
    sequence = fastjet.ClusterSequence(
        objects, fastjet.JetDefinition(fastjet.antikt_algorithm, selection.radius)
    )
    jets = sequence.inclusive_jets(0.5 * selection.pt_min)
    constituent_index = sequence.constituent_index(0.5 * selection.pt_min)

    jet_px, jet_py, jet_pz = jets.px, jets.py, jets.pz
    jet_pt = np.hypot(jet_px, jet_py)
    jet_eta, jet_phi = _eta_phi(jet_px, jet_py, jet_pz)
    leading = ak.argsort(jet_pt, axis=1, ascending=False)[:, : selection.max_jets_per_event]
    keep = (
        (jet_pt[leading] > selection.pt_min)
        & (jet_pt[leading] < selection.pt_max)
        & (np.abs(jet_eta[leading]) < selection.abs_eta_max)
    )
    chosen = leading[keep]
    if process.match == "top_bqq":
        chosen = chosen[_top_decay_quarks_inside(prt, jet_eta[chosen], jet_phi[chosen], selection.radius)]
    elif process.match != "none":
        raise ValueError(f"process {process.name!r}: unknown truth matching {process.match!r}")

    offsets = np.concatenate([[0], np.cumsum(det.counts)[:-1]])
    per_event_index = constituent_index[chosen] + offsets  # (events, jets, constituents), global
    n_jets_per_event = ak.num(per_event_index, axis=1)
    jet_constituents = ak.flatten(per_event_index, axis=1)  # (jets, constituents)
    flat_index = ak.to_numpy(ak.flatten(jet_constituents))
    n_const = ak.to_numpy(ak.num(jet_constituents, axis=1))

    def per_jet(values: np.ndarray) -> ak.Array:
        return ak.unflatten(values[flat_index], n_const)

    part = {
        "px": per_jet(det.px),
        "py": per_jet(det.py),
        "pz": per_jet(det.pz),
        "energy": per_jet(det.energy),
        "charge": per_jet(det.charge),
        "pid": per_jet(det.pid),
        "kind": per_jet(det.kind),
    }
    order = ak.argsort(np.hypot(part["px"], part["py"]), axis=1, ascending=False)
    part = {k: v[order] for k, v in part.items()}

    columns = _jet_columns(part)
    columns.update(_truth_parton_columns(prt, process, chosen, jet_eta, jet_phi, selection.radius))
    assert len(columns["jet_pt"]) == int(ak.sum(n_jets_per_event))
    return columns


def _jet_columns(part: dict[str, ak.Array]) -> dict[str, np.ndarray | ak.Array]:
    """JetClass-schema columns (``part_*`` jagged, ``jet_*`` scalar) from sorted constituents (GeV)."""
    jet_px, jet_py, jet_pz, jet_e = (
        ak.to_numpy(ak.sum(part[k], axis=1)) for k in ("px", "py", "pz", "energy")
    )
    jet_pt = np.hypot(jet_px, jet_py)
    jet_eta, jet_phi = _eta_phi(jet_px, jet_py, jet_pz)
    jet_mass = np.sqrt(np.maximum(jet_e**2 - jet_px**2 - jet_py**2 - jet_pz**2, 0.0))
    part_eta, part_phi = _eta_phi(part["px"], part["py"], part["pz"])
    kind = part["kind"]
    f32 = np.float32
    return {
        "part_px": ak.values_astype(part["px"], f32),
        "part_py": ak.values_astype(part["py"], f32),
        "part_pz": ak.values_astype(part["pz"], f32),
        "part_energy": ak.values_astype(part["energy"], f32),
        "part_deta": ak.values_astype(part_eta - jet_eta, f32),
        "part_dphi": ak.values_astype(delta_phi(part_phi, jet_phi), f32),
        "part_charge": ak.values_astype(part["charge"], f32),
        "part_pid": ak.values_astype(part["pid"], np.int32),
        "part_isChargedHadron": ak.values_astype(kind == detector.KIND_CHARGED_HADRON, f32),
        "part_isNeutralHadron": ak.values_astype(kind == detector.KIND_NEUTRAL_HADRON, f32),
        "part_isPhoton": ak.values_astype(kind == detector.KIND_PHOTON, f32),
        "part_isElectron": ak.values_astype(kind == detector.KIND_ELECTRON, f32),
        "part_isMuon": ak.values_astype(kind == detector.KIND_MUON, f32),
        "jet_pt": jet_pt.astype(f32),
        "jet_eta": jet_eta.astype(f32),
        "jet_phi": jet_phi.astype(f32),
        "jet_energy": jet_e.astype(f32),
        "jet_mass": jet_mass.astype(f32),
        "jet_nparticles": ak.to_numpy(ak.num(part["px"], axis=1)).astype(f32),
    }


def _top_decay_quarks_inside(prt: ak.Array, jet_eta: ak.Array, jet_phi: ak.Array, radius: float) -> ak.Array:
    """Per event and jet: are the b and both W-decay quarks of one top within ``radius`` of the jet?

    The decay quarks are the first copies (|status| 23) of quarks whose mother is a top or a W;
    the sign of the mother's id tells which top (t -> W+ b, tbar -> W- bbar) they belong to.
    """
    mother_id = prt.id[prt.mother1]
    is_decay_quark = (
        (np.abs(prt.status) == 23)
        & (np.abs(prt.id) <= 5)
        & ((np.abs(mother_id) == 6) | (np.abs(mother_id) == 24))
    )
    quarks = prt[is_decay_quark]
    top_sign = np.sign(mother_id[is_decay_quark])
    q_eta, q_phi = _eta_phi(quarks.p.px, quarks.p.py, quarks.p.pz)
    pairs_eta = ak.cartesian([jet_eta, q_eta], axis=1, nested=True)
    pairs_phi = ak.cartesian([jet_phi, q_phi], axis=1, nested=True)
    _, sign = ak.unzip(ak.cartesian([jet_eta, top_sign], axis=1, nested=True))
    d_eta = pairs_eta["0"] - pairs_eta["1"]
    d_phi = delta_phi(pairs_phi["1"], pairs_phi["0"])
    inside = np.hypot(d_eta, d_phi) < radius
    from_top = ak.sum(inside & (sign > 0), axis=2) == 3
    from_antitop = ak.sum(inside & (sign < 0), axis=2) == 3
    return from_top | from_antitop


def _truth_parton_columns(prt, process: Process, chosen, jet_eta, jet_phi, radius) -> dict[str, np.ndarray]:
    """PDG id and pT (GeV), eta, phi of the hard parton nearest to each jet (id 0 if none within R)."""
    abs_id = np.abs(prt.id)
    is_truth = np.abs(prt.status) == process.truth_status
    is_truth = is_truth & functools.reduce(np.logical_or, [abs_id == i for i in process.truth_abs_ids])
    partons = prt[is_truth]
    p_eta, p_phi = _eta_phi(partons.p.px, partons.p.py, partons.p.pz)
    p_pt = np.hypot(partons.p.px, partons.p.py)
    j_eta, j_phi = jet_eta[chosen], jet_phi[chosen]
    pe = ak.cartesian([j_eta, p_eta], axis=1, nested=True)
    pp = ak.cartesian([j_phi, p_phi], axis=1, nested=True)
    dr = np.hypot(pe["0"] - pe["1"], delta_phi(pp["1"], pp["0"]))
    nearest = ak.argmin(dr, axis=2, keepdims=True)
    found = ak.fill_none(ak.firsts(dr[nearest], axis=2), np.inf) < radius

    def pick(values):
        broadcast = ak.broadcast_arrays(j_eta[:, :, None], values[:, None, :])[1]
        return ak.to_numpy(ak.flatten(ak.fill_none(ak.firsts(broadcast[nearest], axis=2), 0.0))).astype(
            np.float64
        )

    found_flat = ak.to_numpy(ak.flatten(found))
    pid = np.where(found_flat, pick(partons.id), 0).astype(np.int32)
    return {
        "aux_parton_pid": pid,
        "aux_parton_pt": np.where(found_flat, pick(p_pt), 0.0).astype(np.float32),
        "aux_parton_eta": np.where(found_flat, pick(p_eta), 0.0).astype(np.float32),
        "aux_parton_phi": np.where(found_flat, pick(p_phi), 0.0).astype(np.float32),
    }
