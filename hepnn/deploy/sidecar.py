"""The sidecar of an ONNX export: everything a user of the ``.onnx`` file needs to feed and read it.

Inputs (shapes with symbolic axes, dtypes, the variables and expressions of every feature in
order, their units from the data config, pad values), the standardisation, the output (the
task's own description: classes, or targets with units), the checkpoint and the run's model
target.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import torch

from hepnn.data import DataSpec, InputGroup, image_config
from hepnn.deploy.graph import BATCH_AXIS, ExportedModel, length_axis

SIDECAR_FORMAT = 1


def _feature_entries(group: InputGroup, spec: DataSpec) -> list[dict]:
    entries = []
    for f in group.features:
        expression = spec.variables.get(f.name)
        entries.append(
            {
                "name": f.name,
                "expression": expression.text if expression is not None else f.name,
                "branch": expression is None,
                "unit": f.unit,
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
                "intensity_unit": c.unit,
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
        "task": model.task.kind,
        "inputs": input_entries(model.groups, spec),
        "outputs": [model.task.export_output_entry(spec)],
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
