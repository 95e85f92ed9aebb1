"""Configuration: every preset composes and instantiates; overrides land where users expect."""

from pathlib import Path

import hydra
import pytest
from hydra.errors import ConfigCompositionException
from omegaconf import OmegaConf

from hepnn.nets.blocks import count_parameters
from tests.conftest import REPO, compose_train


def presets(group: str) -> list[str]:
    return sorted(p.stem for p in (REPO / "conf" / group).glob("*.yaml") if p.stem != "default")


@pytest.mark.parametrize("experiment", presets("experiment"))
def test_every_experiment_composes_and_builds_its_model(experiment):
    cfg = compose_train(f"experiment={experiment}")
    model = hydra.utils.instantiate(cfg.model, _convert_="all")
    datamodule = hydra.utils.instantiate(cfg.data, _convert_="all")
    if datamodule.spec.object_targets:  # detection: the task's truth objects are an object target
        assert [model.objects] == list(datamodule.spec.object_targets)
    elif hasattr(model, "classes"):
        assert list(model.classes) == list(datamodule.classes)
    elif datamodule.spec.image_targets:  # per-pixel: the task's target is an image target
        assert [model.target] == list(datamodule.spec.image_targets)
    elif datamodule.spec.element_targets:  # per-element: the task's truth is an element target
        assert [model.truth] == list(datamodule.spec.element_targets)
    else:  # regression: the net's outputs are the data config's targets, in order
        assert model.targets == list(datamodule.spec.targets) and model.net.n_outputs == len(model.targets)
    assert count_parameters(model.net) > 0


@pytest.mark.parametrize("group", ["trainer", "logger", "debug", "callbacks", "data", "model", "generate"])
def test_every_group_option_composes(group, tmp_path):
    for option in presets(group):
        choice = f"{group}={option}" if group != "generate" else f"generate@data.generate={option}"
        # on the plain PFN preset: the default's net also reads the jet observables of toptag_globals
        extra = ["experiment=top_pfn"] if group in ("data", "model") else []
        pileup = {
            "pileup_image": "unet_cleaning",
            "pileup_segment": "unet_segmentation",
            "pileup_particles": "gru_labelling",
        }
        if group == "data" and option in pileup:
            extra += [f"model={pileup[option]}"]  # per-pixel and per-element targets
        elif group == "data" and option.endswith("_image"):
            extra += ["model=cnn"]  # the PFN reads particles, which image configs drop
        if group == "data" and option.endswith("_hlf"):
            extra += ["model=hlf"]  # jet-level observables, not particles
        if group == "model" and option == "hlf":
            extra += ["data=toptag_hlf"]
        if group == "data" and option == "events_calo":
            extra += ["model=event_ssd"]  # whole-event images and their objects
        if group == "model" and option == "event_ssd":
            extra += ["data=events_calo"]
        if group == "data" and option == "airshower":
            extra += ["model=trace3d"]  # traces, not particles
        if group == "model" and option in ("cnn", "resnet"):
            extra += ["data=toptag_image"]
        pileup_data = {"unet_cleaning": "pileup_image", "unet_segmentation": "pileup_segment"}
        if group == "model" and option in (
            "unet_cleaning",
            "unet_segmentation",
            "gru_labelling",
            "pfn_labelling",
        ):
            extra += [f"data={pileup_data.get(option, 'pileup_particles')}"]
        if group == "model" and option == "trace3d":
            extra += ["data=airshower"]
        cfg = compose_train(choice, *extra, f"paths.output_dir={tmp_path}")
        for key in ("trainer", "data", "model", "callbacks", "logger"):
            OmegaConf.to_container(cfg[key], resolve=True)


def test_user_overrides_apply():
    cfg = compose_train(
        "trainer.max_epochs=3", "data.batch_size=256", "model.net.hidden=64", "seed=7", "trainer=cpu"
    )
    assert cfg.trainer.max_epochs == 3 and cfg.model.scheduler.T_max == 3
    assert cfg.data.batch_size == 256 and cfg.data.seed == 7
    model = hydra.utils.instantiate(cfg.model, _convert_="all")
    assert model.net.phi.layers[0].out_channels == 64
    assert model.net.phi.layers[0].in_channels == len(cfg.data.inputs.particles.features) == 15


def test_unknown_key_is_refused_with_its_name():
    with pytest.raises(ConfigCompositionException, match="nonexistent_key"):
        compose_train("nonexistent_key=3")
    with pytest.raises(ConfigCompositionException, match="hiden"):
        compose_train("model.net.hiden=64")


def test_ci_runs_exactly_the_readme_test_command():
    readme = (REPO / "README.md").read_text()
    ci = (REPO / ".ci" / "run").read_text()
    command = next(line for line in ci.splitlines() if "pytest" in line)
    assert command.strip() in readme


def test_conf_is_found_from_any_directory(tmp_path, monkeypatch):
    from hepnn.utils.config import config_dir

    monkeypatch.chdir(tmp_path)
    assert Path(config_dir()) == REPO / "conf"


@pytest.mark.parametrize(
    ("launcher", "trainer", "nodes", "tasks", "gpus"),
    [
        ("slurm_gpu", ["trainer=gpu"], 1, 1, 1),
        ("slurm_gpu_node", ["trainer=ddp", "trainer.devices=4"], 1, 4, 4),
        ("slurm_multinode", ["trainer=ddp", "trainer.devices=4", "trainer.num_nodes=3"], 3, 4, 4),
        ("slurm_cpu", ["trainer=cpu"], 1, 1, None),
        ("slurm_cpu", ["trainer=ddp_cpu", "trainer.devices=2"], 1, 2, None),
    ],
)
def test_slurm_launcher_presets_follow_the_trainer(launcher, trainer, nodes, tasks, gpus):
    """One Slurm task per device (what Lightning's SLURM environment expects), nodes from
    trainer.num_nodes; the site keys are there to override; the warning signal comes before the
    time limit and time-outs are requeued."""
    cfg = compose_train(f"hydra/launcher={launcher}", *trainer, "hydra.launcher.partition=gpu")
    settings = OmegaConf.to_container(cfg.hydra.launcher, resolve=True)
    assert settings["_target_"].endswith("SlurmLauncher")
    assert (settings["nodes"], settings["tasks_per_node"], settings["gpus_per_node"]) == (nodes, tasks, gpus)
    assert settings["partition"] == "gpu" and "account" in settings and "mem_gb" in settings
    assert 0 < settings["signal_delay_s"] < settings["timeout_min"] * 60 and settings["max_num_timeout"] > 0
