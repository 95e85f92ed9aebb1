"""Whole-event calorimeter samples (hepnn/sim/events.py): schema, counts, reproducibility, truth
boxes, physics, acceptance, configuration errors and events without objects."""

from __future__ import annotations

import dataclasses
import json

import awkward as ak
import numpy as np
import pytest
import uproot

from hepnn.errors import ConfigError
from hepnn.sim import events, jets
from hepnn.sim.events import CLASSES, EventSampleConfig, generate_events, plan_event_shards
from hepnn.sim.kinds import build_sample
from hepnn.sim.sample import check_manifest
from tests.conftest import REPO, compose_generate

PROCESSES = ("qcd", "ttbar", "wprime_wz")
N_EVENTS, PER_FILE = 40, 20  # of the events_sample fixture
FLOAT_BRANCHES = [
    *(
        f"{p}_{x}"
        for p, xs in (("ecal", "eta phi et"), ("hcal", "eta phi et"), ("trk", "eta phi pt"))
        for x in xs.split()
    ),
    *(f"obj_{x}" for x in ("eta", "phi", "rapidity", "pt", "mass", "radius")),
]


def read(sample_dir, process=None) -> ak.Array:
    """The events of one process (all, without ``process``), shard after shard."""
    paths = sorted(sample_dir.glob(f"{process}_*.root" if process else "*.root"))
    return ak.concatenate([uproot.open(p)["tree"].arrays(library="ak") for p in paths])


def composed(*overrides: str) -> dict:
    """The ``generate=events_calo`` section as ``python -m hepnn.generate`` composes it."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from omegaconf import OmegaConf

    from hepnn.utils.config import register_resolvers

    register_resolvers()
    GlobalHydra.instance().clear()
    with initialize_config_dir(str(REPO / "conf"), version_base="1.3"):
        cfg = compose(
            "generate", overrides=["generate=events_calo", "generate.output_dir=/tmp/unused", *overrides]
        )
        return OmegaConf.to_container(cfg.generate, resolve=True)


def test_files_branches_and_dtypes(events_sample):
    files = sorted(p.name for p in events_sample.glob("*.root"))
    assert files == [f"{p}_{i:03d}.root" for p in PROCESSES for i in range(2)]
    assert not list(events_sample.glob(".*.tmp"))
    manifest = json.loads((events_sample / "manifest.json").read_text())
    assert manifest["kind"] == "events" and manifest["schema_version"] == events.SCHEMA_VERSION
    tree = uproot.open(events_sample / "ttbar_000.root")["tree"]
    assert tree.num_entries == PER_FILE
    types = {b.name: b.typename for b in tree.branches}
    assert {name: types[name] for name in FLOAT_BRANCHES} == dict.fromkeys(FLOAT_BRANCHES, "float[]")
    assert types["obj_class"] == "int32_t[]"
    assert types["n_objects"] == types["process"] == "int32_t"
    assert set(types) == {
        *FLOAT_BRANCHES,
        "obj_class",
        "n_objects",
        "process",
        "necal",
        "nhcal",
        "ntrk",
        "nobj",
    }
    meta = json.loads(uproot.open(events_sample / "ttbar_000.root")["hepnn_generator"])
    assert meta["shard"]["process"] == "ttbar" and meta["config"]["kind"] == "events"


def test_exactly_n_events_per_process_with_their_process_index(events_sample):
    for index, process in enumerate(PROCESSES):
        arrays = read(events_sample, process)
        assert len(arrays) == N_EVENTS
        assert np.all(arrays.process == index)
        assert ak.all(arrays.n_objects == ak.num(arrays.obj_pt))


def test_reproducible_whatever_the_number_of_workers(events_sample, tmp_path):
    n_events = [f"generate.processes.{p}.n_events={N_EVENTS}" for p in PROCESSES]
    cfg = compose_generate(
        "events_calo", tmp_path, *n_events, f"generate.events_per_file={PER_FILE}", "generate.workers=1"
    )
    generate_events(cfg, progress_bar=False)
    for path in sorted(events_sample.glob("*.root")):
        two = uproot.open(path)["tree"].arrays(library="ak")
        one = uproot.open(tmp_path / path.name)["tree"].arrays(library="ak")
        for name in two.fields:
            assert ak.array_equal(one[name], two[name]), (path.name, name)
    # another seed gives other events
    other = compose_generate(
        "events_calo", tmp_path / "seed", *n_events, "generate.seed=2", "generate.workers=1"
    )
    generate_events(other, progress_bar=False)
    first = uproot.open(tmp_path / "seed" / "qcd_000.root")["tree"].arrays(library="ak")
    assert not ak.array_equal(first.ecal_et[:5], read(events_sample, "qcd").ecal_et[:5])


def config_of(sample_dir) -> EventSampleConfig:
    """The configuration a sample's manifest records (the workers aside)."""
    manifest = json.loads((sample_dir / "manifest.json").read_text())
    manifest.pop("schema_version")
    return EventSampleConfig.from_dict({**manifest, "output_dir": str(sample_dir), "workers": 1})


def first_batch_truth(sample_dir, process: str) -> events.TruthObjects:
    """The truth objects of the first batch of the process's first shard, regenerated from its seed."""
    cfg = config_of(sample_dir)
    shard = next(s for s in plan_event_shards(cfg) if s.process == process)
    setup = jets.PythiaSetup.from_dict(cfg.pythia)
    pythia = jets.make_pythia(events.EVENT_PROCESSES[process], setup, shard.pythia_seed)
    batch = pythia.nextBatch(min(cfg.events_per_batch, shard.n_events))
    charges = jets.ChargeTable(pythia.particleData)
    return events.truth_objects(batch, charges, cfg.object_definition(), cfg.classes)


@pytest.mark.parametrize("process", PROCESSES)
def test_truth_boxes_contain_their_jets_constituents(events_sample, process):
    """Each box (obj_eta +- R, obj_phi +- R, phi wrapped) holds its jet's constituents.

    Not every constituent lies within R of the final jet axis: anti-kT adds a particle within R of
    the axis the jet has at that moment, and the axis then drifts as further particles and whole
    prongs closer than R join; the images use pseudorapidity where anti-kT uses rapidity (soft
    massive hadrons sit further out in eta). Measured on 1800 jets per process: at least 93 % of a
    jet's constituent pT in its box (99.9 % on average), constituents above 5 GeV at most 0.09
    beyond the box. Asserted: at least 90 % for every jet, 99 % on average, and every constituent
    above 5 GeV inside the box grown by 0.2.
    """
    truth = first_batch_truth(events_sample, process)
    stored = read(events_sample, process)[:PER_FILE]
    for name in ("obj_eta", "obj_phi", "obj_pt", "obj_class", "n_objects"):  # the same objects as the file's
        assert ak.array_equal(truth.columns[name], stored[name]), name
    radius = truth.columns["obj_radius"]
    c = truth.constituents
    assert ak.all(ak.num(c, axis=2) > 0)
    deta = np.abs(c.eta - truth.columns["obj_eta"])
    dphi = np.abs(jets.delta_phi(c.phi, truth.columns["obj_phi"]))
    outside = ak.flatten(np.maximum(deta, dphi) - radius, axis=1)  # (objects, constituents)
    pt = ak.flatten(c.pt, axis=1)
    fraction = ak.to_numpy(ak.sum(pt * (outside <= 0), axis=1) / ak.sum(pt, axis=1))
    assert len(fraction) > 0
    assert fraction.min() >= 0.90 and fraction.mean() >= 0.99, fraction
    assert ak.all(outside[pt > 5.0] < 0.2)
    # the jet is the sum of its constituents (pT of the sum, within float32 rounding)
    px, py = ak.sum(c.pt * np.cos(c.phi), axis=2), ak.sum(c.pt * np.sin(c.phi), axis=2)
    assert np.allclose(ak.flatten(np.hypot(px, py)), ak.flatten(truth.columns["obj_pt"]), rtol=1e-5)


def test_calorimeter_cells_line_up_with_the_truth_boxes(events_sample):
    """Cells are stored in absolute eta and phi: the ECAL + HCAL ET within R of an object's axis is
    its pT (median of the ratio 1.00-1.01 measured, 5-95 % range about 0.93-1.08)."""
    arrays = read(events_sample)
    axes = ak.zip({"eta": arrays.obj_eta, "phi": arrays.obj_phi})
    total = 0
    for layer in ("ecal", "hcal"):
        cells = ak.zip(
            {"eta": arrays[f"{layer}_eta"], "phi": arrays[f"{layer}_phi"], "et": arrays[f"{layer}_et"]}
        )
        obj, cell = ak.unzip(ak.cartesian([axes, cells], nested=True))
        near = np.hypot(cell.eta - obj.eta, jets.delta_phi(cell.phi, obj.phi)) < 0.8
        total = total + ak.sum(cell.et * near, axis=2)
    ratio = ak.to_numpy(ak.flatten(total / arrays.obj_pt))
    assert 0.95 < np.median(ratio) < 1.05
    assert np.quantile(ratio, 0.1) > 0.8


def class_masses(sample_dir, process: str) -> dict[str, np.ndarray]:
    arrays = read(sample_dir, process)
    cls, mass = ak.to_numpy(ak.flatten(arrays.obj_class)), ak.to_numpy(ak.flatten(arrays.obj_mass))
    names = config_of(sample_dir).classes
    return {name: mass[cls == names.index(name)] for name in CLASSES}


def test_physics_of_the_truth_classes(events_sample):
    """ttbar: Top objects near the top mass; W' -> W Z: W and Z objects near their masses; QCD:
    QCD objects (medians measured on about 900 objects each: Top 172, W 82, Z 92 GeV)."""
    top = class_masses(events_sample, "ttbar")
    assert len(top["Top"]) >= 4 and len(top["Z"]) == 0
    assert 150 < top["Top"].mean() < 195
    boson = class_masses(events_sample, "wprime_wz")
    assert len(boson["W"]) >= 20 and len(boson["Z"]) >= 20 and len(boson["Top"]) == 0
    assert 72 < np.median(boson["W"]) < 92
    assert 82 < np.median(boson["Z"]) < 102
    assert np.median(boson["W"]) < np.median(boson["Z"])
    qcd = class_masses(events_sample, "qcd")
    n_qcd = sum(len(v) for v in qcd.values())
    assert n_qcd >= 40 and len(qcd["QCD"]) >= 0.9 * n_qcd


def test_objects_pass_the_selection_sorted_by_pt(events_sample):
    arrays = read(events_sample)
    objects = config_of(events_sample).object_definition()
    pt = arrays.obj_pt
    assert ak.all(pt > objects.pt_min) and ak.all(np.abs(arrays.obj_eta) < objects.abs_eta_max)
    assert ak.all(pt[:, 1:] <= pt[:, :-1])
    assert ak.all(arrays.obj_radius == np.float32(objects.radius))
    assert ak.all((arrays.obj_class >= 0) & (arrays.obj_class < len(CLASSES)))
    assert ak.all(arrays.obj_mass >= 0) and ak.all(np.abs(arrays.obj_rapidity) <= np.abs(arrays.obj_eta))


def test_cells_and_tracks_inside_the_acceptance(events_sample):
    arrays = read(events_sample)
    cfg = config_of(events_sample)
    for prefix, amount in (("ecal", "et"), ("hcal", "et"), ("trk", "pt")):
        eta, phi = ak.flatten(arrays[f"{prefix}_eta"]), ak.flatten(arrays[f"{prefix}_phi"])
        assert len(eta) > 0
        assert ak.all(np.abs(eta) < cfg.image_abs_eta_max), prefix
        assert ak.all((phi >= -np.pi) & (phi < np.pi)), prefix
        assert ak.all(ak.flatten(arrays[f"{prefix}_{amount}"]) > 0), prefix
    # cells sit at the centres of the detector's cells (not binned into an image here)
    for layer in ("ecal", "hcal"):
        size = cfg.detector[layer]["cell_eta"]
        eta = ak.to_numpy(ak.flatten(arrays[f"{layer}_eta"])).astype(np.float64)
        index = (eta + cfg.detector["calo_abs_eta_max"]) / size - 0.5
        assert np.allclose(index, np.round(index), atol=1e-4), layer
    # whole events: the cells of an event spread over the calorimeter, beyond its objects
    assert ak.max(arrays.ecal_eta) - ak.min(arrays.ecal_eta) > 4.0


def test_events_without_objects_are_written(tmp_path):
    cfg = compose_generate(
        "events_calo",
        tmp_path,
        "generate.processes.qcd.n_events=12",
        "generate.processes.ttbar=null",
        "generate.processes.wprime_wz=null",
        "generate.events_per_batch=5",
        "generate.objects.pt_min=20000",  # above the beam energy: no object
        "generate.workers=1",
    )
    generate_events(cfg, progress_bar=False)
    tree = uproot.open(tmp_path / "qcd_000.root")["tree"]
    arrays = tree.arrays(library="ak")
    assert len(arrays) == 12 and np.all(arrays.n_objects == 0) and ak.all(ak.num(arrays.obj_pt) == 0)
    assert tree["obj_pt"].typename == "float[]" and tree["obj_class"].typename == "int32_t[]"
    assert ak.all(ak.num(arrays.ecal_eta) > 0)


def test_composed_configuration_and_defaults():
    cfg, generate = build_sample(composed())
    assert isinstance(cfg, EventSampleConfig) and generate is generate_events
    assert cfg.classes == ("QCD", "Top", "W", "Z") and list(cfg.processes) == list(PROCESSES)
    assert cfg.object_definition() == events.ObjectDefinition(radius=0.8, pt_min=200.0, abs_eta_max=2.0)
    assert (cfg.pythia["pthat_min"], cfg.pythia["pthat_max"], cfg.pythia["mpi"]) == (300.0, 1200.0, False)
    # the classes may come in another order: it defines obj_class
    reordered, _ = build_sample(composed("generate.classes=[Z,W,Top,QCD]"))
    assert reordered.classes == ("Z", "W", "Top", "QCD")
    # a minimal mapping takes every default
    minimal = EventSampleConfig.from_dict(
        {"kind": "events", "output_dir": "x", "processes": {"qcd": {"n_events": 3}}}
    )
    assert (
        minimal.pythia == cfg.pythia and minimal.detector == cfg.detector and minimal.objects == cfg.objects
    )


@pytest.mark.parametrize(
    ("change", "key"),
    [
        ({"colour": 1}, "generate: unknown key(s) ['colour']"),
        ({"classes": ["QCD", "Top", "W"]}, "generate.classes"),
        ({"classes": ["QCD", "Tbqq", "W", "Z"]}, "generate.classes"),
        ({"classes": ["QCD", "Top", "W", "W"]}, "generate.classes"),
        ({"objects": {"radius": 0.8, "pt_min": 200.0, "abs_eta_max": 2.5}}, "generate.objects.abs_eta_max"),
        ({"image_abs_eta_max": 1.5}, "generate.objects.abs_eta_max"),
        ({"objects": {"size": 1.0}}, "generate.objects"),
        ({"objects": {"radius": -0.4}}, "generate.objects.radius"),
        ({"processes": {"wqq": {"n_events": 10}}}, "generate.processes.wqq"),
        ({"processes": {"qcd": {"n_jets": 10}}}, "generate.processes.qcd"),
        ({"processes": {"qcd": {"n_events": 0}}}, "generate.processes.qcd.n_events"),
        ({"events_per_file": 0}, "generate.events_per_file"),
        ({"workers": "many"}, "generate.workers"),
        ({"pythia": {"pthat_min": 900.0, "pthat_max": 600.0}}, "generate.pythia.pthat_max"),
        ({"pythia": {"tune": 14}}, "generate.pythia"),
        ({"detector": {"ecal": {"size": 0.1}}}, "generate.detector.ecal"),
    ],
)
def test_bad_configuration_is_one_line_naming_the_key(change, key):
    values = {**composed(), **change}
    with pytest.raises(ConfigError) as err:
        build_sample(values)
    message = str(err.value)
    assert "\n" not in message and message.startswith(key), message
    if key == "generate.classes":
        assert all(name in message for name in CLASSES)


def test_a_directory_of_another_configuration_is_refused(events_sample):
    other = dataclasses.replace(config_of(events_sample), seed=9)
    with pytest.raises(ConfigError, match=r"generate\.seed"):
        check_manifest(other, events.EVENTS)
