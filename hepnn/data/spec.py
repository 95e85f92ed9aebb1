"""The declarative data specification: what to read from ROOT and how to turn it into batches.

A :class:`DataSpec` is built from the ``data`` section of the configuration. Every error names
the config key (``data.inputs.particles.features.part_pt_log.scale``) and what was expected.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from hepnn.data.expressions import Expression, required_branches
from hepnn.errors import ConfigError
from hepnn.utils import validation as check


class DataConfigError(ConfigError):
    """The data configuration is inconsistent or incomplete."""


AUTO = "auto"
NONFINITE_POLICIES = ("error", "replace")
EMPTY_POLICIES = ("keep", "error")


@dataclass(frozen=True)
class Feature:
    """One input variable and its standardisation ``(x - center) / scale``, clipped to ``clip``;
    ``unit`` names the variable's unit (e.g. ``GeV``) for the export sidecar and plots.

    ``center``/``scale`` of None mean automatic: computed on the training files (see
    :mod:`hepnn.data.standardize`) before the spec is used.
    """

    name: str
    center: float | None = 0.0
    scale: float | None = 1.0
    clip: tuple[float, float] | None = None
    unit: str | None = None

    @property
    def automatic(self) -> bool:
        return self.center is None or self.scale is None


@dataclass(frozen=True)
class Ordering:
    """Sort the elements of a jagged group by the expression ``by`` (e.g. ``part_pt``).

    Clipping to the group length always keeps the elements with the largest ``by``;
    ``descending`` puts them first, ascending puts the largest last (for recurrent nets that
    should see the most important element last).
    """

    by: str
    descending: bool = True


@dataclass(frozen=True)
class ImageChannel:
    """One channel of a jet image: the per-element variables giving each element's position
    relative to the jet axis (``eta``, ``phi``: radians) and its ``intensity`` (e.g. pT or E in
    GeV; 1 for a multiplicity). Each is a branch or a variable name; ``unit`` is the intensity's."""

    name: str
    eta: str
    phi: str
    intensity: str
    unit: str | None = None


@dataclass(frozen=True)
class ImageSpec:
    """A jet image ``(B, C, n_eta, n_phi)`` built from jagged elements (see :mod:`hepnn.data.images`).

    Preprocessing (computed once per chunk, on all channels together): translate to ``center``
    (``centroid``, ``leading_subjet`` or ``none``), ``rotate`` the principal axis to +phi,
    ``flip`` the more intense halves to positive eta and phi; then pixelise and, with
    ``normalize``, divide each image by its total intensity. ``augment_flip_eta``/``_phi``:
    random flips of training batches (seeded per epoch, rank and worker).
    """

    channels: tuple[ImageChannel, ...]
    n_eta: int = 40
    n_phi: int = 40
    eta_range: tuple[float, float] = (-0.8, 0.8)
    phi_range: tuple[float, float] = (-0.8, 0.8)
    center: str = "centroid"
    rotate: bool = True
    flip: bool = True
    normalize: bool = True
    subjet_radius: float = 0.2
    augment_flip_eta: bool = False
    augment_flip_phi: bool = False

    @property
    def variables(self) -> set[str]:
        return {name for c in self.channels for name in (c.eta, c.phi, c.intensity)}


@dataclass(frozen=True)
class InputGroup:
    """A named tensor of the batch.

    With ``length`` set, the features are jagged (one value per particle, jet, lepton, ...) and
    the group becomes ``(B, C, length)`` padded with ``pad_value`` (longer lists are clipped),
    plus a boolean mask ``(B, length)`` stored under ``mask_key``. Without ``length`` the
    features are one value per entry and the group is ``(B, C)``. ``on_empty`` says what an
    entry with an empty list is: ``keep`` (an all-padding row, mask all False) or ``error``.
    With ``shape`` set, every feature is a fixed-size array per entry (e.g. the 9 x 9 x 80 time
    traces of a detector array), reshaped to ``shape``: the group is ``(B, C, *shape)``.
    With ``image`` set, the group is a jet image (no ``features``): see :class:`ImageSpec`.
    """

    name: str
    features: tuple[Feature, ...]
    length: int | None = None
    pad_value: float = 0.0
    mask_key: str | None = None
    order: Ordering | None = None
    on_empty: str = "keep"
    image: ImageSpec | None = None
    shape: tuple[int, ...] | None = None

    @property
    def jagged(self) -> bool:
        return self.length is not None


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
class AutoStandardization:
    """Where automatic centres and scales come from: the first ``fraction`` of every training
    file's training entries, at most ``max_entries`` entries in all."""

    fraction: float = 0.1
    max_entries: int = 200_000


@dataclass(frozen=True)
class DataSpec:
    """Everything the loader needs to know about the data, independent of where it runs.

    Labels are either one boolean expression per class (``labels``: one-hot branches) or one
    integer expression giving the class index (``label_index``). Regression ``targets`` (with
    their ``target_units``) and per-entry ``weight`` are optional. ``observers`` are copied to the
    predictions; ``baseline`` names one or two of them whose likelihood ratio, filled on the
    training split, is every classification run's cut-based baseline. ``image_targets`` names
    image groups that are per-pixel targets (e.g. the hard-scatter part of a jet image), built
    like inputs but read by the task's loss, not by the net. ``nonfinite`` says what NaN/inf input
    values do: ``error`` or ``replace`` (by ``nonfinite_value``, counted in every batch).
    """

    tree: str
    variables: dict[str, Expression]
    inputs: tuple[InputGroup, ...]
    classes: tuple[str, ...] = ()
    labels: dict[str, Expression] = field(default_factory=dict)
    label_index: Expression | None = None
    targets: dict[str, Expression] = field(default_factory=dict)
    target_units: dict[str, str] = field(default_factory=dict)
    weight: Expression | None = None
    observers: tuple[str, ...] = ()
    baseline: tuple[str, ...] = ()
    image_targets: tuple[str, ...] = ()
    element_targets: tuple[str, ...] = ()
    object_targets: tuple[str, ...] = ()
    selection: Expression | None = None
    split: Split = field(default_factory=Split)
    standardize: AutoStandardization = field(default_factory=AutoStandardization)
    nonfinite: str = "error"
    nonfinite_value: float = 0.0
    reweight: dict | None = None
    reweight_table: dict | None = None

    @functools.cached_property
    def branches(self) -> frozenset[str]:
        """The branches that must be read from disk (only those some expression needs)."""
        names = {f.name for g in self.inputs for f in g.features} | set(self.observers)
        names |= set(self.reweight_variables)
        names |= {g.order.by for g in self.inputs if g.order is not None}
        names |= {v for g in self.inputs if g.image is not None for v in g.image.variables}
        for expression in self.expressions():
            names |= expression.names
        return frozenset(required_branches(names, self.variables))

    def expressions(self) -> list[Expression]:
        """The label, target, weight and selection expressions."""
        found = [*self.labels.values(), *self.targets.values()]
        found += [e for e in (self.label_index, self.weight, self.selection) if e is not None]
        return found

    @property
    def automatic_features(self) -> list[tuple[InputGroup, Feature]]:
        """Features whose centre or scale is still to be computed from the data."""
        return [(g, f) for g in self.inputs for f in g.features if f.automatic]

    @property
    def reweight_variables(self) -> tuple[str, ...]:
        """The variables ``data.reweight`` bins in (none without reweighting)."""
        return tuple(str(name) for name in (self.reweight or {}).get("vars", {}))

    @functools.cached_property
    def reweighting(self):
        """The fitted :class:`~hepnn.data.reweight.ReweightTable` (None without reweighting or before)."""
        from hepnn.data.reweight import ReweightTable

        return ReweightTable.from_dict(self.reweight_table) if self.reweight_table is not None else None

    def with_reweight_table(self, table: Mapping) -> DataSpec:
        """A copy with the fitted reweighting table (:meth:`hepnn.data.reweight.ReweightTable.to_dict`)."""
        return dataclasses.replace(self, reweight_table=dict(table))

    def with_standardization(self, values: Mapping[str, Mapping[str, Sequence[float]]]) -> DataSpec:
        """A copy with automatic centres and scales replaced: ``values[group][feature] = (center, scale)``."""
        groups = []
        for group in self.inputs:
            features = []
            for f in group.features:
                if f.automatic:
                    try:
                        center, scale = values[group.name][f.name]
                    except KeyError:
                        raise DataConfigError(
                            f"no standardisation computed for data.inputs.{group.name}.features.{f.name}"
                        ) from None
                    f = dataclasses.replace(
                        f,
                        center=float(center) if f.center is None else f.center,
                        scale=float(scale) if f.scale is None else f.scale,
                    )
                features.append(f)
            groups.append(dataclasses.replace(group, features=tuple(features)))
        return dataclasses.replace(self, inputs=tuple(groups))

    def standardization(self) -> dict[str, dict[str, list[float]]]:
        """Centre and scale of every feature, ``{group: {feature: [center, scale]}}``."""
        return {g.name: {f.name: [f.center, f.scale] for f in g.features} for g in self.inputs}

    def to_config(self) -> dict:
        """The spec as plain data (numbers, strings, lists, dicts): what :meth:`from_config` reads.

        Stored in checkpoints so that evaluation and export rebuild exactly this spec.
        """
        inputs = {}
        for g in self.inputs:
            if g.image is not None:
                inputs[g.name] = image_config(g.image)
                continue
            group: dict = {
                "features": {
                    f.name: {
                        "center": AUTO if f.center is None else f.center,
                        "scale": AUTO if f.scale is None else f.scale,
                        "clip": list(f.clip) if f.clip else None,
                        "unit": f.unit,
                    }
                    for f in g.features
                }
            }
            if g.shape is not None:
                group["shape"] = list(g.shape)
            if g.jagged:
                group |= {"length": g.length, "pad_value": g.pad_value, "mask": g.mask_key}
                group |= {"on_empty": g.on_empty}
                if g.order:
                    group["order"] = {"by": g.order.by, "descending": g.order.descending}
            inputs[g.name] = group
        if self.label_index is not None:
            labels: dict = {"index": self.label_index.text, "classes": list(self.classes)}
        else:
            labels = {c: e.text for c, e in self.labels.items()}
        return {
            "tree": self.tree,
            "variables": {name: e.text for name, e in self.variables.items()},
            "inputs": inputs,
            "labels": labels,
            "targets": {
                name: {"expression": e.text, "unit": self.target_units.get(name)}
                for name, e in self.targets.items()
            },
            "weights": self.weight.text if self.weight else None,
            "observers": list(self.observers),
            "baseline": list(self.baseline),
            "image_targets": list(self.image_targets),
            "element_targets": list(self.element_targets),
            "object_targets": list(self.object_targets),
            "selection": self.selection.text if self.selection else None,
            "split": dataclasses.asdict(self.split),
            "standardize": dataclasses.asdict(self.standardize),
            "reweight": self.reweight,
            "reweight_table": self.reweight_table,
            "nonfinite": self.nonfinite,
            "nonfinite_value": self.nonfinite_value,
        }

    @classmethod
    def from_config(cls, cfg: Mapping) -> DataSpec:
        """Build and check a spec from the plain ``data`` mapping (keys as in ``conf/data/*.yaml``)."""
        tree = cfg.get("tree")
        if not tree or not isinstance(tree, str):
            raise DataConfigError(f"data.tree must name the TTree (or RNTuple) to read, got {tree!r}")
        variables = {
            str(name): Expression(text, f"data.variables.{name}")
            for name, text in (cfg.get("variables") or {}).items()
        }
        # a group set to null is left out (e.g. ``data.inputs.particles=null`` for an image-only net)
        inputs = tuple(_input_group(name, g) for name, g in _mapping(cfg, "inputs").items() if g is not None)
        if not inputs:
            raise DataConfigError("data.inputs must define at least one input group (e.g. 'particles')")
        classes, labels, label_index = _labels(_mapping(cfg, "labels"))
        targets, target_units = _targets(_mapping(cfg, "targets"))
        image_targets = _image_targets(cfg.get("image_targets"), inputs)
        element_targets = _element_targets(cfg.get("element_targets"), inputs)
        object_targets = _object_targets(cfg.get("object_targets"), inputs, element_targets)
        if not (classes or targets or image_targets or element_targets or object_targets):
            raise DataConfigError(
                "data.labels (classes), data.targets (regression), data.image_targets (per-pixel), "
                "data.element_targets (per-element) or data.object_targets (objects to find) must be "
                "given: there is nothing to learn"
            )
        weights = cfg.get("weights")
        selection = cfg.get("selection")
        nonfinite = cfg.get("nonfinite") or "error"
        if nonfinite not in NONFINITE_POLICIES:
            raise DataConfigError(f"data.nonfinite must be one of {NONFINITE_POLICIES}, got {nonfinite!r}")
        baseline = _baseline(cfg.get("baseline"), classes)
        # the baseline's observers are read with the test entries too: they are observers
        observers = tuple(dict.fromkeys([*(str(o) for o in (cfg.get("observers") or ())), *baseline]))
        return cls(
            tree=tree,
            variables=variables,
            inputs=inputs,
            classes=classes,
            labels=labels,
            label_index=label_index,
            targets=targets,
            target_units=target_units,
            weight=Expression(weights, "data.weights") if weights else None,
            observers=observers,
            baseline=baseline,
            image_targets=image_targets,
            element_targets=element_targets,
            object_targets=object_targets,
            selection=Expression(selection, "data.selection") if selection else None,
            split=_split(cfg.get("split")),
            standardize=_standardize(cfg.get("standardize")),
            reweight=_reweight(cfg.get("reweight"), classes),
            reweight_table=dict(cfg["reweight_table"]) if cfg.get("reweight_table") else None,
            nonfinite=nonfinite,
            nonfinite_value=float(cfg.get("nonfinite_value") or 0.0),
        )


def _image_targets(value, inputs: Sequence[InputGroup]) -> tuple[str, ...]:
    """The image groups that are per-pixel targets. Input and target pixels must stay aligned, so
    every image group then keeps the jet-axis frame: no centring, rotation, flips, normalisation or
    random flips (each of them would move or rescale one group's pixels by its own content)."""
    if not value:
        return ()
    if isinstance(value, str) or not isinstance(value, Sequence):
        raise DataConfigError(f"data.image_targets must list image input groups, got {value!r}")
    images = {g.name: g.image for g in inputs if g.image is not None}
    names = tuple(str(v) for v in value)
    for name in names:
        if name not in images:
            raise DataConfigError(
                f"data.image_targets names {name!r}, which is not an image group of data.inputs "
                f"(image groups: {sorted(images)})"
            )
    if len(images) == len(names):
        raise DataConfigError(
            f"data.image_targets lists every image group {sorted(images)}: the net needs one to read"
        )
    grid = lambda image: (image.n_eta, image.n_phi, image.eta_range, image.phi_range)  # noqa: E731
    reference = images[names[0]]
    for name, image in images.items():
        if grid(image) != grid(reference):
            raise DataConfigError(
                f"data.inputs.{name}.grid {grid(image)} differs from that of the image target "
                f"{names[0]!r} {grid(reference)}: per-pixel targets need the inputs' pixels"
            )
        moved = [
            key
            for key, on in (
                ("center", image.center != "none"),
                ("rotate", image.rotate),
                ("flip", image.flip),
                ("normalize", image.normalize),
                ("augment", image.augment_flip_eta or image.augment_flip_phi),
            )
            if on
        ]
        if moved:
            raise DataConfigError(
                f"data.inputs.{name}: with data.image_targets every image keeps the jet-axis frame and "
                f"its units (preprocessing center: none, rotate, flip and normalize false, no augment), "
                f"but it sets {moved}"
            )
    return names


def _element_targets(value, inputs: Sequence[InputGroup]) -> tuple[str, ...]:
    """The jagged groups that are per-element targets. Each must list the elements of the jagged
    inputs one for one (same length, order and empty-entry rule) and hold its values as they are
    (center 0, scale 1, no clipping)."""
    if not value:
        return ()
    if isinstance(value, str) or not isinstance(value, Sequence):
        raise DataConfigError(f"data.element_targets must list jagged input groups, got {value!r}")
    names = tuple(str(v) for v in value)
    jagged = {g.name: g for g in inputs if g.jagged}
    for name in names:
        if name not in jagged:
            raise DataConfigError(
                f"data.element_targets names {name!r}, which is not a jagged group of data.inputs "
                f"(jagged groups: {sorted(jagged)})"
            )
    read = [g for g in jagged.values() if g.name not in names]
    if not read:
        raise DataConfigError(
            f"data.element_targets lists every jagged group {sorted(jagged)}: the net needs one to read"
        )
    for name in names:
        target = jagged[name]
        scaled = [f.name for f in target.features if f.center != 0.0 or f.scale != 1.0 or f.clip]
        if scaled:
            raise DataConfigError(
                f"data.inputs.{name}: a per-element target holds its values as they are (center 0, "
                f"scale 1, no clip), but {scaled} are standardised or clipped"
            )
        for group in read:
            ours = (target.length, target.order, target.on_empty)
            theirs = (group.length, group.order, group.on_empty)
            if ours != theirs:
                raise DataConfigError(
                    f"data.inputs.{name} (length, order, on_empty) {ours} differs from data.inputs."
                    f"{group.name} {theirs}: per-element targets must list the same elements"
                )
    return names


def _object_targets(value, inputs: Sequence[InputGroup], element_targets: Sequence[str]) -> tuple[str, ...]:
    """The jagged groups that list the objects an entry holds (e.g. the jets of an event for a
    detector): targets with their values as they are (center 0, scale 1, no clipping), whose lists
    need not match any input's."""
    if not value:
        return ()
    if isinstance(value, str) or not isinstance(value, Sequence):
        raise DataConfigError(f"data.object_targets must list jagged input groups, got {value!r}")
    names = tuple(str(v) for v in value)
    jagged = {g.name: g for g in inputs if g.jagged}
    for name in names:
        if name not in jagged:
            raise DataConfigError(
                f"data.object_targets names {name!r}, which is not a jagged group of data.inputs "
                f"(jagged groups: {sorted(jagged)})"
            )
        if name in element_targets:
            raise DataConfigError(f"data.object_targets and data.element_targets both name {name!r}")
        scaled = [f.name for f in jagged[name].features if f.center != 0.0 or f.scale != 1.0 or f.clip]
        if scaled:
            raise DataConfigError(
                f"data.inputs.{name}: an object target holds its values as they are (center 0, "
                f"scale 1, no clip), but {scaled} are standardised or clipped"
            )
    if all(g.name in names for g in inputs):
        raise DataConfigError(
            f"data.object_targets lists every input group {[g.name for g in inputs]}: "
            "the net needs one to read"
        )
    return names


def _targets(cfg: Mapping) -> tuple[dict[str, Expression], dict[str, str]]:
    """Regression targets and their units: ``name: expression`` or ``name: {expression, unit}``."""
    targets, units = {}, {}
    for name, entry in cfg.items():
        where = f"data.targets.{name}"
        if isinstance(entry, Mapping):
            entry = _keys(entry, ("expression", "unit"), where)
            if not entry.get("expression"):
                raise DataConfigError(f"{where}.expression must give the target's expression, got {entry!r}")
            text, unit = entry["expression"], entry.get("unit")
        else:
            text, unit = entry, None
        targets[str(name)] = Expression(text, where)
        if unit:
            units[str(name)] = str(unit)
    return targets, units


def _reweight(value, classes: Sequence[str]) -> dict | None:
    """The ``data.reweight`` mapping, checked (:class:`hepnn.data.reweight.ReweightConfig`); None when off."""
    if value is None:
        return None
    from hepnn.data.reweight import FLAT, ReweightConfig

    config = ReweightConfig.from_dict(value)
    if not classes:
        raise DataConfigError("data.reweight needs data.labels: it weights the classes against each other")
    if config.target != FLAT and config.target not in classes:
        raise DataConfigError(
            f"data.reweight.target {config.target!r} is neither 'flat' nor one of the classes {list(classes)}"
        )
    config.class_shares(classes)  # checks class_weights against the classes
    return {str(k): (list(v) if isinstance(v, list | tuple) else v) for k, v in dict(value).items()}


def _baseline(value, classes: Sequence[str]) -> tuple[str, ...]:
    """The one or two observers of the cut-based baseline (``data.baseline``); empty when not set."""
    if value is None or value == []:
        return ()
    names = [value] if isinstance(value, str) else list(value)
    if not 1 <= len(names) <= 2 or not all(isinstance(n, str) and n for n in names):
        raise DataConfigError(
            f"data.baseline must name one or two observers (e.g. [jet_mass, jet_tau32]), got {value!r}"
        )
    if len(set(names)) != len(names):
        raise DataConfigError(f"data.baseline names an observer twice: {names}")
    if not classes:
        raise DataConfigError("data.baseline needs data.labels: the cut-based baseline is a classifier")
    return tuple(names)


def _labels(cfg: Mapping) -> tuple[tuple[str, ...], dict[str, Expression], Expression | None]:
    """Classes and either one-hot expressions or an integer index expression."""
    if not cfg:
        return (), {}, None
    if set(cfg) == {"index", "classes"}:
        classes = cfg["classes"]
        if isinstance(classes, str) or not isinstance(classes, Sequence) or len(classes) < 2:
            raise DataConfigError(f"data.labels.classes must list at least two class names, got {classes!r}")
        if len(set(classes)) != len(classes):
            raise DataConfigError(f"data.labels.classes lists a class twice: {list(classes)}")
        return tuple(str(c) for c in classes), {}, Expression(cfg["index"], "data.labels.index")
    if "index" in cfg or "classes" in cfg:
        raise DataConfigError(
            "data.labels: give either {index: <integer expression>, classes: [names]} or "
            f"one boolean expression per class name, got keys {sorted(cfg)}"
        )
    if len(cfg) < 2:
        raise DataConfigError(
            f"data.labels must map at least two class names to expressions, got {dict(cfg)}"
        )
    labels = {str(c): Expression(text, f"data.labels.{c}") for c, text in cfg.items()}
    return tuple(labels), labels, None


def _split(cfg) -> Split:
    split_cfg = dict(cfg or {})
    unknown = set(split_cfg) - {"train", "val", "test"}
    if unknown:
        raise DataConfigError(f"data.split: unknown key(s) {sorted(unknown)}; expected train, val, test")
    split = Split(**{k: float(v) for k, v in split_cfg.items()})
    if min(split.train, split.val, split.test) < 0 or abs(split.train + split.val + split.test - 1) > 1e-6:
        raise DataConfigError(f"data.split fractions must be non-negative and sum to 1, got {split}")
    return split


def _standardize(cfg) -> AutoStandardization:
    cfg = dict(cfg or {})
    unknown = set(cfg) - {"fraction", "max_entries"}
    if unknown:
        raise DataConfigError(
            f"data.standardize: unknown key(s) {sorted(unknown)}; expected fraction, max_entries"
        )
    auto = AutoStandardization(**cfg)
    if not 0 < auto.fraction <= 1:
        raise DataConfigError(f"data.standardize.fraction must be in (0, 1], got {auto.fraction}")
    check.positive_int(auto.max_entries, "data.standardize.max_entries", DataConfigError)
    return auto


def _mapping(cfg: Mapping, key: str) -> Mapping:
    value = cfg.get(key) or {}
    if not isinstance(value, Mapping):
        raise DataConfigError(f"data.{key} must be a mapping, got {type(value).__name__}: {value!r}")
    return value


GROUP_KEYS = ("features", "length", "pad_value", "clip", "mask", "order", "on_empty", "shape")
IMAGE_KEYS = ("channels", "grid", "preprocessing", "augment")
CENTERS = ("centroid", "leading_subjet", "none")


def image_config(image: ImageSpec) -> dict:
    """The plain-data form of an image group (what :func:`_image_group` reads)."""
    return {
        "channels": {
            c.name: {"eta": c.eta, "phi": c.phi, "intensity": c.intensity, "unit": c.unit}
            for c in image.channels
        },
        "grid": {
            "n_eta": image.n_eta,
            "n_phi": image.n_phi,
            "eta": list(image.eta_range),
            "phi": list(image.phi_range),
        },
        "preprocessing": {
            "center": image.center,
            "rotate": image.rotate,
            "flip": image.flip,
            "normalize": image.normalize,
            "subjet_radius": image.subjet_radius,
        },
        "augment": {"flip_eta": image.augment_flip_eta, "flip_phi": image.augment_flip_phi},
    }


def _keys(cfg, allowed: Sequence[str], where: str) -> dict:
    cfg = cfg if cfg is not None else {}
    if not isinstance(cfg, Mapping):
        raise DataConfigError(f"{where} must be a mapping with keys {', '.join(allowed)}, got {cfg!r}")
    unknown = set(cfg) - set(allowed)
    if unknown:
        raise DataConfigError(f"{where}: unknown key(s) {sorted(unknown)}; expected {', '.join(allowed)}")
    return dict(cfg)


def _image_group(name: str, cfg: Mapping) -> InputGroup:
    where = f"data.inputs.{name}"
    cfg = _keys(cfg, IMAGE_KEYS, where)
    channels_cfg = cfg.get("channels")
    if not isinstance(channels_cfg, Mapping) or not channels_cfg:
        raise DataConfigError(
            f"{where}.channels must map channel names to {{eta, phi, intensity}} variables, "
            f"got {channels_cfg!r}"
        )
    channels = []
    for channel, ccfg in channels_cfg.items():
        ccfg = _keys(ccfg, ("eta", "phi", "intensity", "unit"), f"{where}.channels.{channel}")
        missing = [k for k in ("eta", "phi", "intensity") if not ccfg.get(k)]
        if missing:
            raise DataConfigError(f"{where}.channels.{channel} must name the variable(s) {missing}")
        unit = ccfg.get("unit")
        channels.append(
            ImageChannel(
                str(channel),
                str(ccfg["eta"]),
                str(ccfg["phi"]),
                str(ccfg["intensity"]),
                str(unit) if unit else None,
            )
        )
    grid = _keys(cfg.get("grid"), ("n_eta", "n_phi", "eta", "phi"), f"{where}.grid")
    for key in ("n_eta", "n_phi"):
        if key in grid:
            check.positive_int(grid[key], f"{where}.grid.{key}", DataConfigError)
    pre = _keys(
        cfg.get("preprocessing"),
        ("center", "rotate", "flip", "normalize", "subjet_radius"),
        f"{where}.preprocessing",
    )
    center = pre.get("center", "centroid")
    if center not in CENTERS:
        raise DataConfigError(f"{where}.preprocessing.center must be one of {CENTERS}, got {center!r}")
    radius = float(pre.get("subjet_radius", 0.2))
    if not radius > 0:
        raise DataConfigError(f"{where}.preprocessing.subjet_radius must be positive, got {radius}")
    augment = _keys(cfg.get("augment"), ("flip_eta", "flip_phi"), f"{where}.augment")
    image = ImageSpec(
        channels=tuple(channels),
        n_eta=int(grid.get("n_eta", 40)),
        n_phi=int(grid.get("n_phi", 40)),
        eta_range=_clip(grid.get("eta", (-0.8, 0.8)), f"{where}.grid.eta"),
        phi_range=_clip(grid.get("phi", (-0.8, 0.8)), f"{where}.grid.phi"),
        center=center,
        rotate=bool(pre.get("rotate", True)),
        flip=bool(pre.get("flip", True)),
        normalize=bool(pre.get("normalize", True)),
        subjet_radius=radius,
        augment_flip_eta=bool(augment.get("flip_eta", False)),
        augment_flip_phi=bool(augment.get("flip_phi", False)),
    )
    return InputGroup(name=name, features=(), image=image)


def _input_group(name: str, cfg: Mapping) -> InputGroup:
    where = f"data.inputs.{name}"
    if not isinstance(cfg, Mapping):
        raise DataConfigError(f"{where} must be a mapping with 'features', got {cfg!r}")
    if "channels" in cfg:
        return _image_group(name, cfg)
    unknown = set(cfg) - set(GROUP_KEYS)
    if unknown:
        raise DataConfigError(f"{where}: unknown key(s) {sorted(unknown)}; expected {', '.join(GROUP_KEYS)}")
    default_clip = _clip(cfg.get("clip"), f"{where}.clip")
    features_cfg = cfg.get("features")
    if not features_cfg:
        raise DataConfigError(f"{where}.features must list at least one variable")
    if isinstance(features_cfg, Sequence) and not isinstance(features_cfg, str):
        if len(set(features_cfg)) != len(features_cfg):
            raise DataConfigError(f"{where}.features lists a variable twice: {list(features_cfg)}")
        features_cfg = {str(f): None for f in features_cfg}
    features = [
        _feature(str(f), fcfg, f"{where}.features.{f}", default_clip) for f, fcfg in features_cfg.items()
    ]
    length = cfg.get("length")
    if length is not None:
        check.require(
            check.is_int(length) and length >= 1,
            f"{where}.length",
            "a positive integer (or null for per-entry features)",
            length,
            DataConfigError,
        )
    shape = cfg.get("shape")
    if shape is not None:
        if length is not None:
            raise DataConfigError(f"{where}: give either length (lists) or shape (fixed arrays), not both")
        if (
            isinstance(shape, str | bytes)
            or not isinstance(shape, Sequence)
            or not shape
            or not all(check.is_int(n) and n > 0 for n in shape)
        ):
            raise DataConfigError(f"{where}.shape must be a list of positive integers, got {shape!r}")
        shape = tuple(int(n) for n in shape)
    on_empty = cfg.get("on_empty") or "keep"
    if on_empty not in EMPTY_POLICIES:
        raise DataConfigError(f"{where}.on_empty must be one of {EMPTY_POLICIES}, got {on_empty!r}")
    order = cfg.get("order")
    if order is not None:
        if length is None:
            raise DataConfigError(f"{where}.order needs a jagged group (set {where}.length)")
        if isinstance(order, str):
            order = {"by": order}
        if not isinstance(order, Mapping) or set(order) - {"by", "descending"} or "by" not in order:
            raise DataConfigError(
                f"{where}.order must be {{by: <variable>, descending: true|false}}, got {order!r}"
            )
        order = Ordering(str(order["by"]), bool(order.get("descending", True)))
    return InputGroup(
        name=name,
        features=tuple(features),
        length=length,
        pad_value=float(cfg.get("pad_value", 0.0)),
        mask_key=(cfg.get("mask") or f"{name}_mask") if length is not None else None,
        order=order,
        on_empty=on_empty,
        shape=shape,
    )


def _feature(name: str, cfg, where: str, default_clip) -> Feature:
    cfg = dict(cfg or {})
    unknown = set(cfg) - {"center", "scale", "clip", "unit"}
    if unknown:
        raise DataConfigError(
            f"{where}: unknown key(s) {sorted(unknown)}; expected center, scale, clip, unit"
        )
    center = _number_or_auto(cfg.get("center", 0.0), f"{where}.center")
    scale = _number_or_auto(cfg.get("scale", 1.0), f"{where}.scale")
    if scale is not None and not scale > 0:
        raise DataConfigError(f"{where}.scale must be positive (or 'auto'), got {scale}")
    clip = _clip(cfg["clip"], f"{where}.clip") if "clip" in cfg else default_clip
    unit = cfg.get("unit")
    return Feature(name, center, scale, clip, str(unit) if unit else None)


def _number_or_auto(value, where: str) -> float | None:
    if value == AUTO:
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        raise DataConfigError(f"{where} must be a number or 'auto', got {value!r}") from None


def _clip(value, where: str) -> tuple[float, float] | None:
    if value is None:
        return None
    if not isinstance(value, Sequence) or len(value) != 2 or not value[0] < value[1]:
        raise DataConfigError(f"{where} must be [low, high] with low < high, got {value!r}")
    return float(value[0]), float(value[1])
