"""Building blocks shared by the model families: per-particle 1x1 convolutions, masked pooling, MLPs."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

ACTIVATIONS = {"relu": nn.ReLU, "gelu": nn.GELU, "silu": nn.SiLU, "elu": nn.ELU, "leaky_relu": nn.LeakyReLU}


def activation(name: str) -> nn.Module:
    """A fresh activation module by name (relu, gelu, silu, elu, leaky_relu)."""
    try:
        return ACTIVATIONS[name]()
    except KeyError:
        raise ValueError(f"unknown activation {name!r}; choose one of {sorted(ACTIVATIONS)}") from None


class PerParticleNet(nn.Module):
    """The same small network applied to every particle: ``Conv1d(kernel_size=1)`` layers.

    Input ``(B, C, P)`` and mask ``(B, P)`` (True for real particles); output
    ``(B, channels[-1], P)`` with padded positions set to zero, so nothing downstream can
    learn from padding. Every layer is followed by the activation.
    """

    def __init__(self, in_channels: int, channels: Sequence[int], activation_name: str = "relu"):
        super().__init__()
        if not channels:
            raise ValueError("PerParticleNet needs at least one layer (channels is empty)")
        layers: list[nn.Module] = []
        previous = in_channels
        for width in channels:
            layers += [nn.Conv1d(previous, width, kernel_size=1), activation(activation_name)]
            previous = width
        self.layers = nn.Sequential(*layers)
        self.out_channels = previous

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self.layers(x) * mask.unsqueeze(1).to(x.dtype)


def masked_pool(x: torch.Tensor, mask: torch.Tensor, mode: str = "sum") -> torch.Tensor:
    """Pool ``(B, C, P)`` over particles where ``mask`` ``(B, P)`` is True: sum, mean or max.

    Empty entries (no particle) give zeros in every mode.
    """
    m = mask.unsqueeze(1).to(x.dtype)
    if mode == "sum":
        return (x * m).sum(dim=-1)
    if mode == "mean":
        return (x * m).sum(dim=-1) / m.sum(dim=-1).clamp(min=1.0)
    if mode == "max":
        filled = x.masked_fill(~mask.unsqueeze(1), float("-inf")).amax(dim=-1)
        return torch.where(mask.any(dim=-1, keepdim=True), filled, torch.zeros_like(filled))
    raise ValueError(f"unknown pooling {mode!r}; choose sum, mean or max")


class MLP(nn.Module):
    """Dense network: hidden layers with activation and dropout, then a linear output layer."""

    def __init__(
        self,
        in_features: int,
        hidden: Sequence[int],
        out_features: int,
        dropout: float = 0.0,
        activation_name: str = "relu",
    ):
        super().__init__()
        layers: list[nn.Module] = []
        previous = in_features
        for width in hidden:
            layers += [nn.Linear(previous, width), activation(activation_name)]
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
            previous = width
        layers.append(nn.Linear(previous, out_features))
        self.layers = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


def count_parameters(module: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad)
