"""Statistical uncertainties of figures of merit by bootstrap resampling of the entries.

A figure (any callable of per-entry arrays, e.g. the AUC of ``(scores, is_signal)``) is evaluated
on the full sample and on ``n_resamples`` resamples of the entries drawn with replacement; the
uncertainty is the standard deviation (``ddof=1``) of the resampled values. Every array is
resampled with the same indices, drawn from ``numpy.random.default_rng(seed)``, so a seed gives
the same result every time and figures computed together share their resamples.

Non-finite resamples: a figure can be infinite or NaN on some resamples (e.g. the background
rejection 1/eps_B when no background entry of the resample passes the cut). Such resamples are
left out of the standard deviation and counted in :attr:`Estimate.n_nonfinite`, which the
formatted estimate shows; the error is NaN when fewer than two resamples are finite. The value
itself is always the figure on the full sample, finite or not.

Memory: one resample's indices (N integers) are held at a time, never an
``(n_resamples, N)`` matrix.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from hepnn.metrics.classification import background_efficiency_at, roc_curve

DEFAULT_RESAMPLES = 200
CLASSIFIER_EFFICIENCIES = (0.3, 0.5)


@dataclass(frozen=True)
class Estimate:
    """A figure of merit with its bootstrap uncertainty, for tables and plot labels."""

    value: float
    error: float
    n_resamples: int = 0
    n_nonfinite: int = 0

    @classmethod
    def from_resamples(cls, value: float, resampled: np.ndarray) -> Estimate:
        """The full-sample ``value`` with the spread of the finite ``resampled`` values."""
        resampled = np.asarray(resampled, dtype=np.float64)
        finite = resampled[np.isfinite(resampled)]
        error = float(np.std(finite, ddof=1)) if finite.size >= 2 else float("nan")
        return cls(float(value), error, int(resampled.size), int(resampled.size - finite.size))

    def format(self, digits: int | None = None) -> str:
        """``value ± error`` with ``digits`` decimals (default: two significant digits of the error),
        followed by the count of non-finite resamples when there are any."""
        if digits is None:
            digits = _decimals_for(self.error)
        text = f"{self.value:.{digits}f} ± {self.error:.{digits}f}"
        if self.n_nonfinite:
            text += f" ({self.n_nonfinite}/{self.n_resamples} resamples non-finite)"
        return text

    def __str__(self) -> str:
        return self.format()


def _decimals_for(error: float) -> int:
    """Decimals that show two significant digits of ``error`` (4 when the error is 0 or not finite)."""
    if not math.isfinite(error) or error <= 0:
        return 4
    return max(0, 1 - math.floor(math.log10(error)))


def resample_indices(
    n_entries: int, n_resamples: int = DEFAULT_RESAMPLES, seed: int = 0
) -> Iterator[np.ndarray]:
    """The entry indices of each resample (``n_entries`` draws with replacement), one at a time."""
    if not isinstance(n_resamples, int) or isinstance(n_resamples, bool) or n_resamples < 2:
        raise ValueError(f"n_resamples must be an integer >= 2, got {n_resamples!r}")
    if n_entries < 1:
        raise ValueError(f"bootstrap needs at least one entry, got {n_entries}")
    rng = np.random.default_rng(seed)
    for _ in range(n_resamples):
        yield rng.integers(0, n_entries, size=n_entries)


def _entry_arrays(arrays: Sequence) -> list[np.ndarray]:
    """The per-entry arrays as numpy arrays, checked to share their first-axis length."""
    if not arrays:
        raise ValueError("bootstrap needs at least one per-entry array")
    arrays = [np.asarray(array) for array in arrays]
    lengths = [len(array) if array.ndim else -1 for array in arrays]
    if min(lengths) < 0 or len(set(lengths)) != 1:
        shapes = [array.shape for array in arrays]
        raise ValueError(f"bootstrap arrays must be per-entry arrays of equal length, got shapes {shapes}")
    return arrays


def resampled_figures(
    figures: Callable[..., Mapping[str, float]],
    *arrays,
    n_resamples: int = DEFAULT_RESAMPLES,
    seed: int = 0,
) -> dict[str, np.ndarray]:
    """Each named figure on every resample: ``{name: (n_resamples,) array}``.

    ``figures(*resampled_arrays)`` returns a mapping of figure names to floats, so that figures
    that share work (e.g. one ROC curve) compute it once per resample.
    """
    arrays = _entry_arrays(arrays)
    rows = [
        dict(figures(*(array[indices] for array in arrays)))
        for indices in resample_indices(len(arrays[0]), n_resamples, seed)
    ]
    return {name: np.array([row[name] for row in rows], dtype=np.float64) for name in rows[0]}


def bootstrap_figures(
    figures: Callable[..., Mapping[str, float]],
    *arrays,
    n_resamples: int = DEFAULT_RESAMPLES,
    seed: int = 0,
) -> dict[str, Estimate]:
    """Each named figure of ``figures(*arrays)`` with its bootstrap error, all on the same resamples."""
    arrays = _entry_arrays(arrays)
    values = figures(*arrays)
    resampled = resampled_figures(figures, *arrays, n_resamples=n_resamples, seed=seed)
    return {name: Estimate.from_resamples(values[name], resampled[name]) for name in values}


def bootstrap(
    figure: Callable[..., float], *arrays, n_resamples: int = DEFAULT_RESAMPLES, seed: int = 0
) -> Estimate:
    """``figure(*arrays)`` with its bootstrap error, e.g. ``bootstrap(roc_auc, scores, is_signal)``."""
    estimates = bootstrap_figures(
        lambda *resampled: {"figure": figure(*resampled)}, *arrays, n_resamples=n_resamples, seed=seed
    )
    return estimates["figure"]


def classifier_figures(
    scores,
    is_signal,
    weights=None,
    signal_efficiencies: Sequence[float] = CLASSIFIER_EFFICIENCIES,
    n_resamples: int = DEFAULT_RESAMPLES,
    seed: int = 0,
) -> dict[str, Estimate]:
    """AUC and 1/eps_B at each signal efficiency, with bootstrap errors on shared resamples.

    Keys as in :func:`hepnn.metrics.classification.classification_summary`: ``auc`` and
    ``rej<100*eps_S>`` (``rej30``, ``rej50``). A resample is the multiset of entries drawn by
    :func:`resample_indices` with this seed (the same as in :func:`bootstrap_figures`), applied as
    per-entry multiplicities on the entries sorted once by score, so that each resample's ROC
    curve costs no new sort.
    """
    scores = np.asarray(scores, dtype=np.float64)
    is_signal = np.asarray(is_signal, dtype=bool)
    weights = np.ones_like(scores) if weights is None else np.asarray(weights, dtype=np.float64)
    _entry_arrays([scores, is_signal, weights])
    order = np.argsort(-scores, kind="stable")
    scores, is_signal, weights = scores[order], is_signal[order], weights[order]

    def figures(multiplicity: np.ndarray) -> dict[str, float]:
        eff_s, eff_b, _ = roc_curve(scores, is_signal, weights * multiplicity)
        out = {"auc": _area_under(eff_s, eff_b)}
        for efficiency in signal_efficiencies:
            eps_b = background_efficiency_at(eff_s, eff_b, efficiency)
            out[f"rej{round(100 * efficiency)}"] = float("inf") if eps_b == 0 else 1.0 / eps_b
        return out

    n = scores.size
    sorted_position = np.empty(n, dtype=np.int64)
    sorted_position[order] = np.arange(n)
    values = figures(np.ones(n))
    rows = [
        figures(np.bincount(sorted_position[indices], minlength=n).astype(np.float64))
        for indices in resample_indices(n, n_resamples, seed)
    ]
    return {
        name: Estimate.from_resamples(values[name], np.array([row[name] for row in rows])) for name in values
    }


def _area_under(eff_s: np.ndarray, eff_b: np.ndarray) -> float:
    """Area under eps_S(eps_B), the trapezoidal rule of :func:`hepnn.metrics.classification.roc_auc`."""
    return float(np.sum(np.diff(eff_b) * (eff_s[1:] + eff_s[:-1]) / 2))


def auc_difference(scores, reference_scores, is_signal, n_resamples: int = DEFAULT_RESAMPLES, seed: int = 0):
    """AUC of ``scores`` minus the AUC of ``reference_scores`` on the same entries, with the error of
    the difference from paired resamples (both taggers on the same resampled entries): the
    uncertainty that says whether one tagger beats the other, smaller than the two errors combined
    since the entries they share fluctuate together."""
    from hepnn.metrics.classification import roc_auc

    return bootstrap(
        lambda a, b, y: roc_auc(a, y) - roc_auc(b, y),
        scores,
        reference_scores,
        is_signal,
        n_resamples=n_resamples,
        seed=seed,
    )
