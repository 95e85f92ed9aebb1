"""How well can the shower core and axis be found at all? Fits with everything else known.

    python benchmarks/airshower_floor.py [--files 'data/airshower/*.root'] [--events 3000]
                                              [--predictions logs/.../predictions/test.root]

For simulated showers (``python -m hepnn.generate generate=airshower``), the core is fitted to the
total signals of the triggered stations with the simulation's own lateral distribution, the
true axis, the true muon fraction and the true LDF slopes, leaving only the core (x, y) and the
signal scale free: a weighted least-squares fit whose weights are the simulation's own
variances at the true parameters (compound-Poisson muons, Gamma-distributed electromagnetic
signal). A second fit adds the stations' start times: the curved front of the simulation
(radius from the true Xmax) with a free time offset, each start time standing for the first
particle's arrival in the middle of its 25 ns bin, weighted with the simulation's jitter plus
the bin's quantisation. The axis is fitted likewise to the start times with the true core and
curvature, and, as a reconstruction that knows nothing, with a plane front. Knowing the axis and
the shower's composition makes these fits better than any real reconstruction: their resolution
is a floor set by the fluctuations, to compare with the analytic first guess that the network
starts from (:mod:`hepnn.nets.shower_fit`, which knows nothing of the truth) and with the
network's (``--predictions``: a test predictions file with ``pred_core_x/y``, ``true_core_x/y``,
``zenith``, ``true_log10_energy``). The tables give 68 % quantiles of the distance between the
fitted and true cores (m) and of the angle between the fitted and true axes (deg), in bands of
zenith angle and energy.

The fit is a grid search (41 x 41 points, 15 m apart around the true core, then 41 x 41 points
1 m apart around the best), vectorised over the grid; the signal scale has a closed form.

A last table asks whether the trace shapes could do better than the total signals: per
triggered station, how well does each observable give the station's distance from the axis,
with the rest of the shower known? For the total signal, the distance error is ``|ln S -
ln S_true(r)| / |d ln S_true / dr|`` at the truth (S1000, muon fraction, slopes). For the trace
shape, the time from 10 % to 50 % (rise time) and from 10 % to 90 % of the integrated trace,
and the time of its 50 % point after the trace start, are calibrated on the same stations
against the simulation's time-scale variable ``k r`` (``k`` from the true distance to the shower
maximum: :func:`trace_scale`) by a quadratic fit, and the distance error is the fit residual
over the calibration's slope. 68 % quantiles (m), in bands of the station's total signal.
"""

from __future__ import annotations

import argparse
import glob
import itertools
import math

import numpy as np
import uproot

from hepnn.sim.airshower import (
    SPEED_OF_LIGHT,
    delay_scale,
    distance_to_xmax,
    front_time,
    lateral_distribution,
)
from hepnn.sim.kinds import build_sample
from hepnn.utils.config import project_root

BRANCHES = [
    "traces",
    "station_x",
    "station_y",
    "station_triggered",
    "core_x",
    "core_y",
    "axis_x",
    "axis_y",
    "axis_z",
    "zenith",
    "log10_energy",
    "muon_fraction",
    "s1000",
    "station_start_time",
    "xmax",
]


def generation_config() -> dict:
    """The ``generate=airshower`` configuration (parametrisations of the simulation)."""
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    from hepnn.utils.config import config_dir, register_resolvers

    register_resolvers()
    with initialize_config_dir(config_dir(), version_base="1.3"):
        cfg = compose("generate", overrides=["generate=airshower"])
        return OmegaConf.to_container(cfg.generate, resolve=True)


def read_events(pattern: str, n_events: int) -> dict[str, np.ndarray]:
    arrays: dict[str, list] = {b: [] for b in BRANCHES}
    total = 0
    for path in sorted(glob.glob(pattern)):
        chunk = uproot.open(path)["tree"].arrays(BRANCHES, library="np", entry_stop=n_events - total)
        for b in BRANCHES:
            arrays[b].append(chunk[b])
        total += len(chunk["core_x"])
        if total >= n_events:
            break
    if not total:
        raise SystemExit(f"no air-shower files match {pattern}: python -m hepnn.generate generate=airshower")
    return {b: np.concatenate(v) for b, v in arrays.items()}


def shapes_and_variances(ev: dict, k: int, core: np.ndarray, cfg) -> tuple[np.ndarray, np.ndarray]:
    """LDF shape g (signal per unit S1000) at the triggered stations of event ``k`` for each
    candidate ``core`` ``(m, 2)``: ``(m, n_stations)``; also used at the true core for the variances."""
    signal, muons = cfg.signal, cfg.muons
    axis = np.array([ev["axis_x"][k], ev["axis_y"][k], ev["axis_z"][k]], dtype=float)
    zenith = float(ev["zenith"][k])
    sec = 1.0 / math.cos(zenith)
    beta_em = signal["beta_em"] + signal["beta_em_sec"] * (sec - 1)
    beta_mu = signal["beta_mu"] + signal["beta_mu_sec"] * (sec - 1)
    f_mu = float(ev["muon_fraction"][k])
    on = ev["station_triggered"][k].astype(bool)
    px = ev["station_x"][k][on][None, :] - core[:, :1]
    py = ev["station_y"][k][on][None, :] - core[:, 1:]
    along = px * axis[0] + py * axis[1]
    r = np.sqrt(np.maximum(px**2 + py**2 - along**2, 0.0))
    mu = f_mu * lateral_distribution(r, beta_mu, signal)
    em = (1 - f_mu) * lateral_distribution(r, beta_em, signal)
    track = 1.0 / (
        math.cos(zenith) + 2 * muons["tank_height"] / (math.pi * muons["tank_radius"]) * math.sin(zenith)
    )
    per_muon = muons["signal_per_muon"] * track
    return mu + em, (mu, em, per_muon)


def signal_weights(ev: dict, k: int, cfg) -> np.ndarray:
    """Inverse variances of the total signals of event ``k``'s triggered stations at the truth
    (compound-Poisson muons, Gamma-distributed electromagnetic signal)."""
    truth = np.array([[ev["core_x"][k], ev["core_y"][k]]], dtype=float)
    _, (mu, em, per_muon) = shapes_and_variances(ev, k, truth, cfg)
    spread = cfg.muons["track_spread"]
    variance = float(ev["s1000"][k]) * (mu[0] * per_muon * (1 + spread**2) + em[0] * cfg.signal["em_quantum"])
    return 1.0 / (variance + 1e-3)


def station_signals(ev: dict, k: int) -> np.ndarray:
    """Total signals (VEM) of event ``k``'s triggered stations."""
    on = ev["station_triggered"][k].astype(bool)
    return ev["traces"][k].reshape(len(on), -1)[on].sum(axis=1)


def fit_energy(ev: dict, k: int, cfg) -> float:
    """E_fit / E_true of event ``k``: S1000 fitted to the signals with everything else true (core,
    axis, muon fraction, LDF slopes), turned into energy with the simulation's calibration
    (E proportional to S1000^B at fixed zenith; in the toy S1000 depends on nothing else)."""
    truth = np.array([[ev["core_x"][k], ev["core_y"][k]]], dtype=float)
    g, _ = shapes_and_variances(ev, k, truth, cfg)
    weight, signals = signal_weights(ev, k, cfg), station_signals(ev, k)
    scale = (weight * signals * g[0]).sum() / (weight * g[0] * g[0]).sum()
    return float((scale / ev["s1000"][k]) ** cfg.signal["energy_exponent"])


def fit_core(ev: dict, k: int, cfg, timing: bool) -> np.ndarray:
    """The fitted core (x, y) of event ``k`` (m), from the signals and, with ``timing``, the start times."""
    signals, weight = station_signals(ev, k), signal_weights(ev, k, cfg)
    times = front_model(ev, k, cfg) if timing else None
    best = np.array([ev["core_x"][k], ev["core_y"][k]], dtype=float)
    for step in (15.0, 1.0):
        offsets = np.arange(-20, 21) * step
        grid = best + np.stack(np.meshgrid(offsets, offsets, indexing="ij"), axis=-1).reshape(-1, 2)
        g, _ = shapes_and_variances(ev, k, grid, cfg)
        scale = (weight * signals * g).sum(axis=1) / (weight * g * g).sum(axis=1)
        chi2 = (weight * (signals - scale[:, None] * g) ** 2).sum(axis=1)
        if times is not None:
            chi2 = chi2 + times(grid)
        best = grid[np.argmin(chi2)]
    return best


class StartTimes:
    """The start times of event ``k``'s triggered stations as first-particle arrivals (ns, middle of
    their bin), the truth-based front radius (m) and the weights (jitter and bin quantisation)."""

    def __init__(self, ev: dict, k: int, cfg):
        timing, trace = cfg.timing, cfg.trace
        on = ev["station_triggered"][k].astype(bool)
        width = float(trace["bin_width"])
        self.arrival = ev["station_start_time"][k][on] + (trace["pretrigger_bins"] + 0.5) * width
        self.axis = np.array([ev["axis_x"][k], ev["axis_y"][k], ev["axis_z"][k]], dtype=float)
        altitude = float(cfg.array["altitude"])
        distance_xmax = float(
            distance_to_xmax(float(ev["xmax"][k]), float(self.axis[2]), cfg.atmosphere, altitude)
        )
        self.radius = timing["curvature_radius_min"] + max(distance_xmax, 0.0)
        self.x, self.y = ev["station_x"][k][on], ev["station_y"][k][on]
        self.core = np.array([ev["core_x"][k], ev["core_y"][k]], dtype=float)
        px, py = self.x - self.core[0], self.y - self.core[1]
        along = px * self.axis[0] + py * self.axis[1]
        r = np.sqrt(np.maximum(px**2 + py**2 - along**2, 0.0))
        jitter2 = timing["jitter"] ** 2 + (timing["jitter_1000"] * r / 1000.0) ** 2
        self.weight = 1.0 / (jitter2 + width**2 / 12)

    def chi2(self, cores: np.ndarray, axes: np.ndarray) -> np.ndarray:
        """chi^2 with a free time offset for candidate ``cores`` ``(m, 2)`` and ``axes`` ``(m, 3)``."""
        px = self.x[None, :] - cores[:, :1]
        py = self.y[None, :] - cores[:, 1:]
        along = px * axes[:, :1] + py * axes[:, 1:2]
        residual = self.arrival[None, :] - front_time(along, px**2 + py**2, self.radius)
        offset = (self.weight * residual).sum(axis=1) / self.weight.sum()
        return (self.weight * (residual - offset[:, None]) ** 2).sum(axis=1)


def front_model(ev: dict, k: int, cfg):
    """chi^2 of the start times of event ``k`` for candidate cores ``(m, 2)``, true axis."""
    times = StartTimes(ev, k, cfg)
    return lambda cores: times.chi2(cores, np.broadcast_to(times.axis, (len(cores), 3)))


def fit_axis(ev: dict, k: int, cfg) -> np.ndarray:
    """The axis of event ``k`` fitted to its start times alone with the true core (unit vector)."""
    times = StartTimes(ev, k, cfg)
    true_axis = times.axis
    helper = np.array([1.0, 0.0, 0.0]) if abs(true_axis[0]) < 0.9 else np.array([0.0, 1.0, 0.0])
    e1 = np.cross(true_axis, helper)
    e1 /= np.linalg.norm(e1)
    e2 = np.cross(true_axis, e1)
    best = true_axis
    for step in (0.0025, 0.000125):  # rad: +-2.9 deg, then +-0.14 deg
        offsets = np.arange(-20, 21) * step
        u, v = (g.reshape(-1, 1) for g in np.meshgrid(offsets, offsets, indexing="ij"))
        axes = best[None, :] + u * e1[None, :] + v * e2[None, :]
        axes /= np.linalg.norm(axes, axis=1, keepdims=True)
        chi2 = times.chi2(np.broadcast_to(times.core, (len(axes), 2)), axes)
        best = axes[np.argmin(chi2)]
    return best


def plane_fit_axis(ev: dict, k: int, cfg) -> np.ndarray:
    """A reconstruction that knows nothing: a plane front fitted to the start times of event ``k``
    (least squares, weights growing with the signal up to 100 VEM); the axis as a unit vector."""
    on = ev["station_triggered"][k].astype(bool)
    width = float(cfg.trace["bin_width"])
    arrival = ev["station_start_time"][k][on] + (cfg.trace["pretrigger_bins"] + 0.5) * width
    x, y = ev["station_x"][k][on], ev["station_y"][k][on]
    signals = ev["traces"][k].reshape(len(on), -1)[on].sum(axis=1)
    weight = np.sqrt(np.clip(signals, 0.0, 100.0))
    design = np.stack([np.ones_like(x), -x, -y], axis=1)  # c t = c t0 - (u x + v y)
    solution, *_ = np.linalg.lstsq(design * weight[:, None], SPEED_OF_LIGHT * arrival * weight, rcond=None)
    u, v = solution[1], solution[2]
    s2 = u * u + v * v
    if s2 >= 1.0:
        return np.array([u, v, 0.0]) / math.sqrt(s2)
    return np.array([u, v, math.sqrt(1.0 - s2)])


def first_guess(ev: dict):
    """The first guess of ``conf/model/trace3d.yaml`` for all events (numpy arrays)."""
    import torch
    from hydra import compose, initialize_config_dir

    from hepnn.nets.shower_fit import ShowerFirstGuess
    from hepnn.utils.config import config_dir, register_resolvers

    register_resolvers()
    with initialize_config_dir(config_dir(), version_base="1.3"):
        cfg = compose("train", overrides=["experiment=airshower_3dconv"])
    settings = {k: v for k, v in cfg.model.net.first_guess.items()}
    columns = {
        k: torch.from_numpy(np.asarray(ev[k])) for k in ("station_start_time", "station_x", "station_y")
    }
    signal = torch.from_numpy(np.asarray(ev["traces"])).sum(dim=-1)
    mask = torch.from_numpy(np.asarray(ev["station_triggered"])).bool()
    fitted = ShowerFirstGuess(**settings)(
        signal, columns["station_start_time"], columns["station_x"], columns["station_y"], mask
    )
    return type(fitted)(*(v.numpy() for v in fitted))


def trace_scale(ev: dict, cfg) -> np.ndarray:
    """The simulation's time-scale factor ``k`` of every event (particle delays grow as ``k r``),
    from the true Xmax and zenith."""
    cos_t = np.cos(ev["zenith"].astype(float))
    altitude = float(cfg.array["altitude"])
    return delay_scale(
        distance_to_xmax(ev["xmax"].astype(float), cos_t, cfg.atmosphere, altitude), cfg.timing
    )


def trace_time_quantile(traces: np.ndarray, fraction: float, bin_width: float) -> np.ndarray:
    """Time (ns from the trace start) at which the integrated trace ``(..., T)`` reaches
    ``fraction`` of its total (negative noise counted as zero), linearly interpolated in the bin."""
    cumulative = np.cumsum(np.clip(traces, 0.0, None), axis=-1)
    share = cumulative / np.maximum(cumulative[..., -1:], 1e-12)
    index = np.clip((share < fraction).sum(axis=-1), 0, traces.shape[-1] - 1)
    previous = np.take_along_axis(share, np.maximum(index - 1, 0)[..., None], -1)[..., 0]
    below = np.where(index > 0, previous, 0.0)
    above = np.take_along_axis(share, index[..., None], -1)[..., 0]
    return (index + (fraction - below) / np.maximum(above - below, 1e-12)) * bin_width


def station_distance_errors(ev: dict, cfg) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Per triggered station, the error (m) on its distance from the axis that each observable
    gives with the rest of the shower known (see the module docstring), and its total signal (VEM)."""
    signal = cfg.signal
    n = len(ev["core_x"])
    on = ev["station_triggered"].astype(bool)
    traces = ev["traces"].reshape(n, on.shape[1], -1).astype(float)
    total = traces.sum(axis=-1)
    px = ev["station_x"] - ev["core_x"][:, None]
    py = ev["station_y"] - ev["core_y"][:, None]
    along = px * ev["axis_x"][:, None] + py * ev["axis_y"][:, None]
    r = np.sqrt(np.maximum(px**2 + py**2 - along**2, 0.0))
    sec = 1.0 / np.cos(ev["zenith"].astype(float))[:, None]
    beta_em = signal["beta_em"] + signal["beta_em_sec"] * (sec - 1)
    beta_mu = signal["beta_mu"] + signal["beta_mu_sec"] * (sec - 1)
    f_mu = ev["muon_fraction"].astype(float)[:, None]
    s1000 = ev["s1000"].astype(float)[:, None]

    def log_expected(distance):
        mu = f_mu * lateral_distribution(distance, beta_mu, signal)
        em = (1 - f_mu) * lateral_distribution(distance, beta_em, signal)
        return np.log(s1000 * (mu + em))

    step = 1.0  # m
    gradient = (log_expected(r + step) - log_expected(r - step)) / (2 * step)  # per m
    with np.errstate(divide="ignore"):  # within r_min of the axis the toy LDF is flat: no information
        signal_error = np.abs(np.log(np.clip(total, 1e-3, None)) - log_expected(r)) / np.abs(gradient)
    errors = {"total signal": signal_error[on]}
    width = float(cfg.trace["bin_width"])
    k = trace_scale(ev, cfg)[:, None]
    scale = (r / 1000.0) * k  # k r (km)
    t10, t50, t90 = (trace_time_quantile(traces, f, width) for f in (0.1, 0.5, 0.9))
    for name, observable in (
        ("trace rise time t10-t50", t50 - t10),
        ("trace width t10-t90", t90 - t10),
        ("trace t50 after its start", t50),
    ):
        x, y = scale[on], observable[on]
        design = np.stack([np.ones_like(x), x, x * x], axis=1)
        coefficients, *_ = np.linalg.lstsq(design, y, rcond=None)
        slope = coefficients[1] + 2 * coefficients[2] * x  # ns per km of k r
        errors[name] = np.abs(y - design @ coefficients) / np.abs(
            slope * np.broadcast_to(k, on.shape)[on] / 1000.0
        )
    return errors, total[on]


def containment(values: np.ndarray) -> float:
    """68 % quantile of non-negative values (distances, angles)."""
    return float(np.quantile(values, 0.68))


def half_width(values: np.ndarray) -> float:
    """Half the central 68 % interval (the resolution of signed errors, e.g. dE/E)."""
    return float(np.quantile(values, 0.84) - np.quantile(values, 0.16)) / 2


def bands(
    values: np.ndarray, errors: np.ndarray, edges: list[float], label: str, figure=containment
) -> list[str]:
    rows = []
    for lo, hi in itertools.pairwise(edges):
        selected = (values >= lo) & (values < hi)
        if selected.any():
            rows.append(f"{label} {lo:g}-{hi:g}: {figure(errors[selected]):.3g}")
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--files", default=str(project_root() / "data" / "airshower" / "*.root"))
    parser.add_argument("--events", type=int, default=3000)
    parser.add_argument("--predictions", default=None)
    args = parser.parse_args()

    cfg = build_sample(generation_config())[0]
    ev = read_events(args.files, args.events)
    n = len(ev["core_x"])
    zenith = np.degrees(ev["zenith"])
    tables = {}
    for name, timing in (("signals", False), ("signals and start times", True)):
        fitted = np.array([fit_core(ev, k, cfg, timing) for k in range(n)])
        distance = np.hypot(fitted[:, 0] - ev["core_x"], fitted[:, 1] - ev["core_y"])
        tables[f"fit of the {name}, true axis and composition"] = (distance, zenith, ev["log10_energy"])
    axes = np.array([fit_axis(ev, k, cfg) for k in range(n)])
    truth = np.stack([ev["axis_x"], ev["axis_y"], ev["axis_z"]], axis=1)
    angle = np.degrees(np.arccos(np.clip((axes * truth).sum(axis=1), -1.0, 1.0)))
    angles = {"fit of the start times, true core and front curvature": (angle, zenith, ev["log10_energy"])}
    planes = np.array([plane_fit_axis(ev, k, cfg) for k in range(n)])
    plane_angle = np.degrees(np.arccos(np.clip((planes * truth).sum(axis=1), -1.0, 1.0)))
    angles["plane front fitted to the start times, nothing known"] = (plane_angle, zenith, ev["log10_energy"])
    energy = np.array([fit_energy(ev, k, cfg) for k in range(n)]) - 1.0
    energies = {"fit of the signals, true core, axis and composition": (energy, zenith, ev["log10_energy"])}
    guess = first_guess(ev)
    guess_core = np.hypot(guess.core[:, 0] - ev["core_x"], guess.core[:, 1] - ev["core_y"])
    tables["analytic first guess of the net (hepnn.nets.shower_fit), nothing known"] = (
        guess_core,
        zenith,
        ev["log10_energy"],
    )
    guess_angle = np.degrees(np.arccos(np.clip((guess.axis * truth).sum(axis=1), -1.0, 1.0)))
    angles["analytic first guess of the net (hepnn.nets.shower_fit), nothing known"] = (
        guess_angle,
        zenith,
        ev["log10_energy"],
    )
    if args.predictions:
        p = uproot.open(args.predictions)["predictions"].arrays(library="np")
        net = np.hypot(p["pred_core_x"] - p["true_core_x"], p["pred_core_y"] - p["true_core_y"])
        tables["network (test predictions)"] = (net, np.degrees(p["zenith"]), p["true_log10_energy"])
        predicted = np.stack([p["pred_axis_x"], p["pred_axis_y"], p["pred_axis_z"]], axis=1)
        predicted /= np.linalg.norm(predicted, axis=1, keepdims=True)
        true_axes = np.stack([p["true_axis_x"], p["true_axis_y"], p["true_axis_z"]], axis=1)
        net_angle = np.degrees(np.arccos(np.clip((predicted * true_axes).sum(axis=1), -1.0, 1.0)))
        angles["network (test predictions)"] = (net_angle, np.degrees(p["zenith"]), p["true_log10_energy"])
        net_energy = 10.0 ** (p["pred_log10_energy"] - p["true_log10_energy"]) - 1.0
        energies["network (test predictions)"] = (net_energy, np.degrees(p["zenith"]), p["true_log10_energy"])
    distance_errors, station_signal = station_distance_errors(ev, cfg)
    print(
        "\nper-station distance from the axis, 68 % quantile of the error (m) (stations); "
        f"{len(station_signal)} stations"
    )
    edges = [3, 10, 30, 100, 300, 1000, math.inf]
    header = "".join(f"S {lo:g}-{hi:g} VEM".rjust(16) for lo, hi in itertools.pairwise(edges))
    print("observable".ljust(28) + header)
    for name, error in distance_errors.items():
        cells = []
        for lo, hi in itertools.pairwise(edges):
            selected = (station_signal >= lo) & (station_signal < hi)
            cells.append(f"{containment(error[selected]):.0f} ({selected.sum()})".rjust(16))
        print(name.ljust(28) + "".join(cells))
    for title, what, table, figure in (
        ("core resolution", "68 % quantile of the distance between fitted and true (m)", tables, containment),
        (
            "angular resolution",
            "68 % quantile of the angle between fitted and true (deg)",
            angles,
            containment,
        ),
        ("energy resolution", "half the central 68 % interval of dE/E", energies, half_width),
    ):
        print(f"\n{title}, {what}; {n} showers fitted")
        for name, (d, z, e) in table.items():
            print(f"\n{name}: all {figure(d):.3g} (median {np.median(d):.3g}, {len(d)} events)")
            print("  " + "; ".join(bands(z, d, [0, 20, 40, 50, 61], "zenith", figure)))
            print("  " + "; ".join(bands(e, d, [18.5, 18.9, 19.3, 19.7, 20.01], "lgE", figure)))


if __name__ == "__main__":
    main()
