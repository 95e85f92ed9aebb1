"""Physics figures of merit for classifiers: ROC curve, AUC, background rejection, accuracy.

Conventions (those of the top-tagging literature):

- The ROC curve is the piecewise-linear curve through the points (eps_S, eps_B) obtained by
  cutting on the score at every distinct score value, from the highest down, starting at
  (0, 0) and ending at (1, 1). eps_S (eps_B) is the (weighted) fraction of signal (background)
  entries with score >= the cut. Tied scores enter or leave together.
- AUC is the area under eps_S as a function of eps_B (trapezoidal rule on that curve):
  0.5 for a random classifier, 1 for a perfect one.
- The background efficiency at a signal efficiency ``t`` is read off that same curve: on the
  segment where the curve first reaches eps_S = t, eps_B is interpolated linearly in eps_S
  (the lowest eps_B at which the curve has eps_S = t). The background rejection is 1/eps_B
  (``inf`` if no background passes).
"""

from __future__ import annotations

import numpy as np


def roc_curve(scores, is_signal, weights=None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Signal efficiencies, background efficiencies and score thresholds of the ROC curve.

    Returns arrays starting with the point (0, 0) at threshold +inf.
    """
    scores = np.asarray(scores, dtype=np.float64)
    is_signal = np.asarray(is_signal, dtype=bool)
    weights = np.ones_like(scores) if weights is None else np.asarray(weights, dtype=np.float64)
    if scores.shape != is_signal.shape or scores.shape != weights.shape or scores.ndim != 1:
        raise ValueError(
            f"scores {scores.shape}, is_signal {is_signal.shape} and weights {weights.shape} "
            "must be 1-d arrays of equal length"
        )
    total_s, total_b = weights[is_signal].sum(), weights[~is_signal].sum()
    if total_s <= 0 or total_b <= 0:
        raise ValueError(
            f"ROC curve needs both signal and background (signal weight {total_s}, "
            f"background weight {total_b})"
        )
    order = np.argsort(-scores, kind="stable")
    s_sorted, sig_sorted, w_sorted = scores[order], is_signal[order], weights[order]
    cum_s = np.cumsum(np.where(sig_sorted, w_sorted, 0.0))
    cum_b = np.cumsum(np.where(sig_sorted, 0.0, w_sorted))
    last_of_tie = np.r_[s_sorted[1:] != s_sorted[:-1], True]
    eff_s = np.r_[0.0, cum_s[last_of_tie] / total_s]
    eff_b = np.r_[0.0, cum_b[last_of_tie] / total_b]
    thresholds = np.r_[np.inf, s_sorted[last_of_tie]]
    return eff_s, eff_b, thresholds


def roc_auc(scores, is_signal, weights=None) -> float:
    """Area under the ROC curve (eps_S versus eps_B)."""
    eff_s, eff_b, _ = roc_curve(scores, is_signal, weights)
    return float(np.sum(np.diff(eff_b) * (eff_s[1:] + eff_s[:-1]) / 2))


def background_efficiency_at(eff_s: np.ndarray, eff_b: np.ndarray, target: float) -> float:
    """eps_B of the ROC curve at signal efficiency ``target`` (see the module docstring)."""
    if not 0 < target <= 1:
        raise ValueError(f"signal efficiency must be in (0, 1], got {target}")
    k = int(np.searchsorted(eff_s, target, side="left"))
    if eff_s[k] == target:
        return float(eff_b[k])
    s0, s1, b0, b1 = eff_s[k - 1], eff_s[k], eff_b[k - 1], eff_b[k]
    return float(b0 + (target - s0) * (b1 - b0) / (s1 - s0))


def background_rejection(scores, is_signal, signal_efficiency: float, weights=None) -> float:
    """1/eps_B at the given signal efficiency (``inf`` when no background passes)."""
    eff_s, eff_b, _ = roc_curve(scores, is_signal, weights)
    eps_b = background_efficiency_at(eff_s, eff_b, signal_efficiency)
    return float("inf") if eps_b == 0 else 1.0 / eps_b


def accuracy(probabilities, labels) -> float:
    """Fraction of entries whose most probable class is the true one."""
    probabilities = np.asarray(probabilities)
    return float(np.mean(probabilities.argmax(axis=1) == np.asarray(labels)))


def classification_summary(
    probabilities, labels, classes, signal_class: str, signal_efficiencies=(0.3, 0.5)
) -> dict[str, float]:
    """Accuracy, signal-vs-rest AUC and 1/eps_B at fixed eps_S, and one-vs-rest AUC of every class.

    ``probabilities`` is ``(N, K)``; the signal score is the signal class's probability.
    Keys: ``acc``, ``auc``, ``rej<100*eps_S>`` (e.g. ``rej30``), ``auc_<class>`` for K > 2;
    NaN where the entries lack a class the figure needs.
    """
    probabilities = np.asarray(probabilities)
    labels = np.asarray(labels)
    s = list(classes).index(signal_class)
    out = {"acc": accuracy(probabilities, labels), "auc": _auc_or_nan(probabilities[:, s], labels == s)}
    for eff in signal_efficiencies:
        is_signal = labels == s
        both = is_signal.any() and not is_signal.all()
        out[f"rej{round(100 * eff)}"] = (
            background_rejection(probabilities[:, s], is_signal, eff) if both else float("nan")
        )
    if len(classes) > 2:
        for k, name in enumerate(classes):
            out[f"auc_{name}"] = _auc_or_nan(probabilities[:, k], labels == k)
    return out


def _auc_or_nan(scores, is_signal) -> float:
    """The AUC, or NaN where one side is missing (e.g. a class absent from a small test set)."""
    return roc_auc(scores, is_signal) if is_signal.any() and not is_signal.all() else float("nan")


def confusion_matrix(probabilities, labels, n_classes: int) -> np.ndarray:
    """Counts ``(K, K)``: row = true class, column = most probable class."""
    predicted = np.asarray(probabilities).argmax(axis=1)
    labels = np.asarray(labels)
    return np.bincount(labels * n_classes + predicted, minlength=n_classes * n_classes).reshape(
        n_classes, n_classes
    )
