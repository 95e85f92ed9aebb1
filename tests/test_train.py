"""Training end to end: the command line, a real short training, resuming, sweeps, loggers, bad input."""

import json
import os
import re
from pathlib import Path

import numpy as np
import pytest
import torch
import uproot
from hydra.core.hydra_config import HydraConfig
from omegaconf import open_dict

from hepnn.data.spec import DataSpec
from hepnn.metrics import classification as metrics
from hepnn.train import train
from tests.conftest import compose_train, run_module


def run_training(output_dir, *overrides):
    """Train in this process with the composed config (as the command line would)."""
    cfg = compose_train(f"paths.output_dir={output_dir}", *overrides)
    HydraConfig.instance().set_config(cfg)
    with open_dict(cfg):
        del cfg.hydra
    return train(cfg)


@pytest.fixture(scope="module")
def trained(jet_sample, tmp_path_factory):
    """A real (short) training on the session sample: 6 epochs on 1120 jets."""
    out = tmp_path_factory.mktemp("trained")
    summary = run_training(
        out,
        f"data.files={jet_sample}/*.root",
        "trainer.max_epochs=6",
        "data.batch_size=64",
        "data.num_workers=0",
        "callbacks.early_stopping=null",
    )
    return out, summary


def test_short_training_learns_to_tag_tops(trained):
    _, summary = trained
    assert summary["test/auc"] > 0.85
    assert summary["test/acc"] > 0.75
    assert summary["test/rej30"] > 5
    assert summary["epochs"] == 6


def test_run_directory_holds_config_checkpoints_logs_and_predictions(trained):
    out, summary = trained
    assert (out / "config.yaml").is_file() and "max_epochs: 6" in (out / "config.yaml").read_text()
    assert (out / "checkpoints" / "last.ckpt").is_file()
    assert summary["best_checkpoint"].startswith(str(out / "checkpoints"))
    assert (out / "csv" / "metrics.csv").is_file()
    assert json.loads((out / "summary.json").read_text())["test/auc"] == pytest.approx(summary["test/auc"])
    assert summary["data/files"] == 4 and summary["data/skipped_files"] == 0
    assert summary["data/train_entries"] + summary["data/val_entries"] + summary["data/test_entries"] == 1600


def test_checkpoint_stores_the_resolved_data_spec(trained):
    """The data spec, standardisation included, is in the checkpoint as plain data."""
    out, _ = trained
    checkpoint = torch.load(out / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    spec = checkpoint["RootDataModule"]["spec"]
    assert spec["inputs"]["particles"]["features"]["part_pt_log"] == {
        "center": 1.2,
        "scale": 1.5,
        "clip": [-5.0, 5.0],
        "unit": "log(pT/GeV)",
    }
    assert spec["labels"] == {"QCD": "label_QCD", "Tbqq": "label_Tbqq"}
    assert DataSpec.from_config(spec).to_config() == spec


def test_predictions_align_with_the_input_entries(trained, jet_sample):
    _, summary = trained
    handle = uproot.open(summary["predictions"])
    predictions = handle["predictions"].arrays(library="np")
    sources = json.loads(str(handle["source_files"]))
    assert json.loads(str(handle["classes"])) == ["QCD", "Tbqq"]
    np.testing.assert_allclose(predictions["score_QCD"] + predictions["score_Tbqq"], 1.0, rtol=1e-5)
    # exactly the test split of every file: the last 15 % of its 400 entries
    assert len(predictions["entry"]) == 4 * 60
    for index, path in enumerate(sources):
        rows = predictions["file_index"] == index
        assert sorted(predictions["entry"][rows]) == list(range(340, 400))
        jets = uproot.open(path)["tree"].arrays(["jet_mass", "jet_pt", "label"], library="np")
        entries = predictions["entry"][rows]
        np.testing.assert_array_equal(predictions["jet_mass"][rows], jets["jet_mass"][entries])
        np.testing.assert_array_equal(predictions["label"][rows], jets["label"][entries])
    # the summary's rejection is the one computed from the written scores
    rej = metrics.background_rejection(predictions["score_Tbqq"], predictions["label"] == 1, 0.3)
    assert summary["test/rej30"] == pytest.approx(rej, rel=1e-4)


def test_last_checkpoint_is_the_latest_epoch_when_an_earlier_one_is_the_best(jet_sample, tmp_path):
    """last.ckpt (what a requeued job resumes from) holds the end of the latest epoch, also when
    the best checkpoint is older: here the best is made the highest validation loss."""
    summary = run_training(
        tmp_path,
        f"data.files={jet_sample}/*.root",
        "trainer.max_epochs=3",
        "data.batch_size=64",
        "data.num_workers=0",
        "callbacks.early_stopping=null",
        "callbacks.model_checkpoint.mode=max",
    )
    best = torch.load(summary["best_checkpoint"], map_location="cpu", weights_only=True)
    last = torch.load(tmp_path / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert best["epoch"] < 2  # Lightning's own save_last would have left last.ckpt at this epoch
    assert summary["last_checkpoint"] == str(tmp_path / "checkpoints" / "last.ckpt")
    steps_per_epoch = -(-summary["data/train_entries"] // 64)
    assert last["epoch"] == 2 and last["global_step"] == 3 * steps_per_epoch
    assert sorted(p.name for p in (tmp_path / "checkpoints").glob("*.ckpt")) == sorted(
        [Path(summary["best_checkpoint"]).name, "last.ckpt"]
    )


def test_resume_from_last_checkpoint_trains_only_the_remaining_epochs(trained, jet_sample, tmp_path):
    out, _ = trained
    last = out / "checkpoints" / "last.ckpt"
    before = torch.load(last, map_location="cpu", weights_only=True)
    summary = run_training(
        tmp_path,
        f"data.files={jet_sample}/*.root",
        "trainer.max_epochs=7",
        "data.batch_size=64",
        "data.num_workers=0",
        "callbacks.early_stopping=null",
        f"ckpt_path={last}",
    )
    after = torch.load(tmp_path / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert before["epoch"] == 5 and after["epoch"] == 6
    steps_per_epoch = before["global_step"] // 6
    assert after["global_step"] == before["global_step"] + steps_per_epoch
    assert summary["epochs"] == 7


def test_without_training_the_test_is_of_the_checkpoint_named_by_ckpt_path(trained, jet_sample, tmp_path):
    _, summary = trained
    tested = run_training(
        tmp_path,
        f"data.files={jet_sample}/*.root",
        "trainer.max_epochs=6",
        "data.num_workers=0",
        "train=false",
        f"ckpt_path={summary['best_checkpoint']}",
    )
    assert tested["test/auc"] == pytest.approx(summary["test/auc"], abs=1e-6)
    assert tested["test/auc"] > 0.85


def test_fast_dev_run_from_the_command_line(jet_sample, tmp_path, monkeypatch):
    # an srun on the PATH, as on a Slurm login node: Lightning's hint to use it is not shown
    (tmp_path / "bin").mkdir()
    (tmp_path / "bin" / "srun").write_text("#!/bin/sh\nexit 0\n")
    (tmp_path / "bin" / "srun").chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}:{os.environ['PATH']}")
    result = run_module(
        "hepnn.train",
        "debug=fdr",
        f"data.files={jet_sample}/*.root",
        f"hydra.run.dir={tmp_path}/run",
        cwd=tmp_path,
    )
    assert "hepnn run summary" in result.stdout and "test AUC" in result.stdout
    log = (tmp_path / "run" / "train.log").read_text()
    output = result.stdout + result.stderr + log
    assert "srun" not in output and "litlogger" not in output
    # Lightning's own lines reach the run's log file, and the console once
    assert "GPU available" in log and (result.stdout + result.stderr).count("GPU available") == 1
    assert (tmp_path / "run" / "config.yaml").is_file()
    assert (tmp_path / "run" / ".hydra" / "overrides.yaml").is_file()
    assert (tmp_path / "run" / "predictions" / "test.root").is_file()


def test_multirun_sweep_gives_each_job_its_directory(jet_sample, tmp_path):
    run_module(
        "hepnn.train",
        "-m",
        "debug=fdr",
        "model.net.hidden=16,32",
        f"data.files={jet_sample}/*.root",
        f"hydra.sweep.dir={tmp_path}/sweep",
        cwd=tmp_path,
    )
    hidden = [compose_config_value(tmp_path / "sweep" / str(i) / "config.yaml") for i in (0, 1)]
    assert hidden == [16, 32]


def compose_config_value(path):
    from omegaconf import OmegaConf

    return OmegaConf.load(path).model.net.hidden


@pytest.mark.parametrize(("logger", "produced"), [("tensorboard", "tensorboard"), ("mlflow", "mlflow.db")])
def test_other_loggers_record_metrics(jet_sample, tmp_path, logger, produced):
    run_training(
        tmp_path,
        f"data.files={jet_sample}/*.root",
        f"logger={logger}",
        "debug=limit",
        "data.num_workers=0",
        "data.batch_size=32",
    )
    assert (tmp_path / produced).exists()
    if logger == "mlflow":
        import mlflow

        client = mlflow.tracking.MlflowClient(tracking_uri=f"sqlite:///{tmp_path}/mlflow.db")
        run = client.search_runs(client.get_experiment_by_name("train").experiment_id)[0]
        assert "val/auc" in run.data.metrics and "test/auc" in run.data.metrics


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (
            ["data.files=/nonexistent/dir/*.root", "data.generate=null"],
            "data.files: no input file matches '/nonexistent/dir/\\*.root'",
        ),
        (["data.tree=Events"], "no tree 'Events' \\(data.tree\\); trees in this file: \\['tree'\\]"),
        (["data.observers=[jet_pt,jet_sdmass]"], "has no branch 'jet_sdmass'"),
        (["nonexistent_key=3"], "Key 'nonexistent_key' is not in struct"),
        (["data.split.train=0.9"], r"hepnn: error: data.split fractions must be non-negative and sum to 1"),
    ],
)
def test_bad_input_fails_clearly_before_training(jet_sample, tmp_path, overrides, message):
    if not any(o.startswith("data.files") for o in overrides):
        overrides.append(f"data.files={jet_sample}/*.root")
    result = run_module("hepnn.train", *overrides, f"hydra.run.dir={tmp_path}/run", cwd=tmp_path, check=False)
    assert result.returncode != 0
    assert re.search(message, result.stderr + result.stdout), result.stderr[-3000:]
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_two_process_ddp_on_cpu_gathers_every_test_entry_once(jet_sample, tmp_path):
    run_module(
        "hepnn.train",
        "trainer=ddp",
        "trainer.accelerator=cpu",
        "trainer.devices=2",
        "trainer.max_epochs=1",
        "+trainer.limit_train_batches=3",
        "data.num_workers=1",
        "data.eval_batch_size=50",
        f"data.files={jet_sample}/*.root",
        f"hydra.run.dir={tmp_path}/run",
        cwd=tmp_path,
    )
    predictions = uproot.open(tmp_path / "run" / "predictions" / "test.root")["predictions"].arrays(
        library="np"
    )
    pairs = set(zip(predictions["file_index"].tolist(), predictions["entry"].tolist(), strict=True))
    assert len(pairs) == len(predictions["entry"]) == 4 * 60
    assert pairs == {(f, e) for f in range(4) for e in range(340, 400)}
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    rej = metrics.background_rejection(predictions["score_Tbqq"], predictions["label"] == 1, 0.5)
    assert summary["test/rej50"] == pytest.approx(rej, rel=1e-4)


def test_predict_step_reproduces_the_written_test_scores(trained, jet_sample):
    import hydra
    import lightning as L

    out, summary = trained
    cfg = compose_train(f"data.files={jet_sample}/*.root", "data.num_workers=0", f"paths.output_dir={out}")
    model = hydra.utils.instantiate(cfg.model, _convert_="all")
    checkpoint = torch.load(summary["best_checkpoint"], map_location="cpu", weights_only=True)
    model.load_state_dict(checkpoint["state_dict"])
    datamodule = hydra.utils.instantiate(cfg.data, _convert_="all")
    trainer = L.Trainer(
        accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False
    )
    batches = trainer.predict(model, datamodule=datamodule)
    predicted = {
        (int(f), int(e)): float(p[1])
        for b in batches
        for f, e, p in zip(b["file_index"], b["entry"], b["probabilities"], strict=True)
    }
    written = uproot.open(summary["predictions"])["predictions"].arrays(library="np")
    assert len(predicted) == len(written["entry"])
    for f, e, score in zip(written["file_index"], written["entry"], written["score_Tbqq"], strict=True):
        assert predicted[(int(f), int(e))] == pytest.approx(float(score), abs=1e-6)


def test_input_errors_reach_the_user_as_one_line(jet_sample, tmp_path):
    result = run_module(
        "hepnn.train",
        "data.tree=Events",
        f"data.files={jet_sample}/*.root",
        f"hydra.run.dir={tmp_path}/run",
        cwd=tmp_path,
        check=False,
    )
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1].startswith("hepnn: error: ")
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (
            ["+data.batchsize=3"],
            "data.batchsize is not a setting of hepnn.data.RootDataModule; did you mean batch_size",
        ),
        (
            ["+model.net.hiden=3"],
            "model.net.hiden is not a setting of hepnn.nets.particle_flow.ParticleFlowNetwork; "
            "did you mean hidden",
        ),
        (["ckpt_path=NOT_A_CHECKPOINT"], "cannot read NOT_A_CHECKPOINT as a PyTorch checkpoint"),
    ],
)
def test_unknown_keys_and_foreign_checkpoints_are_one_line_errors(jet_sample, tmp_path, overrides, message):
    not_a_checkpoint = tmp_path / "notes.txt"
    not_a_checkpoint.write_text("e" * 200)
    overrides = [o.replace("NOT_A_CHECKPOINT", str(not_a_checkpoint)) for o in overrides]
    message = message.replace("NOT_A_CHECKPOINT", str(not_a_checkpoint))
    result = run_module(
        "hepnn.train",
        *overrides,
        f"data.files={jet_sample}/*.root",
        f"hydra.run.dir={tmp_path}/run",
        cwd=tmp_path,
        check=False,
    )
    assert result.returncode == 1, result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("hepnn: error: ") and message in last, last
    assert "Traceback" not in result.stderr
