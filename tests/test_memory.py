"""Keeping freed memory (hepnn.utils.memory): a process reuses what it freed instead of new pages."""

import subprocess
import sys

import pytest

from tests.conftest import compose_train

PROBE = """
import resource, sys

import numpy as np

from hepnn.utils.memory import keep_freed_memory

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
def test_training_and_evaluation_keep_freed_memory_unless_configured_not_to(keep, tmp_path, monkeypatch):
    import hepnn.evaluate
    import hepnn.training
    from tests.test_evaluate import compose_evaluate

    calls = []
    monkeypatch.setattr(hepnn.training, "keep_freed_memory", lambda: calls.append("train"))
    monkeypatch.setattr(hepnn.evaluate, "keep_freed_memory", lambda: calls.append("evaluate"))
    (tmp_path / "summary.json").write_text('{"finished": true}')  # a finished run: nothing else runs
    cfg = compose_train(f"paths.output_dir={tmp_path}", f"keep_freed_memory={keep}")
    assert hepnn.training.train(cfg) == {"finished": True}
    cfg = compose_evaluate(
        f"paths.output_dir={tmp_path}", f"ckpt_path={tmp_path}/none.ckpt", f"keep_freed_memory={keep}"
    )
    with pytest.raises(hepnn.evaluate.CheckpointError):  # after the setting, before any work
        hepnn.evaluate.evaluate(cfg)
    assert calls == (["train", "evaluate"] if keep else [])
    assert compose_train().keep_freed_memory is True and compose_evaluate("ckpt_path=x").keep_freed_memory
