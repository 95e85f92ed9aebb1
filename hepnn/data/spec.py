"""The declarative data specification: what to read from ROOT and how to turn it into batches.

A :class:`DataSpec` is built from the ``data`` section of the configuration. Every error names
the config key (``data.inputs.particles.features.part_pt_log.scale``) and what was expected.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from hepnn.data.expressions import Expression, required_branches
from hepnn.errors import ConfigError


class DataConfigError(ConfigError):
    """The data configuration is inconsistent or incomplete."""


@dataclass(frozen=True)
class Feature:
    """One input variable and its standardisation ``(x - center) / scale``, clipped to ``clip``."""

    name: str
    center: float = 0.0
    scale: float = 1.0
    clip: tuple[float, float] | None = None


@dataclass(frozen=True)
class InputGroup:
    """A named tensor of the batch.

    With ``length`` set, the features are jagged (one value per particle) and the group becomes
    ``(B, C, length)`` padded with ``pad_value`` (longer lists are clipped), plus a boolean mask
    ``(B, length)`` stored under ``mask_key``. Without ``length`` the features are one value per
    entry and the group is ``(B, C)``.
    """

    name: str
    features: tuple[Feature, ...]
    length: int | None = None
    pad_value: float = 0.0
    mask_key: str | None = None


@dataclass(frozen=True)
class Split:
    """Fractions of every file's entries used for training, validation and test (in that order)."""

    train: float = 0.7
    val: float = 0.15
    test: float = 0.15

    def ranges(self, n_entries: int) -> dict[str, tuple[int, int]]:
        """Entry ranges ``[start, stop)`` of each split in a file of ``n_entries`` entries."""
        cut1 = math.floor(self.train * n_entries + 0.5)
        cut2 = math.floor((self.train + self.val) * n_entries + 0.5)
        return {"train": (0, cut1), "val": (cut1, cut2), "test": (cut2, n_entries)}


@dataclass(frozen=True)
class DataSpec:
    """Everything the loader needs to know about the data, independent of where it runs."""

    tree: str
    variables: dict[str, Expression]
    inputs: tuple[InputGroup, ...]
    classes: tuple[str, ...]
    labels: dict[str, Expression]
    observers: tuple[str, ...] = ()
    selection: Expression | None = None
    split: Split = field(default_factory=Split)

    @functools.cached_property
    def branches(self) -> frozenset[str]:
        """The branches that must be read from disk (only those some expression needs)."""
        names = {f.name for g in self.inputs for f in g.features} | set(self.observers)
        for expression in [*self.labels.values(), *([self.selection] if self.selection else [])]:
            names |= expression.names
        return frozenset(required_branches(names, self.variables))

    @classmethod
    def from_config(cls, cfg: Mapping) -> DataSpec:
        """Build and check a spec from the plain ``data`` mapping (keys as in ``conf/data/*.yaml``)."""
        tree = cfg.get("tree")
        if not tree or not isinstance(tree, str):
            raise DataConfigError(f"data.tree must name the TTree to read, got {tree!r}")
        variables = {
            str(name): Expression(text, f"data.variables.{name}")
            for name, text in (cfg.get("variables") or {}).items()
        }
        inputs = tuple(_input_group(name, g) for name, g in _mapping(cfg, "inputs").items())
        if not inputs:
            raise DataConfigError("data.inputs must define at least one input group (e.g. 'particles')")
        labels_cfg = _mapping(cfg, "labels")
        if len(labels_cfg) < 2:
            raise DataConfigError(
                f"data.labels must map at least two class names to expressions, got {labels_cfg}"
            )
        labels = {str(c): Expression(text, f"data.labels.{c}") for c, text in labels_cfg.items()}
        selection = cfg.get("selection")
        split_cfg = dict(cfg.get("split") or {})
        unknown = set(split_cfg) - {"train", "val", "test"}
        if unknown:
            raise DataConfigError(f"data.split: unknown key(s) {sorted(unknown)}; expected train, val, test")
        split = Split(**{k: float(v) for k, v in split_cfg.items()})
        if (
            min(split.train, split.val, split.test) < 0
            or abs(split.train + split.val + split.test - 1) > 1e-6
        ):
            raise DataConfigError(f"data.split fractions must be non-negative and sum to 1, got {split}")
        observers = tuple(str(o) for o in (cfg.get("observers") or ()))
        spec = cls(
            tree=tree,
            variables=variables,
            inputs=inputs,
            classes=tuple(labels),
            labels=labels,
            observers=observers,
            selection=Expression(selection, "data.selection") if selection else None,
            split=split,
        )
        return spec


def _mapping(cfg: Mapping, key: str) -> Mapping:
    value = cfg.get(key) or {}
    if not isinstance(value, Mapping):
        raise DataConfigError(f"data.{key} must be a mapping, got {type(value).__name__}: {value!r}")
    return value


def _input_group(name: str, cfg: Mapping) -> InputGroup:
    where = f"data.inputs.{name}"
    if not isinstance(cfg, Mapping):
        raise DataConfigError(f"{where} must be a mapping with 'features', got {cfg!r}")
    unknown = set(cfg) - {"features", "length", "pad_value", "clip", "mask"}
    if unknown:
        raise DataConfigError(
            f"{where}: unknown key(s) {sorted(unknown)}; expected features, length, pad_value, clip, mask"
        )
    default_clip = _clip(cfg.get("clip"), f"{where}.clip")
    features_cfg = cfg.get("features")
    if not features_cfg:
        raise DataConfigError(f"{where}.features must list at least one variable")
    if isinstance(features_cfg, Sequence) and not isinstance(features_cfg, str):
        if len(set(features_cfg)) != len(features_cfg):
            raise DataConfigError(f"{where}.features lists a variable twice: {list(features_cfg)}")
        features_cfg = {str(f): None for f in features_cfg}
    features = []
    for fname, fcfg in features_cfg.items():
        fwhere = f"{where}.features.{fname}"
        fcfg = dict(fcfg or {})
        unknown = set(fcfg) - {"center", "scale", "clip"}
        if unknown:
            raise DataConfigError(f"{fwhere}: unknown key(s) {sorted(unknown)}; expected center, scale, clip")
        scale = float(fcfg.get("scale", 1.0))
        if not scale > 0:
            raise DataConfigError(f"{fwhere}.scale must be positive, got {scale}")
        clip = _clip(fcfg["clip"], f"{fwhere}.clip") if "clip" in fcfg else default_clip
        features.append(Feature(str(fname), float(fcfg.get("center", 0.0)), scale, clip))
    length = cfg.get("length")
    if length is not None and (not isinstance(length, int) or length < 1):
        raise DataConfigError(
            f"{where}.length must be a positive integer (or null for per-entry features), got {length!r}"
        )
    return InputGroup(
        name=name,
        features=tuple(features),
        length=length,
        pad_value=float(cfg.get("pad_value", 0.0)),
        mask_key=(cfg.get("mask") or f"{name}_mask") if length is not None else None,
    )


def _clip(value, where: str) -> tuple[float, float] | None:
    if value is None:
        return None
    if not isinstance(value, Sequence) or len(value) != 2 or not value[0] < value[1]:
        raise DataConfigError(f"{where} must be [low, high] with low < high, got {value!r}")
    return float(value[0]), float(value[1])
