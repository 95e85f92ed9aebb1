"""Test-support callbacks, instantiated by Hydra inside ``python -m hepnn.train`` runs of the tests
(``+callbacks.record._target_=tests.support.RecordEntries``; the command runs with cwd = the repository)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import lightning as L


class RecordEntries(L.Callback):
    """Records, per rank, the ``(file_index, entry)`` of every training batch and the logged losses.

    Each rank writes ``rank<global rank>.json`` in ``out_dir`` at the end of every training epoch
    and of the test: ``{"rank": r, "world_size": n, "epochs": {"<epoch>": [[file_index, entry], ...]},
    "val_loss": {"<epoch>": loss}, "test_loss": loss}``, everything this process saw so far,
    rewritten atomically, so a run killed later still leaves the finished epochs (and a run stopped
    by an exception, e.g. pre-emption, its unfinished one). ``delay`` seconds
    of sleep after every training batch make epochs long enough to interrupt one mid-way.
    """

    def __init__(self, out_dir: str, delay: float = 0.0):
        self.out_dir = Path(out_dir)
        self.delay = delay
        self.record: dict = {"epochs": {}, "val_loss": {}, "test_loss": None}

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx: int) -> None:
        # at the start: a batch whose end hook stops the run (pre-emption) was trained all the same
        pairs = zip(batch["file_index"].tolist(), batch["entry"].tolist(), strict=True)
        self.record["epochs"].setdefault(str(trainer.current_epoch), []).extend([f, e] for f, e in pairs)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        if self.delay:
            time.sleep(self.delay)

    def on_exception(
        self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException
    ) -> None:
        self._write(trainer)  # the batches of an interrupted epoch

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # validation ran before this hook: the epoch's (synchronised) val/loss is known
        loss = trainer.callback_metrics.get("val/loss")
        if loss is not None:
            self.record["val_loss"][str(trainer.current_epoch)] = float(loss)
        self._write(trainer)

    def on_test_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        loss = trainer.callback_metrics.get("test/loss")
        self.record["test_loss"] = None if loss is None else float(loss)
        self._write(trainer)

    def _write(self, trainer: L.Trainer) -> None:
        self.out_dir.mkdir(parents=True, exist_ok=True)
        path = self.out_dir / f"rank{trainer.global_rank}.json"
        part = path.with_suffix(".part")
        record = {"rank": trainer.global_rank, "world_size": trainer.world_size, **self.record}
        part.write_text(json.dumps(record))
        part.replace(path)


class SaveWeightsPerRank(L.Callback):
    """Saves, per rank, the task's state dict at the end of the fit as ``rank<global rank>.pt`` in
    ``out_dir``: data-parallel ranks must end with the same weights."""

    def __init__(self, out_dir: str):
        self.out_dir = Path(out_dir)

    def on_fit_end(self, trainer, pl_module) -> None:
        import torch

        self.out_dir.mkdir(parents=True, exist_ok=True)
        state = {k: v.detach().cpu() for k, v in pl_module.state_dict().items()}
        torch.save(state, self.out_dir / f"rank{trainer.global_rank}.pt")
