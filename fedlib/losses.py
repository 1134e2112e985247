"""Loss functions of the course's methods, as pure functions over tensors.

Notation: a batch of B samples, C classes, logits ``z`` of shape (B, C), integer targets ``y`` of
shape (B,), ``CE(z, y) = -log softmax(z)_y`` averaged over the batch. Every public function
checks all its arguments on every call and raises ``ValueError``/``TypeError`` with a message
naming the function, the parameter, what is allowed and the value received.

The local classification losses of the FedAvg family live in a registry, :data:`LOSSES`, built by
:func:`make_loss`. A configured loss is always called the same way::

    loss_fn = make_loss("bsm")                 # or "ce", "focal", "logit_adjust"
    loss = loss_fn(logits, targets, prior=local_prior)

``prior`` is the client's class counts or frequencies, shape (C,). Losses that need no prior
("ce", "focal") ignore it, so a method can pass it unconditionally; losses that need one ("bsm",
"logit_adjust") raise if it is missing. :func:`make_loss` checks the options once, when the loss
is built; each call then checks only types and shapes, which never waits for an accelerator, and
takes the values of a tensor ``prior`` as given (counts or frequencies >= 0 with a positive sum).
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
    "gradient_match_distance",
    "kd_loss",
    "linear_ce_gradients",
    "make_loss",
    "moon_contrastive_loss",
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


def _check_length(owner: str, name: str, vector: Any, num_classes: int | None) -> None:
    """``vector`` is 1-D with ``num_classes`` entries (any number >= 1 when None)."""
    if vector.ndim != 1 or len(vector) < 1 or (
        num_classes is not None and len(vector) != num_classes
    ):
        expected = f"({num_classes},)" if num_classes is not None else "(classes,)"
        raise ValueError(
            f"{owner}: {name!r} must have shape {expected}, one entry per class, "
            f"got {_shape(vector)}."
        )


def _host_vector(owner: str, name: str, value: Any) -> np.ndarray:
    """An array or sequence of numbers as a float64 NumPy array (not yet checked)."""
    if isinstance(value, np.ndarray | Sequence) and not isinstance(value, str):
        try:
            return np.asarray(value, dtype=np.float64)
        except (TypeError, ValueError):
            pass
        raise TypeError(f"{owner}: {name!r} must hold numbers, got {value!r}.")
    raise TypeError(
        f"{owner}: {name!r} must be a tensor, array or sequence with one number per class, "
        f"got {type(value).__name__}."
    )


def _class_vector(
    owner: str,
    name: str,
    value: Any,
    num_classes: int | None,
    like: torch.Tensor,
    *,
    positive_sum: bool = False,
) -> torch.Tensor:
    """A 1-D tensor of finite values >= 0 on ``like``'s device and dtype.

    ``num_classes=None`` accepts any length >= 1; otherwise the length must equal it. Arrays and
    sequences are checked on the host before they are copied; a tensor is checked where it is.
    """
    if isinstance(value, torch.Tensor):
        vector = value.detach().to(device=like.device, dtype=like.dtype)
        _check_length(owner, name, vector, num_classes)
        valid = bool((torch.isfinite(vector) & (vector >= 0)).all())
        positive = not positive_sum or bool(vector.sum() > 0)
        values = vector
    else:
        array = _host_vector(owner, name, value)
        _check_length(owner, name, array, num_classes)
        valid = bool(np.isfinite(array).all() and (array >= 0).all())
        positive = not positive_sum or bool(array.sum() > 0)
        values = array
    if not valid:
        raise ValueError(
            f"{owner}: {name!r} must hold finite values >= 0, got {values.tolist()}."
        )
    if not positive:
        raise ValueError(f"{owner}: {name!r} must have a positive sum, got {values.tolist()}.")
    if isinstance(values, np.ndarray):
        return torch.as_tensor(values, dtype=like.dtype, device=like.device)
    return values


def _prior_counts(owner: str, prior: Any, logits: torch.Tensor, *, check_values: bool = True):
    """The (C,) prior on the device and dtype of ``logits``.

    With ``check_values=False`` (a built loss, called every batch) a tensor prior is checked for
    its shape only: checking its values would wait for the accelerator on every call.
    """
    if prior is None:
        raise ValueError(
            f"{owner}: 'prior' is required (the (C,) class counts or frequencies), got None."
        )
    if isinstance(prior, torch.Tensor) and not check_values:
        _check_length(owner, "prior", prior, logits.shape[1])
        return prior.detach().to(device=logits.device, dtype=logits.dtype)
    return _class_vector(owner, "prior", prior, logits.shape[1], logits, positive_sum=True)


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


class _FocalWeights:
    """Focal ``α`` as per-class weights ``α_c``: checked once, built once per (C, device, dtype).

    A float ``α`` gives ``(1 - α, α)`` with C = 2 classes (Lin et al.'s balancing, class 1 the
    foreground) and ``α`` for every class otherwise; a vector gives one weight per class.
    """

    def __init__(self, owner: str, alpha: Any):
        self.owner = owner
        self.scalar: float | None = None
        self.vector: np.ndarray | None = None
        if isinstance(alpha, numbers.Real) and not isinstance(alpha, bool):
            check_param(owner, "alpha", alpha, _UNIT)
            self.scalar = float(alpha)
        elif isinstance(alpha, bool | str) or not isinstance(
            alpha, torch.Tensor | np.ndarray | Sequence
        ):
            raise TypeError(
                f"{owner}: 'alpha' must be None, a float in [0, 1] or per-class weights >= 0, "
                f"got {alpha!r}."
            )
        else:
            if isinstance(alpha, torch.Tensor):
                alpha = alpha.detach().cpu().double().numpy()
            host = torch.empty(0, dtype=torch.float64)
            self.vector = _class_vector(owner, "alpha", alpha, None, host).numpy()
        self._cache: dict[tuple[int, torch.device, torch.dtype], torch.Tensor] = {}

    def on(self, logits: torch.Tensor) -> torch.Tensor:
        """The (C,) weights for ``logits`` of shape (B, C), on their device and dtype."""
        num_classes = logits.shape[1]
        key = (num_classes, logits.device, logits.dtype)
        weights = self._cache.get(key)
        if weights is None:
            if self.vector is not None:
                _check_length(self.owner, "alpha", self.vector, num_classes)
                values = self.vector
            elif num_classes == 2:
                values = np.array([1.0 - self.scalar, self.scalar])
            else:
                values = np.full(num_classes, self.scalar)
            weights = torch.as_tensor(values, dtype=logits.dtype, device=logits.device)
            self._cache[key] = weights
        return weights


def _focal(
    logits: torch.Tensor,
    targets: torch.Tensor,
    gamma: float = 1.0,
    alpha: _FocalWeights | None = None,
) -> torch.Tensor:
    """The focal loss on checked arguments (see :func:`focal_loss`)."""
    nll = F.cross_entropy(logits, targets, reduction="none")  # -log p_y, per sample
    # 1 - p_y = -expm1(log p_y) keeps its digits as p_y -> 1, where 1 - exp(log p_y) cancels to
    # 0. The floor keeps the power differentiable: d/dx x^γ = γ x^(γ-1) is infinite at x = 0
    # for γ < 1, and times the zero gradient of a saturated softmax gave NaN.
    miss = (-torch.expm1(-nll)).clamp_min(torch.finfo(nll.dtype).tiny)
    per_sample = (miss if gamma == 1 else miss.pow(gamma)) * nll  # x^1 = x: skip the power
    if alpha is not None:
        per_sample = per_sample * alpha.on(logits)[targets]
    return per_sample.mean()


def focal_loss(
    logits: torch.Tensor,
    targets: torch.Tensor,
    gamma: float = 1.0,
    alpha: float | ArrayLike | None = None,
) -> torch.Tensor:
    """Focal loss, batch mean: easy examples are down-weighted by ``(1 - p_y)^γ``.

    ``L = (1/B) Σ_b -α_{y_b} (1 - p_{b,y_b})^γ log p_{b,y_b}``, with ``p_b = softmax(z_b)``.
    ``1 - p_y`` is computed as ``-expm1(log p_y)`` and floored at the dtype's smallest normal
    number, so the loss and its gradient stay finite for every ``γ >= 0`` even when ``p_y``
    rounds to 1 (Lin et al. sweep γ in {0, 0.1, 0.2, 0.5, 1, 2, 5}).

    Parameters
    ----------
    logits : Tensor, shape (B, C)
    targets : Tensor, shape (B,), integer class indices
    gamma : float >= 0, default 1.0
        Focusing parameter. ``γ = 0`` is plain cross-entropy. The FedNPR/FCA code uses γ = 1; the
        focal-loss paper's default is γ = 2.
    alpha : None, float in [0, 1], or (C,) per-class weights >= 0, default None
        ``None``: ``α = 1``. A float with C = 2 classes is the paper's α-balancing:
        ``α_1 = α`` (class 1, the foreground or positive class) and ``α_0 = 1 - α``; the paper's
        best setting with γ = 2 is α = 0.25. A float with C ≠ 2 scales every term by the same α
        (the multi-class reading: there is no foreground class). A vector weights each sample
        by the weight of its class, then takes the plain batch mean (not a weight-normalised
        mean), as the FedNPR/FCA code does when it passes ``alpha`` as the class weights of its
        cross-entropy.

    References
    ----------
    Lin, Goyal, Girshick, He, Dollár, "Focal Loss for Dense Object Detection", ICCV 2017,
    arXiv:1708.02002.
    """
    owner = "focal_loss"
    _check_logits(owner, logits)
    targets = _check_targets(owner, targets, logits.shape[0])
    check_param(owner, "gamma", gamma, _NON_NEGATIVE)
    weights = None if alpha is None else _FocalWeights(owner, alpha)
    return _focal(logits, targets, gamma, weights)


def _balanced_softmax(
    logits: torch.Tensor,
    targets: torch.Tensor,
    prior: torch.Tensor,
    tau: float = 1.0,
    eps: float = 1e-9,
) -> torch.Tensor:
    """Balanced softmax on checked arguments (see :func:`balanced_softmax_loss`)."""
    if tau == 0:
        return F.cross_entropy(logits, targets)
    offset = torch.log(prior / prior.sum() + eps)
    if tau != 1:
        offset = tau * offset
    return F.cross_entropy(logits + offset, targets)


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
    counts = _prior_counts(owner, prior, logits)
    return _balanced_softmax(logits, targets, counts, tau, eps)


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
    counts = _class_vector(
        owner, "class_counts", class_counts, None, torch.empty(0, dtype=dtype), positive_sum=True
    )
    if mode == "hard":
        return torch.where(counts > 0, torch.ones_like(counts), torch.full_like(counts, alpha))
    return alpha + (1.0 - alpha) * counts / counts.max()


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


# --------------------------------------------------------------------------- gradient matching


def _row_distance(a: torch.Tensor, b: torch.Tensor, eps: float) -> torch.Tensor:
    """``sum over rows (last dimension) of 1 - cos(a_row, b_row)``."""
    cos = (a * b).sum(-1) / (a.norm(dim=-1) * b.norm(dim=-1)).clamp_min(eps)
    return (1 - cos).sum()


def gradient_match_distance(
    a: Sequence[torch.Tensor], b: Sequence[torch.Tensor], eps: float = 1e-6
) -> torch.Tensor:
    r"""CReFF's gradient distance, summed over layers and rows.

    .. math:: D(a, b) = \sum_\ell \sum_i \Big(1 - \frac{a_{\ell,i} \cdot b_{\ell,i}}
              {\max(\lVert a_{\ell,i} \rVert \lVert b_{\ell,i} \rVert, \epsilon)}\Big)

    Rows run along the last dimension: a 2-D tensor (a weight, shape (C, d)) has one row per
    class; a 1-D tensor (a bias) is a single row; leading dimensions (a batch of gradients,
    e.g. one per class) only add rows. ``D(g, g) = 0`` and ``D(g, -g) = 2`` per row, up to
    rounding. The reference code adds ``eps`` to the denominator instead, which leaves
    ``D(g, g) > 0`` for small rows; here ``eps`` only guards rows of zeros.

    Parameters
    ----------
    a, b : sequences of tensors, the same number in each, with matching shapes (>= 1-D)
    eps : float, default 1e-6

    References
    ----------
    Shang, Lu, Huang, Wang, "Federated Learning on Heterogeneous and Long-Tailed Data via
    Classifier Re-Training with Federated Features", IJCAI 2022, arXiv:2204.13399.
    """
    owner = "gradient_match_distance"
    if len(a) != len(b) or len(a) == 0:
        raise ValueError(
            f"{owner}: 'a' and 'b' must hold as many tensors, at least one, got {len(a)} "
            f"and {len(b)}."
        )
    total = torch.zeros((), dtype=a[0].dtype, device=a[0].device)
    for x, y in zip(a, b, strict=True):
        if x.shape != y.shape or x.ndim < 1:
            raise ValueError(
                f"{owner}: tensors must have matching shapes with at least one dimension, "
                f"got {tuple(x.shape)} and {tuple(y.shape)}."
            )
        total = total + _row_distance(x.reshape(-1, x.shape[-1]), y.reshape(-1, y.shape[-1]), eps)
    return total


def linear_ce_gradients(
    features: torch.Tensor,
    labels: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    r"""Gradients of a linear classifier's mean cross-entropy, in closed form.

    For :math:`z_i = W f_i + b` and :math:`L = \frac1n \sum_i \mathrm{CE}(z_i, y_i)`:

    .. math:: \nabla_W L = \frac1n \sum_i (\mathrm{softmax}(z_i) - e_{y_i})\, f_i^\top,
              \qquad \nabla_b L = \frac1n \sum_i (\mathrm{softmax}(z_i) - e_{y_i}).

    Differentiable with respect to ``features`` (what gradient matching optimises) and
    batched over leading dimensions. Arguments are not checked (the function runs inside
    optimisation loops).

    Parameters
    ----------
    features : Tensor, shape (..., n, d)
    labels : Tensor, shape (..., n), integer classes
    weight : Tensor, shape (C, d)
    bias : Tensor, shape (C,), optional

    Returns
    -------
    (grad_weight, grad_bias) : Tensors of shapes (..., C, d) and (..., C)
    """
    logits = features @ weight.T
    if bias is not None:
        logits = logits + bias
    error = torch.softmax(logits, dim=-1) - F.one_hot(labels, weight.shape[0]).to(logits.dtype)
    n = features.shape[-2]
    return error.transpose(-1, -2) @ features / n, error.mean(-2)


# --------------------------------------------------------------------------- registry


@dataclass(frozen=True)
class LossEntry:
    """A registered classification loss.

    ``function`` is the public function, which checks every argument on every call; ``kernel``
    computes the same loss on checked arguments (a built :class:`ClassificationLoss` calls it
    with the options it checked once), as ``kernel(logits, targets[, prior], **options)``.
    """

    function: Callable[..., torch.Tensor]
    kernel: Callable[..., torch.Tensor]
    needs_prior: bool
    option_names: tuple[str, ...] = ()
    fixed: Mapping[str, Any] = field(default_factory=dict)
    summary: str = ""


LOSSES: dict[str, LossEntry] = {
    "ce": LossEntry(cross_entropy, F.cross_entropy, False, (), {}, "CE(z, y)"),
    "focal": LossEntry(
        focal_loss,
        _focal,
        False,
        ("gamma", "alpha"),
        {},
        "-α_y (1 - p_y)^γ log p_y (γ = 1, no α by default)",
    ),
    "bsm": LossEntry(
        balanced_softmax_loss,
        _balanced_softmax,
        True,
        ("eps",),
        {"tau": 1.0},
        "CE(z + log(π + ε), y)",
    ),
    "logit_adjust": LossEntry(
        balanced_softmax_loss,
        _balanced_softmax,
        True,
        ("tau", "eps"),
        {},
        "CE(z + τ log(π + ε), y)",
    ),
}
"""Registered local classification losses, by the name a method's ``loss=`` option takes."""


@dataclass(frozen=True, eq=False)
class ClassificationLoss:
    """A loss from :data:`LOSSES` with its options bound, called uniformly.

    ``loss_fn(logits, targets, prior=None)``: ``prior`` is the (C,) class counts or frequencies
    (usually the client's local counts). Losses that need no prior ignore it; "bsm" and
    "logit_adjust" raise ``ValueError`` without one. Options are validated once, when the
    object is built, so a misconfigured method fails at construction rather than in its first
    round. A call checks the types and shapes of its arguments only (no accelerator sync): the
    values of a tensor ``prior`` are taken as given, while an array or list is checked.

    Examples
    --------
    >>> loss_fn = ClassificationLoss("focal", {"gamma": 2.0})
    >>> loss_fn.needs_prior
    False
    """

    name: str
    options: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        check_param("make_loss", "name", self.name, Options(tuple(LOSSES)))
        entry = LOSSES[self.name]
        unknown = sorted(set(self.options) - set(entry.option_names))
        if unknown:
            accepted = ", ".join(map(repr, entry.option_names)) or "none"
            raise ValueError(
                f"make_loss: loss {self.name!r} does not accept option {unknown[0]!r}; "
                f"accepted options: {accepted}."
            )
        owner = entry.function.__name__
        bound = {**entry.fixed, **self.options}
        for name in ("gamma", "tau", "eps"):
            if name in bound:
                check_param(owner, name, bound[name], _NON_NEGATIVE)
        if bound.get("alpha") is not None:
            bound["alpha"] = _FocalWeights(owner, bound["alpha"])
        # frozen dataclass: the checked options are set once, here
        object.__setattr__(self, "_entry", entry)
        object.__setattr__(self, "_owner", owner)
        object.__setattr__(self, "_bound", bound)

    @property
    def needs_prior(self) -> bool:
        """Whether calls must pass ``prior``."""
        return self._entry.needs_prior

    def __call__(
        self, logits: torch.Tensor, targets: torch.Tensor, *, prior: ArrayLike | None = None
    ) -> torch.Tensor:
        owner = self._owner
        _check_logits(owner, logits)
        targets = _check_targets(owner, targets, logits.shape[0])
        if self._entry.needs_prior:
            counts = _prior_counts(owner, prior, logits, check_values=False)
            return self._entry.kernel(logits, targets, counts, **self._bound)
        return self._entry.kernel(logits, targets, **self._bound)

    def __repr__(self) -> str:
        options = ", ".join(f"{k}={v!r}" for k, v in self.options.items())
        return f"ClassificationLoss({self.name!r}{', ' + options if options else ''})"


def make_loss(name: str, **options: Any) -> ClassificationLoss:
    """Build a registered classification loss by name, e.g. for a method's ``loss=`` option.

    The options are checked here, once; each call then checks only types and shapes.

    Parameters
    ----------
    name : {"ce", "focal", "bsm", "logit_adjust"}
    **options
        ``focal``: ``gamma`` (default 1.0), ``alpha`` (default None: no balancing; a float in
        [0, 1] or per-class weights, see :func:`focal_loss`); ``bsm``: ``eps`` (default 1e-9;
        τ is fixed at 1); ``logit_adjust``: ``tau`` (default 1.0), ``eps``.

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
    >>> make_loss("focal", gamma=2.0, alpha=0.25)
    ClassificationLoss('focal', gamma=2.0, alpha=0.25)
    """
    return ClassificationLoss(name, dict(options))
