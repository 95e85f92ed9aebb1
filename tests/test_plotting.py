"""The plotting layer: the numbers behind the figures, the figures' contents and ``python -m hepnn.plot``."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import uproot

from hepnn.analysis import plotting
from hepnn.analysis.runs import find_metrics_csv, read_predictions
from hepnn.errors import ConfigError
from hepnn.plot import make_plots
from hepnn.tasks.regression import RegressionTask

REPO = Path(__file__).resolve().parents[1]

# a sparse CSVLogger table: lr at step 0 without an epoch, step losses, epoch losses and validation
METRIC_ROWS = [
    {"epoch": "", "step": "0", "lr-AdamW": "0.001"},
    {"epoch": "0", "step": "9", "train/loss_step": "0.70"},
    {"epoch": "0", "step": "19", "val/loss": "0.60", "val/auc": "0.80"},
    {"epoch": "0", "step": "19", "train/loss_epoch": "0.65"},
    {"epoch": "", "step": "20", "lr-AdamW": "0.0001"},
    {"epoch": "1", "step": "39", "val/loss": "0.50", "val/auc": "0.85"},
    {"epoch": "1", "step": "39", "val/loss": "0.45", "val/auc": "0.86"},  # epoch 1 logged again
    {"epoch": "1", "step": "39", "train/loss_epoch": "0.55"},
]


def write_metrics_csv(path: Path, rows=METRIC_ROWS) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    names = list(dict.fromkeys(k for row in rows for k in row))
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=names)
        writer.writeheader()
        writer.writerows(rows)
    return path


# --------------------------------------------------------------------------------------------------
# training curves


def test_read_metrics_csv_gives_nan_for_empty_cells(tmp_path):
    columns = plotting.read_metrics_csv(write_metrics_csv(tmp_path / "metrics.csv"))
    assert np.isnan(columns["epoch"][0]) and columns["lr-AdamW"][0] == pytest.approx(0.001)
    assert np.isnan(columns["val/loss"][:2]).all()
    assert plotting.read_metrics_csv(METRIC_ROWS).keys() == columns.keys()


def test_read_metrics_csv_errors(tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        plotting.read_metrics_csv(tmp_path / "missing.csv")
    with pytest.raises(ValueError, match="no rows"):
        plotting.read_metrics_csv([])


def test_epoch_series_one_value_per_epoch_last_wins():
    columns = plotting.read_metrics_csv(METRIC_ROWS)
    epochs, values = plotting.epoch_series(columns, "val/loss")
    np.testing.assert_array_equal(epochs, [0, 1])
    np.testing.assert_allclose(values, [0.60, 0.45])
    epochs, values = plotting.epoch_series(columns, "train/loss_epoch")
    np.testing.assert_allclose(values, [0.65, 0.55])
    with pytest.raises(ValueError, match="'val/acc' is not in the metrics table"):
        plotting.epoch_series(columns, "val/acc")


def test_training_curves_draws_losses_and_each_val_metric():
    fig = plotting.training_curves(METRIC_ROWS)
    visible = [ax for ax in fig.axes if ax.get_visible()]
    assert len(visible) == 2  # losses, val/auc
    lines = {line.get_label(): line for line in visible[0].get_lines()}
    assert set(lines) == {"train/loss_epoch", "val/loss"}
    np.testing.assert_allclose(lines["val/loss"].get_ydata(), [0.60, 0.45])
    np.testing.assert_allclose(visible[1].get_lines()[0].get_ydata(), [0.80, 0.86])
    assert visible[1].get_ylabel() == "val/auc"


def test_training_curves_errors():
    with pytest.raises(ValueError, match=r"no values logged for \['val/acc'\]"):
        plotting.training_curves(METRIC_ROWS, val_metrics=["val/acc"])
    with pytest.raises(ValueError, match="no loss or validation metric"):
        plotting.training_curves([{"epoch": "0", "step": "1", "lr-AdamW": "0.1"}])


def test_learning_rate_curve_uses_steps_and_log_scale():
    fig = plotting.learning_rate_curve(METRIC_ROWS)
    ax = fig.axes[0]
    line = ax.get_lines()[0]
    np.testing.assert_array_equal(line.get_xdata(), [0, 20])
    np.testing.assert_allclose(line.get_ydata(), [0.001, 0.0001])
    assert ax.get_yscale() == "log"  # the rate spans a factor 10 or more
    with pytest.raises(ValueError, match=r"no learning-rate column \(lr-\*\)"):
        plotting.learning_rate_curve([{"epoch": "0", "step": "1", "val/loss": "0.1"}])


# --------------------------------------------------------------------------------------------------
# classifiers


def test_roc_points_on_a_tiny_input():
    # descending scores: 0.8 (S), 0.4 (B), 0.35 (S), 0.1 (B)
    eff_s, rejection = plotting.roc_points([0.1, 0.4, 0.35, 0.8], [0, 0, 1, 1])
    np.testing.assert_allclose(eff_s, [0.5, 0.5, 1.0, 1.0])
    np.testing.assert_array_equal(rejection, [np.inf, 2.0, 2.0, 1.0])


def test_roc_curves_draws_finite_points_and_auc_in_legend():
    scores, labels = np.array([0.1, 0.4, 0.35, 0.8]), np.array([0, 0, 1, 1], dtype=bool)
    perfect = (np.array([0.1, 0.2, 0.8, 0.9]), labels)
    fig = plotting.roc_curves({"tiny": (scores, labels), "perfect": perfect})
    ax = fig.axes[0]
    assert ax.get_yscale() == "log"
    texts = [t.get_text() for t in ax.get_legend().get_texts()]
    assert texts[:2] == ["tiny (AUC = 0.7500)", "perfect (AUC = 1.0000)"]
    tiny = ax.get_lines()[0]
    np.testing.assert_allclose(tiny.get_xdata(), [0.5, 1.0, 1.0])
    np.testing.assert_allclose(tiny.get_ydata(), [2.0, 2.0, 1.0])


def test_style_applies_to_the_figure_only():
    import matplotlib

    before = matplotlib.rcParams["font.size"]
    fig = plotting.roc_curves({"tiny": ([0.1, 0.4, 0.35, 0.8], [0, 0, 1, 1])}, style="CMS")
    assert matplotlib.rcParams["font.size"] == before  # nothing changed globally
    assert fig.style_params["font.size"] == 26  # mplhep's CMS style, used again when drawing
    assert plotting.roc_curves({"t": ([0.1, 0.8], [0, 1])}, style=None).style_params["font.size"] == before
    with pytest.raises(ValueError, match="unknown mplhep style 'NOPE'"):
        plotting.roc_curves({"t": ([0.1, 0.8], [0, 1])}, style="NOPE")


def test_roc_curves_errors():
    with pytest.raises(ValueError, match="at least one run"):
        plotting.roc_curves({})
    with pytest.raises(ValueError, match="empty input"):
        plotting.roc_curves({"none": (np.array([]), np.array([], dtype=bool))})
    with pytest.raises(ValueError, match="equal length"):
        plotting.roc_curves({"bad": (np.array([0.1, 0.2]), np.array([True]))})


def test_score_distributions_normalised_and_empty_class_noted():
    scores = np.array([[0.9, 0.1], [0.7, 0.3], [0.2, 0.8], [0.4, 0.6]])
    labels = np.array([0, 0, 0, 0])  # no Tbqq entries
    fig = plotting.score_distributions(scores, labels, ["QCD", "Tbqq"], bins=10)
    ax = fig.axes[0]
    texts = [t.get_text() for t in ax.get_legend().get_texts()]
    assert texts == ["QCD (N = 4)", "Tbqq: no entries"]
    assert ax.get_xlabel() == "score Tbqq"
    (patch,) = ax.patches
    # the step outline of a unit-area histogram with bin width 0.1: heights sum to 10
    heights = patch.get_xy()[1:-1:2, 1]
    assert heights.sum() == pytest.approx(10.0)
    fig = plotting.score_distributions(scores, np.array([0, 1, 1, 0]), ["QCD", "Tbqq"], "all")
    assert [a.get_xlabel() for a in fig.axes] == ["score QCD", "score Tbqq"]


def test_score_distributions_errors():
    scores = np.full((3, 2), 0.5)
    with pytest.raises(ValueError, match="one label per row"):
        plotting.score_distributions(scores, [0, 1], ["a", "b"])
    with pytest.raises(ValueError, match=r"scores must be \(N, 3\)"):
        plotting.score_distributions(scores, [0, 1, 1], ["a", "b", "c"])
    with pytest.raises(ValueError, match="empty scores"):
        plotting.score_distributions(np.zeros((0, 2)), [], ["a", "b"])
    with pytest.raises(ValueError, match=r"class indices 0..1"):
        plotting.score_distributions(scores, [0, 1, 2], ["a", "b"])
    with pytest.raises(ValueError, match=r"\['c'\] are not among"):
        plotting.score_distributions(scores, [0, 1, 1], ["a", "b"], "c")


def test_normalise_rows():
    fractions = plotting.normalise_rows([[3, 1], [0, 0]])
    np.testing.assert_allclose(fractions[0], [0.75, 0.25])
    assert np.isnan(fractions[1]).all()
    with pytest.raises(ValueError, match="square"):
        plotting.normalise_rows([[1, 2, 3], [4, 5, 6]])
    with pytest.raises(ValueError, match="negative"):
        plotting.normalise_rows([[1, -1], [0, 1]])


def test_confusion_matrix_plot_annotates_fractions():
    fig = plotting.confusion_matrix_plot([[3, 1], [0, 0]], ["QCD", "Tbqq"])
    texts = sorted(t.get_text() for t in fig.axes[0].texts)
    assert texts == sorted(["0.750", "0.250", "n/a", "n/a"])
    labels = [t.get_text() for t in fig.axes[0].get_yticklabels()]
    assert labels == ["QCD\n(N = 4)", "Tbqq\n(N = 0)"]
    with pytest.raises(ValueError, match="3 class names"):
        plotting.confusion_matrix_plot([[1, 0], [0, 1]], ["a", "b", "c"])


# --------------------------------------------------------------------------------------------------
# calorimeter images


def test_class_average_images():
    images = np.zeros((3, 2, 4, 4))
    images[0, 0] = 1.0
    images[1, 0] = 3.0
    images[2, 1, 0, 0] = 5.0
    averages = plotting.class_average_images(images, [0, 0, 1], 3)
    assert averages.shape == (3, 2, 4, 4)
    np.testing.assert_allclose(averages[0, 0], 2.0)
    assert averages[1, 1, 0, 0] == 5.0
    assert np.isnan(averages[2]).all()
    with pytest.raises(ValueError, match="one label per image"):
        plotting.class_average_images(images, [0, 1], 3)
    with pytest.raises(ValueError, match=r"\(N, C, H, W\)"):
        plotting.class_average_images(images[:, 0], [0, 0, 1], 3)


def test_average_images_grid_and_missing_class():
    rng = np.random.default_rng(1)
    images = rng.exponential(1.0, size=(6, 2, 8, 8)) * (rng.random((6, 2, 8, 8)) < 0.3)
    fig = plotting.average_images(
        images, [0, 0, 0, 1, 1, 1], ["QCD", "Tbqq", "W"], ["ECAL", "HCAL"], extent=(-0.8, 0.8, -0.8, 0.8)
    )
    panels = [ax for ax in fig.axes if ax.images]
    assert [ax.get_title() for ax in panels] == ["QCD, ECAL", "QCD, HCAL", "Tbqq, ECAL", "Tbqq, HCAL"]
    assert panels[0].images[0].norm.__class__.__name__ == "LogNorm"
    assert "no images: W" in fig.get_suptitle()
    with pytest.raises(ValueError, match="1 channel names"):
        plotting.average_images(images, [0, 0, 0, 1, 1, 1], ["QCD", "Tbqq"], ["ECAL"])


# --------------------------------------------------------------------------------------------------
# regression


def binned_sample():
    """Bins [0,1), [1,2), [2,3]: residuals -1..3 in the first, -0.5 in the second, two entries in the last."""
    true = np.array([0.5] * 5 + [1.0, 1.2, 1.4, 1.6, 1.9] + [2.5, 3.0] + [3.5, -1.0])
    residual = np.array([-1.0, 0.0, 1.0, 2.0, 3.0] + [-0.5] * 5 + [0.0, 0.0] + [9.0, 9.0])
    return true + residual, true


def test_binned_bias_resolution_on_hand_made_data():
    pred, true = binned_sample()
    binned = plotting.binned_bias_resolution(pred, true, bins=[0.0, 1.0, 2.0, 3.0], min_entries=5)
    np.testing.assert_array_equal(binned.counts, [5, 5, 2])  # 3.0 is in the last bin, 3.5 and -1 outside
    np.testing.assert_allclose(binned.centers, [0.5, 1.5, 2.5])
    # [-1, 0, 1, 2, 3]: median 1; q16 = -0.36, q84 = 2.36 (linear interpolation) -> half-width 1.36
    np.testing.assert_allclose(binned.bias[:2], [1.0, -0.5])
    np.testing.assert_allclose(binned.resolution[:2], [1.36, 0.0], atol=1e-12)
    assert np.isnan(binned.bias[2]) and np.isnan(binned.resolution[2])  # fewer than 5 entries


def test_binned_bias_resolution_equal_width_bins_and_errors():
    true = np.linspace(0.0, 10.0, 101)
    binned = plotting.binned_bias_resolution(true + 2.0, true, bins=5, min_entries=1)
    np.testing.assert_allclose(binned.edges, [0, 2, 4, 6, 8, 10])
    assert binned.counts.sum() == 101
    np.testing.assert_allclose(binned.bias, 2.0)
    np.testing.assert_allclose(binned.resolution, 0.0, atol=1e-12)
    with pytest.raises(ValueError, match="same length"):
        plotting.binned_bias_resolution([1.0, 2.0], [1.0])
    with pytest.raises(ValueError, match="empty input"):
        plotting.binned_bias_resolution([], [])
    with pytest.raises(ValueError, match="increasing"):
        plotting.binned_bias_resolution([1.0], [1.0], bins=[1.0, 0.0])


def test_regression_resolution_draws_the_binned_values():
    pred, true = binned_sample()
    fig = plotting.regression_resolution(pred, true, "xmax", "g/cm$^2$", bins=[0.0, 1.0, 2.0, 3.0])
    top, bottom = fig.axes
    bias_points = top.lines[0].get_ydata()
    np.testing.assert_allclose(np.asarray(bias_points)[:2], [1.0, -0.5])
    np.testing.assert_allclose(np.asarray(bottom.lines[0].get_ydata())[:2], [1.36, 0.0], atol=1e-12)
    assert bottom.get_xlabel() == "true xmax [g/cm$^2$]"
    with pytest.raises(ValueError, match="no bin has 5 or more entries"):
        plotting.regression_resolution([1.0, 2.0], [1.0, 2.0], "x", bins=2)


def test_predicted_vs_true_histogram_and_diagonal():
    rng = np.random.default_rng(2)
    true = rng.uniform(0, 10, 500)
    pred = true + rng.normal(0, 0.5, 500)
    fig = plotting.predicted_vs_true(pred, true, "core_x", "m", bins=20)
    ax = fig.axes[0]
    (diagonal,) = ax.get_lines()
    x, y = diagonal.get_data()
    np.testing.assert_allclose(x, y)
    assert x[0] == pytest.approx(min(pred.min(), true.min()))
    assert ax.collections[0].get_array().sum() == 500  # every entry is in the histogram
    assert ax.get_ylabel() == "predicted core_x [m]"
    with pytest.raises(ValueError, match="same length"):
        plotting.predicted_vs_true(pred, true[:-1], "core_x", "m")


# --------------------------------------------------------------------------------------------------
# python -m hepnn.plot on fake run directories


def classifier_run(tmp_path: Path) -> Path:
    run = tmp_path / "cls_run"
    rng = np.random.default_rng(3)
    n = 200
    labels = rng.integers(0, 2, n)
    signal = np.clip(rng.normal(0.3 + 0.4 * labels, 0.15), 0.0, 1.0).astype(np.float32)
    (run / "predictions").mkdir(parents=True)
    with uproot.recreate(run / "predictions" / "test.root") as f:
        columns = {
            "score_QCD": 1.0 - signal,
            "score_Tbqq": signal,
            "label": labels.astype(np.int64),
            "file_index": np.zeros(n, dtype=np.int64),
            "entry": np.arange(n, dtype=np.int64),
            "jet_pt": rng.uniform(500, 650, n).astype(np.float32),
        }
        f.mktree("predictions", {k: v.dtype for k, v in columns.items()})
        f["predictions"].extend(columns)
        f["classes"] = json.dumps(["QCD", "Tbqq"])
    summary = {
        "test/auc": 0.9,
        "test/confusion_matrix": {
            "classes": ["QCD", "Tbqq"],
            "rows_true_columns_predicted": [[80, 20], [10, 90]],
        },
    }
    (run / "summary.json").write_text(json.dumps(summary))
    write_metrics_csv(run / "csv" / "version_0" / "metrics.csv")  # found by the search
    return run


def regression_run(tmp_path: Path, task: bool = False) -> Path:
    """A regression run directory; its predictions file names its task and units with ``task``,
    as hepnn writes it, or carries only the targets, as older files do."""
    run = tmp_path / "reg_run"
    rng = np.random.default_rng(4)
    n = 300
    (run / "predictions").mkdir(parents=True)
    columns = {}
    for target, scale in (("xmax", 100.0), ("core_x", 50.0)):
        true = rng.uniform(-scale, scale, n) + (700.0 if target == "xmax" else 0.0)
        columns[f"pred_{target}"] = (true + rng.normal(0, 0.1 * scale, n)).astype(np.float32)
        columns[f"true_{target}"] = true.astype(np.float32)
    with uproot.recreate(run / "predictions" / "test.root") as f:
        f.mktree("predictions", {k: v.dtype for k, v in columns.items()})
        f["predictions"].extend(columns)
        f["targets"] = json.dumps(["xmax", "core_x"])
        if task:
            f["task"] = "hepnn.tasks.regression.RegressionTask"
            f["units"] = json.dumps({"xmax": "g/cm^2", "core_x": "m"})
    (run / "summary.json").write_text(json.dumps({"test/xmax_resolution": 10.0}))
    write_metrics_csv(run / "csv" / "metrics.csv")
    return run


def assert_written(out_dir: Path, stems: list[str], formats=("png", "pdf")) -> None:
    magic = {"png": b"\x89PNG", "pdf": b"%PDF"}
    for stem in stems:
        for fmt in formats:
            path = out_dir / f"{stem}.{fmt}"
            assert path.is_file(), f"{path} was not written"
            assert path.read_bytes().startswith(magic[fmt]), f"{path} is not a {fmt} file"


def run_plot(*overrides: str, cwd: Path):
    """``python -m hepnn.plot`` as a user runs it (its Hydra log under ``cwd/log``)."""
    return subprocess.run(
        [sys.executable, "-m", "hepnn.plot", *overrides, f"hydra.run.dir={cwd}/log"],
        capture_output=True,
        text=True,
        cwd=cwd,
    )


def test_plot_command_draws_a_classifier_run(tmp_path):
    run = classifier_run(tmp_path)
    result = run_plot(f"run_dir={run}", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    stems = ["training_curves", "learning_rate", "roc", "score_distributions", "confusion_matrix"]
    assert_written(run / "plots", stems)
    printed = result.stdout.split()
    assert sorted(printed) == sorted(str(run / "plots" / f"{s}.{f}") for s in stems for f in ("png", "pdf"))


def test_a_regression_run_is_drawn_by_its_task_in_png_only_into_out_dir(tmp_path):
    run = regression_run(tmp_path)
    out = tmp_path / "elsewhere"
    report = make_plots(run, out, ["png"])
    stems = [
        "training_curves",
        "learning_rate",
        "resolution_xmax",
        "predicted_vs_true_xmax",
        "resolution_core_x",
        "predicted_vs_true_core_x",
    ]
    assert_written(out, stems, formats=("png",))
    assert sorted(report.written) == sorted(out / f"{s}.png" for s in stems)
    assert not list(out.glob("*.pdf"))
    assert not (run / "plots").exists()


def test_the_predictions_file_names_the_task_and_the_units_that_draw_it(tmp_path):
    run = regression_run(tmp_path, task=True)
    predictions = read_predictions(run / "predictions" / "test.root")
    assert predictions["task"] is RegressionTask and predictions["kind"] == "regression"
    assert predictions["units"] == {"xmax": "g/cm^2", "core_x": "m"}
    plots = dict(RegressionTask.plots(predictions, {}, run.name))
    figure = plots["resolution_xmax"]()
    assert "g/cm$^{2}$" in " ".join(ax.get_xlabel() for ax in figure.axes)


def test_plot_reports_missing_pieces_by_name(tmp_path):
    run = regression_run(tmp_path)
    (run / "predictions" / "test.root").unlink()
    (run / "summary.json").unlink()
    report = make_plots(run, formats=["png"])  # the training curves are still there
    assert report.written
    assert (
        f"no predictions file {run / 'predictions' / 'test.root'}: no plots of the task's predictions"
        in report.notes
    )
    assert f"no summary.json in {run}" in report.notes
    (run / "csv" / "metrics.csv").unlink()
    result = run_plot(f"run_dir={run}", cwd=tmp_path)
    assert result.returncode == 1
    assert "no metrics.csv" in result.stderr
    assert result.stderr.strip().splitlines()[-1] == f"hepnn: error: run_dir: no plot written for {run}"


def test_plot_command_line_errors(tmp_path):
    missing = tmp_path / "no_such_run"
    result = run_plot(f"run_dir={missing}", cwd=tmp_path)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1] == (
        f"hepnn: error: run_dir: run directory {missing} does not exist (or is not a directory)"
    )
    assert "Traceback" not in result.stderr
    result = run_plot("colour=red", f"run_dir={tmp_path}", cwd=tmp_path)
    assert result.returncode == 1 and "Key 'colour' is not in struct" in result.stderr
    with pytest.raises(ConfigError, match=r"formats: unknown figure formats \['bmpx'\]"):
        make_plots(tmp_path, formats=["png", "bmpx"])


def test_find_metrics_csv_prefers_direct_then_highest_version(tmp_path):
    assert find_metrics_csv(tmp_path) is None
    for version in (2, 10):
        write_metrics_csv(tmp_path / "csv" / f"version_{version}" / "metrics.csv")
    assert find_metrics_csv(tmp_path) == tmp_path / "csv" / "version_10" / "metrics.csv"
    write_metrics_csv(tmp_path / "csv" / "metrics.csv")
    assert find_metrics_csv(tmp_path) == tmp_path / "csv" / "metrics.csv"
