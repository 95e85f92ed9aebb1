"""A real one-node Slurm cluster on this machine, for the batch-job tests.

:func:`start_cluster` installs Debian's ``slurm-wlm`` and ``munge`` if they are missing, writes a
``slurm.conf`` for this host into a private directory, starts ``munged`` (as the ``munge`` user),
``slurmctld`` and ``slurmd``, and waits until the node accepts jobs. Clients find the cluster
through ``SLURM_CONF`` (:meth:`SlurmCluster.env`). :meth:`SlurmCluster.stop` shuts the daemons
down again. It needs root (package installation, daemons, jobs run as the submitting user);
:func:`why_unavailable` says why a cluster cannot be started here, for ``pytest.skip``.

The configuration is what a single node without systemd or cgroups needs (from a trial of
Slurm 22.05 on this kind of machine): process tracking without cgroups, a default memory per
CPU (otherwise every job takes the whole node and jobs run one at a time), short scheduler
intervals (otherwise jobs wait up to a minute to start), and a short credential lifetime (a
requeued job waits for it before it may start again). Without ``slurmdbd`` there is no
``sacct``: callers bound every wait.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

PACKAGES = ("slurm-wlm", "munge")
DAEMONS = ("slurmctld", "slurmd", "munged", "sbatch", "scontrol")


def why_unavailable() -> str | None:
    """Why a Slurm cluster cannot be started on this machine, or None if it can."""
    if os.name != "posix" or not hasattr(os, "geteuid"):
        return "Slurm needs a POSIX system"
    if os.geteuid() != 0:
        return "starting Slurm daemons and installing slurm-wlm/munge needs root"
    if missing_programs() and shutil.which("apt-get") is None:
        return f"{', '.join(missing_programs())} missing and no apt-get to install slurm-wlm and munge"
    return None


def missing_programs() -> list[str]:
    return [p for p in DAEMONS if shutil.which(p) is None and not Path("/usr/sbin", p).exists()]


def install_packages(log: Path) -> None:
    """``apt-get install slurm-wlm munge`` (after ``apt-get update``), output appended to ``log``."""
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    with log.open("a") as out:
        for command in (
            ["apt-get", "update"],
            ["apt-get", "install", "-y", "--no-install-recommends", *PACKAGES],
        ):
            result = subprocess.run(command, stdout=out, stderr=subprocess.STDOUT, env=env, timeout=900)
            if result.returncode:
                raise RuntimeError(f"{' '.join(command)} failed ({result.returncode}); see {log}")


def program(name: str) -> str:
    found = shutil.which(name) or str(Path("/usr/sbin", name))
    if not Path(found).exists():
        raise RuntimeError(f"{name} not found after installing {', '.join(PACKAGES)}")
    return found


@dataclass
class SlurmCluster:
    """A running one-node cluster; ``directory`` holds its configuration, state and daemon logs."""

    directory: Path
    node: str
    cpus: int
    processes: list[subprocess.Popen] = field(default_factory=list)
    munge_pid_file: Path | None = None  # set when this cluster started munged

    @property
    def conf(self) -> Path:
        return self.directory / "slurm.conf"

    def env(self) -> dict[str, str]:
        """The environment of client commands (sbatch, squeue, scontrol, submitit) for this cluster."""
        return {**os.environ, "SLURM_CONF": str(self.conf)}

    def run(self, *command: str, timeout: float = 30) -> str:
        """Run a Slurm client command against this cluster; its standard output."""
        result = subprocess.run(
            list(command), env=self.env(), capture_output=True, text=True, timeout=timeout, check=False
        )
        if result.returncode:
            raise RuntimeError(f"{' '.join(command)} failed ({result.returncode}): {result.stderr.strip()}")
        return result.stdout

    def jobs(self) -> dict[str, str]:
        """Job id -> state of the jobs Slurm still knows (pending, running, completing, ...)."""
        out = self.run("squeue", "--noheader", "--array", "--format=%i %T")
        return dict(line.split() for line in out.splitlines() if line.strip())

    def daemon_logs(self) -> str:
        """The tails of the daemon logs, to explain a failed test."""
        parts = []
        for name in ("slurmctld.log", "slurmd.log"):
            path = self.directory / name
            if path.exists():
                parts.append(f"--- {path} ---\n" + "\n".join(path.read_text().splitlines()[-40:]))
        return "\n".join(parts)

    def stop(self) -> None:
        """Shut the daemons down (and munged if this cluster started it)."""
        with_timeout = {"timeout": 20, "capture_output": True, "env": self.env(), "check": False}
        subprocess.run([program("scontrol"), "shutdown"], **with_timeout)
        for process in self.processes:
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        if self.munge_pid_file is not None and self.munge_pid_file.exists():
            try:
                os.kill(int(self.munge_pid_file.read_text().strip()), signal.SIGTERM)
            except (ProcessLookupError, ValueError):
                pass
            self.munge_pid_file.unlink(missing_ok=True)


def slurm_conf(directory: Path, node: str, cpus: int, memory_mb: int) -> str:
    """A ``slurm.conf`` for one node, ``node``, on 127.0.0.1 with its state under ``directory``."""
    return f"""\
ClusterName=hepnn-test
SlurmctldHost={node}(127.0.0.1)
SlurmUser=root
SlurmdUser=root
SlurmctldPort=6817
SlurmdPort=6818
AuthType=auth/munge
CredType=cred/munge
# a requeued job may start again only when its old credential has expired (default 120 s)
AuthInfo=cred_expire=10
StateSaveLocation={directory}/state
SlurmdSpoolDir={directory}/spool
SlurmctldPidFile={directory}/slurmctld.pid
SlurmdPidFile={directory}/slurmd.pid
SlurmctldLogFile={directory}/slurmctld.log
SlurmdLogFile={directory}/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
# no systemd and no cgroups here
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
MpiDefault=none
ReturnToService=2
SchedulerType=sched/backfill
SchedulerParameters=sched_interval=1,bf_interval=1,sched_min_interval=100000
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU_Memory
# without a default, a job takes the whole node's memory and jobs run one at a time
DefMemPerCPU={max(memory_mb // (2 * cpus), 256)}
JobRequeue=1
KillWait=10
MinJobAge=60
InactiveLimit=0
SlurmctldTimeout=30
SlurmdTimeout=30
NodeName={node} NodeAddr=127.0.0.1 CPUs={cpus} RealMemory={memory_mb} State=UNKNOWN
PartitionName=debug Nodes={node} Default=YES MaxTime=INFINITE State=UP
"""


def start_munge() -> Path | None:
    """Start ``munged`` as the ``munge`` user unless one is running; its pid file if started here."""
    check = subprocess.run([program("munge"), "-n"], capture_output=True, timeout=10, check=False)
    if check.returncode == 0:
        return None
    run_dir = Path("/run/munge")
    run_dir.mkdir(parents=True, exist_ok=True)
    shutil.chown(run_dir, "munge", "munge")
    run_dir.chmod(0o755)
    key = Path("/etc/munge/munge.key")
    if not key.exists():
        subprocess.run([program("mungekey"), "--create"], check=True, timeout=30)
        shutil.chown(key, "munge", "munge")
        key.chmod(0o400)
    pid_file = run_dir / f"munged-hepnn-test-{os.getpid()}.pid"  # where the munge user may write
    subprocess.run(
        ["runuser", "-u", "munge", "--", program("munged"), f"--pid-file={pid_file}", "--force"],
        check=True,
        timeout=30,
        cwd="/",
    )
    wait_until(
        lambda: subprocess.run([program("munge"), "-n"], capture_output=True).returncode == 0, 20, "munged"
    )
    return pid_file


def wait_until(condition, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what} not ready after {timeout} s")
        time.sleep(0.2)


def start_cluster(directory: Path) -> SlurmCluster:
    """Install (if needed), configure and start a one-node Slurm under ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    if missing_programs():
        install_packages(directory / "apt.log")
    node = socket.gethostname().split(".")[0]
    cpus = os.cpu_count() or 1
    memory_mb = int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**20 * 0.8)
    for sub in ("state", "spool"):
        (directory / sub).mkdir(exist_ok=True)
    cluster = SlurmCluster(directory, node, cpus)
    cluster.conf.write_text(slurm_conf(directory, node, cpus, memory_mb))
    cluster.munge_pid_file = start_munge()
    env = cluster.env()
    # -D: stay in the foreground (children of this process, stopped by stop()); -i: ignore old state
    for daemon, args in (("slurmctld", ["-D", "-i"]), ("slurmd", ["-D"])):
        log = (directory / f"{daemon}.out").open("w")
        cluster.processes.append(
            subprocess.Popen(
                [program(daemon), *args, "-f", str(cluster.conf)],
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        )
    try:
        wait_until(lambda: _node_idle(cluster), 60, f"Slurm node {node}")
    except RuntimeError as error:
        cluster.stop()
        raise RuntimeError(f"{error}\n{cluster.daemon_logs()}") from None
    return cluster


def _node_idle(cluster: SlurmCluster) -> bool:
    for process in cluster.processes:
        if process.poll() is not None:
            raise RuntimeError(f"{process.args[0]} exited ({process.returncode})\n{cluster.daemon_logs()}")
    try:
        state = cluster.run("sinfo", "--noheader", "--format=%T", timeout=5).strip()
    except (RuntimeError, subprocess.TimeoutExpired):
        return False
    return state == "idle"
