"""Federated self-training (FedST), FedMix's semi-supervised baseline.

The weakly labelled clients are treated as unlabeled. During a warm-up only the pixel-labelled
clients train (all aggregation weight on them); afterwards each unlabeled client labels its own
images with the received global model and trains on the pixels the model is sure of, with a
binary cross-entropy on a gamma-adjusted copy of the images, while the pixel clients keep the
soft Dice loss. The server gives the pixel clients a fixed share of the weight.

Reference: the FedST baseline of FedMix's code (Wicaksana et al., IEEE TMI 2023,
arXiv:2205.01840, github.com/Jwicaksana/FedMix); FedRGD (the same training with equal shares,
``pixel_share=0.5``) is its preset without an identified reference.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

from fedlib._validation import Interval, Options
from fedlib.core.algorithm import LocalContext
from fedlib.core.protocol import ClientReply
from fedlib.methods.fedmix import (
    IS_PIXEL,
    NUM_TRAINED,
    SegmentationFedAvg,
    TrainingView,
    flip_views,
    supervision_of,
)
from fedlib.segmentation_ops import confident_pixel_targets, fedst_weights, gamma_adjust, masked_bce

__all__ = ["FedST"]


@dataclass(kw_only=True)
class FedST(SegmentationFedAvg):
    """Federated self-training with confident-pixel pseudo-labels.

    Round ``t < warmup_rounds``: as :class:`~fedlib.methods.fedmix.SegmentationFedAvg` (only
    pixel clients train). Afterwards an unlabeled client ``i`` computes, with the received
    global model ``G`` in eval mode and on a flipped view of each image,
    ``p = σ(G(x))``, ``y = 1[p > 0.5]`` and ``m = 1[p > c] ∨ 1[p < 1 - c]``
    (:func:`fedlib.segmentation_ops.confident_pixel_targets`), and trains on
    ``L = Σ m BCE(σ(f(x^γ)), y) / Σ m`` (:func:`fedlib.segmentation_ops.masked_bce`) with a
    gamma-adjusted copy ``x^γ``, ``γ ~ U(0, gamma_max)`` per image. The pixel clients keep the
    soft Dice loss. Server: the pixel clients share ``pixel_share`` of the weight (by size), the
    others ``1 - pixel_share`` (:func:`fedlib.segmentation_ops.fedst_weights`); in the warm-up
    all weight is on the pixel clients.

    Parameters
    ----------
    warmup_rounds : int >= 0, default 150
        Rounds of pixel-only training (FedMix's code: 150 of 300; RETOUCH 100 of 150).
    confidence : float in (0.5, 1], default 0.9
        ``c``: pixels with ``p > c`` or ``p < 1 - c`` are trained on.
    pixel_share : float in [0, 1], default 0.9
        Aggregation share of the pixel clients (FedRGD: 0.5).
    fedst_share : {"equal", "size"}, default "equal"
        How the unlabeled clients split ``1 - pixel_share``.
    gamma_max : float > 0, default 2.0
        Upper end of the uniform gamma of the training copy.
    """

    name: ClassVar[str] = "fedst"

    warmup_rounds: int = 150
    confidence: float = 0.9
    pixel_share: float = 0.9
    fedst_share: str = "equal"
    gamma_max: float = 2.0

    _constraints: ClassVar[dict] = {
        "warmup_rounds": Interval(int, 0, None),
        "confidence": Interval(float, 0.5, 1, closed="right"),
        "pixel_share": Interval(float, 0, 1),
        "fedst_share": Options(("equal", "size")),
        "gamma_max": Interval(float, 0, None, closed="neither"),
    }

    def training_view(self, ctx: LocalContext) -> TrainingView:
        """Pixel client: (image, mask). Unlabeled client after the warm-up: (gamma-adjusted
        image, stacked (target, confident mask)); before it, nothing."""
        data = ctx.data
        if supervision_of(data) == "pixel" or ctx.round < self.warmup_rounds or len(data) == 0:
            return super().training_view(ctx)
        model = ctx.extras["model"]
        (x,) = flip_views([data.images], ctx.generator, enabled=self.augment == "flip")
        was_training = model.training
        model.eval()
        with torch.no_grad():
            probs = torch.cat(
                [torch.sigmoid(model(b.to(ctx.device))).cpu() for b in x.split(64)]
            )
        model.train(was_training)
        target, mask = confident_pixel_targets(probs, self.confidence)
        gamma = torch.rand(len(x), generator=ctx.generator) * self.gamma_max
        ctx.metrics["confident_share"] = float(mask.mean())
        ctx.extras["self_training"] = True
        return TrainingView(gamma_adjust(x, gamma), torch.stack([target, mask], dim=1))

    def before_local_training(self, model: nn.Module, ctx: LocalContext) -> None:
        is_pixel = supervision_of(ctx.data) == "pixel"
        ctx.side[IS_PIXEL] = torch.tensor(float(is_pixel), dtype=torch.float64)
        super().before_local_training(model, ctx)

    def local_loss(self, model: nn.Module, batch: tuple[torch.Tensor, ...], ctx: LocalContext):
        if not ctx.extras.get("self_training"):
            return super().local_loss(model, batch, ctx)
        x, t = batch[0], batch[1]
        return masked_bce(model(x), t[:, 0], t[:, 1])

    def client_weights(self, replies: Sequence[ClientReply]) -> list[float]:
        """Pixel clients ``pixel_share`` by size, trained unlabeled clients the rest."""
        n = [float(r.side[NUM_TRAINED]) for r in replies]
        pixel = [bool(r.side[IS_PIXEL]) for r in replies]
        active = [i for i, size in enumerate(n) if size > 0]
        if not active:
            return [1.0] * len(replies)
        w = fedst_weights(
            [pixel[i] for i in active],
            [n[i] for i in active],
            pixel_share=self.pixel_share,
            split=self.fedst_share,
        )
        out = [0.0] * len(replies)
        for i, value in zip(active, w.tolist(), strict=True):
            out[i] = value
        return out
