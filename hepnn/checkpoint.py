"""What hepnn stores in a checkpoint, and how the entry points read it back and rebuild the run.

Every checkpoint of ``python -m hepnn.train`` holds, besides Lightning's own entries, the run's
composed configuration as plain data (``checkpoint["hepnn"]``, written by
:class:`StoreConfigInCheckpoint`) and the data module's resolved data spec, standardisation
included (``checkpoint["RootDataModule"]["spec"]``). ``hepnn.train`` (resuming), ``hepnn.evaluate``
and ``hepnn.export`` load checkpoints with :func:`load_checkpoint` (``weights_only=True``) and
rebuild the model and the data module from what is stored, never from today's defaults.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Mapping
from pathlib import Path

import hydra
import lightning as L
import torch
from omegaconf import DictConfig, OmegaConf

from hepnn.data import DataConfigError, DataSpec
from hepnn.errors import ConfigError, find_input_error

log = logging.getLogger(__name__)

CHECKPOINT_KEY = "hepnn"
CHECKPOINT_FORMAT = 1
DEFAULT_DATAMODULE = "RootDataModule"
# data keys evaluate may change: parts of the data spec that do not change what the net sees ...
SPEC_OVERRIDES = ("tree", "observers", "selection", "split", "nonfinite", "nonfinite_value")
# ... and how the files are found and read
LOADING_OVERRIDES = (
    "files",
    "batch_size",
    "eval_batch_size",
    "chunk_size",
    "num_workers",
    "pin_memory",
    "cache",
    "cache_dir",
    "on_bad_file",
    "progress_bar",
    "keep_freed_memory",
)
WHOLE_FILES = {"train": 0.0, "val": 0.0, "test": 1.0}


class CheckpointError(ConfigError):
    """A checkpoint is missing, unreadable, not written by hepnn, or does not fit its configuration."""


def checkpoint_config(cfg) -> dict:
    """The composed configuration as plain data for checkpoints: resolved, without the ``hydra`` section."""
    config = OmegaConf.to_container(cfg, resolve=True)
    config.pop("hydra", None)
    return config


def check_resumable(ckpt_path: str | None) -> str | None:
    """The resolved path of a checkpoint to resume training from, checked to be a hepnn checkpoint
    (:func:`load_checkpoint`, :func:`stored_config`); None when none is given."""
    if ckpt_path is None:
        return None
    path = Path(ckpt_path).expanduser().resolve()
    stored_config(load_checkpoint(path), path)
    return str(path)


def load_checkpoint(path: str | Path) -> dict:
    """The checkpoint at ``path``, loaded on the CPU with ``weights_only=True`` (tensors and plain data).

    Raises :class:`CheckpointError` naming the file when it does not exist, cannot be read as a
    PyTorch checkpoint (truncated, corrupt, another kind of file), holds other objects than
    tensors and plain data, or is not a Lightning checkpoint (no ``state_dict``).
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise CheckpointError(f"ckpt_path: checkpoint {path} does not exist")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        if "weights only load failed" in str(exc).lower():
            raise CheckpointError(
                f"ckpt_path: {path} holds objects other than tensors and plain data, so it does not load "
                f"with torch.load(weights_only=True); expected a checkpoint written by python -m hepnn.train"
            ) from exc
        raise CheckpointError(
            f"ckpt_path: cannot read {path} as a PyTorch checkpoint (truncated, corrupt or not a "
            f"checkpoint?): {type(exc).__name__}: {reason}"
        ) from exc
    if not isinstance(checkpoint, dict) or not isinstance(checkpoint.get("state_dict"), Mapping):
        found = (
            sorted(map(str, checkpoint))[:10] if isinstance(checkpoint, dict) else type(checkpoint).__name__
        )
        raise CheckpointError(
            f"ckpt_path: {path} is not a Lightning checkpoint: expected a dict with 'state_dict', "
            f"found {found}"
        )
    return checkpoint


def stored_config(checkpoint: dict, path: str | Path) -> dict:
    """The run configuration stored in a hepnn checkpoint (``checkpoint["hepnn"]["config"]``)."""
    entry = checkpoint.get(CHECKPOINT_KEY)
    if entry is None:
        raise CheckpointError(
            f"ckpt_path: {path} has no '{CHECKPOINT_KEY}' entry (the training configuration): expected a "
            f"checkpoint written by python -m hepnn.train, not a plain Lightning checkpoint"
        )
    if not isinstance(entry, Mapping) or entry.get("format") != CHECKPOINT_FORMAT:
        found = entry.get("format") if isinstance(entry, Mapping) else type(entry).__name__
        raise CheckpointError(
            f"ckpt_path: {path}: '{CHECKPOINT_KEY}' entry of format {found!r}; this hepnn reads format "
            f"{CHECKPOINT_FORMAT}"
        )
    config = entry.get("config")
    missing = [key for key in ("model", "data") if not isinstance((config or {}).get(key), Mapping)]
    if missing:
        raise CheckpointError(
            f"ckpt_path: {path}: the stored configuration has no {' or '.join(missing)} section"
        )
    return config


def rebuild_model(config: dict, checkpoint: dict, path: str | Path) -> L.LightningModule:
    """The task and net of the stored ``model`` section, with the checkpoint's weights (strict)."""
    model = _instantiate(config["model"], "model", path)
    check_weights_fit(model.state_dict(), checkpoint["state_dict"], path)
    model.load_state_dict(checkpoint["state_dict"])
    model.on_load_checkpoint(checkpoint)  # what the task keeps beside its weights (e.g. a baseline)
    return model


def _instantiate(section: Mapping, name: str, path: str | Path):
    """The object of a stored config ``section``; errors name the checkpoint and the section's target."""
    try:
        return hydra.utils.instantiate(section, _convert_="all")
    except Exception as exc:
        if find_input_error(exc) is not None:
            raise
        raise CheckpointError(
            f"ckpt_path: {path}: cannot rebuild the {name} ({name}._target_={section.get('_target_')!r}) "
            f"from the stored configuration: {exc}"
        ) from exc


def check_weights_fit(expected: Mapping, stored: Mapping, path: str | Path) -> None:
    """Raise naming the missing, unexpected and mis-shaped tensors of ``stored`` (at most 5 of each)."""
    missing = [k for k in expected if k not in stored]
    unexpected = [k for k in stored if k not in expected]
    shapes = [
        f"{k} {tuple(stored[k].shape)} in the checkpoint, {tuple(expected[k].shape)} in the network"
        for k in expected
        if k in stored and tuple(stored[k].shape) != tuple(expected[k].shape)
    ]
    problems = [
        f"{label}: {', '.join(keys[:5])}{f' (and {len(keys) - 5} more)' if len(keys) > 5 else ''}"
        for label, keys in (
            ("missing from the checkpoint", missing),
            ("not in the network", unexpected),
            ("other shapes", shapes),
        )
        if keys
    ]
    if problems:
        raise CheckpointError(
            f"ckpt_path: {path}: the weights do not fit the network rebuilt from its stored configuration: "
            + "; ".join(problems)
        )


def data_overrides(data: DictConfig | Mapping | None) -> dict:
    """The ``data`` keys of the evaluate config that are set (not null), checked against those allowed."""
    values = OmegaConf.to_container(data, resolve=True) if isinstance(data, DictConfig) else dict(data or {})
    overrides = {k: v for k, v in values.items() if v is not None}
    fixed = sorted(set(overrides) - set(SPEC_OVERRIDES) - set(LOADING_OVERRIDES))
    if fixed:
        raise ConfigError(
            f"data.{fixed[0]} cannot be changed in evaluate: it comes from the checkpoint; the keys that "
            f"can are {', '.join(SPEC_OVERRIDES + LOADING_OVERRIDES)}"
        )
    return overrides


def evaluation_data_config(stored: Mapping, overrides: Mapping) -> dict:
    """The data module config: the checkpoint's ``data`` section with ``overrides`` and no generation.

    Without a ``split`` override every entry of the files (of a per-split mapping, its ``test``
    files) is tested: ``split`` becomes all test (the data module plans no training split when it
    is only tested).
    """
    data = {**stored, **overrides, "generate": None}
    files = data.get("files")
    if isinstance(files, Mapping):
        if "split" in overrides:
            raise ConfigError(
                "data.split applies to a list of files, but data.files is a per-split mapping "
                f"{sorted(files)}: give data.files as a list (or glob) to split it"
            )
        if not files.get("test"):
            raise ConfigError(
                f"data.files is a per-split mapping without test files ({sorted(files)}): give data.files"
            )
        files = files["test"]
    data["files"] = files
    if "split" not in overrides:
        data["split"] = dict(WHOLE_FILES)
    return data


def evaluation_spec(stored_spec: Mapping, data: Mapping, overrides: Mapping) -> dict:
    """The checkpoint's resolved data spec with the changed keys of :data:`SPEC_OVERRIDES` and the split."""
    spec = dict(stored_spec)
    spec.update({key: data[key] for key in SPEC_OVERRIDES if key in overrides})
    spec["split"] = data["split"]
    return spec


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


def rebuild_datamodule(config: dict, checkpoint: dict, path: str | Path, overrides: Mapping):
    """The data module of the stored ``data`` section (with ``overrides``), using the checkpoint's spec."""
    data = evaluation_data_config(config["data"], overrides)
    if "split" not in overrides:
        log.info("testing every entry of the files (data.split=null)")
    datamodule = _instantiate(data, "data", path)
    key = type(datamodule).__qualname__
    state = checkpoint.get(key)
    if not isinstance(state, Mapping) or not isinstance(state.get("spec"), Mapping):
        raise CheckpointError(
            f"ckpt_path: {path} has no '{key}' entry with the resolved data spec (standardisation); "
            f"expected a checkpoint written by python -m hepnn.train"
        )
    datamodule.load_state_dict({**state, "spec": evaluation_spec(state["spec"], data, overrides)})
    return datamodule


class StoreConfigInCheckpoint(L.Callback):
    """Stores the run's composed configuration in every checkpoint, as plain data.

    ``checkpoint["hepnn"] = {"format": 1, "config": config}``: ``config`` is the resolved
    configuration (``OmegaConf.to_container(cfg, resolve=True)`` without the ``hydra`` section),
    from which ``python -m hepnn.evaluate`` rebuilds the model and the data module. Everything in
    it is dicts, lists, strings, numbers, booleans and None, so checkpoints load with
    ``torch.load(path, weights_only=True)``.
    """

    def __init__(self, config: Mapping):
        self.config = {k: v for k, v in dict(config).items() if k != "hydra"}

    def on_save_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict) -> None:
        checkpoint[CHECKPOINT_KEY] = {"format": CHECKPOINT_FORMAT, "config": copy.deepcopy(self.config)}
