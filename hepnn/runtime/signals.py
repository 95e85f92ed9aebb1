"""How a run stopped by a batch system's signal ends: its exit status, its requeue, and the
checkpoint its log names to resume from."""

from __future__ import annotations

import contextlib
import logging
import signal
from collections.abc import Iterator

import lightning as L
from lightning.pytorch.utilities.exceptions import SIGTERMException

from hepnn.runtime.preemption import Preempted, requeue

log = logging.getLogger(__name__)

SIGTERM_EXIT_STATUS = 128 + signal.SIGTERM  # 143: what shells and batch systems report for SIGTERM


@contextlib.contextmanager
def exit_status_on_sigterm(trainer: L.Trainer) -> Iterator[None]:
    """Exit with status 143 when the run stops on SIGTERM (a batch job's time limit, requeue or
    cancellation); requeue the job when :class:`~hepnn.runtime.preemption.CheckpointOnSignal` stopped it.

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
    last = last_checkpoint(trainer)
    log.error("stopped by SIGTERM; resume with ckpt_path=%s", last or "<no checkpoint saved yet>")


def last_checkpoint(trainer: L.Trainer) -> str | None:
    """The checkpoint of the latest finished epoch: a ``save_last`` copy, or the file of an
    unmonitored ModelCheckpoint (``callbacks.last_checkpoint``), which always holds the latest."""
    for callback in trainer.checkpoint_callbacks:
        if getattr(callback, "last_model_path", ""):
            return callback.last_model_path
    for callback in trainer.checkpoint_callbacks:
        if getattr(callback, "monitor", "") is None and getattr(callback, "best_model_path", ""):
            return callback.best_model_path
    return None
