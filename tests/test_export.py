"""ONNX export: every model family, with the loader's standardisation and the output head in the graph,
matches PyTorch on a real test batch (raw features in, through onnxruntime), with dynamic batch and
particle axes; the sidecar; the command line; clear errors.

Raw features come from the loader itself: the checkpoint's data spec with every feature's
centre 0, scale 1 and no clipping gives the same test batch (same entries, order and padding)
unstandardised, so the graph's standardisation is checked against the loader's, not against a
copy of it.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch

from hepnn.checkpoint import load_checkpoint, rebuild_datamodule, stored_config
from hepnn.deploy.graph import ExportError, GroupStandardization
from hepnn.deploy.onnx import build_export_model, export_onnx
from tests.conftest import run_module
from tests.test_train import run_training

FIT = (
    "trainer.max_epochs=1",
    "+trainer.limit_train_batches=2",
    "+trainer.limit_val_batches=1",
    "test=false",
    "data.batch_size=32",
    "data.eval_batch_size=64",
    "data.num_workers=0",
    "data.progress_bar=false",
    "callbacks.early_stopping=null",
)
# the presets read the 64 hardest particles; a longer group leaves padding for the dynamic-axes test
JET_SEQUENCE = ("model.net.hidden=8", "model.net.head=[8]", "data.inputs.particles.length=160")
FAMILIES = {
    "pfn": (
        "experiment=top_pfn",
        "model.net.hidden=16",
        "model.net.latent=8",
        "model.net.phi_layers=2",
        "model.net.head_layers=2",
    ),
    "cnn": (
        "experiment=top_cnn",
        "model.net.blocks=[{channels: 4, kernel: 3, padding: same, batch_norm: true, pool: max, "
        "pool_size: 4}]",
        "model.net.head=[8]",
    ),
    "lstm": ("experiment=top_lstm", *JET_SEQUENCE, "model.net.bidirectional=true"),
    "gru": ("experiment=top_gru", *JET_SEQUENCE),
    "deepjet": ("experiment=top_deepjet", *JET_SEQUENCE, "model.net.front_end=[8,8]"),
    "trace3d": (
        "experiment=airshower_3dconv",
        "model.net.trace_layers=[{channels: 2, kernel: 5, pool: max, pool_size: 4}]",
        "model.net.spatial_layers=[{channels: 8, batch_norm: true}]",
        "model.net.residual_blocks=0",
        "model.net.head=[8]",
    ),
}
TOLERANCE = 1e-5
pytestmark = pytest.mark.filterwarnings(
    "ignore:No negative samples in targets:UserWarning",  # a one-class validation batch of the tiny fits
    "ignore:The number of training batches",
)


def raw_checkpoint(checkpoint: dict) -> dict:
    """The checkpoint with a data spec that leaves every feature as it is (centre 0, scale 1, no clip)."""
    raw = copy.deepcopy(checkpoint)
    for group in raw["RootDataModule"]["spec"]["inputs"].values():
        for feature in (group or {}).get("features", {}).values():
            feature.update(center=0.0, scale=1.0, clip=None)
    return raw


def first_test_batch(config: dict, checkpoint: dict, path: Path) -> dict:
    """The first test batch of the stored split, read through the checkpoint's data spec."""
    overrides = {"split": config["data"]["split"], "num_workers": 0, "cache": None, "progress_bar": False}
    datamodule = rebuild_datamodule(config, checkpoint, path, overrides)
    datamodule.setup("test")
    return next(iter(datamodule.test_dataloader()))


def run_onnx(session: ort.InferenceSession, inputs: dict) -> np.ndarray:
    """The single output of ``session`` for ``inputs`` (tensors or arrays by input name)."""
    feed = {i.name: np.asarray(inputs[i.name]) for i in session.get_inputs()}
    return session.run(None, feed)[0]


class Exported:
    """A family's tiny checkpoint, its export, one real test batch (standardised and raw) and
    PyTorch's answer."""

    def __init__(self, name: str, summary: dict, out: Path):
        self.name = name
        self.ckpt = Path(summary["best_checkpoint"])
        self.result = export_onnx(self.ckpt, out / "export" / f"{name}.onnx")
        self.model, self.spec, self.config, _ = build_export_model(self.ckpt)
        checkpoint = load_checkpoint(self.ckpt)
        config = stored_config(checkpoint, self.ckpt)
        self.batch = first_test_batch(config, checkpoint, self.ckpt)
        self.raw = first_test_batch(config, raw_checkpoint(checkpoint), self.ckpt)
        self.session = ort.InferenceSession(str(self.result.onnx_path), providers=["CPUExecutionProvider"])
        self.names = [i.name for i in self.session.get_inputs()]

    def reference(self, batch: dict) -> np.ndarray:
        """PyTorch on the loader's standardised batch: probabilities or physical predictions."""
        task = self.model.task.eval()
        with torch.no_grad():
            outputs = task(batch)
            if self.model.task.kind == "classification":
                return outputs.softmax(dim=-1).numpy()
            return task.to_physical(outputs).numpy()

    def session_shape(self, name: str) -> list:
        """The shape onnxruntime reports for graph input ``name`` (symbolic axes as names)."""
        return next(i.shape for i in self.session.get_inputs() if i.name == name)

    def scale(self) -> np.ndarray:
        """Per-column scale of the comparison: 1 for probabilities, the target scales for predictions."""
        if self.model.task.kind == "classification":
            return np.ones(1, dtype=np.float32)
        return self.model.task.target_scale.numpy()

    def difference(self, onnx_out: np.ndarray, reference: np.ndarray) -> float:
        return float(np.max(np.abs(onnx_out - reference) / self.scale()))


@pytest.fixture(scope="module", params=list(FAMILIES))
def exported(request, tmp_path_factory) -> Exported:
    name = request.param
    sample = request.getfixturevalue("airshower_sample" if name == "trace3d" else "jet_sample")
    out = tmp_path_factory.mktemp(f"export_{name}")
    summary = run_training(
        out, *FAMILIES[name], f"data.files={sample}/*.root", f"data.cache_dir={out}/cache", *FIT
    )
    return Exported(name, summary, out)


def test_onnx_matches_pytorch_on_a_real_test_batch(exported):
    """Raw features through onnxruntime == PyTorch on the loader's standardised batch (same entries)."""
    np.testing.assert_array_equal(exported.raw["entry"].numpy(), exported.batch["entry"].numpy())
    onnx_out = run_onnx(exported.session, exported.raw)
    reference = exported.reference(exported.batch)
    assert onnx_out.shape == reference.shape and len(onnx_out) > 10
    difference = exported.difference(onnx_out, reference)
    absolute = float(np.max(np.abs(onnx_out - reference)))
    print(
        f"{exported.name}: max |onnx - torch| = {absolute:.3g}, / scale = {difference:.3g} ({len(onnx_out)})"
    )
    assert difference < TOLERANCE
    if exported.model.task.kind == "classification":
        np.testing.assert_allclose(onnx_out.sum(axis=1), 1.0, atol=1e-5)


def test_the_graph_standardises_clips_and_pads_as_the_loader(exported):
    """The graph's first step gives exactly the loader's batch, whatever the raw padding holds."""
    for group in exported.model.groups:
        step = exported.model.standardize[group.name]
        raw = exported.raw[group.name].clone()
        mask = exported.raw[group.mask_key] if group.jagged else None
        if mask is not None:
            raw = torch.where(mask.unsqueeze(1), raw, torch.full_like(raw, 1e6))  # garbage padding
        with torch.no_grad():
            standardised = step(raw, mask)
        torch.testing.assert_close(standardised, exported.batch[group.name], rtol=0, atol=0)
        if mask is not None:
            assert (standardised.masked_select(~mask.unsqueeze(1)) == group.pad_value).all()
            assert any(f.clip for f in group.features)  # the jet configs clip: clipping is exercised


def test_batch_and_particle_axes_are_dynamic(exported):
    reference = exported.reference(exported.batch)
    small = {k: v[:5] for k, v in exported.raw.items() if k in exported.names}
    assert exported.difference(run_onnx(exported.session, small), reference[:5]) < TOLERANCE
    jagged = [g for g in exported.model.groups if g.jagged]
    for group in jagged:
        features, mask = exported.raw[group.name], exported.raw[group.mask_key]
        longest = int(mask.sum(dim=1).max())
        assert longest < group.length
        shorter = {**exported.raw, group.name: features[:, :, :longest], group.mask_key: mask[:, :longest]}
        extra = torch.full((len(mask), features.shape[1], 9), 123.0)
        longer = {
            **exported.raw,
            group.name: torch.cat([features, extra], dim=2),
            group.mask_key: torch.cat([mask, torch.zeros(len(mask), 9, dtype=torch.bool)], dim=1),
        }
        for inputs in (shorter, longer):
            assert exported.difference(run_onnx(exported.session, inputs), reference) < TOLERANCE
    shapes = {i.name: i.shape for i in exported.session.get_inputs()}
    assert all(shape[0] == "batch" for shape in shapes.values())
    for group in jagged:
        assert shapes[group.name][2] == shapes[group.mask_key][1] == f"{group.name}_length"
    assert exported.session.get_outputs()[0].shape[0] == "batch"


def test_sidecar_describes_inputs_standardisation_and_outputs(exported):
    result = exported.result
    sidecar = json.loads(result.sidecar_path.read_text())
    assert sidecar == result.sidecar
    assert result.sidecar_path == result.onnx_path.with_suffix(".json")
    assert sidecar["onnx"] == result.onnx_path.name and sidecar["opset"] >= 17
    assert sidecar["checkpoint"] == str(exported.ckpt.resolve())
    assert sidecar["model_target"] == exported.config["model"]["_target_"]
    assert sidecar["net_target"] == exported.config["model"]["net"]["_target_"]
    assert sidecar["verification"]["max_difference"] < TOLERANCE
    assert [i["name"] for i in sidecar["inputs"]] == exported.names
    spec = exported.spec
    for entry in sidecar["inputs"]:
        shape = [d if isinstance(d, str) else int(d) for d in exported.session_shape(entry["name"])]
        assert entry["shape"] == shape
        if entry["kind"] in ("jagged", "fixed", "per_entry"):
            group = next(g for g in spec.inputs if g.name == entry["name"])
            assert [f["name"] for f in entry["features"]] == [f.name for f in group.features]
            values = sidecar["standardization"]["values"][group.name]
            assert values == {f.name: [f.center, f.scale] for f in group.features}
    [output] = sidecar["outputs"]
    assert [o.name for o in exported.session.get_outputs()] == [output["name"]]
    if exported.name == "pfn":
        particles, mask = sidecar["inputs"]
        assert particles["kind"] == "jagged" and particles["pad_value"] == 0.0 and particles["mask"] == "mask"
        assert particles["max_length"] == 128 and mask["dtype"] == "bool"
        pt_log = particles["features"][0]
        assert pt_log == {
            "name": "part_pt_log",
            "expression": "np.log(part_pt)",
            "branch": False,
            "unit": "log(pT/GeV)",  # data.inputs.particles.features.part_pt_log.unit
            "center": 1.2,
            "scale": 1.5,
            "clip": [-5.0, 5.0],
        }
        assert sidecar["variables"]["part_pt"].startswith("np.sqrt(")
        assert particles["features"][-1]["name"] == "part_isMuon" and particles["features"][-1]["branch"]
        assert particles["features"][6]["name"] == "part_dphi" and particles["features"][6]["unit"] == "rad"
        assert output == {**output, "name": "probabilities", "classes": ["QCD", "Tbqq"]}
        assert sidecar["task"] == "classification"
    if exported.name == "deepjet":
        assert sidecar["inputs"][0]["order"] == {"by": "part_pt", "descending": False}
    if exported.name == "cnn":
        [image] = sidecar["inputs"]
        assert image["kind"] == "image" and "pixelisation" in image["note"]
        assert [c["name"] for c in image["channels"]] == ["ecal", "hcal", "tracks"]
        assert sidecar["standardization"]["values"] == {}
    if exported.name == "trace3d":
        assert sidecar["task"] == "regression" and output["name"] == "predictions"
        targets = {t["name"]: t for t in output["targets"]}
        assert list(targets) == exported.model.task.targets
        assert targets["xmax"]["unit"] == "g/cm^2" and targets["xmax"]["scale"] == 60.0
        traces = sidecar["inputs"][0]
        assert (
            traces["shape"] == ["batch", 1, 9, 9, 80] and traces["features"][0]["unit"] == "VEM per 25 ns bin"
        )


@pytest.mark.parametrize("exported", ["pfn"], indirect=True)
def test_command_line_writes_both_files(exported, tmp_path):
    output = tmp_path / "cli" / "tagger.onnx"
    result = run_module(
        "hepnn.export", f"ckpt_path={exported.ckpt}", "format=onnx", f"output={output}", cwd=tmp_path
    )
    assert result.stdout.split() == [str(output), str(output.with_suffix(".json"))]
    assert sorted(p.name for p in output.parent.iterdir()) == ["tagger.json", "tagger.onnx"]
    session = ort.InferenceSession(str(output), providers=["CPUExecutionProvider"])
    onnx_out = run_onnx(session, exported.raw)
    assert exported.difference(onnx_out, run_onnx(exported.session, exported.raw)) == 0.0


@pytest.mark.parametrize("exported", ["gru"], indirect=True)
def test_default_output_is_next_to_the_checkpoint(exported, tmp_path):
    ckpt = tmp_path / "model.ckpt"
    ckpt.write_bytes(exported.ckpt.read_bytes())
    run_module("hepnn.export", f"ckpt_path={ckpt}", f"hydra.run.dir={tmp_path}/log", cwd=tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["log", "model.ckpt", "model.json", "model.onnx"]


@pytest.mark.parametrize("exported", ["lstm"], indirect=True)
def test_a_family_that_does_not_trace_is_named_and_leaves_no_file(exported, tmp_path, monkeypatch):

    def refuse(*args, **kwargs):
        raise RuntimeError("Exporting the operator 'aten::unsupported' to ONNX is not supported")

    monkeypatch.setattr(torch.onnx, "export", refuse)
    with pytest.raises(ExportError) as error:
        export_onnx(exported.ckpt, tmp_path / "lstm.onnx")
    message = str(error.value)
    assert "hepnn.nets.sequence.JetSequenceRNN" in message and str(exported.ckpt.resolve()) in message
    assert "aten::unsupported" in message and "ClassificationTask" in message
    assert list(tmp_path.iterdir()) == []


def test_command_line_errors_are_one_line_and_leave_no_file(tmp_path):
    missing = tmp_path / "missing.ckpt"
    cases = {
        "format=torchscript": "hepnn: error: format: 'torchscript' is not supported; formats: onnx",
        "output=x.pt": "hepnn: error: output: x.pt must end in .onnx (the sidecar goes next to it as .json)",
        "opset=13": "hepnn: error: opset: 13 is too old; hepnn exports with opset >= 17",
        "": f"hepnn: error: ckpt_path: checkpoint {missing} does not exist",
    }
    for override, message in cases.items():
        args = [f"ckpt_path={missing}", f"hydra.run.dir={tmp_path}/log", *([override] if override else [])]
        result = run_module("hepnn.export", *args, cwd=tmp_path, check=False)
        assert result.returncode == 1 and result.stderr.strip().splitlines()[-1] == message, result.stderr
    result = run_module("hepnn.export", f"hydra.run.dir={tmp_path}/log", cwd=tmp_path, check=False)
    assert result.returncode == 1 and "Missing mandatory value: ckpt_path" in result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["log"]


def test_nonfinite_values_are_replaced_in_the_graph_as_by_the_loader():
    from hepnn.data.spec import DataSpec

    spec = DataSpec.from_config(
        {
            "tree": "tree",
            "inputs": {"x": {"length": 4, "features": {"a": {"center": 1.0, "scale": 2.0}}, "pad_value": -1}},
            "labels": {"A": "a > 0", "B": "a <= 0"},
            "nonfinite": "replace",
            "nonfinite_value": 3.0,
        }
    )
    step = GroupStandardization(spec.inputs[0], spec.nonfinite, spec.nonfinite_value)
    x = torch.tensor([[[float("nan"), float("inf"), 5.0, 0.0]]])
    mask = torch.tensor([[True, True, True, False]])
    torch.testing.assert_close(step(x, mask), torch.tensor([[[1.0, 1.0, 2.0, -1.0]]]))
