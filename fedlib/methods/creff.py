"""CReFF: classifier re-training with federated features (Shang et al., IJCAI 2022)."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset

from fedlib._validation import Interval
from fedlib.core.algorithm import LocalContext
from fedlib.core.batches import iterate_batches
from fedlib.core.protocol import ClientReply, GlobalState, RoundMessage
from fedlib.methods.fedavg import FedAvg

CLASSIFIER_PREFIX = "creff.classifier."
"""Message arrays: the re-trained classifier the clients compute gradients with."""
GRADIENT_PREFIX = "creff.grad."
"""Reply arrays ``creff.grad.<c>.weight`` / ``.bias``: one class's mean classifier gradient."""


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

    A 2-D tensor (a weight, shape (C, d)) has one row per class; a 1-D tensor (a bias) is a
    single row. ``D(g, g) = 0`` and ``D(g, -g) = 2`` per row, up to rounding. The reference
    code adds ``eps`` to the denominator instead, which leaves ``D(g, g) > 0`` for small
    rows; here ``eps`` only guards rows of zeros.

    Parameters
    ----------
    a, b : sequences of tensors with matching shapes (1-D or 2-D)
    eps : float, default 1e-6
    """
    if len(a) != len(b):
        raise ValueError(
            f"gradient_match_distance: 'a' and 'b' must hold as many tensors, got {len(a)} "
            f"and {len(b)}."
        )
    total = torch.zeros((), dtype=a[0].dtype, device=a[0].device)
    for x, y in zip(a, b, strict=True):
        if x.shape != y.shape or x.ndim not in (1, 2):
            raise ValueError(
                "gradient_match_distance: tensors must be 1-D or 2-D with matching shapes, "
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
    batched over leading dimensions.

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


@dataclass(kw_only=True)
class CReFF(FedAvg):
    r"""FedAvg, plus a classifier re-trained on the server from federated features.

    1. Body and classifier train by FedAvg; the global model keeps FedAvg's classifier.
    2. Before local training, client k computes, for each class c it holds, the gradient of
       the cross-entropy of last round's re-trained classifier :math:`(W, b)` on its real
       features (received body, eval mode) of class c:
       :math:`g_{k,c} = \nabla_{W,b}\,\mathrm{CE}(W \phi(x_i) + b, c)`, mean over its
       class-c examples, and sends it with its update.
    3. Server: :math:`\bar g_c = \frac{1}{|K_c|}\sum_{k \in K_c} g_{k,c}` (unweighted).
    4. It updates synthetic features :math:`F_c` (``features_per_class`` per class, kept
       across rounds in ``GlobalState.extra``) by ``match_steps`` SGD steps (lr
       ``feature_lr``) on :math:`\sum_c D(\nabla_{W,b}\mathrm{CE}(W F_c + b, c), \bar g_c)`
       (:func:`gradient_match_distance`).
    5. A fresh linear classifier is trained on :math:`\{F_c\}` (``retrain_epochs`` epochs of
       SGD, lr ``retrain_lr``, batch ``retrain_batch_size``) and kept in
       ``GlobalState.extra["creff_classifier"]``. It is used for generalization only
       (:meth:`eval_weights`: global body with this classifier) and sent to clients for
       step 2; it never overwrites the global head.

    In round 1 the clients' gradients use the global head. Server-side randomness (initial
    features, fresh classifiers, shuffling) comes from torch's global generator, which the
    simulator seeds. Caveat: per-class gradients reveal which classes a client holds.

    Parameters
    ----------
    features_per_class : int, default 100
    match_steps : int, default 100
    feature_lr : float, default 0.1
    retrain_epochs : int, default 300
    retrain_lr : float, default 0.01
    retrain_batch_size : int, default 32
    head_prefix : str, default "head."
        Prefix of the model's linear classifier (``<prefix>weight``, ``<prefix>bias``).

    References
    ----------
    Shang, Lu, Huang, Wang, "Federated Learning on Heterogeneous and Long-Tailed Data via
    Classifier Re-Training with Federated Features", IJCAI 2022, arXiv:2204.13399;
    github.com/shangxinyi/CReFF-FL. Differences from the reference code: each client's
    per-class gradient is the mean over all its examples of the class (the code averages 10
    random batches of 32), no differentiable augmentation is applied, round 1 uses the
    global head (the code: a fresh random linear layer), and :func:`gradient_match_distance`
    guards the cosine with a floor instead of adding ``eps`` to its denominator.
    """

    name: ClassVar[str] = "creff"
    features_per_class: int = 100
    match_steps: int = 100
    feature_lr: float = 0.1
    retrain_epochs: int = 300
    retrain_lr: float = 0.01
    retrain_batch_size: int = 32
    head_prefix: str = "head."

    _constraints: ClassVar[dict] = {
        "features_per_class": Interval(int, 1, None),
        "match_steps": Interval(int, 0, None),
        "feature_lr": Interval(float, 0, None, closed="neither"),
        "retrain_epochs": Interval(int, 1, None),
        "retrain_lr": Interval(float, 0, None, closed="neither"),
        "retrain_batch_size": Interval(int, 1, None),
    }

    # ------------------------------------------------------------------ helpers
    def _head_keys(self, weights: Mapping[str, torch.Tensor]) -> list[str]:
        keys = [self.head_prefix + n for n in ("weight", "bias") if self.head_prefix + n in weights]
        if not keys or keys[0] != self.head_prefix + "weight":
            raise ValueError(
                f"CReFF: the model has no linear classifier under 'head_prefix'="
                f"{self.head_prefix!r} (no {self.head_prefix}weight)."
            )
        return keys

    def current_classifier(self, state: GlobalState) -> dict[str, torch.Tensor]:
        """The re-trained classifier (``weight``, ``bias``), or the global head before round 1."""
        if "creff_classifier" in state.extra:
            return dict(state.extra["creff_classifier"])
        return {
            k[len(self.head_prefix):]: state.weights[k].detach().clone()
            for k in self._head_keys(state.weights)
        }

    # ------------------------------------------------------------------ server
    def message_for(self, state: GlobalState, client_id: int) -> RoundMessage:
        message = super().message_for(state, client_id)
        arrays = dict(message.arrays)
        for name, value in self.current_classifier(state).items():
            arrays[CLASSIFIER_PREFIX + name] = value
        return dataclasses.replace(message, arrays=arrays)

    def aggregate(self, state: GlobalState, replies: Sequence[ClientReply]) -> GlobalState:
        per_class: dict[int, list[dict[str, torch.Tensor]]] = {}
        stripped = []
        for reply in replies:
            arrays = dict(reply.arrays)
            mine: dict[int, dict[str, torch.Tensor]] = {}
            for key in [k for k in arrays if k.startswith(GRADIENT_PREFIX)]:
                c, name = key[len(GRADIENT_PREFIX) :].split(".")
                mine.setdefault(int(c), {})[name] = arrays.pop(key)
            for c, grads in mine.items():
                per_class.setdefault(c, []).append(grads)
            stripped.append(dataclasses.replace(reply, arrays=arrays))
        new = super().aggregate(state, stripped)
        classifier = self.current_classifier(state)
        names = sorted(classifier, key=lambda n: n != "weight")  # weight first
        mean_grads = {
            c: [torch.stack([g[n] for g in grads]).mean(0) for n in names]
            for c, grads in per_class.items()
        }
        features = state.extra.get("creff_features")
        num_classes, dim = classifier["weight"].shape
        if features is None:
            features = torch.randn(num_classes * self.features_per_class, dim)
        features = self.match_features(features, classifier, names, mean_grads)
        new.extra["creff_features"] = features
        new.extra["creff_classifier"] = self.retrain_classifier(features, num_classes)
        return new

    def feature_labels(self, num_classes: int) -> torch.Tensor:
        """Labels of the synthetic features: ``features_per_class`` of class 0, then 1, ..."""
        return torch.arange(num_classes).repeat_interleave(self.features_per_class)

    def match_features(
        self,
        features: torch.Tensor,
        classifier: Mapping[str, torch.Tensor],
        names: list[str],
        mean_grads: Mapping[int, list[torch.Tensor]],
    ) -> torch.Tensor:
        """``match_steps`` SGD steps of the synthetic features on the gradient distance.

        Only the features of classes with client gradients move; all classes are matched in
        one batched step (:func:`linear_ce_gradients`).
        """
        features = features.detach().clone().requires_grad_(True)
        if not mean_grads or self.match_steps == 0:
            return features.detach()
        weight = classifier["weight"].detach()
        bias = classifier["bias"].detach() if "bias" in names else None
        classes = sorted(mean_grads)
        m, dim = self.features_per_class, features.shape[1]
        targets = [torch.stack([mean_grads[c][i] for c in classes]) for i in range(len(names))]
        labels = torch.tensor(classes).unsqueeze(1).expand(len(classes), m)
        optimizer = torch.optim.SGD([features], lr=self.feature_lr)
        for _ in range(self.match_steps):
            per_class = features.view(-1, m, dim)[classes]
            synthetic = linear_ce_gradients(per_class, labels, weight, bias)
            loss = sum(
                _row_distance(s, t, 1e-6) for s, t in zip(synthetic, targets, strict=False)
            )
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        return features.detach()

    def retrain_classifier(
        self, features: torch.Tensor, num_classes: int
    ) -> dict[str, torch.Tensor]:
        """A fresh linear classifier (PyTorch's default initialisation) trained on the synthetic
        features by mini-batch SGD without momentum."""
        fresh = nn.Linear(features.shape[1], num_classes)
        weight, bias = fresh.weight.detach().clone(), fresh.bias.detach().clone()
        labels = self.feature_labels(num_classes)
        n, lr = len(features), self.retrain_lr
        for _ in range(self.retrain_epochs):
            order = torch.randperm(n)
            for start in range(0, n, self.retrain_batch_size):
                idx = order[start : start + self.retrain_batch_size]
                grad_w, grad_b = linear_ce_gradients(features[idx], labels[idx], weight, bias)
                weight -= lr * grad_w
                bias -= lr * grad_b
        return {"weight": weight, "bias": bias}

    # ------------------------------------------------------------------ client
    def before_local_training(self, model: nn.Module, data: Dataset, ctx: LocalContext) -> None:
        """Per-class mean classifier gradients on real features of the received body."""
        weight = ctx.message.arrays[CLASSIFIER_PREFIX + "weight"].to(ctx.device)
        bias = ctx.message.arrays.get(CLASSIFIER_PREFIX + "bias")
        params = [weight.clone().requires_grad_(True)]
        if bias is not None:
            params.append(bias.to(ctx.device).clone().requires_grad_(True))
        model.eval()
        with torch.no_grad():
            batches = [
                (model.features(x.to(ctx.device)), y.to(ctx.device))
                for x, y, *_ in iterate_batches(data, 1024, shuffle=False)
            ]
        model.train()
        gradients: dict[str, torch.Tensor] = {}
        if batches:
            h = torch.cat([b[0] for b in batches])
            y = torch.cat([b[1] for b in batches])
            for c in np.flatnonzero(ctx.class_counts):
                h_c = h[y == int(c)]
                logits = F.linear(h_c, params[0], params[1] if len(params) > 1 else None)
                ce = F.cross_entropy(logits, torch.full((len(h_c),), int(c), device=ctx.device))
                for name, grad in zip(("weight", "bias"), torch.autograd.grad(ce, params),
                                      strict=False):
                    gradients[f"{GRADIENT_PREFIX}{int(c)}.{name}"] = grad.detach().cpu()
        ctx.extras["creff_gradients"] = gradients

    def reply_arrays(self, model: nn.Module, ctx: LocalContext) -> dict[str, torch.Tensor]:
        current = model.state_dict()
        arrays = {
            k: current[k].detach().cpu().clone() for k in ctx.message.arrays if k in current
        }
        arrays.update(ctx.extras["creff_gradients"])
        return arrays

    # ------------------------------------------------------------------ evaluation
    def eval_weights(
        self, global_weights: Mapping[str, torch.Tensor], state: GlobalState
    ) -> dict[str, torch.Tensor]:
        """The global body with the re-trained classifier (once there is one)."""
        weights = dict(global_weights)
        for name, value in state.extra.get("creff_classifier", {}).items():
            weights[self.head_prefix + name] = value
        return weights
