"""Cost of pile-up overlay in the generator: one shard per process generated without pile-up and
with pile-up at each mu of ``--mu``, side by side in one run, and the minimum-bias pool itself.

    python benchmarks/pileup_generation.py [--jets 1000] [--mu 60,140] [--sample toptag_pu]

Rows (one worker, the sample's settings; the pool is generated once, outside the shard timings):

- ``<process>: no pile-up`` / ``mu = <mu>``: :func:`hepnn.sim.sample.generate_shard` writing one
  shard of ``--jets`` jets, jets/s, and the slowdown relative to no pile-up;
- ``minimum-bias pool``: events/s of :func:`hepnn.sim.sample.prepare_pileup_pool`, and the seconds it
  adds per 1000 jets of a sample of ``--sample-jets`` jets.
"""

from __future__ import annotations

import argparse
import dataclasses
import tempfile
import time
from pathlib import Path

from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from hepnn.sim.sample import SampleConfig, generate_shard, plan_shards, prepare_pileup_pool
from hepnn.utils.config import config_dir, register_resolvers


def sample_config(sample: str, output_dir: str, n_jets: int) -> SampleConfig:
    """The ``generate=<sample>`` configuration with ``n_jets`` per process in one file each."""
    register_resolvers()
    with initialize_config_dir(config_dir(), version_base="1.3"):
        cfg = compose("generate", overrides=[f"generate={sample}", f"generate.output_dir={output_dir}"])
    values = OmegaConf.to_container(cfg.generate, resolve=True)
    for spec in values["processes"].values():
        if spec is not None:
            spec["n_jets"] = n_jets
    values.update(jets_per_file=n_jets, workers=1)
    return SampleConfig.from_dict(values)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jets", type=int, default=1000, help="jets per process and setting")
    parser.add_argument("--mu", default="60,140", help="comma-separated pile-up means")
    parser.add_argument("--sample", default="toptag_pu", help="generate=<sample> config with pile-up")
    parser.add_argument("--sample-jets", type=int, default=40_000, help="sample size for the pool's share")
    args = parser.parse_args()

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        cfg = sample_config(args.sample, tmp, args.jets)
        pileup_cfg = cfg.pileup_config()
        if pileup_cfg is None:
            raise SystemExit(f"generate={args.sample} has no generate.pileup block")
        start = time.perf_counter()
        prepare_pileup_pool(cfg)
        pool_seconds = time.perf_counter() - start
        settings = [("no pile-up", None)] + [
            (f"mu = {float(mu):g}", {**pileup_cfg.to_dict(), "mu": float(mu)}) for mu in args.mu.split(",")
        ]
        for shard in plan_shards(cfg):
            reference = None
            for label, values in settings:
                shard_cfg = dataclasses.replace(cfg, pileup=values)
                report = generate_shard(shard, shard_cfg)
                rate = report.n_jets / report.seconds
                reference = reference or rate
                rows.append((f"{shard.process}: {label}", report.n_events, rate, f"{reference / rate:.2f}"))
                Path(shard.path).unlink()
    pool_rate = pileup_cfg.pool_events / pool_seconds
    print(f"sample {args.sample}: {args.jets} jets per process and setting, one worker")
    print()
    print("| measurement | events | jets/s | time / no pile-up |")
    print("|---|---|---|---|")
    for label, events, rate, slowdown in rows:
        print(f"| {label} | {events} | {rate:.1f} | {slowdown} |")
    share = pool_seconds / args.sample_jets * 1000
    print(
        f"| minimum-bias pool ({pileup_cfg.pool_events} events, {pool_rate:.0f} events/s) | "
        f"{pileup_cfg.pool_events} | {pool_seconds:.1f} s | +{share:.2f} s per 1000 jets of a "
        f"{args.sample_jets}-jet sample |"
    )


if __name__ == "__main__":
    main()
