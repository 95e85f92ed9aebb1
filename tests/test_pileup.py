"""Pile-up overlay: the pool, the overlay on hand-made pools, the detector's pile-up truth, and
whole samples with pile-up (reproducibility, truth branches, physics sanity)."""

import awkward as ak
import numpy as np
import pytest
import uproot

from hepnn.errors import ConfigError
from hepnn.sim import detector, pileup
from hepnn.sim.pileup import PileupConfig, PileupPool
from hepnn.sim.sample import generate_sample
from tests.conftest import compose_generate
from tests.test_detector import PERFECT, particle


def hand_made_pool(n_events=50, per_event=40, seed=0) -> PileupPool:
    """Minimum-bias-like events: ``per_event`` pions of 1 GeV spread over |eta| < 3."""
    rng = np.random.default_rng(seed)
    n = n_events * per_event
    eta, phi = rng.uniform(-3, 3, n), rng.uniform(-np.pi, np.pi, n)
    pt = np.ones(n)
    counts = np.full(n_events, per_event)
    return PileupPool(
        e=np.sqrt((pt * np.cosh(eta)) ** 2 + 0.1396**2),
        pt=pt,
        eta=eta,
        phi=phi,
        pid=np.full(n, 211),
        charge=np.ones(n),
        start=np.cumsum(counts) - counts,
        counts=counts,
    )


def test_config_errors_name_the_key():
    with pytest.raises(ConfigError, match=r"generate\.pileup\.mu.*at most 200"):
        PileupConfig.from_dict({"mu": 250})
    with pytest.raises(ConfigError, match=r"generate\.pileup.*nu"):
        PileupConfig.from_dict({"nu": 60})
    with pytest.raises(ConfigError, match=r"generate\.pileup\.vertex_efficiency"):
        PileupConfig.from_dict({"vertex_efficiency": 1.5})
    with pytest.raises(ConfigError, match=r"pool_events=50 is smaller than mu=60"):
        PileupConfig.from_dict({"mu": 60, "pool_events": 50})


def test_overlay_keeps_particles_near_jets_and_preserves_their_pt_and_energy():
    pool = hand_made_pool()
    cfg = PileupConfig(mu=20, pool_events=50, region=1.0)
    jet_event = np.array([0, 0, 2])  # event 1 has no selected jet
    jet_eta, jet_phi = np.array([0.5, -0.5]), np.array([0.0, np.pi - 0.1])
    jet_eta, jet_phi = np.append(jet_eta, 1.0), np.append(jet_phi, -3.0)
    out = pileup.overlay(pool, cfg, np.random.default_rng(1), jet_event, jet_eta, jet_phi, 3)
    assert out["n_collisions"].shape == (3,)
    assert not np.any(out["event"] == 1) and set(np.unique(out["event"])) == {0, 2}
    pt = np.hypot(out["px"], out["py"])
    assert np.allclose(pt, 1.0)
    mass2 = out["e"] ** 2 - pt**2 - out["pz"] ** 2
    assert np.allclose(mass2, 0.1396**2, atol=1e-6)  # rotation and reflection keep the four-momentum
    eta = np.arcsinh(out["pz"] / pt)
    phi = np.arctan2(out["py"], out["px"])
    distance = np.full(len(eta), np.inf)
    for e, je, jp in zip(jet_event, jet_eta, jet_phi, strict=True):
        d = np.hypot(eta - je, (phi - jp + np.pi) % (2 * np.pi) - np.pi)
        distance = np.where(out["event"] == e, np.minimum(distance, d), distance)
    assert np.all(distance < 1.0)
    # uniform pile-up in |eta| < 3: about area / (6 * 2 pi) of each collision lands in a jet's disc
    expected = out["n_collisions"][2] * 40 * np.pi / (6 * 2 * np.pi)
    assert np.sum(out["event"] == 2) == pytest.approx(expected, rel=0.3)


def test_poisson_collisions_and_vertex_separation():
    pool = hand_made_pool()
    jet_event, jet_eta, jet_phi = np.arange(400), np.zeros(400), np.zeros(400)
    cfg = PileupConfig(mu=30, pool_events=50)
    out = pileup.overlay(pool, cfg, np.random.default_rng(2), jet_event, jet_eta, jet_phi, 400)
    assert out["n_collisions"].mean() == pytest.approx(30, rel=0.03)
    assert out["n_collisions"].var() == pytest.approx(30, rel=0.2)
    # |z_pu - z_hs| ~ N(0, sqrt(2) * 50 mm): 1.1 % of the vertices lie within 1 mm of the hard one
    assert 1 - out["separable"].mean() == pytest.approx(0.011, abs=0.006)
    merged = PileupConfig(mu=30, pool_events=50, vertex_resolution=1e6)
    out = pileup.overlay(pool, merged, np.random.default_rng(2), jet_event, jet_eta, jet_phi, 400)
    assert not out["separable"].any()


def run_with_pileup(parts, ids, charges, origin, separable=None, efficiency=1.0, seed=0):
    columns = np.array(parts, dtype=float).T
    return detector.simulate(
        *columns,
        np.array(ids),
        np.array(charges, float),
        np.array([len(ids)]),
        np.random.default_rng(seed),
        PERFECT,
        pileup=np.array(origin, float),
        separable=None if separable is None else np.array(separable),
        vertex_efficiency=efficiency,
    )


def test_detector_follows_pile_up_into_tracks_and_cells():
    # a hard-scatter and a pile-up photon in one ECAL cell, a pile-up pion, a hard pion
    parts = [
        particle(30, 0.0101, 0.0101),
        particle(10, 0.0102, 0.0105),
        particle(5, 1.0, 1.0, 0.1396),
        particle(20, -1.0, 2.0, 0.1396),
    ]
    out = run_with_pileup(parts, [22, 22, 211, 211], [0, 0, 1, 1], origin=[0, 1, 1, 0])
    photon = out.pid == 22
    assert out.pileup_fraction[photon][0] == pytest.approx(parts[1][3] / (parts[0][3] + parts[1][3]))
    tracks = out.charge != 0
    assert sorted(out.pileup_fraction[tracks].tolist()) == [0.0, 1.0]
    assert out.pileup_vertex.tolist() == (tracks & (out.pileup_fraction == 1)).tolist()
    cell = np.argmax(out.ecal.energy)
    assert out.ecal.pileup_fraction[cell] == pytest.approx(out.pileup_fraction[photon][0])
    # an inseparable pile-up vertex, or no vertex efficiency, assigns nothing
    assert not run_with_pileup(
        parts, [22, 22, 211, 211], [0, 0, 1, 1], [0, 1, 1, 0], [0, 0, 0, 0]
    ).pileup_vertex.any()
    assert not run_with_pileup(
        parts, [22, 22, 211, 211], [0, 0, 1, 1], [0, 1, 1, 0], efficiency=0.0
    ).pileup_vertex.any()


def test_a_batch_without_pile_up_gets_the_objects_it_gets_without_the_arguments():
    rng = np.random.default_rng(3)
    n = 300
    parts = [
        particle(p, e, f, 0.1396)
        for p, e, f in zip(rng.uniform(1, 50, n), rng.uniform(-2, 2, n), rng.uniform(-3, 3, n), strict=True)
    ]
    ids, charges = rng.choice([211, 22, 2112], n), np.zeros(n)
    charges[ids == 211] = 1.0
    columns = np.array(parts).T
    plain = detector.simulate(
        *columns, ids, charges, np.array([n]), np.random.default_rng(7), detector.DetectorConfig()
    )
    marked = detector.simulate(
        *columns,
        ids,
        charges,
        np.array([n]),
        np.random.default_rng(7),
        detector.DetectorConfig(),
        pileup=np.zeros(n),
        vertex_efficiency=0.9,
    )
    for name in ("px", "py", "pz", "energy", "pid", "kind"):
        assert np.array_equal(getattr(plain, name), getattr(marked, name)), name
    assert np.array_equal(plain.ecal.energy, marked.ecal.energy)
    assert not marked.pileup_vertex.any() and not marked.pileup_fraction.any()


def pileup_sample(out, workers, *overrides):
    return compose_generate(
        "toptag_pu",
        out,
        "generate.processes.qcd.n_jets=40",
        "generate.processes.ttbar.n_jets=40",
        "generate.jets_per_file=20",
        "generate.pileup.mu=30",
        "generate.pileup.pool_events=300",
        "generate.events_per_batch=50",
        f"generate.workers={workers}",
        *overrides,
    )


@pytest.fixture(scope="module")
def pileup_samples(tmp_path_factory):
    """The same small toptag_pu sample generated with one and with two workers."""
    one, two = tmp_path_factory.mktemp("pu_one"), tmp_path_factory.mktemp("pu_two")
    generate_sample(pileup_sample(one, 1), progress_bar=False)
    generate_sample(pileup_sample(two, 2), progress_bar=False)
    return one, two


def test_pile_up_samples_are_reproducible_whatever_the_worker_count(pileup_samples):
    one, two = pileup_samples
    names = sorted(p.name for p in one.glob("*.root"))
    assert names == sorted(p.name for p in two.glob("*.root"))
    assert pileup.POOL_FILE in names and len(names) == 5
    for name in names:
        tree = pileup.POOL_TREE if name == pileup.POOL_FILE else "tree"
        a, b = uproot.open(one / name)[tree].arrays(), uproot.open(two / name)[tree].arrays()
        for field in a.fields:
            assert ak.all(ak.ravel(a[field]) == ak.ravel(b[field])), (name, field)


def test_pile_up_truth_is_stored_and_physical(pileup_samples):
    jets = ak.concatenate(
        [uproot.open(f)["tree"].arrays() for f in sorted(pileup_samples[0].glob("*_0*.root"))]
    )
    assert len(jets) == 80
    assert np.mean(jets.event_npu) == pytest.approx(30, rel=0.1)
    # pile-up adds energy: the jet with pile-up is harder and heavier than the same jet alone
    assert np.mean(jets.jet_pt - jets.jet_nopu_pt) > 10
    assert np.mean(jets.jet_mass) > np.mean(jets.jet_nopu_mass)
    assert np.all(jets.jet_nparticles >= 0.5 * jets.jet_nopu_nparticles)
    # the matched jet without pile-up points the same way
    assert np.all(np.hypot(jets.jet_eta - jets.jet_nopu_eta, jets.jet_phi - jets.jet_nopu_phi) < 0.4 + 1e-6)
    fraction = ak.flatten(jets.part_pileup_fraction)
    assert np.all((fraction >= 0) & (fraction <= 1))
    assert ak.all(ak.flatten(jets.part_is_pileup) == (fraction > 0.5))
    charged = ak.flatten(jets.part_charge) != 0
    assert np.all(np.isin(fraction[charged], [0, 1]))  # a track is one particle's
    # only pile-up tracks are assigned to a pile-up vertex, most of them (efficiency 0.9)
    vertex = ak.flatten(jets.part_pileup_vertex) > 0
    assert not np.any(vertex & (fraction < 1))
    assert np.sum(vertex) / np.sum(charged & (fraction == 1)) == pytest.approx(0.9 * 0.989, abs=0.05)
    # the density around the jet accounts for most of the pile-up pT (area pi R^2)
    assert np.mean(jets.jet_rho) > np.mean(jets.jet_rho_chs) > 0
    added = np.mean(jets.jet_pt - jets.jet_nopu_pt)
    assert abs(np.mean(jets.jet_pt - jets.jet_rho * np.pi * 0.8**2 - jets.jet_nopu_pt)) < 0.3 * added
    assert np.all(jets.jet_softkiller_pt > 0)
    for layer in ("ecal", "hcal"):
        hs, pu = jets[f"cell_{layer}_energy_hs"], jets[f"cell_{layer}_energy_pu"]
        assert ak.all(
            abs(hs + pu - jets[f"cell_{layer}_energy"]) < 1e-3 * jets[f"cell_{layer}_energy"] + 1e-4
        )
        assert ak.all(pu >= 0)


def test_qcd_pu_leaves_out_the_top_jets_and_samples_refuse_another_pile_up(tmp_path, pileup_samples):
    cfg = compose_generate("qcd_pu", tmp_path)
    assert list(cfg.processes) == ["qcd"] and cfg.classes == ("QCD",)
    assert cfg.pileup_config().mu == 60
    with pytest.raises(ConfigError, match=r"generate\.pileup"):
        generate_sample(pileup_sample(pileup_samples[0], 1, "generate.pileup.mu=40"), progress_bar=False)
    with pytest.raises(ConfigError, match=r"every process is null"):
        compose_generate("qcd_pu", tmp_path, "generate.processes.qcd=null")


def ring_of_objects(n_per_sector, pt, radius=0.8, region=1.6, jet_eta=0.0, seed=0):
    """``n_per_sector`` massless objects of ``pt`` (GeV) in every sector of the ring around a jet
    at (jet_eta, 0); returns the object columns."""
    from hepnn.sim.pileup_density import SECTORS

    rng = np.random.default_rng(seed)
    angle = np.repeat((np.arange(SECTORS) + 0.5) / SECTORS * 2 * np.pi - np.pi, n_per_sector)
    angle = angle + rng.uniform(-0.4, 0.4, len(angle)) * np.pi / SECTORS
    r = rng.uniform(radius + 0.05, region - 0.05, len(angle))
    n = len(angle)
    return (
        np.zeros(n, int),
        jet_eta + r * np.cos(angle),
        r * np.sin(angle),
        np.full(n, float(pt)),
        np.zeros(n),
    )


def estimates(objects, jet_eta=0.0, abs_eta_max=2.5):
    from hepnn.sim.pileup_density import ring_estimates

    event, eta, phi, pt, mass = objects
    return ring_estimates(
        event,
        eta,
        phi,
        pt,
        mass,
        np.array([0]),
        np.array([jet_eta]),
        np.array([0.0]),
        1,
        0.8,
        1.6,
        abs_eta_max,
    )


def test_ring_estimates_measure_a_uniform_density_and_ignore_a_hard_sector():
    from hepnn.sim.pileup_density import SECTORS

    area = np.pi * (1.6**2 - 0.8**2) / SECTORS
    objects = ring_of_objects(5, 2.0)
    got = estimates(objects)
    assert got["rho"][0] == pytest.approx(5 * 2.0 / area)
    assert got["softkiller_pt"][0] == pytest.approx(2.0)
    assert got["rho_m"][0] == pytest.approx(0.0)
    # one hard object in one sector and particles inside the jet change nothing
    event, eta, phi, pt, mass = objects
    hard = (
        np.append(event, [0, 0]),
        np.append(eta, [1.2, 0.1]),
        np.append(phi, [0.0, 0.1]),
        np.append(pt, [300.0, 500.0]),
        np.append(mass, [0, 0]),
    )
    assert estimates(hard)["rho"][0] == pytest.approx(got["rho"][0])
    assert estimates(hard)["softkiller_pt"][0] == pytest.approx(2.0)
    # the SoftKiller cut is the median of the sectors' hardest objects
    stepped = [ring_of_objects(1, 0.0)[i] for i in range(5)]
    stepped[3] = np.arange(1.0, SECTORS + 1)
    assert estimates(tuple(stepped))["softkiller_pt"][0] == pytest.approx(12.5)
    # massive objects: rho_m sums sqrt(pT^2 + m^2) - pT
    event, eta, phi, pt, mass = ring_of_objects(5, 2.0)
    assert estimates((event, eta, phi, pt, np.full(len(pt), 1.0)))["rho_m"][0] == pytest.approx(
        5 * (np.sqrt(5.0) - 2.0) / area
    )


def test_ring_estimates_leave_out_sectors_beyond_the_acceptance_and_empty_jets():
    # objects only where |eta| < 2.5 around a jet at eta = 2: the sectors beyond are not zeros
    event, eta, phi, pt, mass = ring_of_objects(5, 2.0, jet_eta=2.0)
    inside = np.abs(eta) < 2.5
    near_edge = estimates((event[inside], eta[inside], phi[inside], pt[inside], mass[inside]), jet_eta=2.0)
    central = estimates(ring_of_objects(5, 2.0))
    assert near_edge["rho"][0] == pytest.approx(central["rho"][0], rel=0.01)
    empty = estimates((np.zeros(0, int), np.zeros(0), np.zeros(0), np.zeros(0), np.zeros(0)))
    assert empty["rho"][0] == 0 and empty["softkiller_pt"][0] == 0
