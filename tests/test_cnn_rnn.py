"""Calorimeter-image CNNs and jet-sequence RNNs: presets, shapes, validation, masking, tracing, learning."""

from __future__ import annotations

import warnings
from pathlib import Path

import hydra
import pytest
import torch
from omegaconf import OmegaConf
from torch import nn

import hepnn
from hepnn.errors import ConfigError
from hepnn.nets.blocks import PerParticleNet, count_parameters
from hepnn.nets.calo_cnn import CaloImageCNN
from hepnn.nets.sequence import JetSequenceRNN, left_align, reverse_real

CONF = Path(__file__).resolve().parents[1] / "conf" / "model"


def preset_net(name: str, **values):
    """The ``net`` section of ``conf/model/<name>.yaml`` with the data-dependent values filled by hand."""
    cfg = OmegaConf.load(CONF / f"{name}.yaml").net
    for key, value in values.items():
        cfg[key] = value
    return cfg


# ----------------------------------------------------------------------------------------------------------
# CNN
# ----------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["cnn", "resnet"])
@pytest.mark.parametrize("convert", [None, "all"])
def test_cnn_presets(name, convert):
    cfg = preset_net(name, in_channels=3, n_outputs=2, image_size=[40, 40])
    net = hydra.utils.instantiate(cfg) if convert is None else hydra.utils.instantiate(cfg, _convert_=convert)
    assert isinstance(net, CaloImageCNN)
    assert 100_000 <= count_parameters(net) <= 1_000_000
    assert net(torch.randn(2, 3, 40, 40)).shape == (2, 2)


def test_resnet_preset_shapes():
    net = hydra.utils.instantiate(preset_net("resnet", in_channels=3, n_outputs=2, image_size=[40, 40]))
    assert [shape[1:] for shape in net.block_shapes] == [(20, 20)] * 3 + [(10, 10)] * 2 + [(5, 5)] * 2
    residual = [block for block in net.blocks if block.residual]
    assert len(residual) == 6 and all(isinstance(m, nn.BatchNorm2d) for m in residual[0].body[1::3])
    assert sum(block.shortcut is not None for block in residual) == 2  # projections where the shape changes


@pytest.mark.parametrize(("global_pool", "features"), [("flatten", 8 * 5 * 4), ("max", 8), ("avg", 8)])
def test_cnn_global_pooling(global_pool, features):
    blocks = [
        {"channels": 4, "kernel": [3, 5], "padding": "same", "pool": "max"},
        {"channels": 8, "kernel": 3, "padding": 1, "pool": "avg", "pool_size": [2, 2]},
    ]
    net = CaloImageCNN(2, 3, (21, 17), blocks, global_pool=global_pool, head=[16], dropout=0.1)
    assert net.block_shapes == [(4, 10, 8), (8, 5, 4)]
    assert net.features == features
    assert net(torch.randn(5, 2, 21, 17)).shape == (5, 3)


def test_cnn_flatten_size_matches_forward():
    """The analytic output sizes (strides, dilation, no padding, several convs) agree with PyTorch."""
    blocks = [
        {"channels": 6, "kernel": 5, "stride": 2, "dilation": 2, "convs": 2},
        {"channels": 5, "kernel": [3, 1], "padding": [1, 0], "convs": 3, "batch_norm": True, "pool": "max"},
    ]
    net = CaloImageCNN(1, 2, (33, 40), blocks, global_pool="flatten")
    features = net.pool(net.blocks(torch.randn(2, 1, 33, 40)))
    assert features.shape == (2, net.features)
    assert net.block_shapes == [(6, 5, 8), (5, 2, 4)]  # 33x40 -> 13x16 -> 5x8 -> 5x8 -> pooled 2x4


def test_residual_block_with_shape_change():
    blocks = [
        {"channels": 8, "kernel": 3, "padding": "same", "convs": 2, "residual": True},  # 3 -> 8 channels
        {"channels": 8, "kernel": 3, "padding": "same", "convs": 2, "residual": True},  # identity shortcut
        {
            "channels": 16,
            "kernel": 3,
            "stride": 2,
            "padding": 1,
            "convs": 2,
            "residual": True,
            "batch_norm": True,
        },
    ]
    net = CaloImageCNN(3, 2, (15, 15), blocks)
    first, identity, strided = net.blocks
    assert isinstance(first.shortcut, nn.Sequential) and first.shortcut[0].kernel_size == (1, 1)
    assert identity.shortcut is None
    assert strided.shortcut[0].stride == (2, 2) and isinstance(strided.shortcut[1], nn.BatchNorm2d)
    assert net.block_shapes == [(8, 15, 15), (8, 15, 15), (16, 8, 8)]
    x = torch.randn(4, 3, 15, 15)
    assert strided(identity(first(x))).shape == (4, 16, 8, 8)
    assert net(x).shape == (4, 2)


@pytest.mark.parametrize(
    ("blocks", "match"),
    [
        (
            [{"channels": 4, "kernel": 5}, {"channels": 4, "kernel": 7}],
            r"blocks\[1\]\.kernel .*nothing is left",
        ),
        ([{"channels": 4, "pool": "max", "pool_size": 9}], r"blocks\[0\]\.pool_size"),
        ([{"channels": 4, "pool": "median"}], r"blocks\[0\]\.pool .*'median'"),
        ([{"channels": 4}, {"channels": 4, "kernal": 3}], r"blocks\[1\]: unknown key.*'kernal'"),
        ([{"channels": 4, "padding": "same", "stride": 2}], r"blocks\[0\]\.padding 'same' needs stride 1"),
        ([{"channels": 4, "kernel": 3, "residual": True}], r"blocks\[0\]\.padding .*residual"),
        ([{"channels": 0}], r"blocks\[0\]\.channels"),
        ([{"kernel": 3}], r"blocks\[0\]: key 'channels' is required"),
        ([], r"non-empty list"),
    ],
)
def test_cnn_invalid_configuration(blocks, match):
    with pytest.raises(ConfigError, match=match):
        CaloImageCNN(1, 2, (10, 10), blocks)


def test_cnn_invalid_global_pool():
    with pytest.raises(ConfigError, match="global_pool"):
        CaloImageCNN(1, 2, (10, 10), [{"channels": 4}], global_pool="sum")


def blob_images(n: int, generator: torch.Generator, size: int = 16) -> tuple[torch.Tensor, torch.Tensor]:
    """One blob at the centre (class 0) vs two blobs left and right of it (class 1), same total intensity."""
    label = torch.randint(0, 2, (n,), generator=generator)
    grid = torch.arange(size, dtype=torch.float32)
    eta, phi = grid.view(1, size, 1), grid.view(1, 1, size)

    def blob(centre_eta, centre_phi):
        return torch.exp(
            -((eta - centre_eta.view(-1, 1, 1)) ** 2 + (phi - centre_phi.view(-1, 1, 1)) ** 2) / 3.0
        )

    jitter = lambda: torch.randint(-2, 3, (n,), generator=generator).float()  # noqa: E731
    centre = size / 2 + jitter()
    offset = 2.5 + torch.rand(n, generator=generator) * 2
    one = blob(centre, size / 2 + jitter())
    two = 0.5 * (blob(centre, size / 2 - offset) + blob(centre, size / 2 + offset))
    images = torch.where(label.view(-1, 1, 1) == 1, two, one)
    images = images / images.sum(dim=(1, 2), keepdim=True)
    images = images + 0.002 * torch.randn(images.shape, generator=generator)
    return images.unsqueeze(1), label


def test_cnn_learns_one_vs_two_blobs():
    torch.manual_seed(0)
    generator = torch.Generator().manual_seed(1)
    x_train, y_train = blob_images(512, generator)
    x_test, y_test = blob_images(512, generator)
    blocks = [
        {"channels": 8, "kernel": 3, "padding": "same", "pool": "max"},
        {"channels": 16, "kernel": 3, "padding": "same", "pool": "max"},
    ]
    net = CaloImageCNN(1, 2, (16, 16), blocks, global_pool="flatten", head=[32])
    scale = 1.0 / x_train.std()
    optimizer = torch.optim.Adam(net.parameters(), lr=3e-3)
    for step in range(30):
        batch = slice((step % 8) * 64, (step % 8 + 1) * 64)
        loss = nn.functional.cross_entropy(net(x_train[batch] * scale), y_train[batch])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        accuracy = (net.eval()(x_test * scale).argmax(dim=1) == y_test).float().mean().item()
    assert accuracy > 0.9, accuracy


# ----------------------------------------------------------------------------------------------------------
# RNN
# ----------------------------------------------------------------------------------------------------------

CONFIGS = [
    pytest.param(
        {"cell": cell, "bidirectional": bidirectional, "layers": layers, "front_end": front_end},
        id=f"{cell}-{'bi' if bidirectional else 'uni'}-{layers}layer-{'fe' if front_end else 'nofe'}",
    )
    for cell in ("lstm", "gru")
    for bidirectional in (False, True)
    for layers in (1, 2)
    for front_end in (None, [12, 6])
]
NO_FRONT_END = [config for config in CONFIGS if config.values[0]["front_end"] is None]
WITH_FRONT_END = [config for config in CONFIGS if config.values[0]["front_end"] is not None]


def make_rnn(config: dict, seed: int = 0, in_channels: int = 5) -> JetSequenceRNN:
    torch.manual_seed(seed)
    # silu: no dead units at initialisation, so every input change reaches the logits
    return JetSequenceRNN(in_channels, 3, hidden=8, head=[8], activation="silu", **config).eval()


def sequences(counts=(12, 7, 3, 0), channels: int = 5, length: int = 12, seed: int = 0):
    """Left-aligned padded sequences ``(B, C, P)`` with garbage (not zero) in the padding."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(len(counts), channels, length, generator=g)
    mask = torch.arange(length)[None, :] < torch.tensor(counts)[:, None]
    return torch.where(mask[:, None, :], x, torch.full_like(x, 3.0)), mask


def interleave(x: torch.Tensor, mask: torch.Tensor, length: int, seed: int = 1):
    """The same real elements, in the same order, at random positions among ``length``; random padding."""
    g = torch.Generator().manual_seed(seed)
    batch, channels, _ = x.shape
    out = torch.randn(batch, channels, length, generator=g) * 50
    out_mask = torch.zeros(batch, length, dtype=torch.bool)
    for b in range(batch):
        n = int(mask[b].sum())
        positions = torch.randperm(length, generator=g)[:n].sort().values
        out[b][:, positions] = x[b][:, mask[b]]
        out_mask[b, positions] = True
    return out, out_mask


@pytest.mark.parametrize("config", CONFIGS)
def test_rnn_padding_never_changes_the_output(config):
    net = make_rnn(config)
    x, mask = sequences()
    with torch.no_grad():
        reference = net(x, mask)
        assert reference.shape == (4, 3) and torch.isfinite(reference).all()
        # other pad values (huge ones too)
        noisy = torch.where(mask[:, None, :], x, torch.randn_like(x) * 1e6)
        torch.testing.assert_close(net(noisy, mask), reference)
        not_a_number = torch.where(mask[:, None, :], x, torch.full_like(x, float("nan")))
        torch.testing.assert_close(net(not_a_number, mask), reference)
        # longer padding
        longer = nn.functional.pad(x, (0, 20), value=-7.0)
        torch.testing.assert_close(net(longer, nn.functional.pad(mask, (0, 20), value=False)), reference)
        # not left-aligned: padding interleaved with the real elements
        torch.testing.assert_close(net(*interleave(x, mask, 30)), reference)


def test_rnn_gradients_ignore_non_finite_padding():
    """Training on batches with inf/NaN padding gives finite gradients (padding is zeroed, not multiplied)."""
    net = make_rnn({"cell": "lstm", "bidirectional": True, "layers": 2, "front_end": [12, 6]}).train()
    x, mask = sequences()
    x = torch.where(
        mask[:, None, :], x, torch.tensor([float("inf"), float("nan"), -float("inf"), 0, 1]).view(1, 5, 1)
    )
    net(x, mask).square().sum().backward()
    assert all(torch.isfinite(p.grad).all() for p in net.parameters())


@pytest.mark.parametrize("config", CONFIGS)
def test_rnn_order_and_content_matter(config):
    net = make_rnn(config)
    x, mask = sequences()
    with torch.no_grad():
        reference = net(x, mask)
        # reverse the order of the 7 real elements of jet 1
        reordered = x.clone()
        reordered[1, :, :7] = x[1, :, :7].flip(-1)
        changed = net(reordered, mask)
        assert (changed[1] - reference[1]).abs().max() > 1e-4
        torch.testing.assert_close(changed[[0, 2, 3]], reference[[0, 2, 3]])
        # change one real element (the middle one) of jet 2
        modified = x.clone()
        modified[2, :, 1] += 2.0
        assert (net(modified, mask)[2] - reference[2]).abs().max() > 1e-4


@pytest.mark.parametrize("config", CONFIGS)
def test_rnn_empty_jets_give_the_head_of_zeros(config):
    net = make_rnn(config)
    x, mask = sequences(counts=(0, 4, 0))
    with torch.no_grad():
        out = net(x, mask)
        expected = net.head(torch.zeros(1, net.head.layers[0].in_features))
        assert torch.isfinite(out).all()
        torch.testing.assert_close(out[[0, 2]], expected.expand(2, -1))
        all_empty = net(x, torch.zeros_like(mask))
        torch.testing.assert_close(all_empty, expected.expand(3, -1))


@pytest.mark.parametrize("config", CONFIGS)
def test_rnn_batch_equals_single_jets(config):
    net = make_rnn(config)
    x, mask = sequences(counts=(12, 9, 5, 1, 0))
    with torch.no_grad():
        batch = net(x, mask)
        singles = torch.cat([net(x[i : i + 1], mask[i : i + 1]) for i in range(len(x))])
    torch.testing.assert_close(batch, singles)


@pytest.mark.parametrize("config", NO_FRONT_END)
def test_rnn_matches_packed_sequences(config):
    """Same weights in a multi-layer (bidirectional) torch RNN run on packed sequences: same final state."""
    net = make_rnn(config)
    x, mask = sequences(counts=(12, 7, 3, 1))
    reference = (nn.LSTM if config["cell"] == "lstm" else nn.GRU)(
        5, 8, num_layers=config["layers"], bidirectional=config["bidirectional"], batch_first=True
    )
    state = {}
    for i, layer in enumerate(net.forward_layers):
        state |= {f"{k[:-1]}{i}": v for k, v in layer.state_dict().items()}
    for i, layer in enumerate(net.backward_layers):
        state |= {f"{k[:-1]}{i}_reverse": v for k, v in layer.state_dict().items()}
    reference.load_state_dict(state)
    packed = nn.utils.rnn.pack_padded_sequence(
        x.transpose(1, 2), mask.sum(1), batch_first=True, enforce_sorted=False
    )
    with torch.no_grad():
        _, hidden = reference(packed)
        hidden = hidden[0] if config["cell"] == "lstm" else hidden
        final = torch.cat(list(hidden[-2:]), dim=1) if config["bidirectional"] else hidden[-1]
        torch.testing.assert_close(net(x, mask), net.head(final))


def test_left_align_and_reverse_real():
    x = torch.tensor([[[1.0, 9.0, 2.0, 9.0, 3.0]]])
    mask = torch.tensor([[True, False, True, False, True]])
    aligned, n = left_align(x, mask)
    assert aligned.tolist() == [[[1.0, 2.0, 3.0, 0.0, 0.0]]] and n.tolist() == [3]
    reversed_ = reverse_real(aligned.transpose(1, 2), n)
    assert reversed_[0, :, 0].tolist() == [3.0, 2.0, 1.0, 0.0, 0.0]
    torch.testing.assert_close(reverse_real(reversed_, n), aligned.transpose(1, 2))


def test_rnn_front_end_is_the_shared_per_particle_net():
    net = JetSequenceRNN(5, 2, front_end=[16, 8], hidden=8)
    assert isinstance(net.front_end, PerParticleNet)
    assert net.forward_layers[0].input_size == net.front_end.out_channels == 8
    convolutions = [name for name, m in net.named_modules() if isinstance(m, nn.Conv1d)]
    assert convolutions and all(name.startswith("front_end.") for name in convolutions)
    assert JetSequenceRNN(5, 2, front_end=None).front_end is None


@pytest.mark.parametrize("config", WITH_FRONT_END)
def test_rnn_real_only_front_end_equals_dense(config):
    """The front end on the real particles only gives the values and gradients of the dense one."""
    real = make_rnn(config).train()
    dense = make_rnn({**config, "dense_front_end": True}).train()  # same seed: same parameters
    assert not real.front_end.dense and dense.front_end.dense
    x, mask = interleave(*sequences(counts=(12, 0, 7, 1, 3, 0)), length=20)
    results = []
    for net in (real, dense):
        inputs = x.clone().requires_grad_(True)
        out = net(inputs, mask)
        out.square().sum().backward()
        results.append((out.detach(), inputs.grad, [p.grad for p in net.parameters()]))
    torch.testing.assert_close(results[0][0], results[1][0])
    torch.testing.assert_close(results[0][1], results[1][1])
    for (name, _), a, b in zip(real.named_parameters(), results[0][2], results[1][2], strict=True):
        torch.testing.assert_close(a, b, msg=name)


@pytest.mark.parametrize(
    ("name", "cell", "bidirectional", "front_end"),
    [("lstm", "lstm", False, False), ("gru", "gru", True, False), ("deepjet", "lstm", False, True)],
)
def test_rnn_presets(name, cell, bidirectional, front_end):
    net = hydra.utils.instantiate(preset_net(name, in_channels=7, n_outputs=2))
    assert net.cell == cell and net.bidirectional == bidirectional
    assert isinstance(net.front_end, PerParticleNet) == front_end
    assert 50_000 <= count_parameters(net) <= 300_000
    x, mask = sequences(counts=(128, 40, 0), channels=7, length=128)
    with torch.no_grad():
        assert net.eval()(x, mask).shape == (3, 2)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"cell": "rnn"}, "cell"),
        ({"layers": 0}, "layers"),
        ({"hidden": 0}, "hidden"),
        ({"dropout": 1.0}, "dropout"),
    ],
)
def test_rnn_invalid_configuration(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        JetSequenceRNN(5, 2, **kwargs)


@pytest.mark.parametrize(
    "config",
    [
        {"cell": "lstm", "bidirectional": True, "layers": 2, "front_end": [12, 6]},
        {"cell": "gru", "bidirectional": False, "layers": 1, "front_end": None},
    ],
    ids=["lstm-bi-2layer-fe", "gru-uni-1layer"],
)
def test_rnn_trace_keeps_batch_and_length_dynamic(config):
    """A trace on one batch size and length runs on others with the eager results (needed by ONNX export)."""
    net = make_rnn(config)
    x, mask = sequences(counts=(12, 7, 3, 0), length=12)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        traced = torch.jit.trace(net, (x, mask))
    # warnings raised by hepnn's own code: its package directory, not any path containing "hepnn"
    # (a checkout named hepnn also holds torch's files under .venv)
    package = Path(hepnn.__file__).resolve().parent
    ours = [
        w
        for w in caught
        if issubclass(w.category, torch.jit.TracerWarning)
        and Path(w.filename).resolve().is_relative_to(package)
    ]
    assert not ours, [str(w.message) for w in ours]
    other, other_mask = interleave(*sequences(counts=(20, 1, 0, 13, 25, 6), length=25, seed=3), 31)
    with torch.no_grad():
        torch.testing.assert_close(traced(other, other_mask), net(other, other_mask))
        torch.testing.assert_close(traced(x[:1], mask[:1]), net(x[:1], mask[:1]))


def increasing_sequences(n: int, generator: torch.Generator, length: int = 12):
    """Label 1 for sequences (3 to 10 elements, garbage padding) whose first feature increases."""
    counts = torch.randint(3, 11, (n,), generator=generator)
    mask = torch.arange(length)[None, :] < counts[:, None]
    values = torch.rand(n, length, generator=generator)
    values = torch.where(mask, values, torch.full_like(values, 2.0))  # padding sorts last
    ordered = torch.rand(n, generator=generator) < 0.5
    values = torch.where(ordered[:, None], values.sort(dim=1).values, values)
    real = torch.where(mask, values, torch.zeros_like(values))
    increasing = ((real[:, 1:] > real[:, :-1]) | ~mask[:, 1:]).all(dim=1)
    noise = torch.randn(n, 1, length, generator=generator)
    x = torch.cat([values.unsqueeze(1) * 4 - 2, noise], dim=1)
    x = torch.where(mask[:, None, :], x, torch.randn(x.shape, generator=generator) * 10)
    return x, mask, increasing.long()


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_rnn_learns_whether_a_sequence_increases(cell):
    torch.manual_seed(0)
    generator = torch.Generator().manual_seed(2)
    x_train, mask_train, y_train = increasing_sequences(2048, generator)
    x_test, mask_test, y_test = increasing_sequences(1024, generator)
    net = JetSequenceRNN(2, 2, cell=cell, hidden=16, head=[16])
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-2)
    for step in range(100):
        batch = slice((step % 16) * 128, (step % 16 + 1) * 128)
        loss = nn.functional.cross_entropy(net(x_train[batch], mask_train[batch]), y_train[batch])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        accuracy = (net.eval()(x_test, mask_test).argmax(dim=1) == y_test).float().mean().item()
    assert accuracy > 0.9, accuracy
