"""Imported by the fork server of the DataLoader workers, never elsewhere: runs the main script once.

:func:`hepnn.data.loading.loader.start_fork_server` puts the path of the script the training process
runs in the environment while the fork server starts; here the fork server runs that script as
multiprocessing's own fork server would for its ``'__main__'`` preload (as ``__mp_main__``, the
block under ``if __name__ == "__main__"`` skipped). Every worker, forked from the fork server,
then finds the script has run and does not run it again (:func:`hepnn.data.loading.loader.main_script`).
"""

import os
import sys
from multiprocessing import process, spawn

from hepnn.data.loading.loader import MAIN_SCRIPT_VARIABLE


def run_main_script(path: str) -> None:
    """Run ``path`` as the workers' ``__main__``; if it fails, say so: each worker runs it again."""
    current = process.current_process()
    current._inheriting = True  # a script that starts processes unguarded fails clearly, as in a worker
    try:
        spawn.import_main_path(path)
    except Exception as error:  # the workers run it themselves and report what fails there
        print(
            f"hepnn: the DataLoader workers' fork server could not run {path} ahead of them "
            f"({type(error).__name__}: {error}); each worker runs it itself",
            file=sys.stderr,
        )
    finally:
        del current._inheriting


_path = os.environ.pop(MAIN_SCRIPT_VARIABLE, None)
if _path:
    run_main_script(_path)
