"""How well a calorimeter cone can measure a jet's pT, beside anti-kT, on the same truth jets.

    python benchmarks/cone_floor.py [--files 'data/results/events_calo_15k/*.root'] [--events 400]

The detector of ``experiment=events_ssd`` measures a box as the cone of the ECAL and HCAL pixels
around its predicted axis (:mod:`hepnn.detection.cone_jets`). This prints the relative pT bias
(median of pred/true - 1) and resolution (68 % half-width) that such cones reach with the *true*
axis, so with no error of the detector at all, beside anti-kT (R = 0.8, FastJet) of the cells
(:func:`hepnn.detection.baseline.calorimeter_jets`), on the truth jets that an anti-kT jet matches
within Delta R < 0.4: the cone of the cells themselves, and the pixel cones at two granularities.
Errors: bootstrap over the jets. The first ``--events`` events of every file are read.
"""

from __future__ import annotations

import argparse
import glob

import awkward as ak
import numpy as np
import torch
import uproot

from hepnn.detection.baseline import calorimeter_jets
from hepnn.detection.cone_jets import ConeJets
from hepnn.metrics.regression import half_width
from hepnn.utils.config import project_root

LAYERS = ("ecal", "hcal")
RADIUS = 0.8
ETA_RANGE = (-2.4, 2.4)
GRANULARITIES = ((48, 64), (96, 128))  # pixels in eta x phi: 0.1 and 0.05 in eta


def wrap(dphi: np.ndarray) -> np.ndarray:
    return (dphi + np.pi) % (2 * np.pi) - np.pi


def cell_cone_pt(eta, phi, et, axis_eta: float, axis_phi: float) -> float:
    """pT (GeV) of the massless cells within Delta R < RADIUS of the axis."""
    inside = (eta - axis_eta) ** 2 + wrap(phi - axis_phi) ** 2 < RADIUS**2
    return float(np.hypot((et[inside] * np.cos(phi[inside])).sum(), (et[inside] * np.sin(phi[inside])).sum()))


def pixel_images(event, n_eta: int, n_phi: int) -> torch.Tensor:
    """``(1, 2, n_eta, n_phi)`` ECAL and HCAL ET images (GeV) of one event."""
    images = []
    for layer in LAYERS:
        image, _, _ = np.histogram2d(
            np.asarray(event[f"{layer}_eta"]),
            np.asarray(event[f"{layer}_phi"]),
            bins=(n_eta, n_phi),
            range=(ETA_RANGE, (-np.pi, np.pi)),
            weights=np.asarray(event[f"{layer}_et"]),
        )
        images.append(image)
    return torch.tensor(np.stack(images))[None].float()


def measure(events) -> dict[str, np.ndarray]:
    """pred/true - 1 of the pT of every truth jet an anti-kT jet matches, for every method."""
    jets = calorimeter_jets(
        [(events[f"{x}_eta"], events[f"{x}_phi"], events[f"{x}_et"]) for x in LAYERS], RADIUS, 150.0
    )
    cones = {
        f"pixel cone at the true axis, {(ETA_RANGE[1] - ETA_RANGE[0]) / n:.2f} pixels": (
            ConeJets(
                {"n_eta": n, "n_phi": m, "eta": list(ETA_RANGE), "phi": [-np.pi, np.pi]}, RADIUS, [0, 1]
            ),
            (n, m),
        )
        for n, m in GRANULARITIES
    }
    out = {"anti-kT of the cells": [], "cell cone at the true axis": [], **{k: [] for k in cones}}
    for i, event in enumerate(events):
        true_eta, true_phi = np.asarray(event["obj_eta"]), np.asarray(event["obj_phi"])
        true_pt = np.asarray(event["obj_pt"])
        jet_eta, jet_phi, jet_pt = (np.asarray(jets[k][i]) for k in ("eta", "phi", "pt"))
        if len(true_pt) == 0 or len(jet_pt) == 0:
            continue
        cells = [
            np.concatenate([np.asarray(event[f"{x}_{q}"]) for x in LAYERS]) for q in ("eta", "phi", "et")
        ]
        discs = {name: cone(pixel_images(event, *shape)) for name, (cone, shape) in cones.items()}
        for eta, phi, pt in zip(true_eta, true_phi, true_pt, strict=True):
            distance = np.hypot(jet_eta - eta, wrap(jet_phi - phi))
            nearest = int(np.argmin(distance))
            if distance[nearest] >= 0.4:
                continue
            out["anti-kT of the cells"].append(jet_pt[nearest] / pt - 1)
            out["cell cone at the true axis"].append(cell_cone_pt(*cells, eta, phi) / pt - 1)
            point = (
                torch.zeros(1, dtype=torch.long),
                torch.tensor([eta]).float(),
                torch.tensor([phi]).float(),
            )
            for name, (cone, _) in cones.items():
                cone_pt, _ = cone.at(discs[name], *point)
                out[name].append(float(cone_pt[0]) / pt - 1)
    return {k: np.asarray(v) for k, v in out.items()}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--files", default=str(project_root() / "data" / "results" / "events_calo_15k" / "*.root")
    )
    parser.add_argument("--events", type=int, default=400, help="events read from the start of every file")
    parser.add_argument("--resamples", type=int, default=200)
    args = parser.parse_args(argv)
    files = sorted(glob.glob(args.files))
    if not files:
        raise SystemExit(
            f"cone_floor.py: error: no file matches {args.files}; generate=events_calo makes them"
        )
    branches = [f"{x}_{q}" for x in LAYERS for q in ("eta", "phi", "et")] + ["obj_eta", "obj_phi", "obj_pt"]
    events = ak.concatenate([uproot.open(f)["tree"].arrays(branches, entry_stop=args.events) for f in files])
    responses = measure(events)
    n = len(next(iter(responses.values())))
    rng = np.random.default_rng(0)
    draws = [rng.integers(0, n, n) for _ in range(args.resamples)]
    print(
        f"\n{len(events)} events of {len(files)} files ({files[0]} ...), {n} truth jets matched by anti-kT\n"
    )
    print("| pT measured by | bias | resolution | resolution - anti-kT (paired) |")
    print("|---|---|---|---|")
    reference = responses["anti-kT of the cells"]
    for name, r in responses.items():
        bias = [np.median(r[d]) for d in draws]
        width = [half_width(r[d]) for d in draws]
        difference = [half_width(r[d]) - half_width(reference[d]) for d in draws]
        print(
            f"| {name} | {np.median(r):+.4f} ± {np.std(bias):.4f} "
            f"| {half_width(r):.4f} ± {np.std(width):.4f} "
            f"| {half_width(r) - half_width(reference):+.4f} ± {np.std(difference):.4f} |"
        )


if __name__ == "__main__":
    main()
