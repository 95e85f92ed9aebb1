"""Generate a simulated sample: ``python -m hepnn.generate [generate=<sample>] [overrides]``.

The ``generate`` section's ``kind`` picks the simulation: ``jets`` (the default when absent:
Pythia + FastJet through a parametric detector, :mod:`hepnn.sim.sample`) or ``airshower`` (a
toy surface-detector array, :mod:`hepnn.sim.airshower`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping

import hydra
from omegaconf import DictConfig, OmegaConf

from hepnn.utils.config import config_dir, register_resolvers

log = logging.getLogger(__name__)
register_resolvers()

SAMPLE_KINDS = ("jets", "airshower")


def build_sample(values: Mapping[str, object]) -> tuple[object, Callable]:
    """The sample configuration of a ``generate`` mapping and the function that generates it.

    ``values["kind"]`` (default ``jets``) selects the simulation; an unknown kind is a
    :class:`~hepnn.errors.ConfigError` naming the known ones.
    """
    from hepnn.errors import ConfigError

    values = dict(values)
    kind = values.pop("kind", "jets")
    if kind == "jets":
        from hepnn.sim.sample import SampleConfig, generate_sample

        return SampleConfig.from_dict(values), generate_sample
    if kind == "airshower":
        from hepnn.sim.airshower import AirShowerConfig, generate_airshowers

        return AirShowerConfig.from_dict(values), generate_airshowers
    raise ConfigError(f"generate.kind: unknown kind {kind!r}; known: {', '.join(SAMPLE_KINDS)}")


@hydra.main(version_base="1.3", config_path=config_dir(), config_name="generate")
def main(cfg: DictConfig) -> None:
    from hepnn.errors import report_input_errors

    with report_input_errors():
        sample, generate = build_sample(OmegaConf.to_container(cfg.generate, resolve=True))
        report = generate(sample, progress_bar=cfg.progress_bar)
    print(f"{report.summary()}\nfiles: {sample.output_dir}")


if __name__ == "__main__":
    main()
