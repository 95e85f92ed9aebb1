"""Data-quality figures carried by batches, logged the same way by every task."""

from __future__ import annotations

import lightning as L

from hepnn.data import NONFINITE_COUNT


def log_replaced_values(module: L.LightningModule, batch: dict, stage: str) -> None:
    """Log ``<stage>/nonfinite_replaced``: NaN/inf input values replaced in this epoch (all ranks).

    Batches carry the per-entry count only with ``data.nonfinite=replace``.
    """
    counts = batch.get(NONFINITE_COUNT)
    if counts is None:
        return
    module.log(
        f"{stage}/nonfinite_replaced",
        counts.sum().float(),
        on_step=False,
        on_epoch=True,
        reduce_fx="sum",
        sync_dist=True,
        batch_size=len(counts),
    )
