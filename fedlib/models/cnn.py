"""Small convolutional classifiers for the book's CPU-sized experiments.

Every classifier here splits into a feature extractor ``body`` and a linear ``head``, so that
methods can share the body and keep the head (FedPer, FedRep), regularize features (NPR) or add
a second head (FCA). State-dict keys therefore start with ``body.`` or ``head.``.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import torch
from torch import nn

from fedlib._validation import Interval, Options, check_param


class SmallCNN(nn.Module):
    """Three conv blocks (conv 3x3, BatchNorm, ReLU, 2x2 max-pool), global average pooling,
    then ``Dropout -> Linear``.

    Widths are ``width, 2*width, 4*width``; the feature dimension is ``4*width``. Inputs are
    images in [0, 1], standardised inside the model by ``(x - 0.5) / 0.25`` so datasets stay raw.

    Parameters
    ----------
    in_channels : int
        3 for RGB (SynthDerm), 1 for grayscale (SynthICH, SynthBUS).
    num_classes : int
    width : int, default 8
        Channels of the first block.
    dropout : float, default 0.0
        Dropout before the linear head (the papers' EfficientNet head uses 0.2).
    norm : {"batch", "group", "none"}, default "batch"
        Normalisation layer; BatchNorm buffers are averaged with the weights, as in the papers.
    """

    def __init__(
        self,
        in_channels: int = 3,
        num_classes: int = 8,
        *,
        width: int = 8,
        dropout: float = 0.0,
        norm: str = "batch",
    ):
        super().__init__()
        _check_options(in_channels, num_classes, width, dropout, norm)
        channels = (in_channels, width, 2 * width, 4 * width)
        layers: list[nn.Module] = []
        for c_in, c_out in zip(channels[:-1], channels[1:], strict=True):
            layers += [
                nn.Conv2d(c_in, c_out, 3, padding=1, bias=norm == "none"),
                _norm_layer(norm, c_out),
                nn.ReLU(inplace=True),
                nn.MaxPool2d(2),
            ]
        layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten()]
        self.body = nn.Sequential(*layers)
        self.feature_dim = channels[-1]
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.head = nn.Linear(self.feature_dim, num_classes)

    @classmethod
    def factory(
        cls,
        in_channels: int = 3,
        num_classes: int = 8,
        *,
        width: int = 8,
        dropout: float = 0.0,
        norm: str = "batch",
    ) -> Callable[[], SmallCNN]:
        """A no-argument function that builds a fresh ``SmallCNN`` with these options.

        This is what :class:`fedlib.core.Simulation` takes as ``model_fn``. The options are
        checked now, not at the first call, and nothing is built (no random number is drawn),
        so creating a factory never changes a seeded run.

        >>> make_model = SmallCNN.factory(in_channels=1, num_classes=5, width=4)
        >>> make_model().head.out_features
        5
        """
        _check_options(in_channels, num_classes, width, dropout, norm)
        return functools.partial(
            cls, in_channels, num_classes, width=width, dropout=dropout, norm=norm
        )

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Pooled features ``h = phi(x)``, shape (N, feature_dim)."""
        return self.body((x - 0.5) / 0.25)

    def classify(self, h: torch.Tensor) -> torch.Tensor:
        """Logits from features, ``z = W dropout(h) + b``."""
        return self.head(self.dropout(h))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classify(self.features(x))


def _check_options(in_channels, num_classes, width, dropout, norm) -> None:
    check_param("SmallCNN", "in_channels", in_channels, Interval(int, 1, None))
    check_param("SmallCNN", "num_classes", num_classes, Interval(int, 2, None))
    check_param("SmallCNN", "width", width, Interval(int, 1, None))
    check_param("SmallCNN", "dropout", dropout, Interval(float, 0, 1, closed="left"))
    check_param("SmallCNN", "norm", norm, Options(("batch", "group", "none")))


def _norm_layer(norm: str, channels: int) -> nn.Module:
    if norm == "batch":
        return nn.BatchNorm2d(channels)
    if norm == "group":
        return nn.GroupNorm(min(4, channels), channels)
    return nn.Identity()
