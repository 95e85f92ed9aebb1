"""Transfer learning (model.pretrained): loading by name and shape with a report, frozen modules
and their batch norm, per-module learning rates, unfreezing, resuming, and fine-tuned checkpoints
that evaluate and export without the pretrained file."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from hepnn.errors import ConfigError, InputError
from hepnn.tasks import finetuning
from tests.conftest import REPO, compose_train, run_module
from tests.test_train import run_training

SMALL_CNN = (
    "experiment=top_cnn",
    "model.net.blocks=[{channels: 4, kernel: 3, padding: same, batch_norm: true, pool: max, pool_size: 4}]",
    "model.net.global_pool=avg",
    "model.net.head=[8]",
)
FAST = (
    "data.batch_size=64",
    "data.num_workers=0",
    "data.progress_bar=false",
    "callbacks.early_stopping=null",
    "test=false",
)


def checkpoint_of(run_dir) -> dict:
    return torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)


@pytest.fixture(scope="module")
def pretrained_cnn(jets4_sample, tmp_path_factory):
    """A small CNN with batch norm trained one epoch on the four-class sample (a head of 4 outputs)."""
    out = tmp_path_factory.mktemp("pretrained")
    run_training(
        out,
        *SMALL_CNN,
        "data=jets4_image",
        f"data.files={jets4_sample}/*.root",
        "trainer.max_epochs=1",
        "+trainer.limit_train_batches=3",
        "+trainer.limit_val_batches=1",
        f"data.cache_dir={out}/cache",
        *FAST,
    )
    return out / "checkpoints" / "last.ckpt"


def finetune(tmp_path, pretrained, jet_sample, *overrides):
    """Fine-tune on the binary top sample from ``pretrained``; returns the run directory."""
    spec = "{ckpt_path: " + str(pretrained) + ", " + ", ".join(overrides) + "}"
    run_training(
        tmp_path,
        *SMALL_CNN,
        f"data.files={jet_sample}/*.root",
        f"model.pretrained={spec}",
        "trainer.max_epochs=2",
        "+trainer.limit_train_batches=4",
        "+trainer.limit_val_batches=1",
        "callbacks.model_checkpoint.save_top_k=-1",  # every epoch's checkpoint
        f"data.cache_dir={tmp_path}/cache",
        *FAST,
    )
    return tmp_path


def test_a_new_head_is_reported_and_the_rest_is_loaded(pretrained_cnn, jet_sample, tmp_path):
    run = finetune(tmp_path, pretrained_cnn, jet_sample, "freeze: [net.blocks]", "unfreeze_after_epochs: 1")
    source = torch.load(pretrained_cnn, map_location="cpu", weights_only=True)
    report = checkpoint_of(run)[finetuning.ORIGIN_KEY]
    assert report["source"] == str(pretrained_cnn.resolve())
    # the four-class head's last layer does not fit two classes: kept new, and said so
    assert sorted(report["shape_mismatch"]) == ["net.head.layers.3.bias", "net.head.layers.3.weight"]
    assert "net.blocks.0.body.0.weight" in report["loaded"] and not report["missing_in_checkpoint"]
    # the frozen convolutions and their batch-norm statistics did not change in epoch 0
    epoch0 = torch.load(run / "checkpoints" / "epoch_000.ckpt", map_location="cpu", weights_only=True)
    frozen = [k for k in source["state_dict"] if k.startswith("net.blocks")]
    assert any("running_mean" in k for k in frozen)
    for key in frozen:
        assert torch.equal(epoch0["state_dict"][key], source["state_dict"][key]), key


def test_the_convolutions_are_reused_on_a_larger_window_and_the_dense_part_retrained(
    pretrained_cnn, jet_sample, tmp_path
):
    """Pretrained on 40 x 40 pixels of 0.04 rad, fine-tuned on 48 x 48 pixels of the same size
    (a window of +-0.96 rad) with a flattening head: the convolutions load, the dense layers that
    read the flattened image do not fit and are retrained, and the report says so."""
    spec = "{ckpt_path: " + str(pretrained_cnn) + ", freeze: [net.blocks]}"
    run_training(
        tmp_path,
        *SMALL_CNN,
        "model.net.global_pool=flatten",
        "data.inputs.image.grid={n_eta: 48, n_phi: 48, eta: [-0.96, 0.96], phi: [-0.96, 0.96]}",
        f"data.files={jet_sample}/*.root",
        f"model.pretrained={spec}",
        "trainer.max_epochs=1",
        "+trainer.limit_train_batches=2",
        "+trainer.limit_val_batches=1",
        f"data.cache_dir={tmp_path}/cache",
        *FAST,
    )
    source = torch.load(pretrained_cnn, map_location="cpu", weights_only=True)["state_dict"]
    last = checkpoint_of(tmp_path)
    report = last[finetuning.ORIGIN_KEY]
    convolutions = [k for k in source if k.startswith("net.blocks")]
    assert convolutions and set(convolutions) <= set(report["loaded"])
    assert "net.head.layers.0.weight" in report["shape_mismatch"]  # 8 x (4 * 12 * 12) against 8 x 4
    assert last["state_dict"]["net.head.layers.0.weight"].shape[1] == 4 * 12 * 12
    for key in convolutions:
        assert torch.equal(last["state_dict"][key], source[key]), key  # frozen: as pretrained


def test_frozen_modules_change_only_after_unfreezing(pretrained_cnn, jet_sample, tmp_path):
    run = finetune(
        tmp_path,
        pretrained_cnn,
        jet_sample,
        "freeze: [net.blocks]",
        "unfreeze_after_epochs: 1",
        "lr_scale: {net.head: 10.0}",
    )
    source = torch.load(pretrained_cnn, map_location="cpu", weights_only=True)["state_dict"]
    last = checkpoint_of(run)
    key = "net.blocks.0.body.0.weight"
    assert last["epoch"] >= 1 and not torch.equal(last["state_dict"][key], source[key])  # trained in epoch 1
    # the optimizer's groups: the head at ten times the learning rate
    groups = last["optimizer_states"][0]["param_groups"]
    by_name = {g["name"]: g for g in groups}
    assert by_name["net.head"]["lr_scale"] == 10.0 and by_name["rest"]["lr_scale"] == 1.0
    assert by_name["net.head"]["initial_lr"] == pytest.approx(10 * by_name["rest"]["initial_lr"])


def test_a_resumed_fine_tuning_keeps_its_frozen_state(pretrained_cnn, jet_sample, tmp_path):
    spec = f"{{ckpt_path: {pretrained_cnn}, freeze: [net.blocks]}}"
    common = (*SMALL_CNN, f"data.files={jet_sample}/*.root", f"model.pretrained={spec}", *FAST)
    limits = (
        "+trainer.limit_train_batches=3",
        "+trainer.limit_val_batches=1",
        f"data.cache_dir={tmp_path}/c",
    )
    run_training(tmp_path / "first", *common, "trainer.max_epochs=1", *limits)
    first = checkpoint_of(tmp_path / "first")
    run_training(
        tmp_path / "resumed",
        *common,
        "trainer.max_epochs=2",
        f"ckpt_path={tmp_path / 'first' / 'checkpoints' / 'last.ckpt'}",
        *limits,
    )
    resumed = checkpoint_of(tmp_path / "resumed")
    assert resumed["epoch"] == 1
    for key, value in first["state_dict"].items():
        if key.startswith("net.blocks"):
            assert torch.equal(resumed["state_dict"][key], value), key  # frozen throughout


def test_a_fine_tuned_checkpoint_evaluates_and_exports_without_the_pretrained_file(
    pretrained_cnn, jet_sample, tmp_path
):
    copy = tmp_path / "pretrained.ckpt"
    shutil.copy(pretrained_cnn, copy)
    run = finetune(tmp_path / "run", copy, jet_sample, "freeze: [net.blocks]")
    copy.unlink()
    ckpt = run / "checkpoints" / "last.ckpt"
    run_module(
        "hepnn.evaluate",
        f"ckpt_path={ckpt}",
        f"data.files={jet_sample}/*.root",
        "data.progress_bar=false",
        f"hydra.run.dir={tmp_path}/evaluate",
        cwd=tmp_path,
    )
    summary = json.loads((tmp_path / "evaluate" / "summary.json").read_text())
    assert 0 <= summary["test/auc"] <= 1
    run_module("hepnn.export", f"ckpt_path={ckpt}", f"hydra.run.dir={tmp_path}/export", cwd=tmp_path)
    assert (run / "checkpoints" / "last.onnx").is_file()


def test_bad_pretrained_settings_are_one_line_errors(pretrained_cnn, jet_sample, tmp_path):
    import hydra

    def build(spec: str):
        cfg = compose_train(*SMALL_CNN, f"data.files={jet_sample}/*.root", f"model.pretrained={spec}")
        return hydra.utils.instantiate(cfg.model, _convert_="all")

    with pytest.raises(
        Exception, match=r"model.pretrained.freeze: 'net.blcks' is not a module of the task; close"
    ):
        build("{freeze: [net.blcks]}")
    with pytest.raises(Exception, match=r"model.pretrained.lr_scale: 'net.haed' is not a module"):
        build("{lr_scale: {net.haed: 2}}")
    with pytest.raises(
        Exception, match=r"model.pretrained.freeze: \['net'\] covers every parameter of the task"
    ):
        build("{freeze: [net]}")
    with pytest.raises(Exception, match=r"model.pretrained: unknown key\(s\) \['frozen'\]"):
        build("{frozen: [net]}")
    task = build(f"{{ckpt_path: {pretrained_cnn}}}")
    not_a_checkpoint = tmp_path / "notes.txt"
    not_a_checkpoint.write_text("x" * 100)
    with pytest.raises(
        ConfigError,
        match=r"model.pretrained.ckpt_path: .*notes.txt .*expected a checkpoint written by python -m",
    ):
        finetuning.load_pretrained(task, finetuning.PretrainedConfig(ckpt_path=str(not_a_checkpoint)))
    with pytest.raises(InputError, match=r"model.pretrained.strict: 2 tensor\(s\) of the requested modules"):
        finetuning.load_pretrained(
            task, finetuning.PretrainedConfig(ckpt_path=str(pretrained_cnn), strict=True)
        )
    with pytest.raises(InputError, match=r"model.pretrained: no tensor of .* fits the task"):
        finetuning.load_pretrained(
            task, finetuning.PretrainedConfig(ckpt_path=str(pretrained_cnn), modules=("net.head.layers.3",))
        )


def test_a_fine_tuning_with_gradual_unfreezing_trains_under_ddp(pretrained_cnn, jet_sample, tmp_path):
    """Two gloo processes: frozen convolutions in epoch 0 (no gradient reaches them on any rank),
    released in epoch 1, and the ranks end with the same weights."""
    spec = "{ckpt_path: " + str(pretrained_cnn) + ", freeze: [net.blocks], unfreeze_after_epochs: 1}"
    run = tmp_path / "run"
    run_module(
        "hepnn.train",
        *SMALL_CNN,
        "trainer=ddp_cpu",
        "trainer.devices=2",
        "trainer.max_epochs=2",
        "+trainer.limit_train_batches=3",
        "+trainer.limit_val_batches=1",
        "callbacks.model_checkpoint.save_top_k=-1",
        f"data.files={jet_sample}/*.root",
        f"model.pretrained={spec}",
        f"data.cache_dir={tmp_path}/cache",
        f"hydra.run.dir={run}",
        "+callbacks.weights._target_=tests.support.SaveWeightsPerRank",
        f"+callbacks.weights.out_dir={tmp_path}/weights",
        *FAST,
        cwd=REPO,
        timeout=300,
    )
    source = torch.load(pretrained_cnn, map_location="cpu", weights_only=True)["state_dict"]
    epoch0 = torch.load(run / "checkpoints" / "epoch_000.ckpt", map_location="cpu", weights_only=True)
    last = checkpoint_of(run)
    key = "net.blocks.0.body.0.weight"
    assert torch.equal(epoch0["state_dict"][key], source[key])  # frozen in epoch 0
    assert not torch.equal(last["state_dict"][key], source[key])  # trained in epoch 1
    ranks = [torch.load(p, weights_only=True) for p in sorted((tmp_path / "weights").glob("rank*.pt"))]
    assert len(ranks) == 2
    for name, value in ranks[0].items():
        torch.testing.assert_close(ranks[1][name], value, msg=name)  # gradients averaged over ranks
