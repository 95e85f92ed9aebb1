"""Training-set reweighting: flat and reference targets, class weights, caps, plain data, config errors."""

import json

import numpy as np
import pytest
import torch

from hepnn.data.reweight import ReweightConfig, ReweightTable, effective_entries
from hepnn.errors import ConfigError, InputError

CLASSES = ("qcd", "top")
PT_BINS = np.linspace(550, 650, 21)


def spectra(n_per_class: int, seed: int) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Jets of two classes with different pT (GeV, in 550-650) and mass (GeV, in 0-300) spectra."""
    rng = np.random.default_rng(seed)

    def falling(scale):
        pt = 550 + rng.exponential(scale, 4 * n_per_class)
        return pt[pt < 650][:n_per_class]

    pt = np.r_[falling(40.0), falling(150.0)]
    mass = 300 * np.r_[rng.beta(1.5, 2.5, n_per_class), rng.beta(2.5, 1.5, n_per_class)]
    return {"jet_pt": pt, "jet_mass": mass}, np.r_[np.zeros(n_per_class, int), np.ones(n_per_class, int)]


def weighted_histograms(values, labels, weights, bins):
    """Per class: the weighted content and its variance (sum w^2) in each bin."""
    out = []
    for c in range(len(CLASSES)):
        mask = labels == c
        sample = [values[name][mask] for name in ("jet_pt", "jet_mass")[: len(bins)]]
        content, _ = np.histogramdd(sample, bins=bins, weights=weights[mask])
        variance, _ = np.histogramdd(sample, bins=bins, weights=weights[mask] ** 2)
        out.append((content.ravel(), variance.ravel()))
    return out


def chi2_per_bin(first, second) -> float:
    (h1, v1), (h2, v2) = first, second
    return float(np.mean((h1 - h2) ** 2 / (v1 + v2)))


def flat_chi2_per_bin(content, variance) -> float:
    return float(np.mean((content - content.mean()) ** 2 / variance))


def test_flat_target_equalises_the_classes_pt_spectra_on_independent_jets():
    table = ReweightConfig.from_dict({"vars": {"jet_pt": [550, 650, 20]}}).fit(*spectra(200_000, 1), CLASSES)
    values, labels = spectra(20_000, 2)
    weights = table.weights(values, labels)
    qcd, top = weighted_histograms(values, labels, weights, [PT_BINS])
    unweighted = weighted_histograms(values, labels, np.ones(labels.size), [PT_BINS])
    assert chi2_per_bin(*unweighted) > 100  # the spectra differ before reweighting
    assert chi2_per_bin(qcd, top) < 2
    assert flat_chi2_per_bin(*qcd) < 2 and flat_chi2_per_bin(*top) < 2


def test_flat_target_is_exact_on_the_training_jets_and_normalised_to_their_number():
    values, labels = spectra(20_000, 3)
    table = ReweightConfig.from_dict({"vars": {"jet_pt": [550, 650, 20]}}).fit(values, labels, CLASSES)
    weights = table.weights(values, labels)
    for content, _ in weighted_histograms(values, labels, weights, [PT_BINS]):
        np.testing.assert_allclose(content, labels.size / 2 / 20, rtol=1e-12)
    assert weights.mean() == pytest.approx(1.0)
    assert table.empty_bins == {"qcd": 0, "top": 0} and table.bin_weights.shape == (2, 20)


def test_two_dimensional_flat_target_in_pt_and_mass():
    config = ReweightConfig.from_dict({"vars": {"jet_pt": [550, 650, 10], "jet_mass": [0, 300, 6]}})
    table = config.fit(*spectra(200_000, 4), CLASSES)
    values, labels = spectra(20_000, 5)
    bins = [np.linspace(550, 650, 11), np.linspace(0, 300, 7)]
    qcd, top = weighted_histograms(values, labels, table.weights(values, labels), bins)
    assert chi2_per_bin(qcd, top) < 2
    assert table.bin_weights.shape == (2, 10, 6)


def test_reference_target_gives_every_class_the_reference_spectrum():
    config = ReweightConfig.from_dict({"vars": {"jet_pt": [550, 650, 20]}, "target": "qcd"})
    table = config.fit(*spectra(200_000, 6), CLASSES)
    np.testing.assert_allclose(table.bin_weights[0], 1.0)  # the reference keeps its own spectrum
    values, labels = spectra(20_000, 7)
    qcd, top = weighted_histograms(values, labels, table.weights(values, labels), [PT_BINS])
    assert chi2_per_bin(qcd, top) < 2
    assert flat_chi2_per_bin(*qcd) > 100  # and that spectrum is the falling one, not flat


def test_effective_entries_of_a_uniform_weighting_equal_the_entries():
    labels = np.r_[np.zeros(300, int), np.ones(700, int)]
    np.testing.assert_allclose(effective_entries(np.full(1000, 2.5), labels), [300, 700])
    np.testing.assert_allclose(effective_entries(np.ones(4), np.zeros(4, int), n_classes=2), [4, 0])
    values, labels = spectra(5000, 8)
    weights = ReweightConfig.from_dict({"vars": {"jet_pt": [550, 650, 20]}}).fit(values, labels, CLASSES)
    assert np.all(effective_entries(weights.weights(values, labels), labels) < 5000)


@pytest.mark.parametrize("class_weights", [{"qcd": 1, "top": 3}, [1, 3]])
def test_class_weights_set_the_class_totals(class_weights):
    values, labels = spectra(10_000, 9)
    config = ReweightConfig.from_dict({"vars": {"jet_pt": [550, 650, 20]}, "class_weights": class_weights})
    weights = config.fit(values, labels, CLASSES).weights(values, labels)
    totals = np.bincount(labels, weights)
    np.testing.assert_allclose(totals, [0.25 * labels.size, 0.75 * labels.size], rtol=1e-12)


def test_max_weight_caps_every_weight_and_keeps_the_class_totals():
    values, labels = spectra(10_000, 10)
    config = ReweightConfig.from_dict({"vars": {"jet_pt": [550, 650, 20]}, "max_weight": 2.0})
    table = config.fit(values, labels, CLASSES)
    weights = table.weights(values, labels)
    uncapped = ReweightConfig.from_dict({"vars": {"jet_pt": [550, 650, 20]}}).fit(values, labels, CLASSES)
    assert uncapped.bin_weights.max() > 2.0
    assert weights.max() == pytest.approx(2.0) and table.capped_bins["qcd"] > 0
    np.testing.assert_allclose(np.bincount(labels, weights), labels.size / 2, rtol=1e-12)
    with pytest.raises(ConfigError, match=r"data\.reweight\.max_weight = 0\.5 is below the mean weight"):
        ReweightConfig.from_dict({"vars": {"jet_pt": [550, 650, 20]}, "max_weight": 0.5}).fit(
            values, labels, CLASSES
        )


def test_empty_bins_get_weight_zero_and_are_reported_out_of_range_values_use_edge_bins():
    pt = np.r_[np.linspace(550, 649, 400), np.linspace(600, 649, 400)]  # top has no jets below 600
    labels = np.r_[np.zeros(400, int), np.ones(400, int)]
    table = ReweightConfig.from_dict({"vars": {"jet_pt": [550, 650, 10]}}).fit(
        {"jet_pt": pt}, labels, CLASSES
    )
    assert table.empty_bins == {"qcd": 0, "top": 5}
    np.testing.assert_array_equal(table.bin_weights[1, :5], 0.0)
    outside = table.weights({"jet_pt": np.array([400.0, 900.0, 400.0])}, np.array([0, 1, 1]))
    assert outside.tolist() == [table.bin_weights[0, 0], table.bin_weights[1, -1], 0.0]


def test_round_trip_through_plain_data_gives_identical_weights(tmp_path):
    values, labels = spectra(5000, 11)
    config = ReweightConfig.from_dict({"vars": {"jet_pt": [550, 650, 10], "jet_mass": [0, 100, 300.0]}})
    table = config.fit(values, labels, CLASSES)
    torch.save({"reweight": table.to_dict()}, tmp_path / "table.pt")
    from_torch = ReweightTable.from_dict(torch.load(tmp_path / "table.pt", weights_only=True)["reweight"])
    from_json = ReweightTable.from_dict(json.loads(json.dumps(table.to_dict())))
    for restored in (from_torch, from_json):
        np.testing.assert_array_equal(restored.weights(values, labels), table.weights(values, labels))
        assert restored.variables == ("jet_pt", "jet_mass") and restored.class_names == CLASSES
    assert [edges.tolist() for edges in table.edges][1] == [0.0, 100.0, 300.0]  # explicit edges


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        (
            {"vars": {"jet_pt": [550, 650, 20]}, "bins": 3},
            r"data\.reweight: unknown key\(s\) \['bins'\]; expected",
        ),
        ({"target": "flat"}, r"data\.reweight\.vars must be a non-empty mapping"),
        ({"vars": {"jet_pt": [650, 550, 20]}}, r"data\.reweight\.vars\.jet_pt = \[650, 550, 20\] must be"),
        (
            {"vars": {"jet_mass": [0.0, 50.0, 40.0]}},
            r"data\.reweight\.vars\.jet_mass must be \[low, high, n_bins\]",
        ),
        ({"vars": {"jet_pt": "550-650"}}, r"data\.reweight\.vars\.jet_pt must be"),
        (
            {"vars": {"jet_pt": [550, 650, 20]}, "max_weight": -1},
            r"data\.reweight\.max_weight must be a positive",
        ),
        (
            {"vars": {"jet_pt": [550, 650, 20]}, "class_weights": {"qcd": -1}},
            r"data\.reweight\.class_weights must be",
        ),
    ],
)
def test_config_errors_name_the_key(settings, message):
    with pytest.raises(ConfigError, match=message):
        ReweightConfig.from_dict(settings)


def test_fit_errors_name_the_key_and_what_exists():
    values, labels = spectra(100, 12)
    with pytest.raises(
        ConfigError, match=r"data\.reweight\.target: unknown class 'wjet'; classes are \['qcd', 'top'\]"
    ):
        ReweightConfig.from_dict({"vars": {"jet_pt": [550, 650, 5]}, "target": "wjet"}).fit(
            values, labels, CLASSES
        )
    config = ReweightConfig.from_dict(
        {"vars": {"jet_pt": [550, 650, 5]}, "class_weights": {"qcd": 1, "w": 2}}
    )
    with pytest.raises(
        ConfigError, match=r"class_weights must give a weight for every class.*unknown \['w'\]"
    ):
        config.fit(values, labels, CLASSES)
    with pytest.raises(ConfigError, match=r"class_weights lists 3 weight\(s\); expected one per class"):
        ReweightConfig.from_dict({"vars": {"jet_pt": [550, 650, 5]}, "class_weights": [1, 1, 1]}).fit(
            values, labels, CLASSES
        )
    config = ReweightConfig.from_dict({"vars": {"jet_pt": [550, 650, 5], "jet_eta": [-2, 2, 4]}})
    with pytest.raises(InputError, match=r"reweighting variable\(s\) \['jet_eta'\] missing"):
        config.fit(values, labels, CLASSES)
    values["jet_pt"][3] = np.nan
    with pytest.raises(InputError, match="reweighting variable jet_pt has 1 non-finite"):
        ReweightConfig.from_dict({"vars": {"jet_pt": [550, 650, 5]}}).fit(values, labels, CLASSES)
