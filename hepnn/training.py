"""The training pipeline behind ``python -m hepnn.train``: compose, fit, test the best checkpoint, report."""

from __future__ import annotations

import contextlib
import json
import logging
import math
import signal
import time
import warnings
from collections.abc import Iterator
from pathlib import Path

import hydra
import lightning as L
from lightning.pytorch.utilities.exceptions import SIGTERMException
from omegaconf import DictConfig, OmegaConf

from hepnn.callbacks import RootPredictionWriter, StoreConfigInCheckpoint, TrainingThroughput
from hepnn.errors import ConfigError
from hepnn.preemption import CheckpointOnSignal, Preempted, requeue, resume_checkpoint
from hepnn.utils.memory import keep_freed_memory

log = logging.getLogger(__name__)

SIGTERM_EXIT_STATUS = 128 + signal.SIGTERM  # 143: what shells and batch systems report for SIGTERM


def instantiate_group(group: DictConfig | None) -> list:
    """Instantiate every ``_target_`` entry of a config group mapping (callbacks, loggers)."""
    if not group:
        return []
    objects = []
    for name, entry in group.items():
        if entry is None:
            continue
        if not isinstance(entry, DictConfig) or "_target_" not in entry:
            raise ValueError(f"config entry '{name}' must be a mapping with _target_, got {entry}")
        objects.append(hydra.utils.instantiate(entry))
    return objects


def check_ckpt_path(ckpt_path: str | None) -> str | None:
    if ckpt_path is None:
        return None
    path = Path(ckpt_path).expanduser()
    if not path.is_file():
        raise ConfigError(f"ckpt_path: checkpoint {ckpt_path} does not exist")
    return str(path.resolve())


def quiet_known_noise() -> None:
    """Route Lightning's log lines through the root logger only; drop two warnings not meant for users.

    The ``lightning`` package adds its own console handler and also propagates to the root
    logger, which Hydra has configured (console and the run's log file): every line would be
    printed twice. hepnn's datasets compute their length per rank and worker exactly, so
    Lightning's warning that an iterable dataset's ``__len__`` may be inaccurate does not apply;
    Lightning's own use of a deprecated torch pytree API is not the user's concern. Resuming from
    a mid-epoch checkpoint (pre-emption) is exact: the training dataset skips the batches already
    trained (:meth:`hepnn.data.datamodule.RootDataModule.state_dict` records them), so Lightning's warning
    about loaders without ``state_dict`` does not apply.
    """
    if logging.getLogger().hasHandlers():
        logging.getLogger("lightning").handlers.clear()
    warnings.filterwarnings("ignore", message=r".*`IterableDataset` has `__len__` defined.*")
    warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\)` is deprecated.*")
    warnings.filterwarnings(
        "ignore", message=r".*resuming from a checkpoint that ended before the epoch ended.*"
    )


def train(cfg: DictConfig) -> dict:
    """Run one experiment; returns the summary (test metrics and where the outputs went).

    With ``resume`` (the default), a run whose output directory already holds a checkpoint
    continues from it (a requeued or re-submitted batch job), and a finished run is not run again.
    """
    start = time.perf_counter()
    quiet_known_noise()
    if cfg.get("keep_freed_memory", True):
        keep_freed_memory()
    output_dir = Path(cfg.paths.output_dir)
    ckpt_path = check_ckpt_path(cfg.get("ckpt_path"))
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
    callbacks = [*instantiate_group(cfg.get("callbacks")), StoreConfigInCheckpoint(checkpoint_config(cfg))]
    try:
        return _fit_and_test(cfg, callbacks, output_dir, ckpt_path, start)
    finally:
        for callback in callbacks:
            if isinstance(callback, CheckpointOnSignal):
                callback.close()


def _fit_and_test(
    cfg: DictConfig, callbacks: list, output_dir: Path, ckpt_path: str | None, start: float
) -> dict:
    datamodule = hydra.utils.instantiate(cfg.data, _convert_="all")
    model = hydra.utils.instantiate(cfg.model, _convert_="all")
    loggers = instantiate_group(cfg.get("logger"))
    trainer: L.Trainer = hydra.utils.instantiate(cfg.trainer, callbacks=callbacks, logger=loggers or False)
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
        last = _last_checkpoint(trainer)
        if cfg.get("test", True):
            test_ckpt = best or None
            if test_ckpt is None and cfg.get("train", True):
                log.warning("no best checkpoint was saved (e.g. fast_dev_run); testing the current weights")
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
        print(format_summary(summary))
    return summary


@contextlib.contextmanager
def exit_status_on_sigterm(trainer: L.Trainer) -> Iterator[None]:
    """Exit with status 143 when the run stops on SIGTERM (a batch job's time limit, requeue or
    cancellation); requeue the job when :class:`~hepnn.preemption.CheckpointOnSignal` stopped it.

    Lightning stops its loops on SIGTERM with :class:`SIGTERMException`, a ``SystemExit`` with
    status 0, on every rank: the interrupted job would look successful. A batch system sends
    SIGTERM to every process of the job, DataLoader workers included; when one of them dies of it
    before Lightning stops, the error that follows is reported as the SIGTERM stop it is. The log
    says which checkpoint to resume from.
    """
    try:
        yield
    except SIGTERMException:
        _log_sigterm_stop(trainer)
        raise SystemExit(SIGTERM_EXIT_STATUS) from None
    except Preempted as stop:
        log.warning("stopped on %s with checkpoint %s", signal.Signals(stop.signum).name, stop.checkpoint)
        log.warning("requeue: %s", requeue(stop, trainer.is_global_zero))
        raise
    except Exception as error:
        if not trainer.received_sigterm:
            raise
        log.warning("after SIGTERM: %s", error)
        _log_sigterm_stop(trainer)
        raise SystemExit(SIGTERM_EXIT_STATUS) from None


def _log_sigterm_stop(trainer: L.Trainer) -> None:
    last = _last_checkpoint(trainer)
    log.error("stopped by SIGTERM; resume with ckpt_path=%s", last or "<no checkpoint saved yet>")


def checkpoint_config(cfg: DictConfig) -> dict:
    """The composed configuration as plain data for checkpoints: resolved, without the ``hydra`` section."""
    config = OmegaConf.to_container(cfg, resolve=True)
    config.pop("hydra", None)
    return config


def figures_of_test(trainer: L.Trainer, model: L.LightningModule, datamodule) -> dict:
    """The figures of a finished ``trainer.test`` for the run summary: the ``test/`` metrics, NaN/inf
    replacement counts, the input counts, the task's non-scalar results and the throughputs."""
    throughput = next((c for c in trainer.callbacks if isinstance(c, TrainingThroughput)), None)
    return {
        **{k: _as_float(v) for k, v in sorted(trainer.callback_metrics.items()) if k.startswith("test/")},
        **{k: _as_float(v) for k, v in trainer.callback_metrics.items() if k.endswith("/nonfinite_replaced")},
        **(datamodule.summary() if hasattr(datamodule, "summary") else {}),
        **_test_extras(model),
        **_throughput(throughput),
    }


def _test_extras(model) -> dict:
    """Figures of the test step that are not scalars logged to Lightning (e.g. the confusion matrix)."""
    extras = getattr(model, "test_extras", None)
    return dict(extras) if extras else {}


def _throughput(callback: TrainingThroughput | None) -> dict:
    """Training entries per second (first epoch, reading ROOT, and last epoch) and test entries per second."""
    if callback is None or not (callback.rates or callback.test_rate):
        return {}
    figures = {}
    if callback.rates:
        figures["train/entries_per_second_first_epoch"] = round(callback.rates[0], 1)
        figures["train/entries_per_second"] = round(callback.rates[-1], 1)
    if callback.test_rate is not None:
        figures["test/entries_per_second"] = round(callback.test_rate, 1)
    return figures


def _as_float(value) -> float:
    return float(value.item() if hasattr(value, "item") else value)


def _last_checkpoint(trainer: L.Trainer) -> str | None:
    """The checkpoint of the latest finished epoch: a ``save_last`` copy, or the file of an
    unmonitored ModelCheckpoint (``callbacks.last_checkpoint``), which always holds the latest."""
    for callback in trainer.checkpoint_callbacks:
        if getattr(callback, "last_model_path", ""):
            return callback.last_model_path
    for callback in trainer.checkpoint_callbacks:
        if getattr(callback, "monitor", "") is None and getattr(callback, "best_model_path", ""):
            return callback.best_model_path
    return None


CHECKPOINT_ROWS = (("best checkpoint", "best_checkpoint"), ("evaluated checkpoint", "checkpoint"))


def format_summary(summary: dict, title: str = "hepnn run summary") -> str:
    """The run's result as a small text table headed by ``title``.

    The checkpoint rows are shown for the keys the summary has: ``best_checkpoint`` (training),
    ``checkpoint`` (the checkpoint that was evaluated).
    """
    figures = [  # shown when the task computed them: classification, then regression
        ("test AUC", summary.get("test/auc")),
        ("test accuracy", summary.get("test/acc")),
        ("1/eps_B at eps_S = 0.3", summary.get("test/rej30")),
        ("1/eps_B at eps_S = 0.5", summary.get("test/rej50")),
        *[
            (f"test AUC {k.removeprefix('test/auc_')} vs rest", v)
            for k, v in summary.items()
            if k.startswith("test/auc_")
        ],
        ("angular resolution [deg] (68 %)", summary.get("test/angular_resolution_deg")),
        ("core resolution [m] (68 %)", summary.get("test/core_resolution_m")),
        ("energy resolution dE/E (68 %)", summary.get("test/energy_resolution")),
        ("energy bias dE/E (median)", summary.get("test/energy_bias")),
        *[
            (f"{k.removeprefix('test/').removesuffix('_resolution')} resolution / bias", _pair(summary, k))
            for k in summary
            if k.startswith("test/") and k.endswith("_resolution") and k != "test/energy_resolution"
        ],
        ("test entries/s (inference + loading)", summary.get("test/entries_per_second")),
    ]
    rows = [
        *[(name, value) for name, value in figures if value is not None],
        ("test loss", summary.get("test/loss")),
        ("input files", summary.get("data/files")),
        ("unreadable files skipped", summary.get("data/skipped_files")),
        ("NaN/inf values replaced (test)", summary.get("test/nonfinite_replaced")),
        ("trainable parameters", summary.get("parameters")),
        ("training entries/s (last epoch)", summary.get("train/entries_per_second")),
        ("epochs trained", summary.get("epochs")),
        ("wall time [s]", f"{summary['wall_seconds']:.0f}"),
        ("output directory", summary.get("output_dir")),
        *[(name, summary[key]) for name, key in CHECKPOINT_ROWS if key in summary],
        ("predictions", summary.get("predictions")),
    ]
    width = max(len(name) for name, _ in rows)
    lines = ["", title, "=" * (width + 40)]
    for name, value in rows:
        lines.append(f"{name:<{width}}  {_format_value(value)}")
    lines.append("=" * (width + 40))
    return "\n".join(lines)


def _pair(summary: dict, resolution_key: str) -> str:
    """``resolution / bias`` of one regression target (its unit), e.g. ``23.1 / -2.4``."""
    bias = summary.get(resolution_key.removesuffix("_resolution") + "_bias")
    return " / ".join(_format_value(v) for v in (summary[resolution_key], bias))


def _format_value(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        if math.isinf(value):
            return "inf (no background passes)"
        return f"{value:.4f}" if abs(value) < 10 else f"{value:.1f}"
    return str(value)
