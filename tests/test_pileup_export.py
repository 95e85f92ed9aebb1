"""ONNX export of the pile-up nets: the U-Net's cleaned image, the segmenting U-Net's pixel class
probabilities and the per-element GRU's pile-up probabilities match PyTorch on a real test batch,
with dynamic batch and particle axes."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
import torch

from hepnn.checkpoint import load_checkpoint, stored_config
from hepnn.deploy.onnx import build_export_model, export_onnx
from tests.test_export import first_test_batch, raw_checkpoint, run_onnx
from tests.test_train import run_training

TOLERANCE = 1e-4  # GeV for the image, absolute for probabilities
SMALL = {
    "pileup_unet": ("model.net.widths=[4,8]",),
    "pileup_segment": ("model.net.widths=[4,8]",),
    "pileup_gru": ("model.net.hidden=8", "model.net.front_end=[8]", "model.net.head=[8]"),
}


@pytest.fixture(scope="module", params=list(SMALL))
def exported(request, qcd_pu_sample, tmp_path_factory):
    name = request.param
    out = tmp_path_factory.mktemp(f"export_{name}")
    summary = run_training(
        out,
        f"experiment={name}",
        *SMALL[name],
        f"data.files={qcd_pu_sample}/qcd_*.root",
        "trainer.max_epochs=1",
        "data.batch_size=16",
        "data.eval_batch_size=16",
        "data.progress_bar=false",
    )
    ckpt = summary["best_checkpoint"]
    result = export_onnx(ckpt, out / f"{name}.onnx")
    model, _, _, _ = build_export_model(ckpt)
    checkpoint = load_checkpoint(ckpt)
    config = stored_config(checkpoint, ckpt)
    batch = first_test_batch(config, checkpoint, ckpt)
    raw = first_test_batch(config, raw_checkpoint(checkpoint), ckpt)
    session = ort.InferenceSession(str(result.onnx_path), providers=["CPUExecutionProvider"])
    return name, model.task.eval(), batch, raw, session


def test_the_export_matches_pytorch_on_a_real_test_batch(exported):
    name, task, batch, raw, session = exported
    with torch.no_grad():
        reference = task.export_outputs(task(batch)).numpy()
    onnx_out = run_onnx(session, raw)
    assert onnx_out.shape == reference.shape and len(onnx_out) == 16
    if name == "pileup_gru":
        mask = batch["mask"].numpy()
        np.testing.assert_allclose(onnx_out[mask], reference[mask], atol=TOLERANCE)
        assert ((onnx_out[mask] >= 0) & (onnx_out[mask] <= 1)).all()
    elif name == "pileup_segment":
        np.testing.assert_allclose(onnx_out, reference, atol=TOLERANCE)
        assert onnx_out.shape[1:] == (3, 40, 40)
        np.testing.assert_allclose(onnx_out.sum(axis=1), 1.0, atol=TOLERANCE)  # probabilities per pixel
    else:
        np.testing.assert_allclose(onnx_out, reference, atol=TOLERANCE)
        neutral = raw["image"][:, 2].numpy()
        assert (onnx_out <= neutral + TOLERANCE).all()  # the fraction output, exported too


def test_batch_and_particle_axes_stay_dynamic(exported):
    name, _, _, raw, session = exported
    full = run_onnx(session, raw)
    small = {k: v[:3] for k, v in raw.items() if torch.is_tensor(v)}
    np.testing.assert_allclose(run_onnx(session, small), full[:3], atol=TOLERANCE)
    if name == "pileup_gru":
        longest = int(raw["mask"].sum(dim=1).max())
        assert longest < raw["mask"].shape[1]
        shorter = {
            **raw,
            "constituents": raw["constituents"][:, :, :longest],
            "mask": raw["mask"][:, :longest],
        }
        mask = raw["mask"][:, :longest].numpy()
        np.testing.assert_allclose(run_onnx(session, shorter)[mask], full[:, :longest][mask], atol=TOLERANCE)
