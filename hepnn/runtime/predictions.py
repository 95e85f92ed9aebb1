"""Test predictions written back to ROOT (or Parquet), one entry per tested entry or per input entry."""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path

import lightning as L
import numpy as np

from hepnn.data import InputFile, read_entry_columns, whole_file_chunks
from hepnn.errors import ConfigError
from hepnn.utils.rootio import write_parquet, write_tree

log = logging.getLogger(__name__)

PREDICTION_FORMATS = ("root", "parquet")


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


class RootPredictionWriter(L.Callback):
    """After testing, writes the test predictions to ``path`` (tree ``tree``), on rank zero.

    The task says what is written (:meth:`hepnn.tasks.base.TaskBase.prediction_columns` and
    :meth:`~hepnn.tasks.base.TaskBase.prediction_metadata`: e.g. ``score_<class>`` and ``label``
    of a classifier, ``pred_<target>`` and ``true_<target>`` of a regression), followed by
    ``file_index`` and ``entry`` (the input file, listed in the ``source_files`` string stored
    beside the tree, and the entry number in it) and the configured observers. The file is
    written atomically. ``format="parquet"`` writes the same columns as a Parquet table (``path``
    with the suffix ``.parquet``; the metadata strings in the schema metadata) instead of a ROOT
    file.

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
        metadata = {"source_files": json.dumps(sources), **pl_module.prediction_metadata()}
        columns = pl_module.prediction_columns(predictions)
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
        spec = datamodule.spec
        observers = read_entry_columns(spec, whole_file_chunks(files), spec.observers, selected=False)
        return all_entry_columns(columns, files, observers)
