"""Per-element classification as a task: which particles of a jet come from pile-up.

The net reads a jet's particles ``(B, C, P)`` with their mask and returns one logit per particle
``(B, 1, P)`` (e.g. :class:`hepnn.nets.sequence.JetSequenceRNN` with ``per_element``, or
:class:`hepnn.nets.particle_context.ParticleContextNet`): the log-odds that the particle is
pile-up. The truth is a per-element target group of the data config (``data.element_targets``,
:mod:`hepnn.data.spec`) holding, unstandardised, the label (``label``, e.g. ``part_is_pileup``)
and what the jet-level figures need: the four-momentum (``momentum``: px, py, pz, E in GeV), the
charge (``charge``) and the pile-up share of each particle's energy (``pileup_fraction``).

Loss: binary cross entropy per real particle, averaged over the real particles of the batch;
padding never enters it, and the nets never let padding change a real particle's output.

Figures (validation and test): ``element_auc`` and ``neutral_auc`` (the per-particle AUC of the
pile-up score, all particles and the neutral ones, which tracking cannot tell apart); and the
jet with every particle weighted by its predicted hard-scatter probability ``1 - p``: bias and
68 % resolution (GeV) of its pT and mass against the jet without pile-up (``truth_observers``),
beside the unweighted jet and the jet weighted by the true hard-scatter share (``truth
weights``: a perfect per-particle prediction). The jets are those of the particles the input
group holds (its ``length`` hardest, when ordered by pT).

Predictions file, per jet: ``pt_corrected``, ``mass_corrected``, ``pt_uncorrected``,
``mass_uncorrected``, ``pt_truth_weights``, ``mass_truth_weights`` (GeV), with the observers;
with ``write_elements`` also the jagged ``element_pileup_score`` and ``element_is_pileup`` (one
per real particle, in the input group's order). Export head: the pile-up probability of every
particle slot ``(B, P)``, output ``pileup_probability``.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping, Sequence

import awkward as ak
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from hepnn.errors import ConfigError
from hepnn.metrics.classification import roc_auc
from hepnn.tasks import corrected_jets
from hepnn.tasks.base import Plot, TaskBase, finite_figures, provenance_and_observers, provenance_columns

MOMENTUM = 4  # px, py, pz, E
# the jets of a test: prediction-file stem, summary label
JETS = (
    ("corrected", "predicted weights"),
    ("uncorrected", "no weights"),
    ("truth_weights", "true hard-scatter shares"),
)


def weighted_jets(momentum: torch.Tensor, weights: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """pT and mass (GeV) of every jet's particles ``(B, 4, P)`` (px, py, pz, E; zero at padding)
    weighted by ``weights`` ``(B, P)``, in float64."""
    total = (momentum.double() * weights.double().unsqueeze(1)).sum(dim=2)
    px, py, pz, energy = total.unbind(dim=1)
    pt = torch.hypot(px, py)
    mass = torch.sqrt(torch.clamp(energy**2 - pt**2 - pz**2, min=0.0))
    return pt.cpu().numpy(), mass.cpu().numpy()


class ElementLabellingTask(TaskBase):
    """Per-particle pile-up identification and the jets it corrects (see the module docstring).

    ``inputs`` are the particle group and its mask; ``truth`` names the per-element target group,
    ``truth_mask`` its mask and ``truth_features`` its features in order (``${hepnn.keys:...}``),
    among them ``label``, ``charge``, ``pileup_fraction`` and the four ``momentum`` components.
    """

    kind = "element_labelling"
    export_output_name = "pileup_probability"

    def __init__(
        self,
        net: nn.Module,
        inputs: Sequence[str],
        truth: str,
        truth_mask: str,
        truth_features: Sequence[str],
        optimizer: Callable[..., torch.optim.Optimizer],
        scheduler: Callable[..., torch.optim.lr_scheduler.LRScheduler] | None = None,
        scheduler_interval: str = "epoch",
        label: str = "part_is_pileup",
        charge: str = "part_charge",
        pileup_fraction: str = "part_pileup_fraction",
        momentum: Sequence[str] = ("part_px", "part_py", "part_pz", "part_energy"),
        truth_observers: Mapping[str, str] | None = None,
        write_elements: bool = False,
        pretrained: Mapping | None = None,
    ):
        super().__init__(net, inputs, optimizer, scheduler, scheduler_interval, pretrained)
        if len(self.inputs) != 2:
            raise ConfigError(f"model.inputs must name the particle group and its mask, got {self.inputs}")
        self.truth = str(truth)
        self.truth_mask = str(truth_mask)
        self.truth_features = [str(f) for f in truth_features]
        momentum = [str(m) for m in momentum]
        if len(momentum) != MOMENTUM:
            raise ConfigError(f"model.momentum must name px, py, pz and E, got {momentum}")
        named = {"model.label": [label], "model.charge": [charge], "model.pileup_fraction": [pileup_fraction]}
        named["model.momentum"] = momentum
        for key, names in named.items():
            missing = [n for n in names if n not in self.truth_features]
            if missing:
                raise ConfigError(
                    f"{key} names {missing}, which are not features of the truth group {self.truth!r} "
                    f"{self.truth_features}"
                )
        index = self.truth_features.index
        self.label_index, self.charge_index, self.fraction_index = (
            index(label),
            index(charge),
            index(pileup_fraction),
        )
        self.momentum_index = [index(m) for m in momentum]
        truth_observers = dict(truth_observers or {})
        if set(truth_observers) != {"pt", "mass"}:
            raise ConfigError(
                f"model.truth_observers must map pt and mass to observers, got {truth_observers}"
            )
        self.truth_observers = truth_observers
        self.write_elements = bool(write_elements)

    # ------------------------------------------------------------------------------------------------
    # steps
    # ------------------------------------------------------------------------------------------------

    def forward(self, batch: dict) -> torch.Tensor:
        """Pile-up logits ``(B, P)`` of every particle slot (meaningless at padded slots)."""
        logits = self.net_outputs(batch)
        particles = batch[self.inputs[0]]
        if not torch.jit.is_tracing() and (logits.ndim != 3 or logits.shape[1] != 1):
            raise ValueError(
                f"model.net returned shape {tuple(logits.shape)} for particles {tuple(particles.shape)}: "
                f"expected (B, 1, P), one logit per particle (a per-element net)"
            )
        return logits[:, 0]

    def _truth(self, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
        """The truth group ``(B, F, P)`` and the mask of real particles, checked to be the input's."""
        for key in (self.truth, self.truth_mask):
            if key not in batch:
                raise KeyError(
                    f"model.truth / model.truth_mask name batch entry {key!r}, "
                    f"but the batch has {sorted(batch)}"
                )
        mask = batch[self.inputs[1]].bool()
        if batch[self.truth_mask].shape != mask.shape or not torch.equal(batch[self.truth_mask].bool(), mask):
            raise ValueError(
                f"the masks {self.inputs[1]!r} of the particles and {self.truth_mask!r} of the truth group "
                f"{self.truth!r} differ: per-element targets must list the same elements"
            )
        return batch[self.truth], mask

    def _step(self, batch: dict, stage: str):
        logits = self(batch)
        truth, mask = self._truth(batch)
        label = truth[:, self.label_index].to(logits.dtype)
        losses = F.binary_cross_entropy_with_logits(logits, label, reduction="none")
        weight = mask.to(logits.dtype)
        if batch.get("weight") is not None:
            weight = weight * batch["weight"].to(logits.dtype).unsqueeze(1)
        loss = (losses * weight).sum() / weight.sum().clamp(min=1.0)
        self.log_loss(stage, loss, batch, len(logits))
        return loss, logits.detach(), truth, mask

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        return self._step(batch, "train")[0]

    def _keep_row(self, batch: dict, logits, truth, mask) -> None:
        probability = torch.sigmoid(logits.float()) * mask
        momentum = truth[:, self.momentum_index] * mask.unsqueeze(1)
        row = {}
        hard_share = (1.0 - truth[:, self.fraction_index]).clamp(0.0, 1.0)
        for name, weights in (
            ("corrected", 1.0 - probability),
            ("uncorrected", mask.to(probability.dtype)),
            ("truth_weights", hard_share * mask),
        ):
            row[f"pt_{name}"], row[f"mass_{name}"] = weighted_jets(momentum, weights)
        real = mask.cpu().numpy()
        row["counts"] = real.sum(axis=1).astype(np.int64)
        row["element_score"] = probability.cpu().numpy()[real]  # flat, jet after jet
        row["element_label"] = truth[:, self.label_index].float().cpu().numpy()[real]
        row["element_neutral"] = (truth[:, self.charge_index] == 0).cpu().numpy()[real]
        self._rows.append({**row, **provenance_and_observers(batch)})

    def on_validation_epoch_start(self) -> None:
        self._rows = []

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        self._keep_row(batch, *self._step(batch, "val")[1:])

    def on_validation_epoch_end(self) -> None:
        rows, self._rows = self._rows, []
        if rows:
            figures, _ = self.test_figures(self.predictions_of(_merge_unsorted(self, rows)))
            self.log_dict(finite_figures("val", figures), sync_dist=True)

    def on_test_epoch_end(self) -> None:
        rows, self._rows = self._rows, []
        if not rows:
            return
        self.test_predictions = self.predictions_of(_merge_unsorted(self, rows))
        figures, extras = self.test_figures(self.test_predictions)
        self.log_dict({f"test/{k}": float(v) for k, v in figures.items()}, sync_dist=True)
        self.test_extras = extras

    def test_step(self, batch: dict, batch_idx: int) -> None:
        self._keep_row(batch, *self._step(batch, "test")[1:])

    def predict_step(self, batch: dict, batch_idx: int) -> dict[str, torch.Tensor]:
        out = {"predictions": torch.sigmoid(self(batch)) * batch[self.inputs[1]]}
        out.update({key: batch[key] for key in ("file_index", "entry") if key in batch})
        return out

    # ------------------------------------------------------------------------------------------------
    # figures
    # ------------------------------------------------------------------------------------------------

    def predictions_of(self, merged: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Per-jet columns sorted by file and entry, with the per-particle columns as awkward lists."""
        counts = merged.pop("counts")
        elements = {
            k: ak.unflatten(merged.pop(k), counts)
            for k in ("element_score", "element_label", "element_neutral")
        }
        if all(key in merged for key in ("file_index", "entry")):
            order = np.lexsort((merged["entry"], merged["file_index"]))
            merged = {k: v[order] for k, v in merged.items()}
            elements = {k: v[order] for k, v in elements.items()}
        return {**merged, **elements}

    def test_figures(self, predictions: Mapping) -> tuple[dict[str, float], dict]:
        keys = [f"observer:{self.truth_observers[k]}" for k in ("pt", "mass")]
        missing = [k.removeprefix("observer:") for k in keys if k not in predictions]
        if missing:
            raise ConfigError(f"model.truth_observers names {missing}, which data.observers does not list")
        true_pt, true_mass = predictions[keys[0]], predictions[keys[1]]
        figures = corrected_jets.jet_figures(predictions, JETS, true_pt, true_mass)
        score = ak.to_numpy(ak.flatten(predictions["element_score"]))
        label = ak.to_numpy(ak.flatten(predictions["element_label"])) > 0.5
        neutral = ak.to_numpy(ak.flatten(predictions["element_neutral"]))
        figures["element_auc"] = _auc(score, label)
        figures["neutral_auc"] = _auc(score[neutral], label[neutral])
        return figures, {}

    # ------------------------------------------------------------------------------------------------
    # what the task owns
    # ------------------------------------------------------------------------------------------------

    def prediction_columns(self, predictions: Mapping) -> dict:
        columns = corrected_jets.jet_columns(predictions, JETS)
        if self.write_elements:
            columns["element_pileup_score"] = ak.values_astype(predictions["element_score"], np.float32)
            columns["element_is_pileup"] = ak.values_astype(predictions["element_label"], np.float32)
        return {**columns, **provenance_columns(predictions)}

    def prediction_metadata(self) -> dict[str, str]:
        return {**super().prediction_metadata(), "truth_observers": json.dumps(self.truth_observers)}

    def summary_rows(self, summary: Mapping[str, object]) -> list[tuple[str, object]]:
        rows = [
            ("per-particle pile-up AUC (all / neutral)", _pair(summary, "element_auc", "neutral_auc")),
        ]
        rows += corrected_jets.jet_summary_rows(summary, JETS, "no-pile-up jet")
        return rows

    def export_outputs(self, outputs: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(outputs)

    def export_output_entry(self, spec) -> dict:
        return {
            "name": self.export_output_name,
            "shape": ["batch", f"{self.inputs[0]}_length"],
            "dtype": "float32",
            "note": "probability that the particle in each slot comes from pile-up (meaningless at "
            "padded slots); weight each particle's four-momentum by 1 - p for the corrected jet",
        }

    @classmethod
    def read_predictions(
        cls, arrays: Callable[[Iterable[str]], dict], metadata: Mapping[str, str], path
    ) -> dict:
        """``{"kind", "task", "truth_observers", "pt": {jet: array}, "mass": {jet: array}, "truth":
        {"pt", "mass"}}`` (GeV)."""
        if "truth_observers" not in metadata:
            raise ValueError(f"{path} has no 'truth_observers' string beside the predictions tree")
        truth_observers = json.loads(metadata["truth_observers"])
        jets = corrected_jets.read_jets(arrays, JETS, truth_observers)
        return {"kind": cls.kind, "task": cls, "truth_observers": truth_observers, **jets}

    @classmethod
    def plots(cls, predictions: Mapping, summary: Mapping, label: str) -> list[Plot]:
        return corrected_jets.residual_plots(predictions, JETS, predictions["truth"], label)


def _auc(score: np.ndarray, label: np.ndarray) -> float:
    if label.all() or not label.any():
        return float("nan")
    return float(roc_auc(score, label))


def _pair(summary: Mapping, first: str, second: str):
    a, b = summary.get(f"test/{first}"), summary.get(f"test/{second}")
    return None if a is None else (a, b)


def _merge_unsorted(task: TaskBase, rows: list[dict]) -> dict[str, np.ndarray]:
    """This epoch's rows of all ranks concatenated key by key (sorting is :meth:`predictions_of`'s,
    which keeps the per-particle columns with their jets)."""
    from hepnn.tasks.base import gather_rows

    rows = gather_rows(task.trainer, rows)
    return {k: np.concatenate([r[k] for r in rows]) for k in rows[0]}
