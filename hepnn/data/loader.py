"""The DataLoader for streaming datasets that yield whole batches as numpy arrays."""

from __future__ import annotations

from collections.abc import Iterator

from torch.utils.data import DataLoader, IterableDataset

from hepnn.data.batching import to_torch


def keep_as_is(batch):
    """Collate function of batch-yielding datasets: leave the worker's batch untouched."""
    return batch


class BatchLoader(DataLoader):
    """A DataLoader (``batch_size=None``) whose workers send numpy batches, turned into tensors here.

    Sending one pickled batch through the worker pipe is several times cheaper than sharing the
    memory of every tensor of the batch one by one, which is what a plain DataLoader does.
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
            "batch_size": None,
            "collate_fn": keep_as_is,
            "persistent_workers": False,
            "prefetch_factor": prefetch if num_workers > 0 else None,
        }
        options.update(kwargs)
        super().__init__(dataset, num_workers=num_workers, pin_memory=pin_memory, **options)

    def __iter__(self) -> Iterator[dict]:
        iterator = super().__iter__()
        try:
            for batch in iterator:
                yield to_torch(batch, self.pin_memory)
        finally:
            # a loop that stops early (limit_*_batches) must not leave worker processes behind
            shutdown = getattr(iterator, "_shutdown_workers", None)
            if shutdown is not None:
                shutdown()
