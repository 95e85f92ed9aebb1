"""Standard figures of a run: training curves, ROC curves, score distributions, confusion matrix,
average calorimeter images and regression bias/resolution.

Every plotting function takes plain data (numpy arrays, dicts, lists; no pandas) and returns a
:class:`matplotlib.figure.Figure` drawn with the Agg canvas (``fig.savefig(path)`` writes PNG, PDF,
SVG, ...). The figures are made without pyplot, so nothing is registered globally and nothing needs
closing, and the mplhep style (``style="CMS"`` by default; any name of :mod:`mplhep.style`, an
rcParams dict, or ``None`` for matplotlib's defaults) is applied inside each function only.

The numbers behind the figures come from small helpers that are tested on their own:
:func:`read_metrics_csv` and :func:`epoch_series` (Lightning CSVLogger files), :func:`roc_points`
(signal efficiency and background rejection), :func:`normalise_rows` (confusion matrix),
:func:`class_average_images` and :func:`binned_bias_resolution` (regression figures in bins of the
true value). Invalid input raises :class:`ValueError` with a message naming the problem.
"""

from __future__ import annotations

import contextlib
import csv
import math
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import matplotlib
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import LogNorm
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from hepnn.metrics import classification as metrics
from hepnn.metrics.regression import CONTAINMENT, half_width

DEFAULT_STYLE = "CMS"
# rcParams that are not style (setting them again is refused or has side effects)
_NOT_STYLE = {"backend", "backend_fallback", "interactive", "webagg.port", "webagg.address"}


# --------------------------------------------------------------------------------------------------
# style and figure helpers


def _style_params(style) -> dict:
    """rcParams of an mplhep style name (e.g. ``"CMS"``, ``"ATLAS"``, ``"ROOT"``), a dict, or ``None``."""
    if style is None:
        return {}
    if isinstance(style, Mapping):
        return dict(style)
    import mplhep

    params = getattr(mplhep.style, str(style), None)
    if not isinstance(params, Mapping):
        raise ValueError(f"unknown mplhep style {style!r}; use e.g. 'CMS', 'ATLAS', 'ROOT' or None")
    return dict(params)


@contextlib.contextmanager
def plot_style(style=DEFAULT_STYLE):
    """Context in which matplotlib uses the mplhep ``style`` (restored on exit)."""
    with matplotlib.rc_context(_style_params(style)):
        yield


class StyledFigure(Figure):
    """A :class:`~matplotlib.figure.Figure` that is also drawn (shown, saved) under its style's rcParams.

    Some settings are read when the figure is drawn rather than when it is built (mathtext fonts,
    ticks made on demand), so the style of :func:`plot_style` is applied again around every draw.
    """

    def __init__(self, *args, style_params: Mapping | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.style_params = dict(style_params or {})

    def draw(self, renderer):
        with matplotlib.rc_context(self.style_params):
            return super().draw(renderer)


def _figure(width: float, height: float) -> StyledFigure:
    """A figure of ``width`` x ``height`` inches on the Agg canvas (no pyplot, no global state),
    drawn with the rcParams in force now (those of the enclosing :func:`plot_style`)."""
    params = {k: v for k, v in matplotlib.rcParams.items() if k not in _NOT_STYLE}
    fig = StyledFigure(figsize=(width, height), layout="constrained", style_params=params)
    FigureCanvasAgg(fig)
    return fig


def _with_unit(label: str, unit: str) -> str:
    """``label [unit]``, or ``label`` alone for a dimensionless quantity (empty unit); a plain-text
    power in the unit (``g/cm^2``) is drawn as a superscript."""
    if unit and "^" in unit and "$" not in unit:
        unit = re.sub(r"\^(-?\d+)", r"$^{\1}$", unit)
    return f"{label} [{unit}]" if unit else label


def _note_handle(ax, text: str) -> None:
    """Add ``text`` to the legend without drawing anything (e.g. 'QCD: no entries')."""
    ax.add_line(Line2D([], [], linestyle="none", label=text))


# --------------------------------------------------------------------------------------------------
# training curves from Lightning's CSVLogger


def read_metrics_csv(source: str | os.PathLike | Iterable[Mapping[str, object]]) -> dict[str, np.ndarray]:
    """Columns of a Lightning CSVLogger ``metrics.csv`` (a path) or of rows (dicts) as float arrays.

    Rows are sparse (a metric is logged in some rows only): missing and empty cells become NaN.
    Cells that are not numbers (e.g. a text column) also become NaN.
    """
    if isinstance(source, str | os.PathLike):
        path = Path(source)
        if not path.is_file():
            raise ValueError(f"metrics file {path} does not exist")
        with path.open(newline="") as handle:
            rows = list(csv.DictReader(handle))
    else:
        rows = [dict(row) for row in source]
    if not rows:
        raise ValueError("the metrics table has no rows (nothing was logged)")
    names = list(dict.fromkeys(name for row in rows for name in row if name is not None))
    return {name: np.array([_to_float(row.get(name)) for row in rows]) for name in names}


def _to_float(value) -> float:
    if value is None or value == "":
        return math.nan
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def epoch_series(columns: Mapping[str, np.ndarray], name: str) -> tuple[np.ndarray, np.ndarray]:
    """Epochs and values of metric ``name`` from :func:`read_metrics_csv` columns, one value per epoch.

    Rows where the metric or the epoch is empty are ignored; where an epoch has several values
    (e.g. a resumed run logging the epoch again) the last one is kept. Epochs are Lightning's,
    counted from 0.
    """
    if name not in columns:
        raise ValueError(f"metric {name!r} is not in the metrics table (columns: {sorted(columns)})")
    if "epoch" not in columns:
        raise ValueError("the metrics table has no 'epoch' column")
    epoch, values = columns["epoch"], columns[name]
    keep = np.isfinite(epoch) & np.isfinite(values)
    last = {int(e): float(v) for e, v in zip(epoch[keep], values[keep], strict=True)}
    epochs = np.array(sorted(last), dtype=np.int64)
    return epochs, np.array([last[e] for e in epochs], dtype=np.float64)


def _logged(columns: Mapping[str, np.ndarray], name: str) -> bool:
    return name in columns and bool(np.isfinite(columns[name]).any())


def _train_loss_name(columns: Mapping[str, np.ndarray]) -> str | None:
    """The per-epoch training loss column (``train/loss_epoch``, or ``train/loss``)."""
    return next((n for n in ("train/loss_epoch", "train/loss") if _logged(columns, n)), None)


def training_curves(
    source,
    val_metrics: Sequence[str] | None = None,
    *,
    style=DEFAULT_STYLE,
) -> Figure:
    """Loss versus epoch (training and validation) and one panel per validation metric.

    ``source`` is a CSVLogger ``metrics.csv`` path, rows (dicts) or :func:`read_metrics_csv`
    columns. First panel: ``train/loss_epoch`` (or ``train/loss``) and ``val/loss`` against the
    epoch (from 0); the loss is in the task's own unit (cross-entropy in nats for classifiers, a
    standardised mean squared error for regression). Further panels: the ``val_metrics`` named
    (default: every other ``val/`` column with values, e.g. ``val/auc``), each in its own unit;
    the per-part losses ``val/loss_<part>`` (e.g. per regression target) share one panel.
    """
    columns = source if _is_columns(source) else read_metrics_csv(source)
    losses = [n for n in (_train_loss_name(columns), "val/loss") if n is not None and _logged(columns, n)]
    if val_metrics is None:
        val_metrics = [n for n in columns if n.startswith("val/") and n != "val/loss" and _logged(columns, n)]
    missing = [n for n in val_metrics if not _logged(columns, n)]
    if missing:
        raise ValueError(f"no values logged for {missing} (columns with values: {_logged_names(columns)})")
    if not losses and not val_metrics:
        raise ValueError(f"no loss or validation metric with values (columns: {sorted(columns)})")
    part_losses = [n for n in val_metrics if n.startswith("val/loss_")]
    panels = [("loss", losses)] if losses else []
    panels += [("validation loss per part", part_losses)] if part_losses else []
    panels += [(n, [n]) for n in val_metrics if n not in part_losses]
    ncols = min(3, len(panels))
    nrows = math.ceil(len(panels) / ncols)
    with plot_style(style):
        fig = _figure(6.0 * ncols, 4.5 * nrows)
        axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
        for ax, (ylabel, names) in zip(axes, panels, strict=False):
            for name in names:
                epochs, values = epoch_series(columns, name)
                ax.plot(epochs, values, marker="o", markersize=4, label=name)
            ax.set_xlabel("epoch")
            ax.set_ylabel(ylabel, fontsize="small")
            ax.xaxis.get_major_locator().set_params(integer=True)
            if len(names) > 1 or ylabel != names[0]:
                ax.legend(fontsize="x-small")
        for ax in axes[len(panels) :]:
            ax.set_visible(False)
    return fig


def _is_columns(source) -> bool:
    return isinstance(source, Mapping) and all(isinstance(v, np.ndarray) for v in source.values())


def _logged_names(columns: Mapping[str, np.ndarray]) -> list[str]:
    return sorted(n for n in columns if _logged(columns, n))


def learning_rate_curve(source, *, style=DEFAULT_STYLE) -> Figure:
    """Learning rate versus training step of every ``lr-*`` column (one per optimizer / parameter group).

    ``source`` as for :func:`training_curves`. The learning rate is in the optimizer's unit (per
    step, dimensionless); the y axis is logarithmic when the rate spans a factor 10 or more.
    """
    columns = source if _is_columns(source) else read_metrics_csv(source)
    names = [n for n in columns if n.startswith("lr-") and _logged(columns, n)]
    if not names:
        raise ValueError(f"no learning-rate column (lr-*) with values (columns: {sorted(columns)})")
    if "step" not in columns:
        raise ValueError("the metrics table has no 'step' column")
    with plot_style(style):
        fig = _figure(8.0, 6.0)
        ax = fig.add_subplot()
        positive = []
        for name in names:
            keep = np.isfinite(columns["step"]) & np.isfinite(columns[name])
            ax.plot(columns["step"][keep], columns[name][keep], drawstyle="steps-post", label=name)
            positive.extend(columns[name][keep][columns[name][keep] > 0])
        if positive and max(positive) >= 10 * (1 - 1e-9) * min(positive):
            ax.set_yscale("log")
        ax.set_xlabel("training step")
        ax.set_ylabel("learning rate")
        ax.legend(fontsize="x-small")
    return fig


# --------------------------------------------------------------------------------------------------
# classifiers


def roc_points(scores, is_signal) -> tuple[np.ndarray, np.ndarray]:
    """Signal efficiency eps_S and background rejection 1/eps_B along the ROC curve.

    The points of :func:`hepnn.metrics.classification.roc_curve` (a cut at every distinct score)
    with eps_S > 0; the rejection is ``inf`` where no background passes. Both dimensionless.
    """
    eff_s, eff_b, _ = metrics.roc_curve(scores, is_signal)
    keep = eff_s > 0
    eff_s, eff_b = eff_s[keep], eff_b[keep]
    with np.errstate(divide="ignore"):
        rejection = np.where(eff_b > 0, 1.0 / np.where(eff_b > 0, eff_b, 1.0), np.inf)
    return eff_s, rejection


def roc_curves(
    runs: Mapping[str, tuple[np.ndarray, np.ndarray]],
    *,
    style=DEFAULT_STYLE,
) -> Figure:
    """Background rejection 1/eps_B (log scale) versus signal efficiency eps_S, one curve per run.

    ``runs`` maps a name to ``(scores, is_signal)`` (1-d arrays of equal length). The legend gives
    each run's AUC; the dashed line is a random classifier (1/eps_B = 1/eps_S). Points with no
    background passing (infinite rejection) cannot be drawn and are left out.
    """
    if not runs:
        raise ValueError("roc_curves needs at least one run (got an empty dict)")
    with plot_style(style):
        fig = _figure(8.0, 7.0)
        ax = fig.add_subplot()
        for name, (scores, is_signal) in runs.items():
            scores, is_signal = np.asarray(scores), np.asarray(is_signal, dtype=bool)
            if scores.size == 0:
                raise ValueError(f"run {name!r}: no scores (empty input)")
            eff_s, rejection = roc_points(scores, is_signal)
            auc = metrics.roc_auc(scores, is_signal)
            finite = np.isfinite(rejection)
            ax.plot(eff_s[finite], rejection[finite], label=f"{name} (AUC = {auc:.4f})")
        grid = np.linspace(0.01, 1.0, 100)
        ax.plot(grid, 1.0 / grid, linestyle="--", color="grey", label="random")
        ax.set_yscale("log")
        ax.set_xlim(0.0, 1.0)
        ax.set_xlabel(r"signal efficiency $\varepsilon_S$")
        ax.set_ylabel(r"background rejection $1/\varepsilon_B$")
        ax.legend(fontsize="x-small")
    return fig


def _check_scores(scores, labels, classes) -> tuple[np.ndarray, np.ndarray]:
    scores, labels = np.asarray(scores, dtype=np.float64), np.asarray(labels)
    if scores.ndim != 2 or scores.shape[1] != len(classes):
        raise ValueError(
            f"scores must be (N, {len(classes)}) for classes {list(classes)}, got {scores.shape}"
        )
    if labels.shape != (scores.shape[0],):
        raise ValueError(f"labels {labels.shape} must be 1-d with one label per row of scores {scores.shape}")
    if scores.shape[0] == 0:
        raise ValueError("no entries (empty scores)")
    if labels.min() < 0 or labels.max() >= len(classes):
        raise ValueError(
            f"labels must be class indices 0..{len(classes) - 1}, got {labels.min()}..{labels.max()}"
        )
    return scores, labels.astype(np.int64)


def score_distributions(
    scores,
    labels,
    classes: Sequence[str],
    score_classes: Sequence[str] | str | None = None,
    bins: int = 40,
    *,
    style=DEFAULT_STYLE,
) -> Figure:
    """Normalised histograms of a class score (softmax probability, 0 to 1), one per true class.

    ``scores`` is ``(N, K)``, ``labels`` the true class indices ``(N,)``. One panel per score
    class in ``score_classes`` (a name, a list of names, ``"all"``, or ``None`` for the last class,
    the signal). Each histogram has unit area (y: fraction of the class's entries per unit score);
    a class without entries is skipped and named in the legend.
    """
    scores, labels = _check_scores(scores, labels, classes)
    classes = list(classes)
    if score_classes is None:
        score_classes = [classes[-1]]
    elif score_classes == "all":
        score_classes = classes
    elif isinstance(score_classes, str):
        score_classes = [score_classes]
    unknown = [c for c in score_classes if c not in classes]
    if unknown:
        raise ValueError(f"score classes {unknown} are not among the classes {classes}")
    edges = np.linspace(0.0, 1.0, bins + 1)
    with plot_style(style):
        fig = _figure(8.0 * len(score_classes), 6.5)
        for i, score_class in enumerate(score_classes):
            ax = fig.add_subplot(1, len(score_classes), i + 1)
            k = classes.index(score_class)
            for label, name in enumerate(classes):
                selected = scores[labels == label, k]
                if selected.size == 0:
                    _note_handle(ax, f"{name}: no entries")
                    continue
                ax.hist(
                    np.clip(selected, 0.0, 1.0),
                    bins=edges,
                    density=True,
                    histtype="step",
                    linewidth=2,
                    label=f"{name} (N = {selected.size})",
                )
            ax.set_xlabel(f"score {score_class}")
            ax.set_ylabel("normalised entries / unit score")
            ax.set_xlim(0.0, 1.0)
            ax.legend(fontsize="x-small", title="true class", title_fontsize="x-small")
    return fig


def normalise_rows(matrix) -> np.ndarray:
    """Confusion matrix ``(K, K)`` (row = true class) as fractions of each row; NaN for an empty row."""
    matrix = np.asarray(matrix, dtype=np.float64)
    if matrix.ndim != 2 or matrix.shape[0] != matrix.shape[1] or matrix.size == 0:
        raise ValueError(f"a confusion matrix must be a non-empty square (K, K) array, got {matrix.shape}")
    if (matrix < 0).any():
        raise ValueError("a confusion matrix holds counts: negative entries are not allowed")
    totals = matrix.sum(axis=1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(totals > 0, matrix / np.where(totals > 0, totals, 1.0), np.nan)


def confusion_matrix_plot(matrix, classes: Sequence[str], *, style=DEFAULT_STYLE) -> Figure:
    """Row-normalised confusion matrix: the fraction of each true class (rows, with its count)
    given to each predicted class (columns), annotated in the cells; empty rows show 'n/a'."""
    fractions = normalise_rows(matrix)
    if len(classes) != fractions.shape[0]:
        raise ValueError(f"{len(classes)} class names {list(classes)} for a {fractions.shape} matrix")
    counts = np.asarray(matrix).sum(axis=1)
    k = len(classes)
    with plot_style(style):
        fig = _figure(3.0 + 1.6 * k, 2.5 + 1.6 * k)
        ax = fig.add_subplot()
        image = ax.imshow(np.nan_to_num(fractions), vmin=0.0, vmax=1.0, cmap="Blues")
        fig.colorbar(image, ax=ax, label="fraction of true class")
        for (i, j), value in np.ndenumerate(fractions):
            text = "n/a" if np.isnan(value) else f"{value:.3f}"
            color = "white" if np.nan_to_num(value) > 0.5 else "black"
            ax.text(j, i, text, ha="center", va="center", color=color, fontsize="small")
        ax.set_xticks(range(k), list(classes), rotation=45 if k > 3 else 0)
        ax.set_yticks(range(k), [f"{c}\n(N = {int(n)})" for c, n in zip(classes, counts, strict=True)])
        ax.tick_params(which="minor", length=0)
        ax.set_xlabel("predicted class")
        ax.set_ylabel("true class")
    return fig


# --------------------------------------------------------------------------------------------------
# calorimeter images


def class_average_images(images, labels, n_classes: int) -> np.ndarray:
    """Mean image of each class: ``(N, C, H, W)`` and labels ``(N,)`` give ``(n_classes, C, H, W)``.

    Same unit as the pixels (e.g. GeV); NaN for a class without entries.
    """
    images, labels = np.asarray(images, dtype=np.float64), np.asarray(labels)
    if images.ndim != 4:
        raise ValueError(f"images must be (N, C, H, W), got shape {images.shape}")
    if labels.shape != (images.shape[0],):
        raise ValueError(f"labels {labels.shape} must be 1-d with one label per image ({images.shape[0]})")
    if images.shape[0] == 0:
        raise ValueError("no images (empty input)")
    if labels.min() < 0 or labels.max() >= n_classes:
        raise ValueError(
            f"labels must be class indices 0..{n_classes - 1}, got {labels.min()}..{labels.max()}"
        )
    out = np.full((n_classes, *images.shape[1:]), np.nan)
    for k in range(n_classes):
        if (labels == k).any():
            out[k] = images[labels == k].mean(axis=0)
    return out


def average_images(
    images,
    labels,
    classes: Sequence[str],
    channel_names: Sequence[str] | None = None,
    extent: Sequence[float] | None = None,
    *,
    unit: str = "GeV",
    axis_labels: tuple[str, str] = (r"$\Delta\eta$", r"$\Delta\phi$"),
    style=DEFAULT_STYLE,
) -> Figure:
    """Average calorimeter image per class (rows) and channel (columns) on a log colour scale.

    ``images`` ``(N, C, H, W)`` with pixel contents in ``unit`` (e.g. transverse energy in GeV),
    ``labels`` the class indices. ``extent`` ``(x_min, x_max, y_min, y_max)`` places the pixels in
    the units of ``axis_labels`` (default Delta eta, Delta phi from the jet axis); without it the
    axes count pixels. The colour scale is shared by the classes of a channel; empty pixels are left
    blank. Classes without images are skipped and named in a note above the grid.
    """
    classes = list(classes)
    averages = class_average_images(images, labels, len(classes))
    n_channels = averages.shape[1]
    channel_names = (
        list(channel_names) if channel_names is not None else [f"channel {c}" for c in range(n_channels)]
    )
    if len(channel_names) != n_channels:
        raise ValueError(f"{len(channel_names)} channel names {channel_names} for {n_channels} channels")
    if extent is not None and len(extent) != 4:
        raise ValueError(f"extent must be (x_min, x_max, y_min, y_max), got {extent}")
    present = [k for k in range(len(classes)) if not np.isnan(averages[k]).all()]
    absent = [classes[k] for k in range(len(classes)) if k not in present]
    with plot_style(style):
        fig = _figure(5.5 * n_channels, 4.5 * len(present) + (0.5 if absent else 0.0))
        axes = fig.subplots(len(present), n_channels, squeeze=False)
        for c in range(n_channels):
            values = averages[present, c]
            positive = values[values > 0]
            norm = LogNorm(positive.min(), positive.max()) if positive.size else None
            for row, k in enumerate(present):
                ax = axes[row, c]
                shown = np.ma.masked_less_equal(averages[k, c], 0.0)
                image = ax.imshow(
                    shown,
                    origin="lower",
                    norm=norm,
                    extent=extent,
                    aspect="auto",
                    cmap="viridis",
                    interpolation="nearest",
                )
                ax.set_title(f"{classes[k]}, {channel_names[c]}", fontsize="small")
                ax.set_xlabel(axis_labels[0] if extent is not None else "pixel", fontsize="small")
                ax.set_ylabel(axis_labels[1] if extent is not None else "pixel", fontsize="small")
            fig.colorbar(image, ax=axes[:, c].tolist(), label=_with_unit("mean per pixel", unit))
        if absent:
            fig.suptitle(f"no images: {', '.join(absent)}", fontsize="small")
    return fig


# --------------------------------------------------------------------------------------------------
# regression


@dataclass(frozen=True)
class BinnedResolution:
    """Bias and resolution of ``pred - true`` in bins of the true value (arrays of one per bin).

    ``edges`` (n+1) and ``centers`` in the unit of the true value; ``counts`` entries per bin;
    ``bias`` (median of pred - true) and ``resolution`` (68 % half-width, (q84 - q16)/2) in the unit
    of the target, NaN in bins with fewer than ``min_entries`` entries.
    """

    edges: np.ndarray
    centers: np.ndarray
    counts: np.ndarray
    bias: np.ndarray
    resolution: np.ndarray


def _check_pair(pred, true) -> tuple[np.ndarray, np.ndarray]:
    """1-d float arrays of equal, non-zero length, without pairs where either value is not finite."""
    pred, true = np.asarray(pred, dtype=np.float64), np.asarray(true, dtype=np.float64)
    if pred.ndim != 1 or true.ndim != 1:
        raise ValueError(f"pred {pred.shape} and true {true.shape} must be 1-d arrays")
    if pred.shape != true.shape:
        raise ValueError(
            f"pred ({pred.size} entries) and true ({true.size} entries) must have the same length"
        )
    finite = np.isfinite(pred) & np.isfinite(true)
    if not finite.any():
        raise ValueError("no entries with finite pred and true values (empty input)")
    return pred[finite], true[finite]


def binned_bias_resolution(
    pred, true, bins: int | Sequence[float] = 10, min_entries: int = 5, fraction: float = CONTAINMENT
) -> BinnedResolution:
    """Median and 68 % half-width of ``pred - true`` in bins of ``true``.

    ``bins`` is a number of equal-width bins from the smallest to the largest true value, or the
    bin edges (increasing; true values outside are left out; the last bin includes its upper edge).
    """
    pred, true = _check_pair(pred, true)
    if isinstance(bins, int | np.integer):
        if bins < 1:
            raise ValueError(f"bins must be at least 1, got {bins}")
        low, high = float(true.min()), float(true.max())
        edges = np.linspace(low, high if high > low else low + 1.0, int(bins) + 1)
    else:
        edges = np.asarray(bins, dtype=np.float64)
        if edges.ndim != 1 or edges.size < 2 or (np.diff(edges) <= 0).any():
            raise ValueError(f"bin edges must be at least two increasing values, got {list(edges)}")
    index = np.searchsorted(edges, true, side="right") - 1
    index[true == edges[-1]] = edges.size - 2
    n = edges.size - 1
    counts = np.zeros(n, dtype=np.int64)
    bias, resolution = np.full(n, np.nan), np.full(n, np.nan)
    residuals = pred - true
    for b in range(n):
        selected = residuals[index == b]
        counts[b] = selected.size
        if selected.size >= max(min_entries, 1):
            bias[b] = np.median(selected)
            resolution[b] = half_width(selected, fraction)
    return BinnedResolution(edges, (edges[1:] + edges[:-1]) / 2, counts, bias, resolution)


def regression_resolution(
    pred,
    true,
    name: str,
    unit: str = "",
    bins: int | Sequence[float] = 10,
    min_entries: int = 5,
    *,
    style=DEFAULT_STYLE,
) -> Figure:
    """Bias (top: median of pred - true) and resolution (bottom: 68 % half-width, (q84 - q16)/2)
    in bins of the true value of target ``name``; all axes in ``unit`` (empty: dimensionless).

    Horizontal bars show the bin widths; bins with fewer than ``min_entries`` entries are not drawn.
    """
    binned = binned_bias_resolution(pred, true, bins, min_entries)
    if np.isnan(binned.bias).all():
        raise ValueError(
            f"{name}: no bin has {min_entries} or more entries ({int(binned.counts.sum())} entries in "
            f"{binned.counts.size} bins); use fewer bins"
        )
    half = np.diff(binned.edges) / 2
    with plot_style(style):
        fig = _figure(8.0, 9.0)
        top, bottom = fig.subplots(2, 1, sharex=True)
        top.errorbar(binned.centers, binned.bias, xerr=half, fmt="o", markersize=5)
        top.axhline(0.0, color="grey", linestyle="--")
        top.set_ylabel(_with_unit(f"bias {name}", unit), fontsize="small")
        bottom.errorbar(binned.centers, binned.resolution, xerr=half, fmt="o", markersize=5)
        bottom.set_ylim(bottom=0.0)
        bottom.set_ylabel(_with_unit(f"resolution {name}", unit), fontsize="small")
        bottom.set_xlabel(_with_unit(f"true {name}", unit))
        top.set_title("bias: median(pred - true); resolution: (q84 - q16)/2", fontsize="x-small")
    return fig


def predicted_vs_true(
    pred, true, name: str, unit: str = "", bins: int = 50, *, style=DEFAULT_STYLE
) -> Figure:
    """2-d histogram of predicted versus true ``name`` (both in ``unit``; entries per cell on a log
    colour scale) with the diagonal pred = true as a dashed line."""
    pred, true = _check_pair(pred, true)
    low = float(min(pred.min(), true.min()))
    high = float(max(pred.max(), true.max()))
    if high <= low:
        high = low + 1.0
    edges = np.linspace(low, high, bins + 1)
    with plot_style(style):
        fig = _figure(8.5, 7.0)
        ax = fig.add_subplot()
        *_, image = ax.hist2d(true, pred, bins=[edges, edges], cmin=1, norm=LogNorm(), cmap="viridis")
        fig.colorbar(image, ax=ax, label="entries")
        ax.plot([low, high], [low, high], linestyle="--", color="red", label="pred = true")
        ax.set_xlabel(_with_unit(f"true {name}", unit))
        ax.set_ylabel(_with_unit(f"predicted {name}", unit))
        ax.legend(fontsize="x-small", loc="upper left")
    return fig


def residual_histograms(
    residuals: Mapping[str, np.ndarray],
    name: str,
    unit: str = "",
    title: str = "",
    bins: int = 60,
    *,
    style=DEFAULT_STYLE,
) -> Figure:
    """Histograms of ``corrected - true`` of ``name`` for several corrections (label -> array, all in
    ``unit``) on common bins covering their central 98 %, each labelled with its median and 68 %
    half-width: how far each correction moves the jets from the truth."""
    arrays = {label: np.asarray(values, dtype=np.float64) for label, values in residuals.items()}
    finite = np.concatenate([a[np.isfinite(a)] for a in arrays.values()]) if arrays else np.array([])
    if finite.size == 0:
        raise ValueError(f"{name}: no finite residuals to histogram")
    low, high = np.quantile(finite, [0.01, 0.99])
    edges = np.linspace(low, high if high > low else low + 1.0, bins + 1)
    with plot_style(style):
        fig = _figure(8.5, 6.5)
        ax = fig.add_subplot()
        for label, values in arrays.items():
            values = values[np.isfinite(values)]
            text = f"{label}: median {np.median(values):.1f}, 68 % half-width {half_width(values):.1f}"
            ax.hist(values, bins=edges, histtype="step", linewidth=1.5, label=text)
        ax.axvline(0.0, color="grey", linestyle="--")
        ax.set_xlabel(_with_unit(f"corrected - true {name}", unit))
        ax.set_ylabel("jets")
        if title:
            ax.set_title(title, fontsize="small")
        ax.legend(fontsize="x-small")
    return fig
