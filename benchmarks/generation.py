"""Jet generation speed: Pythia alone (multiple parton interactions on and off) beside the whole
generator (detector, FastJet, substructure, truth matching, ROOT writing), measured in one run.

    python benchmarks/generation.py [--jets 2000] [--workers 1,2] [--sample toptag]

Rows, per process of the sample (one worker, the sample's own settings):

- ``Pythia alone, MPI off`` / ``MPI on``: ``Pythia.nextBatch`` of the sample's batch size, events/s,
  and the jets/s they would give at the jets-per-event rate the generator measured;
- ``generator, 1 worker``: :func:`hepnn.sim.sample.generate_shard` writing one shard of ``--jets``
  jets (everything but process start-up), jets/s;

then the whole sample (all processes, ``--jets`` each) produced by :func:`generate_sample` with
each worker count of ``--workers``, process start-up included: jets/s in all and per worker.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import tempfile
import time
from pathlib import Path

from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from hepnn.sim import jets
from hepnn.sim.sample import SampleConfig, generate_sample, generate_shard, plan_shards
from hepnn.utils.config import config_dir, register_resolvers


def sample_config(sample: str, output_dir: str, n_jets: int, workers: int) -> SampleConfig:
    """The ``generate=<sample>`` configuration with ``n_jets`` per process in one file each."""
    register_resolvers()
    with initialize_config_dir(config_dir(), version_base="1.3"):
        cfg = compose("generate", overrides=[f"generate={sample}", f"generate.output_dir={output_dir}"])
    values = OmegaConf.to_container(cfg.generate, resolve=True)
    for spec in values["processes"].values():
        spec["n_jets"] = n_jets
    values.update(jets_per_file=n_jets, workers=workers)
    return SampleConfig.from_dict(values)


def pythia_rate(cfg: SampleConfig, process: str, mpi: bool, n_events: int) -> float:
    """Events/s of ``Pythia.nextBatch`` for ``process`` with the sample's settings, MPI on or off."""
    setup = dataclasses.replace(jets.PythiaSetup.from_dict(cfg.pythia), mpi=mpi)
    pythia = jets.make_pythia(jets.PROCESSES[process], setup, seed=12345)
    pythia.nextBatch(min(50, n_events))  # warm-up
    done, start = 0, time.perf_counter()
    while done < n_events:
        batch = min(cfg.events_per_batch, n_events - done)
        done += len(pythia.nextBatch(batch))
    return done / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jets", type=int, default=2000, help="jets per process")
    parser.add_argument("--sample", default="toptag", help="generate=<sample> config (toptag, qg, jets4)")
    parser.add_argument(
        "--workers", default=f"1,{len(os.sched_getaffinity(0))}", help="worker counts for whole samples"
    )
    args = parser.parse_args()

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        cfg = sample_config(args.sample, tmp, args.jets, workers=1)
        print(f"sample {args.sample}: MPI {'on' if cfg.pythia.get('mpi') else 'off'} in its configuration")
        for shard in plan_shards(cfg):
            report = generate_shard(shard, cfg)
            jets_per_event = report.n_jets / report.n_events
            for mpi in (False, True):
                rate = pythia_rate(cfg, shard.process, mpi, report.n_events)
                label = f"{shard.process}: Pythia alone, MPI {'on' if mpi else 'off'}"
                rows.append((label, report.n_events, rate, rate * jets_per_event, ""))
            rows.append(
                (
                    f"{shard.process}: generator, 1 worker (with ROOT writing)",
                    report.n_events,
                    report.n_events / report.seconds,
                    report.n_jets / report.seconds,
                    f"{report.n_jets / report.seconds:.1f}",
                )
            )
            Path(shard.path).unlink()
    for workers in (int(w) for w in args.workers.split(",")):
        with tempfile.TemporaryDirectory() as tmp:
            cfg = sample_config(args.sample, tmp, args.jets, workers=workers)
            cfg = dataclasses.replace(cfg, jets_per_file=max(1, args.jets // workers))
            report = generate_sample(cfg, progress_bar=False)
        events = sum(r.n_events for r in report.generated)
        rate = report.n_jets / report.wall_seconds
        rows.append(
            (
                f"whole sample, {workers} worker(s), start-up included",
                events,
                events / report.wall_seconds,
                rate,
                f"{rate / workers:.1f}",
            )
        )

    print()
    print("| measurement | events | events/s | jets/s | jets/s per worker |")
    print("|---|---|---|---|---|")
    for label, events, event_rate, jet_rate, per_worker in rows:
        print(f"| {label} | {events} | {event_rate:.1f} | {jet_rate:.1f} | {per_worker} |")


if __name__ == "__main__":
    main()
