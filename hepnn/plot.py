"""Write the standard plots of one run directory as PNG and PDF files.

``python -m hepnn.plot run_dir=<dir> [formats=[png,pdf]] [out_dir=<run_dir>/plots]``

A run directory (as ``python -m hepnn.train`` writes it) holds ``config.yaml``, ``summary.json``,
``csv/metrics.csv`` (or ``csv/version_N/metrics.csv``) and ``predictions/test.root``. From what is
there this writes, into ``out_dir`` (default ``<run_dir>/plots``), one file per format of:

- ``training_curves``, ``learning_rate`` (from the metrics CSV);
- for a classifier: ``roc`` (signal = ``model.signal_class`` of the config, else the last class,
  versus the rest), ``score_distributions`` (every class score) and ``confusion_matrix`` (from the
  summary, else computed from the predictions);
- for a regression: ``resolution_<target>`` and ``predicted_vs_true_<target>`` per target.

Pieces that are missing (no predictions file, no metrics CSV, ...) are named in a note and skipped;
the exit status is 0 when at least one plot was written, 1 when none was, 2 for a bad command line
or a run directory that does not exist.
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from hepnn import plotting
from hepnn.utils.cli import UsageError, key_value_args

USAGE = "usage: python -m hepnn.plot run_dir=<dir> [formats=[png,pdf]] [out_dir=<run_dir>/plots]"
KEYS = ("run_dir", "formats", "out_dir")
DEFAULT_FORMATS = ("png", "pdf")
# Units of the regression targets of the shipped presets (conf/model/trace3d.yaml); others: none shown.
TARGET_UNITS = {"xmax": "g/cm$^2$", "core_x": "m", "core_y": "m", "log10_energy": "log10(E/eV)"}


@dataclass
class PlotReport:
    """Files written and notes on the plots that could not be made (and why)."""

    written: list[Path] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def parse_args(argv: Sequence[str]) -> dict:
    """``key=value`` arguments as a dict with ``run_dir`` (Path), ``out_dir`` (Path) and ``formats`` (list).

    ``formats`` accepts ``[png,pdf]``, ``png,pdf`` or a single format.
    """
    values = key_value_args(argv, KEYS, USAGE)
    if not values.get("run_dir"):
        raise UsageError(f"run_dir is required; {USAGE}")
    run_dir = Path(values["run_dir"]).expanduser()
    formats = [f.strip().strip("'\"").lstrip(".") for f in values.get("formats", "").strip("[]").split(",")]
    formats = [f for f in formats if f] or list(DEFAULT_FORMATS)
    out_dir = Path(values["out_dir"]).expanduser() if values.get("out_dir") else run_dir / "plots"
    return {"run_dir": run_dir, "formats": formats, "out_dir": out_dir}


def find_metrics_csv(run_dir: Path) -> Path | None:
    """``csv/metrics.csv``, else the highest ``csv/version_N/metrics.csv``, else any ``metrics.csv`` below."""
    direct = run_dir / "csv" / "metrics.csv"
    if direct.is_file():
        return direct
    versions = sorted(
        (
            p
            for p in (run_dir / "csv").glob("version_*/metrics.csv")
            if re.fullmatch(r"version_\d+", p.parent.name)
        ),
        key=lambda p: int(p.parent.name.removeprefix("version_")),
    )
    if versions:
        return versions[-1]
    anywhere = sorted(run_dir.rglob("metrics.csv"))
    return anywhere[0] if anywhere else None


def read_predictions(path: Path) -> dict:
    """The test predictions: ``{"kind": "classification", "classes", "scores" (N, K), "labels"}`` or
    ``{"kind": "regression", "targets", "pred": {target: array}, "true": {target: array}}``."""
    import uproot

    with uproot.open(path) as f:
        if "predictions" not in f:
            raise ValueError(f"{path} has no TTree 'predictions' (keys: {f.keys(cycle=False)})")
        tree = f["predictions"]
        branches = set(tree.keys())
        if "classes" in f:
            classes = json.loads(str(f["classes"]))
            needed = [f"score_{c}" for c in classes] + ["label"]
            _require(branches, needed, path)
            arrays = tree.arrays(needed, library="np")
            scores = np.stack([arrays[f"score_{c}"] for c in classes], axis=1)
            return {"kind": "classification", "classes": classes, "scores": scores, "labels": arrays["label"]}
        if "targets" in f:
            targets = json.loads(str(f["targets"]))
            needed = [f"{p}_{t}" for t in targets for p in ("pred", "true")]
            _require(branches, needed, path)
            arrays = tree.arrays(needed, library="np")
            return {
                "kind": "regression",
                "targets": targets,
                "pred": {t: arrays[f"pred_{t}"] for t in targets},
                "true": {t: arrays[f"true_{t}"] for t in targets},
            }
    raise ValueError(f"{path} has neither a 'classes' nor a 'targets' string beside the tree")


def _require(branches: set[str], needed: list[str], path: Path) -> None:
    missing = [b for b in needed if b not in branches]
    if missing:
        raise ValueError(f"{path}: tree 'predictions' lacks the branches {missing}")


def _signal_class(run_dir: Path, classes: list[str]) -> str:
    """``model.signal_class`` of the run's ``config.yaml`` when set and known, else the last class."""
    config = run_dir / "config.yaml"
    if config.is_file():
        from omegaconf import OmegaConf

        try:
            name = OmegaConf.select(OmegaConf.load(config), "model.signal_class", default=None)
        except Exception:  # an unreadable config only loses the choice of signal class
            name = None
        if name in classes:
            return name
    return classes[-1]


def _read_summary(run_dir: Path, report: PlotReport) -> dict:
    path = run_dir / "summary.json"
    if not path.is_file():
        report.notes.append(f"no summary.json in {run_dir}")
        return {}
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as err:
        report.notes.append(f"summary.json is not valid JSON ({err}); not used")
        return {}


def _save(fig, stem: str, out_dir: Path, formats: Sequence[str], report: PlotReport) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    for fmt in formats:
        path = out_dir / f"{stem}.{fmt}"
        fig.savefig(path)
        report.written.append(path)


def _attempt(stem: str, make, out_dir: Path, formats: Sequence[str], report: PlotReport) -> None:
    """Draw with ``make()`` and save; a ValueError (e.g. no data for the plot) becomes a note."""
    try:
        fig = make()
    except ValueError as err:
        report.notes.append(f"{stem}: not plotted ({err})")
        return
    _save(fig, stem, out_dir, formats, report)


def _training_plots(run_dir: Path, out_dir: Path, formats, report: PlotReport) -> None:
    csv_path = find_metrics_csv(run_dir)
    if csv_path is None:
        report.notes.append(
            f"no metrics.csv under {run_dir} (looked for csv/metrics.csv, csv/version_N/metrics.csv): "
            "no training_curves, learning_rate"
        )
        return
    try:
        columns = plotting.read_metrics_csv(csv_path)
    except ValueError as err:
        report.notes.append(f"{csv_path}: {err}; no training_curves, learning_rate")
        return
    _attempt("training_curves", lambda: plotting.training_curves(columns), out_dir, formats, report)
    _attempt("learning_rate", lambda: plotting.learning_rate_curve(columns), out_dir, formats, report)


def _classification_plots(run_dir, predictions, summary, out_dir, formats, report) -> None:
    classes, scores, labels = predictions["classes"], predictions["scores"], predictions["labels"]
    signal = _signal_class(run_dir, classes)
    k = classes.index(signal)
    runs = {f"{run_dir.name}: {signal} vs rest": (scores[:, k], labels == k)}
    _attempt("roc", lambda: plotting.roc_curves(runs), out_dir, formats, report)
    _attempt(
        "score_distributions",
        lambda: plotting.score_distributions(scores, labels, classes, "all"),
        out_dir,
        formats,
        report,
    )
    if "test/confusion_matrix" not in summary and len(scores):
        from hepnn.metrics.classification import confusion_matrix

        matrix = confusion_matrix(scores, labels.astype(np.int64), len(classes))
        _attempt(
            "confusion_matrix",
            lambda: plotting.confusion_matrix_plot(matrix, classes),
            out_dir,
            formats,
            report,
        )


def _summary_confusion(summary: dict, out_dir: Path, formats, report: PlotReport) -> None:
    entry = summary.get("test/confusion_matrix")
    if not isinstance(entry, dict):
        return
    classes, matrix = entry.get("classes"), entry.get("rows_true_columns_predicted")
    if classes is None or matrix is None:
        report.notes.append(
            "summary.json: test/confusion_matrix lacks 'classes' or 'rows_true_columns_predicted'"
        )
        return
    _attempt(
        "confusion_matrix", lambda: plotting.confusion_matrix_plot(matrix, classes), out_dir, formats, report
    )


def _regression_plots(predictions, out_dir, formats, report) -> None:
    for target in predictions["targets"]:
        pred, true = predictions["pred"][target], predictions["true"][target]
        unit = TARGET_UNITS.get(target, "")
        _attempt(
            f"resolution_{target}",
            lambda p=pred, t=true, n=target, u=unit: plotting.regression_resolution(p, t, n, u),
            out_dir,
            formats,
            report,
        )
        _attempt(
            f"predicted_vs_true_{target}",
            lambda p=pred, t=true, n=target, u=unit: plotting.predicted_vs_true(p, t, n, u),
            out_dir,
            formats,
            report,
        )


def make_plots(run_dir, out_dir=None, formats: Sequence[str] = DEFAULT_FORMATS) -> PlotReport:
    """Write the standard plots of ``run_dir`` into ``out_dir`` (default ``<run_dir>/plots``).

    Raises :class:`UsageError` when ``run_dir`` is not a directory; everything else that is missing
    is a note in the returned report.
    """
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise UsageError(f"run directory {run_dir} does not exist (or is not a directory)")
    from matplotlib.backend_bases import FigureCanvasBase

    unknown = [f for f in formats if f not in FigureCanvasBase.get_supported_filetypes()]
    if unknown or not formats:
        supported = sorted(FigureCanvasBase.get_supported_filetypes())
        raise UsageError(f"unknown figure formats {unknown or formats}; supported: {supported}")
    out_dir = Path(out_dir) if out_dir is not None else run_dir / "plots"
    report = PlotReport()
    summary = _read_summary(run_dir, report)
    _training_plots(run_dir, out_dir, formats, report)
    _summary_confusion(summary, out_dir, formats, report)
    prediction_path = run_dir / "predictions" / "test.root"
    if not prediction_path.is_file():
        report.notes.append(f"no predictions file {prediction_path}: no ROC, score or regression plots")
        return report
    try:
        predictions = read_predictions(prediction_path)
    except (ValueError, OSError) as err:
        report.notes.append(f"predictions not read: {err}")
        return report
    if predictions["kind"] == "classification":
        _classification_plots(run_dir, predictions, summary, out_dir, formats, report)
    else:
        _regression_plots(predictions, out_dir, formats, report)
    return report


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point; prints the files written and the notes, returns the exit status."""
    argv = sys.argv[1:] if argv is None else list(argv)
    if any(a in ("-h", "--help") for a in argv):
        print(USAGE)
        return 0
    try:
        args = parse_args(argv)
        report = make_plots(args["run_dir"], args["out_dir"], args["formats"])
    except UsageError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    for path in report.written:
        print(path)
    for note in report.notes:
        print(f"note: {note}", file=sys.stderr)
    if not report.written:
        print(f"error: no plot written for {args['run_dir']}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
