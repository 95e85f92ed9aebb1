"""The physicist's object finder: anti-kT jets of the calorimeter cells, tagged by their mass.

What a detector on whole-event images has to beat: FastJet's anti-kT (R = 0.8) over the measured
ECAL and HCAL cells of an event (massless, pointing at the cell centres, with the cells' transverse
energy), jets above a pT threshold, each tagged by its mass alone. The tag is the set of mass
windows that is best for a mass-only tagger: in every mass bin, the fraction of training jets of
each class (a jet matched to no truth object counts as "no object"), :class:`MassTag`. A jet gets
the object class most frequent in its bin, and that fraction is its score, so jets in bins where
fakes dominate rank low. Jets are boxes of the clustering radius around their axis.
"""

from __future__ import annotations

from dataclasses import dataclass

import awkward as ak
import numpy as np

from hepnn.sim.clustering import fastjet_module


def calorimeter_jets(
    cells: list[tuple[ak.Array, ak.Array, ak.Array]], radius: float = 0.8, pt_min: float = 150.0
) -> dict[str, ak.Array]:
    """Anti-kT jets of every event's calorimeter cells, sorted by decreasing pT.

    ``cells`` lists per layer the jagged ``(eta, phi, et)`` of the cells of each event (rad, GeV).
    Returns jagged ``eta``, ``phi`` (rad, in [-pi, pi)), ``pt`` and ``mass`` (GeV) per event, of the
    jets with pT > ``pt_min`` (GeV).
    """
    eta = ak.concatenate([c[0] for c in cells], axis=1)
    phi = ak.concatenate([c[1] for c in cells], axis=1)
    et = ak.concatenate([c[2] for c in cells], axis=1)
    eta, phi, et = (ak.values_astype(x, np.float64) for x in (eta, phi, et))
    objects = ak.zip(
        {"px": et * np.cos(phi), "py": et * np.sin(phi), "pz": et * np.sinh(eta), "E": et * np.cosh(eta)}
    )
    fastjet = fastjet_module()
    sequence = fastjet.ClusterSequence(objects, fastjet.JetDefinition(fastjet.antikt_algorithm, radius))
    jets = sequence.inclusive_jets(pt_min)
    px, py, pz, energy = (ak.values_astype(jets[k], np.float64) for k in ("px", "py", "pz", "E"))
    pt = np.hypot(px, py)
    order = ak.argsort(pt, axis=1, ascending=False)
    mass = np.sqrt(np.maximum(energy**2 - px**2 - py**2 - pz**2, 0.0))
    jet_eta = np.arcsinh(pz / np.maximum(pt, 1e-12))
    jet_phi = (np.arctan2(py, px) + np.pi) % (2 * np.pi) - np.pi
    return {k: v[order] for k, v in {"eta": jet_eta, "phi": jet_phi, "pt": pt, "mass": mass}.items()}


@dataclass(frozen=True)
class MassTag:
    """Class fractions per mass bin: ``fractions[b, c]`` of the training jets in bin ``b`` (edges in
    GeV; overflow in the last bin) that are of object class ``c``; the rest matched nothing."""

    edges: np.ndarray
    fractions: np.ndarray

    @classmethod
    def fit(cls, mass: np.ndarray, matched_class: np.ndarray, n_classes: int, edges: np.ndarray) -> MassTag:
        """From the training jets' masses (GeV) and the class of the truth object each matched
        (-1: none)."""
        edges = np.asarray(edges, dtype=np.float64)
        bins = cls._bins(edges, mass)
        n_bins = len(edges) - 1
        counts = np.zeros((n_bins, n_classes + 1))
        np.add.at(counts, (bins, np.where(matched_class >= 0, matched_class, n_classes)), 1.0)
        total = counts.sum(axis=1, keepdims=True)
        fractions = np.divide(
            counts[:, :n_classes], total, out=np.zeros((n_bins, n_classes)), where=total > 0
        )
        return cls(edges, fractions)

    @staticmethod
    def _bins(edges: np.ndarray, mass: np.ndarray) -> np.ndarray:
        return np.clip(
            np.searchsorted(edges, np.asarray(mass, dtype=np.float64), side="right") - 1, 0, len(edges) - 2
        )

    def __call__(self, mass: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The class and the score (its fraction in the jet's mass bin) of every jet."""
        fractions = self.fractions[self._bins(self.edges, mass)]
        best = np.argmax(fractions, axis=1)
        return best.astype(np.int64), fractions[np.arange(len(best)), best]

    def windows(self) -> dict[int, list[tuple[float, float]]]:
        """The mass windows (GeV) in which each class is the most frequent object class."""
        best = np.argmax(self.fractions, axis=1)
        filled = self.fractions.sum(axis=1) > 0
        out: dict[int, list[tuple[float, float]]] = {}
        for b in np.flatnonzero(filled):
            c = int(best[b])
            low, high = float(self.edges[b]), float(self.edges[b + 1])
            if out.get(c) and out[c][-1][1] == low:
                out[c][-1] = (out[c][-1][0], high)
            else:
                out.setdefault(c, []).append((low, high))
        return out
