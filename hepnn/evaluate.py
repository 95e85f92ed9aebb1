"""Evaluate a trained model: ``python -m hepnn.evaluate ckpt_path=<checkpoint> [data.files=...] [overrides]``.

The model and the data spec (standardisation included) are rebuilt from what the checkpoint
stores (the run configuration under ``checkpoint["hepnn"]``, written by
:class:`hepnn.callbacks.StoreConfigInCheckpoint`, and the data module's resolved spec), never
from the current configuration defaults. By default every entry of every file is tested, and the
predictions file holds one entry per input entry (a friend tree of the input, see
:class:`hepnn.callbacks.RootPredictionWriter`). The task's test metrics, the predictions and
``summary.json`` go to the run's directory (``logs/evaluate/runs/<time>/``).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Mapping
from pathlib import Path

import hydra
import lightning as L
import torch
from omegaconf import DictConfig, OmegaConf

from hepnn.callbacks import (
    CHECKPOINT_FORMAT,
    CHECKPOINT_KEY,
    RootPredictionWriter,
    TrainingThroughput,
)
from hepnn.errors import ConfigError, find_input_error, report_input_errors
from hepnn.training import figures_of_test, format_summary, quiet_known_noise
from hepnn.utils.config import config_dir, register_resolvers
from hepnn.utils.memory import keep_freed_memory

log = logging.getLogger(__name__)
register_resolvers()

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
)
WHOLE_FILES = {"train": 0.0, "val": 0.0, "test": 1.0}


class CheckpointError(ConfigError):
    """A checkpoint is missing, unreadable, not written by hepnn, or does not fit its configuration."""


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


def evaluate(cfg: DictConfig) -> dict:
    """Test the checkpoint ``cfg.ckpt_path`` on ``cfg.data``'s files; returns the summary (metrics,
    where the outputs went)."""
    start = time.perf_counter()
    quiet_known_noise()
    if cfg.get("keep_freed_memory", True):
        keep_freed_memory()
    path = Path(cfg.ckpt_path).expanduser().resolve()
    checkpoint = load_checkpoint(path)
    config = stored_config(checkpoint, path)
    overrides = data_overrides(cfg.get("data"))
    model = rebuild_model(config, checkpoint, path)
    datamodule = rebuild_datamodule(config, checkpoint, path, overrides)
    writer = RootPredictionWriter(**OmegaConf.to_container(cfg.predictions, resolve=True))
    trainer: L.Trainer = hydra.utils.instantiate(
        cfg.trainer, callbacks=[writer, TrainingThroughput()], logger=False, enable_checkpointing=False
    )
    output_dir = Path(cfg.paths.output_dir)
    if trainer.is_global_zero:
        output_dir.mkdir(parents=True, exist_ok=True)
        (output_dir / "config.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))
        (output_dir / "checkpoint_config.yaml").write_text(OmegaConf.to_yaml(OmegaConf.create(config)))
    trainer.test(model, datamodule=datamodule)
    figures = figures_of_test(trainer, model, datamodule)
    summary = {
        **{k: v for k, v in figures.items() if k not in ("data/train_entries", "data/val_entries")},
        "parameters": model.n_parameters,
        "epochs": checkpoint["epoch"] + 1 if isinstance(checkpoint.get("epoch"), int) else None,
        "wall_seconds": round(time.perf_counter() - start, 1),
        "output_dir": str(output_dir),
        "checkpoint": str(path),
        "predictions": str(writer.written) if writer.written else None,
    }
    if trainer.is_global_zero:
        (output_dir / "summary.json").write_text(json.dumps(summary, indent=2))
        print(format_summary(summary, title="hepnn evaluation summary"))
    return summary


@hydra.main(version_base="1.3", config_path=config_dir(), config_name="evaluate")
def main(cfg: DictConfig) -> float | None:
    with report_input_errors():
        summary = evaluate(cfg)
    return summary.get("test/auc")


if __name__ == "__main__":
    main()
