"""Per-entry training weights that give every class the same jet pT (or pT x mass) distribution.

A classifier trained on classes with different pT spectra learns pT itself; weighting the
training entries so that every class has a flat distribution in the reweighting variables (or
that of a reference class) removes that handle (weaver-core's ``reweight_vars`` and
``class_weights``). The weights are fitted on the training split, stored as plain data beside the
model, and applied as per-entry loss weights.

Rules:

- Bins: ``[low, high, n_bins]`` (equal width) or an explicit list of edges per variable, in the
  variable's unit (e.g. GeV); values outside the binning count in the edge bins. A bin holds
  ``edge[j] <= x < edge[j+1]``.
- ``target: flat``: the weight of a class's entry in a bin is the inverse of the class's content
  there, so every bin gets the same weighted content (flat in the variable for equal-width bins).
  ``target: <class>``: the reference class's content divided by the class's content, so every class
  takes the reference's distribution.
- Bins where a class has no training entries get weight 0 (and so does a bin the reference leaves
  empty); they are counted per class in :attr:`ReweightTable.empty_bins`.
- Normalisation: class ``c``'s weights sum to ``share_c * N``, with ``N`` the training entries and
  ``share_c`` its class weight over the sum of class weights (equal by default): the mean weight
  over the training split is 1.
- ``max_weight`` caps every per-entry weight (units of that mean weight, 1); the class's other
  bins are scaled up so that its total is kept, and the capped bins are counted in
  :attr:`ReweightTable.capped_bins`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from hepnn.errors import ConfigError, InputError

WHERE = "data.reweight"
FLAT = "flat"
KEYS = ("vars", "target", "class_weights", "max_weight")
KIND = "ReweightTable"


def _is_number(value) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def parse_edges(spec, where: str) -> tuple[float, ...]:
    """Bin edges from ``[low, high, n_bins]`` (three numbers, the last an integer) or a strictly
    increasing list of at least two edges."""
    expected = "[low, high, n_bins] or a strictly increasing list of at least 2 bin edges"
    if (
        isinstance(spec, str | bytes)
        or not isinstance(spec, Sequence)
        or not all(_is_number(v) for v in spec)
    ):
        raise ConfigError(f"{where} must be {expected}, got {spec!r}")
    if len(spec) == 3 and isinstance(spec[2], int):
        low, high, n_bins = spec
        if not (low < high and n_bins >= 1):
            raise ConfigError(
                f"{where} = {list(spec)} must be [low, high, n_bins] with low < high and n_bins >= 1"
            )
        return tuple(np.linspace(low, high, n_bins + 1).tolist())
    edges = np.asarray(spec, dtype=np.float64)
    if edges.size < 2 or not np.all(np.isfinite(edges)) or np.any(np.diff(edges) <= 0):
        raise ConfigError(f"{where} must be {expected}, got {list(spec)!r}")
    return tuple(edges.tolist())


@dataclass(frozen=True)
class ReweightConfig:
    """The ``data.reweight`` settings: binned variables, target, class weights and weight cap."""

    variables: tuple[str, ...]
    edges: tuple[tuple[float, ...], ...]
    target: str = FLAT
    class_weights: tuple[float, ...] | Mapping[str, float] | None = None
    max_weight: float | None = None

    @classmethod
    def from_dict(cls, values: Mapping) -> ReweightConfig:
        """Parse e.g. ``{"vars": {"jet_pt": [550, 650, 20]}, "target": "flat"}``, naming the key on errors."""
        if not isinstance(values, Mapping):
            raise ConfigError(f"{WHERE} must be a mapping with keys {list(KEYS)}, got {values!r}")
        unknown = sorted(set(values) - set(KEYS))
        if unknown:
            raise ConfigError(f"{WHERE}: unknown key(s) {unknown}; expected some of {list(KEYS)}")
        variables = values.get("vars")
        if not isinstance(variables, Mapping) or not variables:
            raise ConfigError(
                f"{WHERE}.vars must be a non-empty mapping of variable name to [low, high, n_bins] or bin "
                f"edges, got {variables!r}"
            )
        edges = tuple(parse_edges(spec, f"{WHERE}.vars.{name}") for name, spec in variables.items())
        target = values.get("target", FLAT)
        if not isinstance(target, str) or not target:
            raise ConfigError(f"{WHERE}.target must be 'flat' or a class name, got {target!r}")
        max_weight = values.get("max_weight")
        if max_weight is not None and not (_is_number(max_weight) and max_weight > 0):
            raise ConfigError(f"{WHERE}.max_weight must be a positive number or null, got {max_weight!r}")
        return cls(
            tuple(str(name) for name in variables),
            edges,
            target,
            _parse_class_weights(values.get("class_weights")),
            None if max_weight is None else float(max_weight),
        )

    def class_shares(self, class_names: Sequence[str]) -> np.ndarray:
        """Each class's fraction of the total weight, from ``class_weights`` (equal by default)."""
        names = list(class_names)
        where = f"{WHERE}.class_weights"
        if self.class_weights is None:
            relative = np.ones(len(names))
        elif isinstance(self.class_weights, Mapping):
            unknown = sorted(set(self.class_weights) - set(names))
            missing = [name for name in names if name not in self.class_weights]
            if unknown or missing:
                raise ConfigError(
                    f"{where} must give a weight for every class {names}; "
                    f"unknown {unknown}, missing {missing}"
                )
            relative = np.array([self.class_weights[name] for name in names], dtype=np.float64)
        else:
            if len(self.class_weights) != len(names):
                raise ConfigError(
                    f"{where} lists {len(self.class_weights)} weight(s); expected one per class {names}"
                )
            relative = np.asarray(self.class_weights, dtype=np.float64)
        return relative / relative.sum()

    def fit(self, values, labels, class_names: Sequence[str]) -> ReweightTable:
        """The weight table of the training entries: ``values`` per variable (a mapping of name to
        array, or ``(N, k)`` columns in the order of ``vars``), ``labels`` class indices into
        ``class_names``."""
        names = tuple(str(name) for name in class_names)
        if self.target != FLAT and self.target not in names:
            raise ConfigError(
                f"{WHERE}.target: unknown class {self.target!r}; classes are {list(names)} (or 'flat')"
            )
        shares = self.class_shares(names)
        edges = tuple(np.asarray(column_edges) for column_edges in self.edges)
        columns = _columns(values, self.variables)
        labels = _labels(labels, len(columns), names)
        shape = tuple(column_edges.size - 1 for column_edges in edges)
        n_cells = int(np.prod(shape))
        cells = _cells(columns, edges)
        counts = np.bincount(labels * n_cells + cells, minlength=len(names) * n_cells).reshape(
            len(names), n_cells
        )

        wanted = (
            np.ones(n_cells) if self.target == FLAT else counts[names.index(self.target)].astype(np.float64)
        )
        filled = counts > 0
        raw = np.divide(wanted, counts, out=np.zeros(counts.shape), where=filled)
        empty_bins = {name: int(np.sum(~filled[c] & (wanted > 0))) for c, name in enumerate(names)}
        bin_weights = np.stack(
            [
                self._class_bin_weights(raw[c], counts[c], shares[c] * len(labels), name)
                for c, name in enumerate(names)
            ]
        )
        capped_bins = {
            name: 0 if self.max_weight is None else int(np.sum(bin_weights[c] >= self.max_weight))
            for c, name in enumerate(names)
        }
        return ReweightTable(
            self.variables,
            edges,
            names,
            self.target,
            bin_weights.reshape(len(names), *shape),
            empty_bins,
            capped_bins,
        )

    def _class_bin_weights(self, raw: np.ndarray, counts: np.ndarray, total: float, name: str) -> np.ndarray:
        """One class's bin weights: ``raw`` scaled so that its entries sum to ``total``, capped at
        ``max_weight``."""
        reachable = np.sum(counts * raw)
        if total == 0:
            return np.zeros(raw.shape)
        if reachable <= 0:
            raise InputError(
                f"reweighting: class {name!r} has no training entries in the bins where the target "
                f"{self.target!r} has content"
            )
        weights = raw * (total / reachable)
        if self.max_weight is None or weights.max() <= self.max_weight:
            return weights
        entries = counts[raw > 0].sum()
        if self.max_weight * entries < total:
            raise ConfigError(
                f"{WHERE}.max_weight = {self.max_weight} is below the mean weight {total / entries:.4g} "
                f"that class {name!r} needs for its share"
            )
        return _capped(raw, counts, total, self.max_weight)


def _parse_class_weights(class_weights) -> tuple[float, ...] | dict[str, float] | None:
    """``class_weights`` as a mapping of class name to relative weight or a list in class order."""
    where = f"{WHERE}.class_weights"
    if class_weights is None:
        return None
    if isinstance(class_weights, Mapping):
        items = dict(class_weights)
    elif isinstance(class_weights, Sequence) and not isinstance(class_weights, str | bytes):
        items = dict(enumerate(class_weights))
    else:
        raise ConfigError(
            f"{where} must map class names to weights or list one weight per class, got {class_weights!r}"
        )
    bad = {key: value for key, value in items.items() if not (_is_number(value) and value >= 0)}
    if bad or not items or sum(items.values()) <= 0:
        raise ConfigError(f"{where} must be non-negative numbers with a positive sum, got {class_weights!r}")
    if isinstance(class_weights, Mapping):
        return {str(name): float(value) for name, value in items.items()}
    return tuple(float(value) for value in items.values())


def _capped(raw: np.ndarray, counts: np.ndarray, total: float, cap: float) -> np.ndarray:
    """Bin weights ``min(s * raw, cap)``, with the scale ``s`` that makes ``sum(counts * weights) == total``.

    Bins sorted by ``raw`` from the largest: if the first ``j`` are capped, ``s = (total - cap *
    C_j) / R_j`` (``C_j`` their entries, ``R_j`` the sum of ``counts * raw`` of the others); the
    right ``j`` is the one whose ``s`` caps exactly those ``j`` bins.
    """
    used = np.flatnonzero((counts > 0) & (raw > 0))
    order = used[np.argsort(-raw[used], kind="stable")]
    r, n = raw[order], counts[order].astype(np.float64)
    capped_entries = np.r_[0.0, np.cumsum(n)[:-1]]
    rest = np.cumsum((n * r)[::-1])[::-1]
    scale = (total - cap * capped_entries) / rest
    previous = np.r_[np.inf, r[:-1]]
    consistent = (scale * r <= cap * (1 + 1e-12)) & (scale * previous >= cap * (1 - 1e-12))
    j = int(np.argmax(consistent)) if consistent.any() else r.size
    out = np.zeros(raw.shape)
    out[order] = np.minimum(scale[j] * r, cap) if j < r.size else cap
    return out


def _columns(values, variables: Sequence[str]) -> np.ndarray:
    """The reweighting variables as ``(N, k)`` float columns, checked to be finite."""
    if isinstance(values, Mapping):
        missing = [name for name in variables if name not in values]
        if missing:
            raise InputError(f"reweighting variable(s) {missing} missing; the values hold {sorted(values)}")
        columns = np.stack([np.asarray(values[name], dtype=np.float64) for name in variables], axis=1)
    else:
        columns = np.asarray(values, dtype=np.float64)
        if columns.ndim == 1 and len(variables) == 1:
            columns = columns[:, None]
        if columns.ndim != 2 or columns.shape[1] != len(variables):
            raise InputError(
                f"reweighting values must be (N, {len(variables)}) columns {list(variables)}, "
                f"got shape {columns.shape}"
            )
    bad = ~np.isfinite(columns)
    if bad.any():
        column = int(np.argmax(bad.any(axis=0)))
        raise InputError(
            f"reweighting variable {variables[column]} has {int(bad[:, column].sum())} non-finite value(s)"
        )
    return columns


def _labels(labels, n_entries: int, class_names: Sequence[str]) -> np.ndarray:
    """``labels`` checked to be ``n_entries`` class indices into ``class_names``."""
    labels = np.asarray(labels)
    if labels.shape != (n_entries,) or not np.issubdtype(labels.dtype, np.integer):
        raise InputError(
            f"reweighting labels must be {n_entries} integer class indices, got {labels.dtype} {labels.shape}"
        )
    if labels.size and (labels.min() < 0 or labels.max() >= len(class_names)):
        raise InputError(
            f"reweighting labels must lie in 0..{len(class_names) - 1} (classes {list(class_names)}), "
            f"got {labels.min()}..{labels.max()}"
        )
    return labels


def _cells(columns: np.ndarray, edges: Sequence[np.ndarray]) -> np.ndarray:
    """Flat bin index of each entry; values outside the binning go to the edge bins."""
    per_axis = [
        np.searchsorted(column_edges[1:-1], columns[:, k], side="right")
        for k, column_edges in enumerate(edges)
    ]
    return np.ravel_multi_index(per_axis, tuple(column_edges.size - 1 for column_edges in edges))


@dataclass(frozen=True, eq=False)
class ReweightTable:
    """Fitted per-bin weights of every class, looked up per entry as loss weights.

    ``bin_weights`` is ``(n_classes, n_bins_1, ..., n_bins_k)``: the weight of an entry of that
    class in that bin. ``empty_bins`` and ``capped_bins`` count, per class, the bins left at weight 0
    for want of entries and the bins held at ``max_weight``.
    """

    variables: tuple[str, ...]
    edges: tuple[np.ndarray, ...]
    class_names: tuple[str, ...]
    target: str
    bin_weights: np.ndarray
    empty_bins: dict[str, int]
    capped_bins: dict[str, int]

    def weights(self, values, labels) -> np.ndarray:
        """The weight of each entry (``values`` as for :meth:`ReweightConfig.fit`)."""
        columns = _columns(values, self.variables)
        labels = _labels(labels, len(columns), self.class_names)
        return self.bin_weights.reshape(len(self.class_names), -1)[labels, _cells(columns, self.edges)]

    def to_dict(self) -> dict:
        """The table as plain lists, floats, ints and strings (JSON and ``torch.save`` safe)."""
        return {
            "kind": KIND,
            "variables": list(self.variables),
            "edges": [column_edges.tolist() for column_edges in self.edges],
            "class_names": list(self.class_names),
            "target": self.target,
            "bin_weights": self.bin_weights.tolist(),
            "empty_bins": dict(self.empty_bins),
            "capped_bins": dict(self.capped_bins),
        }

    @classmethod
    def from_dict(cls, values: Mapping) -> ReweightTable:
        """The table saved by :meth:`to_dict`."""
        if not isinstance(values, Mapping) or values.get("kind") != KIND:
            raise ValueError(f"from_dict expects the mapping written by {KIND}.to_dict(), with kind {KIND!r}")
        return cls(
            tuple(values["variables"]),
            tuple(np.asarray(column_edges, dtype=np.float64) for column_edges in values["edges"]),
            tuple(values["class_names"]),
            values["target"],
            np.asarray(values["bin_weights"], dtype=np.float64),
            dict(values["empty_bins"]),
            dict(values["capped_bins"]),
        )


def effective_entries(weights, labels, n_classes: int | None = None) -> np.ndarray:
    """Per class, ``(sum w)^2 / sum w^2``: how many unweighted entries carry the same statistical power."""
    weights = np.asarray(weights, dtype=np.float64)
    labels = np.asarray(labels)
    if weights.shape != labels.shape or weights.ndim != 1:
        raise ValueError(
            f"weights {weights.shape} and labels {labels.shape} must be 1-d arrays of equal length"
        )
    n_classes = int(labels.max()) + 1 if n_classes is None else n_classes
    total = np.bincount(labels, weights, minlength=n_classes)
    squares = np.bincount(labels, weights**2, minlength=n_classes)
    return np.divide(total**2, squares, out=np.zeros(n_classes), where=squares > 0)
