"""Per-pixel regression as a task: cleaning pile-up from jet images, as PUMML does.

PUMML (Komiske, Metodiev, Nachman, Schwartz, arXiv:1707.08600) reads three jet images, the pT of
the charged particles from the leading vertex, that of the charged pile-up and that of all
neutral particles, and predicts per pixel the neutral pT from the leading vertex, which no
detector can separate. The cleaned jet is the leading-vertex charged image plus the predicted
neutral one, its pixels summed as massless pseudo-particles (:mod:`hepnn.pileup.image_jets`).

Inputs and target are image groups of the data config on one grid in the jet-axis frame
(``data.image_targets``, :mod:`hepnn.data.spec`); all intensities are pT in GeV. The net (e.g.
:class:`hepnn.nets.unet.UNet`) reads ``log(1 + image / pixel_scale)`` and returns ``(B, 1, n_eta,
n_phi)``; with ``output: fraction`` (default) that is the logit of the leading-vertex share of each
pixel's neutral pT, so the prediction lies between 0 and the measured neutral pT, and pixels
without neutral pT stay empty; with ``output: energy`` it is ``pixel_scale * softplus(output)``.

Loss per pixel, averaged over the pixels with neutral pT (the others carry nothing to learn):
``log_mse`` (PUMML's: the squared difference of ``log(1 + pT / pixel_scale)``, which weighs soft and
hard pixels alike) or ``mse`` (of ``pT / pixel_scale``, dominated by the hardest pixels).

Figures (validation and test): bias and 68 % resolution (GeV) of the cleaned jet's pT and mass
against the jet without pile-up (``truth_observers``, e.g. ``jet_nopu_pt``), and the same for the
uncorrected image (all channels) and for the image with the true neutral pT (``truth image``: what
a perfect per-pixel prediction would give); ``pixel_rmse`` (GeV) of the neutral prediction.

Predictions file, per jet: ``pt_corrected``, ``mass_corrected``, ``pt_uncorrected``,
``mass_uncorrected``, ``pt_truth_image``, ``mass_truth_image`` (GeV), with the observers (so the
no-pile-up jet beside them); with ``write_images`` also ``image_predicted`` and ``image_target``
(``n_eta x n_phi`` pT in GeV). Export head: the predicted neutral image in GeV, output
``cleaned_neutral_pt``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from hepnn.errors import ConfigError
from hepnn.pileup.image_jets import image_jet
from hepnn.tasks import corrected_jets
from hepnn.tasks.base import provenance_and_observers, provenance_columns

LOSSES = ("log_mse", "mse")
OUTPUTS = ("fraction", "energy")
# the jets of a test: prediction-file stem, summary label
JETS = (
    ("corrected", "cleaned image"),
    ("uncorrected", "uncorrected image"),
    ("truth_image", "image with the true neutral pT"),
)


class ImageCleaningTask(corrected_jets.ImageJetsTask):
    """Predicts the leading-vertex neutral pT per pixel of a jet image (see the module docstring).

    ``channels`` are the names of the input image's channels (``data.inputs.<group>.channels``);
    ``kept_channels`` those that enter the cleaned jet unchanged (the leading-vertex charged pT),
    ``cleaned_channel`` the one the net cleans (all neutral pT). ``target`` is the batch entry of
    the target image, ``grid`` its pixel grid. ``truth_observers`` maps ``pt`` and ``mass`` to the
    observers holding the jet without pile-up (GeV); without them the figures compare with the
    truth image.
    """

    kind = "image_cleaning"
    jets = JETS
    limit = "truth_image"
    export_output_name = "cleaned_neutral_pt"

    def __init__(
        self,
        net: nn.Module,
        inputs: Sequence[str],
        target: str,
        grid: Mapping,
        channels: Sequence[str],
        kept_channels: Sequence[str],
        cleaned_channel: str,
        optimizer: Callable[..., torch.optim.Optimizer],
        scheduler: Callable[..., torch.optim.lr_scheduler.LRScheduler] | None = None,
        scheduler_interval: str = "epoch",
        pixel_scale: float = 10.0,
        loss: str = "log_mse",
        output: str = "fraction",
        truth_observers: Mapping[str, str] | None = None,
        write_images: bool = False,
        pretrained: Mapping | None = None,
    ):
        super().__init__(net, inputs, optimizer, scheduler, scheduler_interval, pretrained)
        self.image_settings(target, grid, pixel_scale, truth_observers, write_images)
        if loss not in LOSSES:
            raise ConfigError(f"model.loss must be one of {LOSSES}, got {loss!r}")
        if output not in OUTPUTS:
            raise ConfigError(f"model.output must be one of {OUTPUTS}, got {output!r}")
        self.channels = [str(c) for c in channels]
        unknown = [c for c in [*kept_channels, cleaned_channel] if c not in self.channels]
        if unknown:
            raise ConfigError(
                f"model.kept_channels / model.cleaned_channel name {unknown}, which are not channels of "
                f"the input image {self.channels}"
            )
        if cleaned_channel in kept_channels:
            raise ConfigError(f"model.cleaned_channel {cleaned_channel!r} is also in model.kept_channels")
        self.kept = [self.channels.index(c) for c in kept_channels]
        self.cleaned = self.channels.index(cleaned_channel)
        self.loss_name = loss
        self.output = output

    # ------------------------------------------------------------------------------------------------
    # the prediction
    # ------------------------------------------------------------------------------------------------

    def forward(self, batch: dict) -> torch.Tensor:
        """The predicted leading-vertex neutral pT ``(B, n_eta, n_phi)`` (GeV) of a batch's input
        images ``(B, C, n_eta, n_phi)`` (GeV)."""
        (image,) = (batch[key] for key in self.inputs)
        outputs = self.net(torch.log1p(torch.clamp(image, min=0.0) / self.pixel_scale))
        if not torch.jit.is_tracing() and (
            outputs.ndim != 4 or outputs.shape[1] != 1 or outputs.shape[2:] != image.shape[2:]
        ):
            raise ValueError(
                f"model.net returned shape {tuple(outputs.shape)} for images {tuple(image.shape)}: "
                f"expected (B, 1, {image.shape[2]}, {image.shape[3]})"
            )
        outputs = outputs[:, 0]
        if self.output == "fraction":
            return torch.clamp(image[:, self.cleaned], min=0.0) * torch.sigmoid(outputs)
        return self.pixel_scale * F.softplus(outputs)

    def _target(self, batch: dict) -> torch.Tensor:
        if self.target not in batch:
            raise KeyError(
                f"model.target names batch entry {self.target!r}, but the batch has {sorted(batch)}"
            )
        target = batch[self.target]
        if target.ndim != 4 or target.shape[1] != 1:
            raise ValueError(
                f"the target image {self.target!r} must have one channel, got shape {tuple(target.shape)}"
            )
        return target[:, 0]

    def pixel_loss(self, predicted: torch.Tensor, target: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
        """Per-jet mean loss over the pixels with neutral pT ``(B,)`` (0 for a jet without any)."""
        if self.loss_name == "log_mse":
            per_pixel = (
                torch.log1p(predicted / self.pixel_scale) - torch.log1p(target / self.pixel_scale)
            ) ** 2
        else:
            per_pixel = ((predicted - target) / self.pixel_scale) ** 2
        mask = (image[:, self.cleaned] > 0).to(per_pixel.dtype)
        return (per_pixel * mask).sum(dim=(1, 2)) / mask.sum(dim=(1, 2)).clamp(min=1.0)

    def _step(self, batch: dict, stage: str):
        image = batch[self.inputs[0]]
        predicted = self(batch)
        target = self._target(batch).to(predicted.dtype)
        loss = self.weighted_mean(self.pixel_loss(predicted, target, image), batch)
        self.log_loss(stage, loss, batch, len(image))
        return loss, image, predicted.detach(), target

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        return self._step(batch, "train")[0]

    def _keep_row(self, batch: dict, image, predicted, target) -> None:
        kept = image[:, self.kept].sum(dim=1) if self.kept else torch.zeros_like(predicted)
        row = {"pixel_squared_error": ((predicted - target) ** 2).sum(dim=(1, 2)).double().cpu().numpy()}
        row["pixels"] = np.full(len(image), predicted.shape[1] * predicted.shape[2], dtype=np.int64)
        for name, jet_image in (
            ("corrected", kept + predicted),
            ("uncorrected", image.sum(dim=1)),
            ("truth_image", kept + target),
        ):
            pt, mass = image_jet(jet_image, self.grid)
            row[f"pt_{name}"], row[f"mass_{name}"] = pt.cpu().numpy(), mass.cpu().numpy()
        if self.write_images:
            row["image_predicted"] = predicted.float().cpu().numpy()
            row["image_target"] = target.float().cpu().numpy()
        self._rows.append({**row, **provenance_and_observers(batch)})

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        _, image, predicted, target = self._step(batch, "val")
        self._keep_row(batch, image, predicted, target)

    def test_step(self, batch: dict, batch_idx: int) -> None:
        _, image, predicted, target = self._step(batch, "test")
        self._keep_row(batch, image, predicted, target)

    def predict_step(self, batch: dict, batch_idx: int) -> dict[str, torch.Tensor]:
        """The predicted neutral image (GeV) with the provenance of every entry."""
        out = {"predictions": self(batch)}
        out.update({key: batch[key] for key in ("file_index", "entry") if key in batch})
        return out

    # ------------------------------------------------------------------------------------------------
    # figures
    # ------------------------------------------------------------------------------------------------

    def test_figures(self, predictions: Mapping[str, np.ndarray]) -> tuple[dict[str, float], dict]:
        true_pt, true_mass = self.truth(predictions)
        figures = corrected_jets.jet_figures(predictions, JETS, true_pt, true_mass)
        squared, pixels = predictions["pixel_squared_error"], predictions["pixels"]
        figures["pixel_rmse"] = float(np.sqrt(squared.sum() / max(pixels.sum(), 1)))
        return figures, {}

    # ------------------------------------------------------------------------------------------------
    # what the task owns
    # ------------------------------------------------------------------------------------------------

    def prediction_columns(self, predictions: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        columns = corrected_jets.jet_columns(predictions, JETS)
        if self.write_images:
            columns["image_predicted"] = predictions["image_predicted"]
            columns["image_target"] = predictions["image_target"]
        return {**columns, **provenance_columns(predictions)}

    def summary_rows(self, summary: Mapping[str, object]) -> list[tuple[str, object]]:
        against = "no-pile-up jet" if self.truth_observers else "truth image"
        rows = corrected_jets.jet_summary_rows(summary, JETS, against)
        rows.append(("neutral pT per pixel, RMS error [GeV]", summary.get("test/pixel_rmse")))
        return rows

    def export_outputs(self, outputs: torch.Tensor) -> torch.Tensor:
        return outputs  # forward already gives GeV

    def export_output_scale(self) -> torch.Tensor:
        return torch.tensor([self.pixel_scale])

    def export_output_entry(self, spec) -> dict:
        return {
            "name": self.export_output_name,
            "shape": ["batch", int(self.grid["n_eta"]), int(self.grid["n_phi"])],
            "dtype": "float32",
            "unit": "GeV",
            "grid": self.grid,
            "note": "predicted leading-vertex neutral pT per pixel; the cleaned jet is the sum of the "
            f"kept channels {[self.channels[k] for k in self.kept]} and this image",
        }
