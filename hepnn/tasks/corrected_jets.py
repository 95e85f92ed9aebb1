"""What the pile-up tasks share: jets corrected in several ways, judged against one truth.

A pile-up task (:mod:`hepnn.tasks.image_cleaning`, :mod:`hepnn.tasks.element_labelling`) keeps per
test jet the pT and mass (GeV) of a few jets, each named by a stem (``corrected``,
``uncorrected``, and the task's perfect-prediction limit), as ``pt_<stem>`` and ``mass_<stem>``
columns. These functions give their figures, predictions-file columns, summary rows, the columns
read back, and the residual plots, so that both tasks write and report them alike.
:class:`ImageJetsTask` is the base of the tasks that correct jet images pixel by pixel
(:mod:`hepnn.tasks.image_cleaning`, :mod:`hepnn.tasks.image_segmentation`): their settings, their
truth, their validation figures, and their predictions read back and plotted.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import ClassVar

import numpy as np

from hepnn.errors import ConfigError
from hepnn.pileup.figures import correction_figures
from hepnn.tasks.base import Plot, TaskBase, finite_figures

QUANTITIES = ("pt", "mass")
# a jet of a task: its column stem and its label in summaries and plots
Jets = Sequence[tuple[str, str]]


def jet_figures(predictions: Mapping, jets: Jets, true_pt, true_mass) -> dict[str, float]:
    """``<stem>_pt_bias``, ``<stem>_pt_resolution``, ``<stem>_mass_bias`` and
    ``<stem>_mass_resolution`` (GeV) of every jet against the true pT and mass."""
    figures = {}
    for stem, _ in jets:
        found = correction_figures(predictions[f"pt_{stem}"], predictions[f"mass_{stem}"], true_pt, true_mass)
        figures.update({f"{stem}_{k}": v for k, v in found.items()})
    return figures


def jet_columns(predictions: Mapping, jets: Jets) -> dict[str, np.ndarray]:
    """The ``pt_<stem>`` and ``mass_<stem>`` branches of a predictions file (float32, GeV)."""
    return {
        f"{q}_{stem}": np.asarray(predictions[f"{q}_{stem}"], dtype=np.float32)
        for stem, _ in jets
        for q in QUANTITIES
    }


def jet_summary_rows(summary: Mapping, jets: Jets, against: str) -> list[tuple[str, object]]:
    """``<label>: jet pt resolution / bias vs <against> [GeV]`` rows for the jets the summary has."""
    rows = []
    for stem, label in jets:
        for quantity in QUANTITIES:
            resolution = summary.get(f"test/{stem}_{quantity}_resolution")
            if resolution is not None:
                bias = summary.get(f"test/{stem}_{quantity}_bias")
                rows.append(
                    (f"{label}: jet {quantity} resolution / bias vs {against} [GeV]", (resolution, bias))
                )
    return rows


def read_jets(
    arrays: Callable[[Iterable[str]], dict], jets: Jets, truth_observers: Mapping[str, str]
) -> dict:
    """``{"pt": {stem: array}, "mass": {stem: array}, "truth": {"pt", "mass"} or None}`` read back
    from a predictions file (``arrays(branches)``), the truth from the named observers."""
    names = [f"{q}_{stem}" for stem, _ in jets for q in QUANTITIES]
    values = arrays([*names, *truth_observers.values()])
    return {
        **{q: {stem: values[f"{q}_{stem}"] for stem, _ in jets} for q in QUANTITIES},
        "truth": {q: values[o] for q, o in truth_observers.items()} or None,
    }


def residual_plots(predictions: Mapping, jets: Jets, truth: Mapping, label: str) -> list:
    """Histograms of corrected minus true jet pT and mass, one curve per jet of ``jets``."""
    from hepnn.analysis import plotting

    plots = []
    for quantity in QUANTITIES:
        residuals = {jet_label: predictions[quantity][stem] - truth[quantity] for stem, jet_label in jets}
        plots.append(
            (
                f"jet_{quantity}_residuals",
                lambda r=residuals, q=quantity: plotting.residual_histograms(r, f"jet {q}", "GeV", label),
            )
        )
    return plots


class ImageJetsTask(TaskBase):
    """A task that corrects a jet image pixel by pixel and judges the jet of the corrected image
    against one truth: the jet without pile-up (``truth_observers`` maps ``pt`` and ``mass`` to the
    observers holding it, GeV), or, without them, the jet of the perfect prediction (the stem
    ``limit``). Subclasses name their jets (``jets``, the ``corrected``, ``uncorrected`` and
    ``limit`` stems), keep a row per batch in ``self._rows`` and give :meth:`test_figures`."""

    jets: ClassVar[Jets] = ()
    limit: ClassVar[str] = ""

    def image_settings(
        self, target: str, grid: Mapping, pixel_scale: float, truth_observers, write_images: bool
    ) -> None:
        """Checks and keeps the settings every image task has (the one input image, the target
        image's batch entry, its pixel grid, the pixel scale in GeV, the truth and whether the
        predictions file gets the images)."""
        if len(self.inputs) != 1:
            raise ConfigError(f"model.inputs must name the one input image, got {self.inputs}")
        if not float(pixel_scale) > 0:
            raise ConfigError(f"model.pixel_scale must be a positive pT (GeV), got {pixel_scale!r}")
        truth = dict(truth_observers or {})
        if truth and set(truth) != {"pt", "mass"}:
            raise ConfigError(f"model.truth_observers must map pt and mass to observers, got {truth}")
        self.target = str(target)
        self.grid = {k: (list(v) if isinstance(v, Sequence) else v) for k, v in dict(grid).items()}
        self.pixel_scale = float(pixel_scale)
        self.truth_observers = truth
        self.write_images = bool(write_images)

    def truth(self, predictions: Mapping[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        """pT and mass (GeV) of the jets the corrected jets are judged against."""
        if self.truth_observers:
            keys = [f"observer:{self.truth_observers[k]}" for k in QUANTITIES]
            missing = [k.removeprefix("observer:") for k in keys if k not in predictions]
            if missing:
                raise ConfigError(
                    f"model.truth_observers names {missing}, which data.observers does not list"
                )
            return predictions[keys[0]], predictions[keys[1]]
        return predictions[f"pt_{self.limit}"], predictions[f"mass_{self.limit}"]

    def on_validation_epoch_start(self) -> None:
        self._rows = []

    def on_validation_epoch_end(self) -> None:
        merged = self.gathered()
        if merged is not None:
            figures, _ = self.test_figures(merged)
            self.log_dict(finite_figures("val", figures), sync_dist=True)

    def prediction_metadata(self) -> dict[str, str]:
        return {
            **super().prediction_metadata(),
            "grid": json.dumps(self.grid),
            "truth_observers": json.dumps(self.truth_observers),
        }

    @classmethod
    def read_predictions(
        cls, arrays: Callable[[Iterable[str]], dict], metadata: Mapping[str, str], path
    ) -> dict:
        """``{"kind", "task", "truth_observers", "pt": {jet: array}, "mass": {jet: array}, "truth":
        {"pt", "mass"} or None}`` (GeV)."""
        if "grid" not in metadata:
            raise ValueError(f"{path} has no 'grid' string beside the predictions tree")
        truth_observers = json.loads(metadata.get("truth_observers") or "{}")
        jets = read_jets(arrays, cls.jets, truth_observers)
        return {"kind": cls.kind, "task": cls, "truth_observers": truth_observers, **jets}

    @classmethod
    def plots(cls, predictions: Mapping, summary: Mapping, label: str) -> list[Plot]:
        if predictions["truth"]:
            return residual_plots(predictions, cls.jets, predictions["truth"], label)
        # without the jets without pile-up, the perfect prediction's jet is the truth
        truth = {q: predictions[q][cls.limit] for q in QUANTITIES}
        return residual_plots(predictions, [j for j in cls.jets if j[0] != cls.limit], truth, label)
