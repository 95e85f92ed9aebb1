"""What every hepnn task is: a LightningModule that trains a net and owns what it writes and reports.

A task wraps a plain ``nn.Module`` (the net), the batch entries it reads (``inputs``), the
optimiser and the scheduler, and answers for its kind of output everything the rest of hepnn
asks, in the pattern of ATLAS salt's ``TaskBase`` (``output_names``, ``get_h5``, ``get_onnx``):

- :meth:`TaskBase.prediction_columns` and :meth:`TaskBase.prediction_metadata`: the branches and
  the metadata strings of a predictions file (the prediction writer only loops over them);
- :meth:`TaskBase.summary_rows`: the rows the run summary shows for the task's test figures;
- :meth:`TaskBase.export_outputs`, :attr:`TaskBase.export_output_name` and
  :meth:`TaskBase.export_output_entry`: the head of an ONNX export and what its sidecar says;
- :meth:`TaskBase.test_figures`: the figures computed on the gathered test predictions, which
  ``hepnn.evaluate`` recomputes on new files;
- :meth:`TaskBase.read_predictions` and :meth:`TaskBase.plots` (class methods, no model needed):
  how a predictions file is read back and which plots ``hepnn.plot`` and the notebooks draw.

The test predictions of all ranks are gathered at the end of the test epoch and kept, sorted by
input file and entry, in :attr:`TaskBase.test_predictions` (``prediction:``/``truth:`` keys of
the task, ``file_index``, ``entry`` and ``observer:<name>``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, ClassVar

import lightning as L
import numpy as np
import torch
from torch import nn

from hepnn.nets.blocks import count_parameters
from hepnn.tasks import finetuning
from hepnn.tasks.batch_stats import log_replaced_values

OBSERVER_PREFIX = "observer:"
PROVENANCE = ("file_index", "entry")
if TYPE_CHECKING:
    from matplotlib.figure import Figure

# a plot of a run: the file stem it is saved under, and the function that draws it
Plot = tuple[str, Callable[[], "Figure"]]


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


def merge_rows(rows: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray] | None:
    """Per-batch rows concatenated key by key, sorted by input file and entry when they carry them."""
    if not rows:
        return None
    merged = {k: np.concatenate([r[k] for r in rows]) for k in rows[0]}
    if all(key in merged for key in PROVENANCE):
        order = np.lexsort((merged["entry"], merged["file_index"]))
        merged = {k: v[order] for k, v in merged.items()}
    return merged


def provenance_and_observers(batch: dict) -> dict[str, np.ndarray]:
    """The ``file_index`` and ``entry`` of a batch's entries and its observers, as numpy rows."""
    row = {key: batch[key].cpu().numpy() for key in PROVENANCE if key in batch}
    row.update({f"{OBSERVER_PREFIX}{k}": v.cpu().numpy() for k, v in batch.get("observers", {}).items()})
    return row


def provenance_columns(predictions: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The predictions-file branches every task writes after its own: ``file_index``, ``entry``
    and the observers under their own names."""
    columns = {
        "file_index": predictions["file_index"].astype(np.int32),
        "entry": predictions["entry"].astype(np.int64),
    }
    for key, values in predictions.items():
        if key.startswith(OBSERVER_PREFIX):
            columns[key.removeprefix(OBSERVER_PREFIX)] = values
    return columns


def finite_figures(stage: str, figures: Mapping[str, float]) -> dict[str, float]:
    """``{<stage>/<figure>: value}`` of the finite figures (what Lightning can log)."""
    return {f"{stage}/{k}": float(v) for k, v in figures.items() if math.isfinite(float(v))}


class TaskBase(L.LightningModule):
    """A net trained on batch dicts, with the outputs it owns (see the module docstring).

    ``inputs`` names the batch entries passed to ``net.forward`` in order; ``optimizer`` and
    ``scheduler`` are partially applied constructors (Hydra ``_partial_``), the scheduler stepped
    every ``scheduler_interval`` (``epoch`` or ``step``). ``pretrained`` starts a fit from another
    checkpoint's weights, with frozen modules and per-module learning rates
    (:mod:`hepnn.tasks.finetuning`). Subclasses set :attr:`kind` and implement the methods that
    raise ``NotImplementedError`` here.
    """

    kind: ClassVar[str] = "task"
    export_output_name: ClassVar[str] = "outputs"

    def __init__(
        self,
        net: nn.Module,
        inputs: Sequence[str],
        optimizer: Callable[..., torch.optim.Optimizer],
        scheduler: Callable[..., torch.optim.lr_scheduler.LRScheduler] | None = None,
        scheduler_interval: str = "epoch",
        pretrained: Mapping | None = None,
    ):
        super().__init__()
        self.save_hyperparameters(ignore=["net", "optimizer", "scheduler"])
        self.net = net
        self.inputs = list(inputs)
        self.optimizer_factory = optimizer
        self.scheduler_factory = scheduler
        self.scheduler_interval = scheduler_interval
        self.pretrained = finetuning.PretrainedConfig.from_dict(pretrained)
        finetuning.check_module_names(self, self.pretrained.modules, f"{finetuning.KEY}.modules")
        finetuning.check_module_names(self, list(self.pretrained.lr_scale), f"{finetuning.KEY}.lr_scale")
        self.frozen = finetuning.FrozenModules(self, self.pretrained)
        self.pretrained_report: dict | None = None  # where the initial weights came from
        self._rows: list[dict[str, np.ndarray]] = []
        self.test_predictions: dict[str, np.ndarray] | None = None
        self.test_extras: dict = {}  # non-scalar test results for the run summary

    @property
    def n_parameters(self) -> int:
        """Trainable parameters of the net."""
        return count_parameters(self.net)

    def net_outputs(self, batch: dict):
        """The net applied to the batch entries named in ``inputs``."""
        return self.net(*net_arguments(batch, self.inputs))

    def configure_optimizers(self):
        if self.pretrained.lr_scale:
            optimizer = self.optimizer_factory(
                params=finetuning.parameter_groups(self, self.pretrained.lr_scale)
            )
            finetuning.scale_learning_rates(optimizer)
        else:
            optimizer = self.optimizer_factory(params=self.parameters())
        if self.scheduler_factory is None:
            return optimizer
        scheduler = self.scheduler_factory(optimizer=optimizer)
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "interval": self.scheduler_interval},
        }

    # ------------------------------------------------------------------------------------------------
    # transfer learning: pretrained weights, frozen modules
    # ------------------------------------------------------------------------------------------------

    def setup(self, stage: str) -> None:
        """Before a fit: load the pretrained weights (``model.pretrained.ckpt_path``). Never when
        a checkpoint of this task is rebuilt for evaluation or export: its own weights are complete.
        With frozen modules, a data-parallel strategy is told that some parameters get no gradient."""
        if stage == "fit" and self.pretrained.ckpt_path and self.pretrained_report is None:
            self.pretrained_report = finetuning.load_pretrained(self, self.pretrained).to_dict()
        if stage == "fit" and self.frozen.active and self._trainer is not None:
            finetuning.allow_unused_parameters(self.trainer.strategy)

    def on_train_epoch_start(self) -> None:
        self.frozen.apply(self.current_epoch)
        self.frozen.hold_batch_norm()

    def train(self, mode: bool = True):
        """Train mode, except for the batch norm of frozen modules, whose statistics stay."""
        super().train(mode)
        frozen = getattr(self, "frozen", None)  # None while the module is being built
        if mode and frozen is not None and frozen.frozen_at(self.current_epoch):
            frozen.hold_batch_norm()
        return self

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        if self.pretrained_report is not None:
            checkpoint[finetuning.ORIGIN_KEY] = self.pretrained_report

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        if checkpoint.get(finetuning.ORIGIN_KEY) is not None:
            self.pretrained_report = checkpoint[finetuning.ORIGIN_KEY]

    # ------------------------------------------------------------------------------------------------
    # shared step pieces
    # ------------------------------------------------------------------------------------------------

    def log_loss(self, stage: str, loss: torch.Tensor, batch: dict, n: int) -> None:
        """Log ``<stage>/loss`` (per step in training, per epoch everywhere) and replaced NaN/inf counts."""
        log_replaced_values(self, batch, stage)
        self.log(
            f"{stage}/loss",
            loss,
            on_step=stage == "train",
            on_epoch=True,
            prog_bar=True,
            batch_size=n,
            sync_dist=True,
        )

    @staticmethod
    def weighted_mean(losses: torch.Tensor, batch: dict) -> torch.Tensor:
        """Mean of per-entry ``losses``, weighted by ``batch["weight"]`` (``data.weights``) when present."""
        weight = batch.get("weight")
        if weight is None:
            return losses.mean()
        weight = weight.to(losses.dtype)
        return (weight * losses).sum() / weight.sum()

    def gathered(self) -> dict[str, np.ndarray] | None:
        """This epoch's rows of all ranks, merged and sorted (:func:`merge_rows`); the rows are reset."""
        merged = merge_rows(gather_rows(self.trainer, self._rows))
        self._rows = []
        return merged

    def on_test_epoch_start(self) -> None:
        self._rows = []
        self.test_predictions = None
        self.test_extras = {}

    def on_test_epoch_end(self) -> None:
        merged = self.gathered()
        if merged is None:
            return
        self.test_predictions = self.predictions_of(merged)
        figures, extras = self.test_figures(self.test_predictions)
        # identical on every rank (computed from the gathered predictions): averaging changes nothing
        self.log_dict({f"test/{k}": float(v) for k, v in figures.items()}, sync_dist=True)
        self.test_extras = extras

    # ------------------------------------------------------------------------------------------------
    # what the task owns
    # ------------------------------------------------------------------------------------------------

    def predictions_of(self, merged: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """The kept test predictions from the merged per-batch rows (default: the rows themselves)."""
        return merged

    def test_figures(self, predictions: Mapping[str, np.ndarray]) -> tuple[dict[str, float], dict]:
        """Scalar test figures (logged as ``test/<name>``; NaN where the test entries lack what a
        figure needs) and non-scalar extras (``test/<name>`` entries of the summary) of the gathered
        test predictions."""
        raise NotImplementedError

    def prediction_columns(self, predictions: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """The branches of the predictions file: the task's own, then provenance and observers."""
        raise NotImplementedError

    def prediction_metadata(self) -> dict[str, str]:
        """Strings stored beside the predictions tree: ``task`` (this class) and the task's own."""
        return {"task": f"{type(self).__module__}.{type(self).__qualname__}"}

    def summary_rows(self, summary: Mapping[str, object]) -> list[tuple[str, object]]:
        """``(label, value)`` rows of the run summary for this task's figures in ``summary``."""
        raise NotImplementedError

    def export_outputs(self, outputs: torch.Tensor) -> torch.Tensor:
        """The exported graph's output from the net's output (the head: softmax, physical units)."""
        raise NotImplementedError

    def export_output_entry(self, spec) -> dict:
        """The sidecar's description of the exported output (columns, units, meaning)."""
        raise NotImplementedError

    def export_output_scale(self) -> torch.Tensor:
        """Per-column scale of the exported output, against which the ONNX parity is judged."""
        return torch.ones(1)

    @classmethod
    def read_predictions(
        cls, arrays: Callable[[Iterable[str]], dict], metadata: Mapping[str, str], path
    ) -> dict:
        """A predictions file read back for plots and notebooks.

        ``arrays(branches)`` reads the named branches as numpy arrays, ``metadata`` holds the
        strings stored beside the tree and ``path`` names the file in errors. The result carries
        ``kind`` (:attr:`kind`) and ``task`` (this class).
        """
        raise NotImplementedError

    @classmethod
    def plots(cls, predictions: Mapping, summary: Mapping, label: str) -> list[Plot]:
        """The plots of a run's predictions (and summary), labelled ``label`` in legends."""
        raise NotImplementedError
