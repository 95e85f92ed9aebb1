"""Networks: shapes and invariances."""

import torch

from hepnn.nets.blocks import masked_pool
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
