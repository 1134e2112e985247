"""A small GroupNorm U-Net for CPU-sized segmentation (FedMix, Chapter 5).

The layout is FedMix's U-Net (the bilinear variant of the common PyTorch U-Net), with the
width and the depth as options so that it trains on one CPU thread: an encoder of ``depth``
2x2 max-pool steps whose widths double from ``width`` (the last step keeps its width, so the
bilinear decoder can halve), a decoder of bilinear 2x upsampling, concatenation with the skip
connection and a double convolution, and a 1x1 output convolution giving logits (the sigmoid
is applied outside, by the loss or the metric).

Every convolution block is MONAI's :class:`monai.networks.blocks.Convolution` (3x3 conv ->
GroupNorm -> ReLU). GroupNorm with ``C/2`` groups, as in FedMix's code, normalises each image on
its own, so there are no BatchNorm running statistics to average across hospitals.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from fedlib._validation import Interval, Options, check_param

__all__ = ["UNet"]


class UNet(nn.Module):
    """U-Net with GroupNorm, logits out.

    With ``depth = D`` and ``width = w`` the encoder widths are
    ``e_i = w 2^min(i, D-1)`` for ``i = 0..D`` (FedMix, ``D = 4``, ``w = 64``: 64, 128, 256,
    512, 512). Decoder step ``i = D..1`` upsamples, concatenates ``e_{i-1}`` and applies a double
    convolution with ``max(e_{i-1} / 2, w)`` output channels (middle width: half the input), so
    the last feature map has ``w`` channels before the 1x1 output convolution. Weights are
    Xavier-uniform, biases zero, as in FedMix's code. Inputs are images in [0, 1], standardised
    inside by ``(x - 0.5) / 0.25``.

    Parameters
    ----------
    in_channels : int, default 1
        1 for grayscale (FedMix reads every image in grayscale).
    num_classes : int, default 1
        Output channels: one sigmoid channel per foreground class.
    width : int, default 16
        Channels of the first block (64 in FedMix; 16 or less for CPU). Must be even, so that
        GroupNorm's ``C/2`` groups divide every width.
    depth : int, default 3
        Number of 2x2 downsampling steps (4 in FedMix). Image sides must be divisible by
        ``2**depth``.
    norm : {"group", "none"}, default "group"
        ``"group"``: GroupNorm with ``C/2`` groups of two channels.
    act : {"relu", "leaky_relu"}, default "relu"
        ReLU as in FedMix; ``"leaky_relu"`` (slope 0.1, as MONAI's ``BasicUNet``) keeps units
        from dying in very narrow networks (width 8 or less), where a ReLU U-Net trained with
        the soft Dice loss can end with every output logit below 0.

    References
    ----------
    Ronneberger, Fischer, Brox, "U-Net", MICCAI 2015, arXiv:1505.04597. FedMix's variant:
    Wicaksana et al., "FedMix", IEEE TMI 2023, arXiv:2205.01840 (code github.com/Jwicaksana/FedMix).
    Building blocks: MONAI Consortium, "MONAI: An open-source framework for deep learning in
    healthcare", arXiv:2211.02701.

    Examples
    --------
    >>> net = UNet(1, 1, width=4, depth=2)
    >>> net(torch.zeros(2, 1, 16, 16)).shape
    torch.Size([2, 1, 16, 16])
    """

    def __init__(
        self,
        in_channels: int = 1,
        num_classes: int = 1,
        *,
        width: int = 16,
        depth: int = 3,
        norm: str = "group",
        act: str = "relu",
    ):
        super().__init__()
        owner = "UNet"
        check_param(owner, "in_channels", in_channels, Interval(int, 1, None))
        check_param(owner, "num_classes", num_classes, Interval(int, 1, None))
        check_param(owner, "width", width, Interval(int, 2, None))
        if width % 2:
            raise ValueError(f"{owner}: 'width' must be an even int >= 2, got {width}.")
        check_param(owner, "depth", depth, Interval(int, 1, 6))
        check_param(owner, "norm", norm, Options(("group", "none")))
        check_param(owner, "act", act, Options(("relu", "leaky_relu")))
        self.in_channels, self.num_classes = in_channels, num_classes
        self.width, self.depth, self.norm, self.act = width, depth, norm, act

        enc = [width * 2 ** min(i, depth - 1) for i in range(depth + 1)]
        self.encoder = nn.ModuleList(
            [_double_conv(in_channels, enc[0], enc[0], norm, act)]
            + [_double_conv(enc[i - 1], enc[i], enc[i], norm, act) for i in range(1, depth + 1)]
        )
        decoder, channels = [], enc[depth]
        for i in range(depth, 0, -1):
            out = max(enc[i - 1] // 2, width)
            total = channels + enc[i - 1]
            decoder.append(_double_conv(total, out, total // 2, norm, act))
            channels = out
        self.decoder = nn.ModuleList(decoder)
        self.head = nn.Conv2d(channels, num_classes, kernel_size=1)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Fresh weights from the current torch seed: Xavier-uniform convolutions with zero
        biases, GroupNorm affine ``(1, 0)`` (FedMix's two networks start independently)."""
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.xavier_uniform_(module.weight)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, nn.GroupNorm):
                module.reset_parameters()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits ``z``, shape (N, num_classes, H, W); ``σ(z)`` is the foreground probability."""
        side = 2**self.depth
        if x.ndim != 4 or x.shape[-1] % side or x.shape[-2] % side:
            raise ValueError(
                f"UNet: input must have shape (N, C, H, W) with H and W divisible by "
                f"2**depth = {side}, got {tuple(x.shape)}."
            )
        h = self.encoder[0]((x - 0.5) / 0.25)
        skips = [h]
        for block in self.encoder[1:]:
            h = block(F.max_pool2d(h, 2))
            skips.append(h)
        h = skips.pop()
        for block in self.decoder:
            skip = skips.pop()
            h = F.interpolate(h, size=skip.shape[-2:], mode="bilinear", align_corners=True)
            h = block(torch.cat([skip, h], dim=1))
        return self.head(h)


def _double_conv(c_in: int, c_out: int, c_mid: int, norm: str, act: str) -> nn.Sequential:
    """(3x3 conv -> GroupNorm(C/2) -> ReLU) x 2, from MONAI's ``Convolution`` block."""
    # MONAI is imported here, not at the top: its import costs seconds, which every other user
    # of fedlib.models (the classification chapters, the CLI) would otherwise pay.
    from monai.networks.blocks import Convolution

    def block(a: int, b: int) -> nn.Module:
        return Convolution(
            spatial_dims=2,
            in_channels=a,
            out_channels=b,
            kernel_size=3,
            act="RELU" if act == "relu" else ("LEAKYRELU", {"negative_slope": 0.1}),
            norm=("GROUP", {"num_groups": b // 2}) if norm == "group" else None,
            adn_ordering="NA",
        )

    return nn.Sequential(block(c_in, c_mid), block(c_mid, c_out))
