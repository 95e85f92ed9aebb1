"""The Lightning runtime pieces the entry points assemble around a task and a data module.

- :mod:`hepnn.runtime.predictions`: the callback writing test predictions to ROOT or Parquet;
- :mod:`hepnn.runtime.throughput`: entries per second of training and testing;
- :mod:`hepnn.runtime.preemption`: checkpoint on a batch system's warning signal, requeue, resume;
- :mod:`hepnn.runtime.signals`: the exit status and log of a run stopped by SIGTERM;
- :mod:`hepnn.runtime.instantiate`: config sections turned into objects, unknown keys named.
"""
