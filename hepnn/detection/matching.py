"""Matching of predicted jet boxes to truth objects, per event.

Greedy by decreasing score (equal scores: lower index first): each prediction takes the
still-unmatched truth object of its event closest to it, by the highest IoU with
``IoU >= iou_threshold`` or the smallest Delta R with ``Delta R < delta_r_threshold`` (rad, phi
wrapped); equally close truths go to the lower index. Each truth is matched at most once.
Class-aware (only the same class matches: for AP per class) or class-agnostic (for efficiency,
fake rate and resolutions).

All events are matched together (padded to the largest event, in chunks of events to bound the
memory), with a loop over the rank of a prediction within its event only: the cost is linear in
the number of events.
"""

from __future__ import annotations

from typing import NamedTuple

import torch

from hepnn.detection import _groups
from hepnn.detection.nms import DEFAULT_CHUNK_GROUPS, _check_threshold, overlaps


class Match(NamedTuple):
    """``pred_to_true`` (P,) the index of the truth matched to each prediction, -1 if none;
    ``true_to_pred`` (T,) the index of the prediction matched to each truth, -1 if none (both
    int64); ``quality`` (P,) the IoU or Delta R (rad) of each match, NaN where unmatched."""

    pred_to_true: torch.Tensor
    true_to_pred: torch.Tensor
    quality: torch.Tensor


def _checked(name: str, value, n: int, columns: int | None = None) -> torch.Tensor:
    value = torch.as_tensor(value)
    shape_ok = value.shape[:1] == (n,) and (value.ndim == 1 if columns is None else value.ndim == 2)
    if not shape_ok or (columns is not None and value.shape[1] < columns):
        expected = f"({n},)" if columns is None else f"({n}, {columns})"
        raise ValueError(f"{name} must be {expected}, got {tuple(value.shape)}")
    return value


def match(
    pred_event: torch.Tensor,
    pred_score: torch.Tensor,
    pred_boxes: torch.Tensor,
    true_event: torch.Tensor,
    true_boxes: torch.Tensor,
    *,
    pred_class: torch.Tensor | None = None,
    true_class: torch.Tensor | None = None,
    iou_threshold: float | None = None,
    delta_r_threshold: float | None = None,
    class_aware: bool = False,
    chunk_groups: int = DEFAULT_CHUNK_GROUPS,
) -> Match:
    """Greedy matching of P predictions to T truth objects of many events (see the module).

    Boxes are ``(P, 4)`` and ``(T, 4)`` = ``(eta, phi, w_eta, w_phi)``; with ``delta_r_threshold``
    only the first two columns are used (``(P, 2)`` suffices). ``pred_class`` and ``true_class``
    (non-negative integers) are needed with ``class_aware``. Exactly one threshold is given.
    """
    _check_threshold(iou_threshold, delta_r_threshold)
    pred_score = torch.as_tensor(pred_score)
    n_pred = pred_score.numel()
    pred_score = _checked("pred_score", pred_score, n_pred)
    if bool(torch.isnan(pred_score).any()):
        raise ValueError("pred_score must not be NaN")
    device = pred_score.device
    columns = 4 if iou_threshold is not None else 2
    pred_event = _checked("pred_event", pred_event, n_pred).long().to(device)
    true_event = torch.as_tensor(true_event).long().to(device)
    n_true = true_event.numel()
    true_event = _checked("true_event", true_event, n_true)
    pred_boxes = _checked("pred_boxes", pred_boxes, n_pred, columns).to(device)
    true_boxes = _checked("true_boxes", true_boxes, n_true, columns).to(device)
    dtype = torch.promote_types(pred_boxes.dtype, true_boxes.dtype)
    if not dtype.is_floating_point:
        dtype = torch.get_default_dtype()
    pred_boxes, true_boxes = pred_boxes[:, :columns].to(dtype), true_boxes[:, :columns].to(dtype)
    if columns == 2:  # Delta R needs only the centres; zero widths keep one code path for both
        pred_boxes = torch.nn.functional.pad(pred_boxes, (0, 2))
        true_boxes = torch.nn.functional.pad(true_boxes, (0, 2))

    pred_to_true = torch.full((n_pred,), -1, dtype=torch.long, device=device)
    true_to_pred = torch.full((n_true,), -1, dtype=torch.long, device=device)
    quality = torch.full((n_pred,), float("nan"), dtype=dtype, device=device)
    if n_pred == 0 or n_true == 0:
        return Match(pred_to_true, true_to_pred, quality)

    pred_cls = true_cls = None
    n_classes = 1
    if class_aware:
        if pred_class is None or true_class is None:
            raise ValueError("class-aware matching needs pred_class and true_class")
        pred_cls = _checked("pred_class", pred_class, n_pred).long().to(device)
        true_cls = _checked("true_class", true_class, n_true).long().to(device)
        if int(min(pred_cls.min(), true_cls.min())) < 0:
            raise ValueError("classes must be non-negative integers")
        n_classes = int(max(pred_cls.max(), true_cls.max())) + 1
    keys = torch.cat(
        [
            _groups.group_keys(pred_event, pred_cls, n_classes),
            _groups.group_keys(true_event, true_cls, n_classes),
        ]
    )
    unique, inverse = torch.unique(keys, return_inverse=True)
    n_groups = unique.numel()
    pred_lay = _groups.layout(inverse[:n_pred], n_groups, pred_score)
    true_lay = _groups.layout(inverse[n_pred:], n_groups, None)

    for first, end in _groups.chunks(n_groups, chunk_groups):
        preds, pred_valid = _groups.padded(pred_boxes, pred_lay, first, end)
        truths, true_valid = _groups.padded(true_boxes, true_lay, first, end)
        if preds.shape[1] == 0 or truths.shape[1] == 0:
            continue
        similarity, close = overlaps(preds, truths, iou_threshold, delta_r_threshold, iou_inclusive=True)
        candidate = torch.where(close & true_valid[:, None, :], similarity, -torch.inf)
        available = true_valid.clone()
        matched = torch.full(pred_valid.shape, -1, dtype=torch.long, device=device)
        for k in range(preds.shape[1]):
            options = torch.where(available, candidate[:, k, :], -torch.inf)
            best = options.argmax(dim=1, keepdim=True)
            found = (options.gather(1, best) > -torch.inf) & pred_valid[:, k, None]
            matched[:, k] = torch.where(found[:, 0], best[:, 0], -1)
            available.scatter_(1, best, available.gather(1, best) & ~found)

        start, stop = _groups.entry_range(pred_lay, first, end)
        rows, cols = pred_lay.group[start:stop] - first, pred_lay.position[start:stop]
        local = matched[rows, cols]
        hit = local >= 0
        pred_index = pred_lay.order[start:stop][hit]
        group = pred_lay.group[start:stop][hit]
        true_index = true_lay.order[true_lay.starts[group] + local[hit]]
        pred_to_true[pred_index] = true_index
        true_to_pred[true_index] = pred_index
        quality[pred_index] = similarity[rows[hit], cols[hit], local[hit]].abs()
    return Match(pred_to_true, true_to_pred, quality)
