"""Evaluate a trained model: ``python -m hepnn.evaluate ckpt_path=<checkpoint> [data.files=...] [overrides]``.

The model and the data spec (standardisation included) are rebuilt from what the checkpoint
stores (:mod:`hepnn.checkpoint`), never from the current configuration defaults. By default every
entry of every file is tested, and the predictions file holds one entry per input entry (a friend
tree of the input, see :class:`hepnn.runtime.predictions.RootPredictionWriter`). The task's test
figures, the predictions and ``summary.json`` go to the run's directory
(``logs/evaluate/runs/<time>/``).
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import hydra
import lightning as L
from omegaconf import DictConfig, OmegaConf

from hepnn.utils.config import config_dir, register_resolvers

log = logging.getLogger(__name__)
register_resolvers()


def evaluate(cfg: DictConfig) -> dict:
    """Test the checkpoint ``cfg.ckpt_path`` on ``cfg.data``'s files; returns the summary (metrics,
    where the outputs went)."""
    from hepnn.checkpoint import (
        data_overrides,
        load_checkpoint,
        rebuild_datamodule,
        rebuild_model,
        stored_config,
    )
    from hepnn.runtime.instantiate import instantiate
    from hepnn.runtime.predictions import RootPredictionWriter
    from hepnn.runtime.throughput import TrainingThroughput
    from hepnn.summary import figures_of_test, format_summary, quiet_known_noise

    start = time.perf_counter()
    quiet_known_noise()
    path = Path(cfg.ckpt_path).expanduser().resolve()
    checkpoint = load_checkpoint(path)
    config = stored_config(checkpoint, path)
    overrides = data_overrides(cfg.get("data"))
    model = rebuild_model(config, checkpoint, path)
    datamodule = rebuild_datamodule(config, checkpoint, path, overrides)
    writer = RootPredictionWriter(**OmegaConf.to_container(cfg.predictions, resolve=True))
    trainer: L.Trainer = instantiate(
        cfg.trainer,
        "trainer",
        callbacks=[writer, TrainingThroughput()],
        logger=False,
        enable_checkpointing=False,
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
        print(format_summary(summary, model.summary_rows(summary), title="hepnn evaluation summary"))
    return summary


@hydra.main(version_base="1.3", config_path=config_dir(), config_name="evaluate")
def main(cfg: DictConfig) -> float | None:
    from hepnn.errors import report_input_errors

    with report_input_errors():
        summary = evaluate(cfg)
    return summary.get("test/auc")


if __name__ == "__main__":
    main()
