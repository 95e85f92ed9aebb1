"""Jets found in whole events: the single-shot detector beside anti-kT + mass tag, on the same events.

    python benchmarks/detection.py [--run-dir logs/results/events_calo/events_ssd]
        [--baseline-pt-min 150] [--resamples 100] [--json benchmarks/results/detection/events_ssd.json]

Reads a finished ``experiment=events_ssd`` run (its test predictions: the detector's boxes and the
truth objects of every test event, with the file and entry each came from) and builds the
physicist's baseline on exactly those events (:mod:`hepnn.detection.baseline`): anti-kT (R = 0.8,
FastJet) of the ECAL and HCAL cells of the event, jets above ``--baseline-pt-min`` GeV, tagged by
the class fractions of their mass bin, filled on the training events of the same files (the
training split of the run). Both are judged with the same matching and figures
(:mod:`hepnn.detection.average_precision`): AP per class and mAP at IoU >= 0.5 and at Delta R <
0.4, efficiency and fake rate of the boxes with score >= the run's ``efficiency_score`` (for the
baseline, every jet that has a class), and the relative pT and mass bias and resolution of the
matched boxes. Errors: bootstrap over test events (``--resamples``), the same resampled events for
both, which also gives the paired difference of every figure (detector minus baseline) with its
error. Speed: the detector's test
throughput as the run measured it (inference and loading) and the baseline's clustering and tagging
throughput measured here, events/s.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import awkward as ak
import numpy as np
import uproot
import yaml

from hepnn.analysis.runs import read_predictions
from hepnn.detection import average_precision as metrics
from hepnn.detection.baseline import MassTag, calorimeter_jets
from hepnn.detection.matching import match
from hepnn.tasks.detection import flat_objects
from hepnn.utils.config import project_root

MASS_EDGES = np.arange(0.0, 400.0 + 5.0, 5.0)  # GeV; the last bin takes the overflow
LAYERS = ("ecal", "hcal")
FIGURES = ("map", "efficiency", "fake_rate", "pt_bias", "pt_resolution", "mass_bias", "mass_resolution")


def read_events(path: str, entries: np.ndarray, branches: list[str]) -> dict[str, ak.Array]:
    """The ``branches`` of the given entries of one sample file."""
    with uproot.open(path) as f:
        arrays = f["tree"].arrays(branches)
    return {b: arrays[b][entries] for b in branches}


def cells_of(events: dict[str, ak.Array]) -> list[tuple[ak.Array, ak.Array, ak.Array]]:
    return [(events[f"{x}_eta"], events[f"{x}_phi"], events[f"{x}_et"]) for x in LAYERS]


def cell_branches() -> list[str]:
    return [f"{x}_{q}" for x in LAYERS for q in ("eta", "phi", "et")]


def training_events(files: list[str], split: dict) -> tuple[dict, dict]:
    """The calorimeter cells and the truth objects of the training entries of every file."""
    names = [*cell_branches(), "obj_eta", "obj_phi", "obj_radius", "obj_class", "obj_pt", "obj_mass"]
    parts = []
    for path in files:
        with uproot.open(path) as f:
            n = f["tree"].num_entries
        stop = int(np.floor(split["train"] * n + 0.5))
        parts.append(read_events(path, np.arange(stop), names))
    merged = {b: ak.concatenate([p[b] for p in parts]) for b in names}
    truth = {q: merged[f"obj_{q}"] for q in ("eta", "phi", "radius", "class", "pt", "mass")}
    return merged, truth


def baseline_boxes(jets: dict[str, ak.Array], tag: MassTag | None, radius: float) -> dict[str, ak.Array]:
    """Jets as the per-event box columns of the detector's predictions (class and score from ``tag``)."""
    counts = ak.num(jets["pt"], axis=1)
    flat = {k: ak.to_numpy(ak.flatten(v)) for k, v in jets.items()}
    if tag is None:
        classes, scores = np.zeros(len(flat["pt"]), dtype=np.int64), np.ones(len(flat["pt"]))
    else:
        classes, scores = tag(flat["mass"])
    width = np.full(len(flat["pt"]), 2 * radius)
    columns = {
        "eta": flat["eta"],
        "phi": flat["phi"],
        "width_eta": width,
        "width_phi": width,
        "score": scores,
        "class": classes,
        "pt": flat["pt"],
        "mass": flat["mass"],
    }
    return {f"box_{k}": ak.unflatten(v, counts) for k, v in columns.items()}


def matched_classes(boxes: dict, truth: dict, delta_r: float) -> np.ndarray:
    """The class of the truth object each baseline jet matches (Delta R, class-agnostic; -1: none)."""
    columns = {**boxes, **{f"true_{k}": v for k, v in truth.items()}}
    pred, true = flat_objects(columns)
    import torch

    found = match(
        torch.as_tensor(pred["event"]),
        torch.as_tensor(pred["pt"]),
        torch.as_tensor(np.stack([pred["eta"], pred["phi"]], axis=1)),
        torch.as_tensor(true["event"]),
        torch.as_tensor(np.stack([true["eta"], true["phi"]], axis=1)),
        delta_r_threshold=delta_r,
    )
    partner = found.pred_to_true.numpy()
    return np.where(partner >= 0, true["class"][np.clip(partner, 0, None)], -1).astype(np.int64)


def figures(pred: dict, truth: dict, settings: dict, classes: list[str]) -> dict[str, float]:
    """The table's figures of flat boxes and truth objects."""
    out = {}
    for label, criterion in (
        ("iou", {"iou_threshold": settings["match"]["iou"]}),
        ("dr", {"delta_r_threshold": settings["match"]["delta_r"]}),
    ):
        found = metrics.detection_figures(
            pred, truth, settings["pt_bins"], score_threshold=settings["efficiency_score"], **criterion
        )
        ap = found.average_precision
        out[f"map_{label}"] = ap.mean
        for c, value in zip(ap.classes, ap.ap, strict=True):
            out[f"ap_{label}_{classes[int(c)]}"] = float(value)
        if label == "dr":
            summary = found.summary()
            out.update({k: float(summary[k]) for k in FIGURES if k != "map"})
    return out


def resample(objects: dict, events: np.ndarray) -> dict:
    """The objects of the resampled ``events`` (with repetition), renumbered event by event."""
    order = np.argsort(objects["event"], kind="stable")
    sorted_event = objects["event"][order]
    starts = np.searchsorted(sorted_event, events, side="left")
    stops = np.searchsorted(sorted_event, events, side="right")
    counts = stops - starts
    index = np.repeat(starts - np.cumsum(counts) + counts, counts) + np.arange(counts.sum())
    picked = order[index]
    out = {k: v[picked] for k, v in objects.items()}
    out["event"] = np.repeat(np.arange(len(events)), counts)
    return out


def bootstrap(pred: dict, truth: dict, n_events: int, settings, classes, resamples: int, seed: int):
    """Each figure, and its values on ``resamples`` bootstrap resamples of the events
    (``{figure: array}``). The same ``seed`` draws the same events for every row, so that rows can
    be compared pair by pair."""
    central = figures(pred, truth, settings, classes)
    rng = np.random.default_rng(seed)
    draws = {k: [] for k in central}
    for _ in range(resamples):
        events = rng.integers(0, n_events, n_events)
        values = figures(resample(pred, events), resample(truth, events), settings, classes)
        for k in central:
            draws[k].append(values.get(k, np.nan))
    return central, {k: np.asarray(v, dtype=np.float64) for k, v in draws.items()}


def common_bootstrap(rows: dict, n_events: int, delta_r: float, resamples: int, seed: int) -> dict:
    """Per row, the pT and mass bias and resolution on the truth jets every row found
    (``<figure>_common``, :func:`hepnn.detection.average_precision.common_response_figures`) and
    their values on the bootstrap resamples of :func:`bootstrap` (the same ``seed``, the same
    events). ``rows``: ``{name: (pred, truth, score_threshold)}``, the truth the same for all."""
    names = list(rows)
    truth = rows[names[0]][1]

    def figures_of(events: np.ndarray | None) -> list[dict]:
        pick = (lambda o: o) if events is None else (lambda o: resample(o, events))
        found = metrics.common_response_figures(
            [pick(rows[n][0]) for n in names],
            pick(truth),
            [rows[n][2] for n in names],
            delta_r_threshold=delta_r,
        )
        return [{(k if k == "n_common" else f"{k}_common"): v for k, v in f.items()} for f in found]

    central = figures_of(None)
    rng = np.random.default_rng(seed)
    draws = [{k: [] for k in c} for c in central]
    for _ in range(resamples):
        for row, values in zip(draws, figures_of(rng.integers(0, n_events, n_events)), strict=True):
            for k in row:
                row[k].append(values[k])
    return {
        n: (c, {k: np.asarray(v, dtype=np.float64) for k, v in d.items()})
        for n, c, d in zip(names, central, draws, strict=True)
    }


def with_errors(central: dict, draws: dict) -> dict:
    """Each figure and the standard deviation of its bootstrap values."""
    return {k: (central[k], float(np.nanstd(draws[k]))) for k in central}


def paired_differences(a: tuple[dict, dict], b: tuple[dict, dict]) -> dict:
    """Figure by figure, row ``a`` minus row ``b`` and the standard deviation of that difference
    over the same bootstrap resamples (which cancels what the rows share: the same events)."""
    (central_a, draws_a), (central_b, draws_b) = a, b
    return {
        k: (central_a[k] - central_b[k], float(np.nanstd(draws_a[k] - draws_b[k])))
        for k in central_a
        if k in central_b
    }


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    root = project_root()
    parser.add_argument(
        "--run-dir", type=Path, default=root / "logs" / "results" / "events_calo" / "events_ssd"
    )
    parser.add_argument("--baseline-pt-min", type=float, default=150.0, help="GeV")
    parser.add_argument("--radius", type=float, default=0.8)
    parser.add_argument("--resamples", type=int, default=100)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = parser.parse_args(argv)

    predictions_path = args.run_dir / "predictions" / "test.root"
    if not predictions_path.is_file():
        raise SystemExit(
            f"detection.py: error: {predictions_path} does not exist; train first: "
            f"python -m hepnn.train experiment=events_ssd hydra.run.dir={args.run_dir}"
        )
    run = read_predictions(predictions_path)
    classes, settings = run["classes"], run["detection"]
    with uproot.open(predictions_path) as f:
        tree = f["predictions"]
        file_index, entry = tree["file_index"].array(library="np"), tree["entry"].array(library="np")
        sources = json.loads(str(f["source_files"]))
    config = yaml.safe_load((args.run_dir / "config.yaml").read_text())  # the run's resolved config
    split = config["data"]["split"]

    # the baseline: mass tag filled on the training events, applied to the test events
    train_cells, train_truth = training_events(sources, split)
    train_jets = calorimeter_jets(cells_of(train_cells), args.radius, args.baseline_pt_min)
    train_boxes = baseline_boxes(train_jets, None, args.radius)
    matched = matched_classes(train_boxes, train_truth, settings["match"]["delta_r"])
    tag = MassTag.fit(ak.to_numpy(ak.flatten(train_jets["mass"])), matched, len(classes), MASS_EDGES)

    parts = []
    for k, path in enumerate(sources):
        chosen = file_index == k
        if chosen.any():
            parts.append(read_events(path, entry[chosen], cell_branches()))
    test_cells = {b: ak.concatenate([p[b] for p in parts]) for b in cell_branches()}
    start = time.perf_counter()
    test_jets = calorimeter_jets(cells_of(test_cells), args.radius, args.baseline_pt_min)
    baseline = baseline_boxes(test_jets, tag, args.radius)
    baseline_rate = len(entry) / (time.perf_counter() - start)

    truth_columns = {f"true_{k}": v for k, v in run["truth"].items()}
    detector_columns = {f"box_{k}": v for k, v in run["boxes"].items()}
    n_events = len(entry)
    rows, resampled = {}, {}
    # every baseline jet is a found object: its score only ranks it within its class
    baseline_settings = {**settings, "efficiency_score": 0.0}
    flat = {}
    for name, columns, chosen in (
        ("detector", detector_columns, settings),
        ("anti-kT + mass tag", baseline, baseline_settings),
    ):
        pred, truth = flat_objects({**columns, **truth_columns})
        flat[name] = (pred, truth, chosen["efficiency_score"])
        resampled[name] = bootstrap(pred, truth, n_events, chosen, classes, args.resamples, args.seed)
    # resolutions compared on the same jets: those both found
    common = common_bootstrap(flat, n_events, settings["match"]["delta_r"], args.resamples, args.seed)
    for name in resampled:
        central, draws = resampled[name]
        resampled[name] = ({**central, **common[name][0]}, {**draws, **common[name][1]})
        rows[name] = with_errors(*resampled[name])
    difference = paired_differences(resampled["detector"], resampled["anti-kT + mass tag"])
    summary = json.loads((args.run_dir / "summary.json").read_text())
    speed = {"detector": summary.get("test/entries_per_second"), "anti-kT + mass tag": baseline_rate}

    windows = {classes[c]: w for c, w in tag.windows().items()}
    n_common = int(common["detector"][0]["n_common"])
    print(
        f"\n{n_events} test events ({sources[0]} ...); baseline jets pT > {args.baseline_pt_min} GeV; "
        f"mass-tag windows (GeV): {windows}; *_common: on the {n_common} truth jets both found\n"
    )
    names = ["map_dr", *(f"ap_dr_{c}" for c in classes), "map_iou", *(f"ap_iou_{c}" for c in classes)]
    names += [k for k in FIGURES if k != "map"]
    names += [f"{k}_common" for k in FIGURES if k.startswith(("pt_", "mass_"))]
    columns = {**rows, "detector - baseline (paired)": difference}
    print("| figure | " + " | ".join(columns) + " |")
    print("|---|" + "---|" * len(columns))
    for key in names:
        cells = []
        for name, row in columns.items():
            value, error = row.get(key, (np.nan, np.nan))
            sign = "+" if name.startswith("detector -") else ""
            digits = 4 if key.startswith(("pt_", "mass_")) else 3  # resolutions of a few per cent
            cells.append(f"{value:{sign}.{digits}f} ± {error:.{digits}f}")
        print(f"| {key} | " + " | ".join(cells) + " |")
    rates = [f"{speed[r]:.0f}" if speed[r] else "-" for r in rows]
    print("| events/s | " + " | ".join([*rates, ""]) + " |")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        payload = {
            "test_events": n_events,
            "run_dir": str(args.run_dir),
            "baseline_pt_min": args.baseline_pt_min,
            "mass_windows": windows,
            "rows": {r: {k: list(v) for k, v in row.items()} for r, row in rows.items()},
            "detector_minus_baseline": {k: list(v) for k, v in difference.items()},
            "events_per_second": speed,
            "truth_jets_both_found": n_common,
        }
        args.json.write_text(json.dumps(payload, indent=2) + "\n")


if __name__ == "__main__":
    main()
