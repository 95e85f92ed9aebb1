"""The reweighting of a data spec fitted on its training split: the table (from the cache or
fitted and cached beside the automatic standardisation) and the classes' effective entries.

See :mod:`hepnn.data.reweight` for what the weights are; the fitted table becomes part of the
spec (:meth:`hepnn.data.spec.DataSpec.with_reweight_table`), so workers, the chunk cache and
checkpoints carry it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from hepnn.data.columns import read_entry_columns
from hepnn.data.reweight import ReweightConfig, ReweightTable, effective_entries
from hepnn.data.source import Chunk, DataInputError
from hepnn.data.spec import DataSpec
from hepnn.utils.rootio import atomic_path

log = logging.getLogger(__name__)


def reweight_key(spec: DataSpec, chunks: Sequence[Chunk]) -> str:
    """Hash of what the table depends on: the spec (without a table) and the training chunks."""
    config = spec.to_config()
    config.pop("reweight_table", None)
    text = json.dumps(
        {"spec": config, "chunks": [[c.path, c.file_id, c.start, c.stop] for c in chunks]}, sort_keys=True
    )
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def training_values(spec: DataSpec, chunks: Sequence[Chunk]) -> dict[str, np.ndarray]:
    """The reweighting variables and class labels of every selected training entry."""
    names = list(spec.reweight_variables)
    return read_entry_columns(
        spec, chunks, names, keys=[f"data.reweight.vars.{n}" for n in names], labels=True
    )


def resolve_reweighting(
    spec: DataSpec, chunks: Sequence[Chunk], cache_dir: str | os.PathLike | None
) -> tuple[DataSpec, dict[str, float]]:
    """The spec with its reweighting table fitted (or kept, or read from the cache), and the
    effective number of training entries of every class, ``(sum w)^2 / sum w^2``.

    A spec without ``reweight`` is returned as it is, with no figures.
    """
    if spec.reweight is None:
        return spec, {}
    values = training_values(spec, chunks)
    labels = values.pop("label")
    if not len(labels):
        raise DataInputError("data.reweight: the training split has no entries to fit the weights on")
    if spec.reweight_table is None:
        path = (
            Path(cache_dir).expanduser() / f"reweight-{reweight_key(spec, chunks)}.json"
            if cache_dir
            else None
        )
        if path is not None and path.is_file():
            table = ReweightTable.from_dict(json.loads(path.read_text()))
            log.info("data.reweight: table from the cache %s", path)
        else:
            table = ReweightConfig.from_dict(spec.reweight).fit(values, labels, spec.classes)
            if path is not None:
                path.parent.mkdir(parents=True, exist_ok=True)
                with atomic_path(path) as tmp:
                    tmp.write_text(json.dumps(table.to_dict()))
            log.info("data.reweight: table fitted on %d training entries", len(labels))
        spec = spec.with_reweight_table(table.to_dict())
    weights = spec.reweighting.weights(values, labels)
    effective = effective_entries(weights, labels, len(spec.classes))
    return spec, {
        f"data/effective_entries_{c}": round(float(e), 1)
        for c, e in zip(spec.classes, effective, strict=True)
    }
