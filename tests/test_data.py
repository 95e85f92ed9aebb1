"""The ROOT loader: batch contents, exactly-once coverage, and errors on bad input."""

import awkward as ak
import numpy as np
import pytest
import torch
import uproot
from hydra.errors import InstantiationException

from hepnn.data.loading import BatchLoader
from hepnn.data.preprocess import DataValueError
from hepnn.data.source import DataInputError
from hepnn.data.spec import DataSpec
from tests.conftest import make_datamodule


@pytest.fixture()
def datamodule(jet_sample):
    dm = make_datamodule(f"{jet_sample}/*.root", num_workers=0, chunk_size=150, batch_size=64)
    dm.setup()
    return dm


def test_batch_shapes_padding_and_standardisation(datamodule, jet_sample):
    batch = next(iter(datamodule.test_dataloader()))
    n = len(batch["label"])
    assert batch["particles"].shape == (n, 15, 128) and batch["particles"].dtype == torch.float32
    assert batch["mask"].shape == (n, 128) and batch["mask"].dtype == torch.bool
    # the configured observers, and the baseline's (data.baseline: jet_mass x jet_tau32)
    assert set(batch["observers"]) == {
        "jet_pt",
        "jet_eta",
        "jet_phi",
        "jet_mass",
        "jet_nparticles",
        "jet_tau32",
    }
    # compare the first jet with a direct computation from the file
    path = datamodule.source_files()[int(batch["file_index"][0])]
    entry = int(batch["entry"][0])
    jet = uproot.open(path)["tree"].arrays(entry_start=entry, entry_stop=entry + 1)[0]
    n_part = len(jet.part_px)
    assert batch["mask"][0].sum() == min(n_part, 128) == int(batch["observers"]["jet_nparticles"][0])
    pt = np.hypot(ak.to_numpy(jet.part_px), ak.to_numpy(jet.part_py))
    expected_logpt = np.clip((np.log(pt) - 1.2) / 1.5, -5, 5)[:128]
    np.testing.assert_allclose(
        batch["particles"][0, 0, :n_part].numpy(), expected_logpt, rtol=1e-5, atol=1e-5
    )
    expected_deltar = np.clip(
        (np.hypot(ak.to_numpy(jet.part_deta), ak.to_numpy(jet.part_dphi)) - 0.25) / 0.25, -5, 5
    )
    np.testing.assert_allclose(
        batch["particles"][0, 4, :n_part].numpy(), expected_deltar[:128], rtol=1e-5, atol=1e-5
    )
    # padding holds the pad value only
    assert torch.all(batch["particles"][~batch["mask"][:, None, :].expand_as(batch["particles"])] == 0)
    assert int(batch["label"][0]) == int(jet.label)


def test_only_needed_branches_are_read(datamodule):
    branches = datamodule.spec.branches
    assert {"part_px", "part_py", "part_energy", "part_deta", "part_dphi", "jet_pt", "jet_energy"} <= branches
    assert {"part_charge", "part_isPhoton", "label_QCD", "jet_tau32"} <= branches
    assert not {"part_pz", "part_pid", "label", "jet_tau21", "cell_ecal_energy"} & branches


@pytest.mark.parametrize(
    ("world", "workers", "selection"),
    [(1, 0, None), (1, 2, None), (2, 2, None), (3, 1, None), (2, 2, "'jet_mass > 100'")],
)
def test_each_entry_seen_exactly_once_per_epoch(jet_sample, world, workers, selection):
    dm = make_datamodule(
        f"{jet_sample}/*.root",
        num_workers=workers,
        chunk_size=100,
        batch_size=50,
        buffer_size=200,
        selection=selection or "null",
    )
    dm.setup()
    expected = set()
    for c in dm.datasets["train"].chunks:
        masses = uproot.open(c.path)["tree"]["jet_mass"].array(
            entry_start=c.start, entry_stop=c.stop, library="np"
        )
        expected |= {
            (c.file_index, c.start + i) for i in range(c.n_entries) if selection is None or masses[i] > 100
        }
    orders = []
    for epoch in range(2):
        dm.datasets["train"].set_epoch(epoch)
        seen = []
        n_batches = []
        for rank in range(world):
            loader = BatchLoader(dm.datasets["train"].at_position(rank, world), num_workers=workers)
            batches = list(loader)
            assert len(batches) == len(loader)  # the advertised length is right
            n_batches.append(len(batches))
            seen += [
                (int(f), int(e)) for b in batches for f, e in zip(b["file_index"], b["entry"], strict=True)
            ]
        assert len(set(n_batches)) == 1, n_batches  # every rank runs the same number of steps
        assert len(seen) == len(set(seen)) == len(expected)
        assert set(seen) == expected
        orders.append(seen)
    assert orders[0] != orders[1]  # a new shuffle every epoch


def test_batches_mix_classes(jet_sample):
    dm = make_datamodule(
        f"{jet_sample}/*.root", num_workers=0, chunk_size=100, batch_size=100, buffer_size=1000
    )
    dm.setup()
    # files hold one class each: the reservoir must mix them, up to the last full batch of the epoch
    fractions = [b["label"].float().mean().item() for b in dm.train_dataloader() if len(b["label"]) == 100]
    assert len(fractions) == 11
    assert all(0.25 < f < 0.75 for f in fractions), fractions


def test_selection_filters_entries(jet_sample):
    dm = make_datamodule(f"{jet_sample}/*.root", num_workers=0, selection="'jet_mass > 120'")
    dm.setup()
    batches = list(dm.test_dataloader())
    masses = torch.cat([b["observers"]["jet_mass"] for b in batches])
    assert len(masses) > 0 and torch.all(masses > 120)
    assert len(masses) == dm.datasets["test"].n_entries < sum(c.n_entries for c in dm.datasets["test"].chunks)
    assert len(batches) == len(dm.test_dataloader())  # counted before reading, for progress bars


def test_an_all_test_split_is_enough_for_testing_but_not_for_fitting(jet_sample):
    files = f"{jet_sample}/*.root"
    tested = make_datamodule(files, num_workers=0, split="{train: 0.0, val: 0.0, test: 1.0}")
    tested.setup("test")
    assert tested.datasets["train"].n_entries == 0 and tested.datasets["test"].n_entries == 1600
    entries = torch.cat([b["entry"] for b in tested.test_dataloader()])
    assert len(entries) == 1600
    fitted = make_datamodule(files, num_workers=0, split="{train: 0.0, val: 0.0, test: 1.0}")
    with pytest.raises(DataInputError, match=r"the train split of data\.files=.* is empty"):
        fitted.setup("fit")


def test_missing_files_are_named(tmp_path):
    dm = make_datamodule(f"{tmp_path}/nothing_*.root", generate="null")
    with pytest.raises(DataInputError, match=r"data.files: no input file matches '.*nothing_\*\.root'"):
        dm.setup()


def test_missing_tree_lists_the_trees_there(jet_sample):
    dm = make_datamodule(f"{jet_sample}/*.root", tree="Events")
    with pytest.raises(
        DataInputError, match=r"qcd_000.root: no tree 'Events' \(data.tree\); trees in this file: \['tree'\]"
    ):
        dm.setup()


def test_missing_branch_names_close_matches(jet_sample):
    dm = make_datamodule(f"{jet_sample}/*.root", **{"variables.part_e_log": "'np.log(part_energyy)'"})
    with pytest.raises(
        DataInputError, match=r"tree 'tree' has no branch 'part_energyy' \(close matches: part_energy"
    ):
        dm.setup()


def test_corrupt_file_is_named(jet_sample, tmp_path):
    broken = tmp_path / "broken.root"
    data = (jet_sample / "qcd_000.root").read_bytes()
    broken.write_bytes(data[: len(data) // 3])
    dm = make_datamodule(str(broken))
    with pytest.raises(DataInputError, match=r"broken\.root"):
        dm.setup()
        list(dm.train_dataloader())


def test_labels_must_be_one_hot(jet_sample):
    dm = make_datamodule(f"{jet_sample}/*.root", num_workers=0, **{"labels.Tbqq": "label_QCD"})
    dm.setup()
    # QCD files make both classes true, top files none: either way the first test chunk fails
    expected = (
        r"labels are not exactly one-hot in 60 entries, first at entry 340, which is true for "
        r"(no class|\['QCD', 'Tbqq'\])"
    )
    with pytest.raises(DataValueError, match=expected):
        next(iter(dm.test_dataloader()))


def test_non_finite_values_are_reported(jet_sample):
    dm = make_datamodule(
        f"{jet_sample}/*.root", num_workers=0, **{"variables.part_e_log": "'np.log(part_charge)'"}
    )
    dm.setup()
    with pytest.raises(
        DataValueError, match=r"data.inputs.particles.features.part_e_log: \d+ non-finite value"
    ):
        next(iter(dm.test_dataloader()))


def test_unknown_observer_and_forbidden_selection(jet_sample):
    dm = make_datamodule(f"{jet_sample}/*.root", num_workers=0, observers="[jet_pt,jet_tau54]")
    with pytest.raises(DataInputError, match="no branch 'jet_tau54'"):
        dm.setup()
    with pytest.raises(
        InstantiationException, match=r"data.selection: expression 'jet_pt.__class__' is not allowed"
    ):
        make_datamodule(f"{jet_sample}/*.root", selection="'jet_pt.__class__'")


def test_datamodule_generates_its_sample_only_when_reading_the_generator_output(tmp_path, jet_sample):
    generate = {
        "generate.output_dir": str(tmp_path / "gen"),
        "generate.processes.qcd.n_jets": 6,
        "generate.processes.ttbar.n_jets": 6,
        "generate.jets_per_file": 6,
        "generate.workers": 1,
    }
    own_files = make_datamodule(f"{jet_sample}/*.root", **generate)
    own_files.prepare_data()
    assert not (tmp_path / "gen").exists()
    embedded = make_datamodule(f"{tmp_path}/gen/*.root", **generate)
    embedded.prepare_data()
    assert sorted(p.name for p in (tmp_path / "gen").glob("*.root")) == ["qcd_000.root", "ttbar_000.root"]
    embedded.setup()
    assert embedded.datasets["train"].n_entries + embedded.datasets["test"].n_entries > 0


def test_reweighting_flattens_every_class_in_jet_pt_through_the_loader(jet_sample, tmp_path):
    """data.reweight: weights fitted on the training split, carried by the batches; the classes'
    weighted pT histograms agree within statistics, and the spec (table included) round-trips."""
    edges = [550.0, 570.0, 590.0, 610.0, 630.0, 650.0]
    dm = make_datamodule(
        f"{jet_sample}/*.root",
        num_workers=0,
        batch_size=100,
        cache_dir=str(tmp_path / "cache"),
        reweight="{vars: {jet_pt: [550, 650, 5]}, target: flat}",
    )
    dm.setup()
    assert dm.spec.reweight_table is not None and list(dm.spec.reweighting.variables) == ["jet_pt"]
    batches = list(dm._loader("train"))
    weight = np.concatenate([b["weight"].numpy() for b in batches])
    label = np.concatenate([b["label"].numpy() for b in batches])
    pt = np.concatenate([b["observers"]["jet_pt"].numpy() for b in batches])
    assert len(weight) == dm.datasets["train"].n_entries and weight.min() >= 0
    assert np.mean(weight) == pytest.approx(1.0, rel=1e-4)  # normalised to the training entries
    contents = []
    for k in (0, 1):
        sums, _ = np.histogram(pt[label == k], bins=edges, weights=weight[label == k])
        squares, _ = np.histogram(pt[label == k], bins=edges, weights=weight[label == k] ** 2)
        contents.append((sums / sums.sum(), np.sqrt(squares) / sums.sum()))
    (a, da), (b, db) = contents
    chi2 = np.sum((a - b) ** 2 / (da**2 + db**2)) / len(a)
    assert chi2 < 3, (a, b)
    np.testing.assert_allclose(a, 1 / len(a), atol=1e-5)  # flat per bin (float32 weights)
    summary = dm.summary()
    assert 0 < summary["data/effective_entries_QCD"] <= np.sum(label == 0)
    assert DataSpec.from_config(dm.spec.to_config()).reweight_table == dm.spec.reweight_table
    assert list((tmp_path / "cache").glob("reweight-*.json"))  # cached beside the standardisation


def test_reweighting_errors_name_the_key(jet_sample):
    with pytest.raises(InstantiationException, match=r"data.reweight.target 'Top' is neither 'flat' nor one"):
        make_datamodule(f"{jet_sample}/*.root", reweight="{vars: {jet_pt: [550, 650, 5]}, target: Top}")
    dm = make_datamodule(f"{jet_sample}/*.root", reweight="{vars: {part_px: [0, 100, 5]}}")
    with pytest.raises(
        DataValueError, match=r"data.reweight.vars.part_px has one value per element of a list"
    ):
        dm.setup()


def test_baseline_errors_name_the_key(jet_sample):
    with pytest.raises(InstantiationException, match=r"data.baseline must name one or two observers"):
        make_datamodule(f"{jet_sample}/*.root", baseline="[jet_mass,jet_tau32,jet_tau21]")
    dm = make_datamodule(f"{jet_sample}/*.root", baseline="[jet_mass,jet_tau54]")
    with pytest.raises(
        DataInputError, match=r"data.baseline \(jet_tau54\) needs a branch that tree 'tree' has no "
    ):
        dm.setup()
    assert "jet_tau54" in make_datamodule(f"{jet_sample}/*.root", baseline="[jet_tau54]").spec.observers
