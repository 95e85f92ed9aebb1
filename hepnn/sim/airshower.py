"""A toy surface-detector array for ultra-high-energy cosmic-ray air showers, written to ROOT.

``python -m hepnn.generate generate=airshower`` (configuration ``conf/generate/airshower.yaml``;
defaults in :data:`DEFAULTS`). A grid of water-Cherenkov stations (think of the Pierre Auger
Observatory) records, for every air shower, one time trace per station; the true primary
energy, mass, shower maximum, arrival direction and core position are stored as regression
targets. Everything is vectorised with numpy over events and stations (no Python loop over
either) and seeded: the same seed gives identical files whatever the number of workers. The
layout (9 x 9 stations 1500 m apart, 80 bins of 25 ns) follows the toy array of M. Erdmann,
J. Glombitza, D. Walz, Astropart. Phys. 97 (2018) 46; the physics below is a parametric toy,
tuned by hand to published trends, not a shower simulation.

Units: metres (m), nanoseconds (ns), VEM (vertical-equivalent muon: the signal of a muon
crossing a station vertically, i.e. 1.2 m of water), g/cm^2 for atmospheric depths, eV (as
log10(E/eV)) for energies, radians for angles in the files (degrees in the configuration).

Files and schema (version :data:`SCHEMA_VERSION`)
-------------------------------------------------
``<output_dir>/airshower_<index>.root`` (``events_per_file`` events each) and ``manifest.json``,
produced, sharded over worker processes, seeded per shard and refused on a configuration
mismatch by the same machinery as the jet samples (:mod:`hepnn.sim.sample`). Tree ``tree``,
one entry per event, fixed-size arrays; ``S = nx * ny`` stations (81), ``T = n_bins`` (80):

==========================  ==========  =======  ===============================================
branch                      shape       type     meaning (unit)
==========================  ==========  =======  ===============================================
``traces``                  (S, T)      float32  signal per time bin (VEM); all 0 if not triggered
``station_start_time``      (S,)        float32  time of the first bin's start (ns) relative to
                                                 the core's crossing of the ground; 0 if not
                                                 triggered
``station_x, station_y``    (S,)        float32  station position (m), array centre at (0, 0)
``station_triggered``       (S,)        bool     the station passed the trigger threshold
``station_muon_signal``     (S,)        float32  truth: muonic part of the station's signal (VEM),
                                                 0 if not triggered
``log10_energy``            ()          float32  log10(E / eV)
``xmax``                    ()          float32  depth of the shower maximum (g/cm^2, slant)
``mass``                    ()          int32    mass number A of the primary (1, 4, 14, 56, ...)
``zenith, azimuth``         ()          float32  arrival direction (rad); azimuth from +x
                                                 towards +y, of the direction the shower
                                                 comes from, in [0, 2 pi)
``axis_x, axis_y, axis_z``  ()          float32  unit vector pointing to where the shower comes
                                                 from (sin t cos p, sin t sin p, cos t)
``core_x, core_y``          ()          float32  where the shower axis hits the ground (m)
``n_triggered``             ()          int32    number of triggered stations
``s1000``                   ()          float32  truth: expected total signal 1000 m from the
                                                 axis (VEM)
``muon_fraction``           ()          float32  truth: muonic fraction of ``s1000``
==========================  ==========  =======  ===============================================

Station ``k`` is grid position ``(ix, iy) = divmod(k, ny)``, so
``traces.reshape(-1, nx, ny, T)`` is the ``A[x, y, t]`` grid (x index first) that the
trace networks read. The trace of a station starts ``pretrigger_bins`` (8) bins before the
arrival of its first particles; bins follow a 25 ns clock common to the array (start times
are multiples of 25 ns).

Note: :func:`hepnn.utils.rootio.write_tree` cannot write fixed-size multi-dimensional numpy
columns (it declares branches with ``array.dtype``, dropping the inner shape, and uproot's
``extend`` refuses the (S, T) rows), so the shards are written here with uproot directly,
atomically through :func:`hepnn.utils.rootio.atomic_path`, one basket per batch of events.

Parametrisations
----------------
*Array.* ``nx x ny`` stations ``spacing`` apart (1500 m, as Auger's surface detector), at
``altitude`` 1400 m a.s.l. (Malargue); optionally triangular (every other row shifted by half
a spacing, rows ``spacing * sqrt(3) / 2`` apart, as Auger's array).

*Primaries.* log10(E/eV) uniform in [18.5, 20]; zenith angle with density proportional to
sin(t) cos(t) up to 60 deg (an isotropic flux through a flat horizontal array), sampled as
sin^2(t) = u sin^2(t_max); azimuth uniform; core uniform in the cell of the central station
(|x| < spacing / 2, |y| < row spacing / 2); mass drawn from ``composition`` (relative fractions
of proton, helium, nitrogen, iron by default; also carbon, oxygen, silicon).

*Shower maximum.* ``xmax.model`` EPOS-LHC (default), QGSJetII-04 or Sibyll2.1: the generalised
Gumbel distribution of M. De Domenico, M. Settimo, S. Riggi, E. Bertin, JCAP 07 (2013) 050
(arXiv:1305.2331), ``g(z) ~ exp(-lambda z - lambda exp(-z))``, ``z = (Xmax - mu) / sigma``, with
mu, sigma, lambda polynomials in ln A and log10(E / 10^19 eV) fitted to CONEX showers
(coefficients in :data:`GUMBEL_PARAMETERS`; e.g. EPOS-LHC, 10^19 eV: proton mean about
808 g/cm^2 and rms about 59, iron about 712 and 17). Sampled exactly as
``Xmax = mu - sigma ln(G / lambda)`` with G ~ Gamma(lambda, 1). ``model: gaussian`` instead
uses an elongation-rate model, <Xmax> = x0 + D (log10(E/eV) - 19) - c ln A (defaults
x0 = 790 g/cm^2, D = 58 g/cm^2 per decade, c = 25 g/cm^2: about 100 g/cm^2 between proton
and iron, as in those simulations and roughly the Auger Xmax measurements, PRD 90 (2014)
122005) and an rms ``width_proton + width_lnA * ln A`` (60, 46, 34, 20 g/cm^2 for p, He, N,
Fe).

*Atmosphere.* ``us_standard``: the U.S. standard atmosphere in Linsley's parametrisation as
used by CORSIKA (D. Heck et al., FZKA 6019 (1998)), four exponential layers
``X(h) = a + b exp(-h / c)`` (coefficients in :data:`US_STANDARD_LAYERS`) and a linear top
layer; 875 g/cm^2 vertical depth at 1400 m. ``isothermal``: ``X = X0 exp(-h / H)`` with
``sea_level_depth`` X0 = 1033 g/cm^2 and ``scale_height`` H = 8400 m. Flat Earth: the slant
depth of the ground is X_vertical(altitude) / cos(t); the depth past the maximum is
``DX = X_ground / cos(t) - Xmax``, and the distance along the axis from the core to the
maximum is ``(h(Xmax cos t) - altitude) / cos t``.

*Signal size.* The expected total signal 1000 m from the axis follows the inverse of the
Auger energy calibration, E = A S38^B with A = 0.190 EeV, B = 1.025 (approximately the
published calibration constants: A = 0.186-0.190 EeV, B = 1.025-1.031, Pierre Auger Collab.,
ICRC 2013 and PRD 102 (2020) 062005; so S1000 ~ E^0.976), and the attenuation with zenith of a
constant-intensity cut, ``S1000 = S38 f(x)``, ``f = 1 + a x + b x^2 + c x^3``,
``x = cos^2 t - cos^2 38 deg``, with (a, b, c) = (0.98, -1.68, -1.30): values of the order of
the Auger fits (maximum near 20 deg, about half the 38 deg value at 60 deg; toy values, not a
fit). At fixed zenith, S1000 does not depend on Xmax or mass in this toy.

*Components.* The muonic fraction of S1000 rises with the shower's age at the ground,
``f_mu(DX) = f_min + (f_max - f_min) / (1 + exp(-(DX - DX_half) / w))`` with f_min = 0.25,
f_max = 0.9, DX_half = 450 g/cm^2, w = 180 g/cm^2 (about 0.35 for vertical showers, 0.5 at
38 deg and 0.85 at 60 deg: older showers at the ground are muon-rich because the
electromagnetic cascade is absorbed past its maximum while muons are not; a toy tuned to the
trend of shower-universality studies, not a fit). Each component falls with the distance r
from the axis in the shower plane as the Auger-type lateral distribution
``S(r) = S(1000) (r / 1000 m)^beta ((r + 700 m) / 1700 m)^beta`` (r >= ``r_min`` = 100 m),
with beta = -2.5 + 0.6 (sec t - 1) for the electromagnetic and -2.1 + 0.4 (sec t - 1) for
the flatter muonic part (toy values around the slopes fitted by Auger, about -2 to -2.6,
flatter for inclined showers).

*Fluctuations.* Muons are counted: N ~ Poisson(S_mu(r) / s_mu) with s_mu the mean signal of
one muon, 1 VEM times the mean track length in a cylinder of 1.2 m height and 1.8 m radius
(Auger station) relative to the vertical, ``1 / (cos t + 2 h / (pi R) sin t)``; each muon's
signal has a relative rms of 0.35 (track-length spread: Gamma distributed). The muons are
spread over at most ``max_pulses`` (24) pulses (a pulse holds several muons once there are
more: the sum of their Gamma-distributed signals is again Gamma). The electromagnetic signal
is Gamma distributed with mean S_em(r) and variance 0.2 VEM * S_em(r) (many small particles).

*Timing.* The particles arrive after a curved shower front: a sphere centred on the axis at
``R_c = curvature_radius_min + max(D_Xmax, 0)`` from the core (8 km plus the distance to the
shower maximum: about 9 km for vertical and 20 km for 60 deg showers), expanding at the speed
of light, ``t_front = (|R_c a - p| - R_c) / c`` for a station at p from the core (plane front
-a.p/c plus a curvature delay of about r^2 / (2 c R_c)); the first particle's arrival is
smeared by a Gaussian jitter of rms sqrt(10^2 + (20 r / 1000 m)^2) ns, growing with distance
(as the first-particle statistics thin out; cf. the Auger time-variance model, C. Bonifazi
et al., Nucl. Phys. B Proc. Suppl. 190 (2009) 20). After it, muon arrival delays are
Gamma(1.5) distributed with mean 20 + 80 k r / 1000 m ns (early, spiky), the electromagnetic
arrival density is Gamma(2) with mean 40 + 200 k r / 1000 m ns (later, smoother, wider); k =
sqrt(5 km / max(D_Xmax, 1 km)) makes traces of showers developing close to the ground
(deep, vertical) broader and those of distant maxima (inclined) narrower, as the measured
rise times. Every arrival produces an exponential light pulse with a 60 ns decay time (the
light decay in an Auger station), integrated over 25 ns bins; signal after the trace's end is
lost.

*Noise and trigger.* Gaussian baseline noise of 0.01 VEM per bin; a station triggers if its
trace total (``trigger.level: total``) or its largest bin (``peak``) reaches ``threshold``
(3 VEM); otherwise it records nothing (trace, start time and muon truth all 0, flag 0). An
event is kept if at least ``min_stations`` (3) stations triggered (as Auger's event trigger;
showers failing it are replaced by new ones, so the sample describes triggered events).
"""

from __future__ import annotations

import json
import math
import time
import zlib
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from hepnn.errors import ConfigError
from hepnn.sim.sample import SampleConfig, SampleKind, SampleReport, ShardReport, generate_sample
from hepnn.utils import validation as check

SCHEMA_VERSION = 1
TREE = "tree"
PROCESS = "airshower"
SPEED_OF_LIGHT = 0.299792458  # m/ns

MASS_NUMBERS = {
    "proton": 1,
    "helium": 4,
    "carbon": 12,
    "nitrogen": 14,
    "oxygen": 16,
    "silicon": 28,
    "iron": 56,
}

# De Domenico et al., JCAP 07 (2013) 050 (arXiv:1305.2331): Gumbel parameters
# p = sum_i p_i * lg^i (lg = log10(E / 10^19 eV)), each p_i = c0 + c1 ln A + c2 (ln A)^2.
GUMBEL_PARAMETERS = {
    "EPOS-LHC": {
        "mu": ((775.589, -7.047, -2.427), (57.589, -0.743, 0.214), (-0.820, -0.169, -0.027)),
        "sigma": ((29.403, 13.553, -3.154), (0.096, -0.961, 0.150)),
        "lambda": ((0.563, 0.711, 0.058), (0.039, 0.067, -0.004)),
    },
    "QGSJetII-04": {
        "mu": ((761.383, -11.719, -1.372), (57.344, -1.731, 0.309), (-0.355, 0.273, -0.137)),
        "sigma": ((35.221, 12.335, -2.889), (0.307, -1.147, 0.271)),
        "lambda": ((0.673, 0.694, -0.007), (0.060, -0.019, 0.017)),
    },
    "Sibyll2.1": {
        "mu": ((770.104, -15.873, -0.960), (58.668, -0.124, -0.023), (-1.423, 0.977, -0.191)),
        "sigma": ((31.717, 1.335, -0.601), (-1.912, 0.007, 0.086)),
        "lambda": ((0.683, 0.278, 0.012), (0.008, 0.051, 0.003)),
    },
}
XMAX_MODELS = (*GUMBEL_PARAMETERS, "gaussian")
ATMOSPHERE_MODELS = ("us_standard", "isothermal")
TRIGGER_LEVELS = ("total", "peak")

# U.S. standard atmosphere (Linsley), as in CORSIKA: lower edge of the layer (m), a (g/cm^2),
# b (g/cm^2), c (m); X(h) = a + b exp(-h / c), and X(h) = a - b h / c in the top layer.
US_STANDARD_LAYERS = (
    (0.0, -186.555305, 1222.6562, 9941.8638),
    (4000.0, -94.919, 1144.9069, 8781.5355),
    (10000.0, 0.61289, 1305.5948, 6361.4304),
    (40000.0, 0.0, 540.1778, 7721.7016),
    (100000.0, 0.01128292, 1.0, 1.0e7),
)

# The configuration's physics sections and their defaults (conf/generate/airshower.yaml holds
# the same values, with units). ``composition`` is a free mapping species -> relative fraction.
DEFAULTS: dict[str, dict] = {
    "array": {"nx": 9, "ny": 9, "spacing": 1500.0, "triangular": False, "altitude": 1400.0},
    "primary": {
        "log10_energy_min": 18.5,
        "log10_energy_max": 20.0,
        "zenith_max": 60.0,
        "composition": {"proton": 0.25, "helium": 0.25, "nitrogen": 0.25, "iron": 0.25},
    },
    "xmax": {
        "model": "EPOS-LHC",
        "x0": 790.0,
        "elongation_rate": 58.0,
        "lnA_shift": 25.0,
        "width_proton": 60.0,
        "width_lnA": -10.0,
    },
    "atmosphere": {"model": "us_standard", "sea_level_depth": 1033.0, "scale_height": 8400.0},
    "signal": {
        "energy_scale": 0.190,
        "energy_exponent": 1.025,
        "cic": [0.98, -1.68, -1.30],
        "cic_reference_zenith": 38.0,
        "r_opt": 1000.0,
        "r_scale": 700.0,
        "r_min": 100.0,
        "beta_em": -2.5,
        "beta_em_sec": 0.6,
        "beta_mu": -2.1,
        "beta_mu_sec": 0.4,
        "em_quantum": 0.2,
    },
    "muons": {
        "fraction_min": 0.25,
        "fraction_max": 0.9,
        "dx_half": 450.0,
        "dx_width": 180.0,
        "signal_per_muon": 1.0,
        "tank_height": 1.2,
        "tank_radius": 1.8,
        "track_spread": 0.35,
        "max_pulses": 24,
    },
    "timing": {
        "curvature_radius_min": 8000.0,
        "jitter": 10.0,
        "jitter_1000": 20.0,
        "muon_delay": 20.0,
        "muon_delay_1000": 80.0,
        "muon_delay_shape": 1.5,
        "em_delay": 40.0,
        "em_delay_1000": 200.0,
        "distance_ref": 5000.0,
        "distance_min": 1000.0,
        "distance_exponent": 0.5,
        "pulse_decay": 60.0,
    },
    "trace": {"n_bins": 80, "bin_width": 25.0, "pretrigger_bins": 8, "noise": 0.01},
    "trigger": {"threshold": 3.0, "level": "total", "min_stations": 3},
}


def _section_value(default, value, key: str):
    """One value of a physics section, checked against the type of its default."""
    if isinstance(default, bool):
        return check.boolean(value, key)
    if isinstance(default, int):
        return check.integer(value, key)
    if isinstance(default, float):
        return check.number(value, key)
    if isinstance(default, list):
        return check.number_list(value, key)
    return check.string(value, key)


def _merge(defaults: Mapping, values: Mapping | None, where: str) -> dict:
    """``defaults`` updated by ``values``; unknown keys and values of the wrong type name their key."""
    values = check.mapping({} if values is None else values, where, sorted(defaults))
    out = {}
    for key, default in defaults.items():
        name = f"{where}.{key}"
        value = values.get(key, default)
        if key == "composition":
            if not isinstance(value, Mapping) or not value:
                raise ConfigError(f"{name} must be a mapping species -> fraction, got {value!r}")
            out[key] = dict(value)
        elif isinstance(default, Mapping):
            out[key] = _merge(default, value, name)
        else:
            out[key] = _section_value(default, value, name)
    return out


@dataclass(frozen=True)
class AirShowerConfig:
    """What to generate: event count, shards, seed and the physics sections of :data:`DEFAULTS`."""

    output_dir: str
    n_events: int = 100_000
    events_per_file: int = 10_000
    seed: int = 1
    workers: int | str = "auto"
    events_per_batch: int = 500
    array: Mapping[str, object] = field(default_factory=lambda: dict(DEFAULTS["array"]))
    primary: Mapping[str, object] = field(default_factory=lambda: dict(DEFAULTS["primary"]))
    xmax: Mapping[str, object] = field(default_factory=lambda: dict(DEFAULTS["xmax"]))
    atmosphere: Mapping[str, object] = field(default_factory=lambda: dict(DEFAULTS["atmosphere"]))
    signal: Mapping[str, object] = field(default_factory=lambda: dict(DEFAULTS["signal"]))
    muons: Mapping[str, object] = field(default_factory=lambda: dict(DEFAULTS["muons"]))
    timing: Mapping[str, object] = field(default_factory=lambda: dict(DEFAULTS["timing"]))
    trace: Mapping[str, object] = field(default_factory=lambda: dict(DEFAULTS["trace"]))
    trigger: Mapping[str, object] = field(default_factory=lambda: dict(DEFAULTS["trigger"]))

    # the same worker count rule as the jet samples ('auto' = all available cores)
    n_workers = SampleConfig.n_workers

    @classmethod
    def from_dict(cls, values: Mapping[str, object]) -> AirShowerConfig:
        """Build from a (Hydra) mapping: missing physics keys take :data:`DEFAULTS`; errors name the key."""
        values = dict(values)
        kind = values.pop("kind", PROCESS)
        if kind != PROCESS:
            raise ConfigError(f"generate.kind must be {PROCESS!r} for an air-shower sample, got {kind!r}")
        check.mapping(values, "generate", sorted({*cls.__dataclass_fields__, "kind"}))
        if values.get("output_dir") in (None, ""):
            raise ConfigError("generate.output_dir must be set")
        for section, defaults in DEFAULTS.items():
            values[section] = _merge(defaults, values.get(section), f"generate.{section}")
        cfg = cls(**values)
        cfg.validate()
        return cfg

    def validate(self) -> None:
        """Check the ranges of the values (:meth:`from_dict` checked their types); errors name the key."""
        _check_counts(self)
        self.n_workers()
        for check_section in SECTION_CHECKS:
            check_section(self)

    @property
    def n_stations(self) -> int:
        return int(self.array["nx"] * self.array["ny"])

    def physics_dict(self) -> dict[str, object]:
        """The part of the configuration that determines the files' contents (for the manifest)."""
        d = asdict(self)
        for key in ("output_dir", "workers"):
            d.pop(key)
        return json.loads(json.dumps({"kind": PROCESS, **d}))

    def manifest(self) -> dict[str, object]:
        """What ``manifest.json`` records: :data:`SCHEMA_VERSION` and :meth:`physics_dict`."""
        return {"schema_version": SCHEMA_VERSION, **self.physics_dict()}


def _positive_numbers(cfg: AirShowerConfig, section: str, keys: tuple[str, ...]) -> None:
    for key in keys:
        check.positive_number(getattr(cfg, section)[key], f"generate.{section}.{key}")


def _check_counts(cfg: AirShowerConfig) -> None:
    """Event counts and the seed."""
    for key in ("n_events", "events_per_file", "events_per_batch"):
        check.positive_int(getattr(cfg, key), f"generate.{key}")
    check.non_negative_int(cfg.seed, "generate.seed")


def _check_array(cfg: AirShowerConfig) -> None:
    """Grid size, spacing (m) and altitude (m a.s.l.)."""
    a = cfg.array
    check.positive_int(a["nx"], "generate.array.nx")
    check.positive_int(a["ny"], "generate.array.ny")
    check.positive_number(a["spacing"], "generate.array.spacing", unit="m")
    check.require(0 <= a["altitude"] < 10000, "generate.array.altitude", "in [0, 10000) m", a["altitude"])


def _check_primary(cfg: AirShowerConfig) -> None:
    """Energy range (log10(E/eV)), maximum zenith angle (degrees) and composition."""
    p = cfg.primary
    lo, hi = p["log10_energy_min"], p["log10_energy_max"]
    check.require(
        15 <= lo < hi <= 22, "generate.primary.log10_energy_min/max", "15 <= min < max <= 22", (lo, hi)
    )
    check.require(
        0 < p["zenith_max"] < 90, "generate.primary.zenith_max", "in (0, 90) degrees", p["zenith_max"]
    )
    for name, fraction in p["composition"].items():
        key = f"generate.primary.composition.{name}"
        check.choice(name, key, sorted(MASS_NUMBERS))
        check.non_negative_number(fraction, key)
    check.require(
        sum(p["composition"].values()) > 0, "generate.primary.composition", "not all zero", p["composition"]
    )


def _check_xmax_and_atmosphere(cfg: AirShowerConfig) -> None:
    """The Xmax model and the atmosphere."""
    check.choice(cfg.xmax["model"], "generate.xmax.model", XMAX_MODELS)
    check.choice(cfg.atmosphere["model"], "generate.atmosphere.model", ATMOSPHERE_MODELS)
    _positive_numbers(cfg, "atmosphere", ("sea_level_depth", "scale_height"))


def _check_signal(cfg: AirShowerConfig) -> None:
    """Energy calibration, attenuation and lateral distribution."""
    cic = cfg.signal["cic"]
    check.require(len(cic) == 3, "generate.signal.cic", "3 coefficients (x, x^2, x^3)", cic)
    _positive_numbers(cfg, "signal", ("energy_scale", "energy_exponent", "r_opt", "r_min", "em_quantum"))


def _check_muons(cfg: AirShowerConfig) -> None:
    """Muonic fraction, station (tank) size and muon pulses."""
    m = cfg.muons
    check.require(
        0 <= m["fraction_min"] <= m["fraction_max"] <= 1,
        "generate.muons.fraction_min/max",
        "0 <= min <= max <= 1",
        (m["fraction_min"], m["fraction_max"]),
    )
    check.positive_int(m["max_pulses"], "generate.muons.max_pulses")
    _positive_numbers(
        cfg, "muons", ("track_spread", "signal_per_muon", "tank_height", "tank_radius", "dx_width")
    )


def _check_timing(cfg: AirShowerConfig) -> None:
    """Front curvature, particle delays and pulse shape."""
    keys = ("curvature_radius_min", "muon_delay_shape", "pulse_decay", "distance_ref", "distance_min")
    _positive_numbers(cfg, "timing", keys)


def _check_trace_and_trigger(cfg: AirShowerConfig) -> None:
    """Trace bins (ns), noise (VEM) and the station trigger."""
    t = cfg.trace
    check.positive_int(t["n_bins"], "generate.trace.n_bins")
    check.positive_number(t["bin_width"], "generate.trace.bin_width", unit="ns")
    check.require(
        0 <= t["pretrigger_bins"] < t["n_bins"],
        "generate.trace.pretrigger_bins",
        "in [0, n_bins)",
        t["pretrigger_bins"],
    )
    check.non_negative_number(t["noise"], "generate.trace.noise", unit="VEM")
    check.choice(cfg.trigger["level"], "generate.trigger.level", TRIGGER_LEVELS)
    check.require(
        0 <= cfg.trigger["min_stations"] <= cfg.n_stations,
        "generate.trigger.min_stations",
        f"in [0, {cfg.n_stations}] (the number of stations)",
        cfg.trigger["min_stations"],
    )


SECTION_CHECKS = (
    _check_array,
    _check_primary,
    _check_xmax_and_atmosphere,
    _check_signal,
    _check_muons,
    _check_timing,
    _check_trace_and_trigger,
)


# --------------------------------------------------------------------------------------------
# Physics (vectorised over events and stations)


def station_layout(array: Mapping) -> tuple[np.ndarray, np.ndarray, float]:
    """Station x, y (m; station ``k`` at grid position ``divmod(k, ny)``) and the row spacing (m)."""
    nx, ny, spacing = int(array["nx"]), int(array["ny"]), float(array["spacing"])
    row = spacing * math.sqrt(3) / 2 if array["triangular"] else spacing
    ix, iy = np.meshgrid(np.arange(nx), np.arange(ny), indexing="ij")
    x = (ix - (nx - 1) / 2) * spacing
    y = (iy - (ny - 1) / 2) * row
    if array["triangular"]:
        x = x + np.where((iy - ny // 2) % 2 == 1, spacing / 2, 0.0)
    return x.ravel(), y.ravel(), row


def sample_primaries(n: int, rng: np.random.Generator, cfg: AirShowerConfig) -> dict[str, np.ndarray]:
    """log10(E/eV), zenith, azimuth (rad), mass number and core position (m) of ``n`` showers."""
    p = cfg.primary
    log10_energy = rng.uniform(p["log10_energy_min"], p["log10_energy_max"], n)
    sin_max = math.sin(math.radians(p["zenith_max"]))
    zenith = np.arcsin(np.sqrt(rng.uniform(0.0, 1.0, n)) * sin_max)  # density ~ sin(t) cos(t)
    azimuth = rng.uniform(0.0, 2 * math.pi, n)
    names = list(p["composition"])
    fractions = np.array([p["composition"][k] for k in names], dtype=float)
    species = rng.choice(len(names), size=n, p=fractions / fractions.sum())
    mass = np.array([MASS_NUMBERS[k] for k in names])[species]
    _, _, row = station_layout(cfg.array)
    spacing = float(cfg.array["spacing"])
    core_x = rng.uniform(-spacing / 2, spacing / 2, n)
    core_y = rng.uniform(-row / 2, row / 2, n)
    return {
        "log10_energy": log10_energy,
        "zenith": zenith,
        "azimuth": azimuth,
        "mass": mass,
        "core_x": core_x,
        "core_y": core_y,
    }


def gumbel_parameters(log10_energy, mass, model: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """mu, sigma (g/cm^2) and lambda of the Xmax distribution (De Domenico et al. 2013)."""
    table = GUMBEL_PARAMETERS[model]
    ln_a = np.log(np.asarray(mass, dtype=float))
    lg = np.asarray(log10_energy, dtype=float) - 19.0

    def value(name):
        return sum((c[0] + c[1] * ln_a + c[2] * ln_a**2) * lg**i for i, c in enumerate(table[name]))

    return value("mu"), value("sigma"), value("lambda")


def sample_xmax(log10_energy, mass, rng: np.random.Generator, xmax: Mapping) -> np.ndarray:
    """Depth of the shower maximum (g/cm^2) for each shower (see the module docstring)."""
    log10_energy = np.asarray(log10_energy, dtype=float)
    ln_a = np.log(np.asarray(mass, dtype=float))
    if xmax["model"] == "gaussian":
        mean = xmax["x0"] + xmax["elongation_rate"] * (log10_energy - 19.0) - xmax["lnA_shift"] * ln_a
        width = np.maximum(xmax["width_proton"] + xmax["width_lnA"] * ln_a, 1.0)
        return mean + width * rng.standard_normal(log10_energy.shape)
    mu, sigma, lam = gumbel_parameters(log10_energy, mass, xmax["model"])
    return mu - sigma * np.log(rng.gamma(lam) / lam)


def vertical_depth(height, atmosphere: Mapping) -> np.ndarray:
    """Vertical atmospheric depth (g/cm^2) above ``height`` (m a.s.l.)."""
    h = np.asarray(height, dtype=float)
    if atmosphere["model"] == "isothermal":
        return atmosphere["sea_level_depth"] * np.exp(-h / atmosphere["scale_height"])
    edges = np.array([layer[0] for layer in US_STANDARD_LAYERS])
    layer = np.clip(np.searchsorted(edges, h, side="right") - 1, 0, len(edges) - 1)
    a, b, c = (np.array([row[i] for row in US_STANDARD_LAYERS])[layer] for i in (1, 2, 3))
    top = layer == len(edges) - 1
    return np.where(top, a - b * h / c, a + b * np.exp(-h / c))


def height_of_vertical_depth(depth, atmosphere: Mapping) -> np.ndarray:
    """Height (m a.s.l.) where the vertical depth is ``depth`` (g/cm^2); inverts :func:`vertical_depth`."""
    x = np.maximum(np.asarray(depth, dtype=float), 1e-6)
    if atmosphere["model"] == "isothermal":
        return atmosphere["scale_height"] * np.log(atmosphere["sea_level_depth"] / x)
    edges = np.array([layer[0] for layer in US_STANDARD_LAYERS])
    edge_depths = vertical_depth(edges, atmosphere)  # decreasing with height
    layer = np.clip(np.searchsorted(-edge_depths, -x, side="right") - 1, 0, len(edges) - 1)
    a, b, c = (np.array([row[i] for row in US_STANDARD_LAYERS])[layer] for i in (1, 2, 3))
    top = layer == len(edges) - 1
    with np.errstate(divide="ignore", invalid="ignore"):
        exponential = c * np.log(b / np.maximum(x - a, 1e-12))
    return np.where(top, (a - x) * c / b, exponential)


def distance_to_xmax(xmax, cos_zenith, atmosphere: Mapping, altitude: float) -> np.ndarray:
    """Distance (m) along the axis from the core, at ``altitude`` (m a.s.l.), to the shower
    maximum at slant depth ``xmax`` (g/cm^2), for a flat Earth."""
    return (height_of_vertical_depth(xmax * cos_zenith, atmosphere) - altitude) / cos_zenith


def delay_scale(distance_xmax, timing: Mapping) -> np.ndarray:
    """The factor ``k`` of the particle delays (they grow as ``k r``) for the distance (m) to the
    shower maximum: ``(distance_ref / max(distance, distance_min)) ** distance_exponent``."""
    return (timing["distance_ref"] / np.maximum(distance_xmax, timing["distance_min"])) ** timing[
        "distance_exponent"
    ]


def expected_s1000(log10_energy, zenith, signal: Mapping) -> np.ndarray:
    """Expected total signal 1000 m from the axis (VEM): inverse energy calibration times the attenuation."""
    energy_eev = 10.0 ** (np.asarray(log10_energy, dtype=float) - 18.0)
    s38 = (energy_eev / signal["energy_scale"]) ** (1.0 / signal["energy_exponent"])
    x = np.cos(zenith) ** 2 - math.cos(math.radians(signal["cic_reference_zenith"])) ** 2
    a, b, c = signal["cic"]
    return s38 * np.maximum(1.0 + a * x + b * x**2 + c * x**3, 0.05)


def muon_fraction(delta_x, muons: Mapping) -> np.ndarray:
    """Muonic fraction of S1000 as a function of the depth past the maximum ``delta_x`` (g/cm^2)."""
    rise = 1.0 / (1.0 + np.exp(-(np.asarray(delta_x, dtype=float) - muons["dx_half"]) / muons["dx_width"]))
    return muons["fraction_min"] + (muons["fraction_max"] - muons["fraction_min"]) * rise


def lateral_distribution(r, beta, signal: Mapping) -> np.ndarray:
    """``(r / r_opt)^beta ((r + r_s) / (r_opt + r_s))^beta``: signal at ``r`` (m) relative to ``r_opt``."""
    r = np.maximum(r, signal["r_min"])
    r_opt, r_s = signal["r_opt"], signal["r_scale"]
    return (r / r_opt) ** beta * ((r + r_s) / (r_opt + r_s)) ** beta


def front_time(along, rho2, radius) -> np.ndarray:
    """Arrival time (ns) of a spherical front of ``radius`` (m) centred on the axis, 0 at the core.

    ``along`` is a.p (m) for the station offset p from the core and the axis a; ``rho2`` is |p|^2.
    Written as ``(|R a - p| - R) / c`` without the cancellation of large terms.
    """
    return (
        (rho2 - 2 * radius * along)
        / (np.sqrt(radius**2 - 2 * radius * along + rho2) + radius)
        / SPEED_OF_LIGHT
    )


def pulse_response(n_bins: int, bin_width: float, decay: float) -> np.ndarray:
    """``R[j, b]``: the fraction in bin ``b`` of a unit exponential pulse starting mid-bin ``j``."""
    m = np.arange(n_bins)[None, :] - np.arange(n_bins)[:, None]
    half = math.exp(-bin_width / 2 / decay)
    ratio = math.exp(-bin_width / decay)
    later = half * (1 - ratio) * ratio ** np.maximum(m - 1, 0)
    return np.where(m == 0, 1 - half, np.where(m > 0, later, 0.0))


@dataclass(frozen=True, eq=False)
class ArraySetup:
    """What the simulation needs of the array, derived once from the configuration: station
    positions (m, station ``k`` at grid position ``divmod(k, ny)``), the ground's altitude (m a.s.l.)
    and vertical depth (g/cm^2), the trace's bins (count, width in ns) and its pulse response."""

    station_x: np.ndarray
    station_y: np.ndarray
    altitude: float
    ground_depth: float
    n_bins: int
    bin_width: float
    response: np.ndarray

    @classmethod
    def from_config(cls, cfg: AirShowerConfig) -> ArraySetup:
        station_x, station_y, _ = station_layout(cfg.array)
        altitude = float(cfg.array["altitude"])
        n_bins, bin_width = int(cfg.trace["n_bins"]), float(cfg.trace["bin_width"])
        return cls(
            station_x=station_x,
            station_y=station_y,
            altitude=altitude,
            ground_depth=float(vertical_depth(altitude, cfg.atmosphere)),
            n_bins=n_bins,
            bin_width=bin_width,
            response=pulse_response(n_bins, bin_width, cfg.timing["pulse_decay"]),
        )


@dataclass(frozen=True, eq=False)
class ShowerGeometry:
    """Per shower ``(n,)``: cosine and sine of the zenith angle, the ``axis`` ``(3, n)`` (unit
    vector to where the shower comes from), the depth of the ground past the maximum ``delta_x``
    (g/cm^2) and the distance along the axis from the core to the maximum (m)."""

    cos_zenith: np.ndarray
    sin_zenith: np.ndarray
    axis: np.ndarray
    delta_x: np.ndarray
    distance_xmax: np.ndarray


@dataclass(frozen=True, eq=False)
class StationGeometry:
    """Per shower and station ``(n, S)``: ``along`` = a.p (m) for the station offset p from the
    core and the axis a, ``rho2`` = |p|^2 (m^2) and the distance ``r`` from the axis (m)."""

    along: np.ndarray
    rho2: np.ndarray
    r: np.ndarray


def fix_primaries(
    prim: dict[str, np.ndarray], xmax: np.ndarray, primaries: Mapping[str, np.ndarray] | None
) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """The drawn primaries and Xmax with those given in ``primaries`` put in their place."""
    given = dict(primaries or {})
    unknown = set(given) - {*prim, "xmax"}
    if unknown:
        raise ValueError(f"simulate_events: cannot fix {sorted(unknown)}")
    prim.update({k: np.asarray(v, dtype=prim[k].dtype) for k, v in given.items() if k != "xmax"})
    if "xmax" in given:
        xmax = np.asarray(given["xmax"], dtype=float)
    return prim, xmax


def shower_geometry(
    prim: Mapping, xmax: np.ndarray, setup: ArraySetup, atmosphere: Mapping
) -> ShowerGeometry:
    """Axis and longitudinal development: depth of the ground past the maximum, distance to it."""
    zenith, azimuth = prim["zenith"], prim["azimuth"]
    cos_t, sin_t = np.cos(zenith), np.sin(zenith)
    axis = np.stack([sin_t * np.cos(azimuth), sin_t * np.sin(azimuth), cos_t])
    return ShowerGeometry(
        cos_zenith=cos_t,
        sin_zenith=sin_t,
        axis=axis,
        delta_x=setup.ground_depth / cos_t - xmax,
        distance_xmax=distance_to_xmax(xmax, cos_t, atmosphere, setup.altitude),
    )


def station_geometry(prim: Mapping, axis: np.ndarray, setup: ArraySetup) -> StationGeometry:
    """Station offsets from the core and distances from the axis in the shower plane."""
    px = setup.station_x[None, :] - prim["core_x"][:, None]
    py = setup.station_y[None, :] - prim["core_y"][:, None]
    along = px * axis[0][:, None] + py * axis[1][:, None]
    rho2 = px**2 + py**2
    return StationGeometry(along=along, rho2=rho2, r=np.sqrt(np.maximum(rho2 - along**2, 0.0)))


def component_means(
    s1000: np.ndarray, f_mu: np.ndarray, r: np.ndarray, cos_zenith: np.ndarray, signal: Mapping
) -> tuple[np.ndarray, np.ndarray]:
    """Expected muonic and electromagnetic signals ``(n, S)`` (VEM) from S1000 and the muonic fraction."""
    sec = 1.0 / cos_zenith
    beta_em = signal["beta_em"] + signal["beta_em_sec"] * (sec - 1)
    beta_mu = signal["beta_mu"] + signal["beta_mu_sec"] * (sec - 1)
    mean_mu = (s1000 * f_mu)[:, None] * lateral_distribution(r, beta_mu[:, None], signal)
    mean_em = (s1000 * (1 - f_mu))[:, None] * lateral_distribution(r, beta_em[:, None], signal)
    return mean_mu, mean_em


def sample_muon_pulses(
    mean_mu: np.ndarray, geometry: ShowerGeometry, muons: Mapping, rng: np.random.Generator
) -> np.ndarray:
    """Signals (VEM) ``(n, S, max_pulses)`` of the counted muons, spread over ``max_pulses`` pulses."""
    cos_t, sin_t = geometry.cos_zenith, geometry.sin_zenith
    track = 1.0 / (cos_t + 2 * muons["tank_height"] / (math.pi * muons["tank_radius"]) * sin_t)
    per_muon = (muons["signal_per_muon"] * track)[:, None]
    n_muons = rng.poisson(mean_mu / per_muon)
    slots = int(muons["max_pulses"])
    in_slot = n_muons[..., None] // slots + (np.arange(slots) < (n_muons % slots)[..., None])
    kappa = 1.0 / muons["track_spread"] ** 2
    return per_muon[..., None] * rng.gamma(in_slot * kappa, 1.0 / kappa)


def sample_timing(
    geometry: ShowerGeometry,
    stations: StationGeometry,
    muon_pulses_shape: tuple[int, ...],
    timing: Mapping,
    rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Curved front, jitter and particle delays (ns): the delay of every muon pulse ``(n, S, pulses)``,
    the mean electromagnetic delay ``(n, S)`` and the first particle's arrival ``(n, S)``."""
    r = stations.r
    k_dist = delay_scale(geometry.distance_xmax, timing)
    scaled_r = r / 1000.0 * k_dist[:, None]
    tau_mu = timing["muon_delay"] + timing["muon_delay_1000"] * scaled_r
    tau_em = timing["em_delay"] + timing["em_delay_1000"] * scaled_r
    shape_mu = timing["muon_delay_shape"]
    muon_delay = rng.gamma(shape_mu, 1.0, size=muon_pulses_shape) * (tau_mu / shape_mu)[..., None]
    radius = timing["curvature_radius_min"] + np.maximum(geometry.distance_xmax, 0.0)
    jitter = np.sqrt(timing["jitter"] ** 2 + (timing["jitter_1000"] * r / 1000.0) ** 2)
    arrival = front_time(stations.along, stations.rho2, radius[:, None]) + jitter * rng.standard_normal(
        r.shape
    )
    return muon_delay, tau_em, arrival


def trace_start(arrival: np.ndarray, setup: ArraySetup, pretrigger_bins: int) -> np.ndarray:
    """Start time (ns) of every trace: bins on a common clock, the first particles ``pretrigger_bins`` in."""
    width = setup.bin_width
    return (np.floor(arrival / width) - pretrigger_bins) * width


def deposits_per_bin(
    phase: np.ndarray,
    muon_pulses: np.ndarray,
    muon_delay: np.ndarray,
    em_signal: np.ndarray,
    tau_em: np.ndarray,
    setup: ArraySetup,
) -> np.ndarray:
    """Signal (VEM) arriving in every bin ``(n, S, n_bins)``: the muon pulses where they land, the
    electromagnetic signal spread with a Gamma(2) arrival-time distribution; ``phase`` (ns) is the
    first particle's arrival after the trace's start."""
    n, n_stations = phase.shape
    n_bins, width = setup.n_bins, setup.bin_width
    muon_bin = np.floor((phase[..., None] + muon_delay) / width).astype(np.int64)
    keep = (muon_bin < n_bins) & (muon_pulses > 0)
    cell = np.arange(n * n_stations).reshape(n, n_stations)[..., None] * n_bins + muon_bin
    deposits = np.bincount(cell[keep], weights=muon_pulses[keep], minlength=n * n_stations * n_bins)
    deposits = deposits.reshape(n, n_stations, n_bins)
    edges = np.arange(n_bins + 1) * width
    u = np.maximum(edges - phase[..., None], 0.0) / (tau_em[..., None] / 2)
    em_cdf = 1.0 - np.exp(-u) * (1.0 + u)  # Gamma(2) arrival-time distribution
    deposits += em_signal[..., None] * np.diff(em_cdf, axis=-1)
    return deposits


def record_traces(
    deposits: np.ndarray, setup: ArraySetup, noise: float, rng: np.random.Generator
) -> np.ndarray:
    """Traces (VEM per bin): every deposit as an exponential light pulse, plus baseline noise."""
    n, n_stations, n_bins = deposits.shape
    traces = (deposits.reshape(-1, n_bins) @ setup.response).reshape(n, n_stations, n_bins)
    traces += noise * rng.standard_normal(traces.shape)
    return traces


def station_trigger(traces: np.ndarray, trigger: Mapping) -> np.ndarray:
    """Triggered stations ``(n, S)``: trace total (``level: total``) or peak bin (``peak``) >= threshold."""
    level = traces.sum(axis=-1) if trigger["level"] == "total" else traces.max(axis=-1)
    return level >= trigger["threshold"]


def simulate_events(
    n: int,
    rng: np.random.Generator,
    cfg: AirShowerConfig,
    primaries: Mapping[str, np.ndarray] | None = None,
) -> dict[str, np.ndarray]:
    """Simulate ``n`` showers (all of them, before the event trigger): the columns of the tree.

    ``primaries`` (optional) fixes some of ``log10_energy``, ``zenith``, ``azimuth``, ``mass``,
    ``core_x``, ``core_y``, ``xmax`` (arrays of length ``n``): all primaries are still drawn (and
    then replaced), so fixing some does not change how the others are drawn for a given seed.
    """
    setup = ArraySetup.from_config(cfg)
    prim = sample_primaries(n, rng, cfg)
    xmax = sample_xmax(prim["log10_energy"], prim["mass"], rng, cfg.xmax)
    prim, xmax = fix_primaries(prim, xmax, primaries)
    geometry = shower_geometry(prim, xmax, setup, cfg.atmosphere)
    stations = station_geometry(prim, geometry.axis, setup)

    # expected signals of the two components (VEM) and their fluctuations
    s1000 = expected_s1000(prim["log10_energy"], prim["zenith"], cfg.signal)
    f_mu = muon_fraction(geometry.delta_x, cfg.muons)
    mean_mu, mean_em = component_means(s1000, f_mu, stations.r, geometry.cos_zenith, cfg.signal)
    muon_pulses = sample_muon_pulses(mean_mu, geometry, cfg.muons, rng)
    quantum = cfg.signal["em_quantum"]
    em_signal = rng.gamma(mean_em / quantum, quantum)  # many small particles

    # timing and traces
    muon_delay, tau_em, arrival = sample_timing(geometry, stations, muon_pulses.shape, cfg.timing, rng)
    start = trace_start(arrival, setup, cfg.trace["pretrigger_bins"])
    deposits = deposits_per_bin(arrival - start, muon_pulses, muon_delay, em_signal, tau_em, setup)
    traces = record_traces(deposits, setup, cfg.trace["noise"], rng)
    triggered = station_trigger(traces, cfg.trigger)
    traces[~triggered] = 0.0
    muon_signal = np.where(triggered, muon_pulses.sum(axis=-1), 0.0)
    return event_columns(prim, xmax, geometry, setup, traces, start, triggered, muon_signal, s1000, f_mu)


def event_columns(
    prim: Mapping,
    xmax: np.ndarray,
    geometry: ShowerGeometry,
    setup: ArraySetup,
    traces: np.ndarray,
    start: np.ndarray,
    triggered: np.ndarray,
    muon_signal: np.ndarray,
    s1000: np.ndarray,
    f_mu: np.ndarray,
) -> dict[str, np.ndarray]:
    """The branches of the tree (see the module docstring), in their types."""
    f32 = np.float32
    n, n_stations = triggered.shape
    axis = geometry.axis
    return {
        "traces": traces.astype(f32),
        "station_start_time": np.where(triggered, start, 0.0).astype(f32),
        "station_x": np.broadcast_to(setup.station_x.astype(f32), (n, n_stations)).copy(),
        "station_y": np.broadcast_to(setup.station_y.astype(f32), (n, n_stations)).copy(),
        "station_triggered": triggered,
        "station_muon_signal": muon_signal.astype(f32),
        "log10_energy": prim["log10_energy"].astype(f32),
        "xmax": xmax.astype(f32),
        "mass": prim["mass"].astype(np.int32),
        "zenith": prim["zenith"].astype(f32),
        "azimuth": prim["azimuth"].astype(f32),
        "axis_x": axis[0].astype(f32),
        "axis_y": axis[1].astype(f32),
        "axis_z": axis[2].astype(f32),
        "core_x": prim["core_x"].astype(f32),
        "core_y": prim["core_y"].astype(f32),
        "n_triggered": triggered.sum(axis=1).astype(np.int32),
        "s1000": s1000.astype(f32),
        "muon_fraction": f_mu.astype(f32),
    }


def simulate_triggered(n: int, rng: np.random.Generator, cfg: AirShowerConfig, batch: int | None = None):
    """Yield batches of columns until ``n`` events with at least ``trigger.min_stations`` triggered
    stations have been yielded (the last batch is cut to fit)."""
    batch = batch or int(cfg.events_per_batch)
    done = simulated = 0
    while done < n:
        columns = simulate_events(batch, rng, cfg)
        simulated += batch
        selected = columns["n_triggered"] >= cfg.trigger["min_stations"]
        if done == 0 and not selected.any() and simulated >= 20 * batch:
            raise ConfigError(
                f"no event of {simulated} simulated triggered generate.trigger.min_stations = "
                f"{cfg.trigger['min_stations']} stations; lower it or the trigger threshold"
            )
        take = np.flatnonzero(selected)[: n - done]
        if len(take):
            done += len(take)
            yield {k: v[take] for k, v in columns.items()}


# --------------------------------------------------------------------------------------------
# Production: shards, workers and manifest through hepnn.sim.sample


@dataclass(frozen=True)
class AirShowerShard:
    """One output file: ``n_events`` showers, seeded independently of all other shards."""

    process: str
    index: int
    n_events: int
    seed: int
    path: str

    @property
    def n_items(self) -> int:
        return self.n_events


def plan_airshower_shards(cfg: AirShowerConfig) -> list[AirShowerShard]:
    """All shards of a sample, in a fixed order; seeds depend only on (seed, index)."""
    shards = []
    for index in range(math.ceil(cfg.n_events / cfg.events_per_file)):
        n = min(cfg.events_per_file, cfg.n_events - index * cfg.events_per_file)
        state = np.random.SeedSequence([cfg.seed, zlib.crc32(PROCESS.encode()), index]).generate_state(1)
        path = str(Path(cfg.output_dir) / f"{PROCESS}_{index:03d}.root")
        shards.append(AirShowerShard(PROCESS, index, n, int(state[0]), path))
    return shards


def _branch_type(values: np.ndarray) -> np.dtype:
    """uproot ``mktree`` type of a column: the dtype with the fixed inner shape (if any)."""
    return np.dtype((values.dtype, values.shape[1:])) if values.ndim > 1 else values.dtype


def generate_airshower_shard(shard: AirShowerShard, cfg: AirShowerConfig, progress=None) -> ShardReport:
    """Simulate and write one shard, a basket per batch; ``progress(n)`` (or the worker's queue) is told."""
    import uproot

    from hepnn.sim.sample import progress_reporter
    from hepnn.utils.rootio import atomic_path

    report = progress_reporter(progress)
    begin = time.perf_counter()
    rng = np.random.default_rng(shard.seed)
    metadata = json.dumps({"shard": asdict(shard), "config": cfg.manifest()})
    with atomic_path(shard.path) as tmp, uproot.recreate(tmp, compression=uproot.ZLIB(1)) as out:
        tree = None
        for columns in simulate_triggered(shard.n_events, rng, cfg):
            if tree is None:
                types = {k: _branch_type(v) for k, v in columns.items()}
                tree = out.mktree(TREE, types, title="hepnn air showers (toy surface detector)")
            tree.extend(columns)
            report(len(columns["n_triggered"]))
        out["hepnn_generator"] = metadata
    return ShardReport(shard.path, shard.n_events, shard.n_events, time.perf_counter() - begin)


AIRSHOWERS = SampleKind(
    name=PROCESS,
    plan=plan_airshower_shards,
    generate=generate_airshower_shard,
    schema_version=SCHEMA_VERSION,
    unit="event",
)


def generate_airshowers(cfg: AirShowerConfig, progress_bar: bool = True) -> SampleReport:
    """Generate every missing shard of ``cfg`` in parallel workers (see hepnn.sim.sample)."""
    return generate_sample(cfg, progress_bar=progress_bar, kind=AIRSHOWERS)
