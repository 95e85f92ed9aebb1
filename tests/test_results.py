"""benchmarks/results.py end to end on a small trial sample: the table's rows, the same test jets for
every preset, resuming from the saved rows, and a sample directory of other classes refused."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "results.py"


def run_results(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    dirs = [
        f"--sample-dir={tmp_path / 'sample'}",
        f"--runs-dir={tmp_path / 'runs'}",
        f"--results-dir={tmp_path / 'results'}",
    ]
    return subprocess.run(
        [sys.executable, str(SCRIPT), *dirs, *args], capture_output=True, text=True, timeout=900
    )


def test_a_trial_table_has_the_baseline_and_every_preset_on_the_same_test_jets(tmp_path):
    trial = ("--sample=toptag", "--jets-per-process=300", "--presets=hlf,pfn", "--max-epochs=1")
    result = run_results(tmp_path, *trial)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    rows = {p.stem: json.loads(p.read_text()) for p in (tmp_path / "results").glob("*.json")}
    assert sorted(rows) == ["baseline", "top_hlf", "top_pfn"]
    assert len({row["test_entries_hash"] for row in rows.values()}) == 1
    assert {row["test_jets"] for row in rows.values()} == {90}  # 15 % of 600 jets
    for row in rows.values():
        assert 0.5 < row["auc"] <= 1 and 0 < row["auc_error"] < 0.1
        assert row["sample"] == "toptag" and row["sample_jets"] == 600 and row["sample_seed"] == 1
    assert rows["baseline"]["preset"] == "cut-based (jet_mass x jet_tau32)"
    assert rows["top_pfn"]["parameters"] > rows["top_hlf"]["parameters"] > 1000
    table = result.stdout[result.stdout.index("| tagger |") :].splitlines()
    assert [line.split("|")[1].strip() for line in table[2:]] == [
        "cut-based (jet_mass x jet_tau32)",
        "top_hlf",
        "top_pfn",
    ]
    # a second call reuses the saved rows and trains nothing
    again = run_results(tmp_path, *trial)
    assert again.returncode == 0 and "top_pfn: done before" in again.stdout
    assert (
        again.stdout[again.stdout.index("| tagger |") :] == result.stdout[result.stdout.index("| tagger |") :]
    )


def test_a_sample_directory_of_other_classes_is_refused(tmp_path):
    (tmp_path / "sample").mkdir()
    (tmp_path / "sample" / "manifest.json").write_text(json.dumps({"classes": ["QCD", "Tbqq"]}))
    result = run_results(tmp_path, "--sample=qg", "--presets=pfn")
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1] == (
        f"results.py: error: --sample-dir {tmp_path / 'sample'} holds a sample of classes ['QCD', 'Tbqq'], "
        "but --sample qg has classes ['gluon', 'quark']; point --sample-dir at a qg sample or an empty one"
    )
    assert not (tmp_path / "runs").exists()
