"""Non-parametric regularization (NPR): per-client class sub-centroids and the NPR loss.

NPR regularizes the feature extractor with nearest-centroid scores. Each client keeps, for each
class ``c``, ``K`` unit sub-centroids ``mu_{c,1..K}`` of its own L2-normalized features. Once
per round it re-estimates them from its training set (a balanced assignment of the class's
features to the K sub-centroids, then normalized group means). Every batch then adds the
cross-entropy of the standardized max-cosine class scores to the classification loss. The
sub-centroids are constants of the loss and never leave the client: only the backbone learns
from them.

The functions here are the maths, over plain tensors; :class:`NPR` plugs them into the
protocol's hooks, as a mixin that adds the term to any classification method
(:func:`with_npr`, or ``get_method(name, npr=True)``).

References
----------
Wicaksana, Yan, Cheng, "Non-parametric Regularization for Class Imbalance Federated Medical
Image Classification", arXiv:2407.12446 (2024); github.com/Jwicaksana/FedNPR. The module is a
port of Deep Nearest Centroids: Wang, Han, Zhou, Liu, "Visual Recognition with Deep Nearest
Centroids", ICLR 2023, arXiv:2209.07383. The equipartition is the Sinkhorn-Knopp step of SwAV:
Caron et al., NeurIPS 2020, arXiv:2006.09882.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from fedlib._validation import Interval, Options, check_param
from fedlib.core.algorithm import Algorithm, LocalContext
from fedlib.core.batches import iterate_batches
from fedlib.core.simulation import derive_seed

__all__ = [
    "ASSIGNMENTS",
    "EMPTY_GROUPS",
    "LAMBDA_FORMS",
    "NPR",
    "init_sub_centroids",
    "npr_loss",
    "npr_objective",
    "npr_scores",
    "random_assign",
    "refresh_sub_centroids",
    "sinkhorn_assign",
    "with_npr",
]

ASSIGNMENTS = ("sinkhorn", "random")
"""Assignments of a class's features to its sub-centroids: Sinkhorn-Knopp equipartition (the
intent) or one uniformly random sub-centroid per sample (what the released code does)."""

EMPTY_GROUPS = ("keep_previous", "zero")
"""What a sub-centroid that receives no sample becomes: its previous value, or zero (the code)."""

LAMBDA_FORMS = ("paper", "code")
"""How ``lambda`` enters the objective: ``L + lambda * L_NPR`` (paper) or ``L + L_NPR + lambda``
(the released code's line, whose effective NPR weight is 1)."""

INIT_STD = 0.02
"""Standard deviation of the truncated-normal initial sub-centroids (the code's value)."""

LAYER_NORM_EPS = 1e-5
GROUP_EPS = 1e-10

_POSITIVE = Interval(float, 0, None, closed="neither")


# --------------------------------------------------------------------------- argument checks
def _check_matrix(owner: str, name: str, value: Any, ndim: int, layout: str) -> None:
    if not isinstance(value, torch.Tensor):
        raise TypeError(f"{owner}: {name!r} must be a torch.Tensor, got {type(value).__name__}.")
    if not value.is_floating_point():
        raise TypeError(
            f"{owner}: {name!r} must be a floating-point tensor, got dtype {value.dtype}."
        )
    if value.ndim != ndim:
        raise ValueError(
            f"{owner}: {name!r} must have shape {layout}, got {tuple(value.shape)}."
        )


def _check_labels(owner: str, labels: Any, n: int, num_classes: int) -> torch.Tensor:
    if not isinstance(labels, torch.Tensor) or labels.is_floating_point() or (
        labels.dtype == torch.bool
    ):
        raise TypeError(
            f"{owner}: 'labels' must be an integer tensor of class indices, got "
            f"{getattr(labels, 'dtype', type(labels).__name__)}."
        )
    if labels.shape != (n,):
        raise ValueError(
            f"{owner}: 'labels' must have shape ({n},) to match the features, "
            f"got {tuple(labels.shape)}."
        )
    if n and (int(labels.min()) < 0 or int(labels.max()) >= num_classes):
        raise ValueError(
            f"{owner}: 'labels' must lie in [0, {num_classes - 1}], got values in "
            f"[{int(labels.min())}, {int(labels.max())}]."
        )
    return labels.long()


def _check_bank(owner: str, bank: Any, dim: int | None = None) -> None:
    _check_matrix(owner, "bank", bank, 3, "(classes, K, feature_dim)")
    if dim is not None and bank.shape[2] != dim:
        raise ValueError(
            f"{owner}: 'bank' must have feature_dim {dim} to match the features, "
            f"got {bank.shape[2]}."
        )


# --------------------------------------------------------------------------- sub-centroids
def init_sub_centroids(
    num_classes: int, K: int, dim: int, *, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Initial sub-centroid bank: truncated normal, std 0.02, cut at +-2 (normalized at use).

    Returns a tensor of shape (num_classes, K, dim). Classes a client never sees keep these
    random vectors: they still enter every sample's class scores, as negatives.
    """
    owner = "init_sub_centroids"
    check_param(owner, "num_classes", num_classes, Interval(int, 1, None))
    check_param(owner, "K", K, Interval(int, 1, None))
    check_param(owner, "dim", dim, Interval(int, 1, None))
    bank = torch.empty(num_classes, K, dim)
    torch.nn.init.trunc_normal_(bank, std=INIT_STD, a=-2.0, b=2.0, generator=generator)
    return bank


def sinkhorn_assign(
    similarities: torch.Tensor,
    *,
    eps: float = 0.05,
    iters: int = 3,
    return_plan: bool = False,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    r"""Balanced assignment of N samples to K sub-centroids by Sinkhorn-Knopp.

    Starting from :math:`Q = \exp((S - \max S)/\varepsilon)`, alternately rescale the columns to
    mass :math:`1/K` each and the rows to mass :math:`1/N` each (``iters`` times, rows last),
    then assign every sample to its heaviest entry, :math:`a_i = \arg\max_m Q_{im}`. The
    column constraint spreads the samples evenly over the sub-centroids (equipartition), so no
    sub-centroid can absorb a whole class.

    Parameters
    ----------
    similarities : Tensor, shape (N, K)
        Cosine similarities :math:`S = \hat F_c \hat\mu_c^\top` of one class's features.
    eps : float > 0, default 0.05
        Entropic temperature :math:`\varepsilon`.
    iters : int >= 1, default 3
    return_plan : bool, default False
        Also return the transport plan :math:`Q` (float64; rows sum to 1/N).

    Returns
    -------
    Tensor of shape (N,), int64 (and the plan, shape (N, K), if ``return_plan``).

    References
    ----------
    Caron et al., "Unsupervised Learning of Visual Features by Contrasting Cluster
    Assignments", NeurIPS 2020, arXiv:2006.09882 (the equipartition step DNC reuses).
    """
    owner = "sinkhorn_assign"
    _check_matrix(owner, "similarities", similarities, 2, "(samples, K)")
    check_param(owner, "eps", eps, _POSITIVE)
    check_param(owner, "iters", iters, Interval(int, 1, None))
    n, k = similarities.shape
    if n == 0:
        empty = torch.zeros(0, dtype=torch.long, device=similarities.device)
        return (empty, similarities.new_zeros(0, k, dtype=torch.float64)) if return_plan else empty
    scores = similarities.detach().to(torch.float64)
    plan = torch.exp((scores - scores.max()) / eps)
    for _ in range(iters):
        plan = plan / plan.sum(dim=0, keepdim=True) / k
        plan = plan / plan.sum(dim=1, keepdim=True) / n
    assignment = plan.argmax(dim=1)
    return (assignment, plan) if return_plan else assignment


def random_assign(
    similarities: torch.Tensor, *, generator: torch.Generator | None = None
) -> torch.Tensor:
    """One uniformly random sub-centroid per sample, ignoring the similarities.

    This is what the released FedNPR code effectively does: its transport routine never keeps
    its dual iterates, so the plan collapses and the subsequent hard Gumbel sample is uniform.
    Each sub-centroid then becomes the mean of a random subset of the class, so all K
    approximate the class mean.

    Returns a tensor of shape (N,), int64, drawn from ``generator``.
    """
    _check_matrix("random_assign", "similarities", similarities, 2, "(samples, K)")
    n, k = similarities.shape
    return torch.randint(0, k, (n,), generator=generator).to(similarities.device)


def refresh_sub_centroids(
    bank: torch.Tensor,
    features: torch.Tensor,
    labels: torch.Tensor,
    *,
    assign: str = "sinkhorn",
    eps: float = 0.05,
    iters: int = 3,
    momentum: float = 0.0,
    empty_group: str = "keep_previous",
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    r"""Re-estimate each class's K sub-centroids from one client's features.

    For every class c with :math:`N_c \ge 2` samples, with :math:`\hat f_i = f_i/\|f_i\|`:

    .. math::

        S = \hat F_c \hat\mu_c^\top, \qquad a = \mathrm{assign}(S), \qquad
        \mu_{c,m} \leftarrow \mathrm{normalize}\Big(\frac{\sum_{i: a_i = m} \hat f_i}
        {|\{i: a_i = m\}| + 10^{-10}}\Big),

    blended as :math:`\mathrm{normalize}(\beta \hat\mu^{old}_{c,m} + (1-\beta)\mu_{c,m})` when
    the momentum :math:`\beta > 0` (DNC uses 0.999; the FedNPR code 0). Classes with
    :math:`N_c \le 1` (absent classes included) keep their previous vectors bit for bit.

    Parameters
    ----------
    bank : Tensor, shape (C, K, d)
        The previous sub-centroids (not necessarily normalized).
    features : Tensor, shape (N, d)
        Pooled backbone features of the client's training images (normalized here).
    labels : Tensor, shape (N,), integer classes in [0, C)
    assign : {"sinkhorn", "random"}, default "sinkhorn"
    eps, iters : float, int
        Sinkhorn's temperature and iterations (:func:`sinkhorn_assign`).
    momentum : float in [0, 1), default 0.0
    empty_group : {"keep_previous", "zero"}, default "keep_previous"
        A sub-centroid that receives no sample keeps its previous value, or becomes the zero
        vector (the released code: its cosine with every feature is then 0).
    generator : torch.Generator, optional
        Drives ``assign="random"``.

    Returns
    -------
    Tensor, shape (C, K, d): a new bank (the input is not modified).
    """
    owner = "refresh_sub_centroids"
    _check_bank(owner, bank)
    _check_matrix(owner, "features", features, 2, "(samples, feature_dim)")
    if features.shape[1] != bank.shape[2]:
        raise ValueError(
            f"{owner}: 'features' must have feature_dim {bank.shape[2]} to match the bank, "
            f"got {features.shape[1]}."
        )
    labels = _check_labels(owner, labels, features.shape[0], bank.shape[0])
    check_param(owner, "assign", assign, Options(ASSIGNMENTS))
    check_param(owner, "momentum", momentum, Interval(float, 0, 1, closed="left"))
    check_param(owner, "empty_group", empty_group, Options(EMPTY_GROUPS))
    new_bank = bank.detach().clone()
    unit_bank = F.normalize(new_bank, dim=-1)
    unit = F.normalize(features.detach().to(bank.dtype), dim=1)
    k = bank.shape[1]
    for c in range(bank.shape[0]):
        members = unit[labels == c]
        if members.shape[0] < 2:
            continue
        similarities = members @ unit_bank[c].T
        if assign == "sinkhorn":
            groups = sinkhorn_assign(similarities, eps=eps, iters=iters)
        else:
            groups = random_assign(similarities, generator=generator)
        one_hot = F.one_hot(groups, k).to(members.dtype)
        sums = one_hot.T @ members
        sizes = one_hot.sum(dim=0)
        means = F.normalize(sums / (sizes[:, None] + GROUP_EPS), dim=1)
        if momentum > 0:
            means = F.normalize(momentum * unit_bank[c] + (1 - momentum) * means, dim=1)
        filled = sizes > 0
        new_bank[c, filled] = means[filled]
        if empty_group == "zero":
            new_bank[c, ~filled] = 0.0
    return new_bank


# --------------------------------------------------------------------------- the loss
def npr_scores(features: torch.Tensor, bank: torch.Tensor) -> torch.Tensor:
    r"""Standardized max-cosine class scores, the logits of the NPR loss.

    .. math::

        s_c(x) = \max_m \langle \hat f(x), \hat\mu_{c,m} \rangle, \qquad
        \tilde s = \frac{s - \mathrm{mean}_c\, s}{\sqrt{\mathrm{var}_c\, s + 10^{-5}}}

    (biased variance over the C classes: a LayerNorm without affine parameters). The bank is
    a constant: no gradient flows into it.

    Parameters
    ----------
    features : Tensor, shape (B, d)
    bank : Tensor, shape (C, K, d)

    Returns
    -------
    Tensor, shape (B, C).
    """
    owner = "npr_scores"
    _check_matrix(owner, "features", features, 2, "(batch, feature_dim)")
    _check_bank(owner, bank, features.shape[1])
    num_classes, k, dim = bank.shape
    unit_bank = F.normalize(bank.detach().to(features.dtype), dim=-1).reshape(num_classes * k, dim)
    cosines = F.normalize(features, dim=1) @ unit_bank.T
    scores = cosines.reshape(-1, num_classes, k).amax(dim=2)
    return F.layer_norm(scores, (num_classes,), eps=LAYER_NORM_EPS)


def npr_loss(features: torch.Tensor, targets: torch.Tensor, bank: torch.Tensor) -> torch.Tensor:
    r"""The NPR loss, :math:`L_{NPR} = \mathrm{CE}(\tilde s(x), y)` averaged over the batch.

    :math:`\tilde s` are the standardized max-cosine scores of :func:`npr_scores`. The loss is
    invariant to the scale of the features and reaches the backbone only (the sub-centroids
    are constants).

    Parameters
    ----------
    features : Tensor, shape (B, d)
        Pooled backbone features, the input of the classifier.
    targets : Tensor, shape (B,), integer classes
    bank : Tensor, shape (C, K, d)

    Examples
    --------
    Scores s = (1, 0, 0, 0) standardize to (1.7320, -0.5773, -0.5773, -0.5773):

    >>> bank = torch.eye(4)[:, None, :]
    >>> round(float(npr_loss(torch.tensor([[2.0, 0, 0, 0]]), torch.tensor([0]), bank)), 4)
    0.2608
    """
    scores = npr_scores(features, bank)
    targets = _check_labels("npr_loss", targets, features.shape[0], bank.shape[0])
    return F.cross_entropy(scores, targets)


def npr_objective(
    loss: torch.Tensor, npr: torch.Tensor, *, npr_lambda: float, form: str = "paper"
) -> torch.Tensor:
    r"""The local objective with the NPR term.

    ``form="paper"``: :math:`L + \lambda L_{NPR}` (intended :math:`\lambda = 0.05`).
    ``form="code"``: :math:`L + L_{NPR} + \lambda`, the released code's line (it adds
    :math:`\lambda` instead of multiplying): the same gradients as the paper form with
    :math:`\lambda = 1`, and a loss value shifted by the constant :math:`\lambda`.
    """
    check_param("npr_objective", "npr_lambda", npr_lambda, Interval(float, 0, None))
    check_param("npr_objective", "form", form, Options(LAMBDA_FORMS))
    if form == "code":
        return loss + npr + npr_lambda
    return loss + npr_lambda * npr


# --------------------------------------------------------------------------- the plug-in
SUB_CENTROIDS = "sub_centroids"
"""Client-state entry of the sub-centroid bank, shape (C, K, d), on the CPU."""
BANK = "npr_bank"
"""``LocalContext.extras`` entry: this round's bank on the training device."""
NPR_SEED_TAG = 7
"""Last part of the seed of the refresh's own generator, ``(round seed, NPR_SEED_TAG)``: the
initial bank and random assignments never draw from the training generator."""


@contextmanager
def recorded_features(model: nn.Module) -> Iterator[list[torch.Tensor]]:
    """Record the outputs of ``model.features`` while the block runs.

    The method's own forward pass computes the features its classifier reads; recording them
    lets NPR reuse them (``npr_feature_pass="shared"``) without a second forward pass and
    without any change to the method's code. The instance attribute that shadows the bound
    method is removed on exit.
    """
    captured: list[torch.Tensor] = []
    original = model.features

    def features(x: torch.Tensor) -> torch.Tensor:
        h = original(x)
        captured.append(h)
        return h

    model.__dict__["features"] = features
    try:
        yield captured
    finally:
        del model.__dict__["features"]


@dataclass(kw_only=True)
class NPR:
    r"""Mixin: adds the NPR term to a classification method's local loss.

    Client k keeps a sub-centroid bank :math:`\mu \in \mathbb{R}^{C \times K \times d}` in its
    state (``ClientState.method["sub_centroids"]``; it never crosses the wire). Each round,
    before local training and with the model just received, it re-estimates the bank from its
    training features (:func:`refresh_sub_centroids`); every batch then minimizes

    .. math::

        L_k = L_{method}(x, y) + \lambda\, \mathrm{CE}(\tilde s(f(x)), y)

    (:func:`npr_loss`, :func:`npr_objective`), where :math:`f(x)` is the pooled backbone
    feature that feeds the classifier (``model.features``; for MOON before the projection head,
    for two-head models the shared feature) and :math:`L_{method}` is the method's own local
    loss, untouched. NPR is not used at prediction time.

    Compose with :func:`with_npr` (``get_method(name, npr=True)``); :class:`FedNPR` is
    FedAvg with balanced softmax and NPR.

    Parameters
    ----------
    npr : bool, default True
        Marks the composed method (``get_method``'s switch; always True here).
    npr_lambda : float >= 0, default 0.05
        :math:`\lambda`, the intended weight. The released code adds it instead of multiplying
        (``npr_lambda_form="code"``): its effective NPR weight is 1.0.
    npr_lambda_form : {"paper", "code"}, default "paper"
        ``L + lambda L_NPR``, or the code's ``L + L_NPR + lambda``.
    npr_K : int >= 1, default 4
        Sub-centroids per class; 1 gives the class-mean variant.
    npr_assign : {"sinkhorn", "random"}, default "sinkhorn"
        Balanced Sinkhorn-Knopp assignment (the intent), or the released code's effective
        uniform random assignment.
    npr_sinkhorn_eps : float > 0, default 0.05
    npr_sinkhorn_iters : int >= 1, default 3
    npr_momentum : float in [0, 1), default 0.0
        Blend with the previous bank (the code: 0; DNC: 0.999).
    npr_refresh_pass : {"eval_clean", "code"}, default "eval_clean"
        The refresh's forward pass: eval mode ("eval_clean"), or as the code does, train mode
        in round 0 (BatchNorm uses and updates batch statistics) and eval mode afterwards.
        fedlib's datasets have no training augmentation, so the code's augmented refresh
        images are the clean ones here.
    npr_empty_group : {"keep_previous", "zero"}, default "keep_previous"
        A sub-centroid that receives no sample keeps its value, or becomes zero (the code).
    npr_feature_pass : {"shared", "second"}, default "shared"
        Reuse the features of the method's own forward pass, or run a second forward pass for
        them (the code; same values, but BatchNorm statistics are updated twice).

    References
    ----------
    Wicaksana, Yan, Cheng, arXiv:2407.12446 (2024); github.com/Jwicaksana/FedNPR.
    """

    client_state_fields: ClassVar[dict[str, str]] = {
        SUB_CENTROIDS: "the NPR sub-centroid bank, (C, K, d), refreshed every round (CPU)",
    }

    npr: bool = True
    npr_lambda: float = 0.05
    npr_lambda_form: str = "paper"
    npr_K: int = 4
    npr_assign: str = "sinkhorn"
    npr_sinkhorn_eps: float = 0.05
    npr_sinkhorn_iters: int = 3
    npr_momentum: float = 0.0
    npr_refresh_pass: str = "eval_clean"
    npr_empty_group: str = "keep_previous"
    npr_feature_pass: str = "shared"

    _constraints: ClassVar[dict] = {
        "npr": Options((True,)),
        "npr_lambda": Interval(float, 0, None),
        "npr_lambda_form": Options(LAMBDA_FORMS),
        "npr_K": Interval(int, 1, None),
        "npr_assign": Options(ASSIGNMENTS),
        "npr_sinkhorn_eps": _POSITIVE,
        "npr_sinkhorn_iters": Interval(int, 1, None),
        "npr_momentum": Interval(float, 0, 1, closed="left"),
        "npr_refresh_pass": Options(("eval_clean", "code")),
        "npr_empty_group": Options(EMPTY_GROUPS),
        "npr_feature_pass": Options(("shared", "second")),
    }

    def __init_subclass__(cls, **kwargs: Any) -> None:
        """Merge the client-state entries of every class in the MRO (the method's and NPR's)."""
        super().__init_subclass__(**kwargs)
        merged: dict[str, str] = {}
        for klass in reversed(cls.__mro__):
            merged.update(klass.__dict__.get("client_state_fields", {}))
        cls.client_state_fields = merged

    # ------------------------------------------------------------------ refresh
    def npr_generator(self, ctx: LocalContext) -> torch.Generator:
        """The refresh's own generator, seeded from the round's (never draws from it)."""
        return torch.Generator().manual_seed(
            derive_seed(ctx.generator.initial_seed(), NPR_SEED_TAG)
        )

    @torch.no_grad()
    def npr_features(self, model: nn.Module, ctx: LocalContext) -> tuple[torch.Tensor, ...]:
        """Pooled features and labels of every local training image (``npr_refresh_pass``)."""
        if not callable(getattr(model, "features", None)):
            raise TypeError(
                f"{type(self).__name__}: NPR needs a classifier with features(x) (as SmallCNN), "
                f"got {type(model).__name__}."
            )
        was_training = model.training
        model.train(self.npr_refresh_pass == "code" and ctx.round == 0)
        features, labels = [], []
        for batch in iterate_batches(ctx.data, self.batch_size, shuffle=False):
            features.append(model.features(batch[0].to(ctx.device)).float().cpu())
            labels.append(batch[1].cpu())
        model.train(was_training)
        return torch.cat(features), torch.cat(labels)

    def before_local_training(self, model: nn.Module, ctx: LocalContext) -> None:
        """The method's own preparation, then the sub-centroid refresh of this round."""
        super().before_local_training(model, ctx)
        features, labels = self.npr_features(model, ctx)
        if labels.ndim != 1 or labels.is_floating_point():
            raise TypeError(
                f"{type(self).__name__}: NPR needs one class index per image, got labels of "
                f"shape {tuple(labels.shape)} and dtype {labels.dtype}."
            )
        generator = self.npr_generator(ctx)
        bank = ctx.state.method.get(SUB_CENTROIDS)
        if bank is None:
            bank = init_sub_centroids(
                len(ctx.class_counts), self.npr_K, features.shape[1], generator=generator
            )
        bank = refresh_sub_centroids(
            bank, features, labels, assign=self.npr_assign, eps=self.npr_sinkhorn_eps,
            iters=self.npr_sinkhorn_iters, momentum=self.npr_momentum,
            empty_group=self.npr_empty_group, generator=generator,
        )
        ctx.state.method[SUB_CENTROIDS] = bank
        ctx.extras[BANK] = bank.to(ctx.device)

    # ------------------------------------------------------------------ loss
    def local_loss(self, model: nn.Module, batch, ctx: LocalContext) -> torch.Tensor:
        """The method's local loss plus the NPR term on the features its classifier read.

        Without a bank (fine-tuning for evaluation, which skips the refresh) the method's loss
        is returned unchanged.
        """
        bank = ctx.extras.get(BANK)
        if bank is None:
            return super().local_loss(model, batch, ctx)
        x, y = batch[0], batch[1]
        if self.npr_feature_pass == "shared":
            with recorded_features(model) as captured:
                loss = super().local_loss(model, batch, ctx)
            h = captured[0] if captured else model.features(x)
        else:
            loss = super().local_loss(model, batch, ctx)
            h = model.features(x)
        return npr_objective(
            loss, npr_loss(h, y, bank), npr_lambda=self.npr_lambda, form=self.npr_lambda_form
        )


@functools.cache
def with_npr(method: type[Algorithm]) -> type[Algorithm]:
    """The class ``method`` with the NPR term added (the class itself if it already has it).

    The new class keeps the method's ``name`` and options and adds the ``npr_*`` options of
    :class:`NPR`; it is built once per method and registered in this module, so it pickles.

    >>> from fedlib.methods import FedProx
    >>> with_npr(FedProx)(mu=0.1, npr_lambda=1.0).npr_K
    4
    """
    if not (isinstance(method, type) and issubclass(method, Algorithm)):
        raise TypeError(f"with_npr: 'method' must be an Algorithm subclass, got {method!r}.")
    if issubclass(method, NPR):
        return method
    name = f"{method.__name__}NPR"
    composed = type(name, (NPR, method), {
        "__module__": __name__,
        "__qualname__": name,
        "__doc__": f"{method.__name__} with the NPR term (see :class:`NPR`).\n\n"
                   + (method.__doc__ or ""),
    })
    composed = dataclass(kw_only=True)(composed)
    globals()[name] = composed
    return composed
