"""Convolutions over a grid of detector stations that each record a time trace, ``A[x, y, t]``.

A surface detector (e.g. a grid of water-Cherenkov stations) gives, per event, a trace of
``T`` time bins (e.g. signal in VEM per 25 ns bin) for every station of an ``X x Y`` grid, the
start time of every trace, and which stations triggered. :class:`TraceConv3D` follows the
two-stage design of the deep-learning reconstructions of air showers from such arrays:

1. **Trace stage** (shared by all stations): ``Conv3d`` layers with ``(1, 1, k_t)`` kernels, so
   every station's trace is reduced to features by the same weights (a 1-d convolution along
   time, applied to every station: the 3-d analogue of the 1x1 convolution over particles),
   with optional temporal pooling or striding.
2. **Station features**: the remaining time axis is folded into the features of each station,
   the station's start time enters as an extra channel, and the trigger mask enters as an
   explicit channel (see *Masking*). Optionally the station coordinates enter as two more
   channels (CoordConv), so that pooled features can still tell where the footprint lies
   (the core position).
3. **Spatial stage**: convolutions that combine neighbouring stations, either ``Conv2d`` over
   the folded station features (``spatial_mode="conv2d"``, as Erdmann et al.) or ``Conv3d``
   with ``(k, k, 1)`` kernels over the unfolded ``(features, X, Y, T')`` tensor
   (``spatial_mode="conv3d"``: each remaining time slice is combined across neighbours with the
   same weights; the time axis is folded after this stage), optionally followed by residual
   blocks (He et al. 2016). Spatial convolutions keep the grid size (odd kernels, ``same``
   padding), so the trigger mask stays aligned with the feature map.
4. **Global pooling** over stations (masked average, masked maximum, both, or flattening the
   whole grid) and one dense **head** per target group.

Optionally (``first_guess``), an analytic first-guess reconstruction runs first
(:class:`hepnn.nets.shower_fit.ShowerFirstGuess`: plane front, lateral-distribution core,
spherical front; no trainable parameters). Its station time residuals (from the fitted front)
and distances from the fitted axis become two more station channels, and its event quantities
(axis, core, ln S1000, ln R) enter every head and, through a linear layer, the output directly:
the network learns the corrections to a standard reconstruction. This needs the station
positions (m) as a fourth input: a grid of stations does not say where they are.

Masking of untriggered (or missing) stations: their traces and start times are replaced by
zeros on entry (``torch.where``, so NaN or garbage there cannot leak, not even through batch
statistics), their trace features are zeroed again after the trace stage (the convolution
biases would make them non-zero), and the mask itself is an input channel (1 for triggered,
0 otherwise). Without that channel a triggered station that recorded (almost) no signal and
an untriggered or absent station would look the same to the spatial stage; with it, "zero
signal here" and "no station here" are distinguishable. The output does not depend on what
the traces or start times of untriggered stations hold. Masked pooling averages (or takes the
maximum) over triggered stations only; an event without any triggered station pools to zeros.

References: the Pierre Auger Collaboration, "Deep-learning based reconstruction of the shower
maximum X_max using the water-Cherenkov detectors of the Pierre Auger Observatory",
JINST 16 (2021) P07019; M. Erdmann, J. Glombitza, D. Walz, "A deep learning-based
reconstruction of cosmic ray-induced air showers", Astropart. Phys. 97 (2018) 46; residual
blocks of He et al., "Deep residual learning for image recognition", CVPR 2016; coordinate
channels of Liu et al., "An intriguing failing of convolutional neural networks and the
CoordConv solution", NeurIPS 2018.

The whole network is configured from plain values, so a Hydra YAML file describes it
completely (``conf/model/trace3d.yaml``). Configuration errors name the key
(e.g. ``trace_layers[1].pool_size``) and are raised at construction.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from hepnn.errors import ConfigError
from hepnn.nets.blocks import ACTIVATIONS, MLP, activation, masked_pool
from hepnn.nets.shower_fit import FirstGuess, ShowerFirstGuess
from hepnn.utils import validation as check
from hepnn.utils.standardization import center_and_scale

TRACE_LAYER_KEYS = ("channels", "kernel", "stride", "padding", "dilation", "batch_norm", "pool", "pool_size")
SPATIAL_LAYER_KEYS = ("channels", "kernel", "batch_norm")
SPATIAL_MODES = ("conv2d", "conv3d")
GLOBAL_POOLS = ("avg", "max", "avgmax", "flatten")
START_TIME_REFERENCES = ("none", "mean", "min")
SIGNAL_TRANSFORMS = ("none", "log1p")
TIME_POOLS = {"max": nn.MaxPool3d, "avg": nn.AvgPool3d}
FIRST_GUESS_FEATURES = 7  # axis (3), core (2), ln S1000, ln R: see TraceConv3D.first_guess_features
FIRST_GUESS_TIME_SCALE_NS = 100.0  # time residuals of the stations enter in units of 100 ns
FIRST_GUESS_DISTANCE_SCALE_M = 1000.0  # distances from the fitted axis in units of 1000 m
# outputs of these names start at the first guess (columns of torch.cat([axis, core], dim=1))
FIRST_GUESS_OUTPUTS = {"axis_x": 0, "axis_y": 1, "axis_z": 2, "core_x": 3, "core_y": 4}


@dataclass(frozen=True)
class TraceLayerSpec:
    """One validated layer of the trace stage: ``Conv3d`` with a ``(1, 1, kernel)`` kernel."""

    channels: int
    kernel: int = 5
    stride: int = 1
    padding: int | str = "same"
    dilation: int = 1
    batch_norm: bool = False
    pool: str | None = None
    pool_size: int = 2

    @classmethod
    def from_config(cls, index: int, config: Mapping) -> TraceLayerSpec:
        """Validate one entry of ``trace_layers``; errors name the layer index and the key."""
        where = _layer_keys("trace_layers", index, config, TRACE_LAYER_KEYS)
        padding = config.get("padding", "same")
        if isinstance(padding, str):
            if padding != "same":
                raise ConfigError(f"{where('padding')} must be a non-negative int or 'same', got {padding!r}")
        else:
            padding = check.non_negative_int(padding, where("padding"))
        stride = check.positive_int(config.get("stride", 1), where("stride"))
        if padding == "same" and stride != 1:
            raise ConfigError(
                f"{where('padding')} 'same' needs stride 1 (got stride {stride}); "
                "use an integer padding, e.g. kernel // 2, with strided convolutions"
            )
        return cls(
            channels=check.positive_int(config["channels"], where("channels")),
            kernel=check.positive_int(config.get("kernel", 5), where("kernel")),
            stride=stride,
            padding=padding,
            dilation=check.positive_int(config.get("dilation", 1), where("dilation")),
            batch_norm=check.boolean(config.get("batch_norm", False), where("batch_norm")),
            pool=check.choice(config.get("pool"), where("pool"), sorted(TIME_POOLS), optional=True),
            pool_size=check.positive_int(config.get("pool_size", 2), where("pool_size")),
        )

    def output_length(self, length: int) -> tuple[int, int]:
        """Time bins after the convolution and after the pooling."""
        if self.padding == "same":
            conv = length
        else:
            conv = (length + 2 * self.padding - self.dilation * (self.kernel - 1) - 1) // self.stride + 1
        pooled = conv // self.pool_size if self.pool else conv
        return conv, pooled


@dataclass(frozen=True)
class SpatialLayerSpec:
    """One validated spatial convolution: an odd ``kernel`` x ``kernel`` window of stations."""

    channels: int
    kernel: int = 3
    batch_norm: bool = False

    @classmethod
    def from_config(cls, index: int, config: Mapping) -> SpatialLayerSpec:
        """Validate one entry of ``spatial_layers``; errors name the layer index and the key."""
        where = _layer_keys("spatial_layers", index, config, SPATIAL_LAYER_KEYS)
        return cls(
            channels=check.positive_int(config["channels"], where("channels")),
            kernel=_odd_kernel(config.get("kernel", 3), where("kernel")),
            batch_norm=check.boolean(config.get("batch_norm", False), where("batch_norm")),
        )


def _layer_keys(section: str, index: int, config, keys: Sequence[str]):
    """Check one layer mapping (a mapping, known keys, ``channels`` given); returns a key namer."""
    check.mapping(config, f"{section}[{index}]", keys, required=("channels",))
    return lambda key: f"{section}[{index}].{key}"


def _odd_kernel(value, key: str) -> int:
    """A positive odd kernel size: spatial convolutions keep the grid, so the mask stays aligned."""
    kernel = check.positive_int(value, key)
    if kernel % 2 == 0:
        raise ConfigError(
            f"{key} must be odd (the grid size is kept so the trigger mask stays aligned), got {kernel}"
        )
    return kernel


def parse_trace_layers(value, trace_length: int) -> tuple[tuple[TraceLayerSpec, ...], tuple[int, ...]]:
    """The ``trace_layers`` specs and the time bins after each, checking that some are left."""
    specs, lengths = [], []
    length = trace_length
    for index, config in enumerate(check.mapping_list(value, "trace_layers", "layer", allow_empty=False)):
        spec = TraceLayerSpec.from_config(index, config)
        conv_length, pooled = spec.output_length(length)
        if conv_length < 1 or pooled < 1:
            key = "kernel" if conv_length < 1 else "pool_size"
            raise ConfigError(
                f"trace_layers[{index}].{key}: kernel {spec.kernel}, stride {spec.stride}, "
                f"padding {spec.padding!r}, dilation {spec.dilation}, pool_size "
                f"{spec.pool_size if spec.pool else None} shrink the {length} time bins to "
                f"{min(conv_length, pooled)}: nothing is left"
            )
        specs.append(spec)
        length = pooled
        lengths.append(length)
    return tuple(specs), tuple(lengths)


def parse_head_sizes(n_outputs, heads) -> dict[str, int]:
    """``{head name: n_outputs}`` from exactly one of ``n_outputs`` (one head) and ``heads``."""
    if (n_outputs is None) == (heads is None):
        raise ConfigError(
            "give exactly one of n_outputs (a single head) and heads ({name: n_outputs}), "
            f"got n_outputs={n_outputs!r}, heads={heads!r}"
        )
    if heads is None:
        return {"output": check.positive_int(n_outputs, "n_outputs")}
    if not isinstance(heads, Mapping) or not heads:
        raise ConfigError(f"heads must be a non-empty mapping {{name: n_outputs}}, got {heads!r}")
    return {str(name): check.positive_int(size, f"heads.{name}") for name, size in heads.items()}


def parse_first_guess(config) -> dict | None:
    """The keyword arguments of :class:`ShowerFirstGuess` (None: no first guess), checked by building it."""
    if config is None:
        return None
    if not isinstance(config, Mapping):
        raise ConfigError(
            f"first_guess must be a mapping of ShowerFirstGuess arguments or null, got {config!r}"
        )
    arguments = {str(k): v for k, v in config.items()}
    try:
        ShowerFirstGuess(**arguments)
    except TypeError as exc:
        raise ConfigError(f"first_guess: {exc}") from None
    return arguments


@dataclass(frozen=True)
class BaselineEntry:
    """Output ``column`` starts at first-guess quantity ``guess`` (a column of [axis, core]),
    standardised: ``(guess - center) / scale``, in the output's physical unit."""

    guess: int
    column: int
    center: float
    scale: float


def parse_baseline(names, standardization, n_outputs: int, first_guess: bool) -> tuple[BaselineEntry, ...]:
    """The outputs that start at the first guess (:data:`FIRST_GUESS_OUTPUTS`) and their standardisation."""
    if not first_guess:
        if names is not None or standardization is not None:
            raise ConfigError("output_names and output_standardization are only used with first_guess")
        return ()
    if names is None:
        return ()
    if isinstance(names, str) or not isinstance(names, Sequence) or len(names) != n_outputs:
        raise ConfigError(f"output_names must list the {n_outputs} output columns, got {names!r}")
    table = standardization or {}
    if not isinstance(table, Mapping):
        raise ConfigError(f"output_standardization must map names to {{center, scale}}, got {table!r}")
    entries = []
    for column, name in enumerate(map(str, names)):
        if name not in FIRST_GUESS_OUTPUTS:
            continue
        if name not in table:
            raise ConfigError(
                f"output_standardization has no entry for output {name!r} (it has {sorted(table)})"
            )
        center, scale = center_and_scale(table[name], f"output_standardization.{name}")
        entries.append(BaselineEntry(FIRST_GUESS_OUTPUTS[name], column, center, scale))
    return tuple(entries)


@dataclass(frozen=True)
class TraceConv3DConfig:
    """The validated arguments of :class:`TraceConv3D` (documented there) and the sizes they imply.

    Built by :meth:`from_arguments`, which raises :class:`~hepnn.errors.ConfigError` naming the
    argument (e.g. ``trace_layers[1].pool_size``) before any layer exists.
    """

    in_channels: int
    head_sizes: Mapping[str, int]
    trace_length: int
    grid_size: tuple[int, int]
    trace_layers: tuple[TraceLayerSpec, ...]
    time_lengths: tuple[int, ...]  # time bins after every trace layer
    spatial_mode: str
    spatial_layers: tuple[SpatialLayerSpec, ...]
    residual_blocks: int
    residual_kernel: int
    residual_batch_norm: bool
    global_pool: str
    head: tuple[int, ...]
    dropout: float
    activation: str
    coordinate_channels: bool
    start_time_reference: str
    start_time_scale: float  # ns
    signal_transform: str
    first_guess: Mapping | None  # ShowerFirstGuess keyword arguments
    baseline: tuple[BaselineEntry, ...]

    @classmethod
    def from_arguments(
        cls,
        *,
        in_channels,
        n_outputs,
        heads,
        trace_length,
        grid_size,
        trace_layers,
        spatial_mode,
        spatial_layers,
        residual_blocks,
        residual_kernel,
        residual_batch_norm,
        global_pool,
        head,
        dropout,
        activation,
        coordinate_channels,
        start_time_reference,
        start_time_scale,
        signal_transform,
        first_guess,
        output_names,
        output_standardization,
    ) -> TraceConv3DConfig:
        """Validate the arguments of :class:`TraceConv3D`; errors name the argument."""
        in_channels = check.positive_int(in_channels, "in_channels")
        trace_length = check.positive_int(trace_length, "trace_length")
        head_sizes = parse_head_sizes(n_outputs, heads)
        first_guess = parse_first_guess(first_guess)
        layers, time_lengths = parse_trace_layers(trace_layers, trace_length)
        spatial = check.mapping_list(spatial_layers, "spatial_layers", "layer")
        return cls(
            in_channels=in_channels,
            head_sizes=head_sizes,
            trace_length=trace_length,
            grid_size=check.int_pair(grid_size, "grid_size", minimum=1),
            trace_layers=layers,
            time_lengths=time_lengths,
            spatial_mode=check.choice(spatial_mode, "spatial_mode", SPATIAL_MODES),
            spatial_layers=tuple(SpatialLayerSpec.from_config(i, c) for i, c in enumerate(spatial)),
            residual_blocks=check.non_negative_int(residual_blocks, "residual_blocks"),
            residual_kernel=_odd_kernel(residual_kernel, "residual_kernel"),
            residual_batch_norm=check.boolean(residual_batch_norm, "residual_batch_norm"),
            global_pool=check.choice(global_pool, "global_pool", GLOBAL_POOLS),
            head=tuple(check.positive_int(width, f"head[{i}]") for i, width in enumerate(head or ())),
            dropout=check.dropout_rate(dropout, "dropout"),
            activation=check.choice(activation, "activation", sorted(ACTIVATIONS)),
            coordinate_channels=check.boolean(coordinate_channels, "coordinate_channels"),
            start_time_reference=check.choice(
                start_time_reference, "start_time_reference", START_TIME_REFERENCES
            ),
            start_time_scale=check.positive_number(start_time_scale, "start_time_scale", unit="ns"),
            signal_transform=check.choice(signal_transform, "signal_transform", SIGNAL_TRANSFORMS),
            first_guess=first_guess,
            baseline=parse_baseline(
                output_names, output_standardization, sum(head_sizes.values()), first_guess is not None
            ),
        )

    @property
    def n_outputs(self) -> int:
        """Output columns: the heads' outputs, concatenated."""
        return sum(self.head_sizes.values())

    @property
    def trace_features(self) -> int:
        """Features per station after the trace stage, time folded in."""
        return self.trace_layers[-1].channels * self.time_lengths[-1]

    @property
    def station_channels(self) -> int:
        """Input channels of the spatial stage: the trace features (per time bin with ``conv3d``)
        and the extra channels: start time, mask, [x, y], [time residual, distance from the axis]."""
        extra = 2 + (2 if self.coordinate_channels else 0) + (2 if self.first_guess is not None else 0)
        if self.spatial_mode == "conv2d":
            return self.trace_features + extra
        return self.trace_layers[-1].channels + extra

    @property
    def spatial_channels(self) -> int:
        """Output channels of the spatial stage (per time bin with ``conv3d``)."""
        return self.spatial_layers[-1].channels if self.spatial_layers else self.station_channels

    @property
    def features(self) -> int:
        """Width of the heads' input: the pooled station features, then the first guess's."""
        per_station = self.spatial_channels
        if self.spatial_mode == "conv3d":
            per_station *= self.time_lengths[-1]
        x_size, y_size = self.grid_size
        pooled = {"avg": 1, "max": 1, "avgmax": 2, "flatten": x_size * y_size}[self.global_pool] * per_station
        return pooled + (FIRST_GUESS_FEATURES if self.first_guess is not None else 0)


def build_trace_net(config: TraceConv3DConfig) -> nn.Sequential:
    """The trace stage: per layer ``Conv3d`` (1, 1, k) [+ BN] + activation [+ pooling along time]."""
    layers: list[nn.Module] = []
    channels = config.in_channels
    for spec in config.trace_layers:
        padding = spec.padding if spec.padding == "same" else (0, 0, spec.padding)
        layers.append(
            nn.Conv3d(
                channels,
                spec.channels,
                kernel_size=(1, 1, spec.kernel),
                stride=(1, 1, spec.stride),
                padding=padding,
                dilation=(1, 1, spec.dilation),
                bias=not spec.batch_norm,
            )
        )
        if spec.batch_norm:
            layers.append(nn.BatchNorm3d(spec.channels))
        layers.append(activation(config.activation))
        if spec.pool:
            size = (1, 1, spec.pool_size)
            layers.append(TIME_POOLS[spec.pool](size, stride=size))
        channels = spec.channels
    return nn.Sequential(*layers)


def build_spatial_net(config: TraceConv3DConfig) -> nn.Sequential:
    """The spatial stage: grid-keeping convolutions [+ BN] + activation, then the residual blocks."""
    mode = config.spatial_mode
    layers: list[nn.Module] = []
    channels = config.station_channels
    for spec in config.spatial_layers:
        layers.append(_spatial_conv(mode, channels, spec.channels, spec.kernel, not spec.batch_norm))
        if spec.batch_norm:
            layers.append(_batch_norm(mode, spec.channels))
        layers.append(activation(config.activation))
        channels = spec.channels
    for _ in range(config.residual_blocks):
        layers.append(
            SpatialResidualBlock(
                mode, channels, config.residual_kernel, config.residual_batch_norm, config.activation
            )
        )
    return nn.Sequential(*layers)


def build_heads(config: TraceConv3DConfig) -> nn.ModuleDict:
    """One :class:`~hepnn.nets.blocks.MLP` per head, each reading all ``config.features``."""
    hidden = list(config.head)
    return nn.ModuleDict(
        {
            name: MLP(config.features, hidden, size, config.dropout, config.activation)
            for name, size in config.head_sizes.items()
        }
    )


def baseline_tensors(config: TraceConv3DConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """``baseline_weight`` ``(5, K)`` and ``baseline_bias`` ``(K,)``: the standardised first guess
    of the outputs named in :data:`FIRST_GUESS_OUTPUTS` (zero for the others)."""
    weight = torch.zeros(len(FIRST_GUESS_OUTPUTS), config.n_outputs)
    bias = torch.zeros(config.n_outputs)
    for entry in config.baseline:
        weight[entry.guess, entry.column] = 1.0 / entry.scale
        bias[entry.column] = -entry.center / entry.scale
    return weight, bias


def grid_coordinates(grid_size: tuple[int, int]) -> torch.Tensor:
    """Station coordinates ``(1, 2, X, Y)``, x and y scaled to [-1, 1] (0 along an axis of one station)."""
    x_size, y_size = grid_size
    xs = torch.linspace(-1.0, 1.0, x_size) if x_size > 1 else torch.zeros(1)
    ys = torch.linspace(-1.0, 1.0, y_size) if y_size > 1 else torch.zeros(1)
    return torch.stack(torch.meshgrid(xs, ys, indexing="ij")).unsqueeze(0)


def _spatial_conv(mode: str, in_channels: int, out_channels: int, kernel: int, bias: bool) -> nn.Module:
    """A spatial convolution that keeps the grid: ``Conv2d`` (k, k) or ``Conv3d`` (k, k, 1)."""
    if mode == "conv2d":
        return nn.Conv2d(in_channels, out_channels, kernel, padding=kernel // 2, bias=bias)
    return nn.Conv3d(
        in_channels, out_channels, (kernel, kernel, 1), padding=(kernel // 2, kernel // 2, 0), bias=bias
    )


def _batch_norm(mode: str, channels: int) -> nn.Module:
    return nn.BatchNorm2d(channels) if mode == "conv2d" else nn.BatchNorm3d(channels)


class SpatialResidualBlock(nn.Module):
    """conv -> [BN] -> act -> conv -> [BN], plus the identity, -> act (He et al. 2016), grid kept."""

    def __init__(self, mode: str, channels: int, kernel: int, batch_norm: bool, activation_name: str):
        super().__init__()
        layers: list[nn.Module] = []
        for i in range(2):
            layers.append(_spatial_conv(mode, channels, channels, kernel, bias=not batch_norm))
            if batch_norm:
                layers.append(_batch_norm(mode, channels))
            if i == 0:
                layers.append(activation(activation_name))
        self.body = nn.Sequential(*layers)
        self.post = activation(activation_name)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.post(x + self.body(x))


class TraceConv3D(nn.Module):
    """Trace convolutions shared by all stations -> station features -> spatial convolutions -> heads.

    Inputs (see the module docstring for the design):

    - ``traces`` ``(B, in_channels, X, Y, T)`` with ``(X, Y) = grid_size`` and ``T = trace_length``
      (e.g. signal in VEM per 25 ns bin);
    - ``start_time`` ``(B, 1, X, Y)`` (or ``(B, X, Y)``): the start time of every trace (ns);
    - ``station_mask`` ``(B, X, Y)`` (or ``(B, 1, X, Y)``): True (or 1) for triggered stations.

    Output: ``(B, K)``. Give either ``n_outputs`` (one head with ``K = n_outputs`` outputs) or
    ``heads`` ``{name: n_outputs}`` (one head per target group, e.g. ``{energy: 1, xmax: 1,
    axis: 3, core: 2}``; the outputs are concatenated in that order, ``K`` = their sum;
    :meth:`split_outputs` gives them back as a dict). A single ``(B, K)`` tensor keeps the task
    simple: its columns are the columns of ``batch["targets"]`` (standardisation, loss weights and
    metrics are per column), and one output tensor exports and writes out as is.

    Parameters:

    - ``trace_layers``: list of dicts, one ``Conv3d`` with a ``(1, 1, kernel)`` kernel each; keys
      ``channels`` (required), ``kernel`` (time bins, default 5), ``stride`` (default 1),
      ``padding`` (int or ``"same"``, the default, stride 1 only), ``dilation`` (default 1),
      ``batch_norm`` (default false), ``pool`` (``"max"``, ``"avg"`` or null: pooling along
      time only) and ``pool_size`` (default 2).
    - ``spatial_mode``: ``"conv2d"`` (fold time into features, then ``Conv2d``) or ``"conv3d"``
      (``Conv3d`` with ``(k, k, 1)`` kernels, time folded afterwards).
    - ``spatial_layers``: list of dicts with keys ``channels`` (required), ``kernel`` (odd,
      default 3) and ``batch_norm``; ``residual_blocks`` residual blocks of two convolutions
      with the last layer's channels follow (``residual_kernel``, ``residual_batch_norm``).
    - ``global_pool``: ``"avg"`` or ``"max"`` (masked over triggered stations), ``"avgmax"``
      (both, concatenated) or ``"flatten"`` (every grid position). With ``flatten`` or coordinate
      channels the input must have ``grid_size``; otherwise any grid works.
    - ``head``: hidden widths of every head (dropout ``dropout`` after each).
    - ``coordinate_channels``: add the station position (x, y scaled to [-1, 1]) as two channels.
    - ``start_time_reference``: subtract, per event, the ``"mean"`` or ``"min"`` start time of the
      triggered stations (the absolute time of an event carries no information), or ``"none"``;
      then divide by ``start_time_scale`` (ns; use 1 for start times the loader standardised).
    - ``signal_transform``: ``"log1p"`` applies ``sign(s) log(1 + |s|)`` to the traces (signals
      span orders of magnitude from the core outwards) or ``"none"``.
    - ``first_guess``: null, or the keyword arguments of
      :class:`~hepnn.nets.shower_fit.ShowerFirstGuess` (``{}`` for its defaults); then
      ``forward`` also takes ``station_position`` ``(B, 2, X, Y)``, the stations' x and y (m).
    - ``output_names`` and ``output_standardization`` (with ``first_guess``): the name of every
      output column and ``{name: {center, scale}}`` (the regression task's table). Outputs named
      ``axis_x``, ``axis_y``, ``axis_z``, ``core_x`` or ``core_y`` start at the first guess,
      standardised, ``(guess - center) / scale``; the heads (last layers initialised to zero)
      and the linear term of the first-guess features add the corrections.

    ``time_lengths`` holds the time bins after every trace layer and ``features`` the head
    input width, both computed without a forward pass.
    """

    def __init__(
        self,
        in_channels: int,
        n_outputs: int | None = None,
        heads: Mapping[str, int] | None = None,
        trace_length: int = 80,
        grid_size: Sequence[int] = (9, 9),
        trace_layers: Sequence[Mapping] = ({"channels": 8, "kernel": 5, "pool": "max"},),
        spatial_mode: str = "conv2d",
        spatial_layers: Sequence[Mapping] = ({"channels": 32, "kernel": 3},),
        residual_blocks: int = 0,
        residual_kernel: int = 3,
        residual_batch_norm: bool = False,
        global_pool: str = "avgmax",
        head: Sequence[int] = (64,),
        dropout: float = 0.0,
        activation: str = "relu",
        coordinate_channels: bool = True,
        start_time_reference: str = "mean",
        start_time_scale: float = 1.0,
        signal_transform: str = "none",
        first_guess: Mapping | None = None,
        output_names: Sequence[str] | None = None,
        output_standardization: Mapping | None = None,
    ):
        super().__init__()
        config = TraceConv3DConfig.from_arguments(
            in_channels=in_channels,
            n_outputs=n_outputs,
            heads=heads,
            trace_length=trace_length,
            grid_size=grid_size,
            trace_layers=trace_layers,
            spatial_mode=spatial_mode,
            spatial_layers=spatial_layers,
            residual_blocks=residual_blocks,
            residual_kernel=residual_kernel,
            residual_batch_norm=residual_batch_norm,
            global_pool=global_pool,
            head=head,
            dropout=dropout,
            activation=activation,
            coordinate_channels=coordinate_channels,
            start_time_reference=start_time_reference,
            start_time_scale=start_time_scale,
            signal_transform=signal_transform,
            first_guess=first_guess,
            output_names=output_names,
            output_standardization=output_standardization,
        )
        self.config = config
        self.trace_length = config.trace_length
        self.grid_size = config.grid_size
        self.head_sizes = dict(config.head_sizes)
        self.spatial_mode = config.spatial_mode
        self.global_pool = config.global_pool
        self.coordinate_channels = config.coordinate_channels
        self.start_time_reference = config.start_time_reference
        self.start_time_scale = config.start_time_scale
        self.signal_transform = config.signal_transform
        self.first_guess = None if config.first_guess is None else ShowerFirstGuess(**config.first_guess)
        self.time_lengths = list(config.time_lengths)
        self.trace_net = build_trace_net(config)  # 1. trace stage
        self.trace_features = config.trace_features
        self.spatial_net = build_spatial_net(config)  # 2./3. station features and spatial stage
        self.features = config.features
        self.heads = build_heads(config)  # 4. heads (after the global pooling)
        self.n_outputs = config.n_outputs
        # the first guess reaches the outputs linearly too: corrections are what the heads learn
        self.first_guess_skip = None
        if self.first_guess is not None:
            self.first_guess_skip = nn.Linear(FIRST_GUESS_FEATURES, self.n_outputs)
            weight, bias = baseline_tensors(config)
            self.register_buffer("baseline_weight", weight, persistent=False)
            self.register_buffer("baseline_bias", bias, persistent=False)
            for module in [*(head.layers[-1] for head in self.heads.values()), self.first_guess_skip]:
                nn.init.zeros_(module.weight)  # start at the baseline: the net learns corrections
                nn.init.zeros_(module.bias)
        self.register_buffer("coordinates", grid_coordinates(self.grid_size), persistent=False)

    def split_outputs(self, outputs: torch.Tensor) -> dict[str, torch.Tensor]:
        """The ``(B, K)`` output as ``{head name: (B, n_outputs)}`` (in the order of ``heads``)."""
        return dict(zip(self.head_sizes, outputs.split(list(self.head_sizes.values()), dim=-1), strict=True))

    def _check_inputs(self, traces: torch.Tensor, start_time: torch.Tensor, station_mask: torch.Tensor):
        if traces.ndim != 5:
            raise ValueError(f"traces must be (B, C, X, Y, T), got shape {tuple(traces.shape)}")
        b, _, x, y, t = traces.shape
        if (x, y) != self.grid_size and (self.global_pool == "flatten" or self.coordinate_channels):
            raise ValueError(
                f"traces have a {x}x{y} grid but the net was built for "
                f"{self.grid_size[0]}x{self.grid_size[1]} (grid_size); only masked pooling "
                "(avg, max, avgmax) without coordinate_channels accepts other grids"
            )
        if t != self.trace_length:
            raise ValueError(
                f"traces have {t} time bins but the net was built for trace_length {self.trace_length}"
            )
        if start_time.ndim == 3:
            start_time = start_time.unsqueeze(1)
        if tuple(start_time.shape) != (b, 1, x, y):
            raise ValueError(
                f"start_time must be (B, 1, X, Y) = {(b, 1, x, y)}, got {tuple(start_time.shape)}"
            )
        if station_mask.ndim == 4 and station_mask.shape[1] == 1:  # (B, 1, X, Y), as a loader group
            station_mask = station_mask[:, 0]
        if tuple(station_mask.shape) != (b, x, y):
            raise ValueError(f"station_mask must be (B, X, Y) = {(b, x, y)}, got {tuple(station_mask.shape)}")
        return start_time, station_mask.bool()

    def fit_first_guess(
        self,
        traces: torch.Tensor,
        start_time: torch.Tensor,
        station_mask: torch.Tensor,
        station_position: torch.Tensor | None,
    ) -> FirstGuess | None:
        """The analytic first guess of every event (None without ``first_guess``)."""
        if self.first_guess is None:
            if station_position is not None:
                raise ValueError("station_position was given but the net has no first_guess to use it")
            return None
        start_time, mask = self._check_inputs(traces, start_time, station_mask)
        b, _, x, y, _ = traces.shape
        if station_position is None or tuple(station_position.shape) != (b, 2, x, y):
            got = None if station_position is None else tuple(station_position.shape)
            raise ValueError(
                f"the first guess needs station_position (B, 2, X, Y) = {(b, 2, x, y)} (station x, y in m), "
                f"got {got}"
            )
        flat = mask.flatten(1)
        # summed in float64 like the fits: a float32 sum's rounding depends on the order of the
        # additions (PyTorch vs onnxruntime), and a fit far from its priors can amplify it
        signal = torch.where(mask[:, None, :, :, None], traces, torch.zeros((), dtype=traces.dtype))
        signal = signal.to(torch.float64).sum(dim=(1, 4)).flatten(1)
        position = station_position.to(torch.float64).flatten(2)
        guess = self.first_guess(
            signal, start_time.to(torch.float64).flatten(1), position[:, 0], position[:, 1], flat
        )
        return FirstGuess(*(v.to(traces.dtype) for v in guess))

    def first_layer(self, traces: torch.Tensor) -> torch.Tensor:
        """Output of the first trace convolution ``(B, C1, X, Y, T1)`` (no masking or transform)."""
        return self.trace_net[0](traces)

    def station_features(
        self,
        traces: torch.Tensor,
        start_time: torch.Tensor,
        station_mask: torch.Tensor,
        station_position: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Per-station input of the spatial stage.

        ``(B, F T' + extra, X, Y)`` with ``spatial_mode="conv2d"`` (time folded into features),
        ``(B, F + extra, X, Y, T')`` with ``"conv3d"``; ``extra`` channels are the start time,
        the trigger mask, optionally the x, y coordinates and optionally the first guess's time
        residual and distance from the axis (in that order, last).
        """
        guess = self.fit_first_guess(traces, start_time, station_mask, station_position)
        return self._station_features(traces, start_time, station_mask, guess)

    def _station_features(self, traces, start_time, station_mask, guess: FirstGuess | None) -> torch.Tensor:
        start_time, mask = self._check_inputs(traces, start_time, station_mask)
        m5 = mask[:, None, :, :, None]
        traces = torch.where(m5, traces, torch.zeros((), dtype=traces.dtype, device=traces.device))
        if self.signal_transform == "log1p":
            traces = torch.sign(traces) * torch.log1p(traces.abs())
        features = self.trace_net(traces)  # (B, F, X, Y, T')
        features = features * m5.to(features.dtype)  # conv biases make untriggered stations non-zero
        b, f, x, y, t = features.shape
        extras = [self._start_time(start_time, mask), mask[:, None].to(features.dtype)]
        if self.coordinate_channels:
            extras.append(self.coordinates.to(features.dtype).expand(b, -1, -1, -1))
        if guess is not None:
            extras.append(
                guess.time_residual.reshape(b, 1, x, y).to(features.dtype) / FIRST_GUESS_TIME_SCALE_NS
            )
            extras.append(
                guess.axis_distance.reshape(b, 1, x, y).to(features.dtype) / FIRST_GUESS_DISTANCE_SCALE_M
            )
        extras = torch.cat(extras, dim=1)  # (B, extra, X, Y)
        if self.spatial_mode == "conv2d":
            # fold time into features: (B, F, X, Y, T') -> (B, F T', X, Y), feature-major
            folded = features.permute(0, 1, 4, 2, 3).reshape(b, f * t, x, y)
            return torch.cat([folded, extras], dim=1)
        return torch.cat([features, extras.unsqueeze(-1).expand(-1, -1, -1, -1, t)], dim=1)

    def _start_time(self, start_time: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Start times ``(B, 1, X, Y)``: relative to the event's reference, scaled, zero where untriggered."""
        m = mask[:, None]
        zero = torch.zeros((), dtype=start_time.dtype, device=start_time.device)
        t = torch.where(m, start_time, zero)
        if self.start_time_reference == "mean":
            reference = t.sum(dim=(2, 3), keepdim=True) / m.sum(dim=(2, 3), keepdim=True).clamp(min=1)
            t = t - reference
        elif self.start_time_reference == "min":
            reference = torch.where(m, start_time, torch.full_like(start_time, float("inf"))).amin(
                dim=(2, 3), keepdim=True
            )
            t = t - torch.where(torch.isfinite(reference), reference, zero)
        return torch.where(m, t / self.start_time_scale, zero)

    def first_guess_features(self, guess: FirstGuess) -> torch.Tensor:
        """The first guess as ``(B, 7)`` features of order one: axis (3), core (km, 2),
        ln(S1000 / VEM) - 4 and (ln R - its prior mean) / the prior width."""
        mean, width = self.first_guess.log_radius_prior
        return torch.cat(
            [
                guess.axis,
                guess.core / FIRST_GUESS_DISTANCE_SCALE_M,
                (guess.log_s1000 - 4.0)[:, None],
                ((guess.log_radius - mean) / width)[:, None],
            ],
            dim=1,
        )

    def pooled_features(
        self,
        traces: torch.Tensor,
        start_time: torch.Tensor,
        station_mask: torch.Tensor,
        station_position: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """The heads' input ``(B, features)`` (pooled station features, then the first guess's)."""
        guess = self.fit_first_guess(traces, start_time, station_mask, station_position)
        return self._pooled_features(traces, start_time, station_mask, guess)

    def _pooled_features(self, traces, start_time, station_mask, guess: FirstGuess | None) -> torch.Tensor:
        x = self.spatial_net(self._station_features(traces, start_time, station_mask, guess))
        if self.spatial_mode == "conv3d":
            b, c, nx, ny, t = x.shape
            x = x.permute(0, 1, 4, 2, 3).reshape(b, c * t, nx, ny)
        if self.global_pool == "flatten":
            pooled = [x.flatten(1)]
        else:
            mask = station_mask.bool().flatten(1)  # (B, X Y)
            x = x.flatten(2)  # (B, C, X Y)
            pooled = []
            if self.global_pool in ("avg", "avgmax"):
                pooled.append(masked_pool(x, mask, "mean"))
            if self.global_pool in ("max", "avgmax"):
                pooled.append(masked_pool(x, mask, "max"))
        if guess is not None:
            pooled.append(self.first_guess_features(guess).to(x.dtype))
        return torch.cat(pooled, dim=1)

    def forward(
        self,
        traces: torch.Tensor,
        start_time: torch.Tensor,
        station_mask: torch.Tensor,
        station_position: torch.Tensor | None = None,
    ) -> torch.Tensor:
        guess = self.fit_first_guess(traces, start_time, station_mask, station_position)
        features = self._pooled_features(traces, start_time, station_mask, guess)
        outputs = torch.cat([head(features) for head in self.heads.values()], dim=-1)
        if guess is not None:
            baseline = torch.cat([guess.axis, guess.core], dim=1).to(outputs.dtype) @ self.baseline_weight
            correction = self.first_guess_skip(self.first_guess_features(guess).to(outputs.dtype))
            outputs = outputs + baseline + self.baseline_bias + correction
        return outputs
