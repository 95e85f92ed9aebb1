"""Classification as a LightningModule, independent of the network it trains.

The net is any ``nn.Module`` taking the batch entries named in ``inputs`` (e.g. ``particles``,
``mask``) and returning one logit per class. Loss: cross entropy. Metrics: accuracy and AUC
(torchmetrics, synchronised across ranks) during validation and test; at the end of the test
the predictions of all ranks are gathered and the background rejection at fixed signal
efficiency, the one-vs-rest AUC of every class (more than two classes) and the confusion
matrix are computed on the whole test set (:mod:`hepnn.metrics.classification`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import lightning as L
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torchmetrics import MetricCollection
from torchmetrics.classification import (
    BinaryAUROC,
    MulticlassAccuracy,
    MulticlassAUROC,
)

from hepnn.errors import ConfigError
from hepnn.metrics import classification as metrics
from hepnn.nets.blocks import count_parameters
from hepnn.tasks.batch_stats import log_replaced_values
from hepnn.tasks.common import gather_rows, net_arguments, optimizers


class SignalScoreAUROC(BinaryAUROC):
    """Signal-vs-rest AUC from ``(N, K)`` probabilities and class indices."""

    def __init__(self, signal_index: int, **kwargs):
        super().__init__(**kwargs)
        self.signal_index = signal_index

    def update(self, probabilities: torch.Tensor, labels: torch.Tensor) -> None:
        super().update(probabilities[:, self.signal_index], (labels == self.signal_index).long())


class ClassificationTask(L.LightningModule):
    """Trains ``net`` to classify entries into ``classes``.

    ``optimizer`` and ``scheduler`` are partially applied constructors (Hydra ``_partial_``);
    ``signal_class`` (default: the last class) defines the signal-vs-rest figures of merit.
    """

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
        super().__init__()
        self.save_hyperparameters(ignore=["net", "optimizer", "scheduler"])
        self.net = net
        self.classes = list(classes)
        self.inputs = list(inputs)
        if len(self.classes) < 2:
            raise ValueError(f"classification needs at least two classes, got {self.classes}")
        self.signal_class = signal_class or self.classes[-1]
        if self.signal_class not in self.classes:
            raise ConfigError(f"model.signal_class {self.signal_class!r} is not one of {self.classes}")
        self.signal_index = self.classes.index(self.signal_class)
        self.signal_efficiencies = tuple(signal_efficiencies)
        self.optimizer_factory = optimizer
        self.scheduler_factory = scheduler
        self.scheduler_interval = scheduler_interval
        k = len(self.classes)
        auroc = (
            SignalScoreAUROC(self.signal_index) if k == 2 else MulticlassAUROC(num_classes=k, average="macro")
        )
        base = MetricCollection({"acc": MulticlassAccuracy(num_classes=k, average="micro"), "auc": auroc})
        self.val_metrics = base.clone(prefix="val/")
        self.test_metrics = base.clone(prefix="test/")
        self._test_rows: list[dict[str, np.ndarray]] = []
        self.test_predictions: dict[str, np.ndarray] | None = None
        self.test_extras: dict = {}  # non-scalar test results for the run summary

    @property
    def n_parameters(self) -> int:
        return count_parameters(self.net)

    def forward(self, batch: dict) -> torch.Tensor:
        """Logits ``(B, n_classes)`` for a batch dict."""
        args = net_arguments(batch, self.inputs)
        return self.net(*args)

    def _step(self, batch: dict, stage: str):
        logits = self(batch)
        losses = F.cross_entropy(logits, batch["label"], reduction="none")
        weight = batch.get("weight")
        # per-entry weights (data.weights): a weighted mean over the batch
        loss = losses.mean() if weight is None else (weight * losses).sum() / weight.sum()
        log_replaced_values(self, batch, stage)
        self.log(
            f"{stage}/loss",
            loss,
            on_step=stage == "train",
            on_epoch=True,
            prog_bar=True,
            batch_size=len(batch["label"]),
            sync_dist=True,
        )
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

    def on_test_epoch_start(self) -> None:
        self._test_rows = []
        self.test_predictions = None
        self.test_extras = {}

    def test_step(self, batch: dict, batch_idx: int) -> None:
        _, probabilities = self._step(batch, "test")
        self.test_metrics.update(probabilities, batch["label"])
        self.log_dict(self.test_metrics, on_step=False, on_epoch=True)
        row = {
            "probabilities": probabilities.detach().float().cpu().numpy(),
            "label": batch["label"].cpu().numpy(),
            "file_index": batch["file_index"].cpu().numpy(),
            "entry": batch["entry"].cpu().numpy(),
        }
        row.update({f"observer:{k}": v.cpu().numpy() for k, v in batch.get("observers", {}).items()})
        self._test_rows.append(row)

    def on_test_epoch_end(self) -> None:
        rows = self._gather(self._test_rows)
        self._test_rows = []
        if not rows:
            return
        merged = {k: np.concatenate([r[k] for r in rows]) for k in rows[0]}
        order = np.lexsort((merged["entry"], merged["file_index"]))
        self.test_predictions = {k: v[order] for k, v in merged.items()}
        labels = self.test_predictions["label"]
        if len(np.unique(labels)) < 2:
            return
        summary = metrics.classification_summary(
            self.test_predictions["probabilities"],
            labels,
            self.classes,
            self.signal_class,
            self.signal_efficiencies,
        )
        # identical on every rank (computed from the gathered predictions): averaging changes nothing
        figures = {f"test/{k}": float(v) for k, v in summary.items() if k.startswith(("rej", "auc_"))}
        self.log_dict(figures, sync_dist=True)
        confusion = metrics.confusion_matrix(
            self.test_predictions["probabilities"], labels, len(self.classes)
        )
        self.test_extras = {
            "test/confusion_matrix": {
                "classes": self.classes,
                "rows_true_columns_predicted": confusion.tolist(),
            }
        }

    def _gather(self, rows: list[dict]) -> list[dict]:
        """The test rows of every rank (all ranks receive all of them)."""
        return gather_rows(self.trainer, rows)

    def configure_optimizers(self):
        return optimizers(
            self.parameters(), self.optimizer_factory, self.scheduler_factory, self.scheduler_interval
        )
