"""Generator sanity: physics of the jets, the file schema, reproducibility and safe writing."""

import json
import re

import awkward as ak
import numpy as np
import pytest
import uproot

from hepnn.errors import ConfigError
from hepnn.sim.jets import PROCESSES, JetSelection, PythiaSetup, make_pythia
from hepnn.sim.sample import SCHEMA_VERSION, SampleConfig, check_manifest, generate_sample, plan_shards
from hepnn.sim.substructure import BRANCHES as SUBSTRUCTURE_BRANCHES
from tests.conftest import compose_generate, sample_config

CELL_BRANCHES = [f"cell_{layer}_{x}" for layer in ("ecal", "hcal") for x in ("deta", "dphi", "energy")]


def read_process(sample_dir, process):
    return uproot.concatenate(f"{sample_dir}/{process}_*.root:tree", library="ak")


def mass_mode(masses, lo=0.0, hi=300.0, width=10.0):
    counts, edges = np.histogram(masses, bins=np.arange(lo, hi + width, width))
    return edges[np.argmax(counts)] + width / 2


def test_files_follow_the_jetclass_schema(jet_sample):
    files = sorted(p.name for p in jet_sample.glob("*.root"))
    assert files == ["qcd_000.root", "qcd_001.root", "ttbar_000.root", "ttbar_001.root"]
    assert not list(jet_sample.glob("*.tmp"))
    tree = uproot.open(jet_sample / "ttbar_000.root")["tree"]
    assert tree.num_entries == 400
    expected = {
        "part_px",
        "part_py",
        "part_pz",
        "part_energy",
        "part_deta",
        "part_dphi",
        "part_charge",
        "part_pid",
        "part_isChargedHadron",
        "part_isNeutralHadron",
        "part_isPhoton",
        "part_isElectron",
        "part_isMuon",
        "jet_pt",
        "jet_eta",
        "jet_phi",
        "jet_energy",
        "jet_mass",
        "jet_nparticles",
        *SUBSTRUCTURE_BRANCHES,
        "label",
        "label_QCD",
        "label_Tbqq",
        *CELL_BRANCHES,
    }
    assert expected <= set(tree.keys())
    arrays = tree.arrays(["label", "label_QCD", "label_Tbqq"])
    assert np.all(arrays.label == 1) and np.all(arrays.label_Tbqq) and not np.any(arrays.label_QCD)


def test_every_jet_passes_the_cuts_and_constituents_add_up(jet_sample):
    for process in ("ttbar", "qcd"):
        jets = read_process(jet_sample, process)
        assert np.all((jets.jet_pt > 550) & (jets.jet_pt < 650))
        assert np.all(np.abs(jets.jet_eta) < 2.0)
        assert np.all(jets.jet_nparticles == ak.num(jets.part_px))
        # the jet four-momentum is the sum of its constituents (E-scheme)
        np.testing.assert_allclose(ak.sum(jets.part_energy, axis=1), jets.jet_energy, rtol=1e-4)
        pt = np.hypot(ak.sum(jets.part_px, axis=1), ak.sum(jets.part_py, axis=1))
        np.testing.assert_allclose(pt, jets.jet_pt, rtol=1e-4)
        # constituents sorted by decreasing pT, inside the jet's neighbourhood
        part_pt = np.hypot(jets.part_px, jets.part_py)
        assert ak.all(part_pt[:, 1:] <= part_pt[:, :-1] + 1e-3)
        assert ak.mean(np.hypot(jets.part_deta, jets.part_dphi) < 0.8) > 0.99


def test_top_jet_mass_peaks_near_the_top_mass_and_qcd_does_not(jet_sample):
    top = read_process(jet_sample, "ttbar")
    qcd = read_process(jet_sample, "qcd")
    assert 155 <= mass_mode(top.jet_mass) <= 190
    assert not 155 <= mass_mode(qcd.jet_mass) <= 190
    top_window = np.mean((top.jet_mass > 140) & (top.jet_mass < 200))
    qcd_window = np.mean((qcd.jet_mass > 140) & (qcd.jet_mass < 200))
    assert top_window > 0.5 > 2 * qcd_window
    # top jets have more constituents (three hard prongs) than QCD jets on average
    assert np.mean(top.jet_nparticles) > np.mean(qcd.jet_nparticles)
    # truth: top jets are matched to a top quark close to the jet pT
    assert np.all(np.abs(top.aux_parton_pid) == 6)
    assert np.median(top.jet_pt / top.aux_parton_pt) == pytest.approx(1.0, abs=0.1)


def test_top_jets_have_three_prongs_and_w_jets_two(jet_sample, jets4_sample):
    top = read_process(jet_sample, "ttbar")
    qcd = read_process(jet_sample, "qcd")
    assert np.median(top.jet_tau32) < 0.8 * np.median(qcd.jet_tau32)
    w = read_process(jets4_sample, "wqq")
    assert np.median(w.jet_tau21) < 0.8 * np.median(qcd.jet_tau21)
    assert np.median(w.jet_d2) < np.median(qcd.jet_d2)
    for jets in (top, qcd, w):
        # exclusive-kT axes are not the minimising ones: a few jets have tau2 > tau1 or tau3 > tau2
        assert np.mean(jets.jet_tau1 >= jets.jet_tau2) > 0.9 and np.mean(jets.jet_tau2 >= jets.jet_tau3) > 0.9
        assert np.all((jets.jet_tau32 >= 0) & (jets.jet_tau32 < 1.5) & (jets.jet_tau21 < 1.5))
        assert np.all((jets.jet_ptd > 0) & (jets.jet_ptd <= 1) & (jets.jet_girth > 0))


def test_resolved_pythia_settings_follow_each_reference_sample(tmp_path):
    """No multiple parton interactions in the top-tagging conditions (toptag, jets4), the underlying
    event on in the EnergyFlow quark/gluon conditions (qg), as Pythia itself reports them."""
    for sample, process, mpi in (("toptag", "qcd", False), ("jets4", "wqq", False), ("qg", "zjet_g", True)):
        cfg = compose_generate(sample, tmp_path / sample)
        setup = PythiaSetup.from_dict(cfg.pythia)
        assert setup.mpi is mpi
        pythia = make_pythia(PROCESSES[process], setup, seed=3)
        assert pythia.flag("PartonLevel:MPI") is mpi, sample
        assert pythia.flag("HadronLevel:all") and pythia.parm("Beams:eCM") == 14000.0
        assert pythia.parm("PhaseSpace:pTHatMin") == cfg.pythia["pthat_min"]
    with pytest.raises(ConfigError, match=r"generate\.pythia\.mpi must be true or false, got 'no'"):
        PythiaSetup.from_dict({"mpi": "no"})
    with pytest.raises(ConfigError, match=r"generate\.pythia: unknown key\(s\) \['MPI'\]"):
        PythiaSetup.from_dict({"MPI": False})


def test_detector_objects_are_physical(jet_sample):
    jets = read_process(jet_sample, "qcd")
    flags = [
        jets.part_isChargedHadron,
        jets.part_isNeutralHadron,
        jets.part_isPhoton,
        jets.part_isElectron,
        jets.part_isMuon,
    ]
    assert ak.all(sum(flags) == 1)  # every constituent is exactly one kind
    charged = jets.part_charge != 0
    assert ak.all(charged == ((jets.part_isChargedHadron + jets.part_isElectron + jets.part_isMuon) == 1))
    mass2 = jets.part_energy**2 - jets.part_px**2 - jets.part_py**2 - jets.part_pz**2
    assert ak.all(mass2 > -1e-2 * jets.part_energy**2)
    # neutral calorimeter cells pass their thresholds (0.5 GeV ECAL, 1 GeV HCAL)
    assert ak.all(jets.part_energy[jets.part_isPhoton == 1] > 0.5)
    assert ak.all(jets.part_energy[jets.part_isNeutralHadron == 1] > 1.0)


def test_same_seed_gives_identical_files_whatever_the_worker_count(tmp_path):
    one = sample_config(tmp_path / "one", n_jets=30, jets_per_file=15, workers=1, seed=11)
    two = sample_config(tmp_path / "two", n_jets=30, jets_per_file=15, workers=2, seed=11)
    generate_sample(one, progress_bar=False)
    generate_sample(two, progress_bar=False)
    names = sorted(p.name for p in (tmp_path / "one").glob("*.root"))
    assert names == sorted(p.name for p in (tmp_path / "two").glob("*.root")) and len(names) == 4
    for name in names:
        a = uproot.open(tmp_path / "one" / name)["tree"].arrays()
        b = uproot.open(tmp_path / "two" / name)["tree"].arrays()
        assert a.fields == b.fields
        for field in a.fields:
            assert ak.all(ak.ravel(a[field]) == ak.ravel(b[field])), field
    other = sample_config(tmp_path / "other", n_jets=30, jets_per_file=15, workers=1, seed=12)
    assert [s.pythia_seed for s in plan_shards(other)] != [s.pythia_seed for s in plan_shards(one)]


def test_rerun_reuses_files_and_refuses_a_different_configuration(tmp_path):
    cfg = sample_config(tmp_path, n_jets=10, jets_per_file=10, workers=1, seed=3)
    first = generate_sample(cfg, progress_bar=False)
    assert len(first.generated) == 2
    again = generate_sample(cfg, progress_bar=False)
    assert again.generated == [] and "reused 2" in again.summary()
    assert json.loads((tmp_path / "manifest.json").read_text())["seed"] == 3
    changed = sample_config(tmp_path, n_jets=10, jets_per_file=10, workers=1, seed=4)
    with pytest.raises(ConfigError, match=r"different configuration \(differing keys: generate.seed\)"):
        check_manifest(changed)


def test_config_errors_name_the_key(tmp_path):
    base = {
        "output_dir": str(tmp_path),
        "classes": ["QCD", "Tbqq"],
        "processes": {"qcd": {"n_jets": 5, "label": "QCD"}},
    }
    with pytest.raises(ConfigError, match=r"generate\.processes\.zprime: unknown process"):
        SampleConfig.from_dict({**base, "processes": {"zprime": {"n_jets": 5, "label": "QCD"}}})
    with pytest.raises(ConfigError, match=r"generate\.processes\.qcd\.label 'top' is not one of"):
        SampleConfig.from_dict({**base, "processes": {"qcd": {"n_jets": 5, "label": "top"}}})
    with pytest.raises(ConfigError, match=r"generate: unknown key\(s\) \['n_events'\]"):
        SampleConfig.from_dict({**base, "n_events": 3})


def test_an_interrupted_sample_is_completed_identically(tmp_path):
    cfg = sample_config(tmp_path, n_jets=10, jets_per_file=5, workers=1, seed=8)
    generate_sample(cfg, progress_bar=False)
    victim = tmp_path / "ttbar_001.root"
    before = uproot.open(victim)["tree"].arrays()
    victim.unlink()
    report = generate_sample(cfg, progress_bar=False)
    assert [r.path for r in report.generated] == [str(victim)]
    after = uproot.open(victim)["tree"].arrays()
    assert ak.all(ak.ravel(before.part_px) == ak.ravel(after.part_px))


def rapidity(jets):
    pz = ak.sum(jets.part_pz, axis=1)
    return 0.5 * np.log((jets.jet_energy + pz) / (jets.jet_energy - pz))


@pytest.mark.parametrize("sample, radius", [("jet_sample", 0.8), ("qg_sample", 0.4)])
def test_calorimeter_cells_lie_within_r_of_the_jet_axis(sample, radius, request):
    files = f"{request.getfixturevalue(sample)}/*.root:tree"
    jets = uproot.concatenate(files, [*CELL_BRANCHES, "jet_eta"], library="ak")
    for layer, size, threshold in (("ecal", 0.025, 0.5), ("hcal", 0.1, 1.0)):
        deta, dphi, energy = (jets[f"cell_{layer}_{x}"] for x in ("deta", "dphi", "energy"))
        assert str(ak.type(energy)).endswith("var * float32")
        assert ak.all(np.hypot(deta, dphi) < radius + 1e-5)
        assert ak.all((dphi >= -np.pi) & (dphi < np.pi))
        assert ak.all(energy > threshold)  # merged cells above the layer's threshold (GeV)
        assert ak.all(energy[:, 1:] <= energy[:, :-1])  # sorted by decreasing energy
        assert ak.mean(ak.num(energy)) > 5
        # cells sit at the centres of the layer's grid (cells of size 0.025 or 0.1 from eta = -3)
        position = ak.flatten(deta + jets.jet_eta + 3.0) / size - 0.5
        assert np.allclose(position, np.round(position), atol=1e-3)


def test_summed_cell_energy_is_about_the_jet_energy(jet_sample):
    """The calorimeters measure the jet's energy: the cell sum within R over the jet energy is
    1 within 5 % for the median jet and within 15 % for 95 % of jets. Single jets may differ
    much more: muons are constituents (tracks) but leave no cell, the circle Delta R < R is not the anti-kT
    jet's exact area, tracked hadrons are measured with the HCAL resolution (50 %/sqrt(E))
    instead of the tracker's 1-2 %, and thresholds act on merged cells. Neutrinos and low-pT
    loopers are missing from both the jet and the cells."""
    jets = uproot.concatenate(f"{jet_sample}/*.root:tree", [*CELL_BRANCHES, "jet_energy"], library="ak")
    cells = ak.sum(jets.cell_ecal_energy, axis=1) + ak.sum(jets.cell_hcal_energy, axis=1)
    ratio = ak.to_numpy(cells / jets.jet_energy)
    assert np.median(ratio) == pytest.approx(1.0, abs=0.05)
    assert np.mean(np.abs(ratio - 1) < 0.15) > 0.95
    assert np.all((ratio > 0.3) & (ratio < 1.7))


def test_charged_hadrons_deposit_in_the_hcal_cells(jet_sample):
    jets = read_process(jet_sample, "qcd")
    hcal = ak.sum(jets.cell_hcal_energy, axis=1)
    neutral = ak.sum(jets.part_energy[jets.part_isNeutralHadron == 1], axis=1)
    charged = ak.sum(jets.part_energy[jets.part_isChargedHadron == 1], axis=1)
    # the HCAL cells hold the charged hadrons' energy too, not only the particle-flow neutral cells
    assert np.all(hcal > neutral + 0.5 * charged)
    assert np.median(ak.to_numpy(hcal / (neutral + charged))) == pytest.approx(1.0, abs=0.05)


def test_w_and_z_jet_masses_peak_near_the_boson_masses(jets4_sample):
    medians = {}
    for process, boson_pid in (("wqq", 24), ("zqq", 23)):
        jets = read_process(jets4_sample, process)
        assert len(jets) == 300 and np.all(np.abs(jets.aux_parton_pid) == boson_pid)
        assert np.all((jets.jet_pt > 550) & (jets.jet_pt < 650) & (np.abs(jets.jet_eta) < 2.0))
        in_window = jets.jet_mass[(jets.jet_mass > 60) & (jets.jet_mass < 110)]
        assert len(in_window) > 0.75 * len(jets)
        medians[process] = float(np.median(in_window))
    # the reconstructed mass may sit a few GeV from the boson mass (cells at their centres, the
    # cone's edge); 300 jets give medians to about 1 GeV
    assert medians["wqq"] == pytest.approx(80.4, abs=7)
    assert medians["zqq"] == pytest.approx(91.2, abs=7)
    assert 5 < medians["zqq"] - medians["wqq"] < 17


def test_quark_jets_have_fewer_constituents_than_gluon_jets(qg_sample):
    quark = read_process(qg_sample, "zjet_q")
    gluon = read_process(qg_sample, "zjet_g")
    assert len(quark) == len(gluon) == 120
    assert np.all((np.abs(quark.aux_parton_pid) >= 1) & (np.abs(quark.aux_parton_pid) <= 3))
    assert np.all(gluon.aux_parton_pid == 21)
    assert np.all(quark.label == 1) and np.all(quark.label_quark) and not np.any(quark.label_gluon)
    assert np.mean(quark.jet_nparticles) < 0.8 * np.mean(gluon.jet_nparticles)
    # quark jets are narrower, with their pT in fewer particles
    assert np.median(quark.jet_girth) < np.median(gluon.jet_girth)
    assert np.median(quark.jet_ptd) > np.median(gluon.jet_ptd)


def test_the_rapidity_cut_holds(qg_sample):
    jets = uproot.concatenate(f"{qg_sample}/*.root:tree", library="ak")
    assert np.all((jets.jet_pt > 500) & (jets.jet_pt < 550))
    assert np.all(np.abs(rapidity(jets)) < 1.7 + 1e-4)
    # every part_* constituent is within R = 0.4 of the axis for anti-kT jets of this size
    assert ak.mean(np.hypot(jets.part_deta, jets.part_dphi) < 0.4) > 0.99


def test_jet_selection_errors_name_the_key():
    assert JetSelection.from_dict({"abs_eta_max": None, "abs_rapidity_max": 1.7}).abs_rapidity_max == 1.7
    with pytest.raises(ConfigError, match=r"generate\.jet: unknown key\(s\) \['abs_y_max'\]"):
        JetSelection.from_dict({"abs_y_max": 1.7})
    with pytest.raises(
        ConfigError, match=r"generate\.jet\.abs_rapidity_max must be a positive number or null"
    ):
        JetSelection.from_dict({"abs_rapidity_max": "1.7"})


def test_qg_and_jets4_configs_compose_and_generate(qg_sample, jets4_sample):
    for sample, classes, files in (
        (qg_sample, ["gluon", "quark"], ["zjet_g_000.root", "zjet_q_000.root"]),
        (
            jets4_sample,
            ["QCD", "Tbqq", "Wqq", "Zqq"],
            ["qcd_000.root", "ttbar_000.root", "wqq_000.root", "zqq_000.root"],
        ),
    ):
        assert sorted(p.name for p in sample.glob("*.root")) == files
        manifest = json.loads((sample / "manifest.json").read_text())
        assert manifest["classes"] == classes and manifest["schema_version"] == SCHEMA_VERSION
        jets = uproot.concatenate(f"{sample}/*.root:tree", library="ak")
        assert set(CELL_BRANCHES) | {f"label_{c}" for c in classes} <= set(jets.fields)
        assert sorted(set(jets.label.tolist())) == list(range(len(classes)))
        one_hot = np.stack([ak.to_numpy(jets[f"label_{c}"]) for c in classes], axis=1)
        assert np.array_equal(np.argmax(one_hot, axis=1), ak.to_numpy(jets.label))
    tops = read_process(jets4_sample, "ttbar")
    assert len(tops) == 30 and np.all(np.abs(tops.aux_parton_pid) == 6)


@pytest.mark.parametrize("version", [None, 1, 2])
def test_a_sample_of_an_older_schema_is_refused(tmp_path, version):
    cfg = sample_config(tmp_path, n_jets=10, jets_per_file=10, workers=1, seed=3)
    old = cfg.physics_dict() | ({} if version is None else {"schema_version": version})
    (tmp_path / "manifest.json").write_text(json.dumps(old))
    message = (
        rf"{re.escape(str(tmp_path))} holds a sample of schema version {version or 1} .*jet_tau1.*"
        "delete that directory"
    )
    with pytest.raises(ConfigError, match=message):
        check_manifest(cfg)
    with pytest.raises(ConfigError, match=message):
        generate_sample(cfg, progress_bar=False)
    assert not list(tmp_path.glob("*.root"))


def test_shards_without_a_manifest_are_refused(tmp_path):
    cfg = sample_config(tmp_path, n_jets=10, jets_per_file=10, workers=1, seed=3)
    (tmp_path / "qcd_000.root").write_bytes(b"")
    with pytest.raises(
        ConfigError,
        match=rf"{re.escape(str(tmp_path))} holds sample files \(qcd_000.root, ...\) but no manifest",
    ):
        generate_sample(cfg, progress_bar=False)
