"""Pre-emption without a batch system: the warning signal checkpoints mid-epoch on every rank and
stops the run; the same command resumes it exactly; a finished run is not run again."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from hepnn.errors import ConfigError
from hepnn.runtime.preemption import parse_signal, resume_checkpoint
from hepnn.utils.config import on_rank_zero, rank_suffix
from tests.conftest import REPO, run_module
from tests.test_ddp import N_FILES, TRAIN_ENTRIES, ddp_overrides, load_records, wait_for

EPOCHS = 3


def test_signal_names():
    assert parse_signal("USR2") == parse_signal("SIGUSR2") == parse_signal(12) == signal.SIGUSR2
    with pytest.raises(ConfigError, match=r"callbacks\.preemption\.signal: 'USR9' is not a signal"):
        parse_signal("USR9")


def test_the_newest_checkpoint_is_resumed(tmp_path):
    assert resume_checkpoint(tmp_path) is None
    (tmp_path / "checkpoints").mkdir()
    last, preempted = tmp_path / "checkpoints" / "last.ckpt", tmp_path / "checkpoints" / "preempted.ckpt"
    preempted.write_text("mid-epoch")
    last.write_text("end of a later epoch")
    os.utime(preempted, ns=(1_000_000_000, 1_000_000_000))
    assert resume_checkpoint(tmp_path) == last
    os.utime(preempted, ns=(4_000_000_000_000_000_000, 4_000_000_000_000_000_000))
    assert resume_checkpoint(tmp_path) == preempted


def test_rank_suffix_of_log_files():
    assert rank_suffix({}) == ""
    assert rank_suffix({"RANK": "0"}) == "" and rank_suffix({"RANK": "3"}) == ".rank3"
    assert rank_suffix({"SLURM_NTASKS": "4", "SLURM_PROCID": "2"}) == ".rank2"
    assert rank_suffix({"SLURM_NTASKS": "1", "SLURM_PROCID": "0"}) == ""
    assert rank_suffix({"LOCAL_RANK": "1", "NODE_RANK": "0"}) == ".rank1"
    assert rank_suffix({"LOCAL_RANK": "0", "NODE_RANK": "1"}) == ".node1.rank0"
    assert on_rank_zero(".hydra", {"SLURM_NTASKS": "2", "SLURM_PROCID": "0"}) == ".hydra"
    assert on_rank_zero(".hydra", {"SLURM_NTASKS": "2", "SLURM_PROCID": "1"}) is None


def epochs_of_run(record_dir) -> dict[str, list[list[tuple[int, int]]]]:
    """Per epoch, the training entries of each rank (a list per rank) recorded in ``record_dir``."""
    epochs: dict[str, list] = {}
    for record in load_records(record_dir):
        for epoch, pairs in record["epochs"].items():
            epochs.setdefault(epoch, []).append([tuple(p) for p in pairs])
    return epochs


def test_signal_mid_epoch_checkpoints_all_ranks_and_the_same_command_resumes_exactly(jet_sample, tmp_path):
    """SIGUSR2 to rank zero of a two-process run stops both ranks after the same batch with
    ``preempted.ckpt`` (exit status 128 + 12); running the same command again continues the
    interrupted epoch with exactly the entries not yet trained, and finishes the planned epochs:
    over both executions every epoch sees every training entry exactly once. A third run of the
    command finds the run finished and does nothing."""
    run = tmp_path / "run"

    def command(record: str, *extra: str) -> list[str]:
        return ddp_overrides(jet_sample, run, tmp_path / record, f"trainer.max_epochs={EPOCHS}", *extra)

    log = (tmp_path / "first.log").open("w")
    first = subprocess.Popen(
        [sys.executable, "-m", "hepnn.train", *command("rec1", "+callbacks.record.delay=0.25")],
        cwd=REPO,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        wait_for(tmp_path / "rec1" / "rank0.json", first)  # epoch 0 done
        time.sleep(1.0)
        first.send_signal(signal.SIGUSR2)  # rank zero only: the ranks agree to stop
        assert first.wait(timeout=60) == 128 + signal.SIGUSR2
    finally:
        first.kill()
        log.close()
    output = (tmp_path / "first.log").read_text()
    assert "not a Slurm job: not requeued" in output
    assert (run / "checkpoints" / "preempted.ckpt").is_file() and not (run / "summary.json").exists()
    interrupted = epochs_of_run(tmp_path / "rec1")
    assert sorted(interrupted) == ["0", "1"]
    assert len(interrupted["1"]) == 2 and len(interrupted["1"][0]) == len(interrupted["1"][1]) > 0

    second = run_module("hepnn.train", *command("rec2"), cwd=REPO, timeout=300)
    assert f"resuming from {run / 'checkpoints' / 'preempted.ckpt'}" in second.stdout + second.stderr
    resumed = epochs_of_run(tmp_path / "rec2")
    assert sorted(resumed) == ["1", "2"]
    expected = {(f, e) for f in range(N_FILES) for e in TRAIN_ENTRIES}
    for epoch in ("0", "1", "2"):
        seen = [pair for part in (interrupted, resumed) for rank in part.get(epoch, []) for pair in rank]
        assert len(seen) == len(expected) and set(seen) == expected, f"epoch {epoch}"
    summary = json.loads((run / "summary.json").read_text())
    assert summary["epochs"] == EPOCHS
    assert (run / "train.log").is_file() and (run / "train.rank1.log").is_file()  # a log file per rank

    third = run_module("hepnn.train", *command("rec3"), cwd=REPO, timeout=120)
    assert "finished before" in third.stdout + third.stderr
    assert not (tmp_path / "rec3").exists()
    assert json.loads((run / "summary.json").read_text()) == summary
