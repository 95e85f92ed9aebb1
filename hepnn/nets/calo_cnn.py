"""Convolutional networks for calorimeter jet images: LeNet-style stacks and small ResNets.

A jet (or shower) is an image over (eta, phi) with several channels (e.g. ECAL, HCAL, tracks,
or charged pT / neutral pT / multiplicity). :class:`CaloImageCNN` is a stack of convolution
blocks (convolutions + optional batch norm + activation, optionally residual, optionally
followed by max or average pooling), a global pooling or flattening step and a dense head.

References: the jet-image CNNs of de Oliveira et al., "Jet-images -- deep learning edition",
JHEP 07 (2016) 069, and Kasieczka et al., "Deep-learning top taggers or the end of QCD?",
JHEP 05 (2017) 006 (conv -> pool -> conv -> pool -> dense); residual blocks of He et al.,
"Deep residual learning for image recognition", CVPR 2016 (basic block, 1x1 projection
shortcut when the shape changes).

The whole network is configured from plain values (ints, strings, lists, dicts), so a Hydra
YAML file describes it completely (see ``conf/model/cnn.yaml`` and ``conf/model/resnet.yaml``).
The configuration is validated and every block's output shape is computed analytically at
construction, so a block that shrinks the image to nothing is reported before any forward pass.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from hepnn.errors import ConfigError
from hepnn.nets.blocks import MLP, activation
from hepnn.utils import validation as check

POOLS = {"max": nn.MaxPool2d, "avg": nn.AvgPool2d}
GLOBAL_POOLS = ("avg", "max", "flatten")
BLOCK_KEYS = (
    "channels",
    "kernel",
    "stride",
    "padding",
    "dilation",
    "convs",
    "batch_norm",
    "residual",
    "pool",
    "pool_size",
)


@dataclass(frozen=True)
class ConvBlockSpec:
    """One validated block of :class:`CaloImageCNN` (pairs are (eta, phi) = (H, W))."""

    channels: int
    kernel: tuple[int, int] = (3, 3)
    stride: tuple[int, int] = (1, 1)
    padding: tuple[int, int] | str = (0, 0)
    dilation: tuple[int, int] = (1, 1)
    convs: int = 1
    batch_norm: bool = False
    residual: bool = False
    pool: str | None = None
    pool_size: tuple[int, int] = (2, 2)

    @classmethod
    def from_config(cls, index: int, config: Mapping) -> ConvBlockSpec:
        """Validate one entry of ``blocks``; errors name the block index and the key."""
        config = check.mapping(config, f"blocks[{index}]", BLOCK_KEYS, required=("channels",))

        def where(key: str) -> str:
            return f"blocks[{index}].{key}"

        channels = check.positive_int(config["channels"], where("channels"))
        padding = config.get("padding", 0)
        if isinstance(padding, str):
            if padding != "same":
                raise ConfigError(f"{where('padding')} must be an int, a pair or 'same', got {padding!r}")
        else:
            padding = check.int_pair(padding, where("padding"), minimum=0)
        stride = check.int_pair(config.get("stride", 1), where("stride"), minimum=1)
        if padding == "same" and stride != (1, 1):
            raise ConfigError(
                f"{where('padding')} 'same' needs stride 1 (got stride {list(stride)}); "
                "use an integer padding, e.g. kernel // 2, with strided convolutions"
            )
        return cls(
            channels=channels,
            kernel=check.int_pair(config.get("kernel", 3), where("kernel"), minimum=1),
            stride=stride,
            padding=padding,
            dilation=check.int_pair(config.get("dilation", 1), where("dilation"), minimum=1),
            convs=check.positive_int(config.get("convs", 1), where("convs")),
            batch_norm=check.boolean(config.get("batch_norm", False), where("batch_norm")),
            residual=check.boolean(config.get("residual", False), where("residual")),
            pool=check.choice(config.get("pool"), where("pool"), sorted(POOLS), optional=True),
            pool_size=check.int_pair(config.get("pool_size", 2), where("pool_size"), minimum=1),
        )


def conv_output_size(
    size: tuple[int, int],
    kernel: tuple[int, int],
    stride: tuple[int, int],
    padding: tuple[int, int] | str,
    dilation: tuple[int, int],
) -> tuple[int, int]:
    """Output (H, W) of ``nn.Conv2d`` (or of a pooling layer with ``dilation`` 1) on an (H, W) input.

    ``padding='same'`` (stride 1) keeps the size; otherwise
    ``floor((n + 2 p - d (k - 1) - 1) / s) + 1`` per axis (may be <= 0: an invalid configuration).
    """
    if padding == "same":
        return size
    return tuple(  # type: ignore[return-value]
        (n + 2 * p - d * (k - 1) - 1) // s + 1
        for n, k, s, p, d in zip(size, kernel, stride, padding, dilation, strict=True)
    )


class ConvBlock(nn.Module):
    """``convs`` x (Conv2d -> [BatchNorm2d] -> activation), optionally residual, then optional pooling.

    The first convolution maps ``in_channels`` to ``spec.channels`` and carries the stride; the
    others keep the channels with stride 1. With ``residual`` (He et al. 2016) the last
    activation comes after adding the shortcut: the identity when channels and size are kept,
    else a 1x1 convolution with the block's stride (and batch norm if the block has it).
    Input ``(B, in_channels, H, W)``; output ``(B, spec.channels, H', W')``.
    """

    def __init__(self, in_channels: int, spec: ConvBlockSpec, activation_name: str, projection: bool):
        super().__init__()
        layers: list[nn.Module] = []
        previous = in_channels
        for i in range(spec.convs):
            layers.append(
                nn.Conv2d(
                    previous,
                    spec.channels,
                    kernel_size=spec.kernel,
                    stride=spec.stride if i == 0 else 1,
                    padding=spec.padding,
                    dilation=spec.dilation,
                    bias=not spec.batch_norm,
                )
            )
            if spec.batch_norm:
                layers.append(nn.BatchNorm2d(spec.channels))
            if i < spec.convs - 1 or not spec.residual:
                layers.append(activation(activation_name))
            previous = spec.channels
        self.body = nn.Sequential(*layers)
        self.residual = spec.residual
        self.shortcut: nn.Module | None = None
        if spec.residual and projection:
            shortcut: list[nn.Module] = [
                nn.Conv2d(in_channels, spec.channels, 1, stride=spec.stride, bias=not spec.batch_norm)
            ]
            if spec.batch_norm:
                shortcut.append(nn.BatchNorm2d(spec.channels))
            self.shortcut = nn.Sequential(*shortcut)
        self.post = activation(activation_name) if spec.residual else nn.Identity()
        self.pool = POOLS[spec.pool](spec.pool_size) if spec.pool else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.body(x)
        if self.residual:
            y = self.post(y + (x if self.shortcut is None else self.shortcut(x)))
        return self.pool(y)


class CaloImageCNN(nn.Module):
    """Convolution blocks -> global pooling (or flattening) -> dense head, for calorimeter images.

    Input: ``image`` ``(B, in_channels, H, W)`` with ``(H, W) = image_size`` (eta, phi pixels);
    output ``(B, n_outputs)`` logits.

    ``blocks`` is a list of dicts, one per :class:`ConvBlock`, with keys ``channels``
    (required), ``kernel`` (int or [kh, kw], default 3), ``stride`` (default 1), ``padding``
    (int, pair or ``"same"``, default 0), ``dilation`` (default 1), ``convs`` (convolutions in
    the block, default 1), ``batch_norm`` (default false), ``residual`` (default false),
    ``pool`` (``"max"``, ``"avg"`` or null) and ``pool_size`` (default 2). ``global_pool`` is
    ``"avg"`` or ``"max"`` (over the remaining H', W': any input size works) or ``"flatten"``
    (the head sees all ``C' H' W'`` values: the input must have ``image_size``). ``head`` lists
    the hidden widths of the dense head (dropout ``dropout`` after each), ``activation`` is one
    of :data:`hepnn.nets.blocks.ACTIVATIONS`.

    ``block_shapes`` holds every block's output ``(C, H, W)`` and ``features`` the head's input
    width, both computed without a forward pass; a block that shrinks the image to nothing
    raises :class:`~hepnn.errors.ConfigError` naming the block index and key.
    """

    def __init__(
        self,
        in_channels: int,
        n_outputs: int,
        image_size: Sequence[int],
        blocks: Sequence[Mapping],
        activation: str = "relu",
        global_pool: str = "avg",
        head: Sequence[int] = (),
        dropout: float = 0.0,
    ):
        super().__init__()
        in_channels = check.positive_int(in_channels, "in_channels")
        n_outputs = check.positive_int(n_outputs, "n_outputs")
        size = check.int_pair(image_size, "image_size", minimum=1)
        blocks = check.mapping_list(blocks, "blocks", "block", allow_empty=False)
        check.choice(global_pool, "global_pool", GLOBAL_POOLS)
        check.dropout_rate(dropout, "dropout")
        head = [check.positive_int(width, f"head[{i}]") for i, width in enumerate(head or ())]

        self.image_size = size
        self.block_shapes: list[tuple[int, int, int]] = []
        layers: list[nn.Module] = []
        channels = in_channels
        for index, config in enumerate(blocks):
            spec = ConvBlockSpec.from_config(index, config)
            new_size = self._block_output_size(index, spec, size)
            projection = spec.channels != channels or spec.stride != (1, 1)
            layers.append(ConvBlock(channels, spec, activation, projection))
            if spec.pool:
                pooled = conv_output_size(new_size, spec.pool_size, spec.pool_size, (0, 0), (1, 1))
                if min(pooled) < 1:
                    raise ConfigError(
                        f"blocks[{index}].pool_size {list(spec.pool_size)} pools the {list(new_size)} "
                        f"image to {list(pooled)}: nothing is left"
                    )
                new_size = pooled
            channels, size = spec.channels, new_size
            self.block_shapes.append((channels, *size))
        self.blocks = nn.Sequential(*layers)
        self.global_pool = global_pool
        if global_pool == "flatten":
            self.pool: nn.Module = nn.Flatten()
            self.features = channels * size[0] * size[1]
        else:
            pool = nn.AdaptiveAvgPool2d(1) if global_pool == "avg" else nn.AdaptiveMaxPool2d(1)
            self.pool = nn.Sequential(pool, nn.Flatten())
            self.features = channels
        self.head = MLP(self.features, head, n_outputs, dropout, activation)

    @staticmethod
    def _block_output_size(index: int, spec: ConvBlockSpec, size: tuple[int, int]) -> tuple[int, int]:
        """(H, W) after the block's convolutions (before pooling), checking that something is left."""
        out = size
        for i in range(spec.convs):
            stride = spec.stride if i == 0 else (1, 1)
            new = conv_output_size(out, spec.kernel, stride, spec.padding, spec.dilation)
            if min(new) < 1:
                raise ConfigError(
                    f"blocks[{index}].kernel {list(spec.kernel)} (convolution {i + 1} of {spec.convs}, "
                    f"padding {spec.padding!r}, stride {list(stride)}, dilation {list(spec.dilation)}) "
                    f"shrinks the {list(out)} image to {list(new)}: nothing is left; "
                    "use a smaller kernel or more padding (e.g. padding: same)"
                )
            out = new
        if spec.residual:
            # the shortcut (identity or 1x1 conv with the block's stride) must match the main path
            shortcut = conv_output_size(size, (1, 1), spec.stride, (0, 0), (1, 1))
            if shortcut != out:
                raise ConfigError(
                    f"blocks[{index}].padding {spec.padding!r}: a residual block must keep the size "
                    f"up to its stride, but its convolutions map {list(size)} to {list(out)} while "
                    f"the shortcut gives {list(shortcut)}; use padding 'same' (stride 1) or "
                    "dilation * (kernel - 1) / 2"
                )
        return out

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.head(self.pool(self.blocks(image)))
