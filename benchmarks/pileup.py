"""Pile-up mitigation: the learned cleaning beside the rule-based methods, on the same test jets.

    python benchmarks/pileup.py [--mu 60,140] [--jets 20000]
        [--presets pileup_unet,pileup_gru,pileup_pfn,pileup_segment]
        [--max-epochs 20] [--patience 5] [--sample-dir data/results/pileup_mu<mu>]
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
   figures (mean IoU, accuracy on the occupied pixels).

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
from hepnn.pileup.figures import FIGURES, correction_estimates, correction_figures
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
# what a perfect prediction would give: the prediction-file stem and the row's label
LIMITS = (
    ("truth_image", "truth image (a perfect per-pixel prediction)"),
    ("truth_weights", "true hard-scatter shares (a perfect per-particle prediction)"),
    ("truth_mask", "true pixel classes (a perfect segmentation)"),
)
# per-element or per-pixel figures of a learned row, from its run summary
LEARNED_FIGURES = ("element_auc", "neutral_auc", "pixel_rmse", "mean_iou", "occupied_pixel_accuracy")


def generate_config(
    sample_dir: Path, mu: float, jets: int, jets_per_file: int = JETS_PER_FILE, pool_events: int | None = None
) -> dict:
    """The ``generate`` mapping of the benchmark's sample, as ``python -m hepnn.generate`` composes it."""
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    from hepnn.utils.config import config_dir, register_resolvers

    register_resolvers()
    overrides = [
        "generate=qcd_pu",
        f"generate.output_dir={sample_dir}",
        f"generate.pileup.mu={mu}",
        f"generate.processes.qcd.n_jets={jets}",
        f"generate.jets_per_file={min(jets_per_file, jets)}",
        *([f"generate.pileup.pool_events={pool_events}"] if pool_events else []),
    ]
    with initialize_config_dir(config_dir(), version_base="1.3"):
        cfg = compose("generate", overrides=overrides)
    return OmegaConf.to_container(cfg.generate, resolve=True)


def ensure_sample(sample_dir: Path, mu: float, args) -> None:
    """Generate what is missing of the sample (resumes an interrupted generation)."""
    from hepnn.sim.kinds import build_sample

    values = generate_config(sample_dir, mu, args.jets, args.jets_per_file, args.pool_events)
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


def read_run(run_dir: Path) -> dict[str, np.ndarray]:
    """A finished run's test predictions: columns sorted by (source file name, entry), plus
    ``source`` (the file of each row)."""
    with uproot.open(run_dir / "predictions" / "test.root") as f:
        sources = [str(p) for p in json.loads(str(f["source_files"]))]
        columns = f["predictions"].arrays(library="np")
    columns["source"] = np.array(sources)[columns["file_index"]]
    order = np.lexsort((columns["entry"], [Path(s).name for s in columns["source"]]))
    return {k: v[order] for k, v in columns.items()}


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


def table(result: dict) -> str:
    """The Markdown table of one mu."""
    best = RULE_LABELS[result["best_rule"]]
    lines = [
        f"mu = {result['mu']:g}: {result['test_jets']} test jets (QCD, 550 < pT < 650 GeV, anti-kT R = 0.8), "
        f"against the same jets without pile-up; bias = median, resolution = 68 % half-width, GeV",
        "",
        "| method | pT bias | pT resolution | mass bias | mass resolution "
        f"| resolution - {best} (pT / mass) "
        "| per-particle AUC (all / neutral), or per pixel: RMSE or mean IoU and accuracy (occupied) |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in result["rows"]:
        cells = [f"{row[k][0]:.1f} ± {row[k][1]:.1f}" for k in FIGURES]
        difference = row.get(f"minus_{result['best_rule']}")
        diff = (
            " / ".join(
                f"{difference[k][0]:+.1f} ± {difference[k][1]:.1f}"
                for k in ("pt_resolution", "mass_resolution")
            )
            if difference
            else ""
        )
        lines.append(f"| {row['method']} | {' | '.join(cells)} | {diff} | {learned_text(row)} |")
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
        results_dir.mkdir(parents=True, exist_ok=True)
        saved.write_text(json.dumps(result, indent=1) + "\n")
        print(table(result), "\n", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
