"""Detector-trace 3D convolutions (TraceConv3D), the regression task and its metric functions."""

from __future__ import annotations

import dataclasses
import functools
import math
from pathlib import Path

import hydra
import lightning as L
import numpy as np
import pytest
import torch
from torch import nn

from hepnn.errors import ConfigError
from hepnn.metrics import regression as rm
from hepnn.nets.blocks import count_parameters
from hepnn.nets.trace3d import SpatialResidualBlock, TraceConv3D, TraceConv3DConfig, TraceLayerSpec
from hepnn.tasks.regression import RegressionTask
from hepnn.utils.config import register_resolvers

PRESET = Path(__file__).resolve().parents[1] / "conf" / "model" / "trace3d.yaml"
TARGETS = ["log10_energy", "xmax", "axis_x", "axis_y", "axis_z", "core_x", "core_y"]
STANDARDIZATION = {
    "log10_energy": {"center": 19.0, "scale": 0.5},
    "xmax": {"center": 750.0, "scale": 60.0},
    "axis_x": {"center": 0.0, "scale": 1.0},
    "axis_y": [0.0, 1.0],
    "axis_z": [0.8, 0.15],
    "core_x": {"center": 0.0, "scale": 500.0},
    "core_y": {"center": 0.0, "scale": 500.0},
}
SMALL = {
    "trace_layers": [
        {"channels": 4, "kernel": 3, "pool": "max"},
        {"channels": 3, "kernel": 3, "stride": 2, "padding": 1},
    ],
    "spatial_layers": [{"channels": 6}],
    "head": [8],
    "activation": "silu",  # no dead units: every input change reaches the output
}


def small_net(seed: int = 0, **kwargs) -> TraceConv3D:
    torch.manual_seed(seed)
    config = {"trace_length": 12, "grid_size": (5, 4), **SMALL, **kwargs}
    if "heads" not in config:
        config.setdefault("n_outputs", 3)
    return TraceConv3D(1, **config)


def events(b: int = 3, grid=(5, 4), t: int = 12, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    traces = torch.rand(b, 1, *grid, t, generator=g) * 10
    start_time = 1.0e4 + 500 * torch.randn(b, 1, *grid, generator=g)
    mask = torch.rand(b, *grid, generator=g) < 0.6
    mask[:, 0, 0] = True
    return traces, start_time, mask


def permute_stations(x: torch.Tensor, perm: torch.Tensor, grid, station_dim: int) -> torch.Tensor:
    """Apply a permutation of the X*Y station positions (axes station_dim, station_dim + 1)."""
    flat = x.flatten(station_dim, station_dim + 1)
    return flat.index_select(station_dim, perm).unflatten(station_dim, grid)


# ----------------------------------------------------------------------------------------------------------
# TraceConv3D
# ----------------------------------------------------------------------------------------------------------


def test_first_layer_shares_weights_across_stations():
    net = small_net(coordinate_channels=False).eval()  # coordinates are not permutation-equivariant
    traces, start_time, mask = events()
    grid = (5, 4)
    perm = torch.randperm(20, generator=torch.Generator().manual_seed(3))
    assert net.trace_net[0].kernel_size == (1, 1, 3)
    p_traces = permute_stations(traces, perm, grid, 2)
    p_start = permute_stations(start_time, perm, grid, 2)
    p_mask = permute_stations(mask, perm, grid, 1)
    first = net.first_layer(traces)
    torch.testing.assert_close(net.first_layer(p_traces), permute_stations(first, perm, grid, 2))
    # the whole trace stage with start time and mask channels is station-wise too
    with torch.no_grad():
        features = net.station_features(traces, start_time, mask)
        permuted = net.station_features(p_traces, p_start, p_mask)
    # (the per-event mean start time, ~1e4 ns summed in float32 in another order, differs by ~1e-3 ns)
    torch.testing.assert_close(permuted, permute_stations(features, perm, grid, 2), atol=5e-3, rtol=1e-5)
    # and a station's features depend on its own trace only
    other = traces.clone()
    other[0, :, 1, 1] += 5.0
    changed = (net.first_layer(other) - first).abs().sum(dim=(1, 4)) > 0
    assert changed[0, 1, 1] and changed.sum() == 1


@pytest.mark.parametrize("spatial_mode", ["conv2d", "conv3d"])
@pytest.mark.parametrize("global_pool", ["avg", "max", "avgmax", "flatten"])
def test_untriggered_stations_do_not_change_the_output(spatial_mode, global_pool):
    net = small_net(
        spatial_mode=spatial_mode,
        global_pool=global_pool,
        residual_blocks=1,
        residual_batch_norm=True,
        spatial_layers=[{"channels": 6, "batch_norm": True}],
        start_time_reference="min",
        signal_transform="log1p",
    )
    traces, start_time, mask = events(b=4)
    garbage = torch.randn(traces.shape) * 1e3
    garbage[..., 0] = float("nan")
    other_traces = torch.where(mask[:, None, :, :, None], traces, garbage)
    other_start = torch.where(mask[:, None], start_time, torch.full_like(start_time, float("nan")))
    for mode in ("train", "eval"):  # batch statistics do not see them either
        net.train(mode == "train")
        with torch.no_grad():
            expected = net(traces, start_time, mask)
            result = net(other_traces, other_start, mask)
        assert torch.isfinite(result).all()
        torch.testing.assert_close(result, expected)


def test_zero_signal_and_no_station_are_distinguishable():
    net = small_net().eval()
    traces, start_time, mask = events(b=1)
    mask[0, 2, 2] = True
    traces[0, :, 2, 2] = 0.0
    untriggered = mask.clone()
    untriggered[0, 2, 2] = False
    with torch.no_grad():
        assert not torch.allclose(net(traces, start_time, mask), net(traces, start_time, untriggered))


@pytest.mark.parametrize("spatial_mode", ["conv2d", "conv3d"])
@pytest.mark.parametrize("residual_blocks", [0, 2])
@pytest.mark.parametrize("global_pool", ["avgmax", "flatten"])
def test_output_shapes(spatial_mode, residual_blocks, global_pool):
    net = small_net(spatial_mode=spatial_mode, residual_blocks=residual_blocks, global_pool=global_pool)
    assert net.time_lengths == [6, 3]  # 12 -> pooled 6 -> stride 2: 3
    traces, start_time, mask = events(b=2)
    features = net.station_features(traces, start_time, mask)
    if spatial_mode == "conv2d":
        assert features.shape == (2, 3 * 3 + 4, 5, 4)  # 3 channels x 3 bins, time, mask, x, y
    else:
        assert features.shape == (2, 3 + 4, 5, 4, 3)
    assert net.pooled_features(traces, start_time, mask).shape == (2, net.features)
    assert net(traces, start_time, mask).shape == (2, 3)
    assert net(traces, start_time[:, 0], mask).shape == (2, 3)  # (B, X, Y) start times too
    assert sum(isinstance(m, SpatialResidualBlock) for m in net.spatial_net) == residual_blocks


def test_heads_per_target_group():
    net = small_net(heads={"energy": 1, "xmax": 1, "axis": 3, "core": 2})
    traces, start_time, mask = events(b=2)
    out = net(traces, start_time, mask)
    assert out.shape == (2, 7) and net.n_outputs == 7
    parts = net.split_outputs(out)
    assert {k: v.shape[1] for k, v in parts.items()} == {"energy": 1, "xmax": 1, "axis": 3, "core": 2}
    torch.testing.assert_close(
        parts["axis"], net.heads["axis"](net.pooled_features(traces, start_time, mask))
    )


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"trace_layers": [{"channels": 4, "kernel": 13, "padding": 0}]}, r"trace_layers\[0\]\.kernel"),
        (
            {"trace_layers": [{"channels": 4, "pool": "max", "pool_size": 20}]},
            r"trace_layers\[0\]\.pool_size",
        ),
        ({"trace_layers": [{"channels": 4, "kernal": 3}]}, r"trace_layers\[0\]: unknown key.*'kernal'"),
        (
            {"trace_layers": [{"channels": 4, "stride": 2}]},
            r"trace_layers\[0\]\.padding 'same' needs stride 1",
        ),
        ({"spatial_layers": [{"channels": 4, "kernel": 2}]}, r"spatial_layers\[0\]\.kernel must be odd"),
        ({"spatial_mode": "conv1d"}, "spatial_mode"),
        ({"global_pool": "sum"}, "global_pool"),
        ({"heads": {"energy": 1}}, "exactly one of n_outputs"),
        ({"start_time_scale": 0}, "start_time_scale"),
        ({"start_time_scale": True}, r"start_time_scale must be a number \(ns\), got True"),
        ({"trace_layers": []}, r"trace_layers must be a non-empty list of layer mappings"),
        (
            {"trace_layers": [{"channels": 4, "pool": "median"}]},
            r"trace_layers\[0\]\.pool must be one of \['avg', 'max'\] or null, got 'median'",
        ),
        ({"spatial_layers": [{"kernel": 3}]}, r"spatial_layers\[0\]: key 'channels' is required"),
        ({"residual_kernel": 2}, "residual_kernel must be odd"),
        ({"residual_blocks": -1}, "residual_blocks must be a non-negative integer"),
        ({"coordinate_channels": 1}, "coordinate_channels must be true or false"),
        ({"activation": "tanh"}, r"activation must be one of \[.*\], got 'tanh'"),
        ({"dropout": 1.0}, r"dropout must be in \[0, 1\)"),
        ({"grid_size": [5, 0]}, r"grid_size must hold integers >= 1"),
    ],
)
def test_invalid_configuration(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        small_net(**{"n_outputs": 3, **kwargs})


@pytest.mark.parametrize("spatial_mode", ["conv2d", "conv3d"])
@pytest.mark.parametrize("global_pool", ["avgmax", "flatten"])
def test_parsed_configuration_gives_the_sizes(spatial_mode, global_pool):
    net = small_net(spatial_mode=spatial_mode, global_pool=global_pool)
    config = net.config
    assert isinstance(config, TraceConv3DConfig)
    assert config.trace_layers[1] == TraceLayerSpec(channels=3, kernel=3, stride=2, padding=1)
    assert list(config.time_lengths) == net.time_lengths == [6, 3]
    with torch.no_grad():
        station = net.station_features(*events(b=2))
        assert station.shape[1] == config.station_channels
        assert net.pooled_features(*events(b=2)).shape == (2, config.features)
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.dropout = 0.5


def preset_config():
    """``model=trace3d`` with ``data=airshower``, composed as ``python -m hepnn.train`` composes them
    (the preset has a defaults list: optimizer and scheduler groups)."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    register_resolvers()
    GlobalHydra.instance().clear()
    overrides = ["~experiment", "data=airshower", "model=trace3d", "trainer.max_epochs=3"]
    with initialize_config_dir(str(PRESET.parents[1]), version_base="1.3"):
        return compose("train", overrides=overrides, return_hydra_config=True)


def test_preset():
    cfg = preset_config()
    task = hydra.utils.instantiate(cfg.model, _convert_="all")
    assert isinstance(task, RegressionTask) and isinstance(task.net, TraceConv3D)
    assert task.targets == TARGETS
    assert task.axis_targets == ["axis_x", "axis_y", "axis_z"] and task.energy_target == "log10_energy"
    assert 200_000 <= count_parameters(task.net) <= 400_000, count_parameters(task.net)
    assert task.net.first_guess is not None  # axis and core start at the analytic first guess
    traces, start_time, mask = events(b=2, grid=(9, 9), t=80)
    steps = (torch.arange(9, dtype=torch.float32) - 4) * 1500.0
    position = torch.stack(torch.meshgrid(steps, steps, indexing="ij")).expand(2, -1, -1, -1)
    batch = {"traces": traces, "start_time": start_time, "station_mask": mask, "station_position": position}
    with torch.no_grad():
        out = task.eval()(batch)
    assert out.shape == (2, 7) and torch.isfinite(out).all()
    torch.testing.assert_close(task.target_center[1], torch.tensor(750.0))


# ----------------------------------------------------------------------------------------------------------
# metric functions
# ----------------------------------------------------------------------------------------------------------


def test_opening_angle():
    true = np.array([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0], [0.0, 0.0, 1.0], [1.0, 0.0, 0.0]])
    predicted = np.array([[1.0, 1.0, 0.0] / np.sqrt(2), [0.0, 0.0, 5.0], [0.0, 1.0, 0.0], [0.0, 0.0, 0.0]])
    angle = rm.opening_angle_deg(predicted, true)
    np.testing.assert_allclose(angle[:3], [45.0, 0.0, 90.0], atol=1e-12)
    assert np.isnan(angle[3])  # a zero vector has no direction
    tiny = np.array([[1.0, 1e-9, 0.0]])  # accurate for small angles
    np.testing.assert_allclose(rm.opening_angle_deg(tiny, true[:1]), np.degrees(1e-9), rtol=1e-6)
    # 68 % quantile of 0..100 degrees is 68 degrees
    angles = np.radians(np.arange(101.0))
    axes = np.stack([np.cos(angles), np.sin(angles), np.zeros_like(angles)], axis=1)
    assert rm.angular_resolution_deg(axes, np.tile([1.0, 0.0, 0.0], (101, 1))) == pytest.approx(68.0)


def test_half_width_bias_and_resolution():
    sample = np.arange(-50.0, 51.0)  # 101 values: q16 = -34, q84 = 34
    assert rm.half_width(sample) == pytest.approx(34.0)
    assert rm.half_width(sample, fraction=0.5) == pytest.approx(25.0)
    gaussian = np.random.default_rng(1).normal(3.0, 2.0, 200_000)
    assert rm.half_width(gaussian) == pytest.approx(2.0 * 0.9945, rel=0.01)  # 68 % is 0.9945 sigma
    truth = np.zeros_like(sample)
    assert rm.bias(sample + 7.0, truth) == pytest.approx(7.0)
    assert rm.resolution(sample + 7.0, truth) == pytest.approx(34.0)
    assert math.isnan(rm.half_width([])) and math.isnan(rm.bias([], []))


def test_relative_energy_resolution():
    log10_true = np.linspace(18.5, 20.0, 11)
    shifted = log10_true + 0.0414  # 10**0.0414 = 1.1000
    assert rm.energy_bias(shifted, log10_true) == pytest.approx(0.1, abs=2e-4)
    assert rm.energy_resolution(shifted, log10_true) == pytest.approx(0.0, abs=1e-9)
    np.testing.assert_allclose(
        rm.relative_deviation_from_log10([19.0, 19.0], [19.0, 19.0 + np.log10(2)]), [0, -0.5]
    )
    sample = np.log10(1.0 + np.arange(-50.0, 51.0) / 1000)  # relative deviations -5 % .. +5 %
    assert rm.energy_resolution(19.0 + sample, np.full(101, 19.0)) == pytest.approx(0.034)


def test_core_resolution():
    true = np.zeros((4, 2))
    predicted = np.array([[30.0, 40.0], [-30.0, 40.0], [0.0, 50.0], [50.0, 0.0]])
    np.testing.assert_allclose(rm.core_distance(predicted, true), 50.0)
    assert rm.core_resolution(predicted, true) == pytest.approx(50.0)
    with pytest.raises(ValueError, match=r"\(N, 2\)"):
        rm.core_resolution(np.zeros((3, 3)), np.zeros((3, 3)))


# ----------------------------------------------------------------------------------------------------------
# RegressionTask
# ----------------------------------------------------------------------------------------------------------


class Passthrough(nn.Module):
    """A 'net' returning its input: the batch carries the standardised predictions directly."""

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return z


def make_task(net=None, **kwargs) -> RegressionTask:
    config = {
        "targets": TARGETS,
        "inputs": ["z"],
        "optimizer": functools.partial(torch.optim.SGD, lr=0.1),
        "standardization": STANDARDIZATION,
        "energy_target": "log10_energy",
        "axis_targets": ["axis_x", "axis_y", "axis_z"],
        "core_targets": ["core_x", "core_y"],
        **kwargs,
    }
    return RegressionTask(net if net is not None else Passthrough(), **config)


def quiet_trainer(**kwargs) -> L.Trainer:
    return L.Trainer(
        accelerator="cpu",
        devices=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        **kwargs,
    )


def showers(n: int, seed: int = 0) -> torch.Tensor:
    """True targets ``(n, 7)`` in physical units: log10 E/eV, Xmax g/cm^2, unit axis, core m."""
    g = torch.Generator().manual_seed(seed)
    theta = torch.rand(n, generator=g) * 0.9
    phi = torch.rand(n, generator=g) * 2 * math.pi
    axis = torch.stack([theta.sin() * phi.cos(), theta.sin() * phi.sin(), theta.cos()], dim=1)
    return torch.cat(
        [
            18.5 + 1.5 * torch.rand(n, 1, generator=g),
            700 + 100 * torch.rand(n, 1, generator=g),
            axis,
            (torch.rand(n, 2, generator=g) - 0.5) * 1500,
        ],
        dim=1,
    ).double()


def test_standardization_round_trips():
    task = make_task()
    truth = showers(16).float()
    z = task.to_standardized(truth)
    assert z[:, 1].abs().max() < 1.0  # xmax in units of 60 g/cm^2 around 750
    torch.testing.assert_close(task.to_physical(z), truth)
    out = task.predict_step({"z": z, "file_index": torch.zeros(16), "entry": torch.arange(16)}, 0)
    torch.testing.assert_close(out["predictions"], truth)  # predictions come back in physical units
    assert task.target_center.tolist() == pytest.approx([19.0, 750.0, 0.0, 0.0, 0.8, 0.0, 0.0])
    assert [round(v, 2) for v in task.target_scale.tolist()] == [0.5, 60.0, 1.0, 1.0, 0.15, 500.0, 500.0]
    assert {"target_center", "target_scale"} <= set(task.state_dict())  # stored in checkpoints


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"axis_targets": ["axis_x", "axis_y", "axis_w"]}, r"model\.axis_targets: \['axis_w'\] is not among"),
        ({"axis_targets": ["axis_x", "axis_y"]}, r"model\.axis_targets must name 3"),
        ({"core_targets": ["core_x", "core_z"]}, r"model\.core_targets: \['core_z'\]"),
        ({"energy_target": "energy"}, r"model\.energy_target: \['energy'\]"),
        (
            {"standardization": {**STANDARDIZATION, "xmax": None}},
            r"model\.standardization\.xmax must be \{center",
        ),
        (
            {"standardization": {k: v for k, v in STANDARDIZATION.items() if k != "xmax"}},
            r"model\.standardization has no entry for target\(s\) \['xmax'\]",
        ),
        (
            {"standardization": {**STANDARDIZATION, "xmax": {"center": 1.0, "scale": 0.0}}},
            r"model\.standardization\.xmax\.scale",
        ),
        ({"loss_weights": {"energy": 2.0}}, r"model\.loss_weights\.energy"),
        ({"loss": "l1"}, r"model\.loss must be one of"),
    ],
)
def test_configuration_errors_name_the_key(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        make_task(**kwargs)


def test_net_outputs_must_match_the_targets():
    with pytest.raises(ConfigError, match=r"model\.net gives 3 outputs .* 7 targets"):
        make_task(small_net())


def test_test_loop_figures_and_predictions():
    """Known reconstruction errors give known figures, through a real Trainer.test."""
    n = 200
    truth = showers(n, seed=1)
    predicted = truth.clone()
    predicted[:, 0] += 0.0414  # energies 10 % too high
    predicted[:, 1] += 20.0  # Xmax 20 g/cm^2 too deep
    axis = truth[:, 2:5]
    g = torch.Generator().manual_seed(2)
    other = torch.nn.functional.normalize(
        torch.linalg.cross(axis, torch.randn(n, 3, generator=g).double()), dim=1
    )
    angle = math.radians(2.0)
    predicted[:, 2:5] = 1.3 * (math.cos(angle) * axis + math.sin(angle) * other)  # 2 deg off, not unit length
    predicted[:, 5:7] += torch.tensor([30.0, 40.0], dtype=torch.float64)  # cores 50 m off
    task = make_task()
    z = task.to_standardized(predicted.float())
    order = torch.randperm(n, generator=g)
    batches = [
        {
            "z": z[i],
            "targets": truth[i].float(),
            "file_index": i % 2,
            "entry": i,
            "observers": {"n_st": i * 0 + 5},
        }
        for i in order.split(64)
    ]
    results = quiet_trainer().test(task, dataloaders=torch.utils.data.DataLoader(batches, batch_size=None))[0]
    assert results["test/energy_bias"] == pytest.approx(0.1, abs=1e-3)
    assert results["test/energy_resolution"] == pytest.approx(0.0, abs=1e-3)
    assert results["test/xmax_bias"] == pytest.approx(20.0, abs=1e-2)
    assert results["test/xmax_resolution"] == pytest.approx(0.0, abs=1e-2)
    assert results["test/angular_resolution_deg"] == pytest.approx(2.0, abs=1e-2)
    assert results["test/core_resolution_m"] == pytest.approx(50.0, abs=1e-2)
    assert results["test/core_x_bias"] == pytest.approx(30.0, abs=1e-2)
    assert results["test/log10_energy_resolution"] == pytest.approx(0.0, abs=1e-4)
    p = task.test_predictions
    assert set(p) == {f"{kind}:{t}" for t in TARGETS for kind in ("prediction", "truth")} | {
        "file_index",
        "entry",
        "observer:n_st",
    }
    assert np.array_equal(p["entry"], np.lexsort((np.arange(n), np.arange(n) % 2)))  # sorted by file, entry
    np.testing.assert_allclose(p["truth:xmax"], truth[p["entry"], 1].numpy(), rtol=1e-6)
    np.testing.assert_allclose(p["prediction:xmax"], predicted[p["entry"], 1].numpy(), rtol=1e-5)
    val = quiet_trainer().validate(task, dataloaders=torch.utils.data.DataLoader(batches, batch_size=None))[0]
    assert val["val/angular_resolution_deg"] == pytest.approx(2.0, abs=1e-2)


def trace_events(n: int, seed: int):
    """Toy showers on a 5x5 grid, 16 bins: the target is log10 of the total signal of triggered stations."""
    g = torch.Generator().manual_seed(seed)
    log10_size = 2.0 * torch.rand(n, generator=g)
    core = (torch.rand(n, 2, generator=g) - 0.5) * 3
    xs = torch.arange(5.0) - 2
    r2 = (xs.view(1, 5, 1) - core[:, 0, None, None]) ** 2 + (xs.view(1, 1, 5) - core[:, 1, None, None]) ** 2
    amplitude = 10 ** log10_size[:, None, None] * torch.exp(-r2 / 2.0)
    amplitude = amplitude * (1 + 0.1 * torch.randn(amplitude.shape, generator=g))
    mask = amplitude > 0.05
    t = torch.arange(16.0)
    pulse = torch.exp(-t / 3.0) / torch.exp(-t / 3.0).sum()
    traces = (amplitude[..., None] * pulse).unsqueeze(1)
    garbage = 100 * torch.rand(traces.shape, generator=g)  # in untriggered stations: must not be learned from
    traces = torch.where(mask[:, None, :, :, None], traces, garbage)
    total = (traces * mask[:, None, :, :, None]).sum(dim=(1, 2, 3, 4)).clamp(min=1e-3)
    start_time = 1e4 + 100 * torch.randn(n, 1, 5, 5, generator=g)
    return {
        "traces": traces,
        "start_time": start_time,
        "station_mask": mask,
        "targets": total.log10()[:, None],
    }


def test_regression_task_learns_total_signal():
    torch.manual_seed(0)
    net = TraceConv3D(
        1,
        n_outputs=1,
        trace_length=16,
        grid_size=(5, 5),
        trace_layers=[{"channels": 4, "kernel": 3, "pool": "avg", "pool_size": 4}],
        spatial_layers=[{"channels": 16}],
        head=[16],
        global_pool="avgmax",
        signal_transform="log1p",
        start_time_scale=100.0,
    )
    task = RegressionTask(
        net,
        targets=["log10_signal"],
        inputs=["traces", "start_time", "station_mask"],
        optimizer=functools.partial(torch.optim.Adam, lr=3e-3),
        standardization={"log10_signal": {"center": 1.75, "scale": 0.6}},
        loss="huber",
    )
    train = trace_events(1024, seed=1)
    batches = [{k: v[i : i + 64] for k, v in train.items()} for i in range(0, 1024, 64)]
    held_out = trace_events(512, seed=2)

    def held_out_loss() -> float:
        with torch.no_grad():
            predictions = task.eval().predict_physical(held_out)
        return float(((predictions - held_out["targets"]) ** 2).mean())

    before = held_out_loss()
    loader = torch.utils.data.DataLoader(batches, batch_size=None)
    quiet_trainer(max_steps=48, num_sanity_val_steps=0, limit_val_batches=2).fit(task, loader, loader)
    after = held_out_loss()
    assert after < 0.2 * before, (before, after)
    assert after < 0.05, after  # mean squared error in (log10 units)^2
