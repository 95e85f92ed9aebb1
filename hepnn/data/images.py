"""Jet images: the elements of a jet (calorimeter cells, tracks, particles) as pixels over (eta, phi).

A jet image is a small picture of a jet in the (eta, phi) plane around the jet axis: each pixel
holds the summed intensity (transverse momentum or energy, chosen by the user) of the elements
that fall in it, and each detector view (e.g. 0 = ECAL, 1 = HCAL, 2 = tracks) is one channel,
like the colours of a photograph. Convolutional networks then learn from the images.

Conventions
-----------
- Elements arrive as flat numpy arrays (``eta``, ``phi``, ``intensity``, ``channel``) with
  per-jet ``offsets``: jet ``k`` owns elements ``offsets[k]:offsets[k + 1]``, with
  ``offsets[0] == 0`` and ``offsets[-1] == len(eta)``. Jets may have no elements.
- ``eta`` and ``phi`` are relative to the jet axis (``deta``, ``dphi``), in radians, ``dphi``
  already wrapped into [-pi, pi); intensities are in GeV.
- Images are float32 arrays ``(n_jets, n_channels, n_eta, n_phi)``: axis 2 (rows) is eta, axis 3
  (columns) is phi. Pixel ``(i, j)`` covers ``[edge_eta[i], edge_eta[i + 1]) x [edge_phi[j],
  edge_phi[j + 1])`` with ``edge_eta = np.linspace(*eta_range, n_eta + 1)`` (likewise phi), so
  every range is half-open ``[low, high)``; elements outside the grid are dropped. For float32
  coordinates the edges are rounded to float32 before the comparison.

Preprocessing, in this order
----------------------------
1. translate (:func:`jet_frame`, ``center``): the intensity-weighted centroid of the jet, or of
   its leading subjet, goes to (0, 0);
2. rotate (``rotate``): about the centre, so that the principal axis of the intensity-weighted
   second-moment tensor is along phi (vertical in the image);
3. flip (``flip``): reflect eta and phi independently so that the more intense half of the jet is
   at positive eta, and likewise at positive phi;
4. pixelize (:func:`pixelize`): sum the intensities per pixel and channel;
5. normalise (:func:`normalize_images`): divide each image by its total intensity.

Training-time augmentation (:func:`random_flips`) comes after that, on whole images.

Steps 1-3 change the coordinates of the elements, never their intensities: before normalisation
the sum of an image equals the summed intensity of the elements that land inside the grid (the
whole jet when the grid covers it).

The centre and the axis of a jet come from all its elements, every channel together. All
functions are vectorised over jets and elements (no Python loop over either); the geometry is
computed in float64 whatever the input precision.

References: J. Cogan et al., "Jet-Images: Computer Vision Inspired Techniques for Jet Tagging",
JHEP 02 (2015) 118 [arXiv:1407.5675]; L. de Oliveira et al., "Jet-images -- deep learning
edition", JHEP 07 (2016) 069 [arXiv:1511.05190], whose preprocessing (translate, rotate the
principal axis to the vertical, flip) is followed here; G. Kasieczka et al., "Deep-learning top
taggers or the end of QCD?", JHEP 05 (2017) 006 [arXiv:1701.08784]; S. Macaluso and D. Shih,
"Pulling out all the tops with computer vision and deep learning", JHEP 10 (2018) 121
[arXiv:1803.00107].
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["ImageGrid", "jet_frame", "normalize_images", "pixelize", "random_flips"]

CENTERS = ("centroid", "leading_subjet", "none")


@dataclass(frozen=True)
class ImageGrid:
    """Pixels over (eta, phi) relative to the jet axis: n_eta rows x n_phi columns covering
    eta_range x phi_range (radians, [low, high)); pixel (i, j) covers
    eta_range[0] + i*deta_pixel ... and phi_range[0] + j*dphi_pixel ...

    The pixel edges are ``np.linspace(*eta_range, n_eta + 1)`` and ``np.linspace(*phi_range,
    n_phi + 1)``; an element exactly on an edge belongs to the pixel above it.
    """

    n_eta: int = 40
    n_phi: int = 40
    eta_range: tuple[float, float] = (-0.8, 0.8)
    phi_range: tuple[float, float] = (-0.8, 0.8)

    def __post_init__(self):
        for name in ("n_eta", "n_phi"):
            value = getattr(self, name)
            if int(value) != value or value < 1:
                raise ValueError(f"ImageGrid.{name} must be a positive integer, got {value!r}")
        for name in ("eta_range", "phi_range"):
            low, high = getattr(self, name)
            if not (np.isfinite(low) and np.isfinite(high) and low < high):
                raise ValueError(
                    f"ImageGrid.{name} must be finite (low, high) with low < high, got {(low, high)}"
                )

    @property
    def eta_edges(self) -> np.ndarray:
        """The ``n_eta + 1`` pixel edges along eta (radians)."""
        return np.linspace(self.eta_range[0], self.eta_range[1], int(self.n_eta) + 1)

    @property
    def phi_edges(self) -> np.ndarray:
        """The ``n_phi + 1`` pixel edges along phi (radians)."""
        return np.linspace(self.phi_range[0], self.phi_range[1], int(self.n_phi) + 1)

    @property
    def shape(self) -> tuple[int, int]:
        """``(n_eta, n_phi)``."""
        return int(self.n_eta), int(self.n_phi)


def _check_elements(offsets, n_elements: int, **columns) -> np.ndarray:
    """``offsets`` as int64 after checking it against the element columns; raises ValueError."""
    offsets = np.asarray(offsets)
    if offsets.ndim != 1 or len(offsets) < 1 or not np.issubdtype(offsets.dtype, np.integer):
        raise ValueError(
            f"offsets must be a 1-d integer array of length n_jets + 1, got {offsets.dtype} {offsets.shape}"
        )
    offsets = offsets.astype(np.int64, copy=False)
    for name, column in columns.items():
        if np.ndim(column) != 1 or len(column) != n_elements:
            raise ValueError(
                f"{name} must be a 1-d array with one value per element ({n_elements}), "
                f"got shape {np.shape(column)}"
            )
    if offsets[0] != 0 or offsets[-1] != n_elements or np.any(offsets[1:] < offsets[:-1]):
        rising = bool(np.all(offsets[1:] >= offsets[:-1]))
        raise ValueError(
            f"offsets must rise from 0 to the number of elements ({n_elements}); "
            f"got {offsets[0]} ... {offsets[-1]} (non-decreasing: {rising})"
        )
    return offsets


def _jet_of_elements(offsets: np.ndarray) -> np.ndarray:
    """The jet index of every element."""
    n_jets = len(offsets) - 1
    return np.repeat(np.arange(n_jets, dtype=np.int64), np.diff(offsets))


def _leading_index(w: np.ndarray, jet: np.ndarray, offsets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(jets, index)``: for every jet with elements, the index of its most intense element (the
    first one on ties)."""
    counts = np.diff(offsets)
    jets = np.flatnonzero(counts > 0)
    if len(jets) == 0:
        return jets, jets
    # starts of the non-empty jets rise strictly, and the last segment ends at len(w)
    highest = np.zeros(len(offsets) - 1, dtype=w.dtype)
    highest[jets] = np.maximum.reduceat(w, offsets[jets])
    candidates = np.flatnonzero(w == highest[jet])
    owner = jet[candidates]
    first = np.ones(len(candidates), dtype=bool)
    first[1:] = owner[1:] != owner[:-1]
    return owner[first], candidates[first]


def _edges(edges: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Pixel edges in the floating type of the coordinates ``x`` (float64 for integers)."""
    return edges.astype(x.dtype) if x.dtype.kind == "f" else edges


def _pixel_index(x: np.ndarray, edges: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(index, inside)``: the pixel ``i`` with ``edges[i] <= x < edges[i + 1]`` of every
    coordinate (meaningless where not ``inside``; NaN is outside).

    The edges are rounded to the floating type of ``x``, so that a float32 coordinate equal to
    ``float32(low)`` is inside the grid and one equal to ``float32(high)`` is not. The index from
    the uniform pixel width is off by at most one next to an edge; comparing with the edges
    themselves corrects it, which is cheaper than ``np.searchsorted`` on the edges.
    """
    edges = _edges(edges, x)
    n = len(edges) - 1
    inside = (x >= edges[0]) & (x < edges[-1])
    scaled = np.where(inside, x - edges[0], 0) * (n / (edges[-1] - edges[0]))
    index = np.minimum(scaled.astype(np.intp), n - 1)
    index -= x < edges[index]
    index += x >= edges[index + 1]
    return index, inside


def _wrap(dphi: np.ndarray) -> np.ndarray:
    return (dphi + np.pi) % (2 * np.pi) - np.pi


def jet_frame(
    eta,
    phi,
    intensity,
    offsets,
    *,
    center: str = "centroid",
    rotate: bool = True,
    flip: bool = True,
    subjet_radius: float = 0.2,
) -> tuple[np.ndarray, np.ndarray]:
    """The standard jet-image preprocessing as coordinates: returns new (eta, phi) of every element.

    center: "centroid" (translate so the intensity-weighted centroid of the jet is at (0, 0)),
            "leading_subjet" (translate to the intensity-weighted centroid of the elements within
            ``subjet_radius`` (Delta R in the (eta, phi) plane) of the most intense element), or
            "none" (the jet axis stays the centre). The leading-subjet centre is an approximation
            of the leading R=subjet_radius subjet: an anti-kT clustering of the jet's elements
            with that radius builds its hardest subjet, to a good approximation, as a cone around
            the hardest element; no clustering is run here.
    rotate: rotate about the centre so that the principal axis of the intensity-weighted
            second-moment tensor (the eigenvector of its largest eigenvalue; moments taken about
            the centre, which for "centroid" are the central moments) lies along phi, vertical in
            the image, by the smallest such rotation, as in de Oliveira et al., "Jet-images --
            deep learning edition", JHEP 07 (2016) 069 [arXiv:1511.05190]. An axis has no sign:
            ``flip`` decides which end is at positive phi. Jets whose tensor is isotropic (no
            principal axis, e.g. a single element at the centre) are not rotated.
    flip:   reflect so that the side with more intensity is at positive eta (after rotation), and
            likewise positive phi: eta -> -eta when the summed intensity at eta < 0 exceeds that at
            eta > 0, and independently for phi (ties: no flip).

    Jets with no elements or zero (or negative) total intensity are left unchanged; so is the
    translation of a jet whose leading subjet has no positive intensity. Works on all channels
    together: the centre and the axis come from all elements of the jet.

    ``eta``, ``phi``, ``intensity``: flat arrays, one value per element (float32 or float64);
    ``offsets``: ``(n_jets + 1,)`` integers, jet ``k`` owns elements ``offsets[k]:offsets[k+1]``.
    Returns new arrays (the inputs are not modified) of the floating type of ``eta`` and
    ``phi`` (float32 stays float32; the computation is in float64).
    """
    if center not in CENTERS:
        raise ValueError(f"center must be one of {CENTERS}, got {center!r}")
    if not subjet_radius > 0:
        raise ValueError(f"subjet_radius must be positive, got {subjet_radius!r}")
    eta_in, phi_in = np.asarray(eta), np.asarray(phi)
    n = len(eta_in) if eta_in.ndim == 1 else -1
    offsets = _check_elements(offsets, n, eta=eta_in, phi=phi_in, intensity=intensity)
    dtype = np.result_type(eta_in.dtype, phi_in.dtype, np.float32)
    x = eta_in.astype(np.float64)  # copies: the inputs stay untouched
    y = phi_in.astype(np.float64)
    w = np.asarray(intensity, dtype=np.float64)
    n_jets = len(offsets) - 1
    if n == 0 or n_jets == 0:
        return x.astype(dtype), y.astype(dtype)

    jet = _jet_of_elements(offsets)
    total = np.bincount(jet, weights=w, minlength=n_jets)
    valid = total > 0  # jets with no elements have total 0

    if center == "centroid":
        norm = np.where(valid, total, 1.0)
        cx = np.where(valid, np.bincount(jet, weights=w * x, minlength=n_jets) / norm, 0.0)
        cy = np.where(valid, np.bincount(jet, weights=w * y, minlength=n_jets) / norm, 0.0)
        x -= cx[jet]
        y -= cy[jet]
    elif center == "leading_subjet":
        jets, lead = _leading_index(w, jet, offsets)
        lx = np.zeros(n_jets)
        ly = np.zeros(n_jets)
        lx[jets] = x[lead]
        ly[jets] = y[lead]
        dx = x - lx[jet]
        dy = _wrap(y - ly[jet])
        ws = np.where(dx * dx + dy * dy <= subjet_radius * subjet_radius, w, 0.0)
        sub_total = np.bincount(jet, weights=ws, minlength=n_jets)
        ok = valid & (sub_total > 0)
        norm = np.where(ok, sub_total, 1.0)
        cx = np.where(ok, lx + np.bincount(jet, weights=ws * dx, minlength=n_jets) / norm, 0.0)
        cy = np.where(ok, ly + np.bincount(jet, weights=ws * dy, minlength=n_jets) / norm, 0.0)
        x -= cx[jet]
        y -= cy[jet]

    if rotate:
        wx = w * x
        sxx = np.bincount(jet, weights=wx * x, minlength=n_jets)
        sxy = np.bincount(jet, weights=wx * y, minlength=n_jets)
        syy = np.bincount(jet, weights=w * y * y, minlength=n_jets)
        # principal axis at angle theta from +eta; rotating by pi/2 - theta brings it onto +phi
        theta = 0.5 * np.arctan2(2 * sxy, sxx - syy)
        alpha = 0.5 * np.pi - theta  # in [0, pi): take the smaller of the two equivalent rotations
        alpha = np.where(alpha > 0.5 * np.pi, alpha - np.pi, alpha)
        anisotropy = np.hypot(sxx - syy, 2 * sxy)  # difference of the two eigenvalues
        isotropic = anisotropy <= 1e-12 * np.abs(sxx + syy)
        alpha = np.where(valid & ~isotropic, alpha, 0.0)
        c = np.cos(alpha)[jet]
        s = np.sin(alpha)[jet]
        x, y = x * c - y * s, x * s + y * c

    if flip:
        for u in (x, y):
            # (intensity at u > 0) - (intensity at u < 0); elements at u == 0 count for neither
            excess = np.bincount(jet, weights=w * np.sign(u), minlength=n_jets)
            sign = np.where(valid & (excess < 0), -1.0, 1.0)
            u *= sign[jet]

    return x.astype(dtype, copy=False), y.astype(dtype, copy=False)


def pixelize(
    eta,
    phi,
    intensity,
    channel,
    offsets,
    grid: ImageGrid,
    n_channels: int,
    out: np.ndarray | None = None,
) -> np.ndarray:
    """Images (n_jets, n_channels, n_eta, n_phi) float32: the sum of the intensities of the
    elements falling in each pixel; elements outside the grid are dropped. If `out` is given
    (float32, C-contiguous, right shape) it is zeroed and filled and returned (the caller may
    pass shared memory).

    ``channel``: the channel index of every element (integers, or floats holding integers), in
    ``[0, n_channels)``; anything else raises ValueError, as do mismatched lengths and offsets.
    Pixels follow :class:`ImageGrid` (half-open ranges; NaN coordinates are dropped); for float32
    coordinates the pixel edges are first rounded to float32, so that ``float32(eta_range[0])`` is
    inside the grid. Sums are accumulated in float32.
    """
    eta, phi = np.asarray(eta), np.asarray(phi)
    intensity, channel = np.asarray(intensity), np.asarray(channel)
    n = len(eta) if eta.ndim == 1 else -1
    offsets = _check_elements(offsets, n, eta=eta, phi=phi, intensity=intensity, channel=channel)
    n_channels = int(n_channels)
    if n_channels < 1:
        raise ValueError(f"n_channels must be positive, got {n_channels}")
    n_jets = len(offsets) - 1
    n_eta, n_phi = grid.shape
    shape = (n_jets, n_channels, n_eta, n_phi)
    if out is None:
        out = np.zeros(shape, dtype=np.float32)
    else:
        if not isinstance(out, np.ndarray) or out.dtype != np.float32 or out.shape != shape:
            raise ValueError(
                f"out must be a float32 array of shape {shape}, got "
                f"{getattr(out, 'dtype', type(out))} {getattr(out, 'shape', '')}"
            )
        if not out.flags.c_contiguous:
            raise ValueError("out must be C-contiguous")
        out.fill(0.0)
    if n == 0:
        return out

    ch = channel.astype(np.int64)
    if channel.dtype.kind == "f" and not np.array_equal(ch, channel):
        raise ValueError("channel must hold integer values")
    if ch.min() < 0 or ch.max() >= n_channels:
        raise ValueError(
            f"channel indices must lie in [0, {n_channels}), got values from {ch.min()} to {ch.max()}"
        )
    i, inside_eta = _pixel_index(eta, grid.eta_edges)
    j, inside_phi = _pixel_index(phi, grid.phi_edges)
    inside = inside_eta & inside_phi
    jet = _jet_of_elements(offsets)
    flat = ((jet * n_channels + ch) * n_eta + i) * n_phi + j
    np.add.at(out.reshape(-1), flat[inside], intensity[inside].astype(np.float32, copy=False))
    return out


def normalize_images(images: np.ndarray) -> np.ndarray:
    """In place: divide every image by its total intensity over all channels and pixels (images
    with zero total stay zero); returns images.

    ``images``: ``(n_images, ...)`` floating array (typically ``(n, channels, n_eta, n_phi)``
    float32). An image whose total is exactly zero is left as it
    is (all zeros for non-negative intensities).
    """
    if not isinstance(images, np.ndarray) or images.dtype.kind != "f" or images.ndim < 1:
        raise ValueError("images must be a floating numpy array (n_images, ...)")
    if images.size == 0:
        return images
    total = images.reshape(len(images), -1).sum(axis=1)  # pairwise summation: accurate in float32
    total[total == 0] = 1
    images /= total.reshape((-1,) + (1,) * (images.ndim - 1))
    return images


def random_flips(
    images: np.ndarray, rng: np.random.Generator, *, flip_eta: bool = True, flip_phi: bool = True
) -> np.ndarray:
    """In place: each image independently flipped along eta with probability 1/2 (if flip_eta)
    and along phi with probability 1/2 (if flip_phi), drawing from rng (seeded, reproducible).

    ``images``: ``(n_images, ..., n_eta, n_phi)``; a flip along eta reverses the rows (axis -2),
    along phi the columns (axis -1), i.e. a reflection about the centre of the grid (eta -> -eta
    for a grid symmetric about 0). Two coins are drawn per image whatever the flags, so the
    phi flips of a seed do not depend on ``flip_eta``. Returns images.
    """
    if not isinstance(images, np.ndarray) or images.ndim < 3:
        raise ValueError("images must be a numpy array (n_images, ..., n_eta, n_phi)")
    coins = rng.random((len(images), 2)) < 0.5
    if flip_eta:
        chosen = np.flatnonzero(coins[:, 0])
        images[chosen] = images[chosen][..., ::-1, :]
    if flip_phi:
        chosen = np.flatnonzero(coins[:, 1])
        images[chosen] = images[chosen][..., ::-1]
    return images
