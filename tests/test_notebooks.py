"""The notebooks in ``notebooks/``: committed without outputs, with one parameters cell, and executed
end to end (``nbclient``, a ``python3`` kernel of this interpreter's environment) against tiny runs
trained here on the session samples."""

from __future__ import annotations

import sys
from pathlib import Path

import nbformat
import pytest

from tests.conftest import REPO
from tests.test_train import run_training

NOTEBOOKS = REPO / "notebooks"
NAMES = ["01_jet_tagging", "02_jet_images", "03_air_showers", "04_object_detection"]


def load(name: str):
    return nbformat.read(NOTEBOOKS / f"{name}.ipynb", as_version=4)


def parameters_cell(notebook):
    """The one code cell tagged ``parameters``."""
    cells = [c for c in notebook.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(cells) == 1, f"expected one cell tagged 'parameters', found {len(cells)}"
    return cells[0]


def execute(name: str, cwd: Path, timeout: int = 300, **parameters):
    """Run notebook ``name`` in ``cwd`` with its parameters cell replaced by ``parameters``; returns
    the executed notebook (nbclient raises CellExecutionError on the first failing cell)."""
    from nbclient import NotebookClient

    notebook = load(name)
    parameters_cell(notebook).source = "\n".join(f"{k} = {v!r}" for k, v in parameters.items())
    client = NotebookClient(
        notebook, timeout=timeout, kernel_name="python3", resources={"metadata": {"path": str(cwd)}}
    )
    client.execute()
    return notebook


def outputs(notebook, kind: str) -> list:
    """Outputs of the executed code cells: ``"png"`` (image/png displays) or ``"error"``."""
    found = []
    for cell in notebook.cells:
        for output in cell.get("outputs", []):
            if kind == "error" and output.output_type == "error":
                found.append(output)
            elif kind == "png" and "image/png" in output.get("data", {}):
                found.append(output)
    return found


@pytest.mark.parametrize("name", NAMES)
def test_committed_notebooks_have_no_outputs_and_one_parameters_cell(name):
    notebook = load(name)
    nbformat.validate(notebook)
    code = [c for c in notebook.cells if c.cell_type == "code"]
    for cell in code:
        assert cell.outputs == [] and cell.execution_count is None, f"{name}: a cell has outputs"
    assert code[0] is parameters_cell(notebook), f"{name}: the parameters cell must be the first code cell"
    before = notebook.cells[: notebook.cells.index(code[0])]
    assert any(c.cell_type == "markdown" and "Parameters" in c.source for c in before)
    assert notebook.metadata.kernelspec.name == "python3"


def test_the_kernel_runs_in_this_environment(tmp_path):
    """``python3`` resolves to this interpreter (in a fresh venv: ipykernel's own kernel spec)."""
    from jupyter_client.kernelspec import KernelSpecManager

    argv = KernelSpecManager().get_kernel_spec("python3").argv
    assert (
        argv[0] in ("python", "python3", sys.executable)
        or Path(argv[0]).resolve() == Path(sys.executable).resolve()
    )


@pytest.fixture(scope="module")
def classifier_runs(jet_sample, tmp_path_factory):
    """Two tiny classifier runs (the default PFN and a small image CNN), two short epochs each."""
    out = tmp_path_factory.mktemp("notebook_runs")
    common = [f"data.files={jet_sample}/*.root", "debug=limit", f"data.cache_dir={out}/cache"]
    run_training(out / "pfn", *common)
    run_training(
        out / "cnn", *common, "experiment=top_cnn", "model.net.blocks=[{channels: 4, kernel: 3, pool: max}]"
    )
    for run in ("pfn", "cnn"):
        assert (out / run / "predictions" / "test.root").is_file() and (out / run / "summary.json").is_file()
    return {"PFN": str(out / "pfn"), "CNN": str(out / "cnn")}


@pytest.fixture(scope="module")
def airshower_run(airshower_sample, tmp_path_factory):
    """A tiny airshower_3dconv run (all seven targets), two short epochs."""
    out = tmp_path_factory.mktemp("notebook_airshower_run")
    run_training(
        out,
        "experiment=airshower_3dconv",
        f"data.files={airshower_sample}/*.root",
        f"data.cache_dir={out}/cache",
        "debug=limit",
        "data.batch_size=32",
        "model.net.spatial_layers=[{channels: 8}]",
        "model.net.residual_blocks=0",
    )
    assert (out / "predictions" / "test.root").is_file() and (out / "summary.json").is_file()
    return str(out)


@pytest.fixture(scope="module")
def detection_run(events_sample, tmp_path_factory):
    """A tiny events_ssd run (the small net of tests/test_detection_task.py), two epochs; every cell
    is a candidate box and every box counts for the efficiency, so that the untrained net still
    draws boxes and some are matched."""
    from tests.test_detection_task import tiny_run

    out = tmp_path_factory.mktemp("notebook_detection_run")
    run_training(out, *tiny_run(events_sample), "model.score_threshold=0.0", "model.efficiency_score=0.0")
    assert (out / "predictions" / "test.root").is_file() and (out / "summary.json").is_file()
    return str(out)


def test_jet_tagging_notebook(classifier_runs, tmp_path):
    notebook = execute("01_jet_tagging", tmp_path, RUN_DIRS=classifier_runs)
    assert not outputs(notebook, "error")
    # ROC, then score distributions, confusion matrix and training curves of each run
    assert len(outputs(notebook, "png")) >= 1 + 3 * len(classifier_runs)
    table = "".join(
        o.get("data", {}).get("text/markdown", "") for c in notebook.cells for o in c.get("outputs", [])
    )
    assert "| PFN |" in table and "| CNN |" in table and "test AUC" in table


def test_jet_images_notebook(jet_sample, classifier_runs, tmp_path):
    notebook = execute(
        "02_jet_images",
        tmp_path,
        DATA_FILES=f"{jet_sample}/*.root",
        DATA_CONFIG="toptag_image",
        N_JETS=400,
        JET=3,
        RUN_DIR=classifier_runs["CNN"],
    )
    assert not outputs(notebook, "error")
    # average images before and after preprocessing, one jet before and after, training curves
    assert len(outputs(notebook, "png")) >= 5


def test_air_showers_notebook(airshower_sample, airshower_run, tmp_path):
    notebook = execute(
        "03_air_showers",
        tmp_path,
        DATA_FILES=f"{airshower_sample}/*.root",
        N_EVENTS=100,
        EVENT=None,
        N_TRACES=3,
        RUN_DIR=airshower_run,
    )
    assert not outputs(notebook, "error")
    # footprint, traces, 2 figures per target (7 targets), training curves
    assert len(outputs(notebook, "png")) >= 2 + 2 * 7 + 1
    text = "".join(
        o.get("data", {}).get("text/markdown", "") for c in notebook.cells for o in c.get("outputs", [])
    )
    assert "angular_resolution_deg" in text and "core_resolution_m" in text and "energy_resolution" in text


def test_object_detection_notebook(detection_run, tmp_path):
    notebook = execute("04_object_detection", tmp_path, run_dir=detection_run, events=2)
    assert not outputs(notebook, "error")
    # two event displays, efficiency and fake rate, predicted vs true pT and mass
    assert len(outputs(notebook, "png")) >= 2 + 2 + 2
    text = "".join(
        o.get("data", {}).get("text/markdown", "") for c in notebook.cells for o in c.get("outputs", [])
    )
    assert "mAP (Delta R < 0.4)" in text and "AP Top (IoU >= 0.5)" in text and "pT resolution" in text


def test_a_missing_run_directory_is_named(tmp_path):
    from nbclient.exceptions import CellExecutionError

    missing = str(tmp_path / "no_such_run")
    with pytest.raises(CellExecutionError) as err:
        execute("01_jet_tagging", tmp_path, RUN_DIRS={"PFN": missing})
    assert "FileNotFoundError" in str(err.value) and missing in str(err.value)
