"""Substructure observables on hand-made jets: prongs, symmetries, and the definitions by brute force."""

import itertools

import awkward as ak
import numpy as np
import pytest

from hepnn.sim.substructure import BRANCHES, observables


def constituents(jets: list[list[tuple[float, float, float, float]]]) -> dict[str, ak.Array]:
    """Jagged px, py, pz, E (GeV) of jets given as lists of (pT, rapidity, phi, mass) particles."""
    columns = {k: [] for k in ("px", "py", "pz", "energy")}
    for jet in jets:
        pt, y, phi, m = (np.array(v, dtype=np.float64) for v in zip(*jet, strict=True))
        mt = np.hypot(pt, m)
        columns["px"].append(pt * np.cos(phi))
        columns["py"].append(pt * np.sin(phi))
        columns["pz"].append(mt * np.sinh(y))
        columns["energy"].append(mt * np.cosh(y))
    return {k: ak.Array([list(v) for v in values]) for k, values in columns.items()}


def prongs(centres, rng, per_prong=8, spread=1e-4, mass=0.0):
    """Particles in narrow prongs around (pT, y, phi) centres, the prong pT shared equally."""
    return [
        (pt / per_prong, y + rng.normal(0, spread), phi + rng.normal(0, spread), mass)
        for pt, y, phi in centres
        for _ in range(per_prong)
    ]


THREE = [(300.0, 0.1, 0.2), (200.0, -0.2, -0.1), (100.0, 0.3, -0.3)]
TWO = [(350.0, 0.1, 0.2), (250.0, -0.2, -0.15)]
ONE = [(600.0, 0.5, 1.0)]


def delta_r(a, b):
    dphi = (a[2] - b[2] + np.pi) % (2 * np.pi) - np.pi
    return np.hypot(a[1] - b[1], dphi)


def test_prongs_set_the_n_subjettiness_that_vanishes():
    rng = np.random.default_rng(1)
    out = observables(constituents([prongs(THREE, rng), prongs(TWO, rng), prongs(ONE, rng)]), 0.8)
    three, two, one = (dict(zip(out, values, strict=True)) for values in zip(*out.values(), strict=True))
    # three hard prongs: tau3 ~ 0 and tau32 ~ 0, while one or two axes leave a prong far away
    assert three["jet_tau3"] < 1e-3 and three["jet_tau32"] < 1e-2
    assert three["jet_tau2"] > 0.1 and three["jet_tau1"] > 0.2
    # two prongs: tau2 ~ 0 and tau21 ~ 0
    assert two["jet_tau2"] < 1e-3 and two["jet_tau21"] < 1e-2 and two["jet_tau1"] > 0.1
    # one prong: tau1 ~ 0
    assert one["jet_tau1"] < 1e-3
    # a single narrow prong has no two-prong structure either: e2 and hence C2, D2 ~ 0 in the
    # three-prong jet's units, and C2 of three prongs exceeds that of two
    assert one["jet_c2"] < 1e-2 and three["jet_c2"] > two["jet_c2"]
    assert two["jet_d2"] < three["jet_d2"]


def test_the_observables_follow_their_definitions_on_random_jets():
    rng = np.random.default_rng(7)
    jets = []
    for n in (5, 9, 14):
        jets.append(
            [(rng.exponential(30) + 1, rng.normal(0, 0.25), rng.normal(0, 0.25), 0.14) for _ in range(n)]
        )
    out = observables(constituents(jets), 0.8)
    for k, jet in enumerate(jets):
        pt = np.array([p[0] for p in jet])
        z = pt / pt.sum()
        pairs = itertools.combinations(range(len(jet)), 2)
        e2 = sum(z[i] * z[j] * delta_r(jet[i], jet[j]) for i, j in pairs)
        e3 = sum(
            z[i] * z[j] * z[m] * delta_r(jet[i], jet[j]) * delta_r(jet[i], jet[m]) * delta_r(jet[j], jet[m])
            for i, j, m in itertools.combinations(range(len(jet)), 3)
        )
        assert out["jet_c2"][k] == pytest.approx(e3 / e2**2, rel=1e-4)
        assert out["jet_d2"][k] == pytest.approx(e3 / e2**3, rel=1e-4)
        assert out["jet_ptd"][k] == pytest.approx(np.sqrt(np.sum(pt**2)) / pt.sum(), rel=1e-5)
        # tau1's single exclusive kT axis is the whole jet: tau1 = girth / R0
        assert out["jet_tau1"][k] == pytest.approx(out["jet_girth"][k] / 0.8, rel=1e-4)
        assert out["jet_tau3"][k] > 0


def test_girth_and_ptd_of_a_symmetric_jet():
    # four equal particles at Delta R = 0.2 around the axis (massless, so rapidity = eta)
    jet = [(50.0, 0.2 * np.cos(a), 1.0 + 0.2 * np.sin(a), 0.0) for a in np.arange(4) * np.pi / 2]
    out = observables(constituents([jet]), 0.4)
    assert out["jet_girth"][0] == pytest.approx(0.2, rel=1e-3)
    assert out["jet_ptd"][0] == pytest.approx(0.5, rel=1e-6)  # 1/sqrt(4) for equal pT


def test_invariant_under_azimuthal_rotations_and_longitudinal_boosts_across_the_phi_wrap():
    rng = np.random.default_rng(3)
    jet = prongs(THREE, rng, per_prong=5, spread=0.03, mass=0.14)
    moved = [(pt, y + 1.3, (phi + np.pi - 0.05 + np.pi) % (2 * np.pi) - np.pi, m) for pt, y, phi, m in jet]
    assert max(p[2] for p in moved) > 2.9 and min(p[2] for p in moved) < -2.9  # the jet straddles phi = pi
    a = observables(constituents([jet]), 0.8)
    b = observables(constituents([moved]), 0.8)
    for name in BRANCHES:
        assert b[name][0] == pytest.approx(a[name][0], rel=2e-4, abs=1e-6), name


def test_jets_with_fewer_constituents_than_axes_have_zero_tau():
    out = observables(
        constituents([[(100.0, 0.0, 0.0, 0.0), (50.0, 0.3, 0.1, 0.0)], [(80.0, 0.1, 0.1, 0.0)]]), 0.8
    )
    assert out["jet_tau2"][0] == out["jet_tau3"][0] == 0 and out["jet_tau1"][0] > 0
    assert out["jet_tau32"][0] == 0  # 0 / 0 is reported as 0
    assert out["jet_tau1"][1] == out["jet_c2"][1] == out["jet_girth"][1] == 0
    assert out["jet_ptd"][1] == 1.0
    assert all(values.dtype == np.float32 and len(values) == 2 for values in out.values())
