"""U-Net: an encoder-decoder with skip connections that gives one output per pixel.

Per-pixel tasks (cleaning pile-up from a jet image, labelling every pixel as hard-scatter or
pile-up dominated) need an output image of the input's size. The encoder halves the image at
every level (2x2 max pooling) while widening the channels; the decoder doubles it back, and at
every level concatenates the encoder's feature map of the same size (the skip connection), so
that the fine position information lost by pooling comes back (Ronneberger, Fischer, Brox,
"U-Net: convolutional networks for biomedical image segmentation", MICCAI 2015,
arXiv:1505.04597). PUMML (Komiske, Metodiev, Nachman, Schwartz, arXiv:1707.08600) cleans
pile-up from jet images with a per-pixel convolutional network of this kind.

Any image size works, odd sizes included: pooling rounds up (``ceil_mode``), and every
up-sampled map is cropped (transposed convolution) or interpolated to the size of its skip
connection. Convolutions are ``kernel`` x ``kernel`` with "same" padding, so the output has the
input's height and width: ``(B, in_channels, H, W) -> (B, out_channels, H, W)``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from torch.nn import functional as F

from hepnn.errors import ConfigError
from hepnn.nets.blocks import activation as make_activation
from hepnn.utils import validation as check

UPSAMPLING = ("transpose", "bilinear", "nearest")
OUTPUT_ACTIVATIONS = (None, "relu", "softplus")


def _conv_stack(
    in_channels: int, out_channels: int, convs: int, kernel: int, batch_norm: bool, act: str
) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i in range(convs):
        layers.append(
            nn.Conv2d(in_channels if i == 0 else out_channels, out_channels, kernel, padding=kernel // 2)
        )
        if batch_norm:
            layers.append(nn.BatchNorm2d(out_channels))
        layers.append(make_activation(act))
    return nn.Sequential(*layers)


class UNet(nn.Module):
    """Encoder-decoder with skip connections: ``widths[k]`` channels at level k (the image halved
    k times), ``convs`` convolutions per level and direction, up-sampling by ``upsample`` (one of
    :data:`UPSAMPLING`), a 1x1 convolution to ``out_channels`` and an optional non-negative
    ``output_activation`` (for intensities such as energies)."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int = 1,
        widths: Sequence[int] = (16, 32, 64),
        convs: int = 2,
        kernel: int = 3,
        batch_norm: bool = True,
        activation: str = "relu",
        upsample: str = "transpose",
        output_activation: str | None = None,
    ):
        super().__init__()
        check.positive_int(in_channels, "model.net.in_channels")
        check.positive_int(out_channels, "model.net.out_channels")
        if isinstance(widths, (str, bytes)) or not isinstance(widths, Sequence) or not widths:
            raise ConfigError(f"model.net.widths must be a non-empty list of positive ints, got {widths!r}")
        for i, width in enumerate(widths):
            check.positive_int(width, f"model.net.widths[{i}]")
        check.positive_int(convs, "model.net.convs")
        kernel = check.positive_int(kernel, "model.net.kernel")
        if kernel % 2 == 0:
            raise ConfigError(f"model.net.kernel must be odd (same-size convolutions), got {kernel}")
        check.choice(upsample, "model.net.upsample", UPSAMPLING)
        check.choice(output_activation, "model.net.output_activation", OUTPUT_ACTIVATIONS[1:], optional=True)
        self.upsample = upsample
        self.output_activation = output_activation
        widths = [int(w) for w in widths]

        self.encoders = nn.ModuleList()
        previous = in_channels
        for width in widths:
            self.encoders.append(_conv_stack(previous, width, convs, kernel, batch_norm, activation))
            previous = width
        self.pool = nn.MaxPool2d(2, ceil_mode=True)
        self.ups = nn.ModuleList()
        self.decoders = nn.ModuleList()
        for deeper, width in zip(widths[:0:-1], widths[-2::-1], strict=True):
            if upsample == "transpose":
                self.ups.append(nn.ConvTranspose2d(deeper, width, 2, stride=2))
            else:
                self.ups.append(nn.Conv2d(deeper, width, 1))
            self.decoders.append(_conv_stack(2 * width, width, convs, kernel, batch_norm, activation))
        self.head = nn.Conv2d(widths[0], out_channels, 1)

    def _up(self, index: int, x: torch.Tensor, size: torch.Size) -> torch.Tensor:
        """The deeper map ``x`` brought to ``size`` (H, W) with ``widths`` of the shallower level."""
        if self.upsample == "transpose":
            return self.ups[index](x)[..., : size[0], : size[1]]
        mode = {"bilinear": {"mode": "bilinear", "align_corners": False}, "nearest": {"mode": "nearest"}}
        return self.ups[index](F.interpolate(x, size=tuple(size), **mode[self.upsample]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, in_channels, H, W)`` -> ``(B, out_channels, H, W)``."""
        if x.dim() != 4:
            raise ValueError(f"UNet expects images (B, C, H, W), got shape {tuple(x.shape)}")
        skips = []
        for level, encoder in enumerate(self.encoders):
            if level > 0:
                x = self.pool(x)
            x = encoder(x)
            skips.append(x)
        for index, decoder in enumerate(self.decoders):
            skip = skips[-2 - index]
            x = decoder(torch.cat([skip, self._up(index, x, skip.shape[-2:])], dim=1))
        x = self.head(x)
        if self.output_activation == "relu":
            return F.relu(x)
        if self.output_activation == "softplus":
            return F.softplus(x)
        return x
