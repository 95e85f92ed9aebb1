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

from hepnn.nets.blocks import (
    MLP,
    POOL_MODES,
    PerParticleNet,
    is_exporting,
    masked_pool,
    pool_rows,
    real_index,
    real_rows,
)
from hepnn.utils import validation as check


class ParticleFlowNetwork(nn.Module):
    """Phi (``phi_layers`` 1x1 convolutions, the last of width ``latent``) -> masked pooling -> F.

    Input: ``particles`` ``(B, in_channels, P)`` and ``mask`` ``(B, P)``; output ``(B, n_outputs)``.
    F has ``head_layers - 1`` hidden layers of width ``hidden`` with dropout.

    In eager mode Phi runs on the real particles only, as rows ``(N_real, in_channels)``, and
    their latent vectors are pooled jet by jet (:func:`~hepnn.nets.blocks.pool_rows`): jets are
    padded to far more slots than they have particles. While tracing, compiling or
    exporting, and always with ``dense=True``, Phi runs over all ``P`` slots and the pooling is
    masked (a graph without data-dependent shapes); both give the same values.
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
        dense: bool = False,
    ):
        super().__init__()
        sizes = {"in_channels": in_channels, "n_outputs": n_outputs, "hidden": hidden, "latent": latent}
        for key, value in sizes.items():
            check.positive_int(value, key)
        phi_layers = check.positive_int(phi_layers, "phi_layers")
        head_layers = check.positive_int(head_layers, "head_layers")
        check.dropout_rate(dropout, "dropout")
        self.pooling = check.choice(pooling, "pooling", POOL_MODES)
        self.dense = check.boolean(dense, "dense")
        self.phi = PerParticleNet(
            in_channels, [hidden] * (phi_layers - 1) + [latent], activation, dense=dense
        )
        self.head = MLP(latent, [hidden] * (head_layers - 1), n_outputs, dropout, activation)

    def forward(self, particles: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        if self.dense or is_exporting():
            return self.head(masked_pool(self.phi.forward_dense(particles, mask), mask, self.pooling))
        mask = mask.bool()
        latent = self.phi.forward_rows(real_rows(particles, real_index(mask)))
        return self.head(pool_rows(latent, mask.sum(dim=1), self.pooling))
