"""Evaluation of trained checkpoints: the stored configuration, reproduced test metrics, predictions
aligned with every input entry (a friend tree), clear errors for bad checkpoints, the command line."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import uproot
from hydra.core.hydra_config import HydraConfig
from omegaconf import open_dict

from hepnn.checkpoint import load_checkpoint
from hepnn.errors import ConfigError
from hepnn.evaluate import evaluate
from tests.conftest import REPO, run_module
from tests.test_train import run_training

TINY_FIT = ("trainer.max_epochs=1", "+trainer.limit_train_batches=4", "+trainer.limit_val_batches=2")


def compose_evaluate(*overrides: str):
    """The composed ``evaluate`` config (as ``python -m hepnn.evaluate`` would build it)."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from hepnn.utils.config import register_resolvers

    register_resolvers()
    GlobalHydra.instance().clear()
    with initialize_config_dir(str(REPO / "conf"), version_base="1.3"):
        return compose("evaluate", overrides=list(overrides), return_hydra_config=True)


def run_evaluate(output_dir, *overrides: str) -> dict:
    """Evaluate in this process with the composed config; returns the summary."""
    cfg = compose_evaluate(f"paths.output_dir={output_dir}", *overrides)
    HydraConfig.instance().set_config(cfg)
    with open_dict(cfg):
        del cfg.hydra
    return evaluate(cfg)


@pytest.fixture(scope="module")
def classifier(jet_sample, tmp_path_factory):
    """A tiny top-tagger training on the session sample (one short epoch, full test split)."""
    out = tmp_path_factory.mktemp("evaluate_train")
    summary = run_training(
        out,
        f"data.files={jet_sample}/*.root",
        *TINY_FIT,
        "data.batch_size=64",
        "data.num_workers=0",
        "callbacks.early_stopping=null",
    )
    return out, summary


def test_checkpoints_store_the_run_configuration_as_plain_data(classifier, jet_sample):
    out, summary = classifier
    for path in (summary["best_checkpoint"], out / "checkpoints" / "last.ckpt"):
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
        assert checkpoint["hepnn"]["format"] == 1
        config = checkpoint["hepnn"]["config"]
        assert "hydra" not in config
        assert config["data"]["files"] == f"{jet_sample}/*.root"
        assert config["model"]["net"]["hidden"] == 128 and config["paths"]["output_dir"] == str(out)
        assert "spec" in checkpoint["RootDataModule"]


def test_evaluate_reproduces_the_training_test_metrics(classifier, tmp_path):
    _, trained = classifier
    summary = run_evaluate(
        tmp_path, f"ckpt_path={trained['best_checkpoint']}", "data.split={train: 0.7, val: 0.15, test: 0.15}"
    )
    assert summary["data/test_entries"] == trained["data/test_entries"] == 4 * 60
    for key in ("test/auc", "test/acc", "test/loss", "test/rej30", "test/rej50"):
        assert summary[key] == pytest.approx(trained[key], rel=1e-5), key
    assert json.loads((tmp_path / "summary.json").read_text())["test/auc"] == pytest.approx(
        trained["test/auc"]
    )
    assert summary["predictions"] == str(tmp_path / "predictions" / "evaluate.root")
    # entries outside the test split are rows of their own, flagged as not tested
    predictions = uproot.open(summary["predictions"])["predictions"].arrays(library="np")
    assert len(predictions["entry"]) == 1600
    assert predictions["selected"].sum() == 240
    np.testing.assert_array_equal(predictions["selected"], np.tile(np.arange(400) >= 340, 4))


def test_predictions_cover_every_input_entry_with_the_selection_flagged(classifier, jet_sample, tmp_path):
    _, trained = classifier
    summary = run_evaluate(
        tmp_path, f"ckpt_path={trained['best_checkpoint']}", "data.selection='jet_pt > 600'"
    )
    handle = uproot.open(summary["predictions"])
    predictions = handle["predictions"].arrays(library="np")
    sources = json.loads(str(handle["source_files"]))
    assert sources == sorted(str(p) for p in jet_sample.glob("*.root"))
    assert str(handle["selection"]) == "jet_pt > 600"
    assert predictions["selected"].dtype == np.bool_
    assert len(predictions["entry"]) == 1600
    for index, path in enumerate(sources):
        rows = predictions["file_index"] == index
        jets = uproot.open(path)["tree"].arrays(
            ["jet_pt", "jet_mass", "jet_nparticles", "label"], library="np"
        )
        assert rows.sum() == len(jets["jet_pt"]) == 400  # one row per input entry, in entry order
        np.testing.assert_array_equal(predictions["entry"][rows], np.arange(400))
        selected = predictions["selected"][rows]
        np.testing.assert_array_equal(selected, jets["jet_pt"] > 600)
        for observer in ("jet_pt", "jet_mass", "jet_nparticles"):
            np.testing.assert_array_equal(predictions[observer][rows], jets[observer])
        np.testing.assert_array_equal(predictions["label"][rows][selected], jets["label"][selected])
        assert (predictions["label"][rows][~selected] == -1).all()
        assert np.isnan(predictions["score_Tbqq"][rows][~selected]).all()
        assert np.isfinite(predictions["score_Tbqq"][rows][selected]).all()
    assert 0 < predictions["selected"].sum() < 1600
    assert summary["data/test_entries"] == predictions["selected"].sum()
    # the scores are those of the training run's test predictions (same weights, same inputs)
    written = uproot.open(trained["predictions"])["predictions"].arrays(library="np")
    rows = 400 * written["file_index"] + written["entry"]
    tested = predictions["selected"][rows]
    np.testing.assert_allclose(
        predictions["score_Tbqq"][rows][tested], written["score_Tbqq"][tested], atol=1e-6
    )


def test_standardisation_comes_from_the_checkpoint(classifier, tmp_path):
    """Changing the stored spec's standardisation changes the result: evaluate uses the checkpoint's."""
    _, trained = classifier
    checkpoint = torch.load(trained["best_checkpoint"], map_location="cpu", weights_only=True)
    feature = checkpoint["RootDataModule"]["spec"]["inputs"]["particles"]["features"]["part_pt_log"]
    feature["center"] += 3.0
    changed = tmp_path / "changed.ckpt"
    torch.save(checkpoint, changed)
    split = "data.split={train: 0.7, val: 0.15, test: 0.15}"
    summary = run_evaluate(tmp_path / "changed", f"ckpt_path={changed}", split)
    assert summary["test/loss"] != pytest.approx(trained["test/loss"], rel=1e-4)


def _corrupt(source, path):
    path.write_bytes(source.read_bytes()[:5000])


def _not_a_checkpoint(source, path):
    path.write_text("epoch: 3\nthis is a YAML file, not a checkpoint\n")


def _plain_lightning(source, path):
    checkpoint = torch.load(source, map_location="cpu", weights_only=True)
    del checkpoint["hepnn"]
    torch.save(checkpoint, path)


def _mismatched(source, path):
    checkpoint = torch.load(source, map_location="cpu", weights_only=True)
    checkpoint["hepnn"]["config"]["model"]["net"]["hidden"] = 16
    torch.save(checkpoint, path)


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (_corrupt, r"cannot read .*bad\.ckpt as a PyTorch checkpoint \(truncated, corrupt"),
        (_not_a_checkpoint, r"cannot read .*bad\.ckpt as a PyTorch checkpoint"),
        (_plain_lightning, r"bad\.ckpt has no 'hepnn' entry .*not a plain Lightning checkpoint"),
        (
            _mismatched,
            r"bad\.ckpt: the weights do not fit the network .*other shapes: "
            r"net\.\S+ \(128, 15, 1\) in the checkpoint, \(16, 15, 1\) in the network",
        ),
    ],
)
def test_bad_checkpoints_fail_clearly(classifier, tmp_path, make, message):
    _, trained = classifier
    bad = tmp_path / "bad.ckpt"
    make(Path(trained["best_checkpoint"]), bad)
    with pytest.raises(ConfigError, match=message):
        run_evaluate(tmp_path / "run", f"ckpt_path={bad}")
    assert not (tmp_path / "run" / "predictions").exists()


def test_missing_checkpoint_and_fixed_data_keys_fail_clearly(classifier, tmp_path):
    _, trained = classifier
    with pytest.raises(ConfigError, match=r"checkpoint .*nothing\.ckpt does not exist"):
        run_evaluate(tmp_path, f"ckpt_path={tmp_path}/nothing.ckpt")
    with pytest.raises(ConfigError, match=r"data.inputs cannot be changed in evaluate"):
        run_evaluate(tmp_path, f"ckpt_path={trained['best_checkpoint']}", "+data.inputs={}")


def test_evaluate_from_the_command_line(classifier, tmp_path):
    _, trained = classifier
    result = run_module(
        "hepnn.evaluate",
        f"ckpt_path={trained['best_checkpoint']}",
        "data.eval_batch_size=400",
        f"hydra.run.dir={tmp_path}/run",
        cwd=tmp_path,
    )
    assert "hepnn evaluation summary" in result.stdout and "test AUC" in result.stdout
    assert "evaluated checkpoint" in result.stdout
    run = tmp_path / "run"
    assert json.loads((run / "summary.json").read_text())["data/test_entries"] == 1600
    assert (run / "config.yaml").is_file() and (run / "checkpoint_config.yaml").is_file()
    assert len(uproot.open(run / "predictions" / "evaluate.root")["predictions"]["entry"].array()) == 1600

    bad = tmp_path / "truncated.ckpt"
    _corrupt(Path(trained["best_checkpoint"]), bad)
    result = run_module(
        "hepnn.evaluate", f"ckpt_path={bad}", f"hydra.run.dir={tmp_path}/bad", cwd=tmp_path, check=False
    )
    assert result.returncode == 1
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("hepnn: error: ckpt_path: cannot read ") and str(bad) in last
    assert "Traceback" not in result.stderr


def test_regression_checkpoint_gives_predictions_and_truths_per_event(airshower_sample, tmp_path):
    trained = run_training(
        tmp_path / "train",
        "experiment=airshower_3dconv",
        f"data.files={airshower_sample}/*.root",
        f"data.cache_dir={tmp_path}/cache",
        *TINY_FIT,
        "data.batch_size=32",
        "data.eval_batch_size=100",
        "model.net.spatial_layers=[{channels: 8}]",
        "model.net.residual_blocks=0",
        "callbacks.early_stopping=null",
    )
    summary = run_evaluate(tmp_path / "evaluate", f"ckpt_path={trained['best_checkpoint']}")
    assert summary["data/test_entries"] == 600 and summary["test/energy_resolution"] > 0
    handle = uproot.open(summary["predictions"])
    predictions = handle["predictions"].arrays(library="np")
    targets = json.loads(str(handle["targets"]))
    assert len(predictions["entry"]) == 600 and predictions["selected"].all()
    for index, path in enumerate(json.loads(str(handle["source_files"]))):
        rows = predictions["file_index"] == index
        events = uproot.open(path)["tree"].arrays([*targets, "n_triggered"], library="np")
        np.testing.assert_array_equal(predictions["entry"][rows], np.arange(300))
        for name in targets:
            np.testing.assert_array_equal(predictions[f"true_{name}"][rows], events[name])
            assert np.isfinite(predictions[f"pred_{name}"][rows]).all()
        np.testing.assert_array_equal(predictions["n_triggered"][rows], events["n_triggered"])
    assert (
        load_checkpoint(trained["best_checkpoint"])["hepnn"]["config"]["model"]["net"]["residual_blocks"] == 0
    )


def test_predictions_as_parquet_hold_the_same_rows(classifier, tmp_path):
    import pyarrow.parquet as pq

    _, trained = classifier
    root = run_evaluate(tmp_path / "root", f"ckpt_path={trained['best_checkpoint']}")
    parquet = run_evaluate(
        tmp_path / "parquet", f"ckpt_path={trained['best_checkpoint']}", "predictions.format=parquet"
    )
    assert parquet["predictions"].endswith("predictions/evaluate.parquet")
    table = pq.read_table(parquet["predictions"])
    expected = uproot.open(root["predictions"])["predictions"].arrays(library="np")
    assert sorted(table.column_names) == sorted(expected)
    for name, values in expected.items():
        np.testing.assert_array_equal(table.column(name).to_numpy(), values)
    metadata = table.schema.metadata
    assert json.loads(metadata[b"classes"]) == ["QCD", "Tbqq"]
    assert json.loads(metadata[b"source_files"]) == json.loads(
        str(uproot.open(root["predictions"])["source_files"])
    )
    with pytest.raises(ConfigError, match=r"predictions\.format must be one of \['root', 'parquet'\]"):
        run_evaluate(tmp_path / "bad", f"ckpt_path={trained['best_checkpoint']}", "predictions.format=csv")
