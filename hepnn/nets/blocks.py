"""Building blocks shared by the model families: per-particle 1x1 convolutions, masked pooling, MLPs.

Padded collections ``(B, C, P)`` with a mask ``(B, P)`` can also be handled as the rows
``(N_real, C)`` of their real elements (:func:`real_index`, :func:`real_rows`,
:func:`scatter_rows`, :func:`pool_rows`), so that per-particle layers skip the padding in eager
mode; :func:`is_exporting` tells when the dense form is needed instead.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from hepnn.utils import validation as check

ACTIVATIONS = {"relu": nn.ReLU, "gelu": nn.GELU, "silu": nn.SiLU, "elu": nn.ELU, "leaky_relu": nn.LeakyReLU}
POOL_MODES = ("sum", "mean", "max")  # of masked_pool and pool_rows


def activation(name: str) -> nn.Module:
    """A fresh activation module by name (relu, gelu, silu, elu, leaky_relu)."""
    try:
        return ACTIVATIONS[name]()
    except KeyError:
        raise ValueError(f"unknown activation {name!r}; choose one of {sorted(ACTIVATIONS)}") from None


def is_exporting() -> bool:
    """True while tracing, compiling or exporting, where data-dependent shapes must be avoided."""
    return torch.jit.is_tracing() or torch.compiler.is_compiling() or torch.onnx.is_in_onnx_export()


def real_index(mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Batch and particle index ``(N_real,)`` of every real particle of ``mask`` ``(B, P)``,
    entry by entry (the order of the rows of :func:`real_rows`)."""
    batch, particle = mask.bool().nonzero(as_tuple=True)
    return batch, particle


def real_rows(x: torch.Tensor, index: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    """The real particles of ``x`` ``(B, C, P)`` at ``index`` (:func:`real_index`) as rows ``(N_real, C)``."""
    batch, particle = index
    return x[batch, :, particle]


def scatter_rows(rows: torch.Tensor, index: tuple[torch.Tensor, torch.Tensor], shape) -> torch.Tensor:
    """Rows ``(N_real, C)`` of the real particles at ``index`` back into a zero-padded
    ``(B, C, P)`` tensor, ``(B, P) = shape`` (the inverse of :func:`real_rows`)."""
    out = rows.new_zeros(*shape, rows.shape[1])
    out[index] = rows
    return out.transpose(1, 2)


class PerParticleNet(nn.Module):
    """The same small network applied to every particle: ``Conv1d(kernel_size=1)`` layers.

    Input ``(B, C, P)`` and mask ``(B, P)`` (True for real particles); output
    ``(B, channels[-1], P)`` with padded positions set to zero, so nothing downstream can
    learn from padding. Every layer is followed by the activation.

    In eager mode only the real particles are computed: a ``Conv1d(kernel_size=1)`` is a
    ``Linear`` on the ``(N_real, C)`` rows of :func:`real_rows` (same parameters), and jets are
    padded to far more slots than they have particles. While tracing, compiling or exporting,
    and always with ``dense=True``, the layers run over all ``P`` slots (no data-dependent
    shapes in the graph); both give the same values.
    """

    def __init__(
        self, in_channels: int, channels: Sequence[int], activation_name: str = "relu", dense: bool = False
    ):
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
        self.dense = check.boolean(dense, "dense")

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        if self.dense or is_exporting():
            return self.forward_dense(x, mask)
        index = real_index(mask)
        return scatter_rows(self.forward_rows(real_rows(x, index)), index, mask.shape)

    def forward_dense(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """All ``P`` slots through the 1x1 convolutions, then the padded ones set to zero."""
        return self.layers(x) * mask.unsqueeze(1).to(x.dtype)

    def forward_rows(self, rows: torch.Tensor) -> torch.Tensor:
        """Particles as rows ``(N, C)`` -> ``(N, out_channels)``: every 1x1 convolution as a ``Linear``."""
        for layer in self.layers:
            if isinstance(layer, nn.Conv1d):
                rows = F.linear(rows, layer.weight.squeeze(-1), layer.bias)
            else:
                rows = layer(rows)
        return rows


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


def pool_rows(rows: torch.Tensor, counts: torch.Tensor, mode: str = "sum") -> torch.Tensor:
    """:func:`masked_pool` of the real particles given as rows ``(N_real, C)``, entry after entry
    (the order of :func:`real_rows`), with ``counts`` ``(B,)`` real particles per entry:
    ``(B, C)``, zeros for empty entries.

    Every entry's rows are contiguous, so they are reduced segment by segment
    (``torch.segment_reduce``): unlike ``index_add``, whose additions into one row serialise on
    CPU, the segments are reduced in parallel.
    """
    if mode not in POOL_MODES:
        raise ValueError(f"unknown pooling {mode!r}; choose sum, mean or max")
    if counts.numel() == 0:
        return rows.new_zeros(0, rows.shape[1])
    if mode == "max":
        pooled = torch.segment_reduce(rows, "max", lengths=counts, axis=0)
        return torch.where(counts[:, None] > 0, pooled, torch.zeros_like(pooled))  # -inf for empty ones
    total = torch.segment_reduce(rows, "sum", lengths=counts, axis=0)
    if mode == "mean":
        return total / counts.clamp(min=1).to(rows.dtype)[:, None]
    return total


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
