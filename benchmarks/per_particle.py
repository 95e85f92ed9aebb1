"""Training speed of the per-particle networks: every padded slot (dense) against the real particles only.

    python benchmarks/per_particle.py [--rounds 8] [--steps 2] [--batches 8] [--files 'data/toptag/*.root']
                                      [--synthetic] [--threads N]

Jets are padded to 128 slots but hold about 50 real particles. The Particle Flow Network
(``experiment=top_pfn``, ``conf/model/pfn.yaml``) and the DeepJet-style tagger's 1x1-convolution
front end (``experiment=top_deepjet``, ``conf/model/deepjet.yaml``) either apply their per-particle
layers to every slot (``dense=True`` / ``dense_front_end=True``, what tracing and ONNX export
run) or to the real particles only (the eager default). Both variants of a preset start from
the same weights and are timed side by side in one run: a training step is forward, cross
entropy, backward and an AdamW step (the preset's learning rate and weight decay) on a batch of
``--batch-size`` jets.

Batches: ``--batches`` training batches of the embedded top-tagging sample (the default data
config's ``files``, read by its RootDataModule) when its files exist, else synthetic batches
of the same shape (7 standardised-like features, 128 slots, real particles first) whose numbers
of real particles are drawn per jet, half QCD-like and half top-like: ``round(N(mu, 0.3 mu))``
with ``mu`` = 47 and 60, clipped to [1, 128] (mean about 53 of 128). The printout says which.

Every round times ``--steps`` steps of each variant (after untimed warm-up steps), the two
variants of a preset alternating which goes first; the table gives the median (and range) over
the rounds of the training jets/s and of the per-round ratio real-only / dense.
"""

from __future__ import annotations

import argparse
import glob
import statistics
import time

import numpy as np
import torch
import torch.nn.functional as F

PRESETS = {"pfn": ("top_pfn", "dense"), "deepjet": ("top_deepjet", "dense_front_end")}
SLOTS = 128
FEATURES = 7
SYNTHETIC_MEANS = (47.0, 60.0)  # real particles per jet: QCD-like, top-like


def compose(experiment: str, overrides: list[str]):
    """The training configuration of ``experiment`` (as ``python -m hepnn.train`` composes it)."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from hepnn.utils.config import config_dir, register_resolvers

    register_resolvers()
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir(), version_base="1.3"):
        return hydra_compose(
            "train",
            overrides=[f"experiment={experiment}", "hydra.runtime.output_dir=.", *overrides],
            return_hydra_config=True,
        )


def matching_files(files) -> list[str]:
    """Local files matching the data config's ``files`` (a pattern, a list of them, or a mapping of those)."""
    from collections.abc import Mapping

    if isinstance(files, str):
        return sorted(glob.glob(files))
    patterns = files.values() if isinstance(files, Mapping) else files
    return sorted(path for pattern in patterns for path in matching_files(pattern))


def sample_batches(cfg, n_batches: int) -> list[dict[str, torch.Tensor]]:
    """``n_batches`` training batches of the data config's sample (the files must exist)."""
    import hydra

    datamodule = hydra.utils.instantiate(cfg.data, _convert_="all")
    datamodule.setup("fit")
    batches = []
    for batch in datamodule.train_dataloader():
        batches.append({k: batch[k] for k in ("particles", "mask", "label")})
        if len(batches) == n_batches:
            break
    return batches


def synthetic_batches(n_batches: int, batch_size: int, seed: int = 1) -> list[dict[str, torch.Tensor]]:
    """Batches shaped as the loader's, with numbers of real particles as described in the docstring."""
    rng = np.random.default_rng(seed)
    batches = []
    for _ in range(n_batches):
        label = rng.integers(0, 2, batch_size)
        mean = np.where(label == 1, SYNTHETIC_MEANS[1], SYNTHETIC_MEANS[0])
        counts = np.clip(np.rint(rng.normal(mean, 0.3 * mean)), 1, SLOTS).astype(np.int64)
        mask = np.arange(SLOTS)[None, :] < counts[:, None]
        particles = rng.standard_normal((batch_size, FEATURES, SLOTS)).astype(np.float32) * mask[:, None, :]
        batches.append(
            {
                "particles": torch.from_numpy(particles),
                "mask": torch.from_numpy(mask),
                "label": torch.from_numpy(label),
            }
        )
    return batches


def build(cfg, option: str, dense: bool, seed: int = 0):
    """The preset's net (dense or real-only) and its AdamW optimiser; the same weights for either."""
    import hydra

    torch.manual_seed(seed)
    net = hydra.utils.instantiate(cfg.model.net, _convert_="all", **{option: dense}).train()
    settings = cfg.model.optimizer
    optimizer = torch.optim.AdamW(net.parameters(), lr=settings.lr, weight_decay=settings.weight_decay)
    return net, optimizer


def train_steps(net, optimizer, batches: list[dict], steps: int, start: int) -> int:
    """``steps`` training steps over ``batches`` (cycled from ``start``); returns the jets seen."""
    jets = 0
    for i in range(steps):
        batch = batches[(start + i) % len(batches)]
        optimizer.zero_grad(set_to_none=True)
        loss = F.cross_entropy(net(batch["particles"], batch["mask"]), batch["label"])
        loss.backward()
        optimizer.step()
        jets += len(batch["label"])
    return jets


def time_preset(cfg, option: str, batches, rounds: int, steps: int, warmup: int) -> dict:
    """Jets/s of both variants per round (alternating which goes first) and their per-round ratios."""
    variants = {name: build(cfg, option, dense=name == "dense") for name in ("dense", "real-only")}
    for net, optimizer in variants.values():
        train_steps(net, optimizer, batches, warmup, 0)
    rates: dict[str, list[float]] = {name: [] for name in variants}
    for r in range(rounds):
        order = list(variants) if r % 2 == 0 else list(reversed(variants))
        for name in order:
            net, optimizer = variants[name]
            begin = time.perf_counter()
            jets = train_steps(net, optimizer, batches, steps, warmup + r * steps)
            rates[name].append(jets / (time.perf_counter() - begin))
    ratios = [real / dense for real, dense in zip(rates["real-only"], rates["dense"], strict=True)]
    parameters = sum(p.numel() for p in variants["dense"][0].parameters())
    return {"rates": rates, "ratios": ratios, "parameters": parameters}


def spread(values: list[float], digits: int) -> str:
    return f"{statistics.median(values):.{digits}f} ({min(values):.{digits}f}–{max(values):.{digits}f})"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=8, help="timed rounds per variant")
    parser.add_argument("--steps", type=int, default=2, help="training steps per variant and round")
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps per variant first")
    parser.add_argument("--batches", type=int, default=8, help="distinct batches, cycled")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--files", default=None, help="sample files (glob); default: the data config's")
    parser.add_argument(
        "--synthetic", action="store_true", help="synthetic batches even if the sample exists"
    )
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    overrides = [f"data.batch_size={args.batch_size}", "data.progress_bar=false", "data.num_workers=0"]
    if args.files:
        overrides.append(f"data.files='{args.files}'")
    cfg = compose(PRESETS["pfn"][0], overrides)
    from omegaconf import OmegaConf

    files = matching_files(OmegaConf.to_container(cfg.data, resolve=True)["files"])
    if files and not args.synthetic:
        batches = sample_batches(cfg, args.batches)
        source = f"{len(batches)} training batches of the sample {cfg.data.files} ({len(files)} files)"
    else:
        batches = synthetic_batches(args.batches, args.batch_size)
        why = "--synthetic" if files else f"no file matches {cfg.data.files}"
        source = (
            f"{len(batches)} synthetic batches ({why}): real particles per jet round(N(mu, 0.3 mu)) "
            f"clipped to [1, {SLOTS}], mu = {SYNTHETIC_MEANS[0]:g} (QCD-like) or {SYNTHETIC_MEANS[1]:g} "
            "(top-like) for half the jets each"
        )
    counts = torch.cat([b["mask"].sum(dim=1) for b in batches]).double()
    slots = batches[0]["mask"].shape[1]
    print(f"input: {source}")
    print(
        f"batch {args.batch_size} jets of {slots} slots; real particles per jet: mean {counts.mean():.1f}, "
        f"median {counts.median():.0f}, range {counts.min():.0f}–{counts.max():.0f}"
    )
    print(
        f"torch {torch.__version__} on CPU, {torch.get_num_threads()} threads; a training step is forward, "
        "cross entropy, backward and AdamW step; the variants alternate within every round"
    )

    rows = []
    for preset, (experiment, option) in PRESETS.items():
        preset_cfg = cfg if experiment == PRESETS["pfn"][0] else compose(experiment, overrides)
        result = time_preset(preset_cfg, option, batches, args.rounds, args.steps, args.warmup)
        rows.append((preset, option, result))
    print()
    print("| preset | parameters | dense jets/s | real-only jets/s | real-only / dense | repetitions |")
    print("|---|---:|---:|---:|---:|---|")
    for preset, option, result in rows:
        rates = result["rates"]
        print(
            f"| {preset} (`{option}`) | {result['parameters']:,} | {spread(rates['dense'], 0)} "
            f"| {spread(rates['real-only'], 0)} | {spread(result['ratios'], 2)} "
            f"| {args.rounds} rounds × {args.steps} steps |"
        )
    print("\nmedian (range) over the rounds; the ratio is taken round by round")


if __name__ == "__main__":
    main()
