"""FedMix: mixed-supervision federated segmentation, and its supervised baselines.

Each client holds one supervision level (``fedlib.data.SegmentationDataset.supervision``):
``"pixel"`` masks, ``"box"`` boxes, ``"image"`` image-level labels, or ``"none"``. The maths
(pseudo-labels, refinement, selection, the aggregation weights) lives in
:mod:`fedlib.segmentation_ops`; this module holds the methods:

* :class:`SegmentationFedAvg` (``"seg_fedavg"``): FedAvg with the soft Dice loss on the
  pixel-labelled clients; the other clients train nothing and get weight 0. On an all-pixel
  federation it is FedAvg-full (the upper bound); on a mixed one, FedAvg on the pixel clients
  only (FedAvg-strong).
* :class:`SegmentationLocal` (``"seg_local"``): local learning, each client alone.
* :class:`FedMix` (``"fedmix"``): dual networks, pseudo-labels from both global networks,
  refined and selected, cross pseudo-supervision, adaptive aggregation weights.

A weakly supervised client reads its images and its weak labels only (``images``,
``targets``, ``boxes``), never the true masks its dataset keeps for evaluation.

Reference: J. Wicaksana, Z. Yan, D. Zhang, X. Huang, H. Wu, X. Yang, K.-T. Cheng, "FedMix: Mixed
supervised federated learning for medical image segmentation", IEEE Transactions on Medical
Imaging 42(7), 2023, arXiv:2205.01840; formulas as in the public code
(github.com/Jwicaksana/FedMix).
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn
from torch.utils.data import Dataset

from fedlib._validation import Interval, Options
from fedlib.core.algorithm import Algorithm, LocalContext
from fedlib.core.protocol import ClientReply, GlobalState
from fedlib.losses import soft_dice_loss
from fedlib.segmentation_ops import fedmix_weights, pseudo_label_pass

__all__ = [
    "DualNetwork",
    "FedMix",
    "SegmentationFedAvg",
    "SegmentationLocal",
    "TrainingView",
    "flip_views",
    "supervision_of",
]

NUM_TRAINED = "num_trained"
"""Side-channel key: the number of images a client trained on this round (FedMix: ``n_i``, the
pixel client's training-set size or a weak client's selected pseudo-labelled images)."""
NET1_LOSS = "net1_dice_loss"
"""Side-channel key: ``ℓ_i``, the mean soft Dice loss of ``net1`` over the round's local epoch."""
ROUNDS_KEY = "fedmix_rounds"
"""Key of ``GlobalState.extra`` holding FedMix's per-round ``n_i``, ``ℓ_i`` and ``w_i``."""
IS_PIXEL = "is_pixel_client"
"""Side-channel key: 1 when the client has pixel labels (FedST's fixed weights)."""


def supervision_of(data: Dataset) -> str:
    """A client's supervision level (``"pixel"`` for datasets that do not say)."""
    return str(getattr(data, "supervision", "pixel"))


class TrainingView(Dataset):
    """A round's training pairs ``(x, t)`` held as tensors, so the core's batch iterator slices
    them directly (``images`` and ``labels`` attributes). ``t`` is the target of the method:
    a mask (N, C, H, W), or FedMix's two pseudo-labels stacked (N, 2, C, H, W)."""

    def __init__(self, images: torch.Tensor, targets: torch.Tensor):
        self.images, self.labels = images, targets

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.images[index], self.labels[index]


def flip_views(
    tensors: Sequence[torch.Tensor], generator: torch.Generator, *, enabled: bool = True
) -> list[torch.Tensor]:
    """One random view per image: horizontal and vertical flips, each with probability 1/2,
    applied identically to every tensor (image, mask, box mask) of that image.

    FedMix's training augmentation is a random crop and h/v flips; at the book's small sizes
    only the flips are kept.
    """
    if not enabled or not tensors or len(tensors[0]) == 0:
        return list(tensors)
    n = len(tensors[0])
    hflip, vflip = (torch.rand(2, n, generator=generator) < 0.5).unbind(0)
    out = []
    for t in tensors:
        shape = (n,) + (1,) * (t.ndim - 1)
        t = torch.where(hflip.view(shape), t.flip(-1), t)
        out.append(torch.where(vflip.view(shape), t.flip(-2), t))
    return out


class DualNetwork(nn.Module):
    """FedMix's two independently initialised networks in one module.

    ``forward`` is ``net1``'s (the model FedMix evaluates); state-dict keys are ``net1.*`` and
    ``net2.*``, so the core shares and averages both with the same weights.
    """

    def __init__(self, net1: nn.Module, net2: nn.Module):
        super().__init__()
        self.net1, self.net2 = net1, net2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net1(x)


def reinitialised_copy(model: nn.Module) -> nn.Module:
    """A copy of ``model`` with fresh random weights from the current torch seed: its own
    ``reset_parameters()`` if it has one (the U-Net's Xavier init), else each layer's."""
    twin = copy.deepcopy(model)
    if callable(getattr(twin, "reset_parameters", None)):
        twin.reset_parameters()
    else:
        for module in twin.modules():
            if module is not twin and callable(getattr(module, "reset_parameters", None)):
                module.reset_parameters()
    return twin


# --------------------------------------------------------------------------- baselines


@dataclass(kw_only=True)
class SegmentationFedAvg(Algorithm):
    """FedAvg for segmentation with the soft Dice loss, on the pixel-labelled clients.

    Client (pixel level): one epoch (``local_epochs``) of ``D(σ(f(x)), y) = 1 - (1/B) Σ_b
    (2 Σ p y + ε) / (Σ p + Σ y + ε)`` (:func:`fedlib.losses.soft_dice_loss`) on a flipped view
    of its images and masks. A weakly labelled or unlabeled client trains nothing. Server:
    ``w = Σ_k n_k w_k / Σ_k n_k`` with ``n_k`` the images client ``k`` trained on (0 for weak
    clients), so on an all-pixel federation this is FedAvg-full, and on a mixed one FedAvg on
    the pixel clients only.

    Defaults are FedMix's: Adam, lr 1e-3, weight decay 1e-4, batch 16, Adam state kept across
    rounds; the global model is evaluated (``spec_model="global"``).

    Parameters
    ----------
    augment : {"flip", "none"}, default "flip"
        Random h/v flips of each training image once per round (:func:`flip_views`).
    All :class:`~fedlib.core.algorithm.Algorithm` options (``loss`` and the class-prior options
    are unused).
    """

    name: ClassVar[str] = "seg_fedavg"

    optimizer: str = "adam"
    lr: float = 1e-3
    weight_decay: float = 1e-4
    batch_size: int = 16
    optimizer_state: str = "persist"
    spec_model: str = "global"
    augment: str = "flip"

    _constraints: ClassVar[dict] = {"augment": Options(("flip", "none"))}

    def training_view(self, ctx: LocalContext) -> TrainingView:
        """This round's (image, mask) pairs: a flipped view of a pixel client's data; no pairs
        for other clients."""
        data = ctx.data
        if supervision_of(data) != "pixel":
            return _empty_view(data)
        images, masks = _images_and_masks(data)
        x, y = flip_views([images, masks], ctx.generator, enabled=self.augment == "flip")
        return TrainingView(x, y)

    def before_local_training(self, model: nn.Module, ctx: LocalContext) -> None:
        """Replace ``ctx.data`` by this round's :meth:`training_view` (the received model is
        ``ctx.extras["model"]`` meanwhile); report its size ``n_k`` in the side channel."""
        ctx.extras["model"] = model
        ctx.data = self.training_view(ctx)
        ctx.side[NUM_TRAINED] = torch.tensor(float(len(ctx.data)), dtype=torch.float64)
        ctx.metrics["num_trained"] = float(len(ctx.data))

    def local_loss(self, model: nn.Module, batch: tuple[torch.Tensor, ...], ctx: LocalContext):
        x, y = batch[0], batch[1]
        return soft_dice_loss(model(x), y, from_logits=True)

    def client_weights(self, replies: Sequence[ClientReply]) -> list[float]:
        """``n_k``: the images each client trained on this round (0: left out)."""
        return _weights_or_uniform([float(r.side[NUM_TRAINED]) for r in replies])


@dataclass(kw_only=True)
class SegmentationLocal(SegmentationFedAvg):
    """Local learning: each client trains its own segmentation network alone (nothing is
    shared); it is evaluated with its own model (``spec_model="personal"``)."""

    name: ClassVar[str] = "seg_local"
    personalized: ClassVar[bool] = True
    spec_model: str = "personal"

    def shared_keys(self, model: nn.Module) -> list[str]:
        return []


# --------------------------------------------------------------------------- FedMix


@dataclass(kw_only=True)
class FedMix(SegmentationFedAvg):
    """FedMix (Wicaksana et al., IEEE TMI 2023, arXiv:2205.01840).

    Two independently initialised networks ``net1``, ``net2`` on every client and on the
    server (:class:`DualNetwork`). Each round, a weakly labelled client ``i`` pseudo-labels a
    flipped view of each of its images with the received global networks ``G_1, G_2``:

    ``ŷ_k = 1[σ(G_k(x)) > 0.5]``, refined by its weak label (box: ``ŷ_k ⊙ B``; image label:
    absent classes wiped), kept iff ``Dice(ŷ_1, ŷ_2) ≥ τ`` and, for boxes,
    ``Dice(ŷ_1, B) ≥ box_coverage_min`` (:func:`fedlib.segmentation_ops.pseudo_label_pass`);
    ``n_i`` = images kept. Cross pseudo-supervision then trains ``net1`` on ``ŷ_2`` and
    ``net2`` on ``ŷ_1``: ``L = D(σ(net1(x)), ŷ_2) + D(σ(net2(x)), ŷ_1)`` with the soft Dice
    loss ``D``; a pixel client trains both on its masks and has ``n_i`` = its training-set size.
    The server averages both networks with the same weights
    (:func:`fedlib.segmentation_ops.fedmix_weights`)

    ``w_i = (d_i + λ s_i) / Σ_j (d_j + λ s_j)``, ``d_i = n_i / Σ_j n_j``,
    ``s_i = ℓ_i^β / Σ_j ℓ_j^β``,

    ``ℓ_i`` the client's mean Dice loss of ``net1`` over the round (side channel: ``n_i`` and
    ``ℓ_i``; never averaged).

    A weak client with no image kept trains nothing and is left out of that round's average
    (``w_i = 0``). FedMix's code instead trains such a client on its box masks and, for
    ``net2``, on the *true* masks (label leakage, quirk Q1); that is deliberately not offered.

    Parameters
    ----------
    tau : float in [0, 1], default 0.9
        Agreement threshold (0: keep every image).
    box_coverage_min : float in [0, 1], default 0.5
        Box clients: minimum ``Dice(ŷ_1, B)``.
    fedmix_lambda : float >= 0, default 10.0
        Weight of the loss term (FedMix: 10 breast and skin, 2 RETOUCH); 0 gives data-size
        weights.
    fedmix_beta : float >= 0, default 1.5
        Loss exponent (FedMix: 1.5 breast, 3 skin and RETOUCH).
    refine : bool, default True
        Refine pseudo-labels by the weak labels (ablation: False).
    agree_after_refine : bool, default True
        Compare refined masks (FedMix's final code); False compares raw predictions (its first
        version).
    reject_empty_pl : bool, default False
        Drop images whose two pseudo-labels are both empty (they agree with Dice 1); FedMix's
        code keeps them (quirk Q3), so image-level and unlabeled clients may train on
        all-background labels.
    data_term : {"selected", "static"}, default "selected"
        ``n_i`` of a weak client: its selected images (FedMix's final code) or its
        training-set size (first version).
    """

    name: ClassVar[str] = "fedmix"

    tau: float = 0.9
    box_coverage_min: float = 0.5
    fedmix_lambda: float = 10.0
    fedmix_beta: float = 1.5
    refine: bool = True
    agree_after_refine: bool = True
    reject_empty_pl: bool = False
    data_term: str = "selected"

    _constraints: ClassVar[dict] = {
        "tau": Interval(float, 0, 1),
        "box_coverage_min": Interval(float, 0, 1),
        "fedmix_lambda": Interval(float, 0, None, closed="left"),
        "fedmix_beta": Interval(float, 0, None, closed="left"),
        "refine": Options((True, False)),
        "agree_after_refine": Options((True, False)),
        "reject_empty_pl": Options((True, False)),
        "data_term": Options(("selected", "static")),
    }

    def prepare_model(self, model: nn.Module) -> nn.Module:
        """``DualNetwork(model, an independently initialised copy)``."""
        return DualNetwork(model, reinitialised_copy(model))

    def training_view(self, ctx: LocalContext) -> TrainingView:
        """Pixel client: its masks for both networks. Weak client: the kept images with the
        crossed pseudo-labels ``(ŷ_2, ŷ_1)`` (net1's target first)."""
        data, model = ctx.data, ctx.extras["model"]
        level = supervision_of(data)
        enabled = self.augment == "flip"
        if level == "pixel":
            images, masks = _images_and_masks(data)
            x, y = flip_views([images, masks], ctx.generator, enabled=enabled)
            return TrainingView(x, torch.stack([y, y], dim=1))
        if len(data) == 0:
            return _empty_view(data)
        weak = _weak_target(data)
        views = [data.images] + ([weak] if level == "box" else [])
        views = flip_views(views, ctx.generator, enabled=enabled)
        x = views[0].to(ctx.device)
        weak = views[1] if level == "box" else weak
        labels = pseudo_label_pass(
            model.net1,
            model.net2,
            x,
            level,
            None if weak is None else weak.to(ctx.device),
            tau=self.tau,
            box_coverage_min=self.box_coverage_min,
            refine=self.refine,
            agree_after_refine=self.agree_after_refine,
            reject_empty=self.reject_empty_pl,
            batch_size=max(self.batch_size, 64),
        )
        keep = labels.keep
        ctx.metrics["selected_share"] = float(keep.float().mean())
        ctx.metrics["mean_agreement"] = float(labels.agreement.mean())
        crossed = torch.stack([labels.y2[keep], labels.y1[keep]], dim=1)
        return TrainingView(x[keep].cpu(), crossed.cpu())

    def before_local_training(self, model: nn.Module, ctx: LocalContext) -> None:
        ctx.extras["net1_loss"] = [0.0, 0]
        super().before_local_training(model, ctx)

    def local_loss(self, model: nn.Module, batch: tuple[torch.Tensor, ...], ctx: LocalContext):
        """``D(σ(net1(x)), t_1) + D(σ(net2(x)), t_2)``; both networks see the same batches and
        one Adam steps both (Adam is per parameter, so this equals two optimizers)."""
        x, t = batch[0], batch[1]
        loss1 = soft_dice_loss(model.net1(x), t[:, 0], from_logits=True)
        loss2 = soft_dice_loss(model.net2(x), t[:, 1], from_logits=True)
        total = ctx.extras["net1_loss"]
        total[0] += float(loss1.detach()) * len(x)
        total[1] += len(x)
        return loss1 + loss2

    def after_local_training(self, model: nn.Module, ctx: LocalContext) -> None:
        loss_sum, seen = ctx.extras["net1_loss"]
        mean = loss_sum / seen if seen else 0.0
        ctx.side[NET1_LOSS] = torch.tensor(mean, dtype=torch.float64)
        ctx.metrics["net1_dice_loss"] = mean

    def client_weights(self, replies: Sequence[ClientReply]) -> list[float]:
        """FedMix's ``w_i`` over the clients that trained (``n_i > 0``); 0 for the others."""
        return self.round_weights(replies)

    def round_weights(self, replies: Sequence[ClientReply]) -> list[float]:
        """``w_i`` from the replies' side data (see the class docstring)."""
        n = torch.tensor([float(r.side[NUM_TRAINED]) for r in replies], dtype=torch.float64)
        active = n > 0
        if not bool(active.any()):
            return [1.0 / len(replies)] * len(replies)
        if self.data_term == "static":
            n = torch.tensor([float(r.num_examples) for r in replies], dtype=torch.float64)
        losses = torch.tensor([float(r.side[NET1_LOSS]) for r in replies], dtype=torch.float64)
        w = torch.zeros(len(replies), dtype=torch.float64)
        w[active] = fedmix_weights(n[active], losses[active], self.fedmix_lambda, self.fedmix_beta)
        return w.tolist()

    def process_side(self, state: GlobalState, replies: Sequence[ClientReply]) -> None:
        """Append this round's ``n_i``, ``ℓ_i`` and ``w_i`` to ``state.extra["fedmix_rounds"]``
        (one dict per round, for the plots of the aggregation weights)."""
        super().process_side(state, replies)
        rounds = list(state.extra.get(ROUNDS_KEY, []))
        rounds.append(
            {
                "round": state.round,
                "clients": [r.client_id for r in replies],
                "weights": self.round_weights(replies),
                "num_trained": [float(r.side[NUM_TRAINED]) for r in replies],
                "net1_dice_loss": [float(r.side[NET1_LOSS]) for r in replies],
            }
        )
        state.extra[ROUNDS_KEY] = rounds


# --------------------------------------------------------------------------- helpers


def _images_and_masks(data: Dataset) -> tuple[torch.Tensor, torch.Tensor]:
    """A pixel client's images and masks (its ``targets``)."""
    return data.images, data.targets


def _weak_target(data: Dataset) -> torch.Tensor | None:
    """The weak label a client may use: box masks (``"box"``), presence vectors
    (``"image"``) or nothing (``"none"``). Never the true masks."""
    level = supervision_of(data)
    if level in ("box", "image"):
        return data.targets
    return None


def _empty_view(data: Dataset) -> TrainingView:
    images = getattr(data, "images", torch.zeros(0, 1, 1, 1))
    return TrainingView(images[:0], images[:0])


def _weights_or_uniform(weights: list[float]) -> list[float]:
    return weights if sum(weights) > 0 else [1.0] * len(weights)
