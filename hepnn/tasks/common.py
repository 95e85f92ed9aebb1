"""Pieces shared by the tasks: the net's arguments from a batch, gathering per-entry rows over DDP
ranks, optimiser and scheduler set-up."""

from __future__ import annotations

from collections.abc import Callable, Iterable

import lightning as L
import torch


def net_arguments(batch: dict, inputs: list[str]) -> list[torch.Tensor]:
    """The batch entries named in ``model.inputs``, in order; a missing one is named beside the
    entries the batch has."""
    try:
        return [batch[key] for key in inputs]
    except KeyError as exc:
        raise KeyError(
            f"model.inputs names batch entry {exc.args[0]!r}, but the batch has {sorted(batch)}"
        ) from None


def gather_rows(trainer: L.Trainer, rows: list[dict]) -> list[dict]:
    """The rows of every rank, in rank order (all ranks receive all of them); ``rows`` without DDP."""
    if trainer.world_size == 1 or not torch.distributed.is_initialized():
        return rows
    gathered: list[list[dict] | None] = [None] * trainer.world_size
    torch.distributed.all_gather_object(gathered, rows)
    return [row for rank_rows in gathered for row in rank_rows]


def optimizers(
    parameters: Iterable[torch.nn.Parameter],
    optimizer_factory: Callable[..., torch.optim.Optimizer],
    scheduler_factory: Callable[..., torch.optim.lr_scheduler.LRScheduler] | None,
    interval: str,
):
    """What ``configure_optimizers`` returns: the optimiser, with its scheduler (stepped every
    ``interval``: epoch or step) when a scheduler factory is given."""
    optimizer = optimizer_factory(params=parameters)
    if scheduler_factory is None:
        return optimizer
    scheduler = scheduler_factory(optimizer=optimizer)
    return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": interval}}
