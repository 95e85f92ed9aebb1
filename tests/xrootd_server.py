"""A real XRootD server on localhost for tests: installed with apt if missing, run as a subprocess.

:func:`running_xrootd_server` starts ``xrootd`` (from the Debian package ``xrootd-server``) on a
free port, exporting a fresh temporary directory without authentication, and stops it on exit.
It raises :class:`XRootDUnavailable` when no server can be had (no binary and no way to install
it, or a daemon that does not come up), which a fixture turns into ``pytest.skip``.

As root the daemon refuses to run unless told which user to become (``-R <user>``); it runs as
the package's ``xrootd`` user, or ``nobody``, so the served directory is world-readable.
Set ``HEPNN_XROOTD_NO_INSTALL=1`` to never call apt-get.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

INSTALL_TIMEOUT = 600
START_TIMEOUT = 30
NO_INSTALL_ENV = "HEPNN_XROOTD_NO_INSTALL"
READY_LINE = "initialization completed"


class XRootDUnavailable(RuntimeError):
    """No local XRootD server can be started here; the message says why."""


@dataclass(frozen=True)
class XRootDServer:
    """A running server: its port, the exported directory and the daemon's log file."""

    port: int
    directory: Path
    log: Path

    @property
    def url(self) -> str:
        """The base URL, ``root://localhost:<port>/``."""
        return f"root://localhost:{self.port}/"

    def url_for(self, name: str) -> str:
        """The URL of ``name`` (relative to the served directory): ``root://localhost:<port>//<dir>/<name>``."""
        return f"{self.url}{self.directory / name}"


def free_port() -> int:
    """A TCP port on localhost that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def ensure_xrootd_binary(timeout: float = INSTALL_TIMEOUT) -> str:
    """Path of the ``xrootd`` daemon, installing ``xrootd-server`` with apt-get if missing (as root)."""
    found = shutil.which("xrootd")
    if found:
        return found
    if os.environ.get(NO_INSTALL_ENV):
        raise XRootDUnavailable(f"no xrootd binary and {NO_INSTALL_ENV} is set")
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        raise XRootDUnavailable(
            "no xrootd binary, and apt-get (as root) is not available to install xrootd-server"
        )
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    script = "apt-get update -q && apt-get install -y -q --no-install-recommends xrootd-server"
    try:
        result = subprocess.run(
            ["sh", "-c", script], env=env, capture_output=True, text=True, timeout=timeout, check=False
        )
    except subprocess.TimeoutExpired:
        raise XRootDUnavailable(f"installing xrootd-server took more than {timeout:.0f} s") from None
    found = shutil.which("xrootd")
    if result.returncode != 0 or not found:
        tail = (result.stdout + result.stderr).strip()[-800:]
        raise XRootDUnavailable(f"installing xrootd-server failed (exit {result.returncode}): {tail}")
    return found


def _run_as_user() -> str | None:
    """The user the daemon switches to when started as root (``-R``); None when not root."""
    if os.geteuid() != 0:
        return None
    for name in ("xrootd", "nobody"):
        with contextlib.suppress(KeyError):
            return pwd.getpwnam(name).pw_name
    raise XRootDUnavailable("running as root, but there is no 'xrootd' or 'nobody' user to run xrootd as")


def _write_config(base: Path, port: int, user: str | None) -> Path:
    """A minimal config: the port, the exported ``data`` directory, state files under ``state``."""
    data, state = base / "data", base / "state"
    data.mkdir(mode=0o755)
    state.mkdir(mode=0o755)
    os.chmod(base, 0o755)  # mkdtemp makes it 0700: the daemon's user must reach data/
    if user is not None:
        shutil.chown(state, user)
    config = base / "xrootd.cfg"
    config.write_text(
        f"xrd.port {port}\nall.export {data}\nall.adminpath {state}\nall.pidpath {state}\n", encoding="utf-8"
    )
    return config


def _wait_until_ready(process: subprocess.Popen, port: int, log: Path, timeout: float) -> None:
    """Wait until the daemon logged the end of its start-up and accepts connections on ``port``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise XRootDUnavailable(f"xrootd exited with status {process.returncode}: {_tail(log)}")
        if READY_LINE in log.read_text(errors="replace"):
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        time.sleep(0.1)
    raise XRootDUnavailable(
        f"xrootd did not accept connections on port {port} within {timeout:.0f} s: {_tail(log)}"
    )


def _tail(log: Path, n: int = 800) -> str:
    """The end of the daemon's log, for error messages."""
    return log.read_text(errors="replace").strip()[-n:] if log.exists() else "(no log)"


def _stop(process: subprocess.Popen) -> None:
    """Terminate the daemon, killing it if it does not exit within 10 s."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


@contextlib.contextmanager
def running_xrootd_server(start_timeout: float = START_TIMEOUT) -> Iterator[XRootDServer]:
    """Start an XRootD server exporting a fresh temporary directory; stop it and clean up on exit.

    Raises :class:`XRootDUnavailable` (before yielding) when it cannot be started.
    """
    binary = ensure_xrootd_binary()
    user = _run_as_user()
    base = Path(tempfile.mkdtemp(prefix="hepnn-xrootd-"))
    try:
        port = free_port()
        config = _write_config(base, port, user)
        log = base / "xrootd.log"
        command = [binary, "-c", str(config), "-n", "hepnn-test", *(["-R", user] if user else [])]
        with log.open("w") as out:
            process = subprocess.Popen(
                command, cwd=base / "state", stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT
            )
        try:
            _wait_until_ready(process, port, log, start_timeout)
            yield XRootDServer(port=port, directory=base / "data", log=log)
        finally:
            _stop(process)
    finally:
        shutil.rmtree(base, ignore_errors=True)
