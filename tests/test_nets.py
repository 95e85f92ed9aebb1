"""Networks: shapes and invariances; the real-only per-particle path against the dense one and ONNX."""

import warnings

import numpy as np
import pytest
import torch

from hepnn.errors import ConfigError
from hepnn.nets.blocks import PerParticleNet, masked_pool
from hepnn.nets.particle_flow import ParticleFlowNetwork


def make_inputs(batch=4, channels=7, length=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, channels, length, generator=g)
    counts = torch.tensor([16, 9, 3, 0])[:batch]
    mask = torch.arange(length)[None, :] < counts[:, None]
    return x * mask[:, None, :], mask


def test_output_shape():
    net = ParticleFlowNetwork(in_channels=7, n_outputs=3, hidden=32, latent=16)
    x, mask = make_inputs()
    assert net(x, mask).shape == (4, 3)


def test_padding_never_changes_the_output():
    torch.manual_seed(0)
    net = ParticleFlowNetwork(in_channels=7, n_outputs=2, hidden=32, latent=16).eval()
    x, mask = make_inputs()
    reference = net(x, mask)
    # other values in padded positions
    noisy = torch.where(mask[:, None, :], x, torch.randn_like(x) * 100)
    torch.testing.assert_close(net(noisy, mask), reference)
    # longer padding
    longer = torch.nn.functional.pad(x, (0, 20), value=7.0)
    longer_mask = torch.nn.functional.pad(mask, (0, 20), value=False)
    torch.testing.assert_close(net(longer, longer_mask), reference)


def test_particle_order_does_not_matter():
    torch.manual_seed(1)
    net = ParticleFlowNetwork(in_channels=7, n_outputs=2, hidden=32, latent=16).eval()
    x, mask = make_inputs(batch=1)
    permutation = torch.randperm(16)
    torch.testing.assert_close(net(x[:, :, permutation], mask[:, permutation]), net(x, mask))


def test_masked_pooling_values():
    x = torch.tensor([[[1.0, 2.0, 100.0]]])
    mask = torch.tensor([[True, True, False]])
    assert masked_pool(x, mask, "sum").item() == 3.0
    assert masked_pool(x, mask, "mean").item() == 1.5
    assert masked_pool(x, mask, "max").item() == 2.0
    empty = torch.zeros(1, 3, dtype=torch.bool)
    assert masked_pool(x, empty, "max").item() == 0.0 and masked_pool(x, empty, "mean").item() == 0.0


# ----------------------------------------------------------------------------------------------------------
# real-only per-particle computation against the dense path
# ----------------------------------------------------------------------------------------------------------

COUNTS = [16, 0, 1, 9, 0, 3, 12, 16]  # varied lengths, empty jets included


def varied_inputs(channels=7, length=16, seed=3, pad_value=None):
    """A batch with the real particles scattered over the slots (not only first) and padding of
    random (or ``pad_value``) values."""
    g = torch.Generator().manual_seed(seed)
    mask = torch.zeros(len(COUNTS), length, dtype=torch.bool)
    for row, count in enumerate(COUNTS):
        mask[row, torch.randperm(length, generator=g)[:count]] = True
    x = torch.randn(len(COUNTS), channels, length, generator=g)
    padding = torch.randn(x.shape, generator=g) * 50 if pad_value is None else torch.full_like(x, pad_value)
    return torch.where(mask[:, None, :], x, padding), mask


def twin_pfns(pooling, **kwargs):
    """The same initialised PFN twice: real-only and dense."""
    torch.manual_seed(4)
    real = ParticleFlowNetwork(7, 3, hidden=16, latent=8, pooling=pooling, activation="silu", **kwargs)
    dense = ParticleFlowNetwork(
        7, 3, hidden=16, latent=8, pooling=pooling, activation="silu", dense=True, **kwargs
    )
    dense.load_state_dict(real.state_dict())
    return real.eval(), dense.eval()


@pytest.mark.parametrize("pooling", ["sum", "mean", "max"])
def test_pfn_real_only_equals_dense_values_and_gradients(pooling):
    real, dense = twin_pfns(pooling)
    x, mask = varied_inputs()
    outputs, grads = [], []
    for net in (real, dense):
        inputs = x.clone().requires_grad_(True)
        out = net(inputs, mask)
        (out * torch.linspace(-1.0, 2.0, out.numel()).reshape(out.shape)).sum().backward()
        outputs.append(out.detach())
        grads.append((inputs.grad, {name: p.grad for name, p in net.named_parameters()}))
    torch.testing.assert_close(outputs[0], outputs[1])
    torch.testing.assert_close(grads[0][0], grads[1][0])
    assert grads[0][0][~mask[:, None, :].expand_as(x)].abs().max() == 0  # padding gets no gradient
    for name, grad in grads[0][1].items():
        torch.testing.assert_close(grad, grads[1][1][name], msg=name)


def test_pfn_empty_jets_and_batches():
    real, dense = twin_pfns("sum")
    x, mask = varied_inputs()
    empty = torch.zeros_like(mask)
    torch.testing.assert_close(real(x, empty), dense(x, empty))
    torch.testing.assert_close(real(x, empty), real.head(torch.zeros(len(COUNTS), 8)))
    torch.testing.assert_close(real(x[:0], mask[:0]), dense(x[:0], mask[:0]))


@pytest.mark.parametrize("pooling", ["sum", "mean", "max"])
def test_pfn_real_only_does_not_depend_on_the_pad_values(pooling):
    real, _ = twin_pfns(pooling)
    reference = real(*varied_inputs(pad_value=0.0))
    for pad_value in (1.0e6, -3.0, float("nan"), float("inf")):
        torch.testing.assert_close(real(*varied_inputs(pad_value=pad_value)), reference)


def test_per_particle_net_real_only_equals_dense():
    torch.manual_seed(5)
    real = PerParticleNet(7, [12, 5], "gelu")
    dense = PerParticleNet(7, [12, 5], "gelu", dense=True)
    dense.load_state_dict(real.state_dict())
    x, mask = varied_inputs()
    a, b = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
    out_real, out_dense = real(a, mask), dense(b, mask)
    assert out_real.shape == out_dense.shape == (len(COUNTS), 5, 16)
    torch.testing.assert_close(out_real, out_dense)
    assert (out_real[~mask[:, None, :].expand_as(out_real)] == 0).all()  # zero-padded as the dense path
    weights = torch.randn(out_real.shape)
    (out_real * weights).sum().backward()
    (out_dense * weights).sum().backward()
    torch.testing.assert_close(a.grad, b.grad)
    for (name, p), q in zip(real.named_parameters(), dense.parameters(), strict=True):
        torch.testing.assert_close(p.grad, q.grad, msg=name)


def test_dense_option_is_checked():
    with pytest.raises(ConfigError, match="dense must be true or false"):
        ParticleFlowNetwork(7, 2, dense="yes")


def test_pfn_onnx_export_matches_pytorch(tmp_path):
    """Exported while tracing (the dense path), run by onnxruntime on another batch size and length."""
    ort = pytest.importorskip("onnxruntime")
    real, _ = twin_pfns("mean")
    path = tmp_path / "pfn.onnx"
    example = varied_inputs(length=16)
    with warnings.catch_warnings(), torch.no_grad():
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        torch.onnx.export(
            real,
            example,
            str(path),
            dynamo=False,
            opset_version=17,
            input_names=["particles", "mask"],
            output_names=["logits"],
            dynamic_axes={
                "particles": {0: "batch", 2: "length"},
                "mask": {0: "batch", 1: "length"},
                "logits": {0: "batch"},
            },
        )
    onnx = pytest.importorskip("onnx")
    assert "NonZero" not in {
        node.op_type for node in onnx.load(str(path)).graph.node
    }  # no data-dependent shape
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    x, mask = varied_inputs(length=40, seed=8)
    x, mask = x[:5], mask[:5]
    (onnx_out,) = session.run(None, {"particles": x.numpy(), "mask": mask.numpy()})
    with torch.no_grad():
        reference = real(x, mask)
    assert onnx_out.shape == (5, 3)
    np.testing.assert_allclose(onnx_out, reference.numpy(), rtol=1e-5, atol=1e-5)


def test_pfn_global_features_join_the_pooled_vector():
    torch.manual_seed(0)
    net = ParticleFlowNetwork(in_channels=4, n_outputs=2, hidden=16, latent=8, global_features=3, dropout=0.0)
    net.eval()
    x = torch.randn(5, 4, 10)
    mask = torch.arange(10).expand(5, 10) < torch.tensor([[10], [7], [3], [1], [5]])
    jet = torch.randn(5, 3)
    out = net(x, mask, jet)
    assert out.shape == (5, 2)
    # the globals reach the output; the dense path agrees; the particles stay permutation invariant
    assert not torch.allclose(out, net(x, mask, torch.zeros_like(jet)))
    net.dense = True
    torch.testing.assert_close(net(x, mask, jet), out, rtol=1e-5, atol=1e-6)
    assert net.head.layers[0].in_features == 8 + 3
    with pytest.raises(ValueError, match="takes 3 global features per jet, but forward got none"):
        net(x, mask)
    plain = ParticleFlowNetwork(in_channels=4, n_outputs=2, hidden=16, latent=8)
    with pytest.raises(ValueError, match=r"takes 0 global features per jet, but forward got \(5, 3\)"):
        plain(x, mask, jet)
