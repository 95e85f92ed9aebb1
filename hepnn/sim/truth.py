"""Truth matching of reconstructed jets to the hard process of their Pythia event.

Everything works on flat numpy arrays over a batch of events: the hard-process particles of
all events (:class:`HardParticles`) and the jets (their event index and axis). Pairs of a jet
and a particle of the same event are built by index arithmetic (:func:`same_event_pairs`); no
Python loop runs over events, jets or particles.
"""

from __future__ import annotations

from dataclasses import dataclass

import awkward as ak
import numpy as np

# |status| codes of the hard-process particles the matchings read: 22 intermediate resonances
# (W, Z of a W' decay), 23 outgoing partons of the hard process (and first copies of decay
# quarks), 62 the last copy of a particle before its decay (the top)
HARD_STATUS = (22, 23, 62)


@dataclass(frozen=True)
class HardParticles:
    """The particles of |status| in :data:`HARD_STATUS` of a batch of events, flat.

    ``event`` indexes the batch; ``mother_id`` is the PDG id of the first mother; ``pt`` in GeV,
    ``eta`` and ``phi`` (rad) of the particle's momentum.
    """

    event: np.ndarray
    pid: np.ndarray
    status: np.ndarray
    mother_id: np.ndarray
    pt: np.ndarray
    eta: np.ndarray
    phi: np.ndarray
    n_events: int

    @classmethod
    def from_pythia(cls, prt: ak.Array) -> HardParticles:
        """From the ``prt`` record of ``Pythia.nextBatch`` (fields ``id``, ``status``, ``mother1``, ``p``)."""
        counts = ak.to_numpy(ak.num(prt, axis=1))
        start = np.cumsum(counts) - counts
        pid = ak.to_numpy(ak.flatten(prt.id))
        status = ak.to_numpy(ak.flatten(prt.status))
        hard = np.flatnonzero(np.isin(np.abs(status), HARD_STATUS))
        event = np.repeat(np.arange(len(counts)), counts)[hard]
        mother = ak.to_numpy(ak.flatten(prt.mother1))[hard] + start[event]
        px, py, pz = (ak.to_numpy(ak.flatten(getattr(prt.p, k)))[hard] for k in ("px", "py", "pz"))
        pt = np.hypot(px, py)
        with np.errstate(divide="ignore", invalid="ignore"):
            eta = np.where(pt > 0, np.arcsinh(pz / np.where(pt > 0, pt, 1.0)), np.copysign(np.inf, pz))
        return cls(
            event=event,
            pid=pid[hard],
            status=status[hard],
            mother_id=pid[mother],
            pt=pt,
            eta=eta,
            phi=np.arctan2(py, px),
            n_events=len(counts),
        )

    def select(self, mask: np.ndarray) -> HardParticles:
        return HardParticles(
            **{
                k: getattr(self, k)[mask] for k in ("event", "pid", "status", "mother_id", "pt", "eta", "phi")
            },
            n_events=self.n_events,
        )


def same_event_pairs(
    jet_event: np.ndarray, item_event: np.ndarray, n_events: int
) -> tuple[np.ndarray, np.ndarray]:
    """Every (jet, item) pair of the same event: indices into the jets and into the items.

    ``item_event`` must be sorted (items grouped by event, as in every flat event record).
    """
    counts = np.bincount(item_event, minlength=n_events)
    start = np.cumsum(counts) - counts
    n_pairs = counts[jet_event]
    pair_jet = np.repeat(np.arange(len(jet_event)), n_pairs)
    first_pair = np.cumsum(n_pairs) - n_pairs
    pair_item = np.arange(int(n_pairs.sum())) + np.repeat(start[jet_event] - first_pair, n_pairs)
    return pair_jet, pair_item


def _distance(jet_eta, jet_phi, eta, phi) -> np.ndarray:
    dphi = (phi - jet_phi + np.pi) % (2 * np.pi) - np.pi
    return np.hypot(jet_eta - eta, dphi)


def decay_quarks_inside(
    hard: HardParticles,
    jet_event: np.ndarray,
    jet_eta: np.ndarray,
    jet_phi: np.ndarray,
    radius: float,
    mother_abs_ids: tuple[int, ...],
    n_quarks: int,
) -> np.ndarray:
    """Per jet: are ``n_quarks`` decay quarks of one resonance within ``radius`` of its axis?

    The decay quarks are the first copies (|status| 23) of quarks whose mother's |id| is in
    ``mother_abs_ids`` (6 and 24 for a top and its W, 24 for a W, 23 for a Z); the sign of the
    mother's id tells which resonance they belong to (t -> W+ b, tbar -> W- bbar, W+ or W-).
    """
    quarks = hard.select(
        (np.abs(hard.status) == 23)
        & (np.abs(hard.pid) <= 5)
        & np.isin(np.abs(hard.mother_id), mother_abs_ids)
    )
    pair_jet, pair_quark = same_event_pairs(jet_event, quarks.event, hard.n_events)
    inside = (
        _distance(jet_eta[pair_jet], jet_phi[pair_jet], quarks.eta[pair_quark], quarks.phi[pair_quark])
        < radius
    )
    sign = np.sign(quarks.mother_id[pair_quark])
    n_jets = len(jet_event)
    positive = np.bincount(pair_jet[inside & (sign > 0)], minlength=n_jets) == n_quarks
    negative = np.bincount(pair_jet[inside & (sign < 0)], minlength=n_jets) == n_quarks
    return positive | negative


def nearest_parton(
    hard: HardParticles,
    jet_event: np.ndarray,
    jet_eta: np.ndarray,
    jet_phi: np.ndarray,
    radius: float,
    status: int,
    abs_ids: tuple[int, ...],
) -> dict[str, np.ndarray]:
    """Per jet: PDG id, pT (GeV), eta and phi of the nearest hard parton within ``radius``.

    Hard partons are those of |status| ``status`` and |id| in ``abs_ids``; every value is 0 for a
    jet with none within ``radius``. Of equally distant partons the first in the event record wins.
    """
    partons = hard.select((np.abs(hard.status) == status) & np.isin(np.abs(hard.pid), abs_ids))
    pair_jet, pair_parton = same_event_pairs(jet_event, partons.event, hard.n_events)
    distance = _distance(
        jet_eta[pair_jet], jet_phi[pair_jet], partons.eta[pair_parton], partons.phi[pair_parton]
    )
    order = np.lexsort((distance, pair_jet))  # by jet, then by distance; stable for ties
    first = np.ones(len(order), dtype=bool)
    first[1:] = pair_jet[order][1:] != pair_jet[order][:-1]
    best = order[first]
    best = best[distance[best] < radius]
    out = {
        "pid": np.zeros(len(jet_event), dtype=np.int32),
        "pt": np.zeros(len(jet_event), dtype=np.float32),
        "eta": np.zeros(len(jet_event), dtype=np.float32),
        "phi": np.zeros(len(jet_event), dtype=np.float32),
    }
    jets = pair_jet[best]
    for key in out:
        out[key][jets] = getattr(partons, key)[pair_parton[best]]
    return out
