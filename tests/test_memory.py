"""Keeping freed memory (hepnn.data.loading.memory): a process reuses what it freed instead of new pages."""

import subprocess
import sys

import pytest

from tests.conftest import compose_train, make_datamodule

PROBE = """
import resource, sys

import numpy as np

from hepnn.data.loading.memory import keep_freed_memory

if sys.argv[1] == "keep":
    assert keep_freed_memory()


def page_faults_of_a_new_array():
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    block = np.ones(64 << 20, dtype=np.uint8)  # 64 MB, written once
    del block
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before


print(*[page_faults_of_a_new_array() for _ in range(4)])
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's allocator")
def test_a_process_that_keeps_freed_memory_allocates_again_without_page_faults():
    """The same 64 MB array made four times: by default every one comes as new pages (16384
    page faults, or 32 and more with transparent huge pages); kept, only the first one does."""
    faults = {}
    for mode in ("keep", "default"):
        result = subprocess.run(
            [sys.executable, "-c", PROBE, mode], capture_output=True, text=True, timeout=120
        )
        assert result.returncode == 0, result.stderr[-3000:]
        faults[mode] = [int(n) for n in result.stdout.split()]
    assert all(n >= 32 for n in faults["default"]), faults
    assert faults["keep"][0] >= 32 and all(n < 10 for n in faults["keep"][1:]), faults


@pytest.mark.parametrize("keep", [True, False])
def test_the_data_module_keeps_freed_memory_unless_configured_not_to(keep, jet_sample, monkeypatch):
    import hepnn.data.datamodule
    from tests.test_evaluate import compose_evaluate

    calls = []
    monkeypatch.setattr(hepnn.data.datamodule, "keep_freed_memory", lambda: calls.append("setup"))
    datamodule = make_datamodule(f"{jet_sample}/*.root", keep_freed_memory=keep)
    datamodule.setup("test")
    assert calls == (["setup"] if keep else [])
    assert compose_train().data.keep_freed_memory is True
    assert compose_evaluate("ckpt_path=x", f"data.keep_freed_memory={keep}").data.keep_freed_memory is keep
