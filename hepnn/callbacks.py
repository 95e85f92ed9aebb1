"""Lightning callbacks of hepnn: writing test predictions back to ROOT, measuring training throughput."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import lightning as L
import numpy as np

from hepnn.rootio import write_tree

log = logging.getLogger(__name__)


def prediction_columns(predictions: dict[str, np.ndarray], classes: list[str]) -> dict[str, np.ndarray]:
    """Branches of a classifier's predictions tree: ``score_<class>``, ``label``, provenance, observers."""
    columns = {
        f"score_{name}": predictions["probabilities"][:, k].astype(np.float32)
        for k, name in enumerate(classes)
    }
    columns["label"] = predictions["label"].astype(np.int32)
    return _provenance_and_observers(columns, predictions)


def regression_prediction_columns(
    predictions: dict[str, np.ndarray], targets: list[str]
) -> dict[str, np.ndarray]:
    """Branches of a regression's predictions tree: ``pred_<target>``, ``true_<target>`` (physical
    units), provenance, observers."""
    columns = {}
    for name in targets:
        columns[f"pred_{name}"] = predictions[f"prediction:{name}"].astype(np.float32)
        columns[f"true_{name}"] = predictions[f"truth:{name}"].astype(np.float32)
    return _provenance_and_observers(columns, predictions)


def _provenance_and_observers(columns: dict, predictions: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    columns["file_index"] = predictions["file_index"].astype(np.int32)
    columns["entry"] = predictions["entry"].astype(np.int64)
    for key, values in predictions.items():
        if key.startswith("observer:"):
            columns[key.split(":", 1)[1]] = values
    return columns


class RootPredictionWriter(L.Callback):
    """After testing, writes one entry per tested entry to ``path`` (tree ``tree``), on rank zero.

    Branches: for a classifier ``score_<class>`` (softmax probabilities) and ``label`` (true
    class index); for a regression ``pred_<target>`` and ``true_<target>`` (physical units);
    then ``file_index`` and ``entry`` (the input file, listed in the ``source_files`` string
    stored beside the tree, and the entry number in it), and the configured observers. The file
    is written atomically.
    """

    def __init__(self, path: str, tree: str = "predictions"):
        self.path = Path(path)
        self.tree = tree
        self.written: Path | None = None

    def on_test_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        predictions = getattr(pl_module, "test_predictions", None)
        if not trainer.is_global_zero or not predictions:
            return
        datamodule = trainer.datamodule
        sources = datamodule.source_files() if hasattr(datamodule, "source_files") else []
        metadata = {"source_files": json.dumps(sources)}
        if hasattr(pl_module, "classes"):
            columns = prediction_columns(predictions, list(pl_module.classes))
            metadata["classes"] = json.dumps(list(pl_module.classes))
        else:
            columns = regression_prediction_columns(predictions, list(pl_module.targets))
            metadata["targets"] = json.dumps(list(pl_module.targets))
        self.written = write_tree(
            self.path, self.tree, columns, title="hepnn test predictions", metadata=metadata
        )
        log.info("wrote %d predictions to %s", len(columns["entry"]), self.path)


class TrainingThroughput(L.Callback):
    """Logs ``train/entries_per_second``: training entries (jets, events) per second of wall time.

    Also measures ``test_rate``: test entries per second (inference, metrics and loading, from
    the first test batch to the last; the first batch's loading is not counted).

    Counted over the training batches of each epoch on this rank, times the world size (every
    rank runs the same number of batches); the clock runs from the epoch's first training batch
    to its last, so start-up, validation and checkpointing are not counted. The first epoch
    includes reading ROOT; later ones may come from the chunk cache.
    """

    def __init__(self):
        self._start: float | None = None
        self._last = 0.0
        self._entries = 0
        self.rates: list[float] = []
        self.test_rate: float | None = None

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._start = None
        self._entries = 0

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx: int) -> None:
        if self._start is None:
            self._start = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        self._entries += len(batch["entry"])
        self._last = time.perf_counter()

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._start is None or self._last <= self._start:
            return
        rate = self._entries * trainer.world_size / (self._last - self._start)
        self.rates.append(rate)
        pl_module.log("train/entries_per_second", rate, rank_zero_only=True)

    def on_test_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._start = None
        self._entries = 0

    def on_test_batch_start(self, trainer, pl_module, batch, batch_idx: int, dataloader_idx: int = 0) -> None:
        if self._start is None:
            self._start = time.perf_counter()

    def on_test_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int, dataloader_idx: int = 0):
        self._entries += len(batch["entry"])
        self._last = time.perf_counter()

    def on_test_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._start is not None and self._last > self._start:
            self.test_rate = self._entries * trainer.world_size / (self._last - self._start)
