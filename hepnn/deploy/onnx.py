"""Export a checkpoint's model to ONNX with its input standardisation and output head built in.

The task, the net and the data spec (standardisation included) are rebuilt from the checkpoint
(:mod:`hepnn.checkpoint`); the graph is :class:`hepnn.deploy.graph.ExportedModel`. The export
uses the TorchScript exporter (``torch.onnx.export(..., dynamo=False)``), which traces the
LSTM/GRU masking of :mod:`hepnn.nets.sequence` with dynamic batch and length axes, and every
export is run with onnxruntime on inputs of another batch size and length than traced and
compared with PyTorch. Next to ``<name>.onnx`` the sidecar ``<name>.json``
(:mod:`hepnn.deploy.sidecar`) describes inputs and outputs. Both files are written atomically.
"""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch

from hepnn.checkpoint import load_checkpoint, rebuild_model, stored_config, stored_spec
from hepnn.data import DataSpec
from hepnn.deploy.graph import ExportedModel, ExportError, dynamic_axes, example_inputs
from hepnn.deploy.sidecar import sidecar_content
from hepnn.tasks.base import TaskBase
from hepnn.utils.rootio import atomic_path

MIN_OPSET = 17
DEFAULT_OPSET = 17
VERIFY_TOLERANCE = 1e-4  # max |onnx - torch| / output scale accepted at export time


@dataclass(frozen=True)
class ExportResult:
    """Where the export went and the sidecar's content."""

    onnx_path: Path
    sidecar_path: Path
    sidecar: dict


def build_export_model(ckpt_path: str | Path) -> tuple[ExportedModel, DataSpec, dict, Path]:
    """The graph to export for a checkpoint, with the spec, the stored run config and the resolved path."""
    path = Path(ckpt_path).expanduser().resolve()
    checkpoint = load_checkpoint(path)
    config = stored_config(checkpoint, path)
    spec = stored_spec(config, checkpoint, path)
    task = rebuild_model(config, checkpoint, path)
    if not isinstance(task, TaskBase):
        raise ExportError(
            f"model._target_={config['model'].get('_target_')!r} is not a hepnn task "
            "(hepnn.tasks.base.TaskBase): its export head is unknown, so it cannot be exported"
        )
    return ExportedModel(task, spec), spec, config, path


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
    difference = float(((onnx_out - reference).abs() / model.task.export_output_scale()).max())
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
    if output and Path(output).suffix != ".onnx":
        raise ExportError(f"output: {output} must end in .onnx (the sidecar goes next to it as .json)")
    model, spec, config, path = build_export_model(ckpt_path)
    onnx_path = Path(output).expanduser() if output else path.with_suffix(".onnx")
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
