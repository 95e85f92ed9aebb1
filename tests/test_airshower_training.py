"""Air-shower reconstruction end to end: the airshower_3dconv preset on a small generated sample,
its batches, its predictions file and its figures (recomputed from what was written)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import uproot

from hepnn.data.datamodule import RootDataModule
from hepnn.metrics import regression as rm
from tests.conftest import compose_train
from tests.test_train import run_training

TARGETS = ["log10_energy", "xmax", "axis_x", "axis_y", "axis_z", "core_x", "core_y"]


def test_the_data_config_gives_trace_grids_and_targets(airshower_sample, tmp_path):
    import hydra

    cfg = compose_train(
        "experiment=airshower_3dconv",
        f"data.files={airshower_sample}/*.root",
        f"paths.output_dir={tmp_path}",
        "data.eval_batch_size=40",
    )
    dm: RootDataModule = hydra.utils.instantiate(cfg.data, _convert_="all")
    dm.prepare_data()
    dm.setup()
    batch = next(iter(dm.test_dataloader()))
    assert batch["traces"].shape == (40, 1, 9, 9, 80)
    assert batch["start_time"].shape == (40, 1, 9, 9) and batch["station_mask"].shape == (40, 1, 9, 9)
    assert batch["targets"].shape == (40, 7)
    # station k is grid position divmod(k, 9): the loader's grid is the file's (81, 80) reshaped
    path = dm.source_files()[int(batch["file_index"][0])]
    raw = uproot.open(path)["tree"].arrays(["traces", "station_triggered", "xmax"], library="np")
    entry = int(batch["entry"][0])
    np.testing.assert_array_equal(batch["traces"][0, 0].numpy(), raw["traces"][entry].reshape(9, 9, 80))
    np.testing.assert_array_equal(
        batch["station_mask"][0, 0].numpy(), raw["station_triggered"][entry].reshape(9, 9)
    )
    assert batch["targets"][0, 1].item() == pytest.approx(raw["xmax"][entry])


@pytest.fixture(scope="module")
def trained(airshower_sample, tmp_path_factory):
    """Two short epochs of the full preset on 600 showers (462 train, 48 val, 90 test)."""
    out = tmp_path_factory.mktemp("airshower_run")
    summary = run_training(
        out,
        "experiment=airshower_3dconv",
        f"data.files={airshower_sample}/*.root",
        f"data.cache_dir={out}/cache",
        "trainer.max_epochs=2",
        "data.batch_size=64",
        "data.eval_batch_size=64",
    )
    return out, summary


def test_predictions_file_holds_one_row_per_test_event_in_physical_units(trained):
    _, summary = trained
    handle = uproot.open(summary["predictions"])
    predictions = handle["predictions"].arrays(library="np")
    assert json.loads(str(handle["targets"])) == TARGETS
    sources = json.loads(str(handle["source_files"]))
    assert len(predictions["entry"]) == 2 * 45  # the last 15 % of each file's 300 events
    for index, path in enumerate(sources):
        rows = predictions["file_index"] == index
        assert sorted(predictions["entry"][rows]) == list(range(255, 300))
        truth = uproot.open(path)["tree"].arrays([*TARGETS, "zenith", "n_triggered"], library="np")
        entries = predictions["entry"][rows]
        for name in TARGETS:
            np.testing.assert_array_equal(predictions[f"true_{name}"][rows], truth[name][entries])
        np.testing.assert_array_equal(predictions["n_triggered"][rows], truth["n_triggered"][entries])
    # predictions come back in physical units, near the targets' ranges even after two short epochs
    assert 17.5 < np.median(predictions["pred_log10_energy"]) < 20.5
    assert 500 < np.median(predictions["pred_xmax"]) < 1000
    # the summary's figures are those of the written predictions
    axis = [np.stack([predictions[f"{kind}_axis_{c}"] for c in "xyz"], axis=1) for kind in ("pred", "true")]
    assert summary["test/angular_resolution_deg"] == pytest.approx(rm.angular_resolution_deg(*axis), rel=1e-4)
    energy = rm.energy_resolution(predictions["pred_log10_energy"], predictions["true_log10_energy"])
    assert summary["test/energy_resolution"] == pytest.approx(energy, rel=1e-4)
    core = [np.stack([predictions[f"{kind}_core_{c}"] for c in "xy"], axis=1) for kind in ("pred", "true")]
    assert summary["test/core_resolution_m"] == pytest.approx(rm.core_resolution(*core), rel=1e-4)
    assert summary["test/entries_per_second"] > 0
    assert summary["epochs"] == 2
