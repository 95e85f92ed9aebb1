"""Jets from Pythia 8 events, through the parametric detector, clustered with FastJet.

Physics of the default top-tagging sample (the conditions of the public top-tagging reference
sample, Kasieczka et al., arXiv:1902.09914): proton-proton collisions at sqrt(s) = 14 TeV,
Pythia's default tune, no multiple parton interactions (``PythiaSetup.mpi``) and no pile-up;
signal: hadronic ttbar (both W bosons forced to quarks); background: QCD dijets
(``HardQCD:all``). The hard-process transverse
momentum is restricted to a window around the jet-pT window so that most events give jets in
range. Particles with c*tau > 10 mm are stable (K0S and Lambda reach the detector). Stable
particles go through :mod:`hepnn.sim.detector`; tracks and calorimeter cells are clustered
with anti-kT (default R = 0.8). Of the leading jets of an event (``max_jets_per_event``), those
with ``pt_min < pT < pt_max`` (GeV), ``|eta| < abs_eta_max`` and ``|y| < abs_rapidity_max``
(either cut may be ``None``) are kept. For top jets the three decay quarks of one top (b and the
two quarks of its W, taken at the hard-process level before showering) must all lie within
Delta R < R of the jet axis.

Other processes (:data:`PROCESSES`):

- ``wqq`` / ``zqq``: hadronic W and Z jets from a heavy W' (``NewGaugeBoson:ffbar2Wprime``,
  mass :data:`WPRIME_MASS` GeV so that the bosons' pT peaks in the 550-650 GeV window) forced to
  decay to W Z; for W jets W -> q q' and Z -> nu nu, for Z jets Z -> q q (q = d, u, s, c, b) and
  W -> e nu, mu nu. Both decay quarks of the boson must lie within R of the jet axis. Pythia's
  pT-hat window does not act on this 2 -> 1 process.
- ``zjet_q`` / ``zjet_g``: Z(-> nu nu) + jet, q g -> Z q (quark jets) and q qbar -> Z g (gluon
  jets), pure Z (``WeakZ0:gmZmode = 2``). A jet is kept only if the nearest outgoing hard parton
  (|status| 23) within R is a light quark (u, d or s: |id| 1-3, as in the EnergyFlow quark/gluon
  sample without b and c), respectively a gluon.

Besides the particle-flow constituents (``part_*``; tracks are the entries with
``part_charge != 0``), every jet stores the cells the calorimeters measured from all particles
(tracked ones included) within Delta R < R of the jet axis, for calorimeter jet images:
``cell_ecal_deta``, ``cell_ecal_dphi``, ``cell_ecal_energy`` and the same for ``hcal``
(float32; deta = cell eta - jet eta, dphi wrapped into [-pi, pi) in rad, energy in GeV; cell
centres; sorted by decreasing energy), and the substructure observables of its constituents
(``jet_tau1`` ... ``jet_d2``, :mod:`hepnn.sim.substructure`).

Everything here works on whole batches of events as awkward arrays; no Python loop runs over
events, jets or particles.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import awkward as ak
import numpy as np

from hepnn.errors import ConfigError
from hepnn.sim import detector, substructure, truth
from hepnn.sim.clustering import fastjet_module
from hepnn.utils import validation as check

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

    ``match`` is one of :data:`MATCHES`: ``"top_bqq"`` (the b and both W-decay quarks of one top
    inside the jet), ``"w_qq"`` / ``"z_qq"`` (both decay quarks of the W / Z inside the jet),
    ``"quark"`` / ``"gluon"`` (the nearest hard parton of ``truth_status`` within R is a u, d or s
    quark / a gluon) or ``"none"``. ``truth_status`` selects the hard particles whose kinematics are
    stored with each jet (the nearest within Delta R < R of ``truth_abs_ids``): |status| 62 for
    the top before its decay, 22 for a W or Z from a W' decay, 23 for the outgoing partons of
    the hard 2 -> 2 scattering.
    """

    name: str
    settings: tuple[str, ...]
    match: str = "none"
    truth_status: int = 23
    truth_abs_ids: tuple[int, ...] = (1, 2, 3, 4, 5, 21)


# W' mass (GeV) of the W and Z jet processes: the bosons' pT has its Jacobian peak near
# half the mass, just above the 550-650 GeV jet window (the jets lose some pT out of the cone).
WPRIME_MASS = 1250.0

_WPRIME_TO_WZ = (
    "NewGaugeBoson:ffbar2Wprime = on",
    "Wprime:coup2WZ = 1",  # default 0: no W' -> W Z
    f"34:m0 = {WPRIME_MASS}",
    "34:onMode = off",
    "34:onIfMatch = 24 23",
)
_Z_TO_NEUTRINOS = ("23:onMode = off", "23:onIfAny = 12 14 16")
_Z_PLUS_JET = ("WeakZ0:gmZmode = 2", *_Z_TO_NEUTRINOS)  # gmZmode 2: Z only, no gamma*

PROCESSES: dict[str, Process] = {
    "ttbar": Process(
        name="ttbar",
        settings=("Top:gg2ttbar = on", "Top:qqbar2ttbar = on", "24:onMode = off", "24:onIfAny = 1 2 3 4 5"),
        match="top_bqq",
        truth_status=62,
        truth_abs_ids=(6,),
    ),
    "qcd": Process(name="qcd", settings=("HardQCD:all = on",)),
    "wqq": Process(
        name="wqq",
        settings=(*_WPRIME_TO_WZ, "24:onMode = off", "24:onIfAny = 1 2 3 4 5", *_Z_TO_NEUTRINOS),
        match="w_qq",
        truth_status=22,
        truth_abs_ids=(24,),
    ),
    "zqq": Process(
        name="zqq",
        settings=(
            *_WPRIME_TO_WZ,
            "24:onMode = off",
            "24:onIfAny = 11 13",
            "23:onMode = off",
            "23:onIfAny = 1 2 3 4 5",
        ),
        match="z_qq",
        truth_status=22,
        truth_abs_ids=(23,),
    ),
    "zjet_q": Process(
        name="zjet_q", settings=("WeakBosonAndParton:qg2gmZq = on", *_Z_PLUS_JET), match="quark"
    ),
    "zjet_g": Process(
        name="zjet_g", settings=("WeakBosonAndParton:qqbar2gmZg = on", *_Z_PLUS_JET), match="gluon"
    ),
}

# Truth matchings on the decay quarks of a resonance: (|id| of the quarks' mothers, quarks required).
_DECAY_MATCHES = {"top_bqq": ((6, 24), 3), "w_qq": ((24,), 2), "z_qq": ((23,), 2)}
# Truth matchings on the nearest hard parton: its allowed |id|.
_PARTON_MATCHES = {"quark": (1, 2, 3), "gluon": (21,)}
MATCHES = ("none", *_DECAY_MATCHES, *_PARTON_MATCHES)


@dataclass(frozen=True)
class JetSelection:
    """Jet definition and selection: anti-kT radius, pT window (GeV), |eta| and |rapidity| cuts
    (``None``: no cut), leading jets considered per event."""

    radius: float = 0.8
    pt_min: float = 550.0
    pt_max: float = 650.0
    abs_eta_max: float | None = 2.0
    abs_rapidity_max: float | None = None
    max_jets_per_event: int = 2

    @classmethod
    def from_dict(cls, values: Mapping[str, object] | None) -> JetSelection:
        """Build from the ``generate.jet`` mapping, naming the offending key on errors."""
        values = dict(check.mapping(values or {}, "generate.jet", sorted(cls.__dataclass_fields__)))
        for key in ("radius", "pt_max"):
            if key in values:
                check.require(
                    check.is_number(values[key]) and values[key] > 0,
                    f"generate.jet.{key}",
                    "a positive number",
                    values[key],
                )
        if "pt_min" in values:
            check.non_negative_number(values["pt_min"], "generate.jet.pt_min", unit="GeV")
        check.positive_int(values.get("max_jets_per_event", 1), "generate.jet.max_jets_per_event")
        for key in ("abs_eta_max", "abs_rapidity_max"):
            if values.get(key) is not None:
                check.require(
                    check.is_number(values[key]) and values[key] > 0,
                    f"generate.jet.{key}",
                    "a positive number or null",
                    values[key],
                )
        return cls(**values)


@dataclass(frozen=True)
class PythiaSetup:
    """Beam energy and hard-process pT window (GeV) for Pythia, multiple parton interactions (the
    underlying event) on or off; extra settings are appended."""

    ecm: float = 14000.0
    pthat_min: float = 500.0
    pthat_max: float = 700.0
    mpi: bool = False
    extra_settings: tuple[str, ...] = field(default_factory=tuple)

    @classmethod
    def from_dict(cls, values: Mapping[str, object] | None) -> PythiaSetup:
        """Build from the ``generate.pythia`` mapping, naming the offending key on errors."""
        values = dict(check.mapping(values or {}, "generate.pythia", sorted(cls.__dataclass_fields__)))
        if "mpi" in values:
            check.boolean(values["mpi"], "generate.pythia.mpi")
        if "extra_settings" in values:
            extra = values["extra_settings"] or ()
            if isinstance(extra, str) or not all(isinstance(line, str) for line in extra):
                raise ConfigError(
                    f"generate.pythia.extra_settings must be a list of Pythia setting lines, got {extra!r}"
                )
            values["extra_settings"] = tuple(extra)
        for key in ("ecm", "pthat_min", "pthat_max"):
            if key in values:
                check.require(
                    check.is_number(values[key]) and values[key] >= 0,
                    f"generate.pythia.{key}",
                    "a non-negative number",
                    values[key],
                )
        return cls(**values)


def pythia_settings(process: Process, setup: PythiaSetup, seed: int) -> list[str]:
    """All Pythia ``readString`` lines for one seeded generator of ``process``."""
    return [
        *COMMON_PYTHIA_SETTINGS,
        f"Beams:eCM = {setup.ecm}",
        f"PhaseSpace:pTHatMin = {setup.pthat_min}",
        f"PhaseSpace:pTHatMax = {setup.pthat_max}",
        f"Random:seed = {seed}",
        f"PartonLevel:MPI = {'on' if setup.mpi else 'off'}",
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


def _eta_phi(px, py, pz):
    return detector.pseudorapidity(px, py, pz), np.arctan2(py, px)


def delta_phi(a, b):
    """phi difference wrapped into [-pi, pi)."""
    return (a - b + np.pi) % (2 * np.pi) - np.pi


@dataclass
class Reconstruction:
    """A batch of events through the detector and anti-kT: the objects, and the inclusive jets
    (``(events, jets)`` awkward arrays, GeV and rad) with their constituents' indices."""

    det: detector.DetectedObjects
    jets: ak.Array
    constituent_index: ak.Array
    pt: ak.Array
    eta: ak.Array
    phi: ak.Array


def final_state(events: ak.Array, charges: ChargeTable) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """The stable particles of a batch of Pythia events as flat arrays (``px, py, pz, e`` in GeV,
    ``pid``, ``charge`` in e) and the particles per event."""
    prt = events.prt
    final = prt[prt.status > 0]
    counts = ak.to_numpy(ak.num(final, axis=1))
    flat = {k: ak.to_numpy(ak.flatten(getattr(final.p, k))) for k in ("px", "py", "pz", "e")}
    flat["pid"] = ak.to_numpy(ak.flatten(final.id))
    flat["charge"] = charges(flat["pid"])
    return flat, counts


def reconstruct(
    flat: dict[str, np.ndarray],
    counts: np.ndarray,
    rng: np.random.Generator,
    detector_cfg: detector.DetectorConfig,
    selection: JetSelection,
    **pileup,
) -> Reconstruction:
    """Detector response and anti-kT jets above half the selection's pT threshold; ``pileup``
    (``pileup``, ``vertex_efficiency``) is passed to :func:`hepnn.sim.detector.simulate`."""
    fastjet = fastjet_module()
    det = detector.simulate(
        flat["px"],
        flat["py"],
        flat["pz"],
        flat["e"],
        flat["pid"],
        flat["charge"],
        counts,
        rng,
        detector_cfg,
        **pileup,
    )
    objects = ak.unflatten(ak.zip({"px": det.px, "py": det.py, "pz": det.pz, "E": det.energy}), det.counts)
    sequence = fastjet.ClusterSequence(
        objects, fastjet.JetDefinition(fastjet.antikt_algorithm, selection.radius)
    )
    jets = sequence.inclusive_jets(0.5 * selection.pt_min)
    eta, phi = _eta_phi(jets.px, jets.py, jets.pz)
    return Reconstruction(
        det, jets, sequence.constituent_index(0.5 * selection.pt_min), np.hypot(jets.px, jets.py), eta, phi
    )


def kinematic_selection(reco: Reconstruction, selection: JetSelection) -> ak.Array:
    """Indices ``(events, jets)`` of the leading jets that pass the pT, |eta| and |y| cuts."""
    leading = ak.argsort(reco.pt, axis=1, ascending=False)[:, : selection.max_jets_per_event]
    keep = (reco.pt[leading] > selection.pt_min) & (reco.pt[leading] < selection.pt_max)
    if selection.abs_eta_max is not None:
        keep = keep & (np.abs(reco.eta[leading]) < selection.abs_eta_max)
    if selection.abs_rapidity_max is not None:
        keep = keep & (np.abs(rapidity(reco.jets.E, reco.jets.pz)[leading]) < selection.abs_rapidity_max)
    return leading[keep]


def jets_from_events(
    events: ak.Array,
    process: Process,
    charges: ChargeTable,
    rng: np.random.Generator,
    detector_cfg: detector.DetectorConfig,
    selection: JetSelection,
    pileup=None,
) -> dict[str, np.ndarray | ak.Array]:
    """Selected jets of a batch of Pythia events (``Pythia.nextBatch`` output) as flat columns.

    Returns a mapping of column name to array with one entry per selected jet: jagged ``part_*``
    constituent columns sorted by decreasing pT and scalar ``jet_*`` / ``aux_parton_*`` columns.
    Momenta and energies are in GeV. With ``pileup`` (a :class:`hepnn.sim.pileup.PileupSource`),
    the jets are selected in the hard event alone and then reconstructed with pile-up overlaid
    (see :func:`_with_pileup`).
    """
    if process.match not in MATCHES:
        raise ValueError(
            f"process {process.name!r}: unknown truth matching {process.match!r}; known: {MATCHES}"
        )
    prt = events.prt
    flat, counts = final_state(events, charges)
    reco = reconstruct(flat, counts, rng, detector_cfg, selection)
    chosen = kinematic_selection(reco, selection)
    hard = truth.HardParticles.from_pythia(prt)
    n_chosen = ak.to_numpy(ak.num(chosen, axis=1))
    jet_event = np.repeat(np.arange(len(counts)), n_chosen)
    axis_eta = ak.to_numpy(ak.flatten(reco.eta[chosen]))
    axis_phi = ak.to_numpy(ak.flatten(reco.phi[chosen]))
    matched = np.ones(len(jet_event), dtype=bool)
    if process.match in _DECAY_MATCHES:
        mother_ids, n_quarks = _DECAY_MATCHES[process.match]
        matched &= truth.decay_quarks_inside(
            hard, jet_event, axis_eta, axis_phi, selection.radius, mother_ids, n_quarks
        )
    parton = truth.nearest_parton(
        hard, jet_event, axis_eta, axis_phi, selection.radius, process.truth_status, process.truth_abs_ids
    )
    if process.match in _PARTON_MATCHES:
        matched &= np.isin(np.abs(parton["pid"]), _PARTON_MATCHES[process.match])
    chosen = chosen[ak.unflatten(matched, n_chosen)]
    jet_event, axis_eta, axis_phi = jet_event[matched], axis_eta[matched], axis_phi[matched]
    aux = {f"aux_parton_{k}": v[matched] for k, v in parton.items()}
    columns = jet_columns(reco, chosen, jet_event, axis_eta, axis_phi, selection)
    if pileup is None:
        return {**columns, **aux}
    return _with_pileup(
        flat, counts, columns, aux, jet_event, axis_eta, axis_phi, rng, detector_cfg, selection, pileup
    )


def jet_columns(
    reco: Reconstruction,
    chosen: ak.Array,
    jet_event: np.ndarray,
    axis_eta: np.ndarray,
    axis_phi: np.ndarray,
    selection: JetSelection,
    with_pileup: bool = False,
) -> dict[str, np.ndarray | ak.Array]:
    """The columns of the jets ``chosen`` (``(events, jets)`` indices into ``reco.jets``; their
    events and axes flat): constituents, jet kinematics, substructure and calorimeter cells, and
    with ``with_pileup`` the pile-up truth of every constituent and cell."""
    det = reco.det
    offsets = np.concatenate([[0], np.cumsum(det.counts)[:-1]])
    per_event_index = reco.constituent_index[chosen] + offsets  # (events, jets, constituents), global
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
    if with_pileup:
        part["pileup_fraction"] = per_jet(det.pileup_fraction)
        part["pileup_vertex"] = per_jet(det.pileup_vertex)
    order = ak.argsort(np.hypot(part["px"], part["py"]), axis=1, ascending=False)
    part = {k: v[order] for k, v in part.items()}

    columns = _jet_columns(part)
    columns.update(substructure.observables(part, selection.radius))
    for name, cells in (("ecal", det.ecal), ("hcal", det.hcal)):
        columns.update(
            _cell_columns(name, cells, jet_event, axis_eta, axis_phi, selection.radius, with_pileup)
        )
    if with_pileup:
        f32 = np.float32
        columns["part_is_pileup"] = ak.values_astype(part["pileup_fraction"] > 0.5, f32)
        columns["part_pileup_fraction"] = ak.values_astype(part["pileup_fraction"], f32)
        columns["part_pileup_vertex"] = ak.values_astype(part["pileup_vertex"], f32)
    assert len(columns["jet_pt"]) == len(jet_event)
    return columns


# jet-level columns of the hard event alone copied beside the pile-up jet's (jet_nopu_<name>)
NO_PILEUP_COLUMNS = ("pt", "eta", "phi", "energy", "mass", "nparticles", "tau21", "tau32")


def _with_pileup(
    flat, counts, hard_columns, aux, jet_event, axis_eta, axis_phi, rng, detector_cfg, selection, source
) -> dict[str, np.ndarray | ak.Array]:
    """The selected jets reconstructed with pile-up: the hard event's particles with the pile-up
    particles near its selected jets (:func:`hepnn.sim.pileup.overlay`) through the detector and
    anti-kT; each selected jet is matched to the nearest jet of the overlaid event within R/2
    (jets without a match are dropped). Besides the pile-up jet's columns: ``jet_nopu_*`` (the
    jet of the hard event alone), ``event_npu`` (pile-up collisions of the jet's event) and the
    pile-up densities around the jet (:func:`_density_columns`)."""
    from hepnn.sim import pileup as pileup_module

    pu = pileup_module.overlay(source.pool, source.config, rng, jet_event, axis_eta, axis_phi, len(counts))
    hard_event = np.repeat(np.arange(len(counts)), counts)
    event = np.concatenate([hard_event, pu["event"]])
    order = np.argsort(event, kind="stable")
    combined = {k: np.concatenate([flat[k], pu[k]])[order] for k in ("px", "py", "pz", "e", "pid", "charge")}
    origin = np.concatenate([np.zeros(len(hard_event)), np.ones(len(pu["event"]))])[order]
    separable = np.concatenate([np.zeros(len(hard_event), bool), pu["separable"]])[order]
    reco = reconstruct(
        combined,
        np.bincount(event, minlength=len(counts)),
        rng,
        detector_cfg,
        selection,
        pileup=origin,
        separable=separable,
        vertex_efficiency=source.config.vertex_efficiency,
    )
    n_jets = ak.to_numpy(ak.num(reco.pt, axis=1))
    pu_event = np.repeat(np.arange(len(counts)), n_jets)
    pu_eta, pu_phi = ak.to_numpy(ak.flatten(reco.eta)), ak.to_numpy(ak.flatten(reco.phi))
    local = np.arange(len(pu_event)) - np.repeat(np.cumsum(n_jets) - n_jets, n_jets)
    pair_jet, pair_pu = truth.same_event_pairs(jet_event, pu_event, len(counts))
    distance = np.hypot(axis_eta[pair_jet] - pu_eta[pair_pu], delta_phi(axis_phi[pair_jet], pu_phi[pair_pu]))
    best = np.full(len(jet_event), -1)
    nearest = np.full(len(jet_event), np.inf)
    by_distance = np.lexsort((distance, pair_jet))
    first = np.ones(len(by_distance), dtype=bool)
    first[1:] = pair_jet[by_distance][1:] != pair_jet[by_distance][:-1]
    best[pair_jet[by_distance][first]] = pair_pu[by_distance][first]
    nearest[pair_jet[by_distance][first]] = distance[by_distance][first]
    matched = nearest < 0.5 * selection.radius
    chosen = ak.unflatten(local[best[matched]], np.bincount(jet_event[matched], minlength=len(counts)))
    columns = jet_columns(
        reco,
        chosen,
        jet_event[matched],
        pu_eta[best[matched]],
        pu_phi[best[matched]],
        selection,
        with_pileup=True,
    )
    columns.update(
        _density_columns(
            reco.det,
            jet_event[matched],
            pu_eta[best[matched]],
            pu_phi[best[matched]],
            len(counts),
            selection.radius,
            source.config.region,
            detector_cfg.tracker_abs_eta_max,
        )
    )
    for name in NO_PILEUP_COLUMNS:
        columns[f"jet_nopu_{name}"] = np.asarray(hard_columns[f"jet_{name}"])[matched]
    columns["event_npu"] = pu["n_collisions"][jet_event[matched]].astype(np.int32)
    columns.update({k: v[matched] for k, v in aux.items()})
    return columns


def _density_columns(
    det: detector.DetectedObjects, jet_event, jet_eta, jet_phi, n_events, radius, region, abs_eta_max
) -> dict[str, np.ndarray]:
    """``jet_rho``, ``jet_rho_m``, ``jet_softkiller_pt`` and their ``_chs`` variants of each jet
    (:mod:`hepnn.sim.pileup_density`) from the objects around it, float32."""
    from hepnn.sim import pileup_density

    event = np.repeat(np.arange(len(det.counts)), det.counts)
    eta, phi = _eta_phi(det.px, det.py, det.pz)
    pt = np.hypot(det.px, det.py)
    mass = np.sqrt(np.maximum(det.energy**2 - pt**2 - det.pz**2, 0.0))
    columns = {}
    for suffix, keep in (("", slice(None)), ("_chs", ~det.pileup_vertex)):
        estimates = pileup_density.ring_estimates(
            event[keep],
            eta[keep],
            phi[keep],
            pt[keep],
            mass[keep],
            jet_event,
            jet_eta,
            jet_phi,
            n_events,
            radius,
            region,
            abs_eta_max,
        )
        columns.update({f"jet_{k}{suffix}": v.astype(np.float32) for k, v in estimates.items()})
    return columns


def rapidity(energy, pz):
    """Rapidity y = 1/2 ln((E + pz) / (E - pz)) of momenta (GeV); +-inf along the beam axis."""
    with np.errstate(divide="ignore"):
        return 0.5 * np.log((energy + pz) / (energy - pz))


def _cell_columns(
    layer: str,
    cells: detector.CalorimeterCells,
    jet_event: np.ndarray,
    jet_eta: np.ndarray,
    jet_phi: np.ndarray,
    radius: float,
    with_pileup: bool = False,
) -> dict[str, ak.Array]:
    """Measured cells of one calorimeter layer within Delta R < ``radius`` of each jet axis.

    ``jet_event``, ``jet_eta``, ``jet_phi`` are flat over the selected jets (their event index and
    axis). Returns jagged float32 ``cell_<layer>_deta``, ``_dphi`` (rad, wrapped into [-pi, pi))
    and ``_energy`` (GeV) per jet, sorted by decreasing energy. A cell may belong to two jets.
    With ``with_pileup``, ``_energy_hs`` and ``_energy_pu`` split each cell's energy into what the
    hard scatter and the pile-up deposited (in proportion to the deposits; they sum to ``_energy``).
    """
    # every (jet, cell of the jet's event) pair, built with flat index arithmetic
    cell_start = np.concatenate([[0], np.cumsum(cells.counts)[:-1]])
    n_pairs = cells.counts[jet_event]
    pair_jet = np.repeat(np.arange(len(jet_event)), n_pairs)
    first_pair = np.concatenate([[0], np.cumsum(n_pairs)[:-1]])
    pair_cell = np.arange(int(n_pairs.sum())) + np.repeat(cell_start[jet_event] - first_pair, n_pairs)

    deta = cells.eta[pair_cell] - jet_eta[pair_jet]
    dphi = delta_phi(cells.phi[pair_cell], jet_phi[pair_jet])
    inside = np.hypot(deta, dphi) < radius
    pair_jet, deta, dphi = pair_jet[inside], deta[inside], dphi[inside]
    energy = cells.energy[pair_cell[inside]]
    order = np.lexsort((-energy, pair_jet))
    n_cells = np.bincount(pair_jet, minlength=len(jet_event))

    def jagged(values):
        return ak.unflatten(values[order].astype(np.float32), n_cells)

    columns = {
        f"cell_{layer}_deta": jagged(deta),
        f"cell_{layer}_dphi": jagged(dphi),
        f"cell_{layer}_energy": jagged(energy),
    }
    if with_pileup:
        pileup = energy * cells.pileup_fraction[pair_cell[inside]]
        columns[f"cell_{layer}_energy_pu"] = jagged(pileup)
        columns[f"cell_{layer}_energy_hs"] = jagged(energy - pileup)
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
