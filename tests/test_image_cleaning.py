"""Pile-up cleaning of jet images: jets from pixels, per-pixel targets in the data spec, the
image-cleaning task's output and loss, and a real training plus benchmarks/pileup.py on a small
sample with pile-up."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from functools import partial
from pathlib import Path

import numpy as np
import pytest
import torch
import uproot

from hepnn.data.spec import DataConfigError, DataSpec
from hepnn.errors import ConfigError
from hepnn.nets.unet import UNet
from hepnn.pileup.image_jets import image_jet, pixel_centres
from hepnn.tasks.image_cleaning import ImageCleaningTask
from tests.test_train import run_training

GRID = {"n_eta": 4, "n_phi": 5, "eta": [-0.8, 0.8], "phi": [-1.0, 1.0]}
SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "pileup.py"


# --------------------------------------------------------------------------------------------------
# jets from pixels


def test_pixel_centres_lie_midway_between_the_edges():
    eta, phi = pixel_centres(GRID)
    np.testing.assert_allclose(eta.numpy(), [-0.6, -0.2, 0.2, 0.6])
    np.testing.assert_allclose(phi.numpy(), [-0.8, -0.4, 0.0, 0.4, 0.8])


def test_one_pixel_is_a_massless_jet_and_two_pixels_have_their_pair_mass():
    images = torch.zeros(2, 4, 5)
    images[0, 1, 2] = 100.0
    images[1, 0, 0], images[1, 3, 4] = 50.0, 80.0
    pt, mass = image_jet(images, GRID)
    assert pt[0].item() == pytest.approx(100.0) and mass[0].item() == pytest.approx(0.0, abs=1e-4)
    # m^2 = 2 pT1 pT2 (cosh(d eta) - cos(d phi)) for massless particles
    expected = math.sqrt(2 * 50.0 * 80.0 * (math.cosh(1.2) - math.cos(1.6)))
    assert mass[1].item() == pytest.approx(expected, rel=1e-9)
    px = 50.0 * math.cos(-0.8) + 80.0 * math.cos(0.8)
    py = 50.0 * math.sin(-0.8) + 80.0 * math.sin(0.8)
    assert pt[1].item() == pytest.approx(math.hypot(px, py), rel=1e-9)


def test_jet_pt_and_mass_do_not_depend_on_where_the_jet_axis_is():
    """A shift in eta is a boost along the beam, one in phi a rotation: neither changes pT or mass."""
    images = torch.rand(6, 2, 4, 5) * 30.0
    pt, mass = image_jet(images, GRID)
    shifted = {"n_eta": 4, "n_phi": 5, "eta": [0.4, 2.0], "phi": [1.0, 3.0]}
    pt_shifted, mass_shifted = image_jet(images, shifted)
    torch.testing.assert_close(pt_shifted, pt, rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(mass_shifted, mass, rtol=1e-9, atol=1e-9)
    assert torch.allclose(pt, image_jet(images.sum(dim=1), GRID)[0])  # channels are summed


def test_images_that_do_not_fit_the_grid_are_refused():
    with pytest.raises(ValueError, match="do not match the grid"):
        image_jet(torch.zeros(1, 5, 5), GRID)


# --------------------------------------------------------------------------------------------------
# per-pixel targets in the data spec


def image_group(channels=("a",), **preprocessing):
    pre = {"center": "none", "rotate": False, "flip": False, "normalize": False, **preprocessing}
    return {
        "grid": {"n_eta": 8, "n_phi": 8, "eta": [-0.8, 0.8], "phi": [-0.8, 0.8]},
        "channels": {c: {"eta": "part_deta", "phi": "part_dphi", "intensity": "part_pt"} for c in channels},
        "preprocessing": pre,
    }


def spec_config(image=None, target=None, image_targets=("target",)):
    return {
        "tree": "tree",
        "inputs": {"image": image or image_group(("x", "y")), "target": target or image_group()},
        "image_targets": list(image_targets) if image_targets is not None else None,
    }


def test_an_image_target_is_something_to_learn_and_round_trips():
    spec = DataSpec.from_config(spec_config())
    assert spec.image_targets == ("target",) and not spec.classes and not spec.targets
    assert DataSpec.from_config(spec.to_config()) == spec


@pytest.mark.parametrize(
    ("config", "message"),
    [
        (spec_config(image_targets=None), "nothing to learn"),
        (spec_config(image_targets=["image", "target"]), "the net needs one to read"),
        (spec_config(image_targets=["jets"]), "data.image_targets names 'jets'"),
        (spec_config(image=image_group(("x",), rotate=True)), r"data.inputs.image.*\['rotate'\]"),
        (spec_config(target=image_group(center="centroid")), r"data.inputs.target.*\['center'\]"),
        (spec_config(target=image_group(normalize=True)), r"\['normalize'\]"),
        (
            spec_config(target={**image_group(), "grid": {"n_eta": 4, "n_phi": 8}}),
            "per-pixel targets need the inputs' pixels",
        ),
        (
            spec_config(image={**image_group(("x",)), "augment": {"flip_eta": True}}),
            r"\['augment'\]",
        ),
    ],
)
def test_bad_image_targets_are_refused_naming_the_key(config, message):
    with pytest.raises(DataConfigError, match=message):
        DataSpec.from_config(config)


# --------------------------------------------------------------------------------------------------
# the task on hand-made images


def cleaning_task(**kwargs) -> ImageCleaningTask:
    grid = {"n_eta": 9, "n_phi": 7, "eta": [-0.8, 0.8], "phi": [-0.8, 0.8]}
    return ImageCleaningTask(
        net=UNet(3, 1, widths=(4, 8), batch_norm=False),
        inputs=["image"],
        target="target",
        grid=grid,
        channels=["charged_lv", "charged_pu", "neutral"],
        kept_channels=["charged_lv"],
        cleaned_channel="neutral",
        optimizer=partial(torch.optim.AdamW, lr=1e-3),
        **kwargs,
    )


def sparse_images(n=4, seed=0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    values = torch.rand(n, 3, 9, 7, generator=generator) * 40.0
    return values * (torch.rand(n, 3, 9, 7, generator=generator) < 0.3)


def test_the_fraction_output_lies_between_zero_and_the_measured_neutral_pt():
    task = cleaning_task().eval()
    image = sparse_images()
    with torch.no_grad():
        predicted = task({"image": image})
    neutral = image[:, 2]
    assert predicted.shape == neutral.shape
    assert (predicted >= 0).all() and (predicted <= neutral + 1e-6).all()
    assert (predicted[neutral == 0] == 0).all() and (predicted[neutral > 0] > 0).all()


def test_the_energy_output_is_non_negative_and_may_exceed_the_neutral_pt():
    task = cleaning_task(output="energy").eval()
    with torch.no_grad():
        predicted = task({"image": sparse_images()})
    assert (predicted > 0).all()  # softplus: also where nothing neutral was measured


@pytest.mark.parametrize("loss", ["log_mse", "mse"])
def test_the_loss_ignores_pixels_without_neutral_pt_and_vanishes_for_a_perfect_prediction(loss):
    task = cleaning_task(loss=loss)
    image = sparse_images()
    neutral = image[:, 2]
    target = 0.4 * neutral
    other = target.clone()
    other[neutral == 0] = 55.0  # nonsense where nothing was measured: masked
    base = task.pixel_loss(0.7 * neutral, target, image)
    torch.testing.assert_close(task.pixel_loss(0.7 * neutral, other, image), base)
    assert (base > 0).all()
    torch.testing.assert_close(task.pixel_loss(target, target, image), torch.zeros(len(image)))


def test_bad_task_settings_are_refused_naming_the_key():
    with pytest.raises(ConfigError, match=r"model\.kept_channels / model\.cleaned_channel name \['tracks'\]"):
        ImageCleaningTask(**{**_task_kwargs(), "kept_channels": ["tracks"]})
    with pytest.raises(ConfigError, match=r"model\.loss must be one of"):
        cleaning_task(loss="l1")
    with pytest.raises(ConfigError, match=r"model\.truth_observers must map pt and mass"):
        cleaning_task(truth_observers={"pt": "jet_nopu_pt"})


def _task_kwargs() -> dict:
    return {
        "net": UNet(3, 1, widths=(4,)),
        "inputs": ["image"],
        "target": "target",
        "grid": GRID,
        "channels": ["charged_lv", "charged_pu", "neutral"],
        "kept_channels": ["charged_lv"],
        "cleaned_channel": "neutral",
        "optimizer": partial(torch.optim.AdamW, lr=1e-3),
    }


# --------------------------------------------------------------------------------------------------
# a real training and the benchmark, on a small QCD sample with pile-up


def short_image_run(preset: str, sample, out) -> tuple:
    """Two epochs of a jet-image pile-up preset with a small U-Net on the QCD sample with pile-up,
    the images written to the predictions file: ``(run directory, summary)``."""
    summary = run_training(
        out,
        f"experiment={preset}",
        f"data.files={sample}/qcd_*.root",
        "trainer.max_epochs=2",
        "model.net.widths=[4,8]",
        "model.write_images=true",
        "data.batch_size=32",
        "data.progress_bar=false",
    )
    return out, summary


@pytest.fixture(scope="module")
def cleaning_run(qcd_pu_sample, tmp_path_factory):
    return short_image_run("pileup_unet", qcd_pu_sample, tmp_path_factory.mktemp("pileup_unet"))


def test_a_cleaning_run_writes_corrected_jets_beside_the_jets_without_pile_up(cleaning_run):
    out, summary = cleaning_run
    with uproot.open(out / "predictions" / "test.root") as f:
        columns = f["predictions"].arrays(library="np")
        assert json.loads(str(f["truth_observers"])) == {"pt": "jet_nopu_pt", "mass": "jet_nopu_mass"}
    n = 2 * 12  # 15 % of each file of 80 jets
    assert len(columns["entry"]) == n
    for name in ("corrected", "uncorrected", "truth_image"):
        assert columns[f"pt_{name}"].shape == columns[f"mass_{name}"].shape == (n,)
    assert columns["image_predicted"].shape == columns["image_target"].shape == (n, 40, 40)
    # the fraction output never exceeds the measured neutral pT, so the cleaned jet is no harder
    # than the uncorrected one; pile-up at mu = 30 adds tens of GeV to an R = 0.8 jet
    assert (columns["pt_corrected"] <= columns["pt_uncorrected"] + 1e-3).all()
    added = np.median(columns["pt_uncorrected"] - columns["jet_nopu_pt"])
    assert added > 20.0
    # the image with the true neutral pT recovers the jet without pile-up, up to the tracks of
    # pile-up vertices that were not separated and the pixelisation
    assert abs(np.median(columns["pt_truth_image"] - columns["jet_nopu_pt"])) < 0.25 * added
    assert abs(np.median(columns["mass_truth_image"] - columns["jet_nopu_mass"])) < 0.25 * added
    assert summary["test/uncorrected_pt_bias"] == pytest.approx(added, rel=1e-5)
    assert summary["test/pixel_rmse"] > 0


def test_the_pileup_benchmark_tabulates_the_rules_and_the_learned_cleaning_on_one_test_set(
    qcd_pu_sample, tmp_path
):
    result = subprocess.run(
        [
            sys.executable,
            str(SCRIPT),
            "--mu=30",
            "--jets=160",
            "--jets-per-file=80",
            "--pool-events=300",
            "--workers=1",
            "--max-epochs=1",
            "--top-jets=80",
            f"--top-sample-dir={tmp_path / 'tops'}",
            f"--sample-dir={qcd_pu_sample}",
            f"--runs-dir={tmp_path / 'runs'}",
            f"--results-dir={tmp_path / 'results'}",
        ],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    saved = json.loads((tmp_path / "results" / "mu30.json").read_text())
    assert saved["test_jets"] == 24 and saved["top_jets"] == 80
    rows = {row["method"]: row for row in saved["rows"]}
    reference = rows.pop("jets without pile-up (the reference)")
    # the top jets without pile-up peak near the top mass; pile-up moves the peak up, CHS takes
    # part of that back, and every learned row has a peak too
    assert 150.0 < reference["top_peak_position"][0] < 200.0
    assert rows["no correction"]["top_peak_position"][0] > reference["top_peak_position"][0] + 10.0
    assert rows["CHS"]["top_peak_position"][0] < rows["no correction"]["top_peak_position"][0]
    assert all(
        "top_peak_width" in rows[p] for p in ("pileup_unet", "pileup_gru", "pileup_pfn", "pileup_segment")
    )
    assert list(rows)[:6] == [
        "no correction",
        "CHS",
        "area subtraction (rho A)",
        "CHS + area subtraction",
        "SoftKiller",
        "CHS + SoftKiller",
    ]
    # every rule removes pile-up: its pT bias is below that of no correction
    none_bias = rows["no correction"]["pt_bias"][0]
    assert none_bias > 20 and all(rows[m]["pt_bias"][0] < none_bias for m in list(rows)[1:6])
    presets = ("pileup_unet", "pileup_gru", "pileup_pfn", "pileup_segment")
    assert all(f"minus_{saved['best_rule']}" in rows[p] for p in presets)
    table = [line for line in result.stdout.splitlines() if line.startswith("|")]
    # the reference, rules, learned presets, three limits
    assert len(table) == 2 + 1 + 6 + 4 + 3 and "±" in table[3] and "top mass peak" in table[0]
    learned = [rows[p] for p in presets]
    assert "pixel_rmse" in learned[0] and all("neutral_auc" in row for row in learned[1:3])
    assert 0.0 <= learned[3]["mean_iou"] <= 1.0 and "IoU" in table[3 + 6 + 3]
