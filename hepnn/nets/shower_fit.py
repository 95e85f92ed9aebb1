"""Analytic first-guess reconstruction of an air shower from a surface detector, in torch.

A surface detector's standard reconstruction (e.g. the Pierre Auger Observatory's, NIM A 798
(2015) 172, section 5) fits, per event, the arrival times of the shower front and the lateral
distribution of the station signals. :class:`ShowerFirstGuess` does the same for a batch of
events with a fixed number of Gauss-Newton steps, so that a network can take the fitted
geometry as input and learn only what the fits miss (as the hybrid of a standard reconstruction
and a network in the Auger deep-learning analyses):

1. **Plane front**: ``c t_i = c t_0 - u x_i - v y_i`` by weighted least squares (weights
   ``sqrt(min(S_i, 100 VEM))``); the axis is ``(u, v, sqrt(1 - u^2 - v^2))``.
2. **Core from the lateral distribution**: ``ln S_i = ln S_1000 + beta g(r_i)``,
   ``g(r) = ln(r / 1000 m) + ln((r + 700 m) / 1700 m)`` (the Auger-type LDF), ``r_i`` the
   distance of station ``i`` from the axis through the core, ``beta = beta_0 + beta_sec
   (sec theta - 1)``; free: ``ln S_1000`` and the core (x, y), starting at the signal-weighted
   centroid of the stations, weights ``1 / (1 / S_i + sigma_rel^2)`` (Poisson plus a relative
   spread).
3. **Spherical front** around the fitted core: ``c (t_i - t_0) = |R a - p_i| - R`` with ``p_i``
   the station position relative to the core, ``a`` the axis and ``R`` the radius of
   curvature; free: ``t_0``, ``a_x``, ``a_y`` and ``ln R`` (with a Gaussian prior around
   ``radius_m``, width ``radius_log_width`` in ln R), weights ``1 / (jitter^2 + (jitter_1000
   r / 1000 m)^2 + bin_width^2 / 12)``.
4. Steps 2 and 3 once more, starting from the results of the first pass.

Units: metres (m), nanoseconds (ns), VEM for signals. The trace start times stand for the
arrival times: where in its trace the first particles arrive is the same for every station (for
the toy simulation of :mod:`hepnn.sim.airshower`, 8 pre-trigger bins of 25 ns plus up to one
bin), a constant that every fit's free time offset absorbs.

The fits have no trainable parameters and never need gradients (their inputs are data); they
run in float64 with coordinates and times centred per event, and small linear
systems are solved by unrolled Gaussian elimination of the (positive definite) normal equations,
so the module exports to ONNX. Untriggered stations get zero weight: what their inputs hold does
not change anything. An event with fewer stations than parameters is held by the priors (the
radius prior, and a weak pull of the core towards its starting point).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
from torch import nn

from hepnn.utils import validation as check

SPEED_OF_LIGHT = 0.299792458  # m/ns
CORE_PRIOR_M = 800.0  # width of the weak pull of the core towards its start (m)
MAX_CORE_STEP_M = 300.0  # largest core change in one Gauss-Newton step (m)
MAX_SIN_ZENITH = 0.99  # the horizontal part of a fitted axis is kept below this
LOG_RADIUS_RANGE = (math.log(1000.0), math.log(200000.0))  # ln(R / m)


class FirstGuess(NamedTuple):
    """Per event: ``axis`` ``(B, 3)`` unit vector to where the shower comes from, ``core``
    ``(B, 2)`` (m), ``log_s1000`` ``(B,)`` ln of the signal 1000 m from the axis (VEM),
    ``log_radius`` ``(B,)`` ln of the front's radius of curvature (m). Per station ``(B, S)``:
    ``time_residual`` (ns) of the start time from the fitted front, ``axis_distance`` (m) from the
    fitted axis; zero for untriggered stations."""

    axis: torch.Tensor
    core: torch.Tensor
    log_s1000: torch.Tensor
    log_radius: torch.Tensor
    time_residual: torch.Tensor
    axis_distance: torch.Tensor


def diagonal(matrix: torch.Tensor) -> torch.Tensor:
    """The diagonals ``(B, n)`` of ``(B, n, n)`` matrices (``Tensor.diagonal`` exports to ONNX as
    an ``If`` whose float32 branch breaks float64 graphs)."""
    eye = torch.eye(matrix.shape[-1], dtype=matrix.dtype, device=matrix.device)
    return (matrix * eye).sum(dim=-1)


def solve_normal_equations(matrix: torch.Tensor, rhs: torch.Tensor) -> torch.Tensor:
    """Solve ``matrix @ x = rhs`` for a batch of small positive definite ``(B, n, n)`` systems.

    Jacobi-scaled, then Gaussian elimination without pivoting (safe for positive definite
    matrices), unrolled over ``n`` so that it exports to ONNX (``torch.linalg.solve`` does not).
    """
    n = matrix.shape[-1]
    scale = diagonal(matrix).clamp(min=1e-30).rsqrt()  # (B, n)
    a = matrix * scale[:, :, None] * scale[:, None, :]
    b = rhs * scale
    rows = [a[:, i] for i in range(n)]
    values = [b[:, i] for i in range(n)]
    for k in range(n):
        pivot = rows[k][:, k]
        for i in range(k + 1, n):
            factor = rows[i][:, k] / pivot
            rows[i] = rows[i] - factor[:, None] * rows[k]
            values[i] = values[i] - factor * values[k]
    solution: list[torch.Tensor] = [torch.zeros_like(b[:, 0])] * n
    for k in reversed(range(n)):
        total = values[k]
        for j in range(k + 1, n):
            total = total - rows[k][:, j] * solution[j]
        solution[k] = total / rows[k][:, k]
    return torch.stack(solution, dim=1) * scale


def normal_equations(
    jacobian: torch.Tensor, residual: torch.Tensor, weight: torch.Tensor, prior: torch.Tensor
) -> torch.Tensor:
    """The normal equations ``(J^T W J + P, J^T W r)`` of a Gauss-Newton step, for ``jacobian``
    ``(B, S, n)``, ``residual`` and ``weight`` ``(B, S)`` and a diagonal ``prior`` ``(n,)`` of
    inverse variances (the caller subtracts the prior's gradient from the right-hand side)."""
    matrix = torch.einsum("bsp,bs,bsq->bpq", jacobian, weight, jacobian)
    eye = torch.eye(matrix.shape[-1], dtype=matrix.dtype, device=matrix.device)
    # the prior, and a relative ridge that keeps degenerate events (collinear stations) solvable
    ridge = 1e-6 * diagonal(matrix).mean(dim=-1)
    matrix = matrix + eye * prior + ridge[:, None, None] * eye
    return matrix, torch.einsum("bsp,bs,bs->bp", jacobian, weight, residual)


def axis_from_horizontal(u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Unit axis ``(B, 3)`` from its horizontal components, pointing up (``z > 0``)."""
    z = (1.0 - u * u - v * v).clamp(min=0.0).sqrt()
    return torch.stack([u, v, z], dim=1)


def clamp_horizontal(u: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Keep ``(u, v)`` inside the disc of radius :data:`MAX_SIN_ZENITH` (the axis stays upward)."""
    norm = (u * u + v * v).sqrt()
    shrink = torch.where(norm > MAX_SIN_ZENITH, MAX_SIN_ZENITH / norm.clamp(min=1e-12), torch.ones_like(norm))
    return u * shrink, v * shrink


class ShowerFirstGuess(nn.Module):
    """Fit the front timing and the lateral distribution of every event (see the module docstring).

    Parameters (physics of the detector and the showers; defaults for :mod:`hepnn.sim.airshower`):
    ``bin_width_ns`` (25), ``jitter_ns`` (10) and
    ``jitter_1000_ns`` (20, added in quadrature per 1000 m from the axis), ``radius_m`` (12000:
    prior radius of curvature of the front) and ``radius_log_width`` (0.3), ``ldf_slope`` (-2.3)
    and ``ldf_slope_sec`` (0.5, change per unit of sec(theta) - 1), ``ldf_scale_m`` (700),
    ``ldf_min_distance_m`` (100: closer stations count as this far), ``signal_relative_error``
    (0.1), ``ldf_steps`` (8) and ``front_steps`` (6) Gauss-Newton steps per fit.
    """

    def __init__(
        self,
        bin_width_ns: float = 25.0,
        jitter_ns: float = 10.0,
        jitter_1000_ns: float = 20.0,
        radius_m: float = 12000.0,
        radius_log_width: float = 0.3,
        ldf_slope: float = -2.3,
        ldf_slope_sec: float = 0.5,
        ldf_scale_m: float = 700.0,
        ldf_min_distance_m: float = 100.0,
        signal_relative_error: float = 0.1,
        ldf_steps: int = 8,
        front_steps: int = 6,
    ):
        super().__init__()
        positive = {
            "bin_width_ns": bin_width_ns,
            "jitter_ns": jitter_ns,
            "radius_m": radius_m,
            "radius_log_width": radius_log_width,
            "ldf_scale_m": ldf_scale_m,
            "ldf_min_distance_m": ldf_min_distance_m,
            "signal_relative_error": signal_relative_error,
        }
        for key, value in positive.items():
            check.positive_number(value, f"first_guess.{key}")
        check.non_negative_number(jitter_1000_ns, "first_guess.jitter_1000_ns")
        check.number(ldf_slope, "first_guess.ldf_slope")
        check.number(ldf_slope_sec, "first_guess.ldf_slope_sec")
        check.positive_int(ldf_steps, "first_guess.ldf_steps")
        check.positive_int(front_steps, "first_guess.front_steps")
        self.timing_variance = (
            float(jitter_ns) ** 2,
            float(jitter_1000_ns) ** 2,
            float(bin_width_ns) ** 2 / 12,
        )
        self.log_radius_prior = (math.log(radius_m), float(radius_log_width))
        self.ldf = (float(ldf_slope), float(ldf_slope_sec), float(ldf_scale_m), float(ldf_min_distance_m))
        self.signal_relative_error = float(signal_relative_error)
        self.ldf_steps = ldf_steps
        self.front_steps = front_steps

    @torch.no_grad()
    def forward(
        self,
        signal: torch.Tensor,
        start_time: torch.Tensor,
        x: torch.Tensor,
        y: torch.Tensor,
        mask: torch.Tensor,
    ) -> FirstGuess:
        """Fit events given per station ``(B, S)``: total ``signal`` (VEM), trace ``start_time``
        (ns), position ``x``, ``y`` (m) and ``mask`` (True for triggered stations). The fits run
        in float64 (for events far from what the priors expect, where float32 rounding would
        decide between diverging Gauss-Newton paths); the results come in ``signal``'s dtype."""
        dtype = signal.dtype
        signal, start_time, x, y = (v.to(torch.float64) for v in (signal, start_time, x, y))
        return FirstGuess(*(v.to(dtype) for v in self._fit(signal, start_time, x, y, mask)))

    def _fit(self, signal, start_time, x, y, mask) -> FirstGuess:
        on = mask.to(signal.dtype)
        # untriggered stations: whatever they hold (NaN included) becomes zero with zero weight
        signal, start_time, x, y = (
            torch.where(mask, v, torch.zeros_like(v)) for v in (signal, start_time, x, y)
        )
        signal = signal.clamp(min=0.0)
        # centre positions and times per event on the triggered stations (precision)
        count = on.sum(dim=1, keepdim=True).clamp(min=1.0)
        origin_x = (x * on).sum(dim=1, keepdim=True) / count
        origin_y = (y * on).sum(dim=1, keepdim=True) / count
        x = torch.where(mask, x - origin_x, torch.zeros_like(x))
        y = torch.where(mask, y - origin_y, torch.zeros_like(y))
        ct = SPEED_OF_LIGHT * torch.where(mask, start_time, torch.zeros_like(start_time))
        ct = torch.where(mask, ct - (ct * on).sum(dim=1, keepdim=True) / count, torch.zeros_like(ct))

        axis = self.plane_front(signal, ct, x, y, on)
        weight = signal.square() * on
        core = torch.stack([x, y], dim=1).mul(weight[:, None]).sum(dim=2) / weight.sum(
            dim=1, keepdim=True
        ).clamp(min=1e-12)
        log_radius = torch.full_like(ct[:, 0], self.log_radius_prior[0])
        offset = (ct * on).sum(dim=1) / count[:, 0]
        for _ in range(2):
            core, log_s1000 = self.lateral_distribution(signal, x, y, on, axis, core)
            axis, log_radius, offset = self.spherical_front(ct, x, y, on, axis, core, log_radius, offset)
        front, distance = self.front_model(x, y, axis, core, log_radius)
        residual = torch.where(mask, (ct - offset[:, None] - front) / SPEED_OF_LIGHT, torch.zeros_like(ct))
        distance = torch.where(mask, distance, torch.zeros_like(distance))
        core = core + torch.cat([origin_x, origin_y], dim=1)
        return FirstGuess(axis, core, log_s1000, log_radius, residual, distance)

    def plane_front(self, signal, ct, x, y, on) -> torch.Tensor:
        """Axis ``(B, 3)`` of the plane ``ct = c t_0 - u x - v y`` fitted to the centred ``ct`` (m)."""
        weight = signal.clamp(max=100.0).sqrt() * on
        jacobian = torch.stack([torch.ones_like(x), -x, -y], dim=-1)
        matrix, rhs = normal_equations(jacobian, ct, weight, torch.zeros(3, dtype=ct.dtype, device=ct.device))
        solution = solve_normal_equations(matrix, rhs)
        return axis_from_horizontal(*clamp_horizontal(solution[:, 1], solution[:, 2]))

    def _axis_distance(self, px, py, axis) -> tuple[torch.Tensor, torch.Tensor]:
        along = px * axis[:, :1] + py * axis[:, 1:2]
        return along, (px.square() + py.square() - along.square()).clamp(min=0.0).sqrt()

    def lateral_distribution(self, signal, x, y, on, axis, core) -> tuple[torch.Tensor, torch.Tensor]:
        """Core ``(B, 2)`` (m) and ``ln S_1000`` fitted to the station signals for a given axis."""
        slope, slope_sec, r_scale, r_min = self.ldf
        beta = (slope + slope_sec * (1.0 / axis[:, 2].clamp(min=0.1) - 1.0))[:, None]
        log_signal = torch.log(signal.clamp(min=1e-3))
        weight = on / (1.0 / signal.clamp(min=1e-3) + self.signal_relative_error**2)
        prior = torch.tensor([0.0, CORE_PRIOR_M**-2, CORE_PRIOR_M**-2], dtype=x.dtype, device=x.device)
        log_s1000 = torch.zeros_like(x[:, 0])
        core_x, core_y = core[:, 0], core[:, 1]
        for _ in range(self.ldf_steps):
            px, py = x - core_x[:, None], y - core_y[:, None]
            along, r = self._axis_distance(px, py, axis)
            r = r.clamp(min=r_min)
            shape = torch.log(r / 1000.0) + torch.log((r + r_scale) / (1000.0 + r_scale))
            residual = log_signal - log_s1000[:, None] - beta * shape
            slope_r = beta * (1.0 / r + 1.0 / (r + r_scale))  # d(model)/dr
            dr_dx = -(px - along * axis[:, :1]) / r
            dr_dy = -(py - along * axis[:, 1:2]) / r
            jacobian = torch.stack([torch.ones_like(r), slope_r * dr_dx, slope_r * dr_dy], dim=-1)
            matrix, rhs = normal_equations(jacobian, residual, weight, prior)
            step = solve_normal_equations(matrix, rhs)
            log_s1000 = log_s1000 + step[:, 0]
            core_x = core_x + step[:, 1].clamp(-MAX_CORE_STEP_M, MAX_CORE_STEP_M)
            core_y = core_y + step[:, 2].clamp(-MAX_CORE_STEP_M, MAX_CORE_STEP_M)
        return torch.stack([core_x, core_y], dim=1), log_s1000

    def front_model(self, x, y, axis, core, log_radius) -> tuple[torch.Tensor, torch.Tensor]:
        """``|R a - p| - R`` (m) of every station and its distance from the axis (m)."""
        px, py = x - core[:, :1], y - core[:, 1:]
        along, distance = self._axis_distance(px, py, axis)
        radius = log_radius.exp()[:, None]
        rho2 = px.square() + py.square()
        # |R a - p| - R without the cancellation of large terms
        front = (rho2 - 2 * radius * along) / (
            (radius.square() - 2 * radius * along + rho2).clamp(min=1.0).sqrt() + radius
        )
        return front, distance

    def spherical_front(self, ct, x, y, on, axis, core, log_radius, offset):
        """Axis, ``ln R`` and time offset (m) of the spherical front fitted around ``core``."""
        px, py = x - core[:, :1], y - core[:, 1:]
        jitter2, jitter_1000_2, quantisation2 = self.timing_variance
        distance2 = px.square() + py.square()
        weight = on / ((jitter2 + jitter_1000_2 * distance2 / 1.0e6 + quantisation2) * SPEED_OF_LIGHT**2)
        mean, width = self.log_radius_prior
        prior = torch.tensor([0.0, 0.0, 0.0, width**-2], dtype=ct.dtype, device=ct.device)
        u, v = axis[:, 0], axis[:, 1]
        for _ in range(self.front_steps):
            radius = log_radius.exp()[:, None]
            along = px * u[:, None] + py * v[:, None]
            root = (radius.square() - 2 * radius * along + distance2).clamp(min=1.0).sqrt()
            front = (distance2 - 2 * radius * along) / (root + radius)
            residual = ct - offset[:, None] - front
            jacobian = torch.stack(
                [
                    torch.ones_like(root),
                    -radius * px / root,
                    -radius * py / root,
                    ((radius - along) / root - 1.0) * radius,
                ],
                dim=-1,
            )
            matrix, rhs = normal_equations(jacobian, residual, weight, prior)
            rhs = rhs - torch.stack(
                [
                    torch.zeros_like(u),
                    torch.zeros_like(u),
                    torch.zeros_like(u),
                    (log_radius - mean) / width**2,
                ],
                dim=1,
            )
            step = solve_normal_equations(matrix, rhs)
            offset = offset + step[:, 0]
            u, v = clamp_horizontal(u + step[:, 1], v + step[:, 2])
            log_radius = (log_radius + step[:, 3]).clamp(*LOG_RADIUS_RANGE)
        return axis_from_horizontal(u, v), log_radius, offset
