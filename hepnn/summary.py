"""The run summary shared by ``hepnn.train`` and ``hepnn.evaluate``: the figures of a finished test,
the table printed at the end of a run, and the filters that keep known noise out of the log.

The task of the run says which of its figures the table shows
(:meth:`hepnn.tasks.base.TaskBase.summary_rows`); the rows about the input, the training and the
outputs are the same for every task.
"""

from __future__ import annotations

import logging
import math
import warnings
from collections.abc import Mapping, Sequence

import lightning as L

from hepnn.runtime.throughput import TrainingThroughput

# Lightning's log lines and warnings that do not concern a hepnn user (see quiet_known_noise)
IGNORED_WARNINGS = (
    r".*`IterableDataset` has `__len__` defined.*",
    r".*isinstance\(treespec, LeafSpec\)` is deprecated.*",
    r".*resuming from a checkpoint that ended before the epoch ended.*",
    r".*The `srun` command is available on your system but is not used.*",
)
IGNORED_LOG_LINES = ("litlogger",)
RANK_ZERO_LOGGERS = ("lightning.pytorch.utilities.rank_zero", "lightning.fabric.utilities.rank_zero")


class _DropLines(logging.Filter):
    """Drops log records whose message contains one of ``fragments``."""

    def __init__(self, fragments: Sequence[str]):
        super().__init__()
        self.fragments = tuple(fragments)

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not any(fragment in message for fragment in self.fragments)


def quiet_known_noise() -> None:
    """Route Lightning's log lines through the root logger only; drop the messages not meant for users.

    The ``lightning`` package adds its own console handler and also propagates to the root
    logger, which Hydra has configured (console and the run's log file): every line would be
    printed twice; its ``pytorch`` and ``fabric`` packages, imported before Hydra configured
    logging, keep their lines to their own handlers, and would be missing from the run's log file.
    hepnn's datasets compute their length per rank and worker exactly, so Lightning's warning that
    an iterable dataset's ``__len__`` may be inaccurate does not apply; Lightning's own use of a
    deprecated torch pytree API is not the user's concern. Resuming from
    a mid-epoch checkpoint (pre-emption) is exact: the training dataset skips the batches already
    trained (:meth:`hepnn.data.RootDataModule.state_dict` records them), so Lightning's warning
    about loaders without ``state_dict`` does not apply. hepnn's Slurm jobs start their processes
    with ``srun`` themselves where they need it, and its logging is set by its configuration, so
    Lightning's hints to use ``srun`` and to install its cloud logger are dropped.
    """
    if logging.getLogger().hasHandlers():
        # lightning.pytorch and lightning.fabric stop propagating when imported before logging was
        # configured (Hydra configures it when the run starts)
        for name in ("lightning", "lightning.pytorch", "lightning.fabric"):
            logger = logging.getLogger(name)
            logger.handlers.clear()
            logger.propagate = True
    for pattern in IGNORED_WARNINGS:
        warnings.filterwarnings("ignore", message=pattern)
    for name in RANK_ZERO_LOGGERS:
        logger = logging.getLogger(name)
        if not any(isinstance(f, _DropLines) for f in logger.filters):
            logger.addFilter(_DropLines(IGNORED_LOG_LINES))


def figures_of_test(trainer: L.Trainer, model, datamodule) -> dict:
    """The figures of a finished ``trainer.test`` for the run summary: the ``test/`` metrics, NaN/inf
    replacement counts, the input counts, the task's non-scalar results and the throughputs."""
    throughput = next((c for c in trainer.callbacks if isinstance(c, TrainingThroughput)), None)
    return {
        **{k: _as_float(v) for k, v in sorted(trainer.callback_metrics.items()) if k.startswith("test/")},
        **{k: _as_float(v) for k, v in trainer.callback_metrics.items() if k.endswith("/nonfinite_replaced")},
        **(datamodule.summary() if hasattr(datamodule, "summary") else {}),
        **dict(getattr(model, "test_extras", None) or {}),
        **_throughput(throughput),
    }


def _throughput(callback: TrainingThroughput | None) -> dict:
    """Training entries per second (first epoch, reading ROOT, and last epoch) and test entries per second."""
    if callback is None or not (callback.rates or callback.test_rate):
        return {}
    figures = {}
    if callback.rates:
        figures["train/entries_per_second_first_epoch"] = round(callback.rates[0], 1)
        figures["train/entries_per_second"] = round(callback.rates[-1], 1)
    if callback.test_rate is not None:
        figures["test/entries_per_second"] = round(callback.test_rate, 1)
    return figures


def _as_float(value) -> float:
    return float(value.item() if hasattr(value, "item") else value)


CHECKPOINT_ROWS = (("best checkpoint", "best_checkpoint"), ("evaluated checkpoint", "checkpoint"))


def format_summary(
    summary: Mapping, task_rows: Sequence[tuple[str, object]] = (), title: str = "hepnn run summary"
) -> str:
    """The run's result as a small text table headed by ``title``.

    ``task_rows`` are the task's figures (:meth:`~hepnn.tasks.base.TaskBase.summary_rows`), shown
    first where they have a value; the checkpoint rows are shown for the keys the summary has:
    ``best_checkpoint`` (training), ``checkpoint`` (the checkpoint that was evaluated).
    """
    rows = [
        *[(name, value) for name, value in task_rows if value is not None],
        ("test entries/s (inference + loading)", summary.get("test/entries_per_second")),
        ("test loss", summary.get("test/loss")),
        ("input files", summary.get("data/files")),
        ("unreadable files skipped", summary.get("data/skipped_files")),
        ("NaN/inf values replaced (test)", summary.get("test/nonfinite_replaced")),
        *[("effective training entries per class", e) for e in [_effective_entries(summary)] if e],
        ("trainable parameters", summary.get("parameters")),
        ("training entries/s (last epoch)", summary.get("train/entries_per_second")),
        ("epochs trained", summary.get("epochs")),
        ("wall time [s]", f"{summary['wall_seconds']:.0f}"),
        ("output directory", summary.get("output_dir")),
        *[(name, summary[key]) for name, key in CHECKPOINT_ROWS if key in summary],
        ("predictions", summary.get("predictions")),
    ]
    width = max(len(name) for name, _ in rows)
    lines = ["", title, "=" * (width + 40)]
    for name, value in rows:
        lines.append(f"{name:<{width}}  {format_value(value)}")
    lines.append("=" * (width + 40))
    return "\n".join(lines)


def _effective_entries(summary: Mapping) -> str | None:
    """``<class> <entries>, ...`` of a reweighted run (``data/effective_entries_<class>``), else None."""
    prefix = "data/effective_entries_"
    entries = [f"{k.removeprefix(prefix)} {v:.0f}" for k, v in summary.items() if k.startswith(prefix)]
    return ", ".join(entries) or None


def format_value(value) -> str:
    """A summary value as text: 4 decimals below 10, 1 above; pairs joined by `` / ``; ``-`` for None."""
    if value is None:
        return "-"
    if isinstance(value, tuple):
        return " / ".join(format_value(v) for v in value)
    if isinstance(value, float):
        if math.isinf(value):
            return "inf (no background passes)"
        return f"{value:.4f}" if abs(value) < 10 else f"{value:.1f}"
    return str(value)
