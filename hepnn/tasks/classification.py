"""Classification as a task, independent of the network it trains.

The net is any ``nn.Module`` taking the batch entries named in ``inputs`` (e.g. ``particles``,
``mask``) and returning one logit per class. Loss: cross entropy. Metrics: accuracy and AUC
(torchmetrics, synchronised across ranks) during validation and test; at the end of the test
the predictions of all ranks are gathered and the background rejection at fixed signal
efficiency, the one-vs-rest AUC of every class (more than two classes) and the confusion
matrix are computed on the whole test set (:mod:`hepnn.metrics.classification`).

Predictions file: ``score_<class>`` (softmax probabilities), ``label`` (true class index), then
``file_index``, ``entry`` and the observers; ``classes`` and ``signal_class`` are stored beside
the tree. Export head: softmax probabilities, output ``probabilities``. Plots: ROC (signal vs
rest), score distributions of every class, confusion matrix.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torchmetrics import MetricCollection
from torchmetrics.classification import BinaryAUROC, MulticlassAccuracy, MulticlassAUROC

from hepnn.errors import ConfigError
from hepnn.metrics import classification as metrics
from hepnn.tasks.base import Plot, TaskBase, provenance_and_observers, provenance_columns

BATCH_AXIS = "batch"


class SignalScoreAUROC(BinaryAUROC):
    """Signal-vs-rest AUC from ``(N, K)`` probabilities and class indices."""

    def __init__(self, signal_index: int, **kwargs):
        super().__init__(**kwargs)
        self.signal_index = signal_index

    def update(self, probabilities: torch.Tensor, labels: torch.Tensor) -> None:
        super().update(probabilities[:, self.signal_index], (labels == self.signal_index).long())


def rejection_key(signal_efficiency: float) -> str:
    """The summary key of 1/eps_B at a signal efficiency: ``test/rej30`` for eps_S = 0.3."""
    return f"test/rej{round(100 * signal_efficiency)}"


class ClassificationTask(TaskBase):
    """Trains ``net`` to classify entries into ``classes``.

    ``signal_class`` (default: the last class) defines the signal-vs-rest figures of merit, at the
    signal efficiencies ``signal_efficiencies``. The other arguments are those of
    :class:`~hepnn.tasks.base.TaskBase`.
    """

    kind = "classification"
    export_output_name = "probabilities"

    def __init__(
        self,
        net: nn.Module,
        classes: Sequence[str],
        inputs: Sequence[str],
        optimizer: Callable[..., torch.optim.Optimizer],
        scheduler: Callable[..., torch.optim.lr_scheduler.LRScheduler] | None = None,
        scheduler_interval: str = "epoch",
        signal_class: str | None = None,
        signal_efficiencies: Sequence[float] = (0.3, 0.5),
    ):
        super().__init__(net, inputs, optimizer, scheduler, scheduler_interval)
        self.classes = list(classes)
        if len(self.classes) < 2:
            raise ValueError(f"classification needs at least two classes, got {self.classes}")
        self.signal_class = signal_class or self.classes[-1]
        if self.signal_class not in self.classes:
            raise ConfigError(f"model.signal_class {self.signal_class!r} is not one of {self.classes}")
        self.signal_index = self.classes.index(self.signal_class)
        self.signal_efficiencies = tuple(signal_efficiencies)
        k = len(self.classes)
        auroc = (
            SignalScoreAUROC(self.signal_index) if k == 2 else MulticlassAUROC(num_classes=k, average="macro")
        )
        base = MetricCollection({"acc": MulticlassAccuracy(num_classes=k, average="micro"), "auc": auroc})
        self.val_metrics = base.clone(prefix="val/")
        self.test_metrics = base.clone(prefix="test/")

    def forward(self, batch: dict) -> torch.Tensor:
        """Logits ``(B, n_classes)`` for a batch dict."""
        return self.net_outputs(batch)

    def _step(self, batch: dict, stage: str):
        logits = self(batch)
        loss = self.weighted_mean(F.cross_entropy(logits, batch["label"], reduction="none"), batch)
        self.log_loss(stage, loss, batch, len(batch["label"]))
        return loss, logits.softmax(dim=-1)

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        loss, _ = self._step(batch, "train")
        return loss

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        _, probabilities = self._step(batch, "val")
        self.val_metrics.update(probabilities, batch["label"])
        # logging the metric objects lets Lightning compute, synchronise and reset them per epoch
        self.log_dict(self.val_metrics, on_step=False, on_epoch=True, prog_bar=True)

    def predict_step(self, batch: dict, batch_idx: int) -> dict[str, torch.Tensor]:
        """Class probabilities with the provenance (``file_index``, ``entry``) of every entry."""
        return {
            "probabilities": self(batch).softmax(dim=-1),
            "file_index": batch["file_index"],
            "entry": batch["entry"],
        }

    def test_step(self, batch: dict, batch_idx: int) -> None:
        _, probabilities = self._step(batch, "test")
        self.test_metrics.update(probabilities, batch["label"])
        self.log_dict(self.test_metrics, on_step=False, on_epoch=True)
        self._rows.append(
            {
                "probabilities": probabilities.detach().float().cpu().numpy(),
                "label": batch["label"].cpu().numpy(),
                **provenance_and_observers(batch),
            }
        )

    # ------------------------------------------------------------------------------------------------
    # what the task owns
    # ------------------------------------------------------------------------------------------------

    def test_figures(self, predictions: Mapping[str, np.ndarray]) -> tuple[dict[str, float], dict]:
        """1/eps_B at the signal efficiencies (``rej30``, ...), one-vs-rest AUCs (``auc_<class>``) and
        the confusion matrix; accuracy and AUC come from the synchronised torchmetrics."""
        labels = predictions["label"]
        if len(np.unique(labels)) < 2:
            return {}, {}
        summary = metrics.classification_summary(
            predictions["probabilities"], labels, self.classes, self.signal_class, self.signal_efficiencies
        )
        figures = {k: v for k, v in summary.items() if k.startswith(("rej", "auc_"))}
        confusion = metrics.confusion_matrix(predictions["probabilities"], labels, len(self.classes))
        extras = {
            "test/confusion_matrix": {
                "classes": self.classes,
                "rows_true_columns_predicted": confusion.tolist(),
            }
        }
        return figures, extras

    def prediction_columns(self, predictions: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        columns = {
            f"score_{name}": predictions["probabilities"][:, k].astype(np.float32)
            for k, name in enumerate(self.classes)
        }
        columns["label"] = predictions["label"].astype(np.int32)
        return {**columns, **provenance_columns(predictions)}

    def prediction_metadata(self) -> dict[str, str]:
        return {
            **super().prediction_metadata(),
            "classes": json.dumps(self.classes),
            "signal_class": self.signal_class,
        }

    def summary_rows(self, summary: Mapping[str, object]) -> list[tuple[str, object]]:
        rows = [("test AUC", summary.get("test/auc")), ("test accuracy", summary.get("test/acc"))]
        rows += [
            (f"1/eps_B at eps_S = {e:g}", summary.get(rejection_key(e))) for e in self.signal_efficiencies
        ]
        rows += [
            (f"test AUC {k.removeprefix('test/auc_')} vs rest", v)
            for k, v in summary.items()
            if k.startswith("test/auc_")
        ]
        return rows

    def export_outputs(self, outputs: torch.Tensor) -> torch.Tensor:
        return outputs.softmax(dim=-1)

    def export_output_entry(self, spec) -> dict:
        return {
            "name": self.export_output_name,
            "shape": [BATCH_AXIS, len(self.classes)],
            "dtype": "float32",
            "classes": list(self.classes),
            "signal_class": self.signal_class,
            "note": "softmax probabilities, one column per class",
        }

    # ------------------------------------------------------------------------------------------------
    # reading a predictions file back, and its plots
    # ------------------------------------------------------------------------------------------------

    @classmethod
    def read_predictions(
        cls, arrays: Callable[[Iterable[str]], dict], metadata: Mapping[str, str], path
    ) -> dict:
        """A predictions file as ``{kind, task, classes, signal_class, scores (N, K), labels}``."""
        if "classes" not in metadata:
            raise ValueError(f"{path} has no 'classes' string beside the predictions tree")
        classes = json.loads(metadata["classes"])
        values = arrays([*(f"score_{c}" for c in classes), "label"])
        signal = metadata.get("signal_class") or classes[-1]
        return {
            "kind": cls.kind,
            "task": cls,
            "classes": classes,
            "signal_class": signal if signal in classes else classes[-1],
            "scores": np.stack([values[f"score_{c}"] for c in classes], axis=1),
            "labels": values["label"],
        }

    @classmethod
    def plots(cls, predictions: Mapping, summary: Mapping, label: str) -> list[Plot]:
        from hepnn.analysis import plotting

        classes, scores, labels = predictions["classes"], predictions["scores"], predictions["labels"]
        signal = predictions["signal_class"]
        k = classes.index(signal)
        plots: list[Plot] = [
            ("roc", lambda: plotting.roc_curves({f"{label}: {signal} vs rest": (scores[:, k], labels == k)})),
            ("score_distributions", lambda: plotting.score_distributions(scores, labels, classes, "all")),
        ]
        entry = summary.get("test/confusion_matrix")
        if isinstance(entry, Mapping) and {"classes", "rows_true_columns_predicted"} <= set(entry):
            matrix, names = entry["rows_true_columns_predicted"], entry["classes"]
        elif len(scores):
            matrix, names = metrics.confusion_matrix(scores, labels.astype(np.int64), len(classes)), classes
        else:
            return plots
        plots.append(("confusion_matrix", lambda: plotting.confusion_matrix_plot(matrix, names)))
        return plots
