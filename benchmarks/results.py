"""Results at scale: every tagger family and the physicist's baselines on one sample, one table.

    python benchmarks/results.py --sample toptag|qg|jets4 [--presets pfn,cnn] [--max-epochs 20]
        [--patience 5] [--sample-dir data/results/<sample>] [--results-dir benchmarks/results/<sample>]

From nothing, this

1. generates the sample's fixed, seeded reference sample (:data:`SAMPLES`: e.g. 500 000 top-tagging
   jets, files of 10 000 jets; an interrupted generation resumes, and the same seed gives the same
   files on any machine);
2. trains every family (:data:`FAMILIES`: the ``<prefix>_<family>`` experiment presets) on the same
   training split, each to convergence within a stated budget: at most ``--max-epochs`` epochs,
   stopped early when the validation loss has not improved for ``--patience`` epochs, the best
   epoch tested (``python -m hepnn.train``, one run directory per preset under ``--runs-dir``;
   an interrupted run resumes from its last checkpoint);
3. evaluates all of them on the same test jets (checked: every preset's test predictions list the
   same entries), with bootstrap uncertainties (:mod:`hepnn.metrics.bootstrap`), beside the cut-based
   baseline (the likelihood ratio of ``data.baseline``, filled on the same training split) and the
   high-level-feature net;
4. saves each preset's figures as it finishes (``<results-dir>/<preset>.json``, small files to
   commit: a long run is resumed, also on another machine, where it stopped) and prints one
   Markdown table of all finished rows.

The figures are signal (``model.signal_class``, the last class) against the rest. Training jets/s
counts the training batches of the last epoch; inference jets/s the test batches (loading
included); the wall time is that of the preset's training commands (all of them, for a resumed run).
To stop a long table and resume it later, send SIGTERM to the running ``hepnn.train`` (not to this
script): it checkpoints, and the time it spent is kept.
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from hepnn.analysis.runs import read_predictions
from hepnn.errors import ConfigError
from hepnn.metrics.bootstrap import auc_difference, classifier_figures
from hepnn.utils.config import project_root

# the reference samples: generate=<config>, jets per process, and the experiment-preset prefix
SAMPLES = {
    "toptag": {"generate": "toptag", "prefix": "top", "jets": {"qcd": 250_000, "ttbar": 250_000}},
    "qg": {"generate": "qg", "prefix": "qg", "jets": {"zjet_q": 100_000, "zjet_g": 100_000}},
    "jets4": {
        "generate": "jets4",
        "prefix": "jets4",
        "jets": {"qcd": 50_000, "ttbar": 50_000, "wqq": 50_000, "zqq": 50_000},
    },
}
JETS_PER_FILE = 10_000
# fastest first; pfn_jet (a PFN whose head also reads the jet observables) exists for toptag only
FAMILIES = ("hlf", "pfn", "pfn_jet", "cnn", "deepjet", "resnet", "gru", "lstm")
BASELINE = "baseline"
RESAMPLES = 200


def generate_config(sample: str, sample_dir: Path, jets_per_process: int | None = None) -> dict:
    """The ``generate`` mapping of a reference sample, as ``python -m hepnn.generate`` composes it
    (``jets_per_process`` replaces the reference counts, for a quick trial of the script)."""
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    from hepnn.utils.config import config_dir, register_resolvers

    register_resolvers()
    definition = SAMPLES[sample]
    overrides = [
        f"generate={definition['generate']}",
        f"generate.output_dir={sample_dir}",
        f"generate.jets_per_file={min(JETS_PER_FILE, jets_per_process or JETS_PER_FILE)}",
        *(f"generate.processes.{p}.n_jets={jets_per_process or n}" for p, n in definition["jets"].items()),
    ]
    with initialize_config_dir(config_dir(), version_base="1.3"):
        cfg = compose("generate", overrides=overrides)
    return OmegaConf.to_container(cfg.generate, resolve=True)


def ensure_sample(sample: str, sample_dir: Path, jets_per_process: int | None = None) -> dict:
    """Generate what is missing of the reference sample; returns its manifest.

    A directory holding another sample (other classes, or another configuration) is an error
    naming both.
    """
    from hepnn.sim.kinds import build_sample

    values = generate_config(sample, sample_dir, jets_per_process)
    manifest_path = sample_dir / "manifest.json"
    if manifest_path.is_file():
        found = json.loads(manifest_path.read_text()).get("classes")
        if found != list(values["classes"]):
            raise ConfigError(
                f"--sample-dir {sample_dir} holds a sample of classes {found}, but --sample {sample} has "
                f"classes {list(values['classes'])}; point --sample-dir at a {sample} sample or an empty one"
            )
    config, generate = build_sample(values)
    report = generate(config, progress_bar=True)
    print(report.summary(), flush=True)
    return json.loads(manifest_path.read_text())


def train_preset(preset: str, sample_dir: Path, run_dir: Path, args) -> None:
    """Train and test one preset (resuming its run directory)."""
    command = [
        sys.executable,
        "-m",
        "hepnn.train",
        f"experiment={preset}",
        f"data.files={sample_dir}/*.root",
        f"trainer.max_epochs={args.max_epochs}",
        f"callbacks.early_stopping.patience={args.patience}",
        f"hydra.run.dir={run_dir}",
        f"data.cache={args.cache}",
        f"data.cache_dir={args.runs_dir}/cache",
        "data.progress_bar=false",
        "+trainer.enable_progress_bar=false",
        *args.overrides,
    ]
    with open(run_dir.parent / f"{preset}.log", "a") as log:
        log.write(f"\n$ {' '.join(command)}\n")
        log.flush()
        result = subprocess.run(command, cwd=project_root(), stdout=log, stderr=subprocess.STDOUT)
    if result.returncode != 0:
        raise RuntimeError(f"{preset} failed ({result.returncode}); see {run_dir.parent / f'{preset}.log'}")


def test_entries_hash(predictions_path: Path) -> str:
    """A hash of the test entries (input file names and entry numbers) of a predictions file."""
    import uproot

    with uproot.open(predictions_path) as f:
        files = [Path(p).name for p in json.loads(str(f["source_files"]))]
        arrays = f["predictions"].arrays(["file_index", "entry"], library="np")
    names = np.array(files)[arrays["file_index"]]
    order = np.lexsort((arrays["entry"], names))
    digest = hashlib.sha256()
    digest.update(
        "\n".join(f"{n}:{e}" for n, e in zip(names[order], arrays["entry"][order], strict=True)).encode()
    )
    return digest.hexdigest()[:16]


def figures(scores: np.ndarray, is_signal: np.ndarray) -> dict:
    """AUC and 1/eps_B at eps_S = 0.3 and 0.5, each with its bootstrap error."""
    out = {}
    for name, estimate in classifier_figures(scores, is_signal, n_resamples=RESAMPLES).items():
        out[name], out[f"{name}_error"] = estimate.value, estimate.error
    return out


def signal_scores(run_dir: Path) -> tuple[np.ndarray, np.ndarray, dict]:
    """The signal score and is-signal flag of every test jet of a finished run, and its predictions."""
    predictions = read_predictions(run_dir / "predictions" / "test.root")
    k = predictions["classes"].index(predictions["signal_class"])
    return predictions["scores"][:, k], predictions["labels"] == k, predictions


def preset_result(
    preset: str, run_dir: Path, wall_seconds: float, hlf_run: Path | None
) -> tuple[dict, dict | None]:
    """The figures of a finished run, and of the baseline evaluated on its test jets (or None).

    The AUC differences to the baseline and to the high-level-feature net (``hlf_run``, when it has
    finished) come with the errors of paired resamples of the same test jets.
    """
    summary = json.loads((run_dir / "summary.json").read_text())
    path = run_dir / "predictions" / "test.root"
    score, is_signal, predictions = signal_scores(run_dir)
    common = {
        "test_jets": len(is_signal),
        "test_signal_jets": int(is_signal.sum()),
        "test_entries_hash": test_entries_hash(path),
        "signal_class": predictions["signal_class"],
        "classes": predictions["classes"],
    }
    row = {
        "preset": preset,
        **common,
        **figures(score, is_signal),
        "parameters": summary.get("parameters"),
        "train_entries": summary.get("data/train_entries"),
        "epochs": summary.get("epochs"),
        "best_checkpoint": Path(summary["best_checkpoint"]).name if summary.get("best_checkpoint") else None,
        "train_jets_per_second": summary.get("train/entries_per_second"),
        "inference_jets_per_second": summary.get("test/entries_per_second"),
        "wall_seconds": round(wall_seconds, 1),
    }
    references = {"baseline": predictions.get("baseline_score")}
    if hlf_run is not None and hlf_run != run_dir and (hlf_run / "predictions" / "test.root").is_file():
        hlf_score, _, _ = signal_scores(hlf_run)
        if test_entries_hash(hlf_run / "predictions" / "test.root") == common["test_entries_hash"]:
            references["hlf"] = hlf_score
    for name, reference in references.items():
        if reference is not None:
            difference = auc_difference(score, reference, is_signal, n_resamples=RESAMPLES)
            row[f"auc_minus_{name}"], row[f"auc_minus_{name}_error"] = difference.value, difference.error
    baseline = None
    if predictions.get("baseline_score") is not None:
        baseline = {
            "preset": f"cut-based ({' x '.join(predictions['baseline'])})",
            **common,
            **figures(predictions["baseline_score"], is_signal),
            "train_entries": summary.get("data/train_entries"),
        }
    return row, baseline


def machine() -> str:
    """The machine a row was measured on, in words."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), cpu)
    except OSError:
        pass
    devices = "CPU only"
    try:
        import torch

        if torch.cuda.is_available():
            devices = ", ".join(torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count()))
    except ImportError:
        pass
    return f"{cpu}, {len(os.sched_getaffinity(0))} cores, {devices}"


def commit() -> str:
    result = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=project_root(), capture_output=True, text=True
    )
    return result.stdout.strip() or "unknown"


def error_text(value: float, error: float, digits: int) -> str:
    if not np.isfinite(value):
        return "inf"
    if not np.isfinite(error):
        return f"{value:.{digits}f}"
    return f"{value:.{digits}f} ± {error:.{digits}f}"


def difference_text(row: dict, reference: str) -> str:
    """``+0.0081 ± 0.0007 (11.6 sigma)``: the paired AUC difference to a reference, or ``-``."""
    value, error = row.get(f"auc_minus_{reference}"), row.get(f"auc_minus_{reference}_error")
    if value is None or error is None or not error > 0:
        return "-"
    return f"{value:+.4f} ± {error:.4f} ({value / error:+.1f} sigma)"


def table(rows: list[dict]) -> str:
    """The Markdown table of finished rows (baseline first, then the presets in FAMILIES order)."""
    lines = [
        "| tagger | parameters | test AUC | AUC - baseline | AUC - HLF | 1/eps_B at eps_S = 0.3 "
        "| 1/eps_B at eps_S = 0.5 | training jets/s | inference jets/s | epochs | wall time [min] |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        cells = [
            row["preset"],
            f"{row['parameters']:,}" if row.get("parameters") else "-",
            error_text(row["auc"], row["auc_error"], 4),
            difference_text(row, "baseline"),
            difference_text(row, "hlf"),
            error_text(row["rej30"], row["rej30_error"], 1),
            error_text(row["rej50"], row["rej50_error"], 1),
            f"{row['train_jets_per_second']:.0f}" if row.get("train_jets_per_second") else "-",
            f"{row['inference_jets_per_second']:.0f}" if row.get("inference_jets_per_second") else "-",
            str(row["epochs"]) if row.get("epochs") is not None else "-",
            f"{row['wall_seconds'] / 60:.0f}" if row.get("wall_seconds") else "-",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sample", choices=sorted(SAMPLES), default="toptag")
    parser.add_argument(
        "--presets", default=None, help="families to train, in order (default: all there are)"
    )
    parser.add_argument("--max-epochs", type=int, default=20)
    parser.add_argument("--patience", type=int, default=5, help="epochs without a better validation loss")
    parser.add_argument("--cache", default="memory", help="data.cache of the runs: memory, disk or null")
    parser.add_argument("--sample-dir", type=Path, default=None, help="default: data/results/<sample>")
    parser.add_argument("--runs-dir", type=Path, default=None, help="default: logs/results/<sample>")
    parser.add_argument("--results-dir", type=Path, default=None, help="default: benchmarks/results/<sample>")
    parser.add_argument("--table-only", action="store_true", help="print the table of the saved results")
    parser.add_argument(
        "--recompute",
        action="store_true",
        help="recompute the figures of saved rows from their runs' predictions (keeping timings and context)",
    )
    parser.add_argument(
        "--jets-per-process",
        type=int,
        default=None,
        help="a smaller sample, for a quick trial (not the table)",
    )
    parser.add_argument("overrides", nargs="*", help="further Hydra overrides for every run")
    args = parser.parse_args()
    root = project_root()
    sample_dir = (args.sample_dir or root / "data" / "results" / args.sample).resolve()
    args.runs_dir = (args.runs_dir or root / "logs" / "results" / args.sample).resolve()
    results_dir = (args.results_dir or root / "benchmarks" / "results" / args.sample).resolve()
    results_dir.mkdir(parents=True, exist_ok=True)
    prefix = SAMPLES[args.sample]["prefix"]
    presets_dir = root / "conf" / "experiment"
    if args.presets is None:
        families = [f for f in FAMILIES if (presets_dir / f"{prefix}_{f}.yaml").is_file()]
    else:
        families = [f for f in args.presets.split(",") if f]
    unknown = [f for f in families if not (root / "conf" / "experiment" / f"{prefix}_{f}.yaml").is_file()]
    if unknown:
        raise SystemExit(f"results.py: error: --presets {unknown}: no experiment {prefix}_<family> preset")

    if not args.table_only:
        try:
            manifest = ensure_sample(args.sample, sample_dir, args.jets_per_process)
        except ConfigError as exc:
            raise SystemExit(f"results.py: error: {exc}") from None
        args.runs_dir.mkdir(parents=True, exist_ok=True)
        for family in families:
            preset = f"{prefix}_{family}"
            result_path = results_dir / f"{preset}.json"
            if result_path.is_file():
                print(f"{preset}: done before ({result_path})", flush=True)
                continue
            run_dir = args.runs_dir / preset
            timing_path = args.runs_dir / f"{preset}.seconds"
            spent = float(timing_path.read_text()) if timing_path.is_file() else 0.0
            print(f"{preset}: training in {run_dir}", flush=True)
            start = time.perf_counter()
            try:
                train_preset(preset, sample_dir, run_dir, args)
            finally:
                # a stopped training (SIGTERM to hepnn.train) resumes later: its time counts too
                spent += time.perf_counter() - start
                timing_path.write_text(str(spent))
            row, baseline = preset_result(preset, run_dir, spent, args.runs_dir / f"{prefix}_hlf")
            context = {
                "sample": args.sample,
                "sample_jets": sum(manifest["processes"][p]["n_jets"] for p in manifest["processes"]),
                "sample_seed": manifest.get("seed"),
                "budget": {"max_epochs": args.max_epochs, "patience": args.patience},
                "overrides": list(args.overrides),
                "machine": machine(),
                "commit": commit(),
                "date": datetime.date.today().isoformat(),
            }
            result_path.write_text(json.dumps({**row, **context}, indent=2) + "\n")
            if baseline is not None and not (results_dir / f"{BASELINE}.json").is_file():
                (results_dir / f"{BASELINE}.json").write_text(
                    json.dumps({**baseline, **context}, indent=2) + "\n"
                )
            print(f"{preset}: AUC {row['auc']:.4f} ± {row['auc_error']:.4f} ({result_path})", flush=True)

    if args.recompute:
        for family in FAMILIES:
            preset, run_dir = f"{prefix}_{family}", args.runs_dir / f"{prefix}_{family}"
            result_path = results_dir / f"{preset}.json"
            if result_path.is_file() and (run_dir / "summary.json").is_file():
                saved = json.loads(result_path.read_text())
                row, baseline = preset_result(
                    preset, run_dir, saved["wall_seconds"], args.runs_dir / f"{prefix}_hlf"
                )
                context = {k: v for k, v in saved.items() if k not in row}
                result_path.write_text(json.dumps({**saved, **row, **context}, indent=2) + "\n")
                if baseline is not None:
                    (results_dir / f"{BASELINE}.json").write_text(
                        json.dumps({**baseline, **context}, indent=2) + "\n"
                    )
    rows = []
    for name in (BASELINE, *(f"{prefix}_{f}" for f in FAMILIES)):
        path = results_dir / f"{name}.json"
        if path.is_file():
            rows.append(json.loads(path.read_text()))
    if not rows:
        print(f"no results in {results_dir} yet")
        return
    hashes = {row["test_entries_hash"] for row in rows}
    if len(hashes) > 1:
        raise SystemExit(f"results.py: error: the rows of {results_dir} were tested on different test jets")
    first = rows[0]
    print(
        f"\n{args.sample}: {first['sample_jets']} jets (seed {first['sample_seed']}), "
        f"{first.get('train_entries') or '?'} training and {first['test_jets']} test jets "
        f"({first['signal_class']} vs rest); budget {first['budget']['max_epochs']} epochs, early stopping "
        f"after {first['budget']['patience']} without a better validation loss; {first['machine']}\n"
    )
    print(table(rows))


if __name__ == "__main__":
    main()
