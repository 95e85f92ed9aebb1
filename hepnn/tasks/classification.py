"""Classification as a task, independent of the network it trains.

The net is any ``nn.Module`` taking the batch entries named in ``inputs`` (e.g. ``particles``,
``mask``) and returning one logit per class. Loss: cross entropy. Metrics: accuracy and AUC
(torchmetrics, synchronised across ranks) during validation and test; at the end of the test
the predictions of all ranks are gathered and the background rejection at fixed signal
efficiency, the one-vs-rest AUC of every class (more than two classes) and the confusion
matrix are computed on the whole test set (:mod:`hepnn.metrics.classification`).

The signal-vs-rest AUC and background rejections come with bootstrap uncertainties
(:mod:`hepnn.metrics.bootstrap`). With ``baseline`` (one or two observers, ``data.baseline``),
the physicist's cut-based baseline is computed beside them on the same test entries: the
histogram likelihood ratio of those observables (:mod:`hepnn.metrics.baseline`), filled on the
training split when the fit starts and stored in every checkpoint.

Predictions file: ``score_<class>`` (softmax probabilities), ``label`` (true class index),
``baseline_score`` (with a baseline), then ``file_index``, ``entry`` and the observers;
``classes``, ``signal_class`` and ``baseline`` are stored beside the tree. Export head: softmax
probabilities, output ``probabilities``. Plots: ROC (signal vs rest, with the baseline), score
distributions of every class, confusion matrix.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Callable, Iterable, Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torchmetrics import MetricCollection
from torchmetrics.classification import BinaryAUROC, MulticlassAccuracy, MulticlassAUROC

from hepnn.errors import ConfigError
from hepnn.metrics import classification as metrics
from hepnn.metrics.baseline import HistogramLikelihoodRatio
from hepnn.metrics.bootstrap import Estimate, auc_difference, classifier_figures
from hepnn.tasks.base import OBSERVER_PREFIX, Plot, TaskBase, provenance_and_observers, provenance_columns

log = logging.getLogger(__name__)

BATCH_AXIS = "batch"
BASELINE_KEY = "hepnn_baseline"  # where checkpoints store the fitted baseline (plain data)
BOOTSTRAP_RESAMPLES = 100


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
    signal efficiencies ``signal_efficiencies``. ``baseline`` names one or two observers of the
    data config whose likelihood ratio is the cut-based baseline (none: no baseline). The other
    arguments are those of :class:`~hepnn.tasks.base.TaskBase`.
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
        baseline: Sequence[str] | None = None,
        pretrained: Mapping | None = None,
    ):
        super().__init__(net, inputs, optimizer, scheduler, scheduler_interval, pretrained)
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
        names = [baseline] if isinstance(baseline, str) else list(baseline or ())
        if len(names) > 2:
            raise ConfigError(f"model.baseline must name one or two observers (data.baseline), got {names}")
        self.baseline_observers = tuple(str(n) for n in names)
        self.baseline: HistogramLikelihoodRatio | None = None

    # ------------------------------------------------------------------------------------------------
    # the cut-based baseline
    # ------------------------------------------------------------------------------------------------

    def on_fit_start(self) -> None:
        super().on_fit_start()
        self.fit_baseline()

    def on_test_start(self) -> None:
        if self.baseline is None:
            self.fit_baseline()

    def fit_baseline(self) -> None:
        """Fill the baseline's histograms on the training split of the trainer's data module."""
        if not self.baseline_observers or self.baseline is not None:
            return
        datamodule = getattr(self.trainer, "datamodule", None)
        if not callable(getattr(datamodule, "training_columns", None)):
            raise ConfigError(
                "model.baseline needs a data module that reads its training split (hepnn.data.RootDataModule)"
            )
        columns = datamodule.training_columns(self.baseline_observers)
        labels = columns["label"]
        is_signal = labels == self.signal_index
        if not is_signal.any() or is_signal.all():
            log.warning("no baseline: the training split lacks signal or background entries")
            return
        values = np.stack([columns[n] for n in self.baseline_observers], axis=1)
        self.baseline = HistogramLikelihoodRatio(self.baseline_observers).fit(
            values, labels, self.signal_index
        )
        log.info(
            "cut-based baseline (%s): likelihood ratio filled on %d training entries",
            " x ".join(self.baseline_observers),
            len(labels),
        )

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        super().on_save_checkpoint(checkpoint)
        if self.baseline is not None:
            checkpoint[BASELINE_KEY] = self.baseline.to_dict()

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        super().on_load_checkpoint(checkpoint)
        entry = checkpoint.get(BASELINE_KEY)
        if entry is not None:
            self.baseline = HistogramLikelihoodRatio.from_dict(entry)

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

    def predictions_of(self, merged: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """The merged test rows, with the baseline's score of every entry when there is a baseline."""
        if self.baseline is not None:
            missing = [n for n in self.baseline_observers if OBSERVER_PREFIX + n not in merged]
            if missing:
                raise ConfigError(
                    f"model.baseline names {missing}, which the test batches do not carry: "
                    "the baseline's observers must be data.observers (data.baseline adds them)"
                )
            values = np.stack([merged[OBSERVER_PREFIX + n] for n in self.baseline_observers], axis=1)
            merged["baseline_score"] = self.baseline.score(values)
        return merged

    def test_figures(self, predictions: Mapping[str, np.ndarray]) -> tuple[dict[str, float], dict]:
        """1/eps_B at the signal efficiencies (``rej30``, ...), one-vs-rest AUCs (``auc_<class>``), the
        bootstrap errors of the signal-vs-rest figures (``auc_error``, ``rej30_error``, ...), the
        baseline's figures (``baseline_auc``, ``baseline_rej30``, ... and their errors) and the
        confusion matrix; accuracy and AUC come from the synchronised torchmetrics."""
        labels = predictions["label"]
        if len(np.unique(labels)) < 2:
            return {}, {}
        summary = metrics.classification_summary(
            predictions["probabilities"], labels, self.classes, self.signal_class, self.signal_efficiencies
        )
        figures = {k: v for k, v in summary.items() if k.startswith(("rej", "auc_"))}
        is_signal = labels == self.signal_index
        if is_signal.any() and not is_signal.all():
            scores = {"": predictions["probabilities"][:, self.signal_index]}
            if "baseline_score" in predictions:
                scores["baseline_"] = predictions["baseline_score"]
            for prefix, score in scores.items():
                estimates = classifier_figures(
                    score,
                    is_signal,
                    signal_efficiencies=self.signal_efficiencies,
                    n_resamples=BOOTSTRAP_RESAMPLES,
                )
                for name, estimate in estimates.items():
                    if prefix:
                        figures[f"{prefix}{name}"] = estimate.value
                    figures[f"{prefix}{name}_error"] = estimate.error
            if "baseline_score" in predictions:
                difference = auc_difference(
                    scores[""], scores["baseline_"], is_signal, n_resamples=BOOTSTRAP_RESAMPLES
                )
                figures["auc_minus_baseline"] = difference.value
                figures["auc_minus_baseline_error"] = difference.error
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
        if "baseline_score" in predictions:
            columns["baseline_score"] = predictions["baseline_score"].astype(np.float32)
        return {**columns, **provenance_columns(predictions)}

    def prediction_metadata(self) -> dict[str, str]:
        return {
            **super().prediction_metadata(),
            "classes": json.dumps(self.classes),
            "signal_class": self.signal_class,
            "baseline": json.dumps(list(self.baseline_observers) if self.baseline is not None else []),
        }

    def summary_rows(self, summary: Mapping[str, object]) -> list[tuple[str, object]]:
        def with_error(key: str):
            """``value ± error`` where the summary has the figure's bootstrap error."""
            value, error = summary.get(key), summary.get(f"{key}_error")
            if value is None or error is None or not math.isfinite(value) or not math.isfinite(error):
                return value
            return Estimate(float(value), float(error)).format()

        binary = len(self.classes) == 2  # the AUC's error is the signal-vs-rest one
        rows = [
            ("test AUC", with_error("test/auc") if binary else summary.get("test/auc")),
            ("test accuracy", summary.get("test/acc")),
        ]
        rows += [
            (f"1/eps_B at eps_S = {e:g}", with_error(rejection_key(e))) for e in self.signal_efficiencies
        ]
        rows += [(f"test AUC {c} vs rest", summary.get(f"test/auc_{c}")) for c in self.classes]
        if summary.get("test/baseline_auc") is not None:
            efficiency = self.signal_efficiencies[0]
            auc = with_error("test/baseline_auc")
            rejection = with_error(rejection_key(efficiency).replace("test/", "test/baseline_"))
            rows.append(
                (
                    f"cut-based baseline ({' x '.join(self.baseline_observers)}) on these test jets",
                    f"AUC {auc}, 1/eps_B {rejection} at eps_S = {efficiency:g}",
                )
            )
            difference, error = (
                summary.get("test/auc_minus_baseline"),
                summary.get("test/auc_minus_baseline_error"),
            )
            if difference is not None and error is not None and math.isfinite(error) and error > 0:
                estimate = Estimate(float(difference), float(error)).format()
                text = f"{'+' if difference > 0 else ''}{estimate} ({difference / error:+.1f} sigma)"
                rows.append(("AUC minus the baseline's (paired bootstrap)", text))
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
        """A predictions file as ``{kind, task, classes, signal_class, scores (N, K), labels, baseline,
        baseline_score}`` (the baseline's observers and scores; empty and None without one)."""
        if "classes" not in metadata:
            raise ValueError(f"{path} has no 'classes' string beside the predictions tree")
        classes = json.loads(metadata["classes"])
        baseline = json.loads(metadata.get("baseline") or "[]")
        values = arrays(
            [*(f"score_{c}" for c in classes), "label", *(["baseline_score"] if baseline else [])]
        )
        signal = metadata.get("signal_class") or classes[-1]
        return {
            "baseline": baseline,
            "baseline_score": values.get("baseline_score"),
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
        curves = {f"{label}: {signal} vs rest": (scores[:, k], labels == k)}
        if predictions.get("baseline_score") is not None:
            name = " x ".join(predictions["baseline"])
            curves[f"cut-based baseline ({name})"] = (predictions["baseline_score"], labels == k)
        plots: list[Plot] = [
            ("roc", lambda: plotting.roc_curves(curves)),
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
