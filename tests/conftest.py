"""Shared fixtures: small generated jet samples (made once per test session) and config helpers."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from hepnn.sim.sample import SampleConfig, generate_sample

REPO = Path(__file__).resolve().parents[1]


def sample_config(
    output_dir: Path, n_jets: int, jets_per_file: int, workers: int = 2, seed: int = 5
) -> SampleConfig:
    """The default top-vs-QCD configuration, scaled down."""
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    from hepnn.utils.config import register_resolvers

    register_resolvers()
    with initialize_config_dir(str(REPO / "conf"), version_base="1.3"):
        cfg = compose(
            "generate",
            overrides=[
                f"generate.output_dir={output_dir}",
                f"generate.processes.qcd.n_jets={n_jets}",
                f"generate.processes.ttbar.n_jets={n_jets}",
                f"generate.jets_per_file={jets_per_file}",
                f"generate.workers={workers}",
                f"generate.seed={seed}",
            ],
        )
        values = OmegaConf.to_container(cfg.generate, resolve=True)
    return SampleConfig.from_dict(values)


@pytest.fixture(scope="session")
def jet_sample(tmp_path_factory) -> Path:
    """800 top and 800 QCD jets in files of 400 jets (4 files), generated once per session."""
    out = tmp_path_factory.mktemp("toptag")
    generate_sample(sample_config(out, n_jets=800, jets_per_file=400), progress_bar=False)
    return out


def compose_generate(sample: str, output_dir: Path, *overrides: str):
    """The ``generate=<sample>`` configuration (as ``python -m hepnn.generate`` composes it): a
    :class:`SampleConfig` for jets, an :class:`~hepnn.sim.airshower.AirShowerConfig` for air showers."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from omegaconf import OmegaConf

    from hepnn.utils.config import register_resolvers

    register_resolvers()
    GlobalHydra.instance().clear()
    with initialize_config_dir(str(REPO / "conf"), version_base="1.3"):
        cfg = compose(
            "generate", overrides=[f"generate={sample}", f"generate.output_dir={output_dir}", *overrides]
        )
        values = OmegaConf.to_container(cfg.generate, resolve=True)
    from hepnn.sim.kinds import build_sample

    return build_sample(values)[0]


@pytest.fixture(scope="session")
def airshower_sample(tmp_path_factory) -> Path:
    """600 air showers of the ``generate=airshower`` configuration in 2 files of 300."""
    from hepnn.sim.airshower import generate_airshowers

    out = tmp_path_factory.mktemp("airshower_sample")
    cfg = compose_generate(
        "airshower", out, "generate.n_events=600", "generate.events_per_file=300", "generate.workers=2"
    )
    generate_airshowers(cfg, progress_bar=False)
    return out


@pytest.fixture(scope="session")
def qg_sample(tmp_path_factory) -> Path:
    """120 quark and 120 gluon jets of the ``generate=qg`` configuration (one file each)."""
    out = tmp_path_factory.mktemp("qg")
    n_jets = [f"generate.processes.{p}.n_jets=120" for p in ("zjet_q", "zjet_g")]
    cfg = compose_generate("qg", out, *n_jets, "generate.jets_per_file=120", "generate.workers=2")
    generate_sample(cfg, progress_bar=False)
    return out


@pytest.fixture(scope="session")
def jets4_sample(tmp_path_factory) -> Path:
    """300 W and 300 Z jets, 30 top and 30 QCD jets of the ``generate=jets4`` configuration."""
    out = tmp_path_factory.mktemp("jets4")
    n_jets = {"qcd": 30, "ttbar": 30, "wqq": 300, "zqq": 300}
    overrides = [f"generate.processes.{p}.n_jets={n}" for p, n in n_jets.items()]
    cfg = compose_generate("jets4", out, *overrides, "generate.jets_per_file=300", "generate.workers=2")
    generate_sample(cfg, progress_bar=False)
    return out


@pytest.fixture(scope="session")
def qcd_pu_sample(tmp_path_factory) -> Path:
    """160 QCD jets with pile-up (mu = 30, a pool of 300 minimum-bias events) in files of 80 jets."""
    out = tmp_path_factory.mktemp("qcd_pu")
    config = compose_generate(
        "qcd_pu",
        out,
        "generate.processes.qcd.n_jets=160",
        "generate.jets_per_file=80",
        "generate.pileup.mu=30",
        "generate.pileup.pool_events=300",
        "generate.workers=1",
    )
    generate_sample(config, progress_bar=False)
    return out


def run_module(module: str, *overrides: str, cwd: Path, timeout: int = 600, check: bool = True):
    """Run ``python -m <module> <overrides>`` as a user would; returns the CompletedProcess."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    result = subprocess.run(
        [sys.executable, "-m", module, *overrides],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if check and result.returncode != 0:
        raise AssertionError(
            f"python -m {module} {' '.join(overrides)} failed ({result.returncode}):\n"
            f"{result.stdout[-4000:]}\n{result.stderr[-6000:]}"
        )
    return result


def compose_train(*overrides: str):
    """The composed ``train`` config (as ``python -m hepnn.train`` would build it) with overrides."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from hepnn.utils.config import register_resolvers

    register_resolvers()
    GlobalHydra.instance().clear()
    with initialize_config_dir(str(REPO / "conf"), version_base="1.3"):
        return compose("train", overrides=list(overrides), return_hydra_config=True)


def make_datamodule(files, **overrides):
    """A RootDataModule of the toptag data config (particles), reading ``files``."""
    import hydra

    cfg = compose_train(
        "experiment=top_pfn", f"data.files={files}", *(f"data.{k}={v}" for k, v in overrides.items())
    )
    return hydra.utils.instantiate(cfg.data, _convert_="all")


@pytest.fixture(scope="session")
def events_sample(tmp_path_factory) -> Path:
    """40 events of each process of the ``generate=events_calo`` configuration in files of 20."""
    from hepnn.sim.events import generate_events

    out = tmp_path_factory.mktemp("events_calo")
    n_events = [f"generate.processes.{p}.n_events=40" for p in ("qcd", "ttbar", "wprime_wz")]
    cfg = compose_generate("events_calo", out, *n_events, "generate.events_per_file=20", "generate.workers=2")
    generate_events(cfg, progress_bar=False)
    return out
