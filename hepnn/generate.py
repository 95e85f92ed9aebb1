"""Generate a simulated sample: ``python -m hepnn.generate [generate=<sample>] [overrides]``.

The ``generate`` section's ``kind`` picks the simulation (:mod:`hepnn.sim.kinds`): ``jets``
(the default), ``events`` (whole events as calorimeter cells, with their truth jets) or
``airshower``.
"""

from __future__ import annotations

import logging

import hydra
from omegaconf import DictConfig, OmegaConf

from hepnn.sim.kinds import build_sample
from hepnn.utils.config import config_dir, register_resolvers

log = logging.getLogger(__name__)
register_resolvers()


@hydra.main(version_base="1.3", config_path=config_dir(), config_name="generate")
def main(cfg: DictConfig) -> None:
    from hepnn.errors import report_input_errors

    with report_input_errors():
        sample, generate = build_sample(OmegaConf.to_container(cfg.generate, resolve=True))
        report = generate(sample, progress_bar=cfg.progress_bar)
    print(f"{report.summary()}\nfiles: {sample.output_dir}")


if __name__ == "__main__":
    main()
