"""Figures of merit of jet detection over a whole test set (numpy): AP per class and mAP,
efficiency and fake rate in bins of pT, and the pT and mass response of matched jets.

Objects are flat columns over the test set, one entry per object with its ``event`` index:
predictions ``pred`` with ``event``, ``score``, ``eta``, ``phi`` (rad), ``w_eta``, ``w_phi``,
``class``, ``pt``, ``mass`` (GeV), and truths ``truth`` with the same keys but ``score``. The
widths are needed for IoU matching only, ``class`` for AP only, ``pt``/``mass`` for the binned
figures and the response only. Matching is that of :func:`hepnn.detection.matching.match`.

- **AP** of a class (PASCAL VOC, all-point interpolation): the predictions of that class of the
  whole test set are ranked by decreasing score (equal scores: input order); a prediction is a
  true positive when class-aware matching gives it a truth. With the precision ``p_k`` and
  recall ``r_k`` after the k-th prediction, AP is the area under the monotone envelope
  ``p~(r) = max_{r_k >= r} p_k``: ``sum_k (r_k - r_{k-1}) p~(r_k)``. NaN for a class without
  truth objects; **mAP** is the mean over the classes that have truth objects (a class with truth
  but no predictions counts with AP = 0).
- **Efficiency**: the fraction of truth objects matched (class-agnostic) by a prediction with
  ``score >= score_threshold``, in bins of truth pT; **fake rate**: the fraction of those
  predictions left unmatched, in bins of predicted pT. Errors are binomial,
  ``sqrt(f (1 - f) / n)`` (0 at f = 0 or 1; NaN in empty bins). Entries outside the bin edges
  are left out of the bins but not of the overall fractions.
- **Response** of matched pairs: ``pred / true - 1`` of pT and of mass (dimensionless); the bias
  is its median and the resolution its 68 % half-width ``(q84 - q16) / 2`` (the conventions of
  :mod:`hepnn.metrics.regression` and :mod:`hepnn.pileup.figures`, but relative). Pairs with a
  non-positive or non-finite truth are left out.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from hepnn.detection.matching import match
from hepnn.metrics.bootstrap import DEFAULT_RESAMPLES, Estimate, bootstrap_figures
from hepnn.metrics.regression import half_width

DEFAULT_IOU_THRESHOLD = 0.5


def _ranked(scores, is_true_positive) -> tuple[np.ndarray, np.ndarray]:
    scores = np.asarray(scores, dtype=np.float64)
    is_true_positive = np.asarray(is_true_positive, dtype=bool)
    if scores.ndim != 1 or scores.shape != is_true_positive.shape:
        raise ValueError(
            f"scores {scores.shape} and is_true_positive {is_true_positive.shape} must be 1-d of equal length"
        )
    order = np.argsort(-scores, kind="stable")
    return scores[order], is_true_positive[order]


def precision_recall(scores, is_true_positive, n_truth: int) -> tuple[np.ndarray, np.ndarray]:
    """Precision and recall after each prediction ranked by decreasing score (``(P,)`` each)."""
    _, tp = _ranked(scores, is_true_positive)
    true_positives = np.cumsum(tp)
    precision = true_positives / np.arange(1, tp.size + 1)
    recall = true_positives / n_truth if n_truth > 0 else np.full(tp.size, np.nan)
    return precision, recall


def average_precision(scores, is_true_positive, n_truth: int) -> float:
    """Area under the precision-recall curve of ranked predictions, VOC all-point interpolation
    (see the module): 0 without predictions, NaN without truth objects."""
    if n_truth <= 0:
        return float("nan")
    precision, recall = precision_recall(scores, is_true_positive, n_truth)
    if precision.size == 0:
        return 0.0
    envelope = np.maximum.accumulate(precision[::-1])[::-1]
    steps = np.diff(np.concatenate([[0.0], recall]))
    return float(np.sum(steps * envelope))


@dataclass(frozen=True)
class AveragePrecision:
    """AP per class: ``classes`` (int), ``ap``, ``n_truth`` and ``n_pred`` per class (arrays in
    the same order), ``mean`` the mAP over classes with truth objects (NaN if none)."""

    classes: np.ndarray
    ap: np.ndarray
    n_truth: np.ndarray
    n_pred: np.ndarray
    mean: float

    def as_dict(self) -> dict[str, float]:
        """``{"map": mAP, "ap_<class>": AP, ...}``."""
        out = {"map": self.mean}
        out.update({f"ap_{int(c)}": float(a) for c, a in zip(self.classes, self.ap, strict=True)})
        return out


def _column(objects: Mapping, key: str, what: str) -> np.ndarray:
    if key not in objects:
        raise KeyError(f"{what} needs the column {key!r}, got {sorted(objects)}")
    return np.asarray(objects[key])


def _boxes(objects: Mapping, what: str, with_widths: bool) -> torch.Tensor:
    keys = ("eta", "phi", "w_eta", "w_phi") if with_widths else ("eta", "phi")
    columns = [_column(objects, key, what).astype(np.float64) for key in keys]
    return torch.from_numpy(np.stack(columns, axis=1) if columns[0].size else np.zeros((0, len(keys))))


def _match(
    pred: Mapping,
    truth: Mapping,
    selected: np.ndarray | None,
    iou_threshold: float | None,
    delta_r_threshold: float | None,
    class_aware: bool,
) -> tuple[np.ndarray, np.ndarray]:
    """``(pred_to_true, true_to_pred)`` (numpy, -1 unmatched) of the predictions ``selected``
    (a mask; all if None), indexed as in ``pred`` (unselected: -1)."""
    with_widths = iou_threshold is not None
    n_pred = len(_column(pred, "score", "pred"))
    index = np.arange(n_pred) if selected is None else np.flatnonzero(selected)
    pick = torch.from_numpy(index)
    pred_class = true_class = None
    if class_aware:
        pred_class = torch.from_numpy(_column(pred, "class", "pred").astype(np.int64))[pick]
        true_class = torch.from_numpy(_column(truth, "class", "truth").astype(np.int64))
    result = match(
        torch.from_numpy(_column(pred, "event", "pred").astype(np.int64))[pick],
        torch.from_numpy(_column(pred, "score", "pred").astype(np.float64))[pick],
        _boxes(pred, "pred", with_widths)[pick],
        torch.from_numpy(_column(truth, "event", "truth").astype(np.int64)),
        _boxes(truth, "truth", with_widths),
        pred_class=pred_class,
        true_class=true_class,
        iou_threshold=iou_threshold,
        delta_r_threshold=delta_r_threshold,
        class_aware=class_aware,
    )
    pred_to_true = np.full(n_pred, -1, dtype=np.int64)
    pred_to_true[index] = result.pred_to_true.numpy()
    local = result.true_to_pred.numpy()
    true_to_pred = np.full(local.shape, -1, dtype=np.int64)
    true_to_pred[local >= 0] = index[local[local >= 0]]
    return pred_to_true, true_to_pred


def _thresholds(
    iou_threshold: float | None, delta_r_threshold: float | None
) -> tuple[float | None, float | None]:
    """The IoU threshold by default (0.5), unless a Delta R threshold is given."""
    if delta_r_threshold is not None:
        if iou_threshold is not None:
            raise ValueError("give iou_threshold or delta_r_threshold, not both")
        return None, delta_r_threshold
    return (DEFAULT_IOU_THRESHOLD if iou_threshold is None else iou_threshold), None


def average_precision_per_class(
    pred: Mapping,
    truth: Mapping,
    *,
    iou_threshold: float | None = None,
    delta_r_threshold: float | None = None,
    classes: Sequence[int] | None = None,
) -> AveragePrecision:
    """AP of each class (default: every class of the truths and the predictions) and mAP, from
    class-aware matching at ``iou_threshold`` (default 0.5) or ``delta_r_threshold`` (rad)."""
    iou_threshold, delta_r_threshold = _thresholds(iou_threshold, delta_r_threshold)
    pred_class = _column(pred, "class", "AP").astype(np.int64)
    true_class = _column(truth, "class", "AP").astype(np.int64)
    scores = _column(pred, "score", "AP").astype(np.float64)
    pred_to_true, _ = _match(pred, truth, None, iou_threshold, delta_r_threshold, class_aware=True)
    if classes is None:
        classes = np.union1d(np.unique(true_class), np.unique(pred_class))
    classes = np.asarray(classes, dtype=np.int64)
    ap, n_truth, n_pred = [], [], []
    for c in classes:
        mine = pred_class == c
        n_truth.append(int(np.sum(true_class == c)))
        n_pred.append(int(np.sum(mine)))
        ap.append(average_precision(scores[mine], pred_to_true[mine] >= 0, n_truth[-1]))
    ap = np.asarray(ap, dtype=np.float64)
    n_truth = np.asarray(n_truth, dtype=np.int64)
    with_truth = n_truth > 0
    mean = float(np.mean(ap[with_truth])) if np.any(with_truth) else float("nan")
    return AveragePrecision(classes, ap, n_truth, np.asarray(n_pred, dtype=np.int64), mean)


@dataclass(frozen=True)
class BinnedFraction:
    """A fraction with binomial errors in bins of ``edges`` (``(n_bins + 1,)``, GeV for pT):
    ``passed`` and ``total`` counts per bin, ``fraction`` and ``error`` per bin (NaN where empty),
    and the ``overall`` fraction with its ``overall_error`` over all entries."""

    edges: np.ndarray
    passed: np.ndarray
    total: np.ndarray
    fraction: np.ndarray
    error: np.ndarray
    overall: float
    overall_error: float


def _binomial(passed, total) -> tuple[np.ndarray, np.ndarray]:
    passed, total = np.asarray(passed, dtype=np.float64), np.asarray(total, dtype=np.float64)
    safe = np.where(total > 0, total, 1.0)
    fraction = np.where(total > 0, passed / safe, np.nan)
    error = np.where(total > 0, np.sqrt(fraction * (1.0 - fraction) / safe), np.nan)
    return fraction, error


def binned_fraction(values, passed, edges) -> BinnedFraction:
    """The fraction of entries that ``passed`` (bool per entry) in bins of ``values`` (histogram
    bins of ``edges``, the last one closed), with binomial errors."""
    values = np.asarray(values, dtype=np.float64)
    passed = np.asarray(passed, dtype=bool)
    edges = np.asarray(edges, dtype=np.float64)
    if values.shape != passed.shape or values.ndim != 1:
        raise ValueError(f"values {values.shape} and passed {passed.shape} must be 1-d of equal length")
    if edges.ndim != 1 or edges.size < 2 or np.any(np.diff(edges) <= 0):
        raise ValueError(f"edges must be increasing with at least two entries, got {edges}")
    total = np.histogram(values, bins=edges)[0]
    n_passed = np.histogram(values[passed], bins=edges)[0]
    fraction, error = _binomial(n_passed, total)
    overall, overall_error = _binomial(np.sum(passed), passed.size)
    return BinnedFraction(edges, n_passed, total, fraction, error, float(overall), float(overall_error))


@dataclass(frozen=True)
class Response:
    """Median (``bias``) and 68 % half-width (``resolution``) of ``pred / true - 1`` over ``n``
    matched pairs (dimensionless; NaN when n = 0)."""

    bias: float
    resolution: float
    n: int


def relative_response(predicted, true) -> np.ndarray:
    """``pred / true - 1`` of the pairs with a positive, finite truth and a finite prediction."""
    predicted, true = np.asarray(predicted, dtype=np.float64), np.asarray(true, dtype=np.float64)
    if predicted.shape != true.shape or predicted.ndim != 1:
        raise ValueError(f"predicted {predicted.shape} and true {true.shape} must be 1-d of equal length")
    good = np.isfinite(predicted) & np.isfinite(true) & (true > 0)
    return predicted[good] / true[good] - 1.0


def response(predicted, true) -> Response:
    """Bias and resolution of ``pred / true - 1`` (e.g. pT or mass of matched jets, GeV)."""
    ratio = relative_response(predicted, true)
    bias = float(np.median(ratio)) if ratio.size else float("nan")
    return Response(bias, half_width(ratio), int(ratio.size))


def response_figures(pred_pt, true_pt, pred_mass, true_mass) -> dict[str, float]:
    """``pt_bias``, ``pt_resolution``, ``mass_bias``, ``mass_resolution`` of matched pairs
    (relative, dimensionless)."""
    pt, mass = response(pred_pt, true_pt), response(pred_mass, true_mass)
    return {
        "pt_bias": pt.bias,
        "pt_resolution": pt.resolution,
        "mass_bias": mass.bias,
        "mass_resolution": mass.resolution,
    }


def response_estimates(
    pred_pt, true_pt, pred_mass, true_mass, n_resamples: int = DEFAULT_RESAMPLES, seed: int = 0
) -> dict[str, Estimate]:
    """:func:`response_figures` with bootstrap errors over the matched pairs."""
    arrays = [np.asarray(a, dtype=np.float64) for a in (pred_pt, true_pt, pred_mass, true_mass)]
    return bootstrap_figures(response_figures, *arrays, n_resamples=n_resamples, seed=seed)


@dataclass(frozen=True)
class DetectionFigures:
    """All figures of :func:`detection_figures`; ``pred_to_true`` and ``true_to_pred`` are the
    class-agnostic matches of the predictions above the score threshold (-1: none), for plots."""

    average_precision: AveragePrecision
    efficiency: BinnedFraction
    fake_rate: BinnedFraction
    pt_response: Response
    mass_response: Response
    pred_to_true: np.ndarray = field(repr=False)
    true_to_pred: np.ndarray = field(repr=False)

    def summary(self) -> dict[str, float]:
        """Flat floats for tables and loggers: ``map``, ``ap_<class>``, ``efficiency``,
        ``fake_rate``, ``pt_bias``, ``pt_resolution``, ``mass_bias``, ``mass_resolution``."""
        out = self.average_precision.as_dict()
        out["efficiency"] = self.efficiency.overall
        out["fake_rate"] = self.fake_rate.overall
        for name, r in (("pt", self.pt_response), ("mass", self.mass_response)):
            out[f"{name}_bias"] = r.bias
            out[f"{name}_resolution"] = r.resolution
        return out


def detection_figures(
    pred: Mapping,
    truth: Mapping,
    pt_edges,
    *,
    score_threshold: float = 0.5,
    iou_threshold: float | None = None,
    delta_r_threshold: float | None = None,
) -> DetectionFigures:
    """AP per class over all predictions, then, for the predictions with
    ``score >= score_threshold`` matched class-agnostically, efficiency in bins of truth pT,
    fake rate in bins of predicted pT (``pt_edges``, GeV) and the pT and mass response of the
    matched pairs. Matching at ``iou_threshold`` (default 0.5) or ``delta_r_threshold`` (rad)."""
    iou_threshold, delta_r_threshold = _thresholds(iou_threshold, delta_r_threshold)
    ap = average_precision_per_class(
        pred, truth, iou_threshold=iou_threshold, delta_r_threshold=delta_r_threshold
    )
    selected = _column(pred, "score", "pred") >= score_threshold
    pred_to_true, true_to_pred = _match(pred, truth, selected, iou_threshold, delta_r_threshold, False)
    pred_pt, true_pt = _column(pred, "pt", "pred"), _column(truth, "pt", "truth")
    efficiency = binned_fraction(true_pt, true_to_pred >= 0, pt_edges)
    fake_rate = binned_fraction(pred_pt[selected], pred_to_true[selected] < 0, pt_edges)
    pairs = pred_to_true >= 0
    partner = pred_to_true[pairs]
    pt_response = response(pred_pt[pairs], true_pt[partner])
    mass_response = response(_column(pred, "mass", "pred")[pairs], _column(truth, "mass", "truth")[partner])
    return DetectionFigures(ap, efficiency, fake_rate, pt_response, mass_response, pred_to_true, true_to_pred)


def matched_truth(
    pred: Mapping,
    truth: Mapping,
    *,
    score_threshold: float = 0.5,
    iou_threshold: float | None = None,
    delta_r_threshold: float | None = None,
) -> np.ndarray:
    """For every truth object, the index of the prediction (``score >= score_threshold``,
    class-agnostic) it is matched to, or -1 (the matching of :func:`detection_figures`)."""
    iou_threshold, delta_r_threshold = _thresholds(iou_threshold, delta_r_threshold)
    selected = _column(pred, "score", "pred") >= score_threshold
    return _match(pred, truth, selected, iou_threshold, delta_r_threshold, False)[1]


def common_response_figures(
    preds: Sequence[Mapping],
    truth: Mapping,
    score_thresholds: Sequence[float],
    *,
    iou_threshold: float | None = None,
    delta_r_threshold: float | None = None,
) -> list[dict[str, float]]:
    """:func:`response_figures` of several reconstructions (``preds``, each with its score
    threshold) on the same truth objects: those that every one of them found. Resolutions of
    different reconstructions are comparable only on the same jets, since a method that finds
    fewer jets may drop the hard-to-measure ones. Each dict also holds ``n_common``."""
    found = [
        matched_truth(
            pred,
            truth,
            score_threshold=threshold,
            iou_threshold=iou_threshold,
            delta_r_threshold=delta_r_threshold,
        )
        for pred, threshold in zip(preds, score_thresholds, strict=True)
    ]
    common = np.logical_and.reduce([f >= 0 for f in found])
    true_pt, true_mass = _column(truth, "pt", "truth")[common], _column(truth, "mass", "truth")[common]
    out = []
    for pred, partner in zip(preds, found, strict=True):
        index = partner[common]
        pred_pt, pred_mass = _column(pred, "pt", "pred")[index], _column(pred, "mass", "pred")[index]
        figures = response_figures(pred_pt, true_pt, pred_mass, true_mass)
        out.append({**figures, "n_common": float(common.sum())})
    return out
