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


def register_resolvers() -> None:
    """Register ``${hepnn.root:}``, ``${hepnn.len:x}`` and ``${hepnn.keys:mapping}`` (idempotent)."""
    for name, fn in {
        "hepnn.root": lambda: str(project_root()),
        "hepnn.len": _length,
        "hepnn.keys": _keys,
    }.items():
        if not OmegaConf.has_resolver(name):
            OmegaConf.register_new_resolver(name, fn)
