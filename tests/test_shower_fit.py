"""The analytic first guess of an air shower (hepnn.nets.shower_fit) and TraceConv3D built on it."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from hepnn.errors import ConfigError
from hepnn.nets.shower_fit import ShowerFirstGuess, solve_normal_equations
from hepnn.nets.trace3d import FIRST_GUESS_OUTPUTS, TraceConv3D
from hepnn.sim.airshower import AirShowerConfig, front_time, simulate_triggered

GRID = 9
SPACING = 1500.0  # m


def grid_positions(b: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Station x, y (m) of a 9 x 9 grid centred on (0, 0), ``(b, 81)`` each, station k at divmod(k, 9)."""
    ix, iy = np.divmod(np.arange(GRID * GRID), GRID)
    x = torch.tensor((ix - GRID // 2) * SPACING, dtype=torch.float64).expand(b, -1)
    y = torch.tensor((iy - GRID // 2) * SPACING, dtype=torch.float64).expand(b, -1)
    return x.clone(), y.clone()


def ideal_showers(zenith_deg, azimuth_deg, core, radius, s1000, slope=-2.3):
    """Noise-free events: arrival times of a spherical front (ns) and signals of the fit's own LDF
    (VEM), for all 81 stations; everything beyond 4 km from the core untriggered."""
    zenith = torch.deg2rad(torch.tensor(zenith_deg, dtype=torch.float64))
    azimuth = torch.deg2rad(torch.tensor(azimuth_deg, dtype=torch.float64))
    axis = torch.stack(
        [torch.sin(zenith) * torch.cos(azimuth), torch.sin(zenith) * torch.sin(azimuth), torch.cos(zenith)], 1
    )
    core = torch.tensor(core, dtype=torch.float64)
    b = len(axis)
    x, y = grid_positions(b)
    px, py = x - core[:, :1], y - core[:, 1:]
    along = px * axis[:, :1] + py * axis[:, 1:2]
    rho2 = px**2 + py**2
    r = (rho2 - along**2).clamp(min=0).sqrt()
    times = torch.from_numpy(front_time(along.numpy(), rho2.numpy(), np.asarray(radius)[:, None]))
    beta = slope + 0.5 * (1 / axis[:, 2:] - 1)
    rr = r.clamp(min=100.0)
    signal = torch.tensor(s1000, dtype=torch.float64)[:, None] * ((rr / 1000) * ((rr + 700) / 1700)) ** beta
    mask = rho2.sqrt() < 4000.0
    return signal, times, x, y, mask, axis, core


def opening_angle_deg(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return torch.rad2deg(torch.arccos((a * b).sum(dim=1).clamp(-1.0, 1.0)))


def test_normal_equations_solved_as_by_linalg():
    g = torch.Generator().manual_seed(0)
    a = torch.randn(50, 4, 6, generator=g, dtype=torch.float64)
    matrix = a @ a.transpose(1, 2) + 0.1 * torch.eye(4, dtype=torch.float64)
    matrix = matrix * torch.tensor([1.0, 1e3, 1e-3, 1e6], dtype=torch.float64)[:, None].sqrt()
    matrix = matrix @ matrix.transpose(1, 2)  # badly scaled, still positive definite
    rhs = torch.randn(50, 4, generator=g, dtype=torch.float64)
    torch.testing.assert_close(solve_normal_equations(matrix, rhs), torch.linalg.solve(matrix, rhs))


def test_ideal_showers_are_reconstructed_exactly():
    zenith, azimuth = [0.0, 20.0, 40.0, 55.0], [0.0, 75.0, 200.0, 310.0]
    core = [[0, 0], [300, -500], [-650, 200], [100, 700]]
    radius, s1000 = [9000.0, 12000.0, 15000.0, 20000.0], [20.0, 50.0, 100.0, 300.0]
    signal, times, x, y, mask, axis, true_core = ideal_showers(zenith, azimuth, core, radius, s1000)
    # run to convergence (the defaults stop after 8 and 6 steps, well below the real fluctuations)
    fit = ShowerFirstGuess(radius_log_width=3.0, ldf_steps=30, front_steps=20)
    guess = fit(signal, times, x, y, mask)
    assert opening_angle_deg(guess.axis, axis).max() < 1e-3
    assert (guess.core - true_core).norm(dim=1).max() < 0.1
    expected_s1000 = torch.log(torch.tensor(s1000, dtype=torch.float64))
    torch.testing.assert_close(guess.log_s1000, expected_s1000, atol=1e-3, rtol=0)
    expected_radius = torch.tensor(radius, dtype=torch.float64)
    torch.testing.assert_close(guess.log_radius.exp(), expected_radius, rtol=1e-3, atol=0)
    assert guess.time_residual[mask].abs().max() < 0.1  # ns
    assert (guess.time_residual[~mask] == 0).all() and (guess.axis_distance[~mask] == 0).all()


def test_a_common_time_offset_changes_nothing():
    """Where in the traces the first particles arrive is the same for every station: a constant."""
    signal, times, x, y, mask, *_ = ideal_showers([30.0], [45.0], [[200, 100]], [12000.0], [80.0])
    fit = ShowerFirstGuess()
    direct, delayed = fit(signal, times, x, y, mask), fit(signal, times - 212.5, x, y, mask)
    for a, b in zip(direct, delayed, strict=True):
        torch.testing.assert_close(a, b)


def test_untriggered_stations_change_nothing():
    signal, times, x, y, mask, *_ = ideal_showers(
        [35.0, 10.0], [120.0, 10.0], [[0, 0], [-400, 300]], [12000.0] * 2, [60.0, 30.0]
    )
    fit = ShowerFirstGuess()
    reference = fit(signal, times, x, y, mask)
    garbage = [
        torch.where(mask, v, torch.full_like(v, fill))
        for v, fill in ((signal, 1e6), (times, -1e9), (x, float("nan")), (y, float("inf")))
    ]
    other = fit(*garbage, mask)
    for a, b in zip(reference, other, strict=True):
        torch.testing.assert_close(a, b)


def test_three_station_events_stay_finite():
    signal, times, x, y, mask, *_ = ideal_showers([25.0], [60.0], [[100, 100]], [12000.0], [15.0])
    distance = (x - 100) ** 2 + (y - 100) ** 2
    mask = distance <= distance.sort(dim=1).values[:, 2:3]  # the three stations nearest the core
    assert mask.sum() == 3
    guess = ShowerFirstGuess()(signal, times, x, y, mask)
    assert all(torch.isfinite(v).all() for v in guess)
    assert guess.axis[:, 2].min() > 0


@pytest.fixture(scope="module")
def simulated():
    """300 triggered showers of the default toy simulation."""
    cfg = AirShowerConfig.from_dict({"output_dir": "unused"})
    parts = list(simulate_triggered(300, np.random.default_rng(11), cfg))
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


def test_simulated_showers_are_reconstructed_near_the_simulation_floor(simulated):
    ev = {k: torch.from_numpy(v) for k, v in simulated.items()}
    guess = ShowerFirstGuess()(
        ev["traces"].sum(dim=-1),
        ev["station_start_time"],
        ev["station_x"],
        ev["station_y"],
        ev["station_triggered"],
    )
    axis = torch.stack([ev["axis_x"], ev["axis_y"], ev["axis_z"]], dim=1)
    core = torch.stack([ev["core_x"], ev["core_y"]], dim=1)
    angle = opening_angle_deg(guess.axis, axis)
    distance = (guess.core - core).norm(dim=1)
    # about 0.32 deg and 43 m on 4000 showers; the plane front alone is about 1.5-2 deg
    assert torch.quantile(angle, 0.68) < 0.5
    assert torch.quantile(distance, 0.68) < 60.0
    # S1000 is the energy estimator: ln S1000 against log10 E, strongly correlated
    correlation = np.corrcoef(guess.log_s1000.numpy(), simulated["log10_energy"])[0, 1]
    assert correlation > 0.9
    assert guess.axis.dtype == torch.float32


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"radius_m": 0.0}, "first_guess.radius_m must be positive"),
        ({"jitter_ns": "ten"}, "first_guess.jitter_ns must be a number"),
        ({"front_steps": 0}, "first_guess.front_steps must be a positive integer"),
        ({"jitter_1000_ns": -1.0}, "first_guess.jitter_1000_ns must not be negative"),
    ],
)
def test_invalid_first_guess_settings(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        ShowerFirstGuess(**kwargs)


TARGETS = ["log10_energy", "axis_x", "axis_y", "axis_z", "core_x", "core_y"]
STANDARDIZATION = {
    "log10_energy": {"center": 19.0, "scale": 0.5},
    "axis_x": {"center": 0.0, "scale": 0.4},
    "axis_y": [0.0, 0.4],
    "axis_z": {"center": 0.8, "scale": 0.15},
    "core_x": {"center": 0.0, "scale": 500.0},
    "core_y": {"center": 0.0, "scale": 500.0},
}


def first_guess_net(**kwargs) -> TraceConv3D:
    torch.manual_seed(0)
    config = {
        "n_outputs": len(TARGETS),
        "trace_layers": [{"channels": 4, "kernel": 5, "pool": "max", "pool_size": 4}],
        "spatial_layers": [{"channels": 8}],
        "head": [8],
        "first_guess": {},
        "output_names": TARGETS,
        "output_standardization": STANDARDIZATION,
        "start_time_scale": 1000.0,
        "signal_transform": "log1p",
        **kwargs,
    }
    return TraceConv3D(1, **config)


def net_inputs(simulated, n: int = 16):
    traces = torch.from_numpy(simulated["traces"][:n]).reshape(n, 1, GRID, GRID, -1)
    start = torch.from_numpy(simulated["station_start_time"][:n]).reshape(n, 1, GRID, GRID)
    mask = torch.from_numpy(simulated["station_triggered"][:n]).reshape(n, 1, GRID, GRID)
    position = torch.stack(
        [torch.from_numpy(simulated[k][:n]).reshape(n, GRID, GRID) for k in ("station_x", "station_y")], dim=1
    )
    return traces, start, mask, position


def test_untrained_net_starts_at_the_standardised_first_guess(simulated):
    net = first_guess_net()
    inputs = net_inputs(simulated)
    guess = net.fit_first_guess(*inputs)
    outputs = net(*inputs)
    assert outputs.shape == (16, len(TARGETS))
    for name, column in FIRST_GUESS_OUTPUTS.items():
        entry = STANDARDIZATION[name]
        center, scale = (entry["center"], entry["scale"]) if isinstance(entry, dict) else entry
        expected = (torch.cat([guess.axis, guess.core], dim=1)[:, column] - center) / scale
        torch.testing.assert_close(outputs[:, TARGETS.index(name)], expected)
    torch.testing.assert_close(outputs[:, 0], torch.zeros(16))  # no first guess for the energy
    # training moves the outputs away from it: the heads and the linear term get gradients
    outputs.square().sum().backward()
    assert net.first_guess_skip.weight.grad.abs().sum() > 0
    assert all(head.layers[-1].weight.grad.abs().sum() > 0 for head in net.heads.values())


def test_first_guess_net_ignores_untriggered_stations(simulated):
    net = first_guess_net().eval()
    traces, start, mask, position = net_inputs(simulated)
    m = mask.bool()
    reference = net(traces, start, mask, position)
    off = ~m[:, :, :, :, None].expand_as(traces)
    garbage_traces = torch.where(off, torch.full_like(traces, 1e4), traces)
    garbage_start = torch.where(m, start, torch.full_like(start, -3e7))
    garbage_position = torch.where(m.expand_as(position), position, torch.full_like(position, 9e5))
    torch.testing.assert_close(net(garbage_traces, garbage_start, mask, garbage_position), reference)
    # a station's time residual reaches the spatial stage: moving a triggered start time moves the output
    moved = start.clone()
    k = torch.nonzero(m[0, 0])[0]
    moved[0, 0, k[0], k[1]] += 400.0
    assert not torch.allclose(net(traces, moved, mask, position)[0], reference[0])


def test_first_guess_needs_station_positions_and_names(simulated):
    net = first_guess_net()
    traces, start, mask, _ = net_inputs(simulated)
    with pytest.raises(ValueError, match="station_position"):
        net(traces, start, mask)
    plain = TraceConv3D(1, n_outputs=2, trace_length=80, grid_size=(9, 9))
    with pytest.raises(ValueError, match="no first_guess"):
        plain(*net_inputs(simulated))
    with pytest.raises(ConfigError, match="only used with first_guess"):
        TraceConv3D(1, n_outputs=2, output_names=["core_x", "core_y"])
    with pytest.raises(ConfigError, match="output_standardization has no entry for output 'core_y'"):
        first_guess_net(output_standardization={k: v for k, v in STANDARDIZATION.items() if k != "core_y"})
    with pytest.raises(ConfigError, match="output_names must list the 6 output columns"):
        first_guess_net(output_names=TARGETS[:3])
    with pytest.raises(ConfigError, match=r"first_guess: .*unexpected keyword argument 'radius'"):
        first_guess_net(first_guess={"radius": 1.0})


def test_time_residuals_ignore_a_common_shift_of_the_start_times(simulated):
    """The absolute time of an event carries no information: shifting every start time leaves the
    fitted front, its residuals (ns) and the distances from the axis (m, within the array) alone."""
    traces, start, mask, position = net_inputs(simulated, 4)
    net = first_guess_net()
    a = net.fit_first_guess(traces, start, mask, position)
    b = net.fit_first_guess(traces, start + 12345.0, mask, position)
    torch.testing.assert_close(a.time_residual, b.time_residual, atol=1e-3, rtol=0)
    torch.testing.assert_close(a.axis, b.axis)
    torch.testing.assert_close(a.axis_distance, b.axis_distance)
    assert 0 < a.axis_distance.max() < 20000.0
