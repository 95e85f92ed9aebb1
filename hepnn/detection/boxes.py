"""Geometry of jet boxes in (eta, phi): phi wrapping, the detection grid, the encoding of truth
boxes into per-cell regression targets and back, and the overlap (IoU) and distance (Delta R)
of boxes on the cylinder (phi periodic).

A box is ``(eta, phi, w_eta, w_phi)``: its centre (phi in rad) and its full widths (``2R`` for a
jet of radius R), axis-aligned in (eta, phi). The grid divides ``[eta_low, eta_high]`` into
``n_eta`` rows and ``[-pi, pi)`` into ``n_phi`` columns; cell ``(i, j)`` spans
``eta_low + [i, i + 1) * cell_eta`` and ``-pi + [j, j + 1) * cell_phi``.

Encoding (YOLO-style, one anchor per cell): a box belongs to the cell holding its centre; its
targets are the centre's offsets in that cell in units of the cell size, in ``[0, 1)``, and
``log(w / anchor)`` for each width. :func:`decode` inverts it on dense per-cell tensors
``(..., n_eta, n_phi)`` (the net applies its own sigmoid to the offsets; decode takes them as
they are).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import NamedTuple

import torch

TWO_PI = 2.0 * math.pi


def wrap_phi(x: torch.Tensor) -> torch.Tensor:
    """``x`` (rad) wrapped into ``[-pi, pi)``, also where rounding of the remainder reaches ``pi``."""
    x = torch.as_tensor(x)
    if not x.is_floating_point():
        x = x.to(torch.get_default_dtype())
    wrapped = torch.remainder(x + math.pi, TWO_PI) - math.pi
    return torch.where(wrapped >= math.pi, wrapped - TWO_PI, wrapped)


@dataclass(frozen=True)
class DetectionGrid:
    """The coarse grid of cells of a whole-event image: ``n_eta`` rows over ``eta_range`` and
    ``n_phi`` columns over ``[-pi, pi)`` (rad); every cell predicts one box."""

    eta_range: tuple[float, float]
    n_eta: int
    n_phi: int

    def __post_init__(self):
        low, high = (float(v) for v in self.eta_range)
        if not (math.isfinite(low) and math.isfinite(high) and low < high):
            raise ValueError(f"eta_range must be finite with low < high, got {self.eta_range!r}")
        for name in ("n_eta", "n_phi"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        object.__setattr__(self, "eta_range", (low, high))

    @classmethod
    def from_mapping(cls, grid: Mapping) -> DetectionGrid:
        """From a mapping with ``eta`` (a pair), ``n_eta``, ``n_phi`` and optionally ``phi``, which
        must then be ``[-pi, pi]`` (to 1e-4 rad): the layout of ``data.inputs.<group>.grid``."""
        if "phi" in grid:
            phi_low, phi_high = (float(v) for v in grid["phi"])
            if abs(phi_low + math.pi) > 1e-4 or abs(phi_high - math.pi) > 1e-4:
                raise ValueError(f"a detection grid spans phi in [-pi, pi), got phi = {list(grid['phi'])}")
        return cls(tuple(grid["eta"]), int(grid["n_eta"]), int(grid["n_phi"]))

    @property
    def eta_low(self) -> float:
        return self.eta_range[0]

    @property
    def eta_high(self) -> float:
        return self.eta_range[1]

    @property
    def shape(self) -> tuple[int, int]:
        """``(n_eta, n_phi)``, the last two dimensions of dense per-cell tensors."""
        return (self.n_eta, self.n_phi)

    @property
    def cell_eta(self) -> float:
        """Height of a cell in eta."""
        return (self.eta_high - self.eta_low) / self.n_eta

    @property
    def cell_phi(self) -> float:
        """Width of a cell in phi (rad)."""
        return TWO_PI / self.n_phi

    def eta_centres(self, dtype=torch.float32, device=None) -> torch.Tensor:
        """The eta of the centre of each row, ``(n_eta,)``."""
        i = torch.arange(self.n_eta, dtype=torch.float64, device=device)
        return (self.eta_low + (i + 0.5) * self.cell_eta).to(dtype)

    def phi_centres(self, dtype=torch.float32, device=None) -> torch.Tensor:
        """The phi (rad) of the centre of each column, ``(n_phi,)``."""
        j = torch.arange(self.n_phi, dtype=torch.float64, device=device)
        return (-math.pi + (j + 0.5) * self.cell_phi).to(dtype)


Anchor = float | tuple[float, float]


def _anchor(anchor: Anchor) -> tuple[float, float]:
    """``(w_eta, w_phi)`` of the anchor box, both positive."""
    if isinstance(anchor, int | float):
        anchor = (anchor, anchor)
    a_eta, a_phi = (float(v) for v in anchor)
    if not (a_eta > 0 and a_phi > 0 and math.isfinite(a_eta) and math.isfinite(a_phi)):
        raise ValueError(f"anchor widths must be positive and finite, got {anchor!r}")
    return a_eta, a_phi


def _first_boxes(bad: torch.Tensor, limit: int = 5) -> str:
    """``"box 3"`` or ``"boxes 3, 7, ... (12 in all)"`` for the flagged entries of a 1-d mask."""
    index = torch.nonzero(bad).flatten().tolist()
    shown = ", ".join(str(i) for i in index[:limit])
    if len(index) == 1:
        return f"box {shown}"
    return f"boxes {shown}" + (f", ... ({len(index)} in all)" if len(index) > limit else "")


class Encoded(NamedTuple):
    """Per-box targets of :func:`encode`, each ``(N,)``: the cell (row ``i_eta``, column ``i_phi``,
    int64), the centre offsets in the cell in ``[0, 1)`` and ``log(w / anchor)`` per width."""

    i_eta: torch.Tensor
    i_phi: torch.Tensor
    offset_eta: torch.Tensor
    offset_phi: torch.Tensor
    log_w_eta: torch.Tensor
    log_w_phi: torch.Tensor


def _below_one(offset: torch.Tensor) -> torch.Tensor:
    """``offset`` clamped into ``[0, 1)`` of its dtype (a centre exactly at ``eta_high``, or one that
    rounds onto a cell's upper edge, stays in its cell)."""
    one = torch.ones((), dtype=offset.dtype, device=offset.device)
    return torch.clamp(offset, min=0.0, max=torch.nextafter(one, torch.zeros_like(one)).item())


def encode(
    grid: DetectionGrid,
    eta: torch.Tensor,
    phi: torch.Tensor,
    w_eta: torch.Tensor,
    w_phi: torch.Tensor,
    anchor: Anchor,
) -> Encoded:
    """The cell and regression targets of each truth box (all ``(N,)``; phi in rad, any range).

    Raises ValueError naming the boxes whose centre lies outside ``grid.eta_range`` (a centre at
    ``eta_high`` itself belongs to the last row) or whose widths are not positive.
    """
    eta, phi, w_eta, w_phi = (torch.as_tensor(v) for v in (eta, phi, w_eta, w_phi))
    if not eta.is_floating_point():
        eta = eta.to(torch.get_default_dtype())
    if eta.ndim != 1 or not (eta.shape == phi.shape == w_eta.shape == w_phi.shape):
        raise ValueError(
            f"eta, phi, w_eta, w_phi must be 1-d of equal length, got {tuple(eta.shape)}, "
            f"{tuple(phi.shape)}, {tuple(w_eta.shape)}, {tuple(w_phi.shape)}"
        )
    phi, w_eta, w_phi = (v.to(eta.dtype) for v in (phi, w_eta, w_phi))
    outside = ~((eta >= grid.eta_low) & (eta <= grid.eta_high))
    if bool(outside.any()):
        first = int(torch.nonzero(outside)[0])
        raise ValueError(
            f"{_first_boxes(outside)} outside the grid's eta range [{grid.eta_low}, {grid.eta_high}] "
            f"(box {first} has eta = {float(eta[first])})"
        )
    bad_width = ~((w_eta > 0) & (w_phi > 0) & torch.isfinite(w_eta) & torch.isfinite(w_phi))
    if bool(bad_width.any()) or not bool(torch.isfinite(phi).all()):
        bad = bad_width | ~torch.isfinite(phi)
        raise ValueError(f"{_first_boxes(bad)}: widths must be positive and phi finite")
    a_eta, a_phi = _anchor(anchor)

    u = (eta - grid.eta_low) / grid.cell_eta
    i_eta = torch.clamp(torch.floor(u), 0, grid.n_eta - 1)
    v = (wrap_phi(phi) + math.pi) / grid.cell_phi
    i_phi = torch.clamp(torch.floor(v), 0, grid.n_phi - 1)
    return Encoded(
        i_eta=i_eta.long(),
        i_phi=i_phi.long(),
        offset_eta=_below_one(u - i_eta),
        offset_phi=_below_one(v - i_phi),
        log_w_eta=torch.log(w_eta / a_eta),
        log_w_phi=torch.log(w_phi / a_phi),
    )


def decode(
    grid: DetectionGrid,
    offset_eta: torch.Tensor,
    offset_phi: torch.Tensor,
    log_w_eta: torch.Tensor,
    log_w_phi: torch.Tensor,
    anchor: Anchor,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Absolute boxes ``(eta, phi, w_eta, w_phi)`` (phi wrapped into ``[-pi, pi)``, rad) of dense
    per-cell predictions, all ``(..., n_eta, n_phi)``: the inverse of :func:`encode`."""
    for name, value in (("offset_eta", offset_eta), ("offset_phi", offset_phi)):
        if tuple(value.shape[-2:]) != grid.shape:
            raise ValueError(
                f"{name} of shape {tuple(value.shape)} does not end in the grid's {grid.shape} cells"
            )
    a_eta, a_phi = _anchor(anchor)
    rows = torch.arange(grid.n_eta, device=offset_eta.device, dtype=offset_eta.dtype)[:, None]
    cols = torch.arange(grid.n_phi, device=offset_phi.device, dtype=offset_phi.dtype)
    eta = grid.eta_low + (rows + offset_eta) * grid.cell_eta
    phi = wrap_phi(-math.pi + (cols + offset_phi) * grid.cell_phi)
    return eta, phi, a_eta * torch.exp(log_w_eta), a_phi * torch.exp(log_w_phi)


def stack_boxes(eta, phi, w_eta, w_phi) -> torch.Tensor:
    """The four box coordinates stacked into ``(..., 4)`` = ``(eta, phi, w_eta, w_phi)``."""
    return torch.stack(torch.broadcast_tensors(eta, phi, w_eta, w_phi), dim=-1)


class CellTargets(NamedTuple):
    """Dense targets of :func:`assign_cells`, all ``(n_events, n_eta, n_phi)``: ``owner`` the
    index of the truth box assigned to each cell (int64, -1 for an empty cell: the objectness
    target is ``owner >= 0``; gather class, pT and mass with it), the encoded regression targets
    (0 in empty cells), and ``n_collisions``, the number of boxes left out because a box of
    higher priority had the same cell."""

    owner: torch.Tensor
    offset_eta: torch.Tensor
    offset_phi: torch.Tensor
    log_w_eta: torch.Tensor
    log_w_phi: torch.Tensor
    n_collisions: int


def assign_cells(
    grid: DetectionGrid,
    event: torch.Tensor,
    eta: torch.Tensor,
    phi: torch.Tensor,
    w_eta: torch.Tensor,
    w_phi: torch.Tensor,
    anchor: Anchor,
    n_events: int,
    priority: torch.Tensor | None = None,
) -> CellTargets:
    """Dense per-cell targets of the truth boxes of ``n_events`` events (``event`` the event index
    of each box, in ``[0, n_events)``). Where several boxes share a cell the one of highest
    ``priority`` (e.g. truth pT; default: the lowest index) owns it, ties to the lowest index."""
    event = torch.as_tensor(event).long()
    codes = encode(grid, eta, phi, w_eta, w_phi, anchor)
    if event.shape != codes.i_eta.shape:
        raise ValueError(f"event {tuple(event.shape)} must have one entry per box {tuple(codes.i_eta.shape)}")
    if event.numel() and (int(event.min()) < 0 or int(event.max()) >= n_events):
        raise ValueError(f"event indices must lie in [0, {n_events}), got [{event.min()}, {event.max()}]")
    n_cells = grid.n_eta * grid.n_phi
    cell = event * n_cells + codes.i_eta * grid.n_phi + codes.i_phi
    order = torch.arange(cell.numel(), device=cell.device)
    if priority is not None:
        order = torch.sort(torch.as_tensor(priority), descending=True, stable=True).indices
    order = order[torch.sort(cell[order], stable=True).indices]
    sorted_cell = cell[order]
    first = torch.ones_like(sorted_cell, dtype=torch.bool)
    first[1:] = sorted_cell[1:] != sorted_cell[:-1]
    winners = order[first]

    owner = torch.full((n_events * n_cells,), -1, dtype=torch.long, device=cell.device)
    owner[cell[winners]] = winners
    dense = []
    for values in codes[2:]:
        target = torch.zeros(n_events * n_cells, dtype=values.dtype, device=values.device)
        target[cell[winners]] = values[winners]
        dense.append(target.view(n_events, grid.n_eta, grid.n_phi))
    return CellTargets(
        owner.view(n_events, grid.n_eta, grid.n_phi), *dense, n_collisions=int(cell.numel() - winners.numel())
    )


def _arc_overlap(d: torch.Tensor, half_a: torch.Tensor, half_b: torch.Tensor) -> torch.Tensor:
    """Length of the overlap of two arcs of the circle of circumference 2 pi, centred ``d`` (rad,
    wrapped) apart, of half-lengths ``half_a`` and ``half_b`` (each at most pi): the overlaps of
    the line intervals summed over the copies of the second arc shifted by -2 pi, 0 and 2 pi."""
    total = torch.zeros_like(d)
    for shift in (-TWO_PI, 0.0, TWO_PI):
        centre = d + shift
        low = torch.maximum(-half_a, centre - half_b)
        high = torch.minimum(half_a, centre + half_b)
        total = total + torch.clamp(high - low, min=0.0)
    return total


def pairwise_iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Intersection over union of every box of ``a`` ``(..., N, 4)`` with every box of ``b``
    ``(..., M, 4)``, ``(..., N, M)``; boxes ``(eta, phi, w_eta, w_phi)`` axis-aligned in (eta, phi),
    phi periodic (phi widths at most 2 pi). 0 where the union is empty."""
    if a.shape[-1] != 4 or b.shape[-1] != 4:
        raise ValueError(f"boxes must be (..., 4), got {tuple(a.shape)} and {tuple(b.shape)}")
    eta_a, phi_a, we_a, wp_a = (a[..., :, None, k] for k in range(4))
    eta_b, phi_b, we_b, wp_b = (b[..., None, :, k] for k in range(4))
    low = torch.maximum(eta_a - we_a / 2, eta_b - we_b / 2)
    high = torch.minimum(eta_a + we_a / 2, eta_b + we_b / 2)
    overlap_eta = torch.clamp(high - low, min=0.0)
    overlap_phi = _arc_overlap(wrap_phi(phi_b - phi_a), wp_a / 2, wp_b / 2)
    intersection = overlap_eta * overlap_phi
    union = we_a * wp_a + we_b * wp_b - intersection
    return torch.where(union > 0, intersection / torch.where(union > 0, union, 1.0), 0.0)


def pairwise_delta_r(
    eta_a: torch.Tensor, phi_a: torch.Tensor, eta_b: torch.Tensor, phi_b: torch.Tensor
) -> torch.Tensor:
    """``Delta R = hypot(Delta eta, Delta phi)`` (phi difference wrapped, rad) of every point of
    ``a`` ``(..., N)`` with every point of ``b`` ``(..., M)``: ``(..., N, M)``."""
    d_eta = eta_a[..., :, None] - eta_b[..., None, :]
    d_phi = wrap_phi(phi_a[..., :, None] - phi_b[..., None, :])
    return torch.hypot(d_eta, d_phi)
