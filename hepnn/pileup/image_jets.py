"""Jets from jet images: every pixel summed as a massless pseudo-particle at its centre.

A jet image holds transverse momenta (GeV) per pixel over (eta, phi) relative to the jet axis
(:mod:`hepnn.data.images`). Summing the pixels as massless four-vectors gives a jet's pT and mass:
both are unchanged by the shift to the jet axis (a boost along the beam and a rotation about it),
so the relative coordinates give the same jet as the absolute ones. This is how a cleaned image
becomes a corrected jet (PUMML, arXiv:1707.08600).
"""

from __future__ import annotations

from collections.abc import Mapping

import torch


def pixel_centres(grid: Mapping, device=None) -> tuple[torch.Tensor, torch.Tensor]:
    """The (eta, phi) centres (rad) of the pixels of a ``data.inputs.<group>.grid`` mapping
    (``n_eta``, ``n_phi``, ``eta`` and ``phi`` ranges), as float64 vectors."""
    n_eta, n_phi = int(grid["n_eta"]), int(grid["n_phi"])
    eta_low, eta_high = (float(v) for v in grid["eta"])
    phi_low, phi_high = (float(v) for v in grid["phi"])
    eta_edges = torch.linspace(eta_low, eta_high, n_eta + 1, dtype=torch.float64, device=device)
    phi_edges = torch.linspace(phi_low, phi_high, n_phi + 1, dtype=torch.float64, device=device)
    return 0.5 * (eta_edges[1:] + eta_edges[:-1]), 0.5 * (phi_edges[1:] + phi_edges[:-1])


def image_jet(images: torch.Tensor, grid: Mapping) -> tuple[torch.Tensor, torch.Tensor]:
    """pT and mass (GeV) of the jets of pT images ``(B, n_eta, n_phi)`` or ``(B, C, n_eta, n_phi)``
    (channels summed), computed in float64."""
    if images.ndim == 4:
        images = images.sum(dim=1)
    if images.ndim != 3:
        raise ValueError(
            f"images must be (B, n_eta, n_phi) or (B, C, n_eta, n_phi), got {tuple(images.shape)}"
        )
    eta, phi = pixel_centres(grid, images.device)
    if images.shape[1:] != (len(eta), len(phi)):
        raise ValueError(
            f"images of {tuple(images.shape[1:])} pixels do not match the grid {len(eta)} x {len(phi)}"
        )
    pt = images.to(torch.float64)
    px = (pt * torch.cos(phi)[None, None, :]).sum(dim=(1, 2))
    py = (pt * torch.sin(phi)[None, None, :]).sum(dim=(1, 2))
    pz = (pt * torch.sinh(eta)[None, :, None]).sum(dim=(1, 2))
    energy = (pt * torch.cosh(eta)[None, :, None]).sum(dim=(1, 2))
    jet_pt = torch.hypot(px, py)
    mass2 = energy**2 - jet_pt**2 - pz**2
    return jet_pt, torch.sqrt(torch.clamp(mass2, min=0.0))
