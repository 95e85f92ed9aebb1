"""Every experiment preset composes, builds its net and runs one batch of every stage
(``fast_dev_run``) on a small generated sample of its kind."""

from __future__ import annotations

import pytest

from tests.test_config import presets
from tests.test_train import run_training

SAMPLES = {"top": "jet_sample", "qg": "qg_sample", "jets4": "jets4_sample"}


@pytest.mark.parametrize("experiment", presets("experiment"))
def test_every_preset_runs_a_fast_dev_run(experiment, request, tmp_path):
    sample = request.getfixturevalue(SAMPLES[experiment.split("_")[0]])
    summary = run_training(
        tmp_path,
        f"experiment={experiment}",
        "debug=fdr",
        f"data.files={sample}/*.root",
        f"data.cache_dir={tmp_path}/cache",
        "data.batch_size=32",
        "data.eval_batch_size=64",
    )
    assert summary["parameters"] > 1000
    assert 0.0 <= summary["test/acc"] <= 1.0 and "test/loss" in summary
    if experiment.startswith("jets4"):
        confusion = summary["test/confusion_matrix"]
        assert confusion["classes"] == ["QCD", "Tbqq", "Wqq", "Zqq"]
        assert sum(map(sum, confusion["rows_true_columns_predicted"])) == 64  # one test batch
        assert {f"test/auc_{c}" for c in confusion["classes"]} <= set(summary)
