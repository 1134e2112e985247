"""The maths of mixed-supervision segmentation, as pure functions: pseudo-labels, their
refinement by a client's weak labels, selection by agreement, FedMix's adaptive aggregation
weights, and federated self-training's confident-pixel targets.

Shapes: masks and pseudo-labels are float tensors ``(N, C, H, W)`` with values in {0, 1}
(``C`` foreground classes, one sigmoid channel each); boxes are given as filled box masks
``(N, 1, H, W)`` (:func:`fedlib.data.box_masks`); image-level labels as presence vectors
``(N, C)``.

References
----------
FedMix: J. Wicaksana, Z. Yan, D. Zhang, X. Huang, H. Wu, X. Yang, K.-T. Cheng, "FedMix: Mixed
supervised federated learning for medical image segmentation", IEEE Transactions on Medical
Imaging 42(7), 2023, arXiv:2205.01840; the formulas follow the public code
(github.com/Jwicaksana/FedMix), since the paper's equations are summarised in its abstract only.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from fedlib._validation import Interval, Options, check_param

__all__ = [
    "PseudoLabels",
    "agreement_dice",
    "binary_prediction",
    "confident_pixel_targets",
    "fedmix_weights",
    "fedst_weights",
    "gamma_adjust",
    "masked_bce",
    "pseudo_label_pass",
    "refine_pseudo_labels",
    "select_pseudo_labels",
]

WEAK_LEVELS = ("box", "image", "none")
_UNIT = Interval(float, 0, 1)
_NONNEG = Interval(float, 0, None, closed="left")
_EPS = Interval(float, 0, None, closed="neither")


def _check_masks(owner: str, name: str, value, ndim: int = 4) -> torch.Tensor:
    if not isinstance(value, torch.Tensor):
        raise TypeError(f"{owner}: {name!r} must be a torch.Tensor, got {type(value).__name__}.")
    if value.ndim != ndim:
        raise ValueError(
            f"{owner}: {name!r} must have {ndim} dimensions, got shape {tuple(value.shape)}."
        )
    return value


def binary_prediction(logits: torch.Tensor) -> torch.Tensor:
    """Hard masks ``ŷ = 1[σ(z) > 0.5] = 1[z > 0]`` from logits, as float {0, 1}."""
    return (logits > 0).to(torch.float32)


def agreement_dice(a: torch.Tensor, b: torch.Tensor, eps: float = 1e-4) -> torch.Tensor:
    """Dice between two hard masks per image, over the whole ``C x H x W`` tensor.

    ``Dice(a, b) = (2 Σ a b + ε) / (Σ a + Σ b + ε)``; two empty masks score 1 (FedMix's ε
    convention, so two empty predictions agree). This is the agreement FedMix's selection
    uses; it sums over all channels at once, unlike :func:`fedlib.metrics.dice_score` (mean of
    per-channel scores, the evaluation metric), and it stays in torch on the training device.

    Parameters
    ----------
    a, b : Tensor (N, ...), values in {0, 1}; ``b`` may broadcast to ``a`` (a box mask
        ``(N, 1, H, W)`` against ``C`` channels)
    eps : float > 0, default 1e-4

    Returns
    -------
    Tensor (N,)
    """
    owner = "agreement_dice"
    for name, value in (("a", a), ("b", b)):
        if not isinstance(value, torch.Tensor) or value.ndim < 2:
            raise TypeError(f"{owner}: {name!r} must be a torch.Tensor of shape (N, ...).")
    check_param(owner, "eps", eps, _EPS)
    b = b.to(a.dtype).expand_as(a)
    a2, b2 = a.flatten(1), b.flatten(1)
    return (2 * (a2 * b2).sum(1) + eps) / (a2.sum(1) + b2.sum(1) + eps)


def refine_pseudo_labels(
    masks: torch.Tensor,
    supervision: str,
    weak_target: torch.Tensor | None = None,
) -> torch.Tensor:
    """Refine hard pseudo-labels with a client's weak labels (FedMix).

    ============  ================================================================
    ``"box"``     ``ŷ ← ŷ ⊙ B``: every pixel outside the box becomes background
    ``"image"``   ``ŷ[c] ← 0`` for every class ``c`` absent from the image label (a
                  no-op with one class: every training image shows a lesion)
    ``"none"``    unchanged
    ============  ================================================================

    Parameters
    ----------
    masks : Tensor (N, C, H, W), values in {0, 1}
    supervision : {"box", "image", "none"}
    weak_target : Tensor, optional
        ``"box"``: the filled box masks ``B``, (N, 1, H, W); ``"image"``: presence vectors
        (N, C); ignored for ``"none"``.

    Returns
    -------
    Tensor (N, C, H, W), a new tensor.
    """
    owner = "refine_pseudo_labels"
    masks = _check_masks(owner, "masks", masks)
    check_param(owner, "supervision", supervision, Options(WEAK_LEVELS))
    if supervision == "none":
        return masks.clone()
    n, c = masks.shape[:2]
    if supervision == "box":
        box = _check_masks(owner, "weak_target", weak_target)
        if box.shape != (n, 1, *masks.shape[2:]):
            raise ValueError(
                f"{owner}: a box client's 'weak_target' must be box masks of shape "
                f"{(n, 1, *masks.shape[2:])}, got {tuple(box.shape)}."
            )
        return masks * (box > 0.5).to(masks.dtype)
    present = _check_masks(owner, "weak_target", weak_target, ndim=2)
    if present.shape != (n, c):
        raise ValueError(
            f"{owner}: an image-level client's 'weak_target' must be presence vectors of shape "
            f"{(n, c)}, got {tuple(present.shape)}."
        )
    return masks * (present > 0.5).to(masks.dtype)[:, :, None, None]


def select_pseudo_labels(
    y1: torch.Tensor,
    y2: torch.Tensor,
    *,
    tau: float = 0.9,
    box: torch.Tensor | None = None,
    box_coverage_min: float = 0.5,
    reject_empty: bool = False,
) -> torch.Tensor:
    """Which images keep their pseudo-labels: the two networks agree, and a box is filled.

    Keep image ``i`` iff ``Dice(ŷ_1, ŷ_2) >= τ`` (:func:`agreement_dice`) and, for a box client
    (``box`` given), ``Dice(ŷ_1, B) >= box_coverage_min`` (the mask fills about half the box or
    more). Two empty masks have Dice 1 and pass; ``reject_empty`` drops them (FedMix's code
    keeps them, quirk Q3).

    Parameters
    ----------
    y1, y2 : Tensor (N, C, H, W), hard pseudo-labels of the two networks (after refinement)
    tau : float in [0, 1], default 0.9
        0 keeps every image (no selection).
    box : Tensor (N, 1, H, W), optional
    box_coverage_min : float in [0, 1], default 0.5
    reject_empty : bool, default False

    Returns
    -------
    Tensor (N,) of bool
    """
    owner = "select_pseudo_labels"
    y1 = _check_masks(owner, "y1", y1)
    y2 = _check_masks(owner, "y2", y2)
    if y1.shape != y2.shape:
        raise ValueError(
            f"{owner}: 'y1' and 'y2' must share a shape, got {tuple(y1.shape)} and "
            f"{tuple(y2.shape)}."
        )
    check_param(owner, "tau", tau, _UNIT)
    check_param(owner, "box_coverage_min", box_coverage_min, _UNIT)
    check_param(owner, "reject_empty", reject_empty, Options((True, False)))
    keep = agreement_dice(y1, y2) >= tau
    if box is not None:
        box = _check_masks(owner, "box", box)
        covered = agreement_dice(y1.amax(dim=1, keepdim=True), box)
        keep &= covered >= box_coverage_min
    if reject_empty:
        keep &= (y1.flatten(1).sum(1) > 0) | (y2.flatten(1).sum(1) > 0)
    return keep


@dataclass(frozen=True)
class PseudoLabels:
    """One pseudo-labelling pass: which images were kept and the two networks' labels.

    Attributes
    ----------
    keep : Tensor (N,) bool
    y1, y2 : Tensor (N, C, H, W)
        Hard labels of ``net1`` and ``net2`` (refined) for every image, kept or not.
    agreement : Tensor (N,)
        ``Dice(ŷ_1, ŷ_2)`` of each image (on the masks the selection compared).
    """

    keep: torch.Tensor
    y1: torch.Tensor
    y2: torch.Tensor
    agreement: torch.Tensor

    @property
    def num_selected(self) -> int:
        """``n_i``, the number of kept images."""
        return int(self.keep.sum())


@torch.no_grad()
def pseudo_label_pass(
    net1: nn.Module,
    net2: nn.Module,
    images: torch.Tensor,
    supervision: str,
    weak_target: torch.Tensor | None = None,
    *,
    tau: float = 0.9,
    box_coverage_min: float = 0.5,
    refine: bool = True,
    agree_after_refine: bool = True,
    reject_empty: bool = False,
    batch_size: int = 64,
) -> PseudoLabels:
    """FedMix's pseudo-labels for a weak client's images, from the two global networks.

    ``ŷ_k = 1[σ(G_k(x)) > 0.5]`` for ``k = 1, 2`` (networks in eval mode), refined with the
    client's weak labels (:func:`refine_pseudo_labels`), then selected
    (:func:`select_pseudo_labels`). ``agree_after_refine=False`` compares the raw predictions,
    as FedMix's first public version did; ``refine=False`` skips refinement (ablation).

    Parameters
    ----------
    net1, net2 : nn.Module returning logits (N, C, H, W)
    images : Tensor (N, C_in, H, W)
    supervision : {"box", "image", "none"}
    weak_target : Tensor, optional
        Box masks (N, 1, H, W) or presence vectors (N, C), see :func:`refine_pseudo_labels`.
    tau, box_coverage_min, reject_empty : see :func:`select_pseudo_labels`
    refine, agree_after_refine : bool, default True
    batch_size : int, default 64
        Images per forward pass (memory only; results do not depend on it).

    Returns
    -------
    PseudoLabels
    """
    owner = "pseudo_label_pass"
    images = _check_masks(owner, "images", images)
    check_param(owner, "supervision", supervision, Options(WEAK_LEVELS))
    for name, flag in (("refine", refine), ("agree_after_refine", agree_after_refine)):
        check_param(owner, name, flag, Options((True, False)))
    check_param(owner, "batch_size", batch_size, Interval(int, 1, None))
    if images.shape[0] == 0:
        raise ValueError(f"{owner}: 'images' must hold at least one image, got none.")
    raw = [_hard_predictions(net, images, batch_size) for net in (net1, net2)]
    refined = [
        refine_pseudo_labels(y, supervision, weak_target) if refine else y for y in raw
    ]
    compared = refined if agree_after_refine else raw
    box = weak_target if supervision == "box" else None
    keep = select_pseudo_labels(
        *compared, tau=tau, box=box, box_coverage_min=box_coverage_min, reject_empty=reject_empty
    )
    return PseudoLabels(
        keep=keep, y1=refined[0], y2=refined[1], agreement=agreement_dice(*compared)
    )


def _hard_predictions(net: nn.Module, images: torch.Tensor, batch_size: int) -> torch.Tensor:
    """``1[z > 0]`` of ``net`` in eval mode, batch by batch (its train/eval mode is restored)."""
    was_training = net.training
    net.eval()
    try:
        return torch.cat([binary_prediction(net(x)) for x in images.split(batch_size)])
    finally:
        net.train(was_training)


def fedmix_weights(
    num_selected: Sequence[float] | torch.Tensor,
    losses: Sequence[float] | torch.Tensor,
    lam: float = 10.0,
    beta: float = 1.5,
) -> torch.Tensor:
    """FedMix's adaptive aggregation weights from data share and loss share.

    .. math::

        s_i = \\frac{\\ell_i^\\beta}{\\sum_j \\ell_j^\\beta}, \\quad
        d_i = \\frac{n_i}{\\sum_j n_j}, \\quad
        w_i = \\frac{d_i + \\lambda s_i}{\\sum_j (d_j + \\lambda s_j)}

    ``n_i``: a pixel client's training-set size, a weak client's number of selected
    pseudo-labelled images; ``ℓ_i``: the client's mean training Dice loss of ``net1`` this round.
    Higher loss gives more weight; ``λ = 0`` gives data-size weights. An all-zero ``n`` (or
    ``ℓ``) makes that term zero; if both vanish the weights are uniform.

    Parameters
    ----------
    num_selected : (K,) numbers >= 0, ``n_i``
    losses : (K,) numbers >= 0, ``ℓ_i``
    lam : float >= 0, default 10 (FedMix: 10 for breast and skin, 2 for RETOUCH)
    beta : float >= 0, default 1.5 (FedMix: 1.5 breast, 3 skin and RETOUCH)

    Returns
    -------
    Tensor (K,) float64, summing to 1.

    Examples
    --------
    >>> fedmix_weights([100, 50, 30], [0.2, 0.4, 0.1], lam=0.0).tolist()  # doctest: +ELLIPSIS
    [0.555..., 0.277..., 0.166...]
    """
    owner = "fedmix_weights"
    check_param(owner, "lam", lam, _NONNEG)
    check_param(owner, "beta", beta, _NONNEG)
    n = _nonnegative_vector(owner, "num_selected", num_selected)
    loss = _nonnegative_vector(owner, "losses", losses)
    if n.shape != loss.shape:
        raise ValueError(
            f"{owner}: 'num_selected' and 'losses' must have one entry per client, got "
            f"{n.numel()} and {loss.numel()}."
        )
    d = _share(n)
    s = _share(loss**beta)
    raw = d + lam * s
    return _share(raw) if raw.sum() > 0 else torch.full_like(raw, 1.0 / max(raw.numel(), 1))


def _share(values: torch.Tensor) -> torch.Tensor:
    total = values.sum()
    return values / total if total > 0 else torch.zeros_like(values)


def _nonnegative_vector(owner: str, name: str, values) -> torch.Tensor:
    try:
        out = torch.as_tensor(values, dtype=torch.float64).flatten()
    except (TypeError, ValueError, RuntimeError):
        message = f"{owner}: {name!r} must be a sequence of numbers, got {values!r}."
        raise TypeError(message) from None
    if out.numel() == 0 or not bool(torch.isfinite(out).all()) or bool((out < 0).any()):
        raise ValueError(
            f"{owner}: {name!r} must be a non-empty sequence of finite numbers >= 0, "
            f"got {values!r}."
        )
    return out


# --------------------------------------------------------------------------- self-training


def confident_pixel_targets(
    probs: torch.Tensor, confidence: float = 0.9
) -> tuple[torch.Tensor, torch.Tensor]:
    """Federated self-training's pseudo-label: hard target and confident-pixel mask.

    ``target = 1[p > 0.5]``, ``mask = 1[p > c] ∨ 1[p < 1 - c]`` with ``c = confidence`` (0.9 in
    the FedMix code's FedST baseline): only pixels the model is sure of are trained on.

    Returns
    -------
    (target, mask) : float Tensors, the shape of ``probs``
    """
    owner = "confident_pixel_targets"
    if not isinstance(probs, torch.Tensor):
        raise TypeError(f"{owner}: 'probs' must be a torch.Tensor, got {type(probs).__name__}.")
    check_param(owner, "confidence", confidence, Interval(float, 0.5, 1, closed="right"))
    target = (probs > 0.5).to(probs.dtype)
    mask = ((probs > confidence) | (probs < 1 - confidence)).to(probs.dtype)
    return target, mask


def masked_bce(logits: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Binary cross-entropy over the masked pixels only.

    ``L = Σ m · BCE(σ(z), y) / max(Σ m, 1)``: the mean over confident pixels (0 when none).
    """
    per_pixel = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
    return (per_pixel * mask).sum() / mask.sum().clamp_min(1.0)


def gamma_adjust(images: torch.Tensor, gamma: torch.Tensor | float) -> torch.Tensor:
    """Gamma-adjusted copy ``x ** γ`` of images in [0, 1] (FedST's strong view; γ ~ U(0, 2)).

    ``gamma`` is a float or one value per image (N,).
    """
    g = torch.as_tensor(gamma, dtype=images.dtype, device=images.device)
    if g.ndim == 1:
        g = g.view(-1, *([1] * (images.ndim - 1)))
    return images.clamp(0.0, 1.0) ** g


def fedst_weights(
    is_pixel: Sequence[bool] | torch.Tensor,
    num_examples: Sequence[float] | torch.Tensor,
    *,
    pixel_share: float = 0.9,
    split: str = "equal",
) -> torch.Tensor:
    """Federated self-training's fixed aggregation weights.

    The pixel-labelled clients share ``pixel_share`` (0.9 in the FedMix code's FedST; FedRGD
    uses 0.5) in proportion to their sizes; the other clients share ``1 - pixel_share``,
    equally (``split="equal"``) or by size (``"size"``). With no client of one kind, the other
    kind takes everything.

    Returns
    -------
    Tensor (K,) float64, summing to 1.
    """
    owner = "fedst_weights"
    check_param(owner, "pixel_share", pixel_share, _UNIT)
    check_param(owner, "split", split, Options(("equal", "size")))
    pixel = torch.as_tensor(is_pixel, dtype=torch.bool).flatten()
    n = _nonnegative_vector(owner, "num_examples", num_examples)
    if pixel.shape != n.shape:
        raise ValueError(
            f"{owner}: 'is_pixel' and 'num_examples' must have one entry per client, got "
            f"{pixel.numel()} and {n.numel()}."
        )
    weak = ~pixel
    if not bool(pixel.any()) or not bool(weak.any()):
        return _share(n) if n.sum() > 0 else torch.full_like(n, 1.0 / n.numel())
    w = torch.zeros_like(n)
    w[pixel] = pixel_share * _share(n[pixel]) if n[pixel].sum() > 0 else pixel_share / pixel.sum()
    weak_sizes = torch.ones_like(n[weak]) if split == "equal" else n[weak]
    w[weak] = (1 - pixel_share) * (
        _share(weak_sizes) if weak_sizes.sum() > 0 else 1.0 / weak.sum()
    )
    return w
