"""Export a trained model to ONNX with its input standardisation and output head built in.

``python -m hepnn.export ckpt_path=<checkpoint> [format=onnx] [output=<path.onnx>] [opset=17]``

The task, the net and the data spec (standardisation included) are rebuilt from the checkpoint
as :mod:`hepnn.evaluate` does. The exported graph takes the **raw** values of every input group
the net reads (the group's variables before standardisation, in their physical units) and does
what the loader does before the net, then the net, then the output head:

- a jagged group ``(B, C, L)`` with its mask ``(B, L)`` (True for real elements, which come
  first): non-finite values replaced (only with ``data.nonfinite=replace``), ``(x - center) /
  scale`` per feature (as the loader: times ``1 / scale`` in float32), clipped to the feature's
  ``clip``, and every padded position set to the group's ``pad_value``. ``B`` and ``L`` are
  dynamic; ordering the elements and keeping at most ``length`` of them stay the caller's job;
- a fixed-size group ``(B, C, *shape)`` or per-entry group ``(B, C)``: the same standardisation
  and clipping (divided by ``scale``, as the loader);
- an image group ``(B, C, n_eta, n_phi)``: taken as the loader gives it. Pixelisation, the
  jet-frame preprocessing (centring, rotation, flips) and normalisation are not part of the graph;
- the head: softmax probabilities (output ``probabilities``, one column per class) for a
  classifier, physical-unit predictions ``center + scale * z`` (output ``predictions``, one
  column per target) for a regression.

The export uses the TorchScript exporter (``torch.onnx.export(..., dynamo=False)``), which
traces the LSTM/GRU masking of :mod:`hepnn.nets.sequence` with dynamic batch and length axes.
Next to ``<name>.onnx`` a sidecar ``<name>.json`` describes the inputs (shapes with symbolic
axes, dtypes, the variables and expressions of every feature in order, units where known, pad
values), the standardisation, the outputs (classes or targets), the checkpoint and the run's
model target. Both files are written atomically. The default output is the checkpoint's path
with the suffix ``.onnx``.
"""

from __future__ import annotations

import json
import sys
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from hepnn.data.spec import DataConfigError, DataSpec, InputGroup, image_config
from hepnn.errors import InputError, report_input_errors
from hepnn.evaluate import CheckpointError, load_checkpoint, rebuild_model, stored_config
from hepnn.rootio import atomic_path
from hepnn.utils.cli import UsageError, key_value_args

USAGE = "usage: python -m hepnn.export ckpt_path=<checkpoint> [format=onnx] [output=<path.onnx>] [opset=17]"
KEYS = ("ckpt_path", "format", "output", "opset")
FORMATS = ("onnx",)
MIN_OPSET = 17
DEFAULT_OPSET = 17
SIDECAR_FORMAT = 1
BATCH_AXIS = "batch"
PROBABILITIES = "probabilities"
PREDICTIONS = "predictions"
DEFAULT_DATAMODULE = "RootDataModule"
VERIFY_TOLERANCE = 1e-4  # max |onnx - torch| / output scale accepted at export time

# Units of the variables and targets of the shipped data configs (others: null in the sidecar).
UNITS = {
    "part_px": "GeV",
    "part_py": "GeV",
    "part_pz": "GeV",
    "part_pt": "GeV",
    "part_energy": "GeV",
    "part_pt_log": "log(pT / GeV)",
    "part_e_log": "log(E / GeV)",
    "part_logptrel": "log(pT / pT_jet)",
    "part_logerel": "log(E / E_jet)",
    "part_deltaR": "distance to the jet axis in (eta, phi)",
    "part_deta": "pseudorapidity difference to the jet axis",
    "part_dphi": "rad",
    "cell_ecal_pt": "GeV",
    "cell_hcal_pt": "GeV",
    "cell_ecal_energy": "GeV",
    "cell_hcal_energy": "GeV",
    "track_pt": "GeV",
    "traces": "VEM per 25 ns bin",
    "station_start_time": "ns",
    "station_triggered": "1 triggered, 0 not",
    "log10_energy": "log10(E / eV)",
    "xmax": "g/cm^2",
    "axis_x": "unit-vector component",
    "axis_y": "unit-vector component",
    "axis_z": "unit-vector component",
    "core_x": "m",
    "core_y": "m",
}


class ExportError(InputError):
    """A checkpoint's model cannot be exported (unsupported task, inputs or operations)."""


@dataclass(frozen=True)
class ExportResult:
    """Where the export went and the sidecar's content."""

    onnx_path: Path
    sidecar_path: Path
    sidecar: dict


# ------------------------------------------------------------------------------------------------
# the graph: raw inputs -> loader standardisation -> net -> head
# ------------------------------------------------------------------------------------------------


def _channel_shape(group: InputGroup, values: Sequence[float]) -> torch.Tensor:
    """Per-feature constants as float32 ``(1, C, 1, ...)``, broadcasting over a group's tensor."""
    trailing = 1 if group.jagged else len(group.shape or ())
    return torch.tensor(list(values), dtype=torch.float32).reshape(1, -1, *([1] * trailing))


class GroupStandardization(nn.Module):
    """Raw values of one input group -> the tensor the loader gives the net (see the module docstring).

    ``forward(x, mask)``: ``x`` in the units of the group's variables; ``mask`` ``(B, L)`` (bool)
    for a jagged group, None otherwise. Image groups pass through unchanged.
    """

    def __init__(self, group: InputGroup, nonfinite: str = "error", nonfinite_value: float = 0.0):
        super().__init__()
        self.image = group.image is not None
        self.jagged = group.jagged
        self.pad_value = float(group.pad_value)
        self.replace_nonfinite = nonfinite == "replace" and not self.image
        self.nonfinite_value = float(nonfinite_value)
        features = group.features
        if any(f.automatic for f in features):
            raise ExportError(f"data.inputs.{group.name}: automatic standardisation not resolved in the spec")
        self.clipped = any(f.clip is not None for f in features)
        if self.image:
            return
        self.register_buffer("center", _channel_shape(group, [f.center for f in features]))
        if self.jagged:  # the loader multiplies by float32(1 / scale) (hepnn.data.kernels.fill_padded)
            self.register_buffer("inv_scale", _channel_shape(group, [1.0 / f.scale for f in features]))
        else:  # ... and divides per-entry and fixed-size groups by float32(scale) (preprocess)
            self.register_buffer("scale", _channel_shape(group, [f.scale for f in features]))
        inf = float("inf")
        self.register_buffer("low", _channel_shape(group, [f.clip[0] if f.clip else -inf for f in features]))
        self.register_buffer("high", _channel_shape(group, [f.clip[1] if f.clip else inf for f in features]))

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        if self.image:
            return x
        if self.replace_nonfinite:
            x = torch.where(torch.isfinite(x), x, torch.full_like(x, self.nonfinite_value))
        x = (x - self.center) * self.inv_scale if self.jagged else (x - self.center) / self.scale
        if self.clipped:
            x = torch.minimum(torch.maximum(x, self.low), self.high)
        if mask is not None:
            x = x.masked_fill(~mask.unsqueeze(1), self.pad_value)
        return x


def task_kind(model: nn.Module, target: str) -> str:
    """``classification`` or ``regression`` for the hepnn tasks; ExportError naming ``model._target_``."""
    from hepnn.tasks.classification import ClassificationTask
    from hepnn.tasks.regression import RegressionTask

    if isinstance(model, ClassificationTask):
        return "classification"
    if isinstance(model, RegressionTask):
        return "regression"
    raise ExportError(
        f"model._target_={target!r} is neither a hepnn ClassificationTask nor a RegressionTask: "
        "the output head (softmax or physical units) is unknown, so it cannot be exported"
    )


def exported_groups(spec: DataSpec, model_inputs: Sequence[str]) -> list[InputGroup]:
    """The input groups the net reads (by group name or mask key), in the order of the data spec.

    Raises ExportError naming a ``model.inputs`` entry that is neither an input group nor a mask.
    """
    known = {g.name for g in spec.inputs} | {g.mask_key for g in spec.inputs if g.jagged}
    unknown = [name for name in model_inputs if name not in known]
    if unknown:
        raise ExportError(
            f"model.inputs names {unknown}, which are not input groups or masks of the data spec "
            f"({sorted(known)}); only input groups can be graph inputs"
        )
    return [g for g in spec.inputs if g.name in model_inputs or (g.jagged and g.mask_key in model_inputs)]


class ExportedModel(nn.Module):
    """Raw input groups (and masks) -> loader standardisation -> task's net -> probabilities or predictions.

    ``forward(*tensors)`` takes the tensors named :attr:`input_names`, in that order: every group
    the net reads, a jagged group followed by its mask.
    """

    def __init__(self, task: nn.Module, spec: DataSpec, kind: str):
        super().__init__()
        self.task = task
        self.kind = kind
        self.groups = exported_groups(spec, task.inputs)
        self.standardize = nn.ModuleDict(
            {g.name: GroupStandardization(g, spec.nonfinite, spec.nonfinite_value) for g in self.groups}
        )
        self.input_names = [name for g in self.groups for name in (g.name, g.mask_key) if name is not None]
        self.output_name = PROBABILITIES if kind == "classification" else PREDICTIONS
        self.eval()  # dropout off, batch norm with its running statistics (export restores this mode)

    def forward(self, *tensors: torch.Tensor) -> torch.Tensor:
        values = dict(zip(self.input_names, tensors, strict=True))
        batch = {}
        for group in self.groups:
            mask = values[group.mask_key].bool() if group.jagged else None
            batch[group.name] = self.standardize[group.name](values[group.name], mask)
            if mask is not None:
                batch[group.mask_key] = mask
        outputs = self.task(batch)
        if self.kind == "classification":
            return outputs.softmax(dim=-1)
        return self.task.to_physical(outputs)


def example_inputs(
    groups: Sequence[InputGroup], batch_size: int = 3, length: int | None = None, seed: int = 0
) -> tuple[torch.Tensor, ...]:
    """Random raw inputs in the order of the graph inputs: jagged groups ``length`` long (default:
    the group's ``length``) with masks of different fill (full, half, one element), fixed-size
    groups and images at their shape."""
    generator = torch.Generator().manual_seed(seed)
    tensors = []
    for group in groups:
        if group.image is not None:
            shape = (len(group.image.channels), group.image.n_eta, group.image.n_phi)
            tensors.append(torch.rand((batch_size, *shape), generator=generator))
        elif group.jagged:
            n = length or group.length
            tensors.append(torch.randn((batch_size, len(group.features), n), generator=generator))
            counts = torch.tensor([n, max(n // 2, 1), 1] * batch_size)[:batch_size]
            tensors.append(torch.arange(n).unsqueeze(0) < counts.unsqueeze(1))
        else:
            shape = (batch_size, len(group.features), *(group.shape or ()))
            tensors.append(torch.randn(shape, generator=generator))
    return tuple(tensors)


def dynamic_axes(groups: Sequence[InputGroup], output_name: str) -> dict[str, dict[int, str]]:
    """Symbolic axes: the batch everywhere, ``<group>_length`` for jagged groups and their masks."""
    axes: dict[str, dict[int, str]] = {output_name: {0: BATCH_AXIS}}
    for group in groups:
        if group.jagged:
            axes[group.name] = {0: BATCH_AXIS, 2: length_axis(group)}
            axes[group.mask_key] = {0: BATCH_AXIS, 1: length_axis(group)}
        else:
            axes[group.name] = {0: BATCH_AXIS}
    return axes


def length_axis(group: InputGroup) -> str:
    """The symbolic name of a jagged group's element axis."""
    return f"{group.name}_length"


# ------------------------------------------------------------------------------------------------
# rebuilding from the checkpoint
# ------------------------------------------------------------------------------------------------


def stored_spec(config: Mapping, checkpoint: Mapping, path: str | Path) -> DataSpec:
    """The resolved data spec stored by the data module (``checkpoint[<DataModule>]["spec"]``)."""
    target = str((config.get("data") or {}).get("_target_") or DEFAULT_DATAMODULE)
    key = target.rsplit(".", 1)[-1]
    state = checkpoint.get(key)
    if not isinstance(state, Mapping) or not isinstance(state.get("spec"), Mapping):
        raise CheckpointError(
            f"ckpt_path: {path} has no '{key}' entry with the resolved data spec (standardisation); "
            "expected a checkpoint written by python -m hepnn.train"
        )
    try:
        spec = DataSpec.from_config(state["spec"])
    except DataConfigError as exc:
        raise CheckpointError(f"ckpt_path: {path}: the stored data spec is not usable: {exc}") from exc
    if spec.automatic_features:
        group, feature = spec.automatic_features[0]
        raise CheckpointError(
            f"ckpt_path: {path}: the stored data spec has no standardisation for "
            f"data.inputs.{group.name}.features.{feature.name} (still 'auto')"
        )
    return spec


def build_export_model(ckpt_path: str | Path) -> tuple[ExportedModel, DataSpec, dict, Path]:
    """The graph to export for a checkpoint, with the spec, the stored run config and the resolved path."""
    path = Path(ckpt_path).expanduser().resolve()
    checkpoint = load_checkpoint(path)
    config = stored_config(checkpoint, path)
    spec = stored_spec(config, checkpoint, path)
    task = rebuild_model(config, checkpoint, path)
    kind = task_kind(task, str(config["model"].get("_target_")))
    return ExportedModel(task, spec, kind), spec, config, path


# ------------------------------------------------------------------------------------------------
# the sidecar
# ------------------------------------------------------------------------------------------------


def _feature_entries(group: InputGroup, spec: DataSpec) -> list[dict]:
    entries = []
    for f in group.features:
        expression = spec.variables.get(f.name)
        entries.append(
            {
                "name": f.name,
                "expression": expression.text if expression is not None else f.name,
                "branch": expression is None,
                "unit": UNITS.get(f.name),
                "center": f.center,
                "scale": f.scale,
                "clip": list(f.clip) if f.clip else None,
            }
        )
    return entries


def _image_entry(group: InputGroup) -> dict:
    image = group.image
    unit = "fraction of the image's total intensity" if image.normalize else "intensity per pixel"
    return {
        "name": group.name,
        "kind": "image",
        "shape": [BATCH_AXIS, len(image.channels), image.n_eta, image.n_phi],
        "dtype": "float32",
        "unit": unit,
        "channels": [
            {
                "name": c.name,
                "eta": c.eta,
                "phi": c.phi,
                "intensity": c.intensity,
                "intensity_unit": UNITS.get(c.intensity),
            }
            for c in image.channels
        ],
        "grid": image_config(image)["grid"],
        "preprocessing": image_config(image)["preprocessing"],
        "note": (
            "not part of the graph: the jet-frame preprocessing (centring, rotation, flips), "
            "pixelisation and normalisation; give the image as hepnn's loader builds it "
            "(hepnn.data.images), axes (channel, eta, phi)"
        ),
    }


def _jagged_entries(group: InputGroup, spec: DataSpec) -> list[dict]:
    axis = length_axis(group)
    order = None
    if group.order is not None:
        order = {"by": group.order.by, "descending": group.order.descending}
    note = (
        f"real elements first, then padding (any values: the graph sets them to pad_value); "
        f"the loader keeps at most max_length={group.length} elements"
    )
    if order is not None:
        note += f", those with the largest {group.order.by}, " + (
            "in decreasing order" if group.order.descending else "in increasing order (the largest last)"
        )
    return [
        {
            "name": group.name,
            "kind": "jagged",
            "shape": [BATCH_AXIS, len(group.features), axis],
            "dtype": "float32",
            "features": _feature_entries(group, spec),
            "pad_value": group.pad_value,
            "mask": group.mask_key,
            "max_length": group.length,
            "order": order,
            "note": note,
        },
        {
            "name": group.mask_key,
            "kind": "mask",
            "shape": [BATCH_AXIS, axis],
            "dtype": "bool",
            "group": group.name,
            "note": "True for real elements",
        },
    ]


def input_entries(groups: Sequence[InputGroup], spec: DataSpec) -> list[dict]:
    """The sidecar's ``inputs``: one entry per graph input, in the graph's order."""
    entries: list[dict] = []
    for group in groups:
        if group.image is not None:
            entries.append(_image_entry(group))
        elif group.jagged:
            entries += _jagged_entries(group, spec)
        else:
            entries.append(
                {
                    "name": group.name,
                    "kind": "fixed" if group.shape is not None else "per_entry",
                    "shape": [BATCH_AXIS, len(group.features), *(group.shape or ())],
                    "dtype": "float32",
                    "features": _feature_entries(group, spec),
                }
            )
    return entries


def output_entry(model: ExportedModel, spec: DataSpec) -> dict:
    """The sidecar's description of the single output (classes, or targets in physical units)."""
    task = model.task
    if model.kind == "classification":
        return {
            "name": PROBABILITIES,
            "shape": [BATCH_AXIS, len(task.classes)],
            "dtype": "float32",
            "classes": list(task.classes),
            "signal_class": task.signal_class,
            "note": "softmax probabilities, one column per class",
        }
    centers = task.target_center.tolist()
    scales = task.target_scale.tolist()
    targets = []
    for name, center, scale in zip(task.targets, centers, scales, strict=True):
        expression = spec.targets.get(name)
        targets.append(
            {
                "name": name,
                "expression": expression.text if expression is not None else None,
                "unit": UNITS.get(name),
                "center": center,
                "scale": scale,
            }
        )
    return {
        "name": PREDICTIONS,
        "shape": [BATCH_AXIS, len(task.targets)],
        "dtype": "float32",
        "targets": targets,
        "note": "physical units: center + scale * (net output), one column per target",
    }


def sidecar_content(
    model: ExportedModel, spec: DataSpec, config: Mapping, ckpt_path: Path, onnx_path: Path, opset: int
) -> dict:
    """Everything a user of the .onnx file needs to feed it and read it (see the module docstring)."""
    model_config = config.get("model") or {}
    net = model_config.get("net") or {}
    return {
        "format": SIDECAR_FORMAT,
        "onnx": onnx_path.name,
        "opset": opset,
        "exporter": f"torch {torch.__version__} torch.onnx.export(dynamo=False)",
        "checkpoint": str(ckpt_path),
        "model_target": model_config.get("_target_"),
        "net_target": net.get("_target_") if isinstance(net, Mapping) else None,
        "task": model.kind,
        "inputs": input_entries(model.groups, spec),
        "outputs": [output_entry(model, spec)],
        "standardization": {
            "formula": (
                "(x - center) / scale per feature, clipped to clip [low, high], padded positions set "
                "to pad_value; images unchanged"
            ),
            "values": {g.name: spec.standardization()[g.name] for g in model.groups if g.image is None},
        },
        "nonfinite": {
            "policy": spec.nonfinite,
            "value": spec.nonfinite_value,
            "note": (
                "NaN/inf inputs are replaced by value in the graph"
                if spec.nonfinite == "replace"
                else "inputs must be finite (the loader rejects NaN/inf)"
            ),
        },
        "variables": {name: e.text for name, e in spec.variables.items()},
    }


# ------------------------------------------------------------------------------------------------
# export
# ------------------------------------------------------------------------------------------------


def _export_graph(model: ExportedModel, path: Path, opset: int) -> None:
    """``torch.onnx.export`` (TorchScript exporter) of ``model`` to ``path``, then ``onnx.checker``."""
    import onnx

    inputs = example_inputs(model.groups)
    with warnings.catch_warnings():
        # The legacy exporter's deprecation notice; the tracer's notes on shape checks (nn.RNN's,
        # TraceConv3D's and RegressionTask's input checks compare sizes in Python) and the LSTM
        # batch-size notice: a different batch and length are run by verify_export.
        warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"torch\.onnx.*")
        warnings.filterwarnings("ignore", category=DeprecationWarning, module=__name__)
        for module in (r"torch\.nn\.modules\.rnn", r"hepnn\.nets\.trace3d", r"hepnn\.tasks\.regression"):
            warnings.filterwarnings("ignore", category=torch.jit.TracerWarning, module=module)
        warnings.filterwarnings("ignore", message=r"Exporting a model to ONNX with a batch_size other than 1")
        with torch.no_grad():
            torch.onnx.export(
                model,
                inputs,
                str(path),
                dynamo=False,
                opset_version=opset,
                input_names=model.input_names,
                output_names=[model.output_name],
                dynamic_axes=dynamic_axes(model.groups, model.output_name),
                do_constant_folding=True,
            )
    onnx.checker.check_model(str(path))


def output_scale(model: ExportedModel) -> torch.Tensor:
    """Per-column scale of the outputs: 1 for probabilities, the target scales for predictions."""
    if model.kind == "classification":
        return torch.ones(1)
    return model.task.target_scale.detach().float()


def verify_export(model: ExportedModel, path: Path, tolerance: float = VERIFY_TOLERANCE) -> float:
    """Run the ONNX file with onnxruntime on random raw inputs of another batch size and (jagged
    groups) another length than traced; returns max |onnx - torch| / output scale, or raises
    ExportError when it exceeds ``tolerance`` (a shape or value baked into the trace)."""
    import onnxruntime

    lengths = [g.length for g in model.groups if g.jagged]
    inputs = example_inputs(
        model.groups, batch_size=5, length=max(min(lengths) // 2, 2) if lengths else None, seed=1
    )
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    feed = {name: tensor.numpy() for name, tensor in zip(model.input_names, inputs, strict=True)}
    onnx_out = torch.from_numpy(session.run(None, feed)[0])
    with torch.no_grad():
        reference = model.eval()(*inputs)
    difference = float(((onnx_out - reference).abs() / output_scale(model)).max())
    if not difference <= tolerance:
        raise ExportError(
            f"onnxruntime and PyTorch differ by {difference:.3g} (relative to the output scale; tolerance "
            f"{tolerance:g}) on inputs of another batch size or length than traced"
        )
    return difference


def _reason(exc: BaseException) -> str:
    """``<type>: <first line of the message>`` of an exception."""
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0] if text else ''}"


def export_onnx(
    ckpt_path: str | Path, output: str | Path | None = None, opset: int = DEFAULT_OPSET
) -> ExportResult:
    """Export the checkpoint's model to ``output`` (default: the checkpoint with suffix ``.onnx``)
    and write the sidecar ``<output stem>.json`` next to it; both atomically."""
    if opset < MIN_OPSET:
        raise ExportError(f"opset: {opset} is too old; hepnn exports with opset >= {MIN_OPSET}")
    model, spec, config, path = build_export_model(ckpt_path)
    onnx_path = Path(output).expanduser() if output else path.with_suffix(".onnx")
    if onnx_path.suffix != ".onnx":
        raise ExportError(f"output: {onnx_path} must end in .onnx (the sidecar goes next to it as .json)")
    sidecar_path = onnx_path.with_suffix(".json")
    net = type(model.task.net)
    where = (
        f"ckpt_path: {path}: the {net.__module__}.{net.__qualname__} net of {config['model'].get('_target_')}"
    )
    with atomic_path(onnx_path) as tmp:
        try:
            _export_graph(model, tmp, opset)
            verification = verify_export(model, tmp)
        except Exception as exc:
            raise ExportError(
                f"{where} does not export to ONNX (TorchScript exporter, opset {opset}): {_reason(exc)}"
            ) from exc
    content = sidecar_content(model, spec, config, path, onnx_path, opset)
    content["verification"] = {
        "max_difference": verification,
        "note": (
            "max |onnxruntime - PyTorch| / output scale at export, on random raw inputs of another "
            "batch size and length than traced"
        ),
    }
    with atomic_path(sidecar_path) as tmp:
        tmp.write_text(json.dumps(content, indent=2) + "\n")
    return ExportResult(onnx_path, sidecar_path, content)


# ------------------------------------------------------------------------------------------------
# command line
# ------------------------------------------------------------------------------------------------


def parse_args(argv: Sequence[str]) -> dict:
    """``key=value`` arguments: ``ckpt_path`` (required), ``format`` (onnx), ``output`` (a path ending
    in .onnx) and ``opset`` (>= 17)."""
    values = key_value_args(argv, KEYS, USAGE)
    if not values.get("ckpt_path"):
        raise UsageError(f"ckpt_path is required; {USAGE}")
    fmt = values.get("format") or "onnx"
    if fmt not in FORMATS:
        raise UsageError(f"format={fmt!r} is not supported; formats: {', '.join(FORMATS)}")
    output = values.get("output") or None
    if output is not None and Path(output).suffix != ".onnx":
        raise UsageError(f"output={output!r} must end in .onnx (the sidecar goes next to it as .json)")
    try:
        opset = int(values.get("opset") or DEFAULT_OPSET)
    except ValueError:
        raise UsageError(f"opset must be an integer >= {MIN_OPSET}, got {values['opset']!r}") from None
    if opset < MIN_OPSET:
        raise UsageError(f"opset must be an integer >= {MIN_OPSET}, got {opset}")
    return {"ckpt_path": values["ckpt_path"], "format": fmt, "output": output, "opset": opset}


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point: prints the two files written; 2 for a bad command line, 1 for bad input."""
    argv = sys.argv[1:] if argv is None else list(argv)
    if any(a in ("-h", "--help") for a in argv):
        print(USAGE)
        return 0
    try:
        args = parse_args(argv)
    except UsageError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    with report_input_errors():
        result = export_onnx(args["ckpt_path"], args["output"], args["opset"])
    print(result.onnx_path)
    print(result.sidecar_path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
