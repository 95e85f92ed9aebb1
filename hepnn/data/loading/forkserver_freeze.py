"""Imported last by the fork server of the DataLoader workers, never elsewhere: freezes its imports.

The fork server (:func:`hepnn.data.loading.loader.worker_context`) imports the loader, Lightning and
the main module (or runs the main script, :mod:`hepnn.data.loading.forkserver_main`) once; every
worker is a fork of it and shares those memory pages until it writes to them. A full garbage
collection writes to every object it visits, so the first one in a worker would copy every page
that holds an object of those imports, and the more objects a worker inherits, the later (and the
larger) that first collection comes. :func:`gc.freeze` moves every object that exists now to a
permanent generation that collections skip; imported modules live as long as the process anyway.
"""

import gc

gc.freeze()
