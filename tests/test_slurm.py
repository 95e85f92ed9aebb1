"""Batch jobs through a real one-node Slurm (:mod:`tests.slurm_cluster`) and hydra's submitit
launcher (``hydra/launcher=slurm_cpu``): a multirun of two training jobs, one pre-empted by the
warning signal mid-epoch and one requeued with ``scontrol requeue``; both resume in their output
directories and finish their planned epochs; re-submitting the finished sweep runs nothing again.

Skipped with the reason where Slurm cannot be started (e.g. not root); with
``HEPNN_REQUIRE_SLURM=1`` (as in ``.ci/run``) that is an error instead, so CI cannot skip them.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import REPO
from tests.slurm_cluster import start_cluster, why_unavailable
from tests.test_ddp import N_FILES, TRAIN_ENTRIES, load_records

pytestmark = pytest.mark.slurm

EPOCHS = 3
WAIT = 300  # s: every wait is bounded (without slurmdbd, submitit cannot see a job that died)


@pytest.fixture(scope="module")
def slurm(tmp_path_factory):
    """A running one-node Slurm for this module's tests."""
    reason = why_unavailable()
    if reason:
        if os.environ.get("HEPNN_REQUIRE_SLURM") == "1":
            pytest.fail(f"HEPNN_REQUIRE_SLURM=1 but Slurm cannot be started here: {reason}")
        pytest.skip(f"no Slurm here: {reason}")
    started = time.monotonic()
    cluster = start_cluster(tmp_path_factory.mktemp("slurm"))
    print(f"Slurm started in {time.monotonic() - started:.1f} s")
    yield cluster
    cluster.stop()


def launcher_command(sweep_dir: Path, jet_sample: Path, *overrides: str) -> list[str]:
    """``python -m hepnn.train -m`` through ``slurm_cpu`` (1 CPU per task) on the session sample."""
    return [
        sys.executable,
        "-m",
        "hepnn.train",
        "-m",
        "hydra/launcher=slurm_cpu",
        "hydra.launcher.cpus_per_task=1",
        "hydra.launcher.mem_gb=3",
        "hydra.launcher.timeout_min=30",
        f"hydra.sweep.dir={sweep_dir}",
        f"data.files={jet_sample}/*.root",
        "data.batch_size=64",
        *overrides,
    ]


def sweep_command(jet_sample: Path, tmp: Path) -> list[str]:
    """Two small jobs (seeds 1 and 2); each execution of each job records its training entries in
    ``record/<job>/<execution>``."""
    record = f"{tmp}/record/${{hydra:job.num}}/${{oc.env:SLURM_RESTART_COUNT,0}}"
    return launcher_command(
        tmp / "sweep",
        jet_sample,
        "data.num_workers=2",
        "callbacks.early_stopping=null",
        f"trainer.max_epochs={EPOCHS}",
        "+callbacks.record._target_=tests.support.RecordEntries",
        f"+callbacks.record.out_dir={record}",
        "+callbacks.record.delay=0.2",  # about 4 s per epoch: time to interrupt one
        "seed=1,2",
    )


def wait_for(path: Path, process: subprocess.Popen, what: str) -> None:
    deadline = time.monotonic() + WAIT
    while not path.exists():
        assert process.poll() is None, f"the sweep ended ({process.returncode}) before {what}"
        assert time.monotonic() < deadline, f"no {what} after {WAIT} s"
        time.sleep(0.2)


def array_job(cluster, sweep_dir: Path) -> str:
    """The Slurm array job id of the sweep (submitit names its folders ``<array>_<task>``)."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        names = [p.name for p in (sweep_dir / ".submitit").glob("*_0")]
        if names:
            return names[0].split("_")[0]
        time.sleep(0.2)
    raise AssertionError(f"no submitit job folder in {sweep_dir / '.submitit'}")


def job_logs(sweep_dir: Path) -> str:
    parts = []
    for path in sorted(sweep_dir.glob(".submitit/*/*_log.*")):
        lines = [line for line in path.read_text(errors="replace").splitlines() if "sacct" not in line]
        parts.append(f"--- {path} ---\n" + "\n".join(lines[-30:]))
    return "\n".join(parts)


@pytest.fixture(scope="module")
def sweep(slurm, jet_sample, tmp_path_factory):
    """Run the sweep; job 0 gets SIGUSR2 during its second epoch (what Slurm sends before the time
    limit), job 1 is requeued with ``scontrol requeue`` during its second epoch."""
    tmp = tmp_path_factory.mktemp("slurm_sweep")
    log_path = tmp / "sweep.log"
    started = time.monotonic()
    with log_path.open("w") as log:
        process = subprocess.Popen(
            sweep_command(jet_sample, tmp), cwd=REPO, env=slurm.env(), stdout=log, stderr=subprocess.STDOUT
        )
        array = None
        try:
            wait_for(tmp / "record" / "0" / "0" / "rank0.json", process, "job 0's first epoch")
            array = array_job(slurm, tmp / "sweep")
            time.sleep(1.0)
            slurm.run("scancel", "--signal=USR2", f"{array}_0")
            wait_for(tmp / "record" / "1" / "0" / "rank0.json", process, "job 1's first epoch")
            time.sleep(1.0)
            slurm.run("scontrol", "requeue", f"{array}_1")
            returncode = process.wait(timeout=WAIT)
        except BaseException:
            process.kill()
            process.wait()
            raise AssertionError(
                f"{log_path.read_text()[-3000:]}\n{job_logs(tmp / 'sweep')}\n{slurm.daemon_logs()}"
            ) from None
        finally:
            if array is not None:
                subprocess.run(["scancel", array], env=slurm.env(), capture_output=True, check=False)
    wall = time.monotonic() - started
    print(f"Slurm sweep of two jobs (one pre-empted, one requeued): {wall:.0f} s")
    return tmp, returncode, log_path.read_text()


def executions(tmp: Path, job: int) -> dict[str, dict[str, list[tuple[int, int]]]]:
    """Execution (0: first, 1: after requeue) -> epoch -> training entries of job ``job``."""
    runs = {}
    for directory in sorted((tmp / "record" / str(job)).iterdir()):
        (record,) = load_records(directory)
        runs[directory.name] = {e: [tuple(p) for p in pairs] for e, pairs in record["epochs"].items()}
    return runs


def test_multirun_of_two_jobs_completes_with_checkpoints_and_metrics(sweep):
    tmp, returncode, log = sweep
    assert returncode == 0, log[-3000:] + job_logs(tmp / "sweep")
    for job in ("0", "1"):
        out = tmp / "sweep" / job
        summary = json.loads((out / "summary.json").read_text())
        assert summary["epochs"] == EPOCHS and 0.5 < summary["test/auc"] <= 1.0
        assert (out / "checkpoints" / "last.ckpt").is_file() and (out / "predictions" / "test.root").is_file()
        assert (out / "csv" / "metrics.csv").is_file()
        assert summary["output_dir"] == str(out)
    configs = [(tmp / "sweep" / j / "config.yaml").read_text() for j in ("0", "1")]
    assert "seed: 1" in configs[0] and "seed: 2" in configs[1]


def test_preempted_job_resumes_mid_epoch_and_sees_every_entry_once_per_epoch(sweep):
    tmp, _, _ = sweep
    runs = executions(tmp, 0)
    assert sorted(runs) == ["0", "1"]  # stopped once, requeued by submitit, finished
    assert sorted(runs["0"]) == ["0", "1"] and sorted(runs["1"]) == ["1", "2"]
    assert 0 < len(runs["0"]["1"]) < len(runs["1"]["1"]) + len(runs["0"]["1"])
    expected = {(f, e) for f in range(N_FILES) for e in TRAIN_ENTRIES}
    for epoch in ("0", "1", "2"):
        seen = runs["0"].get(epoch, []) + runs["1"].get(epoch, [])
        assert len(seen) == len(expected) and set(seen) == expected, f"epoch {epoch}"
    log = (tmp / "sweep" / "0" / "train.log").read_text()
    assert "SIGUSR2 received: checkpoint of epoch 1" in log
    assert "resuming from" in log and "preempted.ckpt" in log


def test_requeued_job_resumes_from_its_last_epoch_and_finishes_the_planned_epochs(sweep):
    tmp, _, _ = sweep
    runs = executions(tmp, 1)
    assert sorted(runs) == ["0", "1"]
    assert "0" in runs["0"] and sorted(runs["1"]) == ["1", "2"]  # epoch 1 was interrupted: run again
    expected = {(f, e) for f in range(N_FILES) for e in TRAIN_ENTRIES}
    for epoch, seen in [("0", runs["0"]["0"]), ("1", runs["1"]["1"]), ("2", runs["1"]["2"])]:
        assert len(seen) == len(expected) and set(seen) == expected, f"epoch {epoch}"
    log = (tmp / "sweep" / "1" / "train.log").read_text()
    assert "stopped by SIGTERM" in log and "last.ckpt" in log.split("resuming from", 1)[1].splitlines()[0]


def test_resubmitting_the_finished_sweep_runs_nothing_again(sweep, slurm, jet_sample):
    tmp, returncode, _ = sweep
    assert returncode == 0
    summaries = [(tmp / "sweep" / j / "summary.json").read_text() for j in ("0", "1")]
    result = subprocess.run(
        sweep_command(jet_sample, tmp),
        cwd=REPO,
        env=slurm.env(),
        capture_output=True,
        text=True,
        timeout=WAIT,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    for job, summary in zip(("0", "1"), summaries, strict=True):
        assert (tmp / "sweep" / job / "summary.json").read_text() == summary
        assert "finished before" in (tmp / "sweep" / job / "train.log").read_text()
        assert sorted(p.name for p in (tmp / "record" / job).iterdir()) == ["0", "1"]  # no new training


def test_two_tasks_of_one_job_train_as_two_ddp_ranks(slurm, jet_sample, tmp_path):
    """``slurm_cpu`` with ``trainer=ddp_cpu trainer.devices=2``: Slurm starts two tasks (one per
    device, as ``slurm_gpu_node`` does for GPUs), Lightning's SLURM environment makes them ranks 0
    and 1 of one gloo run: one output directory, a log file per rank, and predictions with each
    test entry exactly once."""
    import uproot

    command = launcher_command(
        tmp_path / "sweep",
        jet_sample,
        "trainer=ddp_cpu",
        "trainer.devices=2",
        "trainer.max_epochs=2",
        "data.eval_batch_size=50",
        "data.num_workers=1",
    )
    result = subprocess.run(command, cwd=REPO, env=slurm.env(), capture_output=True, text=True, timeout=WAIT)
    out = tmp_path / "sweep" / "0"
    assert result.returncode == 0, (
        result.stdout[-3000:] + result.stderr[-2000:] + job_logs(tmp_path / "sweep")
    )
    (script,) = (tmp_path / "sweep" / ".submitit").glob("*/*_submission.sh")
    assert "#SBATCH --ntasks-per-node=2" in script.read_text()
    summary = json.loads((out / "summary.json").read_text())
    assert summary["epochs"] == 2
    assert (out / "train.log").is_file() and (out / "train.rank1.log").is_file()
    assert (out / ".hydra" / "config.yaml").is_file()  # written by rank zero
    assert "GLOBAL_RANK: 0, MEMBER: 1/2" in (out / "train.log").read_text()
    assert "GLOBAL_RANK: 1, MEMBER: 2/2" in (out / "train.rank1.log").read_text()
    predictions = uproot.open(out / "predictions" / "test.root")["predictions"].arrays(library="np")
    pairs = set(zip(predictions["file_index"].tolist(), predictions["entry"].tolist(), strict=True))
    assert len(pairs) == len(predictions["entry"]) == N_FILES * 60


def test_own_sbatch_script_reaches_its_time_limit_and_requeues_itself(slurm, jet_sample, tmp_path):
    """A plain ``sbatch`` script (no submitit) with a two-minute time limit and
    ``--signal=USR2@60``: Slurm itself sends the warning, hepnn checkpoints and requeues the job
    with ``scontrol requeue``, and the job goes on in the same output directory until its planned
    epochs are done, every epoch over all executions seeing each training entry exactly once."""
    epochs = 16  # 58 s of sleeps plus start-up: longer than an execution lasts before the warning
    run, record = tmp_path / "run", tmp_path / "record"
    overrides = [
        f"hydra.run.dir={run}",
        f"data.files='{jet_sample}/*.root'",
        "data.batch_size=64",
        "data.num_workers=2",
        "callbacks.early_stopping=null",
        f"trainer.max_epochs={epochs}",
        "+callbacks.record._target_=tests.support.RecordEntries",
        f"'+callbacks.record.out_dir={record}/${{oc.env:SLURM_RESTART_COUNT,0}}'",
        "+callbacks.record.delay=0.2",
    ]
    script = tmp_path / "job.sh"
    script.write_text(
        "#!/bin/bash\n"
        "#SBATCH --time=2\n"
        "#SBATCH --signal=USR2@60\n"  # Slurm sends it 5-25 s early: 35-55 s into each execution
        "#SBATCH --requeue\n"
        "#SBATCH --cpus-per-task=1\n"
        "#SBATCH --mem=3G\n"
        f"#SBATCH --output={tmp_path}/slurm-%j.out\n"
        "#SBATCH --open-mode=append\n"
        f"cd {REPO}\n"
        f"srun {sys.executable} -m hepnn.train {' '.join(overrides)}\n"
    )
    job = slurm.run("sbatch", "--parsable", str(script)).strip()
    deadline = time.monotonic() + 2 * WAIT
    while job in slurm.jobs():
        if time.monotonic() > deadline:
            subprocess.run(["scancel", job], env=slurm.env(), check=False)
            raise AssertionError(f"job {job} not done after {2 * WAIT} s:\n{slurm.daemon_logs()}")
        time.sleep(1)
    output = "\n".join(p.read_text(errors="replace") for p in tmp_path.glob("slurm-*.out"))
    summary_path = run / "summary.json"
    assert summary_path.is_file(), output[-4000:]
    assert json.loads(summary_path.read_text())["epochs"] == epochs
    log = (run / "train.log").read_text()
    assert f"requeue: Slurm job {job} requeued" in log and "resuming from" in log
    runs = {}
    for directory in sorted(record.iterdir()):
        (recorded,) = load_records(directory)
        runs[directory.name] = {e: [tuple(p) for p in pairs] for e, pairs in recorded["epochs"].items()}
    assert len(runs) >= 2  # requeued at least once
    expected = {(f, e) for f in range(N_FILES) for e in TRAIN_ENTRIES}
    for epoch in map(str, range(epochs)):
        seen = [pair for execution in runs.values() for pair in execution.get(epoch, [])]
        assert len(seen) == len(expected) and set(seen) == expected, f"epoch {epoch}"
