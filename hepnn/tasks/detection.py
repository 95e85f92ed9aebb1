"""Finding objects in whole-event images as a task: boxes, classes, pT and mass, per grid cell.

A single-shot detector (e.g. :class:`hepnn.nets.event_detector.EventDetector`) reads
``log(1 + image / pixel_scale)`` of a whole-event calorimeter image and returns per cell of its
grid the raw outputs of :data:`hepnn.nets.event_detector.OUTPUTS` and the class logits. The truth
objects of an event are a jagged target group of the data config (``data.object_targets``: box
centre eta and phi (rad), half-extent R, class index, pT and mass in GeV); each is assigned to the
grid cell holding its centre (where two share a cell, the harder owns it,
:func:`hepnn.detection.boxes.assign_cells`).

Losses (Jet-SSD, arXiv:2105.05785; YOLO, arXiv:1506.02640; RetinaNet, arXiv:1708.02002): the focal
loss of the objectness over all cells, summed and divided by the number of objects; at the cells
that own an object, smooth-L1 of the centre offsets (the sigmoid of the outputs, in cell units)
and of the log widths over ``anchor``, cross entropy of the class, smooth-L1 of ``log(pT /
pt_reference)`` and ``log(mass / mass_reference)``; weighted by ``loss_weights``. With ``cone``
(``{channels, radius}``) the pT and mass outputs are instead the log calibration of the cone jet,
the named calorimeter channels summed within the radius around the axis
(:mod:`hepnn.detection.cone_jets`): trained against the cone around the true axis, applied to the
cone around the predicted one, so that the net finds the axis and the calorimeter measures.
``cone.calibrate`` names what the net calibrates (default ``[pt, mass]``); a quantity left out is
the cone's own (its loss term is zero), as anti-kT jets of the cells are measured. With
``cone.inputs`` the net also reads, per pixel, ``log(1 + pT / pt_reference)`` and ``log(1 + mass /
mass_reference)`` of the cone centred on that pixel: the jet mass a physicist would tag on,
which a few convolutions of pixel energies cannot easily form themselves.

Inference: the score of a cell is its objectness probability times its highest class
probability; cells above ``score_threshold`` are merged by non-maximum suppression
(:func:`hepnn.detection.nms.select_boxes`, ``nms: {by: delta_r | iou, threshold}``), at most
``max_boxes`` per event. Figures (validation and test, :mod:`hepnn.detection.average_precision`):
AP per class and mAP with IoU >= ``match.iou`` and with Delta R < ``match.delta_r`` matching;
efficiency and fake rate of the boxes with score >= ``efficiency_score``; relative pT and mass
bias and resolution of the matched boxes.

Predictions file, per event (entry-aligned with the input): jagged ``box_eta``, ``box_phi``,
``box_width_eta``, ``box_width_phi`` (rad), ``box_score``, ``box_class``, ``box_pt``,
``box_mass`` (GeV), the truth objects ``true_eta``, ``true_phi``, ``true_class``, ``true_pt``,
``true_mass``, ``true_radius``, and the observers. Export head: per cell the objectness
probability, box (eta, phi, widths), pT and mass (GeV) and the class probabilities (output
``cells``); the score threshold and NMS are applied outside the graph, as documented in the
sidecar.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping, Sequence

import awkward as ak
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from hepnn.detection import average_precision as metrics
from hepnn.detection.boxes import DetectionGrid, assign_cells, decode, stack_boxes
from hepnn.detection.cone_jets import ConeJets
from hepnn.detection.nms import select_boxes
from hepnn.errors import ConfigError
from hepnn.nets.event_detector import OUTPUTS
from hepnn.tasks.base import Plot, TaskBase, finite_figures, provenance_and_observers, provenance_columns
from hepnn.utils import validation as check

FIELDS = ("eta", "phi", "radius", "class", "pt", "mass")
LOSS_TERMS = ("objectness", "box", "class", "pt", "mass")
# what the net may calibrate of the cone around the predicted axis (model.cone.calibrate)
CALIBRATED = ("pt", "mass")
NMS_MODES = ("delta_r", "iou")
BOX_COLUMNS = ("eta", "phi", "width_eta", "width_phi", "score", "class", "pt", "mass")
TRUE_COLUMNS = ("eta", "phi", "radius", "class", "pt", "mass")
# export columns per cell, before the class probabilities
EXPORT_COLUMNS = ("objectness", "eta", "phi", "width_eta", "width_phi", "pt", "mass")


def focal_loss(logits: torch.Tensor, target: torch.Tensor, alpha: float, gamma: float) -> torch.Tensor:
    """Per-cell focal loss of binary logits (RetinaNet): BCE scaled by ``(1 - p_t)**gamma`` and by
    ``alpha`` for objects, ``1 - alpha`` for empty cells."""
    bce = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
    p = torch.sigmoid(logits)
    p_t = p * target + (1 - p) * (1 - target)
    weight = alpha * target + (1 - alpha) * (1 - target)
    return weight * (1 - p_t) ** gamma * bce


class DetectionTask(TaskBase):
    """Finds the objects of whole-event images (see the module docstring).

    ``objects`` is the batch entry of the truth group, ``object_features`` its features in order
    and ``object_fields`` which of them holds each of :data:`FIELDS`; ``count_observer`` the
    observer with the number of truth objects per entry (checked against the group's mask, so
    that no object is cut by the group's length). ``classes`` are the object classes, in the order
    of the class index; ``grid`` the image group's pixel grid (``n_eta``, ``n_phi``, ``eta``).
    """

    kind = "detection"
    export_output_name = "cells"

    def __init__(
        self,
        net: nn.Module,
        inputs: Sequence[str],
        objects: str,
        object_features: Sequence[str],
        object_fields: Mapping[str, str],
        classes: Sequence[str],
        grid: Mapping,
        optimizer: Callable[..., torch.optim.Optimizer],
        scheduler: Callable[..., torch.optim.lr_scheduler.LRScheduler] | None = None,
        scheduler_interval: str = "epoch",
        count_observer: str | None = None,
        pixel_scale: float = 10.0,
        anchor: float = 1.6,
        pt_reference: float = 300.0,
        mass_reference: float = 50.0,
        focal: Mapping | None = None,
        loss_weights: Mapping[str, float] | None = None,
        score_threshold: float = 0.05,
        nms: Mapping | None = None,
        max_boxes: int = 16,
        match: Mapping | None = None,
        efficiency_score: float = 0.5,
        pt_bins: Sequence[float] = (200, 250, 300, 400, 500, 700, 1000),
        channels: Sequence[str] | None = None,
        cone: Mapping | None = None,
        pretrained: Mapping | None = None,
    ):
        super().__init__(net, inputs, optimizer, scheduler, scheduler_interval, pretrained)
        if len(self.inputs) != 1:
            raise ConfigError(f"model.inputs must name the one input image, got {self.inputs}")
        self.objects = str(objects)
        features = [str(f) for f in object_features]
        fields = dict(object_fields)
        if set(fields) != set(FIELDS):
            raise ConfigError(
                f"model.object_fields must map {list(FIELDS)} to features, got {sorted(fields)}"
            )
        missing = {k: v for k, v in fields.items() if v not in features}
        if missing:
            raise ConfigError(
                f"model.object_fields names {missing}, which are not features of the objects group {features}"
            )
        self.field_index = {k: features.index(v) for k, v in fields.items()}
        self.classes = [str(c) for c in classes]
        if len(self.classes) < 1 or len(set(self.classes)) != len(self.classes):
            raise ConfigError(f"model.classes must list distinct class names, got {self.classes}")
        n_classes = getattr(net, "n_classes", len(self.classes))
        if n_classes != len(self.classes):
            raise ConfigError(
                f"model.net.n_classes {n_classes} differs from the {len(self.classes)} "
                f"model.classes {self.classes}"
            )
        self.count_observer = count_observer
        self.image_grid = {k: (list(v) if isinstance(v, Sequence) else v) for k, v in dict(grid).items()}
        for key in ("n_eta", "n_phi", "eta"):
            if key not in self.image_grid:
                raise ConfigError(
                    f"model.grid must give {key} (the image group's grid), got {self.image_grid}"
                )
        n_eta, n_phi = int(self.image_grid["n_eta"]), int(self.image_grid["n_phi"])
        if hasattr(net, "grid_shape"):
            n_eta, n_phi = net.grid_shape(n_eta, n_phi)
        self.grid = DetectionGrid(tuple(float(x) for x in self.image_grid["eta"]), n_eta, n_phi)
        self.pixel_scale = check.positive_number(pixel_scale, "model.pixel_scale", unit="GeV")
        self.anchor = check.positive_number(anchor, "model.anchor")
        self.pt_reference = check.positive_number(pt_reference, "model.pt_reference", unit="GeV")
        self.mass_reference = check.positive_number(mass_reference, "model.mass_reference", unit="GeV")
        focal = dict(check.mapping(focal or {}, "model.focal", ["alpha", "gamma"]))
        self.alpha = float(focal.get("alpha", 0.25))
        self.gamma = float(focal.get("gamma", 2.0))
        weights = dict(check.mapping(loss_weights or {}, "model.loss_weights", list(LOSS_TERMS)))
        self.loss_weights = {k: float(weights.get(k, 1.0)) for k in LOSS_TERMS}
        self.score_threshold = float(score_threshold)
        nms = dict(
            check.mapping(nms or {"by": "delta_r", "threshold": 0.6}, "model.nms", ["by", "threshold"])
        )
        self.nms_by = check.choice(nms.get("by", "delta_r"), "model.nms.by", NMS_MODES)
        self.nms_threshold = check.positive_number(nms.get("threshold", 0.6), "model.nms.threshold")
        self.max_boxes = check.positive_int(max_boxes, "model.max_boxes")
        match = dict(check.mapping(match or {}, "model.match", ["iou", "delta_r"]))
        self.match_iou = float(match.get("iou", 0.5))
        self.match_delta_r = float(match.get("delta_r", 0.4))
        self.efficiency_score = float(efficiency_score)
        self.pt_bins = [float(x) for x in pt_bins]
        self.cones = None
        self.cone_inputs = False
        self.calibrated = CALIBRATED
        if cone is not None:
            cone = dict(
                check.mapping(
                    cone, "model.cone", ["channels", "radius", "inputs", "calibrate"], required=["channels"]
                )
            )
            names = [str(c) for c in channels or ()]
            unknown = [c for c in cone["channels"] if c not in names]
            if unknown:
                raise ConfigError(
                    f"model.cone.channels names {unknown}, which are not channels of the input image {names}"
                )
            radius = check.positive_number(cone.get("radius", 0.8), "model.cone.radius")
            self.cones = ConeJets(self.image_grid, radius, [names.index(c) for c in cone["channels"]])
            self.cone_inputs = check.boolean(cone.get("inputs", False), "model.cone.inputs")
            calibrate = cone.get("calibrate", list(CALIBRATED))
            if isinstance(calibrate, str) or not all(q in CALIBRATED for q in calibrate):
                raise ConfigError(
                    f"model.cone.calibrate must list some of {list(CALIBRATED)}, got {calibrate!r}"
                )
            self.calibrated = tuple(str(q) for q in calibrate)
        fed = len(channels or ()) + (2 if self.cone_inputs else 0)
        expected = getattr(net, "in_channels", None)
        if channels is not None and expected is not None and expected != fed:
            raise ConfigError(
                f"model.net.in_channels is {expected}, but the task feeds {fed} channels per pixel "
                f"(the image's {list(channels)}"
                + (" and the cone pT and mass" if self.cone_inputs else "")
                + "); set model.net.in_channels to "
                + str(fed)
            )

    # ------------------------------------------------------------------------------------------------
    # sample checks
    # ------------------------------------------------------------------------------------------------

    def setup(self, stage: str) -> None:
        super().setup(stage)
        datamodule = getattr(self.trainer, "datamodule", None) if self._trainer is not None else None
        if datamodule is not None and hasattr(datamodule, "source_files"):
            self.check_sample_classes(datamodule.source_files())

    def check_sample_classes(self, files: Sequence[str]) -> None:
        """The class list the generator wrote into the files must be ``classes``: an error names both."""
        import uproot

        for path in files[:1]:
            with uproot.open(path) as f:
                if "hepnn_generator" not in f:
                    return
                config = json.loads(str(f["hepnn_generator"])).get("config", {})
            found = config.get("classes")
            if found is not None and list(found) != self.classes:
                raise ConfigError(
                    f"model.classes {self.classes} do not match the classes {list(found)} of the sample "
                    f"{path}; set model.classes to the sample's"
                )

    # ------------------------------------------------------------------------------------------------
    # the prediction
    # ------------------------------------------------------------------------------------------------

    def forward(self, batch: dict) -> torch.Tensor:
        """The per-cell outputs ``(B, 7 + n_classes, n_eta, n_phi)`` of a batch's images (GeV): the
        net's, and with ``cone`` two more channels, the pT and mass (GeV) of the cone around each
        cell's predicted centre."""
        return self._with_cones(*self._raw(batch))

    def _raw(self, batch: dict) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The net's raw outputs and (with ``cone``) the disc sums of the images."""
        (image,) = (batch[key] for key in self.inputs)
        discs = self.cones(image.float()) if self.cones is not None else None
        x = torch.log1p(torch.clamp(image, min=0.0) / self.pixel_scale)
        if self.cone_inputs:
            pt, mass = ConeJets.pt_and_mass(discs)
            cone = [torch.log1p(pt / self.pt_reference), torch.log1p(mass / self.mass_reference)]
            x = torch.cat([x, torch.stack(cone, dim=1).to(x.dtype)], dim=1)
        outputs = self.net(x)
        expected = (len(OUTPUTS) + len(self.classes), *self.grid.shape)
        if not torch.jit.is_tracing() and tuple(outputs.shape[1:]) != expected:
            raise ValueError(
                f"model.net returned shape {tuple(outputs.shape)} for images {tuple(image.shape)}: "
                f"expected (B, {expected[0]}, {expected[1]}, {expected[2]})"
            )
        return outputs, discs

    def _with_cones(self, outputs: torch.Tensor, discs: torch.Tensor | None) -> torch.Tensor:
        if discs is None:
            return outputs
        o = outputs.float()
        eta, phi, _, _ = decode(
            self.grid, torch.sigmoid(o[:, 1]), torch.sigmoid(o[:, 2]), o[:, 3], o[:, 4], self.anchor
        )
        pt, mass = self.cones.at_cells(discs, eta, phi)
        return torch.cat([outputs, pt[:, None].to(outputs.dtype), mass[:, None].to(outputs.dtype)], dim=1)

    def _scales(self, o: torch.Tensor) -> tuple[torch.Tensor | float, torch.Tensor | float]:
        """What the pT and mass outputs calibrate: the cone's pT and mass, or the fixed references."""
        if self.cones is None:
            return self.pt_reference, self.mass_reference
        n = len(OUTPUTS) + len(self.classes)
        return o[:, n].clamp(min=1.0), o[:, n + 1].clamp(min=1.0)

    def _calibrated(self, quantity: str, scale, log_correction: torch.Tensor) -> torch.Tensor:
        """``scale`` times the net's correction, or (a cone quantity the net does not calibrate) the
        cone's own value."""
        if quantity not in self.calibrated:
            return scale * torch.ones_like(log_correction)
        return scale * torch.exp(log_correction.clamp(max=10.0))

    def decoded(self, outputs: torch.Tensor) -> dict[str, torch.Tensor]:
        """Per-cell physical quantities of raw outputs: ``objectness`` probability, ``eta``, ``phi``,
        ``width_eta``, ``width_phi`` (rad), ``pt``, ``mass`` (GeV), each ``(B, n_eta, n_phi)``, and
        ``probabilities`` ``(B, n_classes, n_eta, n_phi)``."""
        o = outputs.float()
        eta, phi, w_eta, w_phi = decode(
            self.grid, torch.sigmoid(o[:, 1]), torch.sigmoid(o[:, 2]), o[:, 3], o[:, 4], self.anchor
        )
        pt_scale, mass_scale = self._scales(o)
        return {
            "objectness": torch.sigmoid(o[:, 0]),
            "eta": eta,
            "phi": phi,
            "width_eta": w_eta,
            "width_phi": w_phi,
            "pt": self._calibrated("pt", pt_scale, o[:, 5]),
            "mass": self._calibrated("mass", mass_scale, o[:, 6]),
            "probabilities": torch.softmax(o[:, len(OUTPUTS) : len(OUTPUTS) + len(self.classes)], dim=1),
        }

    def truth_objects(self, batch: dict) -> dict[str, torch.Tensor]:
        """The real truth objects of a batch, flat: ``event`` and each of :data:`FIELDS`; checks
        their count, classes and positions (errors name the file and entry)."""
        if self.objects not in batch:
            raise KeyError(
                f"model.objects names batch entry {self.objects!r}, but the batch has {sorted(batch)}"
            )
        values, mask = batch[self.objects], batch[f"{self.objects}_mask"]
        event, slot = torch.nonzero(mask, as_tuple=True)
        flat = {k: values[event, i, slot].double() for k, i in self.field_index.items()}
        flat["event"] = event
        if self.count_observer is not None:
            counts = batch.get("observers", {}).get(self.count_observer)
            if counts is None:
                raise ConfigError(f"model.count_observer {self.count_observer!r} is not in data.observers")
            short = torch.nonzero(mask.sum(dim=1) != counts.to(mask.device).long()).flatten()
            if short.numel():
                k = int(short[0])
                raise ValueError(
                    f"{self._where(batch, k)} holds {int(counts[k])} truth objects, but data.inputs."
                    f"{self.objects}.length is {mask.shape[1]}: raise the length so that none is cut"
                )
        bad = (
            (flat["class"] < 0)
            | (flat["class"] >= len(self.classes))
            | (flat["class"] != flat["class"].round())
        )
        if bad.any():
            k = int(torch.nonzero(bad)[0])
            raise ValueError(
                f"{self._where(batch, int(event[k]))}: truth class {flat['class'][k].item()} is not an index "
                f"of model.classes {self.classes}"
            )
        outside = (flat["eta"] < self.grid.eta_low) | (flat["eta"] > self.grid.eta_high)
        if outside.any():
            k = int(torch.nonzero(outside)[0])
            raise ValueError(
                f"{self._where(batch, int(event[k]))}: truth box at eta {flat['eta'][k].item():.3f}, phi "
                f"{flat['phi'][k].item():.3f} lies outside the image's eta range "
                f"[{self.grid.eta_low}, {self.grid.eta_high}]"
            )
        flat["class"] = flat["class"].long()
        return flat

    def _where(self, batch: dict, k: int) -> str:
        if "entry" not in batch:
            return f"event {k} of the batch"
        files = []
        if self._trainer is not None and hasattr(getattr(self.trainer, "datamodule", None), "source_files"):
            files = self.trainer.datamodule.source_files()
        index = int(batch["file_index"][k]) if "file_index" in batch else -1
        name = files[index] if 0 <= index < len(files) else f"file {index}"
        return f"{name} entry {int(batch['entry'][k])}"

    def losses(
        self, outputs: torch.Tensor, truth: Mapping[str, torch.Tensor], discs: torch.Tensor | None = None
    ) -> dict[str, torch.Tensor]:
        """The loss terms of :data:`LOSS_TERMS` of a batch (``discs``: the images' disc sums, with
        ``cone``)."""
        o = outputs.float()
        width = 2 * truth["radius"]
        targets = assign_cells(
            self.grid,
            truth["event"],
            truth["eta"],
            truth["phi"],
            width,
            width,
            self.anchor,
            len(o),
            priority=truth["pt"],
        )
        owner = targets.owner
        positive = owner >= 0
        n_objects = max(int(positive.sum()), 1)
        terms = {
            "objectness": focal_loss(o[:, 0], positive.to(o.dtype), self.alpha, self.gamma).sum() / n_objects
        }
        b, i, j = torch.nonzero(positive, as_tuple=True)
        k = owner[b, i, j]
        cells = o[b, :, i, j]  # (N, channels)
        if len(k) == 0:
            zero = o.sum() * 0.0
            terms.update({name: zero for name in LOSS_TERMS[1:]})
            return terms
        box_target = torch.stack(
            [
                targets.offset_eta[b, i, j],
                targets.offset_phi[b, i, j],
                targets.log_w_eta[b, i, j],
                targets.log_w_phi[b, i, j],
            ],
            dim=1,
        ).float()
        box_predicted = torch.cat([torch.sigmoid(cells[:, 1:3]), cells[:, 3:5]], dim=1)
        terms["box"] = F.smooth_l1_loss(box_predicted, box_target, beta=0.1, reduction="sum") / len(k)
        terms["class"] = F.cross_entropy(
            cells[:, len(OUTPUTS) : len(OUTPUTS) + len(self.classes)], truth["class"][k]
        )
        pt_scale, mass_scale = self.pt_reference, self.mass_reference
        if self.cones is not None:
            # the calibration of the cone around the true axis
            cone_pt, cone_mass = self.cones.at(discs, truth["event"][k], truth["eta"][k], truth["phi"][k])
            pt_scale, mass_scale = cone_pt.clamp(min=1.0).double(), cone_mass.clamp(min=1.0).double()
        log_pt = torch.log(truth["pt"][k].clamp(min=1e-3) / pt_scale).float()
        log_mass = torch.log(truth["mass"][k].clamp(min=1.0) / mass_scale).float()
        for column, name, target in ((5, "pt", log_pt), (6, "mass", log_mass)):
            calibrated = name in self.calibrated
            loss = F.smooth_l1_loss(cells[:, column], target, beta=0.1)
            terms[name] = loss if calibrated else loss * 0.0
        return terms

    def _step(self, batch: dict, stage: str):
        raw, discs = self._raw(batch)
        outputs = self._with_cones(raw, discs)
        truth = self.truth_objects(batch)
        terms = self.losses(outputs, truth, discs)
        loss = sum(self.loss_weights[k] * v for k, v in terms.items())
        self.log_loss(stage, loss, batch, len(outputs))
        if stage != "train":
            for name, value in terms.items():
                self.log(
                    f"{stage}/loss_{name}", value, on_epoch=True, batch_size=len(outputs), sync_dist=True
                )
        return loss, outputs.detach(), truth

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        return self._step(batch, "train")[0]

    def select(self, outputs: torch.Tensor) -> dict[str, torch.Tensor]:
        """The boxes of a batch after the score threshold and NMS, flat: ``event`` and :data:`BOX_COLUMNS`."""
        cells = self.decoded(outputs)
        best, best_class = cells["probabilities"].max(dim=1)
        boxes = stack_boxes(cells["eta"], cells["phi"], cells["width_eta"], cells["width_phi"])
        thresholds = {
            "delta_r_threshold" if self.nms_by == "delta_r" else "iou_threshold": self.nms_threshold
        }
        found = select_boxes(
            cells["objectness"] * best,
            boxes,
            best_class,
            {"pt": cells["pt"], "mass": cells["mass"]},
            score_threshold=self.score_threshold,
            max_per_event=self.max_boxes,
            **thresholds,
        )
        return {
            "event": found.event,
            "eta": found.boxes[:, 0],
            "phi": found.boxes[:, 1],
            "width_eta": found.boxes[:, 2],
            "width_phi": found.boxes[:, 3],
            "score": found.score,
            "class": found.classes,
            "pt": found.extras["pt"],
            "mass": found.extras["mass"],
        }

    def _keep_row(self, batch: dict, outputs: torch.Tensor, truth: Mapping[str, torch.Tensor]) -> None:
        n = len(outputs)
        boxes = self.select(outputs)
        row = {"box_count": torch.bincount(boxes["event"], minlength=n).cpu().numpy()}
        row.update({f"box_{k}": boxes[k].cpu().numpy() for k in BOX_COLUMNS})
        row["true_count"] = torch.bincount(truth["event"], minlength=n).cpu().numpy()
        row.update({f"true_{k}": truth[k].cpu().numpy() for k in TRUE_COLUMNS})
        self._rows.append({**row, **provenance_and_observers(batch)})

    def on_validation_epoch_start(self) -> None:
        self._rows = []

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        _, outputs, truth = self._step(batch, "val")
        self._keep_row(batch, outputs, truth)

    def on_validation_epoch_end(self) -> None:
        rows, self._rows = self._rows, []
        if rows:
            figures, _ = self.test_figures(self.predictions_of(_merge_rows(self, rows)))
            self.log_dict(finite_figures("val", figures), sync_dist=True)

    def test_step(self, batch: dict, batch_idx: int) -> None:
        _, outputs, truth = self._step(batch, "test")
        self._keep_row(batch, outputs, truth)

    def on_test_epoch_end(self) -> None:
        rows, self._rows = self._rows, []
        if not rows:
            return
        self.test_predictions = self.predictions_of(_merge_rows(self, rows))
        figures, extras = self.test_figures(self.test_predictions)
        self.log_dict({f"test/{k}": float(v) for k, v in figures.items()}, sync_dist=True)
        self.test_extras = extras

    def predict_step(self, batch: dict, batch_idx: int) -> dict[str, torch.Tensor]:
        """The per-cell decoded outputs (the export head) with the provenance of every entry."""
        out = {"predictions": self.export_outputs(self(batch))}
        out.update({key: batch[key] for key in ("file_index", "entry") if key in batch})
        return out

    # ------------------------------------------------------------------------------------------------
    # figures
    # ------------------------------------------------------------------------------------------------

    def predictions_of(self, merged: dict[str, np.ndarray]) -> dict:
        """Per-event columns sorted by file and entry; boxes and truth objects as awkward lists."""
        box_count, true_count = merged.pop("box_count"), merged.pop("true_count")
        lists = {f"box_{k}": ak.unflatten(merged.pop(f"box_{k}"), box_count) for k in BOX_COLUMNS}
        lists.update({f"true_{k}": ak.unflatten(merged.pop(f"true_{k}"), true_count) for k in TRUE_COLUMNS})
        if all(key in merged for key in ("file_index", "entry")):
            order = np.lexsort((merged["entry"], merged["file_index"]))
            merged = {k: v[order] for k, v in merged.items()}
            lists = {k: v[order] for k, v in lists.items()}
        return {**merged, **lists}

    def test_figures(self, predictions: Mapping) -> tuple[dict[str, float], dict]:
        pred, truth = flat_objects(predictions)
        figures: dict[str, float] = {}
        extras: dict = {}
        for label, criterion in (
            ("iou", {"iou_threshold": self.match_iou}),
            ("dr", {"delta_r_threshold": self.match_delta_r}),
        ):
            found = metrics.detection_figures(
                pred, truth, self.pt_bins, score_threshold=self.efficiency_score, **criterion
            )
            ap = found.average_precision
            figures[f"map_{label}"] = ap.mean
            for c, value in zip(ap.classes, ap.ap, strict=True):
                figures[f"ap_{label}_{self.classes[int(c)]}"] = float(value)
            if label == "dr":
                summary = found.summary()
                for key in (
                    "efficiency",
                    "fake_rate",
                    "pt_bias",
                    "pt_resolution",
                    "mass_bias",
                    "mass_resolution",
                ):
                    figures[key] = float(summary[key])
                extras["efficiency_vs_pt"] = _binned(found.efficiency)
                extras["fake_rate_vs_pt"] = _binned(found.fake_rate)
        figures["boxes_per_event"] = float(len(pred["score"]) / max(len(predictions["box_score"]), 1))
        return figures, extras

    # ------------------------------------------------------------------------------------------------
    # what the task owns
    # ------------------------------------------------------------------------------------------------

    def prediction_columns(self, predictions: Mapping) -> dict:
        columns = {}
        for k in BOX_COLUMNS:
            dtype = np.int32 if k == "class" else np.float32
            columns[f"box_{k}"] = ak.values_astype(predictions[f"box_{k}"], dtype)
        for k in TRUE_COLUMNS:
            dtype = np.int32 if k == "class" else np.float32
            columns[f"true_{k}"] = ak.values_astype(predictions[f"true_{k}"], dtype)
        return {**columns, **provenance_columns(predictions)}

    def prediction_metadata(self) -> dict[str, str]:
        return {
            **super().prediction_metadata(),
            "classes": json.dumps(self.classes),
            "grid": json.dumps(self.image_grid),
            "detection": json.dumps(
                {
                    "score_threshold": self.score_threshold,
                    "nms": {"by": self.nms_by, "threshold": self.nms_threshold},
                    "max_boxes": self.max_boxes,
                    "match": {"iou": self.match_iou, "delta_r": self.match_delta_r},
                    "efficiency_score": self.efficiency_score,
                    "pt_bins": self.pt_bins,
                }
            ),
        }

    def summary_rows(self, summary: Mapping[str, object]) -> list[tuple[str, object]]:
        rows: list[tuple[str, object]] = []
        for label, what in (("dr", f"Delta R < {self.match_delta_r}"), ("iou", f"IoU >= {self.match_iou}")):
            rows.append((f"mAP ({what})", summary.get(f"test/map_{label}")))
            for c in self.classes:
                rows.append((f"  AP {c} ({what})", summary.get(f"test/ap_{label}_{c}")))
        score = f"score >= {self.efficiency_score}"
        rows.append((f"efficiency ({score}, Delta R < {self.match_delta_r})", summary.get("test/efficiency")))
        rows.append((f"fake rate ({score})", summary.get("test/fake_rate")))
        for q in ("pt", "mass"):
            rows.append((f"{q} bias (pred/true - 1, median)", summary.get(f"test/{q}_bias")))
            rows.append((f"{q} resolution (68 % half-width)", summary.get(f"test/{q}_resolution")))
        return rows

    def export_outputs(self, outputs: torch.Tensor) -> torch.Tensor:
        """``(B, n_eta * n_phi, 7 + n_classes)``: per cell (row-major, eta then phi) the columns of
        :data:`EXPORT_COLUMNS` and the class probabilities."""
        cells = self.decoded(outputs)
        columns = [cells[k] for k in EXPORT_COLUMNS]
        stacked = torch.cat([torch.stack(columns, dim=1), cells["probabilities"]], dim=1)
        return stacked.flatten(2).transpose(1, 2)

    def export_output_scale(self) -> torch.Tensor:
        scale = [
            1.0,
            1.0,
            1.0,
            1.0,
            1.0,
            self.pt_reference,
            self.mass_reference,
            *([1.0] * len(self.classes)),
        ]
        return torch.tensor(scale)

    def export_output_entry(self, spec) -> dict:
        nms_key = "Delta R" if self.nms_by == "delta_r" else "IoU"
        return {
            "name": self.export_output_name,
            "shape": ["batch", self.grid.n_eta * self.grid.n_phi, len(EXPORT_COLUMNS) + len(self.classes)],
            "dtype": "float32",
            "columns": [*EXPORT_COLUMNS, *(f"p_{c}" for c in self.classes)],
            "units": ["", "", "rad", "", "", "GeV", "GeV"] + [""] * len(self.classes),
            "grid": {
                "eta": [self.grid.eta_low, self.grid.eta_high],
                "n_eta": self.grid.n_eta,
                "n_phi": self.grid.n_phi,
            },
            "note": (
                "one candidate per grid cell, row-major (eta, then phi). To get boxes: score = objectness "
                f"x max(p_class); keep cells with score >= {self.score_threshold}; greedy non-maximum "
                f"suppression per event in decreasing score, dropping a box whose {nms_key} to a kept box is "
                f"{'below' if self.nms_by == 'delta_r' else 'above'} {self.nms_threshold} (phi periodic); at "
                f"most {self.max_boxes} boxes per event (hepnn.detection.nms.select_boxes)"
            ),
        }

    # ------------------------------------------------------------------------------------------------
    # reading a predictions file back, and its plots
    # ------------------------------------------------------------------------------------------------

    @classmethod
    def read_predictions(
        cls, arrays: Callable[[Iterable[str]], dict], metadata: Mapping[str, str], path
    ) -> dict:
        """``{"kind", "task", "classes", "grid", "boxes": {column: jagged}, "truth": {column: jagged}}``."""
        if "classes" not in metadata or "grid" not in metadata:
            raise ValueError(f"{path} has no 'classes' and 'grid' strings beside the predictions tree")
        names = [f"box_{k}" for k in BOX_COLUMNS] + [f"true_{k}" for k in TRUE_COLUMNS]
        values = {k: _jagged(v) for k, v in arrays(names).items()}
        return {
            "kind": cls.kind,
            "task": cls,
            "classes": json.loads(metadata["classes"]),
            "grid": json.loads(metadata["grid"]),
            "detection": json.loads(metadata.get("detection") or "{}"),
            "boxes": {k: values[f"box_{k}"] for k in BOX_COLUMNS},
            "truth": {k: values[f"true_{k}"] for k in TRUE_COLUMNS},
        }

    @classmethod
    def plots(cls, predictions: Mapping, summary: Mapping, label: str) -> list[Plot]:
        from hepnn.analysis import detection_plots

        return detection_plots.plots(predictions, summary, label)


def flat_objects(predictions: Mapping) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """The boxes and truth objects of per-event jagged columns (``box_*``, ``true_*``) as the flat
    columns of :mod:`hepnn.detection.average_precision` (with their ``event`` index)."""
    boxes = {k: predictions[f"box_{k}"] for k in BOX_COLUMNS}
    truth = {k: predictions[f"true_{k}"] for k in TRUE_COLUMNS}
    return _flat(boxes, width=False), _flat(truth, width=True)


def _flat(columns: Mapping, width: bool) -> dict[str, np.ndarray]:
    first = next(iter(columns.values()))
    counts = ak.to_numpy(ak.num(first, axis=1))
    out = {k: ak.to_numpy(ak.flatten(v)) for k, v in columns.items()}
    out["event"] = np.repeat(np.arange(len(counts)), counts)
    if width:
        out["w_eta"] = out["w_phi"] = 2.0 * out["radius"]
    else:
        out["w_eta"], out["w_phi"] = out.pop("width_eta"), out.pop("width_phi")
    return out


def _jagged(values) -> ak.Array:
    """Per-event lists as read with ``library="np"`` (an object array of arrays) as an awkward array."""
    if isinstance(values, ak.Array):
        return values
    values = np.asarray(values)
    if values.dtype != object:
        return ak.Array(values)
    counts = np.fromiter((len(v) for v in values), dtype=np.int64, count=len(values))
    flat = np.concatenate([np.asarray(v) for v in values]) if len(values) else np.zeros(0)
    return ak.unflatten(flat, counts)


def _binned(fraction) -> dict:
    return {
        "edges": [float(x) for x in fraction.edges],
        "fraction": [float(x) for x in fraction.fraction],
        "error": [float(x) for x in fraction.error],
        "total": [int(x) for x in fraction.total],
    }


def _merge_rows(task: TaskBase, rows: list[dict]) -> dict[str, np.ndarray]:
    """This epoch's rows of all ranks concatenated key by key (sorting is :meth:`predictions_of`'s)."""
    from hepnn.tasks.base import gather_rows

    rows = gather_rows(task.trainer, rows)
    return {k: np.concatenate([r[k] for r in rows]) for k in rows[0]}
