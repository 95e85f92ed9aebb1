"""The parametric detector on hand-made particles."""

import numpy as np
import pytest

from hepnn.sim import detector
from hepnn.sim.detector import CalorimeterLayer, DetectorConfig


def particle(pt, eta, phi, mass=0.0):
    px, py, pz = pt * np.cos(phi), pt * np.sin(phi), pt * np.sinh(eta)
    return px, py, pz, np.sqrt(px**2 + py**2 + pz**2 + mass**2)


def run(particles, ids, charges, cfg=None, seed=0, counts=None):
    columns = np.array(particles, dtype=float).T
    counts = np.array(counts if counts is not None else [len(ids)])
    return detector.simulate(
        *columns,
        np.array(ids),
        np.array(charges, float),
        counts,
        np.random.default_rng(seed),
        cfg or DetectorConfig(),
    )


PERFECT = DetectorConfig(
    track_efficiency_low_pt=1.0,
    track_efficiency_central=1.0,
    track_efficiency_forward=1.0,
    track_resolution_constant=0.0,
    track_resolution_linear=0.0,
    ecal=CalorimeterLayer(0.025, 0.025, 0.0, 0.0, 0.5),
    hcal=CalorimeterLayer(0.1, 0.1, 0.0, 0.0, 1.0),
)


def test_neutrinos_vanish_and_muons_are_tracks_only():
    out = run([particle(50, 0.1, 0.2), particle(30, 0.3, -1.0, 0.1057)], [12, 13], [0, -1], PERFECT)
    assert out.counts.tolist() == [1]
    assert out.pid.tolist() == [13] and out.kind.tolist() == [detector.KIND_MUON]
    assert out.charge.tolist() == [-1]


def test_tracks_keep_direction_and_smear_pt():
    cfg = DetectorConfig(track_efficiency_central=1.0)
    out = run([particle(100, 0.5, 1.0, 0.1396)] * 2000, [211] * 2000, [1] * 2000, cfg)
    pt = np.hypot(out.px, out.py)
    assert np.allclose(np.arctan2(out.py, out.px), 1.0)
    assert np.allclose(detector.pseudorapidity(out.px, out.py, out.pz), 0.5)
    expected = np.hypot(0.01, 1.5e-4 * 100)  # 1.8 % at 100 GeV
    assert np.std(pt / 100) == pytest.approx(expected, rel=0.1)
    assert set(out.pid.tolist()) == {211}


def test_calorimeter_merges_deposits_per_cell_and_conserves_energy():
    # two photons in the same ECAL cell and a neutron: one ECAL cell, one HCAL cell
    parts = [particle(20, 0.0101, 0.0101), particle(10, 0.0102, 0.0105), particle(40, 1.0, 2.0, 0.9396)]
    out = run(parts, [22, 22, 2112], [0, 0, 0], PERFECT)
    assert sorted(out.pid.tolist()) == [22, 130]
    ecal = out.energy[out.pid == 22][0]
    assert ecal == pytest.approx(parts[0][3] + parts[1][3])
    hcal = out.energy[out.pid == 130][0]
    assert hcal == pytest.approx(parts[2][3])
    # the cell is massless and points at its centre
    mass2 = out.energy**2 - out.px**2 - out.py**2 - out.pz**2
    assert np.allclose(mass2, 0, atol=1e-6)


def test_thresholds_untracked_hadrons_and_low_pt_charged():
    cfg = DetectorConfig(
        track_efficiency_central=0.0, track_efficiency_low_pt=0.0, track_efficiency_forward=0.0
    )
    # an untracked pion goes to the HCAL; a 0.3 GeV pion curls up; a 0.4 GeV photon is below threshold
    out = run(
        [particle(20, 0.2, 0.0, 0.1396), particle(0.3, 0.0, 1.0, 0.1396), particle(0.4, -0.5, 2.0)],
        [211, -211, 22],
        [1, -1, 0],
        cfg,
    )
    assert out.pid.tolist() == [130]


def test_objects_stay_with_their_event_and_seeds_reproduce():
    parts = [particle(20, 0.1, 0.1), particle(30, 0.1, 0.1), particle(15, -1.0, 3.0, 0.1396)]
    a = run(parts, [22, 22, 211], [0, 0, 1], counts=[1, 2], seed=4)
    b = run(parts, [22, 22, 211], [0, 0, 1], counts=[1, 2], seed=4)
    assert a.counts.tolist() == [1, 2]
    assert np.array_equal(a.energy, b.energy)
    # the first event's photon is not merged with the second event's one in the same cell
    assert a.energy[0] == pytest.approx(20 * np.cosh(0.1), rel=0.1)


def test_calorimeter_cells_see_every_particle_reaching_the_calorimeter():
    # a tracked pion and a neutron share an HCAL cell; a tracked electron and a photon hit the ECAL;
    # a muon, a neutrino, a 0.3 GeV pion (curls up) and a photon at eta 3.5 leave no cell
    parts = [
        particle(20, 0.51, 0.51, 0.1396),
        particle(15, 0.52, 0.52, 0.9396),
        particle(30, -1.0, 2.0, 0.000511),
        particle(10, 1.5, -2.0),
        particle(40, 0.0, 1.0, 0.1057),
        particle(50, 0.0, -1.0),
        particle(0.3, -0.5, 0.0, 0.1396),
        particle(25, 3.5, 0.0),
    ]
    out = run(parts, [211, 2112, 11, 22, 13, 12, -211, 22], [1, 0, -1, 0, -1, 0, -1, 0], PERFECT)
    assert out.hcal.counts.tolist() == [1] and out.ecal.counts.tolist() == [2]
    assert out.hcal.energy[0] == pytest.approx(parts[0][3] + parts[1][3])
    assert sorted(out.ecal.energy) == pytest.approx(sorted([parts[2][3], parts[3][3]]))
    # cell centres on the grids (eta from -3 in steps of 0.025 / 0.1, phi from -pi in 2 pi / n)
    assert out.hcal.eta[0] == pytest.approx(0.55) and out.hcal.phi[0] == pytest.approx(
        -np.pi + 36.5 * 2 * np.pi / 63
    )
    # particle flow is unchanged: the tracked pion is a track, only the neutron is in an HCAL object
    assert out.energy[out.kind == detector.KIND_NEUTRAL_HADRON].tolist() == pytest.approx([parts[1][3]])
    assert out.energy[out.kind == detector.KIND_PHOTON].tolist() == pytest.approx([parts[3][3]])
    assert sorted(out.kind[out.charge != 0].tolist()) == [
        detector.KIND_CHARGED_HADRON,
        detector.KIND_ELECTRON,
        detector.KIND_MUON,
    ]


def test_measured_cells_share_smearing_and_threshold_with_particle_flow_cells():
    # nothing is tracked: the particle-flow cells are exactly the measured cells
    cfg = DetectorConfig(
        track_efficiency_central=0.0, track_efficiency_low_pt=0.0, track_efficiency_forward=0.0
    )
    rng = np.random.default_rng(3)
    n = 400
    parts = [
        particle(pt, eta, phi, 0.1396)
        for pt, eta, phi in zip(
            rng.uniform(0.6, 30, n), rng.uniform(-2, 2, n), rng.uniform(-3, 3, n), strict=True
        )
    ]
    ids = rng.choice([211, 22, 2112, 11], n)
    charges = np.where(ids == 211, 1, np.where(ids == 11, -1, 0))
    out = run(parts, ids, charges, cfg, seed=5, counts=[150, 250])
    assert out.ecal.counts.sum() + out.hcal.counts.sum() == len(out.energy)
    for cells, kind in ((out.ecal, detector.KIND_PHOTON), (out.hcal, detector.KIND_NEUTRAL_HADRON)):
        pf = out.energy[out.kind == kind]
        assert np.sort(cells.energy) == pytest.approx(np.sort(pf))
        assert np.all(cells.energy > (0.5 if kind == detector.KIND_PHOTON else 1.0))
    counts = np.bincount(np.repeat([0, 1], out.counts), minlength=2)
    assert (out.ecal.counts + out.hcal.counts).tolist() == counts.tolist()
    # smeared: the summed cell energy is not the summed deposited energy
    assert not np.isclose(out.ecal.energy.sum() + out.hcal.energy.sum(), sum(p[3] for p in parts))
