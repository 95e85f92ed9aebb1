"""Loader speed: jets/s from ROOT files to ready batches, side by side with a plain uproot read.

    python benchmarks/loader.py [--files 4] [--jets-per-file 50000] [--workers 1,2] [--read-ahead 0,1]
                                [--repeat 2] [--keep-freed-memory]

The input: the default top-tagging sample (generated first if missing) re-written as
``--files`` TTrees of ``--jets-per-file`` jets each (the sample's jets repeated in a seeded
shuffled order), LZ4-compressed with baskets of ``--basket`` jets, under ``data/benchmark/``.
Every row reads all of them once, after one untimed pass that puts the files in the page cache:

- ``uproot.iterate``: the limit. Reads and decompresses exactly the branches the spec needs into
  awkward/numpy arrays, nothing else, with uproot's defaults (local files through fsspec).
- ``uproot.iterate, mmap``: the same through uproot's memory-mapped source, the one the loader
  uses for local files; shown beside the limit, not used for the ratios.
- ``hepnn first epoch``: a new loader's first epoch: read, compute the 7 particle features of
  the top-landscape configs (log pT, log E, log pT/pT_jet, log E/E_jet, dR, deta, dphi), sort,
  pad/clip to 128, standardise, shuffle, and deliver batches of 512 torch tensors from the
  DataLoader workers (worker start-up included; workers hand batches over in shared memory).
- ``hepnn later epoch``: the same loader's later epochs without a cache: the same work, with
  its (persistent) workers already running. Every epoch of a run without ``data.cache`` is one.
- ``hepnn cached``: a later epoch with the preprocessed-array cache filled by the first one.

The hepnn rows come for each number of workers and each ``--read-ahead`` depth (chunks read and
preprocessed ahead by a background thread of each worker, or of this process without workers).

The benchmark process runs with glibc's default allocator, as a plain ``uproot.iterate`` would;
``--keep-freed-memory`` makes it keep the memory it frees
(:func:`hepnn.data.loading.memory.keep_freed_memory`, what the training process does by default)
for every row, the limit's included. DataLoader workers always do.

Ratios are to the ``uproot.iterate`` row of the same run: ``/limit`` compares best passes;
``paired /limit`` runs a pass of the limit right before every pass of every row and gives the
median (and range) of the pass-by-pass ratios, which a machine whose speed drifts during the run
(a shared virtual machine) does not bias.
"""

from __future__ import annotations

import argparse
import functools
import shutil
import tempfile
import time
from pathlib import Path

import awkward as ak
import numpy as np
import uproot

from hepnn.data.dataset import ChunkedRootDataset
from hepnn.data.loading.loader import BatchLoader
from hepnn.data.loading.memory import keep_freed_memory
from hepnn.data.source import inspect_files, plan_chunks
from hepnn.data.spec import DataSpec
from hepnn.utils.config import project_root
from hepnn.utils.rootio import write_tree

TREE = "tree"


def data_config() -> dict:
    """The ``data`` section of the default experiment, resolved to a plain dict."""
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    from hepnn.utils.config import config_dir, register_resolvers

    register_resolvers()
    with initialize_config_dir(config_dir(), version_base="1.3"):
        cfg = compose("train", overrides=["hydra.runtime.output_dir=."], return_hydra_config=True)
        return OmegaConf.to_container(cfg.data, resolve=True)


def benchmark_files(cfg: dict, n_files: int, jets_per_file: int, basket: int) -> list[str]:
    """Write (once) the benchmark files from the default sample; returns their paths."""
    out_dir = project_root() / "data" / "benchmark" / f"{n_files}x{jets_per_file}_lz4_b{basket}"
    paths = [out_dir / f"jets_{i:03d}.root" for i in range(n_files)]
    if all(p.exists() for p in paths):
        return [str(p) for p in paths]
    from hepnn.sim.sample import SampleConfig, generate_sample

    sample = SampleConfig.from_dict(cfg["generate"])
    generate_sample(sample)
    source = sorted(Path(sample.output_dir).glob("*.root"))
    jets = ak.concatenate([uproot.open(p)[TREE].arrays() for p in source])
    rng = np.random.default_rng(2026)
    for path in paths:
        picked = jets[rng.integers(0, len(jets), jets_per_file)]
        columns = {name: picked[name] for name in picked.fields if name != "npart"}
        write_tree(path, TREE, columns, basket_entries=basket, compression=uproot.LZ4(1))
    return [str(p) for p in paths]


def time_uproot_iterate(paths: list[str], branches: list[str], **options) -> tuple[int, float, float]:
    t0 = time.perf_counter()
    first = None
    n = 0
    for arrays in uproot.iterate([f"{p}:{TREE}" for p in paths], branches, library="ak", **options):
        n += len(arrays)
        first = first or time.perf_counter() - t0
    return n, time.perf_counter() - t0, first


def time_epoch(loader: BatchLoader, epoch: int) -> tuple[int, float, float]:
    """Jets, seconds in all, and seconds to the first batch (worker start-up, first chunk)."""
    loader.dataset.set_epoch(epoch)
    t0 = time.perf_counter()
    first = None
    n = 0
    for batch in loader:
        n += len(batch["label"])
        first = first or time.perf_counter() - t0
    return n, time.perf_counter() - t0, first


def close(loader: BatchLoader) -> None:
    """Stop the loader's persistent workers now (rather than when it is garbage-collected)."""
    iterator = loader._iterator
    if iterator is not None:
        iterator._shutdown_workers()
        loader._iterator = None


def first_epoch(make_dataset, workers: int, _pass: int) -> tuple[int, float, float]:
    """A new loader's first epoch, worker start-up included."""
    loader = BatchLoader(make_dataset(), num_workers=workers)
    try:
        return time_epoch(loader, 0)
    finally:
        close(loader)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--files", type=int, default=4)
    parser.add_argument("--jets-per-file", type=int, default=50_000)
    parser.add_argument("--basket", type=int, default=5_000)
    parser.add_argument("--batch-size", type=int, default=512)
    parser.add_argument("--workers", default="1,2")
    parser.add_argument("--read-ahead", default="0,1", help="read-ahead depths to compare")
    parser.add_argument("--repeat", type=int, default=2, help="timed passes per row; the best is kept")
    parser.add_argument(
        "--keep-freed-memory",
        action="store_true",
        help="this process keeps the memory it frees, as the training process does (every row)",
    )
    args = parser.parse_args()
    if args.keep_freed_memory:
        keep_freed_memory()

    cfg = data_config()
    paths = benchmark_files(cfg, args.files, args.jets_per_file, args.basket)
    cfg["split"] = {"train": 1.0, "val": 0.0, "test": 0.0}
    spec = DataSpec.from_config(cfg)
    branches = sorted(spec.branches)
    files, _ = inspect_files(paths, spec)
    chunks = plan_chunks(files, spec, "train", cfg["chunk_size"])
    n_total = sum(f.n_entries for f in files)
    print(f"{len(paths)} files, {n_total} jets, {len(branches)} branches: {', '.join(branches)}")

    time_uproot_iterate(paths, branches)  # warm the page cache

    def limit_rate() -> float:
        n, seconds, _ = time_uproot_iterate(paths, branches)
        return n / seconds

    def paired(run, passes) -> tuple[tuple[int, float, float], list[float]]:
        """Run each pass right after a pass of the limit: the best pass, and every pass's rate
        over the limit's rate just before it (slow drifts of the machine's speed cancel)."""
        results, ratios = [], []
        for index in passes:
            limit = limit_rate()
            n, seconds, first = run(index)
            results.append((n, seconds, first))
            ratios.append(n / seconds / limit)
        return min(results, key=lambda r: r[1]), ratios

    rows = []
    best, ratios = paired(lambda _: time_uproot_iterate(paths, branches), range(args.repeat))
    rows.append(("uproot.iterate (limit)", "-", best, ratios))
    # the same read through the memory-mapped source the loader uses for local files
    mapped = {"handler": uproot.source.file.MemmapSource}
    best, ratios = paired(lambda _: time_uproot_iterate(paths, branches, **mapped), range(args.repeat))
    rows.append(("uproot.iterate, mmap", "-", best, ratios))
    cache_root = Path(
        tempfile.mkdtemp(prefix="hepnn-bench-", dir="/dev/shm" if Path("/dev/shm").is_dir() else None)
    )
    workers_list = [int(w) for w in args.workers.split(",")]
    depths = [int(d) for d in args.read_ahead.split(",")]
    settings = [(w, d) for w in workers_list for d in depths]

    def dataset(workers: int, read_ahead: int, cache_dir=None) -> ChunkedRootDataset:
        return ChunkedRootDataset(
            spec,
            chunks,
            args.batch_size,
            shuffle=True,
            seed=1,
            buffer_size=cfg["buffer_size"],
            num_workers=workers,
            cache_dir=cache_dir,
            read_ahead=read_ahead,
        )

    try:
        for workers, depth in settings:
            make = functools.partial(dataset, workers, depth)
            best, ratios = paired(functools.partial(first_epoch, make, workers), range(args.repeat))
            rows.append(("hepnn first epoch", f"{workers} / {depth}", best, ratios))
        for name, cached in (("hepnn later epoch", False), ("hepnn cached (/dev/shm)", True)):
            for workers, depth in settings:
                cache_dir = cache_root / f"w{workers}_d{depth}" if cached else None
                loader = BatchLoader(dataset(workers, depth, cache_dir), num_workers=workers)
                try:
                    time_epoch(loader, 0)  # starts the workers; fills the cache
                    best, ratios = paired(functools.partial(time_epoch, loader), range(1, args.repeat + 1))
                finally:
                    close(loader)
                rows.append((name, f"{workers} / {depth}", best, ratios))
    finally:
        shutil.rmtree(cache_root, ignore_errors=True)

    limit = rows[0][2][0] / rows[0][2][1]
    print(
        f"\n{'reader':<24} {'workers / ahead':>15} {'jets':>8} {'seconds':>8} {'jets/s':>10} {'/limit':>7}"
        f" {'paired /limit':>19} {'1st batch s':>11} {'jets/s after':>12}"
    )
    for name, workers, (n, seconds, first), ratios in rows:
        rate = n / seconds
        after = n / (seconds - first)
        spread = f"{np.median(ratios):.2f} ({min(ratios):.2f}-{max(ratios):.2f})"
        print(
            f"{name:<24} {workers:>15} {n:>8} {seconds:>8.2f} {rate:>10.0f} {rate / limit:>7.2f}"
            f" {spread:>19} {first:>11.2f} {after:>12.0f}"
        )
    print("\nworkers / ahead: DataLoader workers / chunks read ahead by a background thread of each")
    print("jets/s after: from the first batch on (excludes worker start-up and the first chunk)")
    print("later epoch, cached: the loader's persistent workers run on from its first epoch")
    print("/limit: best pass over the limit's best pass; paired /limit: median (range) over the passes")
    print("of each pass's rate over that of a pass of the limit run just before it")


if __name__ == "__main__":
    main()
