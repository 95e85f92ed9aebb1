"""Train and test a model: ``python -m hepnn.train [experiment=<preset>] [key=value ...]``."""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from hepnn.utils.config import config_dir, register_resolvers

register_resolvers()


@hydra.main(version_base="1.3", config_path=config_dir(), config_name="train")
def main(cfg: DictConfig) -> float | None:
    from hepnn.errors import report_input_errors
    from hepnn.training import train

    with report_input_errors():
        summary = train(cfg)
    return summary.get("test/auc")


if __name__ == "__main__":
    main()
