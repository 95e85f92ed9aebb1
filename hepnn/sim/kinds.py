"""Which simulation a ``generate`` configuration mapping describes, and the function that runs it.

The mapping's ``kind`` picks the simulation: ``jets`` (the default when absent: Pythia + FastJet
through a parametric detector, :mod:`hepnn.sim.sample`), ``events`` (whole events through the
same detector with their truth jets, :mod:`hepnn.sim.events`) or ``airshower`` (a toy
surface-detector array, :mod:`hepnn.sim.airshower`). Used by ``python -m hepnn.generate`` and by
the data module, which generates the embedded sample its ``files`` point at.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from hepnn.errors import ConfigError

SAMPLE_KINDS = ("jets", "events", "airshower")


def build_sample(values: Mapping[str, object]) -> tuple[object, Callable]:
    """The sample configuration of a ``generate`` mapping and the function that generates it.

    ``values["kind"]`` (default ``jets``) selects the simulation; an unknown kind is a
    :class:`~hepnn.errors.ConfigError` naming the known ones. The function is called as
    ``generate(config, progress_bar=...)`` and returns a report with ``summary()``.
    """
    values = dict(values)
    kind = values.pop("kind", "jets")
    if kind == "jets":
        from hepnn.sim.sample import SampleConfig, generate_sample

        return SampleConfig.from_dict(values), generate_sample
    if kind == "events":
        from hepnn.sim.events import EventSampleConfig, generate_events

        return EventSampleConfig.from_dict(values), generate_events
    if kind == "airshower":
        from hepnn.sim.airshower import AirShowerConfig, generate_airshowers

        return AirShowerConfig.from_dict(values), generate_airshowers
    raise ConfigError(f"generate.kind: unknown kind {kind!r}; known: {', '.join(SAMPLE_KINDS)}")
