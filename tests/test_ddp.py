"""Data-parallel training over two gloo CPU processes (``trainer=ddp_cpu``) from the command line:
one run directory, outputs written by rank zero only, every entry seen exactly once per epoch and
tested exactly once, losses synchronised across ranks."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections import Counter

import pytest
import torch
import uproot

from tests.conftest import REPO, run_module

ENTRIES_PER_FILE = 400
N_FILES = 4
TRAIN_ENTRIES = range(0, 280)  # the first 70 % of each file's entries (data.split, no selection)
TEST_ENTRIES = range(340, 400)  # the last 15 %
EPOCHS = 2


def ddp_overrides(jet_sample, run_dir, record_dir, *extra: str) -> list[str]:
    """``python -m hepnn.train`` overrides of a small two-process gloo run recording its entries."""
    return [
        "trainer=ddp_cpu",
        "trainer.devices=2",
        "data.batch_size=64",
        "data.eval_batch_size=50",
        "data.num_workers=0",
        "callbacks.early_stopping=null",
        f"data.files={jet_sample}/*.root",
        f"hydra.run.dir={run_dir}",
        "+callbacks.record._target_=tests.support.RecordEntries",
        f"+callbacks.record.out_dir={record_dir}",
        *extra,
    ]


@pytest.fixture(scope="module")
def ddp_run(jet_sample, tmp_path_factory):
    """Two epochs of two-process DDP on the session sample, recording every rank's training entries."""
    tmp = tmp_path_factory.mktemp("ddp")
    overrides = ddp_overrides(jet_sample, tmp / "run", tmp / "record", f"trainer.max_epochs={EPOCHS}")
    # cwd: tests.support is importable from the repository root
    result = run_module("hepnn.train", *overrides, cwd=REPO, timeout=300)
    return tmp, result


def load_records(record_dir) -> list[dict]:
    """The per-rank records of :class:`tests.support.RecordEntries`, by rank."""
    records = [json.loads(p.read_text()) for p in sorted(record_dir.glob("rank*.json"))]
    return sorted(records, key=lambda r: r["rank"])


def test_one_run_directory_written_by_rank_zero(ddp_run):
    tmp, result = ddp_run
    assert sorted(p.name for p in tmp.iterdir()) == ["record", "run"]
    run = tmp / "run"
    assert (run / "config.yaml").is_file() and (run / "summary.json").is_file()
    assert sorted(p.name for p in (run / "predictions").iterdir()) == ["test.root"]
    assert not list(run.glob("**/*ddp_process*"))  # no per-rank Hydra outputs from the relaunched rank
    assert result.stdout.count("hepnn run summary") == 1  # only rank zero reports
    summary = json.loads((run / "summary.json").read_text())
    assert summary["epochs"] == EPOCHS and summary["data/train_entries"] == N_FILES * len(TRAIN_ENTRIES)


def test_predictions_hold_every_test_entry_once(ddp_run):
    tmp, _ = ddp_run
    predictions = uproot.open(tmp / "run" / "predictions" / "test.root")["predictions"].arrays(library="np")
    pairs = list(zip(predictions["file_index"].tolist(), predictions["entry"].tolist(), strict=True))
    assert len(pairs) == N_FILES * len(TEST_ENTRIES)
    assert not [pair for pair, n in Counter(pairs).items() if n > 1]
    assert set(pairs) == {(f, e) for f in range(N_FILES) for e in TEST_ENTRIES}


def test_each_epoch_sees_every_training_entry_once_over_both_ranks(ddp_run):
    tmp, _ = ddp_run
    records = load_records(tmp / "record")
    assert [(r["rank"], r["world_size"]) for r in records] == [(0, 2), (1, 2)]
    expected = {(f, e) for f in range(N_FILES) for e in TRAIN_ENTRIES}
    for epoch in map(str, range(EPOCHS)):
        per_rank = [[tuple(p) for p in r["epochs"][epoch]] for r in records]
        assert all(per_rank), f"epoch {epoch}: a rank trained on nothing"
        assert not set(per_rank[0]) & set(per_rank[1]), f"epoch {epoch}: ranks share entries"
        seen = per_rank[0] + per_rank[1]
        assert len(seen) == len(expected) and set(seen) == expected, f"epoch {epoch}"
    assert records[0]["epochs"]["0"] != records[0]["epochs"]["1"]  # reshuffled every epoch


def test_losses_are_synchronised_across_ranks(ddp_run):
    tmp, _ = ddp_run
    records = load_records(tmp / "record")
    assert records[0]["val_loss"] == pytest.approx(records[1]["val_loss"], rel=1e-6)
    assert records[0]["test_loss"] == pytest.approx(records[1]["test_loss"], rel=1e-6)
    summary = json.loads((tmp / "run" / "summary.json").read_text())
    assert summary["test/loss"] == pytest.approx(records[0]["test_loss"], rel=1e-6)


def epochs_of(record_dir) -> dict[str, list[tuple[int, int]]]:
    """The training entries of every finished epoch, both ranks together."""
    epochs: dict[str, list[tuple[int, int]]] = {}
    for record in load_records(record_dir):
        for epoch, pairs in record["epochs"].items():
            epochs.setdefault(epoch, []).extend(tuple(p) for p in pairs)
    return epochs


def wait_for(path, process: subprocess.Popen, timeout: float = 120) -> None:
    """Wait until ``path`` exists (fails if ``process`` ends first or the time runs out)."""
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert process.poll() is None, f"the run ended ({process.returncode}) before {path} appeared"
        assert time.monotonic() < deadline, f"no {path} after {timeout} s"
        time.sleep(0.1)


def test_sigterm_mid_epoch_then_resume_loses_and_repeats_no_epoch(jet_sample, tmp_path):
    """A run stopped by SIGTERM in its second epoch exits with 143; resuming from ``last.ckpt``
    trains exactly the remaining epochs, each over the whole training split once."""
    slow = "+callbacks.record.delay=0.25"  # about 2 s per epoch: time to stop one mid-way
    first = ddp_overrides(jet_sample, tmp_path / "run1", tmp_path / "rec1", "trainer.max_epochs=3", slow)
    log = (tmp_path / "run1.log").open("w")
    process = subprocess.Popen(
        [sys.executable, "-m", "hepnn.train", *first], cwd=REPO, stdout=log, stderr=subprocess.STDOUT
    )
    try:
        wait_for(tmp_path / "rec1" / "rank0.json", process)  # epoch 0 done, its checkpoint saved
        time.sleep(0.5)
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=60) == 143
    finally:
        process.kill()
        log.close()
    interrupted = epochs_of(tmp_path / "rec1")
    assert sorted(interrupted) == ["0", "1"]  # stopped during epoch 1
    assert len(interrupted["1"]) < N_FILES * len(TRAIN_ENTRIES)
    last = tmp_path / "run1" / "checkpoints" / "last.ckpt"
    assert f"resume with ckpt_path={last}" in (tmp_path / "run1.log").read_text()

    second = ddp_overrides(jet_sample, tmp_path / "run2", tmp_path / "rec2", "trainer.max_epochs=3")
    run_module("hepnn.train", *second, f"ckpt_path={last}", cwd=REPO, timeout=300)
    resumed = epochs_of(tmp_path / "rec2")
    assert sorted(resumed) == ["1", "2"]
    expected = {(f, e) for f in range(N_FILES) for e in TRAIN_ENTRIES}
    for epoch, seen in resumed.items():
        assert len(seen) == len(expected) and set(seen) == expected, f"epoch {epoch}"
    summary = json.loads((tmp_path / "run2" / "summary.json").read_text())
    assert summary["epochs"] == 3
    final = torch.load(tmp_path / "run2" / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert final["epoch"] == 2
