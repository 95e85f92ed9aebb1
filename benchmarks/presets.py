"""Tagger comparison: every ``experiment=`` preset of a sample trained with the same budget.

    python benchmarks/presets.py [--sample top] [--epochs 4] [--presets top_pfn,top_cnn]

Runs ``python -m hepnn.train experiment=<preset> trainer.max_epochs=<epochs>`` for each preset
(the sample is generated first where missing), one after the other with the same seed, and
prints one row per preset from the run's ``summary.json``: test AUC (signal vs rest, and one vs
rest per class for more than two classes), 1/eps_B at eps_S = 0.3, trainable parameters,
training jets/s (last epoch: batches from the loader through forward, backward and optimiser
step, without validation) and the wall time of the whole run.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

from hepnn.utils.config import project_root


def run_preset(preset: str, epochs: int, out: Path, extra: list[str]) -> dict:
    """Train one preset; returns its summary (with the wall time of the command)."""
    run_dir = out / preset
    command = [
        sys.executable,
        "-m",
        "hepnn.train",
        f"experiment={preset}",
        f"trainer.max_epochs={epochs}",
        "callbacks.early_stopping=null",
        f"hydra.run.dir={run_dir}",
        "data.progress_bar=false",
        "+trainer.enable_progress_bar=false",
        *extra,
    ]
    start = time.perf_counter()
    result = subprocess.run(command, cwd=project_root(), capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    summary = json.loads((run_dir / "summary.json").read_text())
    summary["command_seconds"] = time.perf_counter() - start
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sample", default="top", help="preset prefix: top, qg or jets4")
    parser.add_argument("--presets", default="", help="comma-separated presets (default: all of --sample)")
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--out", default=str(project_root() / "logs" / "presets"))
    parser.add_argument("extra", nargs="*", help="further Hydra overrides for every run")
    args = parser.parse_args()

    presets = (
        args.presets.split(",")
        if args.presets
        else sorted(p.stem for p in (project_root() / "conf" / "experiment").glob(f"{args.sample}_*.yaml"))
    )
    rows = []
    for preset in presets:
        summary = run_preset(preset, args.epochs, Path(args.out), args.extra)
        rows.append((preset, summary))
        print(f"{preset}: done in {summary['command_seconds']:.0f} s", flush=True)

    per_class = sorted({k for _, s in rows for k in s if k.startswith("test/auc_")})
    header = f"{'preset':<16} {'AUC':>7} {'1/eps_B@0.3':>12} {'params':>9} {'train jets/s':>12} {'wall s':>7}"
    header += "".join(f" {k.removeprefix('test/auc_'):>8}" for k in per_class)
    print(f"\n{args.epochs} epochs each, seed and sample shared\n{header}")
    for preset, s in rows:
        line = (
            f"{preset:<16} {s.get('test/auc', float('nan')):>7.4f} {s.get('test/rej30', float('nan')):>12.1f}"
            f" {s['parameters']:>9} {s.get('train/entries_per_second', float('nan')):>12.0f}"
            f" {s['command_seconds']:>7.0f}"
        )
        line += "".join(f" {s.get(k, float('nan')):>8.4f}" for k in per_class)
        print(line)
        if "test/confusion_matrix" in s:
            print(f"{'':<16} confusion (rows true, columns predicted): {s['test/confusion_matrix']}")


if __name__ == "__main__":
    main()
