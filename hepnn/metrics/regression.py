"""Figures of merit for regression: bias and resolution per target, energy, direction and core.

Plain numpy functions over 1-d arrays of predictions and truths (one entry per event).
Conventions (those of air-shower reconstruction papers):

- **Bias**: the median of ``prediction - truth`` (units of the target).
- **Resolution**: half the width of the central 68 % interval of ``prediction - truth``, i.e.
  ``(q84 - q16) / 2`` (units of the target). For a Gaussian this is its standard deviation; unlike
  the standard deviation it is not dominated by a few badly reconstructed events.
- **Energy** (given as ``log10(E)``, E in any unit, e.g. eV): the relative deviation
  ``(E_pred - E_true) / E_true = 10**(log10 E_pred - log10 E_true) - 1`` (dimensionless);
  the energy bias is its median and the energy resolution its 68 % half-width. Predictions
  0.0414 higher in log10 are 10 % too high.
- **Direction** (axis as a 3-vector): the opening angle between the true and the reconstructed
  axis in degrees; the predicted vector need not be normalised (only its direction counts). The
  angular resolution is the 68 % quantile of the opening angle (not a half-width: the angle
  is positive).
- **Core** (two coordinates, e.g. metres in the shower plane or the ground): the distance
  between true and reconstructed core; the core resolution is its 68 % quantile (same unit).

Empty inputs give NaN. Quantiles use numpy's default (linear interpolation between order
statistics).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

CONTAINMENT = 0.68


def _as_1d(values, name: str) -> np.ndarray:
    array = np.asarray(values, dtype=np.float64)
    if array.ndim != 1:
        raise ValueError(f"{name} must be a 1-d array, got shape {array.shape}")
    return array


def _residuals(predicted, true) -> np.ndarray:
    predicted, true = _as_1d(predicted, "predicted"), _as_1d(true, "true")
    if predicted.shape != true.shape:
        raise ValueError(f"predicted {predicted.shape} and true {true.shape} must have the same length")
    return predicted - true


def half_width(values, fraction: float = CONTAINMENT) -> float:
    """Half the width of the central ``fraction`` interval: ``(q[(1+f)/2] - q[(1-f)/2]) / 2``.

    Same unit as ``values``; NaN for an empty array.
    """
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"fraction must be in (0, 1), got {fraction}")
    values = _as_1d(values, "values")
    if values.size == 0:
        return float("nan")
    low, high = np.quantile(values, [(1.0 - fraction) / 2.0, (1.0 + fraction) / 2.0])
    return float((high - low) / 2.0)


def quantile(values, fraction: float = CONTAINMENT) -> float:
    """The ``fraction`` quantile (e.g. 68 % of the values lie below it); NaN for an empty array."""
    values = _as_1d(values, "values")
    return float(np.quantile(values, fraction)) if values.size else float("nan")


def bias(predicted, true) -> float:
    """Median of ``predicted - true`` (unit of the target); NaN for empty inputs."""
    residuals = _residuals(predicted, true)
    return float(np.median(residuals)) if residuals.size else float("nan")


def resolution(predicted, true, fraction: float = CONTAINMENT) -> float:
    """68 % half-width of ``predicted - true`` (unit of the target)."""
    return half_width(_residuals(predicted, true), fraction)


def relative_deviation_from_log10(log10_predicted, log10_true) -> np.ndarray:
    """``(E_pred - E_true) / E_true`` from ``log10 E`` (dimensionless; the unit of E cancels)."""
    return np.power(10.0, _residuals(log10_predicted, log10_true)) - 1.0


def energy_bias(log10_predicted, log10_true) -> float:
    """Median relative energy deviation, e.g. 0.1 for predictions 10 % too high."""
    deviation = relative_deviation_from_log10(log10_predicted, log10_true)
    return float(np.median(deviation)) if deviation.size else float("nan")


def energy_resolution(log10_predicted, log10_true, fraction: float = CONTAINMENT) -> float:
    """68 % half-width of ``(E_pred - E_true) / E_true`` (dimensionless, e.g. 0.08 for 8 %)."""
    return half_width(relative_deviation_from_log10(log10_predicted, log10_true), fraction)


def opening_angle_deg(predicted, true) -> np.ndarray:
    """Angle in degrees between vectors ``(N, 3)`` (neither needs unit length).

    Computed as ``atan2(|a x b|, a . b)`` (accurate for small angles too); NaN where either
    vector has zero length (no direction).
    """
    a, b = np.asarray(predicted, dtype=np.float64), np.asarray(true, dtype=np.float64)
    if a.ndim != 2 or a.shape[1] != 3 or a.shape != b.shape:
        raise ValueError(f"predicted {a.shape} and true {b.shape} must both be (N, 3) arrays of vectors")
    norm_a, norm_b = np.linalg.norm(a, axis=1), np.linalg.norm(b, axis=1)
    zero = (norm_a == 0) | (norm_b == 0)
    # normalised first, so that very long or very short vectors do not overflow or underflow
    a = a / np.where(zero, 1.0, norm_a)[:, None]
    b = b / np.where(zero, 1.0, norm_b)[:, None]
    angle = np.degrees(np.arctan2(np.linalg.norm(np.cross(a, b), axis=1), np.einsum("ij,ij->i", a, b)))
    return np.where(zero, np.nan, angle)


def angular_resolution_deg(predicted, true, fraction: float = CONTAINMENT) -> float:
    """68 % quantile of the opening angle (degrees) between predicted and true axes ``(N, 3)``."""
    return quantile(opening_angle_deg(predicted, true), fraction)


def core_distance(predicted, true) -> np.ndarray:
    """Distance between predicted and true cores ``(N, 2)`` (unit of the coordinates, e.g. m)."""
    a, b = np.asarray(predicted, dtype=np.float64), np.asarray(true, dtype=np.float64)
    if a.ndim != 2 or a.shape[1] != 2 or a.shape != b.shape:
        raise ValueError(f"predicted {a.shape} and true {b.shape} must both be (N, 2) arrays of positions")
    return np.hypot(*(a - b).T)


def core_resolution(predicted, true, fraction: float = CONTAINMENT) -> float:
    """68 % quantile of the core distance (unit of the coordinates, e.g. m)."""
    return quantile(core_distance(predicted, true), fraction)


def regression_summary(
    predicted: Mapping[str, np.ndarray],
    true: Mapping[str, np.ndarray],
    energy_target: str | None = None,
    axis_targets: Sequence[str] | None = None,
    core_targets: Sequence[str] | None = None,
    fraction: float = CONTAINMENT,
) -> dict[str, float]:
    """All figures for predictions and truths given per target name (same names in both).

    Keys: ``<target>_bias``, ``<target>_resolution`` for every target; with ``energy_target``
    (a target holding log10 E) ``energy_bias`` and ``energy_resolution``; with ``axis_targets``
    (three names: x, y, z) ``angular_resolution_deg``; with ``core_targets`` (two names)
    ``core_resolution_m`` (in the unit of the core targets, metres by convention).
    """
    out: dict[str, float] = {}
    for name in predicted:
        out[f"{name}_bias"] = bias(predicted[name], true[name])
        out[f"{name}_resolution"] = resolution(predicted[name], true[name], fraction)
    if energy_target is not None:
        out["energy_bias"] = energy_bias(predicted[energy_target], true[energy_target])
        out["energy_resolution"] = energy_resolution(predicted[energy_target], true[energy_target], fraction)
    if axis_targets:
        stack = lambda values: np.stack([values[name] for name in axis_targets], axis=1)  # noqa: E731
        out["angular_resolution_deg"] = angular_resolution_deg(stack(predicted), stack(true), fraction)
    if core_targets:
        stack = lambda values: np.stack([values[name] for name in core_targets], axis=1)  # noqa: E731
        out["core_resolution_m"] = core_resolution(stack(predicted), stack(true), fraction)
    return out
