"""Particle Flow Network (Komiske, Metodiev, Thaler, JHEP 01 (2019) 121) from 1x1 convolutions.

A per-particle network Phi maps each particle's features to a latent vector (``Conv1d`` with
``kernel_size=1``, weights shared by all particles), the latent vectors are pooled over the
real (unmasked) particles (sum, as in the paper, or mean/max), and a dense network F maps the
pooled vector to one logit per class. The output is invariant under permutations of the
particles and independent of padding. With ``global_features``, per-jet inputs (e.g. the jet's
substructure observables, as DeepJet and ParticleNet take global features) join the pooled
vector before F.
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

    Input: ``particles`` ``(B, in_channels, P)``, ``mask`` ``(B, P)`` and, with ``global_features``
    G > 0, ``globals`` ``(B, G)``; output ``(B, n_outputs)``. F has ``head_layers - 1`` hidden layers
    of width ``hidden`` with dropout, on the pooled latent vector and the globals.

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
        global_features: int = 0,
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
        self.global_features = check.non_negative_int(global_features, "global_features")
        self.head = MLP(
            latent + self.global_features, [hidden] * (head_layers - 1), n_outputs, dropout, activation
        )

    def forward(
        self, particles: torch.Tensor, mask: torch.Tensor, globals: torch.Tensor | None = None
    ) -> torch.Tensor:
        if (globals is None) != (self.global_features == 0):
            raise ValueError(
                f"the net takes {self.global_features} global features per jet, but forward got "
                f"{'none' if globals is None else tuple(globals.shape)}: model.inputs and "
                "model.net.global_features must agree"
            )
        if self.dense or is_exporting():
            pooled = masked_pool(self.phi.forward_dense(particles, mask), mask, self.pooling)
        else:
            mask = mask.bool()
            latent = self.phi.forward_rows(real_rows(particles, real_index(mask)))
            pooled = pool_rows(latent, mask.sum(dim=1), self.pooling)
        if globals is not None:
            pooled = torch.cat([pooled, globals.to(pooled.dtype)], dim=1)
        return self.head(pooled)
