"""Config sections turned into objects, with a one-line error for a key the target does not take."""

from __future__ import annotations

import difflib
import inspect

import hydra
from omegaconf import DictConfig

from hepnn.errors import ConfigError


def check_keys(section: DictConfig, key: str) -> None:
    """Raise ConfigError naming ``<key>.<name>`` (with close matches) for an entry of ``section`` that
    its ``_target_`` does not accept, and look into nested sections that have a ``_target_``.

    A target taking ``**kwargs`` accepts every key. Hydra's own keys (``_target_``,
    ``_partial_``, ``_convert_``, ``_recursive_``, ``_args_``) are not checked.
    """
    names = [str(name) for name in section.keys()]
    target = section._get_node("_target_") if "_target_" in names else None
    accepted = _accepted(str(target._value())) if target is not None else None
    for name in names:
        if name.startswith("_") and name.endswith("_"):
            continue
        if accepted is not None and name not in accepted:
            close = difflib.get_close_matches(name, sorted(accepted), n=3, cutoff=0.6)
            hint = f"did you mean {', '.join(close)}?" if close else f"it takes {', '.join(sorted(accepted))}"
            raise ConfigError(f"{key}.{name} is not a setting of {target._value()}; {hint}")
        child = section._get_node(name)
        if isinstance(child, DictConfig) and not child._is_interpolation() and "_target_" in child:
            check_keys(child, f"{key}.{name}")


def _accepted(target: str) -> set[str] | None:
    """The keyword arguments the callable ``target`` accepts, or None when it takes ``**kwargs``
    or cannot be inspected."""
    try:
        obj = hydra.utils.get_object(target)
        signature = inspect.signature(obj)
    except Exception:  # a target that cannot be imported fails in instantiate, with Hydra's message
        return None
    parameters = signature.parameters.values()
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters):
        return None
    return {p.name for p in parameters if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}


def instantiate(section: DictConfig, key: str, **kwargs):
    """``hydra.utils.instantiate`` of a config section after :func:`check_keys`."""
    check_keys(section, key)
    return hydra.utils.instantiate(section, _convert_="all", **kwargs)


def instantiate_group(group: DictConfig | None, key: str) -> list:
    """Instantiate every ``_target_`` entry of a config group mapping (callbacks, loggers)."""
    if not group:
        return []
    objects = []
    for name, entry in group.items():
        if entry is None:
            continue
        if not isinstance(entry, DictConfig) or "_target_" not in entry:
            raise ConfigError(f"{key}.{name} must be a mapping with _target_, got {entry!r}")
        check_keys(entry, f"{key}.{name}")
        objects.append(hydra.utils.instantiate(entry))
    return objects
