"""Whole-event calorimeter samples for object detection: one ROOT entry per collision event.

``python -m hepnn.generate generate=events_calo`` (configuration ``conf/generate/events_calo.yaml``).
A single-shot detector that finds jets as boxes in an image of the whole calorimeter (as Jet-SSD,
Pol et al., arXiv:2105.05785) needs events, not jets: every entry holds what the detector
measured over its whole acceptance, stored sparsely (no pre-binned image: a loader bins the
cells with the image groups of :mod:`hepnn.data.images`, in absolute eta and phi), and the
truth objects of the event, the particle-level jets with their class, as boxes.

Physics
-------
Proton-proton collisions at sqrt(s) = 14 TeV from Pythia 8 with its default tune, multiple
parton interactions off and no pile-up (the conditions of the reference jet samples,
:mod:`hepnn.sim.jets`); particles with c*tau > 10 mm are stable. Processes
(``generate.processes``, :data:`EVENT_PROCESSES`):

- ``qcd``: QCD multijets (``HardQCD:all``);
- ``ttbar``: all-hadronic top pairs (both W bosons forced to quarks, d u s c b);
- ``wprime_wz``: a W' of :data:`hepnn.sim.jets.WPRIME_MASS` GeV forced to W Z, both hadronic
  (W -> q q', Z -> q q, q = d u s c b); Pythia's pT-hat window does not act on this 2 -> 1 process.

The hard-process pT window (``generate.pythia.pthat_min``/``pthat_max``) defaults to
300-1200 GeV, so that qcd and ttbar events hold jets above the object threshold. The stable
particles go through the parametric detector (:mod:`hepnn.sim.detector`, ``generate.detector``).

Truth objects: anti-kT jets (FastJet, R = ``objects.radius``, default 0.8) of all visible stable
generator particles (neutrinos excepted), with pT > ``objects.pt_min`` (200 GeV) and |eta| <
``objects.abs_eta_max`` (2.0), sorted by decreasing pT. Each is a box centred on the jet axis
(``obj_eta``, ``obj_phi``) of half-extent R in eta and in phi. Its class comes from the hard
process (:func:`hepnn.sim.truth.decay_quarks_inside`, decay quarks before showering, within
Delta R < R of the jet axis): ``Top`` if the b and both W-decay quarks of one top are inside,
else ``W`` if both decay quarks of one W are (also a W from a top whose b is outside), else ``Z``
if both decay quarks of one Z are, else ``QCD``. ``generate.classes`` orders the four names:
``obj_class`` is the index in it. Events without any object are kept (``n_objects = 0``): every
process has exactly its ``n_events`` events.

A box holds on average more than 99.5 % of its jet's constituent pT, yet not always all of it
(down to about 93 % for top jets): anti-kT merges a particle within R of the axis the jet has at
that moment, the final axis then moves as further particles and whole prongs (closer than R)
join, so some constituents end up beyond R of it; and anti-kT measures distances in rapidity y,
the images in pseudorapidity (soft massive hadrons sit at larger |eta| than y). A massive jet's
constituents are centred (pT-weighted) on its rapidity, which lies closer to zero than its
pseudorapidity (by about 0.03 on average for top jets, up to about 0.1): ``obj_rapidity`` is
stored beside ``obj_eta`` for that reason.

Files and schema (version :data:`SCHEMA_VERSION`)
-------------------------------------------------
``<output_dir>/<process>_<index:03d>.root`` (``events_per_file`` events each) and
``manifest.json``, produced, sharded over worker processes, seeded per (seed, process, shard)
and refused on a configuration mismatch by :mod:`hepnn.sim.sample`; the files are the same for
a seed whatever the number of workers. Tree ``tree``, one entry per event; jagged branches
share a counter per prefix (``necal``, ``nhcal``, ``ntrk``, ``nobj``). Cells and tracks with
|eta| >= ``image_abs_eta_max`` (2.5) are not stored. Energies and momenta in GeV, angles in rad,
phi in [-pi, pi).

==============================================  =======  ====================================
branch                                          type     meaning (unit)
==============================================  =======  ====================================
``ecal_eta``, ``ecal_phi``, ``ecal_et``         float32  measured ECAL cells (from every
                                                         particle reaching the ECAL): cell
                                                         centre, transverse energy E/cosh(eta)
``hcal_eta``, ``hcal_phi``, ``hcal_et``         float32  the same for the HCAL
``trk_eta``, ``trk_phi``, ``trk_pt``            float32  reconstructed tracks (the particle-flow
                                                         objects with charge != 0)
``obj_eta``, ``obj_phi``                        float32  truth object: jet axis (pseudorapidity)
``obj_rapidity``                                float32  the jet's rapidity y
``obj_pt``, ``obj_mass``                        float32  jet pT and mass (GeV)
``obj_radius``                                  float32  box half-extent R in eta and phi
``obj_class``                                   int32    index in ``generate.classes``
``n_objects``                                   int32    truth objects of the event
``process``                                     int32    index of the event's process in
                                                         ``generate.processes``
==============================================  =======  ====================================

Everything works on whole batches of events (awkward and numpy arrays); no Python loop runs
over events, jets or particles.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path

import awkward as ak
import numpy as np

from hepnn.errors import ConfigError
from hepnn.sim import detector, jets, truth
from hepnn.sim.clustering import fastjet_module
from hepnn.sim.sample import (
    SampleConfig,
    SampleKind,
    SampleReport,
    ShardReport,
    generate_sample,
    shard_seeds,
)
from hepnn.utils import validation as check
from hepnn.utils.rootio import write_tree

SCHEMA_VERSION = 1
KIND = "events"
TREE = "tree"

EVENT_PROCESSES: dict[str, jets.Process] = {
    "qcd": jets.PROCESSES["qcd"],
    "ttbar": jets.PROCESSES["ttbar"],
    "wprime_wz": jets.Process(
        name="wprime_wz",
        settings=(
            *jets._WPRIME_TO_WZ,
            "24:onMode = off",
            "24:onIfAny = 1 2 3 4 5",
            "23:onMode = off",
            "23:onIfAny = 1 2 3 4 5",
        ),
    ),
}

# The truth classes and, in order of precedence, the decay quarks each needs inside the jet
# (|id| of their mothers, quarks of one resonance); a jet matching none is QCD.
CLASSES = ("QCD", "Top", "W", "Z")
CLASS_MATCHES = (
    ("Top", jets._DECAY_MATCHES["top_bqq"]),
    ("W", jets._DECAY_MATCHES["w_qq"]),
    ("Z", jets._DECAY_MATCHES["z_qq"]),
)

# Hard-process pT window (GeV) of these samples unless generate.pythia sets one.
PYTHIA_DEFAULTS = {"pthat_min": 300.0, "pthat_max": 1200.0}

# float32 bounds strictly inside [-pi, pi): float32(pi) rounds above pi, float32(-pi) below -pi
_PHI_LOW = np.nextafter(np.float32(-np.pi), np.float32(0))
_PHI_HIGH = np.nextafter(np.float32(np.pi), np.float32(0))


@dataclass(frozen=True)
class ObjectDefinition:
    """Truth objects: anti-kT radius R (also the box half-extent), pT threshold (GeV), |eta| cut."""

    radius: float = 0.8
    pt_min: float = 200.0
    abs_eta_max: float = 2.0

    @classmethod
    def from_dict(cls, values: Mapping[str, object] | None, image_abs_eta_max: float) -> ObjectDefinition:
        """Build from ``generate.objects``; ``abs_eta_max`` must lie below the stored acceptance."""
        values = dict(check.mapping(values or {}, "generate.objects", sorted(cls.__dataclass_fields__)))
        out = cls(**values)
        check.positive_number(out.radius, "generate.objects.radius")
        check.non_negative_number(out.pt_min, "generate.objects.pt_min", unit="GeV")
        check.positive_number(out.abs_eta_max, "generate.objects.abs_eta_max")
        check.require(
            out.abs_eta_max < image_abs_eta_max,
            "generate.objects.abs_eta_max",
            f"below generate.image_abs_eta_max = {image_abs_eta_max} (the stored acceptance)",
            out.abs_eta_max,
        )
        return out


@dataclass(frozen=True)
class EventSampleConfig:
    """What to generate: events per process, shards, seed, acceptance, truth objects and physics.

    ``processes`` maps a name of :data:`EVENT_PROCESSES` to ``{"n_events": int}`` (its order
    defines the ``process`` branch); ``classes`` orders :data:`CLASSES`. :meth:`from_dict`
    stores ``objects``, ``pythia`` and ``detector`` complete (defaults filled in), so that the
    manifest records every setting.
    """

    output_dir: str
    processes: Mapping[str, Mapping[str, object]]
    classes: tuple[str, ...] = CLASSES
    events_per_file: int = 1000
    seed: int = 1
    workers: int | str = "auto"
    events_per_batch: int = 200
    image_abs_eta_max: float = 2.5
    objects: Mapping[str, object] = field(default_factory=lambda: asdict(ObjectDefinition()))
    pythia: Mapping[str, object] = field(default_factory=lambda: _pythia(None))
    detector: Mapping[str, object] = field(default_factory=lambda: asdict(detector.DetectorConfig()))

    # the same worker count rule as the jet samples ('auto' = all available cores)
    n_workers = SampleConfig.n_workers

    @classmethod
    def from_dict(cls, values: Mapping[str, object]) -> EventSampleConfig:
        """Build from a (Hydra) ``generate`` mapping; every error is one line naming its key."""
        values = dict(values)
        kind = values.pop("kind", KIND)
        if kind != KIND:
            raise ConfigError(f"generate.kind must be {KIND!r} for a whole-event sample, got {kind!r}")
        check.mapping(values, "generate", sorted({*cls.__dataclass_fields__, "kind"}))
        for key in ("output_dir", "processes"):
            if values.get(key) in (None, "", {}):
                raise ConfigError(f"generate.{key} must be set")
        values["processes"] = _processes(values["processes"])
        values["classes"] = _classes(values.get("classes", CLASSES))
        eta_max = values.get("image_abs_eta_max", cls.__dataclass_fields__["image_abs_eta_max"].default)
        eta_max = check.positive_number(eta_max, "generate.image_abs_eta_max")
        values["image_abs_eta_max"] = eta_max
        values["objects"] = asdict(ObjectDefinition.from_dict(values.get("objects"), eta_max))
        values["pythia"] = _pythia(values.get("pythia"))
        values["detector"] = _detector(values.get("detector"))
        cfg = cls(**values)
        cfg.validate()
        return cfg

    def validate(self) -> None:
        """Counts, seed and workers (:meth:`from_dict` checked the sections)."""
        for key in ("events_per_file", "events_per_batch"):
            check.positive_int(getattr(self, key), f"generate.{key}")
        check.non_negative_int(self.seed, "generate.seed")
        self.n_workers()

    def object_definition(self) -> ObjectDefinition:
        return ObjectDefinition(**self.objects)

    def physics_dict(self) -> dict[str, object]:
        """The part of the configuration that determines the files' contents (for the manifest)."""
        d = asdict(self)
        for key in ("output_dir", "workers"):
            d.pop(key)
        return json.loads(json.dumps({"kind": KIND, **d}))

    def manifest(self) -> dict[str, object]:
        """What ``manifest.json`` records: :data:`SCHEMA_VERSION` and :meth:`physics_dict`."""
        return {"schema_version": SCHEMA_VERSION, **self.physics_dict()}


def _processes(value) -> dict[str, dict[str, int]]:
    """``generate.processes`` checked: known names, ``{n_events: N}`` each (N >= 1); nulls dropped."""
    if not isinstance(value, Mapping):
        raise ConfigError(f"generate.processes must be a mapping name -> {{n_events: N}}, got {value!r}")
    out = {}
    for name, spec in value.items():
        if spec is None:  # e.g. to leave out one process of the configuration
            continue
        key = f"generate.processes.{name}"
        check.choice(name, key, list(EVENT_PROCESSES))
        spec = check.mapping(spec, key, ["n_events"], required=["n_events"])
        out[name] = {"n_events": check.positive_int(spec["n_events"], f"{key}.n_events")}
    if not out:
        raise ConfigError("generate.processes: every process is null; give at least one")
    return out


def _pythia(value) -> dict[str, object]:
    """``generate.pythia`` complete: :data:`PYTHIA_DEFAULTS`, then the given keys; pthat_min < pthat_max."""
    given = check.mapping(value or {}, "generate.pythia", sorted(jets.PythiaSetup.__dataclass_fields__))
    setup = jets.PythiaSetup.from_dict({**PYTHIA_DEFAULTS, **dict(given)})
    check.require(
        setup.pthat_min < setup.pthat_max,
        "generate.pythia.pthat_max",
        f"above generate.pythia.pthat_min = {setup.pthat_min} GeV",
        setup.pthat_max,
    )
    return json.loads(json.dumps(asdict(setup)))


def _detector(value) -> dict[str, object]:
    """``generate.detector`` complete (:class:`hepnn.sim.detector.DetectorConfig`), layers checked too."""
    given = check.mapping(
        value or {}, "generate.detector", sorted(detector.DetectorConfig.__dataclass_fields__)
    )
    for layer in ("ecal", "hcal"):
        if layer in given:
            check.mapping(
                given[layer],
                f"generate.detector.{layer}",
                list(detector.CalorimeterLayer.__dataclass_fields__),
            )
    return asdict(detector.DetectorConfig.from_dict(dict(given)))


def _classes(value) -> tuple[str, ...]:
    """``generate.classes``: exactly the names of :data:`CLASSES`, in any order."""
    names = list(value) if isinstance(value, list | tuple) else None
    if names is None or len(names) != len(CLASSES) or set(names) != set(CLASSES):
        raise ConfigError(
            f"generate.classes must list exactly {', '.join(CLASSES)} (in any order: the order "
            f"defines obj_class), got {value!r}"
        )
    return tuple(names)


# --------------------------------------------------------------------------------------------
# Physics of a batch of events (vectorised over events, objects and particles)


@dataclass
class TruthObjects:
    """The truth objects of a batch of events and their constituents.

    ``columns``: the ``obj_*`` branches (``(events, objects)`` awkward arrays, float32; ``obj_class``
    int32) and ``n_objects`` (numpy int32). ``constituents``: ``(events, objects, particles)``
    records of the visible stable particles of each object, fields ``pt`` (GeV), ``eta``,
    ``rapidity``, ``phi`` (rad, float64).
    """

    columns: dict[str, ak.Array | np.ndarray]
    constituents: ak.Array


def _phi32(phi) -> np.ndarray:
    """Azimuth (rad) as float32 strictly in [-pi, pi) (a shift of at most 3e-7 rad at the edges)."""
    return np.clip(
        jets.delta_phi(np.asarray(phi, dtype=np.float64), 0.0).astype(np.float32), _PHI_LOW, _PHI_HIGH
    )


def _rapidity(px, py, pz, energy):
    """Rapidity, with energies raised to |p| where rounding made a massless particle spacelike."""
    energy = np.maximum(energy, np.sqrt(px**2 + py**2 + pz**2))
    return jets.rapidity(energy, pz)


def truth_objects(
    events: ak.Array,
    charges: jets.ChargeTable,
    objects: ObjectDefinition | None = None,
    classes: tuple[str, ...] = CLASSES,
    final: tuple[dict[str, np.ndarray], np.ndarray] | None = None,
) -> TruthObjects:
    """Particle-level anti-kT jets of a batch of ``Pythia.nextBatch`` events, classified.

    ``final`` is :func:`hepnn.sim.jets.final_state` of ``events`` when already computed. The jets
    are those of the module docstring (pT > ``pt_min``, |eta| < ``abs_eta_max``, by decreasing pT);
    each comes with its constituents (see :class:`TruthObjects`).
    """
    objects = objects or ObjectDefinition()
    flat, counts = final or jets.final_state(events, charges)
    visible = ~np.isin(np.abs(flat["pid"]), detector._NEUTRINOS)
    event = np.repeat(np.arange(len(counts)), counts)[visible]
    n_visible = np.bincount(event, minlength=len(counts))
    px, py, pz, energy = (flat[k][visible] for k in ("px", "py", "pz", "e"))
    particles = ak.unflatten(ak.zip({"px": px, "py": py, "pz": pz, "E": energy}), n_visible)
    fastjet = fastjet_module()
    sequence = fastjet.ClusterSequence(
        particles, fastjet.JetDefinition(fastjet.antikt_algorithm, objects.radius)
    )
    found = sequence.inclusive_jets(objects.pt_min)
    found_constituents = sequence.constituent_index(objects.pt_min)
    pt = np.hypot(found.px, found.py)
    eta = detector.pseudorapidity(found.px, found.py, found.pz)
    by_pt = ak.argsort(pt, axis=1, ascending=False)
    keep = (pt[by_pt] > objects.pt_min) & (np.abs(eta[by_pt]) < objects.abs_eta_max)
    chosen = by_pt[keep]
    n_objects = ak.to_numpy(ak.num(chosen, axis=1))

    def flat_of(values) -> np.ndarray:
        return np.asarray(ak.to_numpy(ak.flatten(values[chosen])), dtype=np.float64)

    jpx, jpy, jpz, je = (flat_of(getattr(found, k)) for k in ("px", "py", "pz", "E"))
    jet_pt, jet_eta, jet_phi = np.hypot(jpx, jpy), flat_of(eta), np.arctan2(jpy, jpx)
    jet_mass = np.sqrt(np.maximum(je**2 - jpx**2 - jpy**2 - jpz**2, 0.0))
    jet_event = np.repeat(np.arange(len(counts)), n_objects)
    label = _classify(events, jet_event, jet_eta, jet_phi, objects.radius, classes)

    f32 = np.float32

    def per_event(values, dtype=f32) -> ak.Array:
        return ak.unflatten(np.asarray(values, dtype=dtype), n_objects)

    columns = {
        "obj_eta": per_event(jet_eta),
        "obj_phi": per_event(_phi32(jet_phi)),
        "obj_rapidity": per_event(jets.rapidity(je, jpz)),
        "obj_pt": per_event(jet_pt),
        "obj_mass": per_event(jet_mass),
        "obj_radius": per_event(np.full(len(jet_event), objects.radius)),
        "obj_class": per_event(label, np.int32),
        "n_objects": n_objects.astype(np.int32),
    }
    start = np.cumsum(n_visible) - n_visible
    index = ak.flatten(found_constituents[chosen] + start, axis=1)  # (objects, particles), global
    flat_index = ak.to_numpy(ak.flatten(index))
    n_constituents = ak.to_numpy(ak.num(index, axis=1))
    c_px, c_py, c_pz, c_e = (v[flat_index] for v in (px, py, pz, energy))
    constituent = ak.zip(
        {
            "pt": np.hypot(c_px, c_py),
            "eta": detector.pseudorapidity(c_px, c_py, c_pz),
            "rapidity": _rapidity(c_px, c_py, c_pz, c_e),
            "phi": np.arctan2(c_py, c_px),
        }
    )
    constituents = ak.unflatten(ak.unflatten(constituent, n_constituents), n_objects)
    return TruthObjects(columns, constituents)


def _classify(
    events: ak.Array,
    jet_event: np.ndarray,
    jet_eta: np.ndarray,
    jet_phi: np.ndarray,
    radius: float,
    classes: tuple[str, ...],
) -> np.ndarray:
    """Index in ``classes`` of each jet: the first of :data:`CLASS_MATCHES` it matches, else QCD."""
    hard = truth.HardParticles.from_pythia(events.prt)
    label = np.full(len(jet_event), classes.index("QCD"), dtype=np.int32)
    unmatched = np.ones(len(jet_event), dtype=bool)
    for name, (mother_ids, n_quarks) in CLASS_MATCHES:
        inside = truth.decay_quarks_inside(hard, jet_event, jet_eta, jet_phi, radius, mother_ids, n_quarks)
        label[unmatched & inside] = classes.index(name)
        unmatched &= ~inside
    return label


def _sparse_columns(
    prefix: str, values: str, eta, phi, amount, counts: np.ndarray, abs_eta_max: float
) -> dict[str, ak.Array]:
    """Jagged float32 ``<prefix>_eta``, ``_phi``, ``_<values>`` per event of the entries with
    |eta| < ``abs_eta_max`` (tested in float32, as stored)."""
    eta32 = np.asarray(eta, dtype=np.float32)
    inside = np.abs(eta32) < abs_eta_max
    event = np.repeat(np.arange(len(counts)), counts)[inside]
    n = np.bincount(event, minlength=len(counts))
    return {
        f"{prefix}_eta": ak.unflatten(eta32[inside], n),
        f"{prefix}_phi": ak.unflatten(_phi32(np.asarray(phi)[inside]), n),
        f"{prefix}_{values}": ak.unflatten(np.asarray(amount)[inside].astype(np.float32), n),
    }


def event_columns(
    events: ak.Array,
    charges: jets.ChargeTable,
    rng: np.random.Generator,
    detector_cfg: detector.DetectorConfig,
    objects: ObjectDefinition,
    image_abs_eta_max: float,
    classes: tuple[str, ...] = CLASSES,
) -> dict[str, ak.Array | np.ndarray]:
    """The branches (module docstring) of a batch of events, but ``process``: the detector's cells
    and tracks inside the acceptance and the truth objects."""
    flat, counts = jets.final_state(events, charges)
    det = detector.simulate(
        flat["px"], flat["py"], flat["pz"], flat["e"], flat["pid"], flat["charge"], counts, rng, detector_cfg
    )
    columns = {}
    for name, cells in (("ecal", det.ecal), ("hcal", det.hcal)):
        et = cells.energy / np.cosh(cells.eta)
        columns.update(_sparse_columns(name, "et", cells.eta, cells.phi, et, cells.counts, image_abs_eta_max))
    track = det.charge != 0
    track_counts = np.bincount(np.repeat(np.arange(len(counts)), det.counts)[track], minlength=len(counts))
    tpx, tpy, tpz = det.px[track], det.py[track], det.pz[track]
    columns.update(
        _sparse_columns(
            "trk",
            "pt",
            detector.pseudorapidity(tpx, tpy, tpz),
            np.arctan2(tpy, tpx),
            np.hypot(tpx, tpy),
            track_counts,
            image_abs_eta_max,
        )
    )
    columns.update(truth_objects(events, charges, objects, classes, final=(flat, counts)).columns)
    return columns


# --------------------------------------------------------------------------------------------
# Production: shards, workers and manifest through hepnn.sim.sample


@dataclass(frozen=True)
class EventShard:
    """One output file: ``n_events`` events of ``process``, seeded independently of all other shards."""

    process: str
    index: int
    n_events: int
    process_index: int
    pythia_seed: int
    detector_seed: int
    path: str

    @property
    def n_items(self) -> int:
        return self.n_events


def plan_event_shards(cfg: EventSampleConfig) -> list[EventShard]:
    """All shards of a sample, in a fixed order; seeds depend only on (seed, process, index)."""
    shards = []
    for process_index, (name, spec) in enumerate(cfg.processes.items()):
        n_total = int(spec["n_events"])
        for index in range(math.ceil(n_total / cfg.events_per_file)):
            n = min(cfg.events_per_file, n_total - index * cfg.events_per_file)
            pythia_seed, detector_seed = shard_seeds(cfg.seed, name, index)
            shards.append(
                EventShard(
                    process=name,
                    index=index,
                    n_events=n,
                    process_index=process_index,
                    pythia_seed=pythia_seed,
                    detector_seed=detector_seed,
                    path=str(Path(cfg.output_dir) / f"{name}_{index:03d}.root"),
                )
            )
    return shards


def generate_event_shard(shard: EventShard, cfg: EventSampleConfig, progress=None) -> ShardReport:
    """Generate and write one shard; ``progress(n)`` (or the worker's queue) is told of new events.

    Batches hold ``events_per_batch`` events (fewer for the last), so a shard's events depend
    only on its seeds; events Pythia fails to generate are replaced by further ones.
    """
    from hepnn.sim.sample import _concatenate, progress_reporter

    report = progress_reporter(progress)
    start = time.perf_counter()
    process = EVENT_PROCESSES[shard.process]
    pythia = jets.make_pythia(process, jets.PythiaSetup.from_dict(cfg.pythia), shard.pythia_seed)
    charges = jets.ChargeTable(pythia.particleData)
    rng = np.random.default_rng(shard.detector_seed)
    detector_cfg = detector.DetectorConfig.from_dict(cfg.detector)
    objects = cfg.object_definition()

    batches, done, failed = [], 0, 0
    while done < shard.n_events:
        events = pythia.nextBatch(min(cfg.events_per_batch, shard.n_events - done))
        events = events[: shard.n_events - done]
        if len(events) == 0:
            failed += 1
            if failed == 10:
                raise RuntimeError(f"Pythia generated no {shard.process} event in 10 batches")
            continue
        batches.append(
            event_columns(events, charges, rng, detector_cfg, objects, cfg.image_abs_eta_max, cfg.classes)
        )
        done += len(events)
        report(len(events))
    columns = {k: _concatenate([b[k] for b in batches]) for k in batches[0]}
    columns["process"] = np.full(shard.n_events, shard.process_index, dtype=np.int32)
    write_tree(
        shard.path,
        TREE,
        columns,
        title=f"hepnn {shard.process} events (whole detector, truth jets)",
        metadata={"hepnn_generator": json.dumps({"shard": asdict(shard), "config": cfg.manifest()})},
    )
    return ShardReport(shard.path, shard.n_events, shard.n_events, time.perf_counter() - start)


EVENTS = SampleKind(
    name=KIND,
    plan=plan_event_shards,
    generate=generate_event_shard,
    schema_version=SCHEMA_VERSION,
    unit="event",
)


def generate_events(cfg: EventSampleConfig, progress_bar: bool = True) -> SampleReport:
    """Generate every missing shard of ``cfg`` in parallel workers (see :mod:`hepnn.sim.sample`)."""
    return generate_sample(cfg, progress_bar=progress_bar, kind=EVENTS)
