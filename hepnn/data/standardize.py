"""Automatic standardisation: robust centres and scales of input features, computed once and cached.

For every feature with ``center: auto`` or ``scale: auto``, the centre is the median and the
scale half the central 68 % interval (``(q84 - q16) / 2``, the standard deviation for a
Gaussian, insensitive to tails) of the values the net would see: the elements kept by the
group's length, after the selection, in the first ``data.standardize.fraction`` of every
training file's training entries (at most ``data.standardize.max_entries`` entries in all). A
feature whose interval is empty (a discrete feature such as a charge or a 0/1 flag) falls
back to its standard deviation, and to 1 if that is zero too.

Results are cached as JSON under ``data.cache_dir``, keyed by a hash of the spec and the
identities of the files, and stored in the checkpoint (see the data module's ``state_dict``),
so that resuming, evaluation and export reuse exactly the same numbers.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from hepnn.data.preprocess import preprocess_chunk
from hepnn.data.source import Chunk, InputFile, open_tree, read_entries
from hepnn.data.spec import DataSpec, Feature
from hepnn.utils.rootio import atomic_path

log = logging.getLogger(__name__)


def robust_center_scale(values: np.ndarray) -> tuple[float, float]:
    """Median and half the central 68 % interval of ``values`` (std, then 1, if that is zero)."""
    values = np.asarray(values, dtype=np.float64)
    if len(values) == 0:
        return 0.0, 1.0
    q16, median, q84 = np.quantile(values, [0.158655, 0.5, 0.841345])
    scale = (q84 - q16) / 2
    if not scale > 0:
        scale = float(np.std(values))
    return float(median), float(scale) if scale > 0 else 1.0


def raw_spec(spec: DataSpec) -> DataSpec:
    """The spec with every feature unstandardised and unclipped (centre 0, scale 1)."""
    groups = [
        dataclasses.replace(g, features=tuple(Feature(f.name, 0.0, 1.0, None) for f in g.features))
        for g in spec.inputs
    ]
    return dataclasses.replace(spec, inputs=tuple(groups))


def sample_chunks(files: Sequence[InputFile], spec: DataSpec, whole_files: bool = False) -> list[Chunk]:
    """The first ``fraction`` of each file's training entries, at most ``max_entries`` in all.

    ``whole_files``: the files are training files (per-split files), not split by entry ranges.
    """
    per_file = math.ceil(spec.standardize.max_entries / max(len(files), 1))
    chunks = []
    for f in files:
        start, stop = (0, f.n_entries) if whole_files else spec.split.ranges(f.n_entries)["train"]
        n = min(math.ceil(spec.standardize.fraction * (stop - start)), per_file)
        if n > 0:
            chunks.append(Chunk(f.index, f.path, start, start + n, f.file_id))
    return chunks


def compute_standardization(
    files: Sequence[InputFile], spec: DataSpec, whole_files: bool = False
) -> dict[str, dict[str, list[float]]]:
    """``{group: {feature: [center, scale]}}`` for the automatic features of ``spec``."""
    wanted = spec.automatic_features
    unstandardised = raw_spec(spec)
    samples: dict[tuple[str, str], list[np.ndarray]] = {(g.name, f.name): [] for g, f in wanted}
    for chunk in sample_chunks(files, spec, whole_files):
        tree = open_tree(chunk.path, spec.tree)
        arrays = read_entries(tree, chunk, sorted(spec.branches))
        data = preprocess_chunk(
            arrays, unstandardised, chunk.file_index, chunk.start, chunk.describe(spec.tree)
        )
        kept: dict[str, np.ndarray] = {}  # per jagged group: (C, k) its first `length` elements
        for group, feature in wanted:
            index = [f.name for f in group.features].index(feature.name)
            if group.jagged:
                if group.name not in kept:
                    jagged = data.jagged[group.name]
                    kept[group.name] = jagged.elements(np.arange(len(jagged.counts)), group.length)[0]
                values = kept[group.name][index]
            else:
                values = data.columns[group.name][:, index].ravel()  # all values of shaped groups
            samples[(group.name, feature.name)].append(values)
    result: dict[str, dict[str, list[float]]] = {}
    for (group_name, feature_name), parts in samples.items():
        values = np.concatenate(parts) if parts else np.empty(0)
        center, scale = robust_center_scale(values)
        result.setdefault(group_name, {})[feature_name] = [center, scale]
        log.info(
            "standardisation of data.inputs.%s.features.%s: center %.5g, scale %.5g (%d values)",
            group_name,
            feature_name,
            center,
            scale,
            len(values),
        )
    return result


def standardization_key(files: Sequence[InputFile], spec: DataSpec, whole_files: bool = False) -> str:
    """Hash of what the automatic standardisation depends on: the spec and the training files."""
    text = json.dumps(
        {"spec": spec.to_config(), "files": [[f.path, f.file_id] for f in files], "whole": whole_files},
        sort_keys=True,
    )
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def resolve_standardization(
    files: Sequence[InputFile], spec: DataSpec, cache_dir: str | os.PathLike | None, whole_files: bool = False
) -> tuple[DataSpec, str]:
    """The spec with its automatic features resolved (from the cache or computed and cached).

    Returns the resolved spec and where the numbers came from (for the log).
    """
    if not spec.automatic_features:
        return spec, "config"
    path = None
    if cache_dir:
        path = (
            Path(cache_dir).expanduser()
            / f"standardization-{standardization_key(files, spec, whole_files)}.json"
        )
        if path.exists():
            return spec.with_standardization(json.loads(path.read_text())), f"cache {path}"
    values = compute_standardization(files, spec, whole_files)
    if path is not None:
        with atomic_path(path) as tmp:
            tmp.write_text(json.dumps(values, indent=1, sort_keys=True))
    return spec.with_standardization(values), "computed" + (f", cached in {path}" if path else "")
