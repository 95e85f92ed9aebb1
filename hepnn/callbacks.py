"""Lightning callbacks of hepnn: writing test predictions back to ROOT, measuring training throughput,
storing the run configuration in checkpoints."""

from __future__ import annotations

import copy
import json
import logging
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import awkward as ak
import lightning as L
import numpy as np

from hepnn.data.expressions import VariableResolver, required_branches
from hepnn.data.source import Chunk, InputFile, open_tree, read_entries
from hepnn.data.spec import DataSpec
from hepnn.errors import ConfigError
from hepnn.rootio import write_parquet, write_tree

log = logging.getLogger(__name__)

PREDICTION_FORMATS = ("root", "parquet")


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


def all_entry_columns(
    columns: Mapping[str, np.ndarray], files: Sequence[InputFile], observers: Mapping[str, np.ndarray]
) -> dict[str, np.ndarray]:
    """The predictions ``columns`` spread over every entry of ``files``, file by file, in entry order.

    ``columns`` hold one row per tested entry, located by ``file_index`` and ``entry``. Rows of
    entries that were not tested (they failed ``data.selection`` or lie outside the test range)
    get NaN in float branches and -1 in integer ones (``label``); ``selected`` is True exactly
    for the tested rows. ``observers`` (one array per observer over all entries of the files,
    concatenated in the same order) replace the tested rows' observer columns.
    """
    counts = np.array([f.n_entries for f in files], dtype=np.int64)
    first_row = np.zeros(max((f.index for f in files), default=-1) + 1, dtype=np.int64)
    first_row[[f.index for f in files]] = np.cumsum(counts) - counts
    known = np.isin(columns["file_index"], [f.index for f in files])
    if not known.all():
        raise ValueError(
            f"predictions of file indices {sorted(set(columns['file_index'][~known]))} "
            f"that are not among the files {[f.path for f in files]}"
        )
    rows = first_row[columns["file_index"]] + columns["entry"]
    total = int(counts.sum())
    out: dict[str, np.ndarray] = {}
    for name, values in columns.items():
        if name in ("file_index", "entry") or name in observers:
            continue
        filled = np.full(
            total, np.nan if np.issubdtype(values.dtype, np.floating) else -1, dtype=values.dtype
        )
        filled[rows] = values
        out[name] = filled
    out["selected"] = np.zeros(total, dtype=bool)
    out["selected"][rows] = True
    out["file_index"] = np.repeat(np.array([f.index for f in files], dtype=np.int32), counts)
    out["entry"] = np.concatenate([np.arange(n, dtype=np.int64) for n in counts]) if len(files) else counts
    return {**out, **observers}


def read_observers(spec: DataSpec, files: Sequence[InputFile]) -> dict[str, np.ndarray]:
    """Every observer of ``spec`` (a branch or variable, one value per entry) for all entries of
    ``files``, concatenated file by file in entry order."""
    if not spec.observers:
        return {}
    branches = sorted(required_branches(set(spec.observers), spec.variables))
    parts: dict[str, list[np.ndarray]] = {name: [] for name in spec.observers}
    for f in files:
        arrays = read_entries(open_tree(f.path, spec.tree), Chunk(f.index, f.path, 0, f.n_entries), branches)
        resolve = VariableResolver(arrays, spec.variables)
        for name in spec.observers:
            parts[name].append(_per_entry(resolve(name), len(arrays), f"{f.path}: data.observers.{name}"))
    return {name: np.concatenate(values) for name, values in parts.items()}


def _per_entry(values, n: int, where: str) -> np.ndarray:
    """``values`` as a numpy array of ``n`` numbers (a scalar is broadcast)."""
    array = np.asarray(ak.to_numpy(values) if isinstance(values, ak.Array) else values)
    if array.ndim == 0:
        array = np.full(n, array)
    if array.shape != (n,):
        raise ValueError(f"{where} has shape {array.shape}; one value per entry ({n},) is expected")
    return array


class RootPredictionWriter(L.Callback):
    """After testing, writes the test predictions to ``path`` (tree ``tree``), on rank zero.

    Branches: for a classifier ``score_<class>`` (softmax probabilities) and ``label`` (true
    class index); for a regression ``pred_<target>`` and ``true_<target>`` (physical units);
    then ``file_index`` and ``entry`` (the input file, listed in the ``source_files`` string
    stored beside the tree, and the entry number in it), and the configured observers. The file
    is written atomically. ``format="parquet"`` writes the same columns as a Parquet table
    (``path`` with the suffix ``.parquet``; ``source_files``, ``classes``/``targets`` and
    ``selection`` in the schema metadata) instead of a ROOT file.

    By default the tree has one entry per tested entry. With ``all_entries`` it has one entry
    per entry of every file of the test split, file by file (in the order of ``source_files``)
    and in entry order, so that it can serve as a friend tree of the input: ``selected`` says
    which entries were tested (passed ``data.selection`` and lie in the test range); the others
    have NaN scores, predictions and truths and ``label`` -1, and their observers are read from
    the input like everyone else's.
    """

    def __init__(self, path: str, tree: str = "predictions", all_entries: bool = False, format: str = "root"):
        if format not in PREDICTION_FORMATS:
            raise ConfigError(f"predictions.format must be one of {list(PREDICTION_FORMATS)}, got {format!r}")
        self.format = format
        self.path = Path(path).with_suffix(".parquet") if format == "parquet" else Path(path)
        self.tree = tree
        self.all_entries = all_entries
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
        if self.all_entries:
            columns = self._spread_over_all_entries(columns, datamodule)
            selection = datamodule.spec.selection
            metadata["selection"] = selection.text if selection is not None else ""
        if self.format == "parquet":
            self.written = write_parquet(self.path, columns, metadata=metadata)
        else:
            self.written = write_tree(
                self.path, self.tree, columns, title="hepnn test predictions", metadata=metadata
            )
        log.info("wrote %d predictions to %s", len(columns["entry"]), self.path)

    @staticmethod
    def _spread_over_all_entries(columns: dict[str, np.ndarray], datamodule) -> dict[str, np.ndarray]:
        """See :func:`all_entry_columns`: the test files of a :class:`RootDataModule` and their observers."""
        if not hasattr(datamodule, "files") or not hasattr(datamodule, "spec"):
            raise ValueError(
                f"RootPredictionWriter(all_entries=True) needs a RootDataModule (input files with their "
                f"entry counts), got {type(datamodule).__name__}"
            )
        files = datamodule.split_files.get("test") or datamodule.files
        return all_entry_columns(columns, files, read_observers(datamodule.spec, files))


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


CHECKPOINT_KEY = "hepnn"
CHECKPOINT_FORMAT = 1


class StoreConfigInCheckpoint(L.Callback):
    """Stores the run's composed configuration in every checkpoint, as plain data.

    ``checkpoint["hepnn"] = {"format": 1, "config": config}``: ``config`` is the resolved
    configuration (``OmegaConf.to_container(cfg, resolve=True)`` without the ``hydra`` section),
    from which ``python -m hepnn.evaluate`` rebuilds the model and the data module. Everything in
    it is dicts, lists, strings, numbers, booleans and None, so checkpoints load with
    ``torch.load(path, weights_only=True)``.
    """

    def __init__(self, config: Mapping):
        self.config = {k: v for k, v in dict(config).items() if k != "hydra"}

    def on_save_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict) -> None:
        checkpoint[CHECKPOINT_KEY] = {"format": CHECKPOINT_FORMAT, "config": copy.deepcopy(self.config)}
