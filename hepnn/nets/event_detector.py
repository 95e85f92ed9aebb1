"""A single-shot detector over whole-event calorimeter images: one candidate object per grid cell.

Jet-SSD (arXiv:2105.05785) and PFJet-SSD (arXiv:2202.04499) find jets in one pass over an image
of the whole detector, eta along the rows and phi along the columns, as YOLO (arXiv:1506.02640)
finds objects in photographs: a convolutional backbone shrinks the image by ``2**levels`` into a
grid of cells, and every cell predicts whether an object's centre lies in it (objectness), where
(centre offsets inside the cell), how large (the log of the box widths over an anchor size), what
(class logits) and how energetic (log pT and log mass). Overlapping candidates of one object are
merged afterwards by non-maximum suppression (:mod:`hepnn.detection.nms`).

The detector is a cylinder: phi is periodic. Every convolution pads phi circularly (the columns
at -pi continue those at +pi) and eta with zeros, so rolling an event by whole grid cells in phi
rolls the predictions the same way (:class:`CylinderConv2d`). The image height and width must be
multiples of ``2**levels`` so that the grid cells tile the image exactly.

``(B, in_channels, n_eta, n_phi) -> (B, 7 + n_classes, n_eta / 2**levels, n_phi / 2**levels)``;
output channels in the order of :data:`OUTPUTS` followed by the class logits.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from torch.nn import functional as F

from hepnn.errors import ConfigError
from hepnn.nets.blocks import activation as make_activation
from hepnn.utils import validation as check

# per-cell outputs before the class logits: objectness logit, centre offsets (logits of the
# position inside the cell, eta then phi), log widths over the anchor (eta, phi), log pT, log mass
OUTPUTS = ("objectness", "offset_eta", "offset_phi", "log_width_eta", "log_width_phi", "log_pt", "log_mass")


class CylinderConv2d(nn.Module):
    """A "same" convolution on a cylinder: circular padding along phi (the last axis), zeros
    along eta; ``stride`` 2 halves both axes."""

    def __init__(self, in_channels: int, out_channels: int, kernel: int = 3, stride: int = 1):
        super().__init__()
        self.pad = kernel // 2
        self.conv = nn.Conv2d(in_channels, out_channels, kernel, stride=stride, padding=(self.pad, 0))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.pad:
            x = F.pad(x, (self.pad, self.pad, 0, 0), mode="circular")
        return self.conv(x)


def _block(in_channels: int, out_channels: int, stride: int, kernel: int, batch_norm: bool, act: str):
    layers: list[nn.Module] = [CylinderConv2d(in_channels, out_channels, kernel, stride)]
    if batch_norm:
        layers.append(nn.BatchNorm2d(out_channels))
    layers.append(make_activation(act))
    return nn.Sequential(*layers)


class EventDetector(nn.Module):
    """Backbone of cylinder convolutions and a 1x1 head with one candidate object per grid cell.

    ``widths[k]`` channels at level k; ``convs`` convolutions per level; between levels a
    stride-2 convolution halves the image, so the grid has ``len(widths) - 1`` halvings.
    ``head_convs`` further convolutions at the grid's resolution widen the receptive field to the
    size of a jet before the head. ``n_classes`` is the number of object classes.
    """

    def __init__(
        self,
        in_channels: int,
        n_classes: int,
        widths: Sequence[int] = (16, 32, 64),
        convs: int = 2,
        head_convs: int = 2,
        kernel: int = 3,
        batch_norm: bool = True,
        activation: str = "relu",
    ):
        super().__init__()
        check.positive_int(in_channels, "model.net.in_channels")
        check.positive_int(n_classes, "model.net.n_classes")
        if isinstance(widths, (str, bytes)) or not isinstance(widths, Sequence) or len(widths) < 1:
            raise ConfigError(f"model.net.widths must be a non-empty list of positive ints, got {widths!r}")
        for i, width in enumerate(widths):
            check.positive_int(width, f"model.net.widths[{i}]")
        check.positive_int(convs, "model.net.convs")
        check.non_negative_int(head_convs, "model.net.head_convs")
        kernel = check.positive_int(kernel, "model.net.kernel")
        if kernel % 2 == 0:
            raise ConfigError(f"model.net.kernel must be odd (same-size convolutions), got {kernel}")
        self.in_channels = int(in_channels)
        self.n_classes = int(n_classes)
        self.levels = len(widths) - 1
        layers: list[nn.Module] = []
        channels = in_channels
        for level, width in enumerate(widths):
            if level > 0:
                layers.append(_block(channels, width, 2, kernel, batch_norm, activation))
                channels = width
            for _ in range(convs):
                layers.append(_block(channels, width, 1, kernel, batch_norm, activation))
                channels = width
        for _ in range(head_convs):
            layers.append(_block(channels, channels, 1, kernel, batch_norm, activation))
        self.backbone = nn.Sequential(*layers)
        self.head = nn.Conv2d(channels, len(OUTPUTS) + self.n_classes, 1)
        # start with few objects everywhere (RetinaNet's prior): the objectness of a cell is about 1 %
        with torch.no_grad():
            self.head.bias.zero_()
            self.head.bias[0] = -4.6

    @property
    def downsampling(self) -> int:
        """How many image pixels one grid cell spans along each axis."""
        return 2**self.levels

    def grid_shape(self, n_eta: int, n_phi: int) -> tuple[int, int]:
        """The grid of an image of ``n_eta x n_phi`` pixels; an image that the cells do not tile
        exactly is an error naming both sizes."""
        f = self.downsampling
        if n_eta % f or n_phi % f:
            raise ConfigError(
                f"the image of {n_eta} x {n_phi} pixels (eta x phi) is not a multiple of the detector's "
                f"downsampling {f} (2 ** (len(model.net.widths) - 1)); change the grid of the image group "
                "or model.net.widths"
            )
        return n_eta // f, n_phi // f

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        if not torch.jit.is_tracing():
            self.grid_shape(image.shape[-2], image.shape[-1])
        return self.head(self.backbone(image))
