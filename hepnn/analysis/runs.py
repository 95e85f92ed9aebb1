"""A run directory read back: its predictions (by the task that wrote them), summary and metrics.

A run directory (as ``python -m hepnn.train`` or ``hepnn.evaluate`` writes it) holds
``summary.json``, ``config.yaml``, ``csv/metrics.csv`` (or ``csv/version_N/metrics.csv``) and
``predictions/test.root``. A predictions file names the task class that wrote it (the ``task``
string beside the tree); that class reads it back (:meth:`hepnn.tasks.base.TaskBase.read_predictions`)
and says which plots it has (:meth:`hepnn.tasks.base.TaskBase.plots`).
"""

from __future__ import annotations

import importlib
import json
import re
from pathlib import Path

PREDICTIONS_TREE = "predictions"
# the tasks of predictions files written before they named their task, by the metadata they carry
_TASK_BY_METADATA = {
    "classes": "hepnn.tasks.classification.ClassificationTask",
    "targets": "hepnn.tasks.regression.RegressionTask",
}


def task_class(path: str | Path):
    """The class of a dotted ``module.Class`` path; a ValueError naming it when it cannot be imported."""
    module, _, name = str(path).rpartition(".")
    try:
        return getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError, ValueError) as exc:
        raise ValueError(f"task {path!r} of the predictions file cannot be imported: {exc}") from None


def read_predictions(path: str | Path) -> dict:
    """The test predictions of a predictions ROOT file, as the task that wrote them reads them back.

    Raises ValueError naming the file when it lacks the ``predictions`` tree, the task string (and
    the classes or targets of older files), or branches the task needs.
    """
    import uproot

    path = Path(path)
    with uproot.open(path) as f:
        if PREDICTIONS_TREE not in f:
            raise ValueError(f"{path} has no TTree '{PREDICTIONS_TREE}' (keys: {f.keys(cycle=False)})")
        tree = f[PREDICTIONS_TREE]
        metadata = {
            key: str(f[key])
            for key in f.keys(cycle=False)
            if key != PREDICTIONS_TREE and f.classname_of(key) == "TObjString"
        }
        target = metadata.get("task") or next(
            (t for k, t in _TASK_BY_METADATA.items() if k in metadata), None
        )
        if target is None:
            raise ValueError(f"{path} names no task (no 'task' string beside the tree), so it cannot be read")
        branches = set(tree.keys())

        def arrays(names):
            names = list(names)
            missing = [b for b in names if b not in branches]
            if missing:
                raise ValueError(f"{path}: tree '{PREDICTIONS_TREE}' lacks the branches {missing}")
            return tree.arrays(names, library="np")

        return task_class(target).read_predictions(arrays, metadata, path)


def find_metrics_csv(run_dir: Path) -> Path | None:
    """``csv/metrics.csv``, else the highest ``csv/version_N/metrics.csv``, else any ``metrics.csv`` below."""
    direct = run_dir / "csv" / "metrics.csv"
    if direct.is_file():
        return direct
    versions = sorted(
        (
            p
            for p in (run_dir / "csv").glob("version_*/metrics.csv")
            if re.fullmatch(r"version_\d+", p.parent.name)
        ),
        key=lambda p: int(p.parent.name.removeprefix("version_")),
    )
    if versions:
        return versions[-1]
    anywhere = sorted(run_dir.rglob("metrics.csv"))
    return anywhere[0] if anywhere else None


def read_summary(run_dir: Path) -> tuple[dict, str | None]:
    """``summary.json`` of a run directory and a note on why it is missing or unusable (or None)."""
    path = run_dir / "summary.json"
    if not path.is_file():
        return {}, f"no summary.json in {run_dir}"
    try:
        return json.loads(path.read_text()), None
    except json.JSONDecodeError as err:
        return {}, f"summary.json is not valid JSON ({err}); not used"
