"""Batch jobs that outlive their time limit: checkpoint on a signal, requeue, resume where they stopped.

A Slurm job asks for a warning signal some time before its limit (``sbatch --signal=USR2@120``;
hydra's submitit launcher always asks for one, ``signal_delay_s`` seconds ahead). On that signal
:class:`CheckpointOnSignal` lets every rank finish its current training batch, saves a checkpoint
there (``checkpoints/preempted.ckpt``, in the middle of the epoch) and stops the run with
:class:`Preempted`. :func:`requeue` then puts the job back in the queue: through the handler that
was installed for the signal before hepnn's (submitit's, which requeues and counts time-outs
against ``max_num_timeout``), or else with ``scontrol requeue`` on rank zero of a Slurm job.

The requeued job runs the same command in the same output directory; :func:`resume_checkpoint`
finds the newest checkpoint there and training continues from it: the interrupted epoch
continues with the batches it had not trained on yet (:mod:`hepnn.data.dataset`), no epoch is
lost or repeated. A finished run (its ``summary.json`` written) is not run again.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
from pathlib import Path
from types import FrameType

import lightning as L

from hepnn.errors import ConfigError

log = logging.getLogger(__name__)

PREEMPTED_CHECKPOINT = "preempted.ckpt"
DEFAULT_SIGNAL = os.environ.get("SUBMITIT_PREEMPT_SIGNAL", "USR2")  # what submitit asks Slurm to send


class Preempted(SystemExit):
    """The run stopped on the pre-emption signal after saving ``checkpoint``.

    ``previous_handler`` is the handler of the signal before hepnn's (submitit's, in its jobs).
    The exit status is the shell's for a signal, ``128 + signum``.
    """

    def __init__(self, checkpoint: str, signum: int, previous_handler):
        super().__init__(128 + signum)
        self.checkpoint = checkpoint
        self.signum = signum
        self.previous_handler = previous_handler


def parse_signal(name: str | int) -> signal.Signals:
    """``USR2``, ``SIGUSR2`` or ``12`` as a signal; :class:`ConfigError` for anything else."""
    try:
        if isinstance(name, int) or str(name).isdigit():
            return signal.Signals(int(name))
        text = str(name).upper()
        return signal.Signals[text if text.startswith("SIG") else f"SIG{text}"]
    except (KeyError, ValueError):
        raise ConfigError(
            f"callbacks.preemption.signal: {name!r} is not a signal (expected e.g. USR1, USR2, SIGTERM)"
        ) from None


class CheckpointOnSignal(L.Callback):
    """Save a checkpoint at the end of the current training batch when ``signal`` arrives, then stop.

    All ranks stop after the same batch: the decision is reduced over ranks after every batch
    (any rank that received the signal stops them all), so the checkpoint is consistent and the
    collective save cannot deadlock. The signal handler only records the signal; the work is done
    between batches. It is installed when the callback is made, so a signal that arrives while
    the run is still setting up does not kill it (the default action): training then stops after
    its first batch. One that arrives after training (during the test) is only logged: the run
    finishes. :meth:`close` puts the previous handler back.
    """

    def __init__(self, signal: str | int = DEFAULT_SIGNAL, dirpath: str | None = None):
        self.signum = parse_signal(signal)
        self.dirpath = dirpath
        self.received = False
        self.previous_handler = None
        self._installed = False
        self._install()

    def _install(self) -> None:
        try:
            self.previous_handler = signal.signal(self.signum, self._record)
            self._installed = True
        except ValueError:  # not in the main thread: signals cannot be handled here
            log.warning("not in the main thread: %s will not checkpoint the run", self.signum.name)

    def close(self) -> None:
        """Give the signal back to the handler it had before (submitit's, or the default)."""
        if self._installed:
            signal.signal(self.signum, self.previous_handler or signal.SIG_DFL)
            self._installed = False
        if self.received:
            log.warning("%s received after training: the run finished all the same", self.signum.name)

    def _record(self, signum: int, frame: FrameType | None) -> None:
        self.received = True

    def on_train_batch_end(self, trainer: L.Trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        if not trainer.strategy.reduce_boolean_decision(self.received, all=False):
            return
        path = Path(self.dirpath or checkpoint_directory(trainer)) / PREEMPTED_CHECKPOINT
        trainer.save_checkpoint(path)
        if trainer.is_global_zero:
            log.warning(
                "%s received: checkpoint of epoch %d after batch %d saved to %s",
                self.signum.name,
                trainer.current_epoch,
                batch_idx + 1,
                path,
            )
        self.received = False  # handled
        raise Preempted(str(path), int(self.signum), self.previous_handler)


def checkpoint_directory(trainer: L.Trainer) -> str:
    """Where the run's checkpoints go: the ModelCheckpoint's directory, else ``<root>/checkpoints``."""
    callback = trainer.checkpoint_callback
    if callback is not None and getattr(callback, "dirpath", None):
        return callback.dirpath
    return os.path.join(trainer.default_root_dir, "checkpoints")


def slurm_job_id() -> str | None:
    """The id ``scontrol requeue`` takes for this Slurm job (``<array job>_<task>`` in arrays)."""
    array_job = os.environ.get("SLURM_ARRAY_JOB_ID")
    if array_job:
        return f"{array_job}_{os.environ['SLURM_ARRAY_TASK_ID']}"
    return os.environ.get("SLURM_JOB_ID")


def requeue(stop: Preempted, is_global_zero: bool) -> str:
    """Put the job back in the queue after :class:`Preempted`; says what was done.

    With an earlier handler of the signal (submitit's), it is called: on rank zero it requeues the
    job and exits. Otherwise rank zero of a Slurm job runs ``scontrol requeue``. Outside Slurm
    nothing is requeued: run the same command again to resume.
    """
    handler = stop.previous_handler
    if callable(handler):
        handler(stop.signum, None)  # submitit: requeues and exits on rank zero, returns elsewhere
        return "handed over to the signal's previous handler"
    job = slurm_job_id()
    if job is None:
        return "not a Slurm job: not requeued; run the same command again to resume"
    if not is_global_zero:
        return f"Slurm job {job}: rank zero requeues it"
    result = subprocess.run(
        ["scontrol", "requeue", job], capture_output=True, text=True, timeout=60, check=False
    )
    if result.returncode:
        return f"scontrol requeue {job} failed ({result.returncode}): {result.stderr.strip()}"
    return f"Slurm job {job} requeued"


def resume_checkpoint(output_dir: Path) -> Path | None:
    """The checkpoint to resume a run in ``output_dir`` from: the newer of ``preempted.ckpt``
    (mid-epoch, on a signal) and ``last.ckpt`` (end of the last epoch); None if neither exists."""
    directory = output_dir / "checkpoints"
    candidates = [p for p in (directory / PREEMPTED_CHECKPOINT, directory / "last.ckpt") if p.is_file()]
    return max(candidates, key=lambda p: p.stat().st_mtime_ns, default=None)
