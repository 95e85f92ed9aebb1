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
    """Branches of the predictions tree: ``score_<class>``, ``label``, provenance, observers."""
    columns = {
        f"score_{name}": predictions["probabilities"][:, k].astype(np.float32)
        for k, name in enumerate(classes)
    }
    columns["label"] = predictions["label"].astype(np.int32)
    columns["file_index"] = predictions["file_index"].astype(np.int32)
    columns["entry"] = predictions["entry"].astype(np.int64)
    for key, values in predictions.items():
        if key.startswith("observer:"):
            columns[key.split(":", 1)[1]] = values
    return columns


class RootPredictionWriter(L.Callback):
    """After testing, writes one entry per tested entry to ``path`` (tree ``tree``), on rank zero.

    Branches: ``score_<class>`` (softmax probabilities), ``label`` (true class index),
    ``file_index`` and ``entry`` (the input file, listed in the ``source_files`` string stored
    beside the tree, and the entry number in it), and the configured observers. The file is
    written atomically.
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
        columns = prediction_columns(predictions, list(pl_module.classes))
        self.written = write_tree(
            self.path,
            self.tree,
            columns,
            title="hepnn test predictions",
            metadata={"source_files": json.dumps(sources), "classes": json.dumps(list(pl_module.classes))},
        )
        log.info("wrote %d predictions to %s", len(columns["label"]), self.path)


class TrainingThroughput(L.Callback):
    """Logs ``train/entries_per_second``: training entries (jets, events) per second of wall time.

    Counted over the training batches of each epoch on this rank, times the world size (every
    rank runs the same number of batches); the clock runs from the epoch's first training batch
    to its last, so start-up, validation and checkpointing are not counted. The first epoch
    includes reading ROOT; later ones may come from the chunk cache.
    """

    def __init__(self):
        self._start: float | None = None
        self._entries = 0
        self.rates: list[float] = []

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
