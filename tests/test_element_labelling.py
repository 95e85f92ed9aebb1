"""Per-particle labelling: per-element targets in the data spec, many-to-many recurrent nets and
the pooled-context 1x1-convolution net (padding never matters), the labelling task's loss and
jets, and a real training on a small sample with pile-up."""

from __future__ import annotations

import math
from functools import partial

import awkward as ak
import numpy as np
import pytest
import torch
import uproot

from hepnn.data.spec import DataConfigError, DataSpec
from hepnn.errors import ConfigError
from hepnn.nets.particle_context import ParticleContextNet
from hepnn.nets.sequence import JetSequenceRNN
from hepnn.tasks.element_labelling import ElementLabellingTask, weighted_jets
from tests.test_train import run_training

# --------------------------------------------------------------------------------------------------
# per-element targets in the data spec


def jagged_group(features, length=16, mask="mask", order=None, **feature_settings):
    group = {
        "length": length,
        "mask": mask,
        "features": {f: dict(feature_settings) for f in features},
    }
    if order:
        group["order"] = order
    return group


def spec_config(truth=None, particles=None, element_targets=("truth",)):
    return {
        "tree": "tree",
        "inputs": {
            "particles": particles or jagged_group(["part_pt", "part_deta"], center=1.0, scale=2.0),
            "truth": truth or jagged_group(["part_is_pileup", "part_px"], mask="truth_mask"),
        },
        "element_targets": list(element_targets) if element_targets is not None else None,
    }


def test_an_element_target_is_something_to_learn_and_round_trips():
    spec = DataSpec.from_config(spec_config())
    assert spec.element_targets == ("truth",) and not spec.classes
    assert DataSpec.from_config(spec.to_config()) == spec


@pytest.mark.parametrize(
    ("config", "message"),
    [
        (spec_config(element_targets=None), "nothing to learn"),
        (spec_config(element_targets=["particles", "truth"]), "the net needs one to read"),
        (spec_config(element_targets=["labels"]), "data.element_targets names 'labels'"),
        (
            spec_config(truth=jagged_group(["part_is_pileup"], length=8, mask="truth_mask")),
            r"data.inputs.truth \(length, order, on_empty\) \(8, None, 'keep'\) differs from "
            r"data.inputs.particles \(16",
        ),
        (
            spec_config(truth=jagged_group(["part_is_pileup"], mask="truth_mask", order={"by": "part_pt"})),
            "per-element targets must list the same elements",
        ),
        (
            spec_config(truth=jagged_group(["part_is_pileup"], mask="truth_mask", scale=2.0)),
            r"\['part_is_pileup'\] are standardised or clipped",
        ),
    ],
)
def test_bad_element_targets_are_refused_naming_both_keys(config, message):
    with pytest.raises(DataConfigError, match=message):
        DataSpec.from_config(config)


# --------------------------------------------------------------------------------------------------
# per-element nets: outputs at the elements' positions, independent of padding


def padded(particles: torch.Tensor, n: torch.Tensor, extra: int, value: float):
    """Jets ``(B, C, P)`` with ``n`` real particles first, padded by ``extra`` slots of ``value``,
    with some real particles moved behind padding (any mask must work)."""
    batch, channels, length = particles.shape
    mask = torch.arange(length)[None, :] < n[:, None]
    x = torch.where(mask[:, None], particles, torch.full_like(particles, value))
    x = torch.cat([x, torch.full((batch, channels, extra), value)], dim=2)
    mask = torch.cat([mask, torch.zeros(batch, extra, dtype=torch.bool)], dim=1)
    return x, mask


def per_element_nets():
    torch.manual_seed(3)
    return {
        "gru": JetSequenceRNN(5, 2, cell="gru", hidden=6, layers=2, bidirectional=True, per_element=True),
        "lstm_front_end": JetSequenceRNN(5, 2, cell="lstm", hidden=6, front_end=[4], per_element=True),
        "context": ParticleContextNet(5, 2, phi=[8, 8], head=[8]),
    }


@pytest.mark.parametrize("name", list(per_element_nets()))
def test_per_element_outputs_do_not_depend_on_padding(name):
    net = per_element_nets()[name].eval()
    particles, n = torch.randn(4, 5, 7), torch.tensor([7, 3, 1, 0])
    x, mask = padded(particles, n, extra=0, value=0.0)
    longer, longer_mask = padded(particles, n, extra=9, value=123.0)
    with torch.no_grad():
        out, out_longer = net(x, mask), net(longer, longer_mask)
    assert out.shape == (4, 2, 7) and out_longer.shape == (4, 2, 16)
    torch.testing.assert_close(out_longer[:, :, :7], out, rtol=1e-5, atol=1e-6)
    assert (out_longer[:, :, 7:] == 0).all() and (out[~mask.unsqueeze(1).expand_as(out)] == 0).all()
    assert (out[0] != 0).all()  # real elements get outputs


def test_a_bidirectional_recurrence_gives_every_element_the_whole_sequence():
    """The output at the first element changes when the last one does (backward direction), and
    outputs follow their elements wherever the mask puts them."""
    net = per_element_nets()["gru"].eval()
    x = torch.randn(1, 5, 6)
    mask = torch.tensor([[True, False, True, True, False, True]])
    changed = x.clone()
    changed[0, :, 5] += 1.0
    with torch.no_grad():
        out, out_changed = net(x, mask), net(changed, mask)
        gathered = net(x[:, :, mask[0]], torch.ones(1, 4, dtype=torch.bool))
    assert not torch.allclose(out[0, :, 0], out_changed[0, :, 0])
    torch.testing.assert_close(out[:, :, mask[0]], gathered, rtol=1e-5, atol=1e-6)


def test_the_context_net_is_permutation_equivariant():
    net = per_element_nets()["context"].eval()
    x, mask = torch.randn(2, 5, 6), torch.ones(2, 6, dtype=torch.bool)
    permutation = torch.tensor([3, 0, 5, 1, 4, 2])
    with torch.no_grad():
        torch.testing.assert_close(net(x[:, :, permutation], mask), net(x, mask)[:, :, permutation])


def test_the_many_to_one_recurrence_is_unchanged_by_the_new_mode():
    torch.manual_seed(0)
    many_to_one = JetSequenceRNN(5, 2, cell="gru", hidden=6, bidirectional=True)
    assert many_to_one(torch.randn(3, 5, 4), torch.ones(3, 4, dtype=torch.bool)).shape == (3, 2)


# --------------------------------------------------------------------------------------------------
# the task on hand-made jets


FEATURES = [
    "part_is_pileup",
    "part_pileup_fraction",
    "part_charge",
    "part_px",
    "part_py",
    "part_pz",
    "part_energy",
]


def labelling_task(**kwargs) -> ElementLabellingTask:
    torch.manual_seed(1)
    return ElementLabellingTask(
        net=ParticleContextNet(3, 1, phi=[8], head=[8]),
        inputs=["particles", "mask"],
        truth="truth",
        truth_mask="truth_mask",
        truth_features=FEATURES,
        optimizer=partial(torch.optim.AdamW, lr=1e-3),
        truth_observers={"pt": "jet_nopu_pt", "mass": "jet_nopu_mass"},
        **kwargs,
    )


def hand_made_batch(n_real=(4, 2)) -> dict:
    length = 6
    mask = torch.arange(length)[None, :] < torch.tensor(n_real)[:, None]
    truth = torch.zeros(len(n_real), len(FEATURES), length)
    truth[:, 0] = torch.tensor([[0, 1, 1, 0, 0, 0], [1, 0, 0, 0, 0, 0]], dtype=torch.float32)
    truth[:, 1] = truth[:, 0]
    pt = torch.tensor([[100.0, 10.0, 5.0, 50.0, 0, 0], [30.0, 200.0, 0, 0, 0, 0]])
    phi = torch.tensor([[0.0, 0.3, -0.2, 0.5, 0, 0], [0.1, -0.1, 0, 0, 0, 0]])
    truth[:, 3], truth[:, 4] = pt * torch.cos(phi), pt * torch.sin(phi)
    truth[:, 6] = pt  # at eta = 0: E = pT, pz = 0
    truth = truth * mask.unsqueeze(1)
    return {
        "particles": torch.randn(len(n_real), 3, length) * mask.unsqueeze(1),
        "mask": mask,
        "truth": truth,
        "truth_mask": mask.clone(),
    }


def test_weighted_jets_sum_weighted_four_momenta():
    batch = hand_made_batch()
    momentum = batch["truth"][:, 3:7]
    pt, mass = weighted_jets(momentum, torch.tensor([[1.0, 0, 0, 0, 0, 0], [0, 1.0, 0, 0, 0, 0]]))
    np.testing.assert_allclose(pt, [100.0, 200.0], rtol=1e-6)
    np.testing.assert_allclose(mass, [0.0, 0.0], atol=1e-3)
    pt, mass = weighted_jets(momentum, torch.tensor([[1.0, 0, 0, 1.0, 0, 0], [0.0] * 6]))
    assert mass[0] == pytest.approx(math.sqrt(2 * 100.0 * 50.0 * (1 - math.cos(0.5))), rel=1e-6)
    assert pt[1] == 0.0


def test_the_loss_does_not_depend_on_padded_slots():
    task = labelling_task()
    batch = hand_made_batch()
    loss, *_ = task._step(batch, "train_check")
    garbage = {k: v.clone() for k, v in batch.items()}
    pad = ~batch["mask"]
    garbage["particles"][pad.unsqueeze(1).expand_as(garbage["particles"])] = 77.0
    garbage["truth"][:, 0][pad] = 1.0
    torch.testing.assert_close(task._step(garbage, "train_check")[0], loss)


def test_truth_masks_that_differ_from_the_particles_are_refused_naming_both():
    task = labelling_task()
    batch = hand_made_batch()
    batch["truth_mask"][1, 3] = True
    with pytest.raises(
        ValueError, match="the masks 'mask' of the particles and 'truth_mask' of the truth group"
    ):
        task._step(batch, "train_check")


def test_bad_task_settings_are_refused_naming_the_key():
    with pytest.raises(ConfigError, match=r"model\.label names \['is_pu'\]"):
        labelling_task(label="is_pu")
    with pytest.raises(ConfigError, match=r"model\.momentum must name px, py, pz and E"):
        labelling_task(momentum=["part_px", "part_py"])


# --------------------------------------------------------------------------------------------------
# a real training on the small sample with pile-up


@pytest.mark.parametrize("experiment", ["pileup_gru", "pileup_pfn"])
def test_a_labelling_run_learns_which_particles_are_pile_up(experiment, qcd_pu_sample, tmp_path):
    summary = run_training(
        tmp_path,
        f"experiment={experiment}",
        f"data.files={qcd_pu_sample}/qcd_*.root",
        "trainer.max_epochs=3",
        "model.write_elements=true",
        "data.batch_size=16",
        "data.progress_bar=false",
        "callbacks.early_stopping=null",
    )
    # the pile-up-vertex flag alone separates most charged pile-up: the AUC is far above 0.5
    assert summary["test/element_auc"] > 0.75
    assert 0.0 <= summary["test/neutral_auc"] <= 1.0
    with uproot.open(tmp_path / "predictions" / "test.root") as f:
        columns = f["predictions"].arrays()
    assert len(columns) == 24
    counts = ak.num(columns["element_pileup_score"])
    assert ak.all(counts == ak.num(columns["element_is_pileup"])) and ak.all(counts > 0)
    assert ak.all((columns["element_pileup_score"] >= 0) & (columns["element_pileup_score"] <= 1))
    # weighting by the true hard-scatter shares recovers the jet without pile-up
    added = np.median(ak.to_numpy(columns["pt_uncorrected"] - columns["jet_nopu_pt"]))
    assert added > 20.0
    residual = np.median(ak.to_numpy(columns["mass_truth_weights"] - columns["jet_nopu_mass"]))
    assert abs(residual) < 0.1 * added
    assert summary["test/uncorrected_pt_bias"] == pytest.approx(added, rel=1e-5)
