"""The loader behind the batches, and what makes it fast; its public face is :class:`BatchLoader`.

- :mod:`~hepnn.data.loading.loader`: :class:`BatchLoader`, a DataLoader of whole batches, and its
  workers' start (fork server, blocked batch-system signals, the :class:`WorkerPlan` they receive);
- :mod:`~hepnn.data.loading.handoff`: batches built by the workers in shared-memory slots and lent
  to the training process as tensors;
- :mod:`~hepnn.data.loading.forkserver_main`, :mod:`~hepnn.data.loading.forkserver_freeze`: what
  the fork server imports and runs once so that workers start without redoing it;
- :mod:`~hepnn.data.loading.readahead`: the thread that reads the next chunks while batches are built;
- :mod:`~hepnn.data.loading.kernels`: the compiled (numba) loops of padding and gathering;
- :mod:`~hepnn.data.loading.memory`: processes that keep the memory they free (glibc ``mallopt``).
"""

from __future__ import annotations

__all__ = ["BatchLoader", "WorkerPlan"]


def __getattr__(name: str):
    # imported when first used: the dataset and the preprocessing import this package's kernels
    if name in __all__:
        from hepnn.data.loading import loader

        return getattr(loader, name)
    raise AttributeError(f"module 'hepnn.data.loading' has no attribute {name!r}")
