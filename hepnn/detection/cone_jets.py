"""Cone jets of a whole-event image: the four-momentum of the pixels within Delta R < R of any point.

A detector that finds an object's axis can measure it as a physicist would: sum the calorimeter
within the jet radius around the axis. Here every pixel of the chosen channels (transverse
energy in GeV) is a massless pseudo-particle at its centre; a fixed convolution with a disc of
radius R (circular in phi, the detector being a cylinder) gives, at every pixel, the summed
``(E, px, py, pz)`` of the disc centred there. The pT and mass of the disc around any point are
read at the pixel holding that point. The detector then predicts only a calibration of these
cone sums (:mod:`hepnn.tasks.detection`), not the whole pT and mass.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import nn
from torch.nn import functional as F

from hepnn.pileup.image_jets import pixel_centres


class ConeJets(nn.Module):
    """Disc sums of radius ``radius`` (rad) over the ``channels`` of images on ``grid`` (a
    ``data.inputs.<group>.grid`` mapping; phi must span the full azimuth)."""

    def __init__(self, grid: Mapping, radius: float, channels: Sequence[int]):
        super().__init__()
        eta, phi = pixel_centres(grid)
        self.n_eta, self.n_phi = len(eta), len(phi)
        self.eta_low = float(grid["eta"][0])
        self.cell_eta = float(eta[1] - eta[0]) if len(eta) > 1 else float(grid["eta"][1]) - self.eta_low
        self.cell_phi = float(phi[1] - phi[0]) if len(phi) > 1 else float(grid["phi"][1] - grid["phi"][0])
        self.phi_low = float(grid["phi"][0])
        self.channels = [int(c) for c in channels]
        self.radius = float(radius)
        half_eta = int(self.radius / self.cell_eta)
        half_phi = min(int(self.radius / self.cell_phi), (self.n_phi - 1) // 2)
        d_eta = torch.arange(-half_eta, half_eta + 1, dtype=torch.float64) * self.cell_eta
        d_phi = torch.arange(-half_phi, half_phi + 1, dtype=torch.float64) * self.cell_phi
        disc = (d_eta[:, None] ** 2 + d_phi[None, :] ** 2 <= self.radius**2).float()
        self.pad = (half_eta, half_phi)
        self.register_buffer("kernel", disc.expand(4, 1, *disc.shape).clone(), persistent=False)
        self.register_buffer("cosh_eta", torch.cosh(eta).float()[:, None], persistent=False)
        self.register_buffer("sinh_eta", torch.sinh(eta).float()[:, None], persistent=False)
        self.register_buffer("cos_phi", torch.cos(phi).float()[None, :], persistent=False)
        self.register_buffer("sin_phi", torch.sin(phi).float()[None, :], persistent=False)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """``(B, 4, n_eta, n_phi)``: the ``(E, px, py, pz)`` (GeV) of the disc around every pixel."""
        et = images[:, self.channels].clamp(min=0.0).sum(dim=1)
        momenta = torch.stack(
            [et * self.cosh_eta, et * self.cos_phi, et * self.sin_phi, et * self.sinh_eta], dim=1
        )
        padded = F.pad(momenta, (self.pad[1], self.pad[1], 0, 0), mode="circular")
        return F.conv2d(padded, self.kernel, padding=(self.pad[0], 0), groups=4)

    def pixel_of(self, eta: torch.Tensor, phi: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The (row, column) of the pixels holding the points (eta, phi); rows clamped to the image."""
        row = torch.floor((eta - self.eta_low) / self.cell_eta).long().clamp(0, self.n_eta - 1)
        column = torch.remainder(torch.floor((phi - self.phi_low) / self.cell_phi).long(), self.n_phi)
        return row, column

    @staticmethod
    def pt_and_mass(momenta: torch.Tensor, dim: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
        """pT and mass (GeV) of ``(E, px, py, pz)`` along ``dim``."""
        e, px, py, pz = momenta.unbind(dim)
        pt = torch.sqrt(px**2 + py**2)
        return pt, torch.sqrt(torch.clamp(e**2 - pt**2 - pz**2, min=0.0))

    def at(self, discs: torch.Tensor, event: torch.Tensor, eta: torch.Tensor, phi: torch.Tensor):
        """pT and mass (GeV) of the cones around the points (``event`` indexes ``discs``, the output
        of :meth:`forward`)."""
        row, column = self.pixel_of(eta, phi)
        return self.pt_and_mass(discs[event, :, row, column], dim=1)

    def at_cells(self, discs: torch.Tensor, eta: torch.Tensor, phi: torch.Tensor):
        """pT and mass (GeV) ``(B, h, w)`` of the cones around dense points ``eta``, ``phi`` ``(B, h, w)``."""
        row, column = self.pixel_of(eta, phi)
        flat = (row * self.n_phi + column).flatten(1)  # (B, h * w)
        gathered = torch.gather(discs.flatten(2), 2, flat[:, None, :].expand(-1, 4, -1))
        pt, mass = self.pt_and_mass(gathered, dim=1)
        return pt.view_as(eta), mass.view_as(eta)
