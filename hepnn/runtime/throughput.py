"""Training and test throughput: entries per second of wall time, for the run summary."""

from __future__ import annotations

import time

import lightning as L


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
