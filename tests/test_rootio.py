"""Writing ROOT trees: jagged collections and their counters, atomic writes."""

from __future__ import annotations

import awkward as ak
import numpy as np
import pytest
import uproot

from hepnn.utils.rootio import write_tree


def test_collections_of_one_prefix_with_other_lengths_get_their_own_counters(tmp_path):
    columns = {
        "part_px": ak.Array([[1.0, 2.0], [3.0]]),
        "part_isPhoton": ak.Array([[1.0, 0.0], [0.0]]),
        "cell_ecal_energy": ak.Array([[5.0], [6.0, 7.0, 8.0]]),
        "cell_ecal_deta": ak.Array([[0.1], [0.2, 0.3, 0.4]]),
        "cell_hcal_energy": ak.Array([[], [9.0]]),
        "jet_pt": np.array([500.0, 600.0]),
    }
    path = write_tree(tmp_path / "jets.root", "tree", columns)
    tree = uproot.open(path)["tree"]
    assert {"npart", "ncell_ecal", "ncell_hcal"} <= set(tree.keys())
    arrays = tree.arrays(list(columns))
    for name, values in columns.items():
        assert ak.to_list(arrays[name]) == ak.to_list(values)
    assert tree["ncell_ecal"].array(library="np").tolist() == [1, 3]


def test_unequal_lengths_within_one_collection_are_refused_and_nothing_is_written(tmp_path):
    columns = {"part_px": ak.Array([[1.0, 2.0], [3.0]]), "part_py": ak.Array([[1.0], [3.0]])}
    with pytest.raises(ValueError, match=r"part_p[xy].*other list lengths"):
        write_tree(tmp_path / "bad.root", "tree", columns)
    assert list(tmp_path.iterdir()) == []
