"""Every experiment preset composes, builds its net and runs one batch of every stage
(``fast_dev_run``) on a small generated sample of its kind."""

from __future__ import annotations

import pytest

from tests.test_config import presets
from tests.test_train import run_training

SAMPLES = {
    "top": "jet_sample",
    "qg": "qg_sample",
    "jets4": "jets4_sample",
    "airshower": "airshower_sample",
    "pileup": "qcd_pu_sample",
    "events": "events_sample",
}
FILES = {"pileup": "qcd_*.root"}  # not the minimum-bias pool beside the jets
REGRESSION_FIGURES = {  # figures of the air-shower presets, by the targets they train
    "airshower_3dconv": {
        "test/angular_resolution_deg",
        "test/core_resolution_m",
        "test/energy_resolution",
        "test/xmax_resolution",
    },
    "airshower_energy": {"test/energy_resolution", "test/log10_energy_bias"},
    "airshower_xmax": {"test/xmax_resolution", "test/xmax_bias"},
    "airshower_axis": {"test/angular_resolution_deg"},
    "airshower_core": {"test/core_resolution_m"},
}


@pytest.mark.parametrize("experiment", presets("experiment"))
def test_every_preset_runs_a_fast_dev_run(experiment, request, tmp_path):
    kind = experiment.split("_")[0]
    sample = request.getfixturevalue(SAMPLES[kind])
    summary = run_training(
        tmp_path,
        f"experiment={experiment}",
        "debug=fdr",
        f"data.files={sample}/{FILES.get(kind, '*.root')}",
        f"data.cache_dir={tmp_path}/cache",
        "data.batch_size=32",
        "data.eval_batch_size=64",
    )
    assert summary["parameters"] > 1000 and "test/loss" in summary
    if kind == "pileup":
        own = {"pileup_unet": "test/pixel_rmse", "pileup_segment": "test/mean_iou"}.get(
            experiment, "test/element_auc"
        )
        figures = {"test/corrected_pt_resolution", "test/uncorrected_mass_bias", own}
        assert figures <= set(summary)
        return
    if kind == "events":
        assert {"test/map_dr", "test/map_iou", "test/efficiency", "test/pt_resolution"} <= set(summary)
        return
    if experiment.startswith("airshower"):
        assert REGRESSION_FIGURES[experiment] <= set(summary)
        assert ("test/angular_resolution_deg" in summary) == (
            experiment in ("airshower_3dconv", "airshower_axis")
        )
        return
    assert 0.0 <= summary["test/acc"] <= 1.0
    if experiment.startswith("jets4"):
        confusion = summary["test/confusion_matrix"]
        assert confusion["classes"] == ["QCD", "Tbqq", "Wqq", "Zqq"]
        assert sum(map(sum, confusion["rows_true_columns_predicted"])) == 64  # one test batch
        assert {f"test/auc_{c}" for c in confusion["classes"]} <= set(summary)
