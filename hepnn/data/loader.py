"""The DataLoader for streaming datasets that yield whole batches as numpy arrays."""

from __future__ import annotations

import functools
import multiprocessing
from collections.abc import Iterator

from torch.utils.data import DataLoader, IterableDataset

from hepnn.data.batching import BatchBuilder, to_torch
from hepnn.data.dataset import ChunkedRootDataset
from hepnn.data.preprocess import ChunkData


@functools.cache
def worker_context() -> multiprocessing.context.BaseContext:
    """The start method of DataLoader workers: ``forkserver``, with the loader's modules preloaded.

    Forking the training process itself is unsafe once it runs threads (DDP communication,
    logging, queue feeders of earlier loaders, the XRootD client): a lock held by another thread
    at the fork stays locked in the child, which then hangs. The fork server is a
    single-threaded process that imported the loader once; workers fork from it quickly.
    """
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(["hepnn.data.dataset"])
    return context


def keep_as_is(batch):
    """Collate function of batch-yielding datasets: leave the worker's batch untouched."""
    return batch


class BatchLoader(DataLoader):
    """A DataLoader (``batch_size=None``) for :class:`~hepnn.data.dataset.ChunkedRootDataset`.

    Workers send each batch in compact form (jagged groups as flat element arrays, pickled
    through the worker pipe in one piece); here, in the main process, it is padded and turned
    into tensors. That moves about a third of the bytes of padded batches and avoids sharing the
    memory of every tensor one by one, which is what a plain DataLoader does.
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
            "persistent_workers": False,
            "prefetch_factor": prefetch if num_workers > 0 else None,
        }
        options.update(kwargs)
        super().__init__(dataset, num_workers=num_workers, pin_memory=pin_memory, **options)

    def __iter__(self) -> Iterator[dict]:
        dataset = self.dataset
        ours = self.num_workers > 0 and isinstance(dataset, ChunkedRootDataset)
        builder = BatchBuilder(dataset.spec) if ours else None
        if ours:
            # What workers must know from this process, read when they receive the dataset below:
            # they are not forked from it, so they cannot ask torch.distributed for the rank.
            position = dataset.process_position
            dataset.process_position = dataset.position()
            dataset.compact_batches = True
        try:
            iterator = super().__iter__()
        finally:
            if ours:
                dataset.process_position = position
                dataset.compact_batches = False
        try:
            for batch in iterator:
                if isinstance(batch, ChunkData):
                    batch = builder.pad(batch)
                yield to_torch(batch, self.pin_memory)
        finally:
            # a loop that stops early (limit_*_batches) must not leave worker processes behind
            shutdown = getattr(iterator, "_shutdown_workers", None)
            if shutdown is not None:
                shutdown()
