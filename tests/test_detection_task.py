"""The single-shot detector and its task: the cylinder's symmetry, the targets and the decoding that
invert each other, the checks on bad truth, and the preset trained, written, plotted and exported
on a real whole-event sample."""

from __future__ import annotations

import json
from functools import partial
from pathlib import Path

import awkward as ak
import numpy as np
import onnxruntime as ort
import pytest
import torch
import uproot

from hepnn.checkpoint import load_checkpoint, stored_config
from hepnn.deploy.onnx import build_export_model, export_onnx
from hepnn.detection.boxes import assign_cells
from hepnn.errors import ConfigError
from hepnn.nets.event_detector import OUTPUTS, EventDetector
from hepnn.tasks.detection import DetectionTask
from tests.test_export import first_test_batch, raw_checkpoint, run_onnx
from tests.test_train import run_training

CLASSES = ["QCD", "Top", "W", "Z"]
FEATURES = ["obj_eta", "obj_phi", "obj_radius", "obj_class", "obj_pt", "obj_mass"]
FIELDS = dict(zip(["eta", "phi", "radius", "class", "pt", "mass"], FEATURES, strict=True))
GRID = {"n_eta": 16, "n_phi": 32, "eta": [-1.6, 1.6], "phi": [-np.pi, np.pi]}


def make_task(**overrides) -> DetectionTask:
    net = EventDetector(3, len(CLASSES), widths=[4, 8, 8], convs=1, head_convs=1)
    values = {
        "net": net,
        "inputs": ["image"],
        "objects": "objects",
        "object_features": FEATURES,
        "object_fields": FIELDS,
        "classes": CLASSES,
        "grid": GRID,
        "optimizer": partial(torch.optim.Adam, lr=1e-3),
        "count_observer": "n_objects",
        "score_threshold": 0.5,
    }
    return DetectionTask(**{**values, **overrides})


def objects_batch(rows: list[list[tuple]], length: int = 4) -> dict:
    """A batch of truth objects: per event a list of (eta, phi, radius, class, pt, mass)."""
    values = torch.zeros(len(rows), len(FEATURES), length)
    mask = torch.zeros(len(rows), length, dtype=torch.bool)
    for b, objects in enumerate(rows):
        for k, obj in enumerate(objects[:length]):
            values[b, :, k] = torch.tensor(obj)
            mask[b, k] = True
    counts = torch.tensor([len(o) for o in rows])
    return {
        "image": torch.rand(len(rows), 3, GRID["n_eta"], GRID["n_phi"]),
        "objects": values,
        "objects_mask": mask,
        "observers": {"n_objects": counts},
    }


EVENTS = [
    [(0.3, 3.05, 0.8, 1, 450.0, 172.0), (-0.9, -0.2, 0.8, 2, 320.0, 81.0)],
    [],
    [(1.1, -3.0, 0.8, 0, 260.0, 40.0)],
]


def test_rolling_an_event_in_phi_rolls_the_predictions():
    torch.manual_seed(0)
    net = EventDetector(3, 4, widths=[4, 8, 8], convs=1, head_convs=2).eval()
    image = torch.rand(2, 3, 16, 32)
    with torch.no_grad():
        out = net(image)
        for cells in (1, 3, 7):
            rolled = net(torch.roll(image, shifts=cells * net.downsampling, dims=3))
            torch.testing.assert_close(rolled, torch.roll(out, shifts=cells, dims=3), atol=1e-5, rtol=1e-5)
    # eta is not periodic: rolling in eta does not roll the predictions
    with torch.no_grad():
        rolled = net(torch.roll(image, shifts=net.downsampling, dims=2))
    assert not torch.allclose(rolled, torch.roll(out, shifts=1, dims=2), atol=1e-3)


def test_an_image_the_grid_cells_do_not_tile_is_an_error_naming_both():
    net = EventDetector(3, 4, widths=[4, 8, 8])
    assert net(torch.zeros(1, 3, 16, 32)).shape == (1, len(OUTPUTS) + 4, 4, 8)
    with pytest.raises(ConfigError, match=r"18 x 32 pixels .* downsampling 4"):
        net(torch.zeros(1, 3, 18, 32))


def perfect_outputs(task: DetectionTask, batch: dict) -> torch.Tensor:
    """The raw outputs that encode the truth objects of ``batch`` exactly."""
    truth = task.truth_objects(batch)
    width = 2 * truth["radius"]
    targets = assign_cells(
        task.grid, truth["event"], truth["eta"], truth["phi"], width, width, task.anchor, len(batch["image"])
    )
    n_eta, n_phi = task.grid.shape
    outputs = torch.zeros(len(batch["image"]), len(OUTPUTS) + len(CLASSES), n_eta, n_phi)
    outputs[:, 0] = -20.0
    b, i, j = torch.nonzero(targets.owner >= 0, as_tuple=True)
    k = targets.owner[b, i, j]
    outputs[b, 0, i, j] = 20.0
    outputs[b, 1, i, j] = torch.logit(targets.offset_eta[b, i, j].float(), eps=1e-7)
    outputs[b, 2, i, j] = torch.logit(targets.offset_phi[b, i, j].float(), eps=1e-7)
    outputs[b, 3, i, j] = targets.log_w_eta[b, i, j].float()
    outputs[b, 4, i, j] = targets.log_w_phi[b, i, j].float()
    outputs[b, 5, i, j] = torch.log(truth["pt"][k] / task.pt_reference).float()
    outputs[b, 6, i, j] = torch.log(truth["mass"][k] / task.mass_reference).float()
    outputs[b, len(OUTPUTS) + truth["class"][k], i, j] = 20.0
    return outputs


def test_the_outputs_that_encode_the_truth_decode_to_the_truth_and_cost_little():
    task = make_task()
    batch = objects_batch(EVENTS)
    outputs = perfect_outputs(task, batch)
    boxes = task.select(outputs)
    assert boxes["event"].tolist() == [0, 0, 2]
    # equal scores: in cell order (eta rows first)
    expected = [obj for event in EVENTS for obj in sorted(event, key=lambda o: o[0])]
    for column, index in (("eta", 0), ("phi", 1), ("pt", 4), ("mass", 5)):
        np.testing.assert_allclose(boxes[column].numpy(), [o[index] for o in expected], rtol=1e-4, atol=1e-4)
    assert boxes["class"].tolist() == [2, 1, 0]
    np.testing.assert_allclose(boxes["width_eta"].numpy(), 1.6, rtol=1e-5)
    terms = task.losses(outputs, task.truth_objects(batch))
    assert all(float(v) < 1e-3 for v in terms.values()), terms
    # an untrained net costs much more
    random_terms = task.losses(task(batch), task.truth_objects(batch))
    assert float(sum(random_terms.values())) > 1.0


def test_a_box_across_phi_pi_is_found_once():
    """An object at phi = 3.1 rad sits in the last column; rolled by a cell it wraps to the first."""
    task = make_task()
    batch = objects_batch([[(0.0, 3.13, 0.8, 1, 400.0, 170.0)]])
    boxes = task.select(perfect_outputs(task, batch))
    assert len(boxes["event"]) == 1
    assert abs(float(boxes["phi"][0]) - 3.13) < 1e-4


def test_bad_truth_is_an_error_naming_the_entry_and_the_box():
    task = make_task()
    batch = objects_batch([[(0.0, 0.0, 0.8, 1, 400.0, 170.0)] * 5], length=4)
    with pytest.raises(ValueError, match=r"event 0 of the batch holds 5 truth objects.*objects\.length is 4"):
        task.truth_objects(batch)
    batch = objects_batch([[(0.0, 0.0, 0.8, 7, 400.0, 170.0)]])
    with pytest.raises(ValueError, match=r"truth class 7.0 is not an index of model.classes"):
        task.truth_objects(batch)
    batch = objects_batch([[(2.1, 0.5, 0.8, 1, 400.0, 170.0)]])
    with pytest.raises(ValueError, match=r"truth box at eta 2.100, phi 0.500 lies outside .*\[-1.6, 1.6\]"):
        task.truth_objects(batch)
    with pytest.raises(ConfigError, match=r"model.object_fields names \{'mass': 'jet_mass'\}"):
        make_task(object_fields={**FIELDS, "mass": "jet_mass"})
    with pytest.raises(ConfigError, match=r"model.net.n_classes 4 differs from the 3 model.classes"):
        make_task(classes=["QCD", "Top", "W"])


def test_events_without_objects_train_on_objectness_alone():
    task = make_task()
    batch = objects_batch([[], []])
    terms = task.losses(task(batch), task.truth_objects(batch))
    assert float(terms["objectness"]) > 0
    assert all(float(terms[k]) == 0.0 for k in ("box", "class", "pt", "mass"))


SMALL = ("model.net.widths=[4,8,8]", "model.net.head_convs=1", "model.net.convs=1")


def tiny_run(events_sample) -> tuple[str, ...]:
    """Overrides of a two-epoch events_ssd run of the small net on the session's event sample."""
    return (
        "experiment=events_ssd",
        *SMALL,
        f"data.files={events_sample}/*.root",
        "trainer.max_epochs=2",
        "data.batch_size=16",
        "data.eval_batch_size=16",
        "data.progress_bar=false",
        "data.cache=null",
    )


@pytest.fixture(scope="module")
def trained(events_sample, tmp_path_factory):
    out = tmp_path_factory.mktemp("events_ssd")
    summary = run_training(out, *tiny_run(events_sample))
    return out, summary


def test_the_preset_trains_and_writes_boxes_per_event_aligned_with_the_input(trained, events_sample):
    _, summary = trained
    for key in ("test/map_dr", "test/map_iou", "test/efficiency"):
        assert np.isfinite(summary[key])
    with uproot.open(summary["predictions"]) as f:
        tree = f["predictions"]
        columns = tree.arrays(
            ["box_eta", "box_score", "box_class", "true_pt", "true_class", "file_index", "entry"]
        )
        sources = json.loads(str(f["source_files"]))
        assert json.loads(str(f["classes"])) == CLASSES
    # every test event once, with the truth of its own entry in the sample
    assert len(columns) == 18  # 15 % of each file of 20 events: 3 events x 6 files
    for k, path in enumerate(sources):
        chosen = columns[columns.file_index == k]
        with uproot.open(path) as f:
            truth = f["tree"].arrays(["obj_pt", "obj_class"])[ak.to_numpy(chosen.entry)]
        np.testing.assert_allclose(
            ak.to_numpy(ak.flatten(chosen.true_pt)), ak.to_numpy(ak.flatten(truth.obj_pt))
        )
        assert ak.to_list(chosen.true_class) == ak.to_list(truth.obj_class)
    scores = ak.to_numpy(ak.flatten(columns.box_score))
    assert ((scores >= 0.05) & (scores <= 1)).all()
    assert (ak.to_numpy(ak.num(columns.box_eta)) <= 16).all()


def test_the_run_plots_an_event_display(trained):
    _, summary = trained
    from hepnn.analysis.runs import read_predictions
    from hepnn.tasks.detection import DetectionTask

    predictions = read_predictions(summary["predictions"])
    names = [name for name, _ in DetectionTask.plots(predictions, summary, "test")]
    assert names[:3] == ["event_display", "efficiency", "fake_rate"]
    figure = dict(DetectionTask.plots(predictions, summary, "test"))["event_display"]()
    assert len(figure.axes[0].patches) >= sum(len(t) for t in predictions["truth"]["eta"][:1])


def test_a_class_list_that_does_not_match_the_sample_is_an_error_naming_both(events_sample):
    task = make_task(classes=["QCD", "W", "Top", "Z"])
    with pytest.raises(
        ConfigError, match=r"model.classes \['QCD', 'W', 'Top', 'Z'\] do not match .*'Top', 'W'"
    ):
        task.check_sample_classes(sorted(str(p) for p in events_sample.glob("*.root")))


def test_the_export_matches_pytorch_on_a_real_test_batch(trained):
    out, summary = trained
    ckpt = summary["best_checkpoint"]
    result = export_onnx(ckpt, out / "events_ssd.onnx")
    model, _, _, _ = build_export_model(ckpt)
    checkpoint = load_checkpoint(ckpt)
    config = stored_config(checkpoint, ckpt)
    batch = first_test_batch(config, checkpoint, ckpt)
    raw = first_test_batch(config, raw_checkpoint(checkpoint), ckpt)
    task = model.task.eval()
    with torch.no_grad():
        reference = task.export_outputs(task(batch)).numpy()
    session = ort.InferenceSession(str(result.onnx_path), providers=["CPUExecutionProvider"])
    onnx_out = run_onnx(session, raw)
    assert onnx_out.shape == reference.shape == (16, 12 * 16, len(OUTPUTS) + 4)
    # per column within 1e-4 of its scale (GeV columns: the cone mass is a float32 difference of
    # squares of hundreds of GeV)
    scale = task.export_output_scale().numpy()
    assert (np.abs(onnx_out - reference) <= 1e-4 * scale + 1e-4 * np.abs(reference)).all()
    sidecar = json.loads(result.sidecar_path.read_text())
    assert "non-maximum suppression" in json.dumps(sidecar)


def test_cone_jets_sum_the_pixels_within_the_radius_across_phi_pi():
    from hepnn.detection.cone_jets import ConeJets

    grid = {"n_eta": 16, "n_phi": 64, "eta": [-1.6, 1.6], "phi": [-np.pi, np.pi]}
    cones = ConeJets(grid, 0.8, channels=[0, 1])
    image = torch.zeros(1, 3, 16, 64)
    image[0, 0, 8, 63] = 100.0  # eta 0.05, phi just below pi
    image[0, 1, 8, 1] = 50.0  # eta 0.05, phi -pi + 1.5 pixels
    image[0, 2, 8, 0] = 1000.0  # the tracks channel is not summed
    discs = cones(image)
    event = torch.tensor([0, 0, 0])
    pt, mass = cones.at(discs, event, torch.tensor([0.05, 0.05, 1.5]), torch.tensor([-3.1, 3.1, 3.1]))
    # both pixels: dphi = 2 pixels of 2 pi / 64; a massless pair of pT 100 and 50 at the same eta
    dphi = 2 * 2 * np.pi / 64
    expected_pt = np.hypot(100 + 50 * np.cos(dphi), 50 * np.sin(dphi))
    expected_mass = np.sqrt(2 * 100 * 50 * (np.cosh(0.0) - np.cos(dphi)))
    np.testing.assert_allclose(pt[:2].numpy(), expected_pt, rtol=1e-4)
    np.testing.assert_allclose(mass[:2].numpy(), expected_mass, rtol=1e-3)
    assert float(pt[2]) == 0.0  # 1.45 away in eta: outside the cone


def test_with_a_cone_the_pt_output_calibrates_the_cone_around_the_predicted_axis():
    task = make_task(channels=["ecal", "hcal", "tracks"], cone={"channels": ["ecal", "hcal"]})
    batch = objects_batch(EVENTS)
    with torch.no_grad():
        outputs = task(batch)
    assert outputs.shape[1] == len(OUTPUTS) + len(CLASSES) + 2
    cells = task.decoded(outputs)
    cone_pt = outputs[:, len(OUTPUTS) + len(CLASSES)].clamp(min=1.0)
    torch.testing.assert_close(cells["pt"], cone_pt * torch.exp(outputs[:, 5]))
    with pytest.raises(ConfigError, match=r"model.cone.channels names \['preshower'\]"):
        make_task(channels=["ecal", "hcal", "tracks"], cone={"channels": ["preshower"]})


def test_a_quantity_the_net_does_not_calibrate_is_the_cone_s_own():
    """``cone.calibrate: [mass]``: the pT of every cell is the cone's pT around its axis, the pT
    loss term is zero, and the mass is still the net's calibration of the cone mass."""
    cone = {"channels": ["ecal", "hcal"], "calibrate": ["mass"]}
    task = make_task(channels=["ecal", "hcal", "tracks"], cone=cone)
    batch = objects_batch(EVENTS)
    raw, discs = task._raw(batch)
    outputs = task._with_cones(raw, discs)
    cells = task.decoded(outputs.detach())
    n = len(OUTPUTS) + len(CLASSES)
    torch.testing.assert_close(cells["pt"], outputs[:, n].detach().clamp(min=1.0))
    cone_mass = outputs[:, n + 1].detach().clamp(min=1.0)
    torch.testing.assert_close(cells["mass"], cone_mass * torch.exp(outputs[:, 6].detach()))
    terms = task.losses(outputs, task.truth_objects(batch), discs)
    assert float(terms["pt"]) == 0.0 and float(terms["mass"]) > 0.0
    for bad in (["energy"], "pt"):
        with pytest.raises(ConfigError, match=r"model.cone.calibrate must list some of \['pt', 'mass'\]"):
            make_task(channels=["ecal", "hcal", "tracks"], cone={**cone, "calibrate": bad})


def test_with_cone_inputs_the_net_reads_the_cone_mass_of_every_pixel():
    """Two hard pixels 0.5 apart in phi: the cone around a pixel between them holds their pair
    mass, and the net's fifth input channel is log(1 + that mass / mass_reference)."""
    seen = {}

    class Recorder(EventDetector):
        def forward(self, image):
            seen["image"] = image
            return super().forward(image)

    net = Recorder(5, len(CLASSES), widths=[4, 8, 8], convs=1, head_convs=1)
    cone = {"channels": ["ecal", "hcal"], "radius": 0.8, "inputs": True}
    task = make_task(net=net, channels=["ecal", "hcal", "tracks"], cone=cone, mass_reference=50.0)
    batch = objects_batch([[]])
    image = torch.zeros_like(batch["image"])
    row = 8  # pixel centres at eta = -1.5 + 0.2 row; phi columns of 2 pi / 32
    image[0, 0, row, 10] = 100.0  # ECAL, GeV
    image[0, 1, row, 12] = 100.0  # HCAL, GeV: 2 columns = 0.393 rad further in phi
    batch["image"] = image
    with torch.no_grad():
        task(batch)
    d_phi = 2 * (2 * np.pi / 32)
    pair_mass = np.sqrt(2 * 100.0 * 100.0 * (1 - np.cos(d_phi)))  # both at one eta: GeV
    read = seen["image"]
    assert read.shape[1] == 5
    assert float(read[0, 4, row, 11]) == pytest.approx(np.log1p(pair_mass / 50.0), rel=1e-4)
    assert float(read[0, 3, row, 11]) == pytest.approx(np.log1p(200.0 * np.cos(d_phi / 2) / 300.0), rel=1e-4)
    # far from both pixels the cone is empty
    assert float(read[0, 4, row, 28]) == 0.0 and float(read[0, 3, 0, 28]) == 0.0
    with pytest.raises(ConfigError, match=r"model.net.in_channels is 3, but the task feeds 5 channels"):
        make_task(channels=["ecal", "hcal", "tracks"], cone=cone)


def test_the_benchmark_compares_the_detector_with_anti_kt_on_the_same_events(trained, tmp_path, capsys):
    """benchmarks/detection.py on the tiny run: both rows on the run's test events, and the paired
    difference is the difference of the rows, with an error from the same resampled events."""
    import runpy

    out, summary = trained
    saved = tmp_path / "detection.json"
    script = Path(__file__).resolve().parents[1] / "benchmarks" / "detection.py"
    benchmark = runpy.run_path(str(script))
    benchmark["main"]([f"--run-dir={out}", "--resamples=5", f"--json={saved}"])
    table = [line for line in capsys.readouterr().out.splitlines() if line.startswith("|")]
    assert table[0] == "| figure | detector | anti-kT + mass tag | detector - baseline (paired) |"
    result = json.loads(saved.read_text())
    with uproot.open(summary["predictions"]) as f:
        assert result["test_events"] == f["predictions"].num_entries
    detector, baseline = result["rows"]["detector"], result["rows"]["anti-kT + mass tag"]
    difference = result["detector_minus_baseline"]
    for key in ("map_dr", "efficiency", "pt_resolution"):
        # NaN where the tiny detector finds nothing to measure a figure on
        assert difference[key][0] == pytest.approx(detector[key][0] - baseline[key][0], nan_ok=True)
        assert not difference[key][1] < 0
    # anti-kT on the calorimeter cells finds the truth jets: most of them above its pT threshold
    assert baseline["efficiency"][0] > 0.5
    assert 0.0 <= baseline["pt_resolution"][0] < 0.2
    # the resolutions on the truth jets both found: the same jets for both rows, no more than
    # either found alone
    assert detector["n_common"][0] == baseline["n_common"][0] == result["truth_jets_both_found"]
    with uproot.open(summary["predictions"]) as f:
        n_truth = int(ak.sum(ak.num(f["predictions"]["true_pt"].array())))
    assert 0 <= result["truth_jets_both_found"] <= n_truth
    assert "pt_resolution_common" in detector and "pt_resolution_common" in difference


def test_the_cone_floor_benchmark_measures_every_cone_on_the_jets_anti_kt_found(events_sample, capsys):
    """benchmarks/cone_floor.py on the small sample: one row per measurement, all on the same truth
    jets, anti-kT's paired difference to itself zero, and cones at the true axis measure the jets'
    pT within a few per cent."""
    import runpy

    script = Path(__file__).resolve().parents[1] / "benchmarks" / "cone_floor.py"
    runpy.run_path(str(script))["main"]([f"--files={events_sample}/*.root", "--events=20", "--resamples=5"])
    table = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| ")]
    rows = {line.split(" | ")[0].removeprefix("| "): line.split(" | ")[1:] for line in table[1:]}
    assert list(rows) == [
        "anti-kT of the cells",
        "cell cone at the true axis",
        "pixel cone at the true axis, 0.10 pixels",
        "pixel cone at the true axis, 0.05 pixels",
    ]
    assert rows["anti-kT of the cells"][2].startswith("+0.0000 ± 0.0000")
    for bias, resolution, _ in rows.values():
        assert abs(float(bias.split(" ± ")[0])) < 0.05
        assert 0.0 < float(resolution.split(" ± ")[0]) < 0.1
