"""Pile-up mitigation: the learned cleaning beside the rule-based methods, on the same test jets.

    python benchmarks/pileup.py [--mu 60,140] [--jets 20000]
        [--presets pileup_unet,pileup_gru,pileup_pfn,pileup_segment]
        [--max-epochs 20] [--patience 5] [--sample-dir data/results/pileup_mu<mu>]
        [--top-jets 4000] [--top-sample-dir data/results/pileup_top_mu<mu>]
        [--results-dir benchmarks/results/pileup] [--table-only]

For every mu this

1. generates a fixed, seeded QCD sample with pile-up (``generate=qcd_pu`` at that mu, ``--jets``
   jets in files of 5000; an interrupted generation resumes);
2. trains every learned preset (``--presets``, e.g. ``pileup_unet``) on its training split
   (``python -m hepnn.train``, at most ``--max-epochs`` epochs, stopped when the validation loss
   has not improved for ``--patience`` epochs, the best epoch tested; a run directory per preset
   and mu under ``--runs-dir``, resumed when interrupted);
3. reads the test jets of the first preset's predictions back from the sample (the same entries
   for every row: checked) and applies the rule-based corrections of :mod:`hepnn.pileup.rules`
   (none, CHS, area subtraction, SoftKiller, each also after CHS);
4. prints one Markdown table per mu: the bias and 68 % resolution (GeV) of the jets' pT and mass
   against the same jets without pile-up, with bootstrap errors (the same resamples for every row),
   and for every learned row the paired difference of its resolutions to the best rule-based one (the
   one of the best mass resolution), and its per-particle AUC, per-pixel error or segmentation
   figures (mean IoU, accuracy on the occupied pixels);
5. with ``--top-jets``, generates top jets at the same mu (``generate=toptag_pu``, its ttbar process
   alone), applies every trained preset to them (``python -m hepnn.evaluate``) and every rule, and
   adds the position and width of the top-jet mass peak (:func:`hepnn.pileup.figures.mass_peak`,
   bootstrap errors) of every method and of the same jets without pile-up.

Each mu's figures are saved in ``<results-dir>/mu<mu>.json`` (small files to commit).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import awkward as ak
import numpy as np
import uproot

from hepnn.metrics.bootstrap import DEFAULT_RESAMPLES, bootstrap_figures
from hepnn.pileup import rules
from hepnn.pileup.figures import (
    FIGURES,
    PEAK_FIGURES,
    correction_estimates,
    correction_figures,
    peak_estimates,
)
from hepnn.utils.config import project_root

JETS_PER_FILE = 5000
RADIUS = 0.8  # the anti-kT radius of the qcd_pu sample
RULE_LABELS = {
    "none": "no correction",
    "chs": "CHS",
    "area": "area subtraction (rho A)",
    "chs_area": "CHS + area subtraction",
    "softkiller": "SoftKiller",
    "chs_softkiller": "CHS + SoftKiller",
}
TRUTH = ("jet_nopu_pt", "jet_nopu_mass")
NO_PILEUP = "jets without pile-up (the reference)"
# what a perfect prediction would give: the prediction-file stem and the row's label
LIMITS = (
    ("truth_image", "truth image (a perfect per-pixel prediction)"),
    ("truth_weights", "true hard-scatter shares (a perfect per-particle prediction)"),
    ("truth_mask", "true pixel classes (a perfect segmentation)"),
)
# per-element or per-pixel figures of a learned row, from its run summary
LEARNED_FIGURES = ("element_auc", "neutral_auc", "pixel_rmse", "mean_iou", "occupied_pixel_accuracy")


def generate_config(
    sample_dir: Path,
    mu: float,
    jets: int,
    jets_per_file: int = JETS_PER_FILE,
    pool_events: int | None = None,
    top: bool = False,
) -> dict:
    """The ``generate`` mapping of the benchmark's QCD sample (or, with ``top``, of its top jets:
    ``generate=toptag_pu`` without the QCD process), as ``python -m hepnn.generate`` composes it."""
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    from hepnn.utils.config import config_dir, register_resolvers

    register_resolvers()
    process = "ttbar" if top else "qcd"
    overrides = [
        "generate=toptag_pu" if top else "generate=qcd_pu",
        *(["generate.processes.qcd=null"] if top else []),
        f"generate.output_dir={sample_dir}",
        f"generate.pileup.mu={mu}",
        f"generate.processes.{process}.n_jets={jets}",
        f"generate.jets_per_file={min(jets_per_file, jets)}",
        *([f"generate.pileup.pool_events={pool_events}"] if pool_events else []),
    ]
    with initialize_config_dir(config_dir(), version_base="1.3"):
        cfg = compose("generate", overrides=overrides)
    return OmegaConf.to_container(cfg.generate, resolve=True)


def ensure_sample(sample_dir: Path, mu: float, args, jets: int | None = None, top: bool = False) -> None:
    """Generate what is missing of the sample (resumes an interrupted generation)."""
    from hepnn.sim.kinds import build_sample

    jets = args.jets if jets is None else jets
    values = generate_config(sample_dir, mu, jets, args.jets_per_file, args.pool_events, top=top)
    workers = args.workers
    if workers:
        values["workers"] = workers
    config, generate = build_sample(values)
    print(generate(config, progress_bar=True).summary(), flush=True)


def train_preset(preset: str, sample_dir: Path, run_dir: Path, args) -> float:
    """Train and test one preset (resuming its run directory); returns the command's wall seconds."""
    command = [
        sys.executable,
        "-m",
        "hepnn.train",
        f"experiment={preset}",
        f"data.files={sample_dir}/qcd_*.root",
        f"trainer.max_epochs={args.max_epochs}",
        f"callbacks.early_stopping.patience={args.patience}",
        f"hydra.run.dir={run_dir}",
        "data.progress_bar=false",
        "+trainer.enable_progress_bar=false",
        *args.overrides,
    ]
    run_dir.parent.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    with open(run_dir.parent / f"{preset}.log", "a") as log:
        log.write(f"\n$ {' '.join(command)}\n")
        log.flush()
        result = subprocess.run(command, cwd=project_root(), stdout=log, stderr=subprocess.STDOUT)
    if result.returncode != 0:
        raise RuntimeError(f"{preset} failed ({result.returncode}); see {run_dir.parent / f'{preset}.log'}")
    return time.perf_counter() - start


def read_run(run_dir: Path, name: str = "test.root") -> dict[str, np.ndarray]:
    """A finished run's predictions (``predictions/<name>``): columns sorted by (source file name,
    entry), plus ``source`` (the file of each row)."""
    with uproot.open(run_dir / "predictions" / name) as f:
        sources = [str(p) for p in json.loads(str(f["source_files"]))]
        columns = f["predictions"].arrays(library="np")
    columns["source"] = np.array(sources)[columns["file_index"]]
    order = np.lexsort((columns["entry"], [Path(s).name for s in columns["source"]]))
    return {k: v[order] for k, v in columns.items()}


def evaluate_on_tops(preset: str, run_dir: Path, top_dir: Path, out_dir: Path) -> None:
    """Apply a trained preset's best checkpoint to every top jet (``python -m hepnn.evaluate``),
    unless ``out_dir`` already holds the result."""
    if (out_dir / "predictions" / "evaluate.root").is_file():
        return
    summary = json.loads((run_dir / "summary.json").read_text())
    command = [
        sys.executable,
        "-m",
        "hepnn.evaluate",
        f"ckpt_path={summary['best_checkpoint']}",
        f"data.files={top_dir}/ttbar_*.root",
        f"hydra.run.dir={out_dir}",
        "data.progress_bar=false",
    ]
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    with open(out_dir.parent / f"{out_dir.name}.log", "a") as log:
        log.write(f"\n$ {' '.join(command)}\n")
        log.flush()
        result = subprocess.run(command, cwd=project_root(), stdout=log, stderr=subprocess.STDOUT)
    if result.returncode != 0:
        raise RuntimeError(f"{preset} on the top jets failed ({result.returncode}); see {out_dir}.log")


def top_peaks(top_runs: dict[str, Path], seed: int = 0) -> tuple[int, dict[str, dict]]:
    """The top-jet mass peak (position and width, GeV, with bootstrap errors) of every method on
    the same top jets: the jets without pile-up, every rule and every learned preset (its
    evaluation on the top jets). Returns the number of top jets and ``{method label: figures}``."""
    first = next(iter(top_runs.values()))
    reference = read_run(first, "evaluate.root")
    key = entries_key(reference)
    jets = test_jets(reference["source"], reference["entry"])
    masses = {NO_PILEUP: ak.to_numpy(jets[TRUTH[1]]).astype(np.float64)}
    for method in rules.METHODS:
        masses[RULE_LABELS[method]] = rules.corrected(jets, method, RADIUS)[1]
    for preset, out_dir in top_runs.items():
        run = read_run(out_dir, "evaluate.root")
        if entries_key(run) != key:
            raise RuntimeError(f"{out_dir}: its top jets differ from those of {first}")
        masses[preset] = run["mass_corrected"]
    peaks = {}
    for label, mass in masses.items():
        found = peak_estimates(mass, seed=seed)
        peaks[label] = {f"top_{k}": [found[k].value, found[k].error] for k in PEAK_FIGURES}
    return len(key), peaks


def test_jets(sources: np.ndarray, entries: np.ndarray) -> ak.Array:
    """The branches the rule-based corrections need, of the given (file, entry) jets, in that order."""
    branches = ["part_px", "part_py", "part_pz", "part_energy", "part_pileup_vertex", *TRUTH]
    branches += [f"jet_{q}{s}" for q in ("rho", "rho_m", "softkiller_pt") for s in ("", "_chs")]
    pieces = []
    for source in dict.fromkeys(sources):
        chosen = entries[sources == source]
        with uproot.open(source) as f:
            arrays = f["tree"].arrays(branches)
        pieces.append(arrays[chosen])
    return ak.concatenate(pieces)


def entries_key(run: dict[str, np.ndarray]) -> list[str]:
    return [f"{Path(s).name}:{e}" for s, e in zip(run["source"], run["entry"], strict=True)]


def resolution_differences(pt_a, mass_a, pt_b, mass_b, true_pt, true_mass, seed: int) -> dict:
    """Paired bootstrap differences of the pT and mass resolutions, row a minus row b (GeV)."""

    def difference(pa, ma, pb, mb, tp, tm):
        a, b = correction_figures(pa, ma, tp, tm), correction_figures(pb, mb, tp, tm)
        return {k: a[k] - b[k] for k in ("pt_resolution", "mass_resolution")}

    arrays = [np.asarray(x, dtype=np.float64) for x in (pt_a, mass_a, pt_b, mass_b, true_pt, true_mass)]
    estimates = bootstrap_figures(difference, *arrays, n_resamples=DEFAULT_RESAMPLES, seed=seed)
    return {k: [e.value, e.error] for k, e in estimates.items()}


def mu_result(mu: float, runs: dict[str, Path], seed: int = 0) -> dict:
    """The rows of one mu: every rule-based method and every learned preset on the same test jets."""
    first = next(iter(runs.values()))
    reference = read_run(first)
    key = entries_key(reference)
    jets = test_jets(reference["source"], reference["entry"])
    true_pt, true_mass = (ak.to_numpy(jets[name]).astype(np.float64) for name in TRUTH)
    rows, corrected = [], {}
    for method in rules.METHODS:
        pt, mass = rules.corrected(jets, method, RADIUS)
        corrected[method] = (pt, mass)
        rows.append(
            {"method": RULE_LABELS[method], "kind": "rule", **estimates(pt, mass, true_pt, true_mass, seed)}
        )
    best = min(
        (m for m in rules.METHODS if m != "none"),
        key=lambda m: correction_figures(*corrected[m], true_pt, true_mass)["mass_resolution"],
    )
    limits = []
    for preset, run_dir in runs.items():
        run = read_run(run_dir)
        if entries_key(run) != key:
            raise RuntimeError(f"{run_dir}: its test jets differ from those of {first}")
        summary = json.loads((run_dir / "summary.json").read_text())
        pt, mass = run["pt_corrected"], run["mass_corrected"]
        row = {"method": preset, "kind": "learned", **estimates(pt, mass, true_pt, true_mass, seed)}
        row[f"minus_{best}"] = resolution_differences(pt, mass, *corrected[best], true_pt, true_mass, seed)
        row |= {
            "parameters": summary.get("parameters"),
            "epochs": summary.get("epochs"),
            "train_entries": summary.get("data/train_entries"),
            **{k: summary[f"test/{k}"] for k in LEARNED_FIGURES if f"test/{k}" in summary},
        }
        rows.append(row)
        for stem, label in LIMITS:
            if f"pt_{stem}" in run and label not in [r["method"] for r in limits]:
                found = estimates(run[f"pt_{stem}"], run[f"mass_{stem}"], true_pt, true_mass, seed)
                limits.append({"method": label, "kind": "limit", **found})
    rows += limits
    return {
        "mu": mu,
        "test_jets": len(true_pt),
        "mean_pileup_collisions": float(np.mean(reference["event_npu"]))
        if "event_npu" in reference
        else None,
        "best_rule": best,
        "rows": rows,
    }


def estimates(pt, mass, true_pt, true_mass, seed: int) -> dict:
    found = correction_estimates(pt, mass, true_pt, true_mass, seed=seed)
    return {name: [found[name].value, found[name].error] for name in FIGURES}


def learned_text(row: dict) -> str:
    if "element_auc" in row:
        return f"{row['element_auc']:.4f} / {row['neutral_auc']:.4f}"
    if "pixel_rmse" in row:
        return f"RMSE {row['pixel_rmse']:.2f} GeV"
    if "mean_iou" in row:
        return f"IoU {row['mean_iou']:.3f}, accuracy {row['occupied_pixel_accuracy']:.3f}"
    return ""


def with_top_peaks(result: dict, n_top: int, peaks: dict[str, dict]) -> dict:
    """The result of one mu with the top-jet mass peak of every method that has one, and the
    jets without pile-up as the first row."""
    rows = [{"method": NO_PILEUP, "kind": "reference", **peaks[NO_PILEUP]}]
    rows += [{**row, **peaks.get(row["method"], {})} for row in result["rows"] if row["kind"] != "reference"]
    return {**result, "top_jets": n_top, "rows": rows}


def pair_text(row: dict, keys: tuple[str, str], sign: str = "") -> str:
    if not all(k in row for k in keys):
        return ""
    return " / ".join(f"{row[k][0]:{sign}.1f} ± {row[k][1]:.1f}" for k in keys)


def table(result: dict) -> str:
    """The Markdown table of one mu."""
    best = RULE_LABELS[result["best_rule"]]
    tops = f"; the top mass peak of {result['top_jets']} top jets" if result.get("top_jets") else ""
    lines = [
        f"mu = {result['mu']:g}: {result['test_jets']} test jets (QCD, 550 < pT < 650 GeV, anti-kT R = 0.8), "
        f"against the same jets without pile-up; bias = median, resolution = 68 % half-width{tops}, GeV",
        "",
        "| method | pT bias | pT resolution | mass bias | mass resolution "
        f"| resolution - {best} (pT / mass) | top mass peak / width "
        "| per-particle AUC (all / neutral), or per pixel: RMSE or mean IoU and accuracy (occupied) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in result["rows"]:
        cells = [f"{row[k][0]:.1f} ± {row[k][1]:.1f}" if k in row else "" for k in FIGURES]
        diff = pair_text(
            row.get(f"minus_{result['best_rule']}", {}), ("pt_resolution", "mass_resolution"), "+"
        )
        peak = pair_text(row, tuple(f"top_{k}" for k in PEAK_FIGURES))
        lines.append(f"| {row['method']} | {' | '.join(cells)} | {diff} | {peak} | {learned_text(row)} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mu", default="60", help="comma-separated mean pile-up collisions")
    parser.add_argument("--jets", type=int, default=20_000)
    parser.add_argument("--jets-per-file", type=int, default=JETS_PER_FILE)
    parser.add_argument(
        "--pool-events", type=int, default=None, help="minimum-bias pool (default: the config's)"
    )
    parser.add_argument(
        "--presets",
        default="pileup_unet,pileup_gru,pileup_pfn,pileup_segment",
        help="learned presets, comma-separated",
    )
    parser.add_argument(
        "--top-jets", type=int, default=4000, help="top jets for the mass peak (0: no top-jet columns)"
    )
    parser.add_argument(
        "--top-sample-dir", type=Path, default=None, help="default: data/results/pileup_top_mu<mu>"
    )
    parser.add_argument("--max-epochs", type=int, default=20)
    parser.add_argument("--patience", type=int, default=5)
    parser.add_argument(
        "--workers", type=int, default=None, help="generation workers (default: the config's)"
    )
    parser.add_argument("--sample-dir", type=Path, default=None, help="default: data/results/pileup_mu<mu>")
    parser.add_argument("--runs-dir", type=Path, default=None, help="default: logs/results/pileup_mu<mu>")
    parser.add_argument("--results-dir", type=Path, default=None, help="default: benchmarks/results/pileup")
    parser.add_argument("--table-only", action="store_true", help="print the tables of the saved results")
    parser.add_argument("overrides", nargs="*", help="further Hydra overrides for every run")
    args = parser.parse_args(argv)
    root = project_root()
    results_dir = args.results_dir or root / "benchmarks" / "results" / "pileup"
    presets = [p for p in args.presets.split(",") if p]
    for mu in (float(m) for m in args.mu.split(",") if m):
        tag = f"mu{mu:g}"
        saved = results_dir / f"{tag}.json"
        if args.table_only:
            if saved.is_file():
                print(table(json.loads(saved.read_text())), "\n", flush=True)
            continue
        sample_dir = args.sample_dir or root / "data" / "results" / f"pileup_{tag}"
        runs_dir = args.runs_dir or root / "logs" / "results" / f"pileup_{tag}"
        ensure_sample(sample_dir, mu, args)
        runs = {}
        for preset in presets:
            run_dir = runs_dir / preset
            if not (run_dir / "summary.json").is_file():
                seconds = train_preset(preset, sample_dir, run_dir, args)
                print(f"{preset} at mu = {mu:g}: trained in {seconds:.0f} s", flush=True)
            runs[preset] = run_dir
        result = mu_result(mu, runs)
        if args.top_jets:
            top_dir = args.top_sample_dir or root / "data" / "results" / f"pileup_top_{tag}"
            ensure_sample(top_dir, mu, args, jets=args.top_jets, top=True)
            top_runs = {}
            for preset, run_dir in runs.items():
                top_runs[preset] = runs_dir / f"{preset}_top"
                evaluate_on_tops(preset, run_dir, top_dir, top_runs[preset])
            result = with_top_peaks(result, *top_peaks(top_runs))
        results_dir.mkdir(parents=True, exist_ok=True)
        saved.write_text(json.dumps(result, indent=1) + "\n")
        print(table(result), "\n", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
