"""(Multi-target) regression as a task, independent of the network it trains.

The net is any ``nn.Module`` taking the batch entries named in ``inputs`` (e.g. ``traces``,
``start_time``, ``station_mask``) and returning ``(B, K)``: one column per name in ``targets``,
in the order of the columns of ``batch["targets"]`` (a net returning a dict of tensors is
accepted too: its values are concatenated in order).

Standardisation: every target has a ``center`` and a ``scale`` (physical units); the net
learns ``z = (target - center) / scale`` (unit-scale outputs), and its outputs are turned back
into physical units by ``center + scale * z`` for metrics, ``predict_step`` and the test
predictions. Centres and scales are buffers of the module, so checkpoints are self-contained.

Loss: ``mse`` or ``huber`` (``huber_delta`` in standardised units) per target on the
standardised scale, a weighted mean over targets (``loss_weights``, default 1 each), then a
mean over entries (weighted by ``batch["weight"]`` when the batch has one).

Metrics (:mod:`hepnn.metrics.regression`), on validation and test, computed at the end of the
epoch on the predictions of all ranks (gathered): per target ``<target>_bias`` (median of
prediction - truth) and ``<target>_resolution`` (68 % half-width of prediction - truth), both
in the target's unit; and the figures the configuration names: with ``energy_target`` (a target
holding log10 E) ``energy_bias`` and ``energy_resolution`` (of (E_pred - E_true) / E_true);
with ``axis_targets`` (three targets x, y, z of the shower axis) ``angular_resolution_deg``
(68 % quantile of the opening angle; the predicted vector is normalised); with
``core_targets`` (two targets) ``core_resolution_m`` (68 % quantile of the core distance, in
the unit of the core targets: metres by convention). They are logged as ``val/<figure>`` and
``test/<figure>``.

Predictions file: ``pred_<target>`` and ``true_<target>`` (physical units), then ``file_index``,
``entry`` and the observers; ``targets`` and their ``units`` are stored beside the tree. Export
head: physical-unit predictions, output ``predictions``. Plots: binned bias and resolution, and
predicted against true, per target.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterable, Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from hepnn.errors import ConfigError
from hepnn.metrics import regression as regression_metrics
from hepnn.tasks.base import Plot, TaskBase, finite_figures, provenance_and_observers, provenance_columns
from hepnn.utils import validation as check
from hepnn.utils.standardization import center_and_scale
from hepnn.utils.validation import is_number as finite_number

LOSSES = ("mse", "huber")
BATCH_AXIS = "batch"
# the configured physics figures: summary label and key
CONFIGURED_FIGURES = (
    ("angular resolution [deg] (68 %)", "angular_resolution_deg"),
    ("core resolution [m] (68 %)", "core_resolution_m"),
    ("energy resolution dE/E (68 %)", "energy_resolution"),
    ("energy bias dE/E (median)", "energy_bias"),
)


class RegressionTask(TaskBase):
    """Trains ``net`` to predict the ``targets`` (columns of ``batch["targets"]``).

    ``standardization`` maps target names to ``{center: c, scale: s}`` (or ``[c, s]``) in
    physical units. Every target needs an entry (a target without one is an error naming it:
    a misspelt name would otherwise train on raw physical values); entries of names that are
    not targets are ignored, so one table serves a preset and its single-target variants.
    ``energy_target``, ``axis_targets`` and ``core_targets`` name the targets behind the energy,
    direction and core figures (null: not computed); ``containment`` is the fraction of the
    resolutions (0.68). ``units`` maps target names to their units (``data.targets.<name>.unit``),
    shown in the summary, the plots and the export sidecar. The other arguments are those of
    :class:`~hepnn.tasks.base.TaskBase`. Configuration errors name the ``model.<key>`` at fault.
    """

    kind = "regression"
    export_output_name = "predictions"

    def __init__(
        self,
        net: nn.Module,
        targets: Sequence[str],
        inputs: Sequence[str],
        optimizer: Callable[..., torch.optim.Optimizer],
        scheduler: Callable[..., torch.optim.lr_scheduler.LRScheduler] | None = None,
        scheduler_interval: str = "epoch",
        standardization: Mapping[str, Mapping | Sequence[float]] | None = None,
        loss: str = "mse",
        huber_delta: float = 1.0,
        loss_weights: Mapping[str, float] | None = None,
        energy_target: str | None = None,
        axis_targets: Sequence[str] | None = None,
        core_targets: Sequence[str] | None = None,
        containment: float = regression_metrics.CONTAINMENT,
        units: Mapping[str, str | None] | None = None,
        pretrained: Mapping | None = None,
    ):
        super().__init__(net, inputs, optimizer, scheduler, scheduler_interval, pretrained)
        if isinstance(targets, str):
            raise ConfigError(f"model.targets must be a list of target names, got the string {targets!r}")
        self.targets = [str(t) for t in targets]
        if not self.targets:
            raise ConfigError("model.targets is empty: name at least one regression target (data.targets)")
        if len(set(self.targets)) != len(self.targets):
            raise ConfigError(f"model.targets has repeated names: {self.targets}")
        if loss not in LOSSES:
            raise ConfigError(f"model.loss must be one of {list(LOSSES)}, got {loss!r}")
        check.require(
            finite_number(huber_delta) and huber_delta > 0,
            "model.huber_delta",
            "a positive number",
            huber_delta,
        )
        check.require(
            finite_number(containment) and 0.0 < containment < 1.0,
            "model.containment",
            "in (0, 1)",
            containment,
        )
        self.loss_name = loss
        self.huber_delta = float(huber_delta)
        self.containment = float(containment)
        self.energy_target = self._named_targets("energy_target", energy_target, 1)
        self.axis_targets = self._named_targets("axis_targets", axis_targets, 3)
        self.core_targets = self._named_targets("core_targets", core_targets, 2)
        n_outputs = getattr(net, "n_outputs", None)
        if check.is_int(n_outputs) and n_outputs != len(self.targets):
            raise ConfigError(
                f"model.net gives {n_outputs} outputs per entry but model.targets names {len(self.targets)} "
                f"targets {self.targets}; the net needs one output per target"
            )
        center, scale = self._standardization(standardization)
        self.register_buffer("target_center", torch.tensor(center, dtype=torch.float32))
        self.register_buffer("target_scale", torch.tensor(scale, dtype=torch.float32))
        self.register_buffer(
            "loss_weight", torch.tensor(self._loss_weights(loss_weights), dtype=torch.float32)
        )
        self.units = {name: (units or {}).get(name) or "" for name in self.targets}

    # ------------------------------------------------------------------------------------------------
    # configuration
    # ------------------------------------------------------------------------------------------------

    def _named_targets(self, key: str, names, count: int):
        """Check that ``model.<key>`` names ``count`` distinct targets; a single name for count 1."""
        if names is None or (count > 1 and len(names) == 0):
            return None
        listed = [names] if count == 1 else list(names)
        if count == 1 and not isinstance(names, str):
            raise ConfigError(f"model.{key} must be one target name (or null), got {names!r}")
        if len(listed) != count or len(set(listed)) != count:
            raise ConfigError(f"model.{key} must name {count} different targets (or be null), got {listed}")
        missing = [name for name in listed if name not in self.targets]
        if missing:
            raise ConfigError(
                f"model.{key}: {missing} {'is' if len(missing) == 1 else 'are'} not among model.targets "
                f"{self.targets}; name the targets that hold it (or set model.{key}=null)"
            )
        return listed[0] if count == 1 else listed

    def _standardization(self, values) -> tuple[list[float], list[float]]:
        center, scale = [0.0] * len(self.targets), [1.0] * len(self.targets)
        values = dict(values or {})
        missing = [name for name in self.targets if name not in values]
        if missing:
            raise ConfigError(
                f"model.standardization has no entry for target(s) {missing} (it has {sorted(values)}); "
                "give each target {center: c, scale: s} in its physical unit ({center: 0, scale: 1} "
                "to learn it as it is)"
            )
        for name, entry in values.items():
            key = f"model.standardization.{name}"
            if name not in self.targets:
                continue
            c, s = center_and_scale(entry, key)
            k = self.targets.index(name)
            center[k], scale[k] = c, s
        return center, scale

    def _loss_weights(self, values) -> list[float]:
        weights = [1.0] * len(self.targets)
        for name, weight in (values or {}).items():
            if name not in self.targets:
                raise ConfigError(
                    f"model.loss_weights.{name}: {name!r} is not one of model.targets {self.targets}"
                )
            if not (finite_number(weight) and weight >= 0):
                raise ConfigError(f"model.loss_weights.{name} must be a non-negative number, got {weight!r}")
            weights[self.targets.index(name)] = float(weight)
        if sum(weights) <= 0:
            raise ConfigError(
                f"model.loss_weights are all zero: {dict(zip(self.targets, weights, strict=True))}"
            )
        return weights

    # ------------------------------------------------------------------------------------------------
    # standardisation
    # ------------------------------------------------------------------------------------------------

    def to_physical(self, standardized: torch.Tensor) -> torch.Tensor:
        """``center + scale * z``: net outputs ``(B, K)`` in the targets' physical units."""
        return (
            self.target_center.to(standardized.dtype)
            + self.target_scale.to(standardized.dtype) * standardized
        )

    def to_standardized(self, physical: torch.Tensor) -> torch.Tensor:
        """``(target - center) / scale``: what the net learns to output."""
        return (physical - self.target_center.to(physical.dtype)) / self.target_scale.to(physical.dtype)

    # ------------------------------------------------------------------------------------------------
    # steps
    # ------------------------------------------------------------------------------------------------

    def forward(self, batch: dict) -> torch.Tensor:
        """Standardised outputs ``(B, K)`` for a batch dict (:meth:`to_physical` gives physical units)."""
        outputs = self.net_outputs(batch)
        if isinstance(outputs, Mapping):
            outputs = torch.cat([v.reshape(len(v), -1) for v in outputs.values()], dim=-1)
        if outputs.ndim != 2 or outputs.shape[1] != len(self.targets):
            raise ValueError(
                f"model.net returned shape {tuple(outputs.shape)}, but model.targets names "
                f"{len(self.targets)} targets {self.targets}: expected (B, {len(self.targets)})"
            )
        return outputs

    def predict_physical(self, batch: dict) -> torch.Tensor:
        """Predictions ``(B, K)`` in physical units."""
        return self.to_physical(self(batch))

    def _truth(self, batch: dict) -> torch.Tensor:
        truth = batch["targets"]
        if truth.ndim == 1:
            truth = truth.unsqueeze(1)
        if truth.shape[1] != len(self.targets):
            raise ValueError(
                f"batch['targets'] has {truth.shape[1]} columns, but model.targets names {len(self.targets)} "
                f"targets {self.targets}; data.targets and model.targets must list the same names in order"
            )
        return truth

    def _step(self, batch: dict, stage: str):
        outputs = self(batch)
        truth = self._truth(batch).to(outputs.dtype)
        z_true = self.to_standardized(truth)
        if self.loss_name == "mse":
            per_target = F.mse_loss(outputs, z_true, reduction="none")
        else:
            per_target = F.huber_loss(outputs, z_true, reduction="none", delta=self.huber_delta)
        weight_k = self.loss_weight.to(outputs.dtype)
        losses = (per_target * weight_k).sum(dim=1) / weight_k.sum()
        weight = batch.get("weight")
        if weight is None:
            loss = losses.mean()
            target_losses = per_target.mean(dim=0)
        else:
            weight = weight.to(outputs.dtype)
            loss = (weight * losses).sum() / weight.sum()
            target_losses = (weight[:, None] * per_target).sum(dim=0) / weight.sum()
        n = len(truth)
        self.log_loss(stage, loss, batch, n)
        if stage != "train":
            self.log_dict(
                {f"{stage}/loss_{name}": target_losses[k] for k, name in enumerate(self.targets)},
                on_step=False,
                on_epoch=True,
                batch_size=n,
                sync_dist=True,
            )
        return loss, self.to_physical(outputs.detach()), truth

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        loss, _, _ = self._step(batch, "train")
        return loss

    def _keep_row(self, batch: dict, predictions: torch.Tensor, truth: torch.Tensor) -> None:
        self._rows.append(
            {
                "predictions": predictions.float().cpu().numpy(),
                "truth": truth.detach().float().cpu().numpy(),
                **provenance_and_observers(batch),
            }
        )

    def on_validation_epoch_start(self) -> None:
        self._rows = []

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        _, predictions, truth = self._step(batch, "val")
        self._keep_row(batch, predictions, truth)

    def on_validation_epoch_end(self) -> None:
        merged = self.gathered()
        if merged is not None:
            figures = self.figures(merged["predictions"], merged["truth"])
            # identical on every rank (computed from the gathered predictions): averaging changes nothing
            self.log_dict(finite_figures("val", figures), sync_dist=True)

    def test_step(self, batch: dict, batch_idx: int) -> None:
        _, predictions, truth = self._step(batch, "test")
        self._keep_row(batch, predictions, truth)

    def predict_step(self, batch: dict, batch_idx: int) -> dict[str, torch.Tensor]:
        """Predictions ``(B, K)`` in physical units with the provenance of every entry."""
        out = {"predictions": self.predict_physical(batch)}
        out.update({key: batch[key] for key in ("file_index", "entry") if key in batch})
        return out

    # ------------------------------------------------------------------------------------------------
    # metrics
    # ------------------------------------------------------------------------------------------------

    def figures(self, predictions: np.ndarray, truth: np.ndarray) -> dict[str, float]:
        """The figures of merit (module docstring) for physical predictions and truths ``(N, K)``."""
        return regression_metrics.regression_summary(
            {name: predictions[:, k] for k, name in enumerate(self.targets)},
            {name: truth[:, k] for k, name in enumerate(self.targets)},
            energy_target=self.energy_target,
            axis_targets=self.axis_targets,
            core_targets=self.core_targets,
            fraction=self.containment,
        )

    # ------------------------------------------------------------------------------------------------
    # what the task owns
    # ------------------------------------------------------------------------------------------------

    def predictions_of(self, merged: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """``prediction:<target>`` and ``truth:<target>`` columns (physical units) with the other rows."""
        predictions = {}
        for k, name in enumerate(self.targets):
            predictions[f"prediction:{name}"] = merged["predictions"][:, k]
            predictions[f"truth:{name}"] = merged["truth"][:, k]
        predictions.update({k: v for k, v in merged.items() if k not in ("predictions", "truth")})
        return predictions

    def test_figures(self, predictions: Mapping[str, np.ndarray]) -> tuple[dict[str, float], dict]:
        stack = lambda prefix: np.stack([predictions[f"{prefix}:{t}"] for t in self.targets], axis=1)  # noqa: E731
        figures = self.figures(stack("prediction"), stack("truth"))
        return {k: v for k, v in figures.items() if math.isfinite(v)}, {}

    def prediction_columns(self, predictions: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        columns = {}
        for name in self.targets:
            columns[f"pred_{name}"] = predictions[f"prediction:{name}"].astype(np.float32)
            columns[f"true_{name}"] = predictions[f"truth:{name}"].astype(np.float32)
        return {**columns, **provenance_columns(predictions)}

    def prediction_metadata(self) -> dict[str, str]:
        return {
            **super().prediction_metadata(),
            "targets": json.dumps(self.targets),
            "units": json.dumps(self.units),
        }

    def summary_rows(self, summary: Mapping[str, object]) -> list[tuple[str, object]]:
        rows = [(label, summary.get(f"test/{key}")) for label, key in CONFIGURED_FIGURES]
        for name in self.targets:
            resolution, bias = summary.get(f"test/{name}_resolution"), summary.get(f"test/{name}_bias")
            if resolution is not None:
                unit = f" [{self.units[name]}]" if self.units[name] else ""
                rows.append((f"{name} resolution / bias{unit}", (resolution, bias)))
        return rows

    def export_outputs(self, outputs: torch.Tensor) -> torch.Tensor:
        return self.to_physical(outputs)

    def export_output_scale(self) -> torch.Tensor:
        return self.target_scale.detach().float()

    def export_output_entry(self, spec) -> dict:
        targets = []
        for name, center, scale in zip(
            self.targets, self.target_center.tolist(), self.target_scale.tolist(), strict=True
        ):
            expression = spec.targets.get(name) if spec is not None else None
            targets.append(
                {
                    "name": name,
                    "expression": expression.text if expression is not None else None,
                    "unit": self.units[name] or None,
                    "center": center,
                    "scale": scale,
                }
            )
        return {
            "name": self.export_output_name,
            "shape": [BATCH_AXIS, len(self.targets)],
            "dtype": "float32",
            "targets": targets,
            "note": "physical units: center + scale * (net output), one column per target",
        }

    # ------------------------------------------------------------------------------------------------
    # reading a predictions file back, and its plots
    # ------------------------------------------------------------------------------------------------

    @classmethod
    def read_predictions(
        cls, arrays: Callable[[Iterable[str]], dict], metadata: Mapping[str, str], path
    ) -> dict:
        """``{"kind", "task", "targets", "units", "pred": {target: array}, "true": {target: array}}``."""
        if "targets" not in metadata:
            raise ValueError(f"{path} has no 'targets' string beside the predictions tree")
        targets = json.loads(metadata["targets"])
        units = json.loads(metadata["units"]) if "units" in metadata else {}
        values = arrays([f"{p}_{t}" for t in targets for p in ("pred", "true")])
        return {
            "kind": cls.kind,
            "task": cls,
            "targets": targets,
            "units": {t: units.get(t) or "" for t in targets},
            "pred": {t: values[f"pred_{t}"] for t in targets},
            "true": {t: values[f"true_{t}"] for t in targets},
        }

    @classmethod
    def plots(cls, predictions: Mapping, summary: Mapping, label: str) -> list[Plot]:
        from hepnn.analysis import plotting

        plots: list[Plot] = []
        for target in predictions["targets"]:
            pred, true = predictions["pred"][target], predictions["true"][target]
            unit = predictions["units"].get(target, "")
            plots.append(
                (
                    f"resolution_{target}",
                    lambda p=pred, t=true, n=target, u=unit: plotting.regression_resolution(p, t, n, u),
                )
            )
            plots.append(
                (
                    f"predicted_vs_true_{target}",
                    lambda p=pred, t=true, n=target, u=unit: plotting.predicted_vs_true(p, t, n, u),
                )
            )
        return plots
