"""Transfer learning: what fine-tuning a tagger pretrained on a large sample buys on small ones.

    python benchmarks/transfer.py [--cases w_vs_qcd,coarse_hcal] [--families pfn,cnn]
        [--sizes 500,2000,8000,32000] [--pretrained-runs logs/results/toptag]

The pretrained taggers are the toptag reference runs of ``benchmarks/results.py`` (``top_pfn``,
``top_cnn``: 350 000 training jets of top quarks against QCD). Every case fine-tunes them on a
small training set of another problem and compares three strategies on the same test jets:

- ``scratch``: the same net trained from its random initialisation;
- ``frozen``: the pretrained weights with the front end frozen (the PFN's per-particle network
  ``net.phi``, the CNN's convolutions ``net.blocks``); the dense head is retrained;
- ``full``: the pretrained weights, every layer trained.

Cases (:data:`CASES`):

- ``w_vs_qcd`` (another process): W jets against QCD jets of the jets4 reference sample
  (``benchmarks/results.py --sample jets4`` generates it);
- ``coarse_hcal`` (another detector): top against QCD jets generated with HCAL cells of 0.2 x 0.2
  instead of 0.1 x 0.1 (generated here, 25 000 jets per process).

For each case the first ``--sizes`` training jets (equal numbers per class), fixed validation and
test sets are written to small files of their own, so that every run of a case is tested on the
same jets. Every run trains at most ``--max-epochs`` epochs with early stopping on the validation
loss (``--patience``), the best epoch tested. Each run's figures are saved as it finishes
(``<results-dir>/<case>_<family>_<strategy>_<size>.json``): an interrupted benchmark resumes. The
table gives the test AUC with its bootstrap error, and the AUC difference of each pretrained
strategy to training from scratch with the error of paired resamples of the same test jets.
"""

from __future__ import annotations

import argparse
import glob
import json
import subprocess
import sys
import time
from pathlib import Path

import awkward as ak
import numpy as np
import uproot

from hepnn.analysis.runs import read_predictions
from hepnn.metrics.bootstrap import auc_difference, classifier_figures
from hepnn.utils.config import project_root
from hepnn.utils.rootio import write_tree

CASES = {
    "w_vs_qcd": {
        "sample": "data/results/jets4",
        "classes": {"QCD": "qcd_*.root", "Wqq": "wqq_*.root"},
        "what": "W against QCD jets (jets4 reference sample)",
    },
    "coarse_hcal": {
        "sample": "data/results/toptag_coarse_hcal",
        "classes": {"QCD": "qcd_*.root", "Tbqq": "ttbar_*.root"},
        "what": "top against QCD jets with HCAL cells of 0.2 x 0.2",
        "generate": [
            "generate=toptag",
            "generate.processes.qcd.n_jets=25000",
            "generate.processes.ttbar.n_jets=25000",
            "generate.jets_per_file=5000",
            "generate.detector.hcal.cell_eta=0.2",
            "generate.detector.hcal.cell_phi=0.2",
        ],
    },
}
FAMILIES = {
    "pfn": {"experiment": "top_pfn", "front_end": "net.phi"},
    "cnn": {"experiment": "top_cnn", "front_end": "net.blocks"},
}
STRATEGIES = ("scratch", "frozen", "full")
VAL_PER_CLASS = 2000
TEST_PER_CLASS = 5000
RESAMPLES = 200


def read_jets(pattern: str, first: int, count: int) -> dict:
    """``count`` jets from entry ``first`` on, over the files of ``pattern`` in name order (all
    branches but the counters of jagged collections)."""
    files = sorted(glob.glob(pattern))
    parts, seen = [], 0
    for path in files:
        with uproot.open(path) as f:
            tree = f["tree"]
            counters = {
                b.count_branch.name for b in tree.values() if getattr(b, "count_branch", None) is not None
            }
            n = tree.num_entries
            start, stop = max(first - seen, 0), min(first + count - seen, n)
            if start < stop:
                names = [k for k in tree.keys() if k not in counters]
                parts.append(tree.arrays(names, entry_start=start, entry_stop=stop))
            seen += n
        if seen >= first + count:
            break
    jets = ak.concatenate(parts)
    if len(jets) < count:
        raise SystemExit(f"transfer.py: error: {pattern} holds fewer than {first + count} jets")
    return {name: jets[name] if jets[name].ndim > 1 else ak.to_numpy(jets[name]) for name in jets.fields}


def write_split(path: Path, classes: dict, sample: Path, first: int, per_class: int) -> Path:
    """A file of ``per_class`` jets of every class, with the label branches of the class they stand for."""
    if path.is_file():
        return path
    columns = []
    for k, pattern in enumerate(classes.values()):
        jets = read_jets(str(sample / pattern), first, per_class)
        for j, other in enumerate(classes):
            jets[f"label_{other}"] = np.full(per_class, j == k)
        jets["label"] = np.full(per_class, k, dtype=np.int32)
        columns.append(jets)
    merged = {name: ak.concatenate([c[name] for c in columns]) for name in columns[0]}
    merged = {k: ak.to_numpy(v) if v.ndim == 1 else v for k, v in merged.items()}
    path.parent.mkdir(parents=True, exist_ok=True)
    write_tree(path, "tree", merged)
    return path


def case_files(case: str, sizes: list[int], work: Path, args) -> dict:
    """The case's training files per size and its fixed validation and test files."""
    definition = CASES[case]
    sample = args.sample_dirs.get(case) or project_root() / definition["sample"]
    if "generate" in definition and not (sample / "manifest.json").is_file():
        command = [
            sys.executable,
            "-m",
            "hepnn.generate",
            *definition["generate"],
            f"generate.output_dir={sample}",
        ]
        subprocess.run(command, cwd=project_root(), check=True)
    if not sample.is_dir():
        raise SystemExit(
            f"transfer.py: error: {sample} does not exist; run benchmarks/results.py for its sample"
        )
    classes = definition["classes"]
    test, val = args.test_per_class, args.val_per_class
    files = {
        "test": write_split(work / case / "test.root", classes, sample, 0, test),
        "val": write_split(work / case / "val.root", classes, sample, test, val),
    }
    for size in sizes:
        files[size] = write_split(work / case / f"train_{size}.root", classes, sample, test + val, size // 2)
    return files


def pretrained_checkpoint(runs: Path, family: str) -> Path:
    summary = runs / FAMILIES[family]["experiment"] / "summary.json"
    if not summary.is_file():
        raise SystemExit(
            f"transfer.py: error: no finished {FAMILIES[family]['experiment']} run in {runs}; "
            f"run benchmarks/results.py --sample toptag --presets {family} first"
        )
    return Path(json.loads(summary.read_text())["best_checkpoint"])


def run(case: str, family: str, strategy: str, size: int, files: dict, args) -> dict:
    """One fine-tuning (or training from scratch) run; returns its figures and the test scores' path."""
    name = f"{case}_{family}_{strategy}_{size}"
    run_dir = args.runs_dir / name
    overrides = [
        f"experiment={FAMILIES[family]['experiment']}",
        f"data.files={{train: {files[size]}, val: {files['val']}, test: {files['test']}}}",
        "data.baseline=null",
        "~data.labels",
        "+data.labels={" + ", ".join(f"{c}: label_{c}" for c in CASES[case]["classes"]) + "}",
        f"trainer.max_epochs={args.max_epochs}",
        f"callbacks.early_stopping.patience={args.patience}",
        f"hydra.run.dir={run_dir}",
        f"data.cache_dir={args.runs_dir}/cache",
        "data.progress_bar=false",
        "+trainer.enable_progress_bar=false",
    ]
    if strategy != "scratch":
        freeze = f", freeze: [{FAMILIES[family]['front_end']}]" if strategy == "frozen" else ""
        overrides.append(f"model.pretrained={{ckpt_path: {args.checkpoints[family]}{freeze}}}")
    start = time.perf_counter()
    with open(args.runs_dir / f"{name}.log", "a") as log:
        result = subprocess.run(
            [sys.executable, "-m", "hepnn.train", *overrides],
            cwd=project_root(),
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    if result.returncode != 0:
        raise RuntimeError(f"{name} failed; see {args.runs_dir / f'{name}.log'}")
    predictions = read_predictions(run_dir / "predictions" / "test.root")
    k = predictions["classes"].index(predictions["signal_class"])
    score, is_signal = predictions["scores"][:, k], predictions["labels"] == k
    figures = classifier_figures(score, is_signal, n_resamples=RESAMPLES)
    summary = json.loads((run_dir / "summary.json").read_text())
    return {
        "case": case,
        "family": family,
        "strategy": strategy,
        "train_jets": size,
        "test_jets": len(score),
        "auc": figures["auc"].value,
        "auc_error": figures["auc"].error,
        "epochs": summary.get("epochs"),
        "wall_seconds": round(time.perf_counter() - start, 1),
        "predictions": str(run_dir / "predictions" / "test.root"),
    }


def scores(row: dict) -> tuple[np.ndarray, np.ndarray]:
    predictions = read_predictions(row["predictions"])
    k = predictions["classes"].index(predictions["signal_class"])
    return predictions["scores"][:, k], predictions["labels"] == k


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--cases", default=",".join(CASES))
    parser.add_argument("--families", default=",".join(FAMILIES))
    parser.add_argument(
        "--sizes", default="500,2000,8000,32000", help="training jets (both classes together)"
    )
    parser.add_argument("--max-epochs", type=int, default=20)
    parser.add_argument("--patience", type=int, default=5)
    parser.add_argument("--pretrained-runs", type=Path, default=None, help="default: logs/results/toptag")
    parser.add_argument("--runs-dir", type=Path, default=None, help="default: logs/transfer")
    parser.add_argument("--results-dir", type=Path, default=None, help="default: benchmarks/results/transfer")
    parser.add_argument(
        "--sample-dir", action="append", default=[], help="CASE=DIR: the case's sample somewhere else"
    )
    parser.add_argument("--test-per-class", type=int, default=TEST_PER_CLASS)
    parser.add_argument("--val-per-class", type=int, default=VAL_PER_CLASS)
    args = parser.parse_args()
    args.sample_dirs = {
        k: Path(v).resolve() for k, _, v in (entry.partition("=") for entry in args.sample_dir)
    }
    root = project_root()
    args.runs_dir = (args.runs_dir or root / "logs" / "transfer").resolve()
    results_dir = (args.results_dir or root / "benchmarks" / "results" / "transfer").resolve()
    runs = (args.pretrained_runs or root / "logs" / "results" / "toptag").resolve()
    cases = [c for c in args.cases.split(",") if c]
    families = [f for f in args.families.split(",") if f]
    sizes = sorted(int(s) for s in args.sizes.split(","))
    unknown = sorted(set(cases) - set(CASES)) + sorted(set(families) - set(FAMILIES))
    if unknown:
        raise SystemExit(
            f"transfer.py: error: unknown cases or families {unknown}; known {list(CASES)}, {list(FAMILIES)}"
        )
    args.checkpoints = {family: pretrained_checkpoint(runs, family) for family in families}
    args.runs_dir.mkdir(parents=True, exist_ok=True)
    results_dir.mkdir(parents=True, exist_ok=True)
    rows = {}
    for case in cases:
        files = case_files(case, sizes, args.runs_dir / "samples", args)
        for family in families:
            for size in sizes:
                for strategy in STRATEGIES:
                    path = results_dir / f"{case}_{family}_{strategy}_{size}.json"
                    if not path.is_file():
                        print(f"{path.stem}: training", flush=True)
                        path.write_text(
                            json.dumps(run(case, family, strategy, size, files, args), indent=2) + "\n"
                        )
                    rows[(case, family, strategy, size)] = json.loads(path.read_text())
    for case in cases:
        print(f"\n{case}: {CASES[case]['what']}; test AUC, and AUC - scratch (paired bootstrap)\n")
        print("| family | strategy | " + " | ".join(f"{s} jets" for s in sizes) + " |")
        print("|---|---|" + "---|" * len(sizes))
        for family in families:
            for strategy in STRATEGIES:
                cells = []
                for size in sizes:
                    row = rows[(case, family, strategy, size)]
                    text = f"{row['auc']:.4f} ± {row['auc_error']:.4f}"
                    if strategy != "scratch":
                        mine, is_signal = scores(row)
                        theirs, _ = scores(rows[(case, family, "scratch", size)])
                        d = auc_difference(mine, theirs, is_signal, n_resamples=RESAMPLES)
                        text += f" ({d.value:+.4f} ± {d.error:.4f})"
                    cells.append(text)
                print(f"| {family} | {strategy} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
