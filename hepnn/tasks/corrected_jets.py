"""What the pile-up tasks share: jets corrected in several ways, judged against one truth.

A pile-up task (:mod:`hepnn.tasks.image_cleaning`, :mod:`hepnn.tasks.element_labelling`) keeps per
test jet the pT and mass (GeV) of a few jets, each named by a stem (``corrected``,
``uncorrected``, and the task's perfect-prediction limit), as ``pt_<stem>`` and ``mass_<stem>``
columns. These functions give their figures, predictions-file columns, summary rows, the columns
read back, and the residual plots, so that both tasks write and report them alike.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence

import numpy as np

from hepnn.pileup.figures import correction_figures

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
