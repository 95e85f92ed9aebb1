"""Export a trained model to ONNX: ``python -m hepnn.export ckpt_path=<checkpoint> [output=<x.onnx>]``.

The graph takes the raw input variables and applies the checkpoint's standardisation, the net
and the task's head (:mod:`hepnn.deploy`); a JSON sidecar next to it describes inputs and
outputs. The default output is the checkpoint's path with the suffix ``.onnx``. The two files
written are printed.
"""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from hepnn.utils.config import config_dir, register_resolvers

register_resolvers()
FORMATS = ("onnx",)


@hydra.main(version_base="1.3", config_path=config_dir(), config_name="export")
def main(cfg: DictConfig) -> None:
    from hepnn.errors import ConfigError, report_input_errors

    with report_input_errors():
        if cfg.format not in FORMATS:
            raise ConfigError(f"format: {cfg.format!r} is not supported; formats: {', '.join(FORMATS)}")
        if not isinstance(cfg.opset, int) or isinstance(cfg.opset, bool):
            raise ConfigError(f"opset must be an integer, got {cfg.opset!r}")
        from hepnn.deploy.onnx import export_onnx

        result = export_onnx(cfg.ckpt_path, cfg.get("output"), cfg.opset)
    print(result.onnx_path)
    print(result.sidecar_path)


if __name__ == "__main__":
    main()
