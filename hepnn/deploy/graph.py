"""The exported graph: raw input groups -> the loader's standardisation -> the task's net -> its head.

The graph takes the **raw** values of every input group the net reads (the group's variables
before standardisation, in their physical units) and does what the loader does before the net:

- a jagged group ``(B, C, L)`` with its mask ``(B, L)`` (True for real elements, which come
  first): non-finite values replaced (only with ``data.nonfinite=replace``), ``(x - center) /
  scale`` per feature (as the loader: times ``1 / scale`` in float32), clipped to the feature's
  ``clip``, and every padded position set to the group's ``pad_value``. ``B`` and ``L`` are
  dynamic; ordering the elements and keeping at most ``length`` of them stay the caller's job;
- a fixed-size group ``(B, C, *shape)`` or per-entry group ``(B, C)``: the same standardisation
  and clipping (divided by ``scale``, as the loader);
- an image group ``(B, C, n_eta, n_phi)``: taken as the loader gives it. Pixelisation, the
  jet-frame preprocessing (centring, rotation, flips) and normalisation are not part of the graph;

then the net, then the task's export head (:meth:`hepnn.tasks.base.TaskBase.export_outputs`:
softmax probabilities of a classifier, physical-unit predictions of a regression).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from hepnn.data import DataSpec, InputGroup
from hepnn.errors import InputError

BATCH_AXIS = "batch"


class ExportError(InputError):
    """A checkpoint's model cannot be exported (unsupported task, inputs or operations)."""


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
        if (
            self.jagged
        ):  # the loader multiplies by float32(1 / scale) (hepnn.data.loading.kernels.fill_padded)
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
    """Raw input groups (and masks) -> loader standardisation -> task's net -> the task's export head.

    ``forward(*tensors)`` takes the tensors named :attr:`input_names`, in that order: every group
    the net reads, a jagged group followed by its mask.
    """

    def __init__(self, task: nn.Module, spec: DataSpec):
        super().__init__()
        self.task = task
        self.groups = exported_groups(spec, task.inputs)
        self.standardize = nn.ModuleDict(
            {g.name: GroupStandardization(g, spec.nonfinite, spec.nonfinite_value) for g in self.groups}
        )
        self.input_names = [name for g in self.groups for name in (g.name, g.mask_key) if name is not None]
        self.output_name = task.export_output_name
        self.eval()  # dropout off, batch norm with its running statistics (export restores this mode)

    def forward(self, *tensors: torch.Tensor) -> torch.Tensor:
        values = dict(zip(self.input_names, tensors, strict=True))
        batch = {}
        for group in self.groups:
            mask = values[group.mask_key].bool() if group.jagged else None
            batch[group.name] = self.standardize[group.name](values[group.name], mask)
            if mask is not None:
                batch[group.mask_key] = mask
        return self.task.export_outputs(self.task(batch))


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
