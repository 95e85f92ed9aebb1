"""Figures of a detection run: an event with its true and predicted boxes, efficiency and fake rate
against pT, and the pT and mass response of the matched boxes.

Boxes live in the (phi, eta) plane of the whole detector, phi periodic: a box that crosses
phi = +-pi is drawn in two pieces, one at each edge. Like :mod:`hepnn.analysis.plotting`, every
function takes plain data and returns a :class:`matplotlib.figure.Figure` without pyplot.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import awkward as ak
import numpy as np
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from hepnn.analysis.plotting import DEFAULT_STYLE, _figure, plot_style

COLOURS = ("tab:blue", "tab:red", "tab:green", "tab:purple", "tab:orange", "tab:brown")


def _rectangles(
    eta: float, phi: float, w_eta: float, w_phi: float
) -> list[tuple[float, float, float, float]]:
    """``(phi_low, eta_low, width_phi, width_eta)`` pieces of a box, split where it crosses +-pi."""
    low, high = phi - w_phi / 2, phi + w_phi / 2
    eta_low = eta - w_eta / 2
    pieces = [(max(low, -np.pi), eta_low, min(high, np.pi) - max(low, -np.pi), w_eta)]
    if low < -np.pi:
        pieces.append((low + 2 * np.pi, eta_low, np.pi - (low + 2 * np.pi), w_eta))
    if high > np.pi:
        pieces.append((-np.pi, eta_low, high - 2 * np.pi + np.pi, w_eta))
    return pieces


def event_display(
    truth: Mapping[str, Sequence[float]],
    boxes: Mapping[str, Sequence[float]],
    classes: Sequence[str],
    *,
    image: np.ndarray | None = None,
    eta_range: tuple[float, float] = (-2.5, 2.5),
    title: str = "",
    style=DEFAULT_STYLE,
) -> Figure:
    """One event: its truth objects (solid boxes: ``eta``, ``phi``, ``radius``, ``class``, ``pt`` in
    GeV) and the detector's boxes (dashed: ``eta``, ``phi``, ``width_eta``, ``width_phi``, ``class``,
    ``score``, ``pt``), over the summed image (``(n_eta, n_phi)`` transverse energy in GeV, optional)."""
    with plot_style(style):
        fig = _figure(10.0, 6.5)
        ax = fig.add_subplot()
        if image is not None:
            shown = np.where(image > 0, image, np.nan)
            mesh = ax.imshow(
                shown,
                origin="lower",
                extent=(-np.pi, np.pi, *eta_range),
                aspect="auto",
                cmap="Greys",
                interpolation="nearest",
            )
            fig.colorbar(mesh, ax=ax, label="pixel pT [GeV]")
        for k in range(len(truth["eta"])):
            c = int(truth["class"][k])
            width = 2 * float(truth["radius"][k])
            for x, y, w, h in _rectangles(float(truth["eta"][k]), float(truth["phi"][k]), width, width):
                ax.add_patch(
                    Rectangle((x, y), w, h, fill=False, linewidth=2, color=COLOURS[c % len(COLOURS)])
                )
            ax.annotate(
                f"{classes[c]} {float(truth['pt'][k]):.0f} GeV",
                (float(truth["phi"][k]), float(truth["eta"][k]) + width / 2),
                fontsize="x-small",
                color=COLOURS[c % len(COLOURS)],
                va="bottom",
                ha="center",
            )
        for k in range(len(boxes["eta"])):
            c = int(boxes["class"][k])
            pieces = _rectangles(
                float(boxes["eta"][k]),
                float(boxes["phi"][k]),
                float(boxes["width_eta"][k]),
                float(boxes["width_phi"][k]),
            )
            for x, y, w, h in pieces:
                ax.add_patch(
                    Rectangle(
                        (x, y),
                        w,
                        h,
                        fill=False,
                        linewidth=1.5,
                        linestyle="--",
                        color=COLOURS[c % len(COLOURS)],
                    )
                )
            ax.annotate(
                f"{classes[c]} {float(boxes['score'][k]):.2f}, {float(boxes['pt'][k]):.0f} GeV",
                (float(boxes["phi"][k]), float(boxes["eta"][k]) - float(boxes["width_eta"][k]) / 2),
                fontsize="x-small",
                color=COLOURS[c % len(COLOURS)],
                va="top",
                ha="center",
            )
        ax.set_xlim(-np.pi, np.pi)
        ax.set_ylim(*eta_range)
        ax.set_xlabel(r"$\phi$ [rad]")
        ax.set_ylabel(r"$\eta$")
        ax.set_title(title or "truth (solid) and detected (dashed) objects", fontsize="small")
    return fig


def binned_fractions(curves: Mapping[str, Mapping], ylabel: str, *, style=DEFAULT_STYLE) -> Figure:
    """Fractions with errors in pT bins (``edges`` GeV, ``fraction``, ``error`` per curve label)."""
    with plot_style(style):
        fig = _figure(8.5, 6.5)
        ax = fig.add_subplot()
        for label, curve in curves.items():
            edges = np.asarray(curve["edges"], dtype=np.float64)
            centres, half = (edges[1:] + edges[:-1]) / 2, (edges[1:] - edges[:-1]) / 2
            ax.errorbar(centres, curve["fraction"], xerr=half, yerr=curve["error"], fmt="o", label=label)
        ax.set_xlabel("pT [GeV]")
        ax.set_ylabel(ylabel)
        ax.set_ylim(0.0, 1.05)
        ax.legend(fontsize="x-small")
    return fig


def _first_event_with_objects(predictions: Mapping) -> int:
    counts = ak.to_numpy(ak.num(predictions["truth"]["eta"], axis=1))
    with_objects = np.flatnonzero(counts > 0)
    return int(with_objects[0]) if with_objects.size else 0


def plots(predictions: Mapping, summary: Mapping, label: str) -> list:
    """The plots ``hepnn.plot`` draws for a detection run (see the module docstring)."""
    from hepnn.analysis import plotting
    from hepnn.detection import average_precision as metrics
    from hepnn.tasks.detection import flat_objects

    classes = predictions["classes"]
    k = _first_event_with_objects(predictions)
    eta = predictions["grid"].get("eta", [-2.5, 2.5])
    out = [
        (
            "event_display",
            lambda: event_display(
                {c: np.asarray(v[k]) for c, v in predictions["truth"].items()},
                {c: np.asarray(v[k]) for c, v in predictions["boxes"].items()},
                classes,
                eta_range=(float(eta[0]), float(eta[1])),
                title=f"{label}: test event {k}",
            ),
        )
    ]
    columns = {f"box_{c}": v for c, v in predictions["boxes"].items()}
    columns.update({f"true_{c}": v for c, v in predictions["truth"].items()})
    pred, truth = flat_objects(columns)
    settings = predictions.get("detection") or {}
    found = metrics.detection_figures(
        pred,
        truth,
        settings.get("pt_bins", [200, 250, 300, 400, 500, 700, 1000]),
        score_threshold=settings.get("efficiency_score", 0.5),
        delta_r_threshold=settings.get("match", {}).get("delta_r", 0.4),
    )
    for stem, fraction, ylabel in (
        ("efficiency", found.efficiency, "efficiency (truth pT)"),
        ("fake_rate", found.fake_rate, "fake rate (box pT)"),
    ):
        curve = {"edges": fraction.edges, "fraction": fraction.fraction, "error": fraction.error}
        out.append((stem, lambda c=curve, y=ylabel: binned_fractions({label: c}, y)))
    pairs = found.pred_to_true >= 0
    partner = found.pred_to_true[pairs]
    for q in ("pt", "mass"):
        residuals = {label: pred[q][pairs] / truth[q][partner] - 1.0}
        if len(partner):
            out.append(
                (
                    f"box_{q}_response",
                    lambda r=residuals, q=q: plotting.residual_histograms(r, f"{q} / true", ""),
                )
            )
    return out
