"""benchmarks/transfer.py end to end on a tiny case: its split files, the three strategies from a
pretrained run, the saved rows and the table with paired differences to training from scratch."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import uproot

from tests.test_train import run_training

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "transfer.py"


def test_the_strategies_of_a_tiny_case_are_trained_and_tabulated(jet_sample, jets4_sample, tmp_path):
    pretrained = tmp_path / "pretrained" / "top_pfn"
    run_training(
        pretrained,
        "experiment=top_pfn",
        f"data.files={jet_sample}/*.root",
        "trainer.max_epochs=1",
        "data.baseline=null",
        "data.progress_bar=false",
    )
    result = subprocess.run(
        [
            sys.executable,
            str(SCRIPT),
            "--cases=w_vs_qcd",
            "--families=pfn",
            "--sizes=20",
            "--test-per-class=8",
            "--val-per-class=2",
            "--max-epochs=1",
            f"--sample-dir=w_vs_qcd={jets4_sample}",
            f"--pretrained-runs={tmp_path / 'pretrained'}",
            f"--runs-dir={tmp_path / 'runs'}",
            f"--results-dir={tmp_path / 'results'}",
        ],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    rows = {p.stem: json.loads(p.read_text()) for p in (tmp_path / "results").glob("*.json")}
    assert sorted(rows) == [f"w_vs_qcd_pfn_{s}_20" for s in ("frozen", "full", "scratch")]
    assert {row["test_jets"] for row in rows.values()} == {16}
    test = uproot.open(tmp_path / "runs" / "samples" / "w_vs_qcd" / "test.root")["tree"]
    labels = test.arrays(["label", "label_QCD", "label_Wqq"], library="np")
    assert list(labels["label"]) == [0] * 8 + [1] * 8 and labels["label_Wqq"].sum() == 8
    frozen_log = (tmp_path / "runs" / "w_vs_qcd_pfn_frozen_20.log").read_text()
    assert "pretrained weights from" in frozen_log and "net.phi" in frozen_log
    table = result.stdout[result.stdout.index("| family |") :].splitlines()
    assert [line.split("|")[2].strip() for line in table[2:]] == ["scratch", "frozen", "full"]
    assert "±" in table[3] and "(" in table[3]  # the paired difference to scratch
