"""Loss functions of the course's methods, as pure functions over tensors.

Notation: a batch of B samples, C classes, logits ``z`` of shape (B, C), integer targets ``y`` of
shape (B,), ``CE(z, y) = -log softmax(z)_y`` averaged over the batch. Every function validates
its arguments and raises ``ValueError``/``TypeError`` with a message naming the function, the
parameter, what is allowed and the value received.

The local classification losses of the FedAvg family live in a registry, :data:`LOSSES`, built by
:func:`make_loss`. A configured loss is always called the same way::

    loss_fn = make_loss("bsm")                 # or "ce", "focal", "logit_adjust"
    loss = loss_fn(logits, targets, prior=local_prior)

``prior`` is the client's class counts or frequencies, shape (C,). Losses that need no prior
("ce", "focal") ignore it, so a method can pass it unconditionally; losses that need one ("bsm",
"logit_adjust") raise if it is missing.
"""

from __future__ import annotations

import numbers
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from fedlib._validation import Interval, Options, check_param

__all__ = [
    "LOSSES",
    "ClassificationLoss",
    "LossEntry",
    "balanced_softmax_loss",
    "consistency_loss",
    "cross_entropy",
    "fedlc_logits",
    "fedlc_loss",
    "fedrs_scale",
    "focal_loss",
    "kd_loss",
    "make_loss",
    "moon_contrastive_loss",
    "restricted_logits",
    "restricted_softmax_loss",
    "soft_dice_loss",
]

_NON_NEGATIVE = Interval(float, 0, None, closed="left")
_POSITIVE = Interval(float, 0, None, closed="neither")
_UNIT = Interval(float, 0, 1, closed="both")

ArrayLike = torch.Tensor | np.ndarray | Sequence[float]


# --------------------------------------------------------------------------- argument checks


def _shape(x: Any) -> tuple[int, ...] | str:
    return tuple(x.shape) if hasattr(x, "shape") else type(x).__name__


def _check_logits(
    owner: str, logits: Any, name: str = "logits", layout: str = "(batch, classes)"
) -> None:
    if not isinstance(logits, torch.Tensor):
        raise TypeError(
            f"{owner}: {name!r} must be a torch.Tensor, got {type(logits).__name__}."
        )
    if not logits.is_floating_point():
        raise TypeError(
            f"{owner}: {name!r} must be a floating-point tensor, got dtype {logits.dtype}."
        )
    if logits.ndim != 2 or logits.shape[1] < 1:
        raise ValueError(
            f"{owner}: {name!r} must have shape {layout}, got {_shape(logits)}."
        )


def _check_targets(owner: str, targets: Any, batch: int) -> torch.Tensor:
    """Check class-index targets and return them as int64 (what ``cross_entropy`` indexes with)."""
    if not isinstance(targets, torch.Tensor):
        raise TypeError(
            f"{owner}: 'targets' must be a torch.Tensor, got {type(targets).__name__}."
        )
    if targets.is_floating_point() or targets.is_complex() or targets.dtype == torch.bool:
        raise TypeError(
            f"{owner}: 'targets' must be an integer tensor of class indices, "
            f"got dtype {targets.dtype}."
        )
    if targets.shape != (batch,):
        raise ValueError(
            f"{owner}: 'targets' must have shape ({batch},) to match the batch, "
            f"got {_shape(targets)}."
        )
    return targets.long()


def _class_vector(
    owner: str, name: str, value: Any, num_classes: int | None, like: torch.Tensor
) -> torch.Tensor:
    """A 1-D tensor of finite values >= 0 on ``like``'s device and dtype.

    ``num_classes=None`` accepts any length >= 1; otherwise the length must equal it.
    """
    if isinstance(value, torch.Tensor):
        vector = value.detach().to(device=like.device, dtype=like.dtype)
    elif isinstance(value, np.ndarray | Sequence) and not isinstance(value, str):
        try:
            array = np.asarray(value, dtype=np.float64)
        except (TypeError, ValueError):
            array = None
        if array is None:
            raise TypeError(f"{owner}: {name!r} must hold numbers, got {value!r}.")
        vector = torch.as_tensor(array, dtype=like.dtype, device=like.device)
    else:
        raise TypeError(
            f"{owner}: {name!r} must be a tensor, array or sequence with one number per class, "
            f"got {type(value).__name__}."
        )
    expected = f"({num_classes},)" if num_classes is not None else "(classes,)"
    if vector.ndim != 1 or len(vector) < 1 or (
        num_classes is not None and len(vector) != num_classes
    ):
        raise ValueError(
            f"{owner}: {name!r} must have shape {expected}, one entry per class, "
            f"got {_shape(vector)}."
        )
    if not bool(torch.isfinite(vector).all()) or bool((vector < 0).any()):
        raise ValueError(
            f"{owner}: {name!r} must hold finite values >= 0, got {vector.tolist()}."
        )
    return vector


# --------------------------------------------------------------------------- classification


def cross_entropy(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Softmax cross-entropy, batch mean.

    ``L = (1/B) Σ_b -log softmax(z_b)_{y_b}``.

    Parameters
    ----------
    logits : Tensor, shape (B, C)
    targets : Tensor, shape (B,), integer class indices in [0, C)
    """
    _check_logits("cross_entropy", logits)
    targets = _check_targets("cross_entropy", targets, logits.shape[0])
    return F.cross_entropy(logits, targets)


def focal_loss(
    logits: torch.Tensor,
    targets: torch.Tensor,
    gamma: float = 1.0,
    alpha: float | ArrayLike | None = None,
) -> torch.Tensor:
    """Focal loss, batch mean: easy examples are down-weighted by ``(1 - p_y)^γ``.

    ``L = (1/B) Σ_b -α_{y_b} (1 - p_{b,y_b})^γ log p_{b,y_b}``, with ``p_b = softmax(z_b)``.

    Parameters
    ----------
    logits : Tensor, shape (B, C)
    targets : Tensor, shape (B,), integer class indices
    gamma : float >= 0, default 1.0
        Focusing parameter. ``γ = 0`` is plain cross-entropy. The FedNPR/FCA code uses γ = 1; the
        focal-loss paper's default is γ = 2.
    alpha : None, float in [0, 1], or (C,) per-class weights >= 0, default None
        ``None``: ``α = 1``. A float scales every term by the same α (the multi-class reading of
        the paper's balancing factor). A vector weights each sample by the weight of its class,
        then takes the plain batch mean (not a weight-normalised mean), as the FedNPR/FCA code
        does when it passes ``alpha`` as the class weights of its cross-entropy.

    References
    ----------
    Lin, Goyal, Girshick, He, Dollár, "Focal Loss for Dense Object Detection", ICCV 2017,
    arXiv:1708.02002.
    """
    owner = "focal_loss"
    _check_logits(owner, logits)
    targets = _check_targets(owner, targets, logits.shape[0])
    check_param(owner, "gamma", gamma, _NON_NEGATIVE)
    log_p_true = F.log_softmax(logits, dim=1).gather(1, targets.unsqueeze(1)).squeeze(1)
    modulating = (1.0 - log_p_true.exp()).clamp_min(0.0).pow(gamma)
    per_sample = -modulating * log_p_true
    if alpha is not None:
        per_sample = per_sample * _focal_alpha(owner, alpha, logits.shape[1], logits)[targets]
    return per_sample.mean()


def _focal_alpha(
    owner: str, alpha: Any, num_classes: int | None, like: torch.Tensor
) -> torch.Tensor:
    """Per-class focal weights from a float in [0, 1] or a vector of weights >= 0."""
    if isinstance(alpha, numbers.Real) and not isinstance(alpha, bool):
        check_param(owner, "alpha", alpha, _UNIT)
        return torch.full((num_classes or 1,), float(alpha), dtype=like.dtype, device=like.device)
    if isinstance(alpha, bool | str) or not isinstance(
        alpha, torch.Tensor | np.ndarray | Sequence
    ):
        raise TypeError(
            f"{owner}: 'alpha' must be None, a float in [0, 1] or per-class weights >= 0, "
            f"got {alpha!r}."
        )
    return _class_vector(owner, "alpha", alpha, num_classes, like)


def balanced_softmax_loss(
    logits: torch.Tensor,
    targets: torch.Tensor,
    prior: ArrayLike,
    tau: float = 1.0,
    eps: float = 1e-9,
) -> torch.Tensor:
    """Balanced softmax / logit adjustment: cross-entropy on prior-shifted logits.

    ``L = CE(z + τ log(π + ε), y)`` with ``π = prior / Σ prior``. τ = 1 is balanced softmax; a
    general τ is the logit-adjusted loss. Predict with the raw logits ``z``. A class absent from
    the prior gets the offset ``τ log ε`` (log 1e-9 ≈ -20.7 at τ = 1), as in the FedNPR/FCA code.
    With ``τ = 0`` no offset is added at all (so ``ε = 0`` with absent classes is safe there).

    Parameters
    ----------
    logits : Tensor, shape (B, C)
    targets : Tensor, shape (B,), integer class indices
    prior : (C,) tensor, array or sequence of counts or frequencies >= 0, positive sum
        Usually the client's local class counts ``n_{k,c}``; it is normalised here.
    tau : float >= 0, default 1.0
    eps : float >= 0, default 1e-9

    References
    ----------
    Ren et al., "Balanced Meta-Softmax for Long-Tailed Visual Recognition", NeurIPS 2020,
    arXiv:2007.10740. Menon et al., "Long-tail learning via logit adjustment", ICLR 2021,
    arXiv:2007.07314.
    """
    owner = "balanced_softmax_loss"
    _check_logits(owner, logits)
    targets = _check_targets(owner, targets, logits.shape[0])
    check_param(owner, "tau", tau, _NON_NEGATIVE)
    check_param(owner, "eps", eps, _NON_NEGATIVE)
    if prior is None:
        raise ValueError(
            f"{owner}: 'prior' is required (the (C,) class counts or frequencies), got None."
        )
    counts = _class_vector(owner, "prior", prior, logits.shape[1], logits)
    total = counts.sum()
    if not bool(total > 0):
        raise ValueError(f"{owner}: 'prior' must have a positive sum, got {counts.tolist()}.")
    if tau == 0:
        return F.cross_entropy(logits, targets)
    offset = torch.log(counts / total + eps)
    if tau != 1:
        offset = tau * offset
    return F.cross_entropy(logits + offset, targets)


# --------------------------------------------------------------------------- FedRS


def fedrs_scale(
    class_counts: ArrayLike, alpha: float = 0.5, mode: str = "hard"
) -> torch.Tensor:
    """Per-class logit scales ``s_{k,c}`` of FedRS's restricted softmax.

    ``"hard"`` (paper): ``s_c = 1`` if ``n_{k,c} > 0`` else ``α``.
    ``"soft"`` (FedRepo code): ``s_c = α + (1 - α) n_{k,c} / max_j n_{k,j}``.

    Parameters
    ----------
    class_counts : (C,) tensor, array or sequence of counts >= 0 with a positive sum
    alpha : float in [0, 1], default 0.5
    mode : {"hard", "soft"}, default "hard"

    Returns
    -------
    Tensor, shape (C,), float32 (float64 if ``class_counts`` is a float64 tensor)

    References
    ----------
    Li & Zhan, "FedRS: Federated Learning with Restricted Softmax for Label Distribution Non-IID
    Data", KDD 2021; code github.com/lxcnju/FedRepo (``algorithms/fedrs.py``).
    """
    owner = "fedrs_scale"
    check_param(owner, "alpha", alpha, _UNIT)
    check_param(owner, "mode", mode, Options(("hard", "soft")))
    dtype = (
        torch.float64
        if isinstance(class_counts, torch.Tensor) and class_counts.dtype == torch.float64
        else torch.float32
    )
    counts = _class_vector(owner, "class_counts", class_counts, None, torch.empty(0, dtype=dtype))
    if not bool(counts.sum() > 0):
        raise ValueError(
            f"{owner}: 'class_counts' must have a positive sum, got {counts.tolist()}."
        )
    if mode == "hard":
        return torch.where(counts > 0, torch.ones_like(counts), torch.full_like(counts, alpha))
    return alpha + (1.0 - alpha) * counts / counts.max()


def restricted_logits(
    features: torch.Tensor, weight: torch.Tensor, scale: torch.Tensor
) -> torch.Tensor:
    """Scaled logits of a bias-free linear classifier: ``z_c = s_c · w_cᵀ h``.

    Parameters
    ----------
    features : Tensor, shape (B, d), the features ``h``
    weight : Tensor, shape (C, d), the classifier's rows ``w_c`` (no bias)
    scale : Tensor, shape (C,), from :func:`fedrs_scale`

    Returns
    -------
    Tensor, shape (B, C): ``(h Wᵀ) ⊙ s``
    """
    owner = "restricted_logits"
    _check_logits(owner, features, "features", "(batch, features)")
    _check_logits(owner, weight, "weight", "(classes, features)")
    if weight.shape[1] != features.shape[1]:
        raise ValueError(
            f"{owner}: 'weight' must have shape (classes, {features.shape[1]}) to match "
            f"'features', got {_shape(weight)}."
        )
    scale = _class_vector(owner, "scale", scale, weight.shape[0], features)
    return (features @ weight.T) * scale


def restricted_softmax_loss(
    features: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor, scale: torch.Tensor
) -> torch.Tensor:
    """FedRS loss: cross-entropy on restricted logits, ``CE((h Wᵀ) ⊙ s, y)``.

    Classes the client lacks have their logits scaled by α < 1, so the local update pushes their
    classifier rows less. With every ``s_c = 1`` this is plain cross-entropy of ``h Wᵀ``.

    Parameters
    ----------
    features : Tensor, shape (B, d)
    weight : Tensor, shape (C, d), bias-free classifier
    targets : Tensor, shape (B,), integer class indices
    scale : Tensor, shape (C,), from :func:`fedrs_scale`

    References
    ----------
    Li & Zhan, KDD 2021 (see :func:`fedrs_scale`).
    """
    logits = restricted_logits(features, weight, scale)
    targets = _check_targets("restricted_softmax_loss", targets, features.shape[0])
    return F.cross_entropy(logits, targets)


# --------------------------------------------------------------------------- FedLC


def fedlc_logits(
    logits: torch.Tensor, class_counts: ArrayLike, tau: float = 1.0, count_floor: float = 1e-8
) -> torch.Tensor:
    """FedLC's calibrated logits: ``z'_c = z_c - τ · max(n_c, floor)^{-1/4}``.

    With the default floor 1e-8 an absent class is shifted by ``-100 τ``.
    """
    owner = "fedlc_logits"
    _check_logits(owner, logits)
    check_param(owner, "tau", tau, _NON_NEGATIVE)
    check_param(owner, "count_floor", count_floor, _POSITIVE)
    counts = _class_vector(owner, "class_counts", class_counts, logits.shape[1], logits)
    return logits - tau * counts.clamp_min(count_floor).pow(-0.25)


def fedlc_loss(
    logits: torch.Tensor,
    targets: torch.Tensor,
    class_counts: ArrayLike,
    tau: float = 1.0,
    form: str = "ce_calibrated",
    count_floor: float = 1e-8,
) -> torch.Tensor:
    """FedLC logit-calibrated loss, batch mean.

    With calibrated logits ``z'_c = z_c - τ · max(n_{k,c}, floor)^{-1/4}``:

    * ``"ce_calibrated"`` (default; the common re-implementations):
      ``L = CE(z', y) = -log [ e^{z'_y} / Σ_j e^{z'_j} ]``.
    * ``"paper"`` (the equation as printed, the denominator **excludes** y):
      ``L = -log [ e^{z'_y} / Σ_{j≠y} e^{z'_j} ] = -z'_y + log Σ_{j≠y} e^{z'_j}``.

    The paper form is disputed: it is unbounded below (it keeps decreasing as ``z_y`` grows), and
    FL-bench's maintainer reports that it made training collapse (FL-bench issues #5 and #38); a
    Flower baseline PR (adap/flower#4548) was paused as hard to reproduce. PFLlib and FL-bench
    implement the ``ce_calibrated`` form. Which counts to use (the client's local counts, the
    default, or global counts as in PFLlib) is the caller's choice.

    Parameters
    ----------
    logits : Tensor, shape (B, C)
    targets : Tensor, shape (B,), integer class indices
    class_counts : (C,) tensor, array or sequence of counts >= 0
    tau : float >= 0, default 1.0
    form : {"ce_calibrated", "paper"}, default "ce_calibrated"
    count_floor : float > 0, default 1e-8
        Counts below it are raised to it, so an absent class is pushed down by ``τ · 100``.

    References
    ----------
    Zhang, Li, Li, Xu, Chen, Tan, "Federated Learning with Label Distribution Skew via Logits
    Calibration", ICML 2022. Re-implementations: github.com/TsingZ0/PFLlib (``clientlc.py``),
    github.com/KarhouTam/FL-bench (``fedlc.py``).
    """
    owner = "fedlc_loss"
    _check_logits(owner, logits)
    targets = _check_targets(owner, targets, logits.shape[0])
    check_param(owner, "form", form, Options(("ce_calibrated", "paper")))
    if form == "paper" and logits.shape[1] < 2:
        raise ValueError(
            f"{owner}: form 'paper' needs 'logits' with at least 2 classes, "
            f"got {_shape(logits)}."
        )
    calibrated = fedlc_logits(logits, class_counts, tau=tau, count_floor=count_floor)
    if form == "ce_calibrated":
        return F.cross_entropy(calibrated, targets)
    is_target = F.one_hot(targets, logits.shape[1]).bool()
    true_logit = calibrated.gather(1, targets.unsqueeze(1)).squeeze(1)
    others = calibrated.masked_fill(is_target, float("-inf"))
    return (torch.logsumexp(others, dim=1) - true_logit).mean()


# --------------------------------------------------------------------------- MOON


def moon_contrastive_loss(
    r: torch.Tensor, r_global: torch.Tensor, r_prev: torch.Tensor, temperature: float = 0.5
) -> torch.Tensor:
    """MOON's model-contrastive loss, batch mean.

    ``ℓ_con = -log [ e^{cos(r, r_g)/T} / (e^{cos(r, r_g)/T} + e^{cos(r, r_p)/T}) ]``

    ``r`` is the local model's projection, ``r_g`` the received global model's and ``r_p`` the
    client's previous local model's. ``r_global`` and ``r_prev`` are treated as constants
    (detached). The local objective is ``CE(z, y) + μ ℓ_con``.

    Parameters
    ----------
    r, r_global, r_prev : Tensor, shape (B, d)
    temperature : float > 0, default 0.5

    References
    ----------
    Li, He, Song, "Model-Contrastive Federated Learning", CVPR 2021, arXiv:2103.16257.
    """
    owner = "moon_contrastive_loss"
    _check_logits(owner, r, "r", "(batch, dim)")
    for name, other in (("r_global", r_global), ("r_prev", r_prev)):
        _check_logits(owner, other, name, "(batch, dim)")
        if other.shape != r.shape:
            raise ValueError(
                f"{owner}: {name!r} must have the shape of 'r' {tuple(r.shape)}, "
                f"got {_shape(other)}."
            )
    check_param(owner, "temperature", temperature, _POSITIVE)
    positive = F.cosine_similarity(r, r_global.detach(), dim=1)
    negative = F.cosine_similarity(r, r_prev.detach(), dim=1)
    logits = torch.stack([positive, negative], dim=1) / temperature
    return F.cross_entropy(logits, torch.zeros(r.shape[0], dtype=torch.long, device=r.device))


# --------------------------------------------------------------------------- distillation


def _check_logit_pair(owner: str, student_logits: Any, teacher_logits: Any) -> None:
    """Both are (B, C) logits of the same shape."""
    _check_logits(owner, student_logits, "student_logits")
    _check_logits(owner, teacher_logits, "teacher_logits")
    if teacher_logits.shape != student_logits.shape:
        raise ValueError(
            f"{owner}: 'teacher_logits' must have the shape of 'student_logits' "
            f"{tuple(student_logits.shape)}, got {_shape(teacher_logits)}."
        )


def kd_loss(
    student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float = 1.0
) -> torch.Tensor:
    """Knowledge distillation as soft cross-entropy with the teacher's probabilities.

    ``L = -(T²/B) Σ_b Σ_c softmax(z_T,b / T)_c · log softmax(z_S,b / T)_c``

    The teacher is detached. The ``T²`` factor keeps gradient magnitudes comparable across
    temperatures (Hinton et al.); at the default T = 1 (SDQ's setting) it is 1. For
    ``z_S = z_T`` the value is the entropy of the teacher's distribution and the gradient with
    respect to the student is zero.

    Parameters
    ----------
    student_logits, teacher_logits : Tensor, shape (B, C)
    temperature : float > 0, default 1.0

    References
    ----------
    Hinton, Vinyals, Dean, "Distilling the Knowledge in a Neural Network", arXiv:1503.02531
    (2015).
    """
    owner = "kd_loss"
    _check_logit_pair(owner, student_logits, teacher_logits)
    check_param(owner, "temperature", temperature, _POSITIVE)
    teacher = F.softmax(teacher_logits.detach() / temperature, dim=1)
    log_student = F.log_softmax(student_logits / temperature, dim=1)
    return -(teacher * log_student).sum(dim=1).mean() * temperature**2


def consistency_loss(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    mode: str = "batchmean",
    detach_teacher: bool = True,
) -> torch.Tensor:
    """FCA's consistency term pulling the federated head towards the personalised one.

    With ``p = softmax(z_student)`` and ``p̄ = softmax(z_teacher)``:

    * ``"batchmean"`` (default, the evident intent): ``KL(p̄ ‖ p)`` averaged over the batch,
      ``(1/B) Σ_b Σ_c p̄_bc log(p̄_bc / p_bc)``.
    * ``"code"`` (the released FCA code, which hands probabilities to a KL that expects
      log-probabilities, with element-wise mean): ``(1/(B·C)) Σ_{b,c} p̄'_bc (log p̄'_bc - p'_bc)``
      with ``p' = p + 1e-11``. Its gradient with respect to ``p`` is ``-p̄'/(B·C)``.

    Parameters
    ----------
    student_logits : Tensor, shape (B, C), the federated head's raw logits
    teacher_logits : Tensor, shape (B, C), the personalised head's raw logits
    mode : {"batchmean", "code"}, default "batchmean"
    detach_teacher : bool, default True
        Stop the gradient into the teacher (the personalised head learns only from its own loss).

    References
    ----------
    Wicaksana, Yan, Cheng, "FCA: Taming Long-tailed Federated Medical Image Classification by
    Classifier Anchoring", arXiv:2305.00738; code github.com/Jwicaksana/FCA.
    """
    owner = "consistency_loss"
    _check_logit_pair(owner, student_logits, teacher_logits)
    check_param(owner, "mode", mode, Options(("batchmean", "code")))
    check_param(owner, "detach_teacher", detach_teacher, Options((True, False)))
    if detach_teacher:
        teacher_logits = teacher_logits.detach()
    if mode == "batchmean":
        log_student = F.log_softmax(student_logits, dim=1)
        teacher = F.softmax(teacher_logits, dim=1)
        log_teacher = F.log_softmax(teacher_logits, dim=1)
        return (teacher * (log_teacher - log_student)).sum(dim=1).mean()
    student = F.softmax(student_logits, dim=1) + 1e-11
    teacher = F.softmax(teacher_logits, dim=1) + 1e-11
    return (teacher * (teacher.log() - student)).mean()


# --------------------------------------------------------------------------- segmentation


def soft_dice_loss(
    probs: torch.Tensor, target: torch.Tensor, eps: float = 1e-4, *, from_logits: bool = False
) -> torch.Tensor:
    """Soft Dice loss, per sample then batch mean.

    ``D(p, y) = 1 - (1/B) Σ_b (2 Σ p y + ε) / (Σ p + Σ y + ε)``, sums over every non-batch
    element of a sample (all channels and pixels); no squares, no BCE. With ``p = y = 0`` a
    sample scores Dice 1 (loss 0) by the ε convention.

    Parameters
    ----------
    probs : Tensor, shape (B, ...), sigmoid probabilities in [0, 1] (or logits if
        ``from_logits``)
    target : Tensor, same shape, values in [0, 1] (binary masks or pseudo-labels)
    eps : float > 0, default 1e-4
    from_logits : bool, default False
        Apply a sigmoid to ``probs`` first.

    References
    ----------
    Milletari, Navab, Ahmadi, "V-Net", 3DV 2016, arXiv:1606.04797 (soft Dice); as used by FedMix,
    Wicaksana et al., IEEE TMI 2023, arXiv:2205.01840, code github.com/Jwicaksana/FedMix.
    """
    owner = "soft_dice_loss"
    for name, value in (("probs", probs), ("target", target)):
        if not isinstance(value, torch.Tensor):
            raise TypeError(
                f"{owner}: {name!r} must be a torch.Tensor, got {type(value).__name__}."
            )
    if probs.ndim < 2 or target.shape != probs.shape:
        raise ValueError(
            f"{owner}: 'probs' and 'target' must share one shape (batch, ...), "
            f"got {_shape(probs)} and {_shape(target)}."
        )
    check_param(owner, "eps", eps, _POSITIVE)
    if from_logits:
        probs = torch.sigmoid(probs)
    elif bool((probs < 0).any()) or bool((probs > 1).any()):
        raise ValueError(
            f"{owner}: 'probs' must hold probabilities in [0, 1] (pass from_logits=True for "
            f"logits), got values in [{float(probs.min()):g}, {float(probs.max()):g}]."
        )
    target = target.to(probs.dtype)
    if bool((target < 0).any()) or bool((target > 1).any()):
        raise ValueError(
            f"{owner}: 'target' must hold values in [0, 1], "
            f"got values in [{float(target.min()):g}, {float(target.max()):g}]."
        )
    p, y = probs.flatten(1), target.flatten(1)
    dice = (2 * (p * y).sum(1) + eps) / (p.sum(1) + y.sum(1) + eps)
    return 1 - dice.mean()


# --------------------------------------------------------------------------- registry


@dataclass(frozen=True)
class LossEntry:
    """A registered classification loss: its function, options and whether it needs a prior."""

    function: Callable[..., torch.Tensor]
    needs_prior: bool
    option_names: tuple[str, ...] = ()
    fixed: Mapping[str, Any] = field(default_factory=dict)
    summary: str = ""


LOSSES: dict[str, LossEntry] = {
    "ce": LossEntry(cross_entropy, False, (), {}, "CE(z, y)"),
    "focal": LossEntry(
        focal_loss, False, ("gamma", "alpha"), {}, "-(1 - p_y)^γ log p_y (γ = 1 by default)"
    ),
    "bsm": LossEntry(
        balanced_softmax_loss, True, ("eps",), {"tau": 1.0}, "CE(z + log(π + ε), y)"
    ),
    "logit_adjust": LossEntry(
        balanced_softmax_loss, True, ("tau", "eps"), {}, "CE(z + τ log(π + ε), y)"
    ),
}
"""Registered local classification losses, by the name a method's ``loss=`` option takes."""


@dataclass(frozen=True, eq=False)
class ClassificationLoss:
    """A loss from :data:`LOSSES` with its options bound, called uniformly.

    ``loss_fn(logits, targets, prior=None)``: ``prior`` is the (C,) class counts or frequencies
    (usually the client's local counts). Losses that need no prior ignore it; "bsm" and
    "logit_adjust" raise ``ValueError`` without one. Options are validated when the object is
    built, so a misconfigured method fails at construction rather than in its first round.

    Examples
    --------
    >>> loss_fn = ClassificationLoss("focal", {"gamma": 2.0})
    >>> loss_fn.needs_prior
    False
    """

    name: str
    options: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        owner = "make_loss"
        check_param(owner, "name", self.name, Options(tuple(LOSSES)))
        entry = LOSSES[self.name]
        unknown = sorted(set(self.options) - set(entry.option_names))
        if unknown:
            accepted = ", ".join(map(repr, entry.option_names)) or "none"
            raise ValueError(
                f"{owner}: loss {self.name!r} does not accept option {unknown[0]!r}; "
                f"accepted options: {accepted}."
            )
        self._validate_options(entry)

    def _validate_options(self, entry: LossEntry) -> None:
        owner = entry.function.__name__
        options = dict(self.options)
        for name in ("gamma", "tau", "eps"):
            if name in options:
                check_param(owner, name, options[name], _NON_NEGATIVE)
        alpha = options.get("alpha")
        if alpha is not None:
            _focal_alpha(owner, alpha, None, torch.empty(0))

    @property
    def needs_prior(self) -> bool:
        """Whether calls must pass ``prior``."""
        return LOSSES[self.name].needs_prior

    def __call__(
        self, logits: torch.Tensor, targets: torch.Tensor, *, prior: ArrayLike | None = None
    ) -> torch.Tensor:
        entry = LOSSES[self.name]
        options = {**entry.fixed, **self.options}
        if entry.needs_prior:
            return entry.function(logits, targets, prior, **options)
        return entry.function(logits, targets, **options)

    def __repr__(self) -> str:
        options = ", ".join(f"{k}={v!r}" for k, v in self.options.items())
        return f"ClassificationLoss({self.name!r}{', ' + options if options else ''})"


def make_loss(name: str, **options: Any) -> ClassificationLoss:
    """Build a registered classification loss by name, e.g. for a method's ``loss=`` option.

    Parameters
    ----------
    name : {"ce", "focal", "bsm", "logit_adjust"}
    **options
        ``focal``: ``gamma`` (default 1.0), ``alpha`` (default None); ``bsm``: ``eps``
        (default 1e-9; τ is fixed at 1); ``logit_adjust``: ``tau`` (default 1.0), ``eps``.

    Returns
    -------
    ClassificationLoss
        Call it as ``loss_fn(logits, targets, prior=local_prior)``.

    Examples
    --------
    >>> loss_fn = make_loss("logit_adjust", tau=0.5)
    >>> logits = torch.zeros(2, 3)
    >>> round(float(loss_fn(logits, torch.tensor([0, 1]), prior=[1, 1, 2])), 4)  # log(2 + √2)
    1.2279
    """
    return ClassificationLoss(name, dict(options))
