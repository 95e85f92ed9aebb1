"""Semantic segmentation of jet images with pile-up: the true pixel classes, the confusion counts
and IoU on hand-made images, the loss, the segmented jets, and a real training of the
``pileup_segment`` preset on a small sample with pile-up."""

from __future__ import annotations

import json
from functools import partial

import numpy as np
import pytest
import torch
import uproot

from hepnn.errors import ConfigError
from hepnn.nets.unet import UNet
from hepnn.pileup.image_jets import image_jet
from hepnn.tasks.image_segmentation import (
    EMPTY,
    HARD_SCATTER,
    PILEUP,
    ImageSegmentationTask,
    confusion_counts,
    pixel_classes,
    segmentation_figures,
)
from tests.test_image_cleaning import short_image_run

GRID = {"n_eta": 9, "n_phi": 7, "eta": [-0.8, 0.8], "phi": [-0.8, 0.8]}


def segmentation_task(**kwargs) -> ImageSegmentationTask:
    return ImageSegmentationTask(
        **{
            "net": UNet(3, 3, widths=(4, 8), batch_norm=False),
            "inputs": ["image"],
            "target": "sources",
            "grid": GRID,
            "target_channels": ["hard_scatter", "pileup"],
            "hard_scatter_channel": "hard_scatter",
            "pileup_channel": "pileup",
            "optimizer": partial(torch.optim.AdamW, lr=1e-3),
            **kwargs,
        }
    )


def sources(n=4, seed=0) -> torch.Tensor:
    """Hard-scatter and pile-up pT images ``(n, 2, 9, 7)`` (GeV), each pixel occupied by either,
    both or neither."""
    generator = torch.Generator().manual_seed(seed)
    values = torch.rand(n, 2, 9, 7, generator=generator) * 40.0
    return values * (torch.rand(n, 2, 9, 7, generator=generator) < 0.4)


def logits_of(classes: torch.Tensor, margin: float = 30.0) -> torch.Tensor:
    """Logits that put (almost) all probability on the given class of every pixel."""
    return margin * torch.nn.functional.one_hot(classes, 3).permute(0, 3, 1, 2).float()


# --------------------------------------------------------------------------------------------------
# classes, counts and figures on hand-made pixels


def test_a_pixel_belongs_to_the_source_of_the_larger_pt_and_is_empty_without_any():
    hard = torch.tensor([[0.0, 5.0, 1.0, 3.0, 0.0]])
    pileup = torch.tensor([[0.0, 1.0, 5.0, 3.0, 2.0]])
    assert pixel_classes(hard, pileup).tolist() == [[EMPTY, HARD_SCATTER, PILEUP, HARD_SCATTER, PILEUP]]


def test_confusion_counts_and_iou_match_a_count_by_hand():
    true = torch.tensor([[[0, 1, 1, 2], [2, 2, 0, 1]]])
    predicted = torch.tensor([[[0, 1, 2, 2], [2, 1, 0, 0]]])
    confusion = confusion_counts(predicted, true)[0]
    # rows true, columns predicted
    assert confusion.tolist() == [[2, 0, 0], [1, 1, 1], [0, 1, 2]]
    figures = segmentation_figures(confusion.numpy())
    assert figures["pixel_accuracy"] == pytest.approx(5 / 8)
    # occupied pixels: true hard scatter or pile-up (6), right in 1 + 2
    assert figures["occupied_pixel_accuracy"] == pytest.approx(3 / 6)
    # IoU = TP / (TP + FP + FN): empty 2 / (2 + 1), hard scatter 1 / (1 + 1 + 2), pile-up 2 / (2 + 1 + 1)
    assert figures["iou_empty"] == pytest.approx(2 / 3)
    assert figures["iou_hard_scatter"] == pytest.approx(1 / 4)
    assert figures["iou_pileup"] == pytest.approx(2 / 4)
    assert figures["mean_iou"] == pytest.approx((2 / 3 + 1 / 4 + 2 / 4) / 3)


def test_a_class_absent_everywhere_has_no_iou_and_stays_out_of_the_mean():
    figures = segmentation_figures(np.array([[4, 0, 0], [0, 2, 0], [0, 0, 0]]))
    assert np.isnan(figures["iou_pileup"])
    assert figures["mean_iou"] == 1.0 and figures["pixel_accuracy"] == 1.0


# --------------------------------------------------------------------------------------------------
# the task on hand-made images


def test_the_net_gives_class_logits_per_pixel_and_a_wrong_shape_is_refused():
    task = segmentation_task().eval()
    image = sources().repeat(1, 2, 1, 1)[:, :3]
    with torch.no_grad():
        assert task({"image": image}).shape == (4, 3, 9, 7)
    wrong = segmentation_task(net=UNet(3, 1, widths=(4,))).eval()
    with pytest.raises(ValueError, match=r"expected \(B, 3, 9, 7\)"):
        wrong({"image": image})


@pytest.mark.parametrize("pixels", ["all", "occupied"])
def test_the_loss_vanishes_for_a_perfect_segmentation_and_grows_with_errors(pixels):
    task = segmentation_task(pixels=pixels)
    truth = sources()
    image = torch.stack([truth[:, 0], truth[:, 1], torch.zeros_like(truth[:, 0])], dim=1)
    true = task.true_classes({"sources": truth})
    perfect = task.pixel_loss(logits_of(true), true, image)
    torch.testing.assert_close(perfect, torch.zeros(len(truth)), atol=1e-9, rtol=0)
    swapped = torch.where(true == HARD_SCATTER, PILEUP, torch.where(true == PILEUP, HARD_SCATTER, true))
    assert (task.pixel_loss(logits_of(swapped), true, image) > 1.0).all()


def test_with_occupied_pixels_only_a_wrong_empty_pixel_costs_nothing():
    task = segmentation_task(pixels="occupied")
    truth = sources()
    image = truth.sum(dim=1, keepdim=True).repeat(1, 3, 1, 1)
    true = task.true_classes({"sources": truth})
    wrong_empty = torch.where(true == EMPTY, HARD_SCATTER, true)
    torch.testing.assert_close(
        task.pixel_loss(logits_of(wrong_empty), true, image), torch.zeros(len(truth)), atol=1e-9, rtol=0
    )
    assert (segmentation_task().pixel_loss(logits_of(wrong_empty), true, image) > 1.0).all()


def test_class_weights_scale_the_classes_in_the_loss():
    truth = sources()
    image = truth.sum(dim=1, keepdim=True).repeat(1, 3, 1, 1)
    task = segmentation_task()
    true = task.true_classes({"sources": truth})
    logits = torch.zeros(len(truth), 3, 9, 7)  # every pixel log(3) whatever its class
    weighted = segmentation_task(class_weights={"empty": 0.0}).pixel_loss(logits, true, image)
    torch.testing.assert_close(weighted, torch.full((len(truth),), float(np.log(3.0))))


def test_a_perfect_segmentation_gives_the_truth_mask_jet():
    task = segmentation_task().eval()
    truth = sources(n=6, seed=3)
    image = torch.stack([truth[:, 0], truth[:, 1], torch.zeros_like(truth[:, 0])], dim=1)
    true = task.true_classes({"sources": truth})
    task._rows = []
    task._keep_row({"image": image}, image, logits_of(true), true)
    row = task._rows[0]
    np.testing.assert_allclose(row["pt_corrected"], row["pt_truth_mask"])
    np.testing.assert_allclose(row["mass_corrected"], row["mass_truth_mask"])
    pt, _ = image_jet(image.sum(dim=1), GRID)
    np.testing.assert_allclose(row["pt_uncorrected"], pt.numpy())
    confusion = row["confusion"].reshape(-1, 3, 3)
    assert (confusion.sum(axis=(1, 2)) == 9 * 7).all()
    assert (confusion - np.eye(3)[None] * confusion == 0).all()  # all on the diagonal


def test_bad_task_settings_are_refused_naming_the_key():
    with pytest.raises(ConfigError, match=r"model\.hard_scatter_channel / model\.pileup_channel"):
        segmentation_task(pileup_channel="neutral")
    with pytest.raises(ConfigError, match=r"model\.hard_scatter_channel / model\.pileup_channel"):
        segmentation_task(pileup_channel="hard_scatter")
    with pytest.raises(ConfigError, match=r"model\.pixels must be one of"):
        segmentation_task(pixels="some")
    with pytest.raises(ConfigError, match=r"model\.class_weights names \['noise'\]"):
        segmentation_task(class_weights={"noise": 2.0})
    with pytest.raises(ConfigError, match=r"model\.truth_observers must map pt and mass"):
        segmentation_task(truth_observers={"pt": "jet_nopu_pt"})


# --------------------------------------------------------------------------------------------------
# a real training on a small QCD sample with pile-up


@pytest.fixture(scope="module")
def segment_run(qcd_pu_sample, tmp_path_factory):
    return short_image_run("pileup_segment", qcd_pu_sample, tmp_path_factory.mktemp("pileup_segment"))


def test_a_segmentation_run_writes_segmented_jets_and_pixel_figures(segment_run):
    out, summary = segment_run
    with uproot.open(out / "predictions" / "test.root") as f:
        columns = f["predictions"].arrays(library="np")
        assert json.loads(str(f["classes"])) == ["empty", "hard_scatter", "pileup"]
    n = 2 * 12  # 15 % of each file of 80 jets
    assert len(columns["entry"]) == n
    classes, true = columns["image_classes"], columns["image_true_classes"]
    assert classes.shape == true.shape == (n, 40, 40)
    # the segmented jet keeps a subset of the pixels: never harder than the uncorrected jet
    assert (columns["pt_corrected"] <= columns["pt_uncorrected"] + 1e-3).all()
    # pile-up at mu = 30 dominates many soft pixels; the truly hard-scatter pixels carry most
    # of the jet without pile-up
    assert (true == 2).sum() > 0.2 * (true > 0).sum()
    added = np.median(columns["pt_uncorrected"] - columns["jet_nopu_pt"])
    assert added > 20.0
    assert abs(np.median(columns["pt_truth_mask"] - columns["jet_nopu_pt"])) < 0.5 * added
    # the figures agree with a count over the written class images
    occupied = true > 0
    accuracy = (classes[occupied] == true[occupied]).mean()
    assert summary["test/occupied_pixel_accuracy"] == pytest.approx(accuracy, rel=1e-6)
    assert summary["test/pixel_accuracy"] == pytest.approx((classes == true).mean(), rel=1e-6)
    assert 0.0 <= summary["test/mean_iou"] <= 1.0


def test_the_plots_of_a_segmentation_run_show_the_jet_residuals(segment_run, tmp_path):
    from hepnn.plot import make_plots

    out, _ = segment_run
    report = make_plots(out, tmp_path, formats=["png"])
    written = {p.name for p in report.written}
    assert {"jet_pt_residuals.png", "jet_mass_residuals.png"} <= written, report.notes
