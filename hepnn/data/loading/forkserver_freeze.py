"""Imported last by the fork server of the DataLoader workers, never elsewhere: freezes its imports.

The fork server (:func:`hepnn.data.loading.loader.worker_context`) imports the loader, Lightning and the
main module (or runs the main script, :mod:`hepnn.data.loading.forkserver_main`) once; every worker is a
fork of it and shares those memory pages until it writes to them. A full garbage collection writes
to every object it visits, so the first one in a worker copies every page that holds an object of
those imports. Measured in a worker of the loader benchmark run with Hydra preloaded: one full
collection in its first epoch took 0.26-0.31 s and 24k page faults, and a new loader's first epoch
took 1.13-1.42 s instead of 0.72-0.89 s. (With Lightning preloaded too, the collector's heuristic
puts the first full collection off until the new long-lived objects number a quarter of the 620k
inherited ones: later, and larger.) :func:`gc.freeze` moves every object that exists now to a
permanent generation that collections skip; imported modules live as long as the process anyway.
"""

import gc

gc.freeze()
