"""The DataLoader for streaming datasets that yield whole batches as numpy arrays, and the start of
its worker processes."""

from __future__ import annotations

import contextlib
import functools
import multiprocessing
import multiprocessing.forkserver
import multiprocessing.spawn
import os
import signal
import sys
import threading
from collections.abc import Iterator

from torch.utils.data import DataLoader, IterableDataset
from torch.utils.data.dataloader import _MultiProcessingDataLoaderIter

from hepnn.data.batching import nest_observers, to_torch
from hepnn.data.dataset import ChunkedRootDataset, WorkerPlan
from hepnn.data.loading.handoff import LEND, BatchHandoff, SharedBatch


@functools.cache
def worker_context() -> multiprocessing.context.BaseContext:
    """The start method of DataLoader workers: ``forkserver``, with the loader's modules preloaded.

    Forking the training process itself is unsafe once it runs threads (DDP communication,
    logging, queue feeders of earlier loaders, the XRootD client): a lock held by another thread
    at the fork stays locked in the child, which then hangs. The fork server is a
    single-threaded process that imported the loader once; workers fork from it quickly.
    """
    context = multiprocessing.get_context("forkserver")
    # Lightning, when the process already uses it: a worker unpickles Lightning's worker_init_fn
    # (seed_everything(workers=True)), which would import all of Lightning in every new worker
    in_use = [name for name in ("lightning.pytorch",) if name.partition(".")[0] in sys.modules]
    # the script this process runs, if any: run once there (see start_fork_server)
    script = ["hepnn.data.loading.forkserver_main"] if main_script() else []
    # last: freeze the objects of these imports, so that the workers' collections skip them
    preload = ["hepnn.data.dataset", *in_use, *main_module(), *script, "hepnn.data.loading.forkserver_freeze"]
    context.set_forkserver_preload(preload)
    return context


# How start_fork_server tells the fork server the script to run (hepnn.data.loading.forkserver_main)
MAIN_SCRIPT_VARIABLE = "HEPNN_FORK_SERVER_MAIN_SCRIPT"


def start_fork_server() -> None:
    """Start the workers' fork server (:func:`worker_context`) unless it runs already.

    It runs the script this process runs (:func:`main_script`) once, before it forks any
    worker, with multiprocessing's own function for that. The script's path reaches it through
    the environment, set only while it starts (its command line carries module names only).
    Call with the batch system's signals blocked (:func:`batch_system_signals_blocked`).
    """
    script = main_script()
    if script is None:
        multiprocessing.forkserver.ensure_running()
        return
    previous = os.environ.get(MAIN_SCRIPT_VARIABLE)
    os.environ[MAIN_SCRIPT_VARIABLE] = script
    try:
        multiprocessing.forkserver.ensure_running()
    finally:
        if previous is None:
            del os.environ[MAIN_SCRIPT_VARIABLE]
        else:
            os.environ[MAIN_SCRIPT_VARIABLE] = previous


def main_module() -> list[str]:
    """The module this process runs as ``python -m <name>`` (``hepnn.train``), if any.

    Every new worker runs that module's top level again before it starts (multiprocessing gives
    its children the parent's ``__main__`` that way), importing what it imports (for
    ``hepnn.train``, Hydra). Imported once in the fork server, the module's imports are done in
    every worker, and running its top level again is cheap. A script (``python
    path/to/script.py``) is run again by its path, which the fork server cannot preload by name;
    a package's ``__main__`` (``python -m <package>``) is not run again.
    """
    spec = getattr(sys.modules.get("__main__"), "__spec__", None)
    name = getattr(spec, "name", None)
    if not name or name == "__main__" or name.endswith(".__main__"):
        return []
    return [name]


def main_script() -> str | None:
    """The script this process runs (``python path/to/script.py``), as new processes get it.

    multiprocessing has every new worker run it again, as ``__mp_main__``, before the worker
    starts, and so import what it imports, in every worker. The fork server runs it once
    instead (:mod:`hepnn.data.loading.forkserver_main`), and the workers, forked from there, find
    it has run. Python's own ``'__main__'`` preload of the fork server would do that, but in
    Python 3.11 it never receives the path it looks for.
    ``None`` for ``python -m`` (:func:`main_module`), ``python -c`` and interactive sessions.
    """
    return multiprocessing.spawn.get_preparation_data("hepnn").get("init_main_from_path")


# The warning a batch system sends every process of a job before its time limit (--signal: SIGUSR2
# from hydra's submitit launcher, SIGUSR1 is Lightning's choice). The training process handles it.
BATCH_SYSTEM_SIGNALS = (signal.SIGUSR1, signal.SIGUSR2)


@contextlib.contextmanager
def batch_system_signals_blocked() -> Iterator[None]:
    """Block the batch system's warning signals in this thread while the loader starts its helpers.

    Slurm signals every process of a job step. The training process checkpoints on the warning
    (:mod:`hepnn.runtime.preemption`); the DataLoader workers, the fork server they come from and
    multiprocessing's resource tracker would be killed by it (the default action), and the run
    would fail with "DataLoader worker exited unexpectedly" instead. A blocked signal stays
    blocked in processes forked or executed from here, so they never see it. In this process, a
    signal that arrives meanwhile is delivered when the block ends (or at once to another thread).
    SIGTERM is left alone: workers must stay killable; the training process reports a failure
    that follows its own SIGTERM as the stop it is (:func:`hepnn.runtime.signals.exit_status_on_sigterm`).
    """
    if threading.current_thread() is not threading.main_thread() or not hasattr(signal, "pthread_sigmask"):
        yield
        return
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, BATCH_SYSTEM_SIGNALS)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


class PlannedDataset(IterableDataset):
    """A dataset as the workers of one start of a :class:`BatchLoader` receive it: the dataset and
    the :class:`~hepnn.data.dataset.WorkerPlan` of that start, neither changed by the loader."""

    def __init__(self, dataset: ChunkedRootDataset, plan: WorkerPlan):
        super().__init__()
        self.dataset = dataset
        self.plan = plan

    def __iter__(self):
        return self.dataset.batches(self.plan)

    def __len__(self) -> int:
        return len(self.dataset)


class _StartingLoader:
    """The loader as the DataLoader's worker iterator sees it while it starts the workers: every
    attribute the loader's, but the dataset the :class:`PlannedDataset` the workers receive."""

    def __init__(self, loader: DataLoader, dataset: PlannedDataset):
        self._loader = loader
        self.dataset = dataset

    def __getattr__(self, name: str):
        return getattr(self._loader, name)


def keep_as_is(batch):
    """Collate function of batch-yielding datasets: leave the worker's batch untouched."""
    return batch


class BatchLoader(DataLoader):
    """A DataLoader (``batch_size=None``) for :class:`~hepnn.data.dataset.ChunkedRootDataset`.

    With workers, each builds its batches directly in shared-memory slots and sends only where
    they lie (:mod:`hepnn.data.loading.handoff`); here, in the main process, each batch becomes tensors
    that are views of its slot (copies, while the consumer holds several batches). The workers
    persist from epoch to epoch (``persistent_workers``, on by default): each epoch's number and
    the batches to skip reach them through shared memory, so a new epoch starts without starting
    processes. Without workers, batches are built here, taken from the dataset directly.
    """

    def __init__(
        self,
        dataset: IterableDataset,
        num_workers: int = 0,
        pin_memory: bool = False,
        prefetch: int = 4,
        **kwargs,
    ):
        # **kwargs: Lightning re-creates loaders with every DataLoader argument (e.g. for predict)
        options = {
            "multiprocessing_context": worker_context() if num_workers > 0 else None,
            "batch_size": None,
            "collate_fn": keep_as_is,
            "persistent_workers": num_workers > 0,
            "prefetch_factor": prefetch if num_workers > 0 else None,
        }
        options.update(kwargs)
        super().__init__(dataset, num_workers=num_workers, pin_memory=pin_memory, **options)
        self._handoff: BatchHandoff | None = None
        self._plan: WorkerPlan | None = None  # what the workers of the latest start received

    def _get_iterator(self):
        """The DataLoader's iterator; workers of a :class:`ChunkedRootDataset` receive it with this
        start's :class:`WorkerPlan` (a :class:`PlannedDataset`), the dataset itself unchanged."""
        if self.num_workers > 0 and isinstance(self.dataset, ChunkedRootDataset) and self._plan is not None:
            self.check_worker_number_rationality()
            return _MultiProcessingDataLoaderIter(
                _StartingLoader(self, PlannedDataset(self.dataset, self._plan))
            )
        return super()._get_iterator()

    def __iter__(self) -> Iterator[dict]:
        dataset = self.dataset
        if self.num_workers == 0 and isinstance(dataset, ChunkedRootDataset):
            yield from self._in_process(dataset)
            return
        shared = self.num_workers > 0 and isinstance(dataset, ChunkedRootDataset)
        # whether super().__iter__() starts workers (persistent ones start once)
        starting = not (self.persistent_workers and self._iterator is not None)
        with batch_system_signals_blocked():  # the worker processes and their helpers start here
            if starting and self.num_workers > 0 and self.multiprocessing_context is worker_context():
                start_fork_server()
            if shared and starting:
                # slots per worker: the batches a worker may have in flight, those lent, and one more
                slots = (self.prefetch_factor or 2) + LEND + 2
                self._handoff = BatchHandoff(self.num_workers, slots, dataset.batch_size)
                # the workers are not forked from this process: they cannot ask torch.distributed
                self._plan = WorkerPlan(position=dataset.position(), handoff=self._handoff)
            handoff = self._handoff if shared else None
            if handoff is not None:
                handoff.begin_epoch(dataset.epoch, dataset.resume_after)
            iterator = super().__iter__()
        if handoff is not None:
            handoff.reclaim()  # the workers have acknowledged the new epoch
        try:
            for batch in iterator:
                if isinstance(batch, SharedBatch):
                    batch = nest_observers(handoff.receive(batch))
                yield to_torch(batch, self.pin_memory)
        except GeneratorExit:  # the consumer stopped early (limit_*_batches)
            raise
        except BaseException:  # workers that failed are not reused: the next epoch starts new ones
            self._discard_workers(iterator)
            raise
        finally:
            if handoff is not None:
                handoff.stop()
            if not self.persistent_workers:
                # a loop that stops early must not leave worker processes behind
                self._discard_workers(iterator)

    def _discard_workers(self, iterator) -> None:
        shutdown = getattr(iterator, "_shutdown_workers", None)
        if shutdown is not None:
            shutdown()
        if self._iterator is iterator:
            self._iterator = None

    def _in_process(self, dataset: ChunkedRootDataset) -> Iterator[dict]:
        """Batches built in this process, straight from the dataset: the DataLoader's
        single-process iterator would only add a profiler record and a fetch call per batch."""
        batches = iter(dataset)
        try:
            for batch in batches:
                yield to_torch(batch, self.pin_memory)
        finally:
            batches.close()  # stops the read-ahead thread of a loop that ends early
