"""The cut-based baseline a tagger is shown beside: a histogram likelihood ratio of 1 or 2 observables.

The ratio p(x|signal) / p(x|background) of e.g. the jet mass and the N-subjettiness ratio tau32 is
estimated with histograms filled on the training split and looked up for the test entries. It is
the optimal discriminant of those observables (up to binning and statistics), so a network must
beat it to show that it learns more than they carry.

Binning (per observable): equal-population bins from quantiles of the training values, with
signal and background each given half of the total weight, so bins are fine where either class
is dense. The cuts between bins are training values themselves (inverted-CDF quantiles), so the
score is unchanged by any strictly increasing transformation of an observable; repeated cuts
(discrete values) are merged, so an observable with few distinct values gets fewer bins. The
number of bins per axis is ``clip(round(n_min ** (1 / (k + 2))), MIN_BINS, MAX_BINS)``, with
``n_min`` the training entries of the smaller of signal and background and ``k`` the number of
observables: the bin width that balances binning bias against statistical noise shrinks as
N^(-1/(k+2)) (the optimal rate of a histogram density estimate), e.g. 10 bins for 1000 entries in
1-D and 15 per axis for 50 000 entries in 2-D. With two observables the histogram is the 2-D
joint one, so correlations between the observables are kept.

Empty cells: each class's cell fractions get a pseudo-fraction of ``PSEUDO_COUNT / n_min`` (half
an entry of the smaller class) before the ratio is taken, so every cell has a finite, positive
ratio, and a cell empty in both classes has ratio 1 (no preference). Values outside the training
range fall into the edge bins.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from hepnn.errors import InputError

MIN_BINS, MAX_BINS = 5, 50
PSEUDO_COUNT = 0.5
KIND = "HistogramLikelihoodRatio"


def bins_per_axis(n_min: int, n_observables: int) -> int:
    """Bins per observable for ``n_min`` training entries of the smaller class (see the module docstring)."""
    return int(np.clip(round(n_min ** (1.0 / (n_observables + 2))), MIN_BINS, MAX_BINS))


def weighted_quantile_edges(values: np.ndarray, weights: np.ndarray, n_bins: int) -> np.ndarray:
    """Edges of up to ``n_bins`` bins of equal weight: ``[min, cuts..., max]``, where each cut is the
    training value at which the weighted CDF first reaches ``j / n_bins`` (inverted CDF).

    A bin holds ``cut[j-1] < x <= cut[j]``; repeated cuts (discrete values) are merged and a cut at
    the maximum is dropped, so that no bin is empty on the training values.
    """
    order = np.argsort(values, kind="stable")
    cumulative = np.cumsum(weights[order])
    cumulative /= cumulative[-1]
    positions = np.searchsorted(cumulative, np.arange(1, n_bins) / n_bins, side="left")
    cuts = np.unique(values[order][np.minimum(positions, values.size - 1)])
    low, high = values[order[0]], values[order[-1]]
    return np.r_[low, cuts[cuts < high], high]


class HistogramLikelihoodRatio:
    """Histogram estimate of p(x|signal) / p(x|background) for 1 or 2 observables (the baseline tagger).

    ``observables`` names the columns for display (default ``x0``, ``x1``); ``n_bins`` fixes the bins
    per axis instead of the rule of the module docstring. Once fitted, ``edges`` holds each
    observable's bin boundaries ``[min, cuts..., max]`` (units of the observable) and
    ``signal_density`` / ``background_density`` each class's smoothed fraction of entries per cell.
    """

    def __init__(self, observables: Sequence[str] | None = None, n_bins: int | None = None):
        if n_bins is not None and (not isinstance(n_bins, int) or isinstance(n_bins, bool) or n_bins < 1):
            raise ValueError(f"n_bins must be a positive integer or None, got {n_bins!r}")
        self.observables = None if observables is None else tuple(str(name) for name in observables)
        self.n_bins = n_bins
        self.edges: tuple[np.ndarray, ...] | None = None
        self.signal_density: np.ndarray | None = None
        self.background_density: np.ndarray | None = None
        self.signal_index: int | None = None

    def _as_values(self, values, expected_columns: int | None) -> np.ndarray:
        """``values`` as an ``(N, k)`` float array, checked for k and for non-finite entries."""
        values = np.asarray(values, dtype=np.float64)
        if values.ndim == 1:
            values = values[:, None]
        if values.ndim != 2 or values.shape[1] not in (1, 2):
            raise ValueError(f"values must have shape (N, k) with k = 1 or 2 observables, got {values.shape}")
        if expected_columns is not None and values.shape[1] != expected_columns:
            raise ValueError(
                f"values have {values.shape[1]} observable column(s); expected {expected_columns}, "
                f"for {self.observables}"
            )
        bad = ~np.isfinite(values)
        if bad.any():
            column = int(np.argmax(bad.any(axis=0)))
            raise InputError(
                f"observable column {column} ({self._names(values.shape[1])[column]}) has "
                f"{int(bad[:, column].sum())} non-finite value(s); the baseline needs finite values"
            )
        return values

    def _names(self, n_columns: int) -> tuple[str, ...]:
        """The observables' names, or ``x0``, ``x1`` when none were given."""
        return self.observables or tuple(f"x{j}" for j in range(n_columns))

    def fit(self, values, labels, signal_index: int, weights=None) -> HistogramLikelihoodRatio:
        """Fill the signal and background histograms from the training entries.

        ``values`` ``(N, k)``; ``labels`` integer class indices: ``signal_index`` is signal, every
        other class together is background (in their training proportions); ``weights`` optional
        non-negative per-entry weights.
        """
        if self.observables is not None and len(self.observables) not in (1, 2):
            raise ValueError(f"observables must name 1 or 2 observables, got {self.observables}")
        values = self._as_values(values, None if self.observables is None else len(self.observables))
        labels = np.asarray(labels)
        if labels.shape != (len(values),) or not np.issubdtype(labels.dtype, np.integer):
            raise ValueError(
                f"labels must be {len(values)} integer class indices, got {labels.dtype} {labels.shape}"
            )
        weights = np.ones(len(values)) if weights is None else np.asarray(weights, dtype=np.float64)
        if weights.shape != (len(values),) or not np.all(np.isfinite(weights) & (weights >= 0)):
            raise ValueError(f"weights must be {len(values)} finite non-negative per-entry weights")
        is_signal = labels == signal_index
        n_min = int(min(is_signal.sum(), (~is_signal).sum()))
        if n_min == 0 or weights[is_signal].sum() <= 0 or weights[~is_signal].sum() <= 0:
            raise InputError(
                f"the baseline needs signal (class {signal_index}) and background entries with positive "
                f"weight; labels hold classes {np.unique(labels).tolist()}"
            )
        self.observables = self._names(values.shape[1])
        self.signal_index = int(signal_index)
        n_bins = self.n_bins or bins_per_axis(n_min, values.shape[1])

        class_total = np.where(is_signal, weights[is_signal].sum(), weights[~is_signal].sum())
        balanced = weights / class_total
        edges = []
        for column, name in enumerate(self.observables):
            column_edges = weighted_quantile_edges(values[:, column], balanced, n_bins)
            if column_edges[0] == column_edges[-1]:
                raise InputError(f"observable column {column} ({name}) is constant on the training entries")
            edges.append(column_edges)
        self.edges = tuple(edges)

        cells = self._cells(values)
        shape = tuple(column_edges.size - 1 for column_edges in self.edges)
        pseudo_fraction = PSEUDO_COUNT / n_min
        densities = []
        for mask in (is_signal, ~is_signal):
            fraction = np.bincount(cells[mask], weights[mask], minlength=int(np.prod(shape)))
            fraction /= fraction.sum()
            densities.append(
                ((fraction + pseudo_fraction) / (1.0 + pseudo_fraction * fraction.size)).reshape(shape)
            )
        self.signal_density, self.background_density = densities
        return self

    def _cells(self, values: np.ndarray) -> np.ndarray:
        """Flat cell index of each entry; values outside the training range go to the edge bins."""
        per_axis = [
            np.searchsorted(column_edges[1:-1], values[:, column], side="left")
            for column, column_edges in enumerate(self.edges)
        ]
        return np.ravel_multi_index(per_axis, tuple(column_edges.size - 1 for column_edges in self.edges))

    @property
    def ratio(self) -> np.ndarray:
        """p(x|signal) / p(x|background) per cell, shaped like the histogram."""
        self._require_fit()
        return self.signal_density / self.background_density

    def score(self, values) -> np.ndarray:
        """The likelihood ratio of each entry of ``values`` ``(N, k)``: higher is more signal-like."""
        self._require_fit()
        values = self._as_values(values, len(self.edges))
        return self.ratio.ravel()[self._cells(values)]

    def _require_fit(self) -> None:
        if self.edges is None:
            raise ValueError(
                "the HistogramLikelihoodRatio is not fitted; call fit(values, labels, signal_index)"
            )

    def to_dict(self) -> dict:
        """The fitted baseline as plain lists, floats, ints and strings (JSON and ``torch.save`` safe)."""
        self._require_fit()
        return {
            "kind": KIND,
            "observables": list(self.observables),
            "signal_index": self.signal_index,
            "n_bins": self.n_bins,
            "edges": [column_edges.tolist() for column_edges in self.edges],
            "signal_density": self.signal_density.tolist(),
            "background_density": self.background_density.tolist(),
        }

    @classmethod
    def from_dict(cls, values: Mapping) -> HistogramLikelihoodRatio:
        """The baseline saved by :meth:`to_dict`."""
        if not isinstance(values, Mapping) or values.get("kind") != KIND:
            raise ValueError(f"from_dict expects the mapping written by {KIND}.to_dict(), with kind {KIND!r}")
        baseline = cls(values["observables"], values["n_bins"])
        baseline.signal_index = int(values["signal_index"])
        baseline.edges = tuple(np.asarray(column_edges, dtype=np.float64) for column_edges in values["edges"])
        baseline.signal_density = np.asarray(values["signal_density"], dtype=np.float64)
        baseline.background_density = np.asarray(values["background_density"], dtype=np.float64)
        return baseline
