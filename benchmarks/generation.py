"""Jet generation speed: Pythia vs detector+clustering per process, and whole samples by worker count.

    python benchmarks/generation.py [--jets 1000] [--workers 1,2]

Prints one table measured in one run: rows 1-2 time the two stages of one worker for each
process (Pythia event generation; detector simulation, FastJet clustering and jet selection);
the following rows generate the same sample (both processes) with 1 and with N worker
processes, including process start-up and ROOT writing.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

import numpy as np

from hepnn.sim import detector, jets
from hepnn.sim.sample import SampleConfig, generate_sample

PROCESSES = {"ttbar": "Tbqq", "qcd": "QCD"}


def stage_timing(process_name: str, n_jets: int, events_per_batch: int = 200) -> dict:
    """Seconds spent in Pythia and in the detector/clustering stage to get ``n_jets`` jets."""
    process = jets.PROCESSES[process_name]
    pythia = jets.make_pythia(process, jets.PythiaSetup(), seed=12345)
    charges = jets.ChargeTable(pythia.particleData)
    rng = np.random.default_rng(1)
    t_pythia = t_rest = 0.0
    n_events = n_found = 0
    while n_found < n_jets:
        t0 = time.perf_counter()
        events = pythia.nextBatch(events_per_batch)
        t1 = time.perf_counter()
        columns = jets.jets_from_events(
            events, process, charges, rng, detector.DetectorConfig(), jets.JetSelection()
        )
        t_rest += time.perf_counter() - t1
        t_pythia += t1 - t0
        n_events += len(events)
        n_found += len(columns["jet_pt"])
    return {"events": n_events, "jets": n_found, "pythia_s": t_pythia, "rest_s": t_rest}


def sample_timing(n_jets: int, workers: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        cfg = SampleConfig.from_dict(
            {
                "output_dir": tmp,
                "classes": ["QCD", "Tbqq"],
                "seed": 7,
                "workers": workers,
                "jets_per_file": max(1, n_jets // workers),
                "processes": {name: {"n_jets": n_jets, "label": label} for name, label in PROCESSES.items()},
            }
        )
        report = generate_sample(cfg, progress_bar=False)
    return {"jets": report.n_jets, "wall_s": report.wall_seconds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jets", type=int, default=1000, help="jets per process")
    parser.add_argument(
        "--workers", default=f"1,{len(os.sched_getaffinity(0))}", help="worker counts to compare"
    )
    args = parser.parse_args()

    print(f"{'measurement':<44}{'jets':>8}{'seconds':>10}{'jets/s':>10}{'jets/s/worker':>15}")
    for name in PROCESSES:
        t = stage_timing(name, args.jets)
        total = t["pythia_s"] + t["rest_s"]
        print(
            f"{name + ': 1 worker, Pythia only':<44}{t['jets']:>8}{t['pythia_s']:>10.1f}"
            f"{t['jets'] / t['pythia_s']:>10.1f}{'':>15}"
        )
        print(
            f"{name + ': 1 worker, detector + FastJet + cuts':<44}{t['jets']:>8}{t['rest_s']:>10.1f}"
            f"{t['jets'] / t['rest_s']:>10.1f}{'':>15}"
        )
        print(
            f"{name + ': 1 worker, both stages':<44}{t['jets']:>8}{total:>10.1f}{t['jets'] / total:>10.1f}"
            f"{t['jets'] / total:>15.1f}   ({t['events']} events, {t['jets'] / t['events']:.2f} jets/event)"
        )
    for workers in (int(w) for w in args.workers.split(",")):
        s = sample_timing(args.jets, workers)
        print(
            f"{f'ttbar+qcd sample, {workers} worker(s), with I/O':<44}{s['jets']:>8}{s['wall_s']:>10.1f}"
            f"{s['jets'] / s['wall_s']:>10.1f}{s['jets'] / s['wall_s'] / workers:>15.1f}"
        )


if __name__ == "__main__":
    main()
