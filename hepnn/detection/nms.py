"""Greedy non-maximum suppression of jet boxes in (eta, phi), for the boxes of many events at once,
and the selection of the boxes of a batch of dense per-cell predictions at inference.

Greedy: within an event the boxes are visited by decreasing score (equal scores: lower index
first); a box is kept unless a kept box of higher rank overlaps it, by IoU above
``iou_threshold`` or by Delta R below ``delta_r_threshold`` (rad; phi wrapped). Boxes of
different events never suppress each other; with ``class_aware`` only boxes of the same class
do. The events are processed together (padded to the largest event), with a loop over the rank
within an event only.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import torch

from hepnn.detection import _groups
from hepnn.detection.boxes import pairwise_delta_r, pairwise_iou

DEFAULT_CHUNK_GROUPS = 1024


def _check_threshold(iou_threshold: float | None, delta_r_threshold: float | None) -> None:
    if (iou_threshold is None) == (delta_r_threshold is None):
        raise ValueError(
            f"give exactly one of iou_threshold and delta_r_threshold, got {iou_threshold!r} "
            f"and {delta_r_threshold!r}"
        )


def overlaps(
    a: torch.Tensor,
    b: torch.Tensor,
    iou_threshold: float | None,
    delta_r_threshold: float | None,
    iou_inclusive: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(similarity, close)`` of every box of ``a`` ``(..., N, 4)`` with every box of ``b``
    ``(..., M, 4)``: the IoU and ``IoU > iou_threshold`` (``>=`` with ``iou_inclusive``), or minus
    Delta R and ``Delta R < delta_r_threshold`` (so that a larger similarity is a closer pair)."""
    if iou_threshold is not None:
        iou = pairwise_iou(a, b)
        return iou, (iou >= iou_threshold) if iou_inclusive else (iou > iou_threshold)
    delta_r = pairwise_delta_r(a[..., 0], a[..., 1], b[..., 0], b[..., 1])
    return -delta_r, delta_r < delta_r_threshold


def _events_and_classes(
    n: int, device, event: torch.Tensor | None, classes: torch.Tensor | None, class_aware: bool
) -> tuple[torch.Tensor, torch.Tensor | None]:
    event = torch.zeros(n, dtype=torch.long, device=device) if event is None else torch.as_tensor(event)
    if event.shape != (n,):
        raise ValueError(f"event must have one entry per box ({n}), got shape {tuple(event.shape)}")
    if not class_aware:
        return event.long(), None
    if classes is None:
        raise ValueError("class_aware suppression needs the class of every box")
    classes = torch.as_tensor(classes)
    if classes.shape != (n,):
        raise ValueError(f"classes must have one entry per box ({n}), got shape {tuple(classes.shape)}")
    if classes.numel() and int(classes.min()) < 0:
        raise ValueError("classes must be non-negative integers")
    return event.long(), classes.long()


def nms(
    boxes: torch.Tensor,
    scores: torch.Tensor,
    event: torch.Tensor | None = None,
    classes: torch.Tensor | None = None,
    *,
    iou_threshold: float | None = None,
    delta_r_threshold: float | None = None,
    class_aware: bool = False,
    chunk_groups: int = DEFAULT_CHUNK_GROUPS,
) -> torch.Tensor:
    """Indices (int64) of the boxes ``(N, 4)`` = ``(eta, phi, w_eta, w_phi)`` kept by greedy NMS,
    sorted by event, then by decreasing score, then by index.

    ``event`` (``(N,)``, default all 0) the event of each box; ``classes`` (``(N,)``) needed with
    ``class_aware``. Exactly one of ``iou_threshold`` (suppress where IoU > threshold) and
    ``delta_r_threshold`` (suppress where Delta R < threshold) is given. Memory: about
    ``chunk_groups * L**2`` for L the most boxes of one event (and class).
    """
    _check_threshold(iou_threshold, delta_r_threshold)
    boxes, scores = torch.as_tensor(boxes), torch.as_tensor(scores)
    n = scores.numel()
    if boxes.shape != (n, 4) or scores.shape != (n,):
        raise ValueError(
            f"boxes must be (N, 4) and scores (N,), got {tuple(boxes.shape)}, {tuple(scores.shape)}"
        )
    if bool(torch.isnan(scores).any()):
        raise ValueError("scores must not be NaN")
    event, classes = _events_and_classes(n, scores.device, event, classes, class_aware)
    if n == 0:
        return torch.zeros(0, dtype=torch.long, device=scores.device)
    n_classes = int(classes.max()) + 1 if classes is not None else 1
    group, groups_inverse = torch.unique(_groups.group_keys(event, classes, n_classes), return_inverse=True)
    lay = _groups.layout(groups_inverse, group.numel(), scores)

    keep = torch.zeros(n, dtype=torch.bool, device=scores.device)
    for first, end in _groups.chunks(group.numel(), chunk_groups):
        padded, valid = _groups.padded(boxes, lay, first, end)
        width = padded.shape[1]
        _, close = overlaps(padded, padded, iou_threshold, delta_r_threshold)
        later = torch.ones(width, width, dtype=torch.bool, device=scores.device).triu(diagonal=1)
        suppresses = close & later
        removed = ~valid
        for k in range(width):
            removed = removed | (~removed[:, k, None] & suppresses[:, k, :])
        start, stop = _groups.entry_range(lay, first, end)
        rows, cols = lay.group[start:stop] - first, lay.position[start:stop]
        keep[lay.order[start:stop]] = ~removed[rows, cols]

    by_event = _groups.layout(event - event.min(), int(event.max() - event.min()) + 1, scores).order
    return by_event[keep[by_event]]


@dataclass
class Detections:
    """The boxes selected from a batch of dense predictions, flat over the batch and sorted by
    event, then decreasing score: ``event`` (K,) int64, ``score`` (K,), ``boxes`` (K, 4) =
    ``(eta, phi, w_eta, w_phi)`` (rad), ``cell`` (K, 2) the ``(i_eta, i_phi)`` cell of each box,
    ``classes`` (K,) or None, ``extras`` the other per-cell quantities of each box by name ((K,) or
    (K, C), e.g. pT and mass in GeV, class probabilities), ``counts`` (B,) boxes per event."""

    event: torch.Tensor
    score: torch.Tensor
    boxes: torch.Tensor
    cell: torch.Tensor
    counts: torch.Tensor
    classes: torch.Tensor | None = None
    extras: dict[str, torch.Tensor] = field(default_factory=dict)


def _per_cell(name: str, value: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
    """``value`` ``(B, n_eta, n_phi)`` or ``(B, C, n_eta, n_phi)`` as ``(B, n_eta, n_phi[, C])``."""
    if value.ndim == 3 and tuple(value.shape) == shape:
        return value
    if value.ndim == 4 and (value.shape[0], *value.shape[2:]) == shape:
        return value.movedim(1, -1)
    raise ValueError(
        f"{name} must be (B, n_eta, n_phi) or (B, C, n_eta, n_phi) with {shape}, got {tuple(value.shape)}"
    )


def select_boxes(
    scores: torch.Tensor,
    boxes: torch.Tensor,
    classes: torch.Tensor | None = None,
    extras: Mapping[str, torch.Tensor] | None = None,
    *,
    score_threshold: float = 0.5,
    iou_threshold: float | None = None,
    delta_r_threshold: float | None = None,
    class_aware: bool = False,
    max_per_event: int | None = None,
) -> Detections:
    """The boxes of a batch at inference: cells with ``scores >= score_threshold``, then greedy
    :func:`nms` per event, then at most ``max_per_event`` boxes of highest score per event.

    ``scores`` ``(B, n_eta, n_phi)`` (e.g. the objectness probability, or its product with the
    highest class probability); ``boxes`` ``(B, n_eta, n_phi, 4)`` the decoded boxes
    (:func:`hepnn.detection.boxes.decode` then :func:`~hepnn.detection.boxes.stack_boxes`);
    ``classes`` ``(B, n_eta, n_phi)`` the predicted class per cell (needed with ``class_aware``);
    ``extras`` per-cell quantities carried along, ``(B, n_eta, n_phi)`` or ``(B, C, n_eta, n_phi)``.
    """
    if scores.ndim != 3:
        raise ValueError(f"scores must be (B, n_eta, n_phi), got {tuple(scores.shape)}")
    shape = tuple(scores.shape)
    if tuple(boxes.shape) != (*shape, 4):
        raise ValueError(f"boxes must be {(*shape, 4)}, got {tuple(boxes.shape)}")
    per_cell = {name: _per_cell(name, value, shape) for name, value in (extras or {}).items()}
    if classes is not None:
        classes = _per_cell("classes", classes, shape)

    b, i, j = torch.nonzero(scores >= score_threshold, as_tuple=True)
    flat_classes = classes[b, i, j] if classes is not None else None
    kept = nms(
        boxes[b, i, j],
        scores[b, i, j],
        b,
        flat_classes,
        iou_threshold=iou_threshold,
        delta_r_threshold=delta_r_threshold,
        class_aware=class_aware,
    )
    if max_per_event is not None:
        event = b[kept]
        counts = torch.bincount(event, minlength=shape[0])
        rank = torch.arange(kept.numel(), device=kept.device) - (torch.cumsum(counts, 0) - counts)[event]
        kept = kept[rank < max_per_event]
    b, i, j = b[kept], i[kept], j[kept]
    return Detections(
        event=b,
        score=scores[b, i, j],
        boxes=boxes[b, i, j],
        cell=torch.stack([i, j], dim=1),
        counts=torch.bincount(b, minlength=shape[0]),
        classes=classes[b, i, j] if classes is not None else None,
        extras={name: value[b, i, j] for name, value in per_cell.items()},
    )
