"""Pile-up: minimum-bias collisions overlaid on every hard event before the detector.

Each hard event gets ``n ~ Poisson(mu)`` pile-up collisions, drawn with replacement from a pool
of minimum-bias events (Pythia ``SoftQCD:nonDiffractive`` at the sample's beam energy, with its
default multiple parton interactions) that is generated once per sample, seeded by the sample's
seed, and kept in the sample directory (``pileup_pool.root``), so that the cost of the overlay
does not grow with mu x jets. Over N hard events each pool event is drawn mu N / pool_events
times on average: 6 times per 1000 hard events with the default 10 000 events at mu = 60. The
pile-up of different jets is correlated only through that reuse, which the random choice, the
random vertex position and the random orientation (every drawn event is rotated by a random
azimuth and, with probability 1/2, reflected in z) dilute: a pool event lands at a different
place relative to every jet it is overlaid on.

Every collision, the hard one included, has its own vertex, ``z ~ N(0, z_sigma)`` (mm). A
pile-up vertex closer than ``vertex_resolution`` (mm) to the hard vertex is merged with it (1.1 %
of them at the defaults); the tracker assigns each track of a charged particle from any other
pile-up vertex to that vertex with probability ``vertex_efficiency`` (what charged-hadron
subtraction removes), and cannot tell neutral pile-up particles from the hard scatter's.

Only the pile-up particles within ``region`` (in Delta R) of a selected jet of the hard event are
overlaid: anti-kT jets of radius R collect nothing from farther away, and the detector and the
clustering then handle a few thousand particles per event instead of the whole event's
mu x 200. The ring between R and ``region`` around each jet keeps enough pile-up for a local
estimate of its density (area-median subtraction). The pool keeps neither particles outside the
detector's acceptance nor charged particles below the tracker's pT threshold (they curl up before
the calorimeters): neither leaves anything in the detector.
"""

from __future__ import annotations

import functools
import logging
import zlib
from dataclasses import asdict, dataclass
from pathlib import Path

import awkward as ak
import numpy as np

from hepnn.errors import ConfigError
from hepnn.utils import validation as check

log = logging.getLogger(__name__)

POOL_FILE = "pileup_pool.root"
POOL_TREE = "pool"
MU_MAX = 200
FIELDS = ("px", "py", "pz", "e", "pid", "charge")


@dataclass(frozen=True)
class PileupConfig:
    """The ``generate.pileup`` settings (see the module docstring); lengths in mm, pT in GeV."""

    mu: float = 60.0
    pool_events: int = 10_000
    z_sigma: float = 50.0
    vertex_efficiency: float = 0.9
    vertex_resolution: float = 1.0
    region: float = 1.6
    charged_pt_min: float = 0.5

    @classmethod
    def from_dict(cls, values) -> PileupConfig:
        values = dict(check.mapping(values or {}, "generate.pileup", list(cls.__dataclass_fields__)))
        cfg = cls(**values)
        where = "generate.pileup"
        mu = check.non_negative_number(cfg.mu, f"{where}.mu")
        check.require(mu <= MU_MAX, f"{where}.mu", f"at most {MU_MAX}", cfg.mu)
        check.positive_int(cfg.pool_events, f"{where}.pool_events")
        check.positive_number(cfg.z_sigma, f"{where}.z_sigma", unit="mm")
        efficiency = check.number(cfg.vertex_efficiency, f"{where}.vertex_efficiency")
        check.require(0.0 <= efficiency <= 1.0, f"{where}.vertex_efficiency", "in [0, 1]", efficiency)
        check.non_negative_number(cfg.vertex_resolution, f"{where}.vertex_resolution", unit="mm")
        check.positive_number(cfg.region, f"{where}.region")
        check.non_negative_number(cfg.charged_pt_min, f"{where}.charged_pt_min", unit="GeV")
        if cfg.pool_events < mu:
            raise ConfigError(
                f"generate.pileup.pool_events={cfg.pool_events} is smaller than mu={mu}: one hard event "
                "would draw the same minimum-bias event several times; give at least mu events"
            )
        return cfg

    def to_dict(self) -> dict:
        return asdict(self)


def minimum_bias_settings(ecm: float, seed: int) -> list[str]:
    """Pythia ``readString`` lines of the minimum-bias pool (default tune, multiple interactions on)."""
    return [
        "Print:quiet = on",
        "Next:numberCount = 0",
        "ParticleDecays:limitTau0 = on",
        "ParticleDecays:tau0Max = 10",
        "Random:setSeed = on",
        f"Random:seed = {seed}",
        f"Beams:eCM = {ecm}",
        "SoftQCD:nonDiffractive = on",
    ]


def generate_pool(
    path: Path, cfg: PileupConfig, ecm: float, seed: int, abs_eta_max: float, batch: int = 1000
) -> Path:
    """Write ``cfg.pool_events`` minimum-bias events' visible final-state particles within
    ``|eta| < abs_eta_max`` (the detector's acceptance) to ``path``."""
    import pythia8mc

    from hepnn.sim.jets import ChargeTable
    from hepnn.utils.rootio import write_tree

    pythia = pythia8mc.Pythia("", False)
    for line in minimum_bias_settings(ecm, seed):
        if not pythia.readString(line):
            raise ValueError(f"Pythia rejected the minimum-bias setting {line!r}")
    if not pythia.init():
        raise RuntimeError("Pythia failed to initialise the minimum-bias pool")
    charges = ChargeTable(pythia.particleData)
    parts, done = [], 0
    while done < cfg.pool_events:
        events = pythia.nextBatch(min(batch, cfg.pool_events - done))
        prt = events.prt
        final = prt[prt.status > 0]
        counts = ak.to_numpy(ak.num(final, axis=1))
        flat = {k: ak.to_numpy(ak.flatten(getattr(final.p, k))) for k in ("px", "py", "pz", "e")}
        pid = ak.to_numpy(ak.flatten(final.id))
        charge = charges(pid)
        pt = np.hypot(flat["px"], flat["py"])
        eta = np.arcsinh(flat["pz"] / np.maximum(pt, 1e-9))
        keep = (
            ~np.isin(np.abs(pid), (12, 14, 16))
            & ((charge == 0) | (pt > cfg.charged_pt_min))
            & (np.abs(eta) < abs_eta_max)
        )
        event = np.repeat(np.arange(len(counts)), counts)[keep]
        kept_counts = np.bincount(event, minlength=len(counts))
        columns = {**{k: v[keep] for k, v in flat.items()}, "pid": pid[keep], "charge": charge[keep]}
        parts.append({f"pu_{k}": ak.unflatten(columns[k].astype(np.float32), kept_counts) for k in FIELDS})
        done += len(counts)
    merged = {k: ak.concatenate([p[k] for p in parts]) for k in parts[0]}
    write_tree(path, POOL_TREE, merged, title="hepnn minimum-bias pool")
    log.info("minimum-bias pool: %d events in %s", done, path)
    return path


@dataclass(frozen=True)
class PileupPool:
    """The pool's particles as flat float64 arrays (``e``, ``pt`` in GeV, ``eta``, ``phi`` in rad,
    ``pid``, ``charge`` in e) with the first particle of each event and their counts."""

    e: np.ndarray
    pt: np.ndarray
    eta: np.ndarray
    phi: np.ndarray
    pid: np.ndarray
    charge: np.ndarray
    start: np.ndarray
    counts: np.ndarray

    @property
    def n_events(self) -> int:
        return len(self.counts)


@dataclass(frozen=True)
class PileupSource:
    """What a generator worker overlays: the sample's pool and the ``generate.pileup`` settings."""

    pool: PileupPool
    config: PileupConfig


def pool_seed(sample_seed: int) -> int:
    """Pythia seed of a sample's minimum-bias pool (in Pythia's range 1 ... 900 000 000)."""
    state = np.random.SeedSequence([sample_seed, zlib.crc32(POOL_FILE.encode())]).generate_state(1)
    return int(state[0] % 900_000_000) + 1


def ensure_pool(
    output_dir: str | Path, cfg: PileupConfig, ecm: float, sample_seed: int, abs_eta_max: float
) -> Path:
    """The pool file of a sample directory, generated first if it is not there yet."""
    path = Path(output_dir) / POOL_FILE
    if not path.exists():
        log.info("generating the minimum-bias pool (%d events) into %s", cfg.pool_events, path)
        generate_pool(path, cfg, ecm, pool_seed(sample_seed), abs_eta_max)
    return path


@functools.cache
def load_pool(path: str) -> PileupPool:
    """The pool of ``path`` (read once per process)."""
    import uproot

    with uproot.open(path) as f:
        arrays = f[POOL_TREE].arrays([f"pu_{k}" for k in FIELDS])
    counts = ak.to_numpy(ak.num(arrays["pu_px"], axis=1)).astype(np.int64)
    flat = {k: ak.to_numpy(ak.flatten(arrays[f"pu_{k}"])).astype(np.float64) for k in FIELDS}
    pt = np.hypot(flat["px"], flat["py"])
    return PileupPool(
        e=flat["e"],
        pt=pt,
        eta=np.arcsinh(flat["pz"] / np.maximum(pt, 1e-9)),
        phi=np.arctan2(flat["py"], flat["px"]),
        pid=flat["pid"].astype(np.int64),
        charge=flat["charge"],
        start=np.cumsum(counts) - counts,
        counts=counts,
    )


def overlay(
    pool: PileupPool,
    cfg: PileupConfig,
    rng: np.random.Generator,
    jet_event: np.ndarray,
    jet_eta: np.ndarray,
    jet_phi: np.ndarray,
    n_events: int,
) -> dict[str, np.ndarray]:
    """Pile-up particles for every hard event: flat arrays ``px, py, pz, e`` (GeV), ``pid``,
    ``charge`` (e), their event index ``event``, whether their vertex is separable from the hard
    one (``separable``), and the number of collisions per event ``n_collisions``.

    Only the particles within ``cfg.region`` of a selected jet (``jet_event``, ``jet_eta``,
    ``jet_phi``) are returned: events without selected jets get their collisions drawn but no
    particles.
    """
    n_collisions = rng.poisson(cfg.mu, n_events)
    total = int(n_collisions.sum())
    chosen = rng.integers(0, pool.n_events, total)
    rotation = rng.uniform(-np.pi, np.pi, total)
    reflect = np.where(rng.random(total) < 0.5, -1.0, 1.0)
    hard_z = rng.normal(0.0, cfg.z_sigma, n_events)  # vertex z (mm) of the hard collisions
    pileup_z = rng.normal(0.0, cfg.z_sigma, total)  # and of every pile-up collision
    collision_event = np.repeat(np.arange(n_events), n_collisions)
    separable = np.abs(pileup_z - hard_z[collision_event]) > cfg.vertex_resolution

    # only the collisions of events with selected jets are expanded into particles, and the
    # region cut is made in each pool event's own frame (the jets rotated and reflected into it)
    jets_per_event = np.bincount(jet_event, minlength=n_events)
    active = np.flatnonzero(jets_per_event[collision_event] > 0)
    counts = pool.counts[chosen[active]]
    collision = np.repeat(active, counts)
    index = np.arange(int(counts.sum())) + np.repeat(
        pool.start[chosen[active]] - (np.cumsum(counts) - counts), counts
    )
    keep = _near_jets(
        pool.eta[index],
        pool.phi[index],
        counts,
        _jets_in_pool_frame(
            jet_event, jet_eta, jet_phi, collision_event[active], reflect[active], rotation[active]
        ),
        cfg.region,
    )
    index, collision = index[keep], collision[keep]
    eta = pool.eta[index] * reflect[collision]
    phi = (pool.phi[index] + rotation[collision] + np.pi) % (2 * np.pi) - np.pi
    pt = pool.pt[index]
    return {
        "px": pt * np.cos(phi),
        "py": pt * np.sin(phi),
        "pz": pt * np.sinh(eta),
        "e": pool.e[index],
        "pid": pool.pid[index],
        "charge": pool.charge[index],
        "event": collision_event[collision],
        "separable": separable[collision],
        "n_collisions": n_collisions,
    }


def _jets_in_pool_frame(jet_event, jet_eta, jet_phi, event, reflect, rotation) -> list[tuple]:
    """For each collision (of hard event ``event``, drawn with ``reflect`` and ``rotation``), the
    (eta, phi) of its event's k-th jet in the pool event's frame, one pair of arrays per k
    (eta = inf where the event has fewer jets)."""
    order = np.argsort(jet_event, kind="stable")
    jet_event, jet_eta, jet_phi = jet_event[order], jet_eta[order], jet_phi[order]
    first = np.searchsorted(jet_event, event, side="left")
    last = np.searchsorted(jet_event, event, side="right")
    jets = []
    for k in range(int((last - first).max(initial=0))):
        j = np.minimum(first + k, len(jet_event) - 1)
        eta = np.where(first + k < last, jet_eta[j] * reflect, np.inf)
        jets.append((eta, jet_phi[j] - rotation))
    return jets


def _near_jets(eta, phi, counts, jets, radius) -> np.ndarray:
    """Whether each particle (eta, phi in rad; ``counts[c]`` consecutive particles per collision
    ``c``) lies within ``radius`` (Delta R) of one of its collision's ``jets``."""
    near = np.zeros(len(eta), dtype=bool)
    for jet_eta, jet_phi in jets:
        deta = eta - np.repeat(jet_eta, counts)
        dphi = (phi - np.repeat(jet_phi, counts) + np.pi) % (2 * np.pi) - np.pi
        near |= deta * deta + dphi * dphi < radius * radius
    return near
