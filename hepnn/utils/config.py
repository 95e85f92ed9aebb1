"""Where hepnn's configuration lives and the OmegaConf resolvers its YAML files use."""

from __future__ import annotations

import os
from pathlib import Path

from omegaconf import OmegaConf

PACKAGE_DIR = Path(__file__).resolve().parents[1]


def project_root() -> Path:
    """Directory holding ``conf/`` and ``data/``: ``$HEPNN_ROOT``, else the source checkout, else cwd.

    With an editable install (``pip install -e .``) the checkout is found from the package
    location, so ``python -m hepnn.train`` works from any working directory.
    """
    if env := os.environ.get("HEPNN_ROOT"):
        return Path(env).expanduser().resolve()
    checkout = PACKAGE_DIR.parent
    if (checkout / "conf").is_dir() and (checkout / "pyproject.toml").is_file():
        return checkout
    return Path.cwd()


def config_dir() -> str:
    """Absolute path of the Hydra configuration directory (``<root>/conf``)."""
    path = project_root() / "conf"
    if not path.is_dir():
        raise FileNotFoundError(
            f"hepnn's configuration directory {path} does not exist; install hepnn from its source "
            "checkout with 'pip install -e .' or point HEPNN_ROOT at the checkout"
        )
    return str(path)


def _length(value) -> int:
    return len(value)


def _keys(mapping) -> list[str]:
    return [str(k) for k in mapping]


def _classes(labels) -> list[str]:
    """The class names of a ``data.labels`` mapping: its keys (one-hot expressions), or its
    ``classes`` list in the index form ``{index: <expression>, classes: [...]}``."""
    if set(map(str, labels)) == {"index", "classes"}:
        return [str(c) for c in labels["classes"]]
    return _keys(labels)


def _units(targets) -> dict[str, str]:
    """``{name: unit}`` of a ``data.targets`` mapping (entries ``{expression, unit}``; '' without one)."""
    return {
        str(name): str(entry.get("unit") or "") if hasattr(entry, "get") else ""
        for name, entry in targets.items()
    }


def rank_suffix(environ=os.environ) -> str:
    """``""`` in the process of global rank zero, ``.rank<N>`` in the others: per-rank log file names.

    Read from the environment, before any process group exists: ``RANK`` (torchrun),
    ``SLURM_PROCID`` (one Slurm task per device), else ``LOCAL_RANK``/``NODE_RANK`` (the processes
    Lightning starts itself: ``.node<M>.rank<N>`` beyond the first node).
    """
    if "RANK" in environ:
        rank = int(environ["RANK"])
        return f".rank{rank}" if rank else ""
    if int(environ.get("SLURM_NTASKS", "1")) > 1 and "SLURM_PROCID" in environ:
        rank = int(environ["SLURM_PROCID"])
        return f".rank{rank}" if rank else ""
    local, node = int(environ.get("LOCAL_RANK", "0")), int(environ.get("NODE_RANK", "0"))
    if node:
        return f".node{node}.rank{local}"
    return f".rank{local}" if local else ""


def on_rank_zero(value, environ=os.environ):
    """``value`` in the process of global rank zero, None in the others (see :func:`rank_suffix`):
    for files that only rank zero writes, such as Hydra's ``.hydra/`` of a run."""
    return value if rank_suffix(environ) == "" else None


def register_resolvers() -> None:
    """Register ``${hepnn.root:}``, ``${hepnn.len:x}``, ``${hepnn.sum:a,b,...}``, ``${hepnn.keys:mapping}``,
    ``${hepnn.classes:labels}``,
    ``${hepnn.units:targets}``, ``${hepnn.rank_suffix:}`` and ``${hepnn.on_rank_zero:value}``
    (idempotent)."""
    for name, fn in {
        "hepnn.root": lambda: str(project_root()),
        "hepnn.len": _length,
        "hepnn.sum": lambda *values: sum(int(v) for v in values),
        "hepnn.keys": _keys,
        "hepnn.classes": _classes,
        "hepnn.units": _units,
        "hepnn.rank_suffix": rank_suffix,
        "hepnn.on_rank_zero": on_rank_zero,
    }.items():
        if not OmegaConf.has_resolver(name):
            OmegaConf.register_new_resolver(name, fn)
