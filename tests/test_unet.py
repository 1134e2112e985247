"""The GroupNorm U-Net: shapes, parameter count by hand, GroupNorm groups, per-image
independence, initialisation, determinism and validation."""

from __future__ import annotations

import re

import pytest
import torch
from torch import nn

from fedlib.models import UNet


def test_output_shape_is_logits_per_pixel():
    net = UNet(3, 2, width=4, depth=2)
    assert net(torch.rand(5, 3, 16, 24)).shape == (5, 2, 16, 24)


def test_parameter_count_by_hand():
    # width 2, depth 1, one input and one output channel.
    # encoder 0: conv 1->2 (2*1*9 + 2 = 20) + GN (4); conv 2->2 (2*2*9 + 2 = 38) + GN (4) = 66
    # encoder 1: two convs 2->2 with GN = 2 * (38 + 4) = 84
    # decoder: cat 2 + 2 = 4 channels, middle 4 // 2 = 2: conv 4->2 (74) + GN (4);
    #          conv 2->2 (38) + GN (4) = 120
    # head: 1x1 conv 2->1 = 3.       Total 66 + 84 + 120 + 3 = 273.
    net = UNet(1, 1, width=2, depth=1)
    assert sum(p.numel() for p in net.parameters()) == 273


def test_fedmix_widths_at_full_size():
    # FedMix's U-Net (width 64, depth 4): encoder 64, 128, 256, 512, 512; decoder ends at 64.
    net = UNet(1, 1, width=64, depth=4)
    convs = [m for m in net.encoder.modules() if isinstance(m, nn.Conv2d)]
    assert [c.out_channels for c in convs[1::2]] == [64, 128, 256, 512, 512]
    dec = [m for m in net.decoder.modules() if isinstance(m, nn.Conv2d)]
    assert [c.in_channels for c in dec[0::2]] == [1024, 512, 256, 128]
    assert [c.out_channels for c in dec[1::2]] == [256, 128, 64, 64]
    assert net.head.in_channels == 64


def test_groupnorm_has_two_channels_per_group_and_no_batchnorm():
    net = UNet(1, 1, width=6, depth=2)
    norms = [m for m in net.modules() if isinstance(m, nn.GroupNorm)]
    assert norms and all(m.num_channels == 2 * m.num_groups for m in norms)
    assert not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in net.modules())
    assert all(v.is_floating_point() for v in net.state_dict().values())


def test_each_image_is_normalised_on_its_own():
    # GroupNorm: an image's output does not depend on the other images of the batch.
    torch.manual_seed(0)
    net = UNet(1, 1, width=4, depth=2).train()
    x = torch.rand(4, 1, 16, 16)
    together = net(x)
    alone = torch.cat([net(x[i : i + 1]) for i in range(4)])
    assert torch.allclose(together, alone, atol=1e-5)


def test_xavier_weights_and_zero_biases():
    net = UNet(1, 1, width=4, depth=2)
    convs = [m for m in net.modules() if isinstance(m, nn.Conv2d)]
    assert all(torch.count_nonzero(c.bias) == 0 for c in convs)
    first = convs[0].weight.detach()  # fan_in 9, fan_out 36: bound sqrt(6 / 45)
    assert float(first.abs().max()) <= (6 / 45) ** 0.5


def test_same_seed_same_weights():
    torch.manual_seed(3)
    a = UNet(1, 1, width=4, depth=2).state_dict()
    torch.manual_seed(3)
    b = UNet(1, 1, width=4, depth=2).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_leaky_relu_option():
    net = UNet(1, 1, width=4, depth=2, act="leaky_relu")
    slopes = {m.negative_slope for m in net.modules() if isinstance(m, nn.LeakyReLU)}
    assert slopes == {0.1}
    assert not any(isinstance(m, nn.ReLU) for m in net.modules())


def test_norm_none_has_no_normalisation():
    net = UNet(1, 1, width=4, depth=2, norm="none")
    assert not any(isinstance(m, nn.GroupNorm) for m in net.modules())


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"in_channels": 0}, ValueError, "UNet: 'in_channels' must be an int >= 1, got 0."),
        ({"num_classes": 0}, ValueError, "UNet: 'num_classes' must be an int >= 1, got 0."),
        ({"width": 1}, ValueError, "UNet: 'width' must be an int >= 2, got 1."),
        ({"width": 5}, ValueError, "UNet: 'width' must be an even int >= 2, got 5."),
        ({"width": 4.0}, ValueError, "UNet: 'width' must be an int >= 2, got 4.0."),
        ({"depth": 0}, ValueError, "UNet: 'depth' must be an int >= 1 and <= 6, got 0."),
        (
            {"act": "gelu"},
            ValueError,
            "UNet: 'act' must be one of 'relu', 'leaky_relu', got 'gelu'.",
        ),
        (
            {"norm": "batch"},
            ValueError,
            "UNet: 'norm' must be one of 'group', 'none', got 'batch'.",
        ),
    ],
)
def test_bad_parameters(kwargs, error, message):
    with pytest.raises(error, match=f"^{re.escape(message)}$"):
        UNet(**kwargs)


def test_input_side_not_divisible_is_rejected():
    net = UNet(1, 1, width=4, depth=2)
    with pytest.raises(ValueError, match="divisible by 2\\*\\*depth = 4"):
        net(torch.rand(1, 1, 10, 16))
