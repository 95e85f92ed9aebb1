"""Jet images: pixel placement, intensity sums, preprocessing geometry, per-jet independence,
augmentation (hepnn.data.images; numpy only)."""

from __future__ import annotations

import numpy as np
import pytest

from hepnn.data.images import ImageGrid, jet_frame, normalize_images, pixelize, random_flips

GRID = ImageGrid(n_eta=40, n_phi=40, eta_range=(-0.8, 0.8), phi_range=(-0.8, 0.8))


def random_jets(rng, n_jets, mean_count=30, n_channels=3, spread=0.25, prong=0.25, empty=()):
    """Flat elements of random two-prong-ish jets (radians, GeV) and their offsets."""
    counts = rng.poisson(mean_count, n_jets)
    counts[list(empty)] = 0
    n = counts.sum()
    offsets = np.concatenate([[0], np.cumsum(counts)])
    # a second prong per jet, displaced, so that the jets have a clear axis
    jet = np.repeat(np.arange(n_jets), counts)
    in_prong = rng.random(n) < 0.3
    shift = rng.normal(0, prong, (n_jets, 2))
    eta = rng.normal(0, spread, n) * rng.uniform(0.3, 1.5, n_jets)[jet] + in_prong * shift[jet, 0]
    phi = rng.normal(0, spread, n) * rng.uniform(0.3, 1.5, n_jets)[jet] + in_prong * shift[jet, 1]
    intensity = rng.exponential(10.0, n)
    channel = rng.integers(0, n_channels, n)
    return eta, phi, intensity, channel, offsets


def moments(eta, phi, w):
    """Total, centroid and second-moment tensor (about the origin) of one jet."""
    total = w.sum()
    centroid = np.array([np.sum(w * eta), np.sum(w * phi)]) / total
    tensor = np.array(
        [[np.sum(w * eta * eta), np.sum(w * eta * phi)], [np.sum(w * eta * phi), np.sum(w * phi * phi)]]
    )
    return total, centroid, tensor


def test_a_single_element_lands_in_its_pixel_and_channel():
    np.testing.assert_allclose(GRID.eta_edges[[0, 1, -1]], [-0.8, -0.76, 0.8])
    for dtype in (np.float64, np.float32):  # float32 coordinates meet the edges rounded to float32
        edges = GRID.eta_edges.astype(dtype)
        low, high = dtype(-0.8), dtype(0.8)
        below_high = np.nextafter(high, dtype(0))
        below_low = np.nextafter(low, dtype(-1))
        cases = [  # (eta, phi, channel, expected (i, j) or None if dropped)
            (0.0, 0.0, 0, (20, 20)),
            (-0.01, 0.01, 1, (19, 20)),
            (low, low, 2, (0, 0)),  # the low edges belong to the grid
            (below_high, below_high, 1, (39, 39)),  # just inside the high edges
            (low, below_high, 0, (0, 39)),
            (edges[7], edges[13], 2, (7, 13)),  # an inner edge belongs to the pixel above it
            (np.nextafter(edges[7], low), edges[13], 2, (6, 13)),
            (0.5 * (edges[3] + edges[4]), 0.5 * (edges[30] + edges[31]), 1, (3, 30)),
            (high, 0.0, 0, None),  # the high edges do not
            (0.0, high, 0, None),
            (below_low, 0.0, 0, None),
            (0.0, -0.9, 0, None),
            (1.5, 1.5, 2, None),
            (np.nan, 0.0, 1, None),
        ]
        for eta, phi, channel, pixel in cases:
            args = [np.array([x], dtype) for x in (eta, phi, 7.5)]
            image = pixelize(*args, np.array([channel]), np.array([0, 1]), GRID, 3)
            assert image.shape == (1, 3, 40, 40) and image.dtype == np.float32
            if pixel is None:
                assert not image.any(), (dtype, eta, phi)
            else:
                assert image[0, channel, pixel[0], pixel[1]] == 7.5, (dtype, eta, phi, pixel)
                assert image.sum() == 7.5


def test_elements_on_and_next_to_every_pixel_edge():
    """Every edge belongs to the pixel above it, the float just below to the pixel below."""
    for dtype in (np.float64, np.float32):
        for grid in (
            GRID,
            ImageGrid(37, 33, (-0.7, 0.9), (-0.45, 0.55)),
            ImageGrid(25, 1, (-1.0, 1.0), (-1, 1)),
        ):
            edges = grid.eta_edges.astype(dtype)
            eta = np.concatenate([edges, np.nextafter(edges, dtype(-1)), np.nextafter(edges, dtype(1))])
            phi = np.zeros_like(eta)
            n = len(eta)
            images = pixelize(eta, phi, np.ones(n, dtype), np.zeros(n, np.int64), np.arange(n + 1), grid, 1)
            expected = np.searchsorted(edges, eta, side="right") - 1  # the pixel by definition
            inside = (expected >= 0) & (expected < grid.n_eta)
            rows, cols = np.nonzero(images[:, 0].sum(axis=2))
            np.testing.assert_array_equal(rows, np.flatnonzero(inside))
            np.testing.assert_array_equal(cols, expected[inside])


def test_pixelize_matches_a_histogram_and_rejects_bad_channels():
    rng = np.random.default_rng(1)
    eta, phi, intensity, channel, offsets = random_jets(rng, 20, spread=0.5)
    grid = ImageGrid(16, 12, (-0.8, 0.8), (-0.6, 0.6))
    images = pixelize(eta, phi, intensity, channel, offsets, grid, 3)
    for k in range(20):
        s = slice(offsets[k], offsets[k + 1])
        for c in range(3):
            mine = channel[s] == c
            expected, _, _ = np.histogram2d(
                eta[s][mine], phi[s][mine], bins=[grid.eta_edges, grid.phi_edges], weights=intensity[s][mine]
            )
            np.testing.assert_allclose(images[k, c], expected, rtol=1e-5, atol=1e-4)
    with pytest.raises(ValueError, match="channel"):
        pixelize(eta, phi, intensity, channel, offsets, grid, 2)
    with pytest.raises(ValueError, match="offsets"):
        pixelize(eta, phi, intensity, channel, offsets[:-1], grid, 3)


def test_image_sum_is_the_jet_intensity_and_normalised_images_sum_to_one():
    rng = np.random.default_rng(2)
    eta, phi, intensity, channel, offsets = random_jets(rng, 50, spread=0.08, prong=0.1, empty=[3, 17])
    assert np.all(np.abs(eta) < 0.8) and np.all(np.abs(phi) < 0.8)  # everything inside the grid
    new_eta, new_phi = jet_frame(eta, phi, intensity, offsets)
    assert np.all(np.abs(new_eta) < 0.8) and np.all(np.abs(new_phi) < 0.8)
    jet_pt = np.bincount(np.repeat(np.arange(50), np.diff(offsets)), weights=intensity, minlength=50)
    for coords in ((eta, phi), (new_eta, new_phi)):  # preprocessing moves elements, not intensity
        images = pixelize(*coords, intensity, channel, offsets, GRID, 3)
        np.testing.assert_allclose(images.sum(axis=(1, 2, 3), dtype=np.float64), jet_pt, rtol=1e-5)
        assert normalize_images(images) is images
        sums = images.sum(axis=(1, 2, 3), dtype=np.float64)
        np.testing.assert_allclose(sums[jet_pt > 0], 1.0, rtol=1e-5)
        assert not images[[3, 17]].any()  # empty jets stay empty, not NaN
    zeros = np.zeros((4, 3, 5, 5), np.float32)
    assert not normalize_images(zeros).any()


def test_centroid_translation_puts_the_centroid_at_zero():
    eta = np.array([0.1, 0.3, -0.2, 0.25])
    phi = np.array([0.2, -0.1, 0.05, 0.4])
    w = np.array([10.0, 30.0, 5.0, 15.0])
    new_eta, new_phi = jet_frame(eta, phi, w, np.array([0, 4]), center="centroid", rotate=False, flip=False)
    _, centroid, _ = moments(new_eta, new_phi, w)
    np.testing.assert_allclose(centroid, 0.0, atol=1e-12)
    expected = np.array([np.sum(w * eta), np.sum(w * phi)]) / w.sum()
    np.testing.assert_allclose(new_eta, eta - expected[0], atol=1e-12)  # a pure translation
    np.testing.assert_allclose(new_phi, phi - expected[1], atol=1e-12)
    # for random jets too (float32 in, float32 out)
    rng = np.random.default_rng(3)
    eta, phi, intensity, _, offsets = random_jets(rng, 40)
    new_eta, new_phi = jet_frame(
        eta.astype(np.float32), phi.astype(np.float32), intensity, offsets, rotate=False, flip=False
    )
    assert new_eta.dtype == np.float32 and new_phi.dtype == np.float32
    for k in range(40):
        s = slice(offsets[k], offsets[k + 1])
        _, centroid, _ = moments(new_eta[s].astype(float), new_phi[s].astype(float), intensity[s])
        np.testing.assert_allclose(centroid, 0.0, atol=1e-6)


def test_leading_subjet_centring_puts_the_harder_prong_at_zero():
    # hard prong (80 GeV) around (0.3, -0.2), soft prong (60 GeV) around (-0.3, 0.25), far apart
    hard = np.array([[0.30, -0.20, 50.0], [0.35, -0.15, 20.0], [0.25, -0.25, 10.0]])
    soft = np.array([[-0.30, 0.25, 30.0], [-0.35, 0.20, 15.0], [-0.25, 0.30, 15.0]])
    elements = np.concatenate([soft, hard])  # listed first, the soft prong must not be taken
    eta, phi, w = elements.T
    new_eta, new_phi = jet_frame(
        eta, phi, w, np.array([0, 6]), center="leading_subjet", rotate=False, flip=False, subjet_radius=0.2
    )
    expected = np.average(hard[:, :2], axis=0, weights=hard[:, 2])
    np.testing.assert_allclose(new_eta, eta - expected[0], atol=1e-12)
    np.testing.assert_allclose(new_phi, phi - expected[1], atol=1e-12)
    _, centroid, _ = moments(new_eta[3:], new_phi[3:], hard[:, 2])
    np.testing.assert_allclose(centroid, 0.0, atol=1e-12)
    # two equally intense leading elements: the first one's prong is taken, in a batch too
    tied = np.concatenate([hard, soft * [1, 1, 50 / 30]])
    eta, phi, w = np.concatenate([soft, tied]).T
    new_eta, new_phi = jet_frame(
        eta, phi, w, np.array([0, 3, 9]), center="leading_subjet", rotate=False, flip=False
    )
    np.testing.assert_allclose(new_eta[3:], eta[3:] - expected[0], atol=1e-12)
    np.testing.assert_allclose(new_phi[3:], phi[3:] - expected[1], atol=1e-12)


def test_rotation_puts_a_two_prong_jet_on_the_phi_axis():
    for angle in (0.0, 0.4, 1.2, np.pi / 2, 2.5, -0.7):
        direction = np.array([np.cos(angle), np.sin(angle)])
        points = np.array([0.3 * direction, -0.2 * direction]) + np.array([0.05, -0.1])
        w = np.array([20.0, 30.0])  # centroid on the line through both: (0.05, -0.1)
        for center in ("centroid", "leading_subjet"):
            new_eta, new_phi = jet_frame(
                points[:, 0], points[:, 1], w, np.array([0, 2]), center=center, flip=False
            )
            np.testing.assert_allclose(new_eta, 0.0, atol=1e-12)
            # distances to the centre are kept: the centroid, or the harder element (30 GeV)
            distances = [0.3, 0.2] if center == "centroid" else [0.5, 0.0]
            np.testing.assert_allclose(np.abs(new_phi), distances, atol=1e-12)
            assert np.isclose(abs(new_phi[0] - new_phi[1]), 0.5)


def test_principal_axis_is_along_phi_and_flips_put_the_intensity_at_positive_eta_and_phi():
    rng = np.random.default_rng(4)
    eta, phi, intensity, _, offsets = random_jets(rng, 200)
    for center in ("centroid", "leading_subjet", "none"):
        new_eta, new_phi = jet_frame(eta, phi, intensity, offsets, center=center)
        for k in range(200):
            s = slice(offsets[k], offsets[k + 1])
            x, y, w = new_eta[s], new_phi[s], intensity[s]
            # second moments about the centre, which the rotation keeps at the origin
            _, _, tensor = moments(x, y, w)
            _, vectors = np.linalg.eigh(tensor)
            axis = vectors[:, 1]  # the largest eigenvalue's
            assert abs(axis[1]) > 1 - 1e-9 and abs(tensor[0, 1]) < 1e-9 * np.trace(tensor), (center, k)
            assert tensor[1, 1] >= tensor[0, 0]
            assert w[x > 0].sum() >= w[x < 0].sum() and w[y > 0].sum() >= w[y < 0].sum(), (center, k)
            # distances to the centre are unchanged by the rotation and the flips
            no_rotation = jet_frame(eta[s], phi[s], w, [0, len(w)], center=center, rotate=False, flip=False)
            np.testing.assert_allclose(np.hypot(x, y), np.hypot(*no_rotation), atol=1e-12)


def test_flips_alone_reflect_each_axis_towards_the_larger_half():
    eta = np.array([-0.3, -0.1, 0.2])
    phi = np.array([0.1, 0.2, -0.4])
    w = np.array([10.0, 10.0, 5.0])  # more at negative eta, more at positive phi
    new_eta, new_phi = jet_frame(eta, phi, w, [0, 3], center="none", rotate=False, flip=True)
    np.testing.assert_array_equal(new_eta, -eta)
    np.testing.assert_array_equal(new_phi, phi)


def test_a_batch_equals_its_jets_one_by_one_including_empty_and_zero_jets():
    rng = np.random.default_rng(5)
    eta, phi, intensity, channel, offsets = random_jets(rng, 30, empty=[0, 7, 8, 29])
    intensity[offsets[12] : offsets[13]] = 0.0  # a jet with zero total intensity
    assert offsets[13] > offsets[12]
    for kwargs in (
        {},
        {"center": "leading_subjet", "subjet_radius": 0.3},
        {"center": "none", "rotate": True, "flip": False},
    ):
        batch_eta, batch_phi = jet_frame(eta, phi, intensity, offsets, **kwargs)
        images = pixelize(batch_eta, batch_phi, intensity, channel, offsets, GRID, 3)
        singles = []
        for k in range(30):
            s = slice(offsets[k], offsets[k + 1])
            one = jet_frame(eta[s], phi[s], intensity[s], np.array([0, s.stop - s.start]), **kwargs)
            np.testing.assert_allclose(batch_eta[s], one[0], atol=1e-12)
            np.testing.assert_allclose(batch_phi[s], one[1], atol=1e-12)
            singles.append(pixelize(*one, intensity[s], channel[s], np.array([0, s.stop - s.start]), GRID, 3))
        np.testing.assert_array_equal(images, np.concatenate(singles))
        # the zero-intensity jet is left where it was
        s = slice(offsets[12], offsets[13])
        np.testing.assert_array_equal(batch_eta[s], eta[s])
        np.testing.assert_array_equal(batch_phi[s], phi[s])
    # inputs are not modified, and no elements at all is fine
    assert jet_frame(eta, phi, intensity, offsets)[0] is not eta
    empty = np.zeros(0)
    new = jet_frame(empty, empty, empty, np.zeros(4, np.int64))
    assert new[0].shape == (0,)
    assert pixelize(empty, empty, empty, np.zeros(0, np.int64), np.zeros(4, np.int64), GRID, 3).shape == (
        3,
        3,
        40,
        40,
    )


def test_random_flips_are_seeded_and_give_one_of_the_four_versions():
    rng = np.random.default_rng(6)
    original = rng.random((400, 2, 6, 5)).astype(np.float32)
    first = random_flips(original.copy(), np.random.default_rng(11))
    again = random_flips(original.copy(), np.random.default_rng(11))
    np.testing.assert_array_equal(first, again)
    seen = set()
    for before, after in zip(original, first, strict=True):
        versions = [before, before[:, ::-1], before[:, :, ::-1], before[:, ::-1, ::-1]]
        matches = [v for v, version in enumerate(versions) if np.array_equal(after, version)]
        assert len(matches) == 1
        seen.add(matches[0])
    assert seen == {0, 1, 2, 3}
    phi_only = random_flips(original.copy(), np.random.default_rng(11), flip_eta=False)
    for before, after in zip(original, phi_only, strict=True):
        assert np.array_equal(after, before) or np.array_equal(after, before[:, :, ::-1])
    assert not np.array_equal(phi_only, original)
    # each image's two coins do not depend on the flags: both flips = eta-only flips + phi-only flips
    eta_only = random_flips(original.copy(), np.random.default_rng(11), flip_phi=False)
    for before, after, e, p in zip(original, first, eta_only, phi_only, strict=True):
        expected = before[:, ::-1] if not np.array_equal(e, before) else before
        expected = expected[:, :, ::-1] if not np.array_equal(p, before) else expected
        np.testing.assert_array_equal(after, expected)
    none = random_flips(original.copy(), np.random.default_rng(11), flip_eta=False, flip_phi=False)
    np.testing.assert_array_equal(none, original)
    images = original.copy()
    assert random_flips(images, np.random.default_rng(1)) is images  # in place


def test_pixelize_into_a_given_array_overwrites_it():
    rng = np.random.default_rng(7)
    eta, phi, intensity, channel, offsets = random_jets(rng, 16)
    expected = pixelize(eta, phi, intensity, channel, offsets, GRID, 3)
    big = np.full((20, 3, 40, 40), 99.0, np.float32)
    out = big[2:18]  # a slice of a larger buffer, as the batch builder passes
    result = pixelize(eta, phi, intensity, channel, offsets, GRID, 3, out=out)
    assert result is out
    np.testing.assert_array_equal(out, expected)
    assert np.all(big[:2] == 99.0) and np.all(big[18:] == 99.0)
    with pytest.raises(ValueError, match="shape"):
        pixelize(eta, phi, intensity, channel, offsets, GRID, 3, out=np.zeros((16, 3, 40, 39), np.float32))
    with pytest.raises(ValueError, match="float32"):
        pixelize(eta, phi, intensity, channel, offsets, GRID, 3, out=np.zeros((16, 3, 40, 40)))
    with pytest.raises(ValueError, match="C-contiguous"):
        pixelize(
            eta,
            phi,
            intensity,
            channel,
            offsets,
            GRID,
            3,
            out=np.zeros((16, 3, 40, 80), np.float32)[..., ::2],
        )
