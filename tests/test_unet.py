"""The U-Net: output size for any input size, skip connections, learning a per-pixel map."""

import pytest
import torch

from hepnn.errors import ConfigError
from hepnn.nets.unet import UNet


@pytest.mark.parametrize("upsample", ["transpose", "bilinear", "nearest"])
@pytest.mark.parametrize("size", [(40, 40), (33, 33), (17, 40), (5, 3), (1, 1)])
def test_the_output_has_the_input_size_for_any_image(upsample, size):
    net = UNet(3, out_channels=2, widths=(4, 8, 16), upsample=upsample)
    out = net(torch.randn(2, 3, *size))
    assert out.shape == (2, 2, *size)


def test_a_pixel_sees_its_neighbourhood_and_through_the_pooled_levels_farther():
    torch.manual_seed(0)
    net = UNet(1, widths=(4, 8, 16), batch_norm=False).eval()
    x = torch.zeros(1, 1, 64, 64, requires_grad=True)
    net(x)[0, 0, 32, 32].backward()
    influence = x.grad[0, 0].abs()
    assert influence[32, 32] > 0 and influence[33, 31] > 0  # the full-resolution path
    assert influence[32, 42] > 0  # 10 pixels away: only the pooled levels reach that far
    assert influence[0, 0] == 0  # beyond the receptive field


def test_non_negative_outputs_and_gradients_reach_every_parameter():
    net = UNet(2, widths=(4, 8), output_activation="softplus")
    out = net(torch.randn(3, 2, 9, 11))
    assert (out > 0).all()
    out.sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in net.parameters())


def test_it_learns_a_per_pixel_map():
    # the target keeps the pixels of channel 0 where channel 1 is off: a per-pixel selection
    torch.manual_seed(1)
    x = torch.rand(64, 2, 12, 12)
    x[:, 1] = (x[:, 1] > 0.5).float()
    target = x[:, :1] * (1 - x[:, 1:])
    net = UNet(2, widths=(8, 16), batch_norm=False)
    optimizer = torch.optim.Adam(net.parameters(), lr=3e-3)
    first = None
    for _ in range(300):
        loss = torch.nn.functional.mse_loss(net(x), target)
        first = first if first is not None else loss.item()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert loss.item() < 0.05 * first


def test_config_errors_name_the_key():
    with pytest.raises(ConfigError, match=r"model\.net\.widths\[1\]"):
        UNet(3, widths=(8, 0))
    with pytest.raises(ConfigError, match=r"model\.net\.upsample"):
        UNet(3, upsample="pixelshuffle")
    with pytest.raises(ConfigError, match=r"model\.net\.kernel must be odd"):
        UNet(3, kernel=4)
    with pytest.raises(ValueError, match=r"images \(B, C, H, W\)"):
        UNet(3)(torch.zeros(3, 8, 8))
