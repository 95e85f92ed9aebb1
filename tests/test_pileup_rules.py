"""The rule-based pile-up corrections on hand-made jets."""

import awkward as ak
import numpy as np
import pytest

from hepnn.pileup import rules


def massless(pt, y, phi):
    pt, y, phi = (np.asarray(v, dtype=float) for v in (pt, y, phi))
    return pt * np.cos(phi), pt * np.sin(phi), pt * np.sinh(y), pt * np.cosh(y)


def jets_of(constituents, vertex=None, **scalars):
    """One jet per list of (px, py, pz, E) arrays; ``vertex`` flags per constituent."""
    columns = {f"part_{k}": [] for k in ("px", "py", "pz", "energy", "pileup_vertex")}
    for i, (px, py, pz, e) in enumerate(constituents):
        for key, values in zip(("px", "py", "pz", "energy"), (px, py, pz, e), strict=True):
            columns[f"part_{key}"].append(np.atleast_1d(values).tolist())
        flags = np.zeros(len(np.atleast_1d(px))) if vertex is None else vertex[i]
        columns["part_pileup_vertex"].append(list(flags))
    columns.update({k: np.asarray(v, dtype=float) for k, v in scalars.items()})
    return ak.Array(columns)


def uniform_disc(rho, radius, y0, phi0, step=0.01):
    """Massless particles on a grid over a disc in (y, phi), pT density ``rho`` (GeV per unit area)."""
    grid = np.arange(-radius + step / 2, radius, step)
    dy, dphi = (g.ravel() for g in np.meshgrid(grid, grid, indexing="ij"))
    inside = dy**2 + dphi**2 < radius**2
    return massless(np.full(inside.sum(), rho * step**2), y0 + dy[inside], phi0 + dphi[inside])


def joined(*parts):
    return tuple(np.concatenate([np.atleast_1d(p[k]) for p in parts]) for k in range(4))


def test_chs_removes_exactly_the_tracks_of_pile_up_vertices():
    hard, pileup = massless([300.0, 200.0], [0.1, -0.1], [0.0, 0.1]), massless([20.0], [0.3], [0.2])
    jets = jets_of([joined(hard, pileup)], vertex=[[0, 0, 1]])
    pt, mass = rules.chs(jets)
    want_pt, want_mass = rules.pt_mass(*(np.sum(c) for c in hard))
    assert pt[0] == pytest.approx(want_pt) and mass[0] == pytest.approx(want_mass)
    assert rules.uncorrected(jets)[0][0] > pt[0]


def test_area_subtraction_removes_uniform_pile_up_from_pt_and_mass():
    radius, rho = 0.8, 40.0
    core = massless([500.0], [0.3], [1.0])  # a massless hard core: all mass comes from pile-up
    jets = jets_of([joined(core, uniform_disc(rho, radius, 0.3, 1.0))], jet_rho=[rho], jet_rho_m=[0.0])
    _, raw_mass = rules.uncorrected(jets)
    assert raw_mass[0] > 50  # pile-up spread over the disc makes the jet heavy
    pt, mass = rules.area_subtracted(jets, radius)
    assert pt[0] == pytest.approx(500.0, rel=2e-3)
    assert mass[0] < 0.05 * raw_mass[0]
    # the area four-vector: about pi R^2, with a mass
    transverse, longitudinal = rules.disc_area_factors(radius)
    assert transverse == pytest.approx(np.pi * radius**2, rel=0.1) and longitudinal > transverse


def test_area_subtraction_of_more_than_the_jet_leaves_nothing():
    jets = jets_of([massless([30.0], [0.0], [0.0])], jet_rho=[100.0], jet_rho_m=[0.0])
    pt, mass = rules.area_subtracted(jets, 0.8)
    assert pt[0] == 0 and mass[0] == 0


def test_softkiller_drops_the_constituents_below_the_cut_and_chs_the_pile_up_tracks():
    parts = massless([0.5, 1.0, 3.0, 100.0], [0.0, 0.1, 0.2, 0.0], [0.0, 0.1, -0.1, 0.0])
    jets = jets_of([parts], vertex=[[0, 0, 1, 0]], jet_softkiller_pt=[2.0], jet_softkiller_pt_chs=[0.8])
    pt, _ = rules.softkiller(jets)
    assert pt[0] == pytest.approx(np.hypot(np.sum(parts[0][2:]), np.sum(parts[1][2:])))
    pt, _ = rules.softkiller(jets, with_chs=True)
    assert pt[0] == pytest.approx(np.hypot(parts[0][1] + parts[0][3], parts[1][1] + parts[1][3]))


def test_corrected_dispatches_and_names_an_unknown_method():
    jets = jets_of([massless([100.0], [0.0], [0.0])], vertex=[[0]], jet_rho=[0.0], jet_rho_m=[0.0])
    jets = ak.with_field(jets, np.zeros(1), "jet_softkiller_pt")
    for method in ("none", "chs", "area", "softkiller"):
        assert rules.corrected(jets, method, 0.8)[0][0] == pytest.approx(100.0)
    with pytest.raises(ValueError, match=r"unknown pile-up correction 'puppi'; known: none, chs"):
        rules.corrected(jets, "puppi", 0.8)
