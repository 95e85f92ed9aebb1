"""Generator sanity: physics of the jets, the file schema, reproducibility and safe writing."""

import json

import awkward as ak
import numpy as np
import pytest
import uproot

from hepnn.errors import ConfigError
from hepnn.sim.sample import SampleConfig, check_manifest, generate_sample, plan_shards
from tests.conftest import sample_config


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
        "label",
        "label_QCD",
        "label_Tbqq",
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
