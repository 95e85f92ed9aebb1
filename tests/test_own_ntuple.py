"""The README's worked example: a data config and a preset of one's own (docs/examples/, given with
--config-dir) train on a NanoAOD-like ntuple (tree Events, event-level Jet_* collections)."""

from __future__ import annotations

import json
from pathlib import Path

import awkward as ak
import numpy as np
import uproot

from hepnn.utils.rootio import write_tree
from tests.conftest import run_module

EXAMPLES = Path(__file__).resolve().parents[1] / "docs" / "examples"


def write_nano_like(path: Path, n_events: int, seed: int) -> Path:
    """Events with jets of two kinds: signal events have more, harder and more b-tagged jets and
    more missing transverse momentum than background events (GeV)."""
    rng = np.random.default_rng(seed)
    signal = rng.integers(0, 2, n_events)
    n_jets = rng.poisson(np.where(signal == 1, 6, 4)) + 1
    total = int(n_jets.sum())
    jet_signal = np.repeat(signal, n_jets)
    pt = rng.exponential(np.where(jet_signal == 1, 80.0, 50.0), total) + 20.0
    columns = {
        "Jet_pt": pt,
        "Jet_eta": rng.normal(0.0, 1.5, total),
        "Jet_phi": rng.uniform(-np.pi, np.pi, total),
        "Jet_mass": pt * rng.uniform(0.05, 0.2, total),
        "Jet_btagDeepFlavB": np.clip(rng.beta(np.where(jet_signal == 1, 2.0, 1.0), 3.0, total), 0, 1),
    }
    jagged = {k: ak.unflatten(v.astype(np.float32), n_jets) for k, v in columns.items()}
    write_tree(
        path,
        "Events",
        {
            **jagged,
            "MET_pt": rng.exponential(np.where(signal == 1, 60.0, 30.0)).astype(np.float32),
            "is_signal": signal.astype(np.int32),
        },
    )
    return path


def test_a_data_config_of_ones_own_trains_on_a_nanoaod_like_ntuple(tmp_path):
    for k in range(2):
        write_nano_like(tmp_path / f"nano_{k}.root", 1500, seed=k)
    assert "nJet" in uproot.open(tmp_path / "nano_0.root")["Events"].keys()  # NanoAOD's counter
    run_dir = tmp_path / "run"
    result = run_module(
        "hepnn.train",
        "--config-dir",
        str(EXAMPLES),
        "experiment=nano_pfn",
        f"data.files={tmp_path}/nano_*.root",
        "trainer.max_epochs=3",
        "+data.progress_bar=false",
        f"hydra.run.dir={run_dir}",
        cwd=tmp_path,
    )
    assert "cut-based baseline (MET_pt) on these test jets" in result.stdout
    summary = json.loads((run_dir / "summary.json").read_text())
    n_jets = [
        uproot.open(tmp_path / f"nano_{k}.root")["Events"]["nJet"].array(library="np") for k in range(2)
    ]
    expected = sum(int(np.sum(n[1275:] >= 2)) for n in n_jets)  # the last 15 % of each file, selected
    assert summary["data/test_entries"] == expected and summary["test/auc"] > 0.75
    predictions = uproot.open(run_dir / "predictions" / "test.root")["predictions"]
    assert {"score_signal", "label", "nJet", "MET_pt", "baseline_score"} <= set(predictions.keys())
    assert np.all(predictions["nJet"].array(library="np") >= 2)  # data.selection: nJet >= 2
