"""Per-event inference speed of the air-shower net (TraceConv3D of ``experiment=airshower_3dconv``).

    python benchmarks/trace3d_inference.py [--ckpt path/to/epoch_NNN.ckpt] [--batch-sizes 1,16,128,1024]
                                           [--threads 1,2] [--events 2048] [--experiment airshower_3dconv]

Builds the net exactly as the preset composes it (weights from ``--ckpt`` when given: speed does
not depend on their values), takes ``--events`` simulated showers (generated in memory with the
preset's simulation settings, so no file is needed) as the batches the loader delivers
(traces ``(B, 1, 9, 9, 80)`` in VEM, start times, trigger masks, station positions for the
analytic first guess) and times the forward pass in
eval mode under ``torch.inference_mode`` for every batch size and number of torch threads,
side by side in one run: events per second and milliseconds per event (median of ``--repeat``
passes over all events, after one warm-up pass); the first guess alone is timed beside it. The
loader is not included: the training
summary's ``test entries/s`` gives inference with reading and metrics.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch


def build_net(experiment: str, ckpt: str | None):
    """The preset's net (and its simulation config); weights from a Lightning checkpoint if given."""
    import hydra
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    from hepnn.sim.kinds import build_sample
    from hepnn.utils.config import config_dir, register_resolvers

    register_resolvers()
    with initialize_config_dir(config_dir(), version_base="1.3"):
        cfg = compose("train", overrides=[f"experiment={experiment}"])
    task = hydra.utils.instantiate(cfg.model, _convert_="all")
    if ckpt:
        state = torch.load(ckpt, map_location="cpu", weights_only=True)["state_dict"]
        task.load_state_dict(state)
    sample, _ = build_sample(OmegaConf.to_container(cfg.data.generate, resolve=True))
    return task.net.eval(), sample


def simulated_batch(sample, n: int, seed: int = 7) -> tuple[torch.Tensor, ...]:
    """``n`` triggered showers as the net's inputs (grid from the simulation's array): traces,
    start times, trigger masks and station positions ``(n, 2, X, Y)`` (m)."""
    from hepnn.sim.airshower import simulate_triggered

    parts = list(simulate_triggered(n, np.random.default_rng(seed), sample))
    names = ("traces", "station_start_time", "station_x", "station_y")
    columns = {k: np.concatenate([p[k] for p in parts]) for k in names}
    mask = np.concatenate([p["station_triggered"] for p in parts])
    nx, ny = int(sample.array["nx"]), int(sample.array["ny"])
    traces = torch.from_numpy(columns["traces"]).reshape(n, 1, nx, ny, -1)
    start = torch.from_numpy(columns["station_start_time"]).reshape(n, 1, nx, ny)
    position = torch.from_numpy(np.stack([columns["station_x"], columns["station_y"]], axis=1))
    return traces, start, torch.from_numpy(mask).reshape(n, 1, nx, ny), position.reshape(n, 2, nx, ny)


def time_forward(net, inputs, batch_size: int, repeat: int) -> float:
    """Median seconds for one pass over all events in batches of ``batch_size``."""
    n = len(inputs[0])
    passes = []
    with torch.inference_mode():
        for i in range(repeat + 1):
            start = time.perf_counter()
            for lo in range(0, n, batch_size):
                net(*(x[lo : lo + batch_size] for x in inputs))
            if i:  # the first pass warms up
                passes.append(time.perf_counter() - start)
    return statistics.median(passes)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--experiment", default="airshower_3dconv")
    parser.add_argument("--ckpt", default=None)
    parser.add_argument("--batch-sizes", default="1,16,128,1024")
    parser.add_argument("--threads", default="1,2")
    parser.add_argument("--events", type=int, default=2048)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()

    net, sample = build_net(args.experiment, args.ckpt)
    inputs = simulated_batch(sample, args.events)
    if net.first_guess is None:  # the station positions are only an input of the first guess
        inputs = inputs[:3]
    n_parameters = sum(p.numel() for p in net.parameters())
    print(f"{args.experiment}: TraceConv3D, {n_parameters} parameters, {args.events} simulated showers,")
    print(f"traces {tuple(inputs[0].shape[1:])} per event, torch {torch.__version__}, forward only\n")
    fit = net.fit_first_guess if net.first_guess is not None else None
    print(f"{'threads':>7}  {'batch':>5}  {'events/s':>9}  {'ms/event':>8}  {'first guess ms/event':>20}")
    for threads in (int(t) for t in args.threads.split(",")):
        torch.set_num_threads(threads)
        for batch_size in (int(b) for b in args.batch_sizes.split(",")):
            events = inputs if batch_size > 1 else tuple(x[:256] for x in inputs)  # batch 1 is slow
            seconds = time_forward(net, events, batch_size, args.repeat)
            rate = len(events[0]) / seconds
            fit_ms = "-"
            if fit is not None:
                fit_ms = f"{1000 * time_forward(fit, events, batch_size, args.repeat) / len(events[0]):.3f}"
            print(f"{threads:>7}  {batch_size:>5}  {rate:>9.0f}  {1000 / rate:>8.3f}  {fit_ms:>20}")


if __name__ == "__main__":
    main()
