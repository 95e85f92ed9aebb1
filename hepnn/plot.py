"""Write the standard plots of one run directory: ``python -m hepnn.plot run_dir=<dir> [formats=[png]]``.

From what the run directory holds (see :mod:`hepnn.analysis.runs`) this writes, into ``out_dir``
(default ``<run_dir>/plots``), one file per format of ``training_curves`` and ``learning_rate``
(from the metrics CSV) and of the plots the run's task draws from its predictions (a
classifier's ROC, score distributions and confusion matrix; a regression's resolutions per
target: :meth:`hepnn.tasks.base.TaskBase.plots`). Pieces that are missing are named in a note
and skipped; the run fails (``hepnn: error: ...``, status 1) when no plot could be written.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import hydra
from omegaconf import DictConfig, OmegaConf

from hepnn.errors import ConfigError, InputError
from hepnn.utils.config import config_dir, register_resolvers

register_resolvers()
DEFAULT_FORMATS = ("png", "pdf")


@dataclass
class PlotReport:
    """Files written and notes on the plots that could not be made (and why)."""

    written: list[Path] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def check_formats(formats: Sequence[str]) -> list[str]:
    """The figure formats (``png``, ``.pdf``, ...) as matplotlib names them; ConfigError for others."""
    from matplotlib.backend_bases import FigureCanvasBase

    names = [str(f).strip().lstrip(".") for f in formats]
    supported = FigureCanvasBase.get_supported_filetypes()
    unknown = [f for f in names if f not in supported]
    if unknown or not names:
        raise ConfigError(
            f"formats: unknown figure formats {unknown or names}; supported: {sorted(supported)}"
        )
    return names


def _attempt(stem: str, make: Callable, out_dir: Path, formats: Sequence[str], report: PlotReport) -> None:
    """Draw with ``make()`` and save in every format; a ValueError (no data for the plot) becomes a note."""
    try:
        fig = make()
    except ValueError as err:
        report.notes.append(f"{stem}: not plotted ({err})")
        return
    out_dir.mkdir(parents=True, exist_ok=True)
    for fmt in formats:
        path = out_dir / f"{stem}.{fmt}"
        fig.savefig(path)
        report.written.append(path)


def _training_plots(run_dir: Path, out_dir: Path, formats, report: PlotReport) -> None:
    from hepnn.analysis import plotting
    from hepnn.analysis.runs import find_metrics_csv

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


def make_plots(run_dir, out_dir=None, formats: Sequence[str] = DEFAULT_FORMATS) -> PlotReport:
    """Write the standard plots of ``run_dir`` into ``out_dir`` (default ``<run_dir>/plots``).

    Raises :class:`~hepnn.errors.ConfigError` when ``run_dir`` is not a directory or a format is
    unknown; everything else that is missing is a note in the returned report.
    """
    from hepnn.analysis.runs import read_predictions, read_summary

    run_dir = Path(run_dir).expanduser()
    if not run_dir.is_dir():
        raise ConfigError(f"run_dir: run directory {run_dir} does not exist (or is not a directory)")
    formats = check_formats(formats)
    out_dir = Path(out_dir).expanduser() if out_dir is not None else run_dir / "plots"
    report = PlotReport()
    summary, note = read_summary(run_dir)
    if note:
        report.notes.append(note)
    _training_plots(run_dir, out_dir, formats, report)
    # a training run's test predictions, else an evaluation run's
    candidates = [run_dir / "predictions" / name for name in ("test.root", "evaluate.root")]
    prediction_path = next((p for p in candidates if p.is_file()), candidates[0])
    if not prediction_path.is_file():
        report.notes.append(f"no predictions file {prediction_path}: no plots of the task's predictions")
        return report
    try:
        predictions = read_predictions(prediction_path)
    except (ValueError, OSError) as err:
        report.notes.append(f"predictions not read: {err}")
        return report
    for stem, make in predictions["task"].plots(predictions, summary, run_dir.name):
        _attempt(stem, make, out_dir, formats, report)
    return report


@hydra.main(version_base="1.3", config_path=config_dir(), config_name="plot")
def main(cfg: DictConfig) -> None:
    from hepnn.errors import report_input_errors

    with report_input_errors():
        formats = OmegaConf.to_container(cfg.formats) if not isinstance(cfg.formats, str) else [cfg.formats]
        report = make_plots(cfg.run_dir, cfg.get("out_dir"), formats)
        for path in report.written:
            print(path)
        for note in report.notes:
            print(f"note: {note}", file=sys.stderr)
        if not report.written:
            raise InputError(f"run_dir: no plot written for {cfg.run_dir}")


if __name__ == "__main__":
    main()
