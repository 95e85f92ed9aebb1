"""Transfer learning: a task starts from another hepnn checkpoint's weights, with some modules
frozen for a while and some trained at their own learning rate.

``model.pretrained`` configures it::

    pretrained:
      ckpt_path: logs/train/runs/<run>/checkpoints/last.ckpt   # a hepnn checkpoint
      modules: [net.phi]          # the modules whose tensors are loaded (default: every tensor that fits)
      strict: false               # true: every tensor of those modules must load
      freeze: [net.phi]           # no gradients, batch-norm statistics kept
      unfreeze_after_epochs: 2    # ... released from this epoch on (null: frozen throughout)
      lr_scale: {net.head: 10.0}  # these modules train at lr times the factor

Tensors are loaded by name and shape: a tensor of another shape (e.g. a head with another number
of classes, a dense layer after a flatten over another image size) keeps its fresh initialisation,
and the loading report says so. The fine-tuned checkpoints are self-contained: they hold all
weights, and rebuilding them (evaluate, export) does not read the pretrained file again
(:func:`hepnn.checkpoint.rebuild_model`); they record where the initial weights came from.
"""

from __future__ import annotations

import difflib
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from hepnn.errors import ConfigError, InputError
from hepnn.utils import validation as check

log = logging.getLogger(__name__)

KEY = "model.pretrained"
KEYS = ("ckpt_path", "modules", "strict", "freeze", "unfreeze_after_epochs", "lr_scale")
ORIGIN_KEY = "hepnn_pretrained"  # where checkpoints record the loading report


@dataclass(frozen=True)
class PretrainedConfig:
    """The parsed ``model.pretrained`` mapping (see the module docstring)."""

    ckpt_path: str | None = None
    modules: tuple[str, ...] = ()
    strict: bool = False
    freeze: tuple[str, ...] = ()
    unfreeze_after_epochs: int | None = None
    lr_scale: dict[str, float] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, values: Mapping | None) -> PretrainedConfig:
        values = dict(check.mapping(values or {}, KEY, KEYS))
        names = {}
        for key in ("modules", "freeze"):
            entry = values.get(key) or ()
            entry = [entry] if isinstance(entry, str) else list(entry)
            names[key] = tuple(check.string(name, f"{KEY}.{key}") for name in entry)
        unfreeze = values.get("unfreeze_after_epochs")
        if unfreeze is not None:
            check.non_negative_int(unfreeze, f"{KEY}.unfreeze_after_epochs")
            if not names["freeze"]:
                raise ConfigError(
                    f"{KEY}.unfreeze_after_epochs={unfreeze} needs {KEY}.freeze: nothing is frozen"
                )
        lr_scale = values.get("lr_scale") or {}
        if not isinstance(lr_scale, Mapping):
            raise ConfigError(f"{KEY}.lr_scale must map module names to factors, got {lr_scale!r}")
        scales = {str(k): check.positive_number(v, f"{KEY}.lr_scale.{k}") for k, v in lr_scale.items()}
        ckpt_path = values.get("ckpt_path")
        if ckpt_path is not None:
            check.string(ckpt_path, f"{KEY}.ckpt_path")
        return cls(
            ckpt_path=ckpt_path,
            modules=names["modules"],
            strict=check.boolean(values.get("strict", False), f"{KEY}.strict"),
            freeze=names["freeze"],
            unfreeze_after_epochs=unfreeze,
            lr_scale=scales,
        )


def check_module_names(task: nn.Module, names: Sequence[str], key: str) -> None:
    """Raise naming ``key`` for a name that is not a module of ``task`` (with the closest ones)."""
    known = [name for name, _ in task.named_modules() if name]
    for name in names:
        if name not in known:
            close = difflib.get_close_matches(name, known, n=3, cutoff=0.5)
            hint = f"close matches: {', '.join(close)}" if close else f"modules: {', '.join(known[:12])} ..."
            raise ConfigError(f"{key}: {name!r} is not a module of the task; {hint}")


def _under(name: str, prefixes: Sequence[str]) -> bool:
    return any(name == p or name.startswith(f"{p}.") for p in prefixes)


@dataclass
class LoadReport:
    """What loading pretrained weights did, tensor by tensor (names of the task's state dict)."""

    source: str
    loaded: list[str] = field(default_factory=list)
    shape_mismatch: list[str] = field(default_factory=list)
    missing_in_checkpoint: list[str] = field(default_factory=list)
    not_requested: list[str] = field(default_factory=list)

    def table(self) -> str:
        """The report as a small text table: one line per kind, with counts and the first names."""
        rows = [
            ("loaded", self.loaded),
            ("kept new: another shape in the checkpoint", self.shape_mismatch),
            ("kept new: not in the checkpoint", self.missing_in_checkpoint),
            ("kept new: outside model.pretrained.modules", self.not_requested),
        ]
        width = max(len(label) for label, _ in rows)
        lines = [f"pretrained weights from {self.source}"]
        for label, names in rows:
            shown = ", ".join(names[:6]) + (f" ... (+{len(names) - 6})" if len(names) > 6 else "")
            lines.append(f"  {label:<{width}}  {len(names):>4}  {shown}")
        return "\n".join(lines)

    def to_dict(self) -> dict:
        return {
            "source": self.source,
            "loaded": list(self.loaded),
            "shape_mismatch": list(self.shape_mismatch),
            "missing_in_checkpoint": list(self.missing_in_checkpoint),
            "not_requested": list(self.not_requested),
        }


def load_pretrained(task: nn.Module, config: PretrainedConfig) -> LoadReport:
    """Copy the fitting tensors of ``config.ckpt_path``'s state dict into ``task`` (see the module
    docstring); errors name ``model.pretrained.<key>``."""
    from hepnn.checkpoint import CheckpointError, load_checkpoint, stored_config

    path = Path(config.ckpt_path).expanduser().resolve()
    try:
        checkpoint = load_checkpoint(path)
        stored_config(checkpoint, path)
    except CheckpointError as exc:
        raise ConfigError(f"{KEY}.ckpt_path: {str(exc).removeprefix('ckpt_path: ')}") from None
    stored = checkpoint["state_dict"]
    own = task.state_dict()
    report = LoadReport(str(path))
    update = {}
    for name, tensor in own.items():
        if config.modules and not _under(name, config.modules):
            report.not_requested.append(name)
        elif name not in stored:
            report.missing_in_checkpoint.append(name)
        elif tuple(stored[name].shape) != tuple(tensor.shape):
            report.shape_mismatch.append(name)
        else:
            update[name] = stored[name]
            report.loaded.append(name)
    if not report.loaded:
        where = f" in {list(config.modules)}" if config.modules else ""
        raise InputError(f"{KEY}: no tensor of {path} fits the task (names and shapes differ{where})")
    if config.strict and (report.shape_mismatch or report.missing_in_checkpoint):
        skipped = report.shape_mismatch + report.missing_in_checkpoint
        raise InputError(
            f"{KEY}.strict: {len(skipped)} tensor(s) of the requested modules do not load from {path}: "
            f"{', '.join(skipped[:5])}{' ...' if len(skipped) > 5 else ''}"
        )
    task.load_state_dict(update, strict=False)
    log.info("%s", report.table())
    return report


class FrozenModules:
    """The modules of ``config.freeze``: no gradients and batch norm in eval mode, until
    ``config.unfreeze_after_epochs`` (from that epoch on they train like the rest)."""

    def __init__(self, task: nn.Module, config: PretrainedConfig):
        self.task = task
        self.names = config.freeze
        self.unfreeze_after = config.unfreeze_after_epochs
        check_module_names(task, self.names, f"{KEY}.freeze")
        frozen = [p for n, p in task.named_parameters() if _under(n, self.names)]
        trainable = [p for n, p in task.named_parameters() if not _under(n, self.names)]
        if self.names and not trainable:
            raise ConfigError(f"{KEY}.freeze: {list(self.names)} covers every parameter of the task")
        self.parameters = frozen
        self.active = bool(self.names)

    def frozen_at(self, epoch: int) -> bool:
        """Whether the modules are frozen in ``epoch`` (0-based)."""
        return self.active and (self.unfreeze_after is None or epoch < self.unfreeze_after)

    def apply(self, epoch: int) -> None:
        """Set the parameters' ``requires_grad`` for ``epoch``."""
        frozen = self.frozen_at(epoch)
        for parameter in self.parameters:
            parameter.requires_grad_(not frozen)

    def hold_batch_norm(self) -> None:
        """Batch-norm layers of frozen modules back to eval mode (their statistics stay)."""
        for name, module in self.task.named_modules():
            if _under(name, self.names) and isinstance(module, nn.modules.batchnorm._BatchNorm):
                module.eval()


def allow_unused_parameters(strategy) -> None:
    """Let a DDP strategy train while frozen modules get no gradient: DDP registers every
    parameter when it wraps the task (before the first epoch freezes any), so the frozen ones
    must be allowed to miss a step's reduction, and take part again once they are released."""
    from lightning.pytorch.strategies import DDPStrategy

    if isinstance(strategy, DDPStrategy):
        strategy._ddp_kwargs["find_unused_parameters"] = True


def parameter_groups(task: nn.Module, lr_scale: Mapping[str, float]) -> list[dict]:
    """The task's parameters in optimizer groups: one per module of ``lr_scale`` (with its
    ``lr_scale`` factor, applied to the optimizer's learning rate) and one for the rest. Frozen
    parameters are in their groups too, so that unfreezing needs no new optimizer."""
    check_module_names(task, list(lr_scale), f"{KEY}.lr_scale")
    groups = {name: [] for name in lr_scale}
    rest = []
    for name, parameter in task.named_parameters():
        owner = next((m for m in sorted(lr_scale, key=len, reverse=True) if _under(name, [m])), None)
        (groups[owner] if owner is not None else rest).append(parameter)
    out = [
        {"params": params, "lr_scale": float(lr_scale[name]), "name": name}
        for name, params in groups.items()
        if params
    ]
    if rest:
        out.append({"params": rest, "lr_scale": 1.0, "name": "rest"})
    return out


def scale_learning_rates(optimizer: torch.optim.Optimizer) -> None:
    """Multiply every group's learning rate by its ``lr_scale`` (before a scheduler takes them)."""
    for group in optimizer.param_groups:
        group["lr"] = group["lr"] * group.get("lr_scale", 1.0)
