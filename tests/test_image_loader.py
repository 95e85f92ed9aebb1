"""Jet images through the loader: config, preprocessing per chunk, pixelising per batch,
augmentation of training batches only, and the spec round trip."""

from __future__ import annotations

import awkward as ak
import numpy as np
import pytest
import uproot

from hepnn.data.datamodule import RootDataModule
from hepnn.data.images import ImageGrid, jet_frame, pixelize
from hepnn.data.spec import DataConfigError, DataSpec

N_JETS = 200


@pytest.fixture(scope="module")
def cell_file(tmp_path_factory):
    """Jets with ECAL-like cells and tracks at random positions around the axis (radians, GeV)."""
    rng = np.random.default_rng(5)
    path = tmp_path_factory.mktemp("cells") / "cells.root"

    def collection(mean_count):
        counts = rng.poisson(mean_count, N_JETS)
        counts[:3] = 0  # some jets without any element of this collection
        n = counts.sum()
        return counts, {
            "deta": ak.unflatten(rng.normal(0, 0.3, n).astype(np.float32), counts),
            "dphi": ak.unflatten(rng.normal(0, 0.3, n).astype(np.float32), counts),
            "e": ak.unflatten(rng.exponential(20.0, n).astype(np.float32), counts),
        }

    _, cells = collection(15)
    _, tracks = collection(8)
    with uproot.recreate(path) as f:
        f.mktree(
            "tree",
            {
                "cell": ak.zip(cells).type.content,
                "trk": ak.zip(tracks).type.content,
                "label": np.int32,
            },
        )
        f["tree"].extend(
            {
                "cell": ak.zip(cells),
                "trk": ak.zip(tracks),
                "label": rng.integers(0, 2, N_JETS).astype(np.int32),
            }
        )
    return path


def image_config(path, **image) -> dict:
    group = {
        "grid": {"n_eta": 16, "n_phi": 12, "eta": [-0.8, 0.8], "phi": [-0.6, 0.6]},
        "channels": {
            "cells": {"eta": "cell_deta", "phi": "cell_dphi", "intensity": "cell_e"},
            "tracks": {"eta": "trk_deta", "phi": "trk_dphi", "intensity": "trk_e"},
        },
        "preprocessing": {"center": "none", "rotate": False, "flip": False, "normalize": False},
        "augment": {"flip_eta": False, "flip_phi": False},
    }
    for key, value in image.items():
        group[key] = {**group[key], **value}
    return {
        "files": str(path),
        "tree": "tree",
        "inputs": {"image": group},
        "labels": {"index": "label", "classes": ["a", "b"]},
        "split": {"train": 0.5, "val": 0.0, "test": 0.5},
        "batch_size": 32,
        "eval_batch_size": 32,
        "chunk_size": 64,
        "buffer_size": 0,
        "num_workers": 0,
        "seed": 1,
    }


def expected_images(path, rows, grid, preprocessing) -> np.ndarray:
    """Images computed directly from the file with hepnn.data.images (entries ``rows``)."""
    arrays = uproot.open(path)["tree"].arrays()[rows]
    per_channel = [
        (arrays["cell_deta"], arrays["cell_dphi"], arrays["cell_e"]),
        (arrays["trk_deta"], arrays["trk_dphi"], arrays["trk_e"]),
    ]
    eta = ak.concatenate([c[0] for c in per_channel], axis=1)
    phi = ak.concatenate([c[1] for c in per_channel], axis=1)
    intensity = ak.concatenate([c[2] for c in per_channel], axis=1)
    channel = ak.concatenate(
        [
            ak.values_astype(ak.zeros_like(per_channel[0][0]), np.int64),
            ak.values_astype(ak.ones_like(per_channel[1][0]), np.int64),
        ],
        axis=1,
    )
    offsets = np.concatenate([[0], np.cumsum(ak.to_numpy(ak.num(eta)))])
    flat = [ak.to_numpy(ak.flatten(x)).astype(np.float64) for x in (eta, phi, intensity)]
    new_eta, new_phi = jet_frame(flat[0], flat[1], flat[2], offsets, **preprocessing)
    images = pixelize(new_eta, new_phi, flat[2], ak.to_numpy(ak.flatten(channel)), offsets, grid, 2)
    return images


def test_test_images_equal_the_direct_computation(cell_file):
    grid = ImageGrid(16, 12, (-0.8, 0.8), (-0.6, 0.6))
    for preprocessing in (
        {"center": "none", "rotate": False, "flip": False},
        {"center": "centroid", "rotate": True, "flip": True},
    ):
        dm = RootDataModule(**image_config(cell_file, preprocessing=preprocessing))
        dm.setup()
        batches = list(dm.test_dataloader())
        images = np.concatenate([b["image"].numpy() for b in batches])
        entries = np.concatenate([b["entry"].numpy() for b in batches])
        assert images.shape == (len(entries), 2, 16, 12) and images.dtype == np.float32
        np.testing.assert_allclose(
            images, expected_images(cell_file, entries, grid, preprocessing), atol=1e-4
        )


def test_normalised_images_sum_to_one_and_empty_jets_stay_empty(cell_file):
    dm = RootDataModule(**image_config(cell_file, preprocessing={"normalize": True}))
    dm.setup()
    images = np.concatenate([b["image"].numpy() for b in dm.test_dataloader()])
    sums = images.sum(axis=(1, 2, 3))
    assert np.all((np.abs(sums - 1) < 1e-4) | (sums == 0))
    reference = expected_images(
        cell_file,
        np.arange(N_JETS // 2, N_JETS),
        ImageGrid(16, 12, (-0.8, 0.8), (-0.6, 0.6)),
        {"center": "none", "rotate": False, "flip": False},
    )
    np.testing.assert_allclose(
        np.sort(sums), np.sort(np.where(reference.sum(axis=(1, 2, 3)) > 0, 1.0, 0.0)), atol=1e-4
    )


def test_augmentation_flips_training_images_only_and_is_seeded(cell_file):
    flips = {"flip_eta": True, "flip_phi": True}
    plain = RootDataModule(**image_config(cell_file))
    augmented = RootDataModule(**image_config(cell_file, augment=flips))
    again = RootDataModule(**image_config(cell_file, augment=flips))
    for dm in (plain, augmented, again):
        dm.setup()
    train = [
        np.concatenate([b["image"].numpy() for b in dm.train_dataloader()])
        for dm in (plain, augmented, again)
    ]
    np.testing.assert_array_equal(train[1], train[2])  # the same seed flips the same images
    changed = 0
    for original, flipped in zip(train[0], train[1], strict=True):
        versions = [original, original[:, ::-1], original[:, :, ::-1], original[:, ::-1, ::-1]]
        assert any(np.array_equal(flipped, v) for v in versions)
        changed += not np.array_equal(flipped, original)
    assert changed > len(train[0]) // 4
    tests = [np.concatenate([b["image"].numpy() for b in dm.test_dataloader()]) for dm in (plain, augmented)]
    np.testing.assert_array_equal(tests[0], tests[1])  # never at test time


def test_image_spec_round_trip_and_errors(cell_file):
    cfg = image_config(cell_file, preprocessing={"center": "leading_subjet", "subjet_radius": 0.3})
    spec = DataSpec.from_config(cfg)
    rebuilt = DataSpec.from_config(spec.to_config())
    assert rebuilt.to_config() == spec.to_config() and rebuilt.inputs == spec.inputs
    assert {"cell_deta", "cell_dphi", "cell_e", "trk_deta", "trk_dphi", "trk_e", "label"} <= set(
        spec.branches
    )
    bad_center = image_config(cell_file, preprocessing={"center": "middle"})
    with pytest.raises(DataConfigError, match=r"data\.inputs\.image\.preprocessing\.center"):
        DataSpec.from_config(bad_center)
    missing = image_config(cell_file)
    missing["inputs"]["image"]["channels"]["cells"] = {"eta": "cell_deta", "phi": "cell_dphi"}
    with pytest.raises(DataConfigError, match=r"data\.inputs\.image\.channels\.cells.*intensity"):
        DataSpec.from_config(missing)
    typo = image_config(cell_file, grid={"n_x": 3})
    with pytest.raises(DataConfigError, match=r"data\.inputs\.image\.grid: unknown key"):
        DataSpec.from_config(typo)


def test_a_group_set_to_null_is_left_out(cell_file):
    cfg = image_config(cell_file)
    cfg["inputs"]["particles"] = None
    assert [g.name for g in DataSpec.from_config(cfg).inputs] == ["image"]


def test_a_per_entry_variable_as_image_coordinate_is_refused(cell_file):
    cfg = image_config(cell_file)
    cfg["inputs"]["image"]["channels"]["cells"]["eta"] = "label"
    dm = RootDataModule(**cfg)
    with pytest.raises(Exception, match=r"channels\.cells\.eta: 'label' has one value per entry"):
        dm.setup()
        next(iter(dm.test_dataloader()))
