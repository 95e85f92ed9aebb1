"""Remote inputs (hepnn.data.remote) against a real XRootD server started on localhost.

The server tests skip, with the reason, where no server can be started (see tests/xrootd_server.py)
or the client packages are missing (``pip install hepnn[xrootd]``).
"""

from __future__ import annotations

import contextlib
import os
import sys
import time

import awkward as ak
import numpy as np
import pytest
import uproot

from hepnn.data.remote import (
    RemoteInputError,
    expand_remote,
    is_remote,
    is_xrootd,
    uproot_open_options,
    xrootd_timeout,
)
from hepnn.errors import InputError

sys.path.insert(0, os.path.dirname(__file__))
from xrootd_server import XRootDUnavailable, free_port, running_xrootd_server

KEY = "data.files"
VALUES = {
    "a_000.root": {"x": [1.5, -2.0, 3.25], "j": [[1.0, 2.0], [], [3.5]]},
    "a_001.root": {"x": [10.0, 20.0], "j": [[4.0], [5.0, 6.0, 7.0]]},
}


@pytest.fixture(scope="session")
def xrootd_server():
    """A real XRootD server for the whole session (skips the test when none can be started)."""
    pytest.importorskip("fsspec_xrootd", reason="fsspec-xrootd is not installed (pip install hepnn[xrootd])")
    pytest.importorskip(
        "XRootD.client", reason="the xrootd client is not installed (pip install hepnn[xrootd])"
    )
    stack = contextlib.ExitStack()
    try:
        server = stack.enter_context(running_xrootd_server())
    except XRootDUnavailable as exc:
        pytest.skip(f"cannot start a local XRootD server: {exc}")
    with stack:
        yield server


@pytest.fixture(scope="module")
def served(xrootd_server):
    """The server, with the two TTree files of VALUES written into its exported directory."""
    for name, values in VALUES.items():
        path = xrootd_server.directory / name
        with uproot.recreate(path) as f:
            f.mktree("tree", {"x": "float64", "j": "var * float32"})
            f["tree"].extend({"x": np.array(values["x"]), "j": ak.Array(values["j"])})
        path.chmod(0o644)  # readable by the daemon's user whatever the umask
    return xrootd_server


def test_is_remote():
    assert is_remote("root://host//data/a.root")
    assert is_remote("xroot://host//data/a.root")
    assert is_remote("https://host/a.root")
    assert not is_remote("file:///data/a.root")
    assert not is_remote("/data/a.root")
    assert not is_remote("data/x://y.root")
    assert is_xrootd("ROOT://host//a.root") and not is_xrootd("https://host/a.root")


def test_uproot_open_options_are_empty_for_local_files():
    assert uproot_open_options("/data/a.root") == {}
    assert uproot_open_options("https://host/a.root") == {}


def test_timeout_comes_from_the_environment(monkeypatch):
    monkeypatch.delenv("HEPNN_XROOTD_TIMEOUT", raising=False)
    assert xrootd_timeout() == 5
    monkeypatch.setenv("HEPNN_XROOTD_TIMEOUT", "2")
    assert xrootd_timeout() == 2
    monkeypatch.setenv("HEPNN_XROOTD_TIMEOUT", "soon")
    with pytest.raises(RemoteInputError, match="HEPNN_XROOTD_TIMEOUT"):
        xrootd_timeout()


def test_glob_in_a_non_xrootd_url_is_an_error():
    with pytest.raises(RemoteInputError, match=r"data\.files.*https://host/a_\*\.root"):
        expand_remote("https://host/a_*.root", KEY)
    assert expand_remote("https://host/a.root", KEY) == ["https://host/a.root"]


def test_missing_client_names_the_install_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "fsspec_xrootd", None)
    url = "root://localhost:1094//data/a_*.root"
    with pytest.raises(RemoteInputError) as info:
        expand_remote(url, KEY)
    message = str(info.value)
    assert KEY in message and url in message and "install hepnn[xrootd]" in message
    assert isinstance(info.value, InputError)


def test_glob_expands_on_the_server(served):
    pattern = served.url_for("a_*.root")
    assert pattern.startswith(f"root://localhost:{served.port}//")
    assert expand_remote(pattern, KEY) == [served.url_for(name) for name in sorted(VALUES)]


def test_plain_url_is_checked_and_kept(served):
    url = served.url_for("a_001.root")
    assert expand_remote(url, KEY) == [url]
    # single-slash and xroot:// spellings name the same absolute path
    alias = url.replace("root://", "xroot://").replace(f"{served.port}//", f"{served.port}/")
    assert expand_remote(alias, KEY) == [url]


@pytest.mark.parametrize("name", sorted(VALUES))
def test_uproot_reads_back_the_written_values(served, name):
    url = served.url_for(name)
    options = uproot_open_options(url)
    assert options["handler"] is uproot.source.fsspec.FSSpecSource
    with uproot.open(url, **options) as f:
        arrays = f["tree"].arrays(["x", "j"])
    assert arrays["x"].tolist() == VALUES[name]["x"]
    assert arrays["j"].tolist() == VALUES[name]["j"]


@pytest.mark.parametrize(
    ("name", "expected"), [("b_*.root", "no remote file matches"), ("a_999.root", "does not exist")]
)
def test_glob_matching_nothing_or_missing_file(served, name, expected):
    url = served.url_for(name)
    with pytest.raises(RemoteInputError) as info:
        expand_remote(url, KEY)
    message = str(info.value)
    assert KEY in message and url in message and expected in message


@pytest.mark.parametrize("name", ["a_*.root", "a_000.root"])
def test_unreachable_server_fails_within_the_timeout(xrootd_server, monkeypatch, name):
    monkeypatch.setenv("HEPNN_XROOTD_TIMEOUT", "2")
    url = f"root://localhost:{free_port()}/{xrootd_server.directory / name}"
    start = time.monotonic()
    with pytest.raises(RemoteInputError) as info:
        expand_remote(url, KEY)
    elapsed = time.monotonic() - start
    message = str(info.value)
    assert KEY in message and url in message and "cannot reach the XRootD server" in message
    assert elapsed < 6, f"took {elapsed:.1f} s with a 2 s timeout"


def test_data_module_streams_remote_files(served):
    """The loader reads a root:// glob end to end: file checks, chunks, batches with provenance."""
    from hepnn.data.datamodule import RootDataModule

    dm = RootDataModule(
        files=served.url_for("a_*.root"),
        tree="tree",
        inputs={"j": {"length": 3, "features": ["j"]}, "event": {"features": ["x"]}},
        targets={"x": "x"},
        split={"train": 0.5, "val": 0.0, "test": 0.5},
        batch_size=2,
        num_workers=1,
    )
    dm.setup()
    assert dm.source_files() == [served.url_for(name) for name in sorted(VALUES)]
    rows = {}
    for split in ("train", "test"):
        for batch in getattr(dm, f"{split}_dataloader")():
            for i, (f, e) in enumerate(
                zip(batch["file_index"].tolist(), batch["entry"].tolist(), strict=True)
            ):
                rows[(f, e)] = (batch["targets"][i, 0].item(), batch["j"][i, 0][batch["j_mask"][i]].tolist())
    expected = {
        (f, e): (values["x"][e], values["j"][e])
        for f, values in enumerate(VALUES[name] for name in sorted(VALUES))
        for e in range(len(values["x"]))
    }
    assert rows == expected
