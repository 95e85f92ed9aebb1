"""Semantic segmentation as a task: every pixel of a jet image labelled hard-scatter dominated,
pile-up dominated or empty.

Where the per-pixel regression of :mod:`hepnn.tasks.image_cleaning` predicts how much of a pixel's
neutral pT came from the leading vertex, segmentation asks only which source dominates each pixel,
the U-Net's original use (one class per pixel). The truth comes from the simulation: a target
image with two channels, the hard-scatter and the pile-up pT of each pixel (GeV, e.g.
``part_pt * (1 - part_pileup_fraction)`` and ``part_pt * part_pileup_fraction``). A pixel with
neither is ``empty``; otherwise it is ``hard_scatter`` when its hard-scatter pT is the larger,
else ``pileup``.

The net (e.g. :class:`hepnn.nets.unet.UNet`) reads ``log(1 + image / pixel_scale)`` of the input
image ``(B, C, n_eta, n_phi)`` (GeV) and returns class logits ``(B, 3, n_eta, n_phi)`` in the order
of :data:`CLASSES`. The loss is the per-pixel cross entropy, averaged over all pixels
(``pixels: all``) or over the occupied ones only (``pixels: occupied``, where the empty class,
which the input shows, is not learned), optionally with ``class_weights``.

Figures (validation and test): pixel accuracy over all pixels and over the occupied ones, the
intersection over union (IoU) of every class and their mean; the segmented jet, the pixels
predicted hard-scatter dominated with all their pT summed as massless pseudo-particles
(:mod:`hepnn.pileup.image_jets`), beside the uncorrected jet and the jet of the truly
hard-scatter-dominated pixels (``truth_mask``: what a perfect segmentation would give), each
against the jet without pile-up (``truth_observers``): bias and 68 % resolution of pT and mass
(GeV).

Predictions file, per jet: ``pt_``/``mass_corrected``, ``_uncorrected`` and ``_truth_mask``
(GeV) with the observers; with ``write_images`` also ``image_classes`` and ``image_true_classes``
(``n_eta x n_phi`` class indices). Export head: the class probabilities per pixel, output
``pixel_class_probabilities``.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from hepnn.errors import ConfigError
from hepnn.pileup.image_jets import image_jet
from hepnn.tasks import corrected_jets
from hepnn.tasks.base import provenance_and_observers, provenance_columns

CLASSES = ("empty", "hard_scatter", "pileup")
EMPTY, HARD_SCATTER, PILEUP = range(len(CLASSES))
PIXELS = ("all", "occupied")
# the jets of a test: prediction-file stem, summary label
JETS = (
    ("corrected", "pixels classed hard-scatter"),
    ("uncorrected", "uncorrected image"),
    ("truth_mask", "truly hard-scatter pixels"),
)


def pixel_classes(hard_scatter: torch.Tensor, pileup: torch.Tensor) -> torch.Tensor:
    """The true class index of every pixel (:data:`CLASSES`) from its hard-scatter and pile-up pT
    (GeV, same shapes): empty without either, else the larger source; ties go to hard scatter."""
    classes = torch.where(pileup > hard_scatter, PILEUP, HARD_SCATTER)
    return torch.where((hard_scatter > 0) | (pileup > 0), classes, EMPTY)


def confusion_counts(predicted: torch.Tensor, true: torch.Tensor) -> torch.Tensor:
    """Per-jet confusion matrices ``(B, 3, 3)`` (row: true class, column: predicted) of class
    index images ``(B, n_eta, n_phi)``."""
    n = len(CLASSES)
    pairs = (true * n + predicted).flatten(1)
    counts = torch.zeros(len(pairs), n * n, dtype=torch.int64, device=pairs.device)
    counts.scatter_add_(1, pairs, torch.ones_like(pairs))
    return counts.view(-1, n, n)


def segmentation_figures(confusion: np.ndarray) -> dict[str, float]:
    """Pixel accuracy (all pixels, occupied pixels), IoU per class and their mean from a summed
    confusion matrix (3 x 3, row true, column predicted). A class that is neither true nor
    predicted anywhere has no IoU (NaN) and stays out of the mean."""
    confusion = np.asarray(confusion, dtype=np.float64)
    total = confusion.sum()
    figures = {"pixel_accuracy": float(np.trace(confusion) / total) if total else float("nan")}
    occupied = confusion[1:, :]
    figures["occupied_pixel_accuracy"] = (
        float((occupied[0, HARD_SCATTER] + occupied[1, PILEUP]) / occupied.sum())
        if occupied.sum()
        else float("nan")
    )
    ious = []
    for k, name in enumerate(CLASSES):
        union = confusion[k, :].sum() + confusion[:, k].sum() - confusion[k, k]
        iou = float(confusion[k, k] / union) if union else float("nan")
        figures[f"iou_{name}"] = iou
        ious.append(iou)
    figures["mean_iou"] = float(np.nanmean(ious)) if not np.isnan(ious).all() else float("nan")
    return figures


class ImageSegmentationTask(corrected_jets.ImageJetsTask):
    """Labels every pixel of a jet image hard-scatter dominated, pile-up dominated or empty (see
    the module docstring).

    ``target`` is the batch entry of the two-channel truth image, ``target_channels`` its channel
    names, ``hard_scatter_channel`` and ``pileup_channel`` which is which; ``grid`` is its pixel
    grid (the input's). ``truth_observers`` maps ``pt`` and ``mass`` to the observers holding the
    jet without pile-up (GeV); without them the jets are judged against the truth-mask jet.
    """

    kind = "image_segmentation"
    jets = JETS
    limit = "truth_mask"
    export_output_name = "pixel_class_probabilities"

    def __init__(
        self,
        net: nn.Module,
        inputs: Sequence[str],
        target: str,
        grid: Mapping,
        target_channels: Sequence[str],
        hard_scatter_channel: str,
        pileup_channel: str,
        optimizer: Callable[..., torch.optim.Optimizer],
        scheduler: Callable[..., torch.optim.lr_scheduler.LRScheduler] | None = None,
        scheduler_interval: str = "epoch",
        pixel_scale: float = 10.0,
        pixels: str = "all",
        class_weights: Mapping[str, float] | None = None,
        truth_observers: Mapping[str, str] | None = None,
        write_images: bool = False,
        pretrained: Mapping | None = None,
    ):
        super().__init__(net, inputs, optimizer, scheduler, scheduler_interval, pretrained)
        self.image_settings(target, grid, pixel_scale, truth_observers, write_images)
        if pixels not in PIXELS:
            raise ConfigError(f"model.pixels must be one of {PIXELS}, got {pixels!r}")
        self.target_channels = [str(c) for c in target_channels]
        unknown = [c for c in (hard_scatter_channel, pileup_channel) if c not in self.target_channels]
        if unknown or hard_scatter_channel == pileup_channel:
            raise ConfigError(
                f"model.hard_scatter_channel / model.pileup_channel must name two different channels "
                f"of the target image {self.target_channels}, got {hard_scatter_channel!r} / "
                f"{pileup_channel!r}"
            )
        self.hard_scatter = self.target_channels.index(hard_scatter_channel)
        self.pileup = self.target_channels.index(pileup_channel)
        weights = dict(class_weights or {})
        unknown = sorted(set(weights) - set(CLASSES))
        if unknown:
            raise ConfigError(f"model.class_weights names {unknown}; the classes are {list(CLASSES)}")
        if any(not float(w) >= 0 for w in weights.values()):
            raise ConfigError(f"model.class_weights must be non-negative, got {weights}")
        self.register_buffer(
            "class_weight", torch.tensor([float(weights.get(c, 1.0)) for c in CLASSES]), persistent=False
        )
        self.pixels = pixels

    # ------------------------------------------------------------------------------------------------
    # the prediction
    # ------------------------------------------------------------------------------------------------

    def forward(self, batch: dict) -> torch.Tensor:
        """Class logits ``(B, 3, n_eta, n_phi)`` of a batch's input images ``(B, C, n_eta, n_phi)`` (GeV)."""
        (image,) = (batch[key] for key in self.inputs)
        logits = self.net(torch.log1p(torch.clamp(image, min=0.0) / self.pixel_scale))
        if not torch.jit.is_tracing() and (
            logits.ndim != 4 or logits.shape[1] != len(CLASSES) or logits.shape[2:] != image.shape[2:]
        ):
            raise ValueError(
                f"model.net returned shape {tuple(logits.shape)} for images {tuple(image.shape)}: "
                f"expected (B, {len(CLASSES)}, {image.shape[2]}, {image.shape[3]}), logits of {CLASSES}"
            )
        return logits

    def true_classes(self, batch: dict) -> torch.Tensor:
        """The true class index of every pixel ``(B, n_eta, n_phi)`` from the target image."""
        if self.target not in batch:
            raise KeyError(
                f"model.target names batch entry {self.target!r}, but the batch has {sorted(batch)}"
            )
        target = batch[self.target]
        if target.ndim != 4 or target.shape[1] != len(self.target_channels):
            raise ValueError(
                f"the target image {self.target!r} must have the channels {self.target_channels}, "
                f"got shape {tuple(target.shape)}"
            )
        return pixel_classes(target[:, self.hard_scatter], target[:, self.pileup])

    def pixel_loss(self, logits: torch.Tensor, true: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
        """Per-jet mean cross entropy over its pixels ``(B,)`` (those counted by ``pixels``; 0 for
        a jet without any), each pixel weighted by its true class's weight."""
        per_pixel = F.cross_entropy(logits, true, reduction="none")
        weight = self.class_weight.to(per_pixel.dtype)[true]
        if self.pixels == "occupied":
            weight = weight * (image.sum(dim=1) > 0).to(per_pixel.dtype)
        return (per_pixel * weight).sum(dim=(1, 2)) / weight.sum(dim=(1, 2)).clamp(min=1e-12)

    def _step(self, batch: dict, stage: str):
        image = batch[self.inputs[0]]
        logits = self(batch)
        true = self.true_classes(batch)
        loss = self.weighted_mean(self.pixel_loss(logits, true, image), batch)
        self.log_loss(stage, loss, batch, len(image))
        return loss, image, logits.detach(), true

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        return self._step(batch, "train")[0]

    def _keep_row(self, batch: dict, image, logits, true) -> None:
        predicted = logits.argmax(dim=1)
        total = torch.clamp(image, min=0.0).sum(dim=1)
        row = {"confusion": confusion_counts(predicted, true).view(len(image), -1).cpu().numpy()}
        for name, jet_image in (
            ("corrected", total * (predicted == HARD_SCATTER)),
            ("uncorrected", total),
            ("truth_mask", total * (true == HARD_SCATTER)),
        ):
            pt, mass = image_jet(jet_image, self.grid)
            row[f"pt_{name}"], row[f"mass_{name}"] = pt.cpu().numpy(), mass.cpu().numpy()
        if self.write_images:
            row["image_classes"] = predicted.to(torch.int8).cpu().numpy()
            row["image_true_classes"] = true.to(torch.int8).cpu().numpy()
        self._rows.append({**row, **provenance_and_observers(batch)})

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        _, image, logits, true = self._step(batch, "val")
        self._keep_row(batch, image, logits, true)

    def test_step(self, batch: dict, batch_idx: int) -> None:
        _, image, logits, true = self._step(batch, "test")
        self._keep_row(batch, image, logits, true)

    def predict_step(self, batch: dict, batch_idx: int) -> dict[str, torch.Tensor]:
        """The class probabilities per pixel with the provenance of every entry."""
        out = {"predictions": torch.softmax(self(batch), dim=1)}
        out.update({key: batch[key] for key in ("file_index", "entry") if key in batch})
        return out

    # ------------------------------------------------------------------------------------------------
    # figures
    # ------------------------------------------------------------------------------------------------

    def test_figures(self, predictions: Mapping[str, np.ndarray]) -> tuple[dict[str, float], dict]:
        true_pt, true_mass = self.truth(predictions)
        figures = corrected_jets.jet_figures(predictions, JETS, true_pt, true_mass)
        n = len(CLASSES)
        figures.update(segmentation_figures(predictions["confusion"].sum(axis=0).reshape(n, n)))
        return figures, {}

    # ------------------------------------------------------------------------------------------------
    # what the task owns
    # ------------------------------------------------------------------------------------------------

    def prediction_columns(self, predictions: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        columns = corrected_jets.jet_columns(predictions, JETS)
        if self.write_images:
            columns["image_classes"] = predictions["image_classes"]
            columns["image_true_classes"] = predictions["image_true_classes"]
        return {**columns, **provenance_columns(predictions)}

    def prediction_metadata(self) -> dict[str, str]:
        return {**super().prediction_metadata(), "classes": json.dumps(list(CLASSES))}

    def summary_rows(self, summary: Mapping[str, object]) -> list[tuple[str, object]]:
        against = "no-pile-up jet" if self.truth_observers else "truth-mask jet"
        rows = corrected_jets.jet_summary_rows(summary, JETS, against)
        rows.append(
            (
                "pixel accuracy: all / occupied pixels",
                (summary.get("test/pixel_accuracy"), summary.get("test/occupied_pixel_accuracy")),
            )
        )
        rows.append(
            (
                "IoU: " + " / ".join(CLASSES) + " / mean",
                (*(summary.get(f"test/iou_{c}") for c in CLASSES), summary.get("test/mean_iou")),
            )
        )
        return rows

    def export_outputs(self, outputs: torch.Tensor) -> torch.Tensor:
        return torch.softmax(outputs, dim=1)

    def export_output_entry(self, spec) -> dict:
        return {
            "name": self.export_output_name,
            "shape": ["batch", len(CLASSES), int(self.grid["n_eta"]), int(self.grid["n_phi"])],
            "dtype": "float32",
            "classes": list(CLASSES),
            "grid": self.grid,
            "note": "probability of each class per pixel; the segmented jet sums the pT of the pixels "
            "whose most probable class is hard_scatter",
        }
