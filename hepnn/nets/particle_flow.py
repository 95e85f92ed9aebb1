"""Particle Flow Network (Komiske, Metodiev, Thaler, JHEP 01 (2019) 121) from 1x1 convolutions.

A per-particle network Phi maps each particle's features to a latent vector (``Conv1d`` with
``kernel_size=1``, weights shared by all particles), the latent vectors are pooled over the
real (unmasked) particles (sum, as in the paper, or mean/max), and a dense network F maps the
pooled vector to one logit per class. The output is invariant under permutations of the
particles and independent of padding.
"""

from __future__ import annotations

import torch
from torch import nn

from hepnn.nets.blocks import MLP, PerParticleNet, masked_pool


class ParticleFlowNetwork(nn.Module):
    """Phi (``phi_layers`` 1x1 convolutions, the last of width ``latent``) -> masked pooling -> F.

    Input: ``particles`` ``(B, in_channels, P)`` and ``mask`` ``(B, P)``; output ``(B, n_outputs)``.
    F has ``head_layers - 1`` hidden layers of width ``hidden`` with dropout.
    """

    def __init__(
        self,
        in_channels: int,
        n_outputs: int,
        hidden: int = 128,
        latent: int = 128,
        phi_layers: int = 3,
        head_layers: int = 3,
        dropout: float = 0.1,
        pooling: str = "sum",
        activation: str = "relu",
    ):
        super().__init__()
        if phi_layers < 1 or head_layers < 1:
            raise ValueError(f"phi_layers and head_layers must be >= 1, got {phi_layers}, {head_layers}")
        masked_pool(torch.zeros(1, 1, 1), torch.ones(1, 1, dtype=torch.bool), pooling)  # validates the mode
        self.pooling = pooling
        self.phi = PerParticleNet(in_channels, [hidden] * (phi_layers - 1) + [latent], activation)
        self.head = MLP(latent, [hidden] * (head_layers - 1), n_outputs, dropout, activation)

    def forward(self, particles: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        latent = self.phi(particles, mask)
        return self.head(masked_pool(latent, mask, self.pooling))
