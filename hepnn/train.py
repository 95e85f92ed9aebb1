"""Train and test a model: ``python -m hepnn.train [experiment=<preset>] [key=value ...]``.

The composed configuration names the data module (``data``), the task with its net (``model``),
the trainer, callbacks and loggers; this fits the task, tests the best checkpoint, writes
``summary.json`` and prints the run summary (:mod:`hepnn.summary`). With ``resume`` (the default),
a run whose output directory already holds a checkpoint continues from it (a requeued or
re-submitted batch job), and a finished run is not run again.
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


def train(cfg: DictConfig) -> dict:
    """Run one experiment; returns the summary (test metrics and where the outputs went)."""
    from hepnn.checkpoint import StoreConfigInCheckpoint, check_resumable, checkpoint_config
    from hepnn.runtime.instantiate import instantiate_group
    from hepnn.runtime.preemption import CheckpointOnSignal, resume_checkpoint
    from hepnn.summary import quiet_known_noise

    start = time.perf_counter()
    quiet_known_noise()
    output_dir = Path(cfg.paths.output_dir)
    ckpt_path = check_resumable(cfg.get("ckpt_path"))
    if ckpt_path is None and cfg.get("resume", True):
        finished = output_dir / "summary.json"
        if finished.is_file():
            log.info(
                "%s finished before (%s): not run again (resume=false runs it afresh)", output_dir, finished
            )
            return json.loads(finished.read_text())
        found = resume_checkpoint(output_dir)
        if found is not None:
            log.info("resuming from %s (the newest checkpoint of %s)", found, output_dir)
            ckpt_path = str(found)
    if cfg.get("seed") is not None:
        L.seed_everything(cfg.seed, workers=True)
    # callbacks first: the pre-emption signal is handled from here on (data may be generated next)
    callbacks = [
        *instantiate_group(cfg.get("callbacks"), "callbacks"),
        StoreConfigInCheckpoint(checkpoint_config(cfg)),
    ]
    try:
        return _fit_and_test(cfg, callbacks, output_dir, ckpt_path, start)
    finally:
        for callback in callbacks:
            if isinstance(callback, CheckpointOnSignal):
                callback.close()


def _fit_and_test(
    cfg: DictConfig, callbacks: list, output_dir: Path, ckpt_path: str | None, start: float
) -> dict:
    from hepnn.runtime.instantiate import instantiate, instantiate_group
    from hepnn.runtime.predictions import RootPredictionWriter
    from hepnn.runtime.signals import exit_status_on_sigterm, last_checkpoint
    from hepnn.summary import figures_of_test, format_summary

    datamodule = instantiate(cfg.data, "data")
    model = instantiate(cfg.model, "model")
    loggers = instantiate_group(cfg.get("logger"), "logger")
    trainer: L.Trainer = instantiate(cfg.trainer, "trainer", callbacks=callbacks, logger=loggers or False)
    if trainer.is_global_zero:
        output_dir.mkdir(parents=True, exist_ok=True)
        (output_dir / "config.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))
    for logger in trainer.loggers:
        logger.log_hyperparams(OmegaConf.to_container(cfg, resolve=True))

    with exit_status_on_sigterm(trainer):
        if cfg.get("train", True):
            trainer.fit(model, datamodule=datamodule, ckpt_path=ckpt_path)
        best = trainer.checkpoint_callback.best_model_path if trainer.checkpoint_callback else ""
        # before testing: restoring the best checkpoint for the test restores the callbacks' states
        # of that epoch too, paths of later checkpoints included
        last = last_checkpoint(trainer)
        if cfg.get("test", True):
            # without training, the test is of the checkpoint named by ckpt_path
            test_ckpt = (best or None) if cfg.get("train", True) else ckpt_path
            if test_ckpt is None and cfg.get("train", True):
                log.warning("no best checkpoint was saved (e.g. fast_dev_run); testing the current weights")
            elif test_ckpt is None:
                log.warning("train=false without ckpt_path: testing the initial weights")
            trainer.test(model, datamodule=datamodule, ckpt_path=test_ckpt)

    writer = next((c for c in trainer.callbacks if isinstance(c, RootPredictionWriter)), None)
    summary = {
        **figures_of_test(trainer, model, datamodule),
        "parameters": model.n_parameters,
        "epochs": trainer.current_epoch,
        "wall_seconds": round(time.perf_counter() - start, 1),
        "output_dir": str(output_dir),
        "best_checkpoint": best or None,
        "last_checkpoint": last,
        "predictions": str(writer.written) if writer and writer.written else None,
    }
    if trainer.is_global_zero:
        (output_dir / "summary.json").write_text(json.dumps(summary, indent=2))
        print(format_summary(summary, model.summary_rows(summary)))
    return summary


@hydra.main(version_base="1.3", config_path=config_dir(), config_name="train")
def main(cfg: DictConfig) -> float | None:
    from hepnn.errors import report_input_errors

    with report_input_errors():
        summary = train(cfg)
    return summary.get("test/auc")


if __name__ == "__main__":
    main()
