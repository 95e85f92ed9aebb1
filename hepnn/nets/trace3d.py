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
from hepnn.nets.blocks import MLP, activation
from hepnn.nets.calo_cnn import _bool, _pair, _positive_int
from hepnn.nets.shower_fit import FirstGuess, ShowerFirstGuess
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
        where = _where("trace_layers", index, config, TRACE_LAYER_KEYS)
        padding = config.get("padding", "same")
        if isinstance(padding, str):
            if padding != "same":
                raise ConfigError(f"{where('padding')} must be a non-negative int or 'same', got {padding!r}")
        else:
            padding = _non_negative_int(padding, where("padding"))
        stride = _positive_int(config.get("stride", 1), where("stride"))
        if padding == "same" and stride != 1:
            raise ConfigError(
                f"{where('padding')} 'same' needs stride 1 (got stride {stride}); "
                "use an integer padding, e.g. kernel // 2, with strided convolutions"
            )
        pool = config.get("pool")
        if pool is not None and pool not in TIME_POOLS:
            raise ConfigError(f"{where('pool')} must be one of {sorted(TIME_POOLS)} or null, got {pool!r}")
        return cls(
            channels=_positive_int(config["channels"], where("channels")),
            kernel=_positive_int(config.get("kernel", 5), where("kernel")),
            stride=stride,
            padding=padding,
            dilation=_positive_int(config.get("dilation", 1), where("dilation")),
            batch_norm=_bool(config.get("batch_norm", False), where("batch_norm")),
            pool=pool,
            pool_size=_positive_int(config.get("pool_size", 2), where("pool_size")),
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
        where = _where("spatial_layers", index, config, SPATIAL_LAYER_KEYS)
        kernel = _positive_int(config.get("kernel", 3), where("kernel"))
        if kernel % 2 == 0:
            raise ConfigError(
                f"{where('kernel')} must be odd (the grid size is kept so the trigger mask stays aligned), "
                f"got {kernel}"
            )
        return cls(
            channels=_positive_int(config["channels"], where("channels")),
            kernel=kernel,
            batch_norm=_bool(config.get("batch_norm", False), where("batch_norm")),
        )


def _where(section: str, index: int, config, keys: Sequence[str]):
    """Check one layer mapping (a mapping, known keys, ``channels`` given); returns a key namer."""
    if not isinstance(config, Mapping):
        raise ConfigError(f"{section}[{index}] must be a mapping of {list(keys)}, got {config!r}")
    unknown = sorted(set(map(str, config)) - set(keys))
    if unknown:
        raise ConfigError(f"{section}[{index}]: unknown key(s) {unknown}; known keys are {list(keys)}")
    if "channels" not in config:
        raise ConfigError(f"{section}[{index}]: key 'channels' is required")
    return lambda key: f"{section}[{index}].{key}"


def _non_negative_int(value, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ConfigError(f"{where} must be a non-negative integer, got {value!r}")
    return value


def _layer_list(value, name: str, allow_empty: bool) -> list:
    if isinstance(value, Mapping) or isinstance(value, str) or not isinstance(value, Sequence):
        raise ConfigError(f"{name} must be a list of layer mappings, got {value!r}")
    if not value and not allow_empty:
        raise ConfigError(f"{name} must hold at least one layer")
    return list(value)


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
        in_channels = _positive_int(in_channels, "in_channels")
        self.trace_length = _positive_int(trace_length, "trace_length")
        self.grid_size = _pair(grid_size, "grid_size", minimum=1)
        self.head_sizes = self._head_sizes(n_outputs, heads)
        if spatial_mode not in SPATIAL_MODES:
            raise ConfigError(f"spatial_mode must be one of {list(SPATIAL_MODES)}, got {spatial_mode!r}")
        if global_pool not in GLOBAL_POOLS:
            raise ConfigError(f"global_pool must be one of {list(GLOBAL_POOLS)}, got {global_pool!r}")
        if start_time_reference not in START_TIME_REFERENCES:
            raise ConfigError(
                f"start_time_reference must be one of {list(START_TIME_REFERENCES)}, "
                f"got {start_time_reference!r}"
            )
        if signal_transform not in SIGNAL_TRANSFORMS:
            raise ConfigError(
                f"signal_transform must be one of {list(SIGNAL_TRANSFORMS)}, got {signal_transform!r}"
            )
        if isinstance(start_time_scale, bool) or not isinstance(start_time_scale, int | float):
            raise ConfigError(f"start_time_scale must be a positive number (ns), got {start_time_scale!r}")
        if not start_time_scale > 0:
            raise ConfigError(f"start_time_scale must be a positive number (ns), got {start_time_scale!r}")
        if not 0.0 <= dropout < 1.0:
            raise ConfigError(f"dropout must be in [0, 1), got {dropout!r}")
        residual_blocks = _non_negative_int(residual_blocks, "residual_blocks")
        residual_kernel = _positive_int(residual_kernel, "residual_kernel")
        if residual_kernel % 2 == 0:
            raise ConfigError(f"residual_kernel must be odd, got {residual_kernel}")
        hidden = [_positive_int(width, f"head[{i}]") for i, width in enumerate(head or ())]
        self.spatial_mode = spatial_mode
        self.global_pool = global_pool
        self.coordinate_channels = _bool(coordinate_channels, "coordinate_channels")
        self.start_time_reference = start_time_reference
        self.start_time_scale = float(start_time_scale)
        self.signal_transform = signal_transform
        self.first_guess = None if first_guess is None else _first_guess(first_guess)

        # 1. trace stage: Conv3d (1, 1, k) [+ BN] + activation [+ pooling along time]
        layers: list[nn.Module] = []
        channels, length = in_channels, self.trace_length
        self.time_lengths: list[int] = []
        for index, config in enumerate(_layer_list(trace_layers, "trace_layers", allow_empty=False)):
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
            layers.append(_activation(activation))
            if spec.pool:
                size = (1, 1, spec.pool_size)
                layers.append(TIME_POOLS[spec.pool](size, stride=size))
            channels, length = spec.channels, pooled
            self.time_lengths.append(length)
        self.trace_net = nn.Sequential(*layers)
        self.trace_features = channels * length  # per station, time folded in

        # 2./3. station features and spatial stage
        # start time, mask, [x, y], [time residual, distance from the axis]
        extra = 2 + (2 if self.coordinate_channels else 0) + (2 if self.first_guess else 0)
        channels = self.trace_features + extra if spatial_mode == "conv2d" else channels + extra
        spatial: list[nn.Module] = []
        for index, config in enumerate(_layer_list(spatial_layers, "spatial_layers", allow_empty=True)):
            spec = SpatialLayerSpec.from_config(index, config)
            spatial.append(
                _spatial_conv(spatial_mode, channels, spec.channels, spec.kernel, not spec.batch_norm)
            )
            if spec.batch_norm:
                spatial.append(_batch_norm(spatial_mode, spec.channels))
            spatial.append(_activation(activation))
            channels = spec.channels
        for _ in range(residual_blocks):
            spatial.append(
                SpatialResidualBlock(
                    spatial_mode,
                    channels,
                    residual_kernel,
                    _bool(residual_batch_norm, "residual_batch_norm"),
                    activation,
                )
            )
        self.spatial_net = nn.Sequential(*spatial)
        station_features = channels * length if spatial_mode == "conv3d" else channels

        # 4. global pooling and heads
        x_size, y_size = self.grid_size
        self.features = {
            "avg": station_features,
            "max": station_features,
            "avgmax": 2 * station_features,
            "flatten": station_features * x_size * y_size,
        }[global_pool]
        if self.first_guess is not None:
            self.features += FIRST_GUESS_FEATURES
        self.heads = nn.ModuleDict(
            {
                name: MLP(self.features, hidden, size, dropout, activation)
                for name, size in self.head_sizes.items()
            }
        )
        self.n_outputs = sum(self.head_sizes.values())
        # the first guess reaches the outputs linearly too: corrections are what the heads learn
        self.first_guess_skip = None
        if self.first_guess is not None:
            self.first_guess_skip = nn.Linear(FIRST_GUESS_FEATURES, self.n_outputs)
            self._register_baseline(output_names, output_standardization)
            for module in [*(head.layers[-1] for head in self.heads.values()), self.first_guess_skip]:
                nn.init.zeros_(module.weight)  # start at the baseline: the net learns corrections
                nn.init.zeros_(module.bias)
        elif output_names is not None or output_standardization is not None:
            raise ConfigError("output_names and output_standardization are only used with first_guess")
        xs = torch.linspace(-1.0, 1.0, x_size) if x_size > 1 else torch.zeros(1)
        ys = torch.linspace(-1.0, 1.0, y_size) if y_size > 1 else torch.zeros(1)
        grid = torch.stack(torch.meshgrid(xs, ys, indexing="ij"))  # (2, X, Y)
        self.register_buffer("coordinates", grid.unsqueeze(0), persistent=False)

    def _register_baseline(self, names, standardization) -> None:
        """Buffers ``baseline_weight`` ``(5, K)`` and ``baseline_bias`` ``(K,)``: the standardised
        first guess of the outputs named in :data:`FIRST_GUESS_OUTPUTS` (zero for the others)."""
        weight = torch.zeros(len(FIRST_GUESS_OUTPUTS), self.n_outputs)
        bias = torch.zeros(self.n_outputs)
        if names is not None:
            if isinstance(names, str) or not isinstance(names, Sequence) or len(names) != self.n_outputs:
                raise ConfigError(
                    f"output_names must list the {self.n_outputs} output columns, got {names!r}"
                )
            table = standardization or {}
            if not isinstance(table, Mapping):
                raise ConfigError(
                    f"output_standardization must map names to {{center, scale}}, got {table!r}"
                )
            for column, name in enumerate(map(str, names)):
                if name not in FIRST_GUESS_OUTPUTS:
                    continue
                if name not in table:
                    raise ConfigError(
                        f"output_standardization has no entry for output {name!r} (it has {sorted(table)})"
                    )
                center, scale = center_and_scale(table[name], f"output_standardization.{name}")
                weight[FIRST_GUESS_OUTPUTS[name], column] = 1.0 / scale
                bias[column] = -center / scale
        self.register_buffer("baseline_weight", weight, persistent=False)
        self.register_buffer("baseline_bias", bias, persistent=False)

    @staticmethod
    def _head_sizes(n_outputs, heads) -> dict[str, int]:
        if (n_outputs is None) == (heads is None):
            raise ConfigError(
                "give exactly one of n_outputs (a single head) and heads ({name: n_outputs}), "
                f"got n_outputs={n_outputs!r}, heads={heads!r}"
            )
        if heads is None:
            return {"output": _positive_int(n_outputs, "n_outputs")}
        if not isinstance(heads, Mapping) or not heads:
            raise ConfigError(f"heads must be a non-empty mapping {{name: n_outputs}}, got {heads!r}")
        return {str(name): _positive_int(size, f"heads.{name}") for name, size in heads.items()}

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
            m = mask[:, None].to(x.dtype)
            pooled = []
            if self.global_pool in ("avg", "avgmax"):
                pooled.append((x * m).sum(dim=-1) / m.sum(dim=-1).clamp(min=1.0))
            if self.global_pool in ("max", "avgmax"):
                filled = x.masked_fill(~mask[:, None], float("-inf")).amax(dim=-1)
                pooled.append(torch.where(mask.any(dim=-1, keepdim=True), filled, torch.zeros_like(filled)))
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


def _activation(name: str) -> nn.Module:
    try:
        return activation(name)
    except ValueError as exc:
        raise ConfigError(f"activation: {exc}") from None


def _first_guess(config) -> ShowerFirstGuess:
    if not isinstance(config, Mapping):
        raise ConfigError(
            f"first_guess must be a mapping of ShowerFirstGuess arguments or null, got {config!r}"
        )
    try:
        return ShowerFirstGuess(**{str(k): v for k, v in config.items()})
    except TypeError as exc:
        raise ConfigError(f"first_guess: {exc}") from None
