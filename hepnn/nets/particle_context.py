"""Per-element outputs from 1x1 convolutions with a pooled context of the whole collection.

Each element is mapped by a per-particle network Phi (1x1 convolutions, weights shared by all
elements); the latent vectors are pooled over the real elements into a context vector of the
collection (as a Particle Flow Network pools them, Komiske, Metodiev, Thaler, JHEP 01 (2019)
121), which is appended to every element's latent vector; a second per-particle network then
gives the outputs of every element (the segmentation head of PointNet, Qi et al.,
arXiv:1612.00593). Without recurrence it is the non-recurrent baseline of per-particle labelling
such as pile-up identification: an element's output depends on its own features and on the
collection as a whole, not on the order of the elements, and never on padding.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from hepnn.nets.blocks import POOL_MODES, PerParticleNet, masked_pool
from hepnn.utils import validation as check


class ParticleContextNet(nn.Module):
    """Phi (``phi`` widths) -> pooled context appended to every element -> ``head`` widths -> a
    1x1 convolution to ``n_outputs``.

    Input: ``particles`` ``(B, in_channels, P)`` and ``mask`` ``(B, P)``; output ``(B, n_outputs,
    P)``, zero at padded positions. ``pooling`` is ``mean`` (default: independent of the number of
    elements), ``sum`` or ``max``.
    """

    def __init__(
        self,
        in_channels: int,
        n_outputs: int = 1,
        phi: Sequence[int] = (64, 64),
        head: Sequence[int] = (64, 32),
        pooling: str = "mean",
        activation: str = "relu",
    ):
        super().__init__()
        check.positive_int(in_channels, "in_channels")
        check.positive_int(n_outputs, "n_outputs")
        check.choice(pooling, "pooling", list(POOL_MODES))
        phi = [check.positive_int(w, f"phi[{i}]") for i, w in enumerate(phi)]
        head = [check.positive_int(w, f"head[{i}]") for i, w in enumerate(head)]
        if not phi:
            raise ValueError("phi needs at least one layer")
        self.pooling = pooling
        self.phi = PerParticleNet(in_channels, phi, activation, dense=True)
        context = 2 * self.phi.out_channels
        self.head = PerParticleNet(context, head, activation, dense=True) if head else None
        self.output = nn.Conv1d(head[-1] if head else context, n_outputs, kernel_size=1)

    def forward(self, particles: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        mask = mask.bool()
        latent = self.phi(particles, mask)  # zero at padded positions
        context = masked_pool(latent, mask, self.pooling)
        x = torch.cat([latent, context.unsqueeze(2).expand_as(latent)], dim=1)
        if self.head is not None:
            x = self.head(x, mask)
        return self.output(x) * mask.unsqueeze(1).to(x.dtype)
