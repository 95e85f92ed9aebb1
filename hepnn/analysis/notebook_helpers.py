"""Small helpers behind the notebooks in ``notebooks/``: read run directories and samples, and draw
the air-shower event figures.

Everything a notebook needs that is more than a call of :mod:`hepnn.analysis.plotting` lives here, tested,
so the notebooks hold parameters and calls only:

- :func:`load_run` / :func:`load_runs`: a run directory (``summary.json``, ``config.yaml``,
  ``predictions/test.root``, the metrics CSV) as a :class:`Run`; a missing directory raises
  :class:`FileNotFoundError` naming it.
- :func:`roc_inputs`, :func:`confusion_matrix_of`, :func:`classifier_table`: what the classifier
  comparisons plot and tabulate.
- :func:`regression_figures_of_merit`: the air-shower figures (energy, angular and core resolution)
  of a regression run's predictions, with :mod:`hepnn.metrics.regression`.
- :func:`jet_images`: calorimeter jet images of a jet sample made by hepnn's own data pipeline (the
  ``toptag_image``-style data configs and :class:`~hepnn.data.datamodule.RootDataModule`), with the
  configured jet-frame preprocessing or without it.
- :func:`resolve_files`, :func:`read_events`, :func:`event_at`: raw events of ROOT files.
- :func:`airshower_footprint`, :func:`station_traces`: one air-shower event of the toy surface
  detector (:mod:`hepnn.sim.airshower`): the station grid coloured by signal, and the strongest traces.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from matplotlib.colors import LogNorm
from matplotlib.figure import Figure

from hepnn.analysis import plotting
from hepnn.analysis.runs import find_metrics_csv, read_predictions
from hepnn.metrics import regression as rm

__all__ = [
    "JetImages",
    "Run",
    "airshower_footprint",
    "classifier_table",
    "confusion_matrix_of",
    "event_at",
    "jet_images",
    "load_run",
    "load_runs",
    "read_events",
    "regression_figures_of_merit",
    "resolve_files",
    "roc_inputs",
    "station_traces",
]

TRACE_BIN_NS = 25.0  # width of a trace bin of the toy surface detector (ns)
NO_PREPROCESSING = {"center": "none", "rotate": False, "flip": False, "normalize": False}


# --------------------------------------------------------------------------------------------------
# run directories


@dataclass
class Run:
    """What a run directory holds: ``summary`` (``summary.json``, ``{}`` if absent), ``predictions``
    (:func:`hepnn.analysis.runs.read_predictions` of ``predictions/test.root``, ``None`` if absent) and the
    metrics CSV path (``None`` if absent)."""

    path: Path
    summary: dict
    predictions: dict | None
    metrics_csv: Path | None

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def task(self):
        """The task class that wrote the predictions (:class:`hepnn.tasks.base.TaskBase`), or None."""
        return None if self.predictions is None else self.predictions["task"]

    @property
    def kind(self) -> str | None:
        """The task's kind (``"classification"``, ``"regression"``), or ``None`` (no predictions)."""
        return None if self.predictions is None else self.task.kind

    @property
    def signal_class(self) -> str:
        """The signal class its predictions file records (classifiers only)."""
        return self._require("classification")["signal_class"]

    def _require(self, kind: str) -> dict:
        if self.predictions is None:
            raise FileNotFoundError(f"run {self.path} has no predictions file predictions/test.root")
        if self.predictions["kind"] != kind:
            raise ValueError(f"run {self.path} is a {self.predictions['kind']} run, not a {kind} run")
        return self.predictions


def _existing_dir(path, what: str) -> Path:
    path = Path(path).expanduser()
    if not path.is_dir():
        raise FileNotFoundError(
            f"{what} {str(path)!r} does not exist (or is not a directory); cwd {Path.cwd()}"
        )
    return path


def load_run(run_dir: str | os.PathLike, require_predictions: bool = True) -> Run:
    """Read a run directory written by ``python -m hepnn.train`` (or ``hepnn.evaluate``).

    Raises :class:`FileNotFoundError` naming ``run_dir`` when it is not a directory, or naming the
    predictions file when ``require_predictions`` and ``predictions/test.root`` is missing.
    """
    path = _existing_dir(run_dir, "run directory")
    summary_path = path / "summary.json"
    summary = json.loads(summary_path.read_text()) if summary_path.is_file() else {}
    predictions_path = path / "predictions" / "test.root"
    if predictions_path.is_file():
        predictions = read_predictions(predictions_path)
    elif require_predictions:
        raise FileNotFoundError(f"run directory {str(path)!r} has no predictions file {predictions_path}")
    else:
        predictions = None
    return Run(path, summary, predictions, find_metrics_csv(path))


def load_runs(run_dirs: Mapping[str, str | os.PathLike], require_predictions: bool = True) -> dict[str, Run]:
    """:func:`load_run` of every ``{name: run directory}`` (the names label curves and table rows)."""
    if not run_dirs:
        raise ValueError("no run directories given (an empty mapping)")
    return {name: load_run(d, require_predictions) for name, d in run_dirs.items()}


def roc_inputs(runs: Mapping[str, Run]) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """``{name: (signal score, is_signal)}`` of classifier runs for :func:`hepnn.analysis.plotting.roc_curves`
    (signal: each run's :attr:`Run.signal_class` versus the rest)."""
    out = {}
    for name, run in runs.items():
        predictions = run._require("classification")
        k = list(predictions["classes"]).index(run.signal_class)
        out[f"{name} ({run.signal_class} vs rest)"] = (
            predictions["scores"][:, k],
            predictions["labels"] == k,
        )
    return out


def confusion_matrix_of(run: Run) -> tuple[np.ndarray, list[str]]:
    """The test confusion matrix (rows true, columns predicted; counts) and class names of a
    classifier run: from ``summary.json`` when there, else computed from the predictions."""
    entry = run.summary.get("test/confusion_matrix")
    if isinstance(entry, Mapping) and "rows_true_columns_predicted" in entry and "classes" in entry:
        return np.asarray(entry["rows_true_columns_predicted"]), list(entry["classes"])
    from hepnn.metrics.classification import confusion_matrix

    predictions = run._require("classification")
    classes = list(predictions["classes"])
    labels = predictions["labels"].astype(np.int64)
    return np.asarray(confusion_matrix(predictions["scores"], labels, len(classes))), classes


TABLE_COLUMNS = (
    ("test AUC", "test/auc", "{:.4f}"),
    ("1/eps_B at eps_S = 0.3", "test/rej30", "{:.1f}"),
    ("1/eps_B at eps_S = 0.5", "test/rej50", "{:.1f}"),
    ("accuracy", "test/acc", "{:.4f}"),
    ("parameters", "parameters", "{:.0f}"),
    ("test entries", "data/test_entries", "{:.0f}"),
)


def classifier_table(runs: Mapping[str, Run], columns=TABLE_COLUMNS) -> str:
    """A markdown table of the classifier figures in each run's ``summary.json`` (one row per run;
    ``-`` where a figure is missing). ``columns``: ``(header, summary key, format)`` triples."""
    lines = [
        "| run | " + " | ".join(c[0] for c in columns) + " |",
        "|---" * (len(columns) + 1) + "|",
    ]
    for name, run in runs.items():
        cells = []
        for _, key, fmt in columns:
            value = run.summary.get(key)
            cells.append(fmt.format(value) if isinstance(value, int | float) else "-")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def regression_figures_of_merit(
    run: Run,
    energy_target: str | None = "log10_energy",
    axis_targets: Sequence[str] | None = ("axis_x", "axis_y", "axis_z"),
    core_targets: Sequence[str] | None = ("core_x", "core_y"),
) -> dict[str, float]:
    """:func:`hepnn.metrics.regression.regression_summary` of a regression run's test predictions.

    Figures whose targets the run did not predict are left out (e.g. no angular resolution for an
    ``airshower_energy`` run): bias and resolution per target (target units), ``energy_bias`` and
    ``energy_resolution`` (relative), ``angular_resolution_deg`` and ``core_resolution_m``.
    """
    predictions = run._require("regression")
    targets = set(predictions["targets"])
    return rm.regression_summary(
        predictions["pred"],
        predictions["true"],
        energy_target=energy_target if energy_target in targets else None,
        axis_targets=axis_targets if axis_targets and set(axis_targets) <= targets else None,
        core_targets=core_targets if core_targets and set(core_targets) <= targets else None,
    )


# --------------------------------------------------------------------------------------------------
# samples


def resolve_files(files: str | os.PathLike | Sequence[str | os.PathLike]) -> list[Path]:
    """Sorted paths of a glob, a path or a list of them (the loader's rules,
    :func:`hepnn.data.source.resolve_files`); an error names the pattern that matches nothing."""
    from hepnn.data import resolve_files as resolve

    patterns = [files] if isinstance(files, str | os.PathLike) else list(files)
    return [Path(p) for p in resolve([str(p) for p in patterns], key="DATA_FILES")]


def read_events(
    files, branches: Sequence[str] | None = None, max_events: int | None = None, tree: str = "tree"
) -> dict[str, np.ndarray]:
    """Branches (default: all) of the first ``max_events`` entries of ``files`` (glob, path or list),
    file after file, as numpy arrays (fixed-size arrays keep their shape, e.g. traces (N, 81, 80))."""
    import uproot

    parts: list[dict[str, np.ndarray]] = []
    left = max_events
    for path in resolve_files(files):
        if left is not None and left <= 0:
            break
        with uproot.open(path) as handle:
            if tree not in handle:
                raise ValueError(f"{path} has no tree {tree!r} (keys: {handle.keys(cycle=False)})")
            parts.append(handle[tree].arrays(branches, entry_stop=left, library="np"))
        if left is not None:
            left -= len(next(iter(parts[-1].values()), []))
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


def event_at(events: Mapping[str, np.ndarray], index: int) -> dict[str, np.ndarray]:
    """Entry ``index`` of :func:`read_events` arrays (one value or array per branch)."""
    return {k: v[index] for k, v in events.items()}


@dataclass
class JetImages:
    """Jet images made by the data pipeline: ``images`` ``(N, C, n_eta, n_phi)`` (pixel unit: that of
    the channel intensities, e.g. GeV, or fractions of the jet after normalisation), ``labels``
    (class indices), ``classes``, ``channels`` (channel names) and ``extent`` ``(eta_min, eta_max,
    phi_min, phi_max)`` in radians from the jet axis, for :func:`hepnn.analysis.plotting.average_images`;
    ``file_index`` and ``entry`` say where each jet comes from (``source_files[file_index]``)."""

    images: np.ndarray
    labels: np.ndarray
    classes: list[str]
    channels: list[str]
    extent: tuple[float, float, float, float]
    file_index: np.ndarray
    entry: np.ndarray
    source_files: list[str]


def jet_images(
    files,
    data: str = "toptag_image",
    max_jets: int = 3000,
    preprocessing: bool | Mapping = True,
    split: str = "train",
    overrides: Sequence[str] = (),
) -> JetImages:
    """Images of up to ``max_jets`` jets of ``files`` (glob, path or list) from the ``data`` config
        (``conf/data/<data>.yaml``, an image config such as ``toptag_image``, ``qg_image``,
        ``jets4_image``), read by :class:`~hepnn.data.datamodule.RootDataModule` from ``split``
    (``train``, ``val`` or ``test``). Training batches are shuffled over chunks of every file, so the
    first ``max_jets`` of the ``train`` split mix the files (and classes) of a sample written file by
    file; random flips (``augment``) are switched off.

        ``preprocessing``: ``True`` for the config's jet-frame preprocessing (centre, rotate, flip,
        normalise), ``False`` for none (pixels in GeV around the jet axis), or a mapping of the keys to
        change (``center``, ``rotate``, ``flip``, ``normalize``, ``subjet_radius``). ``overrides``:
        further Hydra overrides of the ``train`` config (e.g. ``"data.inputs.image.grid.n_eta=20"``).
    """
    import hydra
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from omegaconf import OmegaConf, open_dict

    from hepnn.utils.config import config_dir, register_resolvers

    paths = [str(p) for p in resolve_files(files)]
    register_resolvers()
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir(), version_base="1.3"):
        cfg = compose("train", overrides=[f"data={data}", *overrides])
    GlobalHydra.instance().clear()
    group = OmegaConf.select(cfg, "data.inputs.image")
    if group is None or "channels" not in group:
        raise ValueError(f"data config {data!r} has no image input group data.inputs.image (with channels)")
    with open_dict(cfg):
        cfg.data.files = paths
        cfg.data.generate = None
        cfg.data.num_workers = 0
        cfg.data.cache = None
        cfg.data.progress_bar = False
        cfg.data.eval_batch_size = cfg.data.batch_size = min(int(max_jets), 1024)
        cfg.data.inputs.image.augment = {"flip_eta": False, "flip_phi": False}
        if preprocessing is False:
            cfg.data.inputs.image.preprocessing = dict(NO_PREPROCESSING)
        elif isinstance(preprocessing, Mapping):
            cfg.data.inputs.image.preprocessing.update(dict(preprocessing))
    datamodule = hydra.utils.instantiate(cfg.data, _convert_="all")
    datamodule.setup()
    loaders = {
        "train": datamodule.train_dataloader,
        "val": datamodule.val_dataloader,
        "test": datamodule.test_dataloader,
    }
    if split not in loaders:
        raise ValueError(f"split must be one of {sorted(loaders)}, got {split!r}")
    loader = loaders[split]()
    columns: dict[str, list[np.ndarray]] = {"image": [], "label": [], "file_index": [], "entry": []}
    n = 0
    for batch in loader:
        for key, values in columns.items():
            values.append(batch[key].numpy())
        n += len(columns["label"][-1])
        if n >= max_jets:
            break
    if not n:
        raise ValueError(f"the {split} split of {files!r} holds no jets")
    grid = cfg.data.inputs.image.grid
    extent = (*(float(v) for v in grid.eta), *(float(v) for v in grid.phi))
    first = {key: np.concatenate(values)[:max_jets] for key, values in columns.items()}
    return JetImages(
        first["image"],
        first["label"].astype(np.int64),
        list(datamodule.classes),
        [str(c) for c in group.channels],
        extent,
        first["file_index"].astype(np.int64),
        first["entry"].astype(np.int64),
        datamodule.source_files(),
    )


# --------------------------------------------------------------------------------------------------
# air-shower events


def _station_signals(event: Mapping) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    try:
        traces = np.asarray(event["traces"], dtype=np.float64)
        x, y = np.asarray(event["station_x"], float), np.asarray(event["station_y"], float)
        triggered = np.asarray(event["station_triggered"], bool)
    except KeyError as err:
        raise ValueError(f"an air-shower event needs the branch {err} (see hepnn.sim.airshower)") from None
    if traces.ndim != 2 or not (traces.shape[0] == x.size == y.size == triggered.size):
        raise ValueError(
            f"traces must be (stations, bins) with one station_x/y/triggered per station, got traces "
            f"{traces.shape}, station_x {x.shape}, station_y {y.shape}, station_triggered {triggered.shape}"
        )
    return traces, x, y, triggered


def airshower_footprint(event: Mapping, *, style=plotting.DEFAULT_STYLE) -> Figure:
    """The footprint of one air-shower event on the station grid (km): triggered stations coloured
    by their total signal (VEM, log scale), untriggered ones as grey crosses, the true core (star)
    and the arrival direction projected on the ground (arrow from the core towards where the
    shower comes from, length proportional to sin(zenith)).

    ``event``: one entry of a file of :mod:`hepnn.sim.airshower` (:func:`event_at`), with
    ``traces``, ``station_x``, ``station_y``, ``station_triggered``; ``core_x``, ``core_y``,
    ``axis_x``, ``axis_y``, ``log10_energy``, ``zenith`` are drawn or noted when present.
    """
    traces, x, y, triggered = _station_signals(event)
    total = traces.sum(axis=1)
    km = 1e-3
    spacing = np.min(np.diff(np.unique(x))) if np.unique(x).size > 1 else 1500.0
    with plotting.plot_style(style):
        fig = plotting._figure(8.5, 7.5)
        ax = fig.add_subplot()
        ax.scatter(
            x[~triggered] * km, y[~triggered] * km, marker="x", color="grey", s=25, label="not triggered"
        )
        shown = triggered & (total > 0)
        if shown.any():
            image = ax.scatter(
                x[shown] * km,
                y[shown] * km,
                c=total[shown],
                s=40 + 60 * np.log10(1 + total[shown]),
                norm=LogNorm(max(total[shown].min(), 1e-3), max(total[shown].max(), 1e-2)),
                cmap="viridis",
                edgecolors="black",
                label="triggered",
            )
            fig.colorbar(image, ax=ax, label="total signal [VEM]")
        if "core_x" in event and "core_y" in event:
            cx, cy = float(event["core_x"]) * km, float(event["core_y"]) * km
            ax.plot(cx, cy, marker="*", color="red", markersize=18, linestyle="none", label="true core")
            if "axis_x" in event and "axis_y" in event:
                length = 2.0 * spacing * km  # sin(zenith) = |(axis_x, axis_y)|: 2 spacings at 90 deg
                ax.annotate(
                    "",
                    xy=(cx + float(event["axis_x"]) * length, cy + float(event["axis_y"]) * length),
                    xytext=(cx, cy),
                    arrowprops={"arrowstyle": "->", "color": "red", "linewidth": 2},
                )
                ax.plot([], [], color="red", label="axis on the ground (towards the source)")
        title = [f"{int(triggered.sum())} triggered stations"]
        if "log10_energy" in event:
            title.append(f"log10(E/eV) = {float(event['log10_energy']):.2f}")
        if "zenith" in event:
            title.append(f"zenith = {np.degrees(float(event['zenith'])):.1f} deg")
        ax.set_title(", ".join(title), fontsize="xx-small")
        ax.set_xlabel("x [km]")
        ax.set_ylabel("y [km]")
        ax.set_aspect("equal")
        fig.legend(fontsize="xx-small", loc="outside lower center", ncols=2)
    return fig


def station_traces(
    event: Mapping, n_stations: int = 4, bin_width: float = TRACE_BIN_NS, *, style=plotting.DEFAULT_STYLE
) -> Figure:
    """The traces (VEM per bin) of the ``n_stations`` stations with the largest total signal of one
    air-shower event versus time (ns, relative to the core's crossing of the ground: each station's
    ``station_start_time`` plus ``bin_width`` per bin), one panel per station, strongest first,
    each labelled with its total signal and its distance to the true core (m) when known."""
    traces, x, y, _ = _station_signals(event)
    if n_stations < 1:
        raise ValueError(f"n_stations must be at least 1, got {n_stations}")
    total = traces.sum(axis=1)
    order = [k for k in np.argsort(-total, kind="stable") if total[k] > 0][:n_stations]
    if not order:
        raise ValueError("the event has no station with a signal (all traces are zero)")
    start = np.asarray(event.get("station_start_time", np.zeros(len(x))), dtype=np.float64)
    bins = np.arange(traces.shape[1] + 1) * bin_width
    with plotting.plot_style(style):
        fig = plotting._figure(9.0, 2.6 * len(order) + 0.8)
        axes = fig.subplots(len(order), 1, squeeze=False).ravel()
        for ax, k in zip(axes, order, strict=True):
            ax.stairs(traces[k], start[k] + bins, linewidth=1.5)
            text = f"station {k} ({x[k] / 1e3:.1f}, {y[k] / 1e3:.1f}) km, {total[k]:.1f} VEM"
            if "core_x" in event and "core_y" in event:
                distance = np.hypot(x[k] - float(event["core_x"]), y[k] - float(event["core_y"]))
                text += f", {distance:.0f} m from the core"
            ax.set_title(text, fontsize="x-small")
            ax.set_ylabel("signal [VEM]", fontsize="small")
        axes[-1].set_xlabel("time [ns] (0: core reaches the ground)")
    return fig
