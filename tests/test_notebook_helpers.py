"""hepnn.analysis.notebook_helpers: run directories, samples and air-shower figures for the notebooks."""

from __future__ import annotations

import json

import numpy as np
import pytest
import uproot
from matplotlib.figure import Figure

from hepnn.analysis import notebook_helpers as nh
from hepnn.data.source import DataInputError
from hepnn.metrics import regression as rm


def write_classifier_run(path, scores_tbqq, labels, summary=None):
    """A run directory with a two-class predictions file and a summary (no metrics CSV)."""
    (path / "predictions").mkdir(parents=True)
    scores_tbqq = np.asarray(scores_tbqq, dtype=np.float32)
    with uproot.recreate(path / "predictions" / "test.root") as f:
        f["predictions"] = {
            "score_QCD": 1 - scores_tbqq,
            "score_Tbqq": scores_tbqq,
            "label": np.asarray(labels, dtype=np.int32),
        }
        f["classes"] = json.dumps(["QCD", "Tbqq"])
    (path / "summary.json").write_text(json.dumps(summary or {}))
    return path


def test_load_run_reads_predictions_and_summary(tmp_path):
    run = nh.load_run(write_classifier_run(tmp_path / "a", [0.9, 0.2, 0.6], [1, 0, 0], {"test/auc": 0.5}))
    assert run.kind == "classification" and run.name == "a" and run.metrics_csv is None
    assert run.summary == {"test/auc": 0.5} and run.signal_class == "Tbqq"
    np.testing.assert_allclose(run.predictions["scores"][:, 1], [0.9, 0.2, 0.6], rtol=1e-6)


def test_a_missing_run_directory_or_predictions_file_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="no_such_run"):
        nh.load_runs({"x": tmp_path / "no_such_run"})
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match=r"predictions/test\.root"):
        nh.load_run(tmp_path / "empty")
    assert nh.load_run(tmp_path / "empty", require_predictions=False).predictions is None
    with pytest.raises(ValueError, match="empty mapping"):
        nh.load_runs({})


def test_roc_inputs_confusion_matrix_and_table(tmp_path):
    run = nh.load_run(
        write_classifier_run(tmp_path / "r", [0.9, 0.2, 0.6, 0.4], [1, 0, 0, 1], {"test/auc": 0.75})
    )
    ((name, (_, is_signal)),) = nh.roc_inputs({"PFN": run}).items()
    assert name == "PFN (Tbqq vs rest)"
    np.testing.assert_array_equal(is_signal, [True, False, False, True])
    matrix, classes = nh.confusion_matrix_of(run)
    assert classes == ["QCD", "Tbqq"] and matrix.tolist() == [[1, 1], [1, 1]]
    run.summary["test/confusion_matrix"] = {
        "classes": ["a", "b"],
        "rows_true_columns_predicted": [[2, 0], [0, 2]],
    }
    assert nh.confusion_matrix_of(run) == (pytest.approx(np.array([[2, 0], [0, 2]])), ["a", "b"])
    table = nh.classifier_table({"PFN": run}).splitlines()
    assert table[0].startswith("| run | test AUC | 1/eps_B at eps_S = 0.3")
    assert table[2].startswith("| PFN | 0.7500 | - |")


def test_regression_figures_of_merit_use_the_regression_metrics(tmp_path):
    rng = np.random.default_rng(1)
    true = {"log10_energy": rng.uniform(18.5, 20, 50), "core_x": rng.normal(0, 500, 50)}
    true["core_y"] = rng.normal(0, 500, 50)
    pred = {k: v + rng.normal(0, 0.1, 50) for k, v in true.items()}
    (tmp_path / "predictions").mkdir()
    with uproot.recreate(tmp_path / "predictions" / "test.root") as f:
        f["predictions"] = {
            **{f"pred_{k}": v for k, v in pred.items()},
            **{f"true_{k}": v for k, v in true.items()},
        }
        f["targets"] = json.dumps(list(true))
    run = nh.load_run(tmp_path)
    figures = nh.regression_figures_of_merit(run)
    assert "angular_resolution_deg" not in figures  # no axis targets in this run
    assert figures["energy_resolution"] == pytest.approx(
        rm.energy_resolution(pred["log10_energy"], true["log10_energy"])
    )
    cores = [np.stack([d["core_x"], d["core_y"]], axis=1) for d in (pred, true)]
    assert figures["core_resolution_m"] == pytest.approx(rm.core_resolution(*cores))
    with pytest.raises(ValueError, match="not a classification run"):
        nh.roc_inputs({"r": run})


def test_read_events_across_files_and_missing_files(tmp_path):
    for i in range(2):
        with uproot.recreate(tmp_path / f"s_{i}.root") as f:
            f["tree"] = {"a": np.arange(3) + 10 * i, "b": np.ones((3, 4), dtype=np.float32)}
    events = nh.read_events(tmp_path / "s_*.root", max_events=5)
    assert events["a"].tolist() == [0, 1, 2, 10, 11] and events["b"].shape == (5, 4)
    assert nh.event_at(events, 3)["a"] == 10
    with pytest.raises(DataInputError, match=r"DATA_FILES.*nothing_here"):
        nh.read_events(tmp_path / "nothing_here*.root")
    with pytest.raises(ValueError, match="no tree 'events'"):
        nh.read_events(tmp_path / "s_0.root", tree="events")


def toy_event():
    x, y = (np.array(v, dtype=float) * 1500 for v in np.meshgrid([-1, 0, 1], [-1, 0, 1], indexing="ij"))
    traces = np.zeros((9, 10))
    traces[4, 2:5] = [5, 20, 3]
    traces[5, 3:5] = [2, 1]
    traces[1, 4] = 0.5
    return {
        "traces": traces,
        "station_x": x.ravel(),
        "station_y": y.ravel(),
        "station_triggered": traces.sum(axis=1) > 0,
        "station_start_time": np.linspace(-500, 500, 9),
        "core_x": 100.0,
        "core_y": -50.0,
        "axis_x": 0.3,
        "axis_y": 0.4,
        "zenith": 0.52,
        "log10_energy": 19.2,
    }


def test_airshower_footprint_and_traces_draw_one_event(tmp_path):
    event = toy_event()
    footprint = nh.airshower_footprint(event)
    assert isinstance(footprint, Figure) and "3 triggered stations" in footprint.axes[0].get_title()
    footprint.savefig(tmp_path / "footprint.png")
    traces = nh.station_traces(event, n_stations=5)
    titles = [ax.get_title() for ax in traces.axes]
    assert len(titles) == 3 and titles[0].startswith("station 4 ") and "28.0 VEM" in titles[0]
    traces.savefig(tmp_path / "traces.png")
    with pytest.raises(ValueError, match="station_triggered"):
        nh.airshower_footprint({k: v for k, v in event.items() if k != "station_triggered"})
    with pytest.raises(ValueError, match="no station with a signal"):
        nh.station_traces({**event, "traces": np.zeros((9, 10))})


def test_jet_images_come_from_the_data_pipeline(jet_sample):
    pre = nh.jet_images(f"{jet_sample}/*.root", max_jets=120)
    raw = nh.jet_images(f"{jet_sample}/*.root", max_jets=120, preprocessing=False)
    assert pre.images.shape == raw.images.shape == (120, 3, 40, 40)
    assert pre.classes == ["QCD", "Tbqq"] and pre.channels == ["ecal", "hcal", "tracks"]
    assert set(pre.labels.tolist()) == {0, 1}  # the shuffled training stream mixes the files
    np.testing.assert_array_equal(pre.entry, raw.entry)
    np.testing.assert_allclose(pre.images.sum(axis=(1, 2, 3)), 1.0, rtol=1e-4)
    assert raw.images.sum(axis=(1, 2, 3)).min() > 100  # GeV: jets of 550-650 GeV, most inside the grid
    with pytest.raises(ValueError, match="no image input group"):
        nh.jet_images(f"{jet_sample}/*.root", data="toptag", max_jets=10)
    with pytest.raises(ValueError, match="split must be one of"):
        nh.jet_images(f"{jet_sample}/*.root", max_jets=10, split="everything")
